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
