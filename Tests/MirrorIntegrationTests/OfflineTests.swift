import Foundation
import XCTest
import TestSupport

/// `--offline`: what is cached is served with the upstream gone, tags never
/// expire, and a miss says the mirror is offline; nothing is dialled.
final class OfflineTests: IntegrationTestCase {
    func testOfflineServesTheCacheWithTheUpstreamGone() throws {
        let registry = try startRegistry()
        let image = try builder.pushImage(to: registry, repository: "test/app", tag: "v1", layerSizes: [300_000])
        let cache = "\(workDir!)/shared-cache"
        let online = try startBerth(upstream: registry.url, arguments: ["--cache-dir", cache])
        assertLayout(try pull(online, "test/app:v1"), image: image)
        XCTAssertTrue(waitUntil(10) { (try? self.get(online, "/v2/test/app/tags/list"))?.bodyText.contains("v1") == true })
        online.stop()
        registry.stop()  // the upstream is gone

        let offline = try startBerth(upstream: registry.url, arguments: ["--cache-dir", cache, "--offline", "--tag-ttl", "0s"])
        assertLayout(try pull(offline, "test/app:v1"), image: image)  // an expired tag still answers: tags never expire offline
        let tags = try get(offline, "/v2/test/app/tags/list")
        XCTAssertEqual(tags.status, 200)
        XCTAssertTrue(tags.bodyText.contains("\"v1\""), tags.bodyText)

        let missing = try get(offline, "/v2/test/app/manifests/v2")
        XCTAssertEqual(missing.status, 404)
        XCTAssertTrue(missing.bodyText.contains("MANIFEST_UNKNOWN") && missing.bodyText.contains("offline"), missing.bodyText)
        let blob = try get(offline, "/v2/test/app/blobs/sha256:" + String(repeating: "cd", count: 32))
        XCTAssertEqual(blob.status, 404)
        XCTAssertTrue(blob.bodyText.contains("BLOB_UNKNOWN") && blob.bodyText.contains("offline"), blob.bodyText)
        let referrers = try get(offline, "/v2/test/app/referrers/\(image.digest)")
        XCTAssertEqual(referrers.status, 200, "no upstream to ask: an empty referrers index")
        XCTAssertFalse(offline.log.contains("unreachable"), "nothing was dialled")
    }
}
