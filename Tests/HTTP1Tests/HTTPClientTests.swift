import Foundation
import XCTest
import Reactor
@testable import HTTP1
import TestSupport

/// HTTPClient against Debian's nginx on loopback (framing, keep-alive,
/// redirects and credentials, backpressure, stale pooled connections), and
/// against an in-process listener for the faults nginx will not make on
/// purpose (silence, a stalled body, a close on the second request).
final class HTTPClientTests: XCTestCase {
    static let echoModule = ["/usr/lib/nginx/modules/ngx_http_echo_module.so", "/usr/share/nginx/modules/ngx_http_echo_module.so"]
        .first { FileManager.default.fileExists(atPath: $0) }

    var nginx: NginxPeer!
    var harness: ClientHarness!
    var fault: FaultServer?
    var origin: String { "http://127.0.0.1:\(nginx.ports[0])" }
    var otherOrigin: String { "http://127.0.0.1:\(nginx.ports[1])" }
    let smallBody = "hello from nginx\n"

    override func setUpWithError() throws {
        guard let echo = Self.echoModule else {
            throw XCTSkip("nginx's echo module (package nginx-light / libnginx-mod-http-echo) is not installed")
        }
        nginx = try NginxPeer(portCount: 2) { ports, _ in
            """
            server {
                listen 127.0.0.1:\(ports[0]);
                keepalive_timeout 60s;
                location / { }
                location = /conn { return 200 "$connection"; }
                location = /auth { return 200 "auth=$http_authorization"; }
                location = /chunked { echo_duplicate 20000 "0123456789abcdef"; }
                location = /to-same { return 302 /auth; }
                location = /dir/to-relative { return 302 "target?q=1"; }
                location = /dir/target { return 200 "relative $request_uri"; }
                location = /to-other { return 302 http://127.0.0.1:\(ports[1])/auth; }
                location = /loop { return 302 /loop; }
                location = /short-keepalive { keepalive_timeout 1s; return 200 "$connection"; }
            }
            server {
                listen 127.0.0.1:\(ports[1]);
                location = /auth { return 200 "other auth=$http_authorization"; }
            }
            """
        }
        let conf = nginx.directory + "/nginx.conf"
        let text = try String(contentsOfFile: conf, encoding: .utf8)
        try ("load_module \(echo);\n" + text).write(toFile: conf, atomically: true, encoding: .utf8)
        try smallBody.write(toFile: nginx.wwwPath + "/small.txt", atomically: true, encoding: .utf8)
        try nginx.start()
        harness = try ClientHarness()
    }

    override func tearDown() {
        harness?.stop()
        fault?.stop()
        nginx?.stop()
    }

    // MARK: framing

    func testGETWithContentLength() {
        let r = harness.get(origin + "/small.txt")
        XCTAssertFalse(r.timedOutWaiting)
        XCTAssertNil(r.error)
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r.head?.headers["Content-Length"], String(smallBody.utf8.count))
        XCTAssertEqual(r.text, smallBody)
        XCTAssertEqual(r.finishCount, 1)
    }

    func testChunkedBody() {
        let r = harness.get(origin + "/chunked")
        XCTAssertFalse(r.timedOutWaiting)
        XCTAssertNil(r.error)
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r.head?.headers["Transfer-Encoding"], "chunked")
        XCTAssertNil(r.head?.headers["Content-Length"])
        XCTAssertEqual(r.body.count, 20000 * 16)
        XCTAssertEqual(r.text, String(repeating: "0123456789abcdef", count: 20000))
    }

    func testHEADHasLengthButNoBody() {
        let r = harness.get(origin + "/small.txt", method: .head)
        XCTAssertFalse(r.timedOutWaiting)
        XCTAssertNil(r.error)
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r.head?.headers["Content-Length"], String(smallBody.utf8.count))
        XCTAssertEqual(r.body, [])
        // The connection is still usable: the next answer is whole and on the same connection.
        XCTAssertEqual(harness.onLoop { self.harness.client.idleConnectionCount }, 1)
        let again = harness.get(origin + "/small.txt")
        XCTAssertEqual(again.text, smallBody)
    }

    // MARK: keep-alive

    func testKeepAliveReusesThePooledConnection() {
        let first = harness.get(origin + "/conn")
        XCTAssertNil(first.error)
        let id = Int(first.text)
        XCTAssertNotNil(id, "nginx's $connection: \(first.text)")
        XCTAssertEqual(harness.onLoop { self.harness.client.idleConnectionCount }, 1)
        for _ in 0..<3 {
            let next = harness.get(origin + "/conn")
            XCTAssertNil(next.error)
            XCTAssertEqual(Int(next.text), id, "a new connection was opened instead of reusing the pooled one")
        }
    }

    func testPooledConnectionClosedByServerIsReplaced() throws {
        let first = harness.get(origin + "/short-keepalive")
        XCTAssertNil(first.error)
        let id = try XCTUnwrap(Int(first.text))
        // nginx closes the idle connection after 1 s; the pool notices the close (bounded wait).
        XCTAssertTrue(waitUntil(5) { self.harness.onLoop { self.harness.client.idleConnectionCount } == 0 },
                      "the pool kept a connection nginx closed")
        let second = harness.get(origin + "/conn")
        XCTAssertFalse(second.timedOutWaiting)
        XCTAssertNil(second.error)
        XCTAssertEqual(second.status, 200)
        let id2 = try XCTUnwrap(Int(second.text))
        XCTAssertNotEqual(id2, id)
    }

    /// Regression: the pool's sweep closed connections idle past the client's
    /// idle timeout but left them in the pool (counted, held, swept forever).
    func testSweepRemovesConnectionsIdlePastTheTimeout() {
        XCTAssertNotNil(harness.onLoop { self.harness.client.idleTimeoutNanos = 200_000_000 })
        XCTAssertNil(harness.get(origin + "/conn").error)
        XCTAssertEqual(harness.onLoop { self.harness.client.idleConnectionCount }, 1)
        // The sweep runs every 5 s; nginx keeps the connection for 60 s.
        XCTAssertTrue(waitUntil(8) { self.harness.onLoop { self.harness.client.idleConnectionCount } == 0 },
                      "the sweep left a timed-out connection in the pool")
        let again = harness.get(origin + "/small.txt")
        XCTAssertNil(again.error)
        XCTAssertEqual(again.text, smallBody)
    }

    func testFetchRefusesABodyOverItsLimit() {
        let done = DispatchSemaphore(value: 0)
        var result: Result<(ResponseHead, [UInt8]), HTTPClientError>?
        let client = harness.client
        harness.loop.execute {
            client.fetch(ClientRequest(url: HTTPURL(self.origin + "/chunked")!), maxBytes: 1000) { r in
                result = r
                done.signal()
            }
        }
        XCTAssertEqual(done.wait(timeout: .now() + 10), .success)
        guard case .failure(let e)? = result else { return XCTFail("a body over the limit was accepted") }
        XCTAssertEqual(e.kind, .protocolError)
        XCTAssertEqual(harness.onLoop { self.harness.client.idleConnectionCount }, 0, "a cancelled response's connection was pooled")
        // The client still works afterwards.
        XCTAssertEqual(harness.get(origin + "/small.txt").text, smallBody)
    }

    /// Regression: a pooled connection the server closes on receiving the next
    /// request (before any response byte) is retried once on a new connection.
    func testRequestOnPooledConnectionClosedBeforeAnswerIsRetried() throws {
        fault = try FaultServer { fd, index in
            guard Wire.readHead(fd) != nil else { return }
            Wire.send(fd, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nconn\(index)\n")
            if index == 0 {
                // Read the second request, then close without a byte of answer.
                _ = Wire.readHead(fd)
                shutdown(fd, Int32(SHUT_RDWR))
                return
            }
            Wire.waitForClose(fd)
        }
        let base = "http://127.0.0.1:\(fault!.port)"
        XCTAssertEqual(harness.get(base + "/a").text, "conn0\n")
        let r = harness.get(base + "/b")
        XCTAssertNil(r.error)
        XCTAssertEqual(r.text, "conn1\n")
        XCTAssertEqual(fault!.acceptedCount, 2)
    }

    // MARK: redirects

    func testRedirectToSameOriginKeepsAuthorization() {
        let r = harness.get(origin + "/to-same", headers: ["Authorization": "Bearer s3cret"])
        XCTAssertNil(r.error)
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r.url?.description, origin + "/auth")
        XCTAssertEqual(r.text, "auth=Bearer s3cret")
    }

    func testRedirectToAnotherOriginDropsAuthorization() {
        let r = harness.get(origin + "/to-other", headers: ["Authorization": "Bearer s3cret", "X-Other": "kept"])
        XCTAssertNil(r.error)
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r.url?.description, otherOrigin + "/auth")
        XCTAssertEqual(r.text, "other auth=")
    }

    func testRelativeLocation() {
        let r = harness.get(origin + "/dir/to-relative")
        XCTAssertNil(r.error)
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r.url?.description, origin + "/dir/target?q=1")
        XCTAssertEqual(r.text, "relative /dir/target?q=1")
    }

    func testTooManyRedirects() {
        var req = ClientRequest(url: HTTPURL(origin + "/loop")!)
        req.maxRedirects = 3
        let r = harness.run(req)
        XCTAssertFalse(r.timedOutWaiting)
        XCTAssertEqual(r.error?.kind, .tooManyRedirects)
        XCTAssertNil(r.head, "no head is delivered for a redirect chain that was given up")
        XCTAssertEqual(r.finishCount, 1)
        // 1 request + 3 follows reached nginx. nginx writes its access line after
        // the response has gone out, so the last one can trail the client's error.
        func loops() -> Int {
            let log = (try? String(contentsOfFile: nginx.directory + "/access.log", encoding: .utf8)) ?? ""
            return log.components(separatedBy: "GET /loop ").count - 1
        }
        XCTAssertTrue(waitUntil(5) { loops() >= 4 }, "nginx logged \(loops()) of 4 requests")
        XCTAssertEqual(loops(), 4)
    }

    // MARK: backpressure

    func testLargeBodyWithPausingDelegateArrivesWhole() throws {
        let mib = 1 << 20
        var block = [UInt8](repeating: 0, count: mib)
        var x: UInt32 = 0x9e37_79b9
        for i in 0..<mib {
            x ^= x << 13; x ^= x >> 17; x ^= x << 5
            block[i] = UInt8(truncatingIfNeeded: x)
        }
        var file = [UInt8]()
        file.reserveCapacity(64 * mib)
        for k in 0..<64 {
            withUnsafeBytes(of: UInt64(k).littleEndian) { block.replaceSubrange(0..<8, with: $0) }
            file.append(contentsOf: block)
        }
        FileManager.default.createFile(atPath: nginx.wwwPath + "/big.bin", contents: Data(file))
        let expected = fnv1a(file)

        let d = RecordingDelegate()
        d.keepsBody = false
        d.pauseEvery = 256 * 1024
        d.resumeAfterNanos = 1_000_000
        let r = harness.run(ClientRequest(url: HTTPURL(origin + "/big.bin")!), d, seconds: 120)
        XCTAssertFalse(r.timedOutWaiting)
        XCTAssertNil(r.error)
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r.byteCount, file.count)
        XCTAssertEqual(r.checksum, expected)
        XCTAssertGreaterThanOrEqual(r.pauses, 255)
        XCTAssertEqual(r.callsWhilePaused, 0, "body bytes were delivered while the delegate had paused")
        XCTAssertFalse(r.finishedWhilePaused)
    }

    func testChunkedBodyWithPausingDelegate() {
        let d = RecordingDelegate()
        d.pauseEvery = 1
        d.resumeAfterNanos = 100_000
        let r = harness.run(ClientRequest(url: HTTPURL(origin + "/chunked")!), d)
        XCTAssertFalse(r.timedOutWaiting)
        XCTAssertNil(r.error)
        XCTAssertEqual(r.text, String(repeating: "0123456789abcdef", count: 20000))
        XCTAssertEqual(r.callsWhilePaused, 0, "body bytes were delivered while the delegate had paused")
        XCTAssertFalse(r.finishedWhilePaused)
    }

    // MARK: timeouts and refusals

    func testSilentServerIsAHeadTimeout() throws {
        fault = try FaultServer { fd, _ in Wire.waitForClose(fd) }
        var req = ClientRequest(url: HTTPURL("http://127.0.0.1:\(fault!.port)/")!)
        req.headTimeoutNanos = 300_000_000
        let start = Date()
        let r = harness.run(req, seconds: 10)
        let elapsed = Date().timeIntervalSince(start)
        XCTAssertFalse(r.timedOutWaiting)
        XCTAssertEqual(r.error?.kind, .headTimeout)
        XCTAssertGreaterThanOrEqual(elapsed, 0.29)
        XCTAssertLessThan(elapsed, 1.5, "the head timeout fired late")
    }

    func testStalledBodyIsAnIdleTimeout() throws {
        fault = try FaultServer { fd, _ in
            guard Wire.readHead(fd) != nil else { return }
            Wire.send(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
            Wire.waitForClose(fd)
        }
        var req = ClientRequest(url: HTTPURL("http://127.0.0.1:\(fault!.port)/")!)
        req.headTimeoutNanos = 5_000_000_000
        req.idleTimeoutNanos = 300_000_000
        let start = Date()
        let r = harness.run(req, seconds: 10)
        let elapsed = Date().timeIntervalSince(start)
        XCTAssertFalse(r.timedOutWaiting)
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r.text, "0123456789")
        XCTAssertEqual(r.error?.kind, .idleTimeout)
        XCTAssertGreaterThanOrEqual(elapsed, 0.29)
        XCTAssertLessThan(elapsed, 1.5, "the idle timeout fired late")
    }

    func testClosedPortIsConnectFailed() {
        let port = freeLoopbackPort()
        let r = harness.get("http://127.0.0.1:\(port)/")
        XCTAssertFalse(r.timedOutWaiting)
        XCTAssertEqual(r.error?.kind, .connectFailed)
        XCTAssertNil(r.head)
    }
}
