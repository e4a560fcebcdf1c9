import Histogram

/// One request a puller made, as measured on the client.
public struct RequestRecord: Equatable, Sendable {
    public var kind: RequestKind
    /// The HTTP status; 0 when no response came (connect failure, timeout, cut).
    public var status: Int
    /// Body bytes received.
    public var bytes: Int64
    /// From sending the request to its response head.
    public var ttfbNanos: UInt64
    /// The body did not hash to its digest, or its length differed from the descriptor's.
    public var isMismatch: Bool
    /// Why it failed, when it did.
    public var error: String?

    public init(kind: RequestKind, status: Int, bytes: Int64, ttfbNanos: UInt64, isMismatch: Bool = false, error: String? = nil) {
        self.kind = kind
        self.status = status
        self.bytes = bytes
        self.ttfbNanos = ttfbNanos
        self.isMismatch = isMismatch
        self.error = error
    }

    /// A request counts as failed on any non-2xx answer, no answer, or a mismatch.
    public var isFailure: Bool { !(200..<300).contains(status) || isMismatch || error != nil }
}

/// One puller's pull of one image.
public struct PullRecord: Equatable, Sendable {
    public var startNanos: UInt64
    public var endNanos: UInt64
    public var requests: [RequestRecord]

    public init(startNanos: UInt64, endNanos: UInt64, requests: [RequestRecord]) {
        self.startNanos = startNanos
        self.endNanos = endNanos
        self.requests = requests
    }

    /// Complete only when every request succeeded.
    public var isComplete: Bool { !requests.isEmpty && !requests.contains(where: \.isFailure) }
}

/// Whether a pass ran after `--cold-cmd` (cold) or right after another pass (warm).
public enum Phase: String, Codable, Sendable, CaseIterable {
    case cold, warm
}

/// p50/p95/p99 and the maximum, in milliseconds.
public struct Percentiles: Equatable, Codable, Sendable {
    public var p50: Double
    public var p95: Double
    public var p99: Double
    public var max: Double
    public var count: Int

    public static let empty = Percentiles(p50: 0, p95: 0, p99: 0, max: 0, count: 0)

    /// From samples in nanoseconds, through an HDR histogram of microseconds (3 significant digits).
    public init(nanos samples: [UInt64]) {
        guard !samples.isEmpty else { self = .empty; return }
        var h = Histogram<UInt64>(highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
        for s in samples { _ = h.record(Swift.min(Swift.max(s / 1000, 1), 3_600_000_000)) }
        func ms(_ us: UInt64) -> Double { Double(us) / 1000 }
        self.init(p50: ms(h.valueAtPercentile(50)), p95: ms(h.valueAtPercentile(95)), p99: ms(h.valueAtPercentile(99)),
                  max: ms(h.max), count: samples.count)
    }

    public init(p50: Double, p95: Double, p99: Double, max: Double, count: Int) {
        self.p50 = p50
        self.p95 = p95
        self.p99 = p99
        self.max = max
        self.count = count
    }
}

/// Requests of one kind: how many, by status (`"200"`, `"404"`, `"0"` for no answer), and bytes.
public struct KindCount: Equatable, Codable, Sendable {
    public var count: Int
    public var byStatus: [String: Int]
    public var bytes: Int64
    public var mismatches: Int
}

/// One image on one endpoint in one pass: what the issue asks `berth bench` to report.
public struct PassReport: Equatable, Codable, Sendable {
    public var endpoint: String
    public var image: String
    public var round: Int
    public var phase: Phase
    public var pullers: Int
    /// Pulls that completed without a failed request.
    public var completed: Int
    /// Time to pulled across pullers.
    public var pulled: Percentiles
    /// Response-head latency of manifest requests (HEAD, index, manifest) and of blob requests.
    public var manifestTTFB: Percentiles
    public var blobTTFB: Percentiles
    /// Body bytes of every request, and their rate over the pass's wall time.
    public var bytes: Int64
    public var wallMillis: Double
    public var bytesPerSecond: Double
    /// Requests by kind.
    public var requests: [String: KindCount]
    /// Requests that failed (non-2xx, no answer, mismatch).
    public var failures: Int
    /// The first few failure descriptions.
    public var errors: [String]

    /// Aggregates the pulls of one pass.
    public init(endpoint: String, image: String, round: Int, phase: Phase, pulls: [PullRecord]) {
        self.endpoint = endpoint
        self.image = image
        self.round = round
        self.phase = phase
        pullers = pulls.count
        completed = pulls.filter(\.isComplete).count
        pulled = Percentiles(nanos: pulls.map { $0.endNanos &- $0.startNanos })
        let all = pulls.flatMap(\.requests)
        manifestTTFB = Percentiles(nanos: all.filter { !$0.kind.isBlob && $0.status != 0 }.map(\.ttfbNanos))
        blobTTFB = Percentiles(nanos: all.filter { $0.kind.isBlob && $0.status != 0 }.map(\.ttfbNanos))
        bytes = all.reduce(0) { $0 + $1.bytes }
        let start = pulls.map(\.startNanos).min() ?? 0
        let end = pulls.map(\.endNanos).max() ?? 0
        let wall = end &- start
        wallMillis = Double(wall) / 1e6
        bytesPerSecond = wall > 0 ? Double(bytes) / (Double(wall) / 1e9) : 0
        var counts: [String: KindCount] = [:]
        for r in all {
            var c = counts[r.kind.rawValue] ?? KindCount(count: 0, byStatus: [:], bytes: 0, mismatches: 0)
            c.count += 1
            c.byStatus[String(r.status), default: 0] += 1
            c.bytes += r.bytes
            if r.isMismatch { c.mismatches += 1 }
            counts[r.kind.rawValue] = c
        }
        requests = counts
        let failed = all.filter(\.isFailure)
        failures = failed.count
        var seen: [String] = []
        for r in failed {
            let text = "\(r.kind.rawValue): " + (r.error ?? (r.isMismatch ? "digest mismatch" : "HTTP \(r.status)"))
            if !seen.contains(text) && seen.count < 5 { seen.append(text) }
        }
        errors = seen
    }

    /// Requests made in all.
    public var requestCount: Int { requests.values.reduce(0) { $0 + $1.count } }
}

/// The medians across rounds of one endpoint's p50 time to pulled, and its ratio to the first endpoint's.
public struct ComparisonRow: Equatable, Codable, Sendable {
    public var image: String
    public var phase: Phase
    public var endpoint: String
    /// Median over rounds of the pass p50, in ms.
    public var pulledP50: Double
    /// Median over rounds of the pass p99, in ms.
    public var pulledP99: Double
    /// Median over rounds of the pass rate, in bytes/s.
    public var bytesPerSecond: Double
    /// pulledP50 / the first endpoint's pulledP50 (lower is faster).
    public var ratio: Double
    /// Passes with any failure: their numbers are not to be believed.
    public var failedPasses: Int
}

/// Summaries across rounds.
public enum Comparison {
    /// One row per image, phase and endpoint (endpoints in the given order), from `passes`.
    public static func rows(_ passes: [PassReport], endpoints: [String]) -> [ComparisonRow] {
        var out: [ComparisonRow] = []
        var images: [String] = []
        for p in passes where !images.contains(p.image) { images.append(p.image) }
        for image in images {
            for phase in Phase.allCases {
                var base: Double?
                for endpoint in endpoints {
                    let mine = passes.filter { $0.image == image && $0.phase == phase && $0.endpoint == endpoint }
                    guard !mine.isEmpty else { continue }
                    let p50 = median(mine.map(\.pulled.p50))
                    if base == nil { base = p50 }
                    out.append(ComparisonRow(
                        image: image, phase: phase, endpoint: endpoint, pulledP50: p50,
                        pulledP99: median(mine.map(\.pulled.p99)), bytesPerSecond: median(mine.map(\.bytesPerSecond)),
                        ratio: (base ?? 0) > 0 ? p50 / base! : 0, failedPasses: mine.filter { $0.failures > 0 }.count))
                }
            }
        }
        return out
    }

    /// The median (mean of the middle two for an even count); 0 for none.
    public static func median(_ values: [Double]) -> Double {
        guard !values.isEmpty else { return 0 }
        let s = values.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
}
