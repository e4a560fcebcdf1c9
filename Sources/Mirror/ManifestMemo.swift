import OCI
import Synchronization

/// Recently served manifests kept in memory, by digest, so a hit is one
/// `write` instead of open, fstat, sendfile and close. Content-addressed:
/// an entry can never be stale. Bounded by bytes; when full, the oldest half
/// (by insertion) goes.
final class ManifestMemo: @unchecked Sendable {  // state behind `state`
    private struct State {
        var bytes: [Digest: [UInt8]] = [:]
        var order: [Digest] = []
        var total = 0
    }
    private let state = Mutex(State())
    let limit: Int

    init(limit: Int = 32 << 20) { self.limit = limit }

    func get(_ d: Digest) -> [UInt8]? { state.withLock { $0.bytes[d] } }

    func put(_ d: Digest, _ body: [UInt8]) {
        guard body.count <= limit / 16 else { return }
        state.withLock { s in
            guard s.bytes[d] == nil else { return }
            if s.total + body.count > limit {
                let drop = s.order.count / 2
                for old in s.order.prefix(drop) { s.total -= s.bytes.removeValue(forKey: old)?.count ?? 0 }
                s.order.removeFirst(drop)
            }
            s.bytes[d] = body
            s.order.append(d)
            s.total += body.count
        }
    }
}
