import HTTP1
import OCI
import BlobStore

/// `GET /v2/<name>/tags/list`: forwarded, then answered the way the spec
/// says whatever the upstream did (sorted, `n` and `last` honoured, `Link` for
/// the next page). When the upstream cannot answer, the tags Berth has cached
/// for the repository are served.
final class TagsRequest: RepositoryHandler {
    let ctx: RequestContext
    let query: Substring

    init(_ ctx: RequestContext, query: Substring) {
        self.ctx = ctx
        self.query = query
    }

    func run() {
        let nText = queryValue(query, "n")
        let n: Int?
        if let nText {
            guard let v = Int(nText), v >= 0 else { return Mirror.error(w, .unsupported, "n must be a non-negative integer", status: 400) }
            n = min(v, 10_000)
        } else {
            n = nil
        }
        let last = queryValue(query, "last")
        if ctx.config.isOffline {
            let cached = ctx.index.tags(of: ctx.key)
            guard !cached.isEmpty else {
                return mirror.error(w, UpstreamError(status: 404, code: .nameUnknown,
                                                     message: "repository \(name) has no cached tags, and the mirror is offline for \(ctx.config.name)"))
            }
            return answer(TagList(name: name, tags: cached), n: n, last: last, cacheStatus: "hit; detail=offline")
        }
        // Ask for everything (bounded): paging is redone here so it follows the spec exactly.
        ctx.upstream.fetch(.get, "/v2/\(repo)/tags/list", repository: repo,
                           headTimeout: ctx.config.manifestHeadTimeoutNanos, maxBytes: 4 << 20, for: w) { [self] result in
            switch result {
            case .success(let (head, body)) where head.status == 200:
                guard let list = try? TagList.parse(body) else {
                    return mirror.error(w, UpstreamError(status: 502, code: .unavailable, message: "upstream tag list is not valid JSON"))
                }
                answer(TagList(name: name, tags: list.tags), n: n, last: last, cacheStatus: "fwd=miss")
            case .success(let (head, _)) where head.status != 429 && head.status < 500:
                mirror.error(w, .from(status: head.status, headers: head.headers, notFound: .nameUnknown, what: "repository \(name)"))
            default:
                let cached = ctx.index.tags(of: ctx.key)
                guard !cached.isEmpty else {
                    if case .failure(let e) = result { return mirror.error(w, e) }
                    if case .success(let (head, _)) = result {
                        return mirror.error(w, .from(status: head.status, headers: head.headers, notFound: .nameUnknown, what: "repository \(name)"))
                    }
                    return
                }
                mirror.log(.warning, w, "tags of \(name) served from the cache: upstream unavailable")
                answer(TagList(name: name, tags: cached), n: n, last: last, cacheStatus: "hit; fwd=stale")
            }
        }
    }

    private func answer(_ list: TagList, n: Int?, last: String?, cacheStatus: String) {
        let page = list.page(n: n, last: last)
        var head = ResponseHead(status: 200)
        head.headers.add("Content-Type", "application/json")
        head.headers.add("Docker-Distribution-API-Version", "registry/2.0")
        head.headers.add("Cache-Status", "Berth; " + cacheStatus)
        if page.more, let n, let lastTag = page.tags.last {
            head.headers.add("Link", "</v2/\(name)/tags/list?n=\(n)&last=\(percentEncoded(lastTag))>; rel=\"next\"")
        }
        w.respond(head, body: TagList(name: list.name, tags: page.tags).encoded())
    }
}

/// `GET /v2/<name>/referrers/<digest>`: the upstream's answer when it has
/// the referrers API; else (404, offline, unreachable, failing) the index
/// built from cached manifests whose `subject` is that digest.
final class ReferrersRequest: RepositoryHandler {
    let ctx: RequestContext
    let digest: Digest
    let query: Substring

    init(_ ctx: RequestContext, digest: Digest, query: Substring) {
        self.ctx = ctx
        self.digest = digest
        self.query = query
    }

    private var artifactType: String? { queryValue(query, "artifactType") }

    func run() {
        if ctx.config.isOffline { return fromCache(cacheStatus: "hit; detail=offline") }
        var path = "/v2/\(repo)/referrers/\(digest)"
        if let t = artifactType { path += "?artifactType=\(t)" }
        ctx.upstream.fetch(.get, path, repository: repo, headTimeout: ctx.config.manifestHeadTimeoutNanos,
                                           maxBytes: settings.maxManifestBytes, for: w) { [self] result in
            switch result {
            case .success(let (up, body)) where up.status == 200:
                var head = indexHead(cacheStatus: "fwd=miss")
                if let f = up.headers["OCI-Filters-Applied"] { head.headers.add("OCI-Filters-Applied", f) }
                w.respond(head, body: body)
            case .success(let (up, _)) where up.status == 404:
                fromCache(cacheStatus: "hit; detail=no-upstream-api")
            case .success(let (up, _)) where up.status == 429 || up.status >= 500:
                fromCache(cacheStatus: "hit; fwd=stale; detail=upstream-error")
            case .success(let (up, _)):
                mirror.error(w, .from(status: up.status, headers: up.headers, notFound: .manifestUnknown, what: "referrers of \(digest)"))
            case .failure(let e) where e.allowsStale:
                fromCache(cacheStatus: "hit; fwd=stale; detail=upstream-error")
            case .failure(let e):
                mirror.error(w, e)
            }
        }
    }

    /// The index of cached manifests naming the digest, read on the pool.
    private func fromCache(cacheStatus: String) {
        var head = indexHead(cacheStatus: cacheStatus)
        if artifactType != nil { head.headers.add("OCI-Filters-Applied", "artifactType") }
        let known = index.referrers(key, of: digest)
        if known.isEmpty { return w.respond(head, body: Self.emptyIndex) }
        let (store, memo, max, index, subject, type, w) = (mirror.store, mirror.manifests, settings.maxManifestBytes, index, digest, artifactType, w)
        mirror.pool.submit {
            let candidates = known.compactMap { d -> ReferrersIndex.Candidate? in
                guard let mediaType = index.mediaType(of: d),
                      let bytes = memo.get(d) ?? (try? store.read(d, maxBytes: max)) ?? nil,
                      SHA256Hasher.hex(bytes) == d.hex else { return nil }
                return ReferrersIndex.Candidate(digest: d, mediaType: mediaType, bytes: bytes)
            }
            let body = ReferrersIndex.encode(candidates, subject: subject, artifactType: type)
            w.loop.execute { w.respond(head, body: body) }
        }
    }

    static let emptyIndex = Array(#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#.utf8)

    private func indexHead(cacheStatus: String) -> ResponseHead {
        var head = ResponseHead(status: 200)
        head.headers.add("Content-Type", MediaType.ociIndex)
        head.headers.add("Docker-Distribution-API-Version", "registry/2.0")
        head.headers.add("Cache-Status", "Berth; " + cacheStatus)
        return head
    }
}
