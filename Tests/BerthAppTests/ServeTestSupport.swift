import Foundation
import XCTest
import Reactor
import TLS
import HTTP1
import TestSupport

/// True when something accepts TCP connections on 127.0.0.1:`port`.
func isListening(_ port: UInt16) -> Bool {
    (try? RawClient(port: port, timeoutSeconds: 1)) != nil
}

/// Connections on local port `port` the server has not closed yet
/// (ESTABLISHED or CLOSE_WAIT in /proc/net/tcp).
func openServerSockets(port: UInt16) -> Int {
    guard let table = try? String(contentsOfFile: "/proc/net/tcp", encoding: .utf8) else { return 0 }
    let local = String(format: ":%04X", port)
    return table.split(separator: "\n").dropFirst().filter { line in
        let f = line.split(separator: " ")
        return f.count > 3 && f[1].hasSuffix(local) && (f[3] == "01" || f[3] == "08")
    }.count
}

/// `berth serve` as a child process, stopped by its PID.
final class BerthProcess {
    let child: Subprocess
    let port: UInt16
    let tlsPort: UInt16?

    /// Starts `berth serve` on 127.0.0.1 (a fresh port, and one for TLS when
    /// `tls` gives certificate and key paths) and waits until it listens.
    /// `logLevel` nil: no `--log-level` flag (the file's `log.level` holds, reloads included).
    init(directory: String, tls: (certificate: String, key: String)? = nil, extra: [String] = [], logLevel: String? = "debug") throws {
        guard let binary = locateBerthBinary() else { throw Subprocess.Failure(description: "berth binary not found; run swift build") }
        port = freeLoopbackPort()
        var args = [binary, "serve", "--listen", "127.0.0.1:\(port)", "--workers", "2"] + (logLevel.map { ["--log-level", $0] } ?? [])
        if let tls {
            let p = freeLoopbackPort()
            tlsPort = p
            args += ["--tls-listen", "127.0.0.1:\(p)", "--tls-certificate", tls.certificate, "--tls-key", tls.key]
        } else {
            tlsPort = nil
        }
        child = try Subprocess(args + extra, in: directory, environment: cleanEnvironment())
        let ports = [port] + (tlsPort.map { [$0] } ?? [])
        let up = waitUntil(15) { !child.process.isRunning || ports.allSatisfy(isListening) }
        guard up, child.process.isRunning else {
            child.terminate()
            throw Subprocess.Failure(description: "berth did not start: \(child.stderr)")
        }
    }

    var pid: Int32 { child.pid }

    func signal(_ signo: Int32) { kill(child.pid, signo) }

    /// Polls stderr (the log) for `text`, bounded.
    func waitForLog(_ text: String, seconds: Double = 10) -> Bool {
        waitUntil(seconds) { child.stderr.contains(text) }
    }

    func stop() { child.terminate() }
}

/// The inherited environment without any `BERTH_*` variable, so the file and
/// flags a test gives are what the child runs with.
func cleanEnvironment(_ extra: [String: String] = [:]) -> [String: String] {
    var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("BERTH_") }
    for (k, v) in extra { env[k] = v }
    return env
}

/// A blocking loopback socket (a trimmed copy of HTTP1Tests' RawClient).
final class RawClient {
    let fd: Int32
    private var buffered: [UInt8] = []

    init(port: UInt16, timeoutSeconds: Int = 10) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        sin.sin_addr.s_addr = inet_addr("127.0.0.1")
        let r = withUnsafePointer(to: &sin) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if r != 0 { let e = errno; close(fd); throw IOError(errno: e, call: "connect") }
    }

    deinit { close(fd) }

    func send(_ s: String) {
        let bytes = Array(s.utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            off += n
        }
    }

    /// Reads one Content-Length framed response (every Berth answer is); headers lowercased.
    func readResponse(head: Bool = false) -> (status: Int, headers: [String: String], body: [UInt8])? {
        guard let headEnd = fill(until: { b in b.firstRange(of: [13, 10, 13, 10]).map { $0.upperBound } }) else { return nil }
        let text = String(decoding: buffered[0..<headEnd], as: UTF8.self)
        buffered.removeFirst(headEnd)
        var lines = text.components(separatedBy: "\r\n")
        let parts = lines.removeFirst().split(separator: " ")
        guard parts.count >= 2, let status = Int(parts[1]) else { return nil }
        var headers: [String: String] = [:]
        for l in lines where !l.isEmpty {
            let kv = l.split(separator: ":", maxSplits: 1)
            headers[kv[0].lowercased()] = kv.count > 1 ? kv[1].trimmingCharacters(in: .whitespaces) : ""
        }
        let length = head ? 0 : (headers["content-length"].flatMap(Int.init) ?? 0)
        guard fill(until: { $0.count >= length ? length : nil }) != nil else { return nil }
        let body = Array(buffered[0..<length])
        buffered.removeFirst(length)
        return (status, headers, body)
    }

    /// True when the peer has closed (EOF) within the socket timeout.
    func readsEOF() -> Bool {
        var b: UInt8 = 0
        return buffered.isEmpty && recv(fd, &b, 1, 0) == 0
    }

    private func fill(until found: ([UInt8]) -> Int?) -> Int? {
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            if let i = found(buffered) { return i }
            let n = recv(fd, &buf, buf.count, 0)
            if n <= 0 { return nil }
            buffered.append(contentsOf: buf[0..<n])
        }
    }
}

/// An event loop thread with an HTTPClient, driven from the test thread.
final class ClientHarness {
    let loop: EventLoop
    let pool = BlockingPool(threads: 1)
    let client: HTTPClient
    private var thread: OSThread?

    init(tls: TLSContext?) throws {
        loop = try EventLoop()
        client = HTTPClient(loop: loop, pool: pool, tls: tls)
        let l = loop
        thread = OSThread(name: "client-loop") { l.run() }
    }

    func stop() {
        loop.stop()
        thread?.join()
        thread = nil
        pool.shutdown()
    }

    /// GETs `url` into memory; nil when it did not finish within `seconds`.
    func get(_ url: String, seconds: Double = 15) -> Result<(ResponseHead, [UInt8]), HTTPClientError>? {
        let done = DispatchSemaphore(value: 0)
        var result: Result<(ResponseHead, [UInt8]), HTTPClientError>?
        let c = client
        let request = ClientRequest(url: HTTPURL(url)!)
        loop.execute {
            c.fetch(request, maxBytes: 1 << 20) { r in
                result = r
                done.signal()
            }
        }
        guard done.wait(timeout: .now() + seconds) == .success else { return nil }
        return result
    }

    var idleConnectionCount: Int? {
        let done = DispatchSemaphore(value: 0)
        var n = 0
        let c = client
        loop.execute { n = c.idleConnectionCount; done.signal() }
        return done.wait(timeout: .now() + 5) == .success ? n : nil
    }
}
