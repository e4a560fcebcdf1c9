import XCTest
import OCI
@testable import BlobStore

/// Content for tests on a real store.
extension XCTestCase {
    /// `size` bytes that differ with `seed`, and their digest.
    func blob(_ seed: Int, size: Int) -> ([UInt8], Digest) {
        let bytes = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ seed &* 7919 &+ $0 >> 7) }
        return (bytes, Digest(algorithm: .sha256, hex: SHA256Hasher.hex(bytes))!)
    }

    /// An image manifest over `config` and `layers`, stored with its media type.
    func storeManifest(_ store: BlobStore, config: (Digest, Int), layers: [(Digest, Int)]) throws -> Digest {
        let desc = { (x: (Digest, Int)) in "{\"mediaType\":\"application/octet-stream\",\"digest\":\"\(x.0)\",\"size\":\(x.1)}" }
        let json = "{\"schemaVersion\":2,\"mediaType\":\"\(MediaType.ociManifest)\",\"config\":\(desc(config)),\"layers\":[\(layers.map(desc).joined(separator: ","))]}"
        let bytes = Array(json.utf8)
        let digest = Digest(algorithm: .sha256, hex: SHA256Hasher.hex(bytes))!
        try store.store(bytes, as: digest)
        store.index.setMediaType(digest, MediaType.ociManifest)
        return digest
    }
}
