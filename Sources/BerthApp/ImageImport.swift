#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Reactor
import BlobStore
import OCI
import Archive

/// `berth import`: loads images from an archive into the cache.
///
/// Reads, streaming, in one pass:
/// - `docker save` archives, classic (`manifest.json` with `Config`,
///   `RepoTags`, `Layers`; layers as tars) or with an OCI layout inside;
/// - OCI image layouts (`oci-layout`, `index.json`, `blobs/`), as a tar or a directory;
/// - either tar gzip-compressed (detected by its magic number).
///
/// Every member is hashed as it streams into a temp file of the store
/// (reserved against the budget first). Nothing is published until the
/// whole archive has been read and every referenced blob is present and
/// matches its digest; a bad archive (unsafe paths, wrong digests,
/// truncation, corrupt gzip) removes every temp file and leaves the cache as
/// it was. Then the blobs are renamed into the store, linked to their
/// repositories and the tags set.
///
/// A classic `docker save` image has no registry manifest: an OCI manifest is
/// built from its config and layer tars (uncompressed, so a layer's digest
/// is the sha256 of its tar), and its digest is new.
///
/// Threading: blocking throughout (file I/O, fsync, rename); run it on a
/// thread of its own, never on an event loop.
final class ImageImporter {
    struct Failure: Error, CustomStringConvertible { let description: String }

    /// One image registered by the import.
    struct Imported: Codable, Equatable {
        /// `[UPSTREAM/]REPO:TAG` names given to it (empty: imported by digest only).
        var names: [String]
        var digest: String
        var mediaType: String
        /// True when Berth built the manifest (classic docker save): the digest is new.
        var built: Bool
        var blobs: Int
        var bytes: UInt64
    }

    struct Report: Codable, Equatable {
        var images: [Imported]
        /// Blobs newly stored (others were cached already).
        var added: Int
        var addedBytes: UInt64
        var seconds: Double
        var archiveBytes: UInt64
    }

    /// Documents (JSON) kept in memory while reading: manifests, configs, index.json, manifest.json.
    static let maxDocument = ManifestSummary.maxBytes
    static let maxDocumentsTotal = 64 << 20

    private let store: BlobStore
    /// The cache-index key for an image's repository (`[UPSTREAM/]REPO` → key).
    private let key: (ImageReference) throws -> String
    private struct Staged {
        var path: String
        var file: FileDescriptor
        var size: UInt64
    }
    private var staged: [Digest: Staged] = [:]
    private var reserved: UInt64 = 0
    /// Archive member name → digest of its content.
    private var byName: [String: Digest] = [:]
    /// Link name → the member it points to.
    private var links: [String: String] = [:]
    /// Small JSON-looking contents by digest.
    private var documents: [Digest: [UInt8]] = [:]
    private var documentBytes = 0
    private var archiveBytes: UInt64 = 0
    private var buffer = [UInt8](repeating: 0, count: 1 << 20)
    /// Called with archive bytes read and the archive's size, every 250 ms at most (archives, not directories).
    var onProgress: ((CacheReport.Transfer) -> Void)?

    init(store: BlobStore, key: @escaping (ImageReference) throws -> String) {
        self.store = store
        self.key = key
    }

    deinit { discardAll() }

    /// Imports `path` (a file or an OCI layout directory), naming images `as` when given.
    func run(path: String, as name: ImageReference?) throws -> Report {
        let started = Date()
        do {
            let st = try Posix.stat(path: path)
            if (st.st_mode & S_IFMT) == S_IFDIR { try readDirectory(path) } else { try readArchive(path) }
            let plan = try makePlan(as: name)
            var report = try commit(plan)
            report.seconds = Date().timeIntervalSince(started)
            report.archiveBytes = archiveBytes
            return report
        } catch {
            discardAll()
            throw error
        }
    }

    // MARK: reading

    private func readArchive(_ path: String) throws {
        let file = try FileSource(path: path)
        if let onProgress {
            let total = (try? file.size()) ?? 0
            var throttle = Throttle()
            file.onRead = { done in if throttle.ready() { onProgress(.init(done: done, total: total)) } }
        }
        var magic = [UInt8](repeating: 0, count: 2)
        let n = try magic.withUnsafeMutableBytes { try file.readFully(into: $0) }
        let raw = PrefixedSource(prefix: Array(magic[..<n]), base: file)
        let source: ByteSource = isGzip(magic[..<n]) ? try GzipSource(raw) : raw
        let tar = TarReader(source)
        while let entry = try tar.next() {
            switch entry.kind {
            case .file:
                try ingest(entry.name, size: UInt64(entry.size)) { try tar.read(into: $0) }
            case .symlink(let target), .hardlink(let target):
                links[entry.name] = target
            case .directory, .other:
                continue
            }
        }
        archiveBytes = file.bytesRead
        onProgress?(.init(done: file.bytesRead, total: max(file.bytesRead, (try? file.size()) ?? 0)))
    }

    private func readDirectory(_ root: String) throws {
        for name in ["oci-layout", "index.json", "manifest.json"] where (try? Posix.stat(path: root + "/" + name)) != nil {
            try ingestFile(root, name)
        }
        guard (try? Posix.stat(path: root + "/index.json")) != nil else {
            throw Failure(description: "\(root) is a directory without index.json: not an OCI image layout")
        }
        var algorithms: [String] = []
        try? Posix.forEachEntry(inDirectory: root + "/blobs") { algorithms.append($0) }
        for alg in algorithms.sorted() {
            var names: [String] = []
            try Posix.forEachEntry(inDirectory: "\(root)/blobs/\(alg)") { names.append($0) }
            for n in names.sorted() {
                guard ArchivePath.normalize(n) == n, !n.isEmpty else { continue }
                try ingestFile(root, "blobs/\(alg)/\(n)")
            }
        }
    }

    private func ingestFile(_ root: String, _ name: String) throws {
        let file = try FileSource(path: root + "/" + name)
        try ingest(name, size: try file.size()) { try file.read(into: $0) }
        archiveBytes += file.bytesRead
    }

    /// Streams one member into a temp file, hashing it; checks a `blobs/sha256/<hex>` name against the hash.
    private func ingest(_ name: String, size: UInt64, read: (UnsafeMutableRawBufferPointer) throws -> Int) throws {
        guard store.reserve(size) else {
            throw Failure(description: "\(name) (\(CacheReport.size(size))) does not fit in the cache budget (\(CacheReport.size(store.budget.maxBytes)))")
        }
        reserved += size
        let (path, file) = try store.makeTempFile(label: "import")
        let hasher = SHA256Hasher()
        var written: UInt64 = 0
        var head: [UInt8] = []
        let keep = size <= UInt64(Self.maxDocument)
        do {
            // Each round moves at least one byte of a member of known size, or ends.
            while true {
                let n = try buffer.withUnsafeMutableBytes { try read($0) }
                if n == 0 { break }
                try buffer.withUnsafeBytes { b in
                    let chunk = UnsafeRawBufferPointer(rebasing: b[..<n])
                    hasher.update(chunk)
                    try Posix.writeAll(fd: file.fd, chunk)
                }
                if keep { head += buffer[..<n] }
                written += UInt64(n)
            }
        } catch {
            store.discard(tempPath: path)
            throw error
        }
        guard written == size else {
            store.discard(tempPath: path)
            throw Failure(description: "\(name): \(written) bytes where \(size) were announced")
        }
        let digest = Digest(algorithm: .sha256, hex: hasher.finalizeHex())!
        if name.hasPrefix("blobs/") {
            let parts = name.split(separator: "/")
            guard parts.count == 3, let declared = Digest("\(parts[1]):\(parts[2])") else {
                store.discard(tempPath: path)
                throw Failure(description: "\(name) is not named blobs/<algorithm>/<hex>")
            }
            guard declared == digest else {
                store.discard(tempPath: path)
                throw Failure(description: "\(name) does not match its digest: its bytes hash to \(digest)")
            }
        }
        byName[name] = digest
        if keep, head.first == UInt8(ascii: "{") || head.first == UInt8(ascii: "["), documents[digest] == nil {
            documentBytes += head.count
            guard documentBytes <= Self.maxDocumentsTotal else { throw Failure(description: "the archive holds more than 64 MiB of JSON documents") }
            documents[digest] = head
        }
        if staged[digest] != nil || store.contains(digest) {
            store.discard(tempPath: path)
        } else {
            staged[digest] = Staged(path: path, file: file, size: size)
        }
    }

    private func discardAll() {
        for s in staged.values { store.discard(tempPath: s.path) }
        staged = [:]
        store.release(reserved)
        reserved = 0
    }

    // MARK: what to register

    struct PlannedImage {
        var names: [ImageReference]
        var manifest: Digest
        var mediaType: String
        /// Bytes of a manifest Berth built (stored as a new blob).
        var built: [UInt8]?
        /// Child manifests with their media types (an index's cached platforms).
        var children: [(Digest, String)]
        var blobs: [Digest]
        /// The manifest's `subject` (it is listed as a referrer of that digest).
        var subject: Digest? = nil
    }

    /// The digest of the member `name`, following links (a bounded number of hops).
    private func member(_ name: String) -> Digest? {
        var n = ArchivePath.normalize(name) ?? name
        for _ in 0..<16 {
            if let d = byName[n] { return d }
            guard let next = links[n] else { return nil }
            n = next
        }
        return nil
    }

    private func document(_ name: String) throws -> [UInt8]? {
        guard let d = member(name) else { return nil }
        guard let doc = documents[d] else { throw Failure(description: "\(name) is not a JSON document of at most 4 MiB") }
        return doc
    }

    private func present(_ d: Digest) -> Bool { staged[d] != nil || store.contains(d) }

    private func makePlan(as override: ImageReference?) throws -> [PlannedImage] {
        var images: [PlannedImage]
        if let index = try document("index.json") {
            images = try planLayout(index)
        } else if let manifest = try document("manifest.json") {
            images = try planDockerSave(manifest)
        } else {
            throw Failure(description: "neither index.json (OCI layout) nor manifest.json (docker save) in the archive")
        }
        guard !images.isEmpty else { throw Failure(description: "the archive names no image") }
        if let override {
            guard images.count == 1 else {
                throw Failure(description: "the archive holds \(images.count) images; --as names one")
            }
            images[0].names = [override]
        }
        for image in images where image.names.isEmpty {
            throw Failure(description: "image \(image.manifest) in the archive has no name: give one with --as [UPSTREAM/]REPO:TAG")
        }
        return images
    }

    /// An OCI layout: every manifest index.json lists, named by its annotations.
    private func planLayout(_ bytes: [UInt8]) throws -> [PlannedImage] {
        struct Index: Decodable {
            struct Entry: Decodable {
                var mediaType: String?
                var digest: String
                var annotations: [String: String]?
            }
            var manifests: [Entry]
        }
        guard let index = try? JSONDecoder().decode(Index.self, from: Data(bytes)) else {
            throw Failure(description: "index.json is not an OCI image index")
        }
        var byDigest: [Digest: PlannedImage] = [:]
        var order: [Digest] = []
        for e in index.manifests {
            guard let d = Digest(e.digest) else { throw Failure(description: "index.json: \"\(e.digest)\" is not a digest") }
            let names = Self.names(e.annotations ?? [:])
            if var existing = byDigest[d] {
                existing.names += names
                byDigest[d] = existing
                continue
            }
            var image = try planManifest(d, declaredType: e.mediaType)
            image.names = names
            byDigest[d] = image
            order.append(d)
        }
        return order.map { byDigest[$0]! }
    }

    /// The name an index.json entry gives: a full `[UPSTREAM/]REPO:TAG` in
    /// `org.opencontainers.image.ref.name` (Berth, skopeo), else containerd's
    /// `io.containerd.image.name` (newer docker save, whose ref.name is the bare tag).
    static func names(_ annotations: [String: String]) -> [ImageReference] {
        for key in ["org.opencontainers.image.ref.name", "io.containerd.image.name"] {
            if let v = annotations[key], Self.hasRepository(v), let r = ImageReference(v) { return [r] }
        }
        return []
    }

    /// True when `text` has a repository and a tag (`alpine:3.20`), not a bare tag (`3.20`).
    static func hasRepository(_ text: String) -> Bool {
        let (_, rest) = ImageReference.splitRegistry(text)
        return rest.contains(":") || rest.contains("@")
    }

    private func planManifest(_ d: Digest, declaredType: String?) throws -> PlannedImage {
        guard let bytes = documents[d] else { throw Failure(description: "manifest \(d) is missing from the archive") }
        let summary: ManifestSummary
        do { summary = try ManifestSummary.parse(bytes, contentType: declaredType) } catch {
            throw Failure(description: "manifest \(d): \(error)")
        }
        var image = PlannedImage(names: [], manifest: d, mediaType: summary.mediaType, built: nil, children: [], blobs: [],
                                 subject: summary.subject?.digest)
        var summaries = [summary]
        for child in summary.manifests {
            // An export holds the platforms that were cached: a missing one is skipped, not an error.
            guard let cb = documents[child.digest] else { continue }
            guard let cs = try? ManifestSummary.parse(cb, contentType: child.mediaType) else {
                throw Failure(description: "manifest \(child.digest) (a platform of \(d)) is not a manifest")
            }
            image.children.append((child.digest, cs.mediaType))
            summaries.append(cs)
        }
        for s in summaries {
            for b in s.blobs where !image.blobs.contains(b.digest) {
                guard present(b.digest) else { throw Failure(description: "blob \(b.digest) of \(d) is missing from the archive") }
                image.blobs.append(b.digest)
            }
        }
        return image
    }

    /// Classic docker save: one OCI manifest built per `manifest.json` entry.
    private func planDockerSave(_ bytes: [UInt8]) throws -> [PlannedImage] {
        struct Entry: Decodable {
            var Config: String
            var RepoTags: [String]?
            var Layers: [String]
        }
        guard let entries = try? JSONDecoder().decode([Entry].self, from: Data(bytes)) else {
            throw Failure(description: "manifest.json is not a docker save manifest (a list of Config, RepoTags, Layers)")
        }
        return try entries.map { e in
            guard let config = member(e.Config), let configBytes = documents[config] else {
                throw Failure(description: "docker save config \(e.Config) is missing from the archive")
            }
            var layers: [(Digest, UInt64)] = []
            for l in e.Layers {
                guard let d = member(l) else { throw Failure(description: "docker save layer \(l) is missing from the archive") }
                layers.append((d, staged[d]?.size ?? store.index.size(of: d) ?? 0))
            }
            let manifest = Self.buildManifest(config: config, configSize: configBytes.count, layers: layers)
            let digest = Digest(algorithm: .sha256, hex: SHA256Hasher.hex(manifest))!
            let names = (e.RepoTags ?? []).compactMap { ImageReference($0) }
            return PlannedImage(names: names, manifest: digest, mediaType: MediaType.ociManifest, built: manifest,
                                children: [], blobs: [config] + layers.map(\.0))
        }
    }

    /// An OCI image manifest for a config and uncompressed layer tars, in a fixed key order.
    static func buildManifest(config: Digest, configSize: Int, layers: [(Digest, UInt64)]) -> [UInt8] {
        let layerText = layers.map {
            #"{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"\#($0.0)","size":\#($0.1)}"#
        }.joined(separator: ",")
        return Array((#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","#
            + #""config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"\#(config)","size":\#(configSize)},"#
            + #""layers":[\#(layerText)]}"#).utf8)
    }

    // MARK: publishing

    private func commit(_ plan: [PlannedImage]) throws -> Report {
        // Keys first: an image naming an unknown upstream fails before anything is published.
        let keyed = try plan.map { image in (image, try image.names.map { (try key($0), $0) }) }
        var needed: Set<Digest> = []
        for image in plan {
            needed.insert(image.manifest)
            for (d, _) in image.children { needed.insert(d) }
            needed.formUnion(image.blobs)
        }
        var added = 0
        var addedBytes: UInt64 = 0
        for d in needed.sorted() {
            guard let s = staged.removeValue(forKey: d) else { continue }
            do { try store.commit(tempPath: s.path, file: s.file, digest: d) } catch {
                store.discard(tempPath: s.path)
                throw Failure(description: "cannot store \(d): \(error)")
            }
            store.published(d, size: s.size, reserved: s.size)
            reserved -= s.size
            added += 1
            addedBytes += s.size
        }
        discardAll()  // members nothing references
        var out: [Imported] = []
        let now = Int64(time(nil))
        for (image, names) in keyed {
            if let built = image.built, !store.contains(image.manifest) {
                try store.store(built, as: image.manifest)
                added += 1
                addedBytes += UInt64(built.count)
            }
            store.index.setMediaType(image.manifest, image.mediaType)
            for (d, t) in image.children { store.index.setMediaType(d, t) }
            let all = [image.manifest] + image.children.map(\.0) + image.blobs
            for (k, ref) in names {
                store.index.link(k, all)
                if let subject = image.subject { store.index.addReferrer(k, subject: subject, image.manifest) }
                if case .tag(let tag) = ref.reference {
                    store.recordTag(k, tag, .init(digest: image.manifest, mediaType: image.mediaType, confirmedAt: now))
                }
            }
            let bytes = all.reduce(UInt64(0)) { $0 + (store.index.size(of: $1) ?? 0) }
            out.append(Imported(names: names.map { $0.1.description }, digest: image.manifest.description,
                                mediaType: image.mediaType, built: image.built != nil, blobs: all.count, bytes: bytes))
        }
        store.index.flush()
        return Report(images: out, added: added, addedBytes: addedBytes, seconds: 0, archiveBytes: 0)
    }
}

/// A file read sequentially through `Posix.read`.
final class FileSource: ByteSource {
    let fd: FileDescriptor
    let path: String
    private(set) var bytesRead: UInt64 = 0
    /// Called with the bytes read so far after each read.
    var onRead: ((UInt64) -> Void)?

    init(path: String) throws {
        self.path = path
        do { fd = try FileDescriptor.openForReading(path) } catch {
            throw ImageImporter.Failure(description: "cannot open \(path): \(error)")
        }
    }

    func size() throws -> UInt64 { try fd.size() }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        // A regular file never answers "would block"; EINTR is retried by the wrapper.
        guard case .processed(let n) = try Posix.read(fd: fd.fd, into: buffer) else { return 0 }
        bytesRead += UInt64(n)
        onRead?(bytesRead)
        return n
    }
}

/// A file written sequentially through `Posix.writeAll`.
final class FileSink: ByteSink {
    let fd: Int32
    private(set) var bytesWritten: UInt64 = 0

    init(fd: Int32) { self.fd = fd }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        try Posix.writeAll(fd: fd, bytes)
        bytesWritten += UInt64(bytes.count)
    }
}

/// True at most once per `interval` (progress reports).
struct Throttle {
    var interval: UInt64 = 250_000_000
    private var last: UInt64 = 0
    init() {}
    mutating func ready() -> Bool {
        let now = Clock.monotonicNanos()
        guard now - last >= interval else { return false }
        last = now
        return true
    }
}
