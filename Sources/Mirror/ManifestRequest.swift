import Reactor
import HTTP1
import OCI
import BlobStore
import Signatures

/// `GET`/`HEAD /v2/<name>/manifests/<reference>`.
///
/// By digest: answered from the cache forever (after one upstream HEAD if
/// this repository has not been seen to contain the digest). By tag: a fresh
/// mapping (younger than the TTL) is answered from the cache; an expired one
/// is revalidated with one HEAD; when the upstream is unreachable, rate
/// limited or failing, the last known mapping is served (stale-if-error).
/// Manifest bytes are stored exactly as received, verified against their
/// digest, never converted or trimmed.
final class ManifestRequest: RepositoryHandler {
    let ctx: RequestContext
    let reference: Reference
    let upstream: Upstream
    /// The cache index's generation before this request read it: a prepared answer is valid while it holds.
    let generation: UInt64

    init(_ ctx: RequestContext, reference: Reference) {
        self.ctx = ctx
        self.reference = reference
        upstream = ctx.upstream
        generation = ctx.index.generation
    }

    private var path: String { "/v2/\(repo)/manifests/\(reference)" }

    /// The client's Accept values when they name a manifest type; nil when it
    /// sent none or only wildcards (curl's `*/*`), which take every type. Asked
    /// with `*/*`, Distribution would convert to schema 1.
    private var clientAccept: [String]? {
        let values = w.request.headers.values("Accept")
        return values.contains { v in MediaType.allManifests.contains { acceptList(v, contains: $0, wildcards: false) } } ? values : nil
    }

    /// What the upstream is asked for: the client's list, or every manifest type.
    private var accept: String { clientAccept?.joined(separator: ", ") ?? MediaType.defaultAccept }

    private func accepts(_ mediaType: String) -> Bool {
        // A client that lists nothing we have cached gets an upstream answer.
        clientAccept?.contains { acceptList($0, contains: mediaType) } ?? true
    }

    func run() {
        switch reference {
        case .digest(let digest):
            guard let type = index.mediaType(of: digest), isAvailable(digest) else { return fetch(stale: nil) }
            if index.isLinked(key, digest) { return serveCached(digest, type, cacheStatus: "hit", preparing: .digest) }
            if ctx.config.isOffline { return offlineMiss() }
            confirmAccess(digest, type)
        case .tag(let tag):
            guard let rec = index.tag(key, tag), isAvailable(rec.digest), accepts(rec.mediaType) else {
                if ctx.config.isOffline { return offlineMiss() }
                if ctx.registry.missingTags.contains("\(key):\(tag)", now: w.loop.now) {
                    return Mirror.error(w, .manifestUnknown, "manifest \(name):\(tag) not found upstream (answered 404 moments ago)")
                }
                return fetch(stale: nil)
            }
            if ctx.config.isOffline { return serveCached(rec.digest, rec.mediaType, cacheStatus: "hit; detail=offline") }
            let freshness = PreparedManifests.Freshness(confirmedAt: rec.confirmedAt, ttlNanos: ctx.config.tagTTLNanos ?? settings.tagTTLNanos)
            if freshness.isFresh(now: unixNow()) {
                return serveCached(rec.digest, rec.mediaType, cacheStatus: "hit", preparing: freshness)
            }
            // One revalidation per tag at a time; requests meanwhile get the cached
            // answer at once (nginx's `proxy_cache_use_stale updating`).
            // The upstream is held off (429 back-off, breaker): stale at once, no request built.
            if upstream.breaker.isOpen(now: w.loop.now) {
                return serveCached(rec.digest, rec.mediaType, cacheStatus: "hit; fwd=stale; detail=upstream-unavailable")
            }
            let inFlight = "\(key):\(tag)"
            guard ctx.registry.beginRevalidation(inFlight) else { return serveCached(rec.digest, rec.mediaType, cacheStatus: "hit; detail=revalidating") }
            revalidate(tag, rec) { [ctx] in ctx.registry.endRevalidation(inFlight) }
        }
    }

    private func offlineMiss() {
        mirror.error(w, UpstreamError(status: 404, code: .manifestUnknown,
                                      message: "manifest \(name):\(reference) is not cached, and the mirror is offline for \(ctx.config.name)"))
    }

    /// One HEAD for a repository not yet known to hold `digest`.
    private func confirmAccess(_ digest: Digest, _ type: String) {
        upstream.fetch(.head, path, repository: repo, headers: acceptHeaders(), headTimeout: ctx.config.manifestHeadTimeoutNanos,
                       maxBytes: 0, for: w) { [self] result in
            switch result {
            case .success(let (head, _)) where head.status == 200:
                index.link(key, [digest])
                serveCached(digest, type, cacheStatus: "hit; detail=access-checked")
            case .success(let (head, _)):
                mirror.error(w, .from(status: head.status, headers: head.headers, notFound: .manifestUnknown, what: "manifest \(name)@\(digest)"))
            case .failure(let e):
                mirror.error(w, e)
            }
        }
    }

    /// An expired tag: one HEAD; same digest → serve the cache, new digest → fetch, failure → stale.
    private func revalidate(_ tag: String, _ rec: CacheIndex.TagRecord, done: @escaping () -> Void) {
        upstream.fetch(.head, path, repository: repo, headers: acceptHeaders(), headTimeout: ctx.config.manifestHeadTimeoutNanos,
                       maxBytes: 0, for: w) { [self] result in
            defer { done() }  // after the tag's new confirmation time is recorded
            switch result {
            case .success(let (head, _)) where head.status == 200:
                if head.headers["Docker-Content-Digest"] == rec.digest.description {
                    var r = rec
                    r.confirmedAt = unixNow()
                    index.setTag(key, tag, r)
                    serveCached(rec.digest, rec.mediaType, cacheStatus: "hit; detail=revalidated")
                } else {
                    fetch(stale: rec)
                }
            case .success(let (head, _)) where head.status == 429 || head.status >= 500:
                serveStale(rec, reason: "upstream answered \(head.status)")
            case .success(let (head, _)):
                mirror.error(w, .from(status: head.status, headers: head.headers, notFound: .manifestUnknown, what: "manifest \(name):\(tag)"))
            case .failure(let e) where e.allowsStale:
                serveStale(rec, reason: e.message)
            case .failure(let e):
                mirror.error(w, e)
            }
        }
    }

    private func serveStale(_ rec: CacheIndex.TagRecord, reason: String) {
        mirror.log(.warning, w, "serving stale \(name):\(reference) → \(rec.digest): \(reason)")
        serveCached(rec.digest, rec.mediaType, cacheStatus: "hit; fwd=stale; detail=upstream-error")
    }

    private func acceptHeaders() -> HTTPHeaders {
        var h = HTTPHeaders()
        h.add("Accept", accept)
        return h
    }

    private func isAvailable(_ digest: Digest) -> Bool {
        mirror.manifests.get(digest) != nil || mirror.store.contains(digest)
    }

    /// Answers from memory when the manifest was served recently, else from
    /// the cached file (sendfile), which is then read into memory on the pool.
    /// `preparing`: a plain hit, kept as a prepared answer (`PreparedManifests`) when served from memory.
    private func serveCached(_ digest: Digest, _ type: String, cacheStatus: String, preparing: PreparedManifests.Freshness? = nil) {
        signatureGate(digest) { [self] in sendCached(digest, type, cacheStatus: cacheStatus, preparing: preparing) }
    }

    func sendCached(_ digest: Digest, _ type: String, cacheStatus: String, preparing: PreparedManifests.Freshness? = nil) {
        let now = unixNow()
        index.touch(digest, now: now)
        let head = Mirror.contentHead(status: 200, digest: digest, mediaType: type, cacheStatus: cacheStatus)
        if let body = mirror.manifests.get(digest) {
            guard let preparing else { return w.respond(head, body: body) }
            let prepared = w.prepare(head, bodyCount: body.count)
            mirror.notePrepared(w, state: ctx.state, generation: generation, key: key, digest: digest, freshness: preparing,
                                head: prepared, body: body, now: now)
            return w.respond(prepared, body: body)
        }
        guard let file = mirror.store.open(digest), let size = try? file.size() else {
            return ctx.config.isOffline ? offlineMiss() : fetch(stale: nil)
        }
        w.respond(head, file: file, range: 0..<size)
        let (store, memo, max) = (mirror.store, mirror.manifests, settings.maxManifestBytes)
        mirror.pool.submit {
            if let bytes = try? store.read(digest, maxBytes: max), SHA256Hasher.hex(bytes) == digest.hex { memo.put(digest, bytes) }
        }
    }

    /// GET from the upstream, verify, store, answer. `stale` is served if the upstream fails.
    private func fetch(stale: CacheIndex.TagRecord?) {
        upstream.fetch(.get, path, repository: repo, headers: acceptHeaders(), headTimeout: ctx.config.manifestHeadTimeoutNanos,
                       maxBytes: settings.maxManifestBytes, for: w) { [self] result in
            switch result {
            case .failure(let e):
                if let stale, e.allowsStale { return serveStale(stale, reason: e.message) }
                mirror.error(w, e)
            case .success(let (head, _)) where head.status != 200:
                if let stale, head.status == 429 || head.status >= 500 { return serveStale(stale, reason: "upstream answered \(head.status)") }
                // Digests are never remembered as missing: only a tag can appear later.
                if head.status == 404, case .tag(let tag) = reference { ctx.registry.missingTags.insert("\(key):\(tag)", now: w.loop.now) }
                mirror.error(w, .from(status: head.status, headers: head.headers, notFound: .manifestUnknown, what: "manifest \(name):\(reference)"))
            case .success(let (head, body)):
                received(head, body)
            }
        }
    }

    private func received(_ head: ResponseHead, _ body: [UInt8]) {
        let computed = Digest(algorithm: .sha256, hex: SHA256Hasher.hex(body))!
        if case .digest(let wanted) = reference, wanted != computed {
            return mirror.error(w, UpstreamError(status: 502, code: .manifestInvalid,
                                                 message: "upstream manifest for \(wanted) hashes to \(computed)"))
        }
        if let claimed = head.headers["Docker-Content-Digest"], let d = Digest(claimed), d.algorithm == .sha256, d != computed {
            return mirror.error(w, UpstreamError(status: 502, code: .manifestInvalid,
                                                 message: "upstream says \(d) but the manifest hashes to \(computed)"))
        }
        let summary: ManifestSummary
        do { summary = try ManifestSummary.parse(body, contentType: head.headers["Content-Type"]) } catch {
            return mirror.error(w, UpstreamError(status: 502, code: .manifestInvalid, message: "upstream manifest refused: \(error)"))
        }
        // Answer now from memory; persist on the pool.
        let out = Mirror.contentHead(status: 200, digest: computed, mediaType: summary.mediaType, cacheStatus: "fwd=miss; stored")
        signatureGate(computed, children: summary.manifests.map(\.digest)) { [self] in
            w.respond(out, body: body)
            if !summary.isIndex && upstream.config.prefetch {
                Prefetch.start(summary.blobs, of: computed, ctx: ctx, upstream: upstream)
            }
        }
        mirror.manifests.put(computed, body)
        let (store, key, reference) = (mirror.store, key, reference)
        let children = summary.blobs.map(\.digest) + summary.manifests.map(\.digest)
        mirror.pool.submit { [log = mirror.log] in
            do {
                try store.store(body, as: computed)
                store.index.setMediaType(computed, summary.mediaType)
                store.index.link(key, [computed] + children)
                if let subject = summary.subject { store.index.addReferrer(key, subject: subject.digest, computed) }
                if case .tag(let tag) = reference,
                   let old = store.recordTag(key, tag, .init(digest: computed, mediaType: summary.mediaType, confirmedAt: unixNow())),
                   old.digest != computed {
                    log(.info, "upstream moved \(key):\(tag) from \(old.digest) to \(computed)")
                }
            } catch {
                log(.error, "cannot store manifest \(computed): \(error)")
            }
        }
    }
}

/// True when a comma-separated Accept value lists `mediaType` (parameters
/// ignored), or (with `wildcards`) `*/*` or `application/*`. Scans bytes: this
/// runs on every manifest request.
func acceptList(_ value: String, contains mediaType: String, wildcards: Bool = true) -> Bool {
    let v = Array(value.utf8), m = Array(mediaType.utf8)
    var i = 0
    while i < v.count {
        while i < v.count && (v[i] == 0x20 || v[i] == 0x09 || v[i] == 0x2c) { i += 1 }
        let start = i
        while i < v.count && v[i] != 0x2c && v[i] != 0x3b && v[i] != 0x20 && v[i] != 0x09 { i += 1 }
        let item = v[start..<i]
        if item.elementsEqual(m) { return true }
        if wildcards && (item.elementsEqual("*/*".utf8) || item.elementsEqual("application/*".utf8)) { return true }
        while i < v.count && v[i] != 0x2c { i += 1 }
    }
    return false
}
