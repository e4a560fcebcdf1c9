import Foundation
import XCTest
import Reactor
import OCI
@testable import BlobStore

/// Tag history: every digest a tag named, kept across restarts and
/// snapshots; the images of a moved tag's last `keepHistory` digests stay
/// out of eviction and gc.
final class TagHistoryTests: XCTestCase {
    var dir: String!
    var pool: BlockingPool!

    override func setUp() {
        dir = NSTemporaryDirectory() + "berth-history-" + UUID().uuidString
        pool = BlockingPool(threads: 2)
    }

    override func tearDown() {
        pool.shutdown()
        try? FileManager.default.removeItem(atPath: dir)
    }

    private func d(_ n: Int) -> Digest { Digest(algorithm: .sha256, hex: String(format: "%064x", n))! }

    private func tag(_ index: CacheIndex, _ digest: Digest, at t: Int64, _ name: String = "v1") {
        index.setTag("app", name, .init(digest: digest, mediaType: MediaType.ociManifest, confirmedAt: t))
    }

    private func entries(_ index: CacheIndex, _ name: String = "v1") -> [String] {
        index.history("app", name).map { "\($0.digest.hex.suffix(1))@\($0.firstSeen)-\($0.lastSeen)" }
    }

    func testEachDigestIsRememberedWithFirstAndLastSeen() throws {
        let store = try BlobStore(root: dir, pool: pool)
        tag(store.index, d(1), at: 100)
        tag(store.index, d(1), at: 200)  // a revalidation confirms it
        XCTAssertEqual(entries(store.index), ["1@100-200"])
        XCTAssertEqual(store.index.setTag("app", "v1", .init(digest: d(2), mediaType: MediaType.ociManifest, confirmedAt: 300))?.digest, d(1),
                       "setTag returns what it replaced")
        XCTAssertEqual(entries(store.index), ["1@100-200", "2@300-300"])
        tag(store.index, d(1), at: 400)  // moved back: the old entry, seen again, is the newest
        XCTAssertEqual(entries(store.index), ["2@300-300", "1@100-400"])
        XCTAssertEqual(store.index.tag("app", "v1")?.digest, d(1))
        store.index.removeTag("app", "v1")
        XCTAssertEqual(entries(store.index).count, 2, "untagging (the manifest was removed) keeps the record of what was served")
    }

    func testHistorySurvivesRestartAndSnapshot() throws {
        do {
            let store = try BlobStore(root: dir, pool: pool)
            tag(store.index, d(1), at: 100)
            tag(store.index, d(2), at: 300)
            tag(store.index, d(2), at: 350)
            tag(store.index, d(7), at: 10, "other")
            store.index.flush()
        }
        let replayed = try BlobStore(root: dir, pool: pool)
        XCTAssertEqual(entries(replayed.index), ["1@100-100", "2@300-350"])
        try replayed.index.snapshot(clean: true)
        let compacted = try BlobStore(root: dir, pool: pool)
        XCTAssertEqual(entries(compacted.index), ["1@100-100", "2@300-350"], "a snapshot keeps the history, not only the current tags")
        XCTAssertEqual(entries(compacted.index, "other"), ["7@10-10"])
        XCTAssertEqual(compacted.index.tag("app", "v1")?.digest, d(2))
        XCTAssertEqual(compacted.index.historyTags(of: "app"), ["other", "v1"])
    }

    func testHistoryIsBoundedPerTag() throws {
        let store = try BlobStore(root: dir, pool: pool)
        let n = CacheIndex.historyLimit + 6
        for i in 1...n { tag(store.index, d(i), at: Int64(i)) }
        let h = store.index.history("app", "v1")
        XCTAssertEqual(h.count, CacheIndex.historyLimit)
        XCTAssertEqual(h.first?.digest, d(7), "the oldest go first")
        XCTAssertEqual(h.last?.digest, d(n))
    }

    func testRemovingTheTagForgetsItsHistory() throws {
        do {
            let store = try BlobStore(root: dir, pool: pool)
            tag(store.index, d(1), at: 100)
            tag(store.index, d(2), at: 200)
            try store.removeTag("app", "v1")
            XCTAssertTrue(store.index.history("app", "v1").isEmpty)
            store.index.flush()
        }
        XCTAssertTrue(try BlobStore(root: dir, pool: pool).index.history("app", "v1").isEmpty)
    }

    /// Two images of one tag (v1 then v2) plus an unrelated one; `keep` digests per moved tag held.
    private func movedTag(keep: Int) throws -> (store: BlobStore, v1: [Digest], v2: [Digest], other: [Digest]) {
        let store = try BlobStore(root: dir, pool: pool, budget: Budget(maxBytes: 1 << 30), keepHistory: keep)
        func image(_ seed: Int) throws -> [Digest] {
            let (cb, cd) = blob(seed, size: 100), (lb, ld) = blob(seed + 1, size: 4000)
            try store.store(cb, as: cd)
            try store.store(lb, as: ld)
            return [try storeManifest(store, config: (cd, 100), layers: [(ld, 4000)]), cd, ld]
        }
        let (v1, v2, other) = (try image(10), try image(20), try image(30))
        for (i, m) in [v1[0], v2[0]].enumerated() {
            store.recordTag("app", "v1", .init(digest: m, mediaType: MediaType.ociManifest, confirmedAt: Int64(100 * (i + 1))))
        }
        store.recordTag("app", "still", .init(digest: other[0], mediaType: MediaType.ociManifest, confirmedAt: 100))
        store.refreshKept()
        return (store, v1, v2, other)
    }

    func testAMovedTagsImagesStayOutOfEviction() throws {
        let (store, v1, v2, other) = try movedTag(keep: 3)
        let candidates = Set(store.index.evictionCandidates(totalling: .max).map(\.digest))
        XCTAssertTrue(candidates.isDisjoint(with: v1 + v2), "both images of the moved tag are held")
        XCTAssertEqual(candidates, Set(other), "a tag that never moved is ordinary LRU content")
        XCTAssertEqual(store.index.usage.kept, (v1 + v2).reduce(0) { $0 + store.index.size(of: $1)! }, "du shows what history costs")
        XCTAssertEqual(store.index.usage.pinned, 0)
        // Evicting everything evictable leaves both images whole.
        XCTAssertTrue(store.reserve(store.budget.maxBytes - store.index.usage.kept - store.index.usage.journal))
        for dg in v1 + v2 { XCTAssertNotNil(store.index.size(of: dg)) }
        for dg in other { XCTAssertNil(store.index.size(of: dg)) }
    }

    func testKeepHistoryBoundsHowManyDigestsAreHeld() throws {
        let (store, v1, v2, _) = try movedTag(keep: 1)
        let candidates = Set(store.index.evictionCandidates(totalling: .max).map(\.digest))
        XCTAssertTrue(candidates.isSuperset(of: v1), "only the last digest is held")
        XCTAssertTrue(candidates.isDisjoint(with: v2))
    }

    func testNoHistoryKeepsNothing() throws {
        let (store, v1, v2, other) = try movedTag(keep: 0)
        XCTAssertEqual(Set(store.index.evictionCandidates(totalling: .max).map(\.digest)), Set(v1 + v2 + other))
        XCTAssertEqual(store.index.usage.kept, 0)
    }

    func testGarbageCollectionKeepsHistory() throws {
        let (store, v1, v2, other) = try movedTag(keep: 3)
        store.index.removeTag("app", "still")
        let r = store.collectGarbage(grace: 0, now: Int64(time(nil)) + 10)
        XCTAssertEqual(Set(r.removed), Set(other))
        for dg in v1 + v2 { XCTAssertTrue(store.contains(dg)) }
    }

    func testHeldBlobsComeBackOnRestart() throws {
        var held: [Digest] = []
        do {
            let (store, v1, v2, _) = try movedTag(keep: 3)
            held = v1 + v2
            store.index.flush()
        }
        let store = try BlobStore(root: dir, pool: pool, budget: Budget(maxBytes: 1 << 30), keepHistory: 3)
        XCTAssertEqual(store.index.keptDigests, Set(held), "kept is derived at open from the history and the cached manifests")
    }

    func testLRUCountsPinnedAndKeptBytesOnce() {
        var lru = LRUList()
        lru.insert(d(1), size: 10, lastUse: 1)
        lru.insert(d(2), size: 20, lastUse: 2)
        lru.setKept(d(1), true)
        lru.setPinned(d(1), true)
        XCTAssertEqual([lru.pinnedBytes, lru.keptBytes], [10, 0], "pinned and kept: counted as pinned")
        lru.setPinned(d(1), false)
        XCTAssertEqual([lru.pinnedBytes, lru.keptBytes], [0, 10])
        XCTAssertEqual(lru.oldest(totalling: 100).map(\.digest), [d(2)], "a kept blob is out of the eviction list")
        lru.insert(d(1), size: 15, lastUse: 3)
        XCTAssertEqual(lru.keptBytes, 15)
        lru.setKept(d(1), false)
        XCTAssertEqual(lru.keptBytes, 0)
        XCTAssertEqual(lru.oldest(totalling: 100).map(\.digest), [d(2), d(1)])
        lru.setKept(d(2), true)
        lru.remove(d(2))
        XCTAssertEqual(lru.keptBytes, 0)
        XCTAssertEqual(lru.bytes, 15)
    }
}
