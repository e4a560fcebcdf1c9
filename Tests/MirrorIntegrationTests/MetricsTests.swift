import Foundation
import XCTest
import TestSupport

/// `metrics.listen` against Debian's Distribution: what an operator reads off
/// `/metrics` across a cold and a warm skopeo pull (hit ratio, bytes the cache
/// saved, upstream latency and health, cache usage), parsed by a strict
/// Prometheus text reader; and a failed pull traced by its request id.
final class MetricsTests: IntegrationTestCase {
    private func scrape(_ port: UInt16, file: StaticString = #filePath, line: UInt = #line) throws -> [String: Double] {
        let r = try Curl.request("http://127.0.0.1:\(port)/metrics", in: workDir)
        XCTAssertEqual(r.status, 200, file: file, line: line)
        XCTAssertEqual(r.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8", file: file, line: line)
        return try PrometheusText.parse(r.bodyText)
    }

    /// Config and layer sizes from an image manifest.
    private func blobSizes(_ image: PushedImage) throws -> [Double] {
        let m = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(image.manifest)) as? [String: Any])
        let config = try XCTUnwrap((m["config"] as? [String: Any])?["size"] as? Int)
        let layers = try XCTUnwrap(m["layers"] as? [[String: Any]]).compactMap { $0["size"] as? Int }
        return ([config] + layers).map(Double.init)
    }

    func testColdAndWarmPullsShowHitRatioBytesSavedUpstreamAndCache() throws {
        let registry = try startRegistry()
        let image = try builder.pushImage(to: registry, repository: "team/app", tag: "v1", layerSizes: [700_000, 300_000])
        let sizes = try blobSizes(image)
        let total = sizes.reduce(0, +)
        let port = freeLoopbackPort()
        // Prefetch off: every blob is then asked for by skopeo, so fills and requests line up one to one.
        let berth = try startBerth(upstream: registry.url, arguments: ["--metrics-listen", "127.0.0.1:\(port)"],
                                   environment: ["BERTH_UPSTREAM_PREFETCH": "false"])
        let up = #"upstream="\#(registry.hostPort)""#
        let blobMiss = #"berth_requests_total{route="blob",method="GET",status="200",cache="miss"}"#
        let blobHit = #"berth_requests_total{route="blob",method="GET",status="200",cache="hit"}"#
        let before = try scrape(port)
        XCTAssertNil(before[blobMiss])
        XCTAssertEqual(before[#"berth_fills_total{event="started"}"#], 0)
        XCTAssertEqual(before["berth_cache_blobs"], 0)
        XCTAssertGreaterThan(try XCTUnwrap(before["berth_cache_budget_bytes"]), 0)
        XCTAssertEqual(before[#"berth_upstream_circuit_open{\#(up),cause="outage"}"#], 0)
        XCTAssertGreaterThan(try XCTUnwrap(before["berth_connections_max"]), 0)

        assertLayout(try pull(berth, "team/app:v1"), image: image)
        // Blobs and the manifest are stored on the pool after the last byte went out: wait (bounded) for that.
        XCTAssertTrue(waitUntil(10) {
            let m = try? self.scrape(port)
            return m?[#"berth_fills_total{event="stored"}"#] == Double(sizes.count) && m?["berth_cache_blobs"] == Double(sizes.count + 1)
        })
        let cold = try scrape(port)
        XCTAssertEqual(cold[blobMiss], Double(sizes.count))
        XCTAssertNil(cold[blobHit])
        XCTAssertEqual(cold[#"berth_fills_total{event="started"}"#], Double(sizes.count))
        XCTAssertEqual(cold[#"berth_fills_total{event="failed"}"#], 0)
        XCTAssertEqual(cold[#"berth_fills_in_flight"#], 0)
        XCTAssertEqual(cold[#"berth_response_body_bytes_total{route="blob",cache="miss"}"#], total)
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(cold["berth_upstream_received_bytes_total{\(up)}"]), total)
        let upstreamOK = try XCTUnwrap(cold[#"berth_upstream_responses_total{\#(up),status="200"}"#])
        XCTAssertGreaterThanOrEqual(upstreamOK, Double(sizes.count + 1), "a manifest and every blob")
        let heads = cold.filter { $0.key.hasPrefix("berth_upstream_responses_total{\(up)") }.values.reduce(0, +)
        XCTAssertEqual(cold["berth_upstream_time_to_first_byte_seconds_count{\(up)}"], heads, "every response head is timed")
        XCTAssertEqual(cold["berth_cache_blobs"], Double(sizes.count + 1), "config, layers and the manifest")
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(cold[#"berth_cache_bytes{part="blobs"}"#]), total)
        XCTAssertGreaterThan(try XCTUnwrap(cold["berth_cache_usage_ratio"]), 0)
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(cold[#"berth_request_duration_seconds_count{route="blob"}"#]), Double(sizes.count))
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(cold["berth_connections_accepted_total"]), 1)

        registry.settle()
        let upstreamBefore = registry.requests().count
        assertLayout(try pull(berth, "team/app:v1"), image: image)
        let warm = try scrape(port)
        XCTAssertEqual(warm[blobHit], Double(sizes.count))
        XCTAssertEqual(warm[blobMiss], Double(sizes.count))
        XCTAssertEqual(warm[#"berth_response_body_bytes_total{route="blob",cache="hit"}"#], total, "bytes the upstream did not send again")
        XCTAssertEqual(warm[#"berth_fills_total{event="started"}"#], Double(sizes.count))
        XCTAssertEqual(warm["berth_upstream_received_bytes_total{\(up)}"], cold["berth_upstream_received_bytes_total{\(up)}"])
        // What the upstream saw and what Berth counted agree: the upstream's requests since the cold pull.
        registry.settle()
        let upstreamDuring = registry.requests().count - upstreamBefore
        let counted = warm.filter { $0.key.hasPrefix("berth_upstream_responses_total{\(up)") }.values.reduce(0, +)
            - cold.filter { $0.key.hasPrefix("berth_upstream_responses_total{\(up)") }.values.reduce(0, +)
        XCTAssertEqual(counted, Double(upstreamDuring))
        // The README's hit ratio, over blobs: half the blob requests were hits.
        let blobRequests = warm.filter { $0.key.hasPrefix(#"berth_requests_total{route="blob""#) }.values.reduce(0, +)
        XCTAssertEqual(warm[blobHit]! / blobRequests, 0.5, accuracy: 1e-9)

        // /metrics lives on its own listener only.
        XCTAssertEqual(try Curl.request("http://127.0.0.1:\(port)/v2/", in: workDir).status, 404)
        XCTAssertEqual(try get(berth, "/metrics").status, 404)
    }

    /// An operator traces one failed pull: the client's `X-Request-Id`, the
    /// access-log line with the error, the upstream error in the metrics.
    func testAFailedPullIsTracedByItsRequestIDAndCounted() throws {
        let dead = "http://127.0.0.1:\(freeLoopbackPort())"  // nothing listens: connections are refused
        let port = freeLoopbackPort()
        let accessLog = "\(workDir!)/access.log"
        let berth = try startBerth(upstream: dead, arguments: ["--metrics-listen", "127.0.0.1:\(port)", "--log-access", accessLog])
        let r = try get(berth, "/v2/team/app/manifests/v1")
        XCTAssertGreaterThanOrEqual(r.status, 500)
        let id = try XCTUnwrap(r.headers["x-request-id"])
        XCTAssertTrue(waitUntil(10) { ((try? String(contentsOfFile: accessLog, encoding: .utf8)) ?? "").contains(#""request_id":"\#(id)""#) })
        let line = try XCTUnwrap(try String(contentsOfFile: accessLog, encoding: .utf8).split(separator: "\n")
            .first { $0.contains(#""request_id":"\#(id)""#) })
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        XCTAssertEqual(object["status"] as? Int, r.status)
        XCTAssertEqual(object["path"] as? String, "/v2/team/app/manifests/v1")
        XCTAssertNotNil(object["error"], "\(object)")
        XCTAssertNotNil(object["error_message"], "\(object)")
        XCTAssertTrue(berth.log.contains("request_id=\(id) "), "the human log names the request")
        let m = try scrape(port)
        let host = String(dead.dropFirst("http://".count))
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(m[#"berth_upstream_errors_total{upstream="\#(host)",kind="connect"}"#]), 1)
        XCTAssertEqual(m[#"berth_requests_total{route="manifest",method="GET",status="\#(r.status)",cache="none"}"#], 1)
    }
}
