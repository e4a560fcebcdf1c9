import HTTP1
import XCTest
import TestSupport

final class RequestParserTests: XCTestCase {
    typealias E = Event<RequestHead>

    private func parse(_ text: String, limits: ParserLimits = ParserLimits(), pieces: [Int]? = nil) throws -> [E] {
        var parser = RequestParser(limits: limits)
        return try events(&parser, Array(text.utf8), pieces: pieces)
    }

    /// Parses `text` in one piece, byte by byte and in irregular pieces; all three must agree.
    private func parseEverySplit(
        _ text: String, limits: ParserLimits = ParserLimits(), file: StaticString = #filePath, line: UInt = #line
    ) throws -> [E] {
        let whole = try parse(text, limits: limits)
        let bytewise = try parse(text, limits: limits, pieces: HTTP1Tests.bytewise(text.utf8.count))
        let irregular = try parse(text, limits: limits, pieces: irregularPieces(text.utf8.count))
        XCTAssertEqual(bytewise, whole, "byte by byte differs", file: file, line: line)
        XCTAssertEqual(irregular, whole, "irregular split differs", file: file, line: line)
        return whole
    }

    private func refused(_ text: String, _ status: Int, limits: ParserLimits = ParserLimits(),
                         file: StaticString = #filePath, line: UInt = #line) {
        assertRefused(RequestParser(limits: limits), text, status, file: file, line: line)
    }

    private func head(_ method: HTTPMethod = .get, _ target: String = "/", version: HTTPVersion = .http11,
                      _ headers: [(String, String)] = [("Host", "x")]) -> RequestHead {
        RequestHead(method: method, target: target, version: version, headers: HTTPHeaders(headers))
    }

    // MARK: - Valid requests

    func testSimpleGet() throws {
        let got = try parseEverySplit("GET /v2/library/alpine/manifests/3.20 HTTP/1.1\r\nHost: registry.local:5000\r\nUser-Agent: containerd/2.0\r\nAccept: application/vnd.oci.image.index.v1+json\r\n\r\n")
        let expected = RequestHead(
            method: .get, target: "/v2/library/alpine/manifests/3.20",
            headers: ["Host": "registry.local:5000", "User-Agent": "containerd/2.0",
                      "Accept": "application/vnd.oci.image.index.v1+json"])
        XCTAssertEqual(got, [.head(expected, .none), .end])
        guard case .head(let h, _) = got[0] else { return XCTFail() }
        XCTAssertEqual(h.method, .get)
        XCTAssertEqual(h.version, .http11)
        XCTAssertTrue(h.keepAlive)
        XCTAssertEqual(h.headers["user-agent"], "containerd/2.0")
        XCTAssertEqual(h.headers.count, 3)
    }

    func testKnownAndUnknownMethods() throws {
        let table: [(String, HTTPMethod)] = [
            ("GET", .get), ("HEAD", .head), ("POST", .post), ("PUT", .put), ("DELETE", .delete),
            ("PATCH", .patch), ("OPTIONS", .options), ("TRACE", .trace), ("CONNECT", .connect),
            ("PROPFIND", .unknown("PROPFIND")), ("get", .unknown("get")), ("X-Y~!#$%&'*+.^_`|", .unknown("X-Y~!#$%&'*+.^_`|")),
            ("GETS", .unknown("GETS")), ("HEA", .unknown("HEA")),
        ]
        for (token, method) in table {
            let got = try parse("\(token) / HTTP/1.1\r\nHost: x\r\n\r\n")
            XCTAssertEqual(got, [.head(head(method), .none), .end], token)
            XCTAssertEqual(method.name, token)
        }
    }

    func testTargetIsKeptRaw() throws {
        let target = "/v2/a%2Fb/../c//d/./e?n=1&last=%7E#frag"
        let got = try parse("GET \(target) HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertEqual(got, [.head(head(.get, target), .none), .end])
        let absolute = try parse("GET http://upstream.example/v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertEqual(absolute.first, .head(head(.get, "http://upstream.example/v2/"), .none))
        let asterisk = try parse("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertEqual(asterisk.first, .head(head(.options, "*"), .none))
    }

    func testLeadingEmptyLinesAreSkipped() throws {
        let got = try parseEverySplit("\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertEqual(got, [.head(head(), .none), .end])
    }

    func testOnlyEmptyLinesNeedMoreInput() throws {
        var parser = RequestParser()
        let input = Array("\r\n\r\n".utf8)
        let (event, used) = try input.withUnsafeBytes { try parser.parse($0) }
        XCTAssertNil(event)
        XCTAssertEqual(used, 4)
    }

    func testFieldValuesAreTrimmedAndOrderKept() throws {
        let got = try parseEverySplit("GET / HTTP/1.1\r\nHost:x\r\nX-A: \t one  two \t\r\nx-a:three\r\nEmpty:\r\nSpaces:   \r\nX-Obs: caf\u{E9}\r\n\r\n")
        let expected = head(.get, "/", [("Host", "x"), ("X-A", "one  two"), ("x-a", "three"), ("Empty", ""), ("Spaces", ""), ("X-Obs", "caf\u{E9}")])
        XCTAssertEqual(got, [.head(expected, .none), .end])
        guard case .head(let h, _) = got[0] else { return XCTFail() }
        XCTAssertEqual(h.headers.values("X-A"), ["one  two", "three"])
        let names = h.headers.map(\.name)
        XCTAssertEqual(names, ["Host", "X-A", "x-a", "Empty", "Spaces", "X-Obs"])
    }

    func testObsTextThatIsNotUTF8IsAccepted() throws {
        var bytes = Array("GET / HTTP/1.1\r\nHost: x\r\nX-Latin1: a".utf8)
        bytes += [0xE9, 0xFF]
        bytes += Array("b\r\n\r\n".utf8)
        var parser = RequestParser()
        let got = try events(&parser, bytes)
        guard case .head(let h, .none)? = got.first else { return XCTFail("\(got)") }
        XCTAssertEqual(h.headers["X-Latin1"], "a\u{FFFD}\u{FFFD}b")
    }

    func testContentLengthBody() throws {
        let got = try parseEverySplit("PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world")
        XCTAssertEqual(got, [
            .head(head(.put, "/upload", [("Host", "x"), ("Content-Length", "11")]), .length(11)),
            .body(Array("hello world".utf8)), .end,
        ])
    }

    func testContentLengthZeroEndsAtOnce() throws {
        let got = try parseEverySplit("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        XCTAssertEqual(got, [.head(head(.post, "/", [("Host", "x"), ("Content-Length", "0")]), .length(0)), .end])
    }

    func testEndFollowsHeadOnAnEmptyCall() throws {
        var parser = RequestParser()
        let input = Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        let first = try input.withUnsafeBytes { try parser.parse($0) }
        XCTAssertEqual(first.consumed, input.count)
        guard case .head(_, .none)? = first.event else { return XCTFail() }
        let empty = [UInt8]()
        let second = try empty.withUnsafeBytes { try parser.parse($0) }
        guard case .end? = second.event else { return XCTFail("expected .end, got \(String(describing: second.event))") }
        XCTAssertEqual(second.consumed, 0)
        let third = try empty.withUnsafeBytes { try parser.parse($0) }
        XCTAssertNil(third.event)
        XCTAssertEqual(third.consumed, 0)
    }

    func testBodyRangesIndexTheBufferPassedIn() throws {
        var parser = RequestParser()
        let input = Array("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET".utf8)
        try input.withUnsafeBytes { raw in
            let (e1, n1) = try parser.parse(raw)
            guard case .head? = e1 else { return XCTFail() }
            XCTAssertEqual(n1, input.count - 6)
            let rest = UnsafeRawBufferPointer(rebasing: raw[n1...])
            let (e2, n2) = try parser.parse(rest)
            guard case .body(let range)? = e2 else { return XCTFail() }
            XCTAssertEqual(range, 0..<3)
            XCTAssertEqual(n2, 3)
            let (e3, n3) = try parser.parse(UnsafeRawBufferPointer(rebasing: rest[n2...]))
            guard case .end? = e3 else { return XCTFail() }
            XCTAssertEqual(n3, 0)
            // The next request's first bytes are absorbed.
            let (e4, n4) = try parser.parse(UnsafeRawBufferPointer(rebasing: rest[n2...]))
            XCTAssertNil(e4)
            XCTAssertEqual(n4, 3)
        }
    }

    func testContentLengthListsWithOneValue() throws {
        let got = try parse("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3 , 3,3\r\nContent-Length: 3\r\n\r\nabc")
        XCTAssertEqual(got.count, 3)
        guard case .head(_, let framing) = got[0] else { return XCTFail() }
        XCTAssertEqual(framing, .length(3))
        XCTAssertEqual(got[1], .body(Array("abc".utf8)))
        let padded = try parse("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 007\r\n\r\n1234567")
        XCTAssertEqual(padded.dropFirst(), [.body(Array("1234567".utf8)), .end])
    }

    func testChunkedBodyWithExtensionsAndTrailers() throws {
        let text = "POST /chunks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + "5;name=value\r\nhello\r\n"
            + "1A ; a=\"quoted ; string\";b\r\nabcdefghijklmnopqrstuvwxyz\r\n"
            + "000A\r\n0123456789\r\n"
            + "0;last\r\nX-Checksum: abc\r\nX-Other:  v \r\n\r\n"
        let got = try parseEverySplit(text)
        XCTAssertEqual(got, [
            .head(head(.post, "/chunks", [("Host", "x"), ("Transfer-Encoding", "chunked")]), .chunked),
            .body(Array("helloabcdefghijklmnopqrstuvwxyz0123456789".utf8)),
            .end,
        ])
    }

    func testChunkedEmptyBodyAndEmptyTrailer() throws {
        let got = try parseEverySplit("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        XCTAssertEqual(got, [.head(head(.post, "/", [("Host", "x"), ("Transfer-Encoding", "chunked")]), .chunked), .end])
    }

    func testChunkedIsCaseInsensitiveWithOWS() throws {
        for value in ["Chunked", "CHUNKED", "  chunked\t", "chunked;q=1", ",chunked,"] {
            let got = try parse("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \(value)\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
            guard case .head(_, let framing)? = got.first else { return XCTFail(value) }
            XCTAssertEqual(framing, .chunked, value)
            XCTAssertEqual(got.dropFirst(), [.body(Array("abc".utf8)), .end], value)
        }
    }

    func testPipelinedRequests() throws {
        let text = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
            + "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"
            + "PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
            + "\r\nHEAD /d HTTP/1.0\r\n\r\n"
        let got = try parseEverySplit(text)
        XCTAssertEqual(got, [
            .head(head(.get, "/a"), .none), .end,
            .head(head(.post, "/b", [("Host", "x"), ("Content-Length", "4")]), .length(4)), .body(Array("body".utf8)), .end,
            .head(head(.put, "/c", [("Host", "x"), ("Transfer-Encoding", "chunked")]), .chunked), .body(Array("hi".utf8)), .end,
            .head(head(.head, "/d", version: .http10, []), .none), .end,
        ])
    }

    func testKeepAliveRules() throws {
        let cases: [(String, Bool)] = [
            ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", true),
            ("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", false),
            ("GET / HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive, CLOSE\r\n\r\n", false),
            ("GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nConnection: close\r\n\r\n", false),
            ("GET / HTTP/1.1\r\nHost: x\r\nConnection: closed\r\n\r\n", true),
            ("GET / HTTP/1.1\r\nHost: x\r\nX-Connection: close\r\n\r\n", true),
            ("GET / HTTP/1.0\r\n\r\n", false),
            ("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
            ("GET / HTTP/1.0\r\nConnection: TE, Keep-Alive\r\n\r\n", true),
            ("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", false),
        ]
        for (text, expected) in cases {
            let got = try parse(text)
            guard case .head(let h, _)? = got.first else { return XCTFail(text) }
            XCTAssertEqual(h.keepAlive, expected, text.debugDescription)
            // The public initialiser applies the same rule.
            XCTAssertEqual(RequestHead(method: h.method, target: h.target, version: h.version, headers: h.headers).keepAlive, expected)
        }
    }

    func testHTTP10WithoutHostIsAccepted() throws {
        let got = try parse("GET / HTTP/1.0\r\nAccept: */*\r\n\r\n")
        XCTAssertEqual(got, [.head(head(.get, "/", version: .http10, [("Accept", "*/*")]), .none), .end])
    }

    func testHeadExactlyAtLimitIsAccepted() throws {
        var limits = ParserLimits()
        let text = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        limits.maxHeadBytes = text.utf8.count
        XCTAssertEqual(try parseEverySplit(text, limits: limits).count, 2)
        limits.maxHeadBytes -= 1
        refused(text, 431, limits: limits)
    }

    func testHeaderCountAtLimitIsAccepted() throws {
        var limits = ParserLimits()
        limits.maxHeaders = 3
        XCTAssertEqual(try parse("GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\n\r\n", limits: limits).count, 2)
        refused("GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 431, limits: limits)
    }

    func testDefaultHeaderCountLimit() {
        let fields = (0..<101).map { "X-\($0): v\r\n" }.joined()
        refused("GET / HTTP/1.1\r\nHost: x\r\n\(fields)\r\n", 431)
    }

    func testLargeHeadFedByteByByte() throws {
        // 60 KiB of fields one byte per call: linear work, or this test takes minutes.
        let fields = (0..<99).map { "X-Field-\($0): \(String(repeating: "v", count: 600))\r\n" }.joined()
        let text = "GET / HTTP/1.1\r\nHost: x\r\n\(fields)\r\n"
        XCTAssertGreaterThan(text.utf8.count, 59_000)
        var parser = RequestParser()
        let got = try events(&parser, Array(text.utf8), pieces: bytewise(text.utf8.count))
        guard case .head(let h, .none)? = got.first else { return XCTFail() }
        XCTAssertEqual(h.headers.count, 100)
        XCTAssertEqual(h.headers["X-Field-98"]?.count, 600)
    }

    func testBodyLimit() throws {
        var limits = ParserLimits()
        limits.maxBodyBytes = 10
        XCTAssertEqual(try parse("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789", limits: limits).count, 3)
        refused("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n", 413, limits: limits)
        refused("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 1048577\r\n\r\n", 413)
        XCTAssertEqual(try parse("PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n01234\r\n5\r\n56789\r\n0\r\n\r\n", limits: limits).count, 3)
        refused("PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n01234\r\n6\r\n", 413, limits: limits)
        refused("PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n", 413)
    }

    // MARK: - Refusals: request line

    func testRequestLineRefusals() {
        refused("GET / http/1.1\r\nHost: x\r\n\r\n", 400)
        refused("GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400)
        refused("GET /  HTTP/1.1\r\nHost: x\r\n\r\n", 400)
        refused("GET / HTTP/1.1 \r\nHost: x\r\n\r\n", 400)
        refused(" GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400)
        refused("GET\t/ HTTP/1.1\r\nHost: x\r\n\r\n", 400)
        refused("G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400)
        refused("G\u{C9}T / HTTP/1.1\r\nHost: x\r\n\r\n", 400)
        refused("GET\r\nHost: x\r\n\r\n", 400)
        refused("GET /\r\n\r\n", 400)       // HTTP/0.9
        refused("GET /\r\n", 400)
        refused("GET /a\u{7F}b HTTP/1.1\r\nHost: x\r\n\r\n", 400)
        refused("GET /caf\u{E9} HTTP/1.1\r\nHost: x\r\n\r\n", 400)
        refused("GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n", 400)
        refused("GET / HTTP/1\r\nHost: x\r\n\r\n", 400)
        refused("GET / HTTP/1.10\r\nHost: x\r\n\r\n", 400)
        refused("GET / HTTPS/1.1\r\nHost: x\r\n\r\n", 400)
        refused("GET / HTTP/a.1\r\nHost: x\r\n\r\n", 400)
        refused("GET / HTTP/1,1\r\nHost: x\r\n\r\n", 400)
    }

    /// Found by Fuzz/ `request`: a bad start line followed by an oversized head was 431 when the head
    /// arrived in one read and 400 when it arrived in pieces. The start line is judged first either way.
    func testBadRequestLineBeforeAnOversizedHeadIsRefusedTheSameWhateverTheReads() {
        var limits = ParserLimits()
        limits.maxHeadBytes = 64
        refused("GET /\r\nHost: x\r\nA: " + String(repeating: "a", count: 80) + "\r\n\r\n", 400, limits: limits)
        limits = ParserLimits()
        limits.maxHeaders = 2
        refused("GET /\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 400, limits: limits)
        refused("GET /\r\nA: 1\nB: 2\r\n\r\n", 400, limits: limits)
    }

    /// Found by Fuzz/ `request`: a line starting with CR and ended by a bare LF was "bare LF" in one
    /// read and "bare CR" in pieces. The reason reaches the client, so it must not depend on the reads.
    func testSameRefusalReasonWhateverTheReads() {
        for text in ["GET / HTTP/1.1\r\nHost: a\r\n\rxx\n\r\n", "GET / HTTP/1.1\r\nHost: a\r\n\r\u{0}\n"] {
            let bytes = Array(text.utf8)
            let whole = parseError(RequestParser(), bytes)
            XCTAssertEqual(whole?.reason, "bare CR")
            XCTAssertEqual(parseError(RequestParser(), bytes, pieces: bytewise(bytes.count)), whole)
        }
    }

    func testUnsupportedVersions() {
        refused("GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505)
        refused("GET / HTTP/1.2\r\nHost: x\r\n\r\n", 505)
        refused("GET / HTTP/0.9\r\nHost: x\r\n\r\n", 505)
        refused("GET / HTTP/3.0\r\n\r\n", 505)
    }

    func testRequestLineTooLong() {
        var limits = ParserLimits()
        limits.maxHeadBytes = 64
        let target = "/" + String(repeating: "a", count: 100)
        refused("GET \(target) HTTP/1.1\r\nHost: x\r\n\r\n", 414, limits: limits)
        // Refused before the line ends.
        refused("GET \(target)", 414, limits: limits)
        // A request line that ends exactly at the limit, then fields that overflow it.
        let line = "GET /" + String(repeating: "b", count: 64 - 16) + " HTTP/1.1\r\n"
        XCTAssertEqual(line.utf8.count, 64)
        refused(line + "Host: x\r\n\r\n", 431, limits: limits)
        refused("GET /" + String(repeating: "a", count: 70_000) + " HTTP/1.1\r\nHost: x\r\n\r\n", 414)
    }

    func testHeaderSectionTooLarge() {
        var limits = ParserLimits()
        limits.maxHeadBytes = 64
        refused("GET / HTTP/1.1\r\nHost: x\r\nX-Long: \(String(repeating: "v", count: 100))\r\n\r\n", 431, limits: limits)
        refused("GET / HTTP/1.1\r\nHost: x\r\nX-Long: \(String(repeating: "v", count: 100))", 431, limits: limits)
        refused("GET / HTTP/1.1\r\nHost: x\r\nX-Long: \(String(repeating: "v", count: 70_000))\r\n\r\n", 431)
    }

    // MARK: - Refusals: fields

    func testFieldSyntaxRefusals() {
        refused("GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400)
        refused("GET / HTTP/1.1\r\nHost\t: x\r\n\r\n", 400)
        refused("GET / HTTP/1.1\r\nHost: x\r\n: empty\r\n\r\n", 400)
        refused("GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", 400)
        refused("GET / HTTP/1.1\r\nHost: x\r\nBad(Name): v\r\n\r\n", 400)
        refused("GET / HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\n\r\n", 400)   // obs-fold
        refused("GET / HTTP/1.1\r\nHost: x\r\nX-A: one\r\n\ttwo\r\n\r\n", 400)
        refused("GET / HTTP/1.1\r\n Host: x\r\n\r\n", 400)
    }

    func testControlBytesInValues() {
        refused("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\u{0}b\r\n\r\n", 400)
        refused("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\u{1}b\r\n\r\n", 400)
        refused("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\u{7F}b\r\n\r\n", 400)
        refused("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\u{1B}b\r\n\r\n", 400)
        refused("GET / HTTP/1.1\r\nHost: x\r\nX-A: \u{0}\r\n\r\n", 400)
    }

    /// The value and target checks look at eight bytes at a time: a bad byte at any offset must be found.
    func testBadByteAtEveryOffset() throws {
        for offset in 0..<20 {
            for bad in [0x00, 0x01, 0x08, 0x0B, 0x1F, 0x7F] as [UInt8] {
                var value = Array(repeating: UInt8(ascii: "v"), count: 20)
                value[offset] = bad
                let bytes = Array("GET / HTTP/1.1\r\nHost: x\r\nX-A: ".utf8) + value + Array("\r\n\r\n".utf8)
                XCTAssertEqual(parseError(RequestParser(), bytes)?.status, 400, "value byte \(bad) at \(offset)")
            }
            for bad in [0x09, 0x7F, 0x80, 0xFF, 0x00, 0x1F] as [UInt8] {
                var target = Array("/".utf8) + Array(repeating: UInt8(ascii: "t"), count: 19)
                target[offset] = bad
                let bytes = Array("GET ".utf8) + target + Array(" HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
                XCTAssertEqual(parseError(RequestParser(), bytes)?.status, 400, "target byte \(bad) at \(offset)")
            }
            // HTAB, SP and obs-text are allowed anywhere inside a value.
            for good in [0x09, 0x20, 0x80, 0xFF] as [UInt8] {
                var value = Array(repeating: UInt8(ascii: "v"), count: 20)
                value[offset] = good
                if offset == 0 || offset == 19 { value[offset] = good >= 0x80 ? good : UInt8(ascii: "v") }
                let bytes = Array("GET / HTTP/1.1\r\nHost: x\r\nX-A: ".utf8) + value + Array("\r\n\r\n".utf8)
                var parser = RequestParser()
                let got = try events(&parser, bytes)
                XCTAssertEqual(got.count, 2, "value byte \(good) at \(offset)")
            }
        }
    }

    func testBareLFAndBareCR() {
        refused("GET / HTTP/1.1\nHost: x\r\n\r\n", 400)
        refused("GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n", 400)
        refused("GET / HTTP/1.1\r\nHost: x\r\n\n", 400)
        refused("GET / HTTP/1.1\r\nHost: x\n\n", 400)
        refused("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400)
        refused("GET / HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n", 400)
        refused("GET / HTTP/1.1\r\nHost: x\r\n\r\r\n", 400)
        refused("GET /\r HTTP/1.1\r\nHost: x\r\n\r\n", 400)
        refused("\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 400)
        refused("\rGET / HTTP/1.1\r\nHost: x\r\n\r\n", 400)
    }

    func testHostRules() {
        refused("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400)
        refused("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400)
        refused("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400)
        refused("GET / HTTP/1.0\r\nHost: a\r\nHOST: b\r\n\r\n", 400)
    }

    // MARK: - Refusals: framing

    func testContentLengthRefusals() {
        for value in ["+5", "-5", "5 5", "5a", "0x10", "", " ", "5,", ",5", "5,,5", "1.0", "\u{0663}"] {
            refused("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \(value)\r\n\r\n", 400)
        }
        refused("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\n", 400)
        refused("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400)
        refused("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551616\r\n\r\n", 400)
        refused("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400)
    }

    func testTransferEncodingRefusals() {
        refused("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400)
        refused("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400)
        refused("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400)
        refused("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400)
        refused("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n", 400)
        refused("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400)
        refused("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \r\n\r\n", 400)
        refused("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400)
        refused("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400)
        refused("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked x\r\n\r\n", 400)
        refused("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501)
        refused("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", 501)
        refused("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: deflate , CHUNKED\r\n\r\n", 501)
    }

    func testChunkedFramingRefusals() {
        let head = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        refused(head + "00000000000000001\r\nx\r\n0\r\n\r\n", 400)   // 17 hex digits
        refused(head + "10000000000000000\r\n", 400)
        refused(head + "\r\n", 400)                                  // empty size
        refused(head + ";ext\r\n", 400)
        refused(head + "g\r\n", 400)
        refused(head + "-1\r\n", 400)
        refused(head + "0x5\r\n", 400)
        refused(head + "5 5\r\nhello\r\n", 400)
        refused(head + "5\nhello\r\n0\r\n\r\n", 400)                 // bare LF after size
        refused(head + "5\rhello\r\n0\r\n\r\n", 400)                 // bare CR after size
        refused(head + "5;a\u{0}b\r\nhello\r\n0\r\n\r\n", 400)       // CTL in extension
        refused(head + "5\r\nhelloXX0\r\n\r\n", 400)                 // data not followed by CRLF
        refused(head + "5\r\nhello\n0\r\n\r\n", 400)
        refused(head + "5\r\nhello\rX0\r\n\r\n", 400)
        refused(head + "5\r\nhello!\r\n0\r\n\r\n", 400)              // more data than the size
        refused(head + "0\r\nBad Trailer: x\r\n\r\n", 400)
        refused(head + "0\r\nX-T: a\r\n folded\r\n\r\n", 400)
        refused(head + "0\r\nX-T: a\u{1}\r\n\r\n", 400)
        refused(head + "0\r\nX-T: a\n\r\n", 400)
        refused(head + "0\r\n\n", 400)
        refused(head + "5;" + String(repeating: "e", count: 5000) + "\r\nhello\r\n0\r\n\r\n", 400)
    }

    func testTrailersCountAgainstHeadLimits() throws {
        let head = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        var limits = ParserLimits()
        limits.maxHeadBytes = head.utf8.count + 10
        // 10 bytes of trailer fields plus the final CRLF fit.
        XCTAssertEqual(try parse(head + "0\r\nX-T: 123\r\n\r\n", limits: limits).last, .end)
        refused(head + "0\r\nX-T: 1234\r\n\r\n", 431, limits: limits)
        limits = ParserLimits()
        limits.maxHeaders = 3
        XCTAssertEqual(try parse(head + "0\r\nX-T: 1\r\n\r\n", limits: limits).last, .end)
        refused(head + "0\r\nX-T: 1\r\nX-U: 2\r\n\r\n", 431, limits: limits)
    }

    func testErrorDescription() {
        let error = parseError(RequestParser(), Array("GET / HTTP/1.1\r\n\r\n".utf8))
        XCTAssertEqual(error?.status, 400)
        XCTAssertEqual(error?.description, "400 missing Host field")
    }
}
