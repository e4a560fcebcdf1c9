import Foundation
import XCTest
import TestSupport

/// One Berth in front of two Distribution registries that hold the same
/// repository and tag with different content: each request reaches the
/// upstream its path prefix, `ns=` or the default selects, and nothing
/// learned for one upstream is served for the other.
final class MultiUpstreamTests: IntegrationTestCase {
    private var a: Registry!, b: Registry!
    private var imageA: PushedImage!, imageB: PushedImage!

    private func startTwo() throws -> BerthProcess {
        a = try startRegistry()
        b = try startRegistry()
        imageA = try builder.pushImage(to: a, repository: "test/app", tag: "v1", layerSizes: [300_000])
        imageB = try builder.pushImage(to: b, repository: "test/app", tag: "v1", layerSizes: [200_000, 100_000])
        XCTAssertNotEqual(imageA.digest, imageB.digest)
        return try startBerth(upstreams: [(a, "a"), (b, "b")], configPath: "\(workDir!)/berth.yaml")
    }

    func testPrefixNamespaceAndDefaultSelectTheirUpstream() throws {
        let berth = try startTwo()

        // skopeo through path prefixes (podman registries.conf style), and the default for bare names.
        assertLayout(try pull(berth, "b/test/app:v1"), image: imageB)
        assertLayout(try pull(berth, "a/test/app:v1"), image: imageA)
        assertLayout(try pull(berth, "test/app:v1"), image: imageA)

        // containerd hosts.toml style: ?ns= names the registry, echoed as OCI-Namespace.
        let viaNS = try get(berth, "/v2/test/app/manifests/v1?ns=\(b.hostPort)", headers: ["Accept: \(imageB.mediaType)"])
        XCTAssertEqual(viaNS.status, 200)
        XCTAssertEqual(viaNS.body, imageB.manifest, "ns= selects the second upstream")
        XCTAssertEqual(viaNS.headers["oci-namespace"], b.hostPort)
        for d in imageB.blobs {
            let r = try get(berth, "/v2/test/app/blobs/\(d)?ns=\(b.hostPort)")
            XCTAssertEqual(r.status, 200)
            XCTAssertEqual("sha256:" + sha256Hex(r.body), d)
        }
    }

    func testUnknownNamespaceOrRegistryIsRefusedWithoutUpstreamContact() throws {
        let berth = try startTwo()
        a.settle(); b.settle()
        let before = a.requests().count + b.requests().count

        let r = try get(berth, "/v2/test/app/manifests/v1?ns=quay.io")
        XCTAssertEqual(r.status, 404)
        XCTAssertEqual((jsonObject(r.body)?["errors"] as? [[String: Any]])?.first?["code"] as? String, "NAME_UNKNOWN")
        XCTAssertTrue(String(decoding: r.body, as: UTF8.self).contains("quay.io"), "the message names what was asked for")
        XCTAssertNil(r.headers["oci-namespace"], "a client's ns is never echoed")

        a.settle(); b.settle()
        XCTAssertEqual(a.requests().count + b.requests().count, before, "no upstream is contacted for an unknown registry")
    }

    func testNothingLearnedForOneUpstreamIsServedForTheOther() throws {
        let berth = try startTwo()
        assertLayout(try pull(berth, "b/test/app:v1"), image: imageB)

        // B's layer is cached, but the default upstream (A) does not hold it: A is asked, and says 404.
        let layer = imageB.blobs.last!
        let r = try get(berth, "/v2/test/app/blobs/\(layer)")
        XCTAssertEqual(r.status, 404, "a digest cached for one upstream is not served under another's repository")
        a.settle()
        XCTAssertEqual(a.count(method: "HEAD", pathContains: "/blobs/\(layer)"), 1, "one access check on the upstream selected")

        // Same repository and tag on both: each upstream keeps its own tag → digest mapping.
        let tagB = try get(berth, "/v2/b/test/app/manifests/v1", method: "HEAD", headers: ["Accept: \(imageB.mediaType)"])
        XCTAssertEqual(tagB.headers["docker-content-digest"], imageB.digest)
        let tagA = try get(berth, "/v2/test/app/manifests/v1", headers: ["Accept: \(imageA.mediaType)"])
        XCTAssertEqual(tagA.body, imageA.manifest)
        XCTAssertEqual(tagA.headers["docker-content-digest"], imageA.digest)
    }

    func testPinningAnImageOfTheSecondUpstreamFetchesItFromThere() throws {
        let berth = try startTwo()
        let binary = try XCTUnwrap(BerthProcess.binaryPath)
        let image = "\(b.hostPort)/test/app:v1"
        a.settle()
        let defaultManifestGETs = a.count(method: "GET", pathContains: "/manifests/")  // the push read its manifest back
        let r = try Subprocess.run([binary, "cache", "pin", image, "--cache-dir", berth.cacheDir], in: workDir, timeout: 60, check: false)
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        XCTAssertTrue(r.stdout.contains("pinned \(image) → \(imageB.digest)"), r.stdout)
        for d in imageB.blobs { XCTAssertTrue(berth.isCached(d), "\(d) of the second upstream's image is cached") }
        b.settle(); a.settle()
        XCTAssertEqual(a.count(method: "GET", pathContains: "/manifests/"), defaultManifestGETs, "the default upstream is not asked for another's image")

        let ls = try Subprocess.run([binary, "cache", "ls", "--cache-dir", berth.cacheDir], in: workDir, timeout: 60)
        XCTAssertTrue(ls.stdout.contains("\(b.hostPort)/test/app"), "ls shows the upstream: \(ls.stdout)")

        let unknown = try Subprocess.run([binary, "cache", "pin", "quay.io/test/app:v1", "--cache-dir", berth.cacheDir], in: workDir,
                                         timeout: 60, check: false)
        XCTAssertEqual(unknown.status, 1)
        XCTAssertTrue((unknown.stdout + unknown.stderr).contains("quay.io"), unknown.stdout + unknown.stderr)
    }
}
