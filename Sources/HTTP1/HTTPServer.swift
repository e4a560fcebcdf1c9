#if canImport(Glibc)
import Glibc
#endif
import Reactor
import TLS
import Synchronization

/// An HTTP/1.1 server: one listener per loop and address (`SO_REUSEPORT`
/// spreads connections across loops), connections that stay on the loop that
/// accepted them, a handler called on that loop for every request.
public final class HTTPServer: @unchecked Sendable {  // mutable state is per loop (LoopContext) or atomic
    public enum LogLevel { case debug, info, warning, error }

    public struct Configuration {
        /// Plain HTTP addresses.
        public var plain: [SocketAddress] = []
        /// HTTPS addresses, served with `tls`.
        public var secure: [SocketAddress] = []
        public var tls: ReloadableServerContext?
        public var limits = ParserLimits()
        /// A request head must be complete this long after it started: after
        /// accept for a connection's first request (TLS handshake included),
        /// after its first byte for later ones. Absolute: bytes arriving meanwhile
        /// do not extend it. A partial head is answered 408; nothing at all, closed.
        public var headTimeoutNanos: UInt64 = 20_000_000_000
        /// Keep-alive connections idle this long between requests are closed.
        public var idleTimeoutNanos: UInt64 = 60_000_000_000
        /// A response the client stops reading, making no progress this long, closes the connection.
        public var stallTimeoutNanos: UInt64 = 30_000_000_000
        /// Connections open at once, across loops; nil = as many as the
        /// open-file limit allows after `descriptorHeadroom`. A configured value
        /// above that is lowered to it. Connections past the cap are closed at accept.
        public var maxConnections: Int?
        /// Connections open at once from one client (an IPv4 address or an IPv6 /64);
        /// 0 = no per-client cap. The excess is closed at accept.
        public var maxConnectionsPerClient = 0
        /// Descriptors kept out of the connection cap for upstream sockets,
        /// cache files and the like (at most a quarter of the limit).
        public var descriptorHeadroom = 1024
        /// Body for refusals the server makes itself (parse errors): (content type, bytes).
        public var errorBody: (Int, String) -> (String, [UInt8]) = { _, reason in ("text/plain", Array((reason + "\n").utf8)) }
        /// One JSON line per request goes here when set.
        public var accessLog: AccessLog?
        /// Sees every request as the access log would, on the connection's loop,
        /// with that loop's index (metrics keep a shard per loop); it must not block.
        public var observer: (@Sendable (AccessRecord, Int) -> Void)?
        /// Requests are timed and their records built: an access log or an observer is set.
        var isObserved: Bool { accessLog != nil || observer != nil }
        public init() {}
    }

    public let configuration: Configuration
    public let group: EventLoopGroup
    public let pool: BlockingPool
    let handler: (ResponseWriter) -> Void
    let logger: (LogLevel, String) -> Void
    /// The connection caps in force (`maxConnections` resolved against the open-file limit).
    public let limiter: ConnectionLimiter
    /// The connection deadlines in force (`update` replaces them).
    var timeouts: ConnectionTimeouts { liveTimeouts.withLock { $0 } }
    private let liveTimeouts: Mutex<ConnectionTimeouts>
    private let ceiling: Int
    /// Ids for requests that bring no well-formed `X-Request-Id`.
    let requestIDs = RequestIDGenerator()
    private var contexts: [LoopContext] = []
    private var bound: [SocketAddress] = []   // written once in `start`

    /// `handler` runs on the connection's loop for every request that passed the
    /// server's own checks; it answers through the writer, now or later.
    public init(configuration: Configuration, group: EventLoopGroup, pool: BlockingPool,
                logger: @escaping (LogLevel, String) -> Void = { _, _ in },
                handler: @escaping (ResponseWriter) -> Void) {
        self.configuration = configuration
        self.group = group
        self.pool = pool
        self.logger = logger
        self.handler = handler
        let ceiling = Self.connectionCeiling(openFileLimit: System.openFileLimit, headroom: configuration.descriptorHeadroom)
        self.ceiling = ceiling
        limiter = ConnectionLimiter(maxConnections: min(configuration.maxConnections ?? ceiling, ceiling),
                                    maxPerClient: max(configuration.maxConnectionsPerClient, 0))
        liveTimeouts = Mutex(ConnectionTimeouts(headNanos: configuration.headTimeoutNanos, idleNanos: configuration.idleTimeoutNanos,
                                                stallNanos: configuration.stallTimeoutNanos))
    }

    /// New head and idle deadlines and connection caps (a configuration reload): open
    /// connections keep going, bounded by the new deadlines from the next sweep on;
    /// new connections are counted against the new caps. Returns the cap in force.
    @discardableResult
    public func update(headTimeoutNanos: UInt64, idleTimeoutNanos: UInt64, maxConnections: Int?, maxConnectionsPerClient: Int) -> Int {
        liveTimeouts.withLock {
            $0.headNanos = headTimeoutNanos
            $0.idleNanos = idleTimeoutNanos
        }
        let cap = min(maxConnections ?? ceiling, ceiling)
        limiter.update(maxConnections: cap, maxPerClient: max(maxConnectionsPerClient, 0))
        return cap
    }

    /// The most connections a process with `openFileLimit` descriptors may
    /// hold and still open upstream sockets and cache files: the limit less
    /// `headroom`, but never less than half the limit.
    public static func connectionCeiling(openFileLimit: Int, headroom: Int) -> Int {
        max(openFileLimit - max(headroom, 0), openFileLimit / 2, 1)
    }

    func log(_ level: LogLevel, _ message: @autoclosure () -> String) { logger(level, message()) }

    /// Connections currently open, across loops.
    public var connectionCount: Int { limiter.openCount }

    /// Binds every address on every loop. Call before the loops run, or from any
    /// thread: registration happens on each loop. Throws if a bind fails.
    public func start() throws {
        let reuse = group.loops.count > 1
        var listeners: [[(Int32, Bool)]] = []
        do {
            for i in group.loops.indices {
                var fds: [(Int32, Bool)] = []
                // A unix-domain address has one listener (on the first loop): SO_REUSEPORT does not spread those.
                for a in configuration.plain where a.unixPath == nil || i == 0 {
                    fds.append((try Sockets.listen(on: a, reusePort: reuse), false))
                }
                for a in configuration.secure { fds.append((try Sockets.listen(on: a, reusePort: reuse), true)) }
                listeners.append(fds)
            }
        } catch {
            for fds in listeners { for (fd, _) in fds { Posix.close(fd: fd) } }
            throw error
        }
        bound = (listeners.first ?? []).compactMap { try? Posix.localAddress(fd: $0.0) }
        for (loop, fds) in zip(group.loops, listeners) {
            let context = LoopContext(loop: loop, server: self)
            contexts.append(context)
            loop.execute {
                for (fd, secure) in fds { context.addListener(fd: fd, secure: secure) }
                context.startSweeping()
            }
        }
    }

    /// The addresses actually bound (ports resolved when 0 was asked).
    public func boundAddresses() -> [SocketAddress] { bound }

    /// Hands every loop's pending access-log lines to the log, then runs `done`
    /// (on a loop). Call before the loops stop.
    public func flushAccessLog(then done: @escaping @Sendable () -> Void) {
        let remaining = Atomic<Int>(contexts.count)
        let contexts = self.contexts
        guard !contexts.isEmpty else { return done() }
        for c in contexts {
            c.loop.execute {
                c.flushAccessLog()
                if remaining.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 { done() }
            }
        }
    }

    /// Stops accepting, closes idle connections, and lets busy ones finish their
    /// response and close. Returns at once; poll `connectionCount`.
    public func beginShutdown() {
        for c in contexts { c.loop.execute { c.beginShutdown() } }
    }
}

/// Per-loop state: listeners, open connections, the read scratch buffer.
/// Loop thread only.
final class LoopContext {
    let loop: EventLoop
    unowned let server: HTTPServer
    /// One read buffer per loop: a connection reads into it and keeps only what
    /// it cannot parse yet, so idle connections cost no buffer.
    let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
    /// File bytes on their way into TLS (`ServerConnection.sendFile`): not
    /// `scratch`, whose bytes a request being parsed may still point into.
    let fileScratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
    /// Access-log lines rendered on this loop, handed to the log in chunks.
    private let logLines = AccessLineBuffer(capacity: LoopContext.logChunkBytes + 4096)
    private var isLogFlushScheduled = false
    static let logChunkBytes = 64 * 1024
    static let logFlushNanos: UInt64 = 100_000_000
    private(set) var connections: [ServerConnection] = []
    private var listeners: [Listener] = []
    private var shuttingDown = false

    /// `server.configuration`'s, read once: reading a field of that struct
    /// through the server copied the whole of it (a dozen retains) each time.
    let accessLog: AccessLog?
    let observer: (@Sendable (AccessRecord, Int) -> Void)?
    var isObserved: Bool { accessLog != nil || observer != nil }

    init(loop: EventLoop, server: HTTPServer) {
        self.loop = loop
        self.server = server
        accessLog = server.configuration.accessLog
        observer = server.configuration.observer
    }

    deinit {
        scratch.deallocate()
        fileScratch.deallocate()
    }

    func addListener(fd: Int32, secure: Bool) {
        let l = Listener(fd: fd, secure: secure, context: self)
        do {
            try loop.register(fd: fd, events: Readiness.readable, handler: l)
            listeners.append(l)
        } catch {
            server.log(.error, "cannot watch listener: \(error)")
            Posix.close(fd: fd)
        }
    }

    /// A connection the listener accepted: admitted under the caps, or closed
    /// at once (the client sees its connection end before any answer).
    func accepted(fd: Int32, peer: SocketAddress, secure: Bool) {
        if shuttingDown { Posix.close(fd: fd); return }
        let client = ClientKey(peer)
        if let refusal = server.limiter.admit(client) {
            Posix.close(fd: fd)
            if let line = server.limiter.noteRefusal(refusal, now: loop.now) { server.log(.warning, line) }
            return
        }
        try? Sockets.setNoDelay(fd)
        let transport: Transport
        if secure, let tls = server.configuration.tls {
            do { transport = try TLSTransport(acceptedFD: fd, context: tls.current) } catch {
                server.log(.warning, "TLS setup failed: \(error)")
                Posix.close(fd: fd)
                server.limiter.release(client)
                return
            }
        } else {
            transport = SocketTransport(fd: fd)
        }
        // The peer's text only when an access log will name it (an idle connection stays small).
        let peerText = accessLog != nil && peer.unixPath == nil ? peer.description : nil
        let c = ServerConnection(transport: transport, client: client, peer: peerText, context: self)
        do {
            try loop.register(fd: fd, events: Readiness.readable | Readiness.writable | Readiness.readHangup | Readiness.edge, handler: c)
        } catch {
            server.log(.warning, "cannot watch connection: \(error)")
            transport.close()
            server.limiter.release(client)
            return
        }
        c.slot = connections.count
        connections.append(c)
        // Data may already be waiting (the edge came before registration).
        c.handleEvents(Readiness.readable)
    }

    func remove(_ c: ServerConnection) {
        guard c.slot >= 0 else { return }
        let last = connections.removeLast()
        if last !== c {
            connections[c.slot] = last
            last.slot = c.slot
        }
        c.slot = -1
        server.limiter.release(c.client)
    }

    /// Every `sweepIntervalNanos`: ends the waits that ran out (see
    /// `ConnectionTimeouts`), and sums up a burst of refused connections once it is over.
    func startSweeping() {
        loop.schedule(afterNanos: server.timeouts.sweepIntervalNanos) { [weak self] in
            guard let self else { return }
            let timeouts = self.server.timeouts
            let now = Clock.monotonicNanos()
            // `close` and `requestTimeout` remove from `connections`: walk a snapshot.
            for c in self.connections.reversed() {
                switch timeouts.expiry(of: c.wait, now: now) {
                case .none: break
                case .close: c.close()
                case .requestTimeout: c.requestTimedOut(after: timeouts.headNanos)
                }
            }
            if let line = self.server.limiter.burstSummary(now: now) { self.server.log(.warning, line) }
            self.startSweeping()
        }
    }

    // MARK: access log

    /// Hands a finished request's record to the observer and the access log.
    func observe(_ record: borrowing AccessRecord) {
        observer?(record, loop.index)
        guard let log = accessLog else { return }
        logLines.append(record)
        lineAdded(to: log)
    }

    /// A finished request given as its fields (see `AccessRecord`): the access
    /// log renders them as they are; a record is built only for an observer.
    func observe(unixMillis: Int64, requestID: String, client: String?, method: String?, target: String?, status: Int,
                 bodyBytes: UInt64, durationNanos: UInt64, isComplete: Bool, notes: consuming AccessNotes) {
        if let log = accessLog {
            logLines.append(unixMillis: unixMillis, requestID: requestID, client: client, method: method, target: target, status: status,
                            bodyBytes: bodyBytes, durationNanos: durationNanos, isComplete: isComplete, notes: notes)
            lineAdded(to: log)
        }
        guard let observer else { return }
        var r = AccessRecord(unixMillis: unixMillis, requestID: requestID, client: client, method: method, target: target,
                             status: status, bodyBytes: bodyBytes, durationNanos: durationNanos)
        r.isComplete = isComplete
        r.notes = notes  // its last use: moved
        observer(r, loop.index)
    }

    /// A line was rendered into this loop's chunk: the chunk goes to the log
    /// at 64 KiB or 100 ms after its first line, whichever comes first.
    private func lineAdded(to log: AccessLog) {
        if logLines.count >= Self.logChunkBytes { return flushAccessLog() }
        guard !isLogFlushScheduled else { return }
        isLogFlushScheduled = true
        loop.schedule(afterNanos: Self.logFlushNanos) { [weak self] in
            self?.isLogFlushScheduled = false
            self?.flushAccessLog()
        }
    }

    func flushAccessLog() {
        guard logLines.lines > 0, let log = accessLog else { return }
        log.append(logLines.bytes, lines: logLines.lines)
        logLines.removeAll()
    }

    func beginShutdown() {
        shuttingDown = true
        for l in listeners {
            loop.deregister(fd: l.fd)
            l.close()
        }
        listeners.removeAll()
        for c in connections.reversed() { c.closeGracefully() }
    }
}

/// A listening socket, level-triggered. Accepts in bursts; on EMFILE/ENFILE it
/// stops watching the socket for 100 ms instead of spinning on a readiness it
/// cannot consume.
final class Listener: Selectable {
    let fd: Int32
    let secure: Bool
    unowned let context: LoopContext
    private var isOpen = true

    init(fd: Int32, secure: Bool, context: LoopContext) {
        self.fd = fd
        self.secure = secure
        self.context = context
    }

    func handleEvents(_ events: UInt32) {
        for _ in 0..<64 {
            do {
                switch try Posix.acceptWithPeer(fd: fd) {
                case .wouldBlock: return
                case .processed(let client): context.accepted(fd: client.fd, peer: client.peer, secure: secure)
                }
            } catch let e as IOError where e.errno == EMFILE || e.errno == ENFILE || e.errno == ENOBUFS || e.errno == ENOMEM {
                context.server.log(.warning, "accept: \(e); pausing accepts for 100 ms")
                context.loop.deregister(fd: fd)
                context.loop.schedule(afterNanos: 100_000_000) { [weak self] in
                    guard let self, self.isOpen else { return }
                    try? self.context.loop.register(fd: self.fd, events: Readiness.readable, handler: self)
                }
                return
            } catch {
                // ECONNABORTED and friends: that one connection is gone; keep accepting.
                continue
            }
        }
    }

    func close() {
        guard isOpen else { return }
        isOpen = false
        Posix.close(fd: fd)
    }
}
