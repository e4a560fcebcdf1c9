import BerthApp
import HTTP1
import OCI

// Everything Berth reads from a client or an upstream as text: paths, names, digests, Range and
// Location headers, WWW-Authenticate, token responses, manifests, tag lists, the config file.
// Each target checks what the rest of Berth relies on, not only that parsing returns.

/// Bytes that would end or split a header line or a request line if they reached one.
func isHeaderSafe(_ s: String) -> Bool {
    !s.utf8.contains { $0 == 0x0D || $0 == 0x0A || $0 == 0 }
}

/// Request paths, names, tags, digests and image references; parsed values print back to themselves.
func fuzzNames(_ data: UnsafeRawBufferPointer) {
    let text = String(decoding: data, as: UTF8.self)
    if let digest = Digest(text) {
        require(digest.description == text, "digest \(text) prints as \(digest)")
        require(!digest.hex.isEmpty && digest.hex.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) })
    }
    if let reference = Reference(text) {
        require(Reference(reference.description) == reference)
    }
    if let image = ImageReference(text) {
        require(RepositoryName.isValid(image.name))
        // The registry is kept (`[UPSTREAM/]REPO`), so every reference prints back to itself.
        require(ImageReference(image.description) == image, "\(text) → \(image) does not parse back")
    }
    switch Routes.parse(path: text) {
    case .success(.base):
        require(text == "/v2/" || text == "/v2")
    case .success(.manifest(let name, let reference)):
        require(RepositoryName.isValid(name) && text == "/v2/\(name)/manifests/\(reference)")
    case .success(.blob(let name, let digest)):
        require(RepositoryName.isValid(name) && text == "/v2/\(name)/blobs/\(digest)")
    case .success(.tagsList(let name)):
        require(RepositoryName.isValid(name) && text == "/v2/\(name)/tags/list")
    case .success(.referrers(let name, let digest)):
        require(RepositoryName.isValid(name) && text == "/v2/\(name)/referrers/\(digest)")
    case .failure(let error):
        require([400, 404].contains(error.status) && isHeaderSafe(error.code))
    }
    if RepositoryName.isValid(text) {
        require(text.utf8.count <= RepositoryName.maxLength && isHeaderSafe(text) && !text.contains(".."))
        _ = DockerHub.upstreamName(text, host: "registry-1.docker.io")
    }
    if Tag.isValid(text) { require(text.utf8.count <= Tag.maxLength && isHeaderSafe(text)) }
}

/// `Range` against a size chosen by the first 8 bytes; URLs and `Location` resolution.
func fuzzRange(_ data: UnsafeRawBufferPointer) {
    guard data.count >= 8 else { return }
    let size = data.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) } >> UInt64(data[0] % 64)
    let text = String(decoding: data[8...], as: UTF8.self)
    switch RangeRequest.parse(text, size: size, maxRanges: 16) {
    case .satisfiable(let ranges):
        require(!ranges.isEmpty && ranges.count <= 16)
        for range in ranges { require(range.upperBound < size, "\(range) outside \(size)") }
    case .none, .unsatisfiable:
        break
    }

    let base = HTTPURL("https://registry.example:5000/v2/library/alpine/blobs/sha256:00?x=1")!
    for candidate in [HTTPURL(text), base.resolving(text)] {
        guard let url = candidate else { continue }
        // A URL's parts go into a request line and a Host header.
        require(isHeaderSafe(url.host) && !url.host.utf8.contains(0x20) && !url.host.isEmpty)
        require(url.pathAndQuery.hasPrefix("/") && !url.pathAndQuery.utf8.contains { $0 <= 0x20 || $0 == 0x7F })
        require(url.scheme == "http" || url.scheme == "https")
        require(HTTPURL(url.description) == url, "\(url) does not parse back")
    }
}

/// `WWW-Authenticate` (then the realm policy on what it names) and token-service responses.
/// A NUL byte splits the input: challenge header before it, token response after.
func fuzzAuth(_ data: UnsafeRawBufferPointer) {
    let split = data.firstIndex(of: 0) ?? data.count
    let header = String(decoding: data[..<split], as: UTF8.self)
    for challenge in AuthChallenge.parse(header) {
        for (key, _) in challenge.parameters { require(key == key.lowercased()) }
        guard let realm = challenge.realm else { continue }
        for upstream in ["registry.example.com", "127.0.0.1:5000"] {
            guard RealmPolicy.allows(realm: realm, upstreamScheme: "https", upstreamHost: upstream) else { continue }
            // The policy reads the realm with its own small parser (OCI has no HTTP1); where the client's
            // parser, which picks the host actually dialled, reads it too, both must see an allowed host.
            guard let url = HTTPURL(realm) else { continue }
            var host = url.host.lowercased()
            if host.hasSuffix(".") { host.removeLast() }  // the absolute form of the same name
            if upstream.hasPrefix("127.") {
                require(host == "127.0.0.1", "realm \(realm) allowed for \(upstream)")
            } else {
                require(host == "registry.example.com" || host.hasSuffix(".example.com") || host == "example.com",
                             "realm \(realm) allowed for \(upstream)")
                require(url.scheme == "https" || host == "registry.example.com")
            }
        }
    }
    guard split < data.count else { return }
    if let token = try? TokenResponse.parse(Array(data[(split + 1)...])) {
        require(!token.token.isEmpty && isHeaderSafe(token.token))
        require((TokenResponse.minimumLifetime...TokenResponse.maximumLifetime).contains(token.expiresIn))
    }
}

/// Manifests under each kind of `Content-Type` (byte 0 picks it), and tag lists.
func fuzzManifest(_ data: UnsafeRawBufferPointer) {
    guard data.count >= 1 else { return }
    let types: [String?] = [nil, MediaType.ociManifest, MediaType.ociIndex, MediaType.dockerManifest,
                            MediaType.dockerManifestList, "application/json", MediaType.dockerSchema1Signed,
                            "application/vnd.oci.image.manifest.v1+json; charset=utf-8"]
    let contentType = types[Int(data[0]) % types.count]
    let bytes = Array(data[1...])
    if let summary = try? ManifestSummary.parse(bytes, contentType: contentType) {
        // The media type becomes a Content-Type header Berth writes.
        require(MediaType.isValid(summary.mediaType) && isHeaderSafe(summary.mediaType), "mediaType \(summary.mediaType)")
        for d in summary.blobs + summary.manifests + (summary.subject.map { [$0] } ?? []) {
            require(d.size >= 0 && Digest(d.digest.description) == d.digest)
        }
        if summary.isIndex { require(summary.config == nil && summary.layers.isEmpty) }
        if !summary.manifests.isEmpty { require(summary.isIndex) }
    }
    // Signature material from an upstream: Sigstore bundles, the referrers index listing them,
    // a bundle artifact's manifest, cosign's simple-signing payload and .sig manifests.
    if let bundle = try? SigstoreBundle.parse(bytes) {
        require(bundle.signatures.count <= SigstoreBundle.maxSignatures && bundle.signatures.allSatisfy { !$0.isEmpty && $0.count <= 4096 })
        require(bundle.signedBytes.starts(with: Array("DSSEv1 ".utf8)) && bundle.signedBytes.count > bundle.payload.count)
        if let digests = try? bundle.signedDigests() { require(!digests.isEmpty && digests.allSatisfy { Digest($0.description) == $0 }) }
    }
    if let artifacts = try? SigstoreBundle.artifacts(inIndex: bytes) {
        require(artifacts.count <= SigstoreBundle.maxArtifacts && artifacts.allSatisfy { Digest($0.description) == $0 })
    }
    if let layer = try? SigstoreBundle.layer(inManifest: bytes) {
        require(layer.size >= 0 && layer.size <= Int64(SigstoreBundle.maxBytes) && SigstoreBundle.mediaTypes.contains(layer.mediaType))
    }
    if let payload = try? SimpleSigningPayload.parse(bytes) { _ = payload }
    _ = try? CosignSignature.parse(bytes)
    if let list = try? TagList.parse(bytes) {
        let again = try? TagList.parse(list.encoded())
        require(again == list, "tag list does not survive encoding")
        let n = Int(data[0])
        let (page, _) = list.page(n: n, last: list.tags.first)
        require(page.count <= max(n, 0) && page.count <= TagList.maxPageSize)
    }
}

/// `conf/berth.yaml` and the value parsers behind its keys and flags.
func fuzzConfig(_ data: UnsafeRawBufferPointer) {
    let text = String(decoding: data, as: UTF8.self)
    if let config = try? BerthConfig.parse(yaml: text) {
        try? config.validate()
    }
    if let seconds = try? BerthConfig.parseDuration(text, key: "fuzz") {
        require(seconds.isFinite && seconds >= 0, "duration \(text) → \(seconds)")
    }
    _ = try? BerthConfig.parseConnectionCap(text, key: "fuzz")
}

/// Every target, by the name `berth-fuzz` takes.
let fuzzTargets: [String: (UnsafeRawBufferPointer) -> Void] = [
    "request": fuzzRequest,
    "response": fuzzResponse,
    "names": fuzzNames,
    "range": fuzzRange,
    "auth": fuzzAuth,
    "manifest": fuzzManifest,
    "config": fuzzConfig,
    "archive": fuzzArchive,
]
