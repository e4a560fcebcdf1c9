import XCTest
import OCI
@testable import Bench

final class PullPlanTests: XCTestCase {
    func d(_ c: Character, _ size: Int64 = 10, _ type: String = "") -> Descriptor {
        Descriptor(mediaType: type, digest: Digest("sha256:" + String(repeating: c, count: 64))!, size: size)
    }

    func testConfigRunsAloneThenLayersWithTheBound() {
        let m = ManifestSummary(mediaType: MediaType.dockerManifest, isIndex: false, config: d("c"),
                                layers: [d("1"), d("2"), d("3"), d("4"), d("5")], manifests: [], subject: nil)
        var s = BlobSchedule(manifest: m, parallelism: 3)
        XCTAssertEqual(s.blobs.map(\.kind), [.config, .layer, .layer, .layer, .layer, .layer])
        XCTAssertEqual(s.next()?.descriptor, d("c"))
        XCTAssertNil(s.next(), "the config runs alone")
        s.finished()
        XCTAssertEqual(s.next()?.descriptor, d("1"))
        XCTAssertEqual(s.next()?.descriptor, d("2"))
        XCTAssertEqual(s.next()?.descriptor, d("3"))
        XCTAssertNil(s.next(), "at most 3 in flight")
        XCTAssertEqual(s.inFlight, 3)
        s.finished()
        XCTAssertEqual(s.next()?.descriptor, d("4"))
        XCTAssertEqual(s.next()?.descriptor, nil)
        s.finished()
        XCTAssertEqual(s.next()?.descriptor, d("5"))
        XCTAssertNil(s.next())
        XCTAssertFalse(s.isComplete)
        s.finished(); s.finished(); s.finished()
        XCTAssertTrue(s.isComplete)
    }

    func testParallelismIsAtLeastOne() {
        let m = ManifestSummary(mediaType: MediaType.ociManifest, isIndex: false, config: nil,
                                layers: [d("1"), d("2")], manifests: [], subject: nil)
        var s = BlobSchedule(manifest: m, parallelism: 0)
        XCTAssertEqual(s.parallelism, 1)
        XCTAssertNotNil(s.next())
        XCTAssertNil(s.next())
    }

    func testPlatformSelection() throws {
        let index = """
        {"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
         {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:\(String(repeating: "a", count: 64))","size":5,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
         {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:\(String(repeating: "b", count: 64))","size":6,"platform":{"os":"unknown","architecture":"unknown"}},
         {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:\(String(repeating: "c", count: 64))","size":7,"platform":{"os":"linux","architecture":"amd64"}}]}
        """
        let p = try IndexPlatforms.parse(Array(index.utf8))
        XCTAssertEqual(p.entries.count, 3)
        XCTAssertEqual(p.select(.linuxAmd64)?.digest.hex, String(repeating: "c", count: 64))
        XCTAssertEqual(p.select(Platform("linux/arm64")!)?.size, 5)
        XCTAssertEqual(p.select(Platform("linux/arm64/v8")!)?.size, 5)
        XCTAssertNil(p.select(Platform("linux/arm64/v7")!))
        XCTAssertNil(p.select(Platform("windows/amd64")!))
    }

    func testPlatformSpelling() {
        XCTAssertEqual(Platform("linux/amd64"), .linuxAmd64)
        XCTAssertEqual(Platform("linux/arm/v7")?.description, "linux/arm/v7")
        XCTAssertNil(Platform("linux"))
        XCTAssertNil(Platform("linux//v7"))
        XCTAssertNil(Platform("a/b/c/d"))
    }
}
