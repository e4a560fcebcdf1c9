#if canImport(Glibc)
import Glibc
#endif
import Reactor
import OCI
import Synchronization

/// The content-addressed cache on disk, shared by every repository and loop.
///
/// ```
/// <root>/blobs/sha256/<first 2 hex>/<hex>   verified content: layers, configs, manifests
/// <root>/tmp/<hex>.<n>.partial              fills in progress; removed at startup
/// <root>/index.log                          journal of tags, manifest types, repository links, pins
/// <root>/quarantine/<hex>.<unix time>       blobs that failed re-verification (`berth cache verify`)
/// <root>/berth.lock, <root>/admin.sock      held / served by a running `berth serve`
/// ```
///
/// A file appears under `blobs/` only by `rename` after its bytes hashed to
/// its name, were fsynced, and the directory entry was fsynced: after a crash
/// a name under `blobs/` is always whole and right. Temp files have their own
/// directory and suffix, so nothing half-written ever looks like a blob.
///
/// Threading: path helpers and `open` are safe anywhere; `commit`, `discard`,
/// `scanTemp` block (fsync, rename, unlink) and run on the blocking pool.
public final class BlobStore: @unchecked Sendable {  // immutable after init but `budget` (atomic swap not needed: set before serving); counters atomic
    public let root: String
    public let index: CacheIndex
    public let pool: BlockingPool
    public private(set) var budget: Budget
    private let tempSerial = Atomic<Int>(0)
    private let evicting = Atomic<Bool>(false)
    private let evictions = Atomic<Int>(0), evictedBytes = Atomic<Int>(0)
    /// Blobs evicted since start, and their bytes (metrics).
    public var evicted: (count: Int, bytes: Int) { (evictions.load(ordering: .relaxed), evictedBytes.load(ordering: .relaxed)) }
    /// True while pinned bytes alone exceed the low watermark (logged once per change).
    private let pinnedOverLow = Atomic<Bool>(false)
    /// For every tag the upstream has moved, the blobs of its last this-many
    /// digests stay out of eviction (`cache.keep_history`; 0 keeps none).
    public let keepHistory: Int
    /// What each cached manifest references (children and blobs); manifests never change.
    let references = Mutex<[Digest: [Digest]]>([:])
    let keptRefreshQueued = Atomic<Bool>(false)
    /// Called (from any thread) with a line for the log.
    public var log: (String) -> Void = { _ in }

    /// Opens (creating if needed) the cache at `root`, removes leftover temp
    /// files, and loads the index. Blocking: call at startup.
    public init(root: String, pool: BlockingPool, budget: Budget? = nil, keepHistory: Int = 3) throws {
        self.root = root
        self.pool = pool
        self.keepHistory = max(0, keepHistory)
        for dir in [root, root + "/blobs", root + "/blobs/sha256", root + "/tmp"] {
            try Posix.mkdirIfMissing(path: dir)
        }
        BlobStore.removeTempFiles(in: root + "/tmp")
        index = try CacheIndex(path: root + "/index.log", pool: pool)
        self.budget = budget ?? Budget.defaultBudget(for: root)
        index.setQuarantineBytes(quarantinedFiles().reduce(0) { $0 + $1.size })
        refreshKept()
    }

    /// True when pinned content alone exceeds the low watermark: eviction
    /// cannot bring the cache under it (reported in the log and in `du`).
    public var isPinnedOverBudget: Bool { index.usage.pinned > budget.lowBytes }

    /// Logs when pinned bytes cross the low watermark, once per crossing
    /// (not once per eviction round). Call after pins or blobs change.
    public func checkPinnedBudget() {
        let u = index.usage
        let over = u.pinned > budget.lowBytes
        guard pinnedOverLow.exchange(over, ordering: .acquiringAndReleasing) != over else { return }
        if over {
            log("pinned images hold \(u.pinned) bytes, more than the low watermark (\(budget.lowBytes) bytes of the \(budget.maxBytes)-byte budget): "
                + "eviction cannot bring the cache under it; unpin images or raise cache.max_size")
        } else {
            log("pinned images hold \(u.pinned) bytes, back under the low watermark (\(budget.lowBytes) bytes)")
        }
    }

    // MARK: budget

    /// Makes room for `bytes` more under the budget, evicting least recently
    /// used blobs now if needed. False when even evicting every unpinned blob
    /// would not make room: the caller streams without caching.
    public func reserve(_ bytes: UInt64) -> Bool {
        guard bytes <= budget.maxBytes else { return false }
        let u = index.usage
        let (sum, overflow) = u.total.addingReportingOverflow(bytes)
        guard !overflow else { return false }
        if sum > budget.maxBytes {
            let needed = sum - budget.maxBytes
            let victims = index.evictionCandidates(totalling: needed)
            guard victims.reduce(0, { $0 + $1.size }) >= needed else { return false }
            evict(victims, reason: "making room for a \(bytes)-byte fill")
        }
        index.reserve(bytes)
        startEvictionIfOverHigh()
        return true
    }

    public func release(_ bytes: UInt64) { index.release(bytes) }

    /// Records a published blob and returns its reservation.
    public func published(_ digest: Digest, size: UInt64, reserved: UInt64) {
        index.addBlob(digest, size: size, now: Int64(time(nil)))
        index.release(reserved)
        if index.isPinned(digest) { checkPinnedBudget() }
        startEvictionIfOverHigh()
    }

    /// Past the high watermark: evict on the pool down to the low one.
    public func startEvictionIfOverHigh() {
        guard index.usage.total > budget.highBytes, !evicting.exchange(true, ordering: .acquiringAndReleasing) else { return }
        pool.submit { [self] in
            defer { evicting.store(false, ordering: .releasing) }
            let u = index.usage
            guard u.total > budget.lowBytes else { return }
            let victims = index.evictionCandidates(totalling: u.total - budget.lowBytes)
            // Pins over the budget are reported once per crossing (checkPinnedBudget), not per round.
            checkPinnedBudget()
            if victims.isEmpty { return }
            evict(victims, reason: "over the high watermark")
        }
    }

    /// Forgets `victims` now (so nothing new is served from them) and removes
    /// their files on the pool. Readers holding a file open finish from it.
    private func evict(_ victims: [(digest: Digest, size: UInt64)], reason: String) {
        for v in victims { index.removeBlob(v.digest) }
        evictions.add(victims.count, ordering: .relaxed)
        evictedBytes.add(Int(clamping: victims.reduce(0) { $0 + $1.size }), ordering: .relaxed)
        let paths = victims.map { path(for: $0.digest) }
        log("evicting \(victims.count) blobs (\(victims.reduce(0) { $0 + $1.size }) bytes): \(reason)")
        pool.submit { for p in paths { _ = try? Posix.unlink(path: p) } }
    }

    /// Makes the index agree with the files after a crash: adds blobs the
    /// journal missed, forgets entries whose file is gone. Blocking: pool only.
    public func reconcile() -> (added: Int, removed: Int) {
        var onDisk: Set<Digest> = []
        var added = 0, removed = 0
        let base = root + "/blobs/sha256"
        forEachEntry(base) { prefix in
            forEachEntry(base + "/" + prefix) { name in
                guard let d = Digest(algorithm: .sha256, hex: name) else { return }
                onDisk.insert(d)
                if index.size(of: d) == nil {
                    if let st = try? Posix.stat(path: base + "/" + prefix + "/" + name) {
                        index.addBlob(d, size: UInt64(st.st_size), now: Int64(st.st_mtim.tv_sec))
                        added += 1
                    }
                }
            }
        }
        for b in index.blobs() where b.digest.algorithm == .sha256 && !onDisk.contains(b.digest) {
            index.removeBlob(b.digest)
            removed += 1
        }
        return (added, removed)
    }

    private func forEachEntry(_ dir: String, _ body: (String) -> Void) {
        try? Posix.forEachEntry(inDirectory: dir) { body($0) }
    }

    /// Where a verified blob lives.
    public func path(for digest: Digest) -> String {
        "\(root)/blobs/\(digest.algorithm.rawValue)/\(digest.hex.prefix(2))/\(digest.hex)"
    }

    /// Opens a verified blob, nil when it is not cached.
    public func open(_ digest: Digest) -> FileDescriptor? {
        try? FileDescriptor.openForReading(path(for: digest))
    }

    /// True when the blob is cached (a stat; cheap).
    public func contains(_ digest: Digest) -> Bool {
        (try? Posix.stat(path: path(for: digest))) != nil
    }

    /// A new temp file for filling `digest`, open for reading and writing.
    public func makeTempFile(for digest: Digest) throws -> (path: String, file: FileDescriptor) {
        try makeTempFile(label: digest.hex)
    }

    /// A new temp file for content whose digest is not known yet (an archive
    /// member being imported), open for reading and writing.
    public func makeTempFile(label: String) throws -> (path: String, file: FileDescriptor) {
        let path = "\(root)/tmp/\(label).\(getpid()).\(tempSerial.wrappingAdd(1, ordering: .relaxed).newValue).partial"
        let fd = try Posix.open(path: path, flags: O_RDWR | O_CREAT | O_EXCL, mode: 0o644)
        return (path, FileDescriptor(takingOwnershipOf: fd))
    }

    /// Publishes a verified temp file under its digest: fsync, rename, fsync the
    /// directory. Blocking: pool only.
    public func commit(tempPath: String, file: FileDescriptor, digest: Digest) throws {
        try Posix.fsync(fd: file.fd)
        let dir = "\(root)/blobs/\(digest.algorithm.rawValue)/\(digest.hex.prefix(2))"
        try Posix.mkdirIfMissing(path: dir)
        try Posix.rename(from: tempPath, to: path(for: digest))
        // The blob is in place; a directory fsync that fails only weakens crash durability.
        do { try Posix.fsyncDirectory(path: dir) } catch { log("commit \(digest): \(error)") }
    }

    /// Stores small verified content (a manifest) in one go. Blocking: pool only.
    public func store(_ bytes: [UInt8], as digest: Digest) throws {
        if contains(digest) { return }
        let size = UInt64(bytes.count)
        guard reserve(size) else { throw IOError(errno: ENOSPC, call: "store \(digest): over the cache budget") }
        let (path, file): (String, FileDescriptor)
        do { (path, file) = try makeTempFile(for: digest) } catch { release(size); throw error }
        do {
            try bytes.withUnsafeBytes { try Posix.writeAll(fd: file.fd, $0) }
            try commit(tempPath: path, file: file, digest: digest)
            published(digest, size: size, reserved: size)
            scheduleKeptRefresh()  // a child manifest can extend what a kept image covers
        } catch {
            _ = try? Posix.unlink(path: path)
            release(size)
            throw error
        }
    }

    /// Removes a temp file. Blocking: pool only.
    public func discard(tempPath: String) {
        do { _ = try Posix.unlink(path: tempPath) } catch { log("discard \(tempPath): \(error)") }
    }

    /// Reads a whole (small) cached blob, such as a manifest. Blocking: pool only.
    public func read(_ digest: Digest, maxBytes: Int) throws -> [UInt8]? {
        guard let f = open(digest) else { return nil }
        let size = Int(try f.size())
        guard size <= maxBytes else { throw IOError(errno: EFBIG, call: "read \(digest)") }
        var buf = [UInt8](repeating: 0, count: size)
        var off = 0
        while off < size {
            let n = try buf.withUnsafeMutableBytes { try Posix.pread(fd: f.fd, into: UnsafeMutableRawBufferPointer(rebasing: $0[off...]), offset: off_t(off)) }
            if n == 0 { break }
            off += n
        }
        return off == size ? buf : nil
    }

    static func removeTempFiles(in dir: String) {
        try? Posix.forEachEntry(inDirectory: dir) { name in
            if name.hasSuffix(".partial") { _ = try? Posix.unlink(path: dir + "/" + name) }
        }
    }
}

