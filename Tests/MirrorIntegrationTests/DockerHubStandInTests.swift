import Foundation
import XCTest
import TestSupport

/// Docker Hub behaviour against a local stand-in (no test reaches the
/// internet): a token-auth registry holding `library/alpine`, Berth with
/// Docker Hub naming forced on, and a client asking for plain `alpine` as it
/// does through `registry-mirrors`.
final class DockerHubStandInTests: IntegrationTestCase {
    func testSingleNamesPullFromLibraryWithTokens() throws {
        let password = UUID().uuidString
        let tokens = try startTokenService(username: "hub", password: password)
        let registry = try startRegistry(.token(realm: tokens.realm, service: tokens.service, issuer: tokens.issuer,
                                                rootCertBundle: tokens.certificatePath))
        let push = "Bearer " + tokens.makeToken(subject: "pusher", scopes: ["repository:library/alpine:pull,push"])
        let image = try builder.pushImage(to: registry, repository: "library/alpine", tag: "3.20", layerSizes: [700_000],
                                          credentials: "hub:\(password)", authorization: push)
        let berth = try startBerth(upstream: registry.url, arguments: ["--upstream-dockerhub", "true", "--upstream-user", "hub"],
                                   environment: ["BERTH_UPSTREAM_PASSWORD": password])
        assertLayout(try pull(berth, "alpine:3.20"), image: image)
        assertLayout(try pull(berth, "library/alpine:3.20"), image: image)
        // Both names share one cache: the second pull fetched no blob again.
        XCTAssertEqual(registry.count(method: "GET", pathContains: "/blobs/\(image.blobs[1])"), 1)
        let tags = try get(berth, "/v2/alpine/tags/list")
        XCTAssertEqual(tags.status, 200)
        XCTAssertTrue(tags.bodyText.contains("\"3.20\""), tags.bodyText)
    }
}
