import Reactor
import HTTP1
import OCI
import Synchronization

/// One member of the cluster (`peers:`), in the balancer's server order.
public struct PeerAddress: Sendable, Equatable, CustomStringConvertible {
    /// As configured (`10.0.0.12:5000`, `berth-1.berth:5000`).
    public var name: String
    /// Nil when the name did not resolve: the member keeps its place on the ring, is
    /// not asked, and its name is looked up again (every `Peers.retryLookupNanos` at most).
    public var address: SocketAddress?
    /// This node itself: never asked.
    public var isSelf: Bool
    /// What to look up again while `address` is nil.
    public var host: String, port: UInt16

    public init(name: String, address: SocketAddress?, isSelf: Bool, host: String = "", port: UInt16 = 0) {
        self.name = name
        self.address = address
        self.isSelf = isSelf
        self.host = host
        self.port = port
    }

    public var description: String { address.map { "\(name) (\($0))" } ?? "\(name) (unresolved)" }
}

/// The other Berth nodes behind the same balancer. On a blob miss a node asks
/// the blob's owner on the balancer's ring (`PeerRing`) before the upstream,
/// so a request that reached the wrong node after a ring change is served
/// from the cluster. When this node is the owner itself, it asks the owner of
/// the ring without it: the node that held the key before this one joined.
///
/// A peer request (`X-Berth-Peer`) is answered from that node's cache alone:
/// no upstream fetch, no further peer (it may still confirm a repository's
/// access with one upstream HEAD, as any request does). A peer that fails is
/// not asked for `holdOffNanos`; a peer's answer is verified like an upstream's.
final class Peers: @unchecked Sendable {  // immutable but `live` (under its lock); `clients[i]` on loop i only
    /// Marks a request from a peer node. A client sending it only restricts itself to cached content.
    static let header = "X-Berth-Peer"
    static let connectTimeoutNanos: UInt64 = 1_000_000_000
    static let headTimeoutNanos: UInt64 = 5_000_000_000
    static let idleTimeoutNanos: UInt64 = 10_000_000_000
    static let holdOffNanos: UInt64 = 10_000_000_000
    static let retryLookupNanos: UInt64 = 30_000_000_000

    let members: [PeerAddress]
    let ring: PeerRing
    private let clients: [HTTPClient]
    /// Per member: its address (a name that did not resolve may later), when it may be
    /// asked again after a failure, and when its name may be looked up again.
    private struct Live {
        var address: [SocketAddress?]
        var downUntil: [UInt64]
        var nextLookup: [UInt64]
    }
    private let live: Mutex<Live>
    private let pool: BlockingPool
    private let log: (HTTPServer.LogLevel, String) -> Void
    let counts: PeerCounts

    init(_ members: [PeerAddress], counts: PeerCounts, group: EventLoopGroup, pool: BlockingPool, log: @escaping (HTTPServer.LogLevel, String) -> Void) {
        self.members = members
        self.counts = counts
        ring = PeerRing(memberCount: members.count)
        clients = group.loops.map { HTTPClient(loop: $0, pool: pool, tls: nil) }
        live = Mutex(Live(address: members.map(\.address), downUntil: members.map { _ in 0 }, nextLookup: members.map { _ in 0 }))
        self.pool = pool
        self.log = log
    }

    /// The member to ask for `digest` and its address (nil: none worth asking, go upstream).
    func pick(_ digest: Digest, now: UInt64) -> (member: Int, address: SocketAddress)? {
        let key = digest.description.utf8
        guard var m = ring.owner(of: key) else { return nil }
        if members[m].isSelf {
            guard let previous = ring.owner(of: key, excluding: { self.members[$0].isSelf }) else { return nil }
            m = previous
        }
        let (address, lookUp) = live.withLock { l -> (SocketAddress?, Bool) in
            if l.address[m] == nil, !members[m].host.isEmpty, l.nextLookup[m] <= now {
                l.nextLookup[m] = now + Self.retryLookupNanos
                return (nil, true)
            }
            return (l.downUntil[m] <= now ? l.address[m] : nil, false)
        }
        if lookUp { lookUpAgain(m) }
        guard let address, !members[m].isSelf else { return nil }
        return (m, address)
    }

    /// A member whose name did not resolve: looked up on the pool; this miss goes upstream meanwhile.
    private func lookUpAgain(_ m: Int) {
        let member = members[m]
        pool.submit { [self] in
            guard let a = (try? Resolver.lookup(host: member.host, port: member.port))?.first else { return }
            live.withLock { $0.address[m] = a }
            log(.info, "peer \(member.name) resolves now: \(a)")
        }
    }

    /// A peer did not answer: it is skipped for `holdOffNanos`.
    func failed(_ m: Int, now: UInt64, _ why: String) {
        counts.failed.add(1, ordering: .relaxed)
        live.withLock { $0.downUntil[m] = now + Self.holdOffNanos }
        log(.warning, "peer \(members[m].name) failed (\(why)): not asked for \(Self.holdOffNanos / 1_000_000_000) s")
    }

    /// Sends the client's own request target (routing, `?ns=`) and credentials to `a`.
    func request(to a: SocketAddress, target: String, authorization: String?, requestID: String?) -> ClientRequest? {
        guard let url = HTTPURL("http://\(a)\(target)") else { return nil }
        var r = ClientRequest(method: .get, url: url)
        r.headers.add(Self.header, "1")
        if let authorization { r.headers.add("Authorization", authorization) }
        if let requestID { r.headers.add("X-Request-Id", requestID) }
        r.maxRedirects = 0
        r.connectTimeoutNanos = Self.connectTimeoutNanos
        r.headTimeoutNanos = Self.headTimeoutNanos
        r.idleTimeoutNanos = Self.idleTimeoutNanos
        return r
    }

    func client(for loop: EventLoop) -> HTTPClient { clients[loop.index] }

    /// A reload replaced the member list: idle connections close.
    func retire() {
        for c in clients { c.loop.execute { c.retire() } }
    }
}

/// Blob misses sent to a peer, by outcome; kept across reloads (Prometheus counters).
final class PeerCounts: Sendable {
    let filled = Atomic<Int>(0), missing = Atomic<Int>(0), failed = Atomic<Int>(0)
}

/// Feeds a fill from a peer node; on anything but a 200 with a length before
/// the body begins (404: the peer does not hold it; refused, timed out), the
/// fill is fetched from the upstream instead. A peer that breaks mid-body
/// fails the fill like an upstream would; the next request fetches again.
final class PeerFetch: ClientResponseDelegate {
    private let fetch: BlobFetch
    private let peers: Peers
    private let member: Int
    private let loop: EventLoop
    private let fallback: () -> Void
    private var delivering = false
    private var fellBack = false

    init(fetch: BlobFetch, peers: Peers, member: Int, loop: EventLoop, fallback: @escaping () -> Void) {
        self.fetch = fetch
        self.peers = peers
        self.member = member
        self.loop = loop
        self.fallback = fallback
    }

    func start(_ request: ClientRequest) {
        peers.client(for: loop).execute(request, delegate: self)
    }

    private func fallBack() {
        guard !fellBack else { return }
        fellBack = true
        fallback()
    }

    func didReceiveHead(_ head: ResponseHead, url: HTTPURL, task: ClientTask) {
        guard head.status == 200, head.headers["Content-Length"] != nil else {
            if head.status >= 500 {
                peers.failed(member, now: loop.now, "answered \(head.status)")
            } else {
                peers.counts.missing.add(1, ordering: .relaxed)
            }
            fallBack()
            task.cancel()
            return
        }
        delivering = true
        peers.counts.filled.add(1, ordering: .relaxed)
        // Bytes that do not verify: the next request for the blob goes upstream, not back to this peer.
        let (peers, member, loop) = (peers, member, loop)
        fetch.onNotKept = { loop.execute { peers.failed(member, now: loop.now, "its bytes were not kept (did not verify)") } }
        fetch.mirror.log(.info, "blob \(fetch.fill.digest): filled from peer \(peers.members[member].name)")
        fetch.didReceiveHead(head, url: url, task: task)
    }

    func didReceiveBody(_ bytes: UnsafeRawBufferPointer, task: ClientTask) -> Bool {
        fetch.didReceiveBody(bytes, task: task)
    }

    func didFinish(_ error: HTTPClientError?, task: ClientTask) {
        if delivering { return fetch.didFinish(error, task: task) }
        guard !fellBack else { return }
        peers.failed(member, now: loop.now, error.map { "\($0)" } ?? "no answer")
        fallBack()
    }
}
