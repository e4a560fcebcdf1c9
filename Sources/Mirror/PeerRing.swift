/// The consistent-hash ring the shipped HAProxy configuration routes blobs
/// by (`balance hash`, `hash-type consistent` with its default function,
/// `sdbm` then the avalanche, servers keyed by their `id`), so that a Berth
/// node computes the same owner for a digest as the balancer does.
///
/// Member `i` (0-based, in `peers:` order) is HAProxy's server `id i+1`: the
/// servers are listed in the same order, or carry explicit ids. Each member
/// sits at 16 points, `fullHash(id × 4096 + n)`; a key's owner is the member
/// at the point nearest `fullHash(sdbm(key))`, before or after it, on the ring of the
/// members not excluded (HAProxy's `chash_get_server_hash`).
public struct PeerRing: Sendable {
    struct Point: Comparable {
        let key: UInt32
        let member: Int
        static func < (a: Point, b: Point) -> Bool { (a.key, a.member) < (b.key, b.member) }
    }
    private let points: [Point]
    public let memberCount: Int

    /// Points per member: HAProxy's `BE_WEIGHT_SCALE` at the default weight 1.
    static let pointsPerMember = 16
    /// HAProxy's `SRV_EWGHT_RANGE`: how far apart two servers' point seeds are.
    static let idStride: UInt32 = 4096

    public init(memberCount: Int) {
        self.memberCount = memberCount
        points = (0..<memberCount).flatMap { m in
            (0..<Self.pointsPerMember).map { n in
                Point(key: Self.fullHash(UInt32(m + 1) &* Self.idStride &+ UInt32(n)), member: m)
            }
        }.sorted()
    }

    /// The member owning `key` among those `excluded` leaves in; nil when it leaves none.
    public func owner(of key: some Sequence<UInt8>, excluding excluded: (Int) -> Bool = { _ in false }) -> Int? {
        let hash = Self.fullHash(Self.sdbm(key))
        // The first point at or after the hash (wrapping), then the nearest live point on either side.
        var lo = 0, hi = points.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if points[mid].key < hash { lo = mid + 1 } else { hi = mid }
        }
        guard let next = live(from: lo, step: 1, excluded),
              let prev = live(from: (next - 1 + points.count) % points.count, step: -1, excluded) else { return nil }
        let (n, p) = (points[next], points[prev])
        if n.member == p.member { return n.member }
        return hash &- p.key <= n.key &- hash ? p.member : n.member
    }

    /// The first point from `start` on (wrapping) whose member is not excluded.
    private func live(from start: Int, step: Int, _ excluded: (Int) -> Bool) -> Int? {
        guard !points.isEmpty else { return nil }
        var i = start % points.count
        for _ in 0..<points.count {
            if !excluded(points[i].member) { return i }
            i = (i + step + points.count) % points.count
        }
        return nil
    }

    /// HAProxy's `hash_sdbm` over the key's bytes.
    static func sdbm(_ key: some Sequence<UInt8>) -> UInt32 {
        var h: UInt32 = 0
        for c in key { h = UInt32(c) &+ (h << 6) &+ (h << 16) &- h }
        return h
    }

    /// HAProxy's `full_hash`: Bob Jenkins' 32-bit integer avalanche, times a large prime.
    static func fullHash(_ x: UInt32) -> UInt32 {
        var a = x
        a = (a &+ 0x7ed5_5d16) &+ (a << 12)
        a = (a ^ 0xc761_c23c) ^ (a >> 19)
        a = (a &+ 0x1656_67b1) &+ (a << 5)
        a = (a &+ 0xd3a2_646c) ^ (a << 9)
        a = (a &+ 0xfd70_46c5) &+ (a << 3)
        a = (a ^ 0xb55a_4f09) ^ (a >> 16)
        return a &* 3_221_225_473
    }
}
