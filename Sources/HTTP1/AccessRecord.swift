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
    /// be a credential, no user info.
    public func render(into out: inout [UInt8]) {
        raw(#"{"time":""#, &out)
        appendRFC3339(unixMillis: unixMillis, to: &out)
        out.append(0x22)
        field("request_id", requestID, &out)
        if let client { field("client", client, &out) }
        if let v = notes.user { field("user", v, &out) }
        if let method { field("method", method, &out) }
        if let target { field("path", loggablePath(target), &out) }
        if let v = notes.upstream { field("upstream", v, &out) }
        if let v = notes.repository { field("repository", v, &out) }
        if let v = notes.reference { field("reference", v, &out) }
        raw(#","status":"#, &out)
        appendDecimal(status, to: &out)
        if let v = notes.cacheStatus {
            field("cache_status", v.utf8.starts(with: "Berth; ".utf8) ? v.dropFirst(7) : v[...], &out)
        }
        raw(#","bytes":"#, &out)
        appendDecimal(bodyBytes, to: &out)
        raw(#","duration_ms":"#, &out)
        appendMillis(nanos: durationNanos, to: &out)
        if let n = notes.upstreamNanos {
            raw(#","upstream_ms":"#, &out)
            appendMillis(nanos: n, to: &out)
        }
        if let v = notes.error { field("error", v, &out) }
        if let v = notes.errorMessage { field("error_message", v, &out) }
        if !isComplete { raw(#","incomplete":true"#, &out) }
        raw("}\n", &out)
    }

    /// The record as a line of text (tests).
    public var line: String {
        var out: [UInt8] = []
        render(into: &out)
        return String(decoding: out, as: UTF8.self)
    }
}

/// Appends a literal's bytes in one copy.
@inline(__always)
private func raw(_ s: StaticString, _ out: inout [UInt8]) {
    out.append(contentsOf: UnsafeRawBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
}

@inline(__always)
private func field(_ name: StaticString, _ value: String, _ out: inout [UInt8]) { field(name, value[...], &out) }

private func field(_ name: StaticString, _ value: Substring, _ out: inout [UInt8]) {
    out.append(0x2c)
    out.append(0x22)
    raw(name, &out)
    out.append(0x22)
    out.append(0x3a)
    appendJSONString(value, to: &out)
}

@inline(__always)
private func needsEscape(_ b: UInt8) -> Bool { b < 0x20 || b == 0x22 || b == 0x5c || b == 0x7f }

/// Appends `s` as a JSON string: quotes, backslashes and control bytes
/// escaped (Swift strings are valid UTF-8, so the rest is copied as is).
/// Runs per field of every logged request: a value with nothing to escape
/// (nearly all) is copied in one piece.
func appendJSONString(_ s: Substring, to out: inout [UInt8]) {
    out.append(0x22)
    var s = s
    s.withUTF8 { bytes in
        guard let first = bytes.firstIndex(where: needsEscape) else { return out.append(contentsOf: bytes) }
        out.append(contentsOf: bytes[..<first])
        for b in bytes[first...] {
            switch b {
            case 0x22: out.append(0x5c); out.append(0x22)
            case 0x5c: out.append(0x5c); out.append(0x5c)
            case 0x0a: out.append(0x5c); out.append(0x6e)
            case 0x0d: out.append(0x5c); out.append(0x72)
            case 0x09: out.append(0x5c); out.append(0x74)
            case ..<0x20, 0x7f:
                let hex: StaticString = "0123456789abcdef"
                raw(#"\u00"#, &out)
                out.append(hex.utf8Start[Int(b >> 4)])
                out.append(hex.utf8Start[Int(b & 0xf)])
            default: out.append(b)
            }
        }
    }
    out.append(0x22)
}

/// `12.345` (milliseconds, three decimals) from nanoseconds.
func appendMillis(nanos: UInt64, to out: inout [UInt8]) {
    let micros = nanos / 1000
    appendDecimal(micros / 1000, to: &out)
    out.append(0x2e)
    let frac = micros % 1000
    out.append(UInt8(0x30 + frac / 100))
    out.append(UInt8(0x30 + frac / 10 % 10))
    out.append(UInt8(0x30 + frac % 10))
}

/// `2026-12-03T13:37:09.123Z` from Unix milliseconds: RFC 3339, UTC, computed
/// without libc (`gmtime_r` takes glibc's time-zone lock on every call).
func appendRFC3339(unixMillis: Int64, to out: inout [UInt8]) {
    let ms = unixMillis >= 0 ? unixMillis : 0
    let secs = ms / 1000
    let days = secs / 86_400
    let rem = secs % 86_400
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468
    let era = z / 146_097
    let doe = z - era * 146_097
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
    let mp = (5 * doy + 2) / 153
    let day = doy - (153 * mp + 2) / 5 + 1
    let month = mp < 10 ? mp + 3 : mp - 9
    let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
    func two(_ v: Int64) { out.append(UInt8(0x30 + v / 10)); out.append(UInt8(0x30 + v % 10)) }
    two(year / 100); two(year % 100)
    out.append(0x2d); two(month)
    out.append(0x2d); two(day)
    out.append(0x54); two(rem / 3600)
    out.append(0x3a); two(rem / 60 % 60)
    out.append(0x3a); two(rem % 60)
    out.append(0x2e)
    let frac = ms % 1000
    out.append(UInt8(0x30 + frac / 100)); two(frac % 100)
    out.append(0x5a)
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
