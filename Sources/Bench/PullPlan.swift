import FoundationEssentials
import OCI

/// What a benchmark request fetched, as `berth bench` counts requests.
public enum RequestKind: String, CaseIterable, Codable, Sendable, Comparable {
    /// `HEAD …/manifests/<tag>`: resolving the tag.
    case head
    /// `GET` of the document the tag names when it is an index (or manifest list).
    case index
    /// `GET` of an image manifest: the platform's, or the tag's when it is no index.
    case manifest
    /// `GET` of the image config blob.
    case config
    /// `GET` of a layer blob.
    case layer

    /// True for the two blob kinds.
    public var isBlob: Bool { self == .config || self == .layer }

    public static func < (a: RequestKind, b: RequestKind) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}

/// An OCI platform as `--platform` spells it: `os/architecture[/variant]`.
public struct Platform: Equatable, Sendable, CustomStringConvertible {
    public var os: String
    public var architecture: String
    public var variant: String?

    public init(os: String, architecture: String, variant: String? = nil) {
        self.os = os
        self.architecture = architecture
        self.variant = variant
    }

    /// Parses `linux/amd64` or `linux/arm64/v8`; nil for anything else.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2 || parts.count == 3, !parts.contains(where: \.isEmpty) else { return nil }
        self.init(os: parts[0], architecture: parts[1], variant: parts.count == 3 ? parts[2] : nil)
    }

    /// containerd's default on this machine kind.
    public static let linuxAmd64 = Platform(os: "linux", architecture: "amd64")

    public var description: String { [os, architecture, variant].compactMap { $0 }.joined(separator: "/") }
}

/// The child manifests of an index with their platforms, and the choice among them.
public struct IndexPlatforms: Equatable, Sendable {
    public struct Entry: Equatable, Sendable {
        public let descriptor: Descriptor
        public let platform: Platform?
    }

    public let entries: [Entry]

    /// Reads the `manifests` of an index document (already accepted by `ManifestSummary.parse`).
    public static func parse(_ bytes: [UInt8]) throws -> IndexPlatforms {
        struct Raw: Decodable {
            struct Child: Decodable {
                struct P: Decodable { var os: String; var architecture: String; var variant: String? }
                var mediaType: String?
                var digest: String
                var size: Int64
                var platform: P?
            }
            var manifests: [Child]?
        }
        let raw: Raw
        do { raw = try JSONDecoder().decode(Raw.self, from: Data(bytes)) } catch {
            throw ManifestError(message: "index is not a valid JSON document")
        }
        return IndexPlatforms(entries: try (raw.manifests ?? []).map { c in
            guard let d = Digest(c.digest), c.size >= 0 else { throw ManifestError(message: "index entry \(c.digest) is invalid") }
            return Entry(descriptor: Descriptor(mediaType: c.mediaType ?? "", digest: d, size: c.size),
                         platform: c.platform.map { Platform(os: $0.os, architecture: $0.architecture, variant: $0.variant) })
        })
    }

    /// The manifest containerd would pull for `platform`: the first entry with
    /// the same os and architecture whose variant matches when one is asked
    /// for (any variant otherwise). Attestation manifests (`unknown/unknown`) never match.
    public func select(_ platform: Platform) -> Descriptor? {
        entries.first { e in
            guard let p = e.platform, p.os == platform.os, p.architecture == platform.architecture else { return false }
            return platform.variant == nil || p.variant == platform.variant
        }?.descriptor
    }
}

/// One blob request of a pull.
public struct BlobFetch: Equatable, Sendable {
    public let kind: RequestKind
    public let descriptor: Descriptor
}

/// The blob stage of one pull as containerd runs it: the config first, alone,
/// then the layers in manifest order with at most `parallelism` in flight.
/// A value: `next()` says what to start, `finished()` that one ended.
public struct BlobSchedule: Equatable, Sendable {
    public let parallelism: Int
    private var pending: [BlobFetch]
    private var cursor = 0
    public private(set) var inFlight = 0
    private var configRunning = false

    /// The blobs of `manifest`; `parallelism` is clamped to at least 1.
    public init(manifest: ManifestSummary, parallelism: Int) {
        self.parallelism = max(1, parallelism)
        pending = (manifest.config.map { [BlobFetch(kind: .config, descriptor: $0)] } ?? [])
            + manifest.layers.map { BlobFetch(kind: .layer, descriptor: $0) }
    }

    /// Every blob in the order it is started.
    public var blobs: [BlobFetch] { pending }

    /// The next fetch to start now, nil when the bound (or the config running alone) says wait, or none is left.
    public mutating func next() -> BlobFetch? {
        guard cursor < pending.count, !configRunning, inFlight < parallelism else { return nil }
        let f = pending[cursor]
        if f.kind == .config && inFlight > 0 { return nil }
        cursor += 1
        inFlight += 1
        if f.kind == .config { configRunning = true }
        return f
    }

    /// One started fetch ended.
    public mutating func finished() {
        precondition(inFlight > 0, "finished() without a started fetch")
        inFlight -= 1
        configRunning = false
    }

    /// True once every fetch was started and has ended.
    public var isComplete: Bool { cursor == pending.count && inFlight == 0 }
}
