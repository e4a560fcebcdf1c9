import Foundation
import XCTest
import TestSupport

/// `berth preload`: images pulled into the cache through the running server,
/// from arguments and a list file; a failure does not stop the rest; the
/// images then serve with the upstream gone.
final class PreloadTests: IntegrationTestCase {
    func testPreloadsThroughTheServerThenServesWithoutTheUpstream() throws {
        let registry = try startRegistry()
        let one = try builder.pushImage(to: registry, repository: "team/one", tag: "v1", layerSizes: [120_000])
        let two = try builder.pushImage(to: registry, repository: "team/two", tag: "v2", layerSizes: [80_000, 10_000])
        let berth = try startBerth(upstream: registry.url)
        let binary = try XCTUnwrap(BerthProcess.binaryPath)
        let list = "\(workDir!)/images.txt"
        try "# what the site needs\nteam/two:v2\n\nteam/missing:v9\n".write(toFile: list, atomically: true, encoding: .utf8)

        let r = try Subprocess.run([binary, "preload", "team/one:v1", "-f", list, "--cache-dir", berth.cacheDir], in: workDir,
                                   timeout: 120, check: false)
        XCTAssertEqual(r.status, 1, "one image is missing upstream: \(r.stdout) \(r.stderr)")
        XCTAssertTrue(r.stdout.contains("preloaded team/one:v1 → \(one.digest)"), r.stdout)
        XCTAssertTrue(r.stdout.contains("preloaded team/two:v2 → \(two.digest)"), r.stdout)
        XCTAssertTrue(r.stdout.contains("preload: 2 of 3 images loaded; failed: team/missing:v9"), r.stdout)
        XCTAssertTrue(r.stderr.contains("team/missing:v9"), r.stderr)
        for d in one.blobs + two.blobs { XCTAssertTrue(berth.isCached(d), "\(d) is cached") }
        XCTAssertFalse(try Subprocess.run([binary, "cache", "ls", "--cache-dir", berth.cacheDir], in: workDir, timeout: 60).stdout.contains("pinned"),
                       "preload without --pin pins nothing")

        // A rerun fetches nothing more; --pin pins.
        registry.settle()
        let blobGETs = registry.count(method: "GET", pathContains: "/blobs/")
        let again = try Subprocess.run([binary, "preload", "team/two:v2", "--pin", "--cache-dir", berth.cacheDir], in: workDir, timeout: 120, check: false)
        XCTAssertEqual(again.status, 0, again.stdout + again.stderr)
        XCTAssertTrue(again.stdout.contains("pinned team/two:v2 → \(two.digest)"), again.stdout)
        registry.settle()
        XCTAssertEqual(registry.count(method: "GET", pathContains: "/blobs/"), blobGETs, "what is cached is not fetched again")

        registry.stop()
        assertLayout(try pull(berth, "team/two:v2"), image: two)
        assertLayout(try pull(berth, "team/one@\(one.digest)"), image: one)
    }

    func testPreloadNeedsARunningServer() throws {
        let binary = try XCTUnwrap(BerthProcess.binaryPath)
        let dir = "\(workDir!)/cache"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let r = try Subprocess.run([binary, "preload", "library/alpine:3.20", "--cache-dir", dir], in: workDir, timeout: 60, check: false)
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("preload goes through a running berth serve"), r.stderr)
        let bad = try Subprocess.run([binary, "preload", "Not An Image", "--cache-dir", dir], in: workDir, timeout: 60, check: false)
        XCTAssertEqual(bad.status, 2, bad.stderr)
    }
}
