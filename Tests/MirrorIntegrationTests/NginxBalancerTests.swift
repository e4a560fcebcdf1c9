import Foundation
import XCTest
import TestSupport

/// Three Berth nodes behind the shipped `conf/nginx/berth.conf` (Debian's
/// nginx, the file included in an http block as Debian's nginx.conf does, only
/// its `listen` and `server` addresses rewritten to the test's ports): every
/// blob is fetched once cluster-wide, whatever repository asks for it, and
/// pulls still succeed after a `kill -9` of a node (redispatch).
final class NginxBalancerTests: IntegrationTestCase {
    static let shippedConfig = repositoryRoot + "/conf/nginx/berth.conf"

    /// The shipped file included in an http block, as Debian's nginx.conf includes conf.d/*.conf.
    static func mainConfig(including file: String, directory d: String) throws -> String {
        try FileManager.default.createDirectory(atPath: d + "/tmp", withIntermediateDirectories: true)
        return nginxMainConfig(directory: d, workers: 2, http: "include \(file);")
    }

    /// The shipped file with its listen lines replaced by one on `port` and the
    /// upstream's server addresses by `nodes` (each keeping the shipped parameters).
    static func rewrite(_ shipped: String, port: UInt16, nodes: [String]) -> (text: String, servers: Int) {
        var lines: [String] = []
        var listenWritten = false
        var parameters: [Substring] = []
        var servers = 0
        for line in shipped.split(separator: "\n", omittingEmptySubsequences: false) {
            let words = line.split(separator: " ")
            switch words.first {
            case "listen":
                if !listenWritten { lines.append("    listen 127.0.0.1:\(port);") }
                listenWritten = true
            case "server" where words.count > 1 && words[1] != "{":
                // `server ADDRESS params;` inside the upstream block.
                servers += 1
                if servers == 1 {
                    parameters = Array(words.dropFirst(2))
                    for n in nodes { lines.append((["    server", n + (parameters.isEmpty ? ";" : "")] + parameters.map(String.init)).joined(separator: " ")) }
                }
            default:
                lines.append(String(line))
            }
        }
        return (lines.joined(separator: "\n"), servers)
    }

    private func startNginx(_ nodes: [BerthProcess]) throws -> UInt16 {
        let shipped = try String(contentsOfFile: Self.shippedConfig, encoding: .utf8)
        let port = freeLoopbackPort()
        let (text, servers) = Self.rewrite(shipped, port: port, nodes: nodes.map(\.hostPort))
        XCTAssertGreaterThan(servers, 1, "the shipped file has server lines")
        let d = "\(workDir!)/nginx"
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        try text.write(toFile: "\(d)/berth.conf", atomically: true, encoding: .utf8)
        try Self.mainConfig(including: "\(d)/berth.conf", directory: d).write(toFile: "\(d)/nginx.conf", atomically: true, encoding: .utf8)
        let command = ["nginx", "-p", d + "/", "-e", d + "/error.log", "-c", d + "/nginx.conf"]
        let check = try Subprocess.run(command + ["-t"], in: d, timeout: 30, check: false)
        XCTAssertEqual(check.status, 0, check.stdout + check.stderr)
        let p = try Subprocess(command, in: d, logPath: "\(d)/nginx.out")
        cleanups.append { p.terminate(grace: 5) }
        XCTAssertTrue(waitUntil(15) { probeStatus(port: port, path: "/v2/") == 200 }, "nginx serves /v2/ through a node")
        return port
    }

    func testBlobsAreFetchedOnceClusterWideAndPullsSurviveANodeKilled() throws {
        guard Subprocess.resolve("nginx") != nil else { throw XCTSkip("nginx is not installed (scripts/deps.sh TEST_PACKAGES)") }
        // Prefetch off and no per-client cap, as the shipped file says.
        let environment: [String: String?] = ["BERTH_UPSTREAM_PREFETCH": "false", "BERTH_SERVER_MAX_CONNECTIONS_PER_CLIENT": "0"]
        try checkBlobsFetchedOnceClusterWide(environment: environment, startBalancer: startNginx) { cluster in
            // A containerd-style ?ns= query does not move a blob: same node, no upstream fetch.
            let blob = cluster.image.blobs[0]
            let viaNs = try Curl.request("http://\(cluster.balancer)/v2/team/twin/blobs/\(blob)?ns=\(cluster.registry.hostPort)", in: self.workDir)
            XCTAssertEqual(viaNs.status, 200)
            XCTAssertEqual(sha256Hex(viaNs.body), String(blob.dropFirst(7)))
            XCTAssertEqual(cluster.upstreamFetches(blob), 1, "?ns= hashed on the digest alone")
        }
    }
}
