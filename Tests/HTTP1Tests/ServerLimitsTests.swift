import Foundation
import XCTest
import Synchronization
import Reactor
import TLS
import HTTP1
import TestSupport

/// The limits that hold under hostile load, over real loopback sockets: the
/// absolute request-head deadline, the idle keep-alive timeout, the global and
/// per-client connection caps. Deadlines are configured short; every test
/// waits for the server's close (or answer), never for a fixed time.
final class ServerLimitsTests: XCTestCase {
    private func makeServer(loops: Int = 1, _ configure: @escaping (inout HTTPServer.Configuration) -> Void,
                            log: LogSink? = nil) throws -> TestServer {
        try TestServer(loops: loops, configure: configure, logger: { level, line in log?.append(level, line) }) { w in
            switch w.request.target {
            case "/slow":
                // Longer than the short idle and head bounds these tests configure.
                w.loop.schedule(afterNanos: 700_000_000) { w.respond(ResponseHead(status: 200), body: Array("slow".utf8)) }
            default:
                w.respond(ResponseHead(status: 200), body: Array("ok".utf8))
            }
        }
    }

    private func get(_ c: RawClient, _ path: String = "/") -> Int? {
        c.send("GET \(path) HTTP/1.1\r\nHost: x\r\n\r\n")
        return c.readResponse()?.status
    }

    // MARK: request-head deadline

    func testSlowlorisHeadIsAnswered408AtTheDeadlineThoughBytesKeepComing() throws {
        let server = try makeServer { $0.headTimeoutNanos = 300_000_000 }
        defer { server.stop() }
        let c = try RawClient(port: server.port)
        c.send("GET / HTTP/1.1\r\nHost: x\r\n")
        // A header byte every 20 ms, each well inside any per-read timeout; bounded (4 s).
        let done = Flag()
        let dribbler = Thread {
            for _ in 0..<200 where !done.isSet {
                var b: UInt8 = 0x58  // "X"
                if send(c.fd, &b, 1, Int32(MSG_NOSIGNAL)) != 1 { break }
                usleep(20_000)
            }
        }
        dribbler.start()
        let (bytes, closed) = c.readUntilClosed()
        done.set()
        let text = String(decoding: bytes, as: UTF8.self)
        XCTAssertTrue(closed, "the server must close the connection")
        XCTAssertTrue(text.hasPrefix("HTTP/1.1 408 "), "expected 408, got: \(text.prefix(80))")
        XCTAssertTrue(text.lowercased().contains("connection: close"))
        XCTAssertTrue(waitUntil(5) { server.server.connectionCount == 0 })
    }

    func testNewConnectionThatSendsNothingIsClosedQuietly() throws {
        let server = try makeServer { $0.headTimeoutNanos = 300_000_000 }
        defer { server.stop() }
        let c = try RawClient(port: server.port)
        let (bytes, closed) = c.readUntilClosed()
        XCTAssertTrue(closed)
        XCTAssertEqual(bytes, [], "nothing was asked: nothing is answered")
        XCTAssertTrue(waitUntil(5) { server.server.connectionCount == 0 })
    }

    func testKeptAliveConnectionMayWaitLongerThanTheHeadDeadlineThenItsNextHeadIsBounded() throws {
        let server = try makeServer {
            $0.headTimeoutNanos = 300_000_000
            $0.idleTimeoutNanos = 30_000_000_000
        }
        defer { server.stop() }
        let c = try RawClient(port: server.port)
        XCTAssertEqual(get(c), 200)
        // Idle between requests is bounded by the idle timeout, not the head deadline.
        // A witness connection opened after `c` went idle gets its 408 only once
        // a whole head deadline has passed: by then `c` has been idle longer.
        let witness = try RawClient(port: server.port)
        witness.send("GET / HTTP/1.1\r\n")
        let (witnessBytes, witnessClosed) = witness.readUntilClosed()
        XCTAssertTrue(witnessClosed && String(decoding: witnessBytes, as: UTF8.self).hasPrefix("HTTP/1.1 408 "), "the head deadline passed")
        XCTAssertEqual(get(c), 200, "an idle keep-alive connection outlives the head deadline")
        // The next head's deadline counts from its first byte.
        c.send("GET / HTTP/1.1\r\n")
        let (bytes, closed) = c.readUntilClosed()
        XCTAssertTrue(closed)
        XCTAssertTrue(String(decoding: bytes, as: UTF8.self).hasPrefix("HTTP/1.1 408 "))
    }

    func testTLSHandshakeThatStallsIsClosedAtTheHeadDeadline() throws {
        let pki = try TestPKI()
        defer { pki.remove() }
        let tls = try ReloadableServerContext(certificateChainPath: pki.serverCertPath, privateKeyPath: pki.serverKeyPath)
        let server = try makeServer {
            $0.plain = []
            $0.secure = [SocketAddress("127.0.0.1:0")!]
            $0.tls = tls
            $0.headTimeoutNanos = 300_000_000
        }
        defer { server.stop() }
        let c = try RawClient(port: server.port)
        c.send([0x16, 0x03, 0x01, 0x02])  // the start of a ClientHello, never finished
        XCTAssertTrue(c.readUntilClosed().closed)
        XCTAssertTrue(waitUntil(5) { server.server.connectionCount == 0 })
    }

    // MARK: idle keep-alive

    func testIdleKeepAliveConnectionIsClosed() throws {
        let server = try makeServer {
            $0.idleTimeoutNanos = 300_000_000
            $0.headTimeoutNanos = 30_000_000_000
        }
        defer { server.stop() }
        let c = try RawClient(port: server.port)
        XCTAssertEqual(get(c), 200)
        let (bytes, closed) = c.readUntilClosed()
        XCTAssertTrue(closed, "idle past the keep-alive timeout: closed")
        XCTAssertEqual(bytes, [], "closed quietly")
        XCTAssertTrue(waitUntil(5) { server.server.connectionCount == 0 })
    }

    func testRequestInFlightIsNotIdle() throws {
        let server = try makeServer {
            $0.idleTimeoutNanos = 200_000_000
            $0.headTimeoutNanos = 200_000_000
        }
        defer { server.stop() }
        let c = try RawClient(port: server.port)
        // The handler answers after both bounds: it is waited for, not cut.
        c.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        let r = c.readResponse()
        XCTAssertEqual(r?.status, 200)
        XCTAssertEqual(r.map { String(decoding: $0.body, as: UTF8.self) }, "slow")
    }

    // MARK: connection caps

    func testGlobalCapClosesTheExcessAtAcceptWhileOpenClientsAreServed() throws {
        let log = LogSink()
        let server = try makeServer(loops: 2, { $0.maxConnections = 3 }, log: log)
        defer { server.stop() }
        XCTAssertEqual(server.server.limiter.maxConnections, 3)
        var open = try (0..<3).map { _ in try RawClient(port: server.port) }
        XCTAssertTrue(waitUntil(10) { server.server.connectionCount == 3 }, "open: \(server.server.connectionCount)")
        for _ in 0..<5 {
            let excess = try RawClient(port: server.port)
            let (bytes, closed) = excess.readUntilClosed()
            XCTAssertTrue(closed, "over the cap: closed at accept")
            XCTAssertEqual(bytes, [])
        }
        for c in open { XCTAssertEqual(get(c), 200, "clients inside the cap are still served") }
        XCTAssertTrue(waitUntil(5) { log.count(containing: "connection limit reached") >= 1 })
        XCTAssertEqual(log.count(containing: "connection limit reached"), 1, "one line per burst, not per connection")
        XCTAssertEqual(log.lines(at: .warning).count, 1, "\(log.lines(at: .warning))")

        open.removeFirst()  // closes it
        XCTAssertTrue(waitUntil(10) { server.server.connectionCount == 2 })
        let next = try RawClient(port: server.port)
        XCTAssertEqual(get(next), 200, "room again after a close")
    }

    func testPerClientCapClosesThatClientsExcessOnly() throws {
        let server = try makeServer(loops: 2) { $0.maxConnectionsPerClient = 2 }
        defer { server.stop() }
        let greedy = try (0..<2).map { _ in try RawClient(port: server.port, source: "127.0.0.2") }
        XCTAssertTrue(waitUntil(10) { server.server.connectionCount == 2 })
        let excess = try RawClient(port: server.port, source: "127.0.0.2")
        let (bytes, closed) = excess.readUntilClosed()
        XCTAssertTrue(closed, "the client's third connection is closed at accept")
        XCTAssertEqual(bytes, [])
        let other = try RawClient(port: server.port, source: "127.0.0.3")
        XCTAssertEqual(get(other), 200, "another client is served")
        for c in greedy { XCTAssertEqual(get(c), 200, "the client's first connections still work") }
        XCTAssertEqual(server.server.limiter.clientCount, 2)
    }

    func testDefaultCapLeavesDescriptorsForUpstreamsAndFiles() {
        XCTAssertEqual(HTTPServer.connectionCeiling(openFileLimit: 20_000, headroom: 1024), 18_976)
        XCTAssertEqual(HTTPServer.connectionCeiling(openFileLimit: 1024, headroom: 1024), 512)
        var c = HTTPServer.Configuration()
        c.maxConnections = 1_000_000
        let group = try! EventLoopGroup(count: 1)
        let pool = BlockingPool(threads: 1)
        defer { pool.shutdown() }
        let s = HTTPServer(configuration: c, group: group, pool: pool) { _ in }
        XCTAssertEqual(s.limiter.maxConnections,
                       HTTPServer.connectionCeiling(openFileLimit: System.openFileLimit, headroom: c.descriptorHeadroom),
                       "a configured cap above the descriptor limit is lowered to it")
    }
}

/// Log lines a test server wrote, from any loop.
final class LogSink: Sendable {
    private let entries = Mutex<[(HTTPServer.LogLevel, String)]>([])
    func append(_ level: HTTPServer.LogLevel, _ line: String) { entries.withLock { $0.append((level, line)) } }
    func count(containing s: String) -> Int { entries.withLock { $0.filter { $0.1.contains(s) }.count } }
    func lines(at level: HTTPServer.LogLevel) -> [String] { entries.withLock { $0.filter { $0.0 == level }.map(\.1) } }
}

/// A flag one thread sets and another polls.
final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .relaxed) }
    func set() { value.store(true, ordering: .relaxed) }
}
