import HTTP1
import OCI

/// One loop's prepared answers for cached manifests, by raw request target
/// (query included): the whole head serialized once, and the body. A warm
/// `GET`/`HEAD` of a manifest it holds is answered without parsing the route,
/// selecting the upstream, checking `auth.rules`, reading the cache index or
/// building a header: those decisions were made by the request that prepared
/// the entry, and stay valid while everything they read is unchanged:
///
/// - the same configuration (`MirrorState`; a reload empties the table),
/// - the same user (`auth.rules`), `Host` (upstream selection) and `Accept` values
///   (a tag's media type must be acceptable),
/// - the same cache index (`CacheIndex.generation`: every tag, link, media type
///   or blob change moves it), read before the decision was made,
/// - for a tag, its mapping still within the tag TTL (checked per request),
/// - under a signature policy, the digest still known verified on this loop
///   (its decision counter still counts each answer).
///
/// Only plain hits (`Cache-Status: Berth; hit`) are prepared. Loop thread only.
final class PreparedManifests {
    final class Entry {
        let user: String
        let host: String?
        let accept: [String]
        let generation: UInt64
        let key: String
        let digest: Digest
        let freshness: Freshness
        let head: PreparedHead
        let body: [UInt8]
        let upstream: String?
        let repository: String?
        let reference: String?
        /// The last second this entry touched the digest's LRU position.
        var touchedAt: Int64

        init(user: String, host: String?, accept: [String], generation: UInt64, key: String, digest: Digest, freshness: Freshness,
             head: PreparedHead, body: [UInt8], notes: AccessNotes, touchedAt: Int64) {
            self.user = user
            self.host = host
            self.accept = accept
            self.generation = generation
            self.key = key
            self.digest = digest
            self.freshness = freshness
            self.head = head
            self.body = body
            upstream = notes.upstream
            repository = notes.repository
            reference = notes.reference
            self.touchedAt = touchedAt
        }
    }

    /// How long a prepared answer stays right by itself.
    struct Freshness {
        /// For a tag, when its mapping was confirmed (Unix seconds); nil for a digest (forever).
        let confirmedAt: Int64?
        let ttlNanos: UInt64

        static let digest = Freshness(confirmedAt: nil, ttlNanos: 0)

        /// The tag rule of `ManifestRequest.run`: younger than the TTL, not from the future.
        func isFresh(now: Int64) -> Bool {
            guard let confirmedAt else { return true }
            let age = now - confirmedAt
            return age >= 0 && UInt64(age) * 1_000_000_000 < ttlNanos
        }
    }

    private var entries: [String: Entry] = [:]
    private var bodyBytes = 0
    /// Bounds: entries, and body bytes held (bodies are shared with `ManifestMemo`
    /// while it keeps them, but an entry keeps its own alive).
    static let maxEntries = 4096
    static let maxBodyBytes = 16 << 20
    /// Bigger manifests (large indexes) are answered the ordinary way.
    static let maxBody = 256 << 10

    var count: Int { entries.count }

    func entry(_ target: String) -> Entry? { entries[target] }

    func removeAll() {
        entries = [:]
        bodyBytes = 0
    }

    func remove(_ target: String) {
        if let e = entries.removeValue(forKey: target) { bodyBytes -= e.body.count }
    }

    func insert(_ target: String, _ entry: Entry) {
        guard entry.body.count <= Self.maxBody else { return }
        remove(target)
        if entries.count >= Self.maxEntries || bodyBytes + entry.body.count > Self.maxBodyBytes { removeAll() }
        entries[target] = entry
        bodyBytes += entry.body.count
    }
}
