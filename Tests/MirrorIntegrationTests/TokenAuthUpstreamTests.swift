import Foundation
import XCTest
import TestSupport

/// Berth in front of Distribution with token auth, tokens from the in-process
/// TokenService; the password comes from BERTH_UPSTREAM_PASSWORD.
final class TokenAuthUpstreamTests: IntegrationTestCase {
    func testTokenAuthUpstreamPullsAndCachesTokens() throws {
        let password = UUID().uuidString
        let tokens = try startTokenService(username: "puller", password: password)
        let registry = try startRegistry(.token(realm: tokens.realm, service: tokens.service, issuer: tokens.issuer,
                                                rootCertBundle: tokens.certificatePath))
        let anonymous = try Curl.request("\(registry.url)/v2/test/tok/manifests/v1", in: workDir)
        XCTAssertEqual(anonymous.status, 401, "the registry demands a token")

        let direct = "Bearer " + tokens.makeToken(subject: "test", scopes: ["repository:test/tok:pull"])
        let image = try builder.pushImage(to: registry, repository: "test/tok", tag: "v1", layerSizes: [1 << 20, 400_000],
                                          credentials: "puller:\(password)", authorization: direct)
        let before = tokens.issuedCount
        let berth = try startBerth(upstream: registry.url, arguments: ["--upstream-user", "puller"],
                                   environment: ["BERTH_UPSTREAM_PASSWORD": password])
        assertLayout(try pull(berth, "test/tok:v1"), image: image)
        assertLayout(try pull(berth, "test/tok:v1"), image: image)
        assertLayout(try pull(berth, "test/tok@\(image.digest)"), image: image)
        let used = tokens.issuedCount - before
        XCTAssertGreaterThanOrEqual(used, 1, "Berth authenticated")
        // One repository: one token, plus at most one from a second loop racing the first.
        XCTAssertLessThanOrEqual(used, 2, "tokens are cached per scope across pulls")
        XCTAssertEqual(tokens.refusedCount, 0)
    }

    /// The "Done when": multi-arch and artifact images from a token-auth
    /// upstream, cold and warm, byte-exact.
    func testMultiArchAndArtifactFromTokenAuthUpstream() throws {
        let password = UUID().uuidString
        let tokens = try startTokenService(username: "puller", password: password)
        let registry = try startRegistry(.token(realm: tokens.realm, service: tokens.service, issuer: tokens.issuer,
                                                rootCertBundle: tokens.certificatePath))
        let push = { (repo: String) in "Bearer " + tokens.makeToken(subject: "pusher", scopes: ["repository:\(repo):pull,push"]) }
        let index = try builder.pushIndex(to: registry, repository: "team/multi", tag: "v2", authorization: push("team/multi"))
        let subject = try builder.pushImage(to: registry, repository: "team/art", tag: "v1", layerSizes: [200_000],
                                            credentials: "puller:\(password)", authorization: push("team/art"))
        let artifact = try builder.pushArtifact(to: registry, repository: "team/art", tag: "sig", subject: subject,
                                                authorization: push("team/art"))
        let berth = try startBerth(upstream: registry.url, arguments: ["--upstream-user", "puller"],
                                   environment: ["BERTH_UPSTREAM_PASSWORD": password])
        for _ in 0..<2 {  // cold, then warm
            assertLayout(try pull(berth, "team/multi:v2", all: true), index: index)
            XCTAssertEqual(try Skopeo.inspectRaw("docker://\(berth.hostPort)/team/multi:v2", in: workDir), index.index)
            let r = try get(berth, "/v2/team/art/manifests/sig", headers: ["Accept: \(ImageBuilder.ociManifest)"])
            XCTAssertEqual(r.status, 200, r.bodyText)
            XCTAssertEqual(r.body, artifact.manifest)
            for d in artifact.blobs {
                let b = try get(berth, "/v2/team/art/blobs/\(d)")
                XCTAssertEqual("sha256:" + sha256Hex(b.body), d)
            }
        }
        XCTAssertEqual(tokens.refusedCount, 0)
    }

    func testWrongPasswordIsAnErrorNotAHang() throws {
        let tokens = try startTokenService(username: "puller", password: UUID().uuidString)
        let registry = try startRegistry(.token(realm: tokens.realm, service: tokens.service, issuer: tokens.issuer,
                                                rootCertBundle: tokens.certificatePath))
        let berth = try startBerth(upstream: registry.url, arguments: ["--upstream-user", "puller"],
                                   environment: ["BERTH_UPSTREAM_PASSWORD": "not-the-password"])
        let started = Date()
        let m = try get(berth, "/v2/test/tok/manifests/v1", headers: ["Accept: \(allManifestTypes)"], timeout: 25)
        XCTAssertEqual(m.exitCode, 0, "answered, not hung")
        XCTAssertTrue([401, 403].contains(m.status), "manifest: \(m.status) \(m.bodyText)")
        let b = try get(berth, "/v2/test/tok/blobs/sha256:" + String(repeating: "a", count: 64), timeout: 25)
        XCTAssertTrue([401, 403].contains(b.status), "blob: \(b.status) \(b.bodyText)")
        XCTAssertLessThan(Date().timeIntervalSince(started), 20)
        XCTAssertGreaterThan(tokens.refusedCount, 0, "the token service saw the bad credentials")
        XCTAssertEqual(tokens.issuedCount, 0)
    }
}
