import Foundation
import TestSupport

/// An image as the registry holds it after a push: the manifest bytes read
/// back from the registry (skopeo may rewrite on push, so these are the truth)
/// and the blob digests they reference.
struct PushedImage {
    let repository: String
    let tag: String
    let manifest: [UInt8]
    let mediaType: String
    /// Config, then layers.
    let blobs: [String]
    var digest: String { "sha256:" + sha256Hex(manifest) }
}

/// A multi-platform index and its platform images.
struct PushedIndex {
    let repository: String
    let tag: String
    let index: [UInt8]
    let mediaType: String
    let children: [PushedImage]
    var digest: String { "sha256:" + sha256Hex(index) }
}

/// Builds test images and pushes them: single images as `dir:` layouts
/// through skopeo (Docker schema2, gzip layers of random bytes, a valid-looking
/// config), indexes and artifacts by plain HTTP uploads (POST, PUT ?digest=,
/// PUT manifest with its Content-Type).
final class ImageBuilder {
    let directory: String

    init(directory: String) { self.directory = directory }

    static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    static let ociManifest = "application/vnd.oci.image.manifest.v1+json"
    static let ociIndex = "application/vnd.oci.image.index.v1+json"
    static let emptyConfig = "application/vnd.oci.empty.v1+json"

    // MARK: layers and layouts

    /// A gzip layer of `size` random bytes written into `dir`, named by its hex
    /// digest; returns (digest, diffID, compressed size). With `asTar`, the bytes
    /// are one file in a tar archive, a layer clients that unpack (podman) accept.
    func makeGzipLayer(size: Int, in dir: String, asTar: Bool = false) throws -> (digest: String, diffID: String, size: Int) {
        let raw = "\(dir)/raw-\(UUID().uuidString.prefix(8))"
        var diffID = try writeRandomFile(raw, count: size)
        if asTar {
            let payload = raw + ".payload"
            try FileManager.default.moveItem(atPath: raw, toPath: payload)
            try Subprocess.run(["tar", "-cf", raw, "-C", dir, "--owner=0", "--group=0", (payload as NSString).lastPathComponent], in: dir, timeout: 60)
            try FileManager.default.removeItem(atPath: payload)
            guard let hex = sha256Hex(file: raw) else { throw Subprocess.Failure(description: "cannot read \(raw)") }
            diffID = "sha256:" + hex
        }
        try Subprocess.run(["gzip", "-1", "-n", raw], in: dir, timeout: 60)
        let gz = raw + ".gz"
        guard let hex = sha256Hex(file: gz) else { throw Subprocess.Failure(description: "cannot read \(gz)") }
        try FileManager.default.moveItem(atPath: gz, toPath: "\(dir)/\(hex)")
        let length = (try FileManager.default.attributesOfItem(atPath: "\(dir)/\(hex)")[.size] as? NSNumber)?.intValue ?? 0
        return ("sha256:" + hex, diffID, length)
    }

    /// A `dir:` layout (Directory Transport 1.1) holding a Docker schema2 image.
    func makeDirLayout(layerSizes: [Int], tarLayers: Bool = false) throws -> String {
        let dir = "\(directory)/layout-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var layers: [[String: Any]] = []
        var diffIDs: [String] = []
        for size in layerSizes {
            let l = try makeGzipLayer(size: size, in: dir, asTar: tarLayers)
            layers.append(["mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": l.size, "digest": l.digest])
            diffIDs.append(l.diffID)
        }
        let config = jsonBytes([
            "architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
            "config": ["Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Cmd": ["/bin/sh"]],
            "rootfs": ["type": "layers", "diff_ids": diffIDs],
            "history": diffIDs.map { _ in ["created": "2026-01-01T00:00:00Z", "created_by": "berth integration test"] },
        ] as [String: Any])
        let configHex = sha256Hex(config)
        try Data(config).write(to: URL(fileURLWithPath: "\(dir)/\(configHex)"))
        let manifest = jsonBytes([
            "schemaVersion": 2, "mediaType": ImageBuilder.dockerManifest,
            "config": ["mediaType": "application/vnd.docker.container.image.v1+json", "size": config.count, "digest": "sha256:" + configHex],
            "layers": layers,
        ] as [String: Any])
        try Data(manifest).write(to: URL(fileURLWithPath: "\(dir)/manifest.json"))
        try "Directory Transport Version: 1.1\n".write(toFile: "\(dir)/version", atomically: true, encoding: .utf8)
        return dir
    }

    /// Builds a multi-layer image and pushes it with skopeo. `credentials` is
    /// `user:password` for a token registry; `authorization` is how to read the
    /// manifest back directly.
    func pushImage(to registry: Registry, repository: String, tag: String, layerSizes: [Int],
                   tarLayers: Bool = false, credentials: String? = nil, authorization: String? = nil) throws -> PushedImage {
        let layout = try makeDirLayout(layerSizes: layerSizes, tarLayers: tarLayers)
        var extra = ["--dest-tls-verify=false"]
        if let credentials { extra += ["--dest-creds", credentials] }
        try Skopeo.copy("dir:\(layout)", "docker://\(registry.hostPort)/\(repository):\(tag)", extra: extra, in: directory)
        let (bytes, type) = try registry.manifest(repository, tag, authorization: authorization, in: directory)
        return PushedImage(repository: repository, tag: tag, manifest: bytes, mediaType: type, blobs: referencedDigests(bytes).blobs)
    }

    // MARK: plain HTTP uploads

    /// Uploads `file` as blob `digest`: POST an upload session, PUT ?digest= with the bytes.
    func uploadBlob(file: String, digest: String, to registry: Registry, repository: String, authorization: String? = nil) throws {
        let auth = authorization.map { ["Authorization: \($0)"] } ?? []
        let post = try Curl.request("\(registry.url)/v2/\(repository)/blobs/uploads/", method: "POST", headers: auth, in: directory)
        guard post.status == 202, var location = post.headers["location"] else {
            throw Subprocess.Failure(description: "upload POST → \(post.status) \(post.bodyText)")
        }
        if location.hasPrefix("/") { location = registry.url + location }
        location += (location.contains("?") ? "&" : "?") + "digest=" + digest.replacingOccurrences(of: ":", with: "%3A")
        let put = try Curl.request(location, method: "PUT", headers: auth + ["Content-Type: application/octet-stream"],
                                   uploadFile: file, in: directory, timeout: 120)
        guard put.status == 201 else { throw Subprocess.Failure(description: "upload PUT \(digest) → \(put.status) \(put.bodyText)") }
    }

    /// Uploads `bytes` as a blob; returns its digest.
    @discardableResult
    func uploadBlob(bytes: [UInt8], to registry: Registry, repository: String, authorization: String? = nil) throws -> String {
        let digest = "sha256:" + sha256Hex(bytes)
        let path = "\(directory)/blob-\(UUID().uuidString.prefix(8))"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        try uploadBlob(file: path, digest: digest, to: registry, repository: repository, authorization: authorization)
        return digest
    }

    /// Uploads `size` random bytes as a blob; returns (digest, the local copy's path).
    func uploadRandomBlob(size: Int, to registry: Registry, repository: String) throws -> (digest: String, path: String) {
        let path = "\(directory)/blob-\(UUID().uuidString.prefix(8))"
        let digest = try writeRandomFile(path, count: size)
        try uploadBlob(file: path, digest: digest, to: registry, repository: repository)
        return (digest, path)
    }

    /// PUTs manifest bytes under `reference` (a tag or a digest) with `mediaType` as Content-Type.
    func putManifest(_ bytes: [UInt8], mediaType: String, to registry: Registry, repository: String, reference: String,
                     authorization: String? = nil) throws {
        let path = "\(directory)/manifest-\(UUID().uuidString.prefix(8))"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        var headers = ["Content-Type: \(mediaType)"]
        if let authorization { headers.append("Authorization: \(authorization)") }
        let put = try Curl.request("\(registry.url)/v2/\(repository)/manifests/\(reference)", method: "PUT",
                                   headers: headers, uploadFile: path, in: directory)
        guard put.status == 201 else {
            throw Subprocess.Failure(description: "manifest PUT \(repository):\(reference) → \(put.status) \(put.bodyText)")
        }
    }

    /// An OCI image for one platform, pushed by digest (layers gzip, OCI config).
    func pushPlatformImage(to registry: Registry, repository: String, architecture: String, layerSizes: [Int],
                           authorization: String? = nil) throws -> PushedImage {
        let dir = "\(directory)/platform-\(architecture)-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var layers: [[String: Any]] = []
        var diffIDs: [String] = []
        for size in layerSizes {
            let l = try makeGzipLayer(size: size, in: dir)
            try uploadBlob(file: "\(dir)/\(l.digest.dropFirst(7))", digest: l.digest, to: registry, repository: repository,
                           authorization: authorization)
            layers.append(["mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": l.size, "digest": l.digest])
            diffIDs.append(l.diffID)
        }
        let config = jsonBytes([
            "architecture": architecture, "os": "linux", "created": "2026-01-01T00:00:00Z",
            "config": ["Env": ["PATH=/usr/bin:/bin"]], "rootfs": ["type": "layers", "diff_ids": diffIDs],
        ] as [String: Any])
        let configDigest = try uploadBlob(bytes: config, to: registry, repository: repository, authorization: authorization)
        let manifest = jsonBytes([
            "schemaVersion": 2, "mediaType": ImageBuilder.ociManifest,
            "config": ["mediaType": "application/vnd.oci.image.config.v1+json", "size": config.count, "digest": configDigest],
            "layers": layers,
        ] as [String: Any])
        let digest = "sha256:" + sha256Hex(manifest)
        try putManifest(manifest, mediaType: ImageBuilder.ociManifest, to: registry, repository: repository, reference: digest,
                        authorization: authorization)
        return PushedImage(repository: repository, tag: digest, manifest: manifest, mediaType: ImageBuilder.ociManifest,
                           blobs: [configDigest] + layers.map { $0["digest"] as! String })
    }

    /// Two platform images (amd64, arm64) and an OCI index over them, tagged `tag`.
    func pushIndex(to registry: Registry, repository: String, tag: String, authorization: String? = nil) throws -> PushedIndex {
        var children: [PushedImage] = []
        var entries: [[String: Any]] = []
        for (arch, sizes) in [("amd64", [300_000, 150_000]), ("arm64", [250_000, 120_000])] {
            let image = try pushPlatformImage(to: registry, repository: repository, architecture: arch, layerSizes: sizes,
                                              authorization: authorization)
            children.append(image)
            entries.append(["mediaType": image.mediaType, "digest": image.digest, "size": image.manifest.count,
                            "platform": ["architecture": arch, "os": "linux"]])
        }
        let index = jsonBytes(["schemaVersion": 2, "mediaType": ImageBuilder.ociIndex, "manifests": entries] as [String: Any])
        try putManifest(index, mediaType: ImageBuilder.ociIndex, to: registry, repository: repository, reference: tag,
                        authorization: authorization)
        let (stored, type) = try registry.manifest(repository, tag, authorization: authorization, in: directory)
        return PushedIndex(repository: repository, tag: tag, index: stored, mediaType: type, children: children)
    }

    /// An artifact: OCI manifest with `artifactType`, the empty config, one JSON
    /// layer, and `subject` pointing at `subject`; tagged `tag`.
    func pushArtifact(to registry: Registry, repository: String, tag: String, subject: PushedImage,
                      authorization: String? = nil) throws -> PushedImage {
        let empty = Array("{}".utf8)
        let emptyDigest = try uploadBlob(bytes: empty, to: registry, repository: repository, authorization: authorization)
        let sbom = jsonBytes(["spdxVersion": "SPDX-2.3", "name": "berth-test", "nonce": UUID().uuidString] as [String: Any])
        let sbomDigest = try uploadBlob(bytes: sbom, to: registry, repository: repository, authorization: authorization)
        let manifest = jsonBytes([
            "schemaVersion": 2, "mediaType": ImageBuilder.ociManifest,
            "artifactType": "application/vnd.berth.test.sbom.v1+json",
            "config": ["mediaType": ImageBuilder.emptyConfig, "size": empty.count, "digest": emptyDigest],
            "layers": [["mediaType": "application/spdx+json", "size": sbom.count, "digest": sbomDigest]],
            "subject": ["mediaType": subject.mediaType, "size": subject.manifest.count, "digest": subject.digest],
            "annotations": ["org.opencontainers.image.created": "2026-01-01T00:00:00Z"],
        ] as [String: Any])
        try putManifest(manifest, mediaType: ImageBuilder.ociManifest, to: registry, repository: repository, reference: tag,
                        authorization: authorization)
        let (stored, type) = try registry.manifest(repository, tag, authorization: authorization, in: directory)
        return PushedImage(repository: repository, tag: tag, manifest: stored, mediaType: type, blobs: [emptyDigest, sbomDigest])
    }
}
