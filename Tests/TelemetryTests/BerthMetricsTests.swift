import XCTest
@testable import Telemetry
import TestSupport

final class BerthMetricsTests: XCTestCase {
    func testRoutesComeFromTheLastSegmentsOfTheRawPath() {
        let cases: [(String, Route)] = [
            ("/v2/", .base), ("/v2", .base), ("/healthz", .health), ("/readyz", .health),
            ("/v2/library/alpine/manifests/3.20", .manifest),
            ("/v2/library/alpine/manifests/3.20?ns=docker.io", .manifest),
            ("/v2/a/blobs/sha256:" + String(repeating: "a", count: 64), .blob),
            ("/v2/a/tags/list?n=10", .tags),
            ("/v2/a/referrers/sha256:" + String(repeating: "b", count: 64), .referrers),
            // A repository may be named after a route word: only the end of the path counts.
            ("/v2/manifests/blobs/tags/list", .tags),
            ("/v2/blobs/manifests/latest", .manifest),
            ("/v2/a/tags/other", .other), ("/metrics", .other), ("*", .other), ("", .other),
        ]
        for (target, route) in cases { XCTAssertEqual(Route(target: target), route, target) }
    }

    func testCacheStatusBecomesOneOfFourLabels() {
        XCTAssertEqual(CacheLabel(nil), .none)
        XCTAssertEqual(CacheLabel("Berth; hit"), .hit)
        XCTAssertEqual(CacheLabel("Berth; hit; detail=revalidated"), .hit)
        XCTAssertEqual(CacheLabel("Berth; hit; fwd=stale; detail=upstream-error"), .stale)
        XCTAssertEqual(CacheLabel("Berth; fwd=miss; stored"), .miss)
        XCTAssertEqual(CacheLabel("Berth; fwd=miss; collapsed"), .miss)
        XCTAssertEqual(CacheLabel("something else"), .none)
    }

    func testRequestsAreCountedByLabelsAndTheirBytesAndDurations() throws {
        let m = BerthMetrics(shards: 2)
        let blob = "/v2/a/blobs/sha256:" + String(repeating: "c", count: 64)
        // Two loops' shards are summed.
        m.requestEnded(shard: 0, target: blob, method: "GET", status: 200, cacheStatus: "Berth; hit", bytes: 1000, durationNanos: 2_000_000)
        m.requestEnded(shard: 1, target: blob, method: "GET", status: 200, cacheStatus: "Berth; hit", bytes: 24, durationNanos: 2_000_000)
        m.requestEnded(target: blob, method: "GET", status: 200, cacheStatus: "Berth; fwd=miss; stored", bytes: 7, durationNanos: 40_000_000)
        m.requestEnded(target: "/v2/", method: "BREW", status: 501, cacheStatus: nil, bytes: 0, durationNanos: 0)
        let text = try scrape(m)
        XCTAssertEqual(text[#"berth_requests_total{route="blob",method="GET",status="200",cache="hit"}"#], 2)
        XCTAssertEqual(text[#"berth_requests_total{route="blob",method="GET",status="200",cache="miss"}"#], 1)
        XCTAssertEqual(text[#"berth_requests_total{route="base",method="other",status="501",cache="none"}"#], 1)
        XCTAssertEqual(text[#"berth_response_body_bytes_total{route="blob",cache="hit"}"#], 1024)
        XCTAssertEqual(text[#"berth_response_body_bytes_total{route="blob",cache="miss"}"#], 7)
        XCTAssertEqual(text[#"berth_request_duration_seconds_count{route="blob"}"#], 3)
        XCTAssertEqual(text[#"berth_request_duration_seconds_bucket{route="blob",le="0.001"}"#], 0)
        XCTAssertEqual(text[#"berth_request_duration_seconds_bucket{route="blob",le="0.002"}"#], 2, "a bound is inclusive")
        XCTAssertEqual(text[#"berth_request_duration_seconds_bucket{route="blob",le="0.005"}"#], 2)
        XCTAssertEqual(text[#"berth_request_duration_seconds_bucket{route="blob",le="+Inf"}"#], 3)
        XCTAssertEqual(try XCTUnwrap(text[#"berth_request_duration_seconds_sum{route="blob"}"#]), 0.044, accuracy: 1e-9)
    }

    func testUpstreamFamiliesCarryTheUpstreamName() throws {
        let m = BerthMetrics()
        let u = m.upstream("ghcr")
        XCTAssertTrue(m.upstream("ghcr") === u)
        u.responded(status: 200, afterNanos: 30_000_000)
        u.responded(status: 429, afterNanos: 1_000_000)
        u.bodyEnded(bytes: 4 << 20, afterNanos: 100_000_000)  // 41.9 MB/s
        u.bodyEnded(bytes: 100, afterNanos: 1)               // too small to say anything about the link
        u.receivedBytes.increment(by: 4 << 20)
        u.failed("connect")
        u.tokenFetched(ok: true)
        u.retried(failover: true)
        let text = try scrape(m)
        XCTAssertEqual(text[#"berth_upstream_responses_total{upstream="ghcr",status="429"}"#], 1)
        XCTAssertEqual(text[#"berth_upstream_rate_limited_total{upstream="ghcr"}"#], 1)
        XCTAssertEqual(text[#"berth_upstream_time_to_first_byte_seconds_count{upstream="ghcr"}"#], 2)
        XCTAssertEqual(text[#"berth_upstream_throughput_bytes_per_second_count{upstream="ghcr"}"#], 1)
        XCTAssertEqual(text[#"berth_upstream_throughput_bytes_per_second_bucket{upstream="ghcr",le="25000000.0"}"#], 0)
        XCTAssertEqual(text[#"berth_upstream_throughput_bytes_per_second_bucket{upstream="ghcr",le="50000000.0"}"#], 1)
        XCTAssertEqual(text[#"berth_upstream_received_bytes_total{upstream="ghcr"}"#], Double(4 << 20))
        XCTAssertEqual(text[#"berth_upstream_errors_total{upstream="ghcr",kind="connect"}"#], 1)
        XCTAssertEqual(text[#"berth_upstream_tokens_total{upstream="ghcr",outcome="ok"}"#], 1)
        XCTAssertEqual(text[#"berth_upstream_tokens_total{upstream="ghcr",outcome="failed"}"#], 0)
        XCTAssertEqual(text[#"berth_upstream_retries_total{upstream="ghcr",reason="failover"}"#], 1)
    }

    func testCollectorsAndProcessFamiliesAreScraped() throws {
        let m = BerthMetrics()
        m.addCollector { out in
            out.family("berth_test_gauge", .gauge, "A \"quoted\" help.", [([("name", "a\"b\\c\nd")], 1.5)])
        }
        let raw = String(decoding: m.render(), as: UTF8.self)
        XCTAssertTrue(raw.contains("# TYPE berth_test_gauge gauge\n"))
        let text = try PrometheusText.parse(raw)
        XCTAssertEqual(text[#"berth_test_gauge{name="a\"b\\c\nd"}"#], 1.5)
        XCTAssertGreaterThan(try XCTUnwrap(text["process_resident_memory_bytes"]), 1_048_576)
        XCTAssertGreaterThan(try XCTUnwrap(text["process_open_fds"]), 2)
        XCTAssertGreaterThan(try XCTUnwrap(text["process_start_time_seconds"]), 1.7e9)
    }

    func testWholeNumbersPrintWithoutAFraction() {
        XCTAssertEqual(Exposition.format(3), "3")
        XCTAssertEqual(Exposition.format(1_099_511_627_776), "1099511627776")
        XCTAssertEqual(Exposition.format(0.25), "0.25")
        XCTAssertEqual(Exposition.format(.infinity), "+Inf")
    }

    private func scrape(_ m: BerthMetrics) throws -> [String: Double] {
        try PrometheusText.parse(String(decoding: m.render(), as: UTF8.self))
    }
}
