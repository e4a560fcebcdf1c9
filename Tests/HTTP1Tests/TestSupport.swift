import Foundation
import XCTest
import Reactor
import HTTP1
import TestSupport

/// A blocking loopback socket for driving servers byte by byte in tests.
final class RawClient {
    let fd: Int32

    /// Connects to 127.0.0.1:`port`, from `source` (another loopback address
    /// such as 127.0.0.2, to look like another client) when given.
    init(port: UInt16, source: String? = nil, timeoutSeconds: Int = 10) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        if let source {
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            local.sin_addr.s_addr = inet_addr(source)
            let b = withUnsafePointer(to: &local) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            if b != 0 { close(fd); throw IOError(errno: errno, call: "bind \(source)") }
        }
        var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        sin.sin_addr.s_addr = inet_addr("127.0.0.1")
        let r = withUnsafePointer(to: &sin) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if r != 0 { close(fd); throw IOError(errno: errno, call: "connect") }
    }

    deinit { close(fd) }

    func send(_ s: String) { send(Array(s.utf8)) }

    func send(_ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            off += n
        }
    }

    /// Reads until the peer closes (or the timeout).
    func readToClose() -> [UInt8] {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &buf, buf.count, 0)
            if n <= 0 { break }
            out.append(contentsOf: buf[0..<n])
        }
        return out
    }

    /// Reads until the peer closes; `closed` is false when the receive timeout
    /// ran out first (the peer kept the connection open). A reset counts as closed.
    func readUntilClosed() -> (bytes: [UInt8], closed: Bool) {
        var out = buffered
        buffered = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &buf, buf.count, 0)
            if n > 0 { out.append(contentsOf: buf[0..<n]); continue }
            if n == 0 { return (out, true) }
            if errno == EINTR { continue }
            return (out, errno != EAGAIN && errno != EWOULDBLOCK)
        }
    }

    private var buffered: [UInt8] = []

    /// Reads one response: head, then a Content-Length or chunked body (none for HEAD).
    func readResponse(head: Bool = false) -> (status: Int, headers: [String: String], body: [UInt8])? {
        guard let headEnd = fill(until: { b in b.firstRange(of: [13, 10, 13, 10]).map { $0.upperBound } }) else { return nil }
        let text = String(decoding: buffered[0..<headEnd], as: UTF8.self)
        buffered.removeFirst(headEnd)
        var lines = text.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst()
        let parts = statusLine.split(separator: " ")
        guard parts.count >= 2, let status = Int(parts[1]) else { return nil }
        var headers: [String: String] = [:]
        for l in lines where !l.isEmpty {
            let kv = l.split(separator: ":", maxSplits: 1)
            headers[kv[0].lowercased()] = kv.count > 1 ? kv[1].trimmingCharacters(in: .whitespaces) : ""
        }
        if head { return (status, headers, []) }
        if let cl = headers["content-length"].flatMap(Int.init) {
            guard fill(until: { $0.count >= cl ? cl : nil }) != nil else { return (status, headers, buffered) }
            let body = Array(buffered[0..<cl])
            buffered.removeFirst(cl)
            return (status, headers, body)
        }
        if headers["transfer-encoding"] == "chunked" {
            var body: [UInt8] = []
            while true {
                guard let lineEnd = fill(until: { b in b.firstRange(of: [13, 10]).map { $0.upperBound } }) else { return nil }
                let size = Int(String(decoding: buffered[0..<(lineEnd - 2)], as: UTF8.self), radix: 16) ?? -1
                buffered.removeFirst(lineEnd)
                if size <= 0 {
                    _ = fill(until: { $0.count >= 2 ? 2 : nil })
                    buffered.removeFirst(min(2, buffered.count))
                    return (status, headers, body)
                }
                guard fill(until: { $0.count >= size + 2 ? size + 2 : nil }) != nil else { return nil }
                body.append(contentsOf: buffered[0..<size])
                buffered.removeFirst(size + 2)
            }
        }
        return (status, headers, [])
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

/// Runs an HTTPServer on loopback with a test handler.
final class TestServer {
    let group: EventLoopGroup
    let pool = BlockingPool(threads: 2)
    let server: HTTPServer
    let port: UInt16

    init(loops: Int = 1, configure: (inout HTTPServer.Configuration) -> Void = { _ in },
         logger: @escaping (HTTPServer.LogLevel, String) -> Void = { _, _ in },
         handler: @escaping (ResponseWriter) -> Void) throws {
        group = try EventLoopGroup(count: loops)
        var c = HTTPServer.Configuration()
        c.plain = [SocketAddress("127.0.0.1:0")!]
        configure(&c)
        server = HTTPServer(configuration: c, group: group, pool: pool, logger: logger, handler: handler)
        try server.start()
        group.start()
        var p: UInt16 = 0
        for _ in 0..<200 {
            if let a = server.boundAddresses().first { p = a.port; break }
            usleep(5000)
        }
        port = p
    }

    func stop() {
        group.shutdown()
        pool.shutdown()
    }
}

func makeTempDir() -> String {
    let dir = NSTemporaryDirectory() + "berth-test-" + UUID().uuidString
    try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

