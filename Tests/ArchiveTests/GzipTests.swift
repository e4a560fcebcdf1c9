import XCTest
@testable import Archive

final class GzipTests: XCTestCase {
    func gzip(_ bytes: [UInt8], level: Int32 = 6) throws -> [UInt8] {
        let sink = MemorySink()
        let gz = try GzipSink(sink, level: level, bufferSize: 1000)
        // Written in uneven pieces, as an exporter would.
        var i = 0
        while i < bytes.count {
            let n = min(4097, bytes.count - i)
            try bytes[i..<(i + n)].withUnsafeBytes { try gz.write($0) }
            i += n
        }
        try gz.finish()
        return sink.bytes
    }

    func gunzip(_ bytes: [UInt8], chunk: Int = 1 << 16, outChunk: Int = 777) throws -> [UInt8] {
        let src = try GzipSource(MemorySource(bytes, chunk: chunk), bufferSize: 512)
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: outChunk)
        while true {
            let n = try buf.withUnsafeMutableBytes { try src.read(into: $0) }
            if n == 0 { return out }
            out += buf[0..<n]
        }
    }

    var sample: [UInt8] {
        var g = SystemRandomNumberGenerator()
        return (0..<200_000).map { i in i % 3 == 0 ? UInt8.random(in: 0...255, using: &g) : UInt8(i % 7) }
    }

    func testRoundTrip() throws {
        let s = sample
        let z = try gzip(s)
        XCTAssertTrue(isGzip(z))
        XCTAssertLessThan(z.count, s.count)
        XCTAssertEqual(try gunzip(z), s)
        XCTAssertEqual(try gunzip(z, chunk: 1, outChunk: 1 << 20), s)
        XCTAssertEqual(try gunzip(try gzip([])), [])
    }

    func testConcatenatedMembersAreOneStream() throws {
        XCTAssertEqual(try gunzip(try gzip([1, 2, 3]) + gzip([4, 5])), [1, 2, 3, 4, 5])
    }

    func testTruncatedGzipIsRefusedAtEveryCut() throws {
        let z = try gzip(sample)
        for cut in stride(from: 0, to: z.count, by: max(1, z.count / 60)) {
            XCTAssertThrowsError(try gunzip(Array(z[..<cut])), "cut at \(cut)")
        }
    }

    func testCorruptDataOrCRCIsRefused() throws {
        var z = try gzip(sample)
        z[z.count - 6] ^= 0xff  // CRC-32 in the trailer
        XCTAssertThrowsError(try gunzip(z)) { XCTAssertEqual(($0 as? ArchiveError)?.kind, .corruptGzip) }
        var y = try gzip(sample)
        y[y.count / 2] ^= 0x55
        XCTAssertThrowsError(try gunzip(y))
        XCTAssertThrowsError(try gunzip([0x1f, 0x8b, 0x08, 0x00, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]))
    }

    func testTarThroughGzip() throws {
        let sink = MemorySink()
        let gz = try GzipSink(sink)
        let w = TarWriter(gz)
        try w.addFile("index.json", Array("{}".utf8))
        try w.finish()
        try gz.finish()
        let r = TarReader(try GzipSource(MemorySource(sink.bytes)))
        XCTAssertEqual(try r.next()?.name, "index.json")
        XCTAssertNil(try r.next())
    }
}
