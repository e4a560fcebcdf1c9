import Yams
import Reactor
import HTTP1
import BlobStore
import OCI
import Mirror

/// Berth's configuration: `conf/berth.yaml` documents every key and its
/// default; the defaults here are the embedded configuration `berth serve`
/// runs with when no file is given.
///
/// Precedence: defaults < file < `BERTH_<SECTION>_<KEY>` environment < flags.
public struct BerthConfig: Equatable, Sendable {
    /// Plain HTTP address: `:5000`, `127.0.0.1:5000`, `[::1]:5000`.
    public var listen = ":5000"
    public var tls = TLSSection()
    public var server = ServerSection()
    /// Event-loop threads; 0 means one per core.
    public var workers = 0
    /// Serve only what is cached, never dial an upstream (every upstream `offline`).
    public var offline = false
    /// The cluster's Berth nodes, this one included, in the balancer's server order
    /// (`host:port`; a name with several A records stands for each, sorted). Empty: no peers.
    public var peers: [String] = []
    public var log = LogSection()
    public var metrics = MetricsSection()
    /// The single-upstream section of earlier versions (and its flags): used when `upstreams` is empty.
    public var upstream = UpstreamSection()
    /// The registries mirrored; empty means `[upstream]`.
    public var upstreams: [UpstreamSection] = []
    public var cache = CacheSection()
    public var auth = AuthSection()
    public var preload = PreloadSection()
    /// Repositories whose manifests are served only with a valid cosign signature by a trusted key.
    public var signatures: [SignatureRule] = []

    public struct SignatureRule: Equatable, Sendable {
        /// Globs over `UPSTREAM/REPO`, as `auth.rules`.
        public var repositories: [String] = []
        public var exempt: [String] = []
        /// PEM public keys (ECDSA P-256/P-384, RSA, Ed25519).
        public var keys: [String] = []
        /// `enforce` (403 for what does not verify) or `warn` (served, logged).
        public var mode = "enforce"
    }

    /// Images warmed into the cache in the background at start, as `berth preload` does.
    public struct PreloadSection: Equatable, Sendable {
        public var images: [String] = []
        /// Only these platforms of an index (`linux/amd64`); empty = every platform.
        public var platforms: [String] = []
    }

    /// Client authentication: off while `htpasswd` is empty.
    public struct AuthSection: Equatable, Sendable {
        /// An htpasswd file of bcrypt entries (`htpasswd -B`); set, requests need Basic credentials.
        public var htpasswd = ""
        /// With `htpasswd` set, also let requests without credentials through.
        public var anonymous = false
        /// Who may pull what (`{users, allow, deny}` over `upstream/repo` globs); empty: everything.
        public var rules: [PullRules.Rule] = []

        public init(htpasswd: String = "", anonymous: Bool = false) {
            self.htpasswd = htpasswd
            self.anonymous = anonymous
        }
    }

    /// The upstreams in force: the list, or the single section as a one-element list.
    public var effectiveUpstreams: [UpstreamSection] { upstreams.isEmpty ? [upstream] : upstreams }

    public struct UpstreamSection: Equatable, Sendable {
        /// The registry name clients use (`docker.io`, `ghcr.io`, `127.0.0.1:5999`); empty: the URL's host[:port].
        public var name = ""
        /// Path prefix selecting this upstream; nil: the name when it is a path component; "": none.
        public var prefix: String?
        /// Further names a `Host` header or `ns=` may use.
        public var hosts: [String] = []
        /// Where requests go that select no other upstream (at most one; a lone upstream is the default).
        public var isDefault = false
        /// The registry mirrored. Docker Hub by default.
        public var url = "https://registry-1.docker.io"
        /// Instead of `url`: several URLs of one registry, tried in order (failover on connect errors and 5xx).
        public var urls: [String] = []
        public var username = ""
        /// Prefer `password_file` or BERTH_UPSTREAM_PASSWORD: flags show in `ps`.
        public var password = ""
        public var passwordFile = ""
        /// Extra PEM CA bundle trusted for the upstream (besides the system store).
        public var ca = ""
        /// Client certificate and key for upstreams that want one.
        public var certificate = ""
        public var key = ""
        /// Token-realm hosts trusted beyond the upstream's own domain.
        public var realmAllow: [String] = []
        /// `auto` (Docker Hub's hosts get the `library/` rule), `true` or `false`.
        public var dockerhub = "auto"
        public var connectTimeout = 5.0
        public var manifestTimeout = 15.0
        public var blobTimeout = 30.0
        public var idleTimeout = 30.0
        /// A tag the upstream answered 404 for is answered 404 without asking for this long (digests never are); 0 turns it off.
        public var negativeTTL = 15.0
        /// How long a tag → digest mapping from this upstream is trusted; nil: `cache.tag_ttl`.
        public var tagTTL: Double?
        /// After a connect or head timeout, how long the upstream is not asked; 0 turns the breaker off.
        public var breakerWindow = 30.0
        /// The longest wait a 429's `Retry-After` imposes on the whole upstream; 0 turns the back-off off.
        public var backoffMax = 600.0
        /// Serve only what is cached from this upstream; never dial it.
        public var offline = false
        /// Requests in flight to this upstream at once; the excess waits its turn. 0: no cap.
        public var maxRequests = 64
        /// Fetch an image's config and layers as soon as its manifest is fetched on a miss.
        public var prefetch = true
        /// An HTTP proxy (`http://host:port`) that every connection for this upstream goes through by CONNECT; empty: direct.
        public var proxy = ""
    }

    /// The upstream keys holding a duration: one list for the parser, `BERTH_UPSTREAM_<KEY>` and `--upstream-<key>`.
    public static let upstreamDurations: [(key: String, path: WritableKeyPath<UpstreamSection, Double>)] = [
        ("connect_timeout", \.connectTimeout), ("manifest_timeout", \.manifestTimeout), ("blob_timeout", \.blobTimeout),
        ("idle_timeout", \.idleTimeout), ("negative_ttl", \.negativeTTL), ("breaker_window", \.breakerWindow),
        ("backoff_max", \.backoffMax),
    ]

    /// Sets `upstream.<key>` (one of `upstreamDurations`) from a flag's text.
    public mutating func setUpstreamDuration(_ key: String, _ text: String) throws {
        guard let d = Self.upstreamDurations.first(where: { $0.key == key }) else { throw ConfigError(key: "upstream.\(key)", "unknown key") }
        upstream[keyPath: d.path] = try Self.duration(text, key: "upstream.\(key)")
    }

    public struct CacheSection: Equatable, Sendable {
        /// Where blobs, manifests and the index live.
        public var dir = "./data"
        /// How long a tag → digest mapping is trusted before revalidation.
        public var tagTTL = 300.0
        /// The budget: `50GiB`, `500MiB`, `80%` of the filesystem; empty = the
        /// smaller of 50 GiB and 80 % of the filesystem.
        public var maxSize = ""
        /// Eviction starts past `high_watermark` percent of the budget and stops at `low_watermark`.
        public var highWatermark = 90
        public var lowWatermark = 80
        /// Images never evicted (`repo:tag` or `repo@digest`), pinned at start.
        public var pinned: [String] = []
        /// For a tag the upstream moved, the images of its last this-many
        /// digests stay out of eviction (0 = none), so a rollback pulls by digest.
        public var keepHistory = 3
    }

    /// Limits on client connections, for both listeners.
    public struct ServerSection: Equatable, Sendable {
        /// A request head must be complete this long after the connection
        /// opened (first request, TLS handshake included) or after its first
        /// byte (later requests); else 408 and close.
        public var headerTimeout = 20.0
        /// A kept-alive connection with no request in flight closes after this long.
        public var keepaliveTimeout = 60.0
        /// Connections open at once; 0 (`auto` in the file) = the open-file
        /// limit less 1,024 descriptors kept for upstream sockets and cache files.
        /// A larger number is lowered to that.
        public var maxConnections = 0
        /// Connections open at once from one IPv4 address or IPv6 /64; 0 = no cap.
        public var maxConnectionsPerClient = 1024
        /// After SIGTERM/SIGINT, `/readyz` answers 503 and the listeners keep
        /// accepting this long before they close, so balancers take Berth out
        /// first. Skipped when no connection is open at the signal.
        public var drainDelay = 2.0
    }

    public struct TLSSection: Equatable, Sendable {
        /// HTTPS address; empty turns HTTPS off.
        public var listen = ""
        /// PEM certificate chain and private key (re-read on SIGHUP).
        public var certificate = ""
        public var key = ""
    }

    public struct MetricsSection: Equatable, Sendable {
        /// Address of the Prometheus `/metrics` listener (plain HTTP, its own port); empty: off.
        public var listen = ""
    }

    public struct LogSection: Equatable, Sendable {
        /// trace, debug, info, notice, warning, error, critical.
        public var level = "info"
        /// One JSON line per request: `off`, `stdout`, or a file path (appended to).
        public var access = "off"
    }

    public init() {}

    static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]

    /// Parses YAML text; unknown keys and bad values are errors that name the key.
    public static func parse(yaml: String) throws -> BerthConfig {
        var c = BerthConfig()
        let root: Any?
        let node: Node?
        // Yams compares complex keys for duplicates at a cost that explodes with their depth (found by Fuzz/ `config`:
        // 7 KB of nested `? ` keys ran for minutes): refused before Yams sees them.
        if hasComplexKey(yaml) {
            throw ConfigError(key: "(file)", "complex mapping keys (`? key`, or a [list] or {map} used as a key) are not accepted")
        }
        do { node = try Yams.compose(yaml: yaml, .default, plainConstructor) } catch { throw ConfigError(key: "(file)", "not valid YAML: \(error)") }
        // Yams traps on a mapping key that is not a scalar (`? [a]: b`; found by Fuzz/ `config`).
        if let node { try refuseComplexKeys(node) }
        root = node?.any
        guard let root else { return c }
        let top = try table(root, key: "(top level)")
        for (k, v) in top {
            switch k {
            case "listen": c.listen = try string(v, key: "listen")
            case "workers": c.workers = try int(v, key: "workers")
            case "offline": c.offline = try bool(v, key: "offline")
            case "peers": c.peers = try strings(v, key: "peers", of: "host:port addresses of the cluster's nodes")
            case "tls":
                for (tk, tv) in try table(v, key: "tls") {
                    switch tk {
                    case "listen": c.tls.listen = try string(tv, key: "tls.listen")
                    case "certificate": c.tls.certificate = try string(tv, key: "tls.certificate")
                    case "key": c.tls.key = try string(tv, key: "tls.key")
                    default: throw ConfigError(key: "tls.\(tk)", "unknown key")
                    }
                }
            case "server":
                for (sk, sv) in try table(v, key: "server") {
                    let key = "server.\(sk)"
                    switch sk {
                    case "header_timeout": c.server.headerTimeout = try duration(sv, key: key)
                    case "keepalive_timeout": c.server.keepaliveTimeout = try duration(sv, key: key)
                    case "max_connections": c.server.maxConnections = try connectionCap(sv, key: key)
                    case "max_connections_per_client": c.server.maxConnectionsPerClient = try int(sv, key: key)
                    case "drain_delay": c.server.drainDelay = try duration(sv, key: key)
                    default: throw ConfigError(key: key, "unknown key")
                    }
                }
            case "upstream":
                c.upstream = try upstreamSection(v, key: "upstream", list: false)
            case "upstreams":
                guard let list = v as? [Any], !list.isEmpty else { throw ConfigError(key: "upstreams", "expected a list of upstreams") }
                c.upstreams = try list.enumerated().map { try upstreamSection($0.element, key: "upstreams[\($0.offset)]", list: true) }
            case "cache":
                for (ck, cv) in try table(v, key: "cache") {
                    switch ck {
                    case "dir": c.cache.dir = try string(cv, key: "cache.dir")
                    case "tag_ttl": c.cache.tagTTL = try duration(cv, key: "cache.tag_ttl")
                    case "max_size": c.cache.maxSize = try string(cv, key: "cache.max_size")
                    case "high_watermark": c.cache.highWatermark = try int(cv, key: "cache.high_watermark")
                    case "low_watermark": c.cache.lowWatermark = try int(cv, key: "cache.low_watermark")
                    case "keep_history": c.cache.keepHistory = try int(cv, key: "cache.keep_history")
                    case "pinned":
                        c.cache.pinned = try strings(cv, key: "cache.pinned", of: "images")
                    default: throw ConfigError(key: "cache.\(ck)", "unknown key")
                    }
                }
            case "auth":
                for (ak, av) in try table(v, key: "auth") {
                    switch ak {
                    case "htpasswd": c.auth.htpasswd = try string(av, key: "auth.htpasswd")
                    case "anonymous": c.auth.anonymous = try bool(av, key: "auth.anonymous")
                    case "rules":
                        guard let list = av as? [Any] else { throw ConfigError(key: "auth.rules", "expected a list of {users, allow, deny}") }
                        c.auth.rules = try list.enumerated().map { try rule($0.element, key: "auth.rules[\($0.offset)]") }
                    default: throw ConfigError(key: "auth.\(ak)", "unknown key")
                    }
                }
            case "signatures":
                guard let list = v as? [Any] else { throw ConfigError(key: "signatures", "expected a list of {repositories, require, keys, mode}") }
                c.signatures = try list.enumerated().map { try signatureRule($0.element, key: "signatures[\($0.offset)]") }
            case "preload":
                for (pk, pv) in try table(v, key: "preload") {
                    switch pk {
                    case "images": c.preload.images = try strings(pv, key: "preload.images", of: "images")
                    case "platforms": c.preload.platforms = try strings(pv, key: "preload.platforms", of: "platforms")
                    default: throw ConfigError(key: "preload.\(pk)", "unknown key")
                    }
                }
            case "metrics":
                for (mk, mv) in try table(v, key: "metrics") {
                    switch mk {
                    case "listen": c.metrics.listen = try string(mv, key: "metrics.listen")
                    default: throw ConfigError(key: "metrics.\(mk)", "unknown key")
                    }
                }
            case "log":
                for (lk, lv) in try table(v, key: "log") {
                    switch lk {
                    case "level": c.log.level = try string(lv, key: "log.level")
                    // YAML 1.1 reads a bare `off` as false.
                    case "access": c.log.access = lv as? Bool == false ? "off" : try string(lv, key: "log.access")
                    default: throw ConfigError(key: "log.\(lk)", "unknown key")
                    }
                }
            default: throw ConfigError(key: k, "unknown key")
            }
        }
        try c.validate()
        return c
    }

    /// Applies `BERTH_LISTEN`, `BERTH_WORKERS`, `BERTH_TLS_LISTEN`,
    /// `BERTH_TLS_CERTIFICATE`, `BERTH_TLS_KEY`, `BERTH_LOG_LEVEL`, `BERTH_LOG_ACCESS`,
    /// `BERTH_SERVER_*`, `BERTH_UPSTREAM_*`, `BERTH_CACHE_*`.
    public mutating func apply(environment env: [String: String]) throws {
        if let v = env["BERTH_LISTEN"] { listen = v }
        if let v = env["BERTH_WORKERS"] {
            guard let n = Int(v) else { throw ConfigError(key: "workers", "BERTH_WORKERS=\(v) is not a whole number") }
            workers = n
        }
        if let v = env["BERTH_TLS_LISTEN"] { tls.listen = v }
        if let v = env["BERTH_TLS_CERTIFICATE"] { tls.certificate = v }
        if let v = env["BERTH_TLS_KEY"] { tls.key = v }
        if let v = env["BERTH_LOG_LEVEL"] { log.level = v }
        if let v = env["BERTH_LOG_ACCESS"] { log.access = v }
        if let v = env["BERTH_METRICS_LISTEN"] { metrics.listen = v }
        if let v = env["BERTH_AUTH_HTPASSWD"] { auth.htpasswd = v }
        if let v = env["BERTH_AUTH_ANONYMOUS"] { auth.anonymous = try Self.envBool("BERTH_AUTH_ANONYMOUS", v, key: "auth.anonymous") }
        if let v = env["BERTH_OFFLINE"] { offline = try Self.envBool("BERTH_OFFLINE", v, key: "offline") }
        if let v = env["BERTH_PEERS"] { peers = v.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
        if let v = env["BERTH_SERVER_HEADER_TIMEOUT"] { server.headerTimeout = try Self.duration(v, key: "server.header_timeout") }
        if let v = env["BERTH_SERVER_KEEPALIVE_TIMEOUT"] { server.keepaliveTimeout = try Self.duration(v, key: "server.keepalive_timeout") }
        if let v = env["BERTH_SERVER_DRAIN_DELAY"] { server.drainDelay = try Self.duration(v, key: "server.drain_delay") }
        if let v = env["BERTH_SERVER_MAX_CONNECTIONS"] { server.maxConnections = try Self.connectionCap(v, key: "server.max_connections") }
        if let v = env["BERTH_SERVER_MAX_CONNECTIONS_PER_CLIENT"] {
            guard let n = Int(v) else {
                throw ConfigError(key: "server.max_connections_per_client", "BERTH_SERVER_MAX_CONNECTIONS_PER_CLIENT=\(v) is not a whole number")
            }
            server.maxConnectionsPerClient = n
        }
        if let v = env["BERTH_UPSTREAM_URL"] { upstream.url = v }
        if let v = env["BERTH_UPSTREAM_USERNAME"] { upstream.username = v }
        if let v = env["BERTH_UPSTREAM_PASSWORD"] { upstream.password = v }
        if let v = env["BERTH_UPSTREAM_PASSWORD_FILE"] { upstream.passwordFile = v }
        if let v = env["BERTH_UPSTREAM_CA"] { upstream.ca = v }
        if let v = env["BERTH_UPSTREAM_CERTIFICATE"] { upstream.certificate = v }
        if let v = env["BERTH_UPSTREAM_KEY"] { upstream.key = v }
        if let v = env["BERTH_UPSTREAM_DOCKERHUB"] { upstream.dockerhub = v }
        if let v = env["BERTH_UPSTREAM_PROXY"] { upstream.proxy = v }
        for d in Self.upstreamDurations {
            if let v = env["BERTH_UPSTREAM_" + d.key.uppercased()] { try setUpstreamDuration(d.key, v) }
        }
        if let v = env["BERTH_UPSTREAM_PREFETCH"] { upstream.prefetch = try Self.envBool("BERTH_UPSTREAM_PREFETCH", v, key: "upstream.prefetch") }
        if let v = env["BERTH_UPSTREAM_MAX_REQUESTS"] {
            guard let n = Int(v), n >= 0 else { throw ConfigError(key: "upstream.max_requests", "BERTH_UPSTREAM_MAX_REQUESTS=\(v) is not 0 or a positive number") }
            upstream.maxRequests = n
        }
        for i in upstreams.indices {
            if let v = env[Self.passwordVariable(forUpstream: upstreams[i].resolvedName)] { upstreams[i].password = v }
        }
        if let v = env["BERTH_CACHE_DIR"] { cache.dir = v }
        if let v = env["BERTH_CACHE_MAX_SIZE"] { cache.maxSize = v }
        if let v = env["BERTH_CACHE_HIGH_WATERMARK"] {
            guard let n = Int(v) else { throw ConfigError(key: "cache.high_watermark", "BERTH_CACHE_HIGH_WATERMARK=\(v) is not a whole number") }
            cache.highWatermark = n
        }
        if let v = env["BERTH_CACHE_LOW_WATERMARK"] {
            guard let n = Int(v) else { throw ConfigError(key: "cache.low_watermark", "BERTH_CACHE_LOW_WATERMARK=\(v) is not a whole number") }
            cache.lowWatermark = n
        }
        if let v = env["BERTH_CACHE_KEEP_HISTORY"] {
            guard let n = Int(v) else { throw ConfigError(key: "cache.keep_history", "BERTH_CACHE_KEEP_HISTORY=\(v) is not a whole number") }
            cache.keepHistory = n
        }
        if let v = env["BERTH_CACHE_TAG_TTL"] { cache.tagTTL = try Self.duration(v, key: "cache.tag_ttl") }
        try validate()
    }

    /// One upstream's keys; `name`, `prefix`, `hosts` and `default` belong to list items only.
    private static func upstreamSection(_ v: Any, key parent: String, list: Bool) throws -> UpstreamSection {
        var u = UpstreamSection()
        for (uk, uv) in try table(v, key: parent) {
            let key = "\(parent).\(uk)"
            switch uk {
            case "name" where list: u.name = try string(uv, key: key)
            case "prefix" where list: u.prefix = try string(uv, key: key)
            case "hosts" where list: u.hosts = try strings(uv, key: key, of: "host names")
            case "default" where list: u.isDefault = try bool(uv, key: key)
            case "url": u.url = try string(uv, key: key)
            case "urls" where list:
                u.urls = try strings(uv, key: key, of: "URLs")
                if u.urls.isEmpty { throw ConfigError(key: key, "expected a list of URLs") }
            case "username": u.username = try string(uv, key: key)
            case "password": u.password = try string(uv, key: key)
            case "password_file": u.passwordFile = try string(uv, key: key)
            case "ca": u.ca = try string(uv, key: key)
            case "certificate": u.certificate = try string(uv, key: key)
            case "key": u.key = try string(uv, key: key)
            case "proxy": u.proxy = try string(uv, key: key)
            case "realm_allow": u.realmAllow = try strings(uv, key: key, of: "host names")
            case "dockerhub":
                if let b = uv as? Bool { u.dockerhub = b ? "true" : "false" } else { u.dockerhub = try string(uv, key: key) }
            case _ where upstreamDurations.contains { $0.key == uk }:
                u[keyPath: upstreamDurations.first { $0.key == uk }!.path] = try duration(uv, key: key)
            case "tag_ttl": u.tagTTL = try duration(uv, key: key)
            case "offline": u.offline = try bool(uv, key: key)
            case "prefetch": u.prefetch = try bool(uv, key: key)
            case "max_requests":
                u.maxRequests = try int(uv, key: key)
                if u.maxRequests < 0 { throw ConfigError(key: key, "expected 0 (no cap) or a positive number") }
            default: throw ConfigError(key: key, list || !["name", "prefix", "hosts", "default", "urls"].contains(uk) ? "unknown key"
                                       : "belongs to an item of upstreams:, not to upstream:")
            }
        }
        return u
    }

    /// `BERTH_UPSTREAMS_<NAME>_PASSWORD`: NAME is the upstream's name in upper case, other characters as `_`.
    public static func passwordVariable(forUpstream name: String) -> String {
        "BERTH_UPSTREAMS_" + String(name.uppercased().map { $0.isLetter || $0.isNumber ? $0 : "_" }) + "_PASSWORD"
    }

    /// The keys that differ in `new` and take effect only at a start: the
    /// listeners, loops, cache, metrics, the access log and preload. The rest (upstreams,
    /// auth, signatures, peers, server limits, `cache.tag_ttl`, `log.level`, the TLS files) reload.
    public func restartOnlyChanges(to new: BerthConfig) -> [String] {
        var cache = new.cache
        cache.tagTTL = self.cache.tagTTL
        let changed: [(String, Bool)] = [
            ("listen", listen != new.listen), ("workers", workers != new.workers), ("tls.listen", tls.listen != new.tls.listen),
            ("cache", self.cache != cache), ("metrics", metrics != new.metrics),
            ("log.access", log.access != new.log.access), ("preload", preload != new.preload),
        ]
        return changed.filter(\.1).map(\.0)
    }

    /// A `peers:` entry's host and port: `host:port`, `[v6]:port` or `http://` before either.
    public static func peerHostPort(_ entry: String) -> (host: String, port: UInt16)? {
        var t = Substring(entry)
        if t.lowercased().hasPrefix("http://") { t = t.dropFirst(7) }
        if t.hasSuffix("/") { t = t.dropLast() }
        guard let colon = t.lastIndex(of: ":"), let port = UInt16(t[t.index(after: colon)...]), port > 0 else { return nil }
        var host = t[..<colon]
        if host.hasPrefix("[") && host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        let allowed = host.utf8.allSatisfy { $0 == 0x2e || $0 == 0x2d || $0 == 0x3a || $0 == 0x5f || (0x30...0x39).contains($0) || (0x41...0x5a).contains($0) || (0x61...0x7a).contains($0) }
        guard !host.isEmpty, host.utf8.count <= 253, allowed else { return nil }
        return (String(host), port)
    }

    /// Checks values that parse but cannot work.
    public func validate() throws {
        guard SocketAddress(listen) != nil else {
            throw ConfigError(key: "listen", "\"\(listen)\" is not an address: use \":5000\", \"127.0.0.1:5000\" or \"[::1]:5000\"")
        }
        if !tls.listen.isEmpty {
            guard SocketAddress(tls.listen) != nil else {
                throw ConfigError(key: "tls.listen", "\"\(tls.listen)\" is not an address: use \":5443\" or \"127.0.0.1:5443\"")
            }
            if tls.certificate.isEmpty { throw ConfigError(key: "tls.certificate", "required when tls.listen is set") }
            if tls.key.isEmpty { throw ConfigError(key: "tls.key", "required when tls.listen is set") }
        }
        if !metrics.listen.isEmpty, SocketAddress(metrics.listen) == nil || metrics.listen == listen || metrics.listen == tls.listen {
            throw ConfigError(key: "metrics.listen", "\"\(metrics.listen)\" is not an address of its own: use \":9090\" or \"127.0.0.1:9090\"")
        }
        for (key, v) in [("server.header_timeout", server.headerTimeout), ("server.keepalive_timeout", server.keepaliveTimeout)] where !(v > 0) {
            throw ConfigError(key: key, "must be a positive duration such as 20s")
        }
        guard server.maxConnections >= 0 else {
            throw ConfigError(key: "server.max_connections", "must be auto or a positive number")
        }
        guard server.maxConnectionsPerClient >= 0 else {
            throw ConfigError(key: "server.max_connections_per_client", "must be 0 (no cap) or a positive number")
        }
        guard (0...256).contains(workers) else { throw ConfigError(key: "workers", "\(workers) is out of range 0...256") }
        for p in peers where Self.peerHostPort(p) == nil {
            throw ConfigError(key: "peers", "\"\(p)\" is not a node's host:port (such as 10.0.0.12:5000, berth-1.berth:5000 or [fd00::12]:5000)")
        }
        if !upstreams.isEmpty && upstream != UpstreamSection() {
            throw ConfigError(key: "upstream", "use either upstream: (and its flags) or upstreams:, not both")
        }
        var names: Set<String> = [], prefixes: Set<String> = []
        for (i, u) in effectiveUpstreams.enumerated() {
            let section = upstreams.isEmpty ? "upstream" : "upstreams[\(i)]"
            try u.validate(section)
            let name = u.resolvedName
            guard names.insert(name.lowercased()).inserted else { throw ConfigError(key: "\(section).name", "\"\(name)\" names two upstreams") }
            if let p = u.resolvedPrefix {
                guard prefixes.insert(p).inserted else { throw ConfigError(key: "\(section).prefix", "\"\(p)\" is the prefix of two upstreams") }
            }
        }
        for (i, u) in effectiveUpstreams.enumerated() where u.maxRequests < 0 {
            throw ConfigError(key: upstreams.isEmpty ? "upstream.max_requests" : "upstreams[\(i)].max_requests", "expected 0 (no cap) or a positive number")
        }
        if effectiveUpstreams.filter(\.isDefault).count > 1 {
            throw ConfigError(key: "upstreams", "default: true on more than one upstream")
        }
        if cache.dir.isEmpty { throw ConfigError(key: "cache.dir", "must name a directory") }
        if !cache.maxSize.isEmpty && Budget.parseSize(cache.maxSize, filesystemOf: "/") == nil {
            throw ConfigError(key: "cache.max_size", "\"\(cache.maxSize)\" is not a size such as 50GiB, 500MiB or 80%")
        }
        guard (1...100).contains(cache.highWatermark), (0..<cache.highWatermark).contains(cache.lowWatermark) else {
            throw ConfigError(key: "cache.low_watermark", "watermarks must satisfy 0 ≤ low < high ≤ 100 (got \(cache.lowWatermark) and \(cache.highWatermark))")
        }
        for image in preload.images where ImageReference(image) == nil {
            throw ConfigError(key: "preload.images", "\"\(image)\" is not an image reference such as library/alpine:3.20 or ghcr.io/org/app@sha256:…")
        }
        for p in preload.platforms where Platform(p) == nil {
            throw ConfigError(key: "preload.platforms", "\"\(p)\" is not a platform such as linux/amd64 or linux/arm64/v8")
        }
        for image in cache.pinned where ImageReference(image) == nil {
            throw ConfigError(key: "cache.pinned", "\"\(image)\" is not an image reference such as library/alpine:3.20 or repo@sha256:…")
        }
        guard (0...CacheIndex.historyLimit).contains(cache.keepHistory) else {
            throw ConfigError(key: "cache.keep_history", "must be between 0 and \(CacheIndex.historyLimit) (got \(cache.keepHistory))")
        }
        guard cache.tagTTL >= 0 else { throw ConfigError(key: "cache.tag_ttl", "must not be negative") }
        guard Self.logLevels.contains(log.level) else {
            throw ConfigError(key: "log.level", "\"\(log.level)\" is not one of \(Self.logLevels.joined(separator: ", "))")
        }
        if log.access.isEmpty { throw ConfigError(key: "log.access", "must be off, stdout or a file path") }
    }

    private static func signatureRule(_ v: Any, key: String) throws -> SignatureRule {
        var r = SignatureRule()
        var required = false
        for (k, rv) in try table(v, key: key) {
            switch k {
            case "repositories": r.repositories = try strings(rv, key: "\(key).repositories", of: "patterns")
            case "exempt": r.exempt = try strings(rv, key: "\(key).exempt", of: "patterns")
            case "keys": r.keys = try strings(rv, key: "\(key).keys", of: "PEM files")
            case "mode":
                r.mode = try string(rv, key: "\(key).mode")
                guard ["enforce", "warn"].contains(r.mode) else { throw ConfigError(key: "\(key).mode", "\"\(r.mode)\" is not enforce or warn") }
            case "require":
                guard try string(rv, key: "\(key).require") == "signed" else { throw ConfigError(key: "\(key).require", "the one requirement is signed") }
                required = true
            default: throw ConfigError(key: "\(key).\(k)", "unknown key")
            }
        }
        guard required else { throw ConfigError(key: "\(key).require", "say require: signed") }
        if r.repositories.isEmpty { throw ConfigError(key: "\(key).repositories", "name at least one repository pattern") }
        if r.keys.isEmpty { throw ConfigError(key: "\(key).keys", "name at least one trusted public key (PEM file)") }
        for glob in r.repositories + r.exempt {
            if let why = PullRules.invalidGlob(glob) { throw ConfigError(key: key, why) }
        }
        return r
    }

    private static func rule(_ v: Any, key: String) throws -> PullRules.Rule {
        var r = PullRules.Rule(users: [])
        for (k, rv) in try table(v, key: key) {
            switch k {
            case "users": r.users = try strings(rv, key: "\(key).users", of: "user names")
            case "allow": r.allow = try strings(rv, key: "\(key).allow", of: "patterns")
            case "deny": r.deny = try strings(rv, key: "\(key).deny", of: "patterns")
            default: throw ConfigError(key: "\(key).\(k)", "unknown key")
            }
        }
        if r.users.isEmpty { throw ConfigError(key: "\(key).users", "name at least one user (or \"*\" for every user)") }
        for glob in r.allow + r.deny {
            if let why = PullRules.invalidGlob(glob) { throw ConfigError(key: key, why) }
        }
        return r
    }

    // MARK: YAML helpers

    private static func table(_ v: Any, key: String) throws -> [(String, Any)] {
        guard let d = v as? [String: Any] else { throw ConfigError(key: key, "expected a mapping") }
        return d.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    private static func string(_ v: Any, key: String) throws -> String {
        if let s = v as? String { return s }
        if let i = v as? Int { return String(i) }
        throw ConfigError(key: key, "expected a string")
    }

    /// `30s`, `5m`, `1h`, `250ms`, or a bare number of seconds.
    public static func parseDuration(_ v: Any, key: String) throws -> Double { try duration(v, key: key) }

    /// Durations are 0 to 10 years: nanoseconds of that fit a UInt64 with room to spare.
    static let maxDuration = 10 * 365 * 86_400.0

    static func duration(_ v: Any, key: String) throws -> Double {
        let seconds: Double?
        if let i = v as? Int { seconds = Double(i) } else if let d = v as? Double { seconds = d } else if let s = v as? String {
            let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
            let unit = units.first { s.hasSuffix($0.0) && Double(s.dropLast($0.0.count)) != nil }
            seconds = unit.map { Double(s.dropLast($0.0.count))! * $0.1 } ?? Double(s)
        } else {
            throw ConfigError(key: key, "expected a duration such as 30s or 5m")
        }
        // Double() takes "-5", "inf" and "nan": none is a wait (and each would trap as nanoseconds).
        guard let seconds, seconds.isFinite, seconds >= 0, seconds <= maxDuration else {
            throw ConfigError(key: key, "\(v) is not a duration from 0 to 10 years such as 30s or 5m")
        }
        return seconds
    }

    /// `auto` (stored as 0) or a positive number of connections.
    public static func parseConnectionCap(_ v: Any, key: String) throws -> Int { try connectionCap(v, key: key) }

    static func connectionCap(_ v: Any, key: String) throws -> Int {
        if let s = v as? String, s == "auto" { return 0 }
        if let i = v as? Int, i > 0 { return i }
        if let s = v as? String, let i = Int(s), i > 0 { return i }
        throw ConfigError(key: key, "\(v) is not auto or a positive number of connections")
    }

    private static func bool(_ v: Any, key: String) throws -> Bool {
        guard let b = v as? Bool else { throw ConfigError(key: key, "expected true or false") }
        return b
    }

    private static func strings(_ v: Any, key: String, of what: String) throws -> [String] {
        guard let list = v as? [Any] else { throw ConfigError(key: key, "expected a list of \(what)") }
        return try list.map { try string($0, key: key) }
    }

    private static func envBool(_ name: String, _ v: String, key: String) throws -> Bool {
        guard let b = ["true": true, "1": true, "false": false, "0": false][v] else {
            throw ConfigError(key: key, "\(name)=\(v) is not true or false")
        }
        return b
    }

    /// Yams' default types less YAML 1.1's base-60 integers (Yams traps on one
    /// that overflows; found by Fuzz/ `config`), binary and timestamps: an
    /// integer is decimal or 0x hex, and anything else stays text.
    private static var plainConstructor: Constructor {
        var scalars = Constructor.defaultScalarMap
        scalars[.int] = { s -> Any? in
            let t = s.string
            if t.hasPrefix("0x") { return Int(t.dropFirst(2), radix: 16) }
            return Int(t)
        }
        scalars[.binary] = nil
        scalars[.timestamp] = nil
        return Constructor(scalars)
    }

    private static func int(_ v: Any, key: String) throws -> Int {
        if let i = v as? Int { return i }
        throw ConfigError(key: key, "expected a whole number")
    }
}

extension BerthConfig.UpstreamSection {
    /// The name clients use: as configured, else the URL's host (with its port when not the scheme's; `docker.io` for Docker Hub).
    /// `urls`, or `[url]`.
    public var allURLs: [String] { urls.isEmpty ? [url] : urls }

    public var resolvedName: String {
        if !name.isEmpty { return name }
        guard let u = HTTPURL(allURLs[0]) else { return allURLs[0] }
        return UpstreamConfiguration(url: u).name
    }

    /// The path prefix in force, nil for none.
    public var resolvedPrefix: String? {
        guard let prefix else { return UpstreamRouter.Entry.defaultPrefix(for: resolvedName) }
        return prefix.isEmpty ? nil : prefix
    }

    func validate(_ section: String) throws {
        if !urls.isEmpty && url != Self().url {
            throw ConfigError(key: "\(section).urls", "use either url or urls")
        }
        for u in allURLs where HTTPURL(u) == nil {
            throw ConfigError(key: "\(section).\(urls.isEmpty ? "url" : "urls")", "\"\(u)\" is not an http(s) URL such as https://registry-1.docker.io")
        }
        if let prefix, !prefix.isEmpty, !RepositoryName.isValid(prefix) {
            throw ConfigError(key: "\(section).prefix", "\"\(prefix)\" is not a repository path such as ghcr.io or harbor/proj")
        }
        for h in hosts where h.isEmpty || h.contains("/") || h.contains(" ") {
            throw ConfigError(key: "\(section).hosts", "\"\(h)\" is not a host name")
        }
        if certificate.isEmpty != key.isEmpty {
            throw ConfigError(key: "\(section).\(certificate.isEmpty ? "certificate" : "key")", "certificate and key go together")
        }
        if !proxy.isEmpty {
            guard let p = HTTPURL(proxy), p.scheme == "http", p.pathAndQuery == "/" else {
                throw ConfigError(key: "\(section).proxy", "\"\(proxy)\" is not an HTTP proxy such as http://proxy.corp:3128 (no credentials, no path)")
            }
        }
        for (k, v) in [("connect_timeout", connectTimeout), ("manifest_timeout", manifestTimeout),
                       ("blob_timeout", blobTimeout), ("idle_timeout", idleTimeout)] where !(v > 0) {
            throw ConfigError(key: "\(section).\(k)", "must be a positive duration such as 30s")
        }
        guard ["auto", "true", "false"].contains(dockerhub) else {
            throw ConfigError(key: "\(section).dockerhub", "\"\(dockerhub)\" is not one of auto, true, false")
        }
    }
}

/// A configuration value Berth cannot run with; `key` is the dotted key path.
public struct ConfigError: Error, CustomStringConvertible, Equatable {
    public let key: String
    public let message: String
    public init(key: String, _ message: String) {
        self.key = key
        self.message = message
    }
    public var description: String { "config: \(key): \(message)" }
}
