/// Which token realms Berth sends upstream credentials to (DECISIONS.md "Token realms",
/// FIELD-NOTES.md on CVE-2026-33540).
///
/// A realm is followed only if its URL is well formed (`http` or `https`, a
/// host, no userinfo) and
/// - it is `https`, or `http` to the upstream's own host: credentials never go
///   over plain http to another host;
/// - its host is the upstream's host (any port), shares the upstream's
///   registrable domain (`auth.docker.io` for `registry-1.docker.io`), or is in
///   the allow-list (exact host, case-insensitive);
/// - an IP-literal host only when the upstream host is that same IP literal
///   (the allow-list does not override this: DECISIONS.md says "only when").
public enum RealmPolicy {
    /// Second-level labels under which registrations happen one level deeper
    /// (`example.co.uk`, `example.com.au`), when the TLD is a two-letter ccTLD.
    static let commonSecondLevels: Set<String> = ["co", "com", "net", "org", "gov", "edu", "ac", "mil", "ne", "or", "go"]

    /// True when Berth may send credentials to `realm` for an upstream at `upstreamScheme://upstreamHost`.
    /// `upstreamHost` may carry a port (`127.0.0.1:5000`, `[::1]:5000`); it is ignored.
    public static func allows(realm: String, upstreamScheme: String, upstreamHost: String, allowList: [String] = []) -> Bool {
        guard let url = RealmURL(realm) else { return false }
        guard let upstream = normalizedHost(stripPort(upstreamHost)) else { return false }
        let sameHost = url.host == upstream

        if url.scheme == "http" && !sameHost { return false }
        if isIPLiteral(url.host) { return sameHost }
        if sameHost { return true }
        if let realmDomain = registrableDomain(url.host), realmDomain == registrableDomain(upstream) { return true }
        return allowList.contains { normalizedHost($0) == url.host }
    }

    /// True when Berth may follow an upstream's redirect to `targetHost`
    /// (storage and CDN redirects go to other hosts, without credentials). An
    /// IP literal or a `localhost` name is followed only when it is the
    /// upstream's own host: an upstream must not steer Berth at loopback,
    /// link-local (cloud metadata) or private addresses it does not itself use.
    public static func allowsRedirect(toHost targetHost: String, upstreamHost: String) -> Bool {
        guard let target = normalizedHost(stripPort(targetHost)) else { return false }
        guard let upstream = normalizedHost(stripPort(upstreamHost)) else { return false }
        if target == upstream { return true }
        if isIPLiteral(target) { return false }
        return target != "localhost" && !target.hasSuffix(".localhost")
    }

    /// The registrable domain of a host name: its last two labels, or last three
    /// when the TLD has two letters and the second-to-last label is a common
    /// second level (`co`, `com`, `org`…). Nil for IP literals, single labels,
    /// bare public suffixes such as `co.uk`, and malformed names.
    public static func registrableDomain(_ host: String) -> String? {
        guard let host = normalizedHost(host), !isIPLiteral(host) else { return nil }
        let labels = host.split(separator: ".", omittingEmptySubsequences: false)
        guard labels.count >= 2, !labels.contains(where: \.isEmpty) else { return nil }
        let tld = labels[labels.count - 1]
        let second = labels[labels.count - 2]
        if tld.utf8.count == 2 && commonSecondLevels.contains(String(second)) {
            guard labels.count >= 3 else { return nil }
            return labels.suffix(3).joined(separator: ".")
        }
        return labels.suffix(2).joined(separator: ".")
    }

    // MARK: - Hosts

    /// Lowercased, one trailing dot dropped, IPv6 brackets dropped; nil if empty
    /// or if it holds anything but letters, digits, '-', '.' (':' for IPv6).
    static func normalizedHost(_ host: String) -> String? {
        var h = host.lowercased()
        if h.hasPrefix("[") && h.hasSuffix("]") && h.utf8.count > 2 {
            h = String(h.dropFirst().dropLast())
            guard h.utf8.allSatisfy({ isHexDigit($0) || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: ".") }),
                  h.utf8.contains(UInt8(ascii: ":"))
            else { return nil }
            return h
        }
        if h.hasSuffix(".") { h.removeLast() }
        // One trailing dot is the absolute form of a name; an empty label anywhere else
        // (`a..b`, `.a`, `a..`) is no name, and must not be normalized twice into one.
        guard !h.isEmpty, !h.hasPrefix("."), !h.hasSuffix("."), !h.contains("..") else { return nil }
        let isIPv6 = h.utf8.contains(UInt8(ascii: ":"))
        for b in h.utf8 {
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."):
                continue
            case UInt8(ascii: ":") where isIPv6:
                continue
            default:
                return nil
            }
        }
        if isIPv6 && !h.utf8.allSatisfy({ isHexDigit($0) || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: ".") }) { return nil }
        return h
    }

    /// `host:port` → `host`; `[v6]:port` → `[v6]`; a bare IPv6 literal is left alone.
    public static func stripPort(_ hostPort: String) -> String {
        if hostPort.hasPrefix("[") {
            if let close = hostPort.utf8.firstIndex(of: UInt8(ascii: "]")) { return String(hostPort[...close]) }
            return hostPort
        }
        // UTF-8 view, no array: this runs on every request (the Host header).
        let colons = hostPort.utf8.reduce(0) { $1 == UInt8(ascii: ":") ? $0 + 1 : $0 }
        if colons == 1, let colon = hostPort.utf8.firstIndex(of: UInt8(ascii: ":")) { return String(hostPort[..<colon]) }
        return hostPort
    }

    /// An IPv6 literal (normalized hosts keep ':' only for those), or any host
    /// whose last label is numeric or hex-prefixed: besides dotted-decimal IPv4,
    /// resolvers take `127.1`, `2130706433` and `0x7f.1` as addresses, and no
    /// real TLD looks like that.
    static func isIPLiteral(_ host: String) -> Bool {
        if host.utf8.contains(UInt8(ascii: ":")) { return true }
        guard let last = host.split(separator: ".", omittingEmptySubsequences: false).last else { return false }
        return (!last.isEmpty && last.utf8.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") })
            || last.hasPrefix("0x")
    }

    static func isHexDigit(_ b: UInt8) -> Bool {
        Digest.isLowerHex(b)
    }
}

/// The parts of a realm URL that matter for the policy.
private struct RealmURL {
    let scheme: String
    let host: String

    /// `scheme://host[:port][/path][?query][#fragment]` with scheme http or https,
    /// no userinfo, a non-empty valid host and a numeric port ≤ 65535.
    init?(_ text: String) {
        guard !text.utf8.contains(where: { $0 <= 0x20 || $0 >= 0x7f || $0 == UInt8(ascii: "\\") }) else { return nil }
        guard let colon = text.firstIndex(of: ":") else { return nil }
        let scheme = text[..<colon].lowercased()
        guard scheme == "http" || scheme == "https" else { return nil }
        let afterColon = text[text.index(after: colon)...]
        guard afterColon.hasPrefix("//") else { return nil }
        let rest = afterColon.dropFirst(2)
        let isAuthorityEnd: (Character) -> Bool = { c in c == "/" || c == "?" || c == "#" }
        let authorityEnd = rest.firstIndex(where: isAuthorityEnd) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        guard !authority.contains("@") else { return nil }

        var hostPart = authority
        var portPart: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            hostPart = authority[...close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.first == ":" else { return nil }
                portPart = after.dropFirst()
            }
        } else if let colon = authority.firstIndex(of: ":") {
            hostPart = authority[..<colon]
            portPart = authority[authority.index(after: colon)...]
        }
        if let portPart, !portPart.isEmpty {
            guard portPart.utf8.count <= 5, portPart.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
                  let port = Int(portPart), port <= 65535
            else { return nil }
        }
        // An unbracketed ':' would have been taken as the port separator; a bare
        // IPv6 host is malformed in a URL.
        guard let host = RealmPolicy.normalizedHost(String(hostPart)),
              hostPart.hasPrefix("[") || !host.contains(":")
        else { return nil }
        self.scheme = scheme
        self.host = host
    }
}
