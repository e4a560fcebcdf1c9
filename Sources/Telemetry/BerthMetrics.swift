public import Prometheus
#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Berth's Prometheus metrics (`metrics.listen`): per-request families kept
/// in one shard per event loop and summed when scraped; upstream and policy
/// events recorded into swift-prometheus's registry; state read when scraped
/// through `collectors` (cache usage, fills, connections, the process).
///
/// Why two stores: the registry's counters and histograms are shared by every
/// thread (atomics, and a lock per histogram). Recording every request there
/// cost 0.80× warm manifest req/s with two loops (Benchmarks/results/metrics-*):
/// the loops fought over the same cache lines and locks. A loop's shard is
/// touched by that loop and, at a scrape, by the renderer only: its lock is
/// never contended. Upstream requests are few enough for the registry.
public final class BerthMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    private let shards: [Shard]
    private let upstreams = Mutex<[String: UpstreamMetrics]>([:])
    private let verdicts = Mutex<[String: Counter]>([:])
    private let collectors = Mutex<[@Sendable (inout Exposition) -> Void]>([])

    /// Upper bounds of the request-duration buckets, in seconds: 0.5 ms to 60 s.
    static let durationBuckets: [Double] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
    static let durationBucketNanos: [UInt64] = durationBuckets.map { UInt64(($0 * 1e9).rounded()) }

    /// `shards`: one per event loop (requests are recorded with their loop's index).
    public init(shards: Int = 1) {
        self.shards = (0..<max(shards, 1)).map { _ in Shard() }
    }

    // MARK: requests

    /// One request answered (or cut) on loop `shard`: counted by route, method,
    /// status and cache status, its body bytes by route and cache status, its duration by route.
    public func requestEnded(shard: Int = 0, target: String?, method: String?, status: Int, cacheStatus: String?,
                             bytes: UInt64, durationNanos: UInt64) {
        let route = target.map(Route.init(target:)) ?? .other
        let key = RequestKey(route: route, method: MethodLabel(method), cache: CacheLabel(cacheStatus), status: Int16(clamping: status))
        let bucket = Self.durationBucketNanos.firstIndex { durationNanos <= $0 } ?? Self.durationBuckets.count
        shards[shard % shards.count].counts.withLock { s in
            s.requests[key, default: RequestTotals()].add(bytes: bytes)
            s.durations[Int(route.rawValue)].record(bucket: bucket, nanos: durationNanos)
        }
    }

    /// The per-request families, every shard summed.
    private func renderRequests(into out: inout Exposition) {
        var total = RequestShard()
        for shard in shards {
            let s = shard.counts.withLock { $0 }
            total.requests.merge(s.requests) { a, b in RequestTotals(count: a.count + b.count, bytes: a.bytes &+ b.bytes) }
            for i in total.durations.indices { total.durations[i].add(s.durations[i]) }
        }
        let requests = total.requests.sorted { $0.key < $1.key }
        var bytes: [BytesKey: UInt64] = [:]
        for (k, t) in requests { bytes[BytesKey(route: k.route, cache: k.cache), default: 0] &+= t.bytes }
        out.family("berth_requests_total", .counter, "Requests answered, by route, method, status and cache status (hit, stale, miss, none).",
                   requests.map { ($0.key.labels, Double($0.value.count)) })
        out.family("berth_response_body_bytes_total", .counter,
                   "Response body bytes sent, by route and cache status: cache=\"hit\" and \"stale\" are bytes the upstream did not send again.",
                   bytes.sorted { $0.key < $1.key }.map { ([("route", $0.key.route.label), ("cache", $0.key.cache.rawValue)], Double($0.value)) })
        out.histogram("berth_request_duration_seconds", "Time from a complete request head to the last byte of its response, by route.",
                      bounds: Self.durationBuckets,
                      Route.allCases.map { r in
                          let d = total.durations[Int(r.rawValue)]
                          return ([("route", r.label)], d.counts, Double(d.sumNanos) / 1e9)
                      })
    }

    // MARK: upstreams

    /// The handles of upstream `name` (made on first use).
    public func upstream(_ name: String) -> UpstreamMetrics {
        upstreams.withLock { table in
            if let u = table[name] { return u }
            let u = UpstreamMetrics(name: name, registry: registry)
            table[name] = u
            return u
        }
    }

    // MARK: signatures

    /// A signature-policy decision: `verdict` is the verdict's kind (verified,
    /// unsigned, mismatch, untrusted, malformed, unavailable) and `action`
    /// what Berth did (served, refused, warned, last_verified).
    /// Returns the increment of that decision's counter, to call now and keep for later requests without a lookup.
    public func signatureDecisionCounter(rule: String, verdict: String, action: String) -> @Sendable () -> Void {
        let key = rule + "\u{0}" + verdict + "\u{0}" + action
        let c = verdicts.withLock { table in
            if let c = table[key] { return c }
            let c = registry.makeCounter(descriptor: .init(namespace: "berth", metricName: "signature_decisions", unitName: "total",
                                                           helpText: "Manifests under a signature policy, by rule, verdict and what Berth did."),
                                         labels: [("rule", rule), ("verdict", verdict), ("action", action)])
            table[key] = c
            return c
        }
        return { c.increment() }
    }

    // MARK: scrape

    /// Adds families rendered at each scrape from state their owner keeps.
    public func addCollector(_ collect: @escaping @Sendable (inout Exposition) -> Void) {
        collectors.withLock { $0.append(collect) }
    }

    /// The whole text exposition. Blocking reads of /proc: call off the loops.
    public func render() -> [UInt8] {
        var out = Exposition()
        renderRequests(into: &out)
        for collect in collectors.withLock({ $0 }) { collect(&out) }
        ProcessMetrics.collect(into: &out)
        var bytes = out.bytes
        registry.emit(into: &bytes)
        return bytes
    }
}

/// What a request was for, from its raw path (the OCI grammar puts the route
/// in the last one or two segments: a repository name cannot end a path).
public enum Route: UInt8, CaseIterable, Sendable {
    case base, manifest, blob, tags, referrers, health, other

    /// Read from the target's bytes: this runs for every request.
    public init(target: String) {
        var target = target
        self = target.withUTF8 { Route(path: $0) }
    }

    // The scans are libc's memchr: byte loops over a path with a
    // digest in it were a fifth of what metrics cost a warm request.
    private init(path bytes: UnsafeBufferPointer<UInt8>) {
        guard let base = bytes.baseAddress else { self = .other; return }
        let length = memchr(base, 0x3f, bytes.count).map { UnsafeRawPointer($0) - UnsafeRawPointer(base) } ?? bytes.count
        let path = UnsafeBufferPointer(start: base, count: length)
        if Self.equal(path, "/v2/") || Self.equal(path, "/v2") { self = .base; return }
        if Self.equal(path, "/healthz") || Self.equal(path, "/readyz") { self = .health; return }
        guard path.count > 4, Self.equal(UnsafeBufferPointer(rebasing: path[..<4]), "/v2/") else { self = .other; return }
        // The last two slashes, one memchr per segment.
        var slash = 3, previous = 0
        while let next = memchr(base + slash + 1, 0x2f, length - slash - 1) {
            previous = slash
            slash = UnsafeRawPointer(next) - UnsafeRawPointer(base)
        }
        let parentStart = previous + 1
        let parent = UnsafeBufferPointer(rebasing: path[parentStart..<slash])
        let last = UnsafeBufferPointer(rebasing: path[(slash + 1)...])
        if Self.equal(parent, "manifests") { self = .manifest }
        else if Self.equal(parent, "blobs") { self = .blob }
        else if Self.equal(parent, "referrers") { self = .referrers }
        else if Self.equal(parent, "tags") && Self.equal(last, "list") { self = .tags }
        else { self = .other }
    }

    private static func equal(_ bytes: UnsafeBufferPointer<UInt8>, _ literal: StaticString) -> Bool {
        bytes.count == literal.utf8CodeUnitCount && memcmp(bytes.baseAddress!, literal.utf8Start, bytes.count) == 0
    }

    public var label: String {
        switch self {
        case .base: "base"
        case .manifest: "manifest"
        case .blob: "blob"
        case .tags: "tags"
        case .referrers: "referrers"
        case .health: "health"
        case .other: "other"
        }
    }
}

/// The `Cache-Status` Berth sent, as a label: `hit` (served from the cache),
/// `stale` (from the cache because the upstream could not answer), `miss`
/// (fetched, or joined a fill), `none` (no content: errors, `/v2/`, lists).
public enum CacheLabel: String, Sendable {
    case hit, stale, miss, none

    var order: UInt8 { self == .hit ? 0 : self == .stale ? 1 : self == .miss ? 2 : 3 }

    public init(_ cacheStatus: String?) {
        guard var s = cacheStatus else { self = .none; return }
        self = s.withUTF8 { b in
            if Self.find(b, "fwd=stale") { return .stale }
            if Self.hasPrefix(b, "Berth; hit") { return .hit }
            if Self.find(b, "fwd=miss") { return .miss }
            return .none
        }
    }

    private static func hasPrefix(_ b: UnsafeBufferPointer<UInt8>, _ prefix: StaticString) -> Bool {
        b.count >= prefix.utf8CodeUnitCount && memcmp(b.baseAddress!, prefix.utf8Start, prefix.utf8CodeUnitCount) == 0
    }

    private static func find(_ b: UnsafeBufferPointer<UInt8>, _ needle: StaticString) -> Bool {
        let n = needle.utf8CodeUnitCount
        guard b.count >= n else { return false }
        for i in 0...(b.count - n) where b[i] == needle.utf8Start[0] && memcmp(b.baseAddress! + i, needle.utf8Start, n) == 0 { return true }
        return false
    }
}

/// GET, HEAD or other: a client's method token never becomes a label.
enum MethodLabel: UInt8 {
    case get, head, other
    init(_ method: String?) {
        switch method {
        case "GET": self = .get
        case "HEAD": self = .head
        default: self = .other
        }
    }
    var label: String { self == .get ? "GET" : self == .head ? "HEAD" : "other" }
}

struct RequestKey: Hashable, Comparable {
    let route: Route
    let method: MethodLabel
    let cache: CacheLabel
    let status: Int16

    var labels: [(String, String)] {
        [("route", route.label), ("method", method.label), ("status", String(status)), ("cache", cache.rawValue)]
    }

    static func < (a: Self, b: Self) -> Bool {
        (a.route.rawValue, a.method.rawValue, a.status, a.cache.order) < (b.route.rawValue, b.method.rawValue, b.status, b.cache.order)
    }
}

struct BytesKey: Hashable, Comparable {
    let route: Route
    let cache: CacheLabel
    static func < (a: Self, b: Self) -> Bool { (a.route.rawValue, a.cache.order) < (b.route.rawValue, b.cache.order) }
}

/// One loop's request counts behind a lock only that loop and a scrape take.
final class Shard: Sendable {
    let counts = Mutex(RequestShard())
}

/// One loop's request counts (see `BerthMetrics`).
struct RequestShard {
    var requests: [RequestKey: RequestTotals] = [:]
    var durations = [DurationCounts](repeating: DurationCounts(), count: Route.allCases.count)
}

/// Requests of one label set and their body bytes.
struct RequestTotals {
    var count = 0
    var bytes: UInt64 = 0
    mutating func add(bytes: UInt64) {
        count += 1
        self.bytes &+= bytes
    }
}

/// A histogram's counts per bucket (not cumulative; the last is +Inf) and its sum.
struct DurationCounts {
    var counts = [Int](repeating: 0, count: BerthMetrics.durationBuckets.count + 1)
    var sumNanos: UInt64 = 0

    mutating func record(bucket: Int, nanos: UInt64) {
        counts[bucket] += 1
        sumNanos &+= nanos
    }

    mutating func add(_ other: DurationCounts) {
        for i in counts.indices { counts[i] += other.counts[i] }
        sumNanos &+= other.sumNanos
    }
}
