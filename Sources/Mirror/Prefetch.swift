import OCI
import BlobStore

/// Manifest-driven prefetch: once an image manifest is fetched on a miss,
/// its config and layers are fetched too, as fills nobody reads yet, so the
/// client's blob requests (which come a stage at a time, a few at once) join
/// transfers already under way. Single-flight as any fill; bounded to
/// `maxBlobs` per manifest and to what fits under the budget's low watermark
/// (the rest is left to the client); a prefetch that cannot be cached is
/// dropped rather than relayed. The upstream's `max_requests` still bounds
/// how many run at once.
enum Prefetch {
    static let maxBlobs = 16

    /// Starts fills for those of `blobs` not cached or filling; on the request's loop.
    static func start(_ blobs: [Descriptor], of manifest: Digest, ctx: RequestContext, upstream: Upstream) {
        let (mirror, store) = (ctx.mirror, ctx.mirror.store)
        // The manifest, fetched with this request's access, names them in this repository: linked now,
        // so the client's blob requests join these fills without a HEAD to check access first.
        store.index.link(ctx.key, blobs.map(\.digest))
        let used = store.index.usage.total
        var room = store.budget.lowBytes > used ? store.budget.lowBytes - used : 0
        var started = 0
        for b in blobs.prefix(maxBlobs) where UInt64(b.size) <= room {
            guard case .started(let fill)? = try? mirror.fills.lookup(b.digest, loop: ctx.w.loop) else { continue }
            room -= UInt64(b.size)
            started += 1
            let fetch = BlobFetch(mirror: mirror, fill: fill, repo: ctx.repo, key: ctx.key)
            fetch.isPrefetch = true
            fetch.start(upstream: upstream, path: "/v2/\(ctx.repo)/blobs/\(b.digest)", headTimeout: ctx.config.blobHeadTimeoutNanos, for: nil)
        }
        if started > 0 { mirror.log(.debug, "prefetching \(started) of \(blobs.count) blobs of \(ctx.name)@\(manifest)") }
    }
}
