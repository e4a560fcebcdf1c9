#if canImport(Glibc)
import Glibc
#endif
import Reactor
import HTTP1
import BlobStore
import Mirror
import OCI

/// The local admin API `berth cache` talks to while a server runs: HTTP/1.1
/// on the unix socket `<cache dir>/admin.sock` (mode 0600, so only the
/// server's user), never on a network listener.
///
/// ```
/// GET  /usage                 budget and usage (CacheReport.Usage)
/// GET  /ls                    tags and pinned images (CacheReport.Listing)
/// GET  /history?image=REPO[:TAG]   what the tag(s) named (CacheReport.History)
/// POST /pin?image=REF         warm through Berth, then pin (CacheReport.Pin)
/// POST /preload?image=REF[&platform=P,…][&pin=1]   chunked NDJSON: {"progress":…} lines, then {"result":…} or {"error":…}
/// POST /unpin?image=REF       (CacheReport.Pin of the pin removed)
/// POST /rm?target=REF|DIGEST  (CacheReport.Removal)
/// POST /gc?grace=SECONDS      (CacheReport.GC)
/// POST /verify                chunked NDJSON: {"progress":…} lines, then {"result":…}
/// POST /import?path=ABS[&as=IMAGE]                 import an archive or layout: NDJSON {"progress":…} lines, then {"result": ImageImporter.Report} or {"error":…}
/// POST /export?output=ABS&image=IMAGE[&image=…][&pulled_since=SECONDS]   write an OCI layout tar: NDJSON as import (ImageExporter.Report)
/// ```
/// `path` and `output` are read and written by the server's user: the
/// socket is 0600, so only that user can ask.
/// Errors: a status ≥ 400 with `{"error": "…"}`.
///
/// Each request's work blocks (manifest reads, unlink, hashing), so it runs
/// on a thread of its own and answers on the connection's loop; the blocking
/// pool stays free for fills.
final class AdminServer {
    let store: BlobStore
    let pinner: Pinner?
    let group: EventLoopGroup
    let http: HTTPServer
    let path: String
    let log: (String) -> Void
    /// The cache-index key of an image argument (from the server's upstream configuration).
    let key: (ImageReference) throws -> String

    init(store: BlobStore, pinner: Pinner?, group: EventLoopGroup, pool: BlockingPool,
         key: @escaping (ImageReference) throws -> String, log: @escaping (String) -> Void) throws {
        self.store = store
        self.key = key
        self.pinner = pinner
        self.group = group
        self.log = log
        path = store.root + "/admin.sock"
        guard let address = SocketAddress(unixPath: path) else {
            throw ConfigError(key: "cache.dir", "\(path) is too long for a unix socket path (107 bytes at most)")
        }
        // We hold berth.lock: a socket file left here belongs to a server that is gone (none is fine).
        _ = try? Posix.unlink(path: path)
        var c = HTTPServer.Configuration()
        c.plain = [address]
        c.idleTimeoutNanos = 10_000_000_000
        c.maxConnections = 64  // local commands only; leaves the descriptors to the main listeners
        var handler: ((ResponseWriter) -> Void)?
        http = HTTPServer(configuration: c, group: group, pool: pool) { w in handler?(w) }
        handler = { [unowned self] w in handle(w) }
        try http.start()
    }

    func stop() {
        http.beginShutdown()
        _ = try? Posix.unlink(path: path)  // best effort at shutdown; the next start removes a leftover
    }

    private func handle(_ w: ResponseWriter) {
        let target = w.request.target
        let q = target.firstIndex(of: "?")
        let route = q.map { String(target[..<$0]) } ?? target
        let query = q.map { String(target[target.index(after: $0)...]) } ?? ""
        func params(_ key: String) -> [String] {
            query.split(separator: "&").compactMap { pair in
                let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                return kv[0] == key ? percentDecoded(kv.count > 1 ? String(kv[1]) : "") : nil
            }
        }
        func param(_ key: String) -> String? { params(key).first }
        let method = w.request.method
        switch (method, route) {
        case (.get, "/usage"):
            work(w) { [store] in .ok(CacheReport.json(CacheReport.usage(store))) }
        case (.get, "/ls"):
            work(w) { [store] in .ok(CacheReport.json(CacheReport.listing(store))) }
        case (.get, "/history"):
            guard let text = param("image") else { return fail(w, 400, "history needs ?image=[UPSTREAM/]REPO[:TAG]") }
            work(w) { [store, key] in
                do { return .ok(CacheReport.json(try CacheReport.history(store, of: text, key: key))) } catch let e as CacheReport.Failure {
                    return .failure(404, e.error)
                } catch {
                    return .failure(400, "\(error)")
                }
            }
        case (.post, "/pin"):
            guard let text = param("image"), let image = ImageReference(text) else { return fail(w, 400, "pin needs ?image=REPO[:TAG|@DIGEST]") }
            guard let pinner else { return fail(w, 503, "the server has no plain listener to warm through") }
            log("admin: pinning \(image)")
            pinner.pin(image, on: w.loop) { [store, log] r in
                switch r {
                case .success(let warm):
                    let pin = store.index.pinnedImage(image.description)
                        ?? .init(manifest: warm.manifest, covered: warm.covered, pinnedAt: 0)
                    log("admin: pinned \(image) → \(warm.manifest) (\(warm.covered.count) digests)")
                    self.respond(w, 200, CacheReport.json(CacheReport.pin(store, image: image.description, pin)))
                case .failure(let e):
                    log("admin: pinning \(image) failed: \(e)")
                    self.fail(w, 502, "\(image): \(e)")
                }
            }
        case (.post, "/preload"):
            guard let text = param("image"), let image = ImageReference(text) else { return fail(w, 400, "preload needs ?image=[UPSTREAM/]REPO[:TAG|@DIGEST]") }
            guard let pinner else { return fail(w, 503, "the server has no plain listener to warm through") }
            let names = (param("platform") ?? "").split(separator: ",").map(String.init)
            let platforms = names.compactMap(Platform.init)
            guard platforms.count == names.count else { return fail(w, 400, "platform \(names.joined(separator: ",")): expected os/architecture[/variant], e.g. linux/amd64") }
            preload(w, image, pin: param("pin") == "1", platforms: platforms, pinner: pinner)
        case (.post, "/unpin"):
            guard let text = param("image"), let image = ImageReference(text) else { return fail(w, 400, "unpin needs ?image=REPO[:TAG|@DIGEST]") }
            work(w) { [store] in
                guard let old = store.index.pinnedImage(image.description) else { return .failure(404, "\(image) is not pinned") }
                store.index.unpinImage(image.description)
                store.checkPinnedBudget()
                return .ok(CacheReport.json(CacheReport.pin(store, image: image.description, old)))
            }
        case (.post, "/rm"):
            guard let target = param("target"), !target.isEmpty else { return fail(w, 400, "rm needs ?target=IMAGE|DIGEST") }
            work(w) { [store] in
                do { return .ok(CacheReport.json(try CacheCommand.remove(target, store: store))) } catch let e as CacheReport.Failure {
                    return .failure(400, e.error)
                } catch {
                    return .failure(409, "\(error)")
                }
            }
        case (.post, "/gc"):
            guard let grace = param("grace").map({ Double($0) }) ?? 3600, grace >= 0 else { return fail(w, 400, "grace is in seconds") }
            work(w) { [store] in .ok(CacheReport.json(CacheReport.gc(store.collectGarbage(grace: Int64(grace))))) }
        case (.post, "/verify"):
            verify(w)
        case (.post, "/import"):
            guard let path = param("path"), path.hasPrefix("/") else { return fail(w, 400, "import needs ?path=ABSOLUTE_PATH") }
            let name = param("as").flatMap(ImageReference.init)
            if param("as") != nil && name == nil { return fail(w, 400, "as= is not an image such as docker.io/library/alpine:3.20") }
            log("admin: importing \(path)")
            transfer(w) { [store, key, log] progress in
                do {
                    let importer = ImageImporter(store: store, key: key)
                    importer.onProgress = progress
                    let r = try importer.run(path: path, as: name)
                    log("admin: imported \(path): \(r.images.map { "\($0.names.joined(separator: ",")) → \($0.digest)" }.joined(separator: "; "))")
                    return .success(CacheReport.json(r))
                } catch {
                    log("admin: import \(path) refused: \(error)")
                    return .failure(CacheReport.Failure("import \(path): \(error)"))
                }
            }
        case (.post, "/export"):
            guard let output = param("output"), output.hasPrefix("/") else { return fail(w, 400, "export needs ?output=ABSOLUTE_PATH") }
            let images = params("image").compactMap(ImageReference.init)
            let since = param("pulled_since").map { Int64($0) }
            if case .some(.none) = since { return fail(w, 400, "pulled_since is in seconds") }
            guard !images.isEmpty || since != nil, images.count == params("image").count else {
                return fail(w, 400, "export needs ?image=[UPSTREAM/]REPO[:TAG|@DIGEST] (repeatable) or ?pulled_since=SECONDS")
            }
            log("admin: exporting \(images.map(\.description).joined(separator: ", ")) to \(output)")
            transfer(w) { [store, key] progress in
                do {
                    let exporter = ImageExporter(store: store, key: key)
                    exporter.onProgress = progress
                    return .success(CacheReport.json(try exporter.run(images: images, pulledSince: since.flatMap { $0 }, output: output)))
                } catch {
                    return .failure(CacheReport.Failure("export: \(error)"))
                }
            }
        case (_, "/usage"), (_, "/ls"), (_, "/history"), (_, "/pin"), (_, "/preload"), (_, "/unpin"), (_, "/rm"), (_, "/gc"), (_, "/verify"), (_, "/import"), (_, "/export"):
            fail(w, 405, "\(method.name) is not served on \(route)")
        default:
            fail(w, 404, "no admin route \(route)")
        }
    }

    private enum Outcome {
        case ok([UInt8])
        case failure(Int, String)
    }

    /// Runs `body` on a thread of its own and answers on the writer's loop.
    private func work(_ w: ResponseWriter, _ body: @escaping () -> Outcome) {
        let t = OSThread(name: "berth-admin") { [self] in
            let outcome = body()
            w.loop.execute {
                switch outcome {
                case .ok(let bytes): self.respond(w, 200, bytes)
                case .failure(let status, let message): self.fail(w, status, message)
                }
            }
        }
        t.detach()
    }

    /// Runs `body` on a thread of its own, streaming NDJSON: a `{"progress":…}`
    /// line for each report it makes, then `{"result":…}` or `{"error":…}`.
    private func transfer(_ w: ResponseWriter,
                          _ body: @escaping (@escaping (CacheReport.Transfer) -> Void) -> Result<[UInt8], CacheReport.Failure>) {
        var head = ResponseHead(status: 200)
        head.headers.add("Content-Type", "application/x-ndjson")
        w.start(head, contentLength: nil)
        func send(_ line: [UInt8], end: Bool = false) {
            w.loop.execute {
                (line + [0x0a]).withUnsafeBytes { _ = w.write($0) }
                if end { w.end() } else { w.flush() }
            }
        }
        OSThread(name: "berth-admin") {
            let outcome = body { p in send(Array(#"{"progress":"#.utf8) + CacheReport.json(p) + [UInt8(ascii: "}")]) }
            switch outcome {
            case .success(let report): send(Array(#"{"result":"#.utf8) + report + [UInt8(ascii: "}")], end: true)
            case .failure(let f): send(CacheReport.json(f), end: true)
            }
        }.detach()
    }

    private func verify(_ w: ResponseWriter) {
        var head = ResponseHead(status: 200)
        head.headers.add("Content-Type", "application/x-ndjson")
        w.start(head, contentLength: nil)
        log("admin: verifying every blob")
        let t = OSThread(name: "berth-admin") { [store, log] in
            let result = store.verifyAll(progressInterval: 0.5) { p in
                let line = CacheReport.json(CacheReport.VerifyLine(progress: CacheReport.progress(p), result: nil)) + [0x0a]
                w.loop.execute {
                    line.withUnsafeBytes { _ = w.write($0) }
                    w.flush()
                }
            }
            log("admin: verified \(result.checked) blobs, \(result.mismatches.count) mismatches")
            let line = CacheReport.json(CacheReport.VerifyLine(progress: nil, result: CacheReport.verify(result))) + [0x0a]
            w.loop.execute {
                line.withUnsafeBytes { _ = w.write($0) }
                w.end()
            }
        }
        t.detach()
    }

    /// Warms (and with `pin` pins) one image, streaming NDJSON: a
    /// `{"progress":…}` line every 250 ms, then `{"result":…}` or `{"error":…}`.
    private func preload(_ w: ResponseWriter, _ image: ImageReference, pin: Bool, platforms: [Platform], pinner: Pinner) {
        var head = ResponseHead(status: 200)
        head.headers.add("Content-Type", "application/x-ndjson")
        w.start(head, contentLength: nil)
        func send(_ line: CacheReport.PreloadLine) {
            (CacheReport.json(line) + [0x0a]).withUnsafeBytes { _ = w.write($0) }
            w.flush()
        }
        let what = platforms.isEmpty ? "\(image)" : "\(image) (\(platforms.map(\.description).joined(separator: ", ")))"
        log("admin: preloading \(what)\(pin ? ", pinning" : "")")
        var finished = false
        let handle = pinner.warm(image, pin: pin, platforms: platforms, on: w.loop) { [store, log] r in
            finished = true
            switch r {
            case .success(let warm):
                log("admin: preloaded \(what) → \(warm.manifest) (\(warm.covered.count) digests, \(warm.blobBytes) blob bytes fetched)")
                let pinned = pin ? store.index.pinnedImage(image.description) : nil
                let loaded = pinned ?? CacheIndex.PinnedImage(manifest: warm.manifest, covered: warm.covered, pinnedAt: 0)
                send(.init(result: CacheReport.pin(store, image: image.description, loaded)))
            case .failure(let e):
                log("admin: preloading \(what) failed: \(e)")
                send(.init(error: "\(image): \(e)"))
            }
            w.end()
        }
        func tick() {
            guard !finished else { return }
            send(.init(progress: handle.progress))
            w.loop.schedule(afterNanos: 250_000_000, tick)
        }
        w.loop.schedule(afterNanos: 250_000_000, tick)
    }

    private func respond(_ w: ResponseWriter, _ status: Int, _ body: [UInt8]) {
        var head = ResponseHead(status: status)
        head.headers.add("Content-Type", "application/json")
        w.respond(head, body: body)
    }

    private func fail(_ w: ResponseWriter, _ status: Int, _ message: String) {
        respond(w, status, CacheReport.json(CacheReport.Failure(message)))
    }
}

/// `%XX` decoded (and `+` as space), for query values.
func percentDecoded(_ s: String) -> String {
    var out: [UInt8] = []
    let b = Array(s.utf8)
    var i = 0
    while i < b.count {
        if b[i] == UInt8(ascii: "%"), i + 2 < b.count, let v = UInt8(String(decoding: b[(i + 1)...(i + 2)], as: UTF8.self), radix: 16) {
            out.append(v)
            i += 3
        } else {
            out.append(b[i] == UInt8(ascii: "+") ? 0x20 : b[i])
            i += 1
        }
    }
    return String(decoding: out, as: UTF8.self)
}

/// `%XX` encoded for a query value (unreserved characters and `:/@` kept).
func percentEncoded(_ s: String) -> String {
    var out = ""
    for byte in s.utf8 {
        let c = Character(Unicode.Scalar(byte))
        if (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a) || "-._~:/@".contains(c) {
            out.append(c)
        } else {
            out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(2)
        }
    }
    return out
}

extension String {
    func leftPadded(_ n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
}
