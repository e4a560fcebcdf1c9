#if canImport(Glibc)
import Glibc
#endif
import Reactor
import OCI
import Synchronization

/// One blob being fetched into the cache, shared by every client that wants it.
///
/// The fetch (driven by whoever started it, on its loop) appends bytes: they
/// are hashed and written to a temp file. Readers on any loop subscribe and
/// send from that file as it grows, each from its own offset (a Range request
/// joins the same fill). When the last byte arrives the digest is checked:
/// only then may a reader send a body's final byte, so a client never takes a
/// corrupt blob for a whole one. The file is then fsynced and renamed into the
/// store on the blocking pool. A fill runs to the end even if every reader
/// has left.
///
/// A fill that cannot be cached (over the budget, or the disk refused a
/// write) becomes a relay: bytes past the file's end are kept in a window of
/// the latest `relayWindow` bytes, shared by every reader, and new requests
/// keep joining while the window still starts where the file ends. A relay
/// nobody reads any more is abandoned (`onAbandoned` cancels its fetch).
public final class BlobFill: @unchecked Sendable {  // mutable state behind `state`; `hashing` is fed from the owner loop only
    public enum Outcome: Equatable, Sendable {
        case filling
        case verified
        /// The upstream answered `status` (404, 429, …) or the transfer broke (status 0).
        case failed(status: Int, retryAfter: String?, reason: String)
    }

    public struct Progress: Equatable, Sendable {
        /// Bytes received from the upstream (and hashed).
        public var written: UInt64 = 0
        /// Bytes readable from `file`: all of `written`, unless the fill
        /// turned into a relay (no room, or a write failed), after which later
        /// bytes reach readers only through their `relay` callback.
        public var inFile: UInt64 = 0
        public var total: UInt64?
        public var outcome: Outcome = .filling
        public var isRelay = false
    }

    public let digest: Digest
    public let ownerLoop: EventLoop
    public let file: FileDescriptor
    let tempPath: String
    unowned let registry: FillRegistry
    private let hashing: HashPipeline
    private let state = Mutex(State())

    private struct State {
        var progress = Progress()
        var reserved: UInt64 = 0
        var subscribers: [Subscriber] = []
        /// Relayed bytes past `inFile`, oldest first, contiguous.
        var window: [(offset: UInt64, bytes: [UInt8])] = []
        var windowBytes = 0
        /// True once the window dropped bytes: a reader from the start can no longer follow.
        var windowMoved = false
        var onAbandoned: (() -> Void)?
    }

    /// The relayed bytes one relay keeps for its readers (a reader further
    /// behind than this is cut, so that it retries).
    public static let relayWindow = 16 << 20
    /// All relay windows together stay under this (a window shrinks to its
    /// latest chunk rather than pass it).
    public static let relayMemoryCap = 256 << 20
    static let relayMemory = Atomic<Int>(0)

    /// Bytes held in relay windows now, across fills (tests, metrics).
    public static var relayMemoryInUse: Int { relayMemory.load(ordering: .relaxed) }

    /// A reader's callback on its loop; `pending` coalesces notifications.
    final class Subscriber: @unchecked Sendable {  // `pending` is atomic; callbacks run on `loop` only
        let loop: EventLoop
        let callback: (Progress) -> Void
        let pending = Atomic<Bool>(false)
        let cancelled = Atomic<Bool>(false)
        init(loop: EventLoop, callback: @escaping (Progress) -> Void) {
            self.loop = loop
            self.callback = callback
        }
    }

    init(digest: Digest, ownerLoop: EventLoop, tempPath: String, file: FileDescriptor, registry: FillRegistry) {
        self.digest = digest
        self.ownerLoop = ownerLoop
        self.tempPath = tempPath
        self.file = file
        self.registry = registry
        self.hashing = HashPipeline(pool: registry.pool)
    }

    public var progress: Progress { state.withLock { $0.progress } }

    /// Budget bytes reserved for this fill; returned when it ends.
    public var reserved: UInt64 {
        get { state.withLock { $0.reserved } }
        set { state.withLock { $0.reserved = newValue } }
    }

    /// Calls `callback` on `loop` after each change, until `unsubscribe`. It
    /// is not called for the state at subscription: read `progress` after
    /// subscribing (no change can fall between the two). In a relay, bytes
    /// past `inFile` are read with `relayed(at:)`.
    public func subscribe(on loop: EventLoop, _ callback: @escaping (Progress) -> Void) -> AnyObject {
        let s = Subscriber(loop: loop, callback: callback)
        state.withLock { $0.subscribers.append(s) }
        return s
    }

    public func unsubscribe(_ token: AnyObject) {
        guard let s = token as? Subscriber else { return }
        s.cancelled.store(true, ordering: .relaxed)
        let (abandoned, ended) = state.withLock { st -> ((() -> Void)?, Bool) in
            st.subscribers.removeAll { $0 === s }
            guard st.subscribers.isEmpty, st.progress.isRelay else { return (nil, false) }
            return st.progress.outcome == .filling ? (st.onAbandoned, false) : (nil, true)
        }
        // Nothing will be cached and nobody reads: stop downloading (on the owner loop).
        if let abandoned { ownerLoop.execute(abandoned) }
        if ended { dropWindow() }
    }

    /// Clients following the fill now.
    public var readerCount: Int { state.withLock { $0.subscribers.count } }

    /// What the fetch does when a relay has no reader left (cancel itself).
    public func setOnAbandoned(_ body: @escaping () -> Void) {
        state.withLock { $0.onAbandoned = body }
    }

    /// True while a new reader from byte 0 can still follow this fill: it
    /// has not failed, and no relayed byte has left the window.
    public var isJoinable: Bool {
        state.withLock { s in
            if case .failed = s.progress.outcome { return false }
            return !s.windowMoved
        }
    }

    /// A relay's bytes from `offset`.
    public enum RelayRead {
        /// Bytes starting at the offset asked for (at least one).
        case bytes(ArraySlice<UInt8>)
        /// Not received yet.
        case notYet
        /// Dropped from the window: this reader fell too far behind.
        case gone
    }

    /// Relayed bytes from `offset` (at or past `inFile`), as far as one chunk goes.
    public func relayed(at offset: UInt64) -> RelayRead {
        state.withLock { s in
            guard let first = s.window.first else {
                return offset >= s.progress.written ? .notYet : .gone
            }
            if offset < first.offset { return .gone }
            if offset >= s.progress.written { return .notYet }
            // Chunks are contiguous: find the one holding `offset` (readers are mostly near the end).
            var i = s.window.count - 1
            while s.window[i].offset > offset { i -= 1 }
            let c = s.window[i]
            return .bytes(c.bytes[Int(offset - c.offset)...])
        }
    }

    private func keepRelayed(_ chunk: [UInt8], at offset: UInt64) {
        let (dropped, moved) = state.withLock { s -> (Int, Bool) in
            s.window.append((offset, chunk))
            s.windowBytes += chunk.count
            var dropped = 0
            let total = BlobFill.relayMemory.add(chunk.count, ordering: .relaxed).newValue
            var over = total - BlobFill.relayMemoryCap
            while s.window.count > 1 && (s.windowBytes > BlobFill.relayWindow || over > 0) {
                let n = s.window.removeFirst().bytes.count
                s.windowBytes -= n
                dropped += n
                over -= n
            }
            let first = dropped > 0 && !s.windowMoved
            if dropped > 0 { s.windowMoved = true }
            return (dropped, first)
        }
        if dropped > 0 { _ = BlobFill.relayMemory.subtract(dropped, ordering: .relaxed) }
        // New requests can no longer follow from the start: let them fetch anew.
        if moved { registry.remove(digest, ifStill: self) }
    }

    /// Frees the window of an ended relay once no reader is left.
    private func dropWindow() {
        let n = state.withLock { s -> Int in
            guard s.subscribers.isEmpty else { return 0 }
            let n = s.windowBytes
            s.window = []
            s.windowBytes = 0
            s.windowMoved = true
            return n
        }
        if n > 0 { _ = BlobFill.relayMemory.subtract(n, ordering: .relaxed) }
    }

    private func notify(_ s: Subscriber) {
        if s.loop === ownerLoop && s.loop.inLoop {
            s.callback(progress)
            return
        }
        guard !s.pending.exchange(true, ordering: .acquiringAndReleasing) else { return }
        s.loop.execute { [self] in
            s.pending.store(false, ordering: .releasing)
            if !s.cancelled.load(ordering: .relaxed) { s.callback(progress) }
        }
    }

    private func notifyAll() {
        for s in state.withLock({ $0.subscribers }) { notify(s) }
    }

    // MARK: the fetch side (owner loop)

    /// The body's length, once the upstream said it.
    public func setTotal(_ total: UInt64) {
        state.withLock { $0.progress.total = total }
        notifyAll()
    }

    /// Writes the next bytes and queues them for hashing. Returns false when
    /// hashing lags: pause the producer until `whenReady`. Throws on a write
    /// error (ENOSPC, EIO).
    @discardableResult
    public func append(_ bytes: UnsafeRawBufferPointer) -> Bool {
        let (base, relaying) = state.withLock { ($0.progress.written, $0.progress.isRelay) }
        if !relaying {
            do { try write(bytes, at: base) } catch {
                // ENOSPC, EIO: carry on as a relay for the readers attached; cache nothing.
                registry.store.log("fill \(digest): \(error); relaying uncached from here")
                relayOnly()
            }
        }
        let (over, relayNow) = state.withLock { s -> (Bool, Bool) in
            s.progress.written += UInt64(bytes.count)
            if !s.progress.isRelay { s.progress.inFile = s.progress.written }
            let over = s.progress.total.map { s.progress.written > $0 } ?? false
            return (over, s.progress.isRelay)
        }
        if over { fail(status: 0, retryAfter: nil, reason: "upstream sent more bytes than its Content-Length"); return true }
        let keepGoing = hashing.enqueue(bytes)
        if relayNow { keepRelayed([UInt8](bytes), at: base) }
        notifyAll()
        return keepGoing
    }

    private func write(_ bytes: UnsafeRawBufferPointer, at base: UInt64) throws {
        do { try Posix.pwriteAll(fd: file.fd, bytes, offset: off_t(base)) } catch let e as IOError {
            throw IOError(errno: e.errno, call: "pwrite \(tempPath)")
        }
    }

    /// From now on bytes past the file go only to readers, through the relay
    /// window (no room in the budget, or the disk refused a write). Nothing of
    /// this fill will be cached.
    public func relayOnly() {
        let was = state.withLock { s -> Bool in
            defer { s.progress.isRelay = true }
            return s.progress.isRelay
        }
        if !was { registry.counts.relayed.add(1, ordering: .relaxed) }
    }

    /// Runs `body` on the owner loop once hashing has caught up.
    public func whenReady(_ body: @escaping () -> Void) {
        let loop = ownerLoop
        hashing.whenBelowLimit { loop.execute(body) }
    }

    /// The upstream body ended: once hashing catches up, verify, publish, tell
    /// the readers. `onCommitted` runs once, on the pool or the owner loop.
    public func finish(store: BlobStore, pool: BlockingPool, onCommitted: @escaping (Bool) -> Void = { _ in }) {
        let loop = ownerLoop
        hashing.finish { [self] hex in
            loop.execute { self.verify(hex, store: store, pool: pool, onCommitted: onCommitted) }
        }
    }

    private func verify(_ hex: String, store: BlobStore, pool: BlockingPool, onCommitted: @escaping (Bool) -> Void) {
        let p = progress
        guard p.outcome == .filling else { return onCommitted(false) }
        if let t = p.total, t != p.written {
            fail(status: 0, retryAfter: nil, reason: "short body: \(p.written) of \(t) bytes")
            return onCommitted(false)
        }
        guard digest.algorithm == .sha256, hex == digest.hex else {
            fail(status: 0, retryAfter: nil, reason: "digest mismatch: upstream bytes hash to sha256:\(hex)")
            return onCommitted(false)
        }
        let relayed = state.withLock { s -> Bool in
            s.progress.total = s.progress.written
            s.progress.outcome = .verified
            s.onAbandoned = nil
            return s.progress.isRelay
        }
        notifyAll()
        if relayed { dropWindow() }
        let (path, file, digest, registry) = (tempPath, self.file, self.digest, self.registry)
        if relayed {
            let reserved = self.reserved
            pool.submit {
                store.discard(tempPath: path)
                store.release(reserved)
                registry.remove(digest, ifStill: self)
                onCommitted(false)
            }
            return
        }
        let (size, reserved) = (p.written, self.reserved)
        pool.submit {
            var ok = true
            do {
                try store.commit(tempPath: path, file: file, digest: digest)
                store.published(digest, size: size, reserved: reserved)
            } catch {
                ok = false
                store.discard(tempPath: path)
                store.release(reserved)
            }
            registry.remove(digest, ifStill: self)
            if ok { registry.counts.stored.add(1, ordering: .relaxed) } else { registry.counts.failed.add(1, ordering: .relaxed) }
            onCommitted(ok)
        }
    }

    /// The fetch failed: readers without a response get `status`, others are cut.
    public func fail(status: Int, retryAfter: String?, reason: String) {
        let changed = state.withLock { s -> Bool in
            guard s.progress.outcome == .filling else { return false }
            s.progress.outcome = .failed(status: status, retryAfter: retryAfter, reason: reason)
            s.onAbandoned = nil
            return true
        }
        guard changed else { return }
        registry.counts.failed.add(1, ordering: .relaxed)
        notifyAll()
        dropWindow()
        let (path, digest, registry, store, reserved) = (tempPath, self.digest, self.registry, registry.store, self.reserved)
        registry.pool.submit {
            store.discard(tempPath: path)
            store.release(reserved)
            registry.remove(digest, ifStill: self)
        }
    }
}

/// The fills in progress, by digest: the single-flight table.
public final class FillRegistry: @unchecked Sendable {  // `fills` behind a lock
    let store: BlobStore
    let pool: BlockingPool
    private let fills = Mutex<[Digest: BlobFill]>([:])
    let counts = Counts()

    /// Since start, for metrics: fills started, requests that joined one,
    /// fills verified and stored, turned into relays (nothing cached), failed.
    public struct Totals: Sendable {
        public var started, joined, stored, relayed, failed: Int
    }

    final class Counts: Sendable {
        let started = Atomic<Int>(0), joined = Atomic<Int>(0), stored = Atomic<Int>(0), relayed = Atomic<Int>(0), failed = Atomic<Int>(0)
    }

    public var totals: Totals {
        Totals(started: counts.started.load(ordering: .relaxed), joined: counts.joined.load(ordering: .relaxed),
               stored: counts.stored.load(ordering: .relaxed), relayed: counts.relayed.load(ordering: .relaxed),
               failed: counts.failed.load(ordering: .relaxed))
    }

    public init(store: BlobStore, pool: BlockingPool) {
        self.store = store
        self.pool = pool
    }

    public enum Lookup {
        case cached
        case joined(BlobFill)
        /// The caller must start fetching into this new fill.
        case started(BlobFill)
    }

    /// Joins the fill for `digest`, or reports it cached, or creates a new
    /// fill owned by `loop`. Checked under one lock, so a fill that completes
    /// meanwhile is seen as cached, never started twice.
    public func lookup(_ digest: Digest, loop: EventLoop) throws -> Lookup {
        try fills.withLock { f in
            if let existing = f[digest], existing.isJoinable {
                counts.joined.add(1, ordering: .relaxed)
                return .joined(existing)
            }
            if store.contains(digest) { return .cached }
            let (path, file) = try store.makeTempFile(for: digest)
            let fill = BlobFill(digest: digest, ownerLoop: loop, tempPath: path, file: file, registry: self)
            counts.started.add(1, ordering: .relaxed)
            f[digest] = fill
            return .started(fill)
        }
    }

    /// The fill under way for `digest`, joined; nil when there is none to join (none is started).
    public func join(_ digest: Digest) -> BlobFill? {
        fills.withLock { f in
            guard let existing = f[digest], existing.isJoinable else { return nil }
            counts.joined.add(1, ordering: .relaxed)
            return existing
        }
    }

    /// Drops `fill` from the table (a newer fill for the same digest stays).
    func remove(_ digest: Digest, ifStill fill: BlobFill) {
        fills.withLock { f in
            if f[digest] === fill { f[digest] = nil }
        }
    }

    /// Fills in progress (tests, metrics).
    public var count: Int { fills.withLock { $0.count } }
}
