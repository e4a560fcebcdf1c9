#if canImport(Glibc)
import Glibc
#endif
import FoundationEssentials
import BlobStore
import Mirror
import OCI

/// What `berth cache` commands report, as the admin socket sends it (JSON)
/// and as the CLI prints it. Built the same way by the server and by the CLI
/// acting on the files directly, so both modes print the same thing.
public enum CacheReport {
    public struct Usage: Codable, Equatable {
        public var budget: UInt64
        public var highWatermark: UInt64
        public var lowWatermark: UInt64
        public var blobs: UInt64
        public var count: Int
        public var pinned: UInt64
        /// Blobs tag history keeps out of eviction (`cache.keep_history`), not also pinned.
        public var kept: UInt64
        public var reserved: UInt64
        public var index: UInt64
        public var quarantine: UInt64
        public var total: UInt64
        public var pinnedImages: Int
        /// Pinned bytes alone exceed the low watermark: eviction cannot get under it.
        public var pinnedOverBudget: Bool
    }

    public struct Entry: Codable, Equatable {
        public var repository: String
        public var tag: String?
        public var digest: String
        public var mediaType: String
        public var bytes: UInt64
        public var cached: Int
        public var covered: Int
        public var lastUse: Int64
        public var pinned: Bool
        /// Signature verdicts by policy rule (`signatures:`); absent without a policy.
        public var signatures: [String: String]?
    }

    public struct Listing: Codable, Equatable {
        public var entries: [Entry]
    }

    public struct Pin: Codable, Equatable {
        public var image: String
        public var manifest: String
        public var covered: [String]
        public var cached: Int
        public var bytes: UInt64
    }

    public struct Removal: Codable, Equatable {
        public var removed: String
        public var bytes: UInt64
    }

    public struct GC: Codable, Equatable {
        public var removed: [String]
        public var bytes: UInt64
        public var quarantineFiles: Int
        public var quarantineBytes: UInt64
    }

    public struct Verify: Codable, Equatable {
        public var checked: Int
        public var bytes: UInt64
        public var seconds: Double
        public var mismatches: [String]
        public var quarantined: [String]
        public var unreadable: Int
    }

    /// One line of a streamed verification (`POST /verify`): progress, then the result.
    public struct VerifyLine: Codable {
        public var progress: VerifyProgressLine?
        public var result: Verify?
    }

    public struct VerifyProgressLine: Codable {
        public var checked: Int
        public var total: Int
        public var bytes: UInt64
        public var totalBytes: UInt64
        public var mismatches: Int
    }

    /// `berth cache history IMAGE`: what each tag named, newest first.
    public struct History: Codable, Equatable {
        public struct Mapping: Codable, Equatable {
            public var digest: String
            /// Unix seconds: when the upstream first and last gave this digest for the tag.
            public var firstSeen: Int64
            public var lastSeen: Int64
            /// The tag names it now.
            public var current: Bool
            /// Kept out of eviction by `cache.keep_history`.
            public var kept: Bool
            /// Digests the image covers, and how many of them are cached.
            public var cached: Int
            public var covered: Int
        }

        public struct Tag: Codable, Equatable {
            public var repository: String
            public var tag: String
            public var mappings: [Mapping]
        }

        public var image: String
        public var keepHistory: Int
        public var tags: [Tag]
    }

    /// How far an import or export has got: archive bytes read, or blob bytes written.
    public struct Transfer: Codable, Equatable, Sendable {
        public var done: UInt64
        public var total: UInt64
    }

    /// One line of the server's `/import` and `/export` streams.
    public struct TransferLine<R: Codable>: Codable {
        public var progress: Transfer?
        public var result: R?
        public var error: String?
    }

    /// One line of the server's `/preload` stream.
    public struct PreloadLine: Codable, Equatable {
        public var progress: WarmProgress?
        public var result: Pin?
        public var error: String?
        public init(progress: WarmProgress? = nil, result: Pin? = nil, error: String? = nil) {
            self.progress = progress
            self.result = result
            self.error = error
        }
    }

    public struct Failure: Codable, Error, CustomStringConvertible {
        public var error: String
        public var description: String { error }
        public init(_ error: String) { self.error = error }
    }

    // MARK: building

    static func usage(_ store: BlobStore) -> Usage {
        let u = store.index.usage
        let b = store.budget
        return Usage(budget: b.maxBytes, highWatermark: UInt64(Double(b.maxBytes) * b.high), lowWatermark: UInt64(Double(b.maxBytes) * b.low),
                     blobs: u.blobs, count: u.count, pinned: u.pinned, kept: u.kept, reserved: u.reserved, index: u.journal,
                     quarantine: u.quarantine, total: u.total, pinnedImages: store.index.pinnedImages().count,
                     pinnedOverBudget: store.isPinnedOverBudget)
    }

    /// The history of `text`, `[UPSTREAM/]REPO[:TAG]`: one tag, or every tag of the repository.
    static func history(_ store: BlobStore, of text: String, key: (ImageReference) throws -> String) throws -> History {
        guard let image = ImageReference(text) else {
            throw Failure("\"\(text)\" is not a repository or a tag such as library/alpine or library/alpine:3.20")
        }
        let last = text.split(separator: "/").last ?? ""
        if last.contains("@") { throw Failure("history is kept per tag: name a repository or REPO:TAG, not a digest") }
        let repository = try key(image)
        var tags: [String]
        if last.contains(":"), case .tag(let t) = image.reference { tags = [t] } else { tags = store.index.historyTags(of: repository) }
        tags = tags.filter { !store.index.history(repository, $0).isEmpty }
        guard !tags.isEmpty else { throw Failure("no history for \(text) (\(repository)): Berth has not served it") }
        let kept = store.keptManifests()
        return History(image: text, keepHistory: store.keepHistory, tags: tags.map { tag in
            let current = store.index.tag(repository, tag)?.digest
            return History.Tag(repository: repository, tag: tag, mappings: store.index.history(repository, tag).reversed().map { e in
                let c = store.coverage(of: e.digest)
                return History.Mapping(digest: e.digest.description, firstSeen: e.firstSeen, lastSeen: e.lastSeen,
                                       current: e.digest == current, kept: kept.contains(e.digest),
                                       cached: c.covered.count - c.missing.count, covered: c.covered.count)
            })
        })
    }

    static func listing(_ store: BlobStore) -> Listing {
        Listing(entries: store.listing().map {
            Entry(repository: $0.repository, tag: $0.tag, digest: $0.digest.description, mediaType: $0.mediaType,
                  bytes: $0.cachedBytes, cached: $0.cachedCount, covered: $0.coveredCount, lastUse: $0.lastUse, pinned: $0.isPinned,
                  signatures: $0.verdicts.isEmpty ? nil : $0.verdicts)
        })
    }

    static func pin(_ store: BlobStore, image: String, _ p: CacheIndex.PinnedImage) -> Pin {
        var cached = 0
        var bytes: UInt64 = 0
        for d in p.covered { if let s = store.index.size(of: d) { cached += 1; bytes += s } }
        return Pin(image: image, manifest: p.manifest.description, covered: p.covered.map(\.description), cached: cached, bytes: bytes)
    }

    static func gc(_ r: GCResult) -> GC {
        GC(removed: r.removed.map(\.description), bytes: r.removedBytes, quarantineFiles: r.quarantineFilesRemoved,
           quarantineBytes: r.quarantineBytesRemoved)
    }

    static func verify(_ r: VerifyResult) -> Verify {
        Verify(checked: r.checked, bytes: r.bytes, seconds: r.seconds, mismatches: r.mismatches.map(\.description),
               quarantined: r.quarantined, unreadable: r.unreadable)
    }

    static func progress(_ p: VerifyProgress) -> VerifyProgressLine {
        VerifyProgressLine(checked: p.checked, total: p.total, bytes: p.bytes, totalBytes: p.totalBytes, mismatches: p.mismatches)
    }

    // MARK: JSON

    static func json<T: Encodable>(_ value: T) -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return Array((try? e.encode(value)) ?? Data("{}".utf8))
    }

    static func decode<T: Decodable>(_ type: T.Type, _ bytes: [UInt8]) throws -> T {
        try JSONDecoder().decode(type, from: Data(bytes))
    }

    // MARK: text

    /// `1.5 MiB`, `312 B`.
    public static func size(_ bytes: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var v = Double(bytes)
        var i = 0
        while v >= 1024 && i < units.count - 1 { v /= 1024; i += 1 }
        return i == 0 ? "\(bytes) B" : String(format1(v)) + " " + units[i]
    }

    static func format1(_ v: Double) -> String {
        let tenths = Int((v * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }

    static func time(_ t: Int64) -> String {
        guard t > 0 else { return "-" }
        var tt = time_t(t)
        var tmv = tm()
        gmtime_r(&tt, &tmv)
        var buf = [CChar](repeating: 0, count: 32)
        _ = strftime(&buf, buf.count, "%Y-%m-%d %H:%M:%S", &tmv)
        return String(cString: buf) + "Z"
    }

    static func text(_ l: Listing) -> String {
        let signed = l.entries.contains { $0.signatures != nil }
        var rows = [["REPOSITORY", "TAG", "DIGEST", "SIZE", "BLOBS", "LAST USE", "PINNED"] + (signed ? ["SIGNATURE"] : [])]
        for e in l.entries {
            // The verdict's word (verified, unsigned, mismatch, …), one per policy rule.
            let verdict = (e.signatures ?? [:]).sorted { $0.key < $1.key }.map { String($0.value.prefix { $0 != ":" }) }.joined(separator: ",")
            rows.append([e.repository, e.tag ?? "<none>", String(e.digest.prefix(19)), size(e.bytes), "\(e.cached)/\(e.covered)",
                         time(e.lastUse), e.pinned ? "pinned" : ""] + (signed ? [verdict] : []))
        }
        return table(rows)
    }

    static func text(_ u: Usage, directory: String, serverRunning: Bool) -> String {
        func pct(_ v: UInt64) -> String { u.budget == 0 ? "-" : format1(Double(v) * 100 / Double(u.budget)) + " %" }
        var rows = [
            ["cache", directory + (serverRunning ? " (server running)" : " (no server running)")],
            ["budget", "\(size(u.budget)) (\(u.budget) bytes); eviction from \(size(u.highWatermark)) down to \(size(u.lowWatermark))"],
            ["used", "\(size(u.total)) (\(u.total) bytes), \(pct(u.total)) of the budget"],
            ["  blobs", "\(size(u.blobs)) (\(u.blobs) bytes) in \(u.count) blobs"],
            ["  pinned", "\(size(u.pinned)) (\(u.pinned) bytes) of the blobs, \(u.pinnedImages) pinned images"],
            ["  history", "\(size(u.kept)) (\(u.kept) bytes) of the blobs, kept for tags the upstream moved (cache.keep_history)"],
            ["  reserved", "\(size(u.reserved)) (\(u.reserved) bytes) for fills in progress"],
            ["  index", "\(size(u.index)) (\(u.index) bytes)"],
            ["  quarantine", "\(size(u.quarantine)) (\(u.quarantine) bytes)"],
        ]
        if u.pinnedOverBudget {
            rows.append(["warning", "pinned content exceeds the low watermark: eviction cannot bring the cache under it"])
        }
        return table(rows, header: false)
    }

    static func text(_ h: History) -> String {
        var rows = [["REPOSITORY", "TAG", "DIGEST", "FIRST SEEN", "LAST SEEN", "BLOBS", ""]]
        for t in h.tags {
            for m in t.mappings {
                rows.append([t.repository, t.tag, m.digest, time(m.firstSeen), time(m.lastSeen), "\(m.cached)/\(m.covered)",
                             [m.current ? "current" : nil, m.kept ? "kept" : nil].compactMap { $0 }.joined(separator: ", ")])
            }
        }
        return table(rows)
    }

    static func text(_ v: Verify) -> String {
        var s = "checked \(v.checked) blobs, \(size(v.bytes)) in \(format1(v.seconds)) s (\(format1(v.seconds > 0 ? Double(v.bytes) / 1e6 / v.seconds : 0)) MB/s); "
        s += "\(v.mismatches.count) mismatches"
        if v.unreadable > 0 { s += ", \(v.unreadable) unreadable (evicted meanwhile?)" }
        s += "\n"
        for (d, q) in zip(v.mismatches, v.quarantined) { s += "mismatch: \(d) quarantined as \(q)\n" }
        for d in v.mismatches.dropFirst(v.quarantined.count) { s += "mismatch: \(d) (not quarantined, see the log)\n" }
        return s
    }

    static func text(_ g: GC) -> String {
        var s = "removed \(g.removed.count) blobs (\(size(g.bytes)))"
        if g.quarantineFiles > 0 { s += " and \(g.quarantineFiles) quarantined files (\(size(g.quarantineBytes)))" }
        s += "\n"
        for d in g.removed { s += "removed \(d)\n" }
        return s
    }

    static func text(_ p: Pin, verb: String) -> String {
        "\(verb) \(p.image) → \(p.manifest): \(p.covered.count) digests, \(p.cached) cached (\(size(p.bytes)))\n"
    }

    static func text(_ r: ImageImporter.Report) -> String {
        var out = ""
        for i in r.images {
            out += "imported \(i.names.joined(separator: ", ")) → \(i.digest) (\(i.blobs) digests, \(size(i.bytes)))\n"
            if i.built {
                out += "  a classic docker save has no registry manifest: Berth built an OCI manifest from its config and layers; its digest \(i.digest) is new\n"
            }
        }
        out += "\(r.added) new blobs (\(size(r.addedBytes))) from \(size(r.archiveBytes)) read in \(format1(r.seconds)) s"
        if r.seconds > 0 { out += " (\(format1(Double(r.archiveBytes) / 1_048_576 / r.seconds)) MiB/s)" }
        return out + "\n"
    }

    static func text(_ r: ImageExporter.Report) -> String {
        var out = "exported \(r.images.joined(separator: ", ")) to \(r.output): \(r.blobs) blobs (\(size(r.bytes))), file \(size(r.fileBytes)) in \(format1(r.seconds)) s"
        if r.seconds > 0 { out += " (\(format1(Double(r.bytes) / 1_048_576 / r.seconds)) MiB/s)" }
        return out + "\n"
    }

    static func progressLine(_ verb: String, _ p: Transfer, seconds: Double) -> String {
        let pct = p.total == 0 ? "" : " (\(p.done * 100 / p.total) %)"
        return "\r\u{1b}[K\(verb): \(size(p.done)) of \(size(p.total))\(pct), \(size(UInt64(Double(p.done) / max(seconds, 0.001))))/s"
    }

    static func progressLine(_ p: VerifyProgressLine) -> String {
        "\rverifying: \(p.checked)/\(p.total) blobs, \(size(p.bytes)) of \(size(p.totalBytes)), \(p.mismatches) mismatches"
    }

    static func table(_ rows: [[String]], header: Bool = true) -> String {
        guard let first = rows.first else { return "" }
        var widths = [Int](repeating: 0, count: first.count)
        for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
        var out = ""
        for r in rows {
            var line = ""
            for (i, c) in r.enumerated() {
                line += c
                if i < r.count - 1 { line += String(repeating: " ", count: widths[i] - c.count + 2) }
            }
            while line.last == " " { line.removeLast() }
            out += line + "\n"
        }
        return out
    }
}
