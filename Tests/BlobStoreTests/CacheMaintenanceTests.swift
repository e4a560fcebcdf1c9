import Foundation
import XCTest
import Reactor
import OCI
@testable import BlobStore

/// `berth cache` building blocks on a real store: gc selection, pin
/// bookkeeping across restarts, verification quarantining a corrupted blob.
final class CacheMaintenanceTests: XCTestCase {
    var dir: String!
    var pool: BlockingPool!

    override func setUp() {
        dir = NSTemporaryDirectory() + "berth-maint-" + UUID().uuidString
        pool = BlockingPool(threads: 2)
    }

    override func tearDown() {
        pool.shutdown()
        try? FileManager.default.removeItem(atPath: dir)
    }

    private func d(_ n: Int) -> Digest { Digest(algorithm: .sha256, hex: String(repeating: String(n % 10), count: 64))! }

    private func drain() {
        let e = expectation(description: "pool")
        pool.submit { self.pool.submit { e.fulfill() } }
        wait(for: [e], timeout: 10)
    }

    // MARK: gc

    func testGCSelectionKeepsReferencedRootsAndRecentBlobs() {
        let now: Int64 = 10_000
        let old = now - 7200, recent = now - 60
        // m1 (tag target) → b1, b2; m2 (orphan manifest, old) → b3; b4 orphan old; b5 orphan recent; b6 pinned old.
        let (m1, m2, b1, b2, b3, b4, b5, b6) = (d(1), d(2), d(3), d(4), d(5), d(6), d(7), d(8))
        let blobs = [(m1, old), (m2, old), (b1, old), (b2, old), (b3, old), (b4, old), (b5, recent), (b6, old)].map { (digest: $0.0, lastUse: $0.1) }
        let chosen = GCSelection.select(blobs: blobs, references: [m1: [b1, b2], m2: [b3]], roots: [m1, b6], now: now, grace: 3600)
        XCTAssertEqual(chosen, [m2, b3, b4], "an orphan manifest goes, then what only it referenced")
        XCTAssertTrue(GCSelection.select(blobs: blobs, references: [m1: [b1, b2], m2: [b3]], roots: [m1, b6], now: now, grace: 100_000).isEmpty,
                      "nothing inside the grace period goes")
    }

    func testGarbageCollectionOnDisk() throws {
        let store = try BlobStore(root: dir, pool: pool, budget: Budget(maxBytes: 1 << 30))
        let (cb, cd) = blob(1, size: 100), (lb, ld) = blob(2, size: 5000), (ob, od) = blob(3, size: 7000)
        for (b, dg) in [(cb, cd), (lb, ld), (ob, od)] { try store.store(b, as: dg) }
        let m = try storeManifest(store, config: (cd, 100), layers: [(ld, 5000)])
        store.index.setTag("app", "v1", .init(digest: m, mediaType: MediaType.ociManifest, confirmedAt: 0))
        let r = store.collectGarbage(grace: 60, now: Int64(time(nil)) + 120)
        XCTAssertEqual(r.removed, [od])
        XCTAssertEqual(r.removedBytes, 7000)
        XCTAssertFalse(store.contains(od))
        for kept in [m, cd, ld] { XCTAssertTrue(store.contains(kept)) }
        // Without the tag, the manifest and then its blobs go too.
        store.index.removeTag("app", "v1")
        let r2 = store.collectGarbage(grace: 60, now: Int64(time(nil)) + 120)
        XCTAssertEqual(Set(r2.removed), [m, cd, ld])
        XCTAssertEqual(store.index.usage.count, 0)
    }

    // MARK: pins

    func testPinBookkeepingSurvivesRestartsWithAndWithoutSnapshot() throws {
        let (shared, a, b, ma, mb) = (d(1), d(2), d(3), d(4), d(5))
        do {
            let store = try BlobStore(root: dir, pool: pool, budget: Budget(maxBytes: 1 << 30))
            store.index.pinImage("app:v1", .init(manifest: ma, covered: [ma, shared, a], pinnedAt: 1))
            store.index.pinImage("other:v2", .init(manifest: mb, covered: [mb, shared, b], pinnedAt: 2))
            XCTAssertEqual(store.index.pinnedDigests, [ma, mb, shared, a, b])
            store.index.unpinImage("app:v1")
            XCTAssertEqual(store.index.pinnedDigests, [mb, shared, b], "a digest another pinned image covers stays pinned")
            drain()
            store.index.flush()
        }
        do {  // replayed from the journal
            let store = try BlobStore(root: dir, pool: pool, budget: Budget(maxBytes: 1 << 30))
            XCTAssertEqual(store.index.pinnedImages().map(\.image), ["other:v2"])
            XCTAssertEqual(store.index.pinnedImage("other:v2")?.covered, [mb, shared, b])
            XCTAssertEqual(store.index.pinnedDigests, [mb, shared, b])
            // The tag moves: re-pinning drops what only the old target covered.
            store.index.pinImage("other:v2", .init(manifest: ma, covered: [ma, a], pinnedAt: 3))
            XCTAssertEqual(store.index.pinnedDigests, [ma, a])
            drain()
            try store.index.snapshot(clean: true)
        }
        let store = try BlobStore(root: dir, pool: pool, budget: Budget(maxBytes: 1 << 30))  // from the snapshot
        XCTAssertEqual(store.index.pinnedImage("other:v2"), .init(manifest: ma, covered: [ma, a], pinnedAt: 3))
        XCTAssertEqual(store.index.pinnedDigests, [ma, a])
        XCTAssertTrue(store.index.unpinImage("other:v2"))
        XCTAssertFalse(store.index.unpinImage("other:v2"))
        XCTAssertTrue(store.index.pinnedDigests.isEmpty)
    }

    func testPinnedBlobsCountAndOverBudgetIsReportedOnce() throws {
        let store = try BlobStore(root: dir, pool: pool, budget: Budget(maxBytes: 20_000, high: 0.9, low: 0.5))
        var lines: [String] = []
        let lock = NSLock()
        store.log = { l in lock.lock(); lines.append(l); lock.unlock() }
        let (b1, d1) = blob(1, size: 6000), (b2, d2) = blob(2, size: 6000)
        store.index.pinImage("big:1", .init(manifest: d1, covered: [d1, d2], pinnedAt: 0))
        try store.store(b1, as: d1)
        try store.store(b2, as: d2)
        drain()
        XCTAssertEqual(store.index.usage.pinned, 12_000)
        XCTAssertTrue(store.isPinnedOverBudget)
        for _ in 0..<5 { store.checkPinnedBudget(); store.startEvictionIfOverHigh() }
        drain()
        lock.lock(); defer { lock.unlock() }
        XCTAssertEqual(lines.filter { $0.contains("more than the low watermark") }.count, 1, "\(lines)")
        XCTAssertTrue(store.contains(d1) && store.contains(d2), "pins are never evicted")
    }

    // MARK: verify

    func testVerifyQuarantinesAFlippedByte() throws {
        let store = try BlobStore(root: dir, pool: pool, budget: Budget(maxBytes: 1 << 30))
        var digests: [Digest] = []
        for i in 0..<6 {
            let (b, dg) = blob(i, size: 300_000 + i)
            try store.store(b, as: dg)
            digests.append(dg)
        }
        drain()
        let victim = digests[3]
        let fd = open(store.path(for: victim), O_WRONLY)
        XCTAssertGreaterThanOrEqual(fd, 0)
        var byte: UInt8 = 0xff
        XCTAssertEqual(pwrite(fd, &byte, 1, 12_345), 1)
        close(fd)
        var updates = 0
        let r = store.verifyAll(threads: 2, progressInterval: 0.01) { _ in updates += 1 }
        XCTAssertEqual(r.checked, 6)
        XCTAssertEqual(r.mismatches, [victim])
        XCTAssertGreaterThan(updates, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: store.path(for: victim)), "out of the blob tree")
        XCTAssertEqual(r.quarantined.count, 1)
        XCTAssertTrue(r.quarantined[0].hasPrefix(dir + "/quarantine/" + victim.hex + "."), r.quarantined[0])
        XCTAssertTrue(FileManager.default.fileExists(atPath: r.quarantined[0]))
        XCTAssertNil(store.index.size(of: victim))
        XCTAssertEqual(store.index.usage.quarantine, 300_003, "quarantined bytes count toward the budget")
        XCTAssertEqual(store.verifyAll().mismatches, [], "the rest verifies")
    }
}
