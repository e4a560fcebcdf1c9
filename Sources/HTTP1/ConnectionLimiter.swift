import Reactor
import Synchronization

/// Who a connection comes from, for the per-client cap: an IPv4 address, or
/// the /64 prefix of an IPv6 one (one host usually owns a whole /64, so
/// counting single IPv6 addresses would cap nothing).
public enum ClientKey: Hashable, Sendable {
    case ipv4(UInt32)
    case ipv6Prefix(UInt64)

    /// Nil for addresses that name no remote host (unix-domain peers).
    public init?(_ address: SocketAddress) {
        if let v4 = address.ipv4 { self = .ipv4(v4) }
        else if let v6 = address.ipv6 { self = .ipv6Prefix(v6.high) }
        else { return nil }
    }
}

/// Admission at accept, shared by every loop of one server: a cap on the
/// connections open at once and a cap per client. Thread-safe: the open count
/// is atomic, the per-client counts are under a lock taken once at accept
/// and once at close.
public final class ConnectionLimiter: Sendable {
    /// Why a connection was refused.
    public enum Refusal: Equatable, Sendable {
        case serverFull
        case clientFull
    }

    /// Connections open at once, across loops.
    public var maxConnections: Int { maxOpen.load(ordering: .relaxed) }
    /// Connections open at once from one client; 0 = no per-client cap.
    public var maxPerClient: Int { maxClient.load(ordering: .relaxed) }
    private let maxOpen: Atomic<Int>
    private let maxClient: Atomic<Int>
    private let open = Atomic<Int>(0)
    private let admitted = Atomic<Int>(0)
    private let refusedServerFull = Atomic<Int>(0)
    private let refusedClientFull = Atomic<Int>(0)
    private let perClient = Mutex<[ClientKey: Int]>([:])
    private let burst: Mutex<RefusalBurst>

    public init(maxConnections: Int, maxPerClient: Int, burstQuietNanos: UInt64 = 10_000_000_000) {
        precondition(maxConnections > 0 && maxPerClient >= 0)
        maxOpen = Atomic(maxConnections)
        maxClient = Atomic(maxPerClient)
        burst = Mutex(RefusalBurst(quietNanos: burstQuietNanos))
    }

    /// New caps (a configuration reload): connections already open stay; new ones are counted against these.
    public func update(maxConnections: Int, maxPerClient: Int) {
        precondition(maxConnections > 0 && maxPerClient >= 0)
        maxOpen.store(maxConnections, ordering: .relaxed)
        maxClient.store(maxPerClient, ordering: .relaxed)
    }

    /// Connections admitted and not yet released.
    public var openCount: Int { open.load(ordering: .relaxed) }

    /// Since start: connections admitted, and refused over each cap (metrics).
    public var totals: (admitted: Int, serverFull: Int, clientFull: Int) {
        (admitted.load(ordering: .relaxed), refusedServerFull.load(ordering: .relaxed), refusedClientFull.load(ordering: .relaxed))
    }

    /// Counts a new connection from `client` in, or says why not. Every
    /// admitted connection is `release`d exactly once with the same key.
    public func admit(_ client: ClientKey?) -> Refusal? {
        if open.wrappingAdd(1, ordering: .relaxed).newValue > maxConnections {
            open.subtract(1, ordering: .relaxed)
            refusedServerFull.add(1, ordering: .relaxed)
            return .serverFull
        }
        // Counted per client even without a cap: a reload may set one.
        guard let client else { self.admitted.add(1, ordering: .relaxed); return nil }
        let cap = maxPerClient
        let admitted = perClient.withLock { counts -> Bool in
            let n = counts[client, default: 0]
            guard cap == 0 || n < cap else { return false }
            counts[client] = n + 1
            return true
        }
        if admitted { self.admitted.add(1, ordering: .relaxed); return nil }
        open.subtract(1, ordering: .relaxed)
        refusedClientFull.add(1, ordering: .relaxed)
        return .clientFull
    }

    /// Counts a connection out.
    public func release(_ client: ClientKey?) {
        open.subtract(1, ordering: .relaxed)
        guard let client else { return }
        perClient.withLock { counts in
            let n = counts[client, default: 0]
            if n <= 1 { counts[client] = nil } else { counts[client] = n - 1 }
        }
    }

    /// Clients with at least one connection open (for tests and reports).
    public var clientCount: Int { perClient.withLock { $0.count } }

    /// Records a refusal; returns the line to log when it starts a burst.
    public func noteRefusal(_ refusal: Refusal, now: UInt64) -> String? {
        guard burst.withLock({ $0.record(refusal, now: now) }) else { return nil }
        switch refusal {
        case .serverFull:
            return "connection limit reached (\(maxConnections) open): closing new connections at accept until some close"
        case .clientFull:
            return "a client reached its connection limit (\(maxPerClient) open): closing its new connections at accept"
        }
    }

    /// Called now and then (each loop's sweep): the summary line once a burst
    /// has been quiet long enough, else nil.
    public func burstSummary(now: UInt64) -> String? {
        guard let s = burst.withLock({ $0.endIfQuiet(now: now) }) else { return nil }
        let seconds = Double((s.lastAt - s.startedAt) / 1_000_000) / 1000
        return "connection limits: refused \(s.serverFull) connection(s) over max_connections and \(s.clientFull) over max_connections_per_client in \(seconds) s"
    }
}

/// A run of refusals, logged twice (when it starts, and a summary when it
/// has been quiet for `quietNanos`) however many connections it refuses.
public struct RefusalBurst: Equatable, Sendable {
    public struct Summary: Equatable, Sendable {
        public var startedAt: UInt64
        public var lastAt: UInt64
        public var serverFull = 0
        public var clientFull = 0
    }

    public let quietNanos: UInt64
    private var current: Summary?

    public init(quietNanos: UInt64) { self.quietNanos = quietNanos }

    /// Counts one refusal; true when it starts a burst (log it).
    public mutating func record(_ refusal: ConnectionLimiter.Refusal, now: UInt64) -> Bool {
        let starts = current == nil
        var s = current ?? Summary(startedAt: now, lastAt: now)
        s.lastAt = now
        switch refusal {
        case .serverFull: s.serverFull += 1
        case .clientFull: s.clientFull += 1
        }
        current = s
        return starts
    }

    /// Ends the burst when no refusal came for `quietNanos`; returns its counts.
    public mutating func endIfQuiet(now: UInt64) -> Summary? {
        guard let s = current, now >= s.lastAt, now - s.lastAt >= quietNanos else { return nil }
        current = nil
        return s
    }
}
