import Foundation
import HTTP1
import XCTest
import TestSupport

/// `berth bench` (the built binary) against Debian's docker-registry, plain and
/// with token auth, and against a `berth serve` in front of it; the in-process
/// fault upstream only to serve a corrupted body.
final class BenchCommandTests: IntegrationTestCase {
    struct Run {
        let status: Int32
        let json: [String: Any]
        let stderr: String
        var passes: [[String: Any]] { json["passes"] as? [[String: Any]] ?? [] }
    }

    func bench(_ arguments: [String], environment: [String: String?] = [:], timeout: Double = 120) throws -> Run {
        let binary = try XCTUnwrap(BerthProcess.binaryPath)
        let r = try Subprocess.run([binary, "bench", "--json"] + arguments, in: workDir, environmentOverrides: environment,
                                   timeout: timeout, check: false)
        let json = (try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8))) as? [String: Any] ?? [:]
        return Run(status: r.status, json: json, stderr: r.stderr + r.stdout)
    }

    /// Request count and bytes of `kind` in a pass.
    func requests(_ pass: [String: Any], _ kind: String) -> (count: Int, bytes: Int, byStatus: [String: Int]) {
        let k = (pass["requests"] as? [String: Any])?[kind] as? [String: Any] ?? [:]
        return (k["count"] as? Int ?? 0, k["bytes"] as? Int ?? 0, k["byStatus"] as? [String: Int] ?? [:])
    }

    /// Config and layer sizes from the manifest.
    func blobSizes(_ image: PushedImage) throws -> (config: Int, layers: [Int]) {
        let m = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(image.manifest)) as? [String: Any])
        let config = try XCTUnwrap((m["config"] as? [String: Any])?["size"] as? Int)
        let layers = try XCTUnwrap(m["layers"] as? [[String: Any]]).compactMap { $0["size"] as? Int }
        return (config, layers)
    }

    func testCountsAndBytesDirectAndThroughBerthInterleaved() throws {
        let registry = try startRegistry()
        let image = try builder.pushImage(to: registry, repository: "bench/app", tag: "v1", layerSizes: [300_000, 200_000, 100_000, 50_000])
        let sizes = try blobSizes(image)
        let berth = try startBerth(upstream: registry.url)
        let r = try bench(["--pullers", "2", "--rounds", "2", "--verify", registry.url, "bench/app:v1", "--compare", berth.url])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.passes.count, 4, "2 rounds × 2 endpoints")
        XCTAssertEqual(r.passes.map { $0["endpoint"] as? String }, [registry.url, berth.url, registry.url, berth.url], "interleaved A B A B")
        let imageBytes = image.manifest.count + sizes.config + sizes.layers.reduce(0, +)
        for pass in r.passes {
            XCTAssertEqual(pass["completed"] as? Int, 2)
            XCTAssertEqual(pass["failures"] as? Int, 0)
            XCTAssertEqual(requests(pass, "head").count, 2)
            XCTAssertEqual(requests(pass, "head").bytes, 0)
            XCTAssertEqual(requests(pass, "manifest").count, 2)
            XCTAssertEqual(requests(pass, "manifest").bytes, 2 * image.manifest.count)
            XCTAssertEqual(requests(pass, "index").count, 0)
            XCTAssertEqual(requests(pass, "config").count, 2)
            XCTAssertEqual(requests(pass, "config").bytes, 2 * sizes.config)
            XCTAssertEqual(requests(pass, "layer").count, 8)
            XCTAssertEqual(requests(pass, "layer").byStatus, ["200": 8])
            XCTAssertEqual(pass["bytes"] as? Int, 2 * imageBytes, "bytes equal the image's sizes")
            let pulled = try XCTUnwrap(pass["pulled"] as? [String: Any])
            XCTAssertEqual(pulled["count"] as? Int, 2)
            XCTAssertGreaterThan(pulled["p50"] as? Double ?? 0, 0)
        }
        let comparison = try XCTUnwrap(r.json["comparison"] as? [[String: Any]])
        XCTAssertEqual(comparison.map { $0["endpoint"] as? String }, [registry.url, berth.url])
        XCTAssertEqual(comparison.first?["ratio"] as? Double, 1)
        // Through Berth: the image reached the upstream once, blobs by GET once each.
        XCTAssertEqual(registry.count(method: "GET", pathContains: "/blobs/"), 2 * 2 * 5 + 5, "direct pulls, plus Berth's single fill")
    }

    func testIndexPullsThePlatformManifest() throws {
        let registry = try startRegistry()
        let index = try builder.pushIndex(to: registry, repository: "bench/multi", tag: "v2")
        for (platform, child) in [("linux/amd64", index.children[0]), ("linux/arm64", index.children[1])] {
            let r = try bench(["--verify", "--platform", platform, registry.url, "bench/multi:v2"])
            XCTAssertEqual(r.status, 0, r.stderr)
            let pass = try XCTUnwrap(r.passes.first)
            XCTAssertEqual(requests(pass, "index").count, 1)
            XCTAssertEqual(requests(pass, "index").bytes, index.index.count)
            XCTAssertEqual(requests(pass, "manifest").bytes, child.manifest.count, platform)
            XCTAssertEqual(requests(pass, "config").count + requests(pass, "layer").count, child.blobs.count)
            let sizes = try blobSizes(child)
            XCTAssertEqual(requests(pass, "layer").bytes, sizes.layers.reduce(0, +), platform)
        }
        let none = try bench(["--platform", "windows/amd64", registry.url, "bench/multi:v2"])
        XCTAssertEqual(none.status, 1)
        XCTAssertTrue(none.stderr.contains("no windows/amd64 manifest"), none.stderr)
    }

    func testTokenAuthRegistryWithUserAndPasswordFromEnvironment() throws {
        let password = UUID().uuidString
        let tokens = try startTokenService(username: "puller", password: password)
        let registry = try startRegistry(.token(realm: tokens.realm, service: tokens.service, issuer: tokens.issuer,
                                                rootCertBundle: tokens.certificatePath))
        let push = "Bearer " + tokens.makeToken(subject: "pusher", scopes: ["repository:bench/tok:pull,push"])
        let image = try builder.pushImage(to: registry, repository: "bench/tok", tag: "v1", layerSizes: [100_000, 80_000],
                                          credentials: "puller:\(password)", authorization: push)
        let sizes = try blobSizes(image)
        let before = tokens.issuedCount
        let r = try bench(["--user", "puller", "--pullers", "3", "--verify", registry.url, "bench/tok:v1"],
                          environment: ["BERTH_BENCH_PASSWORD": password])
        XCTAssertEqual(r.status, 0, r.stderr)
        let pass = try XCTUnwrap(r.passes.first)
        XCTAssertEqual(requests(pass, "layer").count, 6)
        XCTAssertEqual(pass["bytes"] as? Int, 3 * (image.manifest.count + sizes.config + sizes.layers.reduce(0, +)))
        XCTAssertEqual(tokens.issuedCount - before, 1, "one token for the scope, shared by the pullers")

        let wrong = try bench(["--user", "puller", registry.url, "bench/tok:v1"], environment: ["BERTH_BENCH_PASSWORD": "nope"])
        XCTAssertEqual(wrong.status, 1, wrong.stderr)
        XCTAssertGreaterThan(wrong.json["failures"] as? Int ?? 0, 0)
    }

    func testBasicAuthWithPasswordFileAgainstBerthHtpasswd() throws {
        let registry = try startRegistry()
        _ = try builder.pushImage(to: registry, repository: "bench/app", tag: "v1", layerSizes: [60_000, 40_000])
        let htpasswd = "\(workDir!)/htpasswd"
        // alice:s3cret, bcrypt cost 5 (as ClientAuthIntegrationTests).
        try "alice:$2b$05$abcdefghijklmnopqrstuuLK7U1u6pVRmL7L1BBM2aS35PSZnDXlK\n".write(toFile: htpasswd, atomically: true, encoding: .utf8)
        let berth = try startBerth(upstream: registry.url, arguments: ["--auth-htpasswd", htpasswd])
        let passwordFile = "\(workDir!)/password"
        try "s3cret\n".write(toFile: passwordFile, atomically: true, encoding: .utf8)
        let r = try bench(["--user", "alice", "--password-file", passwordFile, "--verify", berth.url, "bench/app:v1"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(requests(try XCTUnwrap(r.passes.first), "layer").byStatus, ["200": 2])
        let anonymous = try bench([berth.url, "bench/app:v1"])
        XCTAssertEqual(anonymous.status, 1)
        XCTAssertEqual(requests(try XCTUnwrap(anonymous.passes.first), "head").byStatus, ["401": 1])
    }

    func testMissingImageExitsOneAndReportsThe404() throws {
        let registry = try startRegistry()
        _ = try builder.pushImage(to: registry, repository: "bench/app", tag: "v1", layerSizes: [10_000])
        let r = try bench([registry.url, "bench/app:nope"])
        XCTAssertEqual(r.status, 1, r.stderr)
        let pass = try XCTUnwrap(r.passes.first)
        XCTAssertEqual(requests(pass, "head").byStatus, ["404": 1])
        XCTAssertEqual(requests(pass, "layer").count, 0, "a failed resolve stops the pull")
        XCTAssertEqual(pass["completed"] as? Int, 0)
        XCTAssertEqual(r.json["failures"] as? Int, 1)
    }

    func testVerifyCatchesACorruptedBody() throws {
        let fake = try startFakeUpstream()
        let config = Array(#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.utf8)
        let layer = (0..<50_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        var corrupted = layer
        corrupted[25_000] ^= 0xff
        let configDigest = "sha256:" + sha256Hex(config)
        let layerDigest = "sha256:" + sha256Hex(layer)
        let manifest = Array("""
        {"schemaVersion":2,"mediaType":"\(ImageBuilder.dockerManifest)",\
        "config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":\(config.count),"digest":"\(configDigest)"},\
        "layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":\(layer.count),"digest":"\(layerDigest)"}]}
        """.utf8)
        let manifestDigest = "sha256:" + sha256Hex(manifest)
        let serveManifest: FakeUpstream.Route = { w in
            var head = ResponseHead(status: 200)
            head.headers.add("Content-Type", ImageBuilder.dockerManifest)
            head.headers.add("Docker-Content-Digest", manifestDigest)
            w.respond(head, body: manifest)
        }
        fake.route("/v2/fault/img/manifests/v1", serveManifest)
        fake.route("/v2/fault/img/manifests/\(manifestDigest)", serveManifest)
        fake.route("/v2/fault/img/blobs/\(configDigest)", FakeUpstream.serve(config, digest: configDigest))
        fake.route("/v2/fault/img/blobs/\(layerDigest)", FakeUpstream.serve(corrupted, digest: layerDigest))

        let unverified = try bench([fake.url, "fault/img:v1"])
        XCTAssertEqual(unverified.status, 0, "same length, not hashed: \(unverified.stderr)")
        let verified = try bench(["--verify", fake.url, "fault/img:v1"])
        XCTAssertEqual(verified.status, 1, verified.stderr)
        let pass = try XCTUnwrap(verified.passes.first)
        let layers = try XCTUnwrap((pass["requests"] as? [String: Any])?["layer"] as? [String: Any])
        XCTAssertEqual(layers["mismatches"] as? Int, 1)
        XCTAssertEqual(((pass["requests"] as? [String: Any])?["config"] as? [String: Any])?["mismatches"] as? Int, 0)
        XCTAssertEqual(verified.json["failures"] as? Int, 1)
    }

    func testFailingColdCommandStopsTheBench() throws {
        let registry = try startRegistry()
        _ = try builder.pushImage(to: registry, repository: "bench/app", tag: "v1", layerSizes: [10_000])
        let marker = workDir + "/cold-ran"
        let ok = try bench(["--rounds", "2", "--cold-cmd", "echo \"$BERTH_BENCH_ENDPOINT\" >> \(marker)", registry.url, "bench/app:v1"])
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertEqual(ok.passes.map { $0["phase"] as? String }, ["cold", "warm", "cold", "warm"])
        XCTAssertEqual(try String(contentsOfFile: marker, encoding: .utf8), "\(registry.url)\n\(registry.url)\n")
        let failed = try bench(["--cold-cmd", "exit 3", registry.url, "bench/app:v1"])
        XCTAssertEqual(failed.status, 1)
        XCTAssertTrue(failed.stderr.contains("--cold-cmd exited 3"), failed.stderr)
        XCTAssertTrue(failed.passes.isEmpty)
    }
}
