import Foundation
import XCTest
import TestSupport

/// Tag history against a real upstream: a tag pushed over upstream keeps its
/// earlier image in the cache (through eviction), `berth cache history`
/// lists both, and the old image pulls by digest with the upstream gone.
final class TagHistoryIntegrationTests: IntegrationTestCase {
    func testAnOverwrittenTagsPreviousImageStillPullsByDigest() throws {
        let registry = try startRegistry()
        let v1 = try builder.pushImage(to: registry, repository: "team/app", tag: "prod", layerSizes: [300_000])
        // A 2 MB budget: eviction runs from 1.8 MB down to 1.6 MB.
        let berth = try startBerth(upstream: registry.url, arguments: ["--tag-ttl", "0s", "--cache-max-size", "2000000"])
        assertLayout(try pull(berth, "team/app:prod"), image: v1)

        let v2 = try builder.pushImage(to: registry, repository: "team/app", tag: "prod", layerSizes: [300_000])
        XCTAssertNotEqual(v1.digest, v2.digest)
        assertLayout(try pull(berth, "team/app:prod"), image: v2)
        XCTAssertTrue(waitUntil(10) { berth.log.contains("upstream moved team/app:prod from \(v1.digest) to \(v2.digest)") }, berth.log)

        // Pressure: other images well past the budget; the oldest unheld content goes.
        for i in 0..<4 {
            let filler = try builder.pushImage(to: registry, repository: "team/filler\(i)", tag: "v1", layerSizes: [450_000])
            assertLayout(try pull(berth, "team/filler\(i):v1"), image: filler)
        }
        XCTAssertTrue(waitUntil(10) { berth.log.contains("evicting") }, "the fillers put the cache under pressure: \(berth.log)")
        for d in v1.blobs + v2.blobs + [v1.digest, v2.digest] { XCTAssertTrue(berth.isCached(d), "\(d) is held by the tag's history") }

        let binary = try XCTUnwrap(BerthProcess.binaryPath)
        let history = try Subprocess.run([binary, "cache", "history", "team/app:prod", "--json", "--cache-dir", berth.cacheDir], in: workDir, timeout: 60)
        let tags = try XCTUnwrap(jsonObject(Array(history.stdout.utf8))?["tags"] as? [[String: Any]], history.stdout)
        let mappings = try XCTUnwrap(tags.first?["mappings"] as? [[String: Any]])
        XCTAssertEqual(mappings.compactMap { $0["digest"] as? String }, [v2.digest, v1.digest], "newest first")
        XCTAssertEqual(mappings.compactMap { $0["current"] as? Bool }, [true, false])
        XCTAssertEqual(mappings.compactMap { $0["kept"] as? Bool }, [true, true])
        let text = try Subprocess.run([binary, "cache", "history", "team/app", "--cache-dir", berth.cacheDir], in: workDir, timeout: 60).stdout
        XCTAssertTrue(text.contains(v1.digest) && text.contains("current, kept"), text)
        let du = try Subprocess.run([binary, "cache", "du", "--json", "--cache-dir", berth.cacheDir], in: workDir, timeout: 60).stdout
        XCTAssertGreaterThan(try XCTUnwrap(jsonObject(Array(du.utf8))?["kept"] as? Int, du), 600_000, "du shows what history holds")
        let none = try Subprocess.run([binary, "cache", "history", "team/filler0:v9", "--cache-dir", berth.cacheDir], in: workDir,
                                      timeout: 60, check: false)
        XCTAssertEqual(none.status, 1)
        XCTAssertTrue(none.stderr.contains("no history"), none.stderr)

        // The rollback: the old image by digest, from the cache alone.
        registry.stop()
        assertLayout(try pull(berth, "team/app@\(v1.digest)"), image: v1)
    }
}
