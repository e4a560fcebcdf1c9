@testable import TLS
import XCTest

/// CiphertextQueue as a value: bytes in order through appends, partial
/// consumes, compaction and growth; storage held only while bytes wait and
/// handed to the spare, which keeps at most one bounded buffer.
final class CiphertextQueueTests: XCTestCase {
    private func append(_ q: CiphertextQueue, _ bytes: [UInt8]) {
        bytes.withUnsafeBytes { q.append($0) }
    }

    private func drain(_ q: CiphertextQueue, _ n: Int) -> [UInt8] {
        let out = Array(q.readable.prefix(n))
        q.consume(n)
        return out
    }

    func testBytesComeOutInOrderAcrossCompactionAndGrowth() {
        let spare = CiphertextQueue.Spare()
        let q = CiphertextQueue(spare: spare)
        var expected: [UInt8] = []
        var got: [UInt8] = []
        var next: UInt8 = 0
        // Sizes that force both the move-to-front and the grow paths.
        for (i, size) in [1000, 70_000, 5, 16_400, 200_000, 3, 65_536].enumerated() {
            let chunk = (0..<size).map { _ in next &+= 1; return next }
            append(q, chunk)
            expected += chunk
            got += drain(q, q.count / (i % 3 + 1))
        }
        got += drain(q, q.count)
        XCTAssertEqual(got, expected)
        XCTAssertTrue(q.isEmpty)
    }

    func testNoStorageWhileEmptyAndTheSpareIsReused() {
        let spare = CiphertextQueue.Spare()
        let q = CiphertextQueue(spare: spare)
        XCTAssertEqual(q.capacity, 0)
        append(q, [UInt8](repeating: 7, count: 100))
        XCTAssertEqual(q.capacity, CiphertextQueue.minimumCapacity)
        q.consume(40)
        XCTAssertEqual(q.capacity, CiphertextQueue.minimumCapacity, "bytes still wait")
        q.consume(60)
        XCTAssertEqual(q.capacity, 0, "a drained queue holds nothing")
        XCTAssertEqual(spare.keptCapacity, CiphertextQueue.minimumCapacity)
        // The next connection (or the next flush) takes it back: no new allocation.
        let other = CiphertextQueue(spare: spare)
        append(other, [1, 2, 3])
        XCTAssertEqual(spare.keptCapacity, 0)
        XCTAssertEqual(other.capacity, CiphertextQueue.minimumCapacity)
    }

    func testTheSpareKeepsOneBoundedBuffer() {
        let spare = CiphertextQueue.Spare(maximumKept: 128 * 1024)
        let big = CiphertextQueue(spare: spare)
        append(big, [UInt8](repeating: 1, count: 300_000))
        big.consume(300_000)
        XCTAssertEqual(spare.keptCapacity, 0, "over maximumKept: freed, not kept")
        let small = CiphertextQueue(spare: spare)
        append(small, [1])
        small.consume(1)
        XCTAssertEqual(spare.keptCapacity, CiphertextQueue.minimumCapacity)
    }

    func testEmptyAppendTakesNoStorage() {
        let q = CiphertextQueue(spare: CiphertextQueue.Spare())
        append(q, [])
        XCTAssertEqual(q.capacity, 0)
        XCTAssertEqual(q.count, 0)
    }
}
