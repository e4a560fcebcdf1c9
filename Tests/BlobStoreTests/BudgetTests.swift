import Foundation
import XCTest
import Reactor
import OCI
@testable import BlobStore

/// The size budget: least recently used blobs go first, pins never go, the
/// watermarks hold, a reader keeps its file, the index keeps order across a
/// restart and agrees with the disk after a crash.
final class BudgetTests: XCTestCase {
    var dir: String!
    var pool: BlockingPool!

    override func setUp() {
        dir = NSTemporaryDirectory() + "berth-budget-" + UUID().uuidString
        pool = BlockingPool(threads: 2)
    }

    override func tearDown() {
        pool.shutdown()
        try? FileManager.default.removeItem(atPath: dir)
    }

    private func settle(_ store: BlobStore) {
        // Eviction and unlinks run on the pool: wait until it has drained.
        let e = expectation(description: "pool")
        pool.submit { self.pool.submit { e.fulfill() } }
        wait(for: [e], timeout: 10)
    }

    func testLeastRecentlyUsedGoesFirstAndUsageStaysUnderBudget() throws {
        // Journal bytes count too: leave room for them.
        let store = try BlobStore(root: dir, pool: pool, budget: Budget(maxBytes: 12_000, high: 0.9, low: 0.5))
        var digests: [Digest] = []
        for i in 0..<3 {
            let (b, d) = blob(i, size: 3000)
            try store.store(b, as: d)
            digests.append(d)
            XCTAssertLessThanOrEqual(store.index.usage.total, 12_000)
        }
        settle(store)
        // The first blob was used most recently; the second is now the oldest.
        store.index.touch(digests[0], now: Int64(time(nil)) + 10)
        let (b3, d3) = blob(3, size: 5000)
        try store.store(b3, as: d3)
        settle(store)
        XCTAssertLessThanOrEqual(store.index.usage.total, 12_000)
        XCTAssertFalse(store.contains(digests[1]), "the least recently used blob is evicted first")
        XCTAssertTrue(store.contains(d3))
        XCTAssertNil(store.index.size(of: digests[1]))
    }

    func testWatermarksEvictDownToLow() throws {
        let store = try BlobStore(root: dir, pool: pool, budget: Budget(maxBytes: 100_000, high: 0.6, low: 0.3))
        for i in 0..<7 {
            let (b, d) = blob(i, size: 10_000)
            try store.store(b, as: d)
        }
        settle(store)
        // The pool has two threads: its drain can finish beside a pass that is still
        // unlinking. Wait (bounded) for that pass, then check.
        func onDisk() -> Int { ((try? FileManager.default.subpathsOfDirectory(atPath: dir + "/blobs")) ?? []).filter { $0.count > 60 }.count }
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline && (store.index.usage.blobs > 30_000 || onDisk() != store.index.usage.count) { usleep(10_000) }
        let u = store.index.usage
        XCTAssertLessThanOrEqual(u.total, 60_000, "under the high watermark after eviction")
        XCTAssertLessThanOrEqual(u.blobs, 30_000, "eviction went down to the low watermark")
        XCTAssertEqual(onDisk(), u.count, "index and files agree")
    }

    func testPinnedBlobsSurvivePressure() throws {
        let store = try BlobStore(root: dir, pool: pool, budget: Budget(maxBytes: 40_000, high: 0.9, low: 0.5))
        let (pb, pd) = blob(100, size: 8000)
        try store.store(pb, as: pd)
        store.index.setPinned([pd], true)
        for i in 0..<20 {
            let (b, d) = blob(i, size: 8000)
            try store.store(b, as: d)
            XCTAssertLessThanOrEqual(store.index.usage.total, 40_000)
        }
        settle(store)
        XCTAssertTrue(store.contains(pd))
        XCTAssertEqual(store.index.usage.pinned, 8000)
    }

    func testABlobLargerThanTheBudgetIsRefused() throws {
        let store = try BlobStore(root: dir, pool: pool, budget: Budget(maxBytes: 10_000))
        XCTAssertFalse(store.reserve(20_000))
        XCTAssertEqual(store.index.usage.reserved, 0)
        XCTAssertTrue(store.reserve(5_000))
        XCTAssertEqual(store.index.usage.reserved, 5_000)
        store.release(5_000)
        XCTAssertEqual(store.index.usage.reserved, 0)
    }

    func testAReadInProgressSurvivesEviction() throws {
        let store = try BlobStore(root: dir, pool: pool, budget: Budget(maxBytes: 30_000, high: 0.9, low: 0.1))
        let (b, d) = blob(7, size: 12_000)
        try store.store(b, as: d)
        let reader = try XCTUnwrap(store.open(d))
        var first = [UInt8](repeating: 0, count: 100)
        _ = try first.withUnsafeMutableBytes { try Posix.pread(fd: reader.fd, into: $0, offset: 0) }
        // Pressure evicts it while it is open.
        for i in 0..<3 {
            let (x, xd) = blob(50 + i, size: 12_000)
            try store.store(x, as: xd)
        }
        settle(store)
        XCTAssertFalse(store.contains(d), "evicted from the store")
        var all = [UInt8](repeating: 0, count: 12_000)
        let n = try all.withUnsafeMutableBytes { try Posix.pread(fd: reader.fd, into: $0, offset: 0) }
        XCTAssertEqual(n, 12_000)
        XCTAssertEqual(all, b, "the open reader still reads every byte")
    }

    func testSnapshotKeepsRecencyAcrossARestart() throws {
        var order: [Digest] = []
        do {
            let store = try BlobStore(root: dir, pool: pool, budget: Budget(maxBytes: 1 << 30))
            for i in 0..<5 {
                let (b, d) = blob(i, size: 1000)
                try store.store(b, as: d)
                order.append(d)
            }
            store.index.touch(order[0], now: Int64(time(nil)) + 100)   // oldest becomes newest
            settle(store)
            try store.index.snapshot(clean: true)
        }
        let store = try BlobStore(root: dir, pool: pool, budget: Budget(maxBytes: 1 << 30))
        XCTAssertTrue(store.index.wasCleanlyClosed)
        let loaded = store.index.blobs().map(\.digest)
        XCTAssertEqual(loaded.count, 5)
        XCTAssertEqual(loaded.last, order[0], "the touched blob is the most recent after reload")
        XCTAssertEqual(loaded.first, order[1])
    }

    func testReconcileAfterACrash() throws {
        let (b1, d1) = blob(1, size: 2000)
        let (b2, d2) = blob(2, size: 3000)
        do {
            let store = try BlobStore(root: dir, pool: pool, budget: Budget(maxBytes: 1 << 30))
            try store.store(b1, as: d1)
            try store.store(b2, as: d2)
            settle(store)
        }
        // As if the journal lost the second blob and the first file vanished.
        let log = try String(contentsOfFile: dir + "/index.log", encoding: .utf8)
        try log.split(separator: "\n").filter { !$0.contains(d2.hex) }.map { $0 + "\n" }.joined()
            .write(toFile: dir + "/index.log", atomically: true, encoding: .utf8)
        let store0 = try BlobStore(root: dir, pool: pool, budget: Budget(maxBytes: 1 << 30))
        try FileManager.default.removeItem(atPath: store0.path(for: d1))
        let store = try BlobStore(root: dir, pool: pool, budget: Budget(maxBytes: 1 << 30))
        XCTAssertFalse(store.index.wasCleanlyClosed)
        XCTAssertNil(store.index.size(of: d2))
        let r = store.reconcile()
        XCTAssertEqual(r.added, 1)
        XCTAssertEqual(r.removed, 1)
        XCTAssertEqual(store.index.size(of: d2), 3000)
        XCTAssertNil(store.index.size(of: d1))
    }

    func testSizes() {
        XCTAssertEqual(Budget.parseSize("50GiB", filesystemOf: "/"), 50 << 30)
        XCTAssertEqual(Budget.parseSize("500MiB", filesystemOf: "/"), 500 << 20)
        XCTAssertEqual(Budget.parseSize("1.5GB", filesystemOf: "/"), 1_500_000_000)
        XCTAssertEqual(Budget.parseSize("1234", filesystemOf: "/"), 1234)
        let fs = Budget.filesystemSize("/")!
        XCTAssertEqual(Budget.parseSize("50%", filesystemOf: "/"), fs / 2)
        XCTAssertNil(Budget.parseSize("lots", filesystemOf: "/"))
        XCTAssertNil(Budget.parseSize("150%", filesystemOf: "/"))
        XCTAssertLessThanOrEqual(Budget.defaultBudget(for: "/").maxBytes, 50 << 30)
    }

    /// A length near 2^64 from an upstream trapped (or wrapped) in `reserve`.
    func testReserveRefusesLengthsThatCannotFitWithoutOverflow() throws {
        let store = try BlobStore(root: dir, pool: pool, budget: Budget(maxBytes: 100_000))
        let (b, d) = blob(1, size: 1000)
        try store.store(b, as: d)
        // Blobs and reservations, not `total`: the journal's size moves on its own (appends, compaction).
        func held() -> [UInt64] { let u = store.index.usage; return [u.blobs, u.reserved] }
        let before = held()
        for n: UInt64 in [UInt64.max, UInt64.max - 500, UInt64(Int64.max), 100_001] {
            XCTAssertFalse(store.reserve(n), "\(n)")
        }
        XCTAssertEqual(held(), before, "nothing reserved, nothing evicted")
        XCTAssertTrue(store.contains(d))
        XCTAssertTrue(store.reserve(1000))
        store.release(1000)
        XCTAssertEqual(held(), before)
    }
}
