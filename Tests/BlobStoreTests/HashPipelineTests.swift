import Foundation
import XCTest
import Reactor
@testable import BlobStore

/// The fill's hash runs on the pool in batches: whatever the chunk sizes, the digest is the
/// bytes' SHA-256, a tail shorter than a batch is hashed at `finish`, and a producer past
/// the limit is told to pause and resumed once the queue is short again.
final class HashPipelineTests: XCTestCase {
    private var pool: BlockingPool!

    override func setUp() { pool = BlockingPool(threads: 2) }
    override func tearDown() { pool.shutdown() }

    private func digest(of chunks: [[UInt8]]) -> String {
        let p = HashPipeline(pool: pool)
        for c in chunks { c.withUnsafeBytes { _ = p.enqueue($0) } }
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var hex = ""
        p.finish { hex = $0; done.signal() }
        XCTAssertEqual(done.wait(timeout: .now() + 10), .success)
        return hex
    }

    func testDigestIsTheBytesWhateverTheChunking() {
        var rng = SystemRandomNumberGenerator()
        for sizes in [[], [0], [1], [100, 200], [HashPipeline.batch - 1], [HashPipeline.batch, 1], [65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 65_536, 3]] {
            let chunks = sizes.map { n in (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) } }
            XCTAssertEqual(digest(of: chunks), SHA256Hasher.hex(chunks.flatMap { $0 }), "chunks \(sizes)")
        }
    }

    func testAProducerPastTheLimitIsResumedOnceTheQueueDrains() {
        let p = HashPipeline(pool: pool)
        let chunk = [UInt8](repeating: 7, count: 256 << 10)
        var accepted = true, sent = 0
        while accepted && sent < 64 << 20 {
            accepted = chunk.withUnsafeBytes { p.enqueue($0) }
            sent += chunk.count
        }
        XCTAssertFalse(accepted, "told to pause past \(HashPipeline.limit) bytes")
        let resumed = DispatchSemaphore(value: 0)
        p.whenBelowLimit { resumed.signal() }
        XCTAssertEqual(resumed.wait(timeout: .now() + 10), .success, "resumed once hashing caught up")
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var hex = ""
        p.finish { hex = $0; done.signal() }
        XCTAssertEqual(done.wait(timeout: .now() + 10), .success)
        XCTAssertEqual(hex, SHA256Hasher.hex([UInt8](repeating: 7, count: sent)))
    }
}
