import Reactor
import HTTP1
import OCI
import Synchronization
import Telemetry

/// Requests to the upstream from one loop, carrying valid credentials the
/// first time: the challenge is learned once (a `/v2/` ping), a bearer token
/// is fetched per repository scope and cached, and a 401 on a content request
/// costs one token refresh and one retry. Loop thread only.
final class Upstream {
    let client: HTTPClient
    let auth: UpstreamAuth
    let failover: Failover
    let breaker: CircuitBreaker
    let limiter: RequestLimiter
    /// Nil when metrics are off.
    let metrics: UpstreamMetrics?
    var config: UpstreamConfiguration { auth.config }
    private var pingWaiters: [(Result<UpstreamAuth.Challenge, UpstreamError>) -> Void]?
    private var tokenWaiters: [String: [(Result<String?, UpstreamError>) -> Void]] = [:]

    /// How long a `fetch` may take in all before its caller gets a 504.
    let deadlineNanos: UInt64

    init(client: HTTPClient, auth: UpstreamAuth, failover: Failover, breaker: CircuitBreaker, limiter: RequestLimiter,
         deadlineNanos: UInt64, metrics: UpstreamMetrics? = nil) {
        self.client = client
        self.metrics = metrics
        self.auth = auth
        self.failover = failover
        self.breaker = breaker
        self.limiter = limiter
        self.deadlineNanos = deadlineNanos
    }

    var loop: EventLoop { client.loop }

    func request(_ method: HTTPMethod, _ path: String, headers: HTTPHeaders = HTTPHeaders(), headTimeout: UInt64) -> ClientRequest {
        var url = failover.current
        url.pathAndQuery = path
        var r = ClientRequest(method: method, url: url, headers: headers)
        r.connectTimeoutNanos = config.connectTimeoutNanos
        r.headTimeoutNanos = headTimeout
        r.idleTimeoutNanos = config.idleTimeoutNanos
        let upstreamHost = url.host
        r.allowsRedirect = { RealmPolicy.allowsRedirect(toHost: $0.host, upstreamHost: upstreamHost) }
        return r
    }

    // MARK: challenge and tokens

    /// The upstream's challenge, pinging `/v2/` on first use (one ping per loop at a time).
    func challenge(_ done: @escaping (Result<UpstreamAuth.Challenge, UpstreamError>) -> Void) {
        if let c = auth.challenge { done(.success(c)); return }
        if pingWaiters != nil { pingWaiters!.append(done); return }
        pingWaiters = [done]
        ping(triesLeft: failover.urls.count - 1)
    }

    private func ping(triesLeft: Int) {
        // The challenge is learned from the upstream's own origin only: a ping
        // redirected elsewhere fails rather than take another host's realm.
        var ping = request(.get, "/v2/", headTimeout: config.manifestHeadTimeoutNanos)
        let origin = ping.url
        ping.allowsRedirect = { $0.sameOrigin(origin) }
        let sentAt = Clock.monotonicNanos()
        client.fetch(ping, maxBytes: 64 * 1024) { [self] result in
            switch result {
            case .failure(let e): metrics?.failed(e.kind.metricLabel)
            case .success(let (head, _)): metrics?.responded(status: head.status, afterNanos: Clock.monotonicNanos() &- sentAt)
            }
            if triesLeft > 0, Failover.shouldFailOver(result) {
                failover.failed(origin)
                return self.ping(triesLeft: triesLeft - 1)
            }
            if case .failure(let e) = result, e.isTimeout { breaker.timedOut(e, now: loop.now) }
            let outcome: Result<UpstreamAuth.Challenge, UpstreamError>
            switch result {
            case .failure(let e):
                outcome = .failure(.from(e, what: "/v2/"))
            case .success(let (head, _)):
                if head.status == 401 {
                    outcome = Result { try auth.learn(wwwAuthenticate: head.headers["WWW-Authenticate"]) }.mapError { $0 as! UpstreamError }
                } else if head.status < 500 {
                    outcome = .success((try? auth.learn(wwwAuthenticate: nil)) ?? .none)
                } else {
                    outcome = .failure(UpstreamError(status: 502, code: .unavailable, message: "upstream /v2/ answered \(head.status)"))
                }
            }
            let waiters = pingWaiters ?? []
            pingWaiters = nil
            for w in waiters { w(outcome) }
        }
    }

    /// The `Authorization` value for pulling `repository`, nil when none is needed.
    func authorization(repository: String, refresh: Bool = false, _ done: @escaping (Result<String?, UpstreamError>) -> Void) {
        challenge { [self] result in
            switch result {
            case .failure(let e): done(.failure(e))
            case .success(.none): done(.success(nil))
            case .success(.basic): done(.success(config.basicCredentials))
            case .success(.bearer(let realm, let service)):
                let scope = "repository:\(repository):pull"
                if refresh { auth.dropToken(scope: scope) }
                if let t = auth.cachedToken(scope: scope, now: loop.now) { done(.success("Bearer " + t)); return }
                fetchToken(realm: realm, service: service, scope: scope, done)
            }
        }
    }

    private func fetchToken(realm: HTTPURL, service: String?, scope: String,
                            _ done: @escaping (Result<String?, UpstreamError>) -> Void) {
        if tokenWaiters[scope] != nil { tokenWaiters[scope]!.append(done); return }
        tokenWaiters[scope] = [done]
        var url = realm
        var query = [("scope", scope)]
        if let service { query.insert(("service", service), at: 0) }
        let q = query.map { "\($0.0)=\(percentEncoded($0.1))" }.joined(separator: "&")
        url.pathAndQuery += (url.pathAndQuery.contains("?") ? "&" : "?") + q
        var headers = HTTPHeaders()
        // Credentials go to the realm only over https or to the upstream's own host (RealmPolicy checked both).
        if let basic = config.basicCredentials { headers.add("Authorization", basic) }
        var r = ClientRequest(method: .get, url: url, headers: headers)
        r.connectTimeoutNanos = config.connectTimeoutNanos
        r.headTimeoutNanos = config.manifestHeadTimeoutNanos
        r.maxRedirects = 0
        client.fetch(r, maxBytes: 1 << 20) { [self] result in
            let outcome: Result<String?, UpstreamError>
            switch result {
            case .failure(let e):
                outcome = .failure(.from(e, what: "a token"))
            case .success(let (head, body)) where head.status == 200:
                if let t = try? TokenResponse.parse(body) {
                    auth.store(token: t.token, scope: scope, expiresIn: t.expiresIn, now: loop.now)
                    outcome = .success("Bearer " + t.token)
                } else {
                    outcome = .failure(UpstreamError(status: 502, code: .unauthorized, message: "token service answered without a token"))
                }
            case .success(let (head, _)):
                let code: OCIErrorCode = head.status == 401 ? .unauthorized : head.status == 429 ? .tooManyRequests : .denied
                let status = head.status == 401 || head.status == 403 || head.status == 429 ? head.status : 502
                outcome = .failure(UpstreamError(status: status, code: code, message: "token service answered \(head.status)",
                                                 retryAfter: head.headers["Retry-After"]))
            }
            if case .success = outcome { metrics?.tokenFetched(ok: true) } else { metrics?.tokenFetched(ok: false) }
            let waiters = tokenWaiters.removeValue(forKey: scope) ?? []
            for w in waiters { w(outcome) }
        }
    }

    // MARK: content requests

    /// Sends a request for `repository` with credentials; a 401 answer refreshes
    /// the token and retries once, invisibly to `delegate`.
    func send(_ method: HTTPMethod, _ path: String, repository: String, headers: HTTPHeaders = HTTPHeaders(),
              headTimeout: UInt64, delegate: UpstreamDelegate) {
        // Offline: never dial (the handlers answer from the cache first; this is the backstop).
        if config.isOffline { return delegate.upstreamFailed(UpstreamError(status: 503, code: .unavailable, message: "the mirror is offline for \(config.name)")) }
        if let e = breaker.refusal(now: loop.now) { return delegate.upstreamFailed(e) }
        let retrying = RetryOn401(upstream: self, method: method, path: path, repository: repository,
                                  headers: headers, headTimeout: headTimeout, delegate: delegate)
        let loop = self.loop
        if limiter.acquire(orQueue: { loop.execute { retrying.start() } }) { retrying.attempt(refresh: false) }
    }

    /// A whole bounded response for `repository`, or a 504 once `deadlineNanos`
    /// have passed whatever stage is still waiting (ping, token, connect, head,
    /// body): each stage has its own timeout, but a client must get its answer
    /// (stale content or an error) in time even when several stages are slow.
    /// The time until completion is added to the upstream wait of request `w`
    /// (its access-log `upstream_ms`).
    func fetch(_ method: HTTPMethod, _ path: String, repository: String, headers: HTTPHeaders = HTTPHeaders(),
               headTimeout: UInt64, maxBytes: Int, for w: ResponseWriter,
               completion: @escaping (Result<(ResponseHead, [UInt8]), UpstreamError>) -> Void) {
        let started = Clock.monotonicNanos()
        let collector = Collector(maxBytes: maxBytes, what: path) { [weak w] result in
            w?.notes.addUpstreamWait(Clock.monotonicNanos() &- started)
            completion(result)
        }
        let seconds = deadlineNanos / 1_000_000_000
        let deadline = loop.schedule(afterNanos: deadlineNanos) { [weak collector] in
            collector?.upstreamFailed(UpstreamError(status: 504, code: .unavailable,
                                                    message: "upstream did not answer \(path) within \(seconds) s"))
        }
        collector.onComplete = { deadline.cancel() }
        send(method, path, repository: repository, headers: headers, headTimeout: headTimeout, delegate: collector)
    }
}

/// Which of an upstream's URLs requests go to, shared by every loop: the
/// first, until a request finds it unreachable or failing (5xx), then the
/// next (wrapping around), so an outage of one URL costs one failed attempt
/// per loop, not one per request.
final class Failover: @unchecked Sendable {  // `index` is atomic; `urls` immutable
    let urls: [HTTPURL]
    private let index = Atomic<Int>(0)

    init(_ urls: [HTTPURL]) {
        precondition(!urls.isEmpty, "an upstream has at least one URL")
        self.urls = urls
    }

    var current: HTTPURL { urls[index.load(ordering: .relaxed)] }

    /// `url` failed: move past it, unless another request already did.
    func failed(_ url: HTTPURL) {
        let i = index.load(ordering: .relaxed)
        guard urls.count > 1, urls[i].sameOrigin(url) else { return }
        _ = index.compareExchange(expected: i, desired: (i + 1) % urls.count, ordering: .relaxed)
    }

    /// No answer came from the URL at all.
    static func isUnreachable(_ e: HTTPClientError) -> Bool {
        [.resolveFailed, .connectFailed, .connectTimeout, .tls].contains(e.kind)
    }

    /// A whole-response attempt that another URL should get instead.
    static func shouldFailOver(_ r: Result<(ResponseHead, [UInt8]), HTTPClientError>) -> Bool {
        switch r {
        case .failure(let e): return isUnreachable(e)
        case .success(let (head, _)): return head.status >= 500
        }
    }
}

/// Stops waiting on an upstream that hangs: after a connect or response-head
/// timeout, requests are refused at once for a window (stale content is
/// served, misses get 503 naming the upstream and why), so an outage costs
/// one timeout per window, not one per request. Failures that come fast
/// (refused, reset, 5xx) do not trip it: the next request simply tries
/// again (and fails over to the next URL). The first request after the
/// window asks again. Shared by every loop.
final class CircuitBreaker: @unchecked Sendable {  // all state behind `state`
    let name: String
    let windowNanos: UInt64
    /// Until when requests are refused, why, and whether as a rate limit (429) or an outage (503).
    private let state = Mutex<(until: UInt64, reason: String, limited: Bool)>((0, "", false))
    /// The longest back-off a `Retry-After` can impose; 0: a 429 is passed on and nothing waits.
    let maxBackoffNanos: UInt64
    /// A 429 without a usable `Retry-After` backs off this long.
    static let defaultRetryAfterNanos: UInt64 = 10_000_000_000

    init(name: String, windowNanos: UInt64, maxBackoffNanos: UInt64) {
        self.name = name
        self.windowNanos = windowNanos
        self.maxBackoffNanos = maxBackoffNanos
    }

    /// Whether requests are being held off now (cheap: no error built).
    func isOpen(now: UInt64) -> Bool { now < state.withLock { $0.until } }

    /// Nil when closed; else whether for a rate limit (true) or an outage (false).
    func heldOff(now: UInt64) -> Bool? {
        let (until, _, limited) = state.withLock { $0 }
        return now < until ? limited : nil
    }

    /// The error to answer with instead of asking the upstream, nil when it may be asked.
    func refusal(now: UInt64) -> UpstreamError? {
        let (until, reason, limited) = state.withLock { $0 }
        guard now < until else { return nil }
        let seconds = (until - now) / 1_000_000_000 + 1
        if limited {
            return UpstreamError(status: 429, code: .tooManyRequests,
                                 message: "upstream \(name) is rate-limiting Berth (\(reason)); next attempt in \(seconds) s", retryAfter: String(seconds))
        }
        return UpstreamError(status: 503, code: .unavailable, message: "upstream \(name) is unavailable (\(reason)); next attempt in \(seconds) s")
    }

    /// A 429: nothing more is sent until its `Retry-After` (seconds; capped; 10 s
    /// when absent or a date) has passed, plus up to 10 % jitter so that loops
    /// and mirrors do not all come back at once.
    func rateLimited(retryAfter: String?, now: UInt64, reason: String = "answered 429") {
        let asked = retryAfter.flatMap { UInt64($0.filter { $0 != " " }) }.map { min($0, 600) * 1_000_000_000 }
        guard maxBackoffNanos > 0 else { return }
        let base = min(asked ?? Self.defaultRetryAfterNanos, maxBackoffNanos)
        let wait = base + UInt64.random(in: 0...max(base / 10, 1))
        state.withLock { $0 = (now + wait, reason + (retryAfter.map { ", Retry-After \($0)" } ?? ""), true) }
    }

    /// Whether a response says the quota is spent before any 429: Docker Hub's
    /// `ratelimit-remaining: 0;w=21600`, or the IETF draft's `RateLimit-Remaining: 0`.
    /// Its `RateLimit-Reset` (seconds) is the wait, when it sends one.
    static func quotaSpent(_ headers: HTTPHeaders) -> (spent: Bool, reset: String?) {
        guard let remaining = headers["RateLimit-Remaining"],
              let n = Int(String(remaining.prefix { $0 != ";" }.filter { $0 != " " })) else { return (false, nil) }
        let reset = headers["RateLimit-Reset"].flatMap { r in UInt64(String(r.filter { $0 != " " })).map(String.init) }
        return (n <= 0, reset)
    }

    func timedOut(_ e: HTTPClientError, now: UInt64) {
        guard windowNanos > 0 else { return }
        state.withLock { $0 = (now + windowNanos, "timed out: \(e.message)", false) }
    }

    func succeeded() {
        state.withLock { if $0.until != 0 { $0 = (0, "", false) } }
    }
}

/// At most `limit` requests in flight to one upstream, across every loop
/// (`max_requests`); the excess waits its turn in arrival order. 0: no cap.
final class RequestLimiter: @unchecked Sendable {  // all state behind `state`
    let limit: Int
    private let state = Mutex<(inFlight: Int, waiting: [() -> Void], head: Int)>((0, [], 0))

    init(limit: Int) { self.limit = limit }

    /// True when a slot is taken now; else `granted` runs later (on the
    /// releasing thread) once one is handed over.
    func acquire(orQueue granted: @escaping () -> Void) -> Bool {
        guard limit > 0 else { return true }
        return state.withLock { s in
            if s.inFlight < limit { s.inFlight += 1; return true }
            s.waiting.append(granted)
            return false
        }
    }

    /// Frees a slot, or hands it straight to the longest waiter.
    func release() {
        guard limit > 0 else { return }
        let next: (() -> Void)? = state.withLock { s in
            guard s.head < s.waiting.count else { s.inFlight -= 1; return nil }
            let w = s.waiting[s.head]
            s.head += 1
            if s.head == s.waiting.count { s.waiting.removeAll(keepingCapacity: true); s.head = 0 }
            return w
        }
        next?()
    }

    var counts: (inFlight: Int, waiting: Int) { state.withLock { ($0.inFlight, $0.waiting.count - $0.head) } }
}

/// Wraps a delegate: swallows a first 401, refreshes credentials and tries
/// again; moves to the upstream's next URL on a connect failure or a 5xx.
private final class RetryOn401: ClientResponseDelegate {
    let upstream: Upstream
    let method: HTTPMethod, path: String, repository: String, headers: HTTPHeaders, headTimeout: UInt64
    let delegate: UpstreamDelegate
    var retried = false
    var swallowing = false
    var challengeHeader: String?
    /// The origin the current attempt went to, and how many more URLs may be tried.
    var origin: HTTPURL?
    var failoversLeft: Int
    var failingOver = false
    var headDelivered = false
    /// For metrics: when the current attempt went out, when its head came, its body bytes.
    var sentAt: UInt64 = 0, headAt: UInt64 = 0, bodyBytes: UInt64 = 0

    init(upstream: Upstream, method: HTTPMethod, path: String, repository: String, headers: HTTPHeaders,
         headTimeout: UInt64, delegate: UpstreamDelegate) {
        self.upstream = upstream
        self.method = method
        self.path = path
        self.repository = repository
        self.headers = headers
        self.headTimeout = headTimeout
        self.delegate = delegate
        failoversLeft = upstream.failover.urls.count - 1
    }

    private var released = false

    /// The slot this request holds goes back to the limiter, once.
    private func release() {
        if !released { released = true; upstream.limiter.release() }
    }

    /// A queued request's turn: the breaker may have opened while it waited.
    func start() {
        if let e = upstream.breaker.refusal(now: upstream.loop.now) {
            release()
            return delegate.upstreamFailed(e)
        }
        attempt(refresh: false)
    }

    func attempt(refresh: Bool) {
        upstream.authorization(repository: repository, refresh: refresh) { [self] result in
            switch result {
            case .failure(let e):
                release()
                delegate.upstreamFailed(e)
            case .success(let authorization):
                var h = headers
                if let authorization { h.set("Authorization", authorization) }
                let r = upstream.request(method, path, headers: h, headTimeout: headTimeout)
                origin = r.url
                if upstream.metrics != nil { sentAt = Clock.monotonicNanos(); headAt = 0; bodyBytes = 0 }
                upstream.client.execute(r, delegate: self)
            }
        }
    }

    func didReceiveHead(_ head: ResponseHead, url: HTTPURL, task: ClientTask) {
        if let m = upstream.metrics {
            headAt = Clock.monotonicNanos()
            m.responded(status: head.status, afterNanos: headAt &- sentAt)
        }
        // Only the upstream's own origin may teach a challenge; a 401 from a
        // storage host it redirected to is passed on as it is.
        let fromOrigin = origin.map { url.sameOrigin($0) } ?? false
        if head.status == 401 && !retried && fromOrigin {
            swallowing = true
            challengeHeader = head.headers["WWW-Authenticate"]
            return
        }
        if head.status >= 500 && failoversLeft > 0 && fromOrigin {
            swallowing = true
            failingOver = true
            return
        }
        headDelivered = true
        if fromOrigin {
            let quota = CircuitBreaker.quotaSpent(head.headers)
            if head.status == 429 {
                upstream.breaker.rateLimited(retryAfter: head.headers["Retry-After"], now: upstream.loop.now)
            } else if quota.spent {
                upstream.metrics?.rateLimited.increment()
                // This answer is good, the next would be a 429: wait now.
                upstream.breaker.rateLimited(retryAfter: quota.reset, now: upstream.loop.now, reason: "ratelimit-remaining: 0")
            } else {
                upstream.breaker.succeeded()
            }
        }
        delegate.didReceiveHead(head, url: url, task: task)
    }

    func didReceiveBody(_ bytes: UnsafeRawBufferPointer, task: ClientTask) -> Bool {
        bodyBytes &+= UInt64(bytes.count)
        return swallowing ? true : delegate.didReceiveBody(bytes, task: task)
    }

    func didFinish(_ error: HTTPClientError?, task: ClientTask) {
        if let m = upstream.metrics {
            m.receivedBytes.increment(by: Int64(clamping: bodyBytes))
            if let error { m.failed(error.kind.metricLabel) } else if headAt > 0 { m.bodyEnded(bytes: bodyBytes, afterNanos: Clock.monotonicNanos() &- headAt) }
            bodyBytes = 0
        }
        if failingOver || (!headDelivered && failoversLeft > 0 && error.map(Failover.isUnreachable) == true) {
            // This URL is down (unreachable, or 5xx): the next one, invisibly to `delegate`.
            if let origin { upstream.failover.failed(origin) }
            upstream.metrics?.retried(failover: true)
            failoversLeft -= 1
            swallowing = false
            failingOver = false
            attempt(refresh: false)
            return
        }
        if let error, !headDelivered, !swallowing, error.kind == .connectTimeout || error.kind == .headTimeout {
            upstream.breaker.timedOut(error, now: upstream.loop.now)
        }
        if swallowing {
            swallowing = false
            retried = true
            // The upstream may have changed its mind about the realm or scheme.
            if let c = challengeHeader, (try? upstream.auth.learn(wwwAuthenticate: c)) == nil {
                release()
                delegate.upstreamFailed(UpstreamError(status: 502, code: .unauthorized, message: "upstream token realm is not allowed"))
                return
            }
            upstream.metrics?.retried(failover: false)
            attempt(refresh: true)
            return
        }
        release()
        delegate.didFinish(error, task: task)
    }
}

/// A response delegate that also hears failures before any request went out
/// (the ping, the token service).
protocol UpstreamDelegate: ClientResponseDelegate {
    func upstreamFailed(_ e: UpstreamError)
}

/// Collects a bounded body.
final class Collector: UpstreamDelegate {
    let maxBytes: Int
    let what: String
    let completion: (Result<(ResponseHead, [UInt8]), UpstreamError>) -> Void
    var head: ResponseHead?
    var body: [UInt8] = []
    var error: UpstreamError?
    var done = false

    init(maxBytes: Int, what: String, completion: @escaping (Result<(ResponseHead, [UInt8]), UpstreamError>) -> Void) {
        self.maxBytes = maxBytes
        self.what = what
        self.completion = completion
    }

    func didReceiveHead(_ head: ResponseHead, url: HTTPURL, task: ClientTask) { self.head = head }

    func didReceiveBody(_ bytes: UnsafeRawBufferPointer, task: ClientTask) -> Bool {
        if body.count + bytes.count > maxBytes {
            error = UpstreamError(status: 502, code: .manifestInvalid, message: "\(what): upstream body over \(maxBytes) bytes")
            task.cancel()
            return false
        }
        body.append(contentsOf: bytes)
        return true
    }

    func didFinish(_ e: HTTPClientError?, task: ClientTask) {
        if let error { return complete(.failure(error)) }
        if let e { return complete(.failure(.from(e, what: what))) }
        guard let head else { return complete(.failure(UpstreamError(status: 502, code: .unavailable, message: "no response for \(what)"))) }
        complete(.success((head, body)))
    }

    func upstreamFailed(_ e: UpstreamError) { complete(.failure(e)) }

    /// Runs once, when the result is delivered.
    var onComplete: (() -> Void)?

    private func complete(_ r: Result<(ResponseHead, [UInt8]), UpstreamError>) {
        guard !done else { return }
        done = true
        onComplete?()
        onComplete = nil
        completion(r)
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
func percentEncoded(_ s: String) -> String {
    var out = ""
    for b in s.utf8 {
        switch b {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
             UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
            out.unicodeScalars.append(UnicodeScalar(b))
        default:
            let hex = Array("0123456789ABCDEF".unicodeScalars)
            out += "%" + String(hex[Int(b >> 4)]) + String(hex[Int(b & 0xf)])
        }
    }
    return out
}

extension HTTPClientError.Kind {
    /// The `kind` label of `berth_upstream_errors_total`.
    var metricLabel: String {
        switch self {
        case .invalidURL: "invalid_url"
        case .resolveFailed: "resolve"
        case .connectFailed: "connect"
        case .connectTimeout: "connect_timeout"
        case .headTimeout: "head_timeout"
        case .idleTimeout: "idle_timeout"
        case .tooManyRedirects: "redirects"
        case .protocolError: "protocol"
        case .closedEarly: "closed_early"
        case .tls: "tls"
        case .cancelled: "cancelled"
        }
    }
}
