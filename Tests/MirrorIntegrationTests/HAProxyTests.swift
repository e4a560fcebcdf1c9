import Foundation
import XCTest
import TestSupport

/// Three Berth nodes behind the shipped `conf/haproxy/berth.cfg` (Debian's
/// haproxy, only its `bind` and `server` lines rewritten to the test's
/// ports): every blob is fetched once cluster-wide, whatever repository asks
/// for it, and pulls still succeed after a `kill -9` of a node.
final class HAProxyTests: IntegrationTestCase {
    static var shippedConfig: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("conf/haproxy/berth.cfg").path
    }

    /// Starts haproxy on the shipped file in front of `nodes` (those at `disabled` listed
    /// `disabled`: out of the ring, their ids kept); its port.
    private func startHAProxy(_ nodes: [BerthProcess], disabled: Set<Int> = []) throws -> UInt16 {
        let shipped = try String(contentsOfFile: Self.shippedConfig, encoding: .utf8)
        let port = freeLoopbackPort()
        var lines: [String] = []
        var serversWritten = false
        for line in shipped.split(separator: "\n", omittingEmptySubsequences: false) {
            let t = line.trimmingCharacters(in: .whitespaces)
            if t.hasPrefix("bind ") {
                lines.append("    bind 127.0.0.1:\(port)")
            } else if t.hasPrefix("server ") {
                if !serversWritten {
                    for (i, n) in nodes.enumerated() { lines.append("    server berth\(i + 1) \(n.hostPort)\(disabled.contains(i) ? " disabled" : "")") }
                    serversWritten = true
                }
            } else {
                lines.append(String(line))
            }
        }
        XCTAssertTrue(serversWritten, "the shipped file has server lines")
        let cfg = "\(workDir!)/haproxy-\(port).cfg"
        try lines.joined(separator: "\n").write(toFile: cfg, atomically: true, encoding: .utf8)
        let check = try Subprocess.run(["haproxy", "-c", "-f", cfg], in: workDir, timeout: 30, check: false)
        XCTAssertEqual(check.status, 0, check.stdout + check.stderr)
        let p = try Subprocess(["haproxy", "-db", "-f", cfg], in: workDir, logPath: "\(workDir!)/haproxy-\(port).log")
        cleanups.append { p.terminate(grace: 5) }
        XCTAssertTrue(waitUntil(15) { probeStatus(port: port, path: "/v2/") == 200 }, "haproxy serves /v2/ through a node")
        return port
    }

    func testBlobsAreFetchedOnceClusterWideAndPullsSurviveANodeKilled() throws {
        guard Subprocess.resolve("haproxy") != nil else { throw XCTSkip("haproxy is not installed (scripts/deps.sh TEST_PACKAGES)") }
        // Prefetch off, as the shipped file says: a node prefetching a manifest's blobs would fetch what other nodes own.
        try checkBlobsFetchedOnceClusterWide(environment: ["BERTH_UPSTREAM_PREFETCH": "false"], startBalancer: { try startHAProxy($0) })
    }

    /// The nodes know each other (`peers:`, in the balancer's order). A ring change
    /// (a node taken out of the balancer, still running) sends its blobs to the
    /// other nodes, which fetch them from it, not from the upstream.
    func testAfterARingChangeBlobsComeFromTheirPreviousOwner() throws {
        guard Subprocess.resolve("haproxy") != nil else { throw XCTSkip("haproxy is not installed (scripts/deps.sh TEST_PACKAGES)") }
        try checkBlobsFetchedOnceClusterWide(environment: ["BERTH_UPSTREAM_PREFETCH": "false"], peers: true, startBalancer: { try startHAProxy($0) }) { cluster in
            let owners = Dictionary(uniqueKeysWithValues: cluster.image.blobs.map { d in (d, cluster.nodes.firstIndex { $0.isCached(d) }!) })
            // The owner of the fewest blobs leaves the ring (some blobs must stay where they are).
            let counts = Dictionary(grouping: owners.values, by: { $0 }).mapValues(\.count)
            let out = try XCTUnwrap(counts.min { $0.value < $1.value }?.key)
            let moved = owners.filter { $0.value == out }.map(\.key)
            let balancer = "127.0.0.1:\(try startHAProxy(cluster.nodes, disabled: [out]))"
            let dir = "\(workDir!)/ring-change"
            try Skopeo.copy("docker://\(balancer)/team/app:v1", "dir:\(dir)", extra: ["--src-tls-verify=false"], in: workDir)
            assertLayout(dir, image: cluster.image)
            for d in cluster.image.blobs {
                XCTAssertEqual(cluster.upstreamFetches(d), 1, "\(d): still one upstream fetch for the cluster after the ring change")
            }
            for d in moved {
                XCTAssertEqual(cluster.nodes.filter { $0.isCached(d) }.count, 2, "\(d) copied from its previous owner to its new one")
            }
            let fromPeer = cluster.nodes.enumerated().filter { $0.offset != out }.map { $0.element.log }.joined()
            for d in moved { XCTAssertTrue(fromPeer.contains("blob \(d): filled from peer 127.0.0.1:\(cluster.nodes[out].port)"), "\(d) came from node \(out + 1)") }
        }
    }
}
