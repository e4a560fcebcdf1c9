/// A request path Berth serves, parsed and validated.
public enum Route: Equatable, Sendable {
    /// `/v2/` (and `/v2`): the API version check.
    case base
    /// `/v2/<name>/manifests/<reference>`.
    case manifest(name: String, reference: Reference)
    /// `/v2/<name>/blobs/<digest>`.
    case blob(name: String, digest: Digest)
    /// `/v2/<name>/tags/list`.
    case tagsList(name: String)
    /// `/v2/<name>/referrers/<digest>`.
    case referrers(name: String, digest: Digest)
}

/// Why a path was refused: the OCI error code, its status and a message for the error body.
public struct RouteError: Error, Equatable, Sendable {
    /// `NAME_INVALID`, `TAG_INVALID`, `DIGEST_INVALID` or `NOT_FOUND`.
    public let code: String
    /// 400 for the invalid-input codes, 404 for `NOT_FOUND`.
    public let status: Int
    /// Human-readable detail for the error body.
    public let message: String

    /// An error from its parts.
    public init(code: String, status: Int, message: String) {
        self.code = code
        self.status = status
        self.message = message
    }

    static func notFound(_ path: String) -> RouteError {
        RouteError(code: "NOT_FOUND", status: 404, message: "no route for \(path)")
    }
    static func nameInvalid(_ name: String) -> RouteError {
        RouteError(code: "NAME_INVALID", status: 400, message: "invalid repository name: \(name)")
    }
    static func tagInvalid(_ tag: String) -> RouteError {
        RouteError(code: "TAG_INVALID", status: 400, message: "invalid tag: \(tag)")
    }
    static func digestInvalid(_ digest: String) -> RouteError {
        RouteError(code: "DIGEST_INVALID", status: 400, message: "invalid digest: \(digest)")
    }
}

/// The route table of the pull API (distribution spec "Endpoints", GET/HEAD only).
///
/// | shape                                   | route        |
/// |-----------------------------------------|--------------|
/// | `/v2/`, `/v2`                           | `.base`      |
/// | `/v2/<name>/manifests/<tag or digest>`  | `.manifest`  |
/// | `/v2/<name>/blobs/<digest>`             | `.blob`      |
/// | `/v2/<name>/tags/list`                  | `.tagsList`  |
/// | `/v2/<name>/referrers/<digest>`         | `.referrers` |
public enum Routes {
    /// Parses a raw request path (query string already removed by the caller).
    ///
    /// The path is taken exactly as received: no percent-decoding, no
    /// dot-segment removal, no slash merging, so `/v2/a//b/manifests/x`,
    /// `/v2/%61/manifests/x` and `/v2/a/../b/manifests/x` are `NAME_INVALID`.
    /// Names may contain `manifests`, `blobs`, `tags` or `referrers`
    /// components: the shape is read from the last two segments.
    ///
    /// - Paths outside `/v2/`, of no known shape, or with an empty name or
    ///   final segment (`/v2/a/manifests/`) → `NOT_FOUND`.
    /// - An invalid name → `NAME_INVALID`.
    /// - A manifest reference that is neither a tag nor a digest →
    ///   `DIGEST_INVALID` if it contains ':', else `TAG_INVALID`.
    /// - An invalid blob or referrers digest → `DIGEST_INVALID`.
    public static func parse<S: StringProtocol>(path: S) -> Result<Route, RouteError> {
        // Over the path's bytes: only the name, the tag and the digest become Strings
        // (by String slicing this was ~10k instructions of each cached manifest answer).
        if let r = path.utf8.withContiguousStorageIfAvailable({ parse(utf8: $0) }) { return r }
        var copy = String(path)
        return copy.withUTF8 { parse(utf8: $0) }
    }

    /// `parse(path:)` over the raw path's UTF-8 bytes.
    public static func parse(utf8 p: UnsafeBufferPointer<UInt8>) -> Result<Route, RouteError> {
        func text(_ r: Range<Int>) -> String { String(decoding: UnsafeBufferPointer(rebasing: p[r]), as: UTF8.self) }
        func slice(_ r: Range<Int>) -> UnsafeBufferPointer<UInt8> { UnsafeBufferPointer(rebasing: p[r]) }
        let slash = UInt8(ascii: "/")
        let isV2 = p.count >= 3 && p[0] == slash && p[1] == UInt8(ascii: "v") && p[2] == UInt8(ascii: "2")
        if isV2 && (p.count == 3 || (p.count == 4 && p[3] == slash)) { return .success(.base) }
        guard isV2 && p.count > 4 && p[3] == slash else { return .failure(.notFound(text(0..<p.count))) }

        // <name>/<kind>/<last>, split at the last two slashes.
        guard let lastSlash = p[4...].lastIndex(of: slash) else { return .failure(.notFound(text(0..<p.count))) }
        guard let kindSlash = p[4..<lastSlash].lastIndex(of: slash) else { return .failure(.notFound(text(0..<p.count))) }
        let last = (lastSlash + 1)..<p.count
        let kind = slice((kindSlash + 1)..<lastSlash)
        let name = 4..<kindSlash

        let shape: RouteShape
        if kind.elementsEqual("manifests".utf8) {
            shape = .manifest
        } else if kind.elementsEqual("blobs".utf8) {
            shape = .blob
        } else if kind.elementsEqual("referrers".utf8) {
            shape = .referrers
        } else if kind.elementsEqual("tags".utf8) && slice(last).elementsEqual("list".utf8) {
            shape = .tags
        } else {
            return .failure(.notFound(text(0..<p.count)))
        }
        // An empty final segment is a trailing slash, not an empty reference.
        guard !last.isEmpty else { return .failure(.notFound(text(0..<p.count))) }
        guard RepositoryName.isValid(utf8: slice(name)) else { return .failure(.nameInvalid(text(name))) }
        let repository = text(name)

        switch shape {
        case .tags:
            return .success(.tagsList(name: repository))
        case .manifest:
            if let reference = Reference(utf8: slice(last)) { return .success(.manifest(name: repository, reference: reference)) }
            return .failure(slice(last).contains(UInt8(ascii: ":")) ? .digestInvalid(text(last)) : .tagInvalid(text(last)))
        case .blob, .referrers:
            guard let digest = Digest(utf8: slice(last)) else { return .failure(.digestInvalid(text(last))) }
            return .success(shape == .blob ? .blob(name: repository, digest: digest) : .referrers(name: repository, digest: digest))
        }
    }
}

private enum RouteShape { case manifest, blob, tags, referrers }
