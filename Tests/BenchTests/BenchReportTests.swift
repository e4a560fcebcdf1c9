import Foundation
import XCTest
@testable import Bench

final class BenchReportTests: XCTestCase {
    let ms: UInt64 = 1_000_000

    func pull(start: UInt64, millis: UInt64, blobStatus: Int = 200, mismatch: Bool = false) -> PullRecord {
        PullRecord(startNanos: start, endNanos: start + millis * ms, requests: [
            RequestRecord(kind: .head, status: 200, bytes: 0, ttfbNanos: 1 * ms),
            RequestRecord(kind: .manifest, status: 200, bytes: 500, ttfbNanos: 2 * ms),
            RequestRecord(kind: .config, status: 200, bytes: 100, ttfbNanos: 3 * ms),
            RequestRecord(kind: .layer, status: blobStatus, bytes: blobStatus == 200 ? 1000 : 50, ttfbNanos: 4 * ms, isMismatch: mismatch),
            RequestRecord(kind: .layer, status: 200, bytes: 1000, ttfbNanos: 5 * ms),
        ])
    }

    func testPercentilesFromHDRHistogram() {
        let p = Percentiles(nanos: (1...100).map { UInt64($0) * ms })
        XCTAssertEqual(p.count, 100)
        XCTAssertEqual(p.p50, 50, accuracy: 0.1)
        XCTAssertEqual(p.p95, 95, accuracy: 0.1)
        XCTAssertEqual(p.p99, 99, accuracy: 0.1)
        XCTAssertEqual(p.max, 100, accuracy: 0.1)
        XCTAssertEqual(Percentiles(nanos: []), .empty)
    }

    func testPassAggregatesCountsBytesAndRates() {
        let pulls = [pull(start: 0, millis: 100), pull(start: 0, millis: 200), pull(start: 50 * ms, millis: 150)]
        let r = PassReport(endpoint: "http://a", image: "x:1", round: 1, phase: .warm, pulls: pulls)
        XCTAssertEqual(r.pullers, 3)
        XCTAssertEqual(r.completed, 3)
        XCTAssertEqual(r.failures, 0)
        XCTAssertEqual(r.requests["head"]?.count, 3)
        XCTAssertEqual(r.requests["layer"]?.count, 6)
        XCTAssertEqual(r.requests["layer"]?.byStatus, ["200": 6])
        XCTAssertEqual(r.requests["layer"]?.bytes, 6000)
        XCTAssertNil(r.requests["index"])
        XCTAssertEqual(r.requestCount, 15)
        XCTAssertEqual(r.bytes, 3 * 2600)
        XCTAssertEqual(r.wallMillis, 200, accuracy: 0.001)
        XCTAssertEqual(r.bytesPerSecond, 7800 / 0.2, accuracy: 0.01)
        XCTAssertEqual(r.pulled.p50, 150, accuracy: 0.2)
        XCTAssertEqual(r.pulled.max, 200, accuracy: 0.2)
        XCTAssertEqual(r.manifestTTFB.count, 6, "HEAD and manifest")
        XCTAssertEqual(r.blobTTFB.count, 9)
        XCTAssertEqual(r.blobTTFB.max, 5, accuracy: 0.01)
    }

    func testFailuresAndMismatchesAreCounted() {
        let pulls = [pull(start: 0, millis: 10, blobStatus: 404), pull(start: 0, millis: 10, mismatch: true), pull(start: 0, millis: 10)]
        let r = PassReport(endpoint: "http://a", image: "x:1", round: 1, phase: .cold, pulls: pulls)
        XCTAssertEqual(r.completed, 1)
        XCTAssertEqual(r.failures, 2)
        XCTAssertEqual(r.requests["layer"]?.byStatus, ["200": 5, "404": 1])
        XCTAssertEqual(r.requests["layer"]?.mismatches, 1)
        XCTAssertEqual(r.errors, ["layer: HTTP 404", "layer: digest mismatch"])
        let result = BenchResult(endpoints: ["http://a"], images: ["x:1"], rounds: 1, pullers: 3, parallel: 3, verify: true, passes: [r])
        XCTAssertEqual(result.failures, 2)
        XCTAssertTrue(result.table().contains("layer 6 [1×404, 1×mismatch]"), result.table())
    }

    func testComparisonTakesMediansAndRatiosToTheFirstEndpoint() {
        func pass(_ e: String, _ round: Int, _ millis: UInt64) -> PassReport {
            PassReport(endpoint: e, image: "x:1", round: round, phase: .warm, pulls: [pull(start: 0, millis: millis)])
        }
        let passes = [pass("A", 1, 100), pass("B", 1, 50), pass("A", 2, 300), pass("B", 2, 70), pass("A", 3, 200), pass("B", 3, 1000)]
        let rows = Comparison.rows(passes, endpoints: ["A", "B"])
        XCTAssertEqual(rows.map(\.endpoint), ["A", "B"])
        XCTAssertEqual(rows[0].pulledP50, 200, accuracy: 0.3)
        XCTAssertEqual(rows[1].pulledP50, 70, accuracy: 0.1)
        XCTAssertEqual(rows[0].ratio, 1)
        XCTAssertEqual(rows[1].ratio, 0.35, accuracy: 0.001)
        XCTAssertEqual(Comparison.median([4, 1, 3, 2]), 2.5)
    }

    func testJSONRoundTripsAndTableShowsRatios() throws {
        let passes = [PassReport(endpoint: "A", image: "x:1", round: 1, phase: .warm, pulls: [pull(start: 0, millis: 100)]),
                      PassReport(endpoint: "B", image: "x:1", round: 1, phase: .warm, pulls: [pull(start: 0, millis: 150)])]
        let result = BenchResult(endpoints: ["A", "B"], images: ["x:1"], rounds: 1, pullers: 1, parallel: 3, verify: false, passes: passes)
        let decoded = try JSONDecoder().decode(BenchResult.self, from: Data(result.json().utf8))
        XCTAssertEqual(decoded, result)
        let table = result.table()
        XCTAssertTrue(table.contains("1.50×"), table)
        XCTAssertTrue(table.contains("head 1, manifest 1, config 1, layer 2"), table)
        XCTAssertEqual(format2(0.005), "0.01")
        XCTAssertEqual(format2(12.3), "12.30")
    }
}
