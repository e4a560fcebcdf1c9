/// What the handler knows about a request that the server does not: filled
/// in on the `ResponseWriter` as the request is routed and answered.
public struct AccessNotes: Sendable {
    /// The authenticated user (`anonymous` without credentials).
    public var user: String?
    /// The upstream's configured name.
    public var upstream: String?
    /// The repository as the upstream knows it.
    public var repository: String?
    /// A tag or a digest.
    public var reference: String?
    /// The value Berth sent in `Cache-Status` (`Berth; hit`); logged without its `Berth; `.
    public var cacheStatus: String?
    /// The OCI error code of a ≥ 400 answer, and its message.
    public var error: String?
    public var errorMessage: String?
    /// Time spent waiting on upstreams for this request (see README: access log).
    public var upstreamNanos: UInt64?

    public init() {}

    /// Adds `nanos` to `upstreamNanos`.
    public mutating func addUpstreamWait(_ nanos: UInt64) { upstreamNanos = (upstreamNanos ?? 0) + nanos }
}

/// One line of the access log: one request, as answered.
public struct AccessRecord: Sendable {
    /// When the request head was complete, in Unix milliseconds (UTC).
    public var unixMillis: Int64
    public var requestID: String
    /// `ip:port` of the client; nil for a unix-domain peer.
    public var client: String?
    /// Nil when the request line could not be parsed.
    public var method: String?
    public var target: String?
    /// 0 when the connection ended before any answer.
    public var status: Int
    /// Body bytes sent (for a cut response: those that had left Berth's queue).
    public var bodyBytes: UInt64
    public var durationNanos: UInt64
    /// False when the connection ended before the response did.
    public var isComplete = true
    public var notes = AccessNotes()

    public init(unixMillis: Int64, requestID: String, client: String?, method: String?, target: String?,
                status: Int, bodyBytes: UInt64, durationNanos: UInt64) {
        self.unixMillis = unixMillis
        self.requestID = requestID
        self.client = client
        self.method = method
        self.target = target
        self.status = status
        self.bodyBytes = bodyBytes
        self.durationNanos = durationNanos
    }

    /// Appends the record as one JSON object and a newline. Absent notes are
    /// left out. The path is `loggablePath(target)`: no query value that could
    /// be a credential, no user info. (A loop renders into its own
    /// `AccessLineBuffer` instead: no buffer per line.)
    public func render(into out: inout [UInt8]) {
        let buffer = AccessLineBuffer(capacity: 1024)
        buffer.append(self)
        out.append(contentsOf: buffer.bytes)
    }

    /// The record as a line of text (tests).
    public var line: String {
        var out: [UInt8] = []
        render(into: &out)
        return String(decoding: out, as: UTF8.self)
    }
}

/// The query keys the OCI pull API uses (containerd's `ns`, tag-list paging,
/// referrers' filter): kept in the access log. Any other pair is logged as
/// `redacted`: a client may put a token in a query.
let loggableQueryKeys: Set<Substring> = ["ns", "n", "last", "artifactType"]

/// The request target as the access log shows it: the raw path (an
/// absolute-form target loses its scheme and authority, user info included)
/// and only the query pairs in `loggableQueryKeys`. An origin-form target
/// without a query (nearly every request) is returned as is, found by one byte scan.
public func loggablePath(_ target: String) -> Substring {
    let utf8 = target.utf8
    let hasQuery = utf8.withContiguousStorageIfAvailable { $0.contains(0x3f) } ?? utf8.contains(0x3f)
    if utf8.first == 0x2f && !hasQuery { return target[...] }
    var rest = target[...]
    if utf8.first != 0x2f, let scheme = rest.utf8.firstRange(of: "://".utf8) {
        let afterAuthority = rest[scheme.upperBound...]
        rest = afterAuthority.utf8.firstIndex(where: { $0 == 0x2f || $0 == 0x3f }).map { afterAuthority[$0...] } ?? ""
    }
    guard let q = rest.utf8.firstIndex(of: 0x3f) else { return rest }
    let pairs = rest[rest.utf8.index(after: q)...].split(separator: "&", omittingEmptySubsequences: false).map { pair in
        let key = pair.prefix { $0 != "=" }
        return loggableQueryKeys.contains(key) && key.count < pair.count ? pair : "redacted"
    }
    return Substring(rest[..<q] + "?" + pairs.joined(separator: "&"))
}
