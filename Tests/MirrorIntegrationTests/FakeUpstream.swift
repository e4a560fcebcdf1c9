import Foundation
import HTTP1
import TestSupport

/// An in-process upstream for fault injection only (bytes that do not match
/// their digest, a connection cut mid-body, 429s): Berth's own HTTP1 server
/// with one handler per exact path. `/v2/` answers 200; anything unrouted 404.
final class FakeUpstream {
    typealias Route = (ResponseWriter) -> Void

    private let lock = NSLock()
    private var routes: [String: Route] = [:]
    /// Answers every path without a route of its own (instead of `/v2/` 200 and 404s).
    private var fallback: Route?
    private var seen: [(method: String, path: String)] = []
    private var server: LoopbackServer?
    private(set) var port: UInt16 = 0
    let host: String
    var url: String { "http://\(host):\(port)" }

    /// Listens on `host` (any 127.0.0.0/8 address) and a free port.
    init(host: String = "127.0.0.1") throws {
        self.host = host
        server = try LoopbackServer(host: host) { [weak self] w in self?.handle(w) }
        port = server!.port
    }

    func stop() { server?.stop() }

    /// Answers requests for `path` (without query) with `route`, on the server's loop.
    func route(_ path: String, _ route: @escaping Route) {
        lock.withLock { routes[path] = route }
    }

    /// Answers every unrouted path with `route`.
    func routeEverythingElse(_ route: @escaping Route) {
        lock.withLock { fallback = route }
    }

    /// Every request received.
    var requestCount: Int { lock.withLock { seen.count } }

    /// Forgets the route for `path` (a long run frees what its closure holds).
    func unroute(_ path: String) {
        lock.withLock { routes[path] = nil }
    }

    /// Requests received for `path` with `method`.
    func count(method: String, path: String) -> Int {
        lock.withLock { seen.filter { $0.method == method && $0.path == path }.count }
    }

    private func handle(_ w: ResponseWriter) {
        let path = splitQuery(w.request.target).path
        let route = lock.withLock { () -> Route? in
            seen.append((w.request.method.name, path))
            return routes[path] ?? fallback
        }
        if let route { return route(w) }
        var head = ResponseHead(status: path == "/v2/" ? 200 : 404)
        head.headers.add("Content-Type", "application/json")
        head.headers.add("Docker-Distribution-API-Version", "registry/2.0")
        w.respond(head, body: Array((path == "/v2/" ? "{}" : #"{"errors":[{"code":"NOT_FOUND","message":"fake upstream"}]}"#).utf8))
    }

    // MARK: a small manifest

    /// An OCI manifest with an empty config and no layers: enough for tag tests.
    static let smallManifest = Array(#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#.utf8)

    /// The head of a 200 serving `manifest` as an OCI manifest, with its digest.
    static func manifestHead(_ manifest: [UInt8]) -> ResponseHead {
        var head = ResponseHead(status: 200)
        head.headers.add("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        head.headers.add("Docker-Content-Digest", "sha256:" + sha256Hex(manifest))
        return head
    }

    /// A one-layer OCI image of `layerSize` bytes: its manifest, and its config and layer with their digests.
    struct OneLayerImage {
        let manifest: [UInt8]
        let config: (digest: String, bytes: [UInt8])
        let layer: (digest: String, bytes: [UInt8])
    }

    static func oneLayerImage(layerSize: Int) -> OneLayerImage {
        let config = Array(#"{"architecture":"amd64","os":"linux"}"#.utf8)
        let layer = (0..<layerSize).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }
        let (c, l) = ("sha256:" + sha256Hex(config), "sha256:" + sha256Hex(layer))
        let manifest = jsonBytes(["schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                  "config": ["mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.count],
                                  "layers": [["mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": l, "size": layer.count]]] as [String: Any])
        return OneLayerImage(manifest: manifest, config: (c, config), layer: (l, layer))
    }

    // MARK: canned faults

    /// 200 with `bytes` as the body whatever digest was asked for.
    static func serve(_ bytes: [UInt8], digest: String) -> Route {
        { w in
            var head = ResponseHead(status: 200)
            head.headers.add("Content-Type", "application/octet-stream")
            head.headers.add("Docker-Content-Digest", digest)
            w.respond(head, body: bytes)
        }
    }

    /// Starts a blob answer of `length` bytes; false for a HEAD (nothing more to send).
    private static func startBlob(_ w: ResponseWriter, length: Int, digest: String) -> Bool {
        var head = ResponseHead(status: 200)
        head.headers.add("Content-Type", "application/octet-stream")
        head.headers.add("Docker-Content-Digest", digest)
        w.start(head, contentLength: UInt64(length))
        return w.request.method == .get
    }

    /// Declares the whole length, sends the first `sent` bytes, then cuts the connection.
    static func cut(_ bytes: [UInt8], after sent: Int, digest: String) -> Route {
        { w in
            guard startBlob(w, length: bytes.count, digest: digest) else { return }
            bytes[0..<sent].withUnsafeBytes { _ = w.write($0) }
            // Let the first half reach the peer before the cut.
            _ = w.loop.schedule(afterNanos: 300_000_000) { w.abort() }
        }
    }

    /// Declares the whole length, sends the first `sent` bytes, stalls `stallNanos`, then sends the rest.
    static func stall(_ bytes: [UInt8], after sent: Int, stallNanos: UInt64, digest: String) -> Route {
        { w in
            guard startBlob(w, length: bytes.count, digest: digest) else { return }
            bytes[0..<sent].withUnsafeBytes { _ = w.write($0) }
            _ = w.loop.schedule(afterNanos: stallNanos) {
                bytes[sent...].withUnsafeBytes { _ = w.write($0) }
                w.end()
            }
        }
    }

    /// A flag a test raises to let a `held` body finish.
    final class Gate: @unchecked Sendable {  // `isOpen` under `lock`
        private let lock = NSLock()
        private var open = false
        var isOpen: Bool { lock.withLock { open } }
        func release() { lock.withLock { open = true } }
    }

    /// Declares the whole length, sends the first `sent` bytes, then the rest once `gate` is released.
    static func held(_ bytes: [UInt8], after sent: Int, until gate: Gate, digest: String) -> Route {
        { w in
            guard startBlob(w, length: bytes.count, digest: digest) else { return }
            bytes[0..<sent].withUnsafeBytes { _ = w.write($0) }
            func finishWhenOpen() {
                guard gate.isOpen else { _ = w.loop.schedule(afterNanos: 10_000_000, finishWhenOpen); return }
                bytes[sent...].withUnsafeBytes { _ = w.write($0) }
                w.end()
            }
            finishWhenOpen()
        }
    }

    /// A redirect to `location`.
    static func redirect(to location: String, status: Int = 307) -> Route {
        { w in
            var head = ResponseHead(status: status)
            head.headers.add("Location", location)
            w.respond(head, body: [])
        }
    }

    /// 429 with `Retry-After` and Distribution's error body.
    static func rateLimited(retryAfter: String) -> Route {
        { w in
            var head = ResponseHead(status: 429)
            head.headers.add("Content-Type", "application/json")
            head.headers.add("Retry-After", retryAfter)
            w.respond(head, body: Array(#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#.utf8))
        }
    }
}
