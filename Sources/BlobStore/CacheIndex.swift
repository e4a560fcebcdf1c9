#if canImport(Glibc)
import Glibc
#endif
import Reactor
import OCI
import Synchronization

/// What the cache knows besides blob bytes: every blob's size, recency and
/// pin; tag → digest mappings (with the time the upstream last confirmed
/// them); manifest media types; which repositories are known to contain
/// which digests; and the bytes reserved by fills in progress.
///
/// Kept in memory behind one lock: a hit's `touch` moves two integers in
/// `LRUList` and writes nothing. Changes are appended to a journal
/// (`index.log`, one tab-separated record per line) by the blocking pool, in
/// batches. Recency reaches the disk through snapshots: the journal is
/// rewritten, blobs oldest first with their last-use times, periodically and
/// at a clean stop (which ends the file with a `C` record).
///
/// Records: `B digest size lastUse`, `X digest` (evicted), `P digest 0|1`,
/// `T repo tag digest mediaType confirmedAt`, `t repo tag` (untagged),
/// `H repo tag digest firstSeen lastSeen` (a tag's earlier mapping, in snapshots),
/// `h repo tag` (history forgotten), `V digest policy verdict` (a signature
/// verdict, per policy rule and its keys), `R repo subject digest` (a manifest whose
/// `subject` is that digest), `M digest mediaType`,
/// `L repo digest`, `I image manifest pinnedAt covered,…` (a pinned image),
/// `i image` (unpinned), `C time` (clean stop).
///
/// Loading replays the journal; a torn last line (crash mid-append) is cut
/// off the file, so the next append starts on a clean line
/// (`droppedTailBytes` says how much went).
/// `wasCleanlyClosed` tells the store whether to reconcile with the files on disk.
///
/// Durability: appends go at the journal's known length with `pwrite`, so a
/// failed append (ENOSPC) is truncated away and retried from the same offset
/// with the next flush. A snapshot is written to `index.log.snapshot`,
/// fsynced, renamed over the journal and the directory fsynced; if any step
/// fails the old journal stays, with the records it lacked queued again.
public final class CacheIndex: @unchecked Sendable {  // all state behind `state`
    public struct TagRecord: Equatable, Sendable {
        public var digest: Digest
        public var mediaType: String
        /// Unix seconds when the upstream last confirmed the mapping.
        public var confirmedAt: Int64
        public init(digest: Digest, mediaType: String, confirmedAt: Int64) {
            self.digest = digest
            self.mediaType = mediaType
            self.confirmedAt = confirmedAt
        }
    }

    /// A digest a tag has named: when the upstream first and last gave it.
    public struct HistoryEntry: Equatable, Sendable {
        public var digest: Digest
        /// Unix seconds.
        public var firstSeen: Int64
        public var lastSeen: Int64
    }

    /// Digests remembered per tag; the oldest go first beyond this.
    public static let historyLimit = 64

    /// Bytes under the cache directory, as the budget counts them.
    public struct Usage: Equatable, Sendable {
        public var blobs: UInt64
        public var pinned: UInt64
        /// Blobs kept for tag history (`cache.keep_history`) and not pinned.
        public var kept: UInt64 = 0
        public var reserved: UInt64
        public var count: Int
        /// The index file itself.
        public var journal: UInt64
        /// Files moved to `quarantine/` by verification (they count until removed).
        public var quarantine: UInt64 = 0
        public var total: UInt64 { blobs + reserved + journal + quarantine }
    }

    /// An image pinned by `berth cache pin` or `cache.pinned`: what its
    /// reference pointed to when pinned, and every digest that covers
    /// (the manifest, child manifests of an index, configs and layers).
    public struct PinnedImage: Equatable, Sendable {
        public var manifest: Digest
        public var covered: [Digest]
        /// Unix seconds.
        public var pinnedAt: Int64
        public init(manifest: Digest, covered: [Digest], pinnedAt: Int64) {
            self.manifest = manifest
            self.covered = covered
            self.pinnedAt = pinnedAt
        }
    }

    struct State {
        var lru = LRUList()
        var reserved: UInt64 = 0
        var tags: [String: [String: TagRecord]] = [:]
        /// Per repository and tag, the digests it named, least recently seen first.
        var history: [String: [String: [HistoryEntry]]] = [:]
        /// Signature verdicts per manifest digest and policy rule (`signatures:`), as codes.
        var verdicts: [Digest: [String: String]] = [:]
        /// Per repository and subject digest, the cached manifests that name it as their `subject`.
        var referrers: [String: [Digest: Set<Digest>]] = [:]
        /// Blobs held out of eviction for tag history; derived, never journaled.
        var kept: Set<Digest> = []
        var mediaTypes: [Digest: String] = [:]
        var links: Set<Link> = []
        var pins: Set<Digest> = []
        var pinnedImages: [String: PinnedImage] = [:]
        var quarantine: UInt64 = 0
        var pending: [UInt8] = []
        var flushScheduled = false
        var dirtySinceSnapshot = false
        var journalBytes: UInt64 = 0
    }

    struct Link: Hashable {
        let repository: String
        let digest: Digest
    }

    private let state = Mutex(State())
    /// Bumped by every journaled change (tags, links, media types, blobs added or
    /// removed, pins, referrers, verdicts): a reader that remembered a decision made
    /// from the index (a loop's prepared manifest answers) checks it is still current.
    private let changes = Atomic<UInt64>(0)

    /// The count of journaled changes so far (see `changes`). Any thread.
    public var generation: UInt64 { changes.load(ordering: .acquiring) }
    private let path: String
    private let pool: BlockingPool
    /// The open journal; held across its disk I/O (pool threads, shutdown), never by a hit.
    private let file: Mutex<JournalFile>
    private let logSink = Mutex<(String) -> Void>({ _ in })

    private struct JournalFile {
        var fd: Int32
        /// Bytes of whole records in the file: where the next append goes.
        var size: UInt64
        var io: FileIO
        /// The last append failed (logged once until one succeeds).
        var isFailing = false
    }

    /// The writes the index makes to its files: the system's, or a test's
    /// that fails the way a full disk does.
    struct FileIO {
        var pwrite: (Int32, UnsafeRawBufferPointer, off_t) throws -> Void = { try Posix.pwriteAll(fd: $0, $1, offset: $2) }
        var fsync: (Int32) throws -> Void = { try Posix.fsync(fd: $0) }
    }

    /// Tests swap in failing writes here.
    var io: FileIO {
        get { file.withLock { $0.io } }
        set { file.withLock { $0.io = newValue } }
    }

    /// Where write failures are reported; the owner sets it at startup
    /// (`BerthServer` passes the store's log). Called with no lock held.
    public var log: (String) -> Void {
        get { logSink.withLock { $0 } }
        set { logSink.withLock { $0 = newValue } }
    }

    /// True when the journal ended with a clean-stop record.
    public let wasCleanlyClosed: Bool
    /// Journal lines read at startup.
    public let loadedLines: Int
    /// Bytes of a torn last record (a crash mid-append) cut off the journal at startup; 0 normally.
    public let droppedTailBytes: Int

    init(path: String, pool: BlockingPool) throws {
        self.path = path
        self.pool = pool
        // A snapshot a crash interrupted before its rename: never complete, never the journal.
        _ = try? Posix.unlink(path: path + ".snapshot")
        let fd = try Posix.open(path: path, flags: O_RDWR | O_CREAT, mode: 0o644)
        var s = State()
        let loaded: (lines: Int, clean: Bool, complete: Int, dropped: Int)
        do { loaded = try CacheIndex.load(fd: fd, into: &s) } catch { Posix.close(fd: fd); throw error }
        (loadedLines, droppedTailBytes) = (loaded.lines, loaded.dropped)
        wasCleanlyClosed = loaded.clean && loaded.dropped == 0
        if loaded.dropped > 0 {
            // Best effort: appends start at `complete` whatever the file's length, and the torn
            // bytes hold no newline, so any left past a shorter append stay a torn tail.
            try? Posix.ftruncate(fd: fd, length: off_t(loaded.complete))
            try? Posix.fsync(fd: fd)
        }
        s.journalBytes = UInt64(loaded.complete)
        file = Mutex(JournalFile(fd: fd, size: UInt64(loaded.complete), io: FileIO()))
        state.withLock { $0 = s }
    }

    deinit { Posix.close(fd: file.withLock { $0.fd }) }

    // MARK: blobs

    public var usage: Usage {
        state.withLock {
            Usage(blobs: $0.lru.bytes, pinned: $0.lru.pinnedBytes, kept: $0.lru.keptBytes, reserved: $0.reserved, count: $0.lru.count,
                  journal: $0.journalBytes + UInt64($0.pending.count), quarantine: $0.quarantine)
        }
    }

    /// Size of a cached blob, nil when the index does not know it.
    public func size(of digest: Digest) -> UInt64? {
        state.withLock { $0.lru.node(digest)?.size }
    }

    public func lastUse(of digest: Digest) -> Int64? {
        state.withLock { $0.lru.node(digest)?.lastUse }
    }

    /// Records a hit. Memory only: no syscall, no allocation.
    @inline(__always)
    public func touch(_ digest: Digest, now: Int64) {
        state.withLock { _ = $0.lru.touch(digest, at: now) }
    }

    /// Records a blob published in the store.
    public func addBlob(_ digest: Digest, size: UInt64, now: Int64) {
        journal("B\t\(digest)\t\(size)\t\(now)\n") { s in
            s.lru.insert(digest, size: size, lastUse: now)
            if s.pins.contains(digest) { s.lru.setPinned(digest, true) }
            if s.kept.contains(digest) { s.lru.setKept(digest, true) }
        }
    }

    /// Forgets a blob (evicted or found missing).
    public func removeBlob(_ digest: Digest) {
        journal("X\t\(digest)\n") { s in s.lru.remove(digest) }
    }

    /// Takes `bytes` out of the budget for a fill. Always succeeds; the
    /// caller checks `usage` against the budget first.
    public func reserve(_ bytes: UInt64) {
        state.withLock { $0.reserved += bytes }
    }

    public func release(_ bytes: UInt64) {
        state.withLock { $0.reserved -= min($0.reserved, bytes) }
    }

    /// Oldest unpinned blobs whose sizes add up to at least `bytes`.
    public func evictionCandidates(totalling bytes: UInt64) -> [(digest: Digest, size: UInt64)] {
        state.withLock { $0.lru.oldest(totalling: bytes).map { ($0.digest, $0.size) } }
    }

    /// Every blob with its size, last use and pin, least recent first.
    public func blobs() -> [(digest: Digest, size: UInt64, lastUse: Int64, pinned: Bool)] {
        state.withLock { $0.lru.allOldestFirst().map { ($0.digest, $0.size, $0.lastUse, $0.pinned) } }
    }

    // MARK: pins

    public func setPinned(_ digests: [Digest], _ pinned: Bool) {
        var lines = ""
        for d in digests { lines += "P\t\(d)\t\(pinned ? 1 : 0)\n" }
        journal(lines) { s in
            for d in digests {
                if pinned { s.pins.insert(d) } else { s.pins.remove(d) }
                s.lru.setPinned(d, pinned)
            }
        }
    }

    public func isPinned(_ digest: Digest) -> Bool { state.withLock { $0.pins.contains(digest) } }

    public var pinnedDigests: Set<Digest> { state.withLock { $0.pins } }

    // MARK: kept for history

    /// Replaces the set of blobs held out of eviction for tag history. Memory only.
    public func setKept(_ digests: Set<Digest>) {
        state.withLock { s in
            for d in s.kept where !digests.contains(d) { s.lru.setKept(d, false) }
            for d in digests where !s.kept.contains(d) { s.lru.setKept(d, true) }
            s.kept = digests
        }
    }

    public var keptDigests: Set<Digest> { state.withLock { $0.kept } }

    /// Pins `image` (a reference as the user wrote it, normalised): every
    /// covered digest is pinned (the manifest included). Re-pinning an image
    /// whose reference moved unpins what only its old target covered.
    public func pinImage(_ image: String, _ pin: PinnedImage) {
        let image = clean(image)
        var all = pin
        if !all.covered.contains(pin.manifest) { all.covered.insert(pin.manifest, at: 0) }
        journal { s in
            var lines = "I\t\(image)\t\(all.manifest)\t\(all.pinnedAt)\t\(all.covered.map(\.description).joined(separator: ","))\n"
            let old = s.pinnedImages[image]
            s.pinnedImages[image] = all
            for d in all.covered where !s.pins.contains(d) {
                lines += "P\t\(d)\t1\n"
                s.pins.insert(d)
                s.lru.setPinned(d, true)
            }
            lines += Self.unpinUncovered(old?.covered ?? [], &s)
            return lines
        }
    }

    /// Unpins `image`: its digests stay pinned only where another pinned
    /// image covers them. False when the image was not pinned.
    @discardableResult
    public func unpinImage(_ image: String) -> Bool {
        var found = false
        journal { s in
            guard let old = s.pinnedImages.removeValue(forKey: image) else { return "" }
            found = true
            return "i\t\(image)\n" + Self.unpinUncovered(old.covered, &s)
        }
        return found
    }

    /// Unpins those of `digests` no pinned image covers (a pin that did not complete).
    public func releasePins(_ digests: [Digest]) {
        journal { s in Self.unpinUncovered(digests, &s) }
    }

    /// Unpins those of `digests` no pinned image covers; returns their records.
    private static func unpinUncovered(_ digests: [Digest], _ s: inout State) -> String {
        var covered: Set<Digest> = []
        for p in s.pinnedImages.values { covered.formUnion(p.covered) }
        var lines = ""
        for d in digests where !covered.contains(d) && s.pins.contains(d) {
            lines += "P\t\(d)\t0\n"
            s.pins.remove(d)
            s.lru.setPinned(d, false)
        }
        return lines
    }

    /// Every pinned image, sorted by name.
    public func pinnedImages() -> [(image: String, pin: PinnedImage)] {
        state.withLock { $0.pinnedImages.map { ($0.key, $0.value) } }.sorted { $0.image < $1.image }
    }

    public func pinnedImage(_ image: String) -> PinnedImage? { state.withLock { $0.pinnedImages[image] } }

    // MARK: quarantine

    /// Sets the bytes held in `quarantine/` (scanned at open, grown by verification, shrunk by gc).
    public func setQuarantineBytes(_ bytes: UInt64) { state.withLock { $0.quarantine = bytes } }
    public func addQuarantineBytes(_ bytes: UInt64) { state.withLock { $0.quarantine += bytes } }

    // MARK: tags, media types, links

    public func tag(_ repository: String, _ tag: String) -> TagRecord? {
        state.withLock { $0.tags[repository]?[tag] }
    }

    /// Tags known for `repository`, sorted.
    public func tags(of repository: String) -> [String] {
        state.withLock { ($0.tags[repository].map { Array($0.keys) } ?? []).sorted() }
    }

    /// Every (repository, tag, record), sorted.
    public func allTags() -> [(repository: String, tag: String, record: TagRecord)] {
        state.withLock { s in
            s.tags.flatMap { repo, tags in tags.map { (repo, $0.key, $0.value) } }
        }.sorted { ($0.repository, $0.tag) < ($1.repository, $1.tag) }
    }

    public func mediaType(of digest: Digest) -> String? {
        state.withLock { $0.mediaTypes[digest] }
    }

    /// True when `repository` is known to contain `digest`.
    public func isLinked(_ repository: String, _ digest: Digest) -> Bool {
        state.withLock { $0.links.contains(Link(repository: repository, digest: digest)) }
    }

    /// Maps a tag (and adds the digest to its history); returns the record it replaced.
    @discardableResult
    public func setTag(_ repository: String, _ tag: String, _ record: TagRecord) -> TagRecord? {
        var old: TagRecord?
        journal("T\t\(repository)\t\(tag)\t\(record.digest)\t\(clean(record.mediaType))\t\(record.confirmedAt)\n") {
            old = $0.tags[repository]?[tag]
            Self.setTag(&$0, repository, tag, record)
        }
        return old
    }

    static func setTag(_ s: inout State, _ repository: String, _ tag: String, _ record: TagRecord) {
        s.tags[repository, default: [:]][tag] = record
        var list = s.history[repository]?[tag] ?? []
        if let i = list.lastIndex(where: { $0.digest == record.digest }) {
            var e = list.remove(at: i)
            e.lastSeen = max(e.lastSeen, record.confirmedAt)
            list.append(e)
        } else {
            list.append(HistoryEntry(digest: record.digest, firstSeen: record.confirmedAt, lastSeen: record.confirmedAt))
            if list.count > historyLimit { list.removeFirst(list.count - historyLimit) }
        }
        s.history[repository, default: [:]][tag] = list
    }

    /// The digests `tag` has named, least recently seen first (the current one last).
    public func history(_ repository: String, _ tag: String) -> [HistoryEntry] {
        state.withLock { $0.history[repository]?[tag] ?? [] }
    }

    /// Tags of `repository` with a history, sorted.
    public func historyTags(of repository: String) -> [String] {
        state.withLock { ($0.history[repository].map { Array($0.keys) } ?? []).sorted() }
    }

    /// Every tag's history: (repository, tag, entries), in no order.
    public func allHistory() -> [(repository: String, tag: String, entries: [HistoryEntry])] {
        state.withLock { s in s.history.flatMap { repo, tags in tags.map { (repo, $0.key, $0.value) } } }
    }

    /// Forgets what `tag` named before (`berth cache rm` of the tag).
    public func forgetHistory(_ repository: String, _ tag: String) {
        journal("h\t\(repository)\t\(tag)\n") { s in Self.forgetHistory(&s, repository, tag) }
    }

    static func forgetHistory(_ s: inout State, _ repository: String, _ tag: String) {
        s.history[repository]?[tag] = nil
        if s.history[repository]?.isEmpty == true { s.history[repository] = nil }
    }

    public func removeTag(_ repository: String, _ tag: String) {
        journal("t\t\(repository)\t\(tag)\n") { s in
            s.tags[repository]?[tag] = nil
            if s.tags[repository]?.isEmpty == true { s.tags[repository] = nil }
        }
    }

    public func setMediaType(_ digest: Digest, _ mediaType: String) {
        if self.mediaType(of: digest) == mediaType { return }
        journal("M\t\(digest)\t\(clean(mediaType))\n") { $0.mediaTypes[digest] = mediaType }
    }

    /// Records that `manifest`, in `repository`, names `subject` as its subject (referrers API).
    public func addReferrer(_ repository: String, subject: Digest, _ manifest: Digest) {
        journal { s in
            s.referrers[repository, default: [:]][subject, default: []].insert(manifest).inserted
                ? "R\t\(repository)\t\(subject)\t\(manifest)\n" : ""
        }
    }

    /// The manifests known to name `subject` in `repository` (they may have been evicted since), sorted.
    public func referrers(_ repository: String, of subject: Digest) -> [Digest] {
        state.withLock { ($0.referrers[repository]?[subject]).map(Array.init) ?? [] }.sorted { $0.description < $1.description }
    }

    /// Records a signature verdict (a code) for `digest` under `policy` (a rule and its keys).
    public func setVerdict(_ digest: Digest, policy: String, _ code: String) {
        let (p, c) = (clean(policy), clean(code))
        journal { s in
            guard s.verdicts[digest]?[p] != c else { return "" }
            s.verdicts[digest, default: [:]][p] = c
            return "V\t\(digest)\t\(p)\t\(c)\n"
        }
    }

    public func verdict(_ digest: Digest, policy: String) -> String? { state.withLock { $0.verdicts[digest]?[policy] } }

    /// Every verdict recorded for `digest`, by policy.
    public func verdicts(of digest: Digest) -> [String: String] { state.withLock { $0.verdicts[digest] ?? [:] } }

    /// Records that `repository` contains each of `digests`.
    public func link(_ repository: String, _ digests: [Digest]) {
        var lines = ""
        state.withLock { s in
            for d in digests where s.links.insert(Link(repository: repository, digest: d)).inserted {
                lines += "L\t\(repository)\t\(d)\n"
            }
        }
        if !lines.isEmpty { journal(lines) { _ in } }
    }

    // MARK: journal

    private func journal(_ line: String, _ change: (inout State) -> Void) {
        journal { s in
            change(&s)
            return line
        }
    }

    /// Applies a change and journals the records it returns, under one lock.
    private func journal(_ change: (inout State) -> String) {
        let schedule = state.withLock { s -> Bool in
            let line = change(&s)
            // Inside the lock, so no reader sees the new state with the old generation
            // after it has read the generation.
            changes.add(1, ordering: .releasing)
            if line.isEmpty { return false }
            s.pending.append(contentsOf: line.utf8)
            s.dirtySinceSnapshot = true
            if s.flushScheduled { return false }
            s.flushScheduled = true
            return true
        }
        if schedule { pool.submit { [self] in flush() } }
    }

    /// Appends pending records to the journal. Blocking: pool (or shutdown) only.
    /// A failed append is logged and its records stay queued for the next.
    public func flush() {
        let message = file.withLock { f in appendPending(&f) }
        if let message { log(message) }
    }

    /// Writes the queued records at the journal's end; on failure cuts off
    /// whatever part reached the file and queues them again, in front.
    /// Returns a line for the log when the journal starts or stops failing.
    private func appendPending(_ f: inout JournalFile) -> String? {
        let bytes = state.withLock { s -> [UInt8] in
            defer { s.pending = [] }
            s.flushScheduled = false
            return s.pending
        }
        if bytes.isEmpty { return nil }
        do {
            try bytes.withUnsafeBytes { try f.io.pwrite(f.fd, $0, off_t(f.size)) }
        } catch {
            // Best effort: the retry overwrites from `size` with these same bytes first, and a
            // crash before it leaves a torn tail that loading cuts off.
            try? Posix.ftruncate(fd: f.fd, length: off_t(f.size))
            state.withLock { s in s.pending = bytes + s.pending }
            if f.isFailing { return nil }
            f.isFailing = true
            return "cannot append to \(path): \(error); its records are kept in memory and retried with the next change or snapshot"
        }
        f.size += UInt64(bytes.count)
        let size = f.size
        state.withLock { $0.journalBytes = size }
        if f.isFailing {
            f.isFailing = false
            return "appending to \(path) works again"
        }
        return nil
    }

    /// Rewrites the journal compactly, blobs oldest first with their last use;
    /// `clean` ends it with a clean-stop record. Blocking: pool (or shutdown) only.
    ///
    /// Throws when the new file could not be written whole and made durable:
    /// the old journal then stays, and the records it lacks are appended to it.
    public func snapshot(clean: Bool = false) throws {
        var notes: [String] = []
        defer { for n in notes { log(n) } }
        try file.withLock { f in
            let (text, taken) = state.withLock { s -> ([UInt8], [UInt8]) in
                defer {
                    s.pending = []
                    s.dirtySinceSnapshot = false
                }
                return (CacheIndex.render(s, clean: clean), s.pending)
            }
            let newFD: Int32
            do {
                newFD = try writeSnapshot(text, io: f.io)
            } catch {
                state.withLock { s in
                    s.pending = taken + s.pending
                    s.dirtySinceSnapshot = true
                }
                notes.append("cannot write a snapshot of \(path) (\(error)); keeping the journal")
                if let n = appendPending(&f) { notes.append(n) }
                throw error
            }
            Posix.close(fd: f.fd)
            f.fd = newFD
            f.size = UInt64(text.count)
            f.isFailing = false
            let size = f.size
            state.withLock { $0.journalBytes = size }
            // The rename is done and the file synced: only the directory entry may not be durable yet.
            do { try Posix.fsyncDirectory(path: directory) } catch {
                notes.append("snapshot of \(path) written, but its directory could not be synced: \(error)")
            }
        }
    }

    /// Writes `text` to `<path>.snapshot`, fsyncs it and renames it over the
    /// journal; returns it open for appending. On any failure the temp file
    /// is removed and the journal untouched.
    private func writeSnapshot(_ text: [UInt8], io: FileIO) throws -> Int32 {
        let tmp = path + ".snapshot"
        let fd = try Posix.open(path: tmp, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: 0o644)
        do {
            try text.withUnsafeBytes { try io.pwrite(fd, $0, 0) }
            try io.fsync(fd)
            try Posix.rename(from: tmp, to: path)
        } catch {
            Posix.close(fd: fd)
            _ = try? Posix.unlink(path: tmp)  // best effort: a leftover is removed at the next start
            throw error
        }
        return fd
    }

    private var directory: String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// True when something changed since the last snapshot.
    public var needsSnapshot: Bool { state.withLock { $0.dirtySinceSnapshot } }

    func clean(_ s: String) -> String {
        String(s.unicodeScalars.filter { $0.value >= 0x20 && $0 != "\t" })
    }
}
