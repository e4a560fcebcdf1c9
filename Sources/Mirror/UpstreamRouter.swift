import OCI

/// Which configured upstream a request means, decided from what the client
/// sent, in this order (DECISIONS.md, issue 9):
///
/// 1. a path prefix: `/v2/<prefix>/<repo>/…` is `<repo>` on that upstream
///    (podman `registries.conf` mirrors with a path, skopeo); the longest
///    matching prefix wins;
/// 2. `?ns=<registry>` (containerd `hosts.toml`), matched against each
///    upstream's name and extra hosts;
/// 3. the request's `Host`, matched the same way;
/// 4. the default upstream (Docker's `registry-mirrors` sends neither).
///
/// A client never names a host Berth dials: every outcome is an index into
/// the configured list, or `.unknown`. Pure value; tested without sockets.
public struct UpstreamRouter: Sendable {
    public struct Entry: Equatable, Sendable {
        /// The registry name clients use: `docker.io`, `ghcr.io`, `127.0.0.1:5999`.
        public var name: String
        /// Path prefix (one or more name components), nil for none.
        public var prefix: String?
        /// Further names a `Host` header or `ns=` may use for this upstream.
        public var hosts: [String]

        public init(name: String, prefix: String?, hosts: [String] = []) {
            self.name = name
            self.prefix = prefix
            self.hosts = hosts
        }

        /// The default prefix: the name itself when it is a valid repository path component.
        public static func defaultPrefix(for name: String) -> String? {
            RepositoryName.isValid(name) && !name.contains("/") ? name : nil
        }
    }

    public enum Selection: Equatable, Sendable {
        /// `upstream` is an index into the entries; `repository` is the name
        /// on that upstream (prefix removed); `namespace` is the `ns` that
        /// chose it, echoed as `OCI-Namespace`.
        case upstream(Int, repository: String, namespace: String?)
        /// Nothing configured matches: the message says what was asked for.
        case unknown(String)
    }

    public let entries: [Entry]
    /// Index of the default upstream; with a single upstream, that one.
    public let defaultIndex: Int?
    private let prefixes: [(prefix: String, index: Int)]  // longest first
    /// Every name and host of each entry, lowercased once: (name, whether it carries a port, entry index).
    private let names: [(name: String, hasPort: Bool, index: Int)]

    public init(_ entries: [Entry], defaultIndex: Int?) {
        self.entries = entries
        self.defaultIndex = defaultIndex ?? (entries.count == 1 ? 0 : nil)
        prefixes = entries.enumerated().compactMap { i, e in e.prefix.map { ($0, i) } }
            .sorted { $0.prefix.utf8.count > $1.prefix.utf8.count }
        names = entries.enumerated().flatMap { i, e in
            ([e.name] + e.hosts).map { n in let c = n.lowercased(); return (c, RealmPolicy.stripPort(c) != c, i) }
        }
    }

    /// Picks the upstream for repository `name` (as in the request path, already
    /// valid by the OCI grammar), with the request's raw `ns` query value
    /// (percent-decoded here: containerd sends `127.0.0.1%3A5999`) and `Host`.
    public func select(name: String, ns rawNS: String?, host: String?) -> Selection {
        let ns = rawNS.map(Self.percentDecoded)
        for (prefix, i) in prefixes {
            let p = prefix.utf8
            guard name.utf8.count > p.count + 1, name.utf8.starts(with: p),
                  name.utf8[name.utf8.index(name.startIndex, offsetBy: p.count)] == UInt8(ascii: "/") else { continue }
            return .upstream(i, repository: String(name.dropFirst(prefix.count + 1)), namespace: nil)
        }
        if let ns, !ns.isEmpty {
            if let i = match(ns) { return .upstream(i, repository: name, namespace: entries[i].name) }
            // One upstream serves whatever `ns` names (containerd appends the registry the client asked for).
            if entries.count == 1 { return .upstream(0, repository: name, namespace: nil) }
            return .unknown("no configured upstream for registry \(ns) (ns=\(ns))")
        }
        // With one upstream (the default), the Host header cannot select another: not matched per request.
        if entries.count > 1 || defaultIndex == nil, let host, let i = match(host) { return .upstream(i, repository: name, namespace: nil) }
        if let d = defaultIndex { return .upstream(d, repository: name, namespace: nil) }
        return .unknown("no configured upstream for repository \(name): use a path prefix (\(prefixList)) or ?ns=")
    }

    /// `%XX` sequences decoded; a malformed one, or one that decodes to a byte outside printable ASCII, leaves the text as it was.
    static func percentDecoded(_ s: String) -> String {
        guard s.utf8.contains(UInt8(ascii: "%")) else { return s }
        var out: [UInt8] = []
        var bytes = Array(s.utf8)[...]
        while let b = bytes.popFirst() {
            guard b == UInt8(ascii: "%") else { out.append(b); continue }
            guard bytes.count >= 2, let v = UInt8(String(decoding: bytes.prefix(2), as: UTF8.self), radix: 16), v > 0x20, v < 0x7f else { return s }
            out.append(v)
            bytes = bytes.dropFirst(2)
        }
        return String(decoding: out, as: UTF8.self)
    }

    private var prefixList: String {
        prefixes.isEmpty ? "none configured" : prefixes.map { "/v2/\($0.prefix)/…" }.sorted().joined(separator: ", ")
    }

    /// The entry named `registry` (its name or one of its hosts, case-insensitive,
    /// with or without the port when the configured name has none).
    public func match(_ registry: String) -> Int? {
        let wanted = registry.lowercased()
        let bare = RealmPolicy.stripPort(wanted)
        return names.first { $0.name == wanted || (!$0.hasPort && $0.name == bare) }?.index
    }
}
