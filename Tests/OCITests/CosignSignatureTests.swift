import XCTest
import Foundation
@testable import OCI

/// Cosign's key-based signatures as stored in a registry: the `.sig` tag's
/// manifest (one layer per signature, the signature in an annotation) and the
/// simple-signing payload each layer holds.
final class CosignSignatureTests: XCTestCase {
    let image = Digest("sha256:" + String(repeating: "ab", count: 32))!

    func payload(digest: String, type: String = "cosign container image signature") -> [UInt8] {
        Array(#"{"critical":{"identity":{"docker-reference":"registry.example/team/app"},"image":{"docker-manifest-digest":"\#(digest)"},"type":"\#(type)"},"optional":{"creator":"test"}}"#.utf8)
    }

    func testTheSignatureTagOfADigest() {
        XCTAssertEqual(CosignSignature.tag(for: image), "sha256-" + String(repeating: "ab", count: 32) + ".sig")
    }

    func testPayloadNamesTheSignedDigest() throws {
        let p = try SimpleSigningPayload.parse(payload(digest: image.description))
        XCTAssertEqual(p.manifestDigest, image)
        XCTAssertEqual(p.dockerReference, "registry.example/team/app")
    }

    func testPayloadsThatAreNotSignaturesAreRefused() {
        for bad in [payload(digest: "sha256:zz"), payload(digest: image.description, type: "something else"),
                    Array("{}".utf8), Array("not json".utf8), Array(#"{"critical":{"image":{}}}"#.utf8),
                    [UInt8](repeating: 0x20, count: SimpleSigningPayload.maxBytes + 1)] {
            XCTAssertThrowsError(try SimpleSigningPayload.parse(bad), String(decoding: bad.prefix(80), as: UTF8.self))
        }
    }

    func sigManifest(_ layers: [(digest: String, signature: String?)], mediaType: String = CosignSignature.payloadMediaType) -> [UInt8] {
        let ls = layers.map { l -> String in
            let ann = l.signature.map { #","annotations":{"dev.cosignproject.cosign/signature":"\#($0)"}"# } ?? ""
            return #"{"mediaType":"\#(mediaType)","size":200,"digest":"\#(l.digest)"\#(ann)}"#
        }
        return Array(#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":2,"digest":"sha256:\#(String(repeating: "0", count: 64))"},"layers":[\#(ls.joined(separator: ","))]}"#.utf8)
    }

    func testSignaturesAreReadFromTheSigManifestsLayers() throws {
        let d1 = "sha256:" + String(repeating: "1", count: 64), d2 = "sha256:" + String(repeating: "2", count: 64)
        let sigs = try CosignSignature.parse(sigManifest([(d1, Data([1, 2, 3]).base64EncodedString()), (d2, Data([4]).base64EncodedString())]))
        XCTAssertEqual(sigs.map(\.payload.digest.description), [d1, d2])
        XCTAssertEqual(sigs.map(\.signature), [[1, 2, 3], [4]])
        XCTAssertEqual(sigs.first?.payload.size, 200)
    }

    func testLayersWithoutASignatureOrOfAnotherTypeAreSkippedAndBadBase64Refused() throws {
        let d = "sha256:" + String(repeating: "3", count: 64)
        XCTAssertTrue(try CosignSignature.parse(sigManifest([(d, nil)])).isEmpty)
        XCTAssertTrue(try CosignSignature.parse(sigManifest([(d, "AQID")], mediaType: "application/octet-stream")).isEmpty)
        XCTAssertThrowsError(try CosignSignature.parse(sigManifest([(d, "@@not base64@@")])))
        XCTAssertThrowsError(try CosignSignature.parse(Array("{".utf8)))
    }
}
