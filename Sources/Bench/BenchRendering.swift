import FoundationEssentials

/// Everything one `berth bench` run measured: what `--json` prints.
public struct BenchResult: Equatable, Codable, Sendable {
    public var endpoints: [String]
    public var images: [String]
    public var rounds: Int
    public var pullers: Int
    public var parallel: Int
    public var verify: Bool
    /// Every pass, in the order run (rounds outermost, then endpoints interleaved, then cold before warm, then images).
    public var passes: [PassReport]
    /// Medians across rounds and ratios to the first endpoint.
    public var comparison: [ComparisonRow]
    /// Failed requests in all (non-2xx, no answer, digest or size mismatch): non-zero makes the exit code 1.
    public var failures: Int

    public init(endpoints: [String], images: [String], rounds: Int, pullers: Int, parallel: Int, verify: Bool, passes: [PassReport]) {
        self.endpoints = endpoints
        self.images = images
        self.rounds = rounds
        self.pullers = pullers
        self.parallel = parallel
        self.verify = verify
        self.passes = passes
        comparison = Comparison.rows(passes, endpoints: endpoints)
        failures = passes.reduce(0) { $0 + $1.failures }
    }

    /// Pretty JSON with sorted keys.
    public func json() -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? e.encode(self)) ?? Data(), as: UTF8.self) + "\n"
    }

    /// The terminal table: one line per pass, then the comparison when more than one endpoint ran, then failures.
    public func table() -> String {
        var rows: [[String]] = [["endpoint", "image", "round", "phase", "ok", "pulled p50", "p95", "p99",
                                 "manifest ttfb", "blob ttfb", "MB/s", "requests"]]
        for p in passes {
            rows.append([p.endpoint, p.image, String(p.round), p.phase.rawValue, "\(p.completed)/\(p.pullers)",
                         Self.ms(p.pulled.p50), Self.ms(p.pulled.p95), Self.ms(p.pulled.p99),
                         Self.ms(p.manifestTTFB.p50), Self.ms(p.blobTTFB.p50), Self.mbps(p.bytesPerSecond),
                         Self.requestSummary(p)])
        }
        var out = Self.align(rows)
        if endpoints.count > 1 {
            out += "\nMedians over \(rounds) round(s); ratio = pulled p50 / \(endpoints[0])'s (lower is faster)\n"
            var c: [[String]] = [["image", "phase", "endpoint", "pulled p50", "p99", "MB/s", "ratio", "failed passes"]]
            for r in comparison {
                c.append([r.image, r.phase.rawValue, r.endpoint, Self.ms(r.pulledP50), Self.ms(r.pulledP99),
                          Self.mbps(r.bytesPerSecond), String(format2(r.ratio)) + "×", String(r.failedPasses)])
            }
            out += Self.align(c)
        }
        let errors = passes.filter { $0.failures > 0 }
        if !errors.isEmpty {
            out += "\n\(failures) failed request(s):\n"
            for p in errors { out += "  \(p.endpoint) \(p.image) round \(p.round) \(p.phase.rawValue): \(p.errors.joined(separator: "; "))\n" }
        }
        return out
    }

    /// `head 1, index 1, manifest 1, config 1, layer 3` with non-2xx statuses in brackets.
    static func requestSummary(_ p: PassReport) -> String {
        RequestKind.allCases.compactMap { kind -> String? in
            guard let c = p.requests[kind.rawValue] else { return nil }
            let bad = c.byStatus.filter { !(200..<300).contains(Int($0.key) ?? 0) }.sorted { $0.key < $1.key }
                .map { "\($0.value)×\($0.key)" }
            let mismatch = c.mismatches > 0 ? ["\(c.mismatches)×mismatch"] : []
            let extra = bad + mismatch
            return "\(kind.rawValue) \(c.count)" + (extra.isEmpty ? "" : " [\(extra.joined(separator: ", "))]")
        }.joined(separator: ", ")
    }

    static func ms(_ v: Double) -> String { v >= 100 ? "\(Int(v.rounded())) ms" : "\(format2(v)) ms" }
    static func mbps(_ v: Double) -> String { format2(v / 1_000_000) }

    /// Columns padded to their widest cell, separated by two spaces.
    static func align(_ rows: [[String]]) -> String {
        guard let width = rows.first?.count else { return "" }
        var widths = Array(repeating: 0, count: width)
        for r in rows { for (i, cell) in r.enumerated() { widths[i] = max(widths[i], cell.count) } }
        return rows.map { r in
            r.enumerated().map { i, cell in i == r.count - 1 ? cell : cell + String(repeating: " ", count: widths[i] - cell.count) }
                .joined(separator: "  ")
        }.joined(separator: "\n") + "\n"
    }
}

/// Two decimals, without Foundation's formatters.
func format2(_ v: Double) -> String {
    guard v.isFinite else { return "-" }
    let scaled = Int((v * 100).rounded())
    let sign = scaled < 0 ? "-" : ""
    let a = abs(scaled)
    let frac = a % 100
    return "\(sign)\(a / 100).\(frac < 10 ? "0" : "")\(frac)"
}
