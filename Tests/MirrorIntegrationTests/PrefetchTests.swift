import Foundation
import XCTest
import TestSupport

/// Manifest-driven prefetch against Debian's docker-registry: an image
/// manifest fetched on a miss starts fills for its config and layers; the
/// client's blob requests join them (one upstream GET per blob); off, nothing
/// is fetched that the client did not ask for.
final class PrefetchTests: IntegrationTestCase {
    private func getManifest(_ berth: BerthProcess, _ reference: String) throws {
        let r = try get(berth, "/v2/team/app/manifests/\(reference)", headers: ["Accept: \(allManifestTypes)"])
        XCTAssertEqual(r.status, 200, r.bodyText)
    }

    func testAManifestMissFetchesItsBlobsAndTheClientJoinsThem() throws {
        let registry = try startRegistry()
        let image = try builder.pushImage(to: registry, repository: "team/app", tag: "v1", layerSizes: [4_000_000, 3_000_000, 1_000_000])
        let pushHEADs = registry.count(method: "HEAD", pathContains: "/blobs/")  // skopeo's, pushing
        let berth = try startBerth(upstream: registry.url)
        try getManifest(berth, "v1")
        // The client's pull starts at once: its blob GETs join the prefetched fills.
        assertLayout(try pull(berth, "team/app:v1"), image: image)
        XCTAssertTrue(berth.log.contains("prefetching \(image.blobs.count) of \(image.blobs.count) blobs of team/app@\(image.digest)"), berth.log)
        for d in image.blobs {
            XCTAssertEqual(registry.count(method: "GET", pathContains: "/blobs/\(d)"), 1, "one upstream GET of \(d)")
        }
        XCTAssertEqual(registry.count(method: "HEAD", pathContains: "/blobs/"), pushHEADs,
                       "the manifest's blobs are linked as the prefetch starts: no access-check HEAD for a joining client")
    }

    /// The upstream holds each blob's answer 400 ms: a client GET meeting a prefetch that has no
    /// head yet joins it at once, without a HEAD to check its access (the manifest named the blob).
    func testAClientJoiningAPrefetchBeforeItsHeadSendsNoHEAD() throws {
        let upstream = try startFakeUpstream()
        let image = FakeUpstream.oneLayerImage(layerSize: 300_000)
        let (manifest, (c, config), (l, layer)) = (image.manifest, image.config, image.layer)
        upstream.route("/v2/team/app/manifests/v1") { w in w.respond(FakeUpstream.manifestHead(manifest), body: manifest) }
        for (d, bytes) in [(c, config), (l, layer)] {
            upstream.route("/v2/team/app/blobs/\(d)") { w in
                _ = w.loop.schedule(afterNanos: 400_000_000) { FakeUpstream.serve(bytes, digest: d)(w) }
            }
        }
        let berth = try startBerth(upstream: upstream.url)
        try getManifest(berth, "v1")
        for (d, bytes) in [(c, config), (l, layer)] {
            let r = try get(berth, "/v2/team/app/blobs/\(d)")
            XCTAssertEqual(r.status, 200, r.bodyText)
            XCTAssertEqual(r.body, bytes)
            XCTAssertEqual(upstream.count(method: "GET", path: "/v2/team/app/blobs/\(d)"), 1, "the prefetch's GET, joined")
            XCTAssertEqual(upstream.count(method: "HEAD", path: "/v2/team/app/blobs/\(d)"), 0, "no access check for \(d)")
        }
    }

    func testPrefetchAloneCachesTheImage() throws {
        let registry = try startRegistry()
        let image = try builder.pushImage(to: registry, repository: "team/app", tag: "v1", layerSizes: [300_000, 200_000])
        let berth = try startBerth(upstream: registry.url)
        try getManifest(berth, "v1")
        XCTAssertTrue(waitUntil(20) { image.blobs.allSatisfy(berth.isCached) }, "every blob cached with no client blob request")
        registry.stop()
        assertLayout(try pull(berth, "team/app:v1"), image: image)
    }

    func testOffFetchesOnlyWhatTheClientAsks() throws {
        let registry = try startRegistry()
        let image = try builder.pushImage(to: registry, repository: "team/app", tag: "v1", layerSizes: [300_000])
        let berth = try startBerth(upstream: registry.url, environment: ["BERTH_UPSTREAM_PREFETCH": "false"])
        try getManifest(berth, "v1")
        XCTAssertEqual(registry.count(method: "GET", pathContains: "/blobs/"), 0, "no blob fetched that was not asked for")
        XCTAssertFalse(berth.log.contains("prefetching"))
        assertLayout(try pull(berth, "team/app:v1"), image: image)
    }
}
