import XCTest
import HTTP1
@testable import Mirror

/// `max_requests` and reading a spent quota, as values.
final class UpstreamLimitsTests: XCTestCase {
    func testSlotsAreHandedToWaitersInOrder() {
        let limiter = RequestLimiter(limit: 2)
        var started: [Int] = []
        XCTAssertTrue(limiter.acquire(orQueue: { started.append(0) }))
        XCTAssertTrue(limiter.acquire(orQueue: { started.append(1) }))
        XCTAssertFalse(limiter.acquire(orQueue: { started.append(2) }))
        XCTAssertFalse(limiter.acquire(orQueue: { started.append(3) }))
        XCTAssertEqual(limiter.counts.inFlight, 2)
        XCTAssertEqual(limiter.counts.waiting, 2)
        XCTAssertEqual(started, [], "a slot taken at once is not reported through the closure")
        limiter.release()
        XCTAssertEqual(started, [2], "the freed slot goes to the longest waiter")
        XCTAssertEqual(limiter.counts.inFlight, 2)
        limiter.release()
        limiter.release()
        XCTAssertEqual(started, [2, 3])
        XCTAssertEqual(limiter.counts.inFlight, 1)
        XCTAssertEqual(limiter.counts.waiting, 0)
        limiter.release()
        XCTAssertEqual(limiter.counts.inFlight, 0)
        XCTAssertTrue(limiter.acquire(orQueue: { XCTFail("never queued") }))
    }

    func testZeroMeansNoCap() {
        let limiter = RequestLimiter(limit: 0)
        for _ in 0..<1000 { XCTAssertTrue(limiter.acquire(orQueue: { XCTFail("never queued") })) }
        limiter.release()
        XCTAssertEqual(limiter.counts.inFlight, 0)
    }

    func testQuotaHeaders() {
        func spent(_ pairs: [(String, String)]) -> (Bool, String?) {
            var h = HTTPHeaders()
            for (k, v) in pairs { h.add(k, v) }
            let q = CircuitBreaker.quotaSpent(h)
            return (q.spent, q.reset)
        }
        XCTAssertTrue(spent([("ratelimit-remaining", "0;w=21600")]) == (true, nil), "Docker Hub's spelling")
        XCTAssertTrue(spent([("ratelimit-remaining", "76;w=21600")]) == (false, nil))
        XCTAssertTrue(spent([("RateLimit-Remaining", "0"), ("RateLimit-Reset", "42")]) == (true, "42"))
        XCTAssertTrue(spent([("RateLimit-Remaining", "0"), ("RateLimit-Reset", "Wed, 21 Oct 2015 07:28:00 GMT")]) == (true, nil),
                      "a reset that is not seconds is not passed on")
        XCTAssertTrue(spent([("RateLimit-Remaining", "lots")]) == (false, nil))
        XCTAssertTrue(spent([]) == (false, nil))
    }
}
