import Foundation
import XCTest
import COpenSSL
import BlobStore
import TestSupport

// Test peers for the cache-lifecycle suite: Debian's docker-registry as the
// upstream, the built `berth` binary, a throttling TCP relay, a small
// filesystem, and helpers to hash files and measure the cache directory.
// Everything listens on and talks to 127.0.0.1 only.

// MARK: - basics

/// The inherited environment without `BERTH_*` (so flags decide) and without
/// `REGISTRY_*` (docker-registry reads every such variable as configuration).
func cleanEnvironment(_ extra: [String: String] = [:]) -> [String: String] {
    var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("BERTH_") && !$0.key.hasPrefix("REGISTRY_") }
    for (k, v) in extra { env[k] = v }
    return env
}

// MARK: - content

/// Random content and its digest (`sha256:<hex>`).
struct TestBlob {
    let bytes: [UInt8]
    let digest: String
    let size: Int
    var hex: String { String(digest.dropFirst(7)) }

    init(bytes: [UInt8]) {
        self.bytes = bytes
        digest = "sha256:" + SHA256Hasher.hex(bytes)
        size = bytes.count
    }

    /// Digest and size only (bytes dropped).
    init(digest: String, size: Int) {
        bytes = []
        self.digest = digest
        self.size = size
    }

    /// `size` random bytes: AES-128-CTR keystream under a fresh random key (OpenSSL, GB/s even
    /// in a debug build; /dev/urandom gives ~260 MB/s here).
    static func random(_ size: Int) -> TestBlob {
        var g = SystemRandomNumberGenerator()
        let key = (0..<16).map { _ in UInt8.random(in: 0...255, using: &g) }
        let iv = (0..<16).map { _ in UInt8.random(in: 0...255, using: &g) }
        let ctx = EVP_CIPHER_CTX_new()
        defer { EVP_CIPHER_CTX_free(ctx) }
        precondition(EVP_EncryptInit_ex(ctx, EVP_aes_128_ctr(), nil, key, iv) == 1)
        var b = [UInt8](repeating: 0, count: size)
        b.withUnsafeMutableBytes { raw in
            let p = raw.baseAddress!.assumingMemoryBound(to: UInt8.self)
            var off = 0
            while off < size {
                let n = min(size - off, 1 << 28)
                var outl: Int32 = 0
                precondition(EVP_EncryptUpdate(ctx, p + off, &outl, p + off, Int32(n)) == 1 && Int(outl) == n)
                off += n
            }
        }
        return TestBlob(bytes: b)
    }
}

/// SHA-256 of a file's bytes (`sha256:<hex>`) and its size; nil when it cannot be read.
func sha256(ofFile path: String) -> (digest: String, size: Int)? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    let hasher = SHA256Hasher()
    var buf = [UInt8](repeating: 0, count: 1 << 20)
    var total = 0
    while true {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 { if errno == EINTR { continue }; return nil }
        if n == 0 { break }
        buf.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        total += n
    }
    return ("sha256:" + hasher.finalizeHex(), total)
}

func fileSize(_ path: String) -> Int? {
    var st = stat()
    return lstat(path, &st) == 0 ? Int(st.st_size) : nil
}

/// Regular files under `dir` (recursively) with their sizes. Entries that
/// vanish during the walk are skipped.
func filesUnder(_ dir: String) -> [(path: String, size: UInt64)] {
    var out: [(String, UInt64)] = []
    var stack = [dir]
    var visited = 0
    while let d = stack.popLast(), visited < 100_000 {
        visited += 1
        guard let h = opendir(d) else { continue }
        while let e = readdir(h) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name == "." || name == ".." { continue }
            let p = d + "/" + name
            var st = stat()
            guard lstat(p, &st) == 0 else { continue }
            if (st.st_mode & S_IFMT) == S_IFDIR { stack.append(p) } else if (st.st_mode & S_IFMT) == S_IFREG { out.append((p, UInt64(st.st_size))) }
        }
        closedir(h)
    }
    return out
}

/// Bytes of every file under the cache directory, as the budget counts them
/// (apparent sizes; directories themselves are not counted). `blobs/` is
/// walked before `tmp/`, so a fill renamed from `tmp/` into `blobs/` during
/// the walk is missed rather than counted twice.
func cacheDiskUsage(_ root: String) -> UInt64 {
    var sum: UInt64 = 0
    for f in filesUnder(root + "/blobs") { sum += f.size }
    for f in filesUnder(root + "/tmp") { sum += f.size }
    if let h = opendir(root) {
        while let e = readdir(h) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            var st = stat()
            if lstat(root + "/" + name, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG { sum += UInt64(st.st_size) }
        }
        closedir(h)
    }
    return sum
}

/// Samples `cacheDiskUsage` on its own thread every `intervalMillis` until stopped
/// (at most `maxSamples` samples).
final class DiskSampler: @unchecked Sendable {  // `samples`, `stopped` under `lock`
    private let lock = NSLock()
    private var samples: [(at: Double, bytes: UInt64)] = []
    private var stopped = false
    private let done = DispatchSemaphore(value: 0)

    init(root: String, intervalMillis: UInt32 = 150, maxSamples: Int = 4000) {
        let start = Date()
        let thread = Thread { [self] in
            for _ in 0..<maxSamples {
                if lock.withLock({ stopped }) { break }
                let bytes = cacheDiskUsage(root)
                lock.withLock { samples.append((Date().timeIntervalSince(start), bytes)) }
                usleep(intervalMillis * 1000)
            }
            done.signal()
        }
        thread.start()
    }

    /// Stops sampling and returns every sample (seconds since start, bytes).
    func stop() -> [(at: Double, bytes: UInt64)] {
        lock.withLock { stopped = true }
        _ = done.wait(timeout: .now() + 30)
        return lock.withLock { samples }
    }
}

// MARK: - plain HTTP/1.1 (pushes to the registry, small requests)

struct HTTPResponse {
    var status: Int
    /// Lowercased names.
    var headers: [String: String]
    var body: [UInt8]
}

/// One request on a fresh connection (`Connection: close`), read to EOF; bounded by `timeout` seconds per I/O.
func httpRequest(port: UInt16, _ method: String, _ target: String, headers: [(String, String)] = [],
                 body: [UInt8] = [], timeout: Int = 60) throws -> HTTPResponse {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw Subprocess.Failure(description: "socket: errno \(errno)") }
    defer { close(fd) }
    var tv = timeval(tv_sec: timeout, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var sin = sockaddr_in()
    sin.sin_family = sa_family_t(AF_INET)
    sin.sin_port = port.bigEndian
    sin.sin_addr.s_addr = inet_addr("127.0.0.1")
    let r = withUnsafePointer(to: &sin) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard r == 0 else { throw Subprocess.Failure(description: "connect 127.0.0.1:\(port): errno \(errno)") }
    var head = "\(method) \(target) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
    for (k, v) in headers { head += "\(k): \(v)\r\n" }
    if !body.isEmpty || method == "PUT" || method == "POST" { head += "Content-Length: \(body.count)\r\n" }
    head += "\r\n"
    for part in [Array(head.utf8), body] {
        var off = 0
        while off < part.count {
            let n = part[off...].withUnsafeBytes { send(fd, $0.baseAddress, min($0.count, 1 << 20), Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw Subprocess.Failure(description: "send to 127.0.0.1:\(port): errno \(errno)") }
            off += n
        }
    }
    var data: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = recv(fd, &buf, buf.count, 0)
        if n < 0 && errno == EINTR { continue }
        if n < 0 { throw Subprocess.Failure(description: "recv from 127.0.0.1:\(port): errno \(errno)") }
        if n == 0 { break }
        data.append(contentsOf: buf[0..<n])
    }
    guard let end = data.firstRange(of: [13, 10, 13, 10]) else { throw Subprocess.Failure(description: "no response head from \(port)") }
    var lines = String(decoding: data[..<end.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
    let statusLine = lines.removeFirst().split(separator: " ")
    guard statusLine.count >= 2, let status = Int(statusLine[1]) else { throw Subprocess.Failure(description: "bad status line") }
    var h: [String: String] = [:]
    for l in lines {
        let kv = l.split(separator: ":", maxSplits: 1)
        if kv.count == 2 { h[kv[0].lowercased()] = kv[1].trimmingCharacters(in: .whitespaces) }
    }
    var bodyOut = Array(data[end.upperBound...])
    if let n = h["content-length"].flatMap(Int.init), n <= bodyOut.count { bodyOut = Array(bodyOut[0..<n]) }
    return HTTPResponse(status: status, headers: h, body: bodyOut)
}

// MARK: - the upstream

/// Debian's `docker-registry` (Distribution 2.8) on a loopback port, filesystem
/// storage in `directory`, access log on its stdout.
final class Registry {
    let port: UInt16
    let child: Subprocess

    init(directory: String) throws {
        port = freeLoopbackPort()
        let config = """
            version: 0.1
            log: {level: error, accesslog: {disabled: false}}
            storage: {filesystem: {rootdirectory: \(directory)/data}}
            http: {addr: 127.0.0.1:\(port)}

            """
        try config.write(toFile: directory + "/config.yml", atomically: true, encoding: .utf8)
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/docker-registry") else {
            throw XCTSkip("docker-registry is not installed (scripts/test installs it)")
        }
        child = try Subprocess(["docker-registry", "serve", directory + "/config.yml"], in: directory, environment: cleanEnvironment())
        let port = self.port
        guard waitUntil(15, { (try? httpRequest(port: port, "GET", "/v2/", timeout: 2))?.status == 200 || !child.process.isRunning }),
              child.process.isRunning else {
            child.killHard()
            throw Subprocess.Failure(description: "docker-registry did not start: \(child.stderr)\(child.stdout)")
        }
    }

    func stop() { child.terminate(grace: 10) }

    /// Pushes `blob` into `repository` (POST an upload, then PUT it whole with its digest).
    func push(_ blob: TestBlob, to repository: String) throws {
        let start = try httpRequest(port: port, "POST", "/v2/\(repository)/blobs/uploads/")
        guard start.status == 202, var location = start.headers["location"] else {
            throw Subprocess.Failure(description: "upload start: \(start.status) \(String(decoding: start.body, as: UTF8.self))")
        }
        if location.hasPrefix("http://") || location.hasPrefix("https://") {
            let afterScheme = location.split(separator: "/", maxSplits: 3, omittingEmptySubsequences: false)  // "http:", "", "host:port", "rest"
            location = "/" + (afterScheme.count > 3 ? afterScheme[3] : "")
        }
        let target = location + (location.contains("?") ? "&" : "?") + "digest=\(blob.digest)"
        let put = try httpRequest(port: port, "PUT", target, headers: [("Content-Type", "application/octet-stream")], body: blob.bytes)
        guard put.status == 201 else {
            throw Subprocess.Failure(description: "upload \(blob.digest): \(put.status) \(String(decoding: put.body, as: UTF8.self))")
        }
    }

    /// Pushes a Docker schema2 image: its layers, a config, and the manifest under `tag`.
    /// Returns the manifest's digest.
    @discardableResult
    func pushImage(_ repository: String, tag: String, layers: [TestBlob]) throws -> String {
        for l in layers { try push(l, to: repository) }
        let config = TestBlob(bytes: Array("""
            {"architecture":"amd64","os":"linux","config":{"Labels":{"image":"\(repository):\(tag)"}},"rootfs":{"type":"layers","diff_ids":[\(layers.map { "\"\($0.digest)\"" }.joined(separator: ","))]}}
            """.utf8))
        try push(config, to: repository)
        let layerJSON = layers.map {
            "{\"mediaType\":\"application/vnd.docker.image.rootfs.diff.tar.gzip\",\"size\":\($0.size),\"digest\":\"\($0.digest)\"}"
        }.joined(separator: ",")
        let manifest = TestBlob(bytes: Array("""
            {"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":\(config.size),"digest":"\(config.digest)"},"layers":[\(layerJSON)]}
            """.utf8))
        let r = try httpRequest(port: port, "PUT", "/v2/\(repository)/manifests/\(tag)",
                                headers: [("Content-Type", "application/vnd.docker.distribution.manifest.v2+json")], body: manifest.bytes)
        guard r.status == 201 else {
            throw Subprocess.Failure(description: "manifest \(repository):\(tag): \(r.status) \(String(decoding: r.body, as: UTF8.self))")
        }
        return manifest.digest
    }

    /// Access-log lines for `GET` of that blob (the upstream fetches Berth made).
    func blobGETs(_ repository: String, _ digest: String) -> Int {
        (child.stdout + child.stderr).components(separatedBy: "\n").filter { $0.contains("\"GET /v2/\(repository)/blobs/\(digest)") }.count
    }
}

// MARK: - Berth

/// `berth serve` as a child process on a fresh loopback port; stopped or killed by its PID.
final class BerthProcess {
    let child: Subprocess
    let port: UInt16
    let cacheDir: String

    init(directory: String, upstreamPort: UInt16, cacheDir: String, maxSize: String?, environment: [String: String] = [:],
         arguments: [String] = []) throws {
        guard let binary = locateBerthBinary() else { throw Subprocess.Failure(description: "berth binary not found; run swift build") }
        port = freeLoopbackPort()
        self.cacheDir = cacheDir
        var args = [binary, "serve", "--listen", "127.0.0.1:\(port)", "--workers", "2", "--log-level", "debug",
                    "--upstream", "http://127.0.0.1:\(upstreamPort)", "--cache-dir", cacheDir]
        if let maxSize { args += ["--cache-max-size", maxSize] }
        args += arguments
        child = try Subprocess(args, in: directory, environment: cleanEnvironment(environment))
        let port = self.port
        guard waitUntil(20, { (try? httpRequest(port: port, "GET", "/v2/", timeout: 2))?.status == 200 || !child.process.isRunning }),
              child.process.isRunning else {
            child.killHard()
            throw Subprocess.Failure(description: "berth did not start: \(child.stderr)")
        }
    }

    var log: String { child.stderr }

    func waitForLog(_ text: String, seconds: Double = 10) -> Bool {
        waitUntil(seconds, everyMillis: 50) { log.contains(text) }
    }

    /// SIGTERM: a clean stop (the index is snapshotted).
    func stop() { child.terminate(grace: 10) }

    /// SIGKILL: a crash.
    func crash() { child.killHard() }

    func blobURL(_ repository: String, _ digest: String) -> String {
        "http://127.0.0.1:\(port)/v2/\(repository)/blobs/\(digest)"
    }

    /// Where the cache keeps a verified blob.
    func blobPath(_ digest: String) -> String {
        let hex = digest.dropFirst(7)
        return "\(cacheDir)/blobs/sha256/\(hex.prefix(2))/\(hex)"
    }

    func isCached(_ digest: String) -> Bool { fileSize(blobPath(digest)) != nil }

    /// `.partial` files in `<cache>/tmp`.
    var partialFiles: [String] {
        filesUnder(cacheDir + "/tmp").map(\.path).filter { $0.hasSuffix(".partial") }
    }
}

/// The result of `curl` fetching a URL into a file.
struct CurlResult {
    var exitCode: Int32
    var status: Int
    var headers: String
    var path: String

    /// The `Cache-Status` header Berth sent.
    var cacheStatus: String {
        headers.components(separatedBy: "\r\n").first { $0.lowercased().hasPrefix("cache-status:") } ?? ""
    }
}

/// `curl` GET of `url` into `path`, bounded by `timeout` seconds.
@discardableResult
func curl(_ url: String, to path: String, in directory: String, timeout: Double = 60) throws -> CurlResult {
    let headers = path + ".headers"
    let r = try Subprocess.run(["curl", "-sS", "-o", path, "-D", headers, "-w", "%{http_code}", "--max-time", "\(Int(timeout))", url],
                               in: directory, timeout: timeout + 10, check: false)
    defer { try? FileManager.default.removeItem(atPath: headers) }
    return CurlResult(exitCode: r.status, status: Int(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0,
                      headers: (try? String(contentsOfFile: headers, encoding: .utf8)) ?? "", path: path)
}

// MARK: - a throttled relay

/// A TCP relay on a loopback port to `targetPort`, sending the target's bytes
/// back at most `bytesPerSecond` per connection (0: unthrottled). Lets a test
/// catch a fill in the middle. Threads block on sockets; `stop` unblocks them.
final class ThrottledRelay: @unchecked Sendable {  // mutable state under `lock`
    let port: UInt16
    private let targetPort: UInt16
    private let listenFD: Int32
    private let lock = NSLock()
    private var rate: Int
    private var sockets: Set<Int32> = []
    private var stopped = false
    private let threads = DispatchGroup()

    var bytesPerSecond: Int {
        get { lock.withLock { rate } }
        set { lock.withLock { rate = newValue } }
    }

    init(targetPort: UInt16, bytesPerSecond: Int) throws {
        self.targetPort = targetPort
        rate = bytesPerSecond
        listenFD = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(listenFD, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let fd = listenFD
        let ok = withUnsafeMutablePointer(to: &sin) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && listen(fd, 64) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard ok else { close(listenFD); throw Subprocess.Failure(description: "relay bind: errno \(errno)") }
        port = UInt16(bigEndian: sin.sin_port)
        spawn { [self] in acceptLoop() }
    }

    private func spawn(_ body: @escaping () -> Void) {
        threads.enter()
        Thread { [threads] in
            body()
            threads.leave()
        }.start()
    }

    private func acceptLoop() {
        for _ in 0..<10_000 {
            let c = accept(listenFD, nil, nil)
            if c < 0 {
                if errno == EINTR && !lock.withLock({ stopped }) { continue }
                return
            }
            guard let u = connectTarget() else { close(c); continue }
            let keep = lock.withLock { () -> Bool in
                if stopped { return false }
                sockets.insert(c)
                sockets.insert(u)
                return true
            }
            guard keep else { close(c); close(u); continue }
            let pair = DispatchGroup()
            pair.enter(); pair.enter()
            spawn { [self] in pump(from: c, to: u, throttled: false); pair.leave() }
            spawn { [self] in pump(from: u, to: c, throttled: true); pair.leave() }
            spawn { [self] in
                _ = pair.wait(timeout: .now() + 600)
                lock.withLock { sockets.remove(c); sockets.remove(u) }
                close(c)
                close(u)
            }
        }
    }

    private func connectTarget() -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = targetPort.bigEndian
        sin.sin_addr.s_addr = inet_addr("127.0.0.1")
        let r = withUnsafePointer(to: &sin) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if r != 0 { close(fd); return nil }
        return fd
    }

    private func pump(from: Int32, to: Int32, throttled: Bool) {
        var buf = [UInt8](repeating: 0, count: 32 << 10)
        let start = Date()
        var total = 0
        outer: while true {
            let n = recv(from, &buf, buf.count, 0)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            var off = 0
            while off < n {
                let w = buf[off..<n].withUnsafeBytes { send(to, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if w < 0 && errno == EINTR { continue }
                if w <= 0 { break outer }
                off += w
            }
            total += n
            let r = bytesPerSecond
            if throttled && r > 0 {
                let due = Double(total) / Double(r) - Date().timeIntervalSince(start)
                if due > 0 { usleep(UInt32(min(due, 1) * 1_000_000)) }
            }
        }
        shutdown(to, Int32(SHUT_WR))
        shutdown(from, Int32(SHUT_RD))
    }

    /// Closes the listener and every relayed connection; waits (bounded) for the threads.
    func stop() {
        let open = lock.withLock { () -> Set<Int32> in
            stopped = true
            return sockets
        }
        shutdown(listenFD, Int32(SHUT_RDWR))
        close(listenFD)
        for fd in open { shutdown(fd, Int32(SHUT_RDWR)) }
        _ = threads.wait(timeout: .now() + 10)
    }
}

// MARK: - a small filesystem

/// A 24 MiB (or `megabytes`) filesystem mounted at `path`: tmpfs, else a loop-mounted ext4 image.
/// Throws XCTSkip when neither can be mounted here (mount needs root).
final class SmallFilesystem {
    let path: String
    private let image: String?

    init(at path: String, megabytes: Int, work: String) throws {
        self.path = path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        if (try? Subprocess.run(["mount", "-t", "tmpfs", "-o", "size=\(megabytes)m", "tmpfs", path], in: work, timeout: 20)) != nil {
            image = nil
            return
        }
        let img = work + "/small-fs.img"
        do {
            try Subprocess.run(["truncate", "-s", "\(megabytes)M", img], in: work)
            try Subprocess.run(["mkfs.ext4", "-q", "-F", img], in: work, timeout: 30)
            try Subprocess.run(["mount", "-o", "loop", img, path], in: work, timeout: 20)
        } catch {
            throw XCTSkip("cannot mount a small filesystem here (tmpfs and loop-mounted ext4 both refused: \(error)); the ENOSPC test needs root")
        }
        image = img
    }

    /// Unmounts (lazily if busy). Bounded.
    func unmount(work: String) {
        for _ in 0..<10 {
            if (try? Subprocess.run(["umount", path], in: work, timeout: 20)) != nil { return }
            usleep(200_000)
        }
        _ = try? Subprocess.run(["umount", "-l", path], in: work, timeout: 20)
    }
}
