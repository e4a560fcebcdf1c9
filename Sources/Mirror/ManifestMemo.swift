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

/// Keys remembered for a while, shared by every loop: the upstream 404s of
/// tags (a short negative cache). Bounded: past `capacity`, expired keys are
/// dropped, and if none had expired, everything.
final class ExpiringSet: @unchecked Sendable {  // all state behind `state`
    private let state = Mutex<[String: UInt64]>([:])
    let ttlNanos: UInt64
    let capacity: Int

    init(ttlNanos: UInt64, capacity: Int) {
        self.ttlNanos = ttlNanos
        self.capacity = capacity
    }

    func insert(_ key: String, now: UInt64) {
        guard ttlNanos > 0 else { return }
        state.withLock { s in
            if s.count >= capacity {
                s = s.filter { $0.value > now }
                if s.count >= capacity { s.removeAll() }
            }
            s[key] = now + ttlNanos
        }
    }

    func contains(_ key: String, now: UInt64) -> Bool {
        guard ttlNanos > 0 else { return false }
        return state.withLock { ($0[key] ?? 0) > now }
    }
}
