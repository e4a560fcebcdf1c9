#if canImport(Glibc)
import Glibc
#endif
import Reactor
import BlobStore
import OCI

/// `berth cache <ls|du|history|pin|unpin|rm|gc|verify>`.
///
/// When `berth serve` runs on the cache directory (it holds `berth.lock`),
/// the command goes to its admin socket, so the server's in-memory index
/// stays the one truth. Otherwise the command takes the lock itself (a server
/// cannot start meanwhile) and acts on the files directly.
///
/// `pin` without a server pins only an image that is entirely cached (every
/// platform's manifest and blobs): fetching needs the server's upstream
/// configuration, credentials and single-flight fills, so the command says
/// to start `berth serve` instead of fetching on its own.
///
/// Exit codes: 0 done; 1 verification found mismatches, or the operation
/// failed (not cached, pinned, upstream error); 2 usage or configuration error.
public enum CacheCommand {
    public enum Operation: Equatable {
        case ls, du, verify
        case pin(String), unpin(String), rm(String)
        /// `berth cache history [UPSTREAM/]REPO[:TAG]`.
        case history(String)
        case gc(graceSeconds: Double)
        /// `berth import PATH [--as IMAGE]` (PATH absolute).
        case importArchive(path: String, as: String?)
        /// `berth export IMAGE... [--pulled-since SECONDS] -o FILE` (FILE absolute).
        case export(images: [String], output: String, pulledSince: Double?)
        /// `berth preload IMAGE... [--platform P,...] [--pin] [--parallel N]`: each image pulled through the running server.
        case preload(images: [String], pin: Bool, platforms: [String], parallel: Int)
    }

    public struct Options {
        public var cacheDir: String?
        public var configPath: String?
        public var json = false
        public init() {}
    }

    /// Runs `operation`; returns the exit code. Output goes to stdout, errors to stderr.
    public static func run(_ operation: Operation, _ options: Options) -> Int32 {
        var config = BerthConfig()
        do {
            if let path = options.configPath {
                guard let text = readFile(path) else { throw ConfigError(key: "(file)", "cannot read \(path)") }
                config = try BerthConfig.parse(yaml: text)
            }
            try config.apply(environment: ProcessEnvironment.all())
            if let dir = options.cacheDir { config.cache.dir = dir }
            try config.validate()
        } catch {
            FileOut.stderr("berth: \(error)\n")
            return 2
        }
        switch operation {
        case .preload(let images, _, let platforms, let parallel):
            for p in platforms where Platform(p) == nil {
                FileOut.stderr("berth: --platform \(p): expected os/architecture[/variant], e.g. linux/amd64\n")
                return 2
            }
            guard parallel >= 1 else {
                FileOut.stderr("berth: --parallel must be at least 1\n")
                return 2
            }
            guard !images.isEmpty else {
                FileOut.stderr("berth: preload needs at least one image (arguments or -f LIST)\n")
                return 2
            }
            for i in images where ImageReference(i) == nil {
                FileOut.stderr("berth: \"\(i)\" is not an image reference such as library/alpine:3.20 or ghcr.io/org/app@sha256:…\n")
                return 2
            }
        case .pin(let s), .unpin(let s):
            guard ImageReference(s) != nil else {
                FileOut.stderr("berth: \"\(s)\" is not an image reference such as library/alpine:3.20 or repo@sha256:…\n")
                return 2
            }
        case .rm(let s):
            guard ImageReference(s) != nil || Digest(s) != nil else {
                FileOut.stderr("berth: \"\(s)\" is neither an image reference nor a digest (sha256:…)\n")
                return 2
            }
        case .importArchive(_, let name?):
            guard let image = ImageReference(name), case .tag = image.reference else {
                FileOut.stderr("berth: --as \"\(name)\" is not an image such as docker.io/library/alpine:3.20\n")
                return 2
            }
        case .export(let images, let output, let since):
            guard !images.isEmpty || since != nil else {
                FileOut.stderr("berth: export needs at least one image, or --pulled-since\n")
                return 2
            }
            for i in images where ImageReference(i) == nil {
                FileOut.stderr("berth: \"\(i)\" is not an image reference such as library/alpine:3.20 or repo@sha256:…\n")
                return 2
            }
            guard output.hasSuffix(".tar") || output.hasSuffix(".tar.gz") || output.hasSuffix(".tgz") else {
                FileOut.stderr("berth: -o \(output): the bundle is a .tar or a .tar.gz\n")
                return 2
            }
        default: break
        }
        let dir = config.cache.dir
        // Import is how an air-gapped machine's cache starts: it may create the directory.
        if case .importArchive = operation, (try? Posix.stat(path: dir)) == nil {
            do { try CacheLock.makeDirectory(dir) } catch {
                FileOut.stderr("berth: cannot create the cache directory \(dir): \(error)\n")
                return 1
            }
        }
        guard let st = try? Posix.stat(path: dir), (st.st_mode & S_IFMT) == S_IFDIR else {
            FileOut.stderr("berth: no cache directory at \(dir) (set --cache-dir or cache.dir)\n")
            return 2
        }
        let attempt: CacheLock.Attempt
        do { attempt = try CacheLock.attempt(dir) } catch {
            FileOut.stderr("berth: cannot open \(CacheLock.path(in: dir)): \(error)\n")
            return 1
        }
        switch attempt {
        case .held(let pid):
            guard case .preload(let images, let pin, let platforms, let parallel) = operation else {
                return viaServer(operation, dir: dir, pid: pid, json: options.json)
            }
            return PreloadClient(admin: AdminClient(path: dir + "/admin.sock"), pin: pin, platforms: platforms, json: options.json)
                .run(images, parallel: parallel)
        case .acquired(let lock):
            switch operation {
            case .preload:
                // Fetching needs the server's upstreams, credentials, verification and single-flight fills.
                FileOut.stderr("berth: preload goes through a running berth serve on \(dir): start one (it pulls with its upstreams and verification)\n")
                return 1
            default: break
            }
            defer { withExtendedLifetime(lock) {} }
            return direct(operation, config: config, json: options.json)
        }
    }

    // MARK: through the running server

    private static func viaServer(_ op: Operation, dir: String, pid: Int32?, json: Bool) -> Int32 {
        let client = AdminClient(path: dir + "/admin.sock")
        let request: (String, String)
        switch op {
        case .ls: request = ("GET", "/ls")
        case .du: request = ("GET", "/usage")
        case .history(let i): request = ("GET", "/history?image=" + percentEncoded(i))
        case .pin(let i): request = ("POST", "/pin?image=" + percentEncoded(i))
        case .preload: preconditionFailure("preload streams through PreloadClient")
        case .unpin(let i): request = ("POST", "/unpin?image=" + percentEncoded(i))
        case .rm(let t): request = ("POST", "/rm?target=" + percentEncoded(t))
        case .gc(let g): request = ("POST", "/gc?grace=\(Int64(g))")
        case .verify: request = ("POST", "/verify")
        case .importArchive(let path, let name):
            request = ("POST", "/import?path=" + percentEncoded(path) + (name.map { "&as=" + percentEncoded($0) } ?? ""))
        case .export(let images, let output, let since):
            request = ("POST", "/export?output=" + percentEncoded(output) + images.map { "&image=" + percentEncoded($0) }.joined()
                       + (since.map { "&pulled_since=\(Int64($0))" } ?? ""))
        }
        let tty = isatty(1) == 1
        var lastProgress = false
        let response: AdminClient.Response
        do {
            let long: Bool
            switch op {
            case .verify, .importArchive, .export, .pin: long = true
            default: long = false
            }
            let started = Clock.monotonicNanos()
            response = try client.send(request.0, request.1, timeoutSeconds: long ? 24 * 3600 : 900) { line in
                // Streamed verification, import and export: progress lines on a terminal only.
                guard !json, tty else { return }
                switch op {
                case .verify:
                    guard let l = try? CacheReport.decode(CacheReport.VerifyLine.self, line), let p = l.progress else { return }
                    print(CacheReport.progressLine(p), terminator: "")
                case .importArchive, .export:
                    guard let l = try? CacheReport.decode(CacheReport.TransferLine<CacheReport.Failure>.self, line), let p = l.progress else { return }
                    var verb = "import"
                    if case .export = op { verb = "export" }
                    print(CacheReport.progressLine(verb, p,
                                                   seconds: Double(Clock.monotonicNanos() - started) / 1e9), terminator: "")
                default: return
                }
                fflush(stdout)
                lastProgress = true
            }
        } catch {
            FileOut.stderr("berth: a server holds \(dir)/berth.lock\(pid.map { " (pid \($0))" } ?? "") but its admin socket did not answer: \(error)\n")
            return 1
        }
        if lastProgress { print("") }
        guard response.status == 200 else {
            let message = (try? CacheReport.decode(CacheReport.Failure.self, response.body).error) ?? String(decoding: response.body, as: UTF8.self)
            FileOut.stderr("berth: \(message)\n")
            return response.status == 400 ? 2 : 1
        }
        do {
            switch op {
            case .ls: return output(try CacheReport.decode(CacheReport.Listing.self, response.body), json: json) { CacheReport.text($0) }
            case .history: return output(try CacheReport.decode(CacheReport.History.self, response.body), json: json) { CacheReport.text($0) }
            case .du:
                return output(try CacheReport.decode(CacheReport.Usage.self, response.body), json: json) {
                    CacheReport.text($0, directory: dir, serverRunning: true)
                }
            case .pin: return output(try CacheReport.decode(CacheReport.Pin.self, response.body), json: json) { CacheReport.text($0, verb: "pinned") }
            case .preload: return 1
            case .unpin: return output(try CacheReport.decode(CacheReport.Pin.self, response.body), json: json) { CacheReport.text($0, verb: "unpinned") }
            case .rm: return output(try CacheReport.decode(CacheReport.Removal.self, response.body), json: json) { "removed \($0.removed) (\(CacheReport.size($0.bytes)))\n" }
            case .gc: return output(try CacheReport.decode(CacheReport.GC.self, response.body), json: json) { CacheReport.text($0) }
            case .importArchive:
                return try outputStreamed(ImageImporter.Report.self, response.body, json: json) { CacheReport.text($0) }
            case .export:
                return try outputStreamed(ImageExporter.Report.self, response.body, json: json) { CacheReport.text($0) }
            case .verify:
                let lines = response.body.split(separator: 0x0a)
                guard let last = lines.last, let result = try CacheReport.decode(CacheReport.VerifyLine.self, Array(last)).result else {
                    FileOut.stderr("berth: the server's verification ended without a result\n")
                    return 1
                }
                let code = output(result, json: json) { CacheReport.text($0) }
                return result.mismatches.isEmpty ? code : 1
            }
        } catch {
            FileOut.stderr("berth: unexpected answer from the server: \(error)\n")
            return 1
        }
    }

    /// The last line of an NDJSON stream: its result printed, or its error (exit 1).
    private static func outputStreamed<T: Codable>(_ type: T.Type, _ body: [UInt8], json: Bool, _ text: (T) -> String) throws -> Int32 {
        let last = try CacheReport.decode(CacheReport.TransferLine<T>.self, Array(body.split(separator: 0x0a).last ?? []))
        if let result = last.result { return output(result, json: json, text) }
        FileOut.stderr("berth: \(last.error ?? "the server's answer ended without a result")\n")
        return 1
    }

    private static func output<T: Encodable>(_ value: T, json: Bool, _ text: (T) -> String) -> Int32 {
        if json { print(String(decoding: CacheReport.json(value), as: UTF8.self)) } else { print(text(value), terminator: "") }
        fflush(stdout)
        return 0
    }

    // MARK: on the files

    private static func direct(_ op: Operation, config: BerthConfig, json: Bool) -> Int32 {
        let pool = BlockingPool(threads: 1)
        defer { pool.shutdown() }
        let store: BlobStore
        do { store = try BlobStore(root: config.cache.dir, pool: pool, budget: config.makeBudget(), keepHistory: config.cache.keepHistory) } catch {
            FileOut.stderr("berth: cannot open the cache at \(config.cache.dir): \(error)\n")
            return 1
        }
        store.log = { FileOut.stderr("berth: \($0)\n") }
        store.index.log = store.log
        if store.index.droppedTailBytes > 0 {
            store.log("cache index: cut a torn last record (\(store.index.droppedTailBytes) bytes) off index.log, left by a crash mid-append")
        }
        let mutates: Bool
        switch op {
        case .ls, .du, .export, .history: mutates = false
        default: mutates = true
        }
        var clean = store.index.wasCleanlyClosed
        if mutates && !clean {
            // A server stopped without a clean index: make it agree with the files before changing it.
            _ = store.reconcile()
            clean = true
        }
        defer {
            if mutates {
                pool.shutdown()  // pending journal appends first
                do { try store.index.snapshot(clean: clean) } catch { FileOut.stderr("berth: cannot write the cache index: \(error)\n") }
            }
        }
        switch op {
        case .ls: return output(CacheReport.listing(store), json: json) { CacheReport.text($0) }
        case .history(let text):
            do {
                return output(try CacheReport.history(store, of: text, key: config.indexKey), json: json) { CacheReport.text($0) }
            } catch {
                FileOut.stderr("berth: \(error)\n")
                return 1
            }
        case .du:
            return output(CacheReport.usage(store), json: json) { CacheReport.text($0, directory: config.cache.dir, serverRunning: false) }
        case .pin(let text):
            let image = ImageReference(text)!
            do {
                let pin = try store.pinCached(image)
                return output(CacheReport.pin(store, image: image.description, pin), json: json) { CacheReport.text($0, verb: "pinned") }
            } catch {
                FileOut.stderr("berth: \(error)\n")
                return 1
            }
        case .unpin(let text):
            let image = ImageReference(text)!
            guard let old = store.index.pinnedImage(image.description) else {
                FileOut.stderr("berth: \(image) is not pinned\n")
                return 1
            }
            store.index.unpinImage(image.description)
            return output(CacheReport.pin(store, image: image.description, old), json: json) { CacheReport.text($0, verb: "unpinned") }
        case .rm(let target):
            do {
                return output(try remove(target, store: store), json: json) { "removed \($0.removed) (\(CacheReport.size($0.bytes)))\n" }
            } catch {
                FileOut.stderr("berth: \(error)\n")
                return 1
            }
        case .gc(let grace):
            return output(CacheReport.gc(store.collectGarbage(grace: Int64(grace))), json: json) { CacheReport.text($0) }
        case .verify:
            let tty = isatty(1) == 1 && !json
            let result = store.verifyAll(progressInterval: 0.25) { p in
                guard tty else { return }
                print(CacheReport.progressLine(CacheReport.progress(p)), terminator: "")
                fflush(stdout)
            }
            if tty { print("") }
            _ = output(CacheReport.verify(result), json: json) { CacheReport.text($0) }
            return result.mismatches.isEmpty ? 0 : 1
        case .importArchive(let path, let name):
            do {
                let importer = ImageImporter(store: store, key: config.indexKey)
                importer.onProgress = terminalProgress("import", json: json)
                let report = try importer.run(path: path, as: name.flatMap(ImageReference.init))
                endProgress(json: json)
                return output(report, json: json) { CacheReport.text($0) }
            } catch {
                FileOut.stderr("berth: import \(path): \(error)\n")
                return 1
            }
        case .export(let images, let path, let since):
            do {
                let exporter = ImageExporter(store: store, key: config.indexKey)
                exporter.onProgress = terminalProgress("export", json: json)
                let report = try exporter.run(images: images.compactMap(ImageReference.init), pulledSince: since.map { Int64($0) }, output: path)
                endProgress(json: json)
                return output(report, json: json) { CacheReport.text($0) }
            } catch {
                FileOut.stderr("berth: export: \(error)\n")
                return 1
            }
        case .preload:
            return 1  // refused in `run` before the files are opened
        }
    }

    /// A progress printer for a terminal (nil otherwise).
    private static func terminalProgress(_ verb: String, json: Bool) -> ((CacheReport.Transfer) -> Void)? {
        guard !json, isatty(1) == 1 else { return nil }
        let started = Clock.monotonicNanos()
        return { p in
            print(CacheReport.progressLine(verb, p, seconds: Double(Clock.monotonicNanos() - started) / 1e9), terminator: "")
            fflush(stdout)
        }
    }

    private static func endProgress(json: Bool) {
        if !json, isatty(1) == 1 { print("\r\u{1b}[K", terminator: "") }
    }

    /// `rm IMAGE|DIGEST`: a digest removes that blob (and tags naming it); `repo:tag`
    /// removes the tag mapping; `repo@digest` removes that manifest blob.
    static func remove(_ target: String, store: BlobStore) throws -> CacheReport.Removal {
        if let d = Digest(target) {
            return CacheReport.Removal(removed: d.description, bytes: try store.removeBlob(d))
        }
        guard let image = ImageReference(target) else { throw CacheReport.Failure("\"\(target)\" is neither an image nor a digest") }
        switch image.reference {
        case .digest(let d):
            return CacheReport.Removal(removed: "\(image.qualifiedName)@\(d)", bytes: try store.removeBlob(d))
        case .tag(let tag):
            let (repo, _) = try store.removeTag(image.qualifiedName, tag)
            return CacheReport.Removal(removed: "\(repo):\(tag)", bytes: 0)
        }
    }
}

extension BerthConfig {
    /// The cache budget this configuration asks for.
    public func makeBudget() -> Budget {
        var budget = Budget.defaultBudget(for: cache.dir)
        if !cache.maxSize.isEmpty, let max = Budget.parseSize(cache.maxSize, filesystemOf: cache.dir) { budget.maxBytes = max }
        budget.high = Double(cache.highWatermark) / 100
        budget.low = Double(cache.lowWatermark) / 100
        return budget
    }
}

/// A blocking HTTP/1.1 client for the admin socket: one request per
/// connection (`Connection: close`), every read bounded by a timeout.
struct AdminClient {
    let path: String

    struct Response {
        var status: Int
        var body: [UInt8]
    }

    struct Failure: Error, CustomStringConvertible { let description: String }

    /// Sends a bodiless request; `onLine` sees each complete line of the body as it arrives.
    func send(_ method: String, _ target: String, timeoutSeconds: Int, onLine: ([UInt8]) -> Void = { _ in }) throws -> Response {
        guard let address = SocketAddress(unixPath: path) else { throw Failure(description: "socket path too long: \(path)") }
        let fd = try Posix.socket(domain: AF_UNIX, type: Int32(SOCK_STREAM.rawValue), blocking: true)
        defer { Posix.close(fd: fd) }
        let tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        try Posix.setsockopt(fd: fd, level: SOL_SOCKET, name: SO_RCVTIMEO, value: tv)
        try Posix.setsockopt(fd: fd, level: SOL_SOCKET, name: SO_SNDTIMEO, value: tv)
        try address.connectBlocking(fd)
        let request = Array("\(method) \(target) HTTP/1.1\r\nHost: berth-admin\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".utf8)
        var off = 0
        while off < request.count {
            guard case .processed(let n) = try request[off...].withUnsafeBytes({ try Posix.send(fd: fd, $0) }) else {
                throw Failure(description: "the server took no request within \(timeoutSeconds) s")
            }
            off += n
        }
        var raw: [UInt8] = []
        var headEnd: Int?
        var decoder = ChunkDecoder()
        var body: [UInt8] = []
        var lineStart = 0
        var chunked = false
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let got: IOResult<Int>
            do { got = try buf.withUnsafeMutableBytes { try Posix.recv(fd: fd, into: $0) } } catch {
                throw Failure(description: "\(error)")
            }
            guard case .processed(let n) = got else { throw Failure(description: "no answer within \(timeoutSeconds) s") }
            if n == 0 { break }
            if headEnd == nil {
                raw.append(contentsOf: buf[0..<n])
                guard let r = raw.firstRange(of: [13, 10, 13, 10]) else { continue }
                headEnd = r.upperBound
                let head = String(decoding: raw[..<r.lowerBound], as: UTF8.self).lowercased()
                chunked = head.contains("transfer-encoding: chunked")
                let rest = Array(raw[r.upperBound...])
                raw = Array(raw[..<r.upperBound])
                if chunked { body += decoder.feed(rest) } else { body += rest }
            } else if chunked {
                body += decoder.feed(Array(buf[0..<n]))
            } else {
                body += buf[0..<n]
            }
            while let nl = body[lineStart...].firstIndex(of: 0x0a) {
                onLine(Array(body[lineStart..<nl]))
                lineStart = nl + 1
            }
            if chunked && decoder.isDone { break }
        }
        guard headEnd != nil else { throw Failure(description: "the connection closed before an answer") }
        let statusLine = String(decoding: raw.prefix { $0 != 13 }, as: UTF8.self).split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else { throw Failure(description: "malformed status line") }
        return Response(status: status, body: body)
    }
}

/// Decodes `Transfer-Encoding: chunked` incrementally (extensions and trailers ignored).
struct ChunkDecoder {
    private var pending: [UInt8] = []
    private var remaining = 0        // data bytes left in the current chunk
    private var needCRLF = false     // after a chunk's data
    private(set) var isDone = false

    mutating func feed(_ bytes: [UInt8]) -> [UInt8] {
        pending += bytes
        var out: [UInt8] = []
        var i = 0
        while i < pending.count && !isDone {
            if remaining > 0 {
                let take = min(remaining, pending.count - i)
                out += pending[i..<(i + take)]
                i += take
                remaining -= take
                if remaining == 0 { needCRLF = true }
                continue
            }
            guard let nl = pending[i...].firstIndex(of: 0x0a) else { break }
            let line = String(decoding: pending[i..<nl], as: UTF8.self).trimmingCharacters(" \r")
            i = nl + 1
            if needCRLF { needCRLF = false; continue }
            let size = Int(line.split(separator: ";").first.map(String.init) ?? "", radix: 16) ?? 0
            if size == 0 { isDone = true } else { remaining = size }
        }
        pending.removeFirst(i)
        return out
    }
}

extension String {
    func trimmingCharacters(_ set: String) -> String {
        var s = Substring(self)
        while let c = s.first, set.contains(c) { s = s.dropFirst() }
        while let c = s.last, set.contains(c) { s = s.dropLast() }
        return String(s)
    }
}
