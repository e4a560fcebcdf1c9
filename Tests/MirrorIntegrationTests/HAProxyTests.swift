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

    /// Starts haproxy on the shipped file in front of `nodes`; its port.
    private func startHAProxy(_ nodes: [BerthProcess]) throws -> UInt16 {
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
                    for (i, n) in nodes.enumerated() { lines.append("    server berth\(i + 1) \(n.hostPort)") }
                    serversWritten = true
                }
            } else {
                lines.append(String(line))
            }
        }
        XCTAssertTrue(serversWritten, "the shipped file has server lines")
        let cfg = "\(workDir!)/haproxy.cfg"
        try lines.joined(separator: "\n").write(toFile: cfg, atomically: true, encoding: .utf8)
        let check = try Subprocess.run(["haproxy", "-c", "-f", cfg], in: workDir, timeout: 30, check: false)
        XCTAssertEqual(check.status, 0, check.stdout + check.stderr)
        let p = try Subprocess(["haproxy", "-db", "-f", cfg], in: workDir, logPath: "\(workDir!)/haproxy.log")
        cleanups.append { p.terminate(grace: 5) }
        XCTAssertTrue(waitUntil(15) { probeStatus(port: port, path: "/v2/") == 200 }, "haproxy serves /v2/ through a node")
        return port
    }

    func testBlobsAreFetchedOnceClusterWideAndPullsSurviveANodeKilled() throws {
        guard Subprocess.resolve("haproxy") != nil else { throw XCTSkip("haproxy is not installed (scripts/deps.sh TEST_PACKAGES)") }
        // Prefetch off, as the shipped file says: a node prefetching a manifest's blobs would fetch what other nodes own.
        try checkBlobsFetchedOnceClusterWide(environment: ["BERTH_UPSTREAM_PREFETCH": "false"], startBalancer: startHAProxy)
    }
}
