import Foundation
import XCTest
import Synchronization
import Reactor
@testable import HTTP1

/// Admission at accept as a value: the global cap, the per-client cap, and
/// logging once per burst of refusals.
final class ConnectionLimiterTests: XCTestCase {
    let a = ClientKey(SocketAddress("127.0.0.1:1000")!)
    let b = ClientKey(SocketAddress("127.0.0.2:1000")!)

    func testGlobalCapRefusesTheExcessAndReadmitsAfterARelease() {
        let l = ConnectionLimiter(maxConnections: 3, maxPerClient: 0)
        XCTAssertNil(l.admit(a))
        XCTAssertNil(l.admit(a))
        XCTAssertNil(l.admit(b))
        XCTAssertEqual(l.admit(b), .serverFull)
        XCTAssertEqual(l.openCount, 3)
        l.release(a)
        XCTAssertNil(l.admit(b))
        XCTAssertEqual(l.openCount, 3)
    }

    func testPerClientCapRefusesOnlyThatClient() {
        let l = ConnectionLimiter(maxConnections: 100, maxPerClient: 2)
        XCTAssertNil(l.admit(a))
        XCTAssertNil(l.admit(a))
        XCTAssertEqual(l.admit(a), .clientFull)
        XCTAssertNil(l.admit(b), "another client is not affected")
        XCTAssertEqual(l.openCount, 3, "a refused connection is not counted")
        l.release(a)
        XCTAssertNil(l.admit(a))
        for _ in 0..<2 { l.release(a) }
        l.release(b)
        XCTAssertEqual(l.openCount, 0)
        XCTAssertEqual(l.clientCount, 0, "no entry stays for a client with no connection")
    }

    /// A reload sets caps while connections are open: they were counted all along,
    /// so the new cap holds at once, and lifting it leaves no stale count behind.
    func testCapsChangedWhileConnectionsAreOpen() {
        let l = ConnectionLimiter(maxConnections: 100, maxPerClient: 0)
        for _ in 0..<3 { XCTAssertNil(l.admit(a)) }
        l.update(maxConnections: 100, maxPerClient: 2)
        XCTAssertEqual(l.admit(a), .clientFull, "three open already: over the new cap of 2")
        XCTAssertNil(l.admit(b))
        l.update(maxConnections: 4, maxPerClient: 0)
        XCTAssertEqual(l.admit(b), .serverFull, "four open: the new global cap")
        for _ in 0..<3 { l.release(a) }
        l.release(b)
        XCTAssertEqual(l.openCount, 0)
        XCTAssertEqual(l.clientCount, 0, "no stale per-client entry")
        l.update(maxConnections: 100, maxPerClient: 1)
        XCTAssertNil(l.admit(a))
        XCTAssertEqual(l.admit(a), .clientFull)
    }

    func testUnixPeersAreOnlyGloballyCapped() {
        let l = ConnectionLimiter(maxConnections: 2, maxPerClient: 1)
        XCTAssertNil(l.admit(nil))
        XCTAssertNil(l.admit(nil))
        XCTAssertEqual(l.admit(nil), .serverFull)
    }

    func testClientKeys() {
        XCTAssertEqual(ClientKey(SocketAddress("10.1.2.3:5")!), .ipv4(0x0a01_0203))
        // A dual-stack listener sees IPv4 peers as mapped IPv6: the same client.
        XCTAssertEqual(ClientKey(SocketAddress("[::ffff:10.1.2.3]:5")!), .ipv4(0x0a01_0203))
        // One IPv6 /64 is one client, whatever its interface identifier.
        XCTAssertEqual(ClientKey(SocketAddress("[2001:db8:1:2::1]:5")!), ClientKey(SocketAddress("[2001:db8:1:2:ffff::9]:5")!))
        XCTAssertNotEqual(ClientKey(SocketAddress("[2001:db8:1:2::1]:5")!), ClientKey(SocketAddress("[2001:db8:1:3::1]:5")!))
        XCTAssertNil(ClientKey(SocketAddress(unixPath: "/tmp/x.sock")!))
    }

    func testRefusalsAreLoggedOncePerBurstWithASummaryWhenItEnds() {
        let l = ConnectionLimiter(maxConnections: 1, maxPerClient: 0, burstQuietNanos: 1_000)
        XCTAssertNotNil(l.noteRefusal(.serverFull, now: 100), "the first refusal of a burst is logged")
        for t in stride(from: UInt64(200), to: 5_000, by: 100) {
            XCTAssertNil(l.noteRefusal(t % 200 == 0 ? .serverFull : .clientFull, now: t))
            XCTAssertNil(l.burstSummary(now: t))
        }
        XCTAssertNil(l.burstSummary(now: 5_800), "not quiet long enough yet")
        let summary = l.burstSummary(now: 5_900)
        XCTAssertNotNil(summary)
        XCTAssertTrue(summary!.contains("refused 25 connection(s) over max_connections and 24 over max_connections_per_client"), summary!)
        XCTAssertNil(l.burstSummary(now: 9_000), "a burst is summed up once")
        XCTAssertNotNil(l.noteRefusal(.clientFull, now: 10_000), "the next burst is logged again")
    }

    func testSummaryIgnoresAClockSlightlyBehindTheLastRefusal() {
        var burst = RefusalBurst(quietNanos: 1_000)
        XCTAssertTrue(burst.record(.serverFull, now: 5_000))
        XCTAssertNil(burst.endIfQuiet(now: 4_999), "another loop's clock, read a little earlier")
        XCTAssertEqual(burst.endIfQuiet(now: 6_000)?.serverFull, 1)
    }

    func testConcurrentAdmissionNeverExceedsTheCap() {
        let l = ConnectionLimiter(maxConnections: 50, maxPerClient: 0)
        let admitted = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            for _ in 0..<1000 where l.admit(nil) == nil { admitted.add(1, ordering: .relaxed) }
        }
        XCTAssertEqual(admitted.load(ordering: .relaxed), 50)
        XCTAssertEqual(l.openCount, 50)
    }
}
