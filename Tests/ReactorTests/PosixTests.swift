import Foundation
import XCTest
@testable import Reactor

/// The file wrappers the store relies on: whole writes at an offset, the
/// ENOENT and EEXIST cases callers expect, locks reported as `.wouldBlock`.
final class PosixTests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "berth-posix-" + UUID().uuidString
        try Posix.mkdirIfMissing(path: dir)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func testPwriteAllWritesAtTheOffsetAndFsyncs() throws {
        let fd = try Posix.open(path: dir + "/f", flags: O_RDWR | O_CREAT)
        defer { Posix.close(fd: fd) }
        try Array("hello".utf8).withUnsafeBytes { try Posix.pwriteAll(fd: fd, $0, offset: 0) }
        try Array("J".utf8).withUnsafeBytes { try Posix.pwriteAll(fd: fd, $0, offset: 0) }
        try Array("!".utf8).withUnsafeBytes { try Posix.pwriteAll(fd: fd, $0, offset: 5) }
        try Posix.fsync(fd: fd)
        try Posix.fsyncDirectory(path: dir)
        XCTAssertEqual(try String(contentsOfFile: dir + "/f", encoding: .utf8), "Jello!")
        try Posix.ftruncate(fd: fd, length: 2)
        XCTAssertEqual(try Posix.stat(path: dir + "/f").st_size, 2)
    }

    func testMissingFilesAndDirectories() throws {
        try Posix.mkdirIfMissing(path: dir)  // exists: fine
        XCTAssertFalse(try Posix.unlink(path: dir + "/none"), "nothing to remove is not an error")
        XCTAssertThrowsError(try Posix.stat(path: dir + "/none")) { XCTAssertEqual(($0 as? IOError)?.errno, ENOENT) }
        XCTAssertThrowsError(try Posix.forEachEntry(inDirectory: dir + "/none") { _ in }) {
            XCTAssertEqual(($0 as? IOError)?.errno, ENOENT)
        }
        XCTAssertThrowsError(try Posix.rename(from: dir + "/none", to: dir + "/other")) { error in
            XCTAssertEqual((error as? IOError)?.errno, ENOENT)
            XCTAssertTrue("\(error)".contains(self.dir + "/none"), "the error names the path: \(error)")
        }
    }

    func testForEachEntryListsNamesButDots() throws {
        for name in ["a", "b", "c"] { XCTAssertTrue(FileManager.default.createFile(atPath: dir + "/" + name, contents: nil)) }
        try Posix.mkdirIfMissing(path: dir + "/sub")
        var names: [String] = []
        try Posix.forEachEntry(inDirectory: dir) { names.append($0) }
        XCTAssertEqual(names.sorted(), ["a", "b", "c", "sub"])
        XCTAssertTrue(try Posix.unlink(path: dir + "/a"))
        names = []
        try Posix.forEachEntry(inDirectory: dir) { names.append($0) }
        XCTAssertEqual(names.sorted(), ["b", "c", "sub"])
    }

    func testFlockHeldElsewhereIsWouldBlock() throws {
        let a = try Posix.open(path: dir + "/lock", flags: O_RDWR | O_CREAT)
        defer { Posix.close(fd: a) }
        let b = try Posix.open(path: dir + "/lock", flags: O_RDWR)
        defer { Posix.close(fd: b) }
        XCTAssertEqual(try Posix.flock(fd: a, operation: LOCK_EX | LOCK_NB), .processed(0))
        XCTAssertEqual(try Posix.flock(fd: b, operation: LOCK_EX | LOCK_NB), .wouldBlock)
    }
}
