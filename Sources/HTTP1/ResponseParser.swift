/// An incremental HTTP/1.1 response parser (RFC 9112) for reading upstream responses: bytes in,
/// events out, no I/O. Same calling convention as `RequestParser`.
///
/// Interim 1xx responses (other than 101) are read and dropped. Response bodies have no size limit
/// (blobs are GiB); the head limits apply.
public struct ResponseParser {
    private var core: MessageParser<ResponseHeadDecoder>

    /// Creates a parser for one connection.
    public init(limits: ParserLimits = ParserLimits()) {
        core = MessageParser(decoder: ResponseHeadDecoder(), limits: limits, bodyLimit: nil)
    }

    /// Call before each response is read: a response to HEAD has no body whatever its headers say.
    /// The setting holds through interim 1xx responses and is cleared by the final response's head.
    public mutating func expectResponse(toHEAD: Bool) {
        core.decoder.isResponseToHEAD = toHEAD
    }

    /// Parses from the start of `input` and returns at the first event; see `RequestParser.parse(_:)`.
    /// Throws `HTTPParseError` (its status is 400-style, the message came from upstream); after a throw
    /// the parser is dead.
    public mutating func parse(_ input: UnsafeRawBufferPointer) throws -> (event: ParseEvent<ResponseHead>?, consumed: Int) {
        try core.parse(input)
    }

    /// At end of stream: returns `.end` for an `untilClose` body (or a completed message whose `.end`
    /// was not yet returned); throws if a message is incomplete; nil when between messages.
    public mutating func finish() throws -> ParseEvent<ResponseHead>? {
        try core.finish()
    }
}

/// Decodes a status line and header fields, and decides the body framing.
struct ResponseHeadDecoder: HeadDecoder {
    static var startLineIsTarget: Bool { false }
    var isResponseToHEAD = false

    mutating func decode(_ p: UnsafeRawBufferPointer, fieldCount: Int) throws -> (ResponseHead, BodyFraming)? {
        guard let lineLF = findLF(p, from: 0, to: p.count) else { throw HTTPParseError.badRequest("truncated head") }
        let (version, status, reason) = try decodeStatusLine(p, end: lineLF - 1)

        var headers = HTTPHeaders(reservingCapacity: fieldCount)
        var summary = FieldSummary()
        try decodeFields(p, from: lineLF + 1, into: &headers, keep: true, summary: &summary)

        // RFC 9110 §15.2: interim responses are followed by the final one.
        if status < 200 && status != 101 { return nil }
        defer { isResponseToHEAD = false }

        // RFC 9112 §6.3, in order.
        let framing: BodyFraming
        if isResponseToHEAD || status < 200 || status == 204 || status == 304 {
            framing = .none
        } else if summary.hasTransferEncoding {
            guard summary.contentLength == nil else {
                throw HTTPParseError.badRequest("both Transfer-Encoding and Content-Length")
            }
            guard summary.chunkedCount <= 1 else { throw HTTPParseError.badRequest("chunked applied more than once") }
            framing = summary.lastCodingIsChunked ? .chunked : .untilClose
        } else if let length = summary.contentLength {
            framing = .length(length)
        } else {
            framing = .untilClose
        }

        var keepAlive = keepAliveRule(
            version: version, close: summary.connectionClose, keepAlive: summary.connectionKeepAlive)
        if framing == .untilClose || status == 101 { keepAlive = false }
        let head = ResponseHead(status: status, reason: reason, version: version, headers: headers, keepAlive: keepAlive)
        return (head, framing)
    }

    func checkStartLine(_ p: UnsafeRawBufferPointer) throws {
        guard let lineLF = findLF(p, from: 0, to: p.count) else { return }
        _ = try decodeStatusLine(p, end: lineLF - 1)
    }

    /// `HTTP-version SP 3DIGIT SP reason-phrase` in `p[0..<end]`; the SP before an empty reason may be missing.
    private func decodeStatusLine(_ p: UnsafeRawBufferPointer, end: Int) throws -> (HTTPVersion, Int, String) {
        guard end >= 12, p[8] == sp else { throw HTTPParseError.badRequest("malformed status line") }
        let version = try decodeVersion(p, 0, 8)
        guard version.major == 1 else {
            throw HTTPParseError.versionNotSupported("HTTP/\(version.major).\(version.minor) response")
        }
        var status = 0
        for k in 9..<12 {
            let d = p[k] &- 0x30
            guard d < 10 else { throw HTTPParseError.badRequest("malformed status code") }
            status = status * 10 + Int(d)
        }
        guard status >= 100 else { throw HTTPParseError.badRequest("malformed status code") }
        if end == 12 { return (version, status, "") }
        guard p[12] == sp else { throw HTTPParseError.badRequest("malformed status line") }
        guard skipFieldValueBytes(p, from: 13, to: end) == end else {
            throw HTTPParseError.badRequest("invalid byte in reason phrase")
        }
        return (version, status, makeString(p, 13, end))
    }
}
