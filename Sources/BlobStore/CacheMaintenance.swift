#if canImport(Glibc)
import Glibc
#endif
import Reactor
import OCI
import Synchronization

/// What `berth cache` does to a cache: listing, removal, garbage collection,
/// re-verification, and pinning what is already cached. The same code runs
/// in the server (behind the admin socket) and in the CLI when no server runs.
///
/// Everything here blocks (manifest reads, unlink, rename, hashing): call it
/// from the blocking pool or a thread of its own, never from an event loop.

/// A manifest and every digest it covers: itself, the child manifests of an
/// index (every platform), their configs and layers.
public struct ManifestCoverage: Equatable, Sendable {
    public var manifest: Digest
    /// Covered digests in discovery order, each once (the manifest first).
    public var covered: [Digest]
    /// Covered digests not in the cache (or manifests that could not be read).
    public var missing: [Digest]
    /// Blob sizes the manifests declare (for what is missing too).
    public var declaredBytes: UInt64
}

/// One line of `berth cache ls`.
public struct CacheEntry: Equatable, Sendable {
    public var repository: String
    /// The tag, or nil for an image pinned by digest.
    public var tag: String?
    public var digest: Digest
    public var mediaType: String
    /// Bytes of the manifest and of every covered blob that is cached.
    public var cachedBytes: UInt64
    public var cachedCount: Int
    public var coveredCount: Int
    /// Most recent use of any cached covered digest (unix seconds, 0 when none).
    public var lastUse: Int64
    public var isPinned: Bool
    /// Signature verdicts recorded for the manifest (`signatures:`), by policy rule: `verified:0`, `unsigned`, ….
    public var verdicts: [String: String] = [:]
}

/// The outcome of `berth cache gc`.
public struct GCResult: Equatable, Sendable {
    public var removed: [Digest] = []
    public var removedBytes: UInt64 = 0
    public var quarantineFilesRemoved = 0
    public var quarantineBytesRemoved: UInt64 = 0
}

/// The outcome of `berth cache verify`.
public struct VerifyResult: Equatable, Sendable {
    public var checked = 0
    public var bytes: UInt64 = 0
    public var seconds: Double = 0
    /// Blobs whose bytes did not hash to their name, now under `quarantine/`.
    public var mismatches: [Digest] = []
    public var quarantined: [String] = []
    /// Files that vanished (evicted) or could not be read while verifying.
    public var unreadable = 0
    public var megabytesPerSecond: Double { seconds > 0 ? Double(bytes) / 1e6 / seconds : 0 }
}

/// Progress of a verification, for a terminal.
public struct VerifyProgress: Equatable, Sendable {
    public var checked: Int
    public var total: Int
    public var bytes: UInt64
    public var totalBytes: UInt64
    public var mismatches: Int
}

/// Which blobs garbage collection removes, as a pure function of the index.
public enum GCSelection {
    /// Blobs no kept manifest references, not a tag's target, not pinned, and
    /// unused for at least `grace` seconds. Manifests removed this way stop
    /// protecting their own references, so the selection repeats until stable.
    ///
    /// - Parameters:
    ///   - blobs: every cached blob with its last use.
    ///   - references: for each cached manifest, the digests it references.
    ///   - roots: tag targets and pinned digests: never removed.
    public static func select(blobs: [(digest: Digest, lastUse: Int64)], references: [Digest: [Digest]],
                              roots: Set<Digest>, now: Int64, grace: Int64) -> Set<Digest> {
        var kept = Set(blobs.map(\.digest))
        let old = Set(blobs.filter { now - $0.lastUse >= grace }.map(\.digest))
        var removed: Set<Digest> = []
        for _ in 0..<64 {  // each round removes a level of manifests: images are a few levels deep
            var referenced: Set<Digest> = []
            for (m, refs) in references where kept.contains(m) { referenced.formUnion(refs) }
            let round = kept.filter { old.contains($0) && !roots.contains($0) && !referenced.contains($0) }
            if round.isEmpty { break }
            kept.subtract(round)
            removed.formUnion(round)
        }
        return removed
    }
}

extension BlobStore {
    // MARK: manifests

    /// A cached manifest, parsed; nil when it is not cached or not a manifest.
    public func cachedManifest(_ digest: Digest) -> ManifestSummary? {
        guard let type = index.mediaType(of: digest),
              let bytes = try? read(digest, maxBytes: ManifestSummary.maxBytes) else { return nil }
        return try? ManifestSummary.parse(bytes, contentType: type)
    }

    /// Everything `manifest` covers, read from the cache (an index's children included).
    public func coverage(of manifest: Digest) -> ManifestCoverage {
        var c = ManifestCoverage(manifest: manifest, covered: [], missing: [], declaredBytes: 0)
        var seen: Set<Digest> = []
        func add(_ d: Digest, size: Int64) {
            guard seen.insert(d).inserted else { return }
            c.covered.append(d)
            c.declaredBytes += UInt64(max(0, size))
            if index.size(of: d) == nil && !contains(d) { c.missing.append(d) }
        }
        add(manifest, size: 0)
        guard let top = cachedManifest(manifest) else {
            if !c.missing.contains(manifest) { c.missing.append(manifest) }
            return c
        }
        var summaries = [top]
        for child in top.manifests {
            add(child.digest, size: child.size)
            if let s = cachedManifest(child.digest) { summaries.append(s) } else if !c.missing.contains(child.digest) {
                c.missing.append(child.digest)
            }
        }
        for s in summaries { for b in s.blobs { add(b.digest, size: b.size) } }
        return c
    }

    /// The tag record for `name:tag`, trying Docker Hub's `library/` form for single names.
    /// `name` may carry an upstream (`ghcr.io/org/x`): that upstream's key is
    /// tried first, then the name without it (the default upstream's key).
    public func resolveTag(_ name: String, _ tag: String) -> (repository: String, record: CacheIndex.TagRecord)? {
        var candidates = [name]
        let (registry, rest) = ImageReference.splitRegistry(name)
        if registry != nil { candidates.append(String(rest)) }
        for n in candidates {
            if let r = index.tag(n, tag) { return (n, r) }
            if !n.contains("/"), let r = index.tag("library/" + n, tag) { return ("library/" + n, r) }
        }
        return nil
    }

    // MARK: ls

    /// Every cached tag and pinned image, sorted by repository and tag.
    public func listing() -> [CacheEntry] {
        let pins = index.pinnedImages()
        let pinnedManifests = Set(pins.map(\.pin.manifest))
        var out: [CacheEntry] = []
        func entry(_ repo: String, _ tag: String?, _ digest: Digest, _ type: String) -> CacheEntry {
            let cov = coverage(of: digest)
            var bytes: UInt64 = 0, count = 0
            var last: Int64 = 0
            for d in cov.covered {
                guard let size = index.size(of: d) else { continue }
                bytes += size
                count += 1
                last = max(last, index.lastUse(of: d) ?? 0)
            }
            return CacheEntry(repository: repo, tag: tag, digest: digest, mediaType: type, cachedBytes: bytes,
                              cachedCount: count, coveredCount: cov.covered.count, lastUse: last,
                              isPinned: pinnedManifests.contains(digest) || index.isPinned(digest), verdicts: index.verdicts(of: digest))
        }
        var listed: Set<String> = []
        for t in index.allTags() {
            out.append(entry(t.repository, t.tag, t.record.digest, t.record.mediaType))
            listed.insert("\(t.repository)@\(t.record.digest)")
        }
        for p in pins {
            // Images pinned by digest (or whose tag moved on) are listed too.
            guard let ref = ImageReference(p.image) else { continue }
            if [ref.qualifiedName, ref.name, "library/\(ref.name)"].contains(where: { listed.contains("\($0)@\(p.pin.manifest)") }) { continue }
            var tag: String?
            if case .tag(let t) = ref.reference { tag = t }
            out.append(entry(ref.qualifiedName, tag, p.pin.manifest, index.mediaType(of: p.pin.manifest) ?? ""))
        }
        return out.sorted { ($0.repository, $0.tag ?? "") < ($1.repository, $1.tag ?? "") }
    }

    // MARK: rm

    /// Why a removal was refused.
    public struct RemoveError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Removes a blob (its file and index record) and any tag that points at
    /// it. Refused for pinned digests. Returns the bytes freed.
    @discardableResult
    public func removeBlob(_ digest: Digest) throws -> UInt64 {
        if index.isPinned(digest) {
            let images = index.pinnedImages().filter { $0.pin.covered.contains(digest) }.map(\.image)
            throw RemoveError(description: "\(digest) is pinned\(images.isEmpty ? "" : " by " + images.joined(separator: ", ")): unpin first")
        }
        let size = index.size(of: digest)
        guard size != nil || contains(digest) else { throw RemoveError(description: "\(digest) is not cached") }
        for t in index.allTags() where t.record.digest == digest { index.removeTag(t.repository, t.tag) }
        index.removeBlob(digest)
        let onDisk = (try? Posix.stat(path: path(for: digest))).map { UInt64($0.st_size) } ?? 0
        removeFile(path(for: digest))
        return size ?? onDisk
    }

    /// Removes a tag mapping and its history (the blobs stay until gc or
    /// eviction). Refused while the image is pinned.
    @discardableResult
    public func removeTag(_ name: String, _ tag: String) throws -> (repository: String, digest: Digest) {
        guard let (repo, rec) = resolveTag(name, tag) else { throw RemoveError(description: "\(name):\(tag) is not cached") }
        let pinned = index.pinnedImages().filter { p in
            guard let r = ImageReference(p.image), case .tag(let t) = r.reference else { return false }
            return t == tag && [name, repo].contains(where: { $0 == r.qualifiedName || $0 == r.name })
        }
        if let p = pinned.first { throw RemoveError(description: "\(p.image) is pinned: unpin first") }
        index.removeTag(repo, tag)
        index.forgetHistory(repo, tag)
        scheduleKeptRefresh()
        return (repo, rec.digest)
    }

    // MARK: gc

    /// Removes blobs no cached manifest references (tag targets, pins and
    /// what tag history keeps stay)
    /// that were not used within `grace` seconds, and quarantined files older
    /// than `grace`.
    public func collectGarbage(grace: Int64, now: Int64 = Int64(time(nil))) -> GCResult {
        let all = index.blobs()
        var references: [Digest: [Digest]] = [:]
        for b in all where index.mediaType(of: b.digest) != nil {
            if let m = cachedManifest(b.digest) { references[b.digest] = m.blobs.map(\.digest) + m.manifests.map(\.digest) }
        }
        var roots = index.pinnedDigests
        for t in index.allTags() { roots.insert(t.record.digest) }
        roots.formUnion(keptManifests())  // what they reference stays through `references`
        let chosen = GCSelection.select(blobs: all.map { ($0.digest, $0.lastUse) }, references: references,
                                        roots: roots, now: now, grace: grace)
        var r = GCResult()
        for b in all where chosen.contains(b.digest) {
            index.removeBlob(b.digest)
            removeFile(path(for: b.digest))
            r.removed.append(b.digest)
            r.removedBytes += b.size
        }
        r.removed.sort()
        for q in quarantinedFiles() where now - q.time >= grace {
            if removeFile(q.path) {
                r.quarantineFilesRemoved += 1
                r.quarantineBytesRemoved += q.size
            }
        }
        index.setQuarantineBytes(quarantinedFiles().reduce(0) { $0 + $1.size })
        return r
    }

    /// Unlinks a file; true when it is gone now. A file already gone is
    /// fine (evicted meanwhile); other failures are logged.
    @discardableResult
    func removeFile(_ path: String) -> Bool {
        do { try Posix.unlink(path: path) } catch {
            log("cannot remove \(path): \(error)")
            return false
        }
        return true
    }

    // MARK: quarantine

    public var quarantineDirectory: String { root + "/quarantine" }

    /// Files under `quarantine/` with their size and quarantine time.
    public func quarantinedFiles() -> [(path: String, size: UInt64, time: Int64)] {
        var out: [(String, UInt64, Int64)] = []
        // No quarantine directory yet means nothing quarantined; a file removed meanwhile is skipped.
        try? Posix.forEachEntry(inDirectory: quarantineDirectory) { name in
            let p = quarantineDirectory + "/" + name
            guard let st = try? Posix.stat(path: p) else { return }
            let t = name.split(separator: ".").last.flatMap { Int64($0) } ?? Int64(st.st_mtim.tv_sec)
            out.append((p, UInt64(st.st_size), t))
        }
        return out
    }

    /// Moves a blob file out of the blob tree to `quarantine/<hex>.<time>` and
    /// forgets it. Returns the new path.
    func quarantine(_ digest: Digest, size: UInt64, now: Int64) throws -> String {
        try Posix.mkdirIfMissing(path: quarantineDirectory)
        var target = "\(quarantineDirectory)/\(digest.hex).\(now)"
        var n = 1
        while (try? Posix.stat(path: target)) != nil && n < 1000 { target = "\(quarantineDirectory)/\(digest.hex).\(now + Int64(n))"; n += 1 }
        try Posix.rename(from: path(for: digest), to: target)
        index.removeBlob(digest)
        index.addQuarantineBytes(size)
        return target
    }

    // MARK: verify

    /// Every blob file under `blobs/` with its size (a directory scan, not the index).
    public func blobFiles() -> [(digest: Digest, size: UInt64)] {
        var out: [(Digest, UInt64)] = []
        for alg in DigestAlgorithm.allCases {
            let base = "\(root)/blobs/\(alg.rawValue)"
            for prefix in Self.entries(base) {
                for name in Self.entries(base + "/" + prefix) {
                    guard let d = Digest(algorithm: alg, hex: name),
                          let st = try? Posix.stat(path: base + "/" + prefix + "/" + name) else { continue }
                    if (st.st_mode & S_IFMT) == S_IFREG { out.append((d, UInt64(st.st_size))) }
                }
            }
        }
        return out
    }

    /// Names in `dir`; none when it is missing (no blob of that algorithm or prefix yet).
    private static func entries(_ dir: String) -> [String] {
        var out: [String] = []
        try? Posix.forEachEntry(inDirectory: dir) { out.append($0) }
        return out
    }

    /// Re-hashes every blob file with `threads` threads (pread + SHA-256);
    /// mismatches are moved to `quarantine/` and forgotten. `progress` is
    /// called on the calling thread about every `progressInterval` seconds.
    public func verifyAll(threads: Int = System.coreCount, progressInterval: Double = 0.25,
                          progress: ((VerifyProgress) -> Void)? = nil) -> VerifyResult {
        let files = blobFiles().sorted { $0.size > $1.size }  // big first: the threads finish together
        let totalBytes = files.reduce(0) { $0 + $1.size }
        let c = VerifyCounters()
        let t0 = Clock.monotonicNanos()
        let now = Int64(time(nil))
        let n = max(1, min(threads, files.count))
        c.running.store(n, ordering: .sequentiallyConsistent)
        let workers = (0..<n).map { i in
            OSThread(name: "berth-verify-\(i)") { [self] in
                defer { c.running.subtract(1, ordering: .sequentiallyConsistent) }
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
                defer { buffer.deallocate() }
                while true {
                    let k = c.next.wrappingAdd(1, ordering: .relaxed).oldValue
                    guard k < files.count else { return }
                    let digest = files[k].digest
                    if let (hex, size) = hashFile(digest, buffer: buffer, counters: c) {
                        if hex != digest.hex {
                            do {
                                let q = try quarantine(digest, size: size, now: now)
                                log("verify: \(digest) hashes to \(digest.algorithm.rawValue):\(hex); moved to \(q)")
                                c.found.withLock { $0.mismatches.append(digest); $0.quarantined.append(q) }
                            } catch {
                                log("verify: \(digest) hashes to \(hex) but cannot be quarantined: \(error)")
                                c.found.withLock { $0.mismatches.append(digest) }
                            }
                        }
                    } else {
                        c.found.withLock { $0.unreadable += 1 }
                    }
                    c.checked.add(1, ordering: .relaxed)
                }
            }
        }
        func report() {
            progress?(VerifyProgress(checked: c.checked.load(ordering: .relaxed), total: files.count,
                                     bytes: c.bytes.load(ordering: .relaxed), totalBytes: totalBytes,
                                     mismatches: c.found.withLock { $0.mismatches.count }))
        }
        let interval = UInt64(max(0.01, progressInterval) * 1e9)
        var lastReport = t0
        while c.running.load(ordering: .sequentiallyConsistent) > 0 {  // ends with the workers: each file is read once
            usleep(20_000)
            let t = Clock.monotonicNanos()
            if progress != nil && t - lastReport >= interval {
                lastReport = t
                report()
            }
        }
        for w in workers { w.join() }
        report()
        var r = VerifyResult()
        r.checked = c.checked.load(ordering: .relaxed)
        r.bytes = c.bytes.load(ordering: .relaxed)
        r.seconds = Double(Clock.monotonicNanos() - t0) / 1e9
        c.found.withLock {
            r.mismatches = $0.mismatches.sorted()
            r.quarantined = $0.quarantined.sorted()
            r.unreadable = $0.unreadable
        }
        return r
    }

    /// The hex digest and size of a blob file, nil when it cannot be read.
    private func hashFile(_ digest: Digest, buffer: UnsafeMutableRawBufferPointer, counters: VerifyCounters) -> (String, UInt64)? {
        guard digest.algorithm == .sha256 else { return nil }  // only SHA-256 is hashed here (as fills do)
        guard let fd = try? Posix.open(path: path(for: digest), flags: O_RDONLY) else { return nil }  // evicted meanwhile
        defer { Posix.close(fd: fd) }
        let hasher = SHA256Hasher()
        var offset: off_t = 0
        while true {
            guard let got = try? Posix.pread(fd: fd, into: buffer, offset: offset) else { return nil }
            if got == 0 { break }
            hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<got]))
            offset += off_t(got)
            counters.bytes.add(UInt64(got), ordering: .relaxed)
        }
        return (hasher.finalizeHex(), UInt64(offset))
    }

    // MARK: pin (what is cached)

    /// Pins an image from what is cached, without contacting anything: the
    /// manifest the tag (or digest) names and everything it covers must all be
    /// cached. Used by `berth cache pin` when no server runs.
    public func pinCached(_ image: ImageReference) throws -> CacheIndex.PinnedImage {
        let manifest: Digest
        switch image.reference {
        case .tag(let tag):
            guard let (_, rec) = resolveTag(image.qualifiedName, tag) else {
                throw RemoveError(description: "\(image) is not cached; start berth serve and pin through it to fetch it")
            }
            manifest = rec.digest
        case .digest(let d):
            manifest = d
        }
        let cov = coverage(of: manifest)
        guard cov.missing.isEmpty else {
            throw RemoveError(description: "\(image) is only partly cached (\(cov.missing.count) of \(cov.covered.count) digests missing); "
                              + "start berth serve and pin through it to fetch the rest")
        }
        let pin = CacheIndex.PinnedImage(manifest: manifest, covered: cov.covered, pinnedAt: Int64(time(nil)))
        index.pinImage(image.description, pin)
        checkPinnedBudget()
        return pin
    }
}

/// Shared by the verification threads.
final class VerifyCounters: @unchecked Sendable {  // atomics and a mutex only
    let next = Atomic<Int>(0)
    let checked = Atomic<Int>(0)
    let bytes = Atomic<UInt64>(0)
    let running = Atomic<Int>(0)
    let found = Mutex<(mismatches: [Digest], quarantined: [String], unreadable: Int)>(([], [], 0))
}
