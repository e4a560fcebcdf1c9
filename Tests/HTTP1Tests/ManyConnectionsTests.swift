import Foundation
import XCTest
import Reactor
import HTTP1
import TestSupport

/// Thousands of concurrent loopback connections on two loops: every one is
/// accepted, kept open at the same time, and answered.
final class ManyConnectionsTests: XCTestCase {
    func testFourThousandConcurrentConnections() throws {
        let server = try TestServer(loops: 2) { w in
            w.respond(ResponseHead(status: 200), body: Array("ok".utf8))
        }
        defer { server.stop() }
        let count = 4000
        var clients: [RawClient] = []
        clients.reserveCapacity(count)
        for _ in 0..<count { clients.append(try RawClient(port: server.port)) }
        XCTAssertTrue(waitUntil(20) { server.server.connectionCount == count }, "open: \(server.server.connectionCount)")
        for c in clients { c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n") }
        var ok = 0
        for c in clients where c.readResponse()?.status == 200 { ok += 1 }
        XCTAssertEqual(ok, count)
        clients.removeAll()
        XCTAssertTrue(waitUntil(20) { server.server.connectionCount == 0 }, "still open: \(server.server.connectionCount)")
    }
}
