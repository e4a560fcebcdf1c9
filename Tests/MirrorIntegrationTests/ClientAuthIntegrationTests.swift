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

    func testAnonymousToo() throws {
        let registry = try startRegistry()
        let image = try builder.pushImage(to: registry, repository: "test/app", tag: "v1", layerSizes: [100_000])
        let file = "\(workDir!)/htpasswd"
        try htpasswd.write(toFile: file, atomically: true, encoding: .utf8)
        let berth = try startBerth(upstream: registry.url, arguments: ["--auth-htpasswd", file, "--auth-anonymous"])
        assertLayout(try pull(berth, "test/app:v1"), image: image)
        let wrong = try get(berth, "/v2/", headers: ["Authorization: Basic " + Data("alice:nope".utf8).base64EncodedString()])
        XCTAssertEqual(wrong.status, 401, "wrong credentials are refused even when anonymous is allowed")
    }
}
