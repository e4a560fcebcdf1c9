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
