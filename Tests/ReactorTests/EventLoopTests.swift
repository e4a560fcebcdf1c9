import XCTest
import Reactor
import Synchronization

/// Regression: `schedule` from another thread while the loop runs used to
/// push into the loop's timer heap concurrently (berth crashed at start when
/// the main thread scheduled the index snapshots).
final class EventLoopTests: XCTestCase {
    func testTimersScheduledFromOtherThreadsAllFire() throws {
        let group = try EventLoopGroup(count: 1)
        group.start()
        defer { group.shutdown() }
        let loop = group.loops[0]
        let fired = Atomic<Int>(0)
        let threads = 4, each = 2000
        let done = expectation(description: "all timers")
        done.expectedFulfillmentCount = threads * each
        // Keep the loop busy with its own timers at the same time.
        for _ in 0..<200 { loop.execute { for _ in 0..<10 { loop.schedule(afterNanos: 1000) {} } } }
        let workers = (0..<threads).map { _ in
            OSThread(name: "scheduler") {
                for i in 0..<each {
                    loop.schedule(afterNanos: UInt64(i % 50) * 10_000) {
                        fired.add(1, ordering: .relaxed)
                        done.fulfill()
                    }
                }
            }
        }
        for w in workers { w.join() }
        wait(for: [done], timeout: 30)
        XCTAssertEqual(fired.load(ordering: .relaxed), threads * each)
    }
}
