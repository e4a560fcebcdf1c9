/// Writing message heads as bytes.
extension ResponseHead {
    /// Appends the status line and header block, ending with the empty line.
    public func write(into out: inout [UInt8]) {
        out.append(contentsOf: version == .http10 ? "HTTP/1.0 ".utf8 : "HTTP/1.1 ".utf8)
        appendDecimal(status, to: &out)
        out.append(0x20)
        out.append(contentsOf: (reason.isEmpty ? HTTPStatus.reason(status) : reason).utf8)
        out.append(contentsOf: [0x0d, 0x0a])
        headers.write(into: &out)
        out.append(contentsOf: [0x0d, 0x0a])
    }
}

extension RequestHead {
    /// Appends the request line and header block, ending with the empty line.
    public func write(into out: inout [UInt8]) {
        out.append(contentsOf: method.name.utf8)
        out.append(0x20)
        out.append(contentsOf: target.utf8)
        out.append(contentsOf: version == .http10 ? " HTTP/1.0\r\n".utf8 : " HTTP/1.1\r\n".utf8)
        headers.write(into: &out)
        out.append(contentsOf: [0x0d, 0x0a])
    }
}

extension HTTPHeaders {
    /// Writes each field as `name: value` CRLF. A field whose name is not an
    /// RFC 9110 token, or whose value holds CR, LF or NUL, is left out: no
    /// value that came from elsewhere (an upstream's manifest, a header it
    /// sent) can add a header line or end the head early.
    func write(into out: inout [UInt8]) {
        // Over each string's contiguous UTF-8, checked and copied in one pass:
        // appending the UTF8Views byte by byte was an eighth of a cached
        // manifest answer's instructions.
        for field in fields {
            var name = field.name
            var value = field.value
            name.withUTF8 { n in
                value.withUTF8 { v in
                    guard HTTPHeaders.isSafe(name: n, value: v) else { return }
                    out.append(contentsOf: n)
                    out.append(0x3a)
                    out.append(0x20)
                    out.append(contentsOf: v)
                    out.append(0x0d)
                    out.append(0x0a)
                }
            }
        }
    }
}

extension HTTPHeaders {
    /// True when `name` is a non-empty token and `value` has no CR, LF or NUL.
    static func isSafe(name: UnsafeBufferPointer<UInt8>, value: UnsafeBufferPointer<UInt8>) -> Bool {
        guard !name.isEmpty else { return false }
        for b in name where !isTokenByte(b) { return false }
        for b in value where b == 0x0d || b == 0x0a || b == 0x00 { return false }
        return true
    }
}

@inline(__always)
func appendDecimal<T: BinaryInteger>(_ value: T, to out: inout [UInt8]) {
    if value < 10 { out.append(UInt8(48 + Int(value))); return }
    var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                 UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    var v = UInt64(value)
    var n = 0
    withUnsafeMutableBytes(of: &digits) { d in
        while v > 0 { d[19 - n] = UInt8(48 + v % 10); v /= 10; n += 1 }
        out.append(contentsOf: d[(20 - n)...])
    }
}

/// Reason phrases for the statuses Berth sends.
public enum HTTPStatus {
    public static func reason(_ status: Int) -> String {
        switch status {
        case 100: return "Continue"
        case 200: return "OK"
        case 204: return "No Content"
        case 206: return "Partial Content"
        case 301: return "Moved Permanently"
        case 302: return "Found"
        case 304: return "Not Modified"
        case 307: return "Temporary Redirect"
        case 308: return "Permanent Redirect"
        case 400: return "Bad Request"
        case 401: return "Unauthorized"
        case 403: return "Forbidden"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 408: return "Request Timeout"
        case 413: return "Content Too Large"
        case 414: return "URI Too Long"
        case 416: return "Range Not Satisfiable"
        case 429: return "Too Many Requests"
        case 431: return "Request Header Fields Too Large"
        case 500: return "Internal Server Error"
        case 501: return "Not Implemented"
        case 502: return "Bad Gateway"
        case 503: return "Service Unavailable"
        case 504: return "Gateway Timeout"
        case 505: return "HTTP Version Not Supported"
        default: return "Status"
        }
    }
}
