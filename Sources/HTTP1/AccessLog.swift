#if canImport(Glibc)
import Glibc
#endif
import Reactor
import Synchronization

/// Where access-log lines go: a descriptor (stdout or a file opened for
/// append) written from the blocking pool, never from an event loop.
///
/// Each loop renders its lines into a buffer of its own and hands them over
/// in chunks (64 KiB, or what 100 ms gathered: see `LoopContext`), so a loop
/// takes the lock and a pool thread wakes up a few times a second, not once
/// per request. The first chunk appended to an idle log submits one pool job,
/// which writes whatever has gathered until nothing is pending. Lines are in
/// order per loop; across loops, chunks interleave. The buffer is bounded: past `capacity` bytes lines are dropped and counted,
/// with one warning when dropping starts and one with the count once the
/// writer has caught up. A failed write loses its batch; it is reported once,
/// and again when writing works again.
public final class AccessLog: @unchecked Sendable {  // mutable state behind `state`; the rest immutable
    private struct State {
        var pending: [UInt8] = []
        var isWriting = false
        var dropped = 0
        var isFailing = false
        var isClosed = false
    }

    private let state = Mutex(State())
    private let fd: Int32
    private let ownsDescriptor: Bool
    private let pool: BlockingPool
    /// Most bytes waiting to be written.
    public let capacity: Int
    private let warn: @Sendable (String) -> Void

    /// Lines go to `fd` (closed in `close()` when `ownsDescriptor`).
    public init(fd: Int32, ownsDescriptor: Bool, pool: BlockingPool, capacity: Int = 4 << 20,
                warn: @escaping @Sendable (String) -> Void) {
        self.fd = fd
        self.ownsDescriptor = ownsDescriptor
        self.pool = pool
        self.capacity = capacity
        self.warn = warn
    }

    /// `stdout`, or a file path opened for append (created 0640 if missing).
    public static func open(_ destination: String, pool: BlockingPool, warn: @escaping @Sendable (String) -> Void) throws -> AccessLog {
        if destination == "stdout" { return AccessLog(fd: 1, ownsDescriptor: false, pool: pool, warn: warn) }
        let fd = try Posix.open(path: destination, flags: O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, mode: 0o640)
        return AccessLog(fd: fd, ownsDescriptor: true, pool: pool, warn: warn)
    }

    /// Queues rendered lines, `lines` of them (any thread).
    public func append(_ bytes: [UInt8], lines: Int = 1) {
        bytes.withUnsafeBytes { append($0, lines: lines) }
    }

    /// Queues rendered lines, `lines` of them, copying `bytes` (any thread).
    public func append(_ bytes: UnsafeRawBufferPointer, lines: Int) {
        let (submit, startedDropping) = state.withLock { s -> (Bool, Bool) in
            if s.isClosed { return (false, false) }
            guard s.pending.count + bytes.count <= capacity else {
                let first = s.dropped == 0
                s.dropped += lines
                return (false, first)
            }
            s.pending.append(contentsOf: bytes)
            if s.isWriting { return (false, false) }
            s.isWriting = true
            return (true, false)
        }
        if startedDropping { warn("access log: \(capacity) bytes wait to be written; dropping lines until the writer catches up") }
        if submit { pool.submit { [self] in drain() } }
    }

    /// Writes until nothing is pending. One caller at a time: the pool job
    /// that `append` submitted, or `close()` once the pool has stopped. Two
    /// buffers take turns: loops fill one while this writes the other.
    private func drain() {
        var batch: [UInt8] = []
        while true {
            let dropped = state.withLock { s -> Int? in
                guard !s.pending.isEmpty else {
                    s.isWriting = false
                    defer { s.dropped = 0 }
                    return s.dropped
                }
                batch.removeAll(keepingCapacity: true)
                swap(&batch, &s.pending)
                return nil
            }
            if let dropped {
                if dropped > 0 { warn("access log: \(dropped) lines dropped while the writer was behind") }
                return
            }
            write(batch)
        }
    }

    private func write(_ bytes: [UInt8]) {
        let failure: Error?
        do {
            try bytes.withUnsafeBytes { try Posix.writeAll(fd: fd, $0) }
            failure = nil
        } catch {
            failure = error
        }
        let wasFailing = state.withLock { s in
            defer { s.isFailing = failure != nil }
            return s.isFailing
        }
        if let failure, !wasFailing {
            warn("access log: write failed (\(failure)); lines are lost until writing works again")
        } else if failure == nil && wasFailing {
            warn("access log: writing again")
        }
    }

    /// Writes what is still pending, then closes a file. Call once no loop
    /// appends any more and the pool has stopped (so no `drain` runs);
    /// later lines are dropped.
    public func close() {
        drain()
        state.withLock { $0.isClosed = true }
        if ownsDescriptor { Posix.close(fd: fd) }
    }
}
