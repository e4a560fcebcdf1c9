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
        let path = String(path)
        if path == "/v2/" || path == "/v2" { return .success(.base) }
        guard path.utf8.starts(with: "/v2/".utf8) else { return .failure(.notFound(path)) }
        let rest = path[path.utf8.index(path.startIndex, offsetBy: 4)...]

        // <name>/<kind>/<last>, split at the last two slashes.
        guard let lastSlash = rest.utf8.lastIndex(of: UInt8(ascii: "/")) else { return .failure(.notFound(path)) }
        let last = rest[rest.utf8.index(after: lastSlash)...]
        let head = rest[..<lastSlash]
        guard let kindSlash = head.utf8.lastIndex(of: UInt8(ascii: "/")) else { return .failure(.notFound(path)) }
        let kind = head[head.utf8.index(after: kindSlash)...]
        let name = head[..<kindSlash]

        let shape: RouteShape
        switch kind {
        case "manifests": shape = .manifest
        case "blobs": shape = .blob
        case "referrers": shape = .referrers
        case "tags" where last == "list": shape = .tags
        default: return .failure(.notFound(path))
        }
        // An empty final segment is a trailing slash, not an empty reference.
        guard !last.isEmpty else { return .failure(.notFound(path)) }
        guard RepositoryName.isValid(name) else { return .failure(.nameInvalid(String(name))) }
        let repository = String(name)

        switch shape {
        case .tags:
            return .success(.tagsList(name: repository))
        case .manifest:
            if let reference = Reference(last) { return .success(.manifest(name: repository, reference: reference)) }
            return .failure(last.utf8.contains(UInt8(ascii: ":")) ? .digestInvalid(String(last)) : .tagInvalid(String(last)))
        case .blob, .referrers:
            guard let digest = Digest(String(last)) else { return .failure(.digestInvalid(String(last))) }
            return .success(shape == .blob ? .blob(name: repository, digest: digest) : .referrers(name: repository, digest: digest))
        }
    }
}

private enum RouteShape { case manifest, blob, tags, referrers }
