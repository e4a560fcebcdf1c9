/// Prometheus text exposition (format 0.0.4) for values read when scraped:
/// state that other modules keep as plain atomics or under their own locks
/// (cache usage, fills, connections, the process). Event metrics (requests,
/// upstream latencies) live in swift-prometheus's registry and are appended
/// by it; the two never share a name.
public struct Exposition {
    public enum Kind: String { case counter, gauge }

    public private(set) var bytes: [UInt8] = []

    public init() {}

    /// `# HELP` and `# TYPE` lines, then one sample per element of `samples`
    /// (labels as pairs; values escaped as the format requires).
    public mutating func family(_ name: String, _ kind: Kind, _ help: String, _ samples: [([(String, String)], Double)]) {
        line("# HELP \(name) \(help)")
        line("# TYPE \(name) \(kind.rawValue)")
        for (labels, value) in samples {
            var s = name
            if !labels.isEmpty {
                s += "{" + labels.map { "\($0.0)=\"\(Self.escape($0.1))\"" }.joined(separator: ",") + "}"
            }
            line(s + " " + Self.format(value))
        }
    }

    /// A family with one unlabelled sample.
    public mutating func family(_ name: String, _ kind: Kind, _ help: String, _ value: Double) {
        family(name, kind, help, [([], value)])
    }

    /// A histogram family: per label set, the count in each bucket (not
    /// cumulative; one more than `bounds`, the last for +Inf) and the sum.
    public mutating func histogram(_ name: String, _ help: String, bounds: [Double],
                                   _ series: [(labels: [(String, String)], counts: [Int], sum: Double)]) {
        line("# HELP \(name) \(help)")
        line("# TYPE \(name) histogram")
        for (labels, counts, sum) in series {
            let base = labels.map { "\($0.0)=\"\(Self.escape($0.1))\"" }
            var cumulative = 0
            for (i, n) in counts.enumerated() {
                cumulative += n
                let le = i < bounds.count ? Self.format(bounds[i]) : "+Inf"
                line("\(name)_bucket{" + (base + ["le=\"\(le)\""]).joined(separator: ",") + "} \(cumulative)")
            }
            let braces = base.isEmpty ? "" : "{" + base.joined(separator: ",") + "}"
            line("\(name)_sum\(braces) \(Self.format(sum))")
            line("\(name)_count\(braces) \(cumulative)")
        }
    }

    public mutating func append(_ raw: [UInt8]) { bytes.append(contentsOf: raw) }

    private mutating func line(_ s: String) {
        bytes.append(contentsOf: s.utf8)
        bytes.append(0x0A)
    }

    /// Label values escape `\`, `"` and newlines.
    static func escape(_ s: String) -> String {
        guard s.utf8.contains(where: { $0 == 0x5C || $0 == 0x22 || $0 == 0x0A }) else { return s }
        var out = ""
        for c in s {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out
    }

    /// Whole numbers without a fraction (counters of bytes stay exact up to 2^53).
    static func format(_ v: Double) -> String {
        if v.isNaN { return "NaN" }
        if v.isInfinite { return v > 0 ? "+Inf" : "-Inf" }
        if v == v.rounded(), abs(v) < 9.0e15 { return String(Int64(v)) }
        return String(v)
    }
}
