@testable import HTTP1
import TestSupport
import XCTest

/// The access line rendered straight into bytes must be, byte for byte, what
/// the renderer it replaced produced (`LegacyAccessLine`): fixed records with
/// their lines spelled out, then many random ones.
final class AccessLineTests: XCTestCase {
    private static let digest = "sha256:6d1ef012b5674ad8a127ecfa9b5e6f91b8cbf4a4f3e5c2cd7a1a5b0e1f2d3c4b"

    /// Records covering every optional field, both cache-status spellings,
    /// incomplete answers, escapes and the query rules.
    private static func fixtures() -> [AccessRecord] {
        var warm = AccessRecord(unixMillis: 1_796_304_629_123, requestID: "d1191155838b-1a3", client: "127.0.0.1:37120", method: "GET",
                                target: "/v2/bench/app/manifests/\(digest)", status: 200, bodyBytes: 527, durationNanos: 85_999)
        warm.notes.user = "anonymous"
        warm.notes.upstream = "127.0.0.1:5000"
        warm.notes.repository = "bench/app"
        warm.notes.reference = digest
        warm.notes.cacheStatus = "Berth; hit"

        var cold = warm
        cold.requestID = "client.id_42"
        cold.target = "/v2/library/alpine/manifests/3.20?ns=docker.io"
        cold.notes.reference = "3.20"
        cold.notes.cacheStatus = "Berth; fwd=miss; stored"
        cold.notes.addUpstreamWait(209_770_001)
        cold.durationNanos = 212_405_999

        var refused = AccessRecord(unixMillis: 0, requestID: "p-ff", client: "[::1]:443", method: "HEAD",
                                   target: "http://user:pass@127.0.0.1:5000/v2/x/tags/list?n=10&token=s3cr3t&last=b",
                                   status: 404, bodyBytes: 0, durationNanos: 0)
        refused.notes.error = "MANIFEST_UNKNOWN"
        refused.notes.errorMessage = "manifest \"x\":1.0 not found\n\t(\u{01}\u{7f}) ünï ☃ \\"
        refused.notes.cacheStatus = "hit; fwd=stale"

        var cut = AccessRecord(unixMillis: 4_107_542_399_999, requestID: "r", client: nil, method: nil, target: nil,
                               status: 0, bodyBytes: 123_456_789_012, durationNanos: 30_000_000_000_000)
        cut.isComplete = false

        var hostile = warm
        hostile.target = "/v2/a\"b/manifests/\\x\u{1b}[31m?ns=\"},{\"status\":200&x=\u{0}"
        hostile.notes.user = "a\"\n\\\r"
        hostile.notes.repository = "ünïcode/☃"
        hostile.notes.cacheStatus = "Berth; "
        return [warm, cold, refused, cut, hostile]
    }

    func testFixturesRenderAsTheOldRendererDid() {
        let expected = [
            #"{"time":"2026-12-03T13:30:29.123Z","request_id":"d1191155838b-1a3","client":"127.0.0.1:37120","user":"anonymous","method":"GET","path":"/v2/bench/app/manifests/sha256:6d1ef012b5674ad8a127ecfa9b5e6f91b8cbf4a4f3e5c2cd7a1a5b0e1f2d3c4b","upstream":"127.0.0.1:5000","repository":"bench/app","reference":"sha256:6d1ef012b5674ad8a127ecfa9b5e6f91b8cbf4a4f3e5c2cd7a1a5b0e1f2d3c4b","status":200,"cache_status":"hit","bytes":527,"duration_ms":0.085}"#,
            #"{"time":"2026-12-03T13:30:29.123Z","request_id":"client.id_42","client":"127.0.0.1:37120","user":"anonymous","method":"GET","path":"/v2/library/alpine/manifests/3.20?ns=docker.io","upstream":"127.0.0.1:5000","repository":"bench/app","reference":"3.20","status":200,"cache_status":"fwd=miss; stored","bytes":527,"duration_ms":212.405,"upstream_ms":209.770}"#,
            #"{"time":"1970-01-01T00:00:00.000Z","request_id":"p-ff","client":"[::1]:443","method":"HEAD","path":"/v2/x/tags/list?n=10&redacted&last=b","status":404,"cache_status":"hit; fwd=stale","bytes":0,"duration_ms":0.000,"error":"MANIFEST_UNKNOWN","error_message":"manifest \"x\":1.0 not found\n\t(\u0001\u007f) ünï ☃ \\"}"#,
            #"{"time":"2100-02-28T23:59:59.999Z","request_id":"r","status":0,"bytes":123456789012,"duration_ms":30000000.000,"incomplete":true}"#,
            #"{"time":"2026-12-03T13:30:29.123Z","request_id":"d1191155838b-1a3","client":"127.0.0.1:37120","user":"a\"\n\\\r","method":"GET","path":"/v2/a\"b/manifests/\\x\u001b[31m?ns=\"},{\"status\":200&redacted","upstream":"127.0.0.1:5000","repository":"ünïcode/☃","reference":"sha256:6d1ef012b5674ad8a127ecfa9b5e6f91b8cbf4a4f3e5c2cd7a1a5b0e1f2d3c4b","status":200,"cache_status":"","bytes":527,"duration_ms":0.085}"#,
        ].map { $0 + "\n" }
        let records = Self.fixtures()
        for (r, line) in zip(records, expected) {
            XCTAssertEqual(String(decoding: LegacyAccessLine.line(r), as: UTF8.self), line, "the reference itself")
            XCTAssertEqual(r.line, line)
        }
    }

    func testRandomRecordsRenderAsTheOldRendererDid() {
        var rng = SplitMix(seed: 0x5eed_ac_ce55)
        for i in 0..<20_000 {
            let r = Self.randomRecord(&rng)
            var out: [UInt8] = []
            r.render(into: &out)
            let old = LegacyAccessLine.line(r)
            if out != old {
                XCTFail("record \(i): \(String(decoding: out, as: UTF8.self)) != \(String(decoding: old, as: UTF8.self))")
                return
            }
        }
    }

    /// One loop's buffer renders many lines in a row, its time formatted once
    /// per second: seconds that repeat, go on, go back (a clock step) and jump.
    func testOneBufferRendersALoopsLinesAsTheOldRendererDid() {
        var rng = SplitMix(seed: 7)
        let buffer = AccessLineBuffer(capacity: 64)  // grows, and shrinks back on removeAll
        var old: [UInt8] = []
        var millis: Int64 = 1_796_304_629_990
        for i in 0..<5000 {
            var r = Self.randomRecord(&rng)
            switch rng.next() % 10 {
            case 0: millis -= Int64(rng.next() % 3000)
            case 1: millis += Int64(rng.next() % 100_000_000)
            default: millis += Int64(rng.next() % 7)
            }
            r.unixMillis = millis
            buffer.append(r)
            old += LegacyAccessLine.line(r)
            XCTAssertEqual(buffer.lines, i % 100 + 1)
            if i % 100 == 99 {
                XCTAssertEqual(Array(buffer.bytes), old, "lines \(i - 99)...\(i)")
                buffer.removeAll()
                old = []
            }
        }
    }

    /// A path longer than the buffer, every byte escaped: the buffer grows to fit.
    func testALineLongerThanTheBufferFits() {
        var r = Self.fixtures()[0]
        r.target = "/v2/" + String(repeating: "\u{1}\"", count: 40_000)
        let buffer = AccessLineBuffer(capacity: 1024)
        buffer.append(r)
        XCTAssertEqual(Array(buffer.bytes), LegacyAccessLine.line(r))
        XCTAssertGreaterThan(buffer.count, 240_000)
    }

    func testJSONStringEscapes() {
        func json(_ s: String) -> String {
            var out = [UInt8](repeating: 0, count: 6 * s.utf8.count + 10)
            let n = out.withUnsafeMutableBufferPointer { o in
                var p = o.baseAddress!
                withUTF8(s) { p.jsonString($0) }
                return p - o.baseAddress!
            }
            return String(decoding: out[..<n], as: UTF8.self)
        }
        XCTAssertEqual(json(""), #""""#)
        XCTAssertEqual(json("plain/path:1.0-x_y"), #""plain/path:1.0-x_y""#)
        XCTAssertEqual(json("a\"b\\c"), #""a\"b\\c""#)
        XCTAssertEqual(json("\n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f}"), #""\n\r\t\u0008\u000c\u0000\u001f\u007f""#)
        XCTAssertEqual(json("ünï☃😀 \u{80}"), "\"ünï☃😀 \u{80}\"", "non-ASCII is copied as is")
        XCTAssertEqual(json("/v2/a\\b/manifests/c\\d"), #""/v2/a\\b/manifests/c\\d""#, "a backslash in a path")
        // Each escaped byte at each offset of a 40-byte run: the 16- and 8-byte scans and
        // the last word's must see it wherever it is.
        for bad in ["\"", "\\", "\n", "\u{1}", "\u{7f}"] {
            for at in 0..<40 {
                let s = String(repeating: "x", count: at) + bad + String(repeating: "y", count: 39 - at)
                XCTAssertEqual(json(s), String(decoding: Self.legacyJSON(s), as: UTF8.self), s.debugDescription)
            }
        }
    }

    func testWordScanMatchesTheByteRule() {
        var rng = SplitMix(seed: 3)
        let interesting: [UInt8] = [0x00, 0x01, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x5b, 0x5c, 0x5d, 0x7e, 0x7f, 0x80, 0x9f, 0xa2, 0xdc, 0xff]
        for _ in 0..<100_000 {
            var w: UInt64 = 0
            for i in 0..<8 {
                let b = rng.next() % 4 == 0 ? interesting[Int(rng.next() % UInt64(interesting.count))] : UInt8(truncatingIfNeeded: rng.next())
                w |= UInt64(b) << (8 * i)
            }
            let expected = (0..<8).contains { i in
                let b = UInt8(truncatingIfNeeded: w >> (8 * i))
                return b < 0x20 || b == 0x22 || b == 0x5c || b == 0x7f
            }
            XCTAssertEqual(wordNeedsEscape(w), expected, String(w, radix: 16))
            let clean: UInt64 = 0x4141_4141_4141_4141
            XCTAssertEqual(vectorNeedsEscape(unsafeBitCast(SIMD2(w, clean), to: SIMD16<UInt8>.self)), expected)
            XCTAssertEqual(vectorNeedsEscape(unsafeBitCast(SIMD2(clean, w), to: SIMD16<UInt8>.self)), expected)
        }
    }

    private static func legacyJSON(_ s: String) -> [UInt8] {
        var out: [UInt8] = []
        LegacyAccessLine.appendJSONString(s[...], to: &out)
        return out
    }

    // MARK: random records

    /// Pieces that exercise the escaper (each class of byte, at every offset
    /// of an 8-byte word once concatenated) and the path rules.
    private static let pieces: [String] = [
        "a", "bench/app", "/v2/", "manifests/", "sha256:", "0123456789abcdef", "?", "&", "=", "ns=docker.io", "n=10", "last=b",
        "artifactType=x", "token=s3cr3t", "://", "http://u:p@h:1", "\"", "\\", "\n", "\r", "\t", "\u{0}", "\u{1}", "\u{1f}",
        "\u{7f}", " ", "ü", "☃", "😀", "Berth; ", "hit", "; ", "}", "{", ",", ":",
    ]

    private static func randomString(_ rng: inout SplitMix, maxPieces: Int) -> String {
        var s = ""
        for _ in 0..<Int(rng.next() % UInt64(maxPieces + 1)) { s += pieces[Int(rng.next() % UInt64(pieces.count))] }
        return s
    }

    private static func maybe(_ rng: inout SplitMix, maxPieces: Int = 12) -> String? {
        rng.next() % 4 == 0 ? nil : randomString(&rng, maxPieces: maxPieces)
    }

    static func randomRecord(_ rng: inout SplitMix) -> AccessRecord {
        let target: String? = switch rng.next() % 4 {
        case 0: nil
        case 1: "/v2/" + randomString(&rng, maxPieces: 30)
        default: randomString(&rng, maxPieces: 30)
        }
        // Mostly plausible times; some at the edges (negative ones render as the epoch).
        let millis: Int64 = switch rng.next() % 8 {
        case 0: Int64(bitPattern: rng.next() % 8_000_000_000_000) - 1_000_000_000_000
        case 1: Int64(rng.next() % 3000)
        default: 1_796_304_629_000 + Int64(rng.next() % 5000)
        }
        var r = AccessRecord(unixMillis: millis, requestID: randomString(&rng, maxPieces: 4), client: maybe(&rng, maxPieces: 3),
                             method: maybe(&rng, maxPieces: 2), target: target, status: Int(rng.next() % 1000),
                             bodyBytes: rng.next() >> (rng.next() % 64), durationNanos: rng.next() >> (rng.next() % 64))
        r.isComplete = rng.next() % 8 != 0
        r.notes.user = maybe(&rng, maxPieces: 3)
        r.notes.upstream = maybe(&rng, maxPieces: 3)
        r.notes.repository = maybe(&rng)
        r.notes.reference = maybe(&rng)
        r.notes.cacheStatus = rng.next() % 3 == 0 ? "Berth; " + randomString(&rng, maxPieces: 4) : maybe(&rng, maxPieces: 4)
        r.notes.error = maybe(&rng, maxPieces: 2)
        r.notes.errorMessage = maybe(&rng, maxPieces: 40)
        if rng.next() % 2 == 0 { r.notes.upstreamNanos = rng.next() >> (rng.next() % 64) }
        return r
    }
}
