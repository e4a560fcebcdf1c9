import Foundation
import XCTest
import HTTP1
import TestSupport

/// Berth against an in-process fake upstream that misbehaves on purpose.
final class FaultInjectionTests: IntegrationTestCase {
    private let size = 1 << 20

    private func randomBytes(_ n: Int) -> [UInt8] {
        let urandom = FileHandle(forReadingAtPath: "/dev/urandom")!
        defer { try? urandom.close() }
        var out: [UInt8] = []
        while out.count < n {
            let chunk = urandom.readData(ofLength: n - out.count)
            precondition(!chunk.isEmpty, "/dev/urandom returned nothing")
            out += chunk
        }
        return out
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

    /// A stalled upstream: Range requests joining the fill are answered as
    /// soon as the fill has passed their range, later ones when it gets there,
    /// all from the one upstream GET.
    func testRangeRequestsFollowAStalledFill() throws {
        let upstream = try startFakeUpstream()
        let size = 4 << 20
        let good = randomBytes(size)
        let digest = "sha256:" + sha256Hex(good)
        let path = "/v2/test/slow/blobs/\(digest)"
        upstream.route(path, FakeUpstream.stall(good, after: 1 << 20, stallNanos: 3_000_000_000, digest: digest))
        let berth = try startBerth(upstream: upstream.url)
        let url = berth.url + path

        let started = Date()
        let whole = try Subprocess(["curl", "-s", "-o", "\(workDir!)/slow-whole", "-w", "%{http_code}", "--max-time", "20", url], in: workDir)
        XCTAssertTrue(waitUntil(5) { upstream.count(method: "GET", path: path) == 1 }, "the fill started")
        usleep(300_000)
        let early = try get(berth, path, headers: ["Range: bytes=100-199"], timeout: 20)
        let earlyDone = Date().timeIntervalSince(started)
        let late = try Subprocess(["curl", "-s", "-D", "\(workDir!)/slow-late.h", "-o", "\(workDir!)/slow-late", "-w", "%{http_code}",
                                   "-H", "Range: bytes=\(3 << 20)-", "--max-time", "20", url], in: workDir)
        let suffix = try Subprocess(["curl", "-s", "-o", "\(workDir!)/slow-suffix", "-w", "%{http_code}",
                                     "-H", "Range: bytes=-100", "--max-time", "20", url], in: workDir)

        XCTAssertEqual(early.status, 206)
        XCTAssertEqual(early.headers["content-range"], "bytes 100-199/\(size)")
        XCTAssertTrue(early.body == Array(good[100..<200]), "early range bytes")
        XCTAssertLessThan(earlyDone, 2.5, "a range the fill has passed does not wait for the stalled rest")

        for c in [whole, late, suffix] { XCTAssertTrue(c.waitForExit(seconds: 25)) }
        XCTAssertEqual(whole.stdout, "200")
        XCTAssertEqual(sha256Hex(file: "\(workDir!)/slow-whole").map { "sha256:" + $0 }, digest)
        XCTAssertEqual(late.stdout, "206")
        XCTAssertEqual(Curl.parseHeaders("\(workDir!)/slow-late.h")["content-range"], "bytes \(3 << 20)-\(size - 1)/\(size)")
        XCTAssertTrue(readBytes("\(workDir!)/slow-late") == Array(good[(3 << 20)...]), "late range bytes")
        XCTAssertEqual(suffix.stdout, "206")
        XCTAssertTrue(readBytes("\(workDir!)/slow-suffix") == Array(good[(size - 100)...]), "suffix range bytes")
        XCTAssertEqual(upstream.count(method: "GET", path: path), 1, "one upstream GET for all of them")
        XCTAssertTrue(waitUntil(10) { berth.isCached(digest) })
    }

    /// DECISIONS: a client behind a hung upstream gets an answer within 20 s.
    /// Each stage has its own timeout; here a slow ping (12 s) and a hung
    /// manifest request (15 s head timeout) would add up to 27 s without the
    /// overall deadline.
    func testSlowPingAndHungManifestAnswer504Within20Seconds() throws {
        let upstream = try startFakeUpstream()
        upstream.route("/v2/") { w in
            w.loop.schedule(afterNanos: 12_000_000_000) {
                var head = ResponseHead(status: 200)
                head.headers.add("Content-Type", "application/json")
                w.respond(head, body: Array("{}".utf8))
            }
        }
        upstream.route("/v2/test/hung/manifests/v1") { _ in }  // never answers
        let berth = try startBerth(upstream: upstream.url, workers: 1)
        let started = Date()
        let r = try get(berth, "/v2/test/hung/manifests/v1", headers: ["Accept: \(allManifestTypes)"], timeout: 40)
        let took = Date().timeIntervalSince(started)
        XCTAssertEqual(r.status, 504, r.bodyText)
        XCTAssertTrue(r.bodyText.contains("UNAVAILABLE"), r.bodyText)
        XCTAssertLessThan(took, 22, "answered within the 20 s deadline")
        XCTAssertGreaterThan(took, 18, "the deadline, not an earlier stage, answered")
    }

    /// An expired tag whose revalidation meets 429 or 503 is served stale;
    /// nothing cached by digest asks the upstream at all.
    func testRateLimitedOrFailingRevalidationServesStaleTag() throws {
        let upstream = try startFakeUpstream()
        let manifest = jsonBytes([
            "schemaVersion": 2, "mediaType": ImageBuilder.ociManifest,
            "config": ["mediaType": ImageBuilder.emptyConfig, "size": 2,
                       "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"],
            "layers": [] as [Any],
        ] as [String: Any])
        let digest = "sha256:" + sha256Hex(manifest)
        let path = "/v2/test/flaky/manifests/v1"
        upstream.route(path) { w in
            var head = ResponseHead(status: 200)
            head.headers.add("Content-Type", ImageBuilder.ociManifest)
            head.headers.add("Docker-Content-Digest", digest)
            w.respond(head, body: manifest)
        }
        let berth = try startBerth(upstream: upstream.url, arguments: ["--tag-ttl", "0s"])
        let accept = ["Accept: \(allManifestTypes)"]
        let first = try get(berth, path, headers: accept)
        XCTAssertEqual(first.status, 200, first.bodyText)
        XCTAssertEqual(first.body, manifest)
        XCTAssertTrue(waitUntil(5) { berth.isCached(digest) }, "the manifest is stored")

        for failure in [FakeUpstream.rateLimited(retryAfter: "30"), { w in w.respond(ResponseHead(status: 503), body: []) }] as [FakeUpstream.Route] {
            upstream.route(path, failure)
            let r = try get(berth, path, headers: accept)
            XCTAssertEqual(r.status, 200, "stale-if-error: \(r.bodyText)")
            XCTAssertEqual(r.body, manifest)
            XCTAssertEqual(r.headers["docker-content-digest"], digest)
        }
        let asked = upstream.count(method: "GET", path: "/v2/test/flaky/manifests/\(digest)") + upstream.count(method: "HEAD", path: "/v2/test/flaky/manifests/\(digest)")
        let byDigest = try get(berth, "/v2/test/flaky/manifests/\(digest)", headers: accept)
        XCTAssertEqual(byDigest.status, 200)
        XCTAssertEqual(byDigest.body, manifest)
        XCTAssertEqual(upstream.count(method: "GET", path: "/v2/test/flaky/manifests/\(digest)")
                       + upstream.count(method: "HEAD", path: "/v2/test/flaky/manifests/\(digest)"), asked, "a cached digest needs no upstream")
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

    // MARK: issue 8 regressions

    /// Defect 1: a fetch that broke before the upstream's head (a reset) left
    /// its fill in the single-flight table for good: every later GET of the
    /// digest waited 20 s for a 504 without asking the upstream again.
    func testFetchFailingBeforeTheHeadEndsTheFillAndTheNextRequestFetchesAgain() throws {
        let upstream = try startFakeUpstream()
        let good = randomBytes(64 << 10)
        let digest = "sha256:" + sha256Hex(good)
        let path = "/v2/test/reset/blobs/\(digest)"
        upstream.route(path) { w in w.abort() }
        let berth = try startBerth(upstream: upstream.url)

        let failed = try get(berth, path, timeout: 30)
        XCTAssertEqual(failed.status, 502, "the reader hears of the reset, not the 20 s deadline: \(failed.bodyText)")
        XCTAssertTrue(failed.bodyText.contains("UNAVAILABLE"), failed.bodyText)
        assertNothingCached(berth, digest)
        let attempts = upstream.count(method: "GET", path: path)
        XCTAssertGreaterThanOrEqual(attempts, 1)

        upstream.route(path, FakeUpstream.serve(good, digest: digest))
        let r = try get(berth, path, timeout: 30)
        XCTAssertEqual(r.status, 200, r.bodyText)
        XCTAssertTrue(r.body == good, "exact bytes once the upstream recovered")
        XCTAssertEqual(upstream.count(method: "GET", path: path), attempts + 1, "the next request fetched again")
        XCTAssertTrue(waitUntil(10) { berth.isCached(digest) })
        XCTAssertTrue(berth.partialFiles().isEmpty, "\(berth.partialFiles())")
    }

    /// Defect 2: `Content-Length: 0` for a digest that is not the empty blob's
    /// reached the client as a complete 200 with an empty body, unverified.
    func testEmptyBodyForANonEmptyDigestIsNotDeliveredAsComplete() throws {
        let upstream = try startFakeUpstream()
        let digest = "sha256:" + sha256Hex(Array("not empty".utf8))
        let path = "/v2/test/empty/blobs/\(digest)"
        upstream.route(path, FakeUpstream.serve([], digest: digest))
        let emptyDigest = "sha256:" + sha256Hex([])
        let emptyPath = "/v2/test/empty/blobs/\(emptyDigest)"
        upstream.route(emptyPath, FakeUpstream.serve([], digest: emptyDigest))
        let berth = try startBerth(upstream: upstream.url)

        let r = try get(berth, path, timeout: 30)
        XCTAssertEqual(r.status, 502, "an empty body that does not hash to the digest is refused: \(r.bodyText)")
        XCTAssertTrue(r.bodyText.contains("digest mismatch"), r.bodyText)
        assertNothingCached(berth, digest)

        let empty = try get(berth, emptyPath, timeout: 30)
        XCTAssertEqual(empty.status, 200, empty.bodyText)
        XCTAssertEqual(empty.body.count, 0)
        XCTAssertEqual(empty.headers["content-length"], "0")
        XCTAssertTrue(waitUntil(10) { berth.isCached(emptyDigest) }, "the real empty blob verifies and is kept")
    }

    /// Defect 3: a manifest served as application/json whose `mediaType` held
    /// an escaped CR LF and a header line put that header into Berth's answer.
    func testManifestMediaTypeCannotInjectAResponseHeader() throws {
        let upstream = try startFakeUpstream()
        let manifest = Array(#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json\r\nX-Injected: yes","config":{"mediaType":"application/vnd.oci.empty.v1+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},"layers":[]}"#.utf8)
        let digest = "sha256:" + sha256Hex(manifest)
        for path in ["/v2/test/inject/manifests/v1", "/v2/test/inject/manifests/\(digest)"] {
            upstream.route(path) { w in
                var head = ResponseHead(status: 200)
                head.headers.add("Content-Type", "application/json")
                head.headers.add("Docker-Content-Digest", digest)
                w.respond(head, body: manifest)
            }
        }
        let berth = try startBerth(upstream: upstream.url)
        for path in ["/v2/test/inject/manifests/v1", "/v2/test/inject/manifests/\(digest)"] {
            let r = try get(berth, path, headers: ["Accept: \(allManifestTypes)"])
            XCTAssertEqual(r.status, 502, r.bodyText)
            XCTAssertTrue(r.bodyText.contains("MANIFEST_INVALID"), r.bodyText)
            XCTAssertNil(r.headers["x-injected"], "no header of the upstream's choosing")
        }
        XCTAssertFalse(berth.isCached(digest))
    }

    /// A Content-Length near 2^64 trapped or wrapped in the budget's and the
    /// range arithmetic. Berth refuses it as implausible and stays up.
    func testImplausibleContentLengthIsRefusedAndBerthStaysUp() throws {
        let upstream = try startFakeUpstream()
        let bytes = randomBytes(4096)
        let digest = "sha256:" + sha256Hex(bytes)
        let path = "/v2/test/huge/blobs/\(digest)"
        upstream.route(path) { w in
            var head = ResponseHead(status: 200)
            head.headers.add("Content-Type", "application/octet-stream")
            w.start(head, contentLength: UInt64.max)
            bytes.withUnsafeBytes { _ = w.write($0) }
            _ = w.loop.schedule(afterNanos: 100_000_000) { w.abort() }
        }
        let berth = try startBerth(upstream: upstream.url)
        for range in [[], ["Range: bytes=0-1,5-9"], ["Range: bytes=-10"]] {
            let r = try get(berth, path, headers: range, timeout: 30)
            XCTAssertEqual(r.status, 502, r.bodyText)
            XCTAssertTrue(r.bodyText.contains("limit"), r.bodyText)
        }
        XCTAssertEqual(try get(berth, "/v2/").status, 200, "berth is still up")
        assertNothingCached(berth, digest)
    }

    /// A cold HEAD passed on whatever length the upstream's HEAD declared:
    /// 2^64-1, which a GET of the same blob refuses as over the 1 TiB limit,
    /// and `Content-Length: 0` for an upstream that gave no length at all
    /// (chunked). Found by the digest-invariant property test.
    func testColdHeadPassesOnNoImplausibleOrMadeUpLength() throws {
        let upstream = try startFakeUpstream()
        let hugeDigest = "sha256:" + sha256Hex(randomBytes(4096))
        let chunkedDigest = "sha256:" + sha256Hex(randomBytes(4096))
        func head(_ digest: String, length: UInt64?) -> FakeUpstream.Route {
            { w in
                var head = ResponseHead(status: 200)
                head.headers.add("Content-Type", "application/octet-stream")
                head.headers.add("Docker-Content-Digest", digest)
                w.start(head, contentLength: length)  // a HEAD: the head alone
                w.end()
            }
        }
        upstream.route("/v2/test/headlen/blobs/\(hugeDigest)", head(hugeDigest, length: UInt64.max))
        upstream.route("/v2/test/headlen/blobs/\(chunkedDigest)", head(chunkedDigest, length: nil))
        let berth = try startBerth(upstream: upstream.url)

        let huge = try get(berth, "/v2/test/headlen/blobs/\(hugeDigest)", method: "HEAD")
        XCTAssertEqual(huge.status, 502, "refused as a GET would be: \(huge.headers)")
        XCTAssertNotEqual(huge.headers["content-length"], String(UInt64.max))

        let chunked = try get(berth, "/v2/test/headlen/blobs/\(chunkedDigest)", method: "HEAD")
        XCTAssertEqual(chunked.status, 200)
        XCTAssertEqual(chunked.headers["docker-content-digest"], chunkedDigest)
        XCTAssertNil(chunked.headers["content-length"], "no length made up for a blob of unknown length")
        XCTAssertEqual(chunked.headers["transfer-encoding"], "chunked", "the HEAD says what the GET would do")
        XCTAssertEqual(try get(berth, "/v2/").status, 200, "berth is still up")
    }

    /// An upstream's redirect may not steer Berth at an IP literal other than
    /// the upstream's own (loopback, link-local metadata, private ranges).
    func testRedirectToAnotherIPLiteralIsRefused() throws {
        let upstream = try startFakeUpstream()
        let elsewhere = try startFakeUpstream(host: "127.0.0.2")
        let bytes = randomBytes(4096)
        let digest = "sha256:" + sha256Hex(bytes)
        let path = "/v2/test/redirect/blobs/\(digest)"
        upstream.route(path, FakeUpstream.redirect(to: elsewhere.url + "/storage/blob"))
        elsewhere.route("/storage/blob", FakeUpstream.serve(bytes, digest: digest))
        let berth = try startBerth(upstream: upstream.url)

        let r = try get(berth, path, timeout: 30)
        XCTAssertEqual(r.status, 502, r.bodyText)
        XCTAssertTrue(r.bodyText.contains("refused"), r.bodyText)
        XCTAssertEqual(elsewhere.count(method: "GET", path: "/storage/blob"), 0, "the other address was never contacted")
        assertNothingCached(berth, digest)

        // A redirect to the upstream's own host (another port) is followed.
        let sameHost = try startFakeUpstream()
        sameHost.route("/storage/blob", FakeUpstream.serve(bytes, digest: digest))
        upstream.route(path, FakeUpstream.redirect(to: sameHost.url + "/storage/blob"))
        let ok = try get(berth, path, timeout: 30)
        XCTAssertEqual(ok.status, 200, ok.bodyText)
        XCTAssertTrue(ok.body == bytes)
    }

    /// A 401 from a host the upstream redirected to does not teach Berth a
    /// challenge: no token is asked of that host's realm.
    func testChallengeIsLearnedFromTheUpstreamOriginOnly() throws {
        let upstream = try startFakeUpstream()
        let storage = try startFakeUpstream()
        let digest = "sha256:" + sha256Hex(Array("x".utf8))
        let path = "/v2/test/challenge/blobs/\(digest)"
        upstream.route(path, FakeUpstream.redirect(to: storage.url + "/storage/blob"))
        storage.route("/storage/blob") { w in
            var head = ResponseHead(status: 401)
            head.headers.add("WWW-Authenticate", #"Bearer realm="\#(storage.url)/token",service="evil""#)
            w.respond(head, body: [])
        }
        storage.route("/token", FakeUpstream.serve(Array(#"{"token":"t"}"#.utf8), digest: digest))
        let berth = try startBerth(upstream: upstream.url)

        let r = try get(berth, path, timeout: 30)
        XCTAssertEqual(r.status, 401, r.bodyText)
        XCTAssertEqual(storage.count(method: "GET", path: "/token"), 0, "no token asked of a redirected-to host's realm")
        XCTAssertEqual(storage.count(method: "GET", path: "/storage/blob"), 1, "and no retry driven by it")
    }

    /// sha512 digests match the grammar but Berth hashes with SHA-256 only:
    /// it says so instead of fetching what it could never verify.
    func testSha512DigestsAreRefusedHonestly() throws {
        let upstream = try startFakeUpstream()
        let berth = try startBerth(upstream: upstream.url)
        let digest = "sha512:" + String(repeating: "ab", count: 64)
        for path in ["/v2/test/x/blobs/\(digest)", "/v2/test/x/manifests/\(digest)"] {
            for method in ["GET", "HEAD"] {
                let r = try get(berth, path, method: method)
                XCTAssertEqual(r.status, 400, "\(method) \(path)")
                if method == "GET" { XCTAssertTrue(r.bodyText.contains("sha256 digests only"), r.bodyText) }
                XCTAssertEqual(upstream.count(method: method, path: path), 0)
            }
        }
    }

    // MARK: relays and unknown lengths

    /// A blob over the budget is relayed uncached; clients asking while the
    /// relay window still starts at byte 0 share its one upstream GET.
    func testRelayOfABlobOverTheBudgetIsJoinedNotFetchedAgain() throws {
        let upstream = try startFakeUpstream()
        let size = 4 << 20
        let good = randomBytes(size)
        let digest = "sha256:" + sha256Hex(good)
        let path = "/v2/test/relay/blobs/\(digest)"
        upstream.route(path, FakeUpstream.stall(good, after: 1 << 20, stallNanos: 2_000_000_000, digest: digest))
        let berth = try startBerth(upstream: upstream.url, arguments: ["--cache-max-size", "2MiB"])

        let first = try Subprocess(["curl", "-s", "-o", "\(workDir!)/relay-1", "-w", "%{http_code}", "--max-time", "20", berth.url + path], in: workDir)
        XCTAssertTrue(waitUntil(5) { upstream.count(method: "GET", path: path) == 1 }, "the relay started")
        let second = try get(berth, path, timeout: 20)
        XCTAssertTrue(first.waitForExit(seconds: 25))
        XCTAssertEqual(first.stdout, "200")
        XCTAssertEqual(sha256Hex(file: "\(workDir!)/relay-1").map { "sha256:" + $0 }, digest)
        XCTAssertEqual(second.status, 200)
        XCTAssertTrue(second.body == good, "the joiner got exact bytes")
        XCTAssertEqual(upstream.count(method: "GET", path: path), 1, "one upstream GET for both")
        XCTAssertFalse(berth.isCached(digest), "over the budget: not kept")
        XCTAssertTrue(berth.log.contains("streamed uncached"), "relayed uncached")
    }

    /// A relay whose last client left stops downloading instead of running
    /// to the end for nobody.
    func testRelayIsCancelledWhenItsLastReaderLeaves() throws {
        let upstream = try startFakeUpstream()
        let size = 4 << 20
        let good = randomBytes(size)
        let digest = "sha256:" + sha256Hex(good)
        let path = "/v2/test/abandon/blobs/\(digest)"
        let upstreamClosed = expectation(description: "the upstream connection was closed by berth")
        upstream.route(path) { w in
            var head = ResponseHead(status: 200)
            head.headers.add("Content-Type", "application/octet-stream")
            w.start(head, contentLength: UInt64(size))
            w.onClose = { upstreamClosed.fulfill() }
            // 1 MiB, then 64 KiB every 200 ms: the whole body would take 10 s.
            var sent = 1 << 20
            good[0..<sent].withUnsafeBytes { _ = w.write($0) }
            func dribble() {
                guard w.isActive, sent < size else { return }
                good[sent..<(sent + 65536)].withUnsafeBytes { _ = w.write($0) }
                sent += 65536
                _ = w.loop.schedule(afterNanos: 200_000_000) { dribble() }
            }
            dribble()
        }
        let berth = try startBerth(upstream: upstream.url, arguments: ["--cache-max-size", "2MiB"])
        let r = try get(berth, path, timeout: 2)  // curl gives up after 2 s
        XCTAssertNotEqual(r.exitCode, 0, "the client left mid-body")
        wait(for: [upstreamClosed], timeout: 15)
        XCTAssertTrue(waitUntil(5) { berth.log.contains("relay abandoned") }, berth.log.suffix(1000).description)
        XCTAssertTrue(waitUntil(5) { berth.partialFiles().isEmpty })
    }

    /// An upstream blob without Content-Length (chunked) reaches the client
    /// as it arrives, chunked, its end held back until the digest checks; a
    /// bad one never looks complete.
    func testBlobWithoutContentLengthIsStreamedChunkedAndVerified() throws {
        let upstream = try startFakeUpstream()
        let size = 3 << 20
        let good = randomBytes(size)
        let digest = "sha256:" + sha256Hex(good)
        let badDigest = String(digest.dropLast()) + (digest.hasSuffix("0") ? "1" : "0")  // served the good bytes
        func chunked(_ bytes: [UInt8]) -> FakeUpstream.Route {
            { w in
                var head = ResponseHead(status: 200)
                head.headers.add("Content-Type", "application/octet-stream")
                w.start(head, contentLength: nil)
                bytes[0..<(1 << 20)].withUnsafeBytes { _ = w.write($0) }
                _ = w.loop.schedule(afterNanos: 500_000_000) {
                    bytes[(1 << 20)...].withUnsafeBytes { _ = w.write($0) }
                    w.end()
                }
            }
        }
        upstream.route("/v2/test/chunked/blobs/\(digest)", chunked(good))
        upstream.route("/v2/test/chunked/blobs/\(badDigest)", chunked(good))
        let berth = try startBerth(upstream: upstream.url)

        let r = try get(berth, "/v2/test/chunked/blobs/\(digest)", timeout: 20)
        XCTAssertEqual(r.status, 200, r.bodyText)
        XCTAssertEqual(r.headers["transfer-encoding"], "chunked")
        XCTAssertTrue(r.body == good, "exact bytes")
        XCTAssertTrue(waitUntil(10) { berth.isCached(digest) })
        let warm = try get(berth, "/v2/test/chunked/blobs/\(digest)")
        XCTAssertEqual(warm.headers["content-length"], String(size), "from the cache with its length")
        XCTAssertTrue(warm.body == good)

        let wrong = try get(berth, "/v2/test/chunked/blobs/\(badDigest)", timeout: 20)
        XCTAssertNotEqual(wrong.exitCode, 0, "a body that does not hash to its digest never ends cleanly (status \(wrong.status))")
        assertNothingCached(berth, badDigest)
    }
}
