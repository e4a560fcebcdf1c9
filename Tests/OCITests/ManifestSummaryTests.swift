import XCTest
@testable import OCI

final class ManifestSummaryTests: XCTestCase {
    static func d(_ c: Character) -> String { "sha256:" + String(repeating: c, count: 64) }
    let config = d("1"), layer1 = d("2"), layer2 = d("3"), child1 = d("4"), child2 = d("5"), subject = d("6")

    func parse(_ json: String, _ contentType: String? = nil) throws -> ManifestSummary {
        try ManifestSummary.parse(Array(json.utf8), contentType: contentType)
    }

    func assertRefused(_ json: String, _ contentType: String? = nil, _ fragment: String? = nil, line: UInt = #line) {
        XCTAssertThrowsError(try parse(json, contentType), line: line) { error in
            guard let e = error as? ManifestError else { return XCTFail("\(error)", line: line) }
            XCTAssertEqual(e.code, "MANIFEST_INVALID", line: line)
            if let fragment { XCTAssertTrue(e.message.contains(fragment), e.message, line: line) }
        }
    }

    var dockerSchema2: String {
        """
        {
           "schemaVersion": 2,
           "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
           "config": {
              "mediaType": "application/vnd.docker.container.image.v1+json",
              "size": 1472,
              "digest": "\(config)"
           },
           "layers": [
              {
                 "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                 "size": 3408729,
                 "digest": "\(layer1)"
              },
              {
                 "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                 "size": 32,
                 "digest": "\(layer2)"
              }
           ]
        }
        """
    }

    func testDockerSchema2() throws {
        let m = try parse(dockerSchema2, "application/vnd.docker.distribution.manifest.v2+json")
        XCTAssertEqual(m.mediaType, MediaType.dockerManifest)
        XCTAssertFalse(m.isIndex)
        XCTAssertEqual(m.config, Descriptor(mediaType: "application/vnd.docker.container.image.v1+json", digest: Digest(config)!, size: 1472))
        XCTAssertEqual(m.layers.map(\.digest.description), [layer1, layer2])
        XCTAssertEqual(m.layers.map(\.size), [3408729, 32])
        XCTAssertEqual(m.blobs.map(\.digest.description), [config, layer1, layer2])
        XCTAssertEqual(m.manifests, [])
        XCTAssertNil(m.subject)
        // Without a Content-Type the document's own mediaType decides; a generic one is ignored.
        XCTAssertEqual(try parse(dockerSchema2).mediaType, MediaType.dockerManifest)
        XCTAssertEqual(try parse(dockerSchema2, "application/json").mediaType, MediaType.dockerManifest)
        XCTAssertEqual(try parse(dockerSchema2, "application/vnd.docker.distribution.manifest.v2+json; charset=utf-8").mediaType,
                       MediaType.dockerManifest)
    }

    func testDockerManifestList() throws {
        let json = """
        {
          "schemaVersion": 2,
          "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
          "manifests": [
            {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 528, "digest": "\(child1)",
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 528, "digest": "\(child2)",
             "platform": {"architecture": "arm", "os": "linux", "variant": "v7"}}
          ]
        }
        """
        let m = try parse(json, MediaType.dockerManifestList)
        XCTAssertTrue(m.isIndex)
        XCTAssertEqual(m.mediaType, MediaType.dockerManifestList)
        XCTAssertEqual(m.manifests.map(\.digest.description), [child1, child2])
        XCTAssertEqual(m.blobs, [])
    }

    func testOCIManifestWithoutMediaType() throws {
        let json = """
        {"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"\(config)","size":7023},
         "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"\(layer1)","size":32654}],
         "annotations":{"com.example.key1":"value1"}}
        """
        let inferred = try parse(json)
        XCTAssertEqual(inferred.mediaType, MediaType.ociManifest)
        XCTAssertFalse(inferred.isIndex)
        XCTAssertEqual(inferred.blobs.count, 2)
        // The Content-Type names the type when the document does not.
        XCTAssertEqual(try parse(json, MediaType.dockerManifest).mediaType, MediaType.dockerManifest)
        XCTAssertEqual(try parse(json, "application/octet-stream").mediaType, MediaType.ociManifest)
    }

    func testOCIIndex() throws {
        let json = """
        {
          "schemaVersion": 2,
          "mediaType": "application/vnd.oci.image.index.v1+json",
          "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 7143, "digest": "\(child1)",
             "platform": {"architecture": "ppc64le", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 7682, "digest": "\(child2)",
             "platform": {"architecture": "amd64", "os": "linux"}}
          ],
          "annotations": {"com.example.key1": "value1"}
        }
        """
        let m = try parse(json, MediaType.ociIndex)
        XCTAssertTrue(m.isIndex)
        XCTAssertEqual(m.manifests.map(\.size), [7143, 7682])
        // An index without mediaType is inferred from `manifests`.
        let bare = try parse(#"{"schemaVersion":2,"manifests":[{"mediaType":"x","digest":"\#(child1)","size":1}]}"#)
        XCTAssertEqual(bare.mediaType, MediaType.ociIndex)
        XCTAssertTrue(bare.isIndex)
        // An empty index.
        let empty = try parse(#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#)
        XCTAssertTrue(empty.isIndex)
        XCTAssertEqual(empty.manifests, [])
    }

    func testArtifactManifestWithSubject() throws {
        let json = """
        {
          "schemaVersion": 2,
          "mediaType": "application/vnd.oci.image.manifest.v1+json",
          "artifactType": "application/vnd.example.sbom.v1",
          "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                     "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "size": 2},
          "layers": [{"mediaType": "application/vnd.example.sbom.v1", "digest": "\(layer1)", "size": 1234}],
          "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "\(subject)", "size": 1024},
          "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}
        }
        """
        let m = try parse(json, MediaType.ociManifest)
        XCTAssertEqual(m.artifactType, "application/vnd.example.sbom.v1")
        XCTAssertEqual(m.subject?.digest.description, subject)
        XCTAssertEqual(m.subject?.size, 1024)
        XCTAssertEqual(m.config?.size, 2)
        XCTAssertEqual(m.blobs.count, 2)
    }

    func testArtifactManifestBlobs() throws {
        // The image-spec 1.1 release-candidate artifact manifest keeps its content in `blobs`.
        let json = """
        {"mediaType":"application/vnd.oci.artifact.manifest.v1+json","artifactType":"application/vnd.example.signature",
         "blobs":[{"mediaType":"application/octet-stream","digest":"\(layer1)","size":10},
                  {"mediaType":"application/octet-stream","digest":"\(layer2)","size":20}],
         "subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"\(subject)","size":99}}
        """
        let m = try parse(json, MediaType.ociArtifactManifest)
        XCTAssertFalse(m.isIndex)
        XCTAssertNil(m.config)
        XCTAssertEqual(m.layers.map(\.digest.description), [layer1, layer2])
        XCTAssertEqual(m.subject?.digest.description, subject)
    }

    func testSchema1HasNoChildren() throws {
        let signed = """
        {
           "schemaVersion": 1,
           "name": "library/hello-world",
           "tag": "latest",
           "architecture": "amd64",
           "fsLayers": [
              {"blobSum": "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"},
              {"blobSum": "sha256:\(String(repeating: "7", count: 64))"}
           ],
           "history": [{"v1Compatibility": "{\\"id\\":\\"x\\"}"}],
           "signatures": [{"header": {"jwk": {"crv": "P-256", "kty": "EC"}, "alg": "ES256"},
                           "signature": "abc", "protected": "def"}]
        }
        """
        let m = try parse(signed, MediaType.dockerSchema1Signed)
        XCTAssertEqual(m.mediaType, MediaType.dockerSchema1Signed)
        XCTAssertFalse(m.isIndex)
        XCTAssertEqual(m.blobs, [])
        XCTAssertEqual(m.manifests, [])
        XCTAssertEqual(try parse(signed).mediaType, MediaType.dockerSchema1Signed)
        let unsigned = #"{"schemaVersion":1,"name":"a","tag":"b","fsLayers":[{"blobSum":"not-a-digest"}],"history":[]}"#
        XCTAssertEqual(try parse(unsigned).mediaType, MediaType.dockerSchema1)
        XCTAssertEqual(try parse(unsigned, "application/json").mediaType, MediaType.dockerSchema1)
    }

    // MARK: - Refusals

    func testAmbiguousDocumentsCVE202141190() {
        let both = """
        {"schemaVersion":2,"manifests":[{"mediaType":"x","digest":"\(child1)","size":1}],
         "layers":[{"mediaType":"y","digest":"\(layer1)","size":2}]}
        """
        assertRefused(both, nil, "ambiguous")
        assertRefused(both, MediaType.ociIndex)
        assertRefused(both, MediaType.ociManifest)
        // An index type carrying image parts, an image type carrying children.
        assertRefused(#"{"mediaType":"application/vnd.oci.image.index.v1+json","layers":[]}"#)
        assertRefused(#"{"mediaType":"application/vnd.oci.image.index.v1+json","config":{"mediaType":"c","digest":"\#(config)","size":1}}"#)
        assertRefused(#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","manifests":[]}"#)
        assertRefused(#"{"schemaVersion":2,"manifests":[],"config":{"mediaType":"c","digest":"\#(config)","size":1}}"#)
        assertRefused(#"{"schemaVersion":2,"manifests":[],"blobs":[]}"#)
        // Served as an index, shaped like an image manifest (no mediaType in the document).
        assertRefused(#"{"schemaVersion":2,"layers":[]}"#, MediaType.ociIndex)
        assertRefused(#"{"schemaVersion":2,"manifests":[]}"#, MediaType.ociManifest)
    }

    func testMediaTypeDiffersFromContentType() {
        assertRefused(dockerSchema2, MediaType.ociManifest, "differs")
        assertRefused(dockerSchema2, MediaType.dockerManifestList, "differs")
        assertRefused(#"{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#, MediaType.dockerManifestList)
        // Same type, other case or with parameters: accepted.
        XCTAssertNoThrow(try parse(dockerSchema2, "Application/Vnd.Docker.Distribution.Manifest.V2+JSON"))
    }

    func testInvalidDescriptors() {
        let upper = "sha256:" + String(repeating: "A", count: 64)
        assertRefused(#"{"schemaVersion":2,"layers":[{"mediaType":"l","digest":"\#(upper)","size":1}]}"#, nil, "invalid digest")
        assertRefused(#"{"schemaVersion":2,"layers":[{"mediaType":"l","digest":"sha256:abc","size":1}]}"#)
        assertRefused(#"{"schemaVersion":2,"layers":[{"mediaType":"l","digest":"\#(layer1)","size":-1}]}"#, nil, "negative")
        assertRefused(#"{"schemaVersion":2,"config":{"mediaType":"c","digest":"md5:d41d8cd98f00b204e9800998ecf8427e","size":1}}"#)
        assertRefused(#"{"schemaVersion":2,"manifests":[{"mediaType":"m","digest":"\#(child1)","size":-5}]}"#)
        assertRefused(#"{"schemaVersion":2,"layers":[],"subject":{"mediaType":"m","digest":"nope","size":1}}"#)
        assertRefused(#"{"schemaVersion":2,"layers":[{"mediaType":"l","digest":"\#(layer1)"}]}"#)  // no size
        assertRefused(#"{"schemaVersion":2,"layers":[{"mediaType":"l","size":1}]}"#)  // no digest
        assertRefused(#"{"schemaVersion":2,"layers":[{"mediaType":"l","digest":"\#(layer1)","size":"1"}]}"#)
    }

    /// Regression (issue 8, defect 3): a `mediaType` with an escaped CR LF and
    /// a header line, served as application/json, became a Content-Type
    /// header that added a header of the upstream's choosing.
    func testMediaTypeWithCRLFOrParametersIsRefused() {
        for bad in [#"application/vnd.oci.image.manifest.v1+json\r\nSet-Cookie: x=1"#,
                    #"application/vnd.oci.image.manifest.v1+json\u0000"#,
                    "application/vnd.oci.image.manifest.v1+json; charset=utf-8",
                    "application /json", "application", "a/b/c", "/json", "application/", "-x/y",
                    "application/" + String(repeating: "x", count: 128)] {
            assertRefused(#"{"schemaVersion":2,"mediaType":"\#(bad)","layers":[]}"#, "application/json", "type/subtype", line: #line)
        }
        XCTAssertNoThrow(try parse(#"{"schemaVersion":2,"mediaType":"application/vnd.example+json","layers":[]}"#, "application/json"))
        XCTAssertTrue(MediaType.isValid(MediaType.ociManifest))
        XCTAssertTrue(MediaType.isValid("application/vnd.docker.distribution.manifest.v1+prettyjws"))
    }

    func testInvalidJSON() {
        for doc in ["", "null", "[]", "\"x\"", "{", "{\"layers\": [}", "{\"mediaType\": 5}", "\u{0}", "{\"layers\": {}}"] {
            assertRefused(doc)
        }
    }

    func testSizeLimit() {
        var big = Array(#"{"schemaVersion":2,"layers":[],"annotations":{"k":""#.utf8)
        big += Array(repeating: UInt8(ascii: "x"), count: ManifestSummary.maxBytes)
        big += Array(#""}}"#.utf8)
        XCTAssertThrowsError(try ManifestSummary.parse(big, contentType: nil))
    }

    func testMediaTypeHelpers() {
        XCTAssertTrue(MediaType.isIndex(MediaType.ociIndex))
        XCTAssertTrue(MediaType.isIndex(MediaType.dockerManifestList + "; charset=utf-8"))
        XCTAssertFalse(MediaType.isIndex(MediaType.ociManifest))
        XCTAssertEqual(MediaType.allManifests.count, 6)
        for type in MediaType.allManifests { XCTAssertTrue(MediaType.defaultAccept.contains(type)) }
        XCTAssertEqual(MediaType.defaultAccept.split(separator: ",").count, 6)
    }
}
