import Foundation
import XCTest
import Reactor
import HTTP1
import TestSupport

/// The server end to end over loopback sockets: every refusal with its exact
/// status, keep-alive, pipelining, HEAD, ranges from files, streamed bodies.
final class ServerTests: XCTestCase {
    var server: TestServer!
    var dir: String!
    var filePath: String!
    var fileBytes: [UInt8] = []

    override func setUpWithError() throws {
        dir = makeTempDir()
        filePath = dir + "/blob"
        fileBytes = (0..<(3 * 1024 * 1024 + 17)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }
        FileManager.default.createFile(atPath: filePath, contents: Data(fileBytes))
        let path = filePath!
        server = try TestServer { w in
            let target = w.request.target
            switch target {
            case "/small":
                var h = ResponseHead(status: 200)
                h.headers.add("Content-Type", "text/plain")
                w.respond(h, body: Array("hello\n".utf8))
            case "/file":
                do {
                    let f = try FileDescriptor.openForReading(path)
                    let size = try f.size()
                    switch RangeRequest.parse(w.request.headers["Range"], size: size) {
                    case .none:
                        w.respond(ResponseHead(status: 200), file: f, range: 0..<size)
                    case .satisfiable(let ranges):
                        let r = ranges[0]
                        var h = ResponseHead(status: 206)
                        h.headers.add("Content-Range", "bytes \(r.lowerBound)-\(r.upperBound)/\(size)")
                        w.respond(h, file: f, range: r.lowerBound..<(r.upperBound + 1))
                    case .unsatisfiable:
                        var h = ResponseHead(status: 416)
                        h.headers.add("Content-Range", "bytes */\(size)")
                        w.respond(h)
                    }
                } catch {
                    w.respond(ResponseHead(status: 500))
                }
            case "/stream":
                w.start(ResponseHead(status: 200), contentLength: nil)
                for i in 0..<100 {
                    let piece = Array("piece \(i)\n".utf8)
                    piece.withUnsafeBytes { _ = w.write($0) }
                }
                w.end()
            case "/later":
                w.loop.schedule(afterNanos: 20_000_000) {
                    w.respond(ResponseHead(status: 200), body: Array("later".utf8))
                }
            case "/short":
                // Declares 10 bytes, ends after 3: the client must see a cut connection.
                w.start(ResponseHead(status: 200), contentLength: 10)
                Array("abc".utf8).withUnsafeBytes { _ = w.write($0) }
                w.end()
            case _ where target.hasPrefix("/n/"):
                w.respond(ResponseHead(status: 200), body: Array(target.utf8))
            default:
                w.respond(ResponseHead(status: 404), body: Array("nope".utf8))
            }
        }
    }

    override func tearDown() {
        server.stop()
        try? FileManager.default.removeItem(atPath: dir)
    }

    private func exchange(_ request: String) throws -> (status: Int, headers: [String: String], body: [UInt8])? {
        let c = try RawClient(port: server.port)
        c.send(request)
        return c.readResponse()
    }

    /// Sends `request` and expects `status` followed by the server closing the connection.
    private func assertRefused(_ request: String, _ status: Int, file: StaticString = #filePath, line: UInt = #line) throws {
        let c = try RawClient(port: server.port)
        c.send(request)
        let text = String(decoding: c.readToClose(), as: UTF8.self)
        XCTAssertTrue(text.hasPrefix("HTTP/1.1 \(status) "), "expected \(status), got: \(text.prefix(80))", file: file, line: line)
        XCTAssertTrue(text.lowercased().contains("connection: close"), "refusal must close", file: file, line: line)
    }

    func testSmallResponseAndKeepAlive() throws {
        let c = try RawClient(port: server.port)
        for _ in 0..<3 {
            c.send("GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
            let r = try XCTUnwrap(c.readResponse())
            XCTAssertEqual(r.status, 200)
            XCTAssertEqual(String(decoding: r.body, as: UTF8.self), "hello\n")
            XCTAssertEqual(r.headers["content-length"], "6")
        }
    }

    func testPipelinedRequestsAreAnsweredInOrder() throws {
        let c = try RawClient(port: server.port)
        c.send("GET /later HTTP/1.1\r\nHost: x\r\n\r\nGET /small HTTP/1.1\r\nHost: x\r\n\r\nGET /missing HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertEqual(c.readResponse().map { String(decoding: $0.body, as: UTF8.self) }, "later")
        XCTAssertEqual(c.readResponse().map { String(decoding: $0.body, as: UTF8.self) }, "hello\n")
        XCTAssertEqual(c.readResponse()?.status, 404)
    }

    /// Regression: answers that complete inside the handler used to recurse into
    /// the next request (stack growth per request) and reuse the loop's read
    /// buffer under the outer parse (answers out of order).
    func testThousandsOfPipelinedRequestsAnsweredInOrder() throws {
        let c = try RawClient(port: server.port)
        let count = 3000
        let all = (0..<count).flatMap { Array("GET /n/\($0) HTTP/1.1\r\nHost: x\r\n\r\n".utf8) }
        // Odd-sized writes split requests across reads.
        let sender = Thread {
            var off = 0
            while off < all.count {
                let end = min(all.count, off + 1777)
                c.send(Array(all[off..<end]))
                off = end
            }
        }
        sender.start()
        for i in 0..<count {
            guard let r = c.readResponse() else { return XCTFail("no answer for request \(i)") }
            XCTAssertEqual(String(decoding: r.body, as: UTF8.self), "/n/\(i)")
            if r.status != 200 { return XCTFail("status \(r.status) for request \(i)") }
        }
    }

    func testRequestArrivingOneByteAtATime() throws {
        let c = try RawClient(port: server.port)
        for b in Array("GET /small HTTP/1.1\r\nHost: x\r\n\r\n".utf8) {
            c.send([b])
            usleep(200)
        }
        XCTAssertEqual(c.readResponse()?.status, 200)
    }

    func testHeadHasLengthButNoBody() throws {
        let c = try RawClient(port: server.port)
        c.send("HEAD /small HTTP/1.1\r\nHost: x\r\n\r\nGET /small HTTP/1.1\r\nHost: x\r\n\r\n")
        let h = try XCTUnwrap(c.readResponse(head: true))
        XCTAssertEqual(h.status, 200)
        XCTAssertEqual(h.headers["content-length"], "6")
        // The next response starts right after the head: no body bytes were sent.
        XCTAssertEqual(c.readResponse().map { String(decoding: $0.body, as: UTF8.self) }, "hello\n")
    }

    func testHTTP10ClosesWithoutKeepAlive() throws {
        let c = try RawClient(port: server.port)
        c.send("GET /small HTTP/1.0\r\n\r\n")
        let text = String(decoding: c.readToClose(), as: UTF8.self)
        XCTAssertTrue(text.hasPrefix("HTTP/1.0 200") || text.hasPrefix("HTTP/1.1 200"), text)
        XCTAssertTrue(text.hasSuffix("hello\n"))
    }

    func testWholeFileBySendfile() throws {
        let r = try XCTUnwrap(exchange("GET /file HTTP/1.1\r\nHost: x\r\n\r\n"))
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r.body.count, fileBytes.count)
        XCTAssertTrue(r.body == fileBytes)
    }

    func testSingleRanges() throws {
        let size = fileBytes.count
        let cases: [(String, Range<Int>)] = [
            ("bytes=0-0", 0..<1),
            ("bytes=100-", 100..<size),
            ("bytes=10-19", 10..<20),
            ("bytes=-5", (size - 5)..<size),
            ("bytes=5-999999999", 5..<size),
        ]
        for (range, expected) in cases {
            let r = try XCTUnwrap(exchange("GET /file HTTP/1.1\r\nHost: x\r\nRange: \(range)\r\n\r\n"), range)
            XCTAssertEqual(r.status, 206, range)
            XCTAssertEqual(r.headers["content-range"], "bytes \(expected.lowerBound)-\(expected.upperBound - 1)/\(size)", range)
            XCTAssertTrue(r.body == Array(fileBytes[expected]), range)
        }
    }

    func testUnsatisfiableRangeIs416() throws {
        let r = try XCTUnwrap(exchange("GET /file HTTP/1.1\r\nHost: x\r\nRange: bytes=\(fileBytes.count)-\r\n\r\n"))
        XCTAssertEqual(r.status, 416)
        XCTAssertEqual(r.headers["content-range"], "bytes */\(fileBytes.count)")
    }

    func testChunkedStream() throws {
        let r = try XCTUnwrap(exchange("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"))
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r.headers["transfer-encoding"], "chunked")
        let expected = (0..<100).map { "piece \($0)\n" }.joined()
        XCTAssertEqual(String(decoding: r.body, as: UTF8.self), expected)
    }

    func testBodyShorterThanDeclaredCutsTheConnection() throws {
        let c = try RawClient(port: server.port)
        c.send("GET /short HTTP/1.1\r\nHost: x\r\n\r\n")
        let text = String(decoding: c.readToClose(), as: UTF8.self)
        XCTAssertTrue(text.hasPrefix("HTTP/1.1 200"))
        let body = text.components(separatedBy: "\r\n\r\n").dropFirst().joined()
        XCTAssertLessThan(body.utf8.count, 10, "a cut body must never look complete: \(text)")
    }

    // MARK: refusals, each with its exact status

    func testUnknownMethodIs501() throws { try assertRefused("BREW /small HTTP/1.1\r\nHost: x\r\n\r\n", 501) }
    func testBodyOnGETIs400() throws { try assertRefused("GET /small HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 400) }
    func testChunkedBodyOnHEADIs400() throws { try assertRefused("HEAD /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400) }
    func testContentLengthWithTransferEncodingIs400() throws {
        try assertRefused("POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400)
    }
    func testDifferingContentLengthsAre400() throws {
        try assertRefused("POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400)
    }
    func testObsFoldIs400() throws { try assertRefused("GET /small HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  continued\r\n\r\n", 400) }
    func testBareLFIs400() throws { try assertRefused("GET /small HTTP/1.1\nHost: x\n\n", 400) }
    func testHTTP09Is400() throws { try assertRefused("GET /small\r\n", 400) }
    func testMissingHostIs400() throws { try assertRefused("GET /small HTTP/1.1\r\n\r\n", 400) }
    func testHTTP2VersionIs505() throws { try assertRefused("GET /small HTTP/2.0\r\nHost: x\r\n\r\n", 505) }
    func testInvalidChunkSizeIs400() throws {
        try assertRefused("POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400)
    }
    func testLongRequestLineIs414() throws {
        try assertRefused("GET /" + String(repeating: "a", count: 70_000) + " HTTP/1.1\r\nHost: x\r\n\r\n", 414)
    }
    func testLargeHeaderBlockIs431() throws {
        try assertRefused("GET /small HTTP/1.1\r\nHost: x\r\nX-Big: " + String(repeating: "b", count: 70_000) + "\r\n\r\n", 431)
    }
    func testTooManyHeadersIs431() throws {
        let headers = (0..<101).map { "X-H\($0): v\r\n" }.joined()
        try assertRefused("GET /small HTTP/1.1\r\nHost: x\r\n" + headers + "\r\n", 431)
    }
    func testOversizedBodyIs413() throws {
        try assertRefused("POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n", 413)
    }
}
