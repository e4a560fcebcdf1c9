#if canImport(Glibc)
import Glibc
#endif
import Reactor
import OCI
import Synchronization

/// What the cache knows besides blob bytes: tag → digest mappings (with the
/// time they were last confirmed), manifest media types, and which
/// repositories are known to contain which digests.
///
/// Kept in memory behind a lock; every change is appended to a journal
/// (`index.log`, one tab-separated record per line) by the blocking pool, in
/// batches, never on the hot path. Loading replays the journal; a torn last
/// line (crash mid-append) is ignored, and a journal mostly made of
/// superseded records is rewritten at startup.
///
/// Losing the newest records in a crash costs at most an upstream
/// revalidation: blobs themselves are self-describing files.
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

    private struct State {
        var tags: [String: [String: TagRecord]] = [:]
        var mediaTypes: [Digest: String] = [:]
        var links: Set<Link> = []
        var pending: [UInt8] = []
        var flushScheduled = false
    }

    private struct Link: Hashable {
        let repository: String
        let digest: Digest
    }

    private let state = Mutex(State())
    private let path: String
    private let pool: BlockingPool
    private let fd: Int32

    init(path: String, pool: BlockingPool) throws {
        self.path = path
        self.pool = pool
        var s = State()
        let lines = CacheIndex.load(path: path, into: &s)
        let records = s.links.count + s.mediaTypes.count + s.tags.values.reduce(0) { $0 + $1.count }
        if lines > 1000 && lines > 2 * records {
            try CacheIndex.rewrite(path: path, state: s)
        }
        fd = try Posix.open(path: path, flags: O_WRONLY | O_CREAT | O_APPEND, mode: 0o644)
        state.withLock { $0 = s }
    }

    deinit { Posix.close(fd: fd) }

    // MARK: queries

    public func tag(_ repository: String, _ tag: String) -> TagRecord? {
        state.withLock { $0.tags[repository]?[tag] }
    }

    /// Tags known for `repository`, sorted.
    public func tags(of repository: String) -> [String] {
        state.withLock { ($0.tags[repository].map { Array($0.keys) } ?? []).sorted() }
    }

    public func mediaType(of digest: Digest) -> String? {
        state.withLock { $0.mediaTypes[digest] }
    }

    /// True when `repository` is known to contain `digest`.
    public func isLinked(_ repository: String, _ digest: Digest) -> Bool {
        state.withLock { $0.links.contains(Link(repository: repository, digest: digest)) }
    }

    // MARK: changes

    public func setTag(_ repository: String, _ tag: String, _ record: TagRecord) {
        journal("T\t\(repository)\t\(tag)\t\(record.digest)\t\(clean(record.mediaType))\t\(record.confirmedAt)\n") {
            $0.tags[repository, default: [:]][tag] = record
        }
    }

    public func setMediaType(_ digest: Digest, _ mediaType: String) {
        if self.mediaType(of: digest) == mediaType { return }
        journal("M\t\(digest)\t\(clean(mediaType))\n") { $0.mediaTypes[digest] = mediaType }
    }

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

    private func journal(_ line: String, _ change: (inout State) -> Void) {
        let schedule = state.withLock { s -> Bool in
            change(&s)
            s.pending.append(contentsOf: line.utf8)
            if s.flushScheduled { return false }
            s.flushScheduled = true
            return true
        }
        if schedule { pool.submit { [self] in flush() } }
    }

    /// Appends pending records to the journal. Blocking: pool (or shutdown) only.
    public func flush() {
        let bytes = state.withLock { s -> [UInt8] in
            let b = s.pending
            s.pending = []
            s.flushScheduled = false
            return b
        }
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 { if errno == EINTR { continue }; return }
            off += n
        }
    }

    private func clean(_ s: String) -> String {
        String(s.unicodeScalars.filter { $0.value >= 0x20 && $0 != "\t" })
    }

    // MARK: loading

    /// Replays the journal into `s`; returns the number of lines read.
    private static func load(path: String, into s: inout State) -> Int {
        guard let f = fopen(path, "r") else { return 0 }
        defer { fclose(f) }
        var count = 0
        var line: UnsafeMutablePointer<CChar>?
        var cap = 0
        while getline(&line, &cap, f) > 0 {
            count += 1
            let text = String(cString: line!)
            guard text.hasSuffix("\n") else { break }  // torn last record
            let f = text.dropLast().split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            switch (f.first, f.count) {
            case ("T", 6):
                if let d = Digest(f[3]), let t = Int64(f[5]) {
                    s.tags[f[1], default: [:]][f[2]] = TagRecord(digest: d, mediaType: f[4], confirmedAt: t)
                }
            case ("M", 3):
                if let d = Digest(f[1]) { s.mediaTypes[d] = f[2] }
            case ("L", 3):
                if let d = Digest(f[2]) { s.links.insert(Link(repository: f[1], digest: d)) }
            default:
                continue
            }
        }
        free(line)
        return count
    }

    private static func rewrite(path: String, state s: State) throws {
        var out = ""
        for (repo, tags) in s.tags {
            for (tag, r) in tags { out += "T\t\(repo)\t\(tag)\t\(r.digest)\t\(r.mediaType)\t\(r.confirmedAt)\n" }
        }
        for (d, t) in s.mediaTypes { out += "M\t\(d)\t\(t)\n" }
        for l in s.links { out += "L\t\(l.repository)\t\(l.digest)\n" }
        let tmp = path + ".rewrite"
        let fd = try Posix.open(path: tmp, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: 0o644)
        let bytes = Array(out.utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n <= 0 { Posix.close(fd: fd); throw IOError(errno: errno, call: "write \(tmp)") }
            off += n
        }
        fsync(fd)
        Posix.close(fd: fd)
        guard rename(tmp, path) == 0 else { throw IOError(errno: errno, call: "rename \(tmp)") }
    }
}
