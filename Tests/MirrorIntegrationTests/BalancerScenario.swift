import Foundation
import XCTest
import TestSupport

/// What every shipped balancer file (conf/haproxy/, conf/nginx/) must do with
/// three Berth nodes behind it: each blob fetched from the upstream once for
/// the cluster whatever repository asks, and pulls that survive a node killed.
struct BalancedCluster {
    let registry: Registry
    let image: PushedImage
    let nodes: [BerthProcess]
    /// The balancer's host:port.
    let balancer: String
    /// GETs of each blob the registry had logged before the nodes started.
    let fetchesBefore: [String: Int]

    func upstreamFetches(_ digest: String) -> Int {
        registry.count(method: "GET", pathContains: "/blobs/\(digest)") - fetchesBefore[digest]!
    }
}

extension IntegrationTestCase {
    /// Pushes an image as team/app:v1 and team/twin:v1, starts three nodes
    /// (`environment`: prefetch off, as the shipped files say) and the balancer
    /// (`startBalancer` returns its port), pulls through both repositories and
    /// checks every blob was fetched once and lives on one node; `more` adds
    /// checks; then a `kill -9` of a node holding blobs, and two more pulls.
    /// With `peers`, each node gets the three nodes' addresses in the balancer's order (`BERTH_PEERS`).
    func checkBlobsFetchedOnceClusterWide(environment: [String: String?], peers: Bool = false, startBalancer: ([BerthProcess]) throws -> UInt16,
                                         more: (BalancedCluster) throws -> Void = { _ in }) throws {
        let registry = try startRegistry()
        let image = try builder.pushImage(to: registry, repository: "team/app", tag: "v1", layerSizes: [200_000, 150_000, 100_000, 50_000])
        // The same image under a second repository.
        try Skopeo.copy("docker://\(registry.hostPort)/team/app:v1", "docker://\(registry.hostPort)/team/twin:v1",
                        extra: ["--src-tls-verify=false", "--dest-tls-verify=false"], in: workDir)
        let before = Dictionary(uniqueKeysWithValues: image.blobs.map { ($0, registry.count(method: "GET", pathContains: "/blobs/\($0)")) })  // skopeo reads the config copying
        let ports = peers ? (0..<3).map { _ in freeLoopbackPort() } : [nil, nil, nil]
        var environment = environment
        if peers { environment["BERTH_PEERS"] = ports.map { "127.0.0.1:\($0!)" }.joined(separator: ",") }
        let nodes = try ports.map { try startBerth(upstream: registry.url, environment: environment, port: $0) }
        let cluster = BalancedCluster(registry: registry, image: image, nodes: nodes, balancer: "127.0.0.1:\(try startBalancer(nodes))", fetchesBefore: before)
        func pullThrough(_ reference: String) throws -> String {
            let out = "\(workDir!)/lb-\(UUID().uuidString.prefix(8))"
            try Skopeo.copy("docker://\(cluster.balancer)/\(reference)", "dir:\(out)", extra: ["--src-tls-verify=false"], in: workDir)
            return out
        }
        for _ in 0..<3 { assertLayout(try pullThrough("team/app:v1"), image: image) }
        assertLayout(try pullThrough("team/twin:v1"), image: image)
        for d in image.blobs {
            XCTAssertEqual(cluster.upstreamFetches(d), 1, "\(d) fetched once for the whole cluster")
            XCTAssertEqual(nodes.filter { $0.isCached(d) }.count, 1, "\(d) lives on one node")
        }
        XCTAssertGreaterThan(Set(image.blobs.compactMap { d in nodes.firstIndex { $0.isCached(d) } }).count, 1, "blobs spread over the nodes")
        try more(cluster)

        // A node dies hard: its keys go to the others (redispatch at once, health checks soon after).
        let victim = try XCTUnwrap(nodes.first { n in image.blobs.contains(where: n.isCached) })
        victim.killHard()
        for _ in 0..<2 { assertLayout(try pullThrough("team/app:v1"), image: image) }
    }
}
