import Foundation
import XCTest
import TestSupport

/// The cache's lifecycle end to end: the built `berth` binary in front of
/// Debian's docker-registry, pulled with curl and skopeo. A full disk, a blob
/// larger than the budget, `kill -9` during and after fills, eviction order,
/// and many images through a small budget that must hold at every moment.
final class CacheLifecycleTests: XCTestCase {
    var work: String!
    var registry: Registry!
    private var berths: [BerthProcess] = []
    private var relay: ThrottledRelay?
    private var smallFS: SmallFilesystem?

    override func setUpWithError() throws {
        work = makeTemporaryDirectory("berth-cachelife")
        registry = try Registry(directory: work)
    }

    override func tearDown() {
        for b in berths { b.crash() }
        berths = []
        relay?.stop()
        relay = nil
        registry?.stop()
        if let fs = smallFS {
            fs.unmount(work: work)
            smallFS = nil
        }
        try? FileManager.default.removeItem(atPath: work)
    }

    private func startBerth(cacheDir: String, maxSize: String?, upstreamPort: UInt16? = nil,
                            environment: [String: String] = [:], arguments: [String] = []) throws -> BerthProcess {
        let b = try BerthProcess(directory: work, upstreamPort: upstreamPort ?? registry.port, cacheDir: cacheDir,
                                 maxSize: maxSize, environment: environment, arguments: arguments)
        berths.append(b)
        return b
    }

    /// GETs a blob through Berth with curl and checks every byte.
    @discardableResult
    private func pullBlob(_ berth: BerthProcess, _ repository: String, _ blob: TestBlob,
                          file: StaticString = #filePath, line: UInt = #line) throws -> CurlResult {
        let out = work + "/pull-\(blob.hex.prefix(12))-\(UUID().uuidString.prefix(6))"
        defer { try? FileManager.default.removeItem(atPath: out) }
        let r = try curl(berth.blobURL(repository, blob.digest), to: out, in: work, timeout: 120)
        XCTAssertEqual(r.exitCode, 0, "curl exit code", file: file, line: line)
        XCTAssertEqual(r.status, 200, r.headers, file: file, line: line)
        let got = sha256(ofFile: out)
        XCTAssertEqual(got?.size, blob.size, "size of \(blob.digest)", file: file, line: line)
        XCTAssertEqual(got?.digest, blob.digest, "bytes of \(blob.digest)", file: file, line: line)
        return r
    }

    /// Every file under `<cache>/blobs` hashes to its name: nothing half-written looks like a blob.
    private func assertBlobTreeIntact(_ cacheDir: String, file: StaticString = #filePath, line: UInt = #line) {
        for f in filesUnder(cacheDir + "/blobs") {
            let name = String(f.path.split(separator: "/").last ?? "")
            XCTAssertEqual(sha256(ofFile: f.path)?.digest, "sha256:" + name, "\(f.path) is not what its name says", file: file, line: line)
        }
    }

    // MARK: - a full disk

    func testDiskFullMidFillStillDeliversTheWholeBlobAndLeavesNoTempFile() throws {
        let fs = try SmallFilesystem(at: work + "/small-cache", megabytes: 24, work: work)
        smallFS = fs
        let big = TestBlob.random(40 << 20)
        let small = TestBlob.random(1 << 20)
        try registry.push(big, to: "enospc/app")
        try registry.push(small, to: "enospc/app")
        // The budget admits the fill; the 24 MiB filesystem refuses it part way.
        let berth = try startBerth(cacheDir: fs.path, maxSize: "1GiB")

        try pullBlob(berth, "enospc/app", big)
        XCTAssertTrue(berth.waitForLog("relaying uncached"), "the disk refused the fill (ENOSPC): \(berth.log.suffix(2000))")
        XCTAssertTrue(waitUntil(10) { berth.partialFiles.isEmpty }, "temp files left: \(berth.partialFiles)")
        XCTAssertFalse(berth.isCached(big.digest), "a blob the disk could not hold is not in the store")
        assertBlobTreeIntact(fs.path)

        // The server carries on: the ping, then a small blob that fits (and is cached).
        XCTAssertEqual(try httpRequest(port: berth.port, "GET", "/v2/").status, 200)
        try pullBlob(berth, "enospc/app", small)
        XCTAssertTrue(waitUntil(10) { berth.isCached(small.digest) }, "the small blob is cached once space is back")
        assertBlobTreeIntact(fs.path)
        // And the big one still comes whole on later tries. Regression: a write that drained the
        // connection ran FillReader's onWritable re-entrantly, which re-sent relayed bytes (a corrupt
        // body of the right length, "streamed body longer than its Content-Length", or a stall),
        // seen within 2–3 relayed pulls before the fix.
        for _ in 0..<4 { try pullBlob(berth, "enospc/app", big) }
        XCTAssertTrue(waitUntil(10) { berth.partialFiles.isEmpty }, "temp files left: \(berth.partialFiles)")
    }

    // MARK: - a blob bigger than the budget

    func testABlobLargerThanTheBudgetIsStreamedAndNotCached() throws {
        let blob = TestBlob.random(20 << 20)
        try registry.push(blob, to: "budget/app")
        let cache = work + "/cache"
        let berth = try startBerth(cacheDir: cache, maxSize: "8MiB")

        try pullBlob(berth, "budget/app", blob)
        XCTAssertTrue(berth.waitForLog("does not fit in the cache budget"), berth.log.suffix(2000).description)
        XCTAssertTrue(waitUntil(10) { berth.partialFiles.isEmpty }, "temp files left: \(berth.partialFiles)")
        XCTAssertFalse(berth.isCached(blob.digest))
        XCTAssertLessThanOrEqual(cacheDiskUsage(cache), 8 << 20)

        // Nothing was kept, so the next pull goes upstream again, still whole.
        try pullBlob(berth, "budget/app", blob)
        XCTAssertTrue(waitUntil(5) { registry.blobGETs("budget/app", blob.digest) == 2 }, "upstream GETs: \(registry.blobGETs("budget/app", blob.digest))")
        XCTAssertFalse(berth.isCached(blob.digest))
        XCTAssertTrue(filesUnder(cache + "/blobs").isEmpty, "nothing of it under blobs/: \(filesUnder(cache + "/blobs"))")
    }

    // MARK: - crashes

    func testKill9MidFillLeavesNothingHalfWrittenAndTheBlobPullsAfterRestart() throws {
        let blob = TestBlob.random(200 << 20)
        try registry.push(blob, to: "crash/app")
        // 40 MiB/s from the upstream: the fill takes ~5 s, long enough to be caught in the middle.
        let relay = try ThrottledRelay(targetPort: registry.port, bytesPerSecond: 40 << 20)
        self.relay = relay
        let cache = work + "/cache"
        let berth = try startBerth(cacheDir: cache, maxSize: "1GiB", upstreamPort: relay.port)

        let out = work + "/crash.out"
        let client = try Subprocess(["curl", "-sS", "-o", out, "--max-time", "60", berth.blobURL("crash/app", blob.digest)], in: work)
        defer { client.killHard() }
        XCTAssertTrue(waitUntil(20, everyMillis: 10) { (fileSize(out) ?? 0) >= 8 << 20 }, "the client received bytes")
        XCTAssertFalse(berth.partialFiles.isEmpty, "a fill is in progress")
        berth.crash()
        XCTAssertTrue(client.waitForExit(seconds: 10))
        XCTAssertNotEqual(client.process.terminationStatus, 0, "the client saw the transfer cut")
        XCTAssertLessThan(fileSize(out) ?? 0, blob.size)
        // What the crash leaves: a temp file in tmp/, nothing under blobs/.
        XCTAssertFalse(berth.partialFiles.isEmpty, "the killed fill's temp file is still there before the restart")
        XCTAssertFalse(berth.isCached(blob.digest))
        assertBlobTreeIntact(cache)

        relay.bytesPerSecond = 0
        let again = try startBerth(cacheDir: cache, maxSize: "1GiB", upstreamPort: relay.port)
        XCTAssertTrue(again.partialFiles.isEmpty, "startup removed the temp files: \(again.partialFiles)")
        XCTAssertTrue(again.waitForLog("cache reconciled"), "an unclean stop is reconciled: \(again.log.suffix(2000))")
        try pullBlob(again, "crash/app", blob)
        XCTAssertTrue(waitUntil(20) { again.isCached(blob.digest) })
        XCTAssertEqual(sha256(ofFile: again.blobPath(blob.digest))?.digest, blob.digest)
        assertBlobTreeIntact(cache)
    }

    func testKill9AfterAWarmPullKeepsTheBlobAHit() throws {
        let blob = TestBlob.random(8 << 20)
        try registry.push(blob, to: "crash/warm")
        let cache = work + "/cache"
        let berth = try startBerth(cacheDir: cache, maxSize: "1GiB")
        try pullBlob(berth, "crash/warm", blob)
        XCTAssertTrue(waitUntil(10) { berth.isCached(blob.digest) })
        let warm = try pullBlob(berth, "crash/warm", blob)
        XCTAssertTrue(warm.cacheStatus.contains("hit"), warm.headers)
        XCTAssertTrue(waitUntil(5) { registry.blobGETs("crash/warm", blob.digest) == 1 })

        berth.crash()
        let again = try startBerth(cacheDir: cache, maxSize: "1GiB")
        let r = try pullBlob(again, "crash/warm", blob)
        XCTAssertTrue(r.cacheStatus.contains("hit"), "served from the cache after the crash: \(r.headers)")
        XCTAssertTrue(again.waitForLog("cache reconciled"), again.log.suffix(2000).description)
        usleep(300_000)  // let a (wrong) upstream fetch reach the access log
        XCTAssertEqual(registry.blobGETs("crash/warm", blob.digest), 1, "no new upstream GET after the restart")
        XCTAssertTrue(again.log.contains("blobs=1") || again.log.contains("added=1"),
                      "the index knows the blob after the restart (journal or reconcile): \(again.log.suffix(2000))")
    }

    // MARK: - eviction

    func testEvictionThroughTheServerTakesTheLeastRecentlyUsed() throws {
        let size = 5 << 19  // 2.5 MiB
        let a = TestBlob.random(size), b = TestBlob.random(size), c = TestBlob.random(size), d = TestBlob.random(3 << 20)
        for x in [a, b, c, d] { try registry.push(x, to: "lru/app") }
        // 10 MiB, eviction past 9 MiB: A, B, C (7.5 MiB) fit; D (3 MiB) needs one of them to go.
        let cache = work + "/cache"
        let berth = try startBerth(cacheDir: cache, maxSize: "10MiB")
        for x in [a, b, c] {
            try pullBlob(berth, "lru/app", x)
            // Published (renamed and indexed) before the next one: that fixes the order.
            XCTAssertTrue(waitUntil(10) { berth.isCached(x.digest) })
        }
        usleep(100_000)
        let hit = try pullBlob(berth, "lru/app", a)
        XCTAssertTrue(hit.cacheStatus.contains("hit"), hit.headers)
        try pullBlob(berth, "lru/app", d)
        XCTAssertTrue(waitUntil(10) { berth.isCached(d.digest) })
        XCTAssertTrue(waitUntil(10) { !berth.isCached(b.digest) }, "B, the least recently used, is evicted")
        XCTAssertTrue(berth.isCached(a.digest), "A was used after B and stays")
        XCTAssertTrue(berth.isCached(c.digest), "C is newer than B and stays")
        XCTAssertLessThanOrEqual(cacheDiskUsage(cache), 10 << 20)
        XCTAssertTrue(berth.log.contains("evicting 1 blobs"), berth.log.suffix(2000).description)

        // A is still a hit; B comes from the upstream again, whole.
        XCTAssertTrue(try pullBlob(berth, "lru/app", a).cacheStatus.contains("hit"))
        XCTAssertEqual(registry.blobGETs("lru/app", a.digest), 1)
        try pullBlob(berth, "lru/app", b)
        XCTAssertTrue(waitUntil(5) { registry.blobGETs("lru/app", b.digest) == 2 })
    }

    // MARK: - done when: many images through a small budget

    func testManyImagesThroughA200MiBBudgetNeverExceedIt() throws {
        let budget: UInt64 = 200 << 20
        var rng = SplitMix(seed: 0xB127_C4C3)
        var images: [(name: String, layers: [TestBlob])] = []
        var pushed: UInt64 = 0
        for i in 0..<30 {
            let count = 2 + Int(rng.next() % 2)
            let layers = (0..<count).map { _ in TestBlob.random((5 << 20) + Int(rng.next() % UInt64(10 << 20))) }
            let name = "loop/img\(i)"
            try registry.pushImage(name, tag: "v1", layers: layers)
            pushed += layers.reduce(0) { $0 + UInt64($1.size) }
            images.append((name, layers.map { TestBlob(digestOnly: $0) }))
        }
        XCTAssertGreaterThan(pushed, 3 * budget, "the images are several times the budget")
        // One image is pinned: it must never leave the cache.
        let pinnedLayers = [TestBlob.random(6 << 20), TestBlob.random(4 << 20)]
        let pinnedManifest = try registry.pushImage("loop/pinned", tag: "v1", layers: pinnedLayers)
        let pinned = pinnedLayers.map { TestBlob(digestOnly: $0) }

        let cache = work + "/cache"
        let berth = try startBerth(cacheDir: cache, maxSize: "200MiB", arguments: ["--pin", "loop/pinned:v1"])
        XCTAssertTrue(waitUntil(30) { pinned.allSatisfy { berth.isCached($0.digest) } && berth.isCached(pinnedManifest) },
                      "the pinned image is fetched at start")
        let sampler = DiskSampler(root: cache, intervalMillis: 100)
        var sawSamples: [(at: Double, bytes: UInt64)] = []
        defer { if sawSamples.isEmpty { _ = sampler.stop() } }

        func pull(_ image: (name: String, layers: [TestBlob])) throws {
            let dest = work + "/skopeo-" + image.name.replacingOccurrences(of: "/", with: "-")
            try? FileManager.default.removeItem(atPath: dest)
            defer { try? FileManager.default.removeItem(atPath: dest) }
            try Subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", "--src-tls-verify=false",
                                "docker://127.0.0.1:\(berth.port)/\(image.name):v1", "dir:" + dest],
                               in: work, environment: cleanEnvironment(), timeout: 120)
            for l in image.layers {
                XCTAssertEqual(sha256(ofFile: dest + "/" + l.hex)?.digest, l.digest, "\(image.name) layer \(l.digest)")
            }
            XCTAssertNotNil(fileSize(dest + "/manifest.json"))
        }

        for image in images {
            try pull(image)
            for l in pinned { XCTAssertTrue(berth.isCached(l.digest), "pinned layer \(l.digest) evicted after \(image.name)") }
        }
        // The oldest images were evicted long ago: they come back from the upstream, whole.
        let before = images[0].layers.map { registry.blobGETs(images[0].name, $0.digest) }
        for image in images.prefix(3) { try pull(image) }
        let after = images[0].layers.map { registry.blobGETs(images[0].name, $0.digest) }
        XCTAssertTrue(zip(before, after).contains { $1 > $0 }, "an evicted layer was fetched again: \(before) → \(after)")

        sawSamples = sampler.stop()
        let peak = sawSamples.map(\.bytes).max() ?? 0
        XCTAssertGreaterThan(sawSamples.count, 20, "the sampler ran through the loop")
        for s in sawSamples where s.bytes > budget {
            XCTFail("at \(String(format: "%.2f", s.at)) s the cache directory held \(s.bytes) bytes, over the \(budget)-byte budget")
        }
        XCTAssertTrue(berth.isCached(pinnedManifest), "the pinned manifest stays")
        XCTAssertEqual(registry.blobGETs("loop/pinned", pinned[0].digest), 1, "the pinned layer was never fetched again")
        print("cache lifecycle loop: \(images.count) images, \(pushed >> 20) MiB pushed, \(sawSamples.count) samples, peak \(peak) bytes of \(budget)")
        assertBlobTreeIntact(cache)
    }
}

extension TestBlob {
    /// Keeps the digest and size only (the loop test holds 30 images' worth of layers).
    init(digestOnly b: TestBlob) {
        self.init(digest: b.digest, size: b.size)
    }
}
