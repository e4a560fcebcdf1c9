import HTTP1
import XCTest
import TestSupport

final class HTTPHeadersTests: XCTestCase {
    func testLookupIsCaseInsensitive() {
        let headers = HTTPHeaders([("Content-Type", "a"), ("content-type", "b"), ("X-Other", "c")])
        XCTAssertEqual(headers["content-type"], "a")
        XCTAssertEqual(headers["CONTENT-TYPE"], "a")
        XCTAssertEqual(headers.values("Content-TYPE"), ["a", "b"])
        XCTAssertTrue(headers.contains("x-other"))
        XCTAssertFalse(headers.contains("x-othe"))
        XCTAssertFalse(headers.contains("x-others"))
        XCTAssertNil(headers["Missing"])
        XCTAssertEqual(headers.values("Missing"), [])
        XCTAssertEqual(headers.count, 3)
    }

    func testNonLetterBytesAreNotFolded() {
        // '^' | 0x20 == '~': only A-Z fold.
        let headers = HTTPHeaders([("X^Y", "1")])
        XCTAssertNil(headers["X~Y"])
        XCTAssertEqual(headers["x^y"], "1")
    }

    func testValuesAreNotCommaSplit() {
        var headers = HTTPHeaders()
        headers.add("Accept", "a, b")
        headers.add("accept", "c")
        XCTAssertEqual(headers.values("ACCEPT"), ["a, b", "c"])
    }

    func testAddKeepsOrderAndDuplicates() {
        var headers = HTTPHeaders()
        headers.add("A", "1")
        headers.add("B", "2")
        headers.add("a", "3")
        XCTAssertEqual(headers.map(\.name), ["A", "B", "a"])
        XCTAssertEqual(headers.map(\.value), ["1", "2", "3"])
    }

    func testSetReplacesEveryFieldOfThatName() {
        var headers = HTTPHeaders([("A", "1"), ("B", "2"), ("a", "3")])
        headers.set("A", "new")
        XCTAssertEqual(headers.count, 2)
        XCTAssertEqual(headers.map(\.name), ["B", "A"])
        XCTAssertEqual(headers.values("a"), ["new"])
        headers.set("C", "c")
        XCTAssertEqual(headers["c"], "c")
        XCTAssertEqual(headers.count, 3)
    }

    func testRemove() {
        var headers = HTTPHeaders([("A", "1"), ("B", "2"), ("a", "3")])
        headers.remove("a")
        XCTAssertEqual(headers.count, 1)
        XCTAssertFalse(headers.contains("A"))
        XCTAssertEqual(headers["b"], "2")
        headers.remove("not-there")
        XCTAssertEqual(headers.count, 1)
    }

    func testEquality() {
        XCTAssertEqual(HTTPHeaders([("Host", "x")]), HTTPHeaders([("host", "x")]))
        XCTAssertNotEqual(HTTPHeaders([("Host", "x")]), HTTPHeaders([("Host", "X")]))
        XCTAssertNotEqual(HTTPHeaders([("A", "1"), ("B", "2")]), HTTPHeaders([("B", "2"), ("A", "1")]))
        XCTAssertNotEqual(HTTPHeaders([("A", "1")]), HTTPHeaders([("A", "1"), ("A", "1")]))
        let literal: HTTPHeaders = ["Host": "x", "Accept": "*/*"]
        XCTAssertEqual(literal, HTTPHeaders([("Host", "x"), ("Accept", "*/*")]))
    }
}

final class HTTPTypesTests: XCTestCase {
    func testMethodNames() {
        let all: [HTTPMethod] = [.get, .head, .post, .put, .delete, .patch, .options, .trace, .connect, .unknown("BREW")]
        XCTAssertEqual(all.map(\.name), ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "BREW"])
    }

    func testVersions() {
        XCTAssertEqual(HTTPVersion.http10, HTTPVersion(major: 1, minor: 0))
        XCTAssertEqual(HTTPVersion.http11, HTTPVersion(major: 1, minor: 1))
        XCTAssertNotEqual(HTTPVersion.http10, .http11)
    }

    func testHeadInitialisersDeriveKeepAlive() {
        XCTAssertTrue(RequestHead(method: .get, target: "/").keepAlive)
        XCTAssertFalse(RequestHead(method: .get, target: "/", headers: ["Connection": "close"]).keepAlive)
        XCTAssertFalse(RequestHead(method: .get, target: "/", version: .http10).keepAlive)
        XCTAssertTrue(RequestHead(method: .get, target: "/", version: .http10, headers: ["Connection": " keep-alive "]).keepAlive)
        XCTAssertTrue(ResponseHead(status: 200).keepAlive)
        XCTAssertEqual(ResponseHead(status: 200).reason, "")
        XCTAssertFalse(ResponseHead(status: 200, headers: ["Connection": "foo, Close"]).keepAlive)
        XCTAssertFalse(ResponseHead(status: 200, version: .http10).keepAlive)
    }

    func testLimitsDefaults() {
        let limits = ParserLimits()
        XCTAssertEqual(limits.maxHeadBytes, 65_536)
        XCTAssertEqual(limits.maxHeaders, 100)
        XCTAssertEqual(limits.maxBodyBytes, 1 << 20)
    }

    func testParseErrorDescription() {
        let error = HTTPParseError(status: 431, reason: "too many fields")
        XCTAssertEqual(error.description, "431 too many fields")
        XCTAssertEqual(error, HTTPParseError(status: 431, reason: "too many fields"))
    }

    /// Regression (issue 8, defect 3): no header value Berth writes can carry
    /// CR, LF or NUL, whatever an upstream put in it; such a field is left out.
    func testHeaderValuesWithCRLFOrNULAreNotWritten() {
        var head = ResponseHead(status: 200)
        head.headers.add("Content-Type", "application/json\r\nSet-Cookie: injected=1")
        head.headers.add("X-Nul", "a\u{0}b")
        head.headers.add("X-LF", "a\nb")
        head.headers.add("Bad Name", "v")
        head.headers.add("Content-Length", "0")
        var out: [UInt8] = []
        head.write(into: &out)
        let text = String(decoding: out, as: UTF8.self)
        XCTAssertEqual(text, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    }
}
