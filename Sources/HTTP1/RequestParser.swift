/// An incremental HTTP/1.1 request parser (RFC 9112): bytes in, events out, no I/O.
///
/// Feed it whatever arrived; it returns at the first event and says how many bytes it used. Input may
/// be split anywhere (one byte at a time costs O(n) in total) and may hold several pipelined requests.
///
/// ```swift
/// var rest = buffer[...]
/// while true {
///     let (event, used) = try parser.parse(UnsafeRawBufferPointer(rebasing: rest))
///     defer { rest = rest.dropFirst(used) }  // body ranges index the buffer passed in
///     guard let event else { break }         // everything absorbed: read more
///     ...
/// }
/// ```
///
/// The parser does not decide whether a method may carry a body; the server does.
public struct RequestParser {
    private var core: MessageParser<RequestHeadDecoder>

    /// Creates a parser for one connection.
    public init(limits: ParserLimits = ParserLimits()) {
        core = MessageParser(
            decoder: RequestHeadDecoder(maxBodyBytes: limits.maxBodyBytes), limits: limits,
            bodyLimit: limits.maxBodyBytes)
    }

    /// Parses from the start of `input` and returns at the first event. `consumed` bytes are used up
    /// (a body slice's bytes included); the caller calls again with the rest (also when the rest is
    /// empty: `.end` can follow a head without more input). `event == nil` means all of `consumed` was
    /// absorbed (a partial head is buffered inside the parser, or chunk framing) and more input is needed.
    /// Throws `HTTPParseError`; after a throw the parser is dead (the server answers `status` and closes).
    public mutating func parse(_ input: UnsafeRawBufferPointer) throws -> (event: ParseEvent<RequestHead>?, consumed: Int) {
        try core.parse(input)
    }
}

/// Decodes a request line and header fields, and decides the body framing.
struct RequestHeadDecoder: HeadDecoder {
    static var startLineIsTarget: Bool { true }
    let maxBodyBytes: UInt64

    func decode(_ p: UnsafeRawBufferPointer, fieldCount: Int) throws -> (RequestHead, BodyFraming)? {
        guard let lineLF = findLF(p, from: 0, to: p.count) else { throw HTTPParseError.badRequest("truncated head") }
        let (method, target, version) = try decodeRequestLine(p, end: lineLF - 1)

        var headers = HTTPHeaders(reservingCapacity: fieldCount)
        var summary = FieldSummary()
        try decodeFields(p, from: lineLF + 1, into: &headers, keep: true, summary: &summary)

        // RFC 9112 §3.2: exactly one Host in HTTP/1.1, at most one before.
        if summary.hostCount > 1 { throw HTTPParseError.badRequest("more than one Host field") }
        if summary.hostCount == 0 && version.minor >= 1 { throw HTTPParseError.badRequest("missing Host field") }

        let framing: BodyFraming
        if summary.hasTransferEncoding {
            // RFC 9112 §6.1, §6.3: refuse what request smuggling is made of.
            guard summary.contentLength == nil else {
                throw HTTPParseError.badRequest("both Transfer-Encoding and Content-Length")
            }
            guard version.minor >= 1 else { throw HTTPParseError.badRequest("Transfer-Encoding in an HTTP/1.0 request") }
            guard summary.chunkedCount <= 1 else { throw HTTPParseError.badRequest("chunked applied more than once") }
            guard summary.lastCodingIsChunked else { throw HTTPParseError.badRequest("final transfer coding is not chunked") }
            guard summary.codingCount == 1 else { throw HTTPParseError.notImplemented("transfer coding other than chunked") }
            framing = .chunked
        } else if let length = summary.contentLength {
            guard length <= maxBodyBytes else { throw HTTPParseError.tooLarge("request body larger than \(maxBodyBytes) bytes") }
            framing = .length(length)
        } else {
            framing = .none
        }

        let keepAlive = keepAliveRule(
            version: version, close: summary.connectionClose, keepAlive: summary.connectionKeepAlive)
        let head = RequestHead(method: method, target: target, version: version, headers: headers, keepAlive: keepAlive)
        return (head, framing)
    }

    func checkStartLine(_ p: UnsafeRawBufferPointer) throws {
        guard let lineLF = findLF(p, from: 0, to: p.count) else { return }
        _ = try decodeRequestLine(p, end: lineLF - 1)
    }

    /// `method SP request-target SP HTTP-version`, single spaces, in `p[0..<end]`.
    private func decodeRequestLine(_ p: UnsafeRawBufferPointer, end: Int) throws -> (HTTPMethod, String, HTTPVersion) {
        var i = 0
        while i < end && isTokenByte(p[i]) { i += 1 }
        guard i > 0, i < end, p[i] == sp else {
            throw HTTPParseError.badRequest(i < end && p[i] != sp ? "invalid method" : "malformed request line")
        }
        let methodEnd = i
        let targetStart = i + 1
        let j = skipVisibleASCII(p, from: targetStart, to: end)
        guard j > targetStart else { throw HTTPParseError.badRequest("empty request target") }
        guard j < end else { throw HTTPParseError.badRequest("HTTP/0.9 request line") }
        guard p[j] == sp else { throw HTTPParseError.badRequest("invalid byte in request target") }
        let version = try decodeVersion(p, j + 1, end)
        guard version.major == 1 && version.minor <= 1 else {
            throw HTTPParseError.versionNotSupported("HTTP/\(version.major).\(version.minor) not supported")
        }
        return (decodeMethod(p, methodEnd), makeString(p, targetStart, j), version)
    }

    private func decodeMethod(_ p: UnsafeRawBufferPointer, _ end: Int) -> HTTPMethod {
        switch end {
        case 3:
            if bytesEqual(p, 0, end, "GET") { return .get }
            if bytesEqual(p, 0, end, "PUT") { return .put }
        case 4:
            if bytesEqual(p, 0, end, "HEAD") { return .head }
            if bytesEqual(p, 0, end, "POST") { return .post }
        case 5:
            if bytesEqual(p, 0, end, "PATCH") { return .patch }
            if bytesEqual(p, 0, end, "TRACE") { return .trace }
        case 6:
            if bytesEqual(p, 0, end, "DELETE") { return .delete }
        case 7:
            if bytesEqual(p, 0, end, "OPTIONS") { return .options }
            if bytesEqual(p, 0, end, "CONNECT") { return .connect }
        default:
            break
        }
        return .unknown(makeString(p, 0, end))
    }
}

/// Exact comparison of `p[start..<end]` with a literal.
@inline(__always)
func bytesEqual(_ p: UnsafeRawBufferPointer, _ start: Int, _ end: Int, _ literal: StaticString) -> Bool {
    guard end - start == literal.utf8CodeUnitCount else { return false }
    let l = literal.utf8Start
    for k in 0..<(end - start) where p[start + k] != l[k] {
        return false
    }
    return true
}

/// `HTTP-version = "HTTP/" DIGIT "." DIGIT` in `p[start..<end]`: 400 when malformed.
func decodeVersion(_ p: UnsafeRawBufferPointer, _ start: Int, _ end: Int) throws -> HTTPVersion {
    guard end - start == 8, bytesEqual(p, start, start + 5, "HTTP/"), p[start + 6] == 0x2E else {
        throw HTTPParseError.badRequest("malformed HTTP version")
    }
    let major = p[start + 5] &- 0x30, minor = p[start + 7] &- 0x30
    guard major < 10, minor < 10 else { throw HTTPParseError.badRequest("malformed HTTP version") }
    return HTTPVersion(major: Int(major), minor: Int(minor))
}
