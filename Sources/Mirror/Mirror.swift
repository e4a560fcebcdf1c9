#if canImport(Glibc)
import Glibc
#endif
import Reactor
import HTTP1
import OCI
import BlobStore
import TLS

/// Settings of the proxy core.
public struct MirrorConfiguration: Sendable {
    public var upstream: UpstreamConfiguration
    /// How long a tag → digest mapping is trusted before one HEAD revalidates it.
    public var tagTTLNanos: UInt64 = 300_000_000_000
    /// Largest manifest accepted (Distribution's limit).
    public var maxManifestBytes = 4 * 1024 * 1024
    /// A client behind a hung upstream gets an answer within this long.
    public var clientDeadlineNanos: UInt64 = 20_000_000_000

    public init(upstream: UpstreamConfiguration) { self.upstream = upstream }
}

/// The `/v2/` pull-through proxy: routes each request, answers from the
/// cache when it can, and otherwise fetches from the upstream, streaming to
/// the client while filling the cache.
///
/// Shared by every loop; per-loop parts (the HTTP client and its pool) are
/// picked by the request's loop.
public final class Mirror: @unchecked Sendable {  // immutable after init; per-loop state used on its loop only
    let config: MirrorConfiguration
    let store: BlobStore
    let fills: FillRegistry
    let pool: BlockingPool
    let auth: UpstreamAuth
    /// Manifests served recently, in memory.
    let manifests = ManifestMemo()
    let log: (HTTPServer.LogLevel, String) -> Void
    private let upstreams: [Upstream]

    public init(config: MirrorConfiguration, store: BlobStore, group: EventLoopGroup, pool: BlockingPool,
                tls: TLSContext?, log: @escaping (HTTPServer.LogLevel, String) -> Void) {
        self.config = config
        self.store = store
        self.pool = pool
        self.log = log
        fills = FillRegistry(store: store, pool: pool)
        auth = UpstreamAuth(config: config.upstream)
        let auth = self.auth
        let deadline = config.clientDeadlineNanos
        upstreams = group.loops.map { Upstream(client: HTTPClient(loop: $0, pool: pool, tls: tls), auth: auth, deadlineNanos: deadline) }
    }

    func upstream(for loop: EventLoop) -> Upstream { upstreams[loop.index] }

    /// The HTTP server's handler.
    public func handle(_ w: ResponseWriter) {
        let req = w.request
        switch req.method {
        case .get, .head: break
        default:
            var head = ResponseHead(status: 405)
            head.headers.add("Allow", "GET, HEAD")
            Mirror.error(w, .unsupported, "Berth is a pull-only mirror: \(req.method.name) is not served", head: head)
            return
        }
        let (path, query) = splitTarget(req.target)
        if path == "/healthz" {
            var head = ResponseHead(status: 200)
            head.headers.add("Content-Type", "text/plain")
            w.respond(head, body: Array("ok\n".utf8))
            return
        }
        switch Routes.parse(path: path) {
        case .failure(let e):
            log(.info, "\(req.method.name) \(req.target): \(e.status) \(e.code) \(e.message)")
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
            ManifestRequest(mirror: self, writer: w, name: name, reference: reference).run()
        case .success(.blob(let name, let digest)):
            BlobRequest(mirror: self, writer: w, name: name, digest: digest).run()
        case .success(.tagsList(let name)):
            TagsRequest(mirror: self, writer: w, name: name, query: query).run()
        case .success(.referrers(let name, let digest)):
            ReferrersRequest(mirror: self, writer: w, name: name, digest: digest, query: query).run()
        }
    }

    /// The repository name as the upstream knows it (Docker Hub's `library/`).
    func upstreamName(_ name: String) -> String {
        guard config.upstream.dockerHubNames, !name.contains("/") else { return name }
        return "library/" + name
    }

    // MARK: answers

    /// An OCI error answer.
    public static func error(_ w: ResponseWriter, _ code: OCIErrorCode, _ message: String,
                             status: Int? = nil, head: ResponseHead? = nil) {
        var head = head ?? ResponseHead(status: status ?? code.status)
        head.headers.set("Content-Type", "application/json")
        head.headers.set("Docker-Distribution-API-Version", "registry/2.0")
        w.respond(head, body: ociErrorBody(code, message))
    }

    func error(_ w: ResponseWriter, _ e: UpstreamError) {
        log(e.status >= 500 ? .warning : .info, "\(w.request.method.name) \(w.request.target): \(e)")
        var head = ResponseHead(status: e.status)
        if let r = e.retryAfter { head.headers.add("Retry-After", r) }
        Mirror.error(w, e.code, e.message, head: head)
    }

    /// The headers every manifest and blob answer carries.
    static func contentHead(status: Int, digest: Digest, mediaType: String, cacheStatus: String) -> ResponseHead {
        var head = ResponseHead(status: status)
        head.headers.add("Content-Type", mediaType)
        head.headers.add("Docker-Content-Digest", digest.description)
        head.headers.add("ETag", "\"\(digest)\"")
        head.headers.add("Docker-Distribution-API-Version", "registry/2.0")
        head.headers.add("Cache-Status", "Berth; " + cacheStatus)
        return head
    }
}

/// Splits a request target into raw path and query (neither decoded).
func splitTarget(_ target: String) -> (path: Substring, query: Substring) {
    guard let q = target.firstIndex(of: "?") else { return (target[...], "") }
    return (target[..<q], target[target.index(after: q)...])
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
