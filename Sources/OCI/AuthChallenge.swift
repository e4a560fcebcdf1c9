/// One challenge of a `WWW-Authenticate` header (RFC 9110 §11.6.1).
public struct AuthChallenge: Equatable, Sendable {
    /// The auth scheme, case-insensitive; unknown schemes are kept lowercased.
    public enum Scheme: Equatable, Sendable {
        case bearer
        case basic
        case other(String)
    }

    /// The challenge's scheme.
    public let scheme: Scheme
    /// The auth-params, keys lowercased, quoted values unescaped. The first
    /// occurrence of a key wins (RFC 9110 forbids repeats).
    public let parameters: [String: String]

    /// The token service URL of a Bearer challenge, or the protection space of Basic.
    public var realm: String? { parameters["realm"] }
    /// The `service` parameter sent back to the token service.
    public var service: String? { parameters["service"] }
    /// The `scope` parameter sent back to the token service.
    public var scope: String? { parameters["scope"] }

    /// A challenge from its parts; `parameters` keys are expected lowercased.
    public init(scheme: Scheme, parameters: [String: String]) {
        self.scheme = scheme
        self.parameters = parameters
    }

    /// Parses every challenge of a header value.
    ///
    /// Accepts several challenges in one value
    /// (`Basic realm="x", Bearer realm="y",service="z"`), quoted-strings with
    /// backslash escapes and commas inside, unquoted values (bare URLs too), optional
    /// whitespace around `=` and `,`, any case for schemes and keys. A token68
    /// credential (`Negotiate abc==`) is skipped. Junk is skipped up to the next
    /// comma; parsing never traps and always terminates.
    public static func parse(_ header: String) -> [AuthChallenge] {
        var scanner = ChallengeScanner(Array(header.utf8))
        return scanner.challenges()
    }
}

/// A byte cursor over a header value. Every loop advances `i` or returns.
private struct ChallengeScanner {
    let bytes: [UInt8]
    var i = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var atEnd: Bool { i >= bytes.count }
    var current: UInt8 { bytes[i] }

    mutating func challenges() -> [AuthChallenge] {
        var result: [AuthChallenge] = []
        while true {
            skipSeparators()
            if atEnd { return result }
            guard let scheme = token() else {
                skipItem()
                continue
            }
            result.append(AuthChallenge(scheme: Self.scheme(scheme), parameters: parameters()))
        }
    }

    /// The auth-params after a scheme, up to the next challenge or the end.
    mutating func parameters() -> [String: String] {
        var parameters: [String: String] = [:]
        var sawComma = false
        while true {
            skipOWS()
            if atEnd { return parameters }
            if current == UInt8(ascii: ",") {
                sawComma = true
                i += 1
                continue
            }
            let start = i
            guard let name = token() else {
                skipItem()
                continue
            }
            skipOWS()
            guard !atEnd, current == UInt8(ascii: "=") else {
                // A bare token: right after the scheme it is a token68
                // credential; after a comma it starts the next challenge.
                if sawComma || !parameters.isEmpty {
                    i = start
                    return parameters
                }
                skipItem()
                continue
            }
            i += 1
            skipOWS()
            let value: String?
            if !atEnd && current == UInt8(ascii: "\"") {
                value = quotedString()
            } else {
                value = bareValue()
            }
            guard let value else {
                // `abc==` (token68) or `realm=` with nothing usable.
                skipItem()
                continue
            }
            let key = name.lowercased()
            if parameters[key] == nil { parameters[key] = value }
        }
    }

    /// RFC 9110 tchar.
    static func isTokenByte(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return "!#$%&'*+-.^_`|~".utf8.contains(b)
        }
    }

    static func scheme(_ name: String) -> AuthChallenge.Scheme {
        switch name.lowercased() {
        case "bearer": return .bearer
        case "basic": return .basic
        case let other: return .other(other)
        }
    }

    mutating func token() -> String? {
        let start = i
        while !atEnd, Self.isTokenByte(current) { i += 1 }
        return i > start ? String(decoding: bytes[start..<i], as: UTF8.self) : nil
    }

    /// An unquoted value. RFC 9110 wants a token, but registries in the wild
    /// send bare URLs (`realm=https://…`): take everything up to a comma,
    /// whitespace or quote. Nil when empty or when it starts with '=' (the
    /// padding of a token68 such as `abc==`).
    mutating func bareValue() -> String? {
        guard !atEnd, current != UInt8(ascii: "=") else { return nil }
        let start = i
        while !atEnd, current != UInt8(ascii: ","), current != UInt8(ascii: " "), current != UInt8(ascii: "\t"),
              current != UInt8(ascii: "\"") {
            i += 1
        }
        return i > start ? String(decoding: bytes[start..<i], as: UTF8.self) : nil
    }

    /// A quoted-string starting at `"`; an unterminated one runs to the end.
    mutating func quotedString() -> String {
        var out: [UInt8] = []
        i += 1
        while !atEnd {
            let b = current
            i += 1
            if b == UInt8(ascii: "\"") { break }
            if b == UInt8(ascii: "\\"), !atEnd {
                out.append(current)
                i += 1
            } else {
                out.append(b)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    mutating func skipOWS() {
        while !atEnd, current == UInt8(ascii: " ") || current == UInt8(ascii: "\t") { i += 1 }
    }

    mutating func skipSeparators() {
        while !atEnd, current == UInt8(ascii: " ") || current == UInt8(ascii: "\t") || current == UInt8(ascii: ",") { i += 1 }
    }

    /// Skips to the next top-level comma (not consumed), stepping over quoted-strings.
    /// Callers loop only while not at a comma or handle the comma themselves, so this always makes progress.
    mutating func skipItem() {
        while !atEnd, current != UInt8(ascii: ",") {
            if current == UInt8(ascii: "\"") { _ = quotedString() } else { i += 1 }
        }
    }
}
