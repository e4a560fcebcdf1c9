import XCTest
@testable import HTTP1

/// The connection deadlines as values: every wait, just before and at its bound.
final class ConnectionTimeoutsTests: XCTestCase {
    let t = ConnectionTimeouts(headNanos: 20_000, idleNanos: 60_000, stallNanos: 30_000)

    func testNewConnectionThatSendsNothingClosesQuietlyAtTheHeadBound() {
        let wait = ConnectionTimeouts.Wait.firstRequest(acceptedAt: 1_000)
        XCTAssertEqual(t.expiry(of: wait, now: 20_999), .none)
        XCTAssertEqual(t.expiry(of: wait, now: 21_000), .close)
    }

    func testPartialHeadIsAnswered408AtItsAbsoluteBound() {
        // Bytes arriving meanwhile do not move the bound: the connection reports the same start.
        let wait = ConnectionTimeouts.Wait.head(since: 5_000)
        for now in stride(from: UInt64(5_000), to: 25_000, by: 1_000) {
            XCTAssertEqual(t.expiry(of: wait, now: now), .none, "at \(now)")
        }
        XCTAssertEqual(t.expiry(of: wait, now: 25_000), .requestTimeout)
    }

    func testIdleKeepAliveClosesQuietlyAtTheIdleBound() {
        let wait = ConnectionTimeouts.Wait.nextRequest(idleSince: 100)
        XCTAssertEqual(t.expiry(of: wait, now: 60_099), .none)
        XCTAssertEqual(t.expiry(of: wait, now: 60_100), .close)
    }

    func testClientNotReadingClosesAtTheStallBound() {
        let wait = ConnectionTimeouts.Wait.client(lastProgress: 0)
        XCTAssertEqual(t.expiry(of: wait, now: 29_999), .none)
        XCTAssertEqual(t.expiry(of: wait, now: 30_000), .close)
    }

    func testHandlerIsNotBoundedHere() {
        XCTAssertNil(t.deadline(of: .handler))
        XCTAssertEqual(t.expiry(of: .handler, now: .max), .none)
    }

    func testSweepIntervalIsAQuarterOfTheShortestBoundWithinLimits() {
        XCTAssertEqual(ConnectionTimeouts(headNanos: 20_000_000_000, idleNanos: 60_000_000_000, stallNanos: 30_000_000_000).sweepIntervalNanos,
                       1_000_000_000)
        XCTAssertEqual(ConnectionTimeouts(headNanos: 200_000_000, idleNanos: 60_000_000_000, stallNanos: 30_000_000_000).sweepIntervalNanos,
                       50_000_000)
        XCTAssertEqual(ConnectionTimeouts(headNanos: 1_000, idleNanos: 1_000, stallNanos: 1_000).sweepIntervalNanos, 10_000_000)
    }

    func testDeadlinesNearTheEndOfTheClockDoNotTrap() {
        let near = UInt64.max - 10
        XCTAssertNotNil(t.deadline(of: .head(since: near)))
    }
}
