import XCTest
import OCI
@testable import BerthApp

/// The pure parts of import and export: which cache-index key an image
/// argument names, which names an index.json entry gives, the manifest built
/// for a classic docker save image.
final class ImageImportTests: XCTestCase {
    let multi = """
    upstreams:
      - url: https://registry-1.docker.io
        default: true
      - name: ghcr.io
        url: https://ghcr.io
      - name: harbor.corp
        url: https://harbor.corp:8443
        prefix: harbor
    """

    func key(_ yaml: String, _ image: String) throws -> String {
        try BerthConfig.parse(yaml: yaml).indexKey(for: XCTUnwrap(ImageReference(image)))
    }

    func testIndexKeysFollowTheMirrorsKeys() throws {
        XCTAssertEqual(try key(multi, "alpine:3.20"), "library/alpine")
        XCTAssertEqual(try key(multi, "docker.io/library/alpine:3.20"), "library/alpine")
        XCTAssertEqual(try key(multi, "docker.io/team/app:1"), "team/app")
        XCTAssertEqual(try key(multi, "ghcr.io/org/x:1"), "ghcr.io/org/x")
        XCTAssertEqual(try key(multi, "harbor/proj/app:2"), "harbor.corp/proj/app")
        XCTAssertEqual(try key(multi, "harbor.corp/proj/app:2"), "harbor.corp/proj/app")
        XCTAssertThrowsError(try key(multi, "quay.io/x/y:1"), "an upstream that is not configured")
        let single = "upstream:\n  url: http://127.0.0.1:5999\n"
        XCTAssertEqual(try key(single, "alpine:1"), "alpine", "no library/ rule off Docker Hub")
        XCTAssertEqual(try key(single, "docker.io/team/app:1"), "team/app", "skopeo's docker.io/ in RepoTags")
        XCTAssertEqual(try key(single, "127.0.0.1:5999/team/app:1"), "team/app")
    }

    func testNamesFromIndexAnnotations() {
        XCTAssertEqual(ImageImporter.names(["org.opencontainers.image.ref.name": "team/app:2"]).map(\.description), ["team/app:2"])
        // Newer docker save: ref.name is the bare tag; containerd's annotation has the full name.
        XCTAssertEqual(ImageImporter.names(["org.opencontainers.image.ref.name": "3.20",
                                            "io.containerd.image.name": "docker.io/library/alpine:3.20"]).map(\.description),
                       ["docker.io/library/alpine:3.20"])
        XCTAssertEqual(ImageImporter.names(["org.opencontainers.image.ref.name": "latest"]), [])
        XCTAssertEqual(ImageImporter.names([:]), [])
        XCTAssertTrue(ImageImporter.hasRepository("127.0.0.1:5000/a:1"))
        XCTAssertFalse(ImageImporter.hasRepository("127.0.0.1:5000/a"))
    }

    func testBuiltManifestIsAValidOCIManifest() throws {
        let config = Digest("sha256:" + String(repeating: "a", count: 64))!
        let layer = Digest("sha256:" + String(repeating: "b", count: 64))!
        let bytes = ImageImporter.buildManifest(config: config, configSize: 180, layers: [(layer, 3_010_560)])
        let s = try ManifestSummary.parse(bytes, contentType: MediaType.ociManifest)
        XCTAssertEqual(s.mediaType, MediaType.ociManifest)
        XCTAssertEqual(s.config?.digest, config)
        XCTAssertEqual(s.layers.map(\.digest), [layer])
        XCTAssertEqual(s.layers.first?.size, 3_010_560)
        XCTAssertEqual(ImageImporter.buildManifest(config: config, configSize: 180, layers: [(layer, 3_010_560)]), bytes, "deterministic")
    }
}
