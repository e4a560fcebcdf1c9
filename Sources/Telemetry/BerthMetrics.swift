public import Prometheus
#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Berth's Prometheus metrics (`metrics.listen`): event metrics recorded as
/// they happen into swift-prometheus's registry (requests, upstream
/// latencies, signature verdicts), and state read when scraped through
/// `collectors` (cache usage, fills, connections, the process).
///
/// Handles are made once per label set and kept: the hot path costs a
/// dictionary lookup under an uncontended lock, a relaxed atomic add and, for
/// the duration histogram, one more short lock.
public final class BerthMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    private let requests = Mutex<[RequestKey: (count: Counter, bytes: Counter)]>([:])
    private let durations: [DurationHistogram]  // by Route.rawValue
    private let upstreams = Mutex<[String: UpstreamMetrics]>([:])
    private let verdicts = Mutex<[String: Counter]>([:])
    private let collectors = Mutex<[@Sendable (inout Exposition) -> Void]>([])

    /// Request durations: 0.5 ms to 60 s.
    static let durationBuckets: [Duration] = [
        .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500),
        .seconds(5), .seconds(10), .seconds(30), .seconds(60),
    ]

    public init() {
        let registry = self.registry
        durations = Route.allCases.map {
            registry.makeDurationHistogram(
                descriptor: .init(namespace: "berth", metricName: "request_duration", unitName: "seconds",
                                  helpText: "Time from a complete request head to the last byte of its response, by route."),
                labels: [("route", $0.label)], buckets: Self.durationBuckets)
        }
    }

    // MARK: requests

    /// One request answered (or cut): counted by route, method, status and
    /// cache status, its body bytes by route and cache status, its duration by route.
    public func requestEnded(target: String?, method: String?, status: Int, cacheStatus: String?, bytes: UInt64, durationNanos: UInt64) {
        let route = target.map(Route.init(target:)) ?? .other
        let key = RequestKey(route: route, method: MethodLabel(method), cache: CacheLabel(cacheStatus), status: Int16(clamping: status))
        let handles = requests.withLock { table in
            if let h = table[key] { return h }
            let h = (count: registry.makeCounter(descriptor: Self.requestsTotal, labels: key.labels),
                     bytes: registry.makeCounter(descriptor: Self.responseBytes, labels: [("route", key.route.label), ("cache", key.cache.rawValue)]))
            table[key] = h
            return h
        }
        handles.count.increment()
        if bytes > 0 { handles.bytes.increment(by: Int64(clamping: bytes)) }
        durations[Int(route.rawValue)].recordNanoseconds(Int64(clamping: durationNanos))
    }

    static let requestsTotal = MetricNameDescriptor(
        namespace: "berth", metricName: "requests", unitName: "total",
        helpText: "Requests answered, by route, method, status and cache status (hit, stale, miss, none).")
    static let responseBytes = MetricNameDescriptor(
        namespace: "berth", metricName: "response_body", unitName: "bytes_total",
        helpText: "Response body bytes sent, by route and cache status: cache=\"hit\" and \"stale\" are bytes the upstream did not send again.")

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
    public func signatureDecision(rule: String, verdict: String, action: String) {
        let key = rule + "\u{0}" + verdict + "\u{0}" + action
        let c = verdicts.withLock { table in
            if let c = table[key] { return c }
            let c = registry.makeCounter(descriptor: .init(namespace: "berth", metricName: "signature_decisions", unitName: "total",
                                                           helpText: "Manifests under a signature policy, by rule, verdict and what Berth did."),
                                         labels: [("rule", rule), ("verdict", verdict), ("action", action)])
            table[key] = c
            return c
        }
        c.increment()
    }

    // MARK: scrape

    /// Adds families rendered at each scrape from state their owner keeps.
    public func addCollector(_ collect: @escaping @Sendable (inout Exposition) -> Void) {
        collectors.withLock { $0.append(collect) }
    }

    /// The whole text exposition. Blocking reads of /proc: call off the loops.
    public func render() -> [UInt8] {
        var out = Exposition()
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

    private init(path bytes: UnsafeBufferPointer<UInt8>) {
        let path = UnsafeBufferPointer(rebasing: bytes[..<(bytes.firstIndex(of: UInt8(ascii: "?")) ?? bytes.count)])
        if Self.equal(path, "/v2/") || Self.equal(path, "/v2") { self = .base; return }
        if Self.equal(path, "/healthz") || Self.equal(path, "/readyz") { self = .health; return }
        guard path.count > 4, Self.equal(UnsafeBufferPointer(rebasing: path[..<4]), "/v2/"),
              let slash = path.lastIndex(of: UInt8(ascii: "/")) else { self = .other; return }
        let head = path[..<slash]
        let parentStart = (head.lastIndex(of: UInt8(ascii: "/")) ?? head.startIndex - 1) + 1
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

    public init(_ cacheStatus: String?) {
        guard var s = cacheStatus else { self = .none; return }
        self = s.withUTF8 { b in
            if Self.find(b, "fwd=stale") { return .stale }
            if b.starts(with: "Berth; hit".utf8) { return .hit }
            if Self.find(b, "fwd=miss") { return .miss }
            return .none
        }
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

struct RequestKey: Hashable {
    let route: Route
    let method: MethodLabel
    let cache: CacheLabel
    let status: Int16

    var labels: [(String, String)] {
        [("route", route.label), ("method", method.label), ("status", String(status)), ("cache", cache.rawValue)]
    }
}
