import Foundation
import XCTest

/// Berth against an in-process fake upstream that misbehaves on purpose.
final class FaultInjectionTests: IntegrationTestCase {
    private let size = 1 << 20

    private func randomBytes(_ n: Int) -> [UInt8] {
        var g = SystemRandomNumberGenerator()
        return (0..<n).map { _ in UInt8.random(in: 0...255, using: &g) }
    }

    /// The client must be able to tell: curl failed, or the body is short of its Content-Length.
    private func assertDownloadFailed(_ r: CurlResult, expectedLength: Int, file: StaticString = #filePath, line: UInt = #line) {
        let declared = r.headers["content-length"].flatMap(Int.init) ?? expectedLength
        let failed = r.exitCode != 0 || r.status != 200 || r.body.count < declared
        XCTAssertTrue(failed, "the client took a bad body for a whole one: status \(r.status), exit \(r.exitCode), \(r.body.count) bytes",
                      file: file, line: line)
    }

    private func assertNothingCached(_ berth: BerthProcess, _ digest: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue(waitUntil(5) { berth.partialFiles().isEmpty }, "temp fill left: \(berth.partialFiles())", file: file, line: line)
        XCTAssertFalse(berth.isCached(digest), "a failed fill must not be cached", file: file, line: line)
    }

    func testBlobNotMatchingItsDigestFailsAndIsNotCached() throws {
        let upstream = try startFakeUpstream()
        let good = randomBytes(size)
        let digest = "sha256:" + sha256Hex(good)
        var bad = good
        for i in stride(from: 0, to: bad.count, by: 4096) { bad[i] ^= 0x5a }
        upstream.route("/v2/test/bad/blobs/\(digest)", FakeUpstream.serve(bad, digest: digest))
        let berth = try startBerth(upstream: upstream.url)

        for attempt in 1...2 {
            let r = try get(berth, "/v2/test/bad/blobs/\(digest)", timeout: 25)
            assertDownloadFailed(r, expectedLength: size)
            XCTAssertNotEqual(sha256Hex(r.body), sha256Hex(bad), "attempt \(attempt): the corrupt body never arrives whole")
            assertNothingCached(berth, digest)
            XCTAssertEqual(upstream.count(method: "GET", path: "/v2/test/bad/blobs/\(digest)"), attempt, "nothing cached: fetched again")
        }
    }

    func testUpstreamCutMidBodyFailsAndIsNotCached() throws {
        let upstream = try startFakeUpstream()
        let good = randomBytes(size)
        let digest = "sha256:" + sha256Hex(good)
        upstream.route("/v2/test/cut/blobs/\(digest)", FakeUpstream.cut(good, after: size / 2, digest: digest))
        let berth = try startBerth(upstream: upstream.url)

        let r = try get(berth, "/v2/test/cut/blobs/\(digest)", timeout: 25)
        assertDownloadFailed(r, expectedLength: size)
        assertNothingCached(berth, digest)
    }

    func testRateLimitedManifestPassesRetryAfter() throws {
        let upstream = try startFakeUpstream()
        upstream.route("/v2/test/limited/manifests/v1", FakeUpstream.rateLimited(retryAfter: "17"))
        let berth = try startBerth(upstream: upstream.url)

        let r = try get(berth, "/v2/test/limited/manifests/v1", headers: ["Accept: \(allManifestTypes)"])
        XCTAssertEqual(r.status, 429, r.bodyText)
        XCTAssertEqual(r.headers["retry-after"], "17")
        XCTAssertTrue(r.bodyText.contains("TOOMANYREQUESTS"), r.bodyText)
        XCTAssertEqual(upstream.count(method: "GET", path: "/v2/test/limited/manifests/v1"), 1)
    }
}
