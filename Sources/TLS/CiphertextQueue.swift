#if canImport(Glibc)
import Glibc
#endif

/// Ciphertext OpenSSL has written and the socket has not taken yet: the
/// outgoing half of `TLSTransport`'s BIO.
///
/// Bytes are appended at the back (one copy, from OpenSSL's record buffer) and
/// written to the socket from the front; sent bytes are skipped by moving an
/// offset, never copied out. The storage is held only while bytes wait: when
/// the queue drains it goes back to a per-thread spare (see `Spare`), so an
/// idle connection holds none and a busy loop reuses one buffer instead of
/// calling malloc (and taking page faults) per flush.
///
/// Loop thread only; not `Sendable`.
final class CiphertextQueue {
    private var storage: UnsafeMutableRawBufferPointer?
    private var start = 0
    private var end = 0
    private let spare: Spare

    /// The smallest buffer allocated: a few full TLS records.
    static let minimumCapacity = 64 * 1024

    init(spare: Spare = .perThread) {
        self.spare = spare
    }

    deinit { storage?.deallocate() }

    /// Bytes waiting.
    var count: Int { end - start }
    var isEmpty: Bool { start == end }
    /// Bytes of storage held now (0 when drained).
    var capacity: Int { storage?.count ?? 0 }

    /// The waiting bytes, front first; valid until the next mutation.
    var readable: UnsafeRawBufferPointer {
        guard let storage else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(rebasing: storage[start..<end])
    }

    /// Appends `bytes`, taking the spare buffer, moving the waiting bytes to
    /// the front or growing as needed.
    func append(_ bytes: UnsafeRawBufferPointer) {
        guard let source = bytes.baseAddress, bytes.count > 0 else { return }
        reserveTail(bytes.count)
        (storage!.baseAddress! + end).copyMemory(from: source, byteCount: bytes.count)
        end += bytes.count
    }

    /// Drops the first `n` waiting bytes (the socket took them). When none
    /// remain the storage goes back to the spare.
    func consume(_ n: Int) {
        precondition(n >= 0 && n <= count, "consumed \(n) of \(count) bytes")
        start += n
        if start == end { release() }
    }

    private func release() {
        start = 0
        end = 0
        guard let s = storage else { return }
        storage = nil
        spare.give(s)
    }

    private func reserveTail(_ n: Int) {
        if storage == nil {
            storage = spare.take(atLeast: max(n, Self.minimumCapacity))
            return
        }
        let s = storage!
        if s.count - end >= n { return }
        let waiting = end - start
        if waiting + n <= s.count && start >= waiting {
            // Room enough once the sent prefix is gone, and the move cannot overlap.
            s.baseAddress!.copyMemory(from: s.baseAddress! + start, byteCount: waiting)
        } else {
            let grown = UnsafeMutableRawBufferPointer.allocate(byteCount: max(2 * s.count, waiting + n), alignment: 16)
            grown.baseAddress!.copyMemory(from: s.baseAddress! + start, byteCount: waiting)
            s.deallocate()
            storage = grown
        }
        start = 0
        end = waiting
    }

    /// At most one idle buffer kept for reuse; bigger buffers than
    /// `maximumKept` are freed instead (a connection that backed up far must
    /// not pin that much memory on the thread).
    final class Spare {
        private var buffer: UnsafeMutableRawBufferPointer?
        let maximumKept: Int

        init(maximumKept: Int = 256 * 1024) { self.maximumKept = maximumKept }
        deinit { buffer?.deallocate() }

        /// Bytes held for reuse.
        var keptCapacity: Int { buffer?.count ?? 0 }

        func take(atLeast n: Int) -> UnsafeMutableRawBufferPointer {
            if let b = buffer, b.count >= n {
                buffer = nil
                return b
            }
            return .allocate(byteCount: n, alignment: 16)
        }

        func give(_ b: UnsafeMutableRawBufferPointer) {
            if b.count > maximumKept || (buffer?.count ?? 0) >= b.count {
                b.deallocate()
                return
            }
            buffer?.deallocate()
            buffer = b
        }

        /// This thread's spare, made on first use and freed with the thread.
        static var perThread: Spare {
            if let p = pthread_getspecific(key) { return Unmanaged<Spare>.fromOpaque(p).takeUnretainedValue() }
            let s = Spare()
            pthread_setspecific(key, Unmanaged.passRetained(s).toOpaque())
            return s
        }

        private static let key: pthread_key_t = {
            var key = pthread_key_t()
            let r = pthread_key_create(&key) { p in p.map { Unmanaged<Spare>.fromOpaque($0).release() } }
            precondition(r == 0, "pthread_key_create failed: \(r)")
            return key
        }()
    }
}
