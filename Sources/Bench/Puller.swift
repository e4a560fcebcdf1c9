import BlobStore
import HTTP1
import Mirror
import OCI
import Reactor

/// How each pull runs.
public struct PullOptions: Sendable {
    /// Layers in flight at once (containerd's `max_concurrent_downloads`).
    public var parallel = 3
    /// The platform picked from an index.
    public var platform = Platform.linuxAmd64
    /// Hash every body and compare it with its digest.
    public var verify = false

    public init() {}
}

/// The `Accept` containerd sends when resolving a tag: every manifest type, index types first.
let manifestAccept = [
    MediaType.dockerManifestList, MediaType.dockerManifest, MediaType.ociIndex, MediaType.ociManifest, "*/*",
].joined(separator: ", ")

/// One image pulled once the way containerd pulls it: `HEAD` the manifest by
/// tag, `GET` the document (an index: then the platform's manifest), `GET`
/// the config, then the layers with bounded parallelism. Bodies are counted
/// (and hashed with `verify`), never stored. Loop thread only.
final class Pull {
    private let client: HTTPClient
    private let credentials: RegistryCredentials
    private let endpoint: HTTPURL
    private let image: ImageReference
    private let options: PullOptions
    private let done: (PullRecord) -> Void
    private var records: [RequestRecord] = []
    private var startNanos: UInt64 = 0
    private var authorization: String?
    private var schedule: BlobSchedule?
    private var finished = false

    init(client: HTTPClient, credentials: RegistryCredentials, endpoint: HTTPURL, image: ImageReference,
         options: PullOptions, done: @escaping (PullRecord) -> Void) {
        self.client = client
        self.credentials = credentials
        self.endpoint = endpoint
        self.image = image
        self.options = options
        self.done = done
    }

    func start() {
        startNanos = Clock.monotonicNanos()
        credentials.authorization(repository: image.name) { [self] result in
            switch result {
            case .success(let a):
                authorization = a
                resolve()
            case .failure(let e):
                records.append(RequestRecord(kind: .head, status: e.status == 502 ? 0 : e.status, bytes: 0, ttfbNanos: 0,
                                             error: "credentials: \(e.message)"))
                finish()
            }
        }
    }

    // MARK: stages

    private var reference: String {
        switch image.reference {
        case .tag(let t): return t
        case .digest(let d): return d.description
        }
    }

    private func resolve() {
        send(.head, .head, "manifests/\(reference)", expected: nil, buffer: false) { [self] record, head, _ in
            guard !record.isFailure, let head else { return finish() }
            let digest = head.headers["Docker-Content-Digest"].flatMap(Digest.init)
            var expected: Descriptor?
            if case .digest(let d) = image.reference {
                expected = Descriptor(mediaType: "", digest: d, size: -1)
            } else if let digest {
                expected = Descriptor(mediaType: "", digest: digest, size: Int64(head.headers["Content-Length"] ?? "") ?? -1)
            }
            getTop(expected: expected)
        }
    }

    /// GET what the tag names: by digest when the HEAD gave one, as containerd does.
    private func getTop(expected: Descriptor?) {
        let target = expected?.digest.description ?? reference
        send(.get, .manifest, "manifests/\(target)", expected: expected, buffer: true) { [self] record, head, body in
            guard !record.isFailure else { return finish() }
            guard let summary = parse(body, head) else { return finish() }
            if summary.isIndex {
                records[records.count - 1].kind = .index
                guard let platforms = try? IndexPlatforms.parse(body), let child = platforms.select(options.platform) else {
                    records[records.count - 1].error = "no \(options.platform) manifest in the index"
                    return finish()
                }
                send(.get, .manifest, "manifests/\(child.digest)", expected: child, buffer: true) { [self] record, head, body in
                    guard !record.isFailure, let summary = parse(body, head) else { return finish() }
                    blobs(summary)
                }
            } else {
                blobs(summary)
            }
        }
    }

    private func parse(_ body: [UInt8], _ head: ResponseHead?) -> ManifestSummary? {
        do { return try ManifestSummary.parse(body, contentType: head?.headers["Content-Type"]) } catch {
            records[records.count - 1].error = "\((error as? ManifestError)?.message ?? "\(error)")"
            return nil
        }
    }

    private func blobs(_ manifest: ManifestSummary) {
        schedule = BlobSchedule(manifest: manifest, parallelism: options.parallel)
        startBlobs()
    }

    private func startBlobs() {
        guard !finished, schedule != nil else { return }
        // `schedule` is mutated in place: a request failing synchronously re-enters here.
        while !finished, let f = schedule!.next() {
            send(.get, f.kind, "blobs/\(f.descriptor.digest)", expected: f.descriptor, buffer: false) { [self] _, _, _ in
                schedule?.finished()
                startBlobs()
            }
        }
        if schedule?.isComplete == true { finish() }
    }

    private func finish() {
        guard !finished else { return }
        finished = true
        done(PullRecord(startNanos: startNanos, endNanos: Clock.monotonicNanos(), requests: records))
    }

    // MARK: one request

    private func send(_ method: HTTPMethod, _ kind: RequestKind, _ tail: String, expected: Descriptor?, buffer: Bool,
                      then: @escaping (RequestRecord, ResponseHead?, [UInt8]) -> Void) {
        var url = endpoint
        url.pathAndQuery = "/v2/\(image.name)/\(tail)" + (image.registry.map { "?ns=\($0)" } ?? "")
        var headers = HTTPHeaders()
        if !kind.isBlob { headers.add("Accept", manifestAccept) }
        if let authorization { headers.add("Authorization", authorization) }
        var request = ClientRequest(method: method, url: url, headers: headers)
        if kind.isBlob { request.headTimeoutNanos = 30_000_000_000 }
        let verify = options.verify && method == .get ? expected : nil
        let fetch = Fetch(kind: kind, expected: verify, expectedSize: method == .get ? expected?.size : nil,
                          buffer: buffer) { [self] record, head, body in
            guard !finished else { return }
            records.append(record)
            then(record, head, body)
        }
        client.execute(request, delegate: fetch)
    }
}

/// Measures one response: time to head, body bytes, the digest when asked. Loop thread only.
private final class Fetch: ClientResponseDelegate {
    let kind: RequestKind
    let expected: Descriptor?
    let expectedSize: Int64?
    let buffer: Bool
    let completion: (RequestRecord, ResponseHead?, [UInt8]) -> Void
    let started = Clock.monotonicNanos()
    var head: ResponseHead?
    var ttfb: UInt64 = 0
    var bytes: Int64 = 0
    var body: [UInt8] = []
    var hasher: SHA256Hasher?
    var tooLarge = false

    init(kind: RequestKind, expected: Descriptor?, expectedSize: Int64?, buffer: Bool,
         completion: @escaping (RequestRecord, ResponseHead?, [UInt8]) -> Void) {
        self.kind = kind
        self.expected = expected
        self.expectedSize = expectedSize
        self.buffer = buffer
        self.completion = completion
        if let expected, expected.digest.algorithm == .sha256 { hasher = SHA256Hasher() }
    }

    func didReceiveHead(_ head: ResponseHead, url: HTTPURL, task: ClientTask) {
        self.head = head
        ttfb = Clock.monotonicNanos() &- started
    }

    func didReceiveBody(_ bytes: UnsafeRawBufferPointer, task: ClientTask) -> Bool {
        self.bytes += Int64(bytes.count)
        hasher?.update(bytes)
        guard buffer else { return true }
        body.append(contentsOf: bytes)
        // Manifests are capped as the mirror caps them.
        if body.count <= ManifestSummary.maxBytes { return true }
        tooLarge = true
        task.cancel()
        return false
    }

    func didFinish(_ error: HTTPClientError?, task: ClientTask) {
        let status = head?.status ?? 0
        var record = RequestRecord(kind: kind, status: status, bytes: bytes, ttfbNanos: ttfb)
        if tooLarge {
            record.error = "manifest over \(ManifestSummary.maxBytes) bytes"
        } else if let error {
            record.error = "\(error)"
        } else if (200..<300).contains(status) {
            if let size = expectedSize, size >= 0, size != bytes {
                record.isMismatch = true
                record.error = "\(bytes) bytes, the descriptor says \(size)"
            } else if let hasher, let expected, hasher.finalizeHex() != expected.digest.hex {
                record.isMismatch = true
                record.error = "body does not hash to \(expected.digest)"
            }
        }
        completion(record, head, body)
    }
}
