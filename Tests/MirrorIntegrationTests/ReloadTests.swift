import Foundation
import XCTest
import TestSupport

/// SIGHUP reloads `berth serve`'s configuration: an upstream added while a
/// download runs, client auth switched on, a bad file refused whole with
/// the running configuration kept.
final class ReloadTests: IntegrationTestCase {
    private var configPath: String { "\(workDir!)/berth.yaml" }

    private func write(_ yaml: String) throws { try yaml.write(toFile: configPath, atomically: true, encoding: .utf8) }

    /// Sends SIGHUP and waits (bounded) for the reload's outcome line: the `n`th of either kind.
    private func hangUp(_ berth: BerthProcess, expecting outcome: String, count n: Int = 1) throws {
        kill(try XCTUnwrap(berth.pid), SIGHUP)
        let seen = waitUntil(10) { berth.log.components(separatedBy: outcome).count - 1 >= n }
        XCTAssertTrue(seen, "no \"\(outcome)\" in the log:\n\(berth.log)")
    }

    func testAnUpstreamAddedBySIGHUPServesWhileADownloadInProgressFinishes() throws {
        let slow = try startFakeUpstream()
        let blob = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        let digest = "sha256:" + sha256Hex(blob)
        let gate = FakeUpstream.Gate()
        let blobPath = "/v2/team/big/blobs/\(digest)"
        slow.route(blobPath, FakeUpstream.held(blob, after: 300_000, until: gate, digest: digest))
        let registry = try startRegistry()
        let image = try builder.pushImage(to: registry, repository: "team/app", tag: "v1", layerSizes: [200_000])

        try write("upstreams:\n  - name: slow\n    url: \"\(slow.url)\"\n")
        let berth = try startBerth(upstream: "", arguments: ["--config", configPath])
        XCTAssertEqual(try get(berth, "/v2/b/team/app/manifests/v1").status, 404, "no upstream has the prefix b yet")

        // A download through the first upstream, held half-way by the upstream.
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var download: CurlResult?
        DispatchQueue.global().async {
            download = try? self.get(berth, blobPath, timeout: 60)
            done.signal()
        }
        XCTAssertTrue(waitUntil(10) { slow.count(method: "GET", path: blobPath) == 1 }, "the download reached the upstream")

        // Add an upstream (and change a key that needs a restart): reloaded, not restarted.
        try write("""
            upstreams:
              - name: slow
                url: "\(slow.url)"
                default: true
              - name: "\(registry.hostPort)"
                prefix: b
                url: "\(registry.url)"
            server:
              drain_delay: 1s
            cache:
              keep_history: 5
            """)
        try hangUp(berth, expecting: "SIGHUP: configuration reloaded")
        XCTAssertTrue(berth.log.contains("added \(registry.hostPort)"), berth.log)
        XCTAssertTrue(berth.log.contains("unchanged slow"), "the running upstream is kept: \(berth.log)")
        XCTAssertTrue(berth.log.contains("SIGHUP: server limits in force"), "server.* reloads: \(berth.log)")
        XCTAssertTrue(berth.log.contains("SIGHUP: cache changed; these take effect at the next start"), berth.log)
        assertLayout(try pull(berth, "b/team/app:v1"), image: image)

        // The download that started before the reload ends byte-exact, from the one upstream fetch.
        XCTAssertEqual(done.wait(timeout: .now() + 0.2), .timedOut, "still held by the upstream")
        gate.release()
        XCTAssertEqual(done.wait(timeout: .now() + 30), .success)
        let d = try XCTUnwrap(download)
        XCTAssertEqual(d.status, 200)
        XCTAssertEqual(sha256Hex(d.body), String(digest.dropFirst(7)))
        // The fill is stored on the pool after its last byte: a request meanwhile joins it (collapsed), then hits.
        XCTAssertTrue(waitUntil(10) { (try? self.get(berth, blobPath))?.headers["cache-status"] == "Berth; hit" }, "the fill was stored")
        XCTAssertEqual(slow.count(method: "GET", path: blobPath), 1)

        // A file that parses but names a password file that does not exist: refused whole.
        try write("""
            upstreams:
              - name: slow
                url: "\(slow.url)"
                default: true
              - name: other
                prefix: c
                url: "\(registry.url)"
                username: me
                password_file: \(workDir!)/missing
            """)
        try hangUp(berth, expecting: "SIGHUP: new configuration refused, the running one stays")
        XCTAssertTrue(berth.log.contains("upstreams[1].password_file"), berth.log)
        XCTAssertEqual(try get(berth, "/v2/b/team/app/manifests/v1").status, 200, "b still served")
        XCTAssertEqual(try get(berth, "/v2/c/team/app/manifests/v1").status, 404, "c never came in")

        // Not YAML at all: refused too, and the process is still serving.
        try write("upstreams: [\n")
        try hangUp(berth, expecting: "SIGHUP: new configuration refused, the running one stays", count: 2)
        XCTAssertEqual(try get(berth, "/v2/b/team/app/manifests/v1").status, 200)
        XCTAssertNotNil(berth.pid)
    }

    func testClientAuthSwitchedOnBySIGHUP() throws {
        let registry = try startRegistry()
        _ = try builder.pushImage(to: registry, repository: "team/app", tag: "v1", layerSizes: [1000])
        try write("upstream:\n  url: \"\(registry.url)\"\n")
        let berth = try startBerth(upstream: "", arguments: ["--config", configPath])
        XCTAssertEqual(try get(berth, "/v2/team/app/manifests/v1").status, 200)

        let htpasswd = "\(workDir!)/htpasswd"
        // alice:s3cret, bcrypt cost 5 (as in ClientAuthIntegrationTests).
        try "alice:$2b$05$abcdefghijklmnopqrstuuLK7U1u6pVRmL7L1BBM2aS35PSZnDXlK\n".write(toFile: htpasswd, atomically: true, encoding: .utf8)
        try write("upstream:\n  url: \"\(registry.url)\"\nauth:\n  htpasswd: \(htpasswd)\n")
        try hangUp(berth, expecting: "SIGHUP: configuration reloaded")
        XCTAssertEqual(try get(berth, "/v2/team/app/manifests/v1").status, 401)
        XCTAssertEqual(try get(berth, "/v2/team/app/manifests/v1", headers: ["Authorization: Basic " + Data("alice:s3cret".utf8).base64EncodedString()]).status, 200)
    }
}
