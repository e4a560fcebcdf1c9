#if canImport(Glibc)
import Glibc
#endif
import Reactor
import HTTP1
import OCI
import BlobStore
import TLS
import Synchronization
import Telemetry

/// Settings of the proxy core.
public struct MirrorConfiguration: Sendable {
    /// The registries mirrored; at most one `isDefault` (with one upstream, it is the default).
    public var upstreams: [UpstreamConfiguration]
    /// How long a tag → digest mapping is trusted before one HEAD revalidates it.
    public var tagTTLNanos: UInt64 = 300_000_000_000
    /// Largest manifest accepted (Distribution's limit).
    public var maxManifestBytes = 4 * 1024 * 1024
    /// A client behind a hung upstream gets an answer within this long.
    public var clientDeadlineNanos: UInt64 = 20_000_000_000
    /// Who may pull; nil: everyone, as the user `anonymous`.
    public var clientAuth: ClientAuth?
    /// What each user may pull (`auth.rules`); empty: everything.
    public var pullRules = PullRules()
    /// Which repositories' manifests must carry a trusted signature (`signatures:`); empty: none.
    public var signaturePolicy = SignaturePolicy()
    /// Prometheus metrics (`metrics.listen`); nil: off.
    public var metrics: BerthMetrics?
    /// The cluster's nodes in the balancer's order, this one included (`peers:`); empty: no peers.
    public var peers: [PeerAddress] = []

    public init(upstreams: [UpstreamConfiguration]) { self.upstreams = upstreams }
    public init(upstream: UpstreamConfiguration) { self.init(upstreams: [upstream]) }
}

/// One configured upstream: its settings, its credentials and tokens (shared
/// by every loop), and a client per loop.
final class Registry: @unchecked Sendable {  // immutable after init; each Upstream used on its loop only
    let config: UpstreamConfiguration
    let auth: UpstreamAuth
    let failover: Failover
    let breaker: CircuitBreaker
    /// Tags this upstream answered 404 for, not asked again for `negativeTTLNanos`.
    let missingTags: ExpiringSet
    /// Tags (`key:tag`) with a revalidation in flight: one HEAD per tag at a
    /// time, however many requests find it expired meanwhile.
    private let revalidating = Mutex<Set<String>>([])
    private let perLoop: [Upstream]

    /// True when the caller is to revalidate `tag` (and call `endRevalidation`); false when one is under way.
    func beginRevalidation(_ tag: String) -> Bool { revalidating.withLock { $0.insert(tag).inserted } }
    func endRevalidation(_ tag: String) { _ = revalidating.withLock { $0.remove(tag) } }

    init(config: UpstreamConfiguration, group: EventLoopGroup, pool: BlockingPool, deadlineNanos: UInt64, metrics: UpstreamMetrics?) {
        self.config = config
        let auth = UpstreamAuth(config: config)
        self.auth = auth
        let failover = Failover(config.urls)
        self.failover = failover
        missingTags = ExpiringSet(ttlNanos: config.negativeTTLNanos, capacity: 10_000)
        let breaker = CircuitBreaker(name: config.name, windowNanos: config.breakerWindowNanos, maxBackoffNanos: config.maxBackoffNanos)
        self.breaker = breaker
        let limiter = RequestLimiter(limit: config.maxRequests)
        perLoop = group.loops.map {
            Upstream(client: HTTPClient(loop: $0, pool: pool, tls: config.tls, proxy: config.proxy), auth: auth, failover: failover, breaker: breaker,
                     limiter: limiter, deadlineNanos: deadlineNanos, metrics: metrics)
        }
    }

    func upstream(for loop: EventLoop) -> Upstream { perLoop[loop.index] }

    /// A reload dropped this upstream or changed its settings: its clients
    /// close their idle connections; requests in flight finish on them.
    func retire() {
        for u in perLoop { u.loop.execute { u.client.retire() } }
    }

    /// The repository name as the upstream knows it (Docker Hub's `library/`).
    func upstreamName(_ name: String) -> String {
        guard config.dockerHubNames, !name.contains("/") else { return name }
        return "library/" + name
    }

    /// The repository's key in the cache index: the default upstream's
    /// repositories as they are (`library/alpine`), any other's behind its
    /// name (`ghcr.io/org/x`), so tags and access links never cross upstreams.
    func indexName(_ upstreamName: String) -> String {
        config.isDefault ? upstreamName : config.name + "/" + upstreamName
    }
}

/// What every `/v2/<name>/…` handler needs: the writer, the upstream the
/// request selected, and the repository's three spellings.
struct RequestContext {
    let mirror: Mirror
    /// The configuration the request started with (a reload does not change it midway).
    let state: MirrorState
    let w: ResponseWriter
    let registry: Registry
    /// As the client wrote it (prefix included): error messages, `Link` headers, tag-list names.
    let name: String
    /// As the upstream knows it: upstream paths and token scopes.
    let repo: String
    /// The cache index's key for the repository.
    let key: String
    var upstream: Upstream { registry.upstream(for: w.loop) }
    var config: UpstreamConfiguration { registry.config }
    var index: CacheIndex { mirror.store.index }
}

/// A `/v2/<name>/…` handler: the context's parts by their short names.
protocol RepositoryHandler {
    var ctx: RequestContext { get }
}

extension RepositoryHandler {
    var mirror: Mirror { ctx.mirror }
    var settings: MirrorConfiguration { ctx.state.config }
    var w: ResponseWriter { ctx.w }
    var name: String { ctx.name }
    var repo: String { ctx.repo }
    var key: String { ctx.key }
    var index: CacheIndex { ctx.index }
}

/// What a configuration reload replaces, as one immutable value: a request
/// works with the one it started with.
final class MirrorState: Sendable {
    let config: MirrorConfiguration
    let registries: [Registry]
    let router: UpstreamRouter
    /// Nil without `peers:`.
    let peers: Peers?

    init(config: MirrorConfiguration, registries: [Registry], peers: Peers?) {
        self.config = config
        self.registries = registries
        self.peers = peers
        router = UpstreamRouter(config.upstreams.map { .init(name: $0.name, prefix: $0.prefix, hosts: $0.hosts) },
                                defaultIndex: config.upstreams.firstIndex { $0.isDefault })
    }
}

/// The `/v2/` pull-through proxy: routes each request to one of the
/// configured upstreams, answers from the cache when it can, and otherwise
/// fetches from that upstream, streaming to the client while filling the cache.
///
/// Shared by every loop; per-loop parts (the HTTP clients and their pools) are
/// picked by the request's loop.
public final class Mirror: @unchecked Sendable {  // `latest` under its lock; `slots[i]` on loop i only; per-loop state on its loop
    /// The configuration in force, for readers off the loops (a reload swaps it).
    private let latest: Mutex<MirrorState>
    var current: MirrorState { latest.withLock { $0 } }
    /// Each loop's copy of `latest`, read by every request without a lock.
    private final class Slot {
        var state: MirrorState {
            didSet {
                verified = [:]
                prepared.removeAll()
            }
        }
        /// Warm manifest answers prepared under `state` (see `PreparedManifests`).
        let prepared = PreparedManifests()
        /// Manifests this loop served as verified under `state`'s signature policy, by
        /// repository key and digest, with their decision counter: a warm request skips
        /// rule matching, the index's lock and the verdict's parse. A verified verdict
        /// never changes for the same rule and keys; a reload empties this.
        var verified: [VerifiedKey: (() -> Void)?] = [:]
        init(_ state: MirrorState) { self.state = state }
    }
    struct VerifiedKey: Hashable {
        let key: String
        let digest: Digest
        /// The digest's first 64 bits: already uniformly spread, hashed instead of 64 hex characters.
        private let prefix: UInt64

        init(key: String, digest: Digest) {
            self.key = key
            self.digest = digest
            var hex = digest.hex
            prefix = hex.withUTF8 { b in
                b.prefix(16).reduce(0) { $0 << 4 | UInt64($1 <= 0x39 ? $1 &- 0x30 : $1 &- 0x57) }
            }
        }

        func hash(into hasher: inout Hasher) { hasher.combine(prefix) }
        static func == (a: Self, b: Self) -> Bool { a.prefix == b.prefix && a.digest == b.digest && a.key == b.key }
    }
    private let slots: [Slot]

    /// Loop thread only: whether `digest` under `key` was served as verified on this loop, and its counter.
    func knownVerified(_ loop: EventLoop, _ key: String, _ digest: Digest) -> (() -> Void)?? {
        slots[loop.index].verified[VerifiedKey(key: key, digest: digest)]
    }

    /// Loop thread only: remembers a verified decision made under `state` (bounded: a full table
    /// starts over); one made under a configuration this loop has since replaced is not kept.
    func noteVerified(_ loop: EventLoop, _ key: String, _ digest: Digest, under state: MirrorState, count: (() -> Void)?) {
        let slot = slots[loop.index]
        guard slot.state === state else { return }
        if slot.verified.count >= 4096 { slot.verified = [:] }
        slot.verified[VerifiedKey(key: key, digest: digest)] = count
    }
    /// Loop thread only: keeps the answer `w` is about to send for `target` (a plain
    /// cache hit of `digest` under `key`), decided from the index as of `generation`
    /// under `state`; not kept when this loop has moved to another configuration.
    func notePrepared(_ w: ResponseWriter, state: MirrorState, generation: UInt64, key: String, digest: Digest,
                      freshness: PreparedManifests.Freshness, head: PreparedHead, body: [UInt8], now: Int64) {
        let slot = slots[w.loop.index]
        guard slot.state === state, let user = w.notes.user else { return }
        let headers = w.request.headers
        slot.prepared.insert(w.request.target, .init(user: user, host: headers["Host"], accept: headers.values("Accept"), generation: generation,
                                                     key: key, digest: digest, freshness: freshness, head: head, body: body,
                                                     notes: w.notes, touchedAt: now))
    }

    /// Answers `w` from a prepared entry when every input of its decision is
    /// unchanged (`PreparedManifests`); false when the request must take the full route.
    private func answerPrepared(_ w: ResponseWriter, user: String, _ state: MirrorState) -> Bool {
        let slot = slots[w.loop.index]
        let target = w.request.target
        guard let e = slot.prepared.entry(target) else { return false }
        let headers = w.request.headers
        let now = unixNow()
        guard slot.state === state, e.user == user, e.generation == store.index.generation, e.freshness.isFresh(now: now),
              headers["Host"] == e.host, headers.values("Accept", equal: e.accept) else {
            slot.prepared.remove(target)
            return false
        }
        if !state.config.signaturePolicy.rules.isEmpty {
            // Verified on this loop under this configuration, as `signatureGate`'s warm path asks.
            guard let count = slot.verified[VerifiedKey(key: e.key, digest: e.digest)] else { return false }
            count?()
        }
        // The LRU keeps last use in seconds: one touch per second is the same order.
        if e.touchedAt != now {
            store.index.touch(e.digest, now: now)
            e.touchedAt = now
        }
        w.notes.user = user
        w.notes.upstream = e.upstream
        w.notes.repository = e.repository
        w.notes.reference = e.reference
        w.respond(e.head, body: e.body)
        return true
    }

    let store: BlobStore
    let fills: FillRegistry
    let pool: BlockingPool
    /// Manifests served recently, in memory.
    let manifests = ManifestMemo()
    /// Blob misses sent to peers (`peers:`), across reloads.
    let peerCounts = PeerCounts()
    /// Signature verdicts per manifest digest (`signatures:`), in the cache index.
    var verdicts: VerdictCache { VerdictCache(index: store.index) }
    let log: (HTTPServer.LogLevel, String) -> Void
    private let group: EventLoopGroup
    /// Set when shutdown begins: `/readyz` answers 503 from then on.
    private let draining = Atomic<Bool>(false)

    public init(config: MirrorConfiguration, store: BlobStore, group: EventLoopGroup, pool: BlockingPool,
                log: @escaping (HTTPServer.LogLevel, String) -> Void) {
        precondition(!config.upstreams.isEmpty, "at least one upstream")
        var config = config
        if config.upstreams.count == 1 { config.upstreams[0].isDefault = true }
        self.store = store
        self.pool = pool
        self.log = log
        self.group = group
        let fills = FillRegistry(store: store, pool: pool)
        self.fills = fills
        let initial = MirrorState(config: config, registries: config.upstreams.map {
            Registry(config: $0, group: group, pool: pool, deadlineNanos: config.clientDeadlineNanos, metrics: config.metrics?.upstream($0.name))
        }, peers: config.peers.isEmpty ? nil : Peers(config.peers, counts: peerCounts, group: group, pool: pool, log: log))
        latest = Mutex(initial)
        slots = group.loops.map { _ in Slot(initial) }
        config.metrics?.addCollector { [weak self] out in
            guard let self else { return }
            let state = self.current
            Mirror.collect(state.registries, fills, store, into: &out)
            if state.peers != nil { Mirror.collect(self.peerCounts, into: &out) }
        }
    }

    /// What a reload changed, by upstream name.
    public struct ReloadSummary: Sendable, CustomStringConvertible {
        public var added: [String] = [], changed: [String] = [], removed: [String] = [], kept: [String] = []
        public var description: String {
            [("added", added), ("changed", changed), ("removed", removed), ("unchanged", kept)]
                .filter { !$0.1.isEmpty }.map { "\($0.0) \($0.1.joined(separator: ", "))" }.joined(separator: "; ")
        }
    }

    /// Swaps in a new configuration (SIGHUP). An upstream whose name, default
    /// and fingerprint are unchanged keeps its tokens, connections and breaker;
    /// the others start afresh. Requests and fills in flight finish on what
    /// they started with; a dropped upstream's idle connections close.
    /// `applied` runs, on a loop, once every loop serves with the new configuration.
    public func reload(_ new: MirrorConfiguration, applied: @escaping @Sendable (ReloadSummary) -> Void) {
        precondition(!new.upstreams.isEmpty, "at least one upstream")
        var config = new
        if config.upstreams.count == 1 { config.upstreams[0].isDefault = true }
        let old = current
        var summary = ReloadSummary()
        let registries = config.upstreams.map { u -> Registry in
            if let r = old.registries.first(where: { $0.config.name == u.name }) {
                if !u.fingerprint.isEmpty && r.config.fingerprint == u.fingerprint && r.config.isDefault == u.isDefault {
                    summary.kept.append(u.name)
                    return r
                }
                summary.changed.append(u.name)
            } else {
                summary.added.append(u.name)
            }
            return Registry(config: u, group: group, pool: pool, deadlineNanos: config.clientDeadlineNanos, metrics: config.metrics?.upstream(u.name))
        }
        summary.removed = old.registries.map(\.config.name).filter { n in !config.upstreams.contains { $0.name == n } }
        // The same members keep their connections and failure marks.
        let peers = config.peers.isEmpty ? nil : config.peers == old.config.peers ? old.peers : Peers(config.peers, counts: peerCounts, group: group, pool: pool, log: log)
        let state = MirrorState(config: config, registries: registries, peers: peers)
        let done = summary
        latest.withLock { $0 = state }
        let waiting = Atomic<Int>(slots.count)
        for (slot, loop) in zip(slots, group.loops) {
            loop.execute {
                slot.state = state
                if waiting.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 { applied(done) }
            }
        }
        for r in old.registries where !registries.contains(where: { $0 === r }) { r.retire() }
        if let p = old.peers, p !== peers { p.retire() }
    }

    /// Shutdown has begun: `/readyz` turns 503 so that balancers stop sending
    /// new requests while the listeners still accept.
    public func beginDraining() { draining.store(true, ordering: .relaxed) }

    /// Ready: the cache is loaded (it is before a Mirror exists) and open, and
    /// Berth is not draining. With the cache open, cached content is servable
    /// whatever the upstreams' state, so they are not part of the rule.
    public var isReady: Bool { !draining.load(ordering: .relaxed) }

    /// The HTTP server's handler.
    public func handle(_ w: ResponseWriter) {
        let req = w.request
        let state = slots[w.loop.index].state
        switch req.method {
        case .get, .head: break
        default:
            var head = ResponseHead(status: 405)
            head.headers.add("Allow", "GET, HEAD")
            Mirror.error(w, .unsupported, "Berth is a pull-only mirror: \(req.method.name) is not served", head: head)
            return
        }
        // A warm manifest, before anything is parsed (with client auth, once the user is known).
        if state.config.clientAuth == nil, answerPrepared(w, user: "anonymous", state) { return }
        let (path, query) = splitTarget(req.target)
        if path == "/healthz" {
            var head = ResponseHead(status: 200)
            head.headers.add("Content-Type", "text/plain")
            w.respond(head, body: Array("ok\n".utf8))
            return
        }
        if path == "/readyz" {
            let ready = isReady
            var head = ResponseHead(status: ready ? 200 : 503)
            head.headers.add("Content-Type", "application/json")
            w.respond(head, body: Array((ready ? #"{"status":"ready"}"# : #"{"status":"draining"}"#).utf8))
            return
        }
        guard let auth = state.config.clientAuth else { return route(w, path, query, user: "anonymous", state) }
        auth.check(req.headers["Authorization"], loop: w.loop, pool: pool) { [self] outcome in
            if case .allowed(let user) = outcome { w.notes.user = user }
            switch outcome {
            case .allowed(let user) where user == "anonymous" && path == "/v2/":
                // Docker, skopeo and podman learn from this ping alone whether to
                // send credentials: challenge it, so that clients with credentials
                // use them. Anonymous content requests still pass.
                refuse(w, "authentication required (anonymous pulls are allowed)")
            case .allowed(let user):
                route(w, path, query, user: user, state)
            case .refused(let why):
                refuse(w, why)
            }
        }
    }

    /// 401 with the `Basic` challenge clients answer from their credential configuration.
    private func refuse(_ w: ResponseWriter, _ why: String) {
        log(.info, w, "401 \(why)")
        var head = ResponseHead(status: 401)
        head.headers.add("WWW-Authenticate", "Basic realm=\"Berth\"")
        Mirror.error(w, .unauthorized, why, head: head)
    }

    private func route(_ w: ResponseWriter, _ path: Substring, _ query: Substring, user: String, _ state: MirrorState) {
        if state.config.clientAuth != nil, answerPrepared(w, user: user, state) { return }
        w.notes.user = user
        switch Routes.parse(path: path) {
        case .failure(let e):
            log(.info, w, "\(e.status) \(e.code) \(e.message)")
            Mirror.error(w, OCIErrorCode(rawValue: e.code) ?? .notFound, e.message, status: e.status)
        case .success(.base):
            var head = ResponseHead(status: 200)
            head.headers.add("Content-Type", "application/json")
            head.headers.add("Docker-Distribution-API-Version", "registry/2.0")
            w.respond(head, body: Array("{}".utf8))
        case .success(.manifest(_, .digest(let digest))) where digest.algorithm != .sha256,
             .success(.blob(_, let digest)) where digest.algorithm != .sha256:
            // Valid by the spec's grammar, but Berth hashes what it serves with
            // SHA-256 only: it cannot verify this content, so it does not serve it.
            Mirror.error(w, .unsupported, "Berth verifies sha256 digests only; \(digest.algorithm.rawValue) content is not served", status: 400)
        case .success(.manifest(let name, let reference)):
            w.notes.reference = reference.description
            context(w, name, query, user: user, state).map { ManifestRequest($0, reference: reference).run() }
        case .success(.blob(let name, let digest)):
            w.notes.reference = digest.description
            context(w, name, query, user: user, state).map { BlobRequest($0, digest: digest).run() }
        case .success(.tagsList(let name)):
            context(w, name, query, user: user, state).map { TagsRequest($0, query: query).run() }
        case .success(.referrers(let name, let digest)):
            w.notes.reference = digest.description
            context(w, name, query, user: user, state).map { ReferrersRequest($0, digest: digest, query: query).run() }
        }
    }

    /// Selects the upstream for `name`; answers 404 `NAME_UNKNOWN` itself when none is configured for it.
    private func context(_ w: ResponseWriter, _ name: String, _ query: Substring, user: String, _ state: MirrorState) -> RequestContext? {
        let config = state.config
        switch state.router.select(name: name, ns: queryValue(query, "ns"), host: w.request.headers["Host"]) {
        case .unknown(let message):
            log(.info, w, "404 NAME_UNKNOWN \(message)")
            Mirror.error(w, .nameUnknown, message)
            return nil
        case .upstream(let i, let repository, let namespace):
            // Only a name the configuration holds is echoed: never bytes the client sent.
            if let namespace { w.extraHeaders.add("OCI-Namespace", namespace) }
            let registry = state.registries[i]
            let repo = registry.upstreamName(repository)
            w.notes.upstream = registry.config.name
            w.notes.repository = repo
            guard config.pullRules.isEmpty || config.pullRules.allows(user: user, registry.config.name.lowercased() + "/" + repo) else {
                // Without credentials, a challenge: the client may have some that are allowed.
                if user == "anonymous", config.clientAuth != nil { refuse(w, "authentication required for \(registry.config.name)/\(repo)"); return nil }
                log(.info, w, "403 DENIED \(user) may not pull \(registry.config.name)/\(repo) (auth.rules)")
                Mirror.error(w, .denied, "\(user) may not pull \(registry.config.name)/\(repo) (auth.rules)")
                return nil
            }
            return RequestContext(mirror: self, state: state, w: w, registry: registry, name: name, repo: repo, key: registry.indexName(repo))
        }
    }

    // MARK: answers

    /// An OCI error answer.
    public static func error(_ w: ResponseWriter, _ code: OCIErrorCode, _ message: String,
                             status: Int? = nil, head: ResponseHead? = nil) {
        var head = head ?? ResponseHead(status: status ?? code.status)
        head.headers.set("Content-Type", "application/json")
        head.headers.set("Docker-Distribution-API-Version", "registry/2.0")
        w.notes.error = code.rawValue
        w.notes.errorMessage = message
        w.respond(head, body: ociErrorBody(code, message))
    }

    func error(_ w: ResponseWriter, _ e: UpstreamError) {
        log(e.status >= 500 ? .warning : .info, w, "\(e)")
        var head = ResponseHead(status: e.status)
        if let r = e.retryAfter { head.headers.add("Retry-After", r) }
        Mirror.error(w, e.code, e.message, head: head)
    }

    /// A log line about request `w`: its id (as in `X-Request-Id` and the
    /// access log), method and path (`loggablePath`: no query secrets), then `message`.
    func log(_ level: HTTPServer.LogLevel, _ w: ResponseWriter, _ message: String) {
        log(level, "request_id=\(w.requestID) \(w.request.method.name) \(loggablePath(w.request.target)): \(message)")
    }

    /// The headers every manifest and blob answer carries.
    static func contentHead(status: Int, digest: Digest, mediaType: String, cacheStatus: String) -> ResponseHead {
        var head = ResponseHead(status: status)
        head.headers.add("Content-Type", mediaType)
        let text = digest.description
        head.headers.add("Docker-Content-Digest", text)
        head.headers.add("ETag", "\"" + text + "\"")
        head.headers.add("Docker-Distribution-API-Version", "registry/2.0")
        head.headers.add("Cache-Status", "Berth; " + cacheStatus)
        return head
    }
}

/// Splits a request target into raw path and query (neither decoded).
func splitTarget(_ target: String) -> (path: Substring, query: Substring) {
    // On the UTF-8 bytes: by Character this was a quarter of a cached manifest
    // answer's instructions (a grapheme break check per byte of a 100-byte path),
    // and by UTF8View index still ~28 instructions a byte.
    let offset = target.utf8.withContiguousStorageIfAvailable { $0.firstIndex(of: UInt8(ascii: "?")) }
        ?? target.utf8.firstIndex(of: UInt8(ascii: "?")).map { target.utf8.distance(from: target.startIndex, to: $0) }
    guard let offset else { return (target[...], "") }
    let q = target.utf8.index(target.startIndex, offsetBy: offset)
    return (target[..<q], target[target.utf8.index(after: q)...])
}

/// The value of `key` in a query string (first occurrence, not decoded beyond `+`).
func queryValue(_ query: Substring, _ key: String) -> String? {
    for pair in query.split(separator: "&") {
        let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
        if kv[0] == key { return kv.count > 1 ? String(kv[1]) : "" }
    }
    return nil
}

/// Unix time in seconds.
func unixNow() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec)
}
