import Foundation
import XCTest
import HTTP1
import TestSupport

/// Issue 9's "Done when", as one test: one Berth process mirrors a plain and a
/// token-auth Distribution for skopeo, podman and containerd at the same time,
/// with client auth, using `berth client-config` output as printed; then keeps
/// serving what it cached through an outage of one upstream and a 429 storm
/// from another.
final class ManyRegistriesTests: IntegrationTestCase {
    // alice:s3cret, bcrypt cost 5 (see MirrorTests/ClientAuthTests).
    private let htpasswd = "alice:$2b$05$abcdefghijklmnopqrstuuLK7U1u6pVRmL7L1BBM2aS35PSZnDXlK\n"

    func testThreeClientsTwoRegistriesClientAuthOutageAndRateLimit() throws {
        for tool in ["podman", "containerd", "ctr", "skopeo"] where Subprocess.resolve(tool) == nil {
            throw XCTSkip("\(tool) is not installed (scripts/deps.sh TEST_PACKAGES)")
        }
        let plain = try startRegistry()
        let imageA = try builder.pushImage(to: plain, repository: "team/web", tag: "v1", layerSizes: [300_000, 50_000])
        let password = UUID().uuidString
        let tokens = try startTokenService(username: "puller", password: password)
        let guarded = try startRegistry(.token(realm: tokens.realm, service: tokens.service, issuer: tokens.issuer,
                                               rootCertBundle: tokens.certificatePath))
        let push = "Bearer " + tokens.makeToken(subject: "pusher", scopes: ["repository:team/api:pull,push"])
        let imageB = try builder.pushImage(to: guarded, repository: "team/api", tag: "v1", layerSizes: [400_000, 20_000],
                                           tarLayers: true, credentials: "puller:\(password)", authorization: push)
        let limited = try startFakeUpstream()
        let manifest = FakeUpstream.smallManifest
        let limitedPath = "/v2/tool/manifests/v1"
        limited.route(limitedPath) { w in w.respond(FakeUpstream.manifestHead(manifest), body: manifest) }

        let dir = workDir!
        try htpasswd.write(toFile: "\(dir)/htpasswd", atomically: true, encoding: .utf8)
        try password.write(toFile: "\(dir)/upstream-password", atomically: true, encoding: .utf8)
        let configPath = "\(dir)/berth.yaml"
        try """
            upstreams:
              - name: "\(plain.hostPort)"
                prefix: a
                url: "\(plain.url)"
                default: true
              - name: "\(guarded.hostPort)"
                prefix: b
                url: "\(guarded.url)"
                username: puller
                password_file: \(dir)/upstream-password
              - name: limited.test
                prefix: c
                url: "\(limited.url)"
            auth:
              htpasswd: \(dir)/htpasswd
            cache:
              tag_ttl: 0s
            """.write(toFile: configPath, atomically: true, encoding: .utf8)
        let berth = try startBerth(upstream: "", arguments: ["--config", configPath])

        // Client configuration exactly as printed.
        let registriesConf = "\(dir)/registries.conf"
        try clientConfig("podman", config: configPath, endpoint: berth).write(toFile: registriesConf, atomically: true, encoding: .utf8)
        let authFile = "\(dir)/auth.json"
        try #"{"auths": {"\#(berth.hostPort)": {"auth": "\#(Data("alice:s3cret".utf8).base64EncodedString())"}}}"#
            .write(toFile: authFile, atomically: true, encoding: .utf8)
        let hostsDir = "\(dir)/certs.d"
        let hosts = try writeHostsFiles(try clientConfig("containerd", config: configPath, endpoint: berth), under: hostsDir)
        XCTAssertTrue(hosts.isSuperset(of: [plain.hostPort, guarded.hostPort]), "\(hosts)")
        let ctr = try startContainerd()

        // All three clients at once: skopeo by path prefix, podman through its mirror, ctr by ns=.
        let lock = NSLock()
        var outcomes: [String: String] = [:]
        func record(_ client: String, _ body: () throws -> String) {
            let result: String
            do { result = try body() } catch { result = "error: \(error)" }
            lock.withLock { outcomes[client] = result }
        }
        DispatchQueue.concurrentPerform(iterations: 3) { i in
            switch i {
            case 0:
                record("skopeo") {
                    let out = "\(dir)/skopeo-a"
                    try Skopeo.copy("docker://\(berth.hostPort)/a/team/web:v1", "dir:\(out)",
                                    extra: ["--src-tls-verify=false", "--src-creds", "alice:s3cret"], in: dir)
                    return out
                }
            case 1:
                record("podman") { try self.podmanPull("\(guarded.hostPort)/team/api:v1", registriesConf: registriesConf, authFile: authFile) }
            default:
                record("ctr") {
                    var listed = ""
                    for reference in ["\(plain.hostPort)/team/web:v1", "\(guarded.hostPort)/team/api:v1"] {
                        let fetch = try Subprocess.run(ctr + ["content", "fetch", "--user", "alice:s3cret", "--hosts-dir", hostsDir, reference],
                                                       in: dir, timeout: 120, check: false)
                        guard fetch.status == 0 else { return "ctr failed: \(fetch.stdout) \(fetch.stderr)" }
                        listed += try Subprocess.run(ctr + ["content", "ls", "-q"], in: dir, timeout: 30).stdout
                    }
                    return listed
                }
            }
        }
        assertLayout(outcomes["skopeo"] ?? "", image: imageA)
        XCTAssertEqual(outcomes["podman"], imageB.digest)
        for d in [imageA.digest, imageB.digest] + imageA.blobs + imageB.blobs {
            XCTAssertTrue(outcomes["ctr"]?.contains(d) ?? false, "containerd holds \(d): \(outcomes["ctr"] ?? "")")
        }
        for d in imageA.blobs + imageB.blobs { XCTAssertTrue(berth.isCached(d), "\(d) came through Berth") }
        plain.settle(); guarded.settle()
        for d in imageA.blobs { XCTAssertEqual(plain.count(method: "GET", pathContains: "/blobs/\(d)"), 1, "one upstream GET of \(d) for three clients") }
        for d in imageB.blobs { XCTAssertEqual(guarded.count(method: "GET", pathContains: "/blobs/\(d)"), 1, "one upstream GET of \(d)") }
        XCTAssertGreaterThan(tokens.issuedCount, 0, "Berth authenticated to the token-auth upstream")
        XCTAssertEqual(try get(berth, "/v2/a/team/web/manifests/v1").status, 401, "no credentials, no content")

        // An outage of the plain upstream: its image still pulls, stale, by tag.
        plain.stop()
        let stale = "\(dir)/skopeo-a-stale"
        try Skopeo.copy("docker://\(berth.hostPort)/a/team/web:v1", "dir:\(stale)",
                        extra: ["--src-tls-verify=false", "--src-creds", "alice:s3cret"], in: dir)
        assertLayout(stale, image: imageA)

        // A 429 storm from the third: what is cached keeps coming, the upstream is asked once.
        let basic = ["Authorization: Basic " + Data("alice:s3cret".utf8).base64EncodedString()]
        XCTAssertEqual(try get(berth, "/v2/c/tool/manifests/v1", headers: basic).body, manifest)
        XCTAssertTrue(waitUntil(10) { (try? self.get(berth, "/v2/c/tool/manifests/v1", headers: basic))?.headers["cache-status"]?.contains("hit") == true })
        limited.route(limitedPath, FakeUpstream.rateLimited(retryAfter: "30"))
        let asked = limited.requestCount
        for i in 0..<5 {
            let r = try get(berth, "/v2/c/tool/manifests/v1", headers: basic)
            XCTAssertEqual(r.status, 200, "request \(i) in the storm: \(r.bodyText)")
            XCTAssertEqual(r.body, manifest)
        }
        XCTAssertEqual(limited.requestCount, asked + 1, "one request met the 429; the rest were served without asking")
        // The token-auth upstream was never disturbed by either.
        XCTAssertEqual(try podmanPull("\(guarded.hostPort)/team/api:v1", registriesConf: registriesConf, authFile: authFile), imageB.digest)
    }
}
