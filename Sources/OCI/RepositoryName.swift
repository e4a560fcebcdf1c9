/// The OCI repository name grammar, checked on raw path text.
///
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`,
/// at most 255 bytes. Nothing is decoded first (DECISIONS.md "Names are matched
/// on the raw path"): `%2e`, `..`, empty components and uppercase are refused
/// as they stand, so one name has exactly one spelling.
public enum RepositoryName {
    /// The longest name accepted, in bytes.
    public static let maxLength = 255

    /// True when `name` matches the OCI name grammar and is at most 255 bytes long.
    public static func isValid<S: StringProtocol>(_ name: S) -> Bool {
        isValid(utf8: name.utf8)
    }

    /// `isValid` over the name's UTF-8 bytes (a request path's, without building a String).
    public static func isValid<C: Sequence<UInt8>>(utf8 name: C) -> Bool {
        // After an alphanumeric run a separator may follow: one '.', one or
        // two '_', any number of '-', or '/' (a new component). Every
        // separator must be followed by another alphanumeric run.
        var state = NameScanState.expectAlnum
        var count = 0
        for byte in name {
            count += 1
            if count > maxLength { return false }
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                state = .alnum
            case UInt8(ascii: "."), UInt8(ascii: "/"):
                guard state == .alnum else { return false }
                state = .expectAlnum
            case UInt8(ascii: "_"):
                switch state {
                case .alnum: state = .underscore1
                case .underscore1: state = .underscore2
                default: return false
                }
            case UInt8(ascii: "-"):
                guard state == .alnum || state == .dashes else { return false }
                state = .dashes
            default:
                return false
            }
        }
        return state == .alnum
    }
}

private enum NameScanState { case expectAlnum, alnum, underscore1, underscore2, dashes }

/// The OCI tag grammar: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
public enum Tag {
    /// The longest tag accepted, in bytes.
    public static let maxLength = 128

    /// True when `tag` matches the OCI tag grammar (1 to 128 bytes, no leading '.' or '-').
    public static func isValid<S: StringProtocol>(_ tag: S) -> Bool {
        isValid(utf8: tag.utf8)
    }

    /// `isValid` over the tag's UTF-8 bytes.
    public static func isValid<C: Sequence<UInt8>>(utf8 tag: C) -> Bool {
        var count = 0
        for byte in tag {
            count += 1
            if count > maxLength { return false }
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"):
                continue
            case UInt8(ascii: "."), UInt8(ascii: "-"):
                if count == 1 { return false }
            default:
                return false
            }
        }
        return count > 0
    }
}
