import XCTest
@testable import Archive

/// The tar reader and writer as values: archives built in memory, cut and
/// corrupted byte by byte; no files, no processes.
final class TarReaderTests: XCTestCase {
    /// Every entry with its data, reading through chunks of `chunk` bytes.
    func readAll(_ bytes: [UInt8], chunk: Int = 1 << 16) throws -> [(TarEntry, [UInt8])] {
        let r = TarReader(MemorySource(bytes, chunk: chunk))
        var out: [(TarEntry, [UInt8])] = []
        var buf = [UInt8](repeating: 0, count: 333)
        while let e = try r.next() {
            var data: [UInt8] = []
            while true {
                let n = try buf.withUnsafeMutableBytes { try r.read(into: $0) }
                if n == 0 { break }
                data += buf[0..<n]
            }
            out.append((e, data))
        }
        return out
    }

    func archive(_ build: (TarWriter) throws -> Void) throws -> [UInt8] {
        let sink = MemorySink()
        let w = TarWriter(sink)
        try build(w)
        try w.finish()
        return sink.bytes
    }

    /// A raw member: header plus padded data (for hostile archives).
    func member(_ name: String, type: UInt8 = UInt8(ascii: "0"), link: String = "", data: [UInt8] = []) -> [UInt8] {
        TarWriter.header(name: name, linkName: link, size: Int64(data.count), type: type)
            + data + [UInt8](repeating: 0, count: (512 - data.count % 512) % 512)
    }

    let end = [UInt8](repeating: 0, count: 1024)

    func assertRefused(_ bytes: [UInt8], _ kind: ArchiveError.Kind, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try readAll(bytes), file: file, line: line) { e in
            XCTAssertEqual((e as? ArchiveError)?.kind, kind, "\(e)", file: file, line: line)
        }
    }

    func testRoundTripSmallAndPaddedFiles() throws {
        let payload = (0..<1500).map { UInt8($0 % 251) }
        let bytes = try archive { w in
            try w.addDirectory("blobs")
            try w.addFile("oci-layout", Array(#"{"imageLayoutVersion":"1.0.0"}"#.utf8))
            try w.addFile("blobs/sha256/abc", payload)
            try w.addFile("empty", [])
        }
        XCTAssertEqual(bytes.count % 512, 0)
        for chunk in [1, 7, 512, 100_000] {
            let got = try readAll(bytes, chunk: chunk)
            XCTAssertEqual(got.map(\.0.name), ["blobs", "oci-layout", "blobs/sha256/abc", "empty"])
            XCTAssertEqual(got[0].0.kind, .directory)
            XCTAssertEqual(got[2].1, payload)
            XCTAssertEqual(got[3].1, [])
        }
    }

    func testLongNamesThroughPax() throws {
        let name = "dir/" + String(repeating: "n", count: 180) + "/layer.tar"
        let bytes = try archive { try $0.addFile(name, [1, 2, 3]) }
        let got = try readAll(bytes)
        XCTAssertEqual(got.map(\.0.name), [name])
        XCTAssertEqual(got[0].1, [1, 2, 3])
    }

    func testGNULongNameAndLink() throws {
        let long = String(repeating: "a", count: 150)
        let bytes = member("././@LongLink", type: UInt8(ascii: "L"), data: Array(long.utf8) + [0])
            + member("short", data: [9])
            + member("././@LongLink", type: UInt8(ascii: "K"), data: Array(long.utf8))
            + member("ln", type: UInt8(ascii: "2"))
            + end
        let got = try readAll(bytes)
        XCTAssertEqual(got.map(\.0.name), [long, "ln"])
        XCTAssertEqual(got[1].0.kind, .symlink(long))
    }

    func testUstarPrefixField() throws {
        var h = TarWriter.header(name: "layer.tar", size: 0, type: UInt8(ascii: "0"))
        for (i, c) in "deep/dir".utf8.enumerated() { h[345 + i] = c }
        // Recompute the checksum after editing the prefix.
        for i in 148..<156 { h[i] = 0x20 }
        let sum = String(h.reduce(0) { $0 + Int($1) }, radix: 8)
        for (i, c) in (String(repeating: "0", count: 6 - sum.count) + sum).utf8.enumerated() { h[148 + i] = c }
        h[154] = 0
        XCTAssertEqual(try readAll(h + end).map(\.0.name), ["deep/dir/layer.tar"])
    }

    func testDockerSaveStyleSymlinksInsideAreResolved() throws {
        let bytes = member("abc.tar", data: [1]) + member("1111/layer.tar", type: UInt8(ascii: "2"), link: "../abc.tar")
            + member("hard", type: UInt8(ascii: "1"), link: "./abc.tar") + end
        let got = try readAll(bytes)
        XCTAssertEqual(got[1].0.kind, .symlink("abc.tar"))
        XCTAssertEqual(got[2].0.kind, .hardlink("abc.tar"))
    }

    func testDotDotIsRefused() {
        assertRefused(member("../evil", data: [1]) + end, .unsafePath)
        assertRefused(member("blobs/../../evil", data: [1]) + end, .unsafePath)
    }

    func testAbsolutePathIsRefused() {
        assertRefused(member("/etc/passwd", data: [1]) + end, .unsafePath)
    }

    func testPaxPathCannotSmuggleDotDot() {
        let record = TarWriter.paxRecord("path", "../../x")
        assertRefused(member("PaxHeaders/x", type: UInt8(ascii: "x"), data: record) + member("x", data: [1]) + end, .unsafePath)
    }

    func testSymlinksOutAreRefused() {
        assertRefused(member("a/link", type: UInt8(ascii: "2"), link: "../../etc/passwd") + end, .unsafePath)
        assertRefused(member("link", type: UInt8(ascii: "2"), link: "/etc/passwd") + end, .unsafePath)
        assertRefused(member("link", type: UInt8(ascii: "1"), link: "../outside") + end, .unsafePath)
        assertRefused(member("link", type: UInt8(ascii: "1"), link: "/etc/shadow") + end, .unsafePath)
    }

    func testDuplicateEntriesAreRefused() {
        assertRefused(member("manifest.json", data: [1]) + member("./manifest.json", data: [2]) + end, .duplicate)
    }

    func testBadChecksumIsRefused() {
        var bytes = member("a", data: [1]) + end
        bytes[0] ^= 0x01
        assertRefused(bytes, .badChecksum)
        assertRefused(Array("not a tar archive at all".utf8) + [UInt8](repeating: 0x41, count: 600), .badChecksum)
    }

    func testTruncatedAnywhereIsRefused() throws {
        let full = try archive { w in
            try w.addFile("a", (0..<700).map { UInt8($0 & 0xff) })
            try w.addFile("b", [1, 2, 3])
        }
        XCTAssertNoThrow(try readAll(full))
        // Every cut short of the complete end marker is an error, never a short success
        // (one zero block then the end of stream is accepted, as GNU tar does).
        for cut in stride(from: 1, to: full.count - 512, by: 37) {
            XCTAssertThrowsError(try readAll(Array(full[..<cut])), "cut at \(cut)") { e in
                XCTAssertEqual((e as? ArchiveError)?.kind, .truncated, "cut at \(cut): \(e)")
            }
        }
        XCTAssertThrowsError(try readAll([]))
    }

    func testSizesThatOverflowAreRefused() {
        var h = TarWriter.header(name: "big", size: 0, type: UInt8(ascii: "0"))
        // Base-256 with more significant bytes than an Int64 holds.
        h[124] = 0x80
        for i in 125..<136 { h[i] = 0xff }
        fixChecksum(&h)
        assertRefused(h + end, .badNumber)
        var g = TarWriter.header(name: "neg", size: 0, type: UInt8(ascii: "0"))
        g[124] = 0xff  // negative base-256
        fixChecksum(&g)
        assertRefused(g + end, .badNumber)
        var o = TarWriter.header(name: "octal", size: 0, type: UInt8(ascii: "0"))
        o[124] = UInt8(ascii: "9")
        fixChecksum(&o)
        assertRefused(o + end, .badNumber)
        let record = TarWriter.paxRecord("size", "99999999999999999999999")
        assertRefused(member("PaxHeaders/x", type: UInt8(ascii: "x"), data: record) + member("x") + end, .badNumber)
    }

    func testHugeDeclaredSizeIsTruncationNotAllocation() {
        // 8 GiB declared, 1 byte present: the reader streams, so this fails as truncated.
        var h = TarWriter.header(name: "huge", size: 8 << 30, type: UInt8(ascii: "0"))
        fixChecksum(&h)
        assertRefused(h + [1], .truncated)
    }

    func testOversizedExtendedHeaderIsRefused() {
        let h = TarWriter.header(name: "PaxHeaders/x", size: Int64(TarReader.maxExtendedHeader + 1), type: UInt8(ascii: "x"))
        assertRefused(h + end, .badExtendedHeader)
        assertRefused(member("PaxHeaders/x", type: UInt8(ascii: "x"), data: Array("5 a\n".utf8)) + member("x") + end, .badExtendedHeader)
    }

    func testBase256SizeRoundTrip() throws {
        let h = TarWriter.header(name: "big", size: 10 << 30, type: UInt8(ascii: "0"))
        XCTAssertEqual(h[124], 0x80)
        XCTAssertEqual(try TarHeader(h).size, 10 << 30)
    }

    func testPathNormalisation() {
        XCTAssertEqual(ArchivePath.normalize("./a//b/"), "a/b")
        XCTAssertEqual(ArchivePath.normalize("./"), "")
        XCTAssertNil(ArchivePath.normalize("a/../b"))
        XCTAssertNil(ArchivePath.normalize("/a"))
        XCTAssertEqual(ArchivePath.resolveSymlink(at: "x/y/l", target: "../z"), "x/z")
        XCTAssertNil(ArchivePath.resolveSymlink(at: "l", target: "../z"))
        XCTAssertNil(ArchivePath.resolveSymlink(at: "l", target: ""))
    }

    func fixChecksum(_ h: inout [UInt8]) {
        for i in 148..<156 { h[i] = 0x20 }
        let sum = String(h.reduce(0) { $0 + Int($1) }, radix: 8)
        for (i, c) in (String(repeating: "0", count: 6 - sum.count) + sum).utf8.enumerated() { h[148 + i] = c }
        h[154] = 0
    }
}
