import XCTest
@testable import OCI

final class DigestTests: XCTestCase {
    let hex64 = String(repeating: "ab", count: 32)
    let hex128 = String(repeating: "0f", count: 64)

    func testValidDigests() throws {
        let d = try XCTUnwrap(Digest("sha256:" + hex64))
        XCTAssertEqual(d.algorithm, .sha256)
        XCTAssertEqual(d.hex, hex64)
        XCTAssertEqual(d.description, "sha256:" + hex64)
        let e = try XCTUnwrap(Digest("sha512:" + hex128))
        XCTAssertEqual(e.algorithm, .sha512)
        XCTAssertEqual(e.description, "sha512:" + hex128)
        XCTAssertEqual(DigestAlgorithm.sha256.hexLength, 64)
        XCTAssertEqual(DigestAlgorithm.sha512.hexLength, 128)
    }

    func testRejectsNonCanonicalText() {
        let h63 = String(hex64.dropFirst())
        let bad: [String] = [
            "sha256:" + hex64.uppercased(),
            "sha256:A" + h63,
            "SHA256:" + hex64,
            "sha256:" + h63,                         // 63
            "sha256:" + hex64 + "a",                 // 65
            "sha512:" + hex64,                       // sha256 length under sha512
            "sha256:" + hex128,                      // sha512 length under sha256
            "sha512:" + String(hex128.dropFirst()),
            "sha256:",
            "sha256",
            ":" + hex64,
            "",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha384:" + String(repeating: "a", count: 96),
            " sha256:" + hex64,
            "sha256:" + hex64 + " ",
            "sha256: " + h63,
            "sha256:" + h63 + "\n",
            "sha256:" + h63 + "g",
            "sha256::" + h63,
            "sha256+b64u:" + hex64,
        ]
        for text in bad {
            XCTAssertNil(Digest(text), text)
        }
    }

    func testPartsInitializer() {
        XCTAssertNotNil(Digest(algorithm: .sha256, hex: hex64))
        XCTAssertNil(Digest(algorithm: .sha256, hex: hex128))
        XCTAssertNil(Digest(algorithm: .sha512, hex: hex64))
        XCTAssertNil(Digest(algorithm: .sha256, hex: "sha256:" + hex64))
        XCTAssertNil(Digest(algorithm: .sha256, hex: hex64.uppercased()))
    }

    func testEqualityHashingAndOrder() throws {
        let a = try XCTUnwrap(Digest("sha256:" + String(repeating: "0", count: 64)))
        let b = try XCTUnwrap(Digest("sha256:" + String(repeating: "f", count: 64)))
        let c = try XCTUnwrap(Digest("sha512:" + String(repeating: "0", count: 128)))
        XCTAssertEqual(a, Digest(algorithm: .sha256, hex: String(repeating: "0", count: 64)))
        XCTAssertEqual(Set([a, a, b]).count, 2)
        XCTAssertLessThan(a, b)
        XCTAssertLessThan(b, c)
        XCTAssertEqual([c, b, a].sorted(), [a, b, c])
    }
}
