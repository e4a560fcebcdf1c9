import FoundationEssentials

/// A Sigstore bundle as cosign 3 attaches an image signature by default
/// (cosign's `specs/BUNDLE_SPEC.md`): an OCI 1.1 artifact whose one layer is
/// the bundle, listed by the referrers API or, on a registry without it, in
/// the index tagged `sha256-<hex>`. For `cosign sign` the bundle holds a DSSE
/// envelope around an in-toto statement of predicate type
/// `https://sigstore.dev/cosign/sign/v1` whose subject is the manifest digest;
/// the signatures sign the envelope's DSSE pre-authentication encoding.
public struct SigstoreBundle: Equatable, Sendable {
    /// The artifact and layer media types of a bundle (v0.3, and the earlier spelling).
    public static let mediaTypes: Set<String> = [
        "application/vnd.dev.sigstore.bundle.v0.3+json",
        "application/vnd.dev.sigstore.bundle+json;version=0.3",
        "application/vnd.dev.sigstore.bundle+json;version=0.2",
    ]
    /// Bundles larger than this are refused unread (a key-based one is a few KiB).
    public static let maxBytes = 1 << 20
    public static let inTotoPayloadType = "application/vnd.in-toto+json"
    public static let signPredicateType = "https://sigstore.dev/cosign/sign/v1"
    /// Signatures read from one envelope, at most.
    public static let maxSignatures = 32

    public let payloadType: String
    /// The envelope's payload, decoded: the in-toto statement.
    public let payload: [UInt8]
    /// The raw signatures (DER for ECDSA).
    public let signatures: [[UInt8]]

    public init(payloadType: String, payload: [UInt8], signatures: [[UInt8]]) {
        self.payloadType = payloadType
        self.payload = payload
        self.signatures = signatures
    }

    /// The envelope of a bundle's JSON. A bundle with a `messageSignature`
    /// (what `cosign sign-blob` writes) signs no statement about a manifest: refused.
    public static func parse(_ bytes: [UInt8]) throws -> SigstoreBundle {
        guard bytes.count <= maxBytes else { throw SignatureFormatError("sigstore bundle of \(bytes.count) bytes, over \(maxBytes)") }
        struct Raw: Decodable {
            struct Envelope: Decodable {
                struct Signature: Decodable { var sig: String? }
                var payload: String?
                var payloadType: String?
                var signatures: [Signature]?
            }
            var dsseEnvelope: Envelope?
            var messageSignature: [String: AnyDecodable]?
        }
        guard let raw = try? JSONDecoder().decode(Raw.self, from: Data(bytes)) else {
            throw SignatureFormatError("sigstore bundle is not a JSON bundle")
        }
        guard let envelope = raw.dsseEnvelope else {
            throw SignatureFormatError(raw.messageSignature != nil
                ? "sigstore bundle holds a message signature (cosign sign-blob), not an image signature"
                : "sigstore bundle holds no DSSE envelope")
        }
        guard let type = envelope.payloadType, let text = envelope.payload, let payload = Data(base64Encoded: text) else {
            throw SignatureFormatError("sigstore bundle's envelope has no base64 payload and type")
        }
        var signatures: [[UInt8]] = []
        for s in (envelope.signatures ?? []).prefix(maxSignatures) {
            guard let text = s.sig, let sig = Data(base64Encoded: text), !sig.isEmpty, sig.count <= 4096 else {
                throw SignatureFormatError("sigstore bundle's envelope has a signature that is not base64")
            }
            signatures.append(Array(sig))
        }
        return SigstoreBundle(payloadType: type, payload: Array(payload), signatures: signatures)
    }

    /// What the signatures sign: DSSE v1's pre-authentication encoding,
    /// `DSSEv1 <len(type)> <type> <len(payload)> <payload>`.
    public var signedBytes: [UInt8] {
        var out = Array("DSSEv1 \(payloadType.utf8.count) \(payloadType) \(payload.count) ".utf8)
        out.append(contentsOf: payload)
        return out
    }

    /// The manifest digests the statement vouches for. Read only after a
    /// trusted key verified `signedBytes`; throws unless it is cosign's image-signature statement.
    public func signedDigests() throws -> [Digest] {
        guard payloadType == Self.inTotoPayloadType else {
            throw SignatureFormatError("sigstore bundle's payload type is \(payloadType), not \(Self.inTotoPayloadType)")
        }
        struct Statement: Decodable {
            struct Subject: Decodable { var digest: [String: String]? }
            var type: String?
            var subject: [Subject]?
            var predicateType: String?
            enum CodingKeys: String, CodingKey { case type = "_type", subject, predicateType }
        }
        guard payload.count <= SimpleSigningPayload.maxBytes, let s = try? JSONDecoder().decode(Statement.self, from: Data(payload)),
              s.type?.hasPrefix("https://in-toto.io/Statement/") == true else {
            throw SignatureFormatError("sigstore bundle's payload is not an in-toto statement")
        }
        guard s.predicateType == Self.signPredicateType else {
            throw SignatureFormatError("sigstore bundle's statement is a \(s.predicateType ?? "missing") predicate, not an image signature")
        }
        let digests = (s.subject ?? []).compactMap { $0.digest?["sha256"].flatMap { Digest(algorithm: .sha256, hex: $0) } }
        guard !digests.isEmpty else { throw SignatureFormatError("sigstore bundle's statement names no sha256 subject") }
        return digests
    }
}

extension SigstoreBundle {
    /// Bundle artifacts read for one image, at most.
    public static let maxArtifacts = 8

    /// The tag a registry without the referrers API keeps an image's referrers index under.
    public static func referrersTag(for digest: Digest) -> String { "\(digest.algorithm.rawValue)-\(digest.hex)" }

    /// The bundle artifacts an index lists (the referrers API's answer, or the referrers tag's index).
    public static func artifacts(inIndex bytes: [UInt8]) throws -> [Digest] {
        struct Raw: Decodable {
            struct Entry: Decodable { var digest: String; var artifactType: String? }
            var manifests: [Entry]?
        }
        guard bytes.count <= ManifestSummary.maxBytes, let raw = try? JSONDecoder().decode(Raw.self, from: Data(bytes)) else {
            throw SignatureFormatError("referrers index is not a JSON index")
        }
        return (raw.manifests ?? []).filter { $0.artifactType.map(mediaTypes.contains) == true }
            .compactMap { Digest($0.digest) }.prefix(maxArtifacts).map { $0 }
    }

    /// The bundle layer of a bundle artifact's manifest.
    public static func layer(inManifest bytes: [UInt8]) throws -> Descriptor {
        struct Raw: Decodable {
            struct Layer: Decodable { var mediaType: String?; var digest: String; var size: Int64 }
            var layers: [Layer]?
        }
        guard bytes.count <= ManifestSummary.maxBytes, let raw = try? JSONDecoder().decode(Raw.self, from: Data(bytes)) else {
            throw SignatureFormatError("bundle artifact is not a JSON manifest")
        }
        guard let l = raw.layers?.first(where: { $0.mediaType.map(mediaTypes.contains) == true }), let d = Digest(l.digest),
              l.size >= 0, l.size <= Int64(maxBytes) else {
            throw SignatureFormatError("bundle artifact has no bundle layer of a sane size")
        }
        return Descriptor(mediaType: l.mediaType ?? "", digest: d, size: l.size)
    }
}

/// Any JSON value, skipped (a bundle's `messageSignature` is only recognised, never read).
struct AnyDecodable: Decodable {
    init(from decoder: any Decoder) throws {}
}
