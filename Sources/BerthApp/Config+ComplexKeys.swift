import Yams

// Complex mapping keys (`? key`, a [list] or {map} used as a key) are refused
// before and after Yams parses: Berth's keys are names, and Yams' duplicate-key
// check on nested complex keys ran for minutes on 7 KB (found by Fuzz/ `config`).
extension BerthConfig {
    /// Every mapping key in the document must be a plain scalar: Berth's keys are names.
    /// True when the text has an explicit key indicator (`?` opening a line, a
    /// list item or a flow entry) or a flow collection used as a key (`]:` or
    /// `}:`), outside quotes and comments.
    static func hasComplexKey(_ yaml: String) -> Bool {
        let b = Array(yaml.utf8)
        var i = 0
        var lastSignificant: UInt8 = 0x0a  // the previous non-blank byte (a newline at line starts)
        func isBreak(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 || c == 0x0a || c == 0x0d }
        while i < b.count {
            let c = b[i]
            switch c {
            case UInt8(ascii: "\""), UInt8(ascii: "'"):
                i += 1
                while i < b.count && b[i] != c {
                    if c == UInt8(ascii: "\"") && b[i] == UInt8(ascii: "\\") { i += 1 }
                    i += 1
                }
                lastSignificant = c
            case UInt8(ascii: "#") where isBreak(lastSignificant) || i == 0 || isBreak(b[i - 1]):
                while i < b.count && b[i] != 0x0a { i += 1 }
                continue
            case UInt8(ascii: "?") where (i + 1 == b.count || isBreak(b[i + 1]))
                && [0x0a, UInt8(ascii: "-"), UInt8(ascii: "{"), UInt8(ascii: "["), UInt8(ascii: ",")].contains(lastSignificant):
                return true
            case UInt8(ascii: ":") where (lastSignificant == UInt8(ascii: "]") || lastSignificant == UInt8(ascii: "}"))
                && (i + 1 == b.count || isBreak(b[i + 1]) || b[i + 1] == UInt8(ascii: ",")):
                return true
            case 0x0a:
                lastSignificant = 0x0a
            case 0x20, 0x09, 0x0d:
                break
            default:
                lastSignificant = c
            }
            i += 1
        }
        return false
    }

    static func refuseComplexKeys(_ node: Node) throws {
        switch node {
        case .scalar, .alias: return
        case .sequence(let sequence): for child in sequence { try refuseComplexKeys(child) }
        case .mapping(let mapping):
            for (key, value) in mapping {
                guard key.scalar != nil else {
                    throw ConfigError(key: "(file)", "a mapping key that is not a name (line \((key.mark?.line).map(String.init) ?? "?"))")
                }
                try refuseComplexKeys(value)
            }
        }
    }
}
