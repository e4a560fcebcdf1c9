/// An absolute http or https URL, split the way a client needs it.
///
/// Deliberately small: scheme, host (IP literal or name, IPv6 without
/// brackets), port, and the path-and-query sent verbatim as the request target.
public struct HTTPURL: Equatable, Hashable, Sendable, CustomStringConvertible {
    public var scheme: String
    public var host: String
    public var port: UInt16
    public var pathAndQuery: String

    public var isSecure: Bool { scheme == "https" }

    /// Parses `http://host[:port][/path][?query]`; nil for anything else
    /// (userinfo, fragments, other schemes, spaces or control bytes).
    public init?(_ text: String) {
        let lower = text.lowercased()
        let rest: Substring
        if lower.hasPrefix("http://") { scheme = "http"; rest = text.dropFirst(7) }
        else if lower.hasPrefix("https://") { scheme = "https"; rest = text.dropFirst(8) }
        else { return nil }
        guard text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }), !text.contains("#") else { return nil }
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        guard !authority.isEmpty, !authority.contains("@") else { return nil }
        var path = String(rest[authorityEnd...])
        if path.isEmpty || path.hasPrefix("?") { path = "/" + path }
        pathAndQuery = path
        let defaultPort: UInt16 = scheme == "https" ? 443 : 80
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if after.isEmpty { port = defaultPort }
            else if after.hasPrefix(":"), let p = UInt16(after.dropFirst()) { port = p }
            else { return nil }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            guard let p = UInt16(authority[authority.index(after: colon)...]) else { return nil }
            port = p
        } else {
            host = String(authority)
            port = defaultPort
        }
        host = host.lowercased()
        guard Self.isValidHost(host, bracketed: authority.hasPrefix("[")) else { return nil }
    }

    /// RFC 3986 §3.2.2: an IPv6 literal (hex digits, ':' and '.', between brackets), or a reg-name
    /// of unreserved and sub-delim characters (so never ':' or brackets, which would print ambiguously).
    static func isValidHost(_ host: String, bracketed: Bool) -> Bool {
        guard !host.isEmpty else { return false }
        if bracketed {
            return host.contains(":") && host.utf8.allSatisfy { isHexDigit($0) || $0 == 0x3A || $0 == 0x2E }
        }
        return host.utf8.allSatisfy { b in
            (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39) || "-._~%!$&'()*+,;=".utf8.contains(b)
        }
    }

    private static func isHexDigit(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x61 && b <= 0x66)
    }

    public init(scheme: String, host: String, port: UInt16, pathAndQuery: String) {
        self.scheme = scheme
        self.host = host
        self.port = port
        self.pathAndQuery = pathAndQuery
    }

    /// The same scheme, host and port: credentials may travel between them.
    public func sameOrigin(_ other: HTTPURL) -> Bool {
        scheme == other.scheme && host == other.host && port == other.port
    }

    /// `host[:port]` for the Host header, the port omitted when it is the default.
    public var authority: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return port == (isSecure ? 443 : 80) ? h : "\(h):\(port)"
    }

    public var description: String { "\(scheme)://\(authority)\(pathAndQuery)" }

    /// Resolves a `Location` value (absolute, scheme-relative, absolute-path or relative) against this URL.
    /// A fragment is dropped (RFC 9110 §10.2.2): it is never part of a request target.
    public func resolving(_ location: String) -> HTTPURL? {
        let location = location.firstIndex(of: "#").map { String(location[..<$0]) } ?? location
        if let absolute = HTTPURL(location) { return absolute }
        if location.hasPrefix("//") { return HTTPURL(scheme + ":" + location) }
        // RFC 3986 §4.2: `name:` before any '/' is a scheme, so this is an absolute URI, and not http(s).
        if let colon = location.firstIndex(of: ":"), !location[..<colon].contains("/"),
           location[..<colon].first?.isLetter == true { return nil }
        guard location.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else { return nil }
        var u = self
        if location.hasPrefix("/") {
            u.pathAndQuery = location
        } else {
            let path = pathAndQuery.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0]
            let dir = path.lastIndex(of: "/").map { path[...$0] } ?? "/"
            u.pathAndQuery = String(dir) + location
        }
        return u
    }
}
