import Foundation
import XCTest
import TestSupport
import OCI
@testable import Signatures

/// cosign 3's Sigstore bundles (a DSSE envelope around an in-toto statement),
/// made here as cosign makes them for `cosign sign --key`: the statement's
/// DSSE pre-authentication encoding signed by the `openssl` command.
final class SigstoreBundleTests: XCTestCase {
    var dir: String!
    let image = Digest("sha256:" + String(repeating: "ab", count: 32))!
    let other = Digest("sha256:" + String(repeating: "ef", count: 32))!

    override func setUp() { dir = makeTemporaryDirectory("berth-bundle") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    private func run(_ args: [String]) throws {
        let r = try Subprocess.run(args, in: dir, timeout: 60, check: false)
        XCTAssertEqual(r.status, 0, r.stderr)
    }

    /// A P-256 key pair: (private key path, public key).
    private func keyPair(_ name: String) throws -> (String, PublicKey) {
        try run(["openssl", "ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", "\(dir!)/\(name).key"])
        try run(["openssl", "pkey", "-in", "\(dir!)/\(name).key", "-pubout", "-out", "\(dir!)/\(name).pub"])
        return ("\(dir!)/\(name).key", try PublicKey(pem: Array(try Data(contentsOf: URL(fileURLWithPath: "\(dir!)/\(name).pub")))))
    }

    private func statement(_ digest: Digest, predicate: String = SigstoreBundle.signPredicateType) -> [UInt8] {
        Array(#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"127.0.0.1:5000/team/app","digest":{"sha256":"\#(digest.hex)"}}],"predicateType":"\#(predicate)","predicate":{}}"#.utf8)
    }

    /// The bundle JSON cosign writes: the envelope signed by `key` over DSSE's PAE.
    private func bundle(_ payload: [UInt8], signedWith key: String, payloadType: String = SigstoreBundle.inTotoPayloadType) throws -> [UInt8] {
        let pae = SigstoreBundle(payloadType: payloadType, payload: payload, signatures: []).signedBytes
        let input = "\(dir!)/pae-\(UUID().uuidString.prefix(6))"
        try Data(pae).write(to: URL(fileURLWithPath: input))
        try run(["openssl", "dgst", "-sha256", "-sign", key, "-out", input + ".sig", input])
        let sig = try Data(contentsOf: URL(fileURLWithPath: input + ".sig")).base64EncodedString()
        return Array(#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{"publicKey":{"hint":"k"}},"dsseEnvelope":{"payload":"\#(Data(payload).base64EncodedString())","payloadType":"\#(payloadType)","signatures":[{"sig":"\#(sig)","keyid":""}]}}"#.utf8)
    }

    func testPreAuthenticationEncodingIsDSSEv1() {
        let b = SigstoreBundle(payloadType: "application/vnd.in-toto+json", payload: Array("hello".utf8), signatures: [])
        XCTAssertEqual(String(decoding: b.signedBytes, as: UTF8.self), "DSSEv1 28 application/vnd.in-toto+json 5 hello")
    }

    func testVerdictsOnBundles() throws {
        let (priv, key) = try keyPair("trusted")
        let (otherPriv, _) = try keyPair("other")
        let good = try SigstoreBundle.parse(try bundle(statement(image), signedWith: priv))
        XCTAssertEqual(good.signatures.count, 1)
        XCTAssertEqual(try good.signedDigests(), [image])
        XCTAssertEqual(Verdict.of(image, bundles: [good], keys: [key]), .verified(key: 0))
        // Signed by a key Berth does not trust.
        XCTAssertEqual(Verdict.of(image, bundles: [try SigstoreBundle.parse(try bundle(statement(image), signedWith: otherPriv))], keys: [key]),
                       .noTrustedSignature)
        // A trusted signature over a statement about another image.
        XCTAssertEqual(Verdict.of(image, bundles: [try SigstoreBundle.parse(try bundle(statement(other), signedWith: priv))], keys: [key]),
                       .digestMismatch(other))
        // A trusted signature over another kind of statement (an attestation is not a signature).
        guard case .malformed = Verdict.of(image, bundles: [try SigstoreBundle.parse(try bundle(statement(image, predicate: "https://slsa.dev/provenance/v1"),
                                                                                                  signedWith: priv))], keys: [key]) else {
            return XCTFail("an attestation verified as an image signature")
        }
        // The payload changed after signing: the PAE no longer verifies.
        let tampered = SigstoreBundle(payloadType: good.payloadType, payload: statement(other), signatures: good.signatures)
        XCTAssertEqual(Verdict.of(image, bundles: [tampered], keys: [key]), .noTrustedSignature)
        // The payload type is part of what is signed.
        let retyped = SigstoreBundle(payloadType: "text/plain", payload: good.payload, signatures: good.signatures)
        XCTAssertEqual(Verdict.of(image, bundles: [retyped], keys: [key]), .noTrustedSignature)
        XCTAssertEqual(Verdict.of(image, bundles: [], keys: [key]), .unsigned)
    }

    func testMalformedBundlesAreRefusedWithoutCrashing() {
        let cases: [(String, String)] = [
            ("not json", "not a JSON bundle"),
            (#"{"messageSignature":{"messageDigest":{"algorithm":"SHA2_256","digest":"AA=="},"signature":"AA=="}}"#, "cosign sign-blob"),
            (#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}"#, "no DSSE envelope"),
            (#"{"dsseEnvelope":{"payload":"%%%","payloadType":"application/vnd.in-toto+json","signatures":[]}}"#, "no base64 payload"),
            (#"{"dsseEnvelope":{"payload":"e30=","payloadType":"application/vnd.in-toto+json","signatures":[{"sig":"!!"}]}}"#, "not base64"),
        ]
        for (json, why) in cases {
            XCTAssertThrowsError(try SigstoreBundle.parse(Array(json.utf8)), json) { XCTAssertTrue("\($0)".contains(why), "\($0)") }
        }
        XCTAssertThrowsError(try SigstoreBundle.parse([UInt8](repeating: 0x20, count: SigstoreBundle.maxBytes + 1)))
        // A statement that names no sha256 subject, or is not in-toto at all, is read as malformed.
        for payload in [#"{"_type":"https://in-toto.io/Statement/v1","subject":[],"predicateType":"https://sigstore.dev/cosign/sign/v1"}"#, #"{"a":1}"#] {
            let b = SigstoreBundle(payloadType: SigstoreBundle.inTotoPayloadType, payload: Array(payload.utf8), signatures: [[1]])
            XCTAssertThrowsError(try b.signedDigests(), payload)
        }
    }
}
