// Value types shared by the HTTP/1.1 request and response parsers, the server and the client.
// Nothing here does I/O.

// MARK: - Method and version

/// A request method. Known methods have their own case; any other syntactically valid token is `.unknown`
/// (the server answers those with 501).
public enum HTTPMethod: Equatable, Sendable {
    case get, head, post, put, delete, patch, options, trace, connect
    /// A valid method token that is none of the above, exactly as sent (methods are case-sensitive).
    case unknown(String)

    /// The method token as it appears on the request line: "GET", "HEAD", ... or the unknown token.
    public var name: String {
        switch self {
        case .get: return "GET"
        case .head: return "HEAD"
        case .post: return "POST"
        case .put: return "PUT"
        case .delete: return "DELETE"
        case .patch: return "PATCH"
        case .options: return "OPTIONS"
        case .trace: return "TRACE"
        case .connect: return "CONNECT"
        case .unknown(let token): return token
        }
    }
}

/// An HTTP version number (`HTTP/major.minor`).
public struct HTTPVersion: Equatable, Sendable {
    /// The major version (1 for every message this module accepts).
    public var major: Int
    /// The minor version.
    public var minor: Int

    /// Creates a version from its two numbers.
    public init(major: Int, minor: Int) {
        self.major = major
        self.minor = minor
    }

    /// `HTTP/1.0`.
    public static let http10 = HTTPVersion(major: 1, minor: 0)
    /// `HTTP/1.1`.
    public static let http11 = HTTPVersion(major: 1, minor: 1)
}

// MARK: - Headers

/// Header fields in the order received or added; names are compared case-insensitively (ASCII).
/// Values are stored as sent (after trimming surrounding whitespace); a field repeated on several
/// lines stays several fields.
public struct HTTPHeaders: Sequence, Sendable {
    struct Field: Sendable {
        var name: String
        var value: String
    }

    var fields: [Field]

    /// Creates an empty header list.
    public init() {
        fields = []
    }

    /// Creates a header list from `(name, value)` pairs, in order.
    public init(_ pairs: [(String, String)]) {
        fields = pairs.map { Field(name: $0.0, value: $0.1) }
    }

    init(reservingCapacity capacity: Int) {
        fields = []
        fields.reserveCapacity(capacity)
    }

    /// The number of fields (a name repeated on several lines counts once per line).
    public var count: Int { fields.count }

    /// Appends a field, keeping any existing fields of the same name.
    public mutating func add(_ name: String, _ value: String) {
        fields.append(Field(name: name, value: value))
    }

    /// Removes every field named `name`, then appends one with `value`.
    public mutating func set(_ name: String, _ value: String) {
        remove(name)
        add(name, value)
    }

    /// Removes every field named `name`.
    public mutating func remove(_ name: String) {
        fields.removeAll { asciiCaseInsensitiveEquals($0.name, name) }
    }

    /// The value of the first field named `name`, or nil.
    public subscript(_ name: String) -> String? {
        // Lengths first, inline: most names differ there, and a call per field
        // showed in the access log's `Cache-Status` lookup on every answer.
        let count = name.utf8.count
        for i in fields.indices where fields[i].name.utf8.count == count && asciiCaseInsensitiveEquals(fields[i].name, name) {
            return fields[i].value
        }
        return nil
    }

    /// The values of every field named `name`, in order; values are not split on commas.
    public func values(_ name: String) -> [String] {
        var result: [String] = []
        for field in fields where asciiCaseInsensitiveEquals(field.name, name) {
            result.append(field.value)
        }
        return result
    }

    /// True when the fields named `name` hold exactly `expected`, in order:
    /// `values(name) == expected` without building the array.
    public func values(_ name: String, equal expected: [String]) -> Bool {
        var i = 0
        for field in fields where asciiCaseInsensitiveEquals(field.name, name) {
            guard i < expected.count, field.value == expected[i] else { return false }
            i += 1
        }
        return i == expected.count
    }

    /// Whether at least one field is named `name`.
    public func contains(_ name: String) -> Bool {
        fields.contains { asciiCaseInsensitiveEquals($0.name, name) }
    }

    /// Iterates the fields in order.
    public func makeIterator() -> Iterator {
        Iterator(fields: fields)
    }

    /// Iterates `(name, value)` pairs in order.
    public struct Iterator: IteratorProtocol {
        private var base: IndexingIterator<[Field]>

        init(fields: [Field]) {
            base = fields.makeIterator()
        }

        /// The next field, or nil after the last.
        public mutating func next() -> (name: String, value: String)? {
            guard let field = base.next() else { return nil }
            return (field.name, field.value)
        }
    }
}

extension HTTPHeaders: Equatable {
    /// Same fields in the same order; names compared case-insensitively, values exactly.
    public static func == (lhs: HTTPHeaders, rhs: HTTPHeaders) -> Bool {
        guard lhs.fields.count == rhs.fields.count else { return false }
        for (l, r) in zip(lhs.fields, rhs.fields) {
            guard l.value == r.value, asciiCaseInsensitiveEquals(l.name, r.name) else { return false }
        }
        return true
    }
}

extension HTTPHeaders: ExpressibleByDictionaryLiteral {
    /// `["Host": "example.com", "Accept": "*/*"]`, fields in literal order.
    public init(dictionaryLiteral elements: (String, String)...) {
        self.init(elements)
    }
}

extension HTTPHeaders: CustomStringConvertible {
    /// One `name: value` line per field.
    public var description: String {
        fields.map { "\($0.name): \($0.value)" }.joined(separator: "\n")
    }
}

/// ASCII case-insensitive comparison; non-ASCII bytes must match exactly.
func asciiCaseInsensitiveEquals(_ a: String, _ b: String) -> Bool {
    let a = a.utf8, b = b.utf8
    guard a.count == b.count else { return false }
    // Over the contiguous bytes: zipping two UTF8Views cost ~100 instructions a
    // byte, and a response's `Cache-Status` lookup (access log, metrics) compares
    // every header name of the same length.
    let contiguous = a.withContiguousStorageIfAvailable { x in
        b.withContiguousStorageIfAvailable { y in
            // From the end: names of one length mostly differ in their last
            // byte (`Content-Type`, `X-Request-Id`, `Cache-Status`).
            for i in x.indices.reversed() where x[i] != y[i] {
                guard asciiLower(x[i]) == asciiLower(y[i]) else { return false }
            }
            return true
        }
    }
    if let contiguous, let equal = contiguous { return equal }
    for (x, y) in zip(a, b) where x != y {
        guard asciiLower(x) == asciiLower(y) else { return false }
    }
    return true
}

@inline(__always)
func asciiLower(_ b: UInt8) -> UInt8 {
    b &- 0x41 < 26 ? b | 0x20 : b
}

// MARK: - Heads

/// The start line and header fields of a request.
public struct RequestHead: Equatable, Sendable {
    /// The request method.
    public var method: HTTPMethod
    /// The raw request-target exactly as sent: no percent-decoding, no normalisation.
    public var target: String
    /// The protocol version from the request line.
    public var version: HTTPVersion
    /// The header fields in order.
    public var headers: HTTPHeaders
    /// Whether the connection stays open after this exchange: for HTTP/1.1 unless a `Connection: close`
    /// token is present; for HTTP/1.0 only with a `keep-alive` token (and no `close`).
    public var keepAlive: Bool

    /// Creates a request head; `keepAlive` is derived from `version` and the `Connection` fields.
    public init(method: HTTPMethod, target: String, version: HTTPVersion = .http11, headers: HTTPHeaders = HTTPHeaders()) {
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        keepAlive = connectionKeepAlive(version: version, headers: headers)
    }

    init(method: HTTPMethod, target: String, version: HTTPVersion, headers: HTTPHeaders, keepAlive: Bool) {
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.keepAlive = keepAlive
    }
}

/// The status line and header fields of a response.
public struct ResponseHead: Equatable, Sendable {
    /// The protocol version from the status line.
    public var version: HTTPVersion
    /// The three-digit status code.
    public var status: Int
    /// The reason phrase (may be empty; carries no meaning).
    public var reason: String
    /// The header fields in order.
    public var headers: HTTPHeaders
    /// Same rule as `RequestHead.keepAlive`. The parser also sets it to false when the body is delimited
    /// by the connection closing (`BodyFraming.untilClose`), since such a connection cannot be reused.
    public var keepAlive: Bool

    /// Creates a response head; `keepAlive` is derived from `version` and the `Connection` fields.
    public init(status: Int, reason: String = "", version: HTTPVersion = .http11, headers: HTTPHeaders = HTTPHeaders()) {
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        keepAlive = connectionKeepAlive(version: version, headers: headers)
    }

    init(status: Int, reason: String, version: HTTPVersion, headers: HTTPHeaders, keepAlive: Bool) {
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.keepAlive = keepAlive
    }
}

/// The keep-alive rule of RFC 9112 §9.3 applied to already-parsed headers.
func connectionKeepAlive(version: HTTPVersion, headers: HTTPHeaders) -> Bool {
    var sawClose = false, sawKeepAlive = false
    for value in headers.values("Connection") {
        for token in value.split(separator: ",") {
            let token = token.trimmingOWS()
            if asciiCaseInsensitiveEquals(token, "close") { sawClose = true }
            if asciiCaseInsensitiveEquals(token, "keep-alive") { sawKeepAlive = true }
        }
    }
    return keepAliveRule(version: version, close: sawClose, keepAlive: sawKeepAlive)
}

@inline(__always)
func keepAliveRule(version: HTTPVersion, close: Bool, keepAlive: Bool) -> Bool {
    if close { return false }
    if version.major > 1 || (version.major == 1 && version.minor >= 1) { return true }
    return keepAlive
}

extension Substring {
    func trimmingOWS() -> String {
        var s = self[...]
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return String(s)
    }
}

// MARK: - Framing, events, errors, limits

/// How a message body is delimited.
public enum BodyFraming: Equatable, Sendable {
    /// No body at all.
    case none
    /// Exactly this many bytes (`Content-Length`).
    case length(UInt64)
    /// `Transfer-Encoding: chunked`; the parser removes the framing and reports only data.
    case chunked
    /// Everything until the connection closes (responses only).
    case untilClose
}

/// Why a message was refused. `status` is the answer a server sends before closing
/// (400, 413, 414, 431, 501 or 505); `reason` is short text for logs and error bodies.
public struct HTTPParseError: Error, Equatable, CustomStringConvertible {
    /// The status code to answer with.
    public let status: Int
    /// Short human-readable text.
    public let reason: String

    /// Creates an error; the parsers use the static factories below.
    public init(status: Int, reason: String) {
        self.status = status
        self.reason = reason
    }

    /// `"<status> <reason>"`.
    public var description: String { "\(status) \(reason)" }

    static func badRequest(_ reason: String) -> HTTPParseError { HTTPParseError(status: 400, reason: reason) }
    static func tooLarge(_ reason: String) -> HTTPParseError { HTTPParseError(status: 413, reason: reason) }
    static func uriTooLong(_ reason: String) -> HTTPParseError { HTTPParseError(status: 414, reason: reason) }
    static func headersTooLarge(_ reason: String) -> HTTPParseError { HTTPParseError(status: 431, reason: reason) }
    static func notImplemented(_ reason: String) -> HTTPParseError { HTTPParseError(status: 501, reason: reason) }
    static func versionNotSupported(_ reason: String) -> HTTPParseError { HTTPParseError(status: 505, reason: reason) }
}

/// Bounds that protect a server from oversized messages.
public struct ParserLimits: Sendable {
    /// Bytes of the start line and every header line including CRLFs; chunked trailers count
    /// against the same budget (head + trailers ≤ this).
    public var maxHeadBytes: Int = 65_536
    /// Header fields per message (trailer fields count against the same number).
    public var maxHeaders: Int = 100
    /// Request body bytes (`Content-Length` or chunked total). Responses are unbounded.
    public var maxBodyBytes: UInt64 = 1 << 20

    /// The defaults above.
    public init() {}
}

/// One step of a parse.
public enum ParseEvent<Head> {
    /// A complete head and how its body is delimited.
    case head(Head, BodyFraming)
    /// Body bytes: indices into the buffer passed to `parse` (no copy).
    case body(Range<Int>)
    /// The message is complete; the parser is ready for the next one (keep-alive, pipelining).
    case end
}

extension ParseEvent: Equatable where Head: Equatable {}
extension ParseEvent: Sendable where Head: Sendable {}
