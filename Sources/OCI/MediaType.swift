/// Manifest media types Berth knows, and helpers to compare them.
public enum MediaType {
    public static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    public static let dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
    public static let ociManifest = "application/vnd.oci.image.manifest.v1+json"
    public static let ociIndex = "application/vnd.oci.image.index.v1+json"
    public static let dockerSchema1Signed = "application/vnd.docker.distribution.manifest.v1+prettyjws"
    public static let dockerSchema1 = "application/vnd.docker.distribution.manifest.v1+json"
    /// The short-lived OCI artifact manifest (image-spec 1.1 release candidates). Not in
    /// `allManifests` (Berth does not ask for it), but recognised when an upstream serves it.
    public static let ociArtifactManifest = "application/vnd.oci.artifact.manifest.v1+json"

    /// Every manifest type Berth asks upstreams for.
    public static let allManifests: [String] = [
        ociIndex, ociManifest, dockerManifestList, dockerManifest, dockerSchema1Signed, dockerSchema1,
    ]

    /// The `Accept` value for upstream manifest requests when the client sent none.
    public static var defaultAccept: String { allManifests.joined(separator: ", ") }

    /// True for the two index types (OCI index, Docker manifest list); parameters and case ignored.
    public static func isIndex(_ mediaType: String) -> Bool {
        let essence = essence(mediaType)
        return essence == ociIndex || essence == dockerManifestList
    }

    /// True for a manifest or index type Berth knows (including the OCI artifact manifest).
    public static func isManifest(_ mediaType: String) -> Bool {
        let essence = essence(mediaType)
        return essence == ociArtifactManifest || allManifests.contains(essence)
    }

    /// True for the two Docker schema1 types.
    public static func isSchema1(_ mediaType: String) -> Bool {
        let essence = essence(mediaType)
        return essence == dockerSchema1Signed || essence == dockerSchema1
    }

    /// True for a bare `type/subtype` (RFC 6838 restricted names: a letter or
    /// digit, then up to 126 of letters, digits and `!#$&-^_.+`), the only
    /// shape Berth accepts from a manifest's `mediaType`: it becomes a
    /// `Content-Type` header, so no parameter, space, CR or LF may come with it.
    public static func isValid(_ mediaType: String) -> Bool {
        let parts = mediaType.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        guard parts.count == 2 else { return false }
        return parts.allSatisfy { name in
            guard let first = name.first, name.count <= 127, isAlnum(first) else { return false }
            return name.allSatisfy { isAlnum($0) || "!#$&-^_.+".utf8.contains($0) }
        }
    }

    private static func isAlnum(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a)
    }

    /// `type/subtype` of a `Content-Type` value: parameters dropped, whitespace trimmed, lowercased.
    public static func essence(_ contentType: String) -> String {
        let bare = contentType.utf8.firstIndex(of: UInt8(ascii: ";")).map { contentType[..<$0] } ?? contentType[...]
        return String(bare.trimmingOWS()).lowercased()
    }
}

extension Substring {
    /// Drops leading and trailing spaces and tabs (HTTP's optional whitespace).
    func trimmingOWS() -> Substring {
        var s = self
        while let c = s.first, c == " " || c == "\t" { s.removeFirst() }
        while let c = s.last, c == " " || c == "\t" { s.removeLast() }
        return s
    }
}
