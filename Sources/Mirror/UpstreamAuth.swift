import Reactor
import HTTP1
import OCI
import Synchronization
import TLS

/// How Berth reaches one upstream registry, and how clients name it.
public struct UpstreamConfiguration: Sendable {
    /// The registry name clients use (`docker.io`, `ghcr.io`, `127.0.0.1:5999`): matched against `ns=` and `Host`.
    public var name: String
    /// What the settings were made from (the section, secrets and files read), as the
    /// configuration's owner sees it: a reload keeps the running upstream (tokens,
    /// connections, breaker) when name, default and fingerprint are unchanged. Empty: never kept.
    public var fingerprint = ""
    /// Path prefix selecting this upstream (`/v2/<prefix>/<repo>/…`); nil for none.
    public var prefix: String?
    /// Further names `ns=` or `Host` may use.
    public var hosts: [String] = []
    /// Requests that select no upstream otherwise go to the default one.
    public var isDefault = false
    /// The first of `urls`: its host decides the name, the realm policy and where credentials may go.
    public var url: HTTPURL { urls[0] }
    /// Tried in order: a connect failure or a 5xx answer moves every loop to the next (failover).
    public var urls: [HTTPURL]
    /// Client TLS for this upstream (its CA, client certificate); nil for the system defaults.
    public var tls: TLSContext?
    public var username: String?
    public var password: String?
    /// Extra token-realm hosts to trust beyond the upstream's own domain.
    public var realmAllowList: [String] = []
    /// Docker Hub's naming: single-component names live under `library/`.
    /// On by default when the upstream's host is Docker Hub's.
    public var dockerHubNames: Bool
    public var connectTimeoutNanos: UInt64 = 5_000_000_000
    public var manifestHeadTimeoutNanos: UInt64 = 15_000_000_000
    public var blobHeadTimeoutNanos: UInt64 = 30_000_000_000
    public var idleTimeoutNanos: UInt64 = 30_000_000_000
    /// After the upstream fails (unreachable, timed out, 5xx on every URL), it is not asked again
    /// for this long: cached content is served at once and misses get 503.
    public var breakerWindowNanos: UInt64 = 30_000_000_000
    /// The longest back-off a 429's `Retry-After` imposes on every request to this upstream; 0: none.
    public var maxBackoffNanos: UInt64 = 600_000_000_000
    /// Every connection for this upstream (registry, token realm, redirects) goes through this HTTP proxy by CONNECT.
    public var proxy: HTTPURL?
    /// Requests in flight to this upstream at once, across every loop; the excess waits its turn. 0: no cap.
    public var maxRequests = 64
    /// A tag the upstream answered 404 for is answered 404 without asking for this long (0: off).
    public var negativeTTLNanos: UInt64 = 15_000_000_000
    /// How long a tag → digest mapping from this upstream is trusted; nil: the mirror's `tagTTLNanos`.
    public var tagTTLNanos: UInt64?
    /// Serve only what is cached (tags never expire); never dial.
    public var isOffline = false
    /// After an image manifest is fetched on a miss, start fills for its
    /// config and layers (`prefetch`), so the client's blob requests join them.
    public var prefetch = true

    /// `name` defaults to the URL's host and port (`docker.io` for Docker Hub's hosts), `prefix` to the name where it is a path component.
    public init(url: HTTPURL, name: String? = nil) {
        urls = [url]
        let name = name ?? (DockerHub.isDockerHub(host: url.host) ? "docker.io" : url.port == (url.scheme == "https" ? 443 : 80) ? url.host : "\(url.host):\(url.port)")
        self.name = name
        prefix = UpstreamRouter.Entry.defaultPrefix(for: name)
        dockerHubNames = DockerHub.isDockerHub(host: url.host)
    }

    var basicCredentials: String? {
        guard let u = username, !u.isEmpty else { return nil }
        return "Basic " + base64(Array("\(u):\(password ?? "")".utf8))
    }
}

/// What the upstream asked for on `/v2/`, learned once, and the bearer tokens
/// fetched for it, cached per scope until shortly before they expire. Shared
/// by every loop.
final class UpstreamAuth: @unchecked Sendable {  // all state behind `state`
    enum Challenge: Equatable {
        case none
        case basic
        case bearer(realm: HTTPURL, service: String?)
    }

    private struct State {
        var challenge: Challenge?
        var tokens: [String: (token: String, expires: UInt64)] = [:]
    }

    private let state = Mutex(State())
    let config: UpstreamConfiguration

    init(config: UpstreamConfiguration) { self.config = config }

    var challenge: Challenge? { state.withLock { $0.challenge } }

    /// Learns the challenge from a `WWW-Authenticate` value (or its absence).
    /// Throws when a bearer realm is one Berth must not call.
    @discardableResult
    func learn(wwwAuthenticate: String?) throws -> Challenge {
        let challenges = wwwAuthenticate.map(AuthChallenge.parse) ?? []
        let learned: Challenge
        if let bearer = challenges.first(where: { $0.scheme == .bearer }) {
            guard let realmText = bearer.realm,
                  RealmPolicy.allows(realm: realmText, upstreamScheme: config.url.scheme, upstreamHost: config.url.host,
                                     allowList: config.realmAllowList),
                  let realm = HTTPURL(realmText) else {
                throw UpstreamError(status: 502, code: .unauthorized,
                                    message: "upstream token realm \"\(bearer.realm ?? "")\" is not allowed (not the upstream's domain or allow-list)")
            }
            learned = .bearer(realm: realm, service: bearer.service)
        } else if challenges.contains(where: { $0.scheme == .basic }) {
            learned = .basic
        } else {
            learned = .none
        }
        state.withLock { $0.challenge = learned }
        return learned
    }

    func cachedToken(scope: String, now: UInt64) -> String? {
        state.withLock { s in
            guard let t = s.tokens[scope], t.expires > now else { return nil }
            return t.token
        }
    }

    func store(token: String, scope: String, expiresIn: Int, now: UInt64) {
        // Refresh a little early: 90 % of the lifetime, at least 5 s before expiry.
        let life = UInt64(max(expiresIn, 10)) * 1_000_000_000
        let margin = max(life / 10, 5_000_000_000)
        state.withLock { $0.tokens[scope] = (token, now + (life > margin ? life - margin : life / 2)) }
    }

    func dropToken(scope: String) {
        _ = state.withLock { $0.tokens.removeValue(forKey: scope) }
    }
}

/// An upstream failure as the client should see it.
public struct UpstreamError: Error, CustomStringConvertible {
    public var status: Int
    public var code: OCIErrorCode
    public var message: String
    public var retryAfter: String?

    public init(status: Int, code: OCIErrorCode, message: String, retryAfter: String? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.retryAfter = retryAfter
    }

    public var description: String { "\(status) \(code.rawValue): \(message)" }

    /// True when a cached answer should be served instead (stale-if-error).
    var allowsStale: Bool { status == 429 || status >= 500 }

    static func from(_ e: HTTPClientError, what: String) -> UpstreamError {
        if e.isTimeout { return UpstreamError(status: 504, code: .unavailable, message: "upstream timed out fetching \(what): \(e.message)") }
        return UpstreamError(status: 502, code: .unavailable, message: "upstream unreachable fetching \(what): \(e.message)")
    }

    /// Maps an upstream status for `what` (a manifest, a blob) to the client's answer.
    static func from(status: Int, headers: HTTPHeaders, notFound: OCIErrorCode, what: String) -> UpstreamError {
        switch status {
        case 404: return UpstreamError(status: 404, code: notFound, message: "\(what) not found upstream")
        case 401: return UpstreamError(status: 401, code: .unauthorized, message: "upstream refused credentials for \(what)")
        case 403: return UpstreamError(status: 403, code: .denied, message: "upstream denied access to \(what)")
        case 429: return UpstreamError(status: 429, code: .tooManyRequests, message: "upstream rate limit fetching \(what)",
                                       retryAfter: headers["Retry-After"])
        default: return UpstreamError(status: 502, code: .unavailable, message: "upstream answered \(status) for \(what)")
        }
    }
}

/// RFC 4648 base64.
func base64(_ bytes: [UInt8]) -> String {
    let table = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    var out: [UInt8] = []
    out.reserveCapacity((bytes.count + 2) / 3 * 4)
    var i = 0
    while i + 2 < bytes.count {
        let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
        out += [table[Int(n >> 18 & 63)], table[Int(n >> 12 & 63)], table[Int(n >> 6 & 63)], table[Int(n & 63)]]
        i += 3
    }
    let rest = bytes.count - i
    if rest == 1 {
        let n = UInt32(bytes[i]) << 16
        out += [table[Int(n >> 18 & 63)], table[Int(n >> 12 & 63)], 61, 61]
    } else if rest == 2 {
        let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8
        out += [table[Int(n >> 18 & 63)], table[Int(n >> 12 & 63)], table[Int(n >> 6 & 63)], 61]
    }
    return String(decoding: out, as: UTF8.self)
}
