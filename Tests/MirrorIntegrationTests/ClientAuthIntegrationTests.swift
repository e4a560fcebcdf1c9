import Foundation
import XCTest
import TestSupport

/// `auth.htpasswd`: requests need Basic credentials (401 with a Basic
/// challenge that skopeo answers from --src-creds), unless anonymous is on.
final class ClientAuthIntegrationTests: IntegrationTestCase {
    // alice:s3cret, bcrypt cost 5 (see MirrorTests/ClientAuthTests).
    private let htpasswd = "alice:$2b$05$abcdefghijklmnopqrstuuLK7U1u6pVRmL7L1BBM2aS35PSZnDXlK\n"

    func testCredentialsAreRequiredAndChecked() throws {
        let registry = try startRegistry()
        let image = try builder.pushImage(to: registry, repository: "test/app", tag: "v1", layerSizes: [200_000])
        let file = "\(workDir!)/htpasswd"
        try htpasswd.write(toFile: file, atomically: true, encoding: .utf8)
        let berth = try startBerth(upstream: registry.url, arguments: ["--auth-htpasswd", file])

        let anonymous = try get(berth, "/v2/")
        XCTAssertEqual(anonymous.status, 401)
        XCTAssertEqual(anonymous.headers["www-authenticate"], "Basic realm=\"Berth\"")
        XCTAssertTrue(anonymous.bodyText.contains("UNAUTHORIZED"), anonymous.bodyText)
        let wrong = try get(berth, "/v2/test/app/manifests/v1", headers: ["Authorization: Basic " + Data("alice:nope".utf8).base64EncodedString()])
        XCTAssertEqual(wrong.status, 401)
        registry.settle()
        XCTAssertEqual(registry.count(method: "GET", pathContains: "/manifests/"), 1, "refused requests never reach the upstream (1: the push's read-back)")
        XCTAssertEqual(try get(berth, "/healthz").status, 200, "health checks need no credentials")

        let out = "\(workDir!)/pulled"
        try Skopeo.copy("docker://\(berth.hostPort)/test/app:v1", "dir:\(out)", extra: ["--src-tls-verify=false", "--src-creds", "alice:s3cret"], in: workDir)
        assertLayout(out, image: image)
    }

    func testPullRules() throws {
        let registry = try startRegistry()
        let image = try builder.pushImage(to: registry, repository: "test/app", tag: "v1", layerSizes: [100_000])
        _ = try builder.pushImage(to: registry, repository: "test/secret", tag: "v1", layerSizes: [1_000])
        let open = try builder.pushImage(to: registry, repository: "public/tool", tag: "v1", layerSizes: [1_000])
        let file = "\(workDir!)/htpasswd"
        // bob:other (see MirrorTests/ClientAuthTests).
        try (htpasswd + "bob:$2y$05$abcdefghijklmnopqrstuuVQd15VhR/oN1H3pzUR5lME0fZO6.qRW\n").write(toFile: file, atomically: true, encoding: .utf8)
        let hp = registry.hostPort
        let config = "\(workDir!)/berth.yaml"
        try """
            auth:
              htpasswd: \(file)
              anonymous: true
              rules:
                - users: [alice]
                  allow: ["**"]
                - users: [bob]
                  allow: ["\(hp)/test/*"]
                  deny: ["\(hp)/test/secret"]
                - users: ["*"]
                  allow: ["\(hp)/public/**"]
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let berth = try startBerth(upstream: registry.url, arguments: ["--config", config])
        registry.settle()
        let before = registry.count(method: "GET", pathContains: "/manifests/")
        func basic(_ credentials: String) -> [String] { ["Authorization: Basic " + Data(credentials.utf8).base64EncodedString()] }

        let denied = try get(berth, "/v2/test/secret/manifests/v1", headers: basic("bob:other"))
        XCTAssertEqual(denied.status, 403)
        XCTAssertTrue(denied.bodyText.contains("DENIED") && denied.bodyText.contains("bob may not pull \(hp)/test/secret"), denied.bodyText)
        let anonymous = try get(berth, "/v2/test/app/manifests/v1")
        XCTAssertEqual(anonymous.status, 401, "anonymous may try again with credentials")
        XCTAssertEqual(anonymous.headers["www-authenticate"], "Basic realm=\"Berth\"")
        XCTAssertEqual(try get(berth, "/v2/test/app/blobs/\(image.blobs[1])").status, 401, "blobs follow the same rules")
        registry.settle()
        XCTAssertEqual(registry.count(method: "GET", pathContains: "/manifests/"), before, "refused pulls never reach the upstream")

        assertLayout(try pull(berth, "public/tool:v1"), image: open)
        let out = "\(workDir!)/bob"
        try Skopeo.copy("docker://\(berth.hostPort)/test/app:v1", "dir:\(out)", extra: ["--src-tls-verify=false", "--src-creds", "bob:other"], in: workDir)
        assertLayout(out, image: image)
        // curl sends `Accept: */*`: Berth asks the upstream for every manifest type (not schema 1).
        let alice = try get(berth, "/v2/test/secret/manifests/v1", headers: basic("alice:s3cret"))
        XCTAssertEqual(alice.status, 200, "alice may pull everything: \(alice.bodyText)")
    }

    func testAnonymousToo() throws {
        let registry = try startRegistry()
        let image = try builder.pushImage(to: registry, repository: "test/app", tag: "v1", layerSizes: [100_000])
        let file = "\(workDir!)/htpasswd"
        try htpasswd.write(toFile: file, atomically: true, encoding: .utf8)
        let berth = try startBerth(upstream: registry.url, arguments: ["--auth-htpasswd", file, "--auth-anonymous"])
        XCTAssertEqual(try get(berth, "/v2/").status, 401, "the ping is challenged, so that clients with credentials send them")
        XCTAssertEqual(try get(berth, "/v2/test/app/manifests/v1").status, 200)
        XCTAssertEqual(try get(berth, "/v2/test/app/manifests/v1", headers: ["Authorization: Basic Og=="]).status, 200,
                       "an empty user and password (containers/image without credentials) is anonymous")
        assertLayout(try pull(berth, "test/app:v1"), image: image)
        let wrong = try get(berth, "/v2/", headers: ["Authorization: Basic " + Data("alice:nope".utf8).base64EncodedString()])
        XCTAssertEqual(wrong.status, 401, "wrong credentials are refused even when anonymous is allowed")
    }
}
