import Foundation
import XCTest
import Reactor
import TLS
@testable import HTTP1
import TestSupport

/// True when something accepts TCP connections on 127.0.0.1:`port`.
func isListening(_ port: UInt16) -> Bool {
    guard let c = try? RawClient(port: port, timeoutSeconds: 1) else { return false }
    _ = c
    return true
}

/// Debian's nginx as a real peer, with its own prefix, config, pid file and
/// logs in a temporary directory, in the foreground (`daemon off`) so the
/// test owns the master's PID and stops it by that PID.
final class NginxPeer {
    let directory: String
    let ports: [UInt16]
    private var child: Subprocess?

    /// `servers` gets the ports (one per entry in `portCount`) and returns the
    /// `server { … }` blocks; `http` is extra text for the http block.
    init(portCount: Int, http: String = "", servers: ([UInt16], String) -> String) throws {
        directory = TestPKI.makeTemporaryDirectory("berth-nginx")
        chmod(directory, 0o755)  // workers (nobody unless `user root`) read files under it
        ports = (0..<portCount).map { _ in freeLoopbackPort() }
        let d = directory
        try FileManager.default.createDirectory(atPath: d + "/www", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: d + "/tmp", withIntermediateDirectories: true)
        let conf = nginxMainConfig(directory: d, http: """
            default_type application/octet-stream;
            gzip off;
            root \(d)/www;
            sendfile on;
            \(http)
            \(servers(ports, d))
            """)
        try conf.write(toFile: d + "/nginx.conf", atomically: true, encoding: .utf8)
    }

    var wwwPath: String { directory + "/www" }

    /// Starts nginx and waits (bounded) until every port accepts connections.
    func start() throws {
        let child = try Subprocess(["/usr/sbin/nginx", "-p", directory + "/", "-e", directory + "/error.log",
                                    "-c", directory + "/nginx.conf"], in: directory)
        self.child = child
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if !child.process.isRunning { break }
            if ports.allSatisfy(isListening) { return }
            usleep(20_000)
        }
        let log = (try? String(contentsOfFile: directory + "/error.log", encoding: .utf8)) ?? ""
        throw Subprocess.Failure(description: "nginx did not start: \(child.stderr) \(log)")
    }

    /// Stops this nginx by its PID (SIGTERM, then SIGKILL if it lingers) and removes the directory.
    func stop() {
        child?.terminate()
        child = nil
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// An event loop on its own thread with an HTTPClient, for tests that drive
/// the client from the test thread.
final class ClientHarness {
    let loop: EventLoop
    let pool = BlockingPool(threads: 1)
    let client: HTTPClient
    private var thread: OSThread?

    init(tls: TLSContext? = nil, proxy: HTTPURL? = nil) throws {
        loop = try EventLoop()
        client = HTTPClient(loop: loop, pool: pool, tls: tls, proxy: proxy)
        let l = loop
        thread = OSThread(name: "client-loop") { l.run() }
    }

    func stop() {
        loop.stop()
        thread?.join()
        thread = nil
        pool.shutdown()
    }

    /// Runs `body` on the loop and waits (bounded) for it to return a value.
    func onLoop<T>(_ body: @escaping () -> T) -> T? {
        let done = DispatchSemaphore(value: 0)
        var value: T?
        loop.execute {
            value = body()
            done.signal()
        }
        guard done.wait(timeout: .now() + 10) == .success else { return nil }
        return value
    }

    /// Executes `request` with `delegate` and waits up to `seconds` for it to finish.
    @discardableResult
    func run(_ request: ClientRequest, _ delegate: RecordingDelegate = RecordingDelegate(), seconds: Double = 20) -> RecordingDelegate {
        delegate.loop = loop
        let c = client
        loop.execute { c.execute(request, delegate: delegate) }
        if delegate.done.wait(timeout: .now() + seconds) != .success { delegate.timedOutWaiting = true }
        return delegate
    }

    /// A GET for `url` with optional headers.
    func get(_ url: String, headers: HTTPHeaders = HTTPHeaders(), method: HTTPMethod = .get) -> RecordingDelegate {
        var r = ClientRequest(method: method, url: HTTPURL(url)!, headers: headers)
        r.maxRedirects = 5
        return run(r)
    }
}

/// Records everything a response delivers. Optionally pauses every
/// `pauseEvery` bytes and resumes `resumeAfterNanos` later on the loop,
/// checking that no byte arrives while paused. Keeps the body only when
/// `keepsBody`; always keeps a running FNV-1a checksum and count.
final class RecordingDelegate: ClientResponseDelegate {
    var loop: EventLoop!
    var head: ResponseHead?
    var url: HTTPURL?
    var body: [UInt8] = []
    var error: HTTPClientError?
    var finishCount = 0
    var timedOutWaiting = false
    let done = DispatchSemaphore(value: 0)

    var keepsBody = true
    var checksum: UInt64 = 0xcbf2_9ce4_8422_2325
    var byteCount = 0
    var pauseEvery: Int?
    var resumeAfterNanos: UInt64 = 1_000_000
    var pauses = 0
    var callsWhilePaused = 0
    var finishedWhilePaused = false
    private var isPaused = false
    private var sincePause = 0

    var text: String { String(decoding: body, as: UTF8.self) }
    var status: Int? { head?.status }

    func didReceiveHead(_ head: ResponseHead, url: HTTPURL, task: ClientTask) {
        self.head = head
        self.url = url
    }

    func didReceiveBody(_ bytes: UnsafeRawBufferPointer, task: ClientTask) -> Bool {
        if isPaused { callsWhilePaused += 1 }
        var h = checksum
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        checksum = h
        byteCount += bytes.count
        if keepsBody { body.append(contentsOf: bytes) }
        guard let every = pauseEvery else { return true }
        sincePause += bytes.count
        guard sincePause >= every else { return true }
        // Carry the overshoot: the pause count is then total / every whatever sizes the reads have.
        sincePause -= every
        pauses += 1
        isPaused = true
        loop.schedule(afterNanos: resumeAfterNanos) { [self] in
            isPaused = false
            task.resume()
        }
        return false
    }

    func didFinish(_ error: HTTPClientError?, task: ClientTask) {
        if isPaused { finishedWhilePaused = true }
        self.error = error
        finishCount += 1
        done.signal()
    }
}

/// FNV-1a over a whole byte array, the same function `RecordingDelegate` runs.
func fnv1a(_ bytes: [UInt8]) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
    return h
}

/// A loopback listener run by the test itself for faults no real server makes
/// on purpose: silence after accept, a stalled body, a close on the second
/// request. Each accepted connection is handed to `serve` on its own thread.
/// Handlers may `shutdown` their socket but never close it: `stop` closes
/// every accepted socket once the handlers have returned.
final class FaultServer {
    let fd: Int32
    let port: UInt16
    private let lock = NSLock()
    private var accepted: [Int32] = []
    private var active = 0
    private var isStopped = false

    init(serve: @escaping (_ fd: Int32, _ index: Int) -> Void) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let listenFD = fd
        let ok = withUnsafeMutablePointer(to: &sin) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listenFD, $0, len) == 0 && listen(listenFD, 16) == 0 && getsockname(listenFD, $0, &len) == 0
            }
        }
        guard ok else { close(fd); throw IOError(errno: errno, call: "bind/listen") }
        port = UInt16(bigEndian: sin.sin_port)
        let t = Thread { [self] in
            var index = 0
            while true {
                let c = accept(listenFD, nil, nil)
                if c < 0 { return }  // the listener was shut down
                lock.lock()
                if isStopped { lock.unlock(); close(c); return }
                accepted.append(c)
                active += 1
                lock.unlock()
                let i = index
                index += 1
                Thread { [self] in
                    serve(c, i)
                    lock.lock()
                    active -= 1
                    lock.unlock()
                }.start()
            }
        }
        t.start()
    }

    /// Number of connections accepted so far.
    var acceptedCount: Int {
        lock.lock(); defer { lock.unlock() }
        return accepted.count
    }

    /// Stops accepting, shuts every accepted socket down (which wakes the
    /// handlers), waits (bounded) for the handlers, then closes the sockets.
    func stop() {
        lock.lock()
        isStopped = true
        let fds = accepted
        lock.unlock()
        shutdown(fd, Int32(SHUT_RDWR))
        for c in fds { shutdown(c, Int32(SHUT_RDWR)) }
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline {
            lock.lock()
            let n = active
            lock.unlock()
            if n == 0 { break }
            usleep(10_000)
        }
        for c in fds { close(c) }
        close(fd)
    }
}

/// Blocking helpers for FaultServer handlers.
enum Wire {
    static func send(_ fd: Int32, _ s: String) {
        let bytes = Array(s.utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            off += n
        }
    }

    /// Reads until a request head's blank line (or EOF/error); returns what was read.
    static func readHead(_ fd: Int32) -> String? {
        var got: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while got.firstRange(of: [13, 10, 13, 10]) == nil {
            let n = recv(fd, &buf, buf.count, 0)
            if n <= 0 { return nil }
            got.append(contentsOf: buf[0..<n])
        }
        return String(decoding: got, as: UTF8.self)
    }

    /// Blocks until the peer closes or the socket is shut down.
    static func waitForClose(_ fd: Int32) {
        var buf = [UInt8](repeating: 0, count: 4096)
        while recv(fd, &buf, buf.count, 0) > 0 {}
    }
}
