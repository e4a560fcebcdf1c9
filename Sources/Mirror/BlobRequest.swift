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
final class BlobRequest {
    let mirror: Mirror
    let w: ResponseWriter
    let name: String
    let digest: Digest
    let repo: String
    let upstream: Upstream
    var index: CacheIndex { mirror.store.index }

    init(mirror: Mirror, writer: ResponseWriter, name: String, digest: Digest) {
        self.mirror = mirror
        self.w = writer
        self.name = name
        self.digest = digest
        self.repo = mirror.upstreamName(name)
        self.upstream = mirror.upstream(for: writer.loop)
    }

    private var path: String { "/v2/\(repo)/blobs/\(digest)" }
    private var headTimeout: UInt64 { mirror.config.upstream.blobHeadTimeoutNanos }

    func run() {
        if index.isLinked(repo, digest), let file = mirror.store.open(digest) {
            return serveCached(file, cacheStatus: "hit")
        }
        if w.request.method == .head || mirror.store.contains(digest) {
            return headUpstream()
        }
        startOrJoinFill()
    }

    /// A HEAD upstream: answers a cold HEAD, or confirms access to a cached digest.
    private func headUpstream() {
        upstream.fetch(.head, path, repository: repo, headTimeout: headTimeout, maxBytes: 0) { [self] result in
            switch result {
            case .failure(let e):
                mirror.error(w, e)
            case .success(let (head, _)) where head.status == 200:
                index.link(repo, [digest])
                if let file = mirror.store.open(digest) { return serveCached(file, cacheStatus: "hit; detail=access-checked") }
                if w.request.method == .get { return startOrJoinFill() }
                var out = Mirror.contentHead(status: 200, digest: digest, mediaType: "application/octet-stream", cacheStatus: "fwd=miss")
                out.headers.add("Accept-Ranges", "bytes")
                let length = head.headers["Content-Length"].flatMap { UInt64($0) }
                w.start(out, contentLength: length ?? 0)
            case .success(let (head, _)):
                mirror.error(w, .from(status: head.status, headers: head.headers, notFound: .blobUnknown, what: "blob \(name)@\(digest)"))
            }
        }
    }

    private func startOrJoinFill() {
        let lookup: FillRegistry.Lookup
        do { lookup = try mirror.fills.lookup(digest, loop: w.loop) } catch {
            mirror.log(.error, "cannot start a fill for \(digest): \(error)")
            return Mirror.error(w, .unavailable, "cache cannot take \(digest): \(error)", status: 503)
        }
        switch lookup {
        case .cached:
            if let file = mirror.store.open(digest) { serveCached(file, cacheStatus: "hit") } else { headUpstream() }
        case .joined(let fill):
            // Another repository may have started this fill: our access was not checked by its GET.
            if index.isLinked(repo, digest) { FillReader(request: self, fill: fill, cacheStatus: "fwd=miss; collapsed").start() } else { headUpstream() }
        case .started(let fill):
            BlobFetch(mirror: mirror, fill: fill, repo: repo).start(upstream: upstream, path: path, headTimeout: headTimeout)
            FillReader(request: self, fill: fill, cacheStatus: "fwd=miss; stored").start()
        }
    }

    // MARK: warm

    private func serveCached(_ file: FileDescriptor, cacheStatus: String) {
        guard let size = try? file.size() else { return Mirror.error(w, .blobUnknown, "blob \(digest) unreadable", status: 500) }
        var head = Mirror.contentHead(status: 200, digest: digest, mediaType: "application/octet-stream", cacheStatus: cacheStatus)
        head.headers.add("Accept-Ranges", "bytes")
        switch RangeRequest.parse(w.request.headers["Range"], size: size) {
        case .none:
            w.respond(head, file: file, range: 0..<size)
        case .satisfiable(let ranges) where ranges.count == 1:
            let r = ranges[0]
            head.status = 206
            head.headers.add("Content-Range", "bytes \(r.lowerBound)-\(r.upperBound)/\(size)")
            w.respond(head, file: file, range: r.lowerBound..<(r.upperBound + 1))
        case .satisfiable(let ranges):
            serveMultipart(file, size: size, ranges: ranges, head: head)
        case .unsatisfiable:
            var h = ResponseHead(status: 416)
            h.headers.add("Content-Range", "bytes */\(size)")
            Mirror.error(w, .rangeInvalid, "range not satisfiable for a \(size)-byte blob", head: h)
        }
    }

    /// `multipart/byteranges`, read on the pool. Large multi-range asks get the
    /// whole blob instead (RFC 9110 lets a server ignore Range).
    private func serveMultipart(_ file: FileDescriptor, size: UInt64, ranges: [ClosedRange<UInt64>], head: ResponseHead) {
        let total = ranges.reduce(UInt64(0)) { $0 + UInt64($1.count) }
        guard total <= 8 << 20 else { return w.respond(head, file: file, range: 0..<size) }
        let boundary = "berth-" + String(digest.hex.prefix(16))
        var h = head
        h.status = 206
        h.headers.set("Content-Type", "multipart/byteranges; boundary=\(boundary)")
        let w = self.w
        mirror.pool.run(on: w.loop, { () -> [UInt8] in
            var body: [UInt8] = []
            for r in ranges {
                body += Array("--\(boundary)\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes \(r.lowerBound)-\(r.upperBound)/\(size)\r\n\r\n".utf8)
                var chunk = [UInt8](repeating: 0, count: Int(r.count))
                var off = 0
                while off < chunk.count {
                    let n = try chunk.withUnsafeMutableBytes {
                        try Posix.pread(fd: file.fd, into: UnsafeMutableRawBufferPointer(rebasing: $0[off...]), offset: off_t(r.lowerBound) + off_t(off))
                    }
                    if n == 0 { throw IOError(errno: EIO, call: "pread: blob shorter than its size") }
                    off += n
                }
                body += chunk
                body += [13, 10]
            }
            body += Array("--\(boundary)--\r\n".utf8)
            return body
        }, then: { result in
            switch result {
            case .success(let body): w.respond(h, body: body)
            case .failure(let e): Mirror.error(w, .blobUnknown, "cannot read blob: \(e)", status: 500)
            }
        })
    }
}

/// Drives one fill from the upstream GET, on the loop that started it.
final class BlobFetch: UpstreamDelegate {
    let mirror: Mirror
    let fill: BlobFill
    let repo: String
    private var ok = false

    init(mirror: Mirror, fill: BlobFill, repo: String) {
        self.mirror = mirror
        self.fill = fill
        self.repo = repo
    }

    func start(upstream: Upstream, path: String, headTimeout: UInt64) {
        upstream.send(.get, path, repository: repo, headTimeout: headTimeout, delegate: self)
    }

    func didReceiveHead(_ head: ResponseHead, url: HTTPURL, task: ClientTask) {
        guard head.status == 200 else {
            fill.fail(status: head.status, retryAfter: head.headers["Retry-After"], reason: "upstream answered \(head.status)")
            task.cancel()
            return
        }
        ok = true
        mirror.store.index.link(repo, [fill.digest])
        if let n = head.headers["Content-Length"].flatMap({ UInt64($0) }) { fill.setTotal(n) }
    }

    func didReceiveBody(_ bytes: UnsafeRawBufferPointer, task: ClientTask) -> Bool {
        do { try fill.append(bytes) } catch {
            mirror.log(.error, "fill \(fill.digest): \(error)")
            fill.fail(status: 0, retryAfter: nil, reason: "cache write failed: \(error)")
            task.cancel()
            return false
        }
        return true
    }

    func didFinish(_ error: HTTPClientError?, task: ClientTask) {
        guard ok else { return }
        if let error {
            fill.fail(status: error.isTimeout ? 504 : 502, retryAfter: nil, reason: "upstream transfer broke: \(error)")
            return
        }
        let (digest, log) = (fill.digest, mirror.log)
        fill.finish(store: mirror.store, pool: mirror.pool) { committed in
            if !committed { log(.warning, "fill \(digest) was not kept (verification or write failed)") }
        }
    }

    func upstreamFailed(_ e: UpstreamError) {
        fill.fail(status: e.status, retryAfter: e.retryAfter, reason: e.message)
    }
}

/// One client following a fill: sends its (range of the) blob from the temp
/// file as bytes land. The last byte of a body waits for the digest check.
final class FillReader {
    let request: BlobRequest
    let fill: BlobFill
    let cacheStatus: String
    private var w: ResponseWriter { request.w }
    private var token: AnyObject?
    /// True from `start` until `stop`. Not `token != nil`: on the fill's owner
    /// loop `subscribe` calls back before it returns the token, and a reader
    /// joining a fill that makes no more progress (all bytes in, commit
    /// running) would drop that only callback and wait for the 504 deadline.
    private var isFollowing = false
    private var range: Range<UInt64>?
    private var sent: UInt64 = 0
    private var deadline: Timer?

    init(request: BlobRequest, fill: BlobFill, cacheStatus: String) {
        self.request = request
        self.fill = fill
        self.cacheStatus = cacheStatus
    }

    func start() {
        w.onClose = { [self] in stop() }
        deadline = w.loop.schedule(afterNanos: request.mirror.config.clientDeadlineNanos) { [self] in
            guard range == nil, w.isActive else { return }
            stop()
            request.mirror.error(w, UpstreamError(status: 504, code: .unavailable, message: "upstream did not answer for \(request.digest) in time"))
        }
        isFollowing = true
        let t = fill.subscribe(on: w.loop) { [self] p in progressed(p) }
        if isFollowing { token = t } else { fill.unsubscribe(t) }  // already answered during subscribe
    }

    private func stop() {
        isFollowing = false
        if let t = token { fill.unsubscribe(t) }
        token = nil
        deadline?.cancel()
        deadline = nil
    }

    private func progressed(_ p: BlobFill.Progress) {
        guard isFollowing else { return }
        if case .failed(let status, let retryAfter, let reason) = p.outcome {
            stop()
            if range != nil { return w.abort() }
            let e: UpstreamError
            switch status {
            case 401, 403, 404, 429:
                var h = HTTPHeaders()
                if let retryAfter { h.add("Retry-After", retryAfter) }
                e = .from(status: status, headers: h, notFound: .blobUnknown, what: "blob \(request.name)@\(request.digest)")
            case 500...:
                e = UpstreamError(status: status, code: .unavailable, message: reason)
            default:
                e = UpstreamError(status: 502, code: .unavailable, message: reason)
            }
            return request.mirror.error(w, e)
        }
        if range == nil && !startResponse(p) { return }
        guard let range, let total = p.total else { return }
        // Hold back a body's last byte until the digest has been checked.
        var limit = min(range.upperBound, p.written)
        if p.outcome != .verified && range.upperBound == total && limit == total { limit = total - 1 }
        if limit > sent {
            w.writeFile(fill.file, range: sent..<limit)
            sent = limit
        }
        if sent == range.upperBound {
            stop()
            w.end()
        }
    }

    /// Sends the head once the size is known; false when the answer is already complete (416, HEAD) or must wait.
    private func startResponse(_ p: BlobFill.Progress) -> Bool {
        guard let total = p.total else { return false }
        deadline?.cancel()
        deadline = nil
        var head = Mirror.contentHead(status: 200, digest: request.digest, mediaType: "application/octet-stream", cacheStatus: cacheStatus)
        head.headers.add("Accept-Ranges", "bytes")
        var r: Range<UInt64> = 0..<total
        switch RangeRequest.parse(w.request.headers["Range"], size: total) {
        case .satisfiable(let ranges) where ranges.count == 1:
            r = ranges[0].lowerBound..<(ranges[0].upperBound + 1)
            head.status = 206
            head.headers.add("Content-Range", "bytes \(ranges[0].lowerBound)-\(ranges[0].upperBound)/\(total)")
        case .unsatisfiable:
            stop()
            var h = ResponseHead(status: 416)
            h.headers.add("Content-Range", "bytes */\(total)")
            Mirror.error(w, .rangeInvalid, "range not satisfiable for a \(total)-byte blob", head: h)
            return false
        default:
            break  // no range, or several on a cold blob: the whole blob
        }
        range = r
        sent = r.lowerBound
        w.start(head, contentLength: UInt64(r.count))
        if !w.isActive || w.request.method == .head { stop(); return false }
        if r.isEmpty { stop(); w.end(); return false }
        return true
    }
}
