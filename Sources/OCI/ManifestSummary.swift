import FoundationEssentials

/// A content descriptor: what a manifest says about one blob or child manifest.
public struct Descriptor: Equatable, Sendable {
    /// The referenced content's media type ("" when the document left it out).
    public let mediaType: String
    /// The referenced content's digest.
    public let digest: Digest
    /// The referenced content's size in bytes; -1 only where a document cannot say (never from `parse`).
    public let size: Int64

    /// A descriptor from its parts.
    public init(mediaType: String, digest: Digest, size: Int64) {
        self.mediaType = mediaType
        self.digest = digest
        self.size = size
    }
}

/// A manifest document that Berth refuses; the proxy answers `MANIFEST_INVALID`.
public struct ManifestError: Error, Equatable, Sendable {
    /// What is wrong with the document.
    public let message: String
    /// The OCI error code for every manifest refusal.
    public var code: String { "MANIFEST_INVALID" }

    /// A refusal with its reason.
    public init(message: String) { self.message = message }
}

/// What Berth needs from a manifest document: which blobs and child manifests it references.
public struct ManifestSummary: Equatable, Sendable {
    /// The largest manifest accepted, as Distribution's (DECISIONS.md "Paths, methods, HTTP").
    public static let maxBytes = 4 << 20

    /// The effective media type: the document's `mediaType`, else a manifest-type
    /// `Content-Type`, else inferred (index if it has `manifests`, else OCI manifest).
    public let mediaType: String
    /// True for an OCI index or a Docker manifest list.
    public let isIndex: Bool
    /// The image config (or an artifact's config).
    public let config: Descriptor?
    /// The layers, and an artifact manifest's `blobs`.
    public let layers: [Descriptor]
    /// The children of an index.
    public let manifests: [Descriptor]
    /// The manifest this one refers to (image-spec 1.1 `subject`), for referrers.
    public let subject: Descriptor?
    /// The document's `artifactType`, if any.
    public let artifactType: String?

    /// Every blob the document references: config, then layers.
    public var blobs: [Descriptor] { (config.map { [$0] } ?? []) + layers }

    /// Summarises a manifest document as served with `contentType`.
    ///
    /// Refuses (ManifestError) a document over `maxBytes`, invalid JSON or not an
    /// object, one that is ambiguous (CVE-2021-41190: both `manifests` and
    /// `layers`/`config`/`blobs`; an index type with image parts or an image type
    /// with `manifests`; a `mediaType` differing from a manifest-type `Content-Type`),
    /// and descriptors with an invalid digest or a negative size. Docker schema1
    /// documents are accepted with no children: their `fsLayers` carry no sizes
    /// and Berth does not resolve them.
    public static func parse(_ bytes: [UInt8], contentType: String?) throws -> ManifestSummary {
        guard bytes.count <= maxBytes else {
            throw ManifestError(message: "manifest of \(bytes.count) bytes exceeds the \(maxBytes)-byte limit")
        }
        let document: RawManifest
        do {
            document = try JSONDecoder().decode(RawManifest.self, from: Data(bytes))
        } catch {
            throw ManifestError(message: "manifest is not a valid JSON document")
        }

        // A Content-Type that names no manifest type (application/json,
        // application/octet-stream, text/plain) says nothing about the document.
        let served = contentType.map(MediaType.essence).flatMap { MediaType.isManifest($0) ? $0 : nil }
        let declared = document.mediaType.flatMap { $0.isEmpty ? nil : $0 }
        if let declared, !MediaType.isValid(declared) {
            throw ManifestError(message: "manifest mediaType is not a type/subtype media type")
        }
        if let declared, let served, declared.lowercased() != served {
            throw ManifestError(message: "manifest mediaType \(declared) differs from Content-Type \(served)")
        }

        let hasChildren = document.manifests != nil
        let hasImageParts = document.layers != nil || document.config != nil || document.blobs != nil
        let isSchema1 = document.schemaVersion == 1 || MediaType.isSchema1(declared ?? served ?? "")
        let mediaType = declared ?? served ?? (isSchema1
            ? (document.signatures != nil ? MediaType.dockerSchema1Signed : MediaType.dockerSchema1)
            : (hasChildren ? MediaType.ociIndex : MediaType.ociManifest))

        if isSchema1 {
            guard !hasChildren else { throw ManifestError(message: "schema1 manifest with a manifests list") }
            return ManifestSummary(
                mediaType: mediaType, isIndex: false, config: nil, layers: [], manifests: [], subject: nil, artifactType: nil
            )
        }
        if hasChildren && hasImageParts {
            throw ManifestError(message: "manifest has both manifests and layers, config or blobs (ambiguous)")
        }
        let isIndex = MediaType.isIndex(mediaType)
        if isIndex && hasImageParts {
            throw ManifestError(message: "index media type \(mediaType) with layers, config or blobs")
        }
        if !isIndex && hasChildren && MediaType.isManifest(mediaType) {
            throw ManifestError(message: "image media type \(mediaType) with a manifests list")
        }

        return ManifestSummary(
            mediaType: mediaType,
            isIndex: isIndex || hasChildren,
            config: try document.config.map { try $0.validated("config") },
            layers: try ((document.layers ?? []) + (document.blobs ?? [])).map { try $0.validated("layer") },
            manifests: try (document.manifests ?? []).map { try $0.validated("manifest") },
            subject: try document.subject.map { try $0.validated("subject") },
            artifactType: document.artifactType
        )
    }

    /// A summary from its parts (for tests and for documents Berth builds itself).
    public init(
        mediaType: String, isIndex: Bool, config: Descriptor?, layers: [Descriptor], manifests: [Descriptor],
        subject: Descriptor?, artifactType: String? = nil
    ) {
        self.mediaType = mediaType
        self.isIndex = isIndex
        self.config = config
        self.layers = layers
        self.manifests = manifests
        self.subject = subject
        self.artifactType = artifactType
    }
}

// MARK: - Wire shapes

/// The union of the fields of every manifest type Berth reads; unknown fields are ignored.
private struct RawManifest: Decodable {
    var schemaVersion: Int?
    var mediaType: String?
    var artifactType: String?
    var config: RawDescriptor?
    var layers: [RawDescriptor]?
    var blobs: [RawDescriptor]?
    var manifests: [RawDescriptor]?
    var subject: RawDescriptor?
    /// Present in signed schema1 documents; only its presence matters.
    var signatures: [IgnoredValue]?
}

private struct RawDescriptor: Decodable {
    var mediaType: String?
    var digest: String
    var size: Int64

    func validated(_ role: String) throws -> Descriptor {
        guard let parsed = Digest(digest) else { throw ManifestError(message: "\(role) descriptor has an invalid digest: \(digest)") }
        guard size >= 0 else { throw ManifestError(message: "\(role) descriptor \(digest) has a negative size") }
        return Descriptor(mediaType: mediaType ?? "", digest: parsed, size: size)
    }
}

/// Any JSON value, decoded and dropped.
private struct IgnoredValue: Decodable {
    init(from decoder: Decoder) throws {}
}
