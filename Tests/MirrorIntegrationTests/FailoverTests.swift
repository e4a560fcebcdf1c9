import Foundation
import XCTest
import HTTP1
import TestSupport

/// `urls:` failover: a first URL that refuses connections or answers 5xx
/// hands the request to the next, invisibly to the client, and later
/// requests go straight to the one that works.
final class FailoverTests: IntegrationTestCase {
    private func berth(urls: [String]) throws -> BerthProcess {
        let config = "\(workDir!)/berth.yaml"
        try "upstreams:\n  - name: mirror.test\n    urls: [\(urls.map { "\"\($0)\"" }.joined(separator: ", "))]\n"
            .write(toFile: config, atomically: true, encoding: .utf8)
        return try startBerth(upstream: "", arguments: ["--config", config])
    }

    func testAnUnreachableFirstURLFailsOverToTheNext() throws {
        let registry = try startRegistry()
        let image = try builder.pushImage(to: registry, repository: "test/app", tag: "v1", layerSizes: [200_000])
        let closed = "http://127.0.0.1:\(freeLoopbackPort())"  // nothing listens there
        let b = try berth(urls: [closed, registry.url])
        assertLayout(try pull(b, "test/app:v1"), image: image)
    }

    func testAFailingFirstURLFailsOverAndStaysFailedOver() throws {
        let registry = try startRegistry()
        let image = try builder.pushImage(to: registry, repository: "test/app", tag: "v1", layerSizes: [200_000, 100_000])
        let broken = try startFakeUpstream()
        broken.routeEverythingElse { w in
            var head = ResponseHead(status: 503)
            head.headers.add("Content-Type", "application/json")
            w.respond(head, body: Array(#"{"errors":[{"code":"UNAVAILABLE","message":"down for maintenance"}]}"#.utf8))
        }
        let b = try berth(urls: [broken.url, registry.url])
        assertLayout(try pull(b, "test/app:v1"), image: image)
        // Each loop (2) learns the outage at most once, not once per request (ping, manifest, 3 blobs).
        XCTAssertGreaterThan(broken.requestCount, 0, "the first URL was tried")
        XCTAssertLessThanOrEqual(broken.requestCount, 2, "failover is shared: later requests go to the URL that works")
        let before = broken.requestCount
        assertLayout(try pull(b, "test/app@\(image.digest)"), image: image)
        XCTAssertEqual(broken.requestCount, before)
    }
}
