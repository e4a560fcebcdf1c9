import Foundation
import XCTest
import TestSupport

/// The upstream goes away after a warm pull: what is cached keeps pulling,
/// by tag (fresh, and stale past its TTL) and by digest, across a restart.
final class UpstreamOutageTests: IntegrationTestCase {
    func testUpstreamStoppedServesCachedTagAndDigest() throws {
        let registry = try startRegistry()
        let image = try builder.pushImage(to: registry, repository: "test/app", tag: "v1", layerSizes: [1 << 20, 300_000])
        let fresh = try startBerth(upstream: registry.url)
        let stale = try startBerth(upstream: registry.url, arguments: ["--tag-ttl", "0s"])
        for berth in [fresh, stale] { assertLayout(try pull(berth, "test/app:v1"), image: image) }

        registry.stop()
        for berth in [fresh, stale] {
            assertLayout(try pull(berth, "test/app:v1"), image: image)
            assertLayout(try pull(berth, "test/app@\(image.digest)"), image: image)
        }
        let accept = ["Accept: \(allManifestTypes)"]
        let f = try get(fresh, "/v2/test/app/manifests/v1", headers: accept)
        XCTAssertEqual(f.status, 200)
        XCTAssertEqual(f.body, image.manifest)
        XCTAssertFalse(f.headers["cache-status"]?.contains("stale") ?? true, "a fresh tag needs no upstream: \(f.headers)")
        let s = try get(stale, "/v2/test/app/manifests/v1", headers: accept)
        XCTAssertEqual(s.status, 200)
        XCTAssertEqual(s.body, image.manifest)
        XCTAssertTrue(s.headers["cache-status"]?.contains("fwd=stale") ?? false, "expired tag served stale-if-error: \(s.headers)")

        // Upstream back: the expired tag is checked with the upstream again.
        let asked = registry.requests().filter { $0.path.hasSuffix("/manifests/v1") }.count
        try registry.start()
        let back = try get(stale, "/v2/test/app/manifests/v1", headers: accept)
        XCTAssertEqual(back.status, 200)
        XCTAssertEqual(back.body, image.manifest)
        XCTAssertFalse(back.headers["cache-status"]?.contains("stale") ?? false, "\(back.headers)")
        registry.settle()
        XCTAssertEqual(registry.requests().filter { $0.path.hasSuffix("/manifests/v1") }.count, asked + 1,
                       "one upstream request revalidates the expired tag")
    }

    func testRestartWithUpstreamStoppedServesCache() throws {
        let registry = try startRegistry()
        let image = try builder.pushImage(to: registry, repository: "test/app", tag: "v1", layerSizes: [1 << 20, 300_000])
        let berth = try startBerth(upstream: registry.url)
        assertLayout(try pull(berth, "test/app:v1"), image: image)

        registry.stop()
        try berth.restart()
        assertLayout(try pull(berth, "test/app:v1"), image: image)
        assertLayout(try pull(berth, "test/app@\(image.digest)"), image: image)
    }
}
