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

/// The circuit breaker: an upstream that hangs costs one timeout per window, not one per request.
final class CircuitBreakerTests: IntegrationTestCase {
    private let manifest = FakeUpstream.smallManifest
    private let path = "/v2/test/app/manifests/v1"

    /// A Berth (tag TTL 0, manifest timeout 1 s) whose upstream served `manifest` as test/app:v1, now cached.
    private func berthWithCachedTag(_ upstream: FakeUpstream) throws -> BerthProcess {
        upstream.route(path) { [manifest] w in w.respond(FakeUpstream.manifestHead(manifest), body: manifest) }
        let config = "\(workDir!)/berth.yaml"
        try "upstreams:\n  - name: hung.test\n    url: \"\(upstream.url)\"\n    manifest_timeout: 1s\n".write(toFile: config, atomically: true, encoding: .utf8)
        let berth = try startBerth(upstream: "", arguments: ["--config", config, "--tag-ttl", "0s"])
        XCTAssertEqual(try get(berth, path).body, manifest)
        // The tag is recorded off the loop: wait until Berth answers it from its cache (revalidated).
        XCTAssertTrue(waitUntil(10) { (try? self.get(berth, self.path))?.headers["cache-status"]?.contains("hit") == true })
        return berth
    }

    func testAHungUpstreamIsNotWaitedOnAgainWithinTheWindow() throws {
        let upstream = try startFakeUpstream()
        let berth = try berthWithCachedTag(upstream)
        let headsBefore = upstream.count(method: "HEAD", path: path)
        upstream.route(path) { _ in }          // from now on the upstream never answers
        upstream.route("/v2/test/app/manifests/v2") { _ in }

        let first = try get(berth, path)       // waits for the 1 s head timeout, then serves stale
        XCTAssertEqual(first.status, 200)
        XCTAssertEqual(first.body, manifest)
        XCTAssertTrue(first.headers["cache-status"]?.contains("stale") ?? false, "\(first.headers)")
        let asked = upstream.count(method: "HEAD", path: path)
        XCTAssertEqual(asked, headsBefore + 1, "one revalidation, which timed out")

        let second = try get(berth, path)      // within the window: stale at once, upstream not asked
        XCTAssertEqual(second.body, manifest)
        XCTAssertTrue(second.headers["cache-status"]?.contains("stale") ?? false)
        XCTAssertEqual(upstream.count(method: "HEAD", path: path), asked, "the breaker keeps requests off a hung upstream")

        let miss = try get(berth, "/v2/test/app/manifests/v2")  // nothing cached: 503 naming the upstream and why
        XCTAssertEqual(miss.status, 503)
        let text = String(decoding: miss.body, as: UTF8.self)
        XCTAssertTrue(text.contains("hung.test") && text.contains("timed out"), text)
        XCTAssertEqual(upstream.count(method: "GET", path: "/v2/test/app/manifests/v2"), 0)
    }

    func testA429StormIsWaitedOutServingTheCache() throws {
        let upstream = try startFakeUpstream()
        let berth = try berthWithCachedTag(upstream)
        let headsBefore = upstream.count(method: "HEAD", path: path)
        upstream.route(path, FakeUpstream.rateLimited(retryAfter: "30"))
        upstream.route("/v2/test/app/manifests/v2", FakeUpstream.rateLimited(retryAfter: "30"))

        for i in 0..<5 {  // the first meets the 429; the rest are not sent: stale every time
            let r = try get(berth, path)
            XCTAssertEqual(r.status, 200, "request \(i): \(r.bodyText)")
            XCTAssertEqual(r.body, manifest)
            XCTAssertTrue(r.headers["cache-status"]?.contains("stale") ?? false)
        }
        XCTAssertEqual(upstream.count(method: "HEAD", path: path), headsBefore + 1, "one request meets the 429; then Berth waits out Retry-After")

        let miss = try get(berth, "/v2/test/app/manifests/v2")
        XCTAssertEqual(miss.status, 429, miss.bodyText)
        XCTAssertTrue(miss.bodyText.contains("TOOMANYREQUESTS") && miss.bodyText.contains("hung.test"), miss.bodyText)
        let retryAfter = Int(miss.headers["retry-after"] ?? "") ?? 0
        XCTAssertTrue((1...34).contains(retryAfter), "Retry-After counts down from the upstream's 30 s (+ jitter): \(retryAfter)")
        XCTAssertEqual(upstream.count(method: "GET", path: "/v2/test/app/manifests/v2"), 0)
    }
}

/// Upstream 404s of tags are remembered briefly; digests never are.
final class NegativeCacheTests: IntegrationTestCase {
    func testATagTheUpstreamDoesNotHaveIsAskedForOncePerWindow() throws {
        let upstream = try startFakeUpstream()  // answers 404 for every manifest
        let berth = try startBerth(upstream: upstream.url)
        let tag = "/v2/test/app/manifests/nope"
        for _ in 0..<3 {
            let r = try get(berth, tag)
            XCTAssertEqual(r.status, 404)
            XCTAssertEqual((jsonObject(r.body)?["errors"] as? [[String: Any]])?.first?["code"] as? String, "MANIFEST_UNKNOWN")
        }
        XCTAssertEqual(upstream.count(method: "GET", path: tag), 1, "later requests within negative_ttl are answered without asking")

        let digest = "/v2/test/app/manifests/sha256:" + String(repeating: "ab", count: 32)
        for _ in 0..<2 { XCTAssertEqual(try get(berth, digest).status, 404) }
        XCTAssertEqual(upstream.count(method: "GET", path: digest), 2, "a digest is never remembered as missing")
    }
}

/// `max_requests` and a quota spent before any 429.
final class UpstreamLimitsIntegrationTests: IntegrationTestCase {
    func testNoMoreThanMaxRequestsReachTheUpstreamAtOnce() throws {
        let upstream = try startFakeUpstream()
        let lock = NSLock()
        var inFlight = 0, most = 0
        var blobs: [(path: String, bytes: [UInt8])] = []
        for i in 0..<3 {
            let bytes = (0..<50_000).map { UInt8(truncatingIfNeeded: $0 * (i + 3)) }
            let digest = "sha256:" + sha256Hex(bytes)
            let path = "/v2/test/app/blobs/\(digest)"
            blobs.append((path, bytes))
            // Half the body, then the rest 300 ms later: each answer takes a while.
            upstream.route(path) { w in
                lock.withLock { inFlight += 1; most = max(most, inFlight) }
                var head = ResponseHead(status: 200)
                head.headers.add("Docker-Content-Digest", digest)
                w.start(head, contentLength: UInt64(bytes.count))
                bytes[..<25_000].withUnsafeBytes { _ = w.write($0) }
                _ = w.loop.schedule(afterNanos: 300_000_000) {
                    lock.withLock { inFlight -= 1 }  // before the last byte: Berth cannot have started another yet
                    bytes[25_000...].withUnsafeBytes { _ = w.write($0) }
                    w.end()
                }
            }
        }
        let config = "\(workDir!)/berth.yaml"
        try "upstreams:\n  - name: slow.test\n    url: \"\(upstream.url)\"\n    max_requests: 1\n".write(toFile: config, atomically: true, encoding: .utf8)
        let berth = try startBerth(upstream: "", arguments: ["--config", config])

        var results: [Int: CurlResult] = [:]
        DispatchQueue.concurrentPerform(iterations: blobs.count) { i in
            let r = try? get(berth, blobs[i].path)
            lock.withLock { results[i] = r }
        }
        for (i, blob) in blobs.enumerated() {
            XCTAssertEqual(results[i]?.status, 200, "blob \(i)")
            XCTAssertEqual(results[i]?.body, blob.bytes, "blob \(i) arrives whole after waiting its turn")
        }
        XCTAssertEqual(lock.withLock { most }, 1, "the others waited for the slot")
        for blob in blobs { XCTAssertEqual(upstream.count(method: "GET", path: blob.path), 1) }
    }

    func testAnExpiredTagIsRevalidatedOnceHoweverManyAskMeanwhile() throws {
        let manifest = FakeUpstream.smallManifest
        let upstream = try startFakeUpstream()
        let path = "/v2/test/app/manifests/v1"
        let lock = NSLock()
        var holdHeads = false  // set for the burst below
        var answered = 0       // requests of the burst answered so far
        upstream.route(path) { w in
            let head = FakeUpstream.manifestHead(manifest)
            guard w.request.method == .head, lock.withLock({ holdHeads }) else { return w.respond(head, body: manifest) }
            // The burst's revalidation stays in flight until the 7 other requests
            // were answered (or 10 s pass): none of them may start a second one.
            let deadline = w.loop.now + 10_000_000_000
            func answerWhenOthersAreDone() {
                if lock.withLock({ answered }) >= 7 || w.loop.now >= deadline {
                    w.start(head, contentLength: UInt64(manifest.count))
                    return w.end()
                }
                _ = w.loop.schedule(afterNanos: 10_000_000) { answerWhenOthersAreDone() }
            }
            answerWhenOthersAreDone()
        }
        let berth = try startBerth(upstream: upstream.url, arguments: ["--tag-ttl", "0s"])
        XCTAssertEqual(try get(berth, path).body, manifest)
        // The tag is recorded off the loop: wait until it is answered from the cache (after one revalidation).
        XCTAssertTrue(waitUntil(10) { (try? self.get(berth, path))?.headers["cache-status"]?.contains("hit") == true })
        let headsBefore = upstream.count(method: "HEAD", path: path)
        lock.withLock { holdHeads = true }
        var statuses: [Int] = []
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            let r = try? get(berth, path)
            lock.withLock {
                statuses.append(r?.body == manifest ? r?.status ?? 0 : 0)
                answered += 1
            }
        }
        XCTAssertEqual(statuses, Array(repeating: 200, count: 8))
        XCTAssertEqual(upstream.count(method: "HEAD", path: path) - headsBefore, 1,
                       "one HEAD for 8 requests of an expired tag; the others were answered from the cache")
    }

    func testASpentQuotaIsWaitedOutBeforeA429() throws {
        let manifest = FakeUpstream.smallManifest
        let upstream = try startFakeUpstream()
        let path = "/v2/library/alpine/manifests/3.20"
        upstream.route(path) { w in
            var head = FakeUpstream.manifestHead(manifest)
            head.headers.add("ratelimit-limit", "100;w=21600")
            head.headers.add("ratelimit-remaining", "0;w=21600")   // Docker Hub: this was the last one
            w.respond(head, body: manifest)
        }
        let config = "\(workDir!)/berth.yaml"
        try "upstreams:\n  - name: hub.test\n    url: \"\(upstream.url)\"\n".write(toFile: config, atomically: true, encoding: .utf8)
        let berth = try startBerth(upstream: "", arguments: ["--config", config, "--tag-ttl", "0s"])

        let first = try get(berth, path)
        XCTAssertEqual(first.status, 200)
        XCTAssertEqual(first.body, manifest)
        let asked = upstream.requestCount
        XCTAssertTrue(waitUntil(10) { (try? self.get(berth, path))?.headers["cache-status"]?.contains("stale") == true },
                      "the tag is served stale: the upstream is not asked while the quota is spent")
        let miss = try get(berth, "/v2/library/alpine/manifests/3.21")
        XCTAssertEqual(miss.status, 429, miss.bodyText)
        XCTAssertTrue(miss.bodyText.contains("ratelimit-remaining: 0"), miss.bodyText)
        XCTAssertNotNil(miss.headers["retry-after"])
        XCTAssertEqual(upstream.requestCount, asked, "no request went out after the quota was spent")
    }
}

/// `proxy`: an upstream reached only through an HTTP proxy (Debian's tinyproxy), by CONNECT.
final class UpstreamProxyTests: IntegrationTestCase {
    func testPullsThroughTheProxy() throws {
        let registry = try startRegistry()
        let image = try builder.pushImage(to: registry, repository: "test/app", tag: "v1", layerSizes: [300_000, 20_000])
        let proxy = try startProxy()
        let berth = try startBerth(upstream: registry.url, arguments: ["--upstream-proxy", proxy.url])
        assertLayout(try pull(berth, "test/app:v1"), image: image)
        XCTAssertGreaterThan(proxy.connects(to: registry.hostPort), 0, "every upstream connection went through the proxy: \(proxy.log.suffix(1500))")
    }
}
