import Foundation
import XCTest
import Reactor
import OCI
@testable import BlobStore

/// The cache on disk: fills verify before anything is published, nothing
/// half-written looks like a blob, and the index survives a restart.
final class BlobStoreTests: XCTestCase {
    var dir: String!
    var pool: BlockingPool!
    var group: EventLoopGroup!
    var loop: EventLoop { group.loops[0] }

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "berth-store-" + UUID().uuidString
        pool = BlockingPool(threads: 2)
        group = try EventLoopGroup(count: 1)
        group.start()
    }

    override func tearDown() {
        group.shutdown()
        pool.shutdown()
        try? FileManager.default.removeItem(atPath: dir)
    }

    private func digest(of bytes: [UInt8]) -> Digest {
        Digest(algorithm: .sha256, hex: SHA256Hasher.hex(bytes))!
    }

    /// Runs `body` on the loop and waits for it to call `done`.
    private func onLoop(_ body: @escaping (@escaping () -> Void) -> Void) {
        let e = expectation(description: "loop")
        loop.execute { body { e.fulfill() } }
        wait(for: [e], timeout: 20)
    }

    func testSHA256MatchesKnownVector() {
        XCTAssertEqual(SHA256Hasher.hex(Array("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    func testStartupRemovesLeftoverTempFiles() throws {
        _ = try BlobStore(root: dir, pool: pool)
        let leftover = dir + "/tmp/" + String(repeating: "a", count: 64) + ".1.1.partial"
        XCTAssertTrue(FileManager.default.createFile(atPath: leftover, contents: Data([1, 2, 3])))
        _ = try BlobStore(root: dir, pool: pool)
        XCTAssertFalse(FileManager.default.fileExists(atPath: leftover))
    }

    func testStoreAndOpen() throws {
        let store = try BlobStore(root: dir, pool: pool)
        let bytes = Array("hello manifest".utf8)
        let d = digest(of: bytes)
        XCTAssertFalse(store.contains(d))
        try store.store(bytes, as: d)
        XCTAssertTrue(store.contains(d))
        XCTAssertEqual(try store.read(d, maxBytes: 1024), bytes)
        XCTAssertEqual(store.path(for: d), "\(dir!)/blobs/sha256/\(d.hex.prefix(2))/\(d.hex)")
    }

    /// Runs a fill with `chunks`, returning what readers saw and whether it was published.
    private func runFill(_ d: Digest, declaredTotal: UInt64?, chunks: [[UInt8]]) throws -> (outcome: BlobFill.Outcome, published: Bool) {
        let store = try BlobStore(root: dir, pool: pool)
        let registry = FillRegistry(store: store, pool: pool)
        var outcome = BlobFill.Outcome.filling
        var committedResult: Bool?
        let committed = expectation(description: "commit")
        onLoop { done in
            guard case .started(let fill)? = try? registry.lookup(d, loop: self.loop) else { XCTFail("not started"); done(); return }
            if case .joined? = try? registry.lookup(d, loop: self.loop) {} else { XCTFail("second lookup should join") }
            _ = fill.subscribe(on: self.loop) { p in outcome = p.outcome }
            XCTAssertEqual(fill.progress.outcome, .filling)
            if let t = declaredTotal { fill.setTotal(t) }
            for c in chunks { _ = c.withUnsafeBytes { fill.append($0) } }
            fill.finish(store: store, pool: self.pool) { ok in
                committedResult = ok
                committed.fulfill()
            }
            done()
        }
        wait(for: [committed], timeout: 20)
        XCTAssertTrue(waitFor { registry.count == 0 }, "the fill leaves the registry")
        XCTAssertTrue(waitFor { (try? FileManager.default.contentsOfDirectory(atPath: self.dir + "/tmp"))?.isEmpty == true },
                      "no temp file stays")
        return (outcome, committedResult == true && store.contains(d))
    }

    private func waitFor(_ cond: () -> Bool) -> Bool {
        for _ in 0..<500 { if cond() { return true }; usleep(10_000) }
        return cond()
    }

    func testFillVerifiesAndPublishes() throws {
        let bytes = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let d = digest(of: bytes)
        let r = try runFill(d, declaredTotal: UInt64(bytes.count), chunks: [Array(bytes[0..<1000]), Array(bytes[1000...])])
        XCTAssertEqual(r.outcome, .verified)
        XCTAssertTrue(r.published)
        let f = try XCTUnwrap(FileManager.default.contents(atPath: "\(dir!)/blobs/sha256/\(d.hex.prefix(2))/\(d.hex)"))
        XCTAssertEqual(Array(f), bytes)
    }

    func testFillWithWrongBytesIsNeverPublished() throws {
        let bytes = Array(repeating: UInt8(1), count: 5000)
        var wrong = bytes
        wrong[4999] = 2
        let d = digest(of: bytes)
        let r = try runFill(d, declaredTotal: 5000, chunks: [wrong])
        guard case .failed = r.outcome else { return XCTFail("expected failure, got \(r.outcome)") }
        XCTAssertFalse(r.published)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(dir!)/blobs/sha256/\(d.hex.prefix(2))/\(d.hex)"))
    }

    func testShortFillIsNeverPublished() throws {
        let bytes = Array(repeating: UInt8(9), count: 5000)
        let d = digest(of: bytes)
        let r = try runFill(d, declaredTotal: 6000, chunks: [bytes])
        guard case .failed = r.outcome else { return XCTFail("expected failure, got \(r.outcome)") }
        XCTAssertFalse(r.published)
    }

    /// A blob that does not fit (or a disk that refuses writes) is relayed to
    /// its readers through one shared window, verified, and never kept. New
    /// requests join the relay while the window still starts at the file's
    /// end, and start their own fetch once it has moved on.
    func testRelayReachesReadersThroughTheWindowAndKeepsNothing() throws {
        let store = try BlobStore(root: dir, pool: pool)
        let registry = FillRegistry(store: store, pool: pool)
        let size = BlobFill.relayWindow + (4 << 20)
        let bytes = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ $0 >> 16) }
        let d = digest(of: bytes)
        var relayed: [UInt8] = []
        var outcome = BlobFill.Outcome.filling
        let committed = expectation(description: "done")
        var token: AnyObject?
        var fillRef: BlobFill?
        onLoop { done in
            guard case .started(let fill)? = try? registry.lookup(d, loop: self.loop) else { XCTFail("not started"); done(); return }
            fillRef = fill
            token = fill.subscribe(on: self.loop) { p in
                outcome = p.outcome
                while case .bytes(let chunk) = fill.relayed(at: UInt64(relayed.count)) { relayed += chunk }
            }
            fill.setTotal(UInt64(bytes.count))
            fill.relayOnly()
            guard case .joined(let same)? = try? registry.lookup(d, loop: self.loop), same === fill else {
                XCTFail("a relay whose window has not moved takes new readers"); done(); return
            }
            var movedAt: Int?
            for c in stride(from: 0, to: bytes.count, by: 65536) {
                _ = Array(bytes[c..<min(c + 65536, bytes.count)]).withUnsafeBytes { fill.append($0) }
                if movedAt == nil, case .started(let other)? = try? registry.lookup(d, loop: self.loop) {
                    movedAt = c
                    other.fail(status: 0, retryAfter: nil, reason: "not driven in this test")
                }
            }
            XCTAssertEqual(movedAt.map { $0 >= BlobFill.relayWindow - 65536 }, true, "new readers join until the window moves: \(String(describing: movedAt))")
            guard case .gone = fill.relayed(at: 0) else { XCTFail("the window's first bytes are gone"); done(); return }
            XCTAssertEqual(fill.progress.inFile, 0, "nothing went to the file")
            XCTAssertLessThanOrEqual(BlobFill.relayMemoryInUse, BlobFill.relayWindow)
            fill.finish(store: store, pool: self.pool) { ok in
                XCTAssertFalse(ok)
                committed.fulfill()
            }
            done()
        }
        wait(for: [committed], timeout: 20)
        XCTAssertEqual(outcome, .verified)
        XCTAssertTrue(relayed == bytes, "the reader got every byte in order (\(relayed.count) of \(bytes.count))")
        XCTAssertFalse(store.contains(d))
        XCTAssertGreaterThan(BlobFill.relayMemoryInUse, 0, "a reader still attached keeps the window")
        onLoop { done in fillRef!.unsubscribe(token!); done() }
        XCTAssertEqual(BlobFill.relayMemoryInUse, 0, "the last reader leaving an ended relay frees its window")
        XCTAssertTrue(waitFor { (try? FileManager.default.contentsOfDirectory(atPath: self.dir + "/tmp"))?.isEmpty == true })
    }

    /// A relay whose last reader leaves is abandoned (its fetch cancelled);
    /// a fill that can be cached runs on without readers.
    func testRelayWithoutReadersIsAbandoned() throws {
        let store = try BlobStore(root: dir, pool: pool)
        let registry = FillRegistry(store: store, pool: pool)
        let d = digest(of: [1, 2, 3])
        let abandoned = expectation(description: "abandoned")
        onLoop { done in
            guard case .started(let fill)? = try? registry.lookup(d, loop: self.loop) else { XCTFail("not started"); done(); return }
            fill.setOnAbandoned { abandoned.fulfill() }
            let a = fill.subscribe(on: self.loop) { _ in }
            fill.unsubscribe(a)  // not a relay: nothing happens
            let b = fill.subscribe(on: self.loop) { _ in }
            fill.relayOnly()
            fill.unsubscribe(b)
            done()
        }
        wait(for: [abandoned], timeout: 10)
    }

    func testIndexSurvivesReopenAndIgnoresTornLine() throws {
        let d = digest(of: [1, 2, 3])
        do {
            let store = try BlobStore(root: dir, pool: pool)
            store.index.setTag("library/alpine", "3.20", .init(digest: d, mediaType: "application/vnd.oci.image.index.v1+json", confirmedAt: 1234))
            store.index.setMediaType(d, "application/vnd.oci.image.index.v1+json")
            store.index.link("library/alpine", [d])
            store.index.flush()
        }
        // A crash mid-append leaves half a record.
        let h = try XCTUnwrap(FileHandle(forWritingAtPath: dir + "/index.log"))
        h.seekToEndOfFile()
        h.write(Data("T\tlibrary/alpine\tedge\tsha256:12".utf8))
        h.closeFile()
        let store = try BlobStore(root: dir, pool: pool)
        XCTAssertEqual(store.index.tag("library/alpine", "3.20")?.digest, d)
        XCTAssertEqual(store.index.tag("library/alpine", "3.20")?.confirmedAt, 1234)
        XCTAssertNil(store.index.tag("library/alpine", "edge"))
        XCTAssertEqual(store.index.mediaType(of: d), "application/vnd.oci.image.index.v1+json")
        XCTAssertTrue(store.index.isLinked("library/alpine", d))
        XCTAssertFalse(store.index.isLinked("other/repo", d))
        XCTAssertEqual(store.index.tags(of: "library/alpine"), ["3.20"])
    }
}
