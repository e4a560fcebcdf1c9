import Foundation
import XCTest
import TestSupport
import OCI
@testable import Signatures

/// Keys made and payloads signed by the `openssl` command, as cosign would
/// sign them; verified by `PublicKey` and judged by `Verdict.of`.
final class SignatureVerifierTests: XCTestCase {
    var dir: String!
    let image = Digest("sha256:" + String(repeating: "cd", count: 32))!

    override func setUp() { dir = makeTemporaryDirectory("berth-sig") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    private func openssl(_ args: [String]) throws {
        let r = try Subprocess.run(["openssl"] + args, in: dir, timeout: 60, check: false)
        XCTAssertEqual(r.status, 0, r.stderr)
    }

    /// A key pair of `kind`: (private key path, public key PEM).
    private func keyPair(_ kind: String) throws -> (String, [UInt8]) {
        let name = "\(dir!)/\(kind)-\(UUID().uuidString.prefix(6))"
        switch kind {
        case "p256": try openssl(["ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", name + ".key"])
        case "p384": try openssl(["ecparam", "-genkey", "-name", "secp384r1", "-noout", "-out", name + ".key"])
        case "rsa": try openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", name + ".key"])
        default: try openssl(["genpkey", "-algorithm", "ed25519", "-out", name + ".key"])
        }
        try openssl(["pkey", "-in", name + ".key", "-pubout", "-out", name + ".pub"])
        return (name + ".key", Array(try Data(contentsOf: URL(fileURLWithPath: name + ".pub"))))
    }

    private func sign(_ payload: [UInt8], with key: String, kind: String) throws -> [UInt8] {
        let input = "\(dir!)/payload-\(UUID().uuidString.prefix(6))"
        try Data(payload).write(to: URL(fileURLWithPath: input))
        switch kind {
        case "ed25519": try openssl(["pkeyutl", "-sign", "-rawin", "-inkey", key, "-in", input, "-out", input + ".sig"])
        case "p384": try openssl(["dgst", "-sha384", "-sign", key, "-out", input + ".sig", input])
        default: try openssl(["dgst", "-sha256", "-sign", key, "-out", input + ".sig", input])
        }
        return Array(try Data(contentsOf: URL(fileURLWithPath: input + ".sig")))
    }

    private func payload(_ digest: Digest) -> [UInt8] {
        Array(#"{"critical":{"identity":{"docker-reference":"127.0.0.1:5000/team/app"},"image":{"docker-manifest-digest":"\#(digest)"},"type":"cosign container image signature"},"optional":null}"#.utf8)
    }

    func testEachKeyKindVerifiesItsOwnSignatureOnly() throws {
        for kind in ["p256", "p384", "rsa", "ed25519"] {
            let (priv, pub) = try keyPair(kind)
            let key = try PublicKey(pem: pub)
            let p = payload(image)
            let sig = try sign(p, with: priv, kind: kind)
            XCTAssertTrue(key.verify(p, signature: sig), kind)
            var tampered = p
            tampered[tampered.count - 2] ^= 1
            XCTAssertFalse(key.verify(tampered, signature: sig), "\(kind): a changed payload")
            XCTAssertFalse(key.verify(p, signature: Array(sig.dropLast())), "\(kind): a cut signature")
            XCTAssertEqual(Verdict.of(image, signatures: [(p, sig)], keys: [key]), .verified(key: 0), kind)
        }
    }

    func testVerdicts() throws {
        let (priv, pub) = try keyPair("p256")
        let (otherPriv, otherPub) = try keyPair("p256")
        let trusted = try PublicKey(pem: pub), other = try PublicKey(pem: otherPub)
        let p = payload(image)
        let good = try sign(p, with: priv, kind: "p256")
        XCTAssertEqual(Verdict.of(image, signatures: [], keys: [trusted]), .unsigned)
        XCTAssertEqual(Verdict.of(image, signatures: [(p, try sign(p, with: otherPriv, kind: "p256"))], keys: [trusted]), .noTrustedSignature,
                       "another key's signature")
        XCTAssertEqual(Verdict.of(image, signatures: [(p, good)], keys: [other, trusted]), .verified(key: 1))
        let elsewhere = Digest("sha256:" + String(repeating: "ef", count: 32))!
        let forOther = payload(elsewhere)
        XCTAssertEqual(Verdict.of(image, signatures: [(forOther, try sign(forOther, with: priv, kind: "p256"))], keys: [trusted]),
                       .digestMismatch(elsewhere), "a signature for another digest")
        let junk = Array("{\"critical\":{}}".utf8)
        if case .malformed = Verdict.of(image, signatures: [(junk, try sign(junk, with: priv, kind: "p256"))], keys: [trusted]) {} else {
            XCTFail("a signed payload that is no simple-signing document")
        }
        XCTAssertEqual(Verdict.of(image, signatures: [(forOther, [1, 2, 3]), (p, good)], keys: [trusted]), .verified(key: 0),
                       "one good signature among bad ones suffices")
        XCTAssertEqual(Verdict.of(image, signatures: [([UInt8](repeating: 0x7b, count: 1 << 20), good)], keys: [trusted]), .noTrustedSignature,
                       "a huge unsigned payload is not read")
    }

    func testKeysThatAreNotAcceptedAreRefused() throws {
        XCTAssertThrowsError(try PublicKey(pem: Array("not a key".utf8)))
        try openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-out", dir + "/small.key"])
        try openssl(["pkey", "-in", dir + "/small.key", "-pubout", "-out", dir + "/small.pub"])
        XCTAssertThrowsError(try PublicKey(pem: Array(try Data(contentsOf: URL(fileURLWithPath: dir + "/small.pub"))))) { e in
            XCTAssertTrue("\(e)".contains("unsupported"), "\(e)")
        }
        let (priv, _) = try keyPair("p256")
        XCTAssertThrowsError(try PublicKey(pem: Array(try Data(contentsOf: URL(fileURLWithPath: priv)))), "a private key is not a public key")
    }

    func testVerdictCodesRoundTrip() {
        let other = Digest("sha256:" + String(repeating: "01", count: 32))!
        for v in [Verdict.verified(key: 2), .unsigned, .digestMismatch(other), .noTrustedSignature] {
            XCTAssertEqual(Verdict(code: v.code), v, v.code)
        }
        if case .malformed? = Verdict(code: Verdict.malformed("x").code) {} else { XCTFail("malformed") }
        for bad in ["", "verified", "verified:-1", "mismatch:sha256:zz", "VERIFIED:0"] { XCTAssertNil(Verdict(code: bad), bad) }
    }
}
