/// A strict reader of the Prometheus text exposition format (0.0.4), for
/// tests: every sample line must parse (name, labels with escaped values,
/// value) and belong to a family announced by a `# TYPE` line; a family is
/// announced once. Samples are keyed by their series as written,
/// `name{label="value",...}`.
public enum PrometheusText {
    public struct Malformed: Error, CustomStringConvertible {
        public let description: String
    }

    public static func parse(_ text: String) throws -> [String: Double] {
        var samples: [String: Double] = [:]
        var types: [String: String] = [:]
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) where !line.isEmpty {
            if line.hasPrefix("# TYPE ") {
                let parts = line.split(separator: " ")
                guard parts.count == 4, ["counter", "gauge", "histogram", "summary", "untyped"].contains(parts[3]) else {
                    throw Malformed(description: "bad TYPE line: \(line)")
                }
                guard types.updateValue(String(parts[3]), forKey: String(parts[2])) == nil else {
                    throw Malformed(description: "family announced twice: \(parts[2])")
                }
                continue
            }
            if line.hasPrefix("#") { continue }
            var i = line.startIndex
            while i < line.endIndex, line[i].isLetter || line[i].isNumber || line[i] == "_" || line[i] == ":" { i = line.index(after: i) }
            let name = String(line[..<i])
            guard let first = name.first, !first.isNumber else { throw Malformed(description: "bad metric name: \(line)") }
            var series = name
            if i < line.endIndex, line[i] == "{" {
                // Labels: name="value" pairs; values escape \\, \" and \n.
                var j = line.index(after: i)
                var inQuotes = false, escaped = false
                while j < line.endIndex {
                    let c = line[j]
                    if escaped { escaped = false } else if c == "\\" { escaped = true } else if c == "\"" { inQuotes.toggle() } else if c == "}" && !inQuotes { break }
                    j = line.index(after: j)
                }
                guard j < line.endIndex else { throw Malformed(description: "unterminated labels: \(line)") }
                series += line[i...j]
                i = line.index(after: j)
            }
            guard i < line.endIndex, line[i] == " " else { throw Malformed(description: "no value: \(line)") }
            let rest = line[line.index(after: i)...].split(separator: " ")
            guard let v = rest.first, let value = Double(v == "+Inf" ? "inf" : v == "-Inf" ? "-inf" : String(v)) else {
                throw Malformed(description: "bad value: \(line)")
            }
            let family = types[name] != nil ? name
                : ["_bucket", "_sum", "_count"].compactMap { name.hasSuffix($0) ? String(name.dropLast($0.count)) : nil }.first { types[$0] != nil }
            guard family != nil else { throw Malformed(description: "sample of a family with no TYPE line: \(line)") }
            guard samples.updateValue(value, forKey: series) == nil else { throw Malformed(description: "series twice: \(series)") }
        }
        return samples
    }
}
