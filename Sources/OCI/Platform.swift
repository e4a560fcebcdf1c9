import FoundationEssentials

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
