#if canImport(Glibc)
import Glibc
#endif
import Reactor
import HTTP1
import OCI
import BlobStore
import Synchronization

/// What warming one image reached: its manifest and every digest it covers.
public struct WarmResult: Equatable, Sendable {
    public var image: ImageReference
    public var manifest: Digest
    public var mediaType: String
    /// The manifest, child manifests (every platform of an index), configs
    /// and layers, each once, in that order.
    public var covered: [Digest]
    /// Blob bytes received (manifests excluded).
    public var blobBytes: UInt64
}

/// How far a warm has got.
public struct WarmProgress: Equatable, Sendable, Codable {
    public var blobs = 0
    public var blobsDone = 0
    /// Blob bytes the manifests declare, and those received so far.
    public var bytes: UInt64 = 0
    public var bytesDone: UInt64 = 0
    public init() {}
}

/// Why warming an image failed.
public struct WarmError: Error, Equatable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Pulls images through Berth's own plain HTTP endpoint, as a client would:
/// the manifest by tag or digest (Accept: every manifest type), for an index
/// every child manifest by digest, then every config and layer blob (bodies
/// discarded). Caching, verification, upstream auth and single-flight are
/// therefore exactly those of real pulls. Used to pin images and to warm a
/// cache from an image list (air-gapped preparation).
///
/// Loop thread only: create, call and complete on the client's loop. The
/// client must outlive its pooled connections: give each warmer a
/// long-lived client (one per loop), not one made for a single warm.
public final class Warmer {
    let client: HTTPClient
    let origin: HTTPURL
    /// Blob GETs in flight per image.
    public var concurrency = 3
    /// Response-head and idle limits for Berth's answers (a cold blob waits on the upstream).
    public var headTimeoutNanos: UInt64 = 60_000_000_000
    /// For an index, only the child manifests of these platforms (each as
    /// containerd picks it); empty = every platform.
    public var platforms: [Platform] = []
    /// What the warm has reached, for progress reports (loop thread).
    public private(set) var progress = WarmProgress()
    /// Called with every digest an image covers once its manifests are read,
    /// before blobs are fetched (pins set here protect blobs as they land).
    public var onDiscovered: ((ImageReference, [Digest]) -> Void)?

    /// `address` is Berth's plain listener; a wildcard address is reached on 127.0.0.1.
    public init(client: HTTPClient, address: SocketAddress) {
        self.client = client
        let ip = address.ip
        let host = (ip == "::" || ip == "0.0.0.0" || ip.isEmpty) ? "127.0.0.1" : (ip.contains(":") ? "[\(ip)]" : ip)
        origin = HTTPURL(scheme: "http", host: host, port: address.port, pathAndQuery: "/")
    }

    /// Warms `images` one after another; results in the same order.
    public func warm(_ images: [ImageReference], completion: @escaping ([Result<WarmResult, WarmError>]) -> Void) {
        var results: [Result<WarmResult, WarmError>] = []
        func step(_ i: Int) {
            guard i < images.count else { return completion(results) }
            warm(images[i]) { r in
                results.append(r)
                step(i + 1)
            }
        }
        step(0)
    }

    /// Warms one image.
    public func warm(_ image: ImageReference, completion: @escaping (Result<WarmResult, WarmError>) -> Void) {
        fetchManifest(image, image.reference) { [self] top in
            switch top {
            case .failure(let e): completion(.failure(e))
            case .success(let (digest, summary, body)):
                var chosen = summary.manifests[...]
                if summary.isIndex && !platforms.isEmpty {
                    guard let index = try? IndexPlatforms.parse(body) else {
                        return completion(.failure(WarmError("\(image): the index's platforms cannot be read")))
                    }
                    var picked: [Descriptor] = []
                    for p in platforms {
                        guard let d = index.select(p) else {
                            return completion(.failure(WarmError("\(image): the index has no \(p) manifest")))
                        }
                        if !picked.contains(d) { picked.append(d) }
                    }
                    chosen = picked[...]
                }
                var covered = [digest]
                var seen: Set<Digest> = [digest]
                var summaries: [ManifestSummary] = [summary]
                func children(_ rest: ArraySlice<Descriptor>) {
                    guard let child = rest.first else { return blobs() }
                    if seen.insert(child.digest).inserted { covered.append(child.digest) }
                    fetchManifest(image, .digest(child.digest)) { r in
                        switch r {
                        case .failure(let e): completion(.failure(WarmError("\(image): child manifest \(child.digest): \(e)")))
                        case .success(let (_, s, _)):
                            summaries.append(s)
                            children(rest.dropFirst())
                        }
                    }
                }
                func blobs() {
                    var list: [Descriptor] = []
                    for s in summaries {
                        for b in s.blobs where seen.insert(b.digest).inserted {
                            covered.append(b.digest)
                            list.append(b)
                        }
                    }
                    progress.blobs = list.count
                    progress.bytes = list.reduce(0) { $0 + UInt64($1.size) }
                    onDiscovered?(image, covered)
                    fetchBlobs(image, list) { r in
                        switch r {
                        case .failure(let e): completion(.failure(e))
                        case .success(let bytes):
                            completion(.success(WarmResult(image: image, manifest: digest, mediaType: summary.mediaType,
                                                           covered: covered, blobBytes: bytes)))
                        }
                    }
                }
                children(chosen)
            }
        }
    }

    private func url(_ path: String) -> HTTPURL {
        HTTPURL(scheme: origin.scheme, host: origin.host, port: origin.port, pathAndQuery: path)
    }

    /// `?ns=` naming the image's upstream, so Berth routes it there (nothing for the default).
    private func namespace(_ image: ImageReference) -> String { image.registry.map { "?ns=" + $0 } ?? "" }

    private func fetchManifest(_ image: ImageReference, _ reference: Reference,
                               _ done: @escaping (Result<(Digest, ManifestSummary, [UInt8]), WarmError>) -> Void) {
        let name = image.qualifiedName
        var req = ClientRequest(method: .get, url: url("/v2/\(image.name)/manifests/\(reference)\(namespace(image))"))
        req.headers.add("Accept", MediaType.defaultAccept)
        req.headTimeoutNanos = headTimeoutNanos
        client.fetch(req, maxBytes: ManifestSummary.maxBytes) { result in
            switch result {
            case .failure(let e):
                done(.failure(WarmError("manifest \(name):\(reference): \(e)")))
            case .success(let (head, body)) where head.status != 200:
                let text = String(decoding: body.prefix(300), as: UTF8.self).filter { $0 != "\n" && $0 != "\r" }
                done(.failure(WarmError("manifest \(name):\(reference): HTTP \(head.status) \(text)")))
            case .success(let (head, body)):
                let digest = Digest(algorithm: .sha256, hex: SHA256Hasher.hex(body))!
                if case .digest(let wanted) = reference, wanted != digest {
                    return done(.failure(WarmError("manifest \(name)@\(wanted) hashes to \(digest)")))
                }
                do {
                    done(.success((digest, try ManifestSummary.parse(body, contentType: head.headers["Content-Type"]), body)))
                } catch {
                    done(.failure(WarmError("manifest \(name):\(reference): \(error)")))
                }
            }
        }
    }

    /// GETs every blob, `concurrency` at a time, discarding bodies; fails on
    /// the first error (the blobs in flight finish first).
    private func fetchBlobs(_ image: ImageReference, _ list: [Descriptor], _ done: @escaping (Result<UInt64, WarmError>) -> Void) {
        var next = 0, inFlight = 0, total: UInt64 = 0
        var failure: WarmError?
        func pump() {
            while failure == nil && inFlight < concurrency && next < list.count {
                let d = list[next]
                next += 1
                inFlight += 1
                var req = ClientRequest(method: .get, url: url("/v2/\(image.name)/blobs/\(d.digest)\(namespace(image))"))
                req.headTimeoutNanos = headTimeoutNanos
                let sink = DiscardingDelegate(received: { [self] in progress.bytesDone += UInt64($0) }) { [self] status, bytes, error in
                    inFlight -= 1
                    progress.blobsDone += 1
                    if let error {
                        failure = failure ?? WarmError("\(image): blob \(d.digest): \(error)")
                    } else if status != 200 {
                        failure = failure ?? WarmError("\(image): blob \(d.digest): HTTP \(status)")
                    } else if bytes != UInt64(d.size) {
                        failure = failure ?? WarmError("\(image): blob \(d.digest): \(bytes) bytes, the manifest says \(d.size)")
                    } else {
                        total += bytes
                    }
                    pump()
                }
                client.execute(req, delegate: sink)
            }
            if inFlight == 0 && (failure != nil || next == list.count) {
                if let failure { done(.failure(failure)) } else { done(.success(total)) }
            }
        }
        pump()
    }
}

/// Counts and drops a response body.
private final class DiscardingDelegate: ClientResponseDelegate {
    private var status = 0
    private var bytes: UInt64 = 0
    private let received: (Int) -> Void
    private let done: (Int, UInt64, HTTPClientError?) -> Void

    init(received: @escaping (Int) -> Void, done: @escaping (Int, UInt64, HTTPClientError?) -> Void) {
        self.received = received
        self.done = done
    }

    func didReceiveHead(_ head: ResponseHead, url: HTTPURL, task: ClientTask) { status = head.status }

    func didReceiveBody(_ bytes: UnsafeRawBufferPointer, task: ClientTask) -> Bool {
        self.bytes += UInt64(bytes.count)
        received(bytes.count)
        return true
    }

    func didFinish(_ error: HTTPClientError?, task: ClientTask) { done(status, bytes, error) }
}

/// Pins images: warms each through Berth, then records it with everything it
/// covers (`CacheIndex.pinImage`). Pins are set as soon as the manifests are
/// read, so blobs are protected from eviction as they land; a failed warm
/// releases the digests no other pinned image covers.
public final class Pinner: @unchecked Sendable {  // `clients` behind a lock; each client used on its loop only
    let store: BlobStore
    let pool: BlockingPool
    let address: SocketAddress
    private let clients = Mutex<[ObjectIdentifier: HTTPClient]>([:])

    public init(store: BlobStore, pool: BlockingPool, address: SocketAddress) {
        self.store = store
        self.pool = pool
        self.address = address
    }

    /// Warms and pins `image`; `completion` runs on `loop`.
    public func pin(_ image: ImageReference, on loop: EventLoop, completion: @escaping (Result<WarmResult, WarmError>) -> Void) {
        warm(image, pin: true, on: loop, completion: completion)
    }

    /// A running warm's progress, read on its loop.
    public final class WarmHandle {
        var warmer: Warmer?
        public var progress: WarmProgress { warmer?.progress ?? WarmProgress() }
    }

    /// Warms `image` (every platform) through Berth, pinning it when `pin`
    /// (`berth preload [--pin]`); `completion` runs on `loop` once its blobs are in the store.
    @discardableResult
    public func warm(_ image: ImageReference, pin: Bool, platforms: [Platform] = [], on loop: EventLoop,
                     completion: @escaping (Result<WarmResult, WarmError>) -> Void) -> WarmHandle {
        let handle = WarmHandle()
        loop.execute { [self] in
            let client = clients.withLock { c in
                if let existing = c[ObjectIdentifier(loop)] { return existing }
                let made = HTTPClient(loop: loop, pool: pool, tls: nil, maxIdlePerOrigin: 8)
                c[ObjectIdentifier(loop)] = made
                return made
            }
            let warmer = Warmer(client: client, address: address)
            warmer.platforms = platforms
            handle.warmer = warmer
            var early: [Digest] = []
            if pin {
                warmer.onDiscovered = { [store] _, digests in
                    early = digests
                    store.index.setPinned(digests.filter { !store.index.isPinned($0) }, true)
                }
            }
            warmer.warm(image) { [store] result in
                _ = warmer  // kept alive until the warm ends
                switch result {
                case .success(let r):
                    if pin { store.index.pinImage(image.description, .init(manifest: r.manifest, covered: r.covered, pinnedAt: unixNow())) }
                    // The last answers end before their fills are renamed into the store: wait (bounded) for the commits.
                    Self.awaitCached(r.covered, store: store, loop: loop, deadline: Clock.monotonicNanos() + 10_000_000_000) {
                        if pin { store.checkPinnedBudget() }
                        completion(result)
                    }
                case .failure:
                    if pin { store.index.releasePins(early) }
                    completion(result)
                }
            }
        }
        return handle
    }

    private static func awaitCached(_ digests: [Digest], store: BlobStore, loop: EventLoop, deadline: UInt64, _ done: @escaping () -> Void) {
        if Clock.monotonicNanos() >= deadline || digests.allSatisfy({ store.index.size(of: $0) != nil }) { return done() }
        loop.schedule(afterNanos: 20_000_000) { awaitCached(digests, store: store, loop: loop, deadline: deadline, done) }
    }
}
