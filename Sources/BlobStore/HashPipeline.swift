import Reactor
import Synchronization

/// SHA-256 of a stream, computed on the blocking pool in arrival order, so the
/// loop receiving the bytes spends its time on I/O while another core hashes.
///
/// Bounded: `enqueue` returns false once more than `limit` bytes wait, and
/// the producer pauses until `whenBelowLimit` fires.
final class HashPipeline: @unchecked Sendable {  // all mutable state behind `state`; `hasher` is used by one drain at a time
    static let limit = 4 << 20
    static let resumeBelow = 1 << 20
    /// A drain starts once this much is queued (or at `finish`): one pool hand-off
    /// per 64 KiB read cost four futex calls per chunk between the loop and the pool.
    static let batch = 512 << 10

    private struct State {
        var chunks: [[UInt8]] = []
        var queued = 0
        var draining = false
        var finish: ((String) -> Void)?
        var belowLimit: [() -> Void] = []
    }

    private let hasher = SHA256Hasher()
    private let state = Mutex(State())
    private let pool: BlockingPool

    init(pool: BlockingPool) { self.pool = pool }

    /// Queues a copy of `bytes`. False: pause until `whenBelowLimit`.
    func enqueue(_ bytes: UnsafeRawBufferPointer) -> Bool {
        let chunk = [UInt8](bytes)
        let (start, ok) = state.withLock { s -> (Bool, Bool) in
            s.chunks.append(chunk)
            s.queued += chunk.count
            let start = !s.draining && s.queued >= Self.batch
            if start { s.draining = true }
            return (start, s.queued <= Self.limit)
        }
        if start { pool.submit { [self] in drain() } }
        return ok
    }

    /// Calls `body` (on a pool thread, or at once) when the queue is short again.
    func whenBelowLimit(_ body: @escaping () -> Void) {
        let now = state.withLock { s -> Bool in
            if s.queued <= Self.resumeBelow { return true }
            s.belowLimit.append(body)
            return false
        }
        if now { body() }
    }

    /// Calls `body` with the hex digest once every queued byte is hashed.
    func finish(_ body: @escaping (String) -> Void) {
        enum Next { case now, later, drain }
        let next = state.withLock { s -> Next in
            if s.draining { s.finish = body; return .later }
            if s.chunks.isEmpty { return .now }
            // Less than a batch is waiting: hash it now.
            s.finish = body
            s.draining = true
            return .drain
        }
        switch next {
        case .now: body(hasher.finalizeHex())
        case .later: break
        case .drain: pool.submit { [self] in drain() }
        }
    }

    private func drain() {
        while true {
            // Take everything queued; with nothing left, the drain ends (and a finish waiting for it runs).
            let (batch, done) = state.withLock { s -> ([[UInt8]], ((String) -> Void)?) in
                if s.chunks.isEmpty {
                    s.draining = false
                    defer { s.finish = nil }
                    return ([], s.finish)
                }
                defer { s.chunks.removeAll(keepingCapacity: true) }
                return (s.chunks, nil)
            }
            if batch.isEmpty {
                if let done { done(hasher.finalizeHex()) }
                return
            }
            for chunk in batch { hasher.update(chunk) }
            let hashed = batch.reduce(0) { $0 + $1.count }
            let waiters = state.withLock { s -> [() -> Void] in
                s.queued -= hashed
                guard s.queued <= Self.resumeBelow, !s.belowLimit.isEmpty else { return [] }
                defer { s.belowLimit.removeAll() }
                return s.belowLimit
            }
            for w in waiters { w() }
        }
    }
}
