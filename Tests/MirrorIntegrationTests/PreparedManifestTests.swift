import Foundation
import XCTest
import TestSupport

/// Warm manifests are answered from per-loop prepared answers (`PreparedManifests`):
/// each answer must still be the one the full route would give. One loop, so that
/// every connection meets the same table.
final class PreparedManifestTests: IntegrationTestCase {
    private let schema2 = "Accept: application/vnd.docker.distribution.manifest.v2+json"

    func testPreparedAnswersFollowUserAcceptAndRequestID() throws {
        let registry = try startRegistry()
        let image = try builder.pushImage(to: registry, repository: "test/app", tag: "v1", layerSizes: [1_000])
        let file = "\(workDir!)/htpasswd"
        // alice:s3cret and bob:other (see MirrorTests/ClientAuthTests).
        try ("alice:$2b$05$abcdefghijklmnopqrstuuLK7U1u6pVRmL7L1BBM2aS35PSZnDXlK\n"
             + "bob:$2y$05$abcdefghijklmnopqrstuuVQd15VhR/oN1H3pzUR5lME0fZO6.qRW\n").write(toFile: file, atomically: true, encoding: .utf8)
        let config = "\(workDir!)/berth.yaml"
        try """
            auth:
              htpasswd: \(file)
              rules:
                - users: [alice]
                  allow: ["**"]
                - users: [bob]
                  allow: ["\(registry.hostPort)/other/*"]
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let berth = try startBerth(upstream: registry.url, arguments: ["--config", config], workers: 1)
        func basic(_ credentials: String) -> String { "Authorization: Basic " + Data(credentials.utf8).base64EncodedString() }
        let alice = basic("alice:s3cret"), bob = basic("bob:other")

        for path in ["/v2/test/app/manifests/v1", "/v2/test/app/manifests/\(image.digest)"] {
            var statuses: [String] = []
            for i in 0..<3 {
                let r = try get(berth, path, headers: [alice, schema2, "X-Request-Id: prep-\(i)"])
                XCTAssertEqual(r.status, 200, path)
                XCTAssertEqual(r.body, image.manifest, path)
                XCTAssertEqual(r.headers["docker-content-digest"], image.digest, path)
                XCTAssertEqual(r.headers["x-request-id"], "prep-\(i)", path)
                XCTAssertEqual(r.headers["content-length"], String(image.manifest.count), path)
                statuses.append(r.headers["cache-status"] ?? "")
            }
            XCTAssertEqual(statuses.dropFirst(), ["Berth; hit", "Berth; hit"], path)
            // A fresh id when the client sends none, and HEAD gets the head alone.
            let head = try get(berth, path, method: "HEAD", headers: [alice, schema2])
            XCTAssertEqual(head.status, 200)
            XCTAssertEqual(head.headers["content-length"], String(image.manifest.count))
            XCTAssertFalse((head.headers["x-request-id"] ?? "").isEmpty)
            XCTAssertFalse(head.bodyText.contains("schemaVersion"), "no body (curl -I writes the head to its output)")
            // Another user on the same path is checked against auth.rules, not handed alice's answer.
            let denied = try get(berth, path, headers: [bob, schema2])
            XCTAssertEqual(denied.status, 403, path)
            XCTAssertTrue(denied.bodyText.contains("DENIED"), denied.bodyText)
            XCTAssertEqual(try get(berth, path, headers: [schema2]).status, 401, "anonymous: challenged")
        }

        // A client that accepts only OCI types is not given the cached Docker manifest by tag.
        registry.settle()
        let before = registry.count(method: "GET", pathContains: "/manifests/")
        _ = try get(berth, "/v2/test/app/manifests/v1", headers: [alice, "Accept: application/vnd.oci.image.manifest.v1+json"])
        registry.settle()
        XCTAssertEqual(registry.count(method: "GET", pathContains: "/manifests/"), before + 1, "asked the upstream")
    }

    func testPreparedTagAnswerFollowsTheTagWhenItMoves() throws {
        let registry = try startRegistry()
        let first = try builder.pushImage(to: registry, repository: "test/app", tag: "v1", layerSizes: [1_000])
        let berth = try startBerth(upstream: registry.url, arguments: ["--tag-ttl", "1s"], workers: 1)
        for _ in 0..<3 {
            let r = try get(berth, "/v2/test/app/manifests/v1", headers: [schema2])
            XCTAssertEqual(r.headers["docker-content-digest"], first.digest)
        }
        let second = try builder.pushImage(to: registry, repository: "test/app", tag: "v1", layerSizes: [2_000])
        XCTAssertNotEqual(first.digest, second.digest)
        // The prepared answer holds only while the tag is fresh: within a bounded wait the new digest is served.
        var statuses: Set<Int> = []
        XCTAssertTrue(waitUntil(15, everyMillis: 100) {
            let r = try? self.get(berth, "/v2/test/app/manifests/v1", headers: [self.schema2])
            statuses.insert(r?.status ?? 0)
            return r?.headers["docker-content-digest"] == second.digest
        }, "the moved tag is served within the bounded wait")
        XCTAssertEqual(statuses, [200], "every answer meanwhile was 200")
        let again = try get(berth, "/v2/test/app/manifests/v1", headers: [schema2])
        XCTAssertEqual(again.body, second.manifest)
    }
}
