import HTTP1
import XCTest
import TestSupport

final class ResponseParserTests: XCTestCase {
    typealias E = Event<ResponseHead>

    private func parse(_ text: String, toHEAD: Bool = false, pieces: [Int]? = nil) throws -> [E] {
        var parser = ResponseParser()
        parser.expectResponse(toHEAD: toHEAD)
        return try events(&parser, Array(text.utf8), pieces: pieces)
    }

    private func parseEverySplit(_ text: String, toHEAD: Bool = false, file: StaticString = #filePath, line: UInt = #line) throws -> [E] {
        let whole = try parse(text, toHEAD: toHEAD)
        XCTAssertEqual(try parse(text, toHEAD: toHEAD, pieces: bytewise(text.utf8.count)), whole, "byte by byte differs", file: file, line: line)
        XCTAssertEqual(try parse(text, toHEAD: toHEAD, pieces: irregularPieces(text.utf8.count)), whole, "irregular split differs", file: file, line: line)
        return whole
    }

    private func refused(_ text: String, _ status: Int, file: StaticString = #filePath, line: UInt = #line) {
        assertRefused(ResponseParser(), text, status, file: file, line: line)
    }

    private func head(_ status: Int, _ reason: String, version: HTTPVersion = .http11, _ headers: [(String, String)],
                      keepAlive: Bool = true) -> ResponseHead {
        var head = ResponseHead(status: status, reason: reason, version: version, headers: HTTPHeaders(headers))
        XCTAssertTrue(head.keepAlive)
        head.keepAlive = keepAlive
        return head
    }

    func testContentLengthResponse() throws {
        let got = try parseEverySplit("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"ok\": true}\n")
        XCTAssertEqual(got, [
            .head(head(200, "OK", [("Content-Type", "application/json"), ("Content-Length", "13")]), .length(13)),
            .body(Array("{\"ok\": true}\n".utf8)), .end,
        ])
        guard case .head(let h, _) = got[0] else { return XCTFail() }
        XCTAssertTrue(h.keepAlive)
        XCTAssertEqual(h.status, 200)
        XCTAssertEqual(h.version, .http11)
    }

    func testChunkedResponseWithTrailers() throws {
        let text = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nWiki\r\n6\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nExpires: never\r\n\r\n"
        let got = try parseEverySplit(text)
        XCTAssertEqual(got, [
            .head(head(200, "OK", [("Transfer-Encoding", "chunked")]), .chunked),
            .body(Array("Wikipedia in \r\n\r\nchunks.".utf8)), .end,
        ])
    }

    func testLargeContentLengthIsNotLimited() throws {
        let got = try parse("HTTP/1.1 200 OK\r\nContent-Length: 10737418240\r\n\r\nab")
        XCTAssertEqual(got, [.head(head(200, "OK", [("Content-Length", "10737418240")]), .length(10_737_418_240)), .body(Array("ab".utf8))])
        let chunked = try parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nabc")
        XCTAssertEqual(chunked.last, .body(Array("abc".utf8)))
    }

    func testUntilCloseBody() throws {
        var parser = ResponseParser()
        let text = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nsome bytes"
        let got = try events(&parser, Array(text.utf8), pieces: [20, 30, 3, 100])
        XCTAssertEqual(got, [.head(head(200, "OK", [("Content-Type", "text/plain")], keepAlive: false), .untilClose), .body(Array("some bytes".utf8))])
        guard case .head(let h, _) = got[0] else { return XCTFail() }
        XCTAssertFalse(h.keepAlive, "a close-delimited body cannot be followed by another response")
        guard case .end? = try parser.finish() else { return XCTFail("finish must end an untilClose body") }
        XCTAssertNil(try parser.finish())
    }

    func testNonChunkedFinalCodingMeansUntilClose() throws {
        for value in ["gzip", "chunked, gzip"] {
            let got = try parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: \(value)\r\n\r\nxyz")
            guard case .head(_, let framing)? = got.first else { return XCTFail(value) }
            XCTAssertEqual(framing, .untilClose, value)
        }
        let got = try parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n")
        XCTAssertEqual(got.count, 3)
        guard case .head(_, .chunked)? = got.first else { return XCTFail() }
    }

    func testBodilessStatuses() throws {
        for status in [204, 304] {
            let got = try parseEverySplit("HTTP/1.1 \(status) X\r\nContent-Length: 42\r\nTransfer-Encoding: chunked\r\n\r\n")
            XCTAssertEqual(got.count, 2)
            guard case .head(let h, .none) = got[0] else { return XCTFail("\(got)") }
            XCTAssertEqual(h.status, status)
            XCTAssertEqual(got[1], .end)
        }
    }

    func testResponseToHEADHasNoBody() throws {
        let text = "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nDocker-Content-Digest: sha256:abc\r\n\r\n"
        let got = try parseEverySplit(text, toHEAD: true)
        XCTAssertEqual(got, [.head(head(200, "OK", [("Content-Length", "1234"), ("Docker-Content-Digest", "sha256:abc")]), .none), .end])
    }

    func testHEADExpectationLastsOneResponse() throws {
        var parser = ResponseParser()
        parser.expectResponse(toHEAD: true)
        let text = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
        let got = try events(&parser, Array(text.utf8))
        XCTAssertEqual(got, [
            .head(head(200, "OK", [("Content-Length", "3")]), .none), .end,
            .head(head(200, "OK", [("Content-Length", "3")]), .length(3)), .body(Array("abc".utf8)), .end,
        ])
    }

    func testInterimResponsesAreSkipped() throws {
        let text = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 201 Created\r\nLocation: /v2/x/blobs/y\r\nContent-Length: 0\r\n\r\n"
        let got = try parseEverySplit(text)
        XCTAssertEqual(got, [.head(head(201, "Created", [("Location", "/v2/x/blobs/y"), ("Content-Length", "0")]), .length(0)), .end])
    }

    func testSwitchingProtocolsHasNoBody() throws {
        let got = try parse("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        XCTAssertEqual(got.count, 2)
        guard case .head(let h, .none) = got[0] else { return XCTFail() }
        XCTAssertEqual(h.status, 101)
        XCTAssertFalse(h.keepAlive)
    }

    func testReasonPhrases() throws {
        let cases: [(String, Int, String)] = [
            ("HTTP/1.1 200 OK", 200, "OK"),
            ("HTTP/1.1 200", 200, ""),
            ("HTTP/1.1 200 ", 200, ""),
            ("HTTP/1.1 404 Not  Found\t(really)", 404, "Not  Found\t(really)"),
            ("HTTP/1.1 429 Too Many Requests", 429, "Too Many Requests"),
            ("HTTP/1.0 503 Service Unavailable", 503, "Service Unavailable"),
            ("HTTP/1.1 599 caf\u{E9}", 599, "caf\u{E9}"),
        ]
        for (line, status, reason) in cases {
            let got = try parseEverySplit("\(line)\r\nContent-Length: 0\r\n\r\n")
            guard case .head(let h, _)? = got.first else { return XCTFail(line) }
            XCTAssertEqual(h.status, status, line)
            XCTAssertEqual(h.reason, reason, line)
        }
    }

    func testKeepAliveRules() throws {
        let cases: [(String, Bool)] = [
            ("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true),
            ("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", false),
            ("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false),
            ("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n", true),
            ("HTTP/1.1 200 OK\r\n\r\n", false),
        ]
        for (text, expected) in cases {
            let got = try parse(text)
            guard case .head(let h, _)? = got.first else { return XCTFail(text) }
            XCTAssertEqual(h.keepAlive, expected, text.debugDescription)
        }
    }

    func testPipelinedResponses() throws {
        let text = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nab"
            + "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nnot\r\n0\r\n\r\n"
            + "HTTP/1.1 304 Not Modified\r\nETag: \"e\"\r\n\r\n"
            + "HTTP/1.1 200 OK\r\n\r\nrest"
        let got = try parseEverySplit(text)
        XCTAssertEqual(got, [
            .head(head(200, "OK", [("Content-Length", "2")]), .length(2)), .body(Array("ab".utf8)), .end,
            .head(head(404, "Not Found", [("Transfer-Encoding", "chunked")]), .chunked), .body(Array("not".utf8)), .end,
            .head(head(304, "Not Modified", [("ETag", "\"e\"")]), .none), .end,
            .head(head(200, "OK", [], keepAlive: false), .untilClose), .body(Array("rest".utf8)),
        ])
    }

    func testFinishBetweenMessages() throws {
        var parser = ResponseParser()
        XCTAssertNil(try parser.finish())
        parser = ResponseParser()
        _ = try events(&parser, Array("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx".utf8))
        // `.end` was already returned by `events`: nothing left.
        XCTAssertNil(try parser.finish())
    }

    func testFinishDeliversPendingEnd() throws {
        var parser = ResponseParser()
        let input = Array("HTTP/1.1 204 No Content\r\n\r\n".utf8)
        let (event, _) = try input.withUnsafeBytes { try parser.parse($0) }
        guard case .head? = event else { return XCTFail() }
        guard case .end? = try parser.finish() else { return XCTFail() }
    }

    func testFinishInsideAMessageThrows() {
        let incomplete = [
            "HTTP/1.1 200 OK\r\nContent-Le",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n",
            "H",
        ]
        for text in incomplete {
            var parser = ResponseParser()
            XCTAssertNoThrow(try events(&parser, Array(text.utf8)), text)
            XCTAssertThrowsError(try parser.finish(), text) { error in
                XCTAssertEqual((error as? HTTPParseError)?.status, 400, text)
            }
        }
    }

    func testParserIsDeadAfterAnError() throws {
        var parser = ResponseParser()
        XCTAssertThrowsError(try events(&parser, Array("HTTP/1.1 2x0 OK\r\n\r\n".utf8)))
        let good = Array("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".utf8)
        XCTAssertThrowsError(try good.withUnsafeBytes { try parser.parse($0) }) { error in
            XCTAssertEqual((error as? HTTPParseError)?.status, 400)
        }
        XCTAssertThrowsError(try parser.finish())
    }

    func testStatusLineRefusals() {
        refused("HTTP/1.1 20 OK\r\n\r\n", 400)
        refused("HTTP/1.1 2000 OK\r\n\r\n", 400)
        refused("HTTP/1.1 2x0 OK\r\n\r\n", 400)
        refused("HTTP/1.1 099 OK\r\n\r\n", 400)
        refused("HTTP/1.1  200 OK\r\n\r\n", 400)
        refused("HTTP/1.1\r\n\r\n", 400)
        refused("http/1.1 200 OK\r\n\r\n", 400)
        refused("HTTP/1 200 OK\r\n\r\n", 400)
        refused("ICY 200 OK\r\n\r\n", 400)
        refused("HTTP/1.1 200 O\u{1}K\r\n\r\n", 400)
        refused("HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", 400)
        refused("HTTP/2.0 200 OK\r\n\r\n", 505)
    }

    func testFieldAndFramingRefusals() {
        refused("HTTP/1.1 200 OK\r\nContent-Length : 1\r\n\r\nx", 400)
        refused("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", 400)
        refused("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx", 400)
        refused("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", 400)
        refused("HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\n", 400)
        refused("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400)
        refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400)
        refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n", 400)
        refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", 400)
    }

    func testHeadLimitsApply() {
        var limits = ParserLimits()
        limits.maxHeadBytes = 40
        assertRefused(ResponseParser(limits: limits), "HTTP/1.1 200 \(String(repeating: "x", count: 50))\r\n\r\n", 431)
        assertRefused(ResponseParser(limits: limits), "HTTP/1.1 200 OK\r\nX-Long: \(String(repeating: "x", count: 50))\r\n\r\n", 431)
        limits = ParserLimits()
        limits.maxHeaders = 1
        assertRefused(ResponseParser(limits: limits), "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n", 431)
    }
}
