import XCTest
@testable import OCI

/// The byte-level `Routes.parse` against the String-slicing parser it replaced
/// (kept below as the oracle): the same route or the same error, message included,
/// on a corpus of ordinary and hostile paths and on generated ones.
final class RoutesByteParserTests: XCTestCase {
    static let hex = String(repeating: "e", count: 64)
    static let hex512 = String(repeating: "0a", count: 64)

    static let corpus: [String] = {
        let d256 = "sha256:" + hex, d512 = "sha512:" + hex512
        var paths = [
            "", "/", "/v2", "/v2/", "/v2//", "/v3/", "/V2/", "/v2x", "v2/a/manifests/x", "/v2/a", "/v2/a/b",
            "/v2/library/alpine/manifests/latest", "/v2/alpine/manifests/\(d256)", "/v2/alpine/manifests/\(d512)",
            "/v2/a/b/c/blobs/\(d256)", "/v2/a/blobs/\(d512)", "/v2/library/alpine/tags/list", "/v2/a/referrers/\(d256)",
            "/v2/a/referrers/\(d512)", "/v2/manifests/manifests/latest", "/v2/a/manifests/b/manifests/v1",
            "/v2/blobs/blobs/\(d256)", "/v2/tags/list/tags/list", "/v2/manifests/tags/list", "/v2/a/tags/all",
            "/v2/a//b/manifests/x", "/v2/%61/manifests/x", "/v2/a/../b/manifests/x", "/v2/a/./b/manifests/x",
            "/v2/a/%2e%2e/b/blobs/\(d256)", "/v2//manifests/x", "/v2/Library/alpine/manifests/x", "/v2/a/tags/list/",
            "/v2/a/manifests/", "/v2/a/manifests/x/", "/v2/a/blobs/", "/v2/a/manifests/%6c", "/v2/a/tags/list?n=1",
            "/v2/a/manifests/latest?ns=docker.io", "/v2/a/manifests/.latest", "/v2/a/manifests/-x", "/v2/a/manifests/_x",
            "/v2/a/manifests/" + String(repeating: "t", count: 128), "/v2/a/manifests/" + String(repeating: "t", count: 129),
            "/v2/a/manifests/sha256:" + hex.uppercased(), "/v2/a/manifests/sha256:abc", "/v2/a/manifests/md5:abc",
            "/v2/a/manifests/sha256:", "/v2/a/manifests/:", "/v2/a/manifests/sha384:" + hex, "/v2/a/blobs/latest",
            "/v2/a/blobs/sha256:" + String(hex.dropLast()), "/v2/a/blobs/sha256:" + hex + "0", "/v2/a/referrers/latest",
            "/v2/a/blobs/uploads/", "/v2/a/blobs/uploads/abc-123", "/v2/_catalog", "/v2/manifests/latest", "/v2/tags/list",
            "/healthz", "/v2/" + String(repeating: "n", count: 255) + "/tags/list",
            "/v2/" + String(repeating: "n", count: 256) + "/tags/list", "/v2/" + String(repeating: "a/", count: 200) + "manifests/v",
            "/v2/a__b/manifests/v", "/v2/a___b/manifests/v", "/v2/a--b/manifests/v", "/v2/a-/manifests/v", "/v2/a./manifests/v",
            "/v2/a.b/manifests/v", "/v2/a_/manifests/v", "/v2/_a/manifests/v", "/v2/a/MANIFESTS/v", "/v2/a/Blobs/\(d256)",
            "/v2/a/manifests/v1\u{0}", "/v2/a\u{0}/manifests/v1", "/v2/ä/manifests/v1", "/v2/a/manifests/vä",
            "/v2/a/manifests\u{0301}/v1", "/v2/a/tags/lis\u{212A}", "/v2/a/manifests/la test", "/v2/a/manifests/a:b",
            "/v2/a b/manifests/x", "/v2/a/manifests/x#frag", "/v2/a/tags/list/x", "/v2/a/referrers/", "/v2/a/referrers",
        ]
        // Generated: segments from hostile pieces, a fixed seed (repeatable).
        let pieces = ["v2", "a", "b0", "A", "..", ".", "%2e", "%2F", "", "manifests", "blobs", "tags", "list", "referrers",
                      "uploads", "_catalog", d256, d512, "sha256:" + hex.uppercased(), "latest", "-x", "a__b", "a-b", "ß", ":"]
        var x: UInt64 = 0xB5_12_07  // a fixed LCG: the same corpus every run
        func next() -> UInt64 { x = x &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407; return x >> 33 }
        for _ in 0..<5000 {
            let n = Int(next() % 6) + 1
            var p = next() % 8 == 0 ? "/v3" : "/v2"
            for _ in 0..<n { p += "/" + pieces[Int(next() % UInt64(pieces.count))] }
            if next() % 10 == 0 { p += "/" }
            paths.append(p)
        }
        return paths
    }()

    func testAgreesWithTheStringParserOnEveryPath() {
        for path in Self.corpus {
            let new = Routes.parse(path: path), old = LegacyRoutes.parse(path: path)
            XCTAssertEqual(new, old, path.debugDescription)
            // A Substring (the caller's form, the query split off) takes the same way.
            let full = "x" + path + "?q=1"
            let sub = full[full.utf8.index(after: full.startIndex)..<full.utf8.index(full.startIndex, offsetBy: 1 + path.utf8.count)]
            XCTAssertEqual(Routes.parse(path: sub), old, path.debugDescription)
        }
    }

    func testNonContiguousInput() {
        // A bridged or lazily built string may not offer contiguous UTF-8: the copy path.
        let path = "/v2/library/alpine/manifests/" + "latest"
        XCTAssertEqual(Routes.parse(path: path.dropFirst(0)), LegacyRoutes.parse(path: path))
    }
}

/// `Routes.parse` as it was before it moved to bytes (commit 01dc4c0): the oracle.
enum LegacyRoutes {
    enum Shape { case manifest, blob, tags, referrers }

    static func parse<S: StringProtocol>(path: S) -> Result<Route, RouteError> {
        let path = String(path)
        if path == "/v2/" || path == "/v2" { return .success(.base) }
        guard path.utf8.starts(with: "/v2/".utf8) else { return .failure(.notFound(path)) }
        let rest = path[path.utf8.index(path.startIndex, offsetBy: 4)...]
        guard let lastSlash = rest.utf8.lastIndex(of: UInt8(ascii: "/")) else { return .failure(.notFound(path)) }
        let last = rest[rest.utf8.index(after: lastSlash)...]
        let head = rest[..<lastSlash]
        guard let kindSlash = head.utf8.lastIndex(of: UInt8(ascii: "/")) else { return .failure(.notFound(path)) }
        let kind = head[head.utf8.index(after: kindSlash)...]
        let name = head[..<kindSlash]
        let shape: Shape
        switch kind {
        case "manifests": shape = .manifest
        case "blobs": shape = .blob
        case "referrers": shape = .referrers
        case "tags" where last == "list": shape = .tags
        default: return .failure(.notFound(path))
        }
        guard !last.isEmpty else { return .failure(.notFound(path)) }
        guard RepositoryName.isValid(name) else { return .failure(.nameInvalid(String(name))) }
        let repository = String(name)
        switch shape {
        case .tags:
            return .success(.tagsList(name: repository))
        case .manifest:
            if let reference = Reference(last) { return .success(.manifest(name: repository, reference: reference)) }
            return .failure(last.utf8.contains(UInt8(ascii: ":")) ? .digestInvalid(String(last)) : .tagInvalid(String(last)))
        case .blob, .referrers:
            guard let digest = Digest(String(last)) else { return .failure(.digestInvalid(String(last))) }
            return .success(shape == .blob ? .blob(name: repository, digest: digest) : .referrers(name: repository, digest: digest))
        }
    }
}
