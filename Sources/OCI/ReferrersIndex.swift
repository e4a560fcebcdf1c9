import FoundationEssentials

/// The referrers API's answer built from manifests Berth holds (image-spec
/// 1.1 "Listing Referrers"): an OCI index with one descriptor per manifest
/// whose `subject` is the digest asked about.
public enum ReferrersIndex {
    /// A cached manifest that may refer to the subject.
    public struct Candidate: Sendable {
        public var digest: Digest
        public var mediaType: String
        public var bytes: [UInt8]
        public init(digest: Digest, mediaType: String, bytes: [UInt8]) {
            self.digest = digest
            self.mediaType = mediaType
            self.bytes = bytes
        }
    }

    /// The index document: candidates whose subject really is `subject`
    /// (re-read from their bytes), those of `artifactType` only when one is
    /// given, sorted by digest. Each descriptor carries the manifest's media
    /// type, digest, size, `artifactType` (else its config's media type) and
    /// annotations, as the spec asks.
    public static func encode(_ candidates: [Candidate], subject: Digest, artifactType: String? = nil) -> [UInt8] {
        var entries: [(Digest, String)] = []
        for c in candidates {
            guard let summary = try? ManifestSummary.parse(c.bytes, contentType: c.mediaType),
                  summary.subject?.digest == subject else { continue }
            let type = summary.artifactType ?? summary.config?.mediaType
            if let artifactType, type != artifactType { continue }
            var d = #"{"mediaType":""# + jsonEscaped(summary.mediaType) + #"","digest":""# + c.digest.description
                + #"","size":"# + String(c.bytes.count)
            if let type { d += #","artifactType":""# + jsonEscaped(type) + "\"" }
            let annotations = (try? JSONDecoder().decode(Annotated.self, from: Data(c.bytes)))?.annotations ?? [:]
            if !annotations.isEmpty {
                d += #","annotations":{"# + annotations.sorted { $0.key < $1.key }
                    .map { "\"" + jsonEscaped($0.key) + "\":\"" + jsonEscaped($0.value) + "\"" }.joined(separator: ",") + "}"
            }
            entries.append((c.digest, d + "}"))
        }
        let body = entries.sorted { $0.0.description < $1.0.description }.map(\.1).joined(separator: ",")
        return Array((#"{"schemaVersion":2,"mediaType":""# + MediaType.ociIndex + #"","manifests":["# + body + "]}").utf8)
    }

    private struct Annotated: Decodable {
        var annotations: [String: String]?
    }
}
