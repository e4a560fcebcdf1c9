import Foundation
import XCTest
import TestSupport

/// `log.access` (`--log-access FILE`) and `X-Request-Id` against Debian's
/// Distribution: one JSON line per request with the cache status Berth sent,
/// ids echoed or replaced, no credential ever written.
final class AccessLogTests: IntegrationTestCase {
    private var accessLogPath: String { "\(workDir!)/access.log" }

    /// The access log's lines, parsed (a line that is not a JSON object fails the test).
    private func accessLines(file: StaticString = #filePath, line: UInt = #line) -> [[String: Any]] {
        let text = (try? String(contentsOfFile: accessLogPath, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { l in
            let object = try? JSONSerialization.jsonObject(with: Data(l.utf8)) as? [String: Any]
            if object == nil { XCTFail("not a JSON object: \(l)", file: file, line: line) }
            return object
        }
    }

    /// Waits (bounded) until the log holds a line for each of `ids`, then returns every line.
    private func waitForLines(ids: [String], file: StaticString = #filePath, line: UInt = #line) -> [[String: Any]] {
        let done = waitUntil(10) { Set(accessLines().compactMap { $0["request_id"] as? String }).isSuperset(of: ids) }
        XCTAssertTrue(done, "access log lacks some of \(ids)", file: file, line: line)
        return accessLines(file: file, line: line)
    }

    private func line(_ lines: [[String: Any]], id: String) -> [String: Any]? {
        let found = lines.filter { $0["request_id"] as? String == id }
        XCTAssertEqual(found.count, 1, "one line for request \(id)")
        return found.first
    }

    func testColdThenWarmPullLogOneLinePerRequestWithTheCacheStatusSent() throws {
        let registry = try startRegistry()
        let image = try builder.pushImage(to: registry, repository: "test/app", tag: "v1", layerSizes: [300_000, 100_000])
        // Prefetch off: with it, the blobs would be cached (hits) before skopeo asks for them.
        let berth = try startBerth(upstream: registry.url, arguments: ["--log-access", accessLogPath], environment: ["BERTH_UPSTREAM_PREFETCH": "false"])

        // skopeo: a cold pull, then a warm one; every line is JSON with the fields.
        assertLayout(try pull(berth, "test/app:v1"), image: image)
        XCTAssertTrue(waitUntil(10) { self.accessLines().filter { ($0["path"] as? String)?.contains("/blobs/") == true }.count == image.blobs.count })
        let cold = accessLines()
        assertLayout(try pull(berth, "test/app:v1"), image: image)
        XCTAssertTrue(waitUntil(10) { self.accessLines().filter { ($0["path"] as? String)?.contains("/blobs/") == true }.count == 2 * image.blobs.count })
        let all = accessLines()
        let warm = Array(all[cold.count...])
        for l in all {
            for key in ["time", "request_id", "client", "method", "path", "status", "bytes", "duration_ms"] {
                XCTAssertNotNil(l[key], "\(key) missing: \(l)")
            }
            XCTAssertNotNil((l["time"] as? String)?.range(of: #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"#, options: .regularExpression), "\(l)")
            XCTAssertTrue((l["client"] as? String)?.hasPrefix("127.0.0.1:") == true, "\(l)")
            // /healthz (the harness's readiness probe) needs no user; /v2/ requests have one.
            XCTAssertEqual(l["user"] as? String, (l["path"] as? String)?.hasPrefix("/v2/") == true ? "anonymous" : nil, "\(l)")
        }
        XCTAssertEqual(Set(all.compactMap { $0["request_id"] as? String }).count, all.count, "every request has its own id")
        func blobLines(_ lines: [[String: Any]]) -> [[String: Any]] { lines.filter { ($0["path"] as? String)?.contains("/blobs/") == true } }
        for l in blobLines(cold) {
            XCTAssertEqual(l["cache_status"] as? String, "fwd=miss; stored", "\(l)")
            XCTAssertNotNil(l["upstream_ms"], "a cold blob waited on the upstream: \(l)")
            XCTAssertEqual(l["upstream"] as? String, registry.hostPort)
            XCTAssertEqual(l["repository"] as? String, "test/app")
            XCTAssertTrue(image.blobs.contains(l["reference"] as? String ?? ""), "\(l)")
        }
        for l in blobLines(warm) {
            XCTAssertEqual(l["cache_status"] as? String, "hit", "\(l)")
            XCTAssertNil(l["upstream_ms"], "a hit waits on nothing: \(l)")
            XCTAssertEqual(l["status"] as? Int, 200)
        }

        // curl, one request at a time: exactly one line each, bytes as sent.
        let manifestByTag = try get(berth, "/v2/test/app/manifests/v1", headers: ["X-Request-Id: warm-tag"])
        let blob = try get(berth, "/v2/test/app/blobs/\(image.blobs[1])", headers: ["X-Request-Id: warm-blob"])
        let missing = try get(berth, "/v2/test/app/manifests/nope", headers: ["X-Request-Id: cold-404"])
        XCTAssertEqual(missing.status, 404)
        let lines = waitForLines(ids: ["warm-tag", "warm-blob", "cold-404"])
        let tag = try XCTUnwrap(line(lines, id: "warm-tag"))
        XCTAssertEqual(tag["cache_status"] as? String, "hit")
        XCTAssertEqual(tag["reference"] as? String, "v1")
        XCTAssertEqual(tag["bytes"] as? Int, manifestByTag.body.count)
        XCTAssertEqual(tag["path"] as? String, "/v2/test/app/manifests/v1")
        let b = try XCTUnwrap(line(lines, id: "warm-blob"))
        XCTAssertEqual(b["bytes"] as? Int, blob.body.count)
        XCTAssertEqual(b["reference"] as? String, image.blobs[1])
        let nf = try XCTUnwrap(line(lines, id: "cold-404"))
        XCTAssertEqual(nf["status"] as? Int, 404)
        XCTAssertEqual(nf["error"] as? String, "MANIFEST_UNKNOWN")
        XCTAssertNotNil(nf["error_message"])
        XCTAssertNotNil(nf["upstream_ms"], "the 404 came from the upstream")
        XCTAssertTrue(berth.log.contains("request_id=cold-404 GET /v2/test/app/manifests/nope: "), "the human log names the request")
    }

    /// `upstream_ms` is the time spent waiting on the upstream: a 300 ms upstream shows in it;
    /// a hit has none.
    func testUpstreamWaitIsMeasured() throws {
        let manifest = FakeUpstream.smallManifest
        let upstream = try startFakeUpstream()
        let path = "/v2/test/slow/manifests/v1"
        upstream.route(path) { w in
            _ = w.loop.schedule(afterNanos: 300_000_000) { w.respond(FakeUpstream.manifestHead(manifest), body: manifest) }
        }
        let berth = try startBerth(upstream: upstream.url, arguments: ["--log-access", accessLogPath])
        XCTAssertEqual(try get(berth, path, headers: ["X-Request-Id: slow-cold"]).body, manifest)
        // The tag is recorded off the loop: wait until it is answered from the cache.
        XCTAssertTrue(waitUntil(10) { (try? self.get(berth, path, headers: ["X-Request-Id: slow-warm"]))?.headers["cache-status"] == "Berth; hit" })
        func isWarmHit(_ l: [String: Any]) -> Bool { l["request_id"] as? String == "slow-warm" && l["cache_status"] as? String == "hit" }
        XCTAssertTrue(waitUntil(10) { self.accessLines().contains(where: isWarmHit) })
        let lines = waitForLines(ids: ["slow-cold"])
        let cold = try XCTUnwrap(line(lines, id: "slow-cold"))
        let waited = try XCTUnwrap(cold["upstream_ms"] as? Double, "\(cold)")
        XCTAssertGreaterThanOrEqual(waited, 300, "\(cold)")
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(cold["duration_ms"] as? Double), waited, "\(cold)")
        XCTAssertEqual(cold["cache_status"] as? String, "fwd=miss; stored")
        let warm = try XCTUnwrap(lines.last(where: isWarmHit))
        XCTAssertNil(warm["upstream_ms"], "\(warm)")
    }

    func testRequestIDsAreEchoedOrReplaced() throws {
        let registry = try startRegistry()
        let berth = try startBerth(upstream: registry.url, arguments: ["--log-access", accessLogPath])
        let sent = try get(berth, "/v2/", headers: ["X-Request-Id: lb.7f3a_01-x"])
        XCTAssertEqual(sent.headers["x-request-id"], "lb.7f3a_01-x")
        var replaced: [String] = []
        for bad in ["two words", String(repeating: "a", count: 65), "quote\"d", "semi;colon"] {
            let r = try get(berth, "/v2/", headers: ["X-Request-Id: \(bad)"])
            let id = try XCTUnwrap(r.headers["x-request-id"], "every response carries an id")
            XCTAssertNotEqual(id, bad)
            XCTAssertNotNil(id.range(of: #"^[0-9a-f]+-[0-9a-f]+$"#, options: .regularExpression), id)
            replaced.append(id)
        }
        let none = try XCTUnwrap(try get(berth, "/v2/").headers["x-request-id"])
        XCTAssertEqual(Set(replaced + [none]).count, 5, "fresh ids differ")
        let lines = waitForLines(ids: ["lb.7f3a_01-x", none] + replaced)
        XCTAssertEqual(lines.filter { $0["path"] as? String == "/v2/" }.count, 6, "one line per request")
        XCTAssertEqual(line(lines, id: "lb.7f3a_01-x")?["path"] as? String, "/v2/")
    }

    func testNoCredentialOrTokenIsEverLogged() throws {
        // A token-auth upstream (Berth holds a password and bearer tokens) and
        // htpasswd client auth (clients send Basic credentials).
        let (registry, tokens, password) = try startTokenAuthRegistry(username: "puller")
        let push = "Bearer " + tokens.makeToken(subject: "test", scopes: ["repository:test/tok:pull,push"])
        let image = try builder.pushImage(to: registry, repository: "test/tok", tag: "v1", layerSizes: [100_000],
                                          credentials: "puller:\(password)", authorization: push)
        let htpasswd = "\(workDir!)/htpasswd"
        // alice:s3cret (see ClientAuthIntegrationTests).
        try "alice:$2b$05$abcdefghijklmnopqrstuuLK7U1u6pVRmL7L1BBM2aS35PSZnDXlK\n".write(toFile: htpasswd, atomically: true, encoding: .utf8)
        let berth = try startBerth(upstream: registry.url, arguments: ["--upstream-user", "puller", "--auth-htpasswd", htpasswd,
                                                                       "--log-access", accessLogPath],
                                   environment: ["BERTH_UPSTREAM_PASSWORD": password])
        let out = "\(workDir!)/pulled"
        try Skopeo.copy("docker://\(berth.hostPort)/test/tok:v1", "dir:\(out)", extra: ["--src-tls-verify=false", "--src-creds", "alice:s3cret"], in: workDir)
        assertLayout(out, image: image)
        let basic = "Basic " + Data("alice:s3cret".utf8).base64EncodedString()
        let r = try get(berth, "/v2/test/tok/manifests/v1?ns=\(registry.hostPort)&token=hunter2",
                        headers: ["Authorization: \(basic)", "X-Request-Id: with-creds"])
        XCTAssertEqual(r.status, 200, r.bodyText)
        let wrong = try get(berth, "/v2/test/tok/manifests/v1", headers: ["Authorization: Basic " + Data("alice:wrong-pass".utf8).base64EncodedString(),
                                                                          "X-Request-Id: wrong-creds"])
        XCTAssertEqual(wrong.status, 401)
        let lines = waitForLines(ids: ["with-creds", "wrong-creds"])
        XCTAssertEqual(line(lines, id: "with-creds")?["user"] as? String, "alice")
        XCTAssertEqual(line(lines, id: "with-creds")?["path"] as? String, "/v2/test/tok/manifests/v1?ns=\(registry.hostPort)&redacted")
        XCTAssertNil(line(lines, id: "wrong-creds")?["user"], "a refused user is not named")
        let text = try String(contentsOfFile: accessLogPath, encoding: .utf8)
        for secret in [password, "s3cret", "wrong-pass", "hunter2", Data("alice:s3cret".utf8).base64EncodedString(), "Bearer", "Basic ", "eyJ",
                       "uthorization"] {
            XCTAssertFalse(text.contains(secret), "the access log holds \(secret)")
            XCTAssertFalse(berth.log.contains(secret), "the log holds \(secret)")
        }
    }
}
