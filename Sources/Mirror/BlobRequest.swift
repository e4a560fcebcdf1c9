#if canImport(Glibc)
import Glibc
#endif
import Reactor
import HTTP1
import OCI
import BlobStore

/// `GET`/`HEAD /v2/<name>/blobs/<digest>`.
///
/// Warm: `sendfile` from the cache, with Range (single → 206, several →
/// `multipart/byteranges`, unsatisfiable → 416). Cold GET: joins or starts
/// the single fill for the digest and streams from it as bytes land; Range
/// requests are served from the fill as it passes their range. Cold HEAD:
/// answered from the upstream, never a false 404.
///
/// The store is shared by every repository, so a digest is served under a
/// repository only when that repository is known to contain it; otherwise
/// one upstream HEAD for the pair confirms access first.
final class BlobRequest: RepositoryHandler {
    let ctx: RequestContext
    let digest: Digest
    let upstream: Upstream

    init(_ ctx: RequestContext, digest: Digest) {
        self.ctx = ctx
        self.digest = digest
        upstream = ctx.upstream
    }

    private var path: String { "/v2/\(repo)/blobs/\(digest)" }
    private var headTimeout: UInt64 { ctx.config.blobHeadTimeoutNanos }

    /// A peer node asks (`Peers.header`): answered from this node's cache alone.
    private var isPeerRequest: Bool { w.request.headers[Peers.header] != nil }

    func run() {
        if index.isLinked(key, digest), let file = mirror.store.open(digest) {
            return serveCached(file, cacheStatus: "hit")
        }
        if isPeerRequest { return servePeer() }
        if ctx.config.isOffline {
            return mirror.error(w, UpstreamError(status: 404, code: .blobUnknown,
                                                 message: "blob \(name)@\(digest) is not cached, and the mirror is offline for \(ctx.config.name)"))
        }
        if w.request.method == .head || mirror.store.contains(digest) {
            return headUpstream()
        }
        startOrJoinFill()
    }

    /// A HEAD upstream: answers a cold HEAD, or confirms access to a cached digest.
    private func headUpstream() {
        upstream.fetch(.head, path, repository: repo, headTimeout: headTimeout, maxBytes: 0, for: w) { [self] result in
            switch result {
            case .failure(let e):
                mirror.error(w, e)
            case .success(let (head, _)) where head.status == 200:
                index.link(key, [digest])
                if let file = mirror.store.open(digest) { return serveCached(file, cacheStatus: "hit; detail=access-checked") }
                if isPeerRequest { return notHeldForPeer() }
                if w.request.method == .get { return startOrJoinFill() }
                var out = Mirror.contentHead(status: 200, digest: digest, mediaType: "application/octet-stream", cacheStatus: "fwd=miss")
                out.headers.add("Accept-Ranges", "bytes")
                let length = head.headers["Content-Length"].flatMap { UInt64($0) }
                // The length a GET would refuse (BlobFetch.maxLength) is not passed on either.
                if let length, length > BlobFetch.maxLength {
                    return mirror.error(w, UpstreamError(status: 502, code: .unavailable,
                                                         message: "upstream declared a \(length)-byte blob, over the \(BlobFetch.maxLength)-byte limit"))
                }
                // Without a length upstream, none is made up: the HEAD says chunked, as the GET would be.
                w.start(out, contentLength: length)
            case .success(let (head, _)):
                mirror.error(w, .from(status: head.status, headers: head.headers, notFound: .blobUnknown, what: "blob \(name)@\(digest)"))
            }
        }
    }

    /// Not cached and not linked: a fill under way for this repository is joined,
    /// a blob cached for another repository has its access checked upstream, and
    /// anything else is the peer's to fetch (404), never this node's.
    private func servePeer() {
        if w.request.method == .get, index.isLinked(key, digest), let fill = mirror.fills.join(digest) {
            return FillReader(request: self, fill: fill, cacheStatus: "fwd=miss; collapsed; detail=peer").start()
        }
        if mirror.store.contains(digest) { return headUpstream() }
        notHeldForPeer()
    }

    private func notHeldForPeer() {
        Mirror.error(w, .blobUnknown, "blob \(name)@\(digest) is not cached on this node (a peer asked: no upstream fetch)", status: 404)
    }

    private func startOrJoinFill() {
        let lookup: FillRegistry.Lookup
        do { lookup = try mirror.fills.lookup(digest, loop: w.loop) } catch {
            mirror.log(.error, w, "cannot start a fill for \(digest): \(error)")
            return Mirror.error(w, .unavailable, "cache cannot take \(digest): \(error)", status: 503)
        }
        switch lookup {
        case .cached:
            if let file = mirror.store.open(digest) { serveCached(file, cacheStatus: "hit") } else { headUpstream() }
        case .joined(let fill):
            // Another repository may have started this fill: our access was not checked by its GET.
            if index.isLinked(key, digest) { FillReader(request: self, fill: fill, cacheStatus: "fwd=miss; collapsed").start() } else { headUpstream() }
        case .started(let fill):
            let fetch = BlobFetch(mirror: mirror, fill: fill, repo: repo, key: key)
            let (upstream, path, headTimeout) = (upstream, path, headTimeout)
            let fromUpstream = { [weak w] in fetch.start(upstream: upstream, path: path, headTimeout: headTimeout, for: w) }
            // The blob's owner in the cluster first: one that holds it spares the upstream a download.
            if let peers = ctx.state.peers, let (m, address) = peers.pick(digest, now: w.loop.now),
               let request = peers.request(to: address, target: w.request.target, authorization: w.request.headers["Authorization"], requestID: w.requestID) {
                PeerFetch(fetch: fetch, peers: peers, member: m, loop: w.loop, fallback: fromUpstream).start(request)
            } else {
                fromUpstream()
            }
            FillReader(request: self, fill: fill, cacheStatus: "fwd=miss; stored").start()
        }
    }

    // MARK: warm

    private func serveCached(_ file: FileDescriptor, cacheStatus: String) {
        // The index knows the size: a hit costs open, sendfile and close, no fstat.
        guard let size = index.size(of: digest) ?? (try? file.size()) else {
            return Mirror.error(w, .blobUnknown, "blob \(digest) unreadable", status: 500)
        }
        index.touch(digest, now: unixNow())
        let head = Mirror.contentHead(status: 200, digest: digest, mediaType: "application/octet-stream", cacheStatus: cacheStatus)
        guard let plan = RangePlan(w.request.headers["Range"], size: size, boundary: boundary) else {
            return refuseRange(w, size: size)
        }
        w.start(plan.head(head), contentLength: plan.contentLength)
        for part in plan.parts {
            part.header.withUnsafeBytes { _ = w.write($0) }
            w.writeFile(file, range: part.range)
            part.trailer.withUnsafeBytes { _ = w.write($0) }
        }
        w.end()
    }

    var boundary: String { "berth-" + String(digest.hex.prefix(24)) }
}

/// 416 with the size, as RFC 9110 asks.
func refuseRange(_ w: ResponseWriter, size: UInt64) {
    var h = ResponseHead(status: 416)
    h.headers.add("Content-Range", "bytes */\(size)")
    Mirror.error(w, .rangeInvalid, "range not satisfiable for a \(size)-byte blob", head: h)
}

/// What a blob answer sends for a `Range` header: the whole blob (200), one
/// range (206 with Content-Range) or several (206 `multipart/byteranges`, each
/// part a header, a file range and a CRLF, then the closing boundary).
struct RangePlan {
    struct Part {
        var header: [UInt8] = []
        var range: Range<UInt64>
        var trailer: [UInt8] = []
    }
    var status = 200
    var contentRange: String?
    var boundary: String?
    var parts: [Part]

    /// Nil when the range cannot be satisfied (416).
    init?(_ header: String?, size: UInt64, boundary b: String) {
        switch RangeRequest.parse(header, size: size) {
        case .none:
            parts = [Part(range: 0..<size)]
        case .unsatisfiable:
            return nil
        case .satisfiable(let ranges) where ranges.count == 1:
            let r = ranges[0]
            status = 206
            contentRange = "bytes \(r.lowerBound)-\(r.upperBound)/\(size)"
            parts = [Part(range: r.lowerBound..<(r.upperBound + 1))]
        case .satisfiable(let ranges):
            status = 206
            boundary = b
            parts = ranges.enumerated().map { i, r in
                Part(header: Array("\(i == 0 ? "" : "\r\n")--\(b)\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes \(r.lowerBound)-\(r.upperBound)/\(size)\r\n\r\n".utf8),
                     range: r.lowerBound..<(r.upperBound + 1))
            }
            parts[parts.count - 1].trailer = Array("\r\n--\(b)--\r\n".utf8)
        }
    }

    var contentLength: UInt64 {
        parts.reduce(0) { $0 + UInt64($1.header.count) + UInt64($1.range.count) + UInt64($1.trailer.count) }
    }

    func head(_ base: ResponseHead) -> ResponseHead {
        var h = base
        h.status = status
        h.headers.add("Accept-Ranges", "bytes")
        if let contentRange { h.headers.add("Content-Range", contentRange) }
        if let boundary { h.headers.set("Content-Type", "multipart/byteranges; boundary=\(boundary)") }
        return h
    }
}

/// Drives one fill from the upstream GET, on the loop that started it.
final class BlobFetch: UpstreamDelegate {
    let mirror: Mirror
    let fill: BlobFill
    let repo: String
    /// The repository's cache index key.
    let key: String
    /// Started by `Prefetch`, not for a client: one that cannot be cached is dropped, not relayed.
    var isPrefetch = false
    private var ok = false
    /// The request that started the fill, until the upstream's answer head: its wait is that request's `upstream_ms`.
    private weak var starter: ResponseWriter?
    private var startedAt: UInt64 = 0
    /// The upstream sent a Content-Length (else the budget is reserved as bytes come).
    private var hasLength = false
    /// Called when the body ended but was not kept (it did not verify, or the write failed).
    var onNotKept: (() -> Void)?

    /// The largest blob length Berth believes (1 TiB): no real layer comes
    /// near it, and every length sum below it stays far from overflow.
    static let maxLength: UInt64 = 1 << 40

    init(mirror: Mirror, fill: BlobFill, repo: String, key: String) {
        self.mirror = mirror
        self.fill = fill
        self.repo = repo
        self.key = key
    }

    /// `w`: the request whose upstream wait this is (nil for a prefetch).
    func start(upstream: Upstream, path: String, headTimeout: UInt64, for w: ResponseWriter?) {
        starter = w
        startedAt = Clock.monotonicNanos()
        upstream.send(.get, path, repository: repo, headTimeout: headTimeout, delegate: self)
    }

    /// A fill of unknown length reserves budget in steps as bytes come.
    static let reserveStep: UInt64 = 64 << 20

    /// The upstream answered (or failed): the starter's wait ends.
    private func upstreamAnswered() {
        starter?.notes.addUpstreamWait(Clock.monotonicNanos() &- startedAt)
        starter = nil
    }

    func didReceiveHead(_ head: ResponseHead, url: HTTPURL, task: ClientTask) {
        upstreamAnswered()
        guard head.status == 200 else {
            fill.fail(status: head.status, retryAfter: head.headers["Retry-After"], reason: "upstream answered \(head.status)")
            task.cancel()
            return
        }
        if let n = head.headers["Content-Length"].flatMap({ UInt64($0) }), n > BlobFetch.maxLength {
            fill.fail(status: 502, retryAfter: nil, reason: "upstream declared a \(n)-byte blob, over the \(BlobFetch.maxLength)-byte limit")
            task.cancel()
            return
        }
        ok = true
        mirror.store.index.link(key, [fill.digest])
        // A relay nobody reads any more stops downloading.
        // Weak: the fill keeps this closure, and its temp file's descriptor must close when it ends.
        fill.setOnAbandoned { [weak fill, weak task, log = mirror.log] in
            if let fill { log(.info, "blob \(fill.digest): relay abandoned, every reader left; upstream fetch cancelled") }
            fill?.fail(status: 0, retryAfter: nil, reason: "relay abandoned: every reader left")
            task?.cancel()
        }
        if let n = head.headers["Content-Length"].flatMap({ UInt64($0) }) {
            hasLength = true
            if mirror.store.reserve(n) {
                fill.reserved = n
            } else if isPrefetch && fill.readerCount == 0 {
                fill.fail(status: 0, retryAfter: nil, reason: "prefetch dropped: \(n) bytes do not fit in the cache budget")
                task.cancel()
                return
            } else {
                mirror.log(.warning, "blob \(fill.digest) (\(n) bytes) does not fit in the cache budget: streamed uncached")
                fill.relayOnly()
            }
            fill.setTotal(n)
        }
    }

    func didReceiveBody(_ bytes: UnsafeRawBufferPointer, task: ClientTask) -> Bool {
        if !hasLength && !reserveAhead(UInt64(bytes.count)) {
            task.cancel()
            return false
        }
        if fill.append(bytes) { return true }
        // Hashing lags behind the network: pause the upstream until it catches up.
        fill.whenReady { task.resume() }
        return false
    }

    /// Without a Content-Length the budget is reserved a step ahead of the
    /// bytes (so the temp file stays inside it); no room turns the fill into a
    /// relay. False when the body passed the largest length Berth believes.
    private func reserveAhead(_ count: UInt64) -> Bool {
        let p = fill.progress
        guard p.written + count <= BlobFetch.maxLength else {
            fill.fail(status: 502, retryAfter: nil, reason: "upstream blob passed the \(BlobFetch.maxLength)-byte limit")
            return false
        }
        guard !p.isRelay, p.written + count > fill.reserved else { return true }
        if mirror.store.reserve(BlobFetch.reserveStep) {
            fill.reserved += BlobFetch.reserveStep
        } else {
            mirror.log(.warning, "blob \(fill.digest) (no Content-Length, \(p.written) bytes so far) outgrew the cache budget: streamed uncached")
            fill.relayOnly()
        }
        return true
    }

    func didFinish(_ error: HTTPClientError?, task: ClientTask) {
        // A fetch that broke before its head (reset, refused, TLS, head
        // timeout) ends the fill too: its readers hear now, and the next
        // request starts a new fetch (issue 8, defect 1).
        if let error {
            upstreamAnswered()
            let stage = ok ? "upstream transfer broke" : "upstream did not answer"
            fill.fail(status: error.isTimeout ? 504 : 502, retryAfter: nil, reason: "\(stage): \(error)")
            return
        }
        guard ok else { return }
        let (digest, log, notKept) = (fill.digest, mirror.log, onNotKept)
        fill.finish(store: mirror.store, pool: mirror.pool) { committed in
            guard !committed else { return }
            log(.warning, "fill \(digest) was not kept (verification or write failed)")
            notKept?()
        }
    }

    func upstreamFailed(_ e: UpstreamError) {
        upstreamAnswered()
        fill.fail(status: e.status, retryAfter: e.retryAfter, reason: e.message)
    }
}

/// One client following a fill: sends its blob (or its ranges) from the temp
/// file as bytes land, and past the file's end (a relay) from the fill's
/// shared window. A part that ends with the blob's last byte waits for the
/// digest check before sending that byte. A fill of unknown length (no
/// upstream Content-Length) is sent chunked, whole, and its closing chunk
/// waits for the digest check.
final class FillReader {
    let request: BlobRequest
    let fill: BlobFill
    let cacheStatus: String
    private var w: ResponseWriter { request.w }
    private var token: AnyObject?
    private var plan: RangePlan?
    private var isChunked = false
    private var part = 0                 // the part being sent
    private var sent: UInt64 = 0         // next byte of that part's range
    private var deadline: Timer?
    private var stallTimer: Timer?
    private var lastWritten: UInt64 = 0
    private var lastMove: UInt64 = 0

    init(request: BlobRequest, fill: BlobFill, cacheStatus: String) {
        self.request = request
        self.fill = fill
        self.cacheStatus = cacheStatus
    }

    func start() {
        w.onClose = { [self] in stop() }
        deadline = w.loop.schedule(afterNanos: request.settings.clientDeadlineNanos) { [self] in
            guard plan == nil, !isChunked, w.isActive else { return }
            stop()
            request.mirror.error(w, UpstreamError(status: 504, code: .unavailable, message: "upstream did not answer for \(request.digest) in time"))
        }
        lastMove = w.loop.now
        watchForStall()
        token = fill.subscribe(on: w.loop) { [self] p in progressed(p) }
        progressed(fill.progress)
    }

    private func stop() {
        if let t = token { fill.unsubscribe(t) }
        token = nil
        deadline?.cancel()
        deadline = nil
        stallTimer?.cancel()
        stallTimer = nil
    }

    /// A fill that stops moving while this reader waits on it (for longer
    /// than the upstream's own idle timeout, which should have failed it)
    /// cuts the reader, so that no client waits forever.
    private func watchForStall() {
        let limit = request.ctx.config.idleTimeoutNanos + 10_000_000_000
        stallTimer = w.loop.schedule(afterNanos: limit / 4) { [self] in
            guard token != nil else { return }
            let p = fill.progress
            let now = w.loop.now
            if p.outcome != .filling || p.written != lastWritten {
                lastWritten = p.written
                lastMove = now
            } else if now &- lastMove >= limit {
                request.mirror.log(.warning, w, "blob \(request.digest): fill stalled at \(p.written) bytes; cutting a reader")
                stop()
                if plan == nil && !isChunked {
                    return request.mirror.error(w, UpstreamError(status: 504, code: .unavailable, message: "upstream stalled for \(request.digest)"))
                }
                return w.abort()
            }
            watchForStall()
        }
    }

    /// `progressed` is on the stack; a call from inside it (a write that
    /// drained the connection runs `onWritable` synchronously) only asks the
    /// running one to go round again with fresh progress. Without this the
    /// nested call sent bytes the outer one then sent again.
    private var isSending = false
    private var sendAgain = false

    private func progressed(_ p: BlobFill.Progress) {
        if isSending { sendAgain = true; return }
        isSending = true
        defer { isSending = false }
        var p = p
        while true {
            sendAgain = false
            step(p)
            guard sendAgain, token != nil else { return }
            p = fill.progress
        }
    }

    private func step(_ p: BlobFill.Progress) {
        guard token != nil else { return }
        if case .failed(let status, let retryAfter, let reason) = p.outcome {
            stop()
            if plan != nil || isChunked { return w.abort() }
            return request.mirror.error(w, Self.error(status: status, retryAfter: retryAfter, reason: reason, request: request))
        }
        if plan == nil && !isChunked {
            if p.total == nil && p.written > 0 {
                startChunked()
            } else if !startResponse(p) {
                return
            }
        }
        if isChunked {
            guard send(upTo: p.written, inFile: p.inFile), p.outcome == .verified, sent == p.written else { return }
            stop()
            return w.end()
        }
        guard let plan, let total = p.total else { return }
        while part < plan.parts.count {
            let range = plan.parts[part].range
            // Hold back the blob's last byte until the digest has been checked.
            var limit = min(range.upperBound, p.written)
            if p.outcome != .verified && range.upperBound == total && limit == total && total > 0 { limit = total - 1 }
            guard send(upTo: limit, inFile: p.inFile), sent == range.upperBound else { return }
            plan.parts[part].trailer.withUnsafeBytes { _ = w.write($0) }
            part += 1
            if part < plan.parts.count {
                plan.parts[part].header.withUnsafeBytes { _ = w.write($0) }
                sent = plan.parts[part].range.lowerBound
            }
        }
        stop()
        w.end()
    }

    /// Sends `sent..<limit`: from the file while it has the bytes, then from
    /// the relay window. False when this reader was cut (it fell out of the window).
    private func send(upTo limit: UInt64, inFile: UInt64) -> Bool {
        if sent < limit && sent < inFile {
            let end = min(limit, inFile)
            w.writeFile(fill.file, range: sent..<end)
            sent = end
        }
        while sent < limit {
            switch fill.relayed(at: sent) {
            case .notYet:
                return true
            case .gone:
                // Too far behind a relay to be fed: cut it so that it retries.
                request.mirror.log(.info, w, "blob \(request.digest): a reader fell out of the relay window; cut")
                stop()
                w.abort()
                return false
            case .bytes(let chunk):
                let n = Int(min(UInt64(chunk.count), limit - sent))
                let more = chunk.prefix(n).withUnsafeBytes { w.write($0) }
                sent += UInt64(n)
                if !more {
                    // The client is slow: carry on when its connection drains.
                    w.onWritable = { [self] in progressed(fill.progress) }
                    return true
                }
            }
        }
        return true
    }

    /// No Content-Length upstream: the whole blob, chunked (a Range header is
    /// ignored, as RFC 9110 allows, since the size is not known yet).
    private func startChunked() {
        deadline?.cancel()
        deadline = nil
        isChunked = true
        let head = Mirror.contentHead(status: 200, digest: request.digest, mediaType: "application/octet-stream", cacheStatus: cacheStatus)
        w.start(head, contentLength: nil)
        sent = 0
    }

    /// Sends the head once the size is known; false when there is nothing more to do now.
    private func startResponse(_ p: BlobFill.Progress) -> Bool {
        guard let total = p.total else { return false }
        // An empty body has no last byte to hold back: the head itself waits
        // for the digest check, or a client would take it as complete (defect 2).
        if total == 0 && p.outcome != .verified { return false }
        deadline?.cancel()
        deadline = nil
        guard let plan = RangePlan(w.request.headers["Range"], size: total, boundary: request.boundary) else {
            stop()
            refuseRange(w, size: total)
            return false
        }
        self.plan = plan
        let head = Mirror.contentHead(status: 200, digest: request.digest, mediaType: "application/octet-stream", cacheStatus: cacheStatus)
        w.start(plan.head(head), contentLength: plan.contentLength)
        if !w.isActive || w.request.method == .head { stop(); return false }
        plan.parts[0].header.withUnsafeBytes { _ = w.write($0) }
        sent = plan.parts[0].range.lowerBound
        return true
    }

    /// The answer for a fill that failed before this client got a head.
    static func error(status: Int, retryAfter: String?, reason: String, request: BlobRequest) -> UpstreamError {
        switch status {
        case 401, 403, 404, 429:
            var h = HTTPHeaders()
            if let retryAfter { h.add("Retry-After", retryAfter) }
            return .from(status: status, headers: h, notFound: .blobUnknown, what: "blob \(request.name)@\(request.digest)")
        case 500...:
            return UpstreamError(status: status, code: .unavailable, message: reason)
        default:
            return UpstreamError(status: 502, code: .unavailable, message: reason)
        }
    }
}
