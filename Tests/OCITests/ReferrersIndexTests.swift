import XCTest
import Foundation
@testable import OCI

final class ReferrersIndexTests: XCTestCase {
    static func d(_ c: Character) -> String { "sha256:" + String(repeating: c, count: 64) }
    let subject = Digest(d("6"))!, other = Digest(d("7"))!

    /// An OCI manifest referring to `subject`, with `extra` fields.
    func artifact(_ name: Character, subject: Digest?, config: String = "application/vnd.oci.empty.v1+json", _ extra: String = "") -> ReferrersIndex.Candidate {
        var json = #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":""# + config
            + #"","digest":"\#(Self.d("1"))","size":2},"layers":[]"#
        if let subject { json += #","subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"\#(subject)","size":9}"# }
        json += extra + "}"
        let bytes = Array(json.utf8)
        return .init(digest: Digest(Self.d(name))!, mediaType: MediaType.ociManifest, bytes: bytes)
    }

    func manifests(_ bytes: [UInt8]) throws -> [[String: Any]] {
        let doc = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
        XCTAssertEqual(doc["mediaType"] as? String, MediaType.ociIndex)
        XCTAssertEqual(doc["schemaVersion"] as? Int, 2)
        return try XCTUnwrap(doc["manifests"] as? [[String: Any]])
    }

    func testListsWhatRefersToTheSubjectWithArtifactTypeAndAnnotations() throws {
        let sbom = artifact("b", subject: subject, #","artifactType":"application/spdx+json","annotations":{"b":"2","a":"x\"\n\u0000"}"#)
        let sig = artifact("a", subject: subject, config: "application/vnd.dev.cosign.simplesigning.v1+json")
        let elsewhere = artifact("c", subject: other)
        let image = artifact("d", subject: nil)
        let all = try manifests(ReferrersIndex.encode([sbom, sig, elsewhere, image], subject: subject))
        XCTAssertEqual(all.compactMap { $0["digest"] as? String }, [sbom, sig].map(\.digest.description).sorted(),
                       "only what names the subject, sorted by digest")
        let bySBOM = try XCTUnwrap(all.first { $0["digest"] as? String == sbom.digest.description })
        XCTAssertEqual(bySBOM["artifactType"] as? String, "application/spdx+json")
        XCTAssertEqual(bySBOM["size"] as? Int, sbom.bytes.count)
        XCTAssertEqual(bySBOM["mediaType"] as? String, MediaType.ociManifest)
        XCTAssertEqual(bySBOM["annotations"] as? [String: String], ["a": "x\"\n\u{0}", "b": "2"], "escaped, and read back intact")
        XCTAssertEqual(all.first { $0["digest"] as? String == sig.digest.description }?["artifactType"] as? String,
                       "application/vnd.dev.cosign.simplesigning.v1+json", "no artifactType: the config's media type")

        let filtered = try manifests(ReferrersIndex.encode([sbom, sig], subject: subject, artifactType: "application/spdx+json"))
        XCTAssertEqual(filtered.compactMap { $0["digest"] as? String }, [sbom.digest.description])
        XCTAssertTrue(try manifests(ReferrersIndex.encode([], subject: subject)).isEmpty)
    }

    func testBytesThatAreNotAManifestAreSkipped() throws {
        let junk = ReferrersIndex.Candidate(digest: subject, mediaType: MediaType.ociManifest, bytes: Array("{not json".utf8))
        XCTAssertTrue(try manifests(ReferrersIndex.encode([junk], subject: subject)).isEmpty)
    }
}
