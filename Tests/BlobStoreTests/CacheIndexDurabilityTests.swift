import Foundation
import XCTest
import Reactor
import OCI
@testable import BlobStore

/// The index's files after a crash or on a full disk: a torn journal tail is
/// cut at load, so the next append starts on a clean line, and a write that
/// fails never leaves a partial file where a good one was.
final class CacheIndexDurabilityTests: XCTestCase {
    var dir: String!
    var pool: BlockingPool!
    var path: String { dir + "/index.log" }

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "berth-index-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        pool = BlockingPool(threads: 1)  // one thread: work runs in submission order (`settle`)
    }

    override func tearDown() {
        pool.shutdown()
        try? FileManager.default.removeItem(atPath: dir)
    }

    private func digest(_ i: Int) -> Digest {
        Digest(algorithm: .sha256, hex: SHA256Hasher.hex(Array("blob \(i)".utf8)))!
    }

    private func record(_ i: Int) -> CacheIndex.TagRecord {
        .init(digest: digest(i), mediaType: "application/vnd.oci.image.manifest.v1+json", confirmedAt: 1000 + Int64(i))
    }

    private func openIndex() throws -> CacheIndex { try CacheIndex(path: path, pool: pool) }

    private func journal() throws -> String { try String(contentsOfFile: path, encoding: .utf8) }

    /// Runs the flushes already queued on the pool, then flushes what is left:
    /// afterwards no write of `index` is in flight.
    private func settle(_ index: CacheIndex) {
        let e = expectation(description: "pool")
        pool.submit { e.fulfill() }
        wait(for: [e], timeout: 10)
        index.flush()
    }

    /// Lines the index logs, from whichever thread.
    private final class LogLines: @unchecked Sendable {  // `lines` under `lock`
        private let lock = NSLock()
        private var lines: [String] = []
        func append(_ l: String) { lock.lock(); lines.append(l); lock.unlock() }
        var all: [String] { lock.lock(); defer { lock.unlock() }; return lines }
    }

    /// Writes the first half of each buffer, then reports a full disk.
    private static func halfThenFull() -> CacheIndex.FileIO {
        var io = CacheIndex.FileIO()
        io.pwrite = { fd, buffer, offset in
            try Posix.pwriteAll(fd: fd, UnsafeRawBufferPointer(rebasing: buffer[0..<(buffer.count / 2)]), offset: offset)
            throw IOError(errno: ENOSPC, call: "pwrite")
        }
        return io
    }

    func testTornTailIsCutAtLoadSoTheNextAppendSurvivesAReload() throws {
        do {
            let index = try openIndex()
            index.setTag("library/alpine", "3.20", record(1))
            settle(index)
        }
        // A crash mid-append leaves half a record, without its newline.
        let h = try XCTUnwrap(FileHandle(forWritingAtPath: path))
        h.seekToEndOfFile()
        let torn = "T\tlibrary/alpine\tedge\tsha256:12"
        h.write(Data(torn.utf8))
        h.closeFile()
        do {
            let index = try openIndex()
            XCTAssertEqual(index.droppedTailBytes, torn.utf8.count)
            XCTAssertFalse(index.wasCleanlyClosed, "a torn record means a crash")
            XCTAssertEqual(index.tag("library/alpine", "3.20"), record(1))
            XCTAssertTrue(try journal().hasSuffix("\n"), "the torn record is cut at load")
            index.setTag("library/alpine", "3.21", record(2))
            settle(index)
        }
        let index = try openIndex()
        XCTAssertEqual(index.droppedTailBytes, 0)
        XCTAssertEqual(index.tag("library/alpine", "3.21"), record(2), "the record appended after the torn tail is kept")
        XCTAssertEqual(index.tags(of: "library/alpine"), ["3.20", "3.21"])
    }

    func testSnapshotThatCannotBeWrittenWholeLeavesThePreviousJournal() throws {
        do {
            let index = try openIndex()
            for i in 0..<50 { index.addBlob(digest(i), size: UInt64(1000 + i), now: 100 + Int64(i)) }
            index.setTag("library/alpine", "3.20", record(1))
            settle(index)
            let before = try journal()
            let logged = LogLines()
            index.log = logged.append
            index.io = Self.halfThenFull()
            XCTAssertThrowsError(try index.snapshot(clean: true)) { error in
                XCTAssertEqual((error as? IOError)?.errno, ENOSPC)
            }
            XCTAssertTrue(logged.all.contains { $0.contains("cannot write a snapshot") && $0.contains("No space left") }, "\(logged.all)")
            XCTAssertEqual(try journal(), before, "the journal is untouched")
            XCTAssertFalse(FileManager.default.fileExists(atPath: path + ".snapshot"), "no partial snapshot stays")
            // Room again: later records go to the old journal, after what it had.
            index.io = CacheIndex.FileIO()
            index.setTag("library/alpine", "3.21", record(2))
            settle(index)
        }
        let index = try openIndex()
        XCTAssertEqual(index.blobs().count, 50)
        XCTAssertEqual(index.tag("library/alpine", "3.20"), record(1))
        XCTAssertEqual(index.tag("library/alpine", "3.21"), record(2))
        XCTAssertFalse(index.wasCleanlyClosed, "the clean-stop record never reached the disk")
    }

    func testSnapshotThatCannotBeFsyncedLeavesThePreviousJournal() throws {
        do {
            let index = try openIndex()
            for i in 0..<10 { index.addBlob(digest(i), size: 100, now: Int64(i)) }
            index.removeBlob(digest(0))
            settle(index)
            let before = try journal()
            var io = CacheIndex.FileIO()
            io.fsync = { _ in throw IOError(errno: EIO, call: "fsync") }
            index.io = io
            XCTAssertThrowsError(try index.snapshot(clean: true)) { error in
                XCTAssertEqual((error as? IOError)?.errno, EIO)
            }
            XCTAssertEqual(try journal(), before, "a snapshot not known durable does not replace the journal")
            XCTAssertFalse(FileManager.default.fileExists(atPath: path + ".snapshot"))
        }
        let index = try openIndex()
        XCTAssertEqual(index.blobs().count, 9)
        XCTAssertFalse(index.wasCleanlyClosed)
    }

    func testAppendThatFailsMidwayLeavesNoTornRecordAndIsRetried() throws {
        do {
            let index = try openIndex()
            index.setTag("library/alpine", "3.20", record(1))
            settle(index)
            let logged = LogLines()
            index.log = logged.append
            index.io = Self.halfThenFull()
            index.setTag("library/alpine", "3.21", record(2))
            settle(index)
            XCTAssertTrue(try journal().hasSuffix("\n"), "no half record stays in the journal")
            XCTAssertEqual(logged.all.filter { $0.contains("cannot append") }.count, 1, "logged once while failing: \(logged.all)")
            index.io = CacheIndex.FileIO()
            index.setTag("library/alpine", "3.22", record(3))
            settle(index)
            XCTAssertEqual(logged.all.last, "appending to \(path) works again")
        }
        let index = try openIndex()
        XCTAssertEqual(index.tags(of: "library/alpine"), ["3.20", "3.21", "3.22"])
        XCTAssertEqual(index.tag("library/alpine", "3.21"), record(2))
    }

    /// Signature verdicts: one record per change, kept through a replay and (for cached digests) a snapshot.
    func testVerdictsSurviveReplayAndSnapshotForCachedDigests() throws {
        do {
            let index = try openIndex()
            index.addBlob(digest(1), size: 10, now: 1)
            index.setVerdict(digest(1), policy: "signatures[0]/abc", "verified:0")
            index.setVerdict(digest(1), policy: "signatures[0]/abc", "verified:0")  // unchanged: no second record
            index.setVerdict(digest(2), policy: "signatures[0]/abc", "unsigned")    // not cached: not in a snapshot
            settle(index)
            XCTAssertEqual(try journal().split(separator: "\n").filter { $0.hasPrefix("V\t") }.count, 2)
        }
        let replayed = try openIndex()
        XCTAssertEqual(replayed.verdict(digest(1), policy: "signatures[0]/abc"), "verified:0")
        XCTAssertEqual(replayed.verdict(digest(2), policy: "signatures[0]/abc"), "unsigned")
        XCTAssertNil(replayed.verdict(digest(1), policy: "signatures[0]/other-keys"))
        try replayed.snapshot(clean: true)
        let compacted = try openIndex()
        XCTAssertEqual(compacted.verdicts(of: digest(1)), ["signatures[0]/abc": "verified:0"])
        XCTAssertTrue(compacted.verdicts(of: digest(2)).isEmpty, "a verdict for what is no longer cached goes with the snapshot")
    }
}
