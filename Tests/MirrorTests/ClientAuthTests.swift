import XCTest
@testable import Mirror

/// htpasswd parsing and bcrypt checks through the system's libcrypt, as values.
final class ClientAuthTests: XCTestCase {
    // `python3 -c "import crypt; print(crypt.crypt('s3cret', '$2b$05$abcdefghijklmnopqrstuu'))"`
    static let alice = "$2b$05$abcdefghijklmnopqrstuuLK7U1u6pVRmL7L1BBM2aS35PSZnDXlK"  // s3cret
    static let bob = "$2y$05$abcdefghijklmnopqrstuuVQd15VhR/oN1H3pzUR5lME0fZO6.qRW"    // other

    func testBcryptEntriesAreReadAndOthersRefusedByLine() throws {
        let users = try ClientAuth.parseHtpasswd("# team\nalice:\(Self.alice)\n\nbob:\(Self.bob)\r\n")
        XCTAssertEqual(users, ["alice": Self.alice, "bob": Self.bob])
        for bad in ["carol:$apr1$xyz$abc", "dave:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "erin:plaintext", ":\(Self.alice)", "nocolon", "anonymous:\(Self.bob)"] {
            XCTAssertThrowsError(try ClientAuth.parseHtpasswd("alice:\(Self.alice)\n\(bad)\n"), bad) {
                XCTAssertTrue("\($0)".hasPrefix("line 2"), "\($0)")
            }
        }
    }

    func testBcryptMatchesOnlyTheRightPassword() {
        XCTAssertTrue(ClientAuth.bcryptMatches(Array("s3cret".utf8), Self.alice))
        XCTAssertFalse(ClientAuth.bcryptMatches(Array("s3cre".utf8), Self.alice))
        XCTAssertFalse(ClientAuth.bcryptMatches(Array("s3cret\0x".utf8), Self.alice), "a NUL never truncates a password into a match")
        XCTAssertTrue(ClientAuth.bcryptMatches(Array("other".utf8), Self.bob), "$2y$ as htpasswd -B writes it")
    }

    func testBase64Decoding() {
        XCTAssertEqual(base64Decode("YWxpY2U6czNjcmV0").map { String(decoding: $0, as: UTF8.self) }, "alice:s3cret")
        XCTAssertEqual(base64Decode("YQ==").map { String(decoding: $0, as: UTF8.self) }, "a")
        XCTAssertNil(base64Decode("YQ=x"))
        XCTAssertNil(base64Decode("a b"))
    }
}
