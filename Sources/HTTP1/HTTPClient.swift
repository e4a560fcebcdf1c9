#if canImport(Glibc)
import Glibc
#endif
import Reactor
import TLS

/// Why a client request failed.
public struct HTTPClientError: Error, Equatable, CustomStringConvertible {
    public enum Kind: Equatable, Sendable {
        case invalidURL, resolveFailed, connectFailed, connectTimeout, headTimeout, idleTimeout
        case tooManyRedirects, protocolError, closedEarly, tls, cancelled
    }
    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var isTimeout: Bool { kind == .connectTimeout || kind == .headTimeout || kind == .idleTimeout }
    public var description: String { "\(kind): \(message)" }
}

/// One request to send. Timeouts are in nanoseconds.
public struct ClientRequest {
    public var method: HTTPMethod
    public var url: HTTPURL
    public var headers: HTTPHeaders
    public var maxRedirects = 5
    public var connectTimeoutNanos: UInt64 = 5_000_000_000
    public var headTimeoutNanos: UInt64 = 15_000_000_000
    public var idleTimeoutNanos: UInt64 = 30_000_000_000
    /// Decides whether a redirect to a URL is followed; nil follows any. A
    /// refused redirect fails the request (`.protocolError`).
    public var allowsRedirect: (@Sendable (HTTPURL) -> Bool)?

    public init(method: HTTPMethod = .get, url: HTTPURL, headers: HTTPHeaders = HTTPHeaders()) {
        self.method = method
        self.url = url
        self.headers = headers
    }
}

/// Receives one response, on the client's loop.
public protocol ClientResponseDelegate: AnyObject {
    /// The final head, after redirects; `url` is where it came from.
    func didReceiveHead(_ head: ResponseHead, url: HTTPURL, task: ClientTask)
    /// Body bytes, valid during the call only. Return false to stop reading
    /// until `task.resume()`.
    func didReceiveBody(_ bytes: UnsafeRawBufferPointer, task: ClientTask) -> Bool
    /// The end: nil when the body is complete.
    func didFinish(_ error: HTTPClientError?, task: ClientTask)
}

/// An HTTP/1.1 client for one event loop, with a keep-alive pool per origin.
///
/// Redirects (301, 302, 303, 307, 308) are followed up to the request's limit;
/// `Authorization` and `Cookie` headers go only to the origin they were meant
/// for. A pooled connection that turns out closed before any response byte is
/// retried once on a fresh one. Loop thread only.
public final class HTTPClient {
    public let loop: EventLoop
    let blockingPool: BlockingPool
    let tls: TLSContext?
    let maxIdlePerOrigin: Int
    private var idle: [String: [ClientConnection]] = [:]
    var idleTimeoutNanos: UInt64 = 30_000_000_000
    private var sweeping = false
    /// Set by `retire`: no connection is pooled any more.
    private var isRetired = false

    /// An HTTP proxy every connection goes through, as a `CONNECT` tunnel to
    /// the origin (https and http alike); nil: direct.
    let proxy: HTTPURL?

    /// `tls` verifies https origins; without it https URLs fail.
    public init(loop: EventLoop, pool: BlockingPool, tls: TLSContext?, proxy: HTTPURL? = nil, maxIdlePerOrigin: Int = 16) {
        self.loop = loop
        self.blockingPool = pool
        self.tls = tls
        self.proxy = proxy
        self.maxIdlePerOrigin = maxIdlePerOrigin
    }

    /// Starts `request`; the delegate hears about it on this client's loop.
    @discardableResult
    public func execute(_ request: ClientRequest, delegate: ClientResponseDelegate) -> ClientTask {
        let task = ClientTask(client: self, request: request, delegate: delegate)
        task.start(url: request.url)
        return task
    }

    /// Fetches a whole response body into memory, refusing bodies over `maxBytes`.
    public func fetch(_ request: ClientRequest, maxBytes: Int,
                      completion: @escaping (Result<(ResponseHead, [UInt8]), HTTPClientError>) -> Void) {
        execute(request, delegate: BufferingDelegate(maxBytes: maxBytes, completion: completion))
    }

    // MARK: pool

    func acquire(for url: HTTPURL) -> ClientConnection? {
        let key = url.poolKey
        while var list = idle[key], let c = list.popLast() {
            idle[key] = list.isEmpty ? nil : list
            if c.isReusable(now: loop.now, idleTimeout: idleTimeoutNanos) { return c }
            c.close()
        }
        return nil
    }

    func release(_ c: ClientConnection) {
        let key = c.origin.poolKey
        var list = idle[key] ?? []
        guard !isRetired, list.count < maxIdlePerOrigin else { c.close(); return }
        list.append(c)
        idle[key] = list
        if !sweeping { sweep() }
    }

    func forget(_ c: ClientConnection) {
        let key = c.origin.poolKey
        guard var list = idle[key], let i = list.firstIndex(where: { $0 === c }) else { return }
        list.remove(at: i)
        idle[key] = list.isEmpty ? nil : list
    }

    /// The client is no longer used for new requests (its upstream was
    /// reconfigured): idle connections close now, busy ones when they finish.
    public func retire() {
        isRetired = true
        for list in idle.values { for c in list { c.close() } }
        idle = [:]
    }

    /// Closes pooled connections idle past the timeout, every few seconds while any exist.
    private func sweep() {
        sweeping = true
        loop.schedule(afterNanos: 5_000_000_000) { [weak self] in
            guard let self else { return }
            for (key, list) in self.idle {
                let kept = list.filter { c in
                    if c.isReusable(now: self.loop.now, idleTimeout: self.idleTimeoutNanos) { return true }
                    c.close()
                    return false
                }
                self.idle[key] = kept.isEmpty ? nil : kept
            }
            if self.idle.isEmpty { self.sweeping = false } else { self.sweep() }
        }
    }

    /// Number of idle pooled connections (tests, metrics).
    public var idleConnectionCount: Int { idle.values.reduce(0) { $0 + $1.count } }
}

extension HTTPURL {
    var poolKey: String { "\(scheme)://\(host):\(port)" }
}

/// One request in flight, across redirects and a retry.
public final class ClientTask {
    unowned let client: HTTPClient
    let request: ClientRequest
    private var delegate: ClientResponseDelegate?
    private(set) var url: HTTPURL
    private var redirectsLeft: Int
    private var connection: ClientConnection?
    private var timer: Timer?
    private var lastProgress: UInt64 = 0
    private var limit: (nanos: UInt64, kind: HTTPClientError.Kind) = (0, .connectTimeout)
    private var retried = false
    private var followingRedirect = false
    private(set) var isPaused = false
    private var isDone = false

    init(client: HTTPClient, request: ClientRequest, delegate: ClientResponseDelegate) {
        self.client = client
        self.request = request
        self.delegate = delegate
        self.url = request.url
        self.redirectsLeft = request.maxRedirects
    }

    /// Resumes reading the body after a delegate returned false.
    public func resume() {
        guard isPaused, !isDone else { return }
        isPaused = false
        lastProgress = client.loop.now
        connection?.resumeReading()
    }

    /// Abandons the request; the delegate hears `.cancelled`.
    public func cancel() {
        fail(HTTPClientError(.cancelled, "cancelled"))
    }

    // MARK: driving

    func start(url: HTTPURL) {
        self.url = url
        if url.isSecure && client.tls == nil {
            fail(HTTPClientError(.tls, "no TLS context for \(url.authority)"))
            return
        }
        if let pooled = client.acquire(for: url) {
            attach(pooled)
            return
        }
        arm(request.connectTimeoutNanos, .connectTimeout)
        let peer = client.proxy ?? url
        Resolver.resolve(host: peer.host, port: peer.port, pool: client.blockingPool, loop: client.loop) { [weak self] result in
            guard let self, !self.isDone else { return }
            switch result {
            case .failure(let e):
                self.fail(HTTPClientError(.resolveFailed, "\(e)"))
            case .success(let addresses):
                guard let address = addresses.first else {
                    self.fail(HTTPClientError(.resolveFailed, "no address for \(peer.host)"))
                    return
                }
                do {
                    let c = try ClientConnection(client: self.client, origin: url, address: address, viaProxy: self.client.proxy != nil)
                    self.attach(c)
                } catch let e as HTTPClientError {
                    self.fail(e)
                } catch {
                    self.fail(HTTPClientError(.connectFailed, "\(url.authority): \(error)"))
                }
            }
        }
    }

    private func attach(_ c: ClientConnection) {
        connection = c
        var head = RequestHead(method: request.method, target: url.pathAndQuery, version: .http11, headers: HTTPHeaders())
        head.headers.add("Host", url.authority)
        for (name, value) in request.headers {
            let lower = name.lowercased()
            if lower == "host" || lower == "connection" || lower == "content-length" || lower == "transfer-encoding" { continue }
            // Credentials stay with the origin they were written for.
            if (lower == "authorization" || lower == "cookie") && !url.sameOrigin(request.url) { continue }
            head.headers.add(name, value)
        }
        arm(request.headTimeoutNanos, .headTimeout)
        c.send(head, for: self)
    }

    /// Sets the timeout that applies from now on. The timer is rescheduled:
    /// one left from a longer limit (connect 5 s) would otherwise only notice
    /// a shorter one (head, idle) when it fires.
    private func arm(_ nanos: UInt64, _ kind: HTTPClientError.Kind) {
        limit = (nanos, kind)
        lastProgress = client.loop.now
        timer?.cancel()
        scheduleTimer(after: nanos)
    }

    private func scheduleTimer(after nanos: UInt64) {
        timer = client.loop.schedule(afterNanos: nanos) { [weak self] in
            guard let self, !self.isDone else { return }
            self.timer = nil
            let now = Clock.monotonicNanos()
            let quiet = now &- self.lastProgress
            if self.isPaused || quiet < self.limit.nanos {
                self.scheduleTimer(after: self.isPaused ? self.limit.nanos : self.limit.nanos - quiet)
            } else {
                self.fail(HTTPClientError(self.limit.kind, "\(self.url.authority): no progress for \(self.limit.nanos / 1_000_000) ms"))
            }
        }
    }

    // MARK: from the connection

    func connectionReceivedHead(_ head: ResponseHead) {
        lastProgress = client.loop.now
        if [301, 302, 303, 307, 308].contains(head.status), let location = head.headers["Location"] {
            guard redirectsLeft > 0 else {
                fail(HTTPClientError(.tooManyRedirects, "more than \(request.maxRedirects) redirects from \(request.url)"))
                return
            }
            guard let next = url.resolving(location) else {
                fail(HTTPClientError(.protocolError, "unusable redirect Location from \(url.authority)"))
                return
            }
            if let allows = request.allowsRedirect, !allows(next) {
                fail(HTTPClientError(.protocolError, "redirect from \(url.authority) to \(next.authority) refused"))
                return
            }
            redirectsLeft -= 1
            followingRedirect = true
            url = next
            return
        }
        arm(request.idleTimeoutNanos, .idleTimeout)
        delegate?.didReceiveHead(head, url: url, task: self)
    }

    /// Returns false to pause.
    func connectionReceivedBody(_ bytes: UnsafeRawBufferPointer) -> Bool {
        lastProgress = client.loop.now
        if followingRedirect || isDone { return true }
        guard let d = delegate else { return true }
        if !d.didReceiveBody(bytes, task: self) {
            isPaused = true
            return false
        }
        return !isDone
    }

    func connectionFinishedResponse(reusable: Bool) {
        guard let c = connection else { return }
        connection = nil
        if reusable { client.release(c) } else { c.close() }
        if followingRedirect {
            followingRedirect = false
            start(url: url)
            return
        }
        finish(nil)
    }

    /// The connection failed; `beforeResponse` when no byte of a response came.
    func connectionFailed(_ error: HTTPClientError, beforeResponse: Bool, wasReused: Bool) {
        connection = nil
        if beforeResponse && wasReused && !retried {
            retried = true
            start(url: url)
            return
        }
        fail(error)
    }

    private func fail(_ error: HTTPClientError) {
        if let c = connection {
            connection = nil
            c.close()
        }
        finish(error)
    }

    private func finish(_ error: HTTPClientError?) {
        guard !isDone else { return }
        isDone = true
        timer?.cancel()
        timer = nil
        let d = delegate
        delegate = nil
        d?.didFinish(error, task: self)
    }
}

/// Collects a bounded body for `HTTPClient.fetch`.
private final class BufferingDelegate: ClientResponseDelegate {
    let maxBytes: Int
    let completion: (Result<(ResponseHead, [UInt8]), HTTPClientError>) -> Void
    var head: ResponseHead?
    var body: [UInt8] = []
    var tooLarge = false

    init(maxBytes: Int, completion: @escaping (Result<(ResponseHead, [UInt8]), HTTPClientError>) -> Void) {
        self.maxBytes = maxBytes
        self.completion = completion
    }

    func didReceiveHead(_ head: ResponseHead, url: HTTPURL, task: ClientTask) { self.head = head }

    func didReceiveBody(_ bytes: UnsafeRawBufferPointer, task: ClientTask) -> Bool {
        if body.count + bytes.count > maxBytes {
            tooLarge = true
            task.cancel()
            return false
        }
        body.append(contentsOf: bytes)
        return true
    }

    func didFinish(_ error: HTTPClientError?, task: ClientTask) {
        if tooLarge {
            completion(.failure(HTTPClientError(.protocolError, "response body larger than \(maxBytes) bytes")))
        } else if let error {
            completion(.failure(error))
        } else if let head {
            completion(.success((head, body)))
        } else {
            completion(.failure(HTTPClientError(.protocolError, "no response")))
        }
    }
}
