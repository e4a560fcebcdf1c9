import Foundation
import XCTest
import HTTP1
import TestSupport

/// `peers:`: a node asks the blob's owner in the cluster before the upstream;
/// a peer's request is answered from the cache alone; a peer that fails costs
/// one bounded wait, then is skipped. (Three nodes behind HAProxy through a
/// ring change: HAProxyTests.)
final class PeersTests: IntegrationTestCase {
    private func peerFetches(_ port: UInt16) throws -> [String: Double] {
        let r = try Curl.request("http://127.0.0.1:\(port)/metrics", in: workDir)
        XCTAssertEqual(r.status, 200)
        return try PrometheusText.parse(r.bodyText).filter { $0.key.hasPrefix("berth_peer_fetches_total") }
    }

    private func blob(_ seed: Int, size: Int = 300_000) -> (digest: String, bytes: [UInt8], path: String) {
        let bytes = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* (seed * 2 + 1) &+ seed) }
        let digest = "sha256:" + sha256Hex(bytes)
        return (digest, bytes, "/v2/test/app/blobs/\(digest)")
    }

    func testAPeerRequestIsAnsweredFromTheCacheAlone() throws {
        let upstream = try startFakeUpstream()
        let (a, b) = (blob(1), blob(2))
        for x in [a, b] {
            upstream.route(x.path, FakeUpstream.serve(x.bytes, digest: x.digest))
            upstream.route("/v2/test/other/blobs/\(x.digest)", FakeUpstream.serve(x.bytes, digest: x.digest))
        }
        let berth = try startBerth(upstream: upstream.url)
        XCTAssertTrue(try get(berth, a.path).body == a.bytes)
        XCTAssertTrue(waitUntil(10) { berth.isCached(a.digest) })
        let peer = ["X-Berth-Peer: 1"]

        let hit = try get(berth, a.path, headers: peer)
        XCTAssertEqual(hit.status, 200)
        XCTAssertTrue(hit.body == a.bytes)

        // Not held: 404, and nothing asked upstream (the asking node fetches it itself).
        let miss = try get(berth, b.path, headers: peer)
        XCTAssertEqual(miss.status, 404)
        XCTAssertTrue(miss.bodyText.contains("BLOB_UNKNOWN") && miss.bodyText.contains("not cached on this node"), miss.bodyText)
        XCTAssertEqual(upstream.count(method: "GET", path: b.path) + upstream.count(method: "HEAD", path: b.path), 0)
        XCTAssertFalse(berth.isCached(b.digest))

        // Held for another repository: one upstream HEAD confirms this one may have it, as for any request.
        let other = "/v2/test/other/blobs/\(a.digest)"
        let checked = try get(berth, other, headers: peer)
        XCTAssertEqual(checked.status, 200)
        XCTAssertTrue(checked.body == a.bytes)
        XCTAssertEqual(upstream.count(method: "HEAD", path: other), 1)
        XCTAssertEqual(upstream.count(method: "GET", path: other), 0)
    }

    func testAMissIsFilledFromThePeerThatHoldsIt() throws {
        try checkFillFromPeer(seed: 3, htpasswd: false)
    }

    /// With `auth.htpasswd` the asking node passes its client's credentials on: the peer applies the same rules.
    func testAMissIsFilledFromThePeerWithTheClientsCredentials() throws {
        try checkFillFromPeer(seed: 6, htpasswd: true)
    }

    private func checkFillFromPeer(seed: Int, htpasswd: Bool) throws {
        let upstream = try startFakeUpstream()
        let a = blob(seed, size: 2_000_000)
        upstream.route(a.path, FakeUpstream.serve(a.bytes, digest: a.digest))
        let (p1, p2) = (freeLoopbackPort(), freeLoopbackPort())
        var env: [String: String?] = ["BERTH_PEERS": "127.0.0.1:\(p1),127.0.0.1:\(p2)"]
        var credentials: [String] = []
        if htpasswd {
            // alice:s3cret (see ClientAuthIntegrationTests).
            let file = "\(workDir!)/htpasswd"
            try "alice:$2b$05$abcdefghijklmnopqrstuuLK7U1u6pVRmL7L1BBM2aS35PSZnDXlK\n".write(toFile: file, atomically: true, encoding: .utf8)
            env["BERTH_AUTH_HTPASSWD"] = file
            credentials = ["Authorization: Basic " + Data("alice:s3cret".utf8).base64EncodedString()]
            XCTAssertEqual(try get(try startBerth(upstream: upstream.url, environment: env), a.path).status, 401, "credentials are required")
        }
        let holder = try startBerth(upstream: upstream.url, environment: env, port: p2)
        XCTAssertTrue(try get(holder, a.path, headers: credentials).body == a.bytes)
        XCTAssertTrue(waitUntil(10) { holder.isCached(a.digest) })
        XCTAssertEqual(upstream.count(method: "GET", path: a.path), 1)

        let metrics = freeLoopbackPort()
        let asker = try startBerth(upstream: upstream.url, arguments: ["--metrics-listen", "127.0.0.1:\(metrics)"], environment: env, port: p1)
        let r = try get(asker, a.path, headers: credentials)
        XCTAssertEqual(r.status, 200)
        XCTAssertTrue(r.body == a.bytes, "byte-exact from the peer")
        XCTAssertTrue(waitUntil(10) { asker.isCached(a.digest) }, "stored (verified) on the asking node too")
        XCTAssertEqual(upstream.count(method: "GET", path: a.path), 1, "the upstream was not asked again")
        XCTAssertTrue(asker.log.contains("blob \(a.digest): filled from peer 127.0.0.1:\(p2)"), asker.log.suffix(3000).description)
        XCTAssertTrue(asker.log.contains("peers: 127.0.0.1:\(p1) (127.0.0.1:\(p1)) (this node)"), "finds itself in the list")
        XCTAssertEqual(try peerFetches(metrics), [#"berth_peer_fetches_total{result="filled"}"#: 1, #"berth_peer_fetches_total{result="missing"}"#: 0,
                                                  #"berth_peer_fetches_total{result="failed"}"#: 0])
    }

    func testAPeerThatDoesNotAnswerIsSkippedAfterOneBoundedWait() throws {
        let upstream = try startFakeUpstream()
        let (a, b) = (blob(4), blob(5))
        for x in [a, b] { upstream.route(x.path, FakeUpstream.serve(x.bytes, digest: x.digest)) }
        // A peer that accepts and never answers.
        let hung = try startFakeUpstream()
        hung.routeEverythingElse { _ in }
        let (port, metrics) = (freeLoopbackPort(), freeLoopbackPort())
        let berth = try startBerth(upstream: upstream.url, arguments: ["--metrics-listen", "127.0.0.1:\(metrics)"],
                                   environment: ["BERTH_PEERS": "127.0.0.1:\(port),127.0.0.1:\(hung.port)"], port: port)

        let first = try get(berth, a.path, timeout: 30)
        XCTAssertEqual(first.status, 200)
        XCTAssertTrue(first.body == a.bytes, "served from the upstream after the peer's head timeout")
        XCTAssertEqual(hung.requestCount, 1)
        XCTAssertTrue(berth.log.contains("peer 127.0.0.1:\(hung.port)") && berth.log.contains("not asked for 10 s"), berth.log.suffix(3000).description)

        let second = try get(berth, b.path)
        XCTAssertTrue(second.body == b.bytes)
        XCTAssertEqual(hung.requestCount, 1, "the failed peer is not asked again meanwhile")
        XCTAssertEqual(upstream.count(method: "GET", path: a.path), 1)
        XCTAssertEqual(upstream.count(method: "GET", path: b.path), 1)
        XCTAssertEqual(try peerFetches(metrics)[#"berth_peer_fetches_total{result="failed"}"#], 1)
    }

    /// `peers:` is reloaded by SIGHUP: a node given its peers afterwards asks them.
    func testPeersAddedBySIGHUPAreAsked() throws {
        let upstream = try startFakeUpstream()
        let a = blob(7)
        upstream.route(a.path, FakeUpstream.serve(a.bytes, digest: a.digest))
        let (p1, p2) = (freeLoopbackPort(), freeLoopbackPort())
        let holder = try startBerth(upstream: upstream.url, port: p2)
        XCTAssertTrue(try get(holder, a.path).body == a.bytes)
        XCTAssertTrue(waitUntil(10) { holder.isCached(a.digest) })
        let config = "\(workDir!)/berth.yaml"
        try "peers: []\n".write(toFile: config, atomically: true, encoding: .utf8)
        let asker = try startBerth(upstream: upstream.url, arguments: ["--config", config], port: p1)
        try "peers: [\"127.0.0.1:\(p1)\", \"127.0.0.1:\(p2)\"]\n".write(toFile: config, atomically: true, encoding: .utf8)
        kill(try XCTUnwrap(asker.pid), SIGHUP)
        XCTAssertTrue(waitUntil(10) { asker.log.contains("SIGHUP: configuration reloaded") }, asker.log.suffix(2000).description)
        XCTAssertTrue(try get(asker, a.path).body == a.bytes)
        XCTAssertEqual(upstream.count(method: "GET", path: a.path), 1, "filled from the peer named by the reload")
    }

    /// A peer's bytes are verified like an upstream's: a peer serving other bytes under the
    /// digest fails that one transfer (never a complete wrong body), and is skipped for the retry.
    func testAPeerWhoseBytesDoNotVerifyIsSkippedForTheRetry() throws {
        let upstream = try startFakeUpstream()
        let a = blob(8)
        upstream.route(a.path, FakeUpstream.serve(a.bytes, digest: a.digest))
        let liar = try startFakeUpstream()
        var wrong = a.bytes
        wrong[wrong.count / 2] ^= 0xff
        liar.route(a.path, FakeUpstream.serve(wrong, digest: a.digest))
        let port = freeLoopbackPort()
        let berth = try startBerth(upstream: upstream.url, environment: ["BERTH_PEERS": "127.0.0.1:\(port),127.0.0.1:\(liar.port)"], port: port)

        let first = try get(berth, a.path)
        XCTAssertNotEqual(first.exitCode, 0, "the transfer breaks before its last byte (status \(first.status))")
        XCTAssertFalse(first.body == wrong, "never the whole wrong body")
        XCTAssertEqual(liar.requestCount, 1)
        XCTAssertTrue(waitUntil(10) { berth.log.contains("peer 127.0.0.1:\(liar.port) failed (its bytes were not kept") }, berth.log.suffix(3000).description)
        let second = try get(berth, a.path)
        XCTAssertEqual(second.status, 200)
        XCTAssertTrue(second.body == a.bytes, "from the upstream")
        XCTAssertEqual(liar.requestCount, 1, "the peer was skipped")
        XCTAssertEqual(upstream.count(method: "GET", path: a.path), 1)
    }

    /// A node listening on one address is only the member at that address: another node on the
    /// same port of another loopback address is a peer.
    func testANodeFindsItselfByItsListeningAddress() throws {
        let upstream = try startFakeUpstream()
        let port = freeLoopbackPort()
        let berth = try startBerth(upstream: upstream.url, environment: ["BERTH_PEERS": "127.0.0.1:\(port),127.0.0.2:\(port)"], port: port)
        XCTAssertTrue(waitUntil(10) { berth.log.contains("peers: ") }, berth.log)
        XCTAssertTrue(berth.log.contains("peers: 127.0.0.1:\(port) (127.0.0.1:\(port)) (this node), 127.0.0.2:\(port) (127.0.0.2:\(port))\n"), berth.log)
    }
}
