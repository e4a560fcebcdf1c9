#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Reactor
import HTTP1
import BlobStore
import OCI
import Archive

/// `berth export`: writes cached images as an OCI image layout in a tar
/// (gzip-compressed through zlib when the name ends in `.gz`).
///
/// ```
/// oci-layout                  {"imageLayoutVersion":"1.0.0"}
/// index.json                  one entry per image argument; a tag's entry carries
///                             org.opencontainers.image.ref.name = [UPSTREAM/]REPO:TAG
/// blobs/sha256/<hex>          every manifest, config and layer, once, bytes as cached
/// ```
/// skopeo reads it as `oci-archive:FILE:REPO:TAG`, and `berth import` of it
/// needs no `--as`. An index is written with every platform that is cached
/// (its bytes unchanged, so its digest holds); a platform not cached is left out.
///
/// The bundle is written to `FILE.<pid>.partial` next to it and renamed when
/// complete: a failed export leaves no half file under the final name.
/// Threading: blocking; a thread of its own, never an event loop.
final class ImageExporter {
    struct Failure: Error, CustomStringConvertible { let description: String }

    struct Report: Codable, Equatable {
        var output: String
        var images: [String]
        var blobs: Int
        /// Blob bytes written (before compression).
        var bytes: UInt64
        /// Size of the file written.
        var fileBytes: UInt64
        var seconds: Double
    }

    private let store: BlobStore
    private let key: (ImageReference) throws -> String
    /// Called with blob bytes written and their total, every 250 ms at most.
    var onProgress: ((CacheReport.Transfer) -> Void)?

    init(store: BlobStore, key: @escaping (ImageReference) throws -> String) {
        self.store = store
        self.key = key
    }

    /// Exports `images`, plus with `pulledSince` every cached tag whose
    /// manifest was used within that many seconds (named by its index key).
    func run(images requested: [ImageReference], pulledSince: Int64? = nil, output: String) throws -> Report {
        let started = Date()
        var images = requested
        if let since = pulledSince {
            let cutoff = Int64(time(nil)) - since
            for t in store.index.allTags() where (store.index.lastUse(of: t.record.digest) ?? 0) >= cutoff {
                if let r = ImageReference("\(t.repository):\(t.tag)"), !images.contains(r) { images.append(r) }
            }
            guard !images.isEmpty else { throw Failure(description: "no cached tag was pulled in the last \(since) s") }
        }
        var entries: [[String: Any]] = []
        var digests: [Digest] = []
        var seen: Set<Digest> = []
        func add(_ d: Digest) { if seen.insert(d).inserted { digests.append(d) } }
        for image in images {
            let k = try key(image)
            let manifest: Digest
            switch image.reference {
            case .tag(let tag):
                guard let rec = store.index.tag(k, tag) else { throw Failure(description: "\(image) is not cached") }
                manifest = rec.digest
            case .digest(let d):
                manifest = d
            }
            guard let bytes = try store.read(manifest, maxBytes: ManifestSummary.maxBytes),
                  let type = store.index.mediaType(of: manifest) else {
                throw Failure(description: "\(image): manifest \(manifest) is not cached")
            }
            let summary: ManifestSummary
            do { summary = try ManifestSummary.parse(bytes, contentType: type) } catch {
                throw Failure(description: "\(image): cached manifest \(manifest): \(error)")
            }
            add(manifest)
            var summaries = [summary]
            for child in summary.manifests {
                guard let cb = try store.read(child.digest, maxBytes: ManifestSummary.maxBytes),
                      let cs = try? ManifestSummary.parse(cb, contentType: child.mediaType) else { continue }
                add(child.digest)
                summaries.append(cs)
            }
            for s in summaries {
                for b in s.blobs {
                    guard store.contains(b.digest) else {
                        throw Failure(description: "\(image) is only partly cached: blob \(b.digest) is missing (pull it through Berth first)")
                    }
                    add(b.digest)
                }
            }
            var entry: [String: Any] = ["mediaType": type, "digest": manifest.description, "size": bytes.count]
            if case .tag = image.reference { entry["annotations"] = ["org.opencontainers.image.ref.name": image.description] }
            entries.append(entry)
        }
        let index = try JSONSerialization.data(withJSONObject: ["schemaVersion": 2, "mediaType": MediaType.ociIndex, "manifests": entries],
                                               options: [.sortedKeys])
        let partial = "\(output).\(getpid()).partial"
        let fd: Int32
        do { fd = try Posix.open(path: partial, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: 0o644) } catch {
            throw Failure(description: "cannot create \(partial): \(error)")
        }
        var ok = false
        defer {
            Posix.close(fd: fd)
            if !ok { _ = try? Posix.unlink(path: partial) }
        }
        let file = FileSink(fd: fd)
        // Level 1: layers are mostly compressed already, so a higher level costs CPU for little.
        let gzip = output.hasSuffix(".gz") ? try GzipSink(file, level: 1) : nil
        let tar = TarWriter(gzip ?? file)
        let now = Int64(time(nil))
        try tar.addFile("oci-layout", Array(#"{"imageLayoutVersion":"1.0.0"}"#.utf8), mtime: now)
        try tar.addFile("index.json", Array(index), mtime: now)
        var bytes: UInt64 = 0
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        let total = digests.reduce(UInt64(0)) { $0 + (store.index.size(of: $1) ?? 0) }
        var throttle = Throttle()
        for d in digests {
            guard let f = store.open(d) else { throw Failure(description: "blob \(d) left the cache during the export") }
            let size = try f.size()
            try tar.beginFile("blobs/\(d.algorithm.rawValue)/\(d.hex)", size: Int64(size), mtime: now)
            var left = size
            // Each round writes at least one byte of a file of known size, or throws.
            while left > 0 {
                let want = Int(min(UInt64(buffer.count), left))
                let n = try buffer.withUnsafeMutableBytes { b -> Int in
                    guard case .processed(let n) = try Posix.read(fd: f.fd, into: UnsafeMutableRawBufferPointer(rebasing: b[..<want])) else { return 0 }
                    return n
                }
                guard n > 0 else { throw Failure(description: "blob \(d) is shorter than its size") }
                try buffer.withUnsafeBytes { try tar.write(UnsafeRawBufferPointer(rebasing: $0[..<n])) }
                left -= UInt64(n)
                if let onProgress, throttle.ready() { onProgress(.init(done: bytes + size - left, total: total)) }
            }
            bytes += size
        }
        onProgress?(.init(done: bytes, total: total))
        try tar.finish()
        try gzip?.finish()
        try Posix.fsync(fd: fd)
        try Posix.rename(from: partial, to: output)
        ok = true
        return Report(output: output, images: images.map(\.description), blobs: digests.count, bytes: bytes,
                      fileBytes: file.bytesWritten, seconds: Date().timeIntervalSince(started))
    }
}

extension BerthConfig {
    /// The cache-index key of an image argument `[UPSTREAM/]REPO`, as the
    /// mirror keys what it serves: the default upstream's repositories as they
    /// are (Docker Hub's single names under `library/`), any other's behind
    /// its name. UPSTREAM is a configured name, prefix or host; without one,
    /// the default upstream is meant.
    public func indexKey(for image: ImageReference) throws -> String {
        let list = effectiveUpstreams
        let full = image.qualifiedName
        var chosen: (index: Int, repository: String, label: Int)?
        for (i, u) in list.enumerated() {
            let labels = [u.resolvedName] + (u.resolvedPrefix.map { [$0] } ?? []) + u.hosts
            for l in labels where full.hasPrefix(l + "/") && l.count > (chosen?.label ?? -1) {
                chosen = (i, String(full.dropFirst(l.count + 1)), l.count)
            }
        }
        let defaultIndex = list.count == 1 ? 0 : list.firstIndex(where: \.isDefault)
        if chosen == nil {
            if let registry = image.registry, registry != "docker.io" {
                throw ConfigError(key: "image", "\(image) names the upstream \(registry), which is not configured (names: \(list.map(\.resolvedName).joined(separator: ", ")))")
            }
            guard let d = defaultIndex else {
                throw ConfigError(key: "image", "\(image) names no upstream and none is the default: write UPSTREAM/REPO")
            }
            chosen = (d, image.registry == nil ? full : image.name, 0)
        }
        let u = list[chosen!.index]
        var repo = chosen!.repository
        let hub = u.dockerhub == "auto" ? (HTTPURL(u.allURLs[0]).map { DockerHub.isDockerHub(host: $0.host) } ?? false) : u.dockerhub == "true"
        if hub && !repo.contains("/") { repo = "library/" + repo }
        let isDefault = list.count == 1 || u.isDefault
        return isDefault ? repo : u.resolvedName + "/" + repo
    }
}
