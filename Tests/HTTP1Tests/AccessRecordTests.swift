import Foundation
import HTTP1
import Reactor
import XCTest
import TestSupport

final class RequestIDTests: XCTestCase {
    func testWellFormedIDsAreAccepted() {
        for id in ["a", "req-123", "A.b_c-D", String(repeating: "x", count: 64), "0123456789abcdef"] {
            XCTAssertTrue(RequestID.isValid(id), id)
        }
    }

    func testMalformedIDsAreRefused() {
        for id in ["", String(repeating: "x", count: 65), "a b", "a\r\nX-Evil: 1", "a\nb", "a\0b", "a\"b", "a\\b", "a/b",
                   "ünï", "a;b", "a\tb", "{\"x\":1}"] {
            XCTAssertFalse(RequestID.isValid(id), id.debugDescription)
        }
    }

    func testGeneratedIDsAreValidAndDistinct() {
        let g = RequestIDGenerator()
        let ids = (0..<1000).map { _ in g.next() }
        XCTAssertEqual(Set(ids).count, 1000)
        XCTAssertTrue(ids.allSatisfy(RequestID.isValid), ids[0])
        XCTAssertTrue(ids[0].hasPrefix(g.prefix))
        XCTAssertNotEqual(RequestIDGenerator().prefix, g.prefix, "a random prefix per generator (process)")
    }

    func testClientIDIsReusedOnlyWhenWellFormed() {
        let g = RequestIDGenerator(prefix: "p-")
        XCTAssertEqual(g.id(for: HTTPHeaders([("x-request-id", "abc.123")])), "abc.123")
        XCTAssertEqual(g.id(for: HTTPHeaders([("X-Request-Id", "bad id")])), "p-1")
        XCTAssertEqual(g.id(for: HTTPHeaders([("X-Request-Id", "")])), "p-2")
        XCTAssertEqual(g.id(for: HTTPHeaders()), "p-3")
    }
}

final class AccessRecordTests: XCTestCase {
    private func record(target: String? = "/v2/library/alpine/manifests/3.20") -> AccessRecord {
        AccessRecord(unixMillis: 1_796_304_629_123, requestID: "r-1", client: "127.0.0.1:40000", method: "GET", target: target,
                     status: 200, bodyBytes: 1234, durationNanos: 1_234_567)
    }

    private func decode(_ r: AccessRecord, file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        let text = r.line
        XCTAssertTrue(text.hasSuffix("}\n"), file: file, line: line)
        XCTAssertEqual(text.filter { $0 == "\n" }.count, 1, "one line: \(text)", file: file, line: line)
        return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], text, file: file, line: line)
    }

    func testEveryFieldRendersAsJSON() throws {
        var r = record()
        r.notes.user = "alice"
        r.notes.upstream = "docker.io"
        r.notes.repository = "library/alpine"
        r.notes.reference = "3.20"
        r.notes.cacheStatus = "fwd=miss; stored"
        r.notes.addUpstreamWait(2_000_500)
        r.notes.addUpstreamWait(1_000_000)
        r.notes.error = "MANIFEST_UNKNOWN"
        r.notes.errorMessage = "manifest library/alpine:3.20 not found"
        r.status = 404
        let j = try decode(r)
        XCTAssertEqual(j["time"] as? String, "2026-12-03T13:30:29.123Z")
        XCTAssertEqual(j["request_id"] as? String, "r-1")
        XCTAssertEqual(j["client"] as? String, "127.0.0.1:40000")
        XCTAssertEqual(j["user"] as? String, "alice")
        XCTAssertEqual(j["method"] as? String, "GET")
        XCTAssertEqual(j["path"] as? String, "/v2/library/alpine/manifests/3.20")
        XCTAssertEqual(j["upstream"] as? String, "docker.io")
        XCTAssertEqual(j["repository"] as? String, "library/alpine")
        XCTAssertEqual(j["reference"] as? String, "3.20")
        XCTAssertEqual(j["status"] as? Int, 404)
        XCTAssertEqual(j["cache_status"] as? String, "fwd=miss; stored")
        XCTAssertEqual(j["bytes"] as? Int, 1234)
        XCTAssertEqual(j["duration_ms"] as? Double, 1.234)
        XCTAssertEqual(j["upstream_ms"] as? Double, 3.0)
        XCTAssertEqual(j["error"] as? String, "MANIFEST_UNKNOWN")
        XCTAssertEqual(j["error_message"] as? String, "manifest library/alpine:3.20 not found")
        XCTAssertNil(j["incomplete"])
    }

    func testCacheStatusIsLoggedWithoutBerthsName() throws {
        var r = record()
        r.notes.cacheStatus = "Berth; hit; detail=revalidated"
        XCTAssertEqual(try decode(r)["cache_status"] as? String, "hit; detail=revalidated")
    }

    func testAbsentNotesAreLeftOut() throws {
        var r = record(target: nil)
        r.method = nil
        r.client = nil
        r.status = 0
        r.isComplete = false
        let j = try decode(r)
        XCTAssertEqual(Set(j.keys), ["time", "request_id", "status", "bytes", "duration_ms", "incomplete"])
        XCTAssertEqual(j["incomplete"] as? Bool, true)
    }

    func testHostilePathsStayOneValidLine() throws {
        let hostile = ["/v2/a\"b/manifests/\\x", "/v2/\u{01}\u{7f}\u{1b}[31m/x", "/v2/ünïcode/☃/manifests/1", "/v2/\"},{\"status\":200"]
        for path in hostile {
            XCTAssertEqual(try decode(record(target: path))["path"] as? String, path, path.debugDescription)
        }
        // Fields the client controls less directly escape the same way.
        var r = record()
        r.notes.user = "a\"\n\\"
        r.notes.errorMessage = "line\r\nbreak\ttab"
        let j = try decode(r)
        XCTAssertEqual(j["user"] as? String, "a\"\n\\")
        XCTAssertEqual(j["error_message"] as? String, "line\r\nbreak\ttab")
    }

    func testQueryValuesThatCouldBeSecretsAreRedacted() {
        XCTAssertEqual(loggablePath("/v2/x/manifests/1?ns=docker.io"), "/v2/x/manifests/1?ns=docker.io")
        XCTAssertEqual(loggablePath("/v2/x/tags/list?n=10&last=b"), "/v2/x/tags/list?n=10&last=b")
        XCTAssertEqual(loggablePath("/v2/x/tags/list?n=10&token=s3cr3t&access_token=t"), "/v2/x/tags/list?n=10&redacted&redacted")
        XCTAssertEqual(loggablePath("/v2/?s3cr3t"), "/v2/?redacted")
        XCTAssertEqual(loggablePath("/v2/x/referrers/sha256:ab?artifactType=a%2Fb"), "/v2/x/referrers/sha256:ab?artifactType=a%2Fb")
        XCTAssertEqual(loggablePath("http://user:pass@127.0.0.1:5000/v2/x/manifests/1?ns=a"), "/v2/x/manifests/1?ns=a")
        XCTAssertEqual(loggablePath("http://user:pass@127.0.0.1:5000"), "")
        XCTAssertEqual(loggablePath("/plain"), "/plain")
    }

    func testTimesAreRFC3339UTCWithMilliseconds() {
        func time(_ ms: Int64) -> String {
            var out: [UInt8] = []
            AccessRecord(unixMillis: ms, requestID: "r", client: nil, method: nil, target: nil, status: 0, bodyBytes: 0, durationNanos: 0)
                .render(into: &out)
            return String(decoding: out, as: UTF8.self).components(separatedBy: "\"")[3]
        }
        XCTAssertEqual(time(0), "1970-01-01T00:00:00.000Z")
        XCTAssertEqual(time(951_782_400_007), "2000-02-29T00:00:00.007Z")
        XCTAssertEqual(time(4_107_542_399_999), "2100-02-28T23:59:59.999Z")
        XCTAssertEqual(time(1_796_304_629_123), "2026-12-03T13:30:29.123Z")
    }
}

final class AccessLogTests: XCTestCase {
    private var directory: String!

    override func setUp() { directory = TestPKI.makeTemporaryDirectory("access-log") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: directory) }

    private final class Warnings: @unchecked Sendable {  // `lines` behind `lock`
        let lock = NSLock()
        var lines: [String] = []
        func add(_ s: String) { lock.withLock { lines.append(s) } }
        var all: [String] { lock.withLock { lines } }
    }

    func testLinesReachTheFileInOrder() throws {
        let pool = BlockingPool(threads: 1)
        defer { pool.shutdown() }
        let path = directory + "/access.log"
        let warnings = Warnings()
        let log = try AccessLog.open(path, pool: pool, warn: warnings.add)
        for i in 0..<500 { log.append(Array("line \(i)\n".utf8)) }
        let expected = (0..<500).map { "line \($0)\n" }.joined()
        XCTAssertTrue(waitUntil(10) { (try? String(contentsOfFile: path, encoding: .utf8)) == expected })
        pool.shutdown()
        log.close()
        XCTAssertEqual(warnings.all, [])
    }

    func testAFullBufferDropsCountsAndSaysSoOnce() throws {
        let pool = BlockingPool(threads: 1)
        defer { pool.shutdown() }
        // Hold the only pool thread, so nothing is written while lines pile up.
        let gate = DispatchSemaphore(value: 0)
        pool.submit { gate.wait() }
        let path = directory + "/access.log"
        let warnings = Warnings()
        let fd = try Posix.open(path: path, flags: O_WRONLY | O_CREAT | O_APPEND, mode: 0o600)
        let log = AccessLog(fd: fd, ownsDescriptor: true, pool: pool, capacity: 100, warn: warnings.add)
        let line = Array("0123456789\n".utf8)  // 11 bytes: 9 fit in 100
        for _ in 0..<30 { log.append(line) }
        XCTAssertEqual(warnings.all.count, 1, "\(warnings.all)")
        XCTAssertTrue(warnings.all.first?.contains("dropping") == true)
        gate.signal()
        XCTAssertTrue(waitUntil(10) { warnings.all.count == 2 }, "\(warnings.all)")
        XCTAssertEqual(warnings.all.last, "access log: 21 lines dropped while the writer was behind")
        XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8), String(repeating: "0123456789\n", count: 9))
        pool.shutdown()
        log.close()
    }

    func testWriteErrorsAreReportedOnce() throws {
        let pool = BlockingPool(threads: 1)
        defer { pool.shutdown() }
        let warnings = Warnings()
        // Every write to /dev/full fails with ENOSPC, as on a full disk.
        let fd = try Posix.open(path: "/dev/full", flags: O_WRONLY)
        let log = AccessLog(fd: fd, ownsDescriptor: true, pool: pool, warn: warnings.add)
        log.append(Array("a\n".utf8))
        XCTAssertTrue(waitUntil(10) { warnings.all.count == 1 })
        log.append(Array("b\n".utf8))
        pool.shutdown()  // the second write has failed too, silently
        log.close()
        XCTAssertEqual(warnings.all.count, 1, "\(warnings.all)")
        XCTAssertTrue(warnings.all[0].hasPrefix("access log: write failed"), warnings.all[0])
    }
}
