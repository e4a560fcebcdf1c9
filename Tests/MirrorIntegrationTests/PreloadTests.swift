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
        XCTAssertTrue(r.stdout.contains("preload: 2 of 3 images loaded,") && r.stdout.contains("; failed: team/missing:v9"), r.stdout)
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

    func testOnlyTheAskedPlatformsOfAnIndex() throws {
        let registry = try startRegistry()
        let index = try builder.pushIndex(to: registry, repository: "team/multi", tag: "v1")
        let berth = try startBerth(upstream: registry.url)
        let binary = try XCTUnwrap(BerthProcess.binaryPath)
        let r = try Subprocess.run([binary, "preload", "team/multi:v1", "--platform", "linux/arm64", "--cache-dir", berth.cacheDir],
                                   in: workDir, timeout: 120, check: false)
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        let (amd64, arm64) = (index.children[0], index.children[1])
        XCTAssertTrue(berth.isCached("sha256:" + sha256Hex(index.index)))
        for d in [arm64.digest] + arm64.blobs { XCTAssertTrue(berth.isCached(d), "arm64: \(d) is cached") }
        for d in [amd64.digest] + amd64.blobs { XCTAssertFalse(berth.isCached(d), "amd64: \(d) was not asked for") }
        let none = try Subprocess.run([binary, "preload", "team/multi:v1", "--platform", "linux/s390x", "--cache-dir", berth.cacheDir],
                                      in: workDir, timeout: 120, check: false)
        XCTAssertEqual(none.status, 1)
        XCTAssertTrue(none.stderr.contains("no linux/s390x"), none.stderr)
        let bad = try Subprocess.run([binary, "preload", "team/multi:v1", "--platform", "arm64", "--cache-dir", berth.cacheDir],
                                     in: workDir, timeout: 60, check: false)
        XCTAssertEqual(bad.status, 2, bad.stderr)
    }

    /// A layer the upstream holds mid-way for 1.5 s: the server streams progress lines, and
    /// on a terminal (`script` gives it one) the command redraws a progress line.
    func testProgressWhileALayerIsSlow() throws {
        let upstream = try startFakeUpstream()
        let image = FakeUpstream.oneLayerImage(layerSize: 200_000)
        let (manifest, (c, config), (l, layer)) = (image.manifest, image.config, image.layer)
        upstream.route("/v2/test/slow/manifests/v1") { w in w.respond(FakeUpstream.manifestHead(manifest), body: manifest) }
        upstream.route("/v2/test/slow/blobs/\(c)", FakeUpstream.serve(config, digest: c))
        upstream.route("/v2/test/slow/blobs/\(l)", FakeUpstream.stall(layer, after: 100_000, stallNanos: 1_500_000_000, digest: l))
        let berth = try startBerth(upstream: upstream.url)

        let stream = try Subprocess.run(["curl", "-sS", "-N", "--unix-socket", "\(berth.cacheDir)/admin.sock", "-X", "POST",
                                         "http://berth/preload?image=test/slow:v1"], in: workDir, timeout: 60)
        let lines = stream.stdout.split(separator: "\n").compactMap { jsonObject(Array($0.utf8)) }
        let progress = lines.compactMap { $0["progress"] as? [String: Any] }
        XCTAssertTrue(progress.contains { ($0["bytesDone"] as? Int ?? 0) >= 100_000 && ($0["blobsDone"] as? Int) == 1 }, stream.stdout)
        XCTAssertEqual(progress.last?["bytes"] as? Int, config.count + layer.count)
        XCTAssertEqual((lines.last?["result"] as? [String: Any])?["manifest"] as? String, "sha256:" + sha256Hex(manifest), stream.stdout)
        XCTAssertTrue(berth.isCached(l))

        // Again on a terminal, for an image that is not cached yet (the layer is held again).
        upstream.route("/v2/test/slow/manifests/v2") { w in w.respond(FakeUpstream.manifestHead(manifest), body: manifest) }
        let binary = try XCTUnwrap(BerthProcess.binaryPath)
        _ = try Subprocess.run([binary, "cache", "rm", l, "--cache-dir", berth.cacheDir], in: workDir, timeout: 60)
        let tty = try Subprocess.run(["script", "-qfec", "\(binary) preload test/slow:v2 --cache-dir \(berth.cacheDir)", "/dev/null"],
                                     in: workDir, timeout: 60, check: false)
        XCTAssertEqual(tty.status, 0, tty.stdout + tty.stderr)
        XCTAssertTrue(tty.stdout.contains("\u{1b}[Kpreload: 0/1 images, 1/2 blobs, 97.7 KiB"), tty.stdout.debugDescription)
        XCTAssertTrue(tty.stdout.contains("preload: 1 of 1 images loaded"), tty.stdout)
    }

    func testPreloadSectionWarmsTheCacheAtStart() throws {
        let registry = try startRegistry()
        let one = try builder.pushImage(to: registry, repository: "site/one", tag: "v1", layerSizes: [150_000])
        let index = try builder.pushIndex(to: registry, repository: "site/multi", tag: "v1")
        let config = "\(workDir!)/berth.yaml"
        try """
            upstream:
              url: "\(registry.url)"
            preload:
              images: [site/one:v1, site/multi:v1, site/gone:v1]
              platforms: [linux/amd64]
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let berth = try startBerth(upstream: "", arguments: ["--config", config])
        XCTAssertTrue(waitUntil(60) { berth.log.contains("preload: 2 of 3 images loaded; failed: site/gone:v1") }, berth.log)
        for d in one.blobs + [index.children[0].digest] + index.children[0].blobs { XCTAssertTrue(berth.isCached(d), "\(d) is preloaded") }
        for d in index.children[1].blobs { XCTAssertFalse(berth.isCached(d), "arm64 \(d) is not a preload.platforms platform") }
        registry.stop()
        assertLayout(try pull(berth, "site/one:v1"), image: one)
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
