import Foundation
import XCTest
import TestSupport

/// podman pulls through a two-upstream Berth with the `registries.conf` that
/// `berth client-config podman` prints: the image of the second (non-default)
/// upstream arrives with its digest, and Berth fetched it from that upstream.
/// Nothing global is read or written but one thing: registries.conf by
/// CONTAINERS_REGISTRIES_CONF, storage under the work directory (vfs), a
/// signature policy of its own. podman 4.3 still creates an empty
/// /run/containers/networks (netavark's run directory) as root.
final class PodmanClientTests: IntegrationTestCase {
    func testPodmanPullsTheSecondUpstreamsImageThroughBerth() throws {
        guard Subprocess.resolve("podman") != nil else { throw XCTSkip("podman is not installed (scripts/deps.sh TEST_PACKAGES)") }
        let a = try startRegistry(), b = try startRegistry()
        _ = try builder.pushImage(to: a, repository: "test/app", tag: "v1", layerSizes: [150_000])
        let image = try builder.pushImage(to: b, repository: "test/app", tag: "v1", layerSizes: [200_000, 100_000], tarLayers: true)
        let configPath = "\(workDir!)/berth.yaml"
        let berth = try startBerth(upstreams: [(a, "a"), (b, "b")], configPath: configPath)

        let generated = try clientConfig("podman", config: configPath, endpoint: berth)
        XCTAssertTrue(generated.contains("location = \"\(berth.hostPort)/b\""), generated)
        let registriesConf = "\(workDir!)/registries.conf"
        try generated.write(toFile: registriesConf, atomically: true, encoding: .utf8)
        b.settle()
        let blobGETsBefore = image.blobs.map { b.count(method: "GET", pathContains: "/blobs/\($0)") }
        XCTAssertEqual(try podmanPull("\(b.hostPort)/test/app:v1", registriesConf: registriesConf), image.digest)

        // Berth served it: every blob is in its cache, and the upstream saw one GET per blob (Berth's fill), not podman's fallback too.
        for d in image.blobs { XCTAssertTrue(berth.isCached(d), "\(d) was not fetched through Berth") }
        b.settle()
        for (d, before) in zip(image.blobs, blobGETsBefore) {
            XCTAssertEqual(b.count(method: "GET", pathContains: "/blobs/\(d)") - before, 1, "one upstream GET of \(d), by Berth")
        }
        XCTAssertFalse(berth.log.contains("NAME_UNKNOWN"), berth.log.suffix(2000).description)
    }

}
