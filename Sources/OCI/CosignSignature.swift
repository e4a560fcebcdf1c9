import FoundationEssentials

/// A signature refused as unreadable (not merely unverified).
public struct SignatureFormatError: Error, Equatable, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The simple-signing payload a cosign signature signs: which manifest digest it vouches for.
public struct SimpleSigningPayload: Equatable, Sendable {
    /// Payloads larger than this are refused unread (cosign's are a few hundred bytes).
    public static let maxBytes = 64 * 1024
    public static let type = "cosign container image signature"

    public let manifestDigest: Digest
    public let dockerReference: String

    public static func parse(_ bytes: [UInt8]) throws -> SimpleSigningPayload {
        guard bytes.count <= maxBytes else { throw SignatureFormatError("signature payload of \(bytes.count) bytes, over \(maxBytes)") }
        struct Raw: Decodable {
            struct Critical: Decodable {
                struct Identity: Decodable { var dockerReference: String?
                    enum CodingKeys: String, CodingKey { case dockerReference = "docker-reference" } }
                struct Image: Decodable { var digest: String?
                    enum CodingKeys: String, CodingKey { case digest = "docker-manifest-digest" } }
                var identity: Identity?
                var image: Image?
                var type: String?
            }
            var critical: Critical?
        }
        guard let raw = try? JSONDecoder().decode(Raw.self, from: Data(bytes)), let critical = raw.critical else {
            throw SignatureFormatError("signature payload is not a simple-signing JSON document")
        }
        guard critical.type == type else { throw SignatureFormatError("signature payload type is \(critical.type ?? "missing"), not \(type)") }
        guard let text = critical.image?.digest, let digest = Digest(text) else {
            throw SignatureFormatError("signature payload names no valid docker-manifest-digest")
        }
        return SimpleSigningPayload(manifestDigest: digest, dockerReference: critical.identity?.dockerReference ?? "")
    }
}

/// Cosign's key-based signatures as it stores them: the tag
/// `sha256-<hex>.sig` names a manifest with one layer per signature, each
/// layer a simple-signing payload (`payloadMediaType`) whose signature is
/// the base64 annotation `dev.cosignproject.cosign/signature`.
public struct CosignSignature: Equatable, Sendable {
    public static let payloadMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
    public static let annotation = "dev.cosignproject.cosign/signature"
    /// Signatures read from one `.sig` manifest, at most.
    public static let maxPerManifest = 32

    /// The payload blob.
    public let payload: Descriptor
    /// The raw signature (DER for ECDSA).
    public let signature: [UInt8]

    public static func tag(for digest: Digest) -> String { "\(digest.algorithm.rawValue)-\(digest.hex).sig" }

    /// The signatures in a `.sig` manifest; layers of other types, or without the annotation, are skipped.
    public static func parse(_ manifest: [UInt8]) throws -> [CosignSignature] {
        struct Raw: Decodable {
            struct Layer: Decodable {
                var mediaType: String?
                var digest: String
                var size: Int64
                var annotations: [String: String]?
            }
            var layers: [Layer]?
        }
        guard manifest.count <= ManifestSummary.maxBytes, let raw = try? JSONDecoder().decode(Raw.self, from: Data(manifest)) else {
            throw SignatureFormatError("signature manifest is not a valid JSON manifest")
        }
        var out: [CosignSignature] = []
        for l in raw.layers ?? [] where l.mediaType == payloadMediaType {
            guard let text = l.annotations?[annotation] else { continue }
            guard let d = Digest(l.digest), l.size >= 0, l.size <= SimpleSigningPayload.maxBytes else {
                throw SignatureFormatError("signature layer \(l.digest) has a bad digest or size")
            }
            guard let sig = Data(base64Encoded: text), !sig.isEmpty, sig.count <= 4096 else {
                throw SignatureFormatError("signature of \(l.digest) is not base64")
            }
            out.append(CosignSignature(payload: Descriptor(mediaType: payloadMediaType, digest: d, size: l.size), signature: Array(sig)))
            if out.count == maxPerManifest { break }
        }
        return out
    }
}
