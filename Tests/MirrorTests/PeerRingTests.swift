import Foundation
import XCTest
@testable import Mirror
import TestSupport

final class PeerRingTests: XCTestCase {
    private func digests(_ n: Int) -> [String] {
        (0..<n).map { i in "sha256:" + String(repeating: String(format: "%016llx", UInt64(i) &* 0x9E37_79B9_7F4A_7C15), count: 4) }
    }

    func testHAProxyHashFunctions() {
        // sdbm by its definition: h = c + (h << 6) + (h << 16) - h.
        XCTAssertEqual(PeerRing.sdbm(Array("".utf8)), 0)
        XCTAssertEqual(PeerRing.sdbm(Array("a".utf8)), 97)
        XCTAssertEqual(PeerRing.sdbm(Array("ab".utf8)), 98 &+ (97 << 6) &+ (97 << 16) &- 97)
        XCTAssertEqual(PeerRing.sdbm([0xff]), 0xff)
        XCTAssertNotEqual(PeerRing.fullHash(4096), PeerRing.fullHash(4097))
    }

    func testEveryKeyHasOneOwnerAndKeysSpreadOverTheMembers() {
        let ring = PeerRing(memberCount: 3)
        var counts = [0, 0, 0]
        for d in digests(3000) { counts[ring.owner(of: d.utf8)!] += 1 }
        for c in counts { XCTAssertGreaterThan(c, 500, "each of 3 members owns a fair share: \(counts)") }
        XCTAssertNil(PeerRing(memberCount: 0).owner(of: "sha256:x".utf8))
        XCTAssertNil(ring.owner(of: "sha256:x".utf8) { _ in true }, "every member excluded: no owner")
    }

    func testExcludingAMemberMovesOnlyItsKeys() {
        let ring = PeerRing(memberCount: 4)
        var moved = 0
        for d in digests(2000) {
            let before = ring.owner(of: d.utf8)!
            let after = ring.owner(of: d.utf8) { $0 == 2 }!
            XCTAssertNotEqual(after, 2)
            if before != 2 { XCTAssertEqual(after, before, "\(d) stays on its owner") } else { moved += 1 }
        }
        XCTAssertGreaterThan(moved, 0)
    }

    func testAddingAMemberTakesKeysOnlyForItself() {
        let three = PeerRing(memberCount: 3), four = PeerRing(memberCount: 4)
        for d in digests(2000) {
            let after = four.owner(of: d.utf8)!
            // A new member with id 4 leaves the others' points where they were.
            if after != 3 { XCTAssertEqual(after, three.owner(of: d.utf8)) }
            XCTAssertEqual(four.owner(of: d.utf8) { $0 == 3 }, three.owner(of: d.utf8), "without the new member: the old ring")
        }
    }

    /// The ring is HAProxy's: Debian's haproxy (2.6), with `balance hash` on the digest
    /// and `hash-type consistent` as conf/haproxy/berth.cfg has it, sends each digest to
    /// the server this ring names, with all servers up and with one disabled.
    func testOwnersAgreeWithHAProxy() throws {
        guard Subprocess.resolve("haproxy") != nil else { throw XCTSkip("haproxy is not installed (scripts/deps.sh TEST_PACKAGES)") }
        let dir = makeTemporaryDirectory("berth-ring")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let keys = digests(60)
        for disabled in [nil, 1] as [Int?] {
            let front = freeLoopbackPort()
            let ports = (0..<3).map { _ in freeLoopbackPort() }
            var cfg = """
            defaults
                mode http
                timeout connect 5s
                timeout client 10s
                timeout server 10s
            frontend registry
                bind 127.0.0.1:\(front)
                http-request set-var(txn.berth_key) path,field(-1,/) if { path -m reg /blobs/sha256:[0-9a-f]{64}$ }
                http-request set-var(txn.berth_key) pathq unless { var(txn.berth_key) -m found }
                default_backend berth
            backend berth
                balance hash var(txn.berth_key)
                hash-type consistent

            """
            for (i, p) in ports.enumerated() { cfg += "    server berth\(i + 1) 127.0.0.1:\(p)\(i == disabled ? " disabled" : "")\n" }
            for (i, p) in ports.enumerated() {
                cfg += "frontend node\(i)\n    bind 127.0.0.1:\(p)\n    http-request return status 200 content-type text/plain string \"\(i)\"\n"
            }
            let path = "\(dir)/haproxy-\(disabled ?? -1).cfg"
            try cfg.write(toFile: path, atomically: true, encoding: .utf8)
            let p = try Subprocess(["haproxy", "-db", "-f", path], in: dir, logPath: "\(dir)/haproxy.log")
            defer { p.terminate(grace: 5) }
            let ring = PeerRing(memberCount: 3)
            func served(_ key: String) -> Int? {
                let r = try? Subprocess.run(["curl", "-sf", "http://127.0.0.1:\(front)/v2/team/app/blobs/\(key)"], in: dir, timeout: 10, check: false)
                return r.flatMap { Int($0.stdout) }
            }
            XCTAssertTrue(waitUntil(15) { served(keys[0]) != nil }, "haproxy answers")
            var seen = Set<Int>()
            for key in keys {
                let expected = ring.owner(of: key.utf8) { $0 == disabled }
                XCTAssertEqual(served(key), expected, "\(key), server \(disabled.map { "\($0 + 1)" } ?? "none") disabled")
                if let expected { seen.insert(expected) }
            }
            XCTAssertEqual(seen.count, disabled == nil ? 3 : 2, "the keys reached every server up")
        }
    }
}
