import Foundation
import XCTest
import TestSupport

/// containerd 1.6 (its own daemon: root, state and socket under the work
/// directory, CRI off) fetches both upstreams' images through a two-upstream
/// Berth with the `hosts.toml` files `berth client-config containerd` prints:
/// ctr sends `?ns=<registry>`, Berth routes by it, every digest checks out.
final class ContainerdClientTests: IntegrationTestCase {
    func testCtrFetchesBothUpstreamsImagesThroughBerthByNamespace() throws {
        guard Subprocess.resolve("containerd") != nil, Subprocess.resolve("ctr") != nil else {
            throw XCTSkip("containerd is not installed (scripts/deps.sh TEST_PACKAGES)")
        }
        let a = try startRegistry(), b = try startRegistry()
        let imageA = try builder.pushImage(to: a, repository: "test/app", tag: "v1", layerSizes: [150_000])
        let imageB = try builder.pushImage(to: b, repository: "test/app", tag: "v1", layerSizes: [200_000, 100_000])
        let configPath = "\(workDir!)/berth.yaml"
        let berth = try startBerth(upstreams: [(a, "a"), (b, "b")], configPath: configPath)

        // The generated hosts.toml files, each written where its comment says, under our own hosts dir.
        let generated = try clientConfig("containerd", config: configPath, endpoint: berth)
        let hostsDir = "\(workDir!)/certs.d"
        XCTAssertEqual(try writeHostsFiles(generated, under: hostsDir), [a.hostPort, b.hostPort], generated)
        let ctr = try startContainerd()
        a.settle(); b.settle()
        let before = (a.requests().count, b.requests().count)
        let gets = { (r: Registry, blobs: [String]) in blobs.map { r.count(method: "GET", pathContains: "/blobs/\($0)") } }
        let getsBefore = (gets(a, imageA.blobs), gets(b, imageB.blobs))

        for (registry, image) in [(b, imageB), (a, imageA)] {
            let reference = "\(registry.hostPort)/test/app:v1"
            let fetch = try Subprocess.run(ctr + ["content", "fetch", "--hosts-dir", hostsDir, reference], in: workDir,
                                           timeout: 120, check: false)
            XCTAssertEqual(fetch.status, 0, fetch.stdout + fetch.stderr)
            let content = try Subprocess.run(ctr + ["content", "ls", "-q"], in: workDir, timeout: 30)
            for d in [image.digest] + image.blobs {
                XCTAssertTrue(content.stdout.contains(d), "containerd holds \(d) of \(reference)")
                if d != image.digest { XCTAssertTrue(berth.isCached(d), "\(d) came through Berth") }
            }
        }
        // Berth fetched each upstream's blobs from that upstream only (ns= routing), once.
        a.settle(); b.settle()
        XCTAssertEqual(zip(gets(a, imageA.blobs), getsBefore.0).map { $0 - $1 }, imageA.blobs.map { _ in 1 })
        XCTAssertEqual(zip(gets(b, imageB.blobs), getsBefore.1).map { $0 - $1 }, imageB.blobs.map { _ in 1 })
        XCTAssertGreaterThan(a.requests().count, before.0)
        XCTAssertGreaterThan(b.requests().count, before.1)
        XCTAssertFalse(berth.log.contains("NAME_UNKNOWN"), "every ns= containerd sent selected its upstream")
    }
}
