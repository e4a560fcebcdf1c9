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
        let policy = "\(workDir!)/policy.json"
        try #"{"default": [{"type": "insecureAcceptAnything"}]}"#.write(toFile: policy, atomically: true, encoding: .utf8)
        let storageConf = "\(workDir!)/storage.conf"
        try "[storage]\ndriver = \"vfs\"\nrunroot = \"\(workDir!)/podman-run\"\ngraphroot = \"\(workDir!)/podman-root\"\n".write(toFile: storageConf, atomically: true, encoding: .utf8)
        b.settle()
        let blobGETsBefore = image.blobs.map { b.count(method: "GET", pathContains: "/blobs/\($0)") }

        let podman = ["podman", "--root", "\(workDir!)/podman-root", "--runroot", "\(workDir!)/podman-run",
                      "--tmpdir", "\(workDir!)/podman-tmp", "--storage-driver", "vfs", "--events-backend", "file",
                      "--cgroup-manager", "cgroupfs", "--network-config-dir", "\(workDir!)/podman-networks"]
        let env: [String: String?] = ["CONTAINERS_REGISTRIES_CONF": registriesConf, "CONTAINERS_CONF": "/dev/null",
                                      "CONTAINERS_STORAGE_CONF": storageConf]
        let reference = "\(b.hostPort)/test/app:v1"
        let pull = try Subprocess.run(podman + ["pull", "--signature-policy", policy, reference], in: workDir,
                                      environmentOverrides: env, timeout: 120, check: false)
        if pull.status != 0, let reason = Self.sandboxRefusal(pull.stderr) { throw XCTSkip("podman cannot run here: \(reason)") }
        XCTAssertEqual(pull.status, 0, pull.stdout + pull.stderr)

        let inspect = try Subprocess.run(podman + ["image", "inspect", "--format", "{{.Digest}}", reference], in: workDir,
                                         environmentOverrides: env, timeout: 60, check: false)
        XCTAssertEqual(inspect.stdout.trimmingCharacters(in: .whitespacesAndNewlines), image.digest, inspect.stderr)

        // Berth served it: every blob is in its cache, and the upstream saw one GET per blob (Berth's fill), not podman's fallback too.
        for d in image.blobs { XCTAssertTrue(berth.isCached(d), "\(d) was not fetched through Berth") }
        b.settle()
        for (d, before) in zip(image.blobs, blobGETsBefore) {
            XCTAssertEqual(b.count(method: "GET", pathContains: "/blobs/\(d)") - before, 1, "one upstream GET of \(d), by Berth")
        }
        XCTAssertFalse(berth.log.contains("NAME_UNKNOWN"), berth.log.suffix(2000).description)
    }

    /// A podman failure that is the sandbox's, not Berth's (no user namespaces, no mounts…).
    private static func sandboxRefusal(_ stderr: String) -> String? {
        for marker in ["operation not permitted", "cannot set up namespace", "permission denied", "read-only file system"]
        where stderr.lowercased().contains(marker) {
            return stderr.split(separator: "\n").first { $0.lowercased().contains(marker) }.map(String.init) ?? marker
        }
        return nil
    }
}
