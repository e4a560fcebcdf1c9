import Reactor
import OCI

/// Tag history's hold on the cache: a tag the upstream moved can be rolled
/// back by digest, so the images its last `keepHistory` digests name stay
/// out of eviction and gc. A tag that never moved is ordinary LRU content:
/// its upstream still serves it.
extension BlobStore {
    /// Maps a tag (remembering its earlier digests); returns the record it replaced.
    /// A new digest updates which blobs history keeps.
    @discardableResult
    public func recordTag(_ repository: String, _ tag: String, _ record: CacheIndex.TagRecord) -> CacheIndex.TagRecord? {
        let old = index.setTag(repository, tag, record)
        if let old, old.digest != record.digest { scheduleKeptRefresh() }
        return old
    }

    /// The manifests history keeps: the last `keepHistory` digests of every tag that moved.
    public func keptManifests() -> Set<Digest> {
        guard keepHistory > 0 else { return [] }
        var out: Set<Digest> = []
        for h in index.allHistory() where h.entries.count > 1 {
            for e in h.entries.suffix(keepHistory) { out.insert(e.digest) }
        }
        return out
    }

    /// Recomputes the blobs history keeps, reading manifests not seen before.
    /// Blocking (reads manifests): the pool or startup only.
    public func refreshKept() {
        var kept: Set<Digest> = []
        var queue = Array(keptManifests())
        while let m = queue.popLast() {
            guard kept.insert(m).inserted else { continue }
            queue.append(contentsOf: references(of: m))
        }
        index.setKept(kept)
    }

    /// Queues one `refreshKept` on the pool (at most one waits at a time).
    public func scheduleKeptRefresh() {
        guard keepHistory > 0, !keptRefreshQueued.exchange(true, ordering: .acquiringAndReleasing) else { return }
        pool.submit { [self] in
            keptRefreshQueued.store(false, ordering: .releasing)
            refreshKept()
        }
    }

    /// What a cached manifest references; empty (and not remembered) when it
    /// is not cached yet or is not a manifest.
    private func references(of manifest: Digest) -> [Digest] {
        if let known = references.withLock({ $0[manifest] }) { return known }
        guard let m = cachedManifest(manifest) else { return [] }
        let refs = m.manifests.map(\.digest) + m.blobs.map(\.digest)
        references.withLock { $0[manifest] = refs }
        return refs
    }
}
