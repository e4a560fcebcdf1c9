import XCTest
@testable import OCI

final class RoutesTests: XCTestCase {
    let hex = String(repeating: "e", count: 64)
    var digest: Digest { Digest("sha256:" + hex)! }

    func route(_ path: String, file: StaticString = #filePath, line: UInt = #line) -> Route? {
        switch Routes.parse(path: path) {
        case .success(let r): return r
        case .failure(let e):
            XCTFail("\(path): \(e)", file: file, line: line)
            return nil
        }
    }

    func code(_ path: String) -> String? {
        if case .failure(let e) = Routes.parse(path: path) { return e.code }
        return nil
    }

    func testBase() {
        XCTAssertEqual(route("/v2/"), .base)
        XCTAssertEqual(route("/v2"), .base)
        XCTAssertEqual(code("/v2//"), "NOT_FOUND")
        XCTAssertEqual(code("/v3/"), "NOT_FOUND")
        XCTAssertEqual(code("/"), "NOT_FOUND")
        XCTAssertEqual(code(""), "NOT_FOUND")
        XCTAssertEqual(code("/v2x"), "NOT_FOUND")
        XCTAssertEqual(code("/V2/"), "NOT_FOUND")
    }

    func testEveryShape() {
        XCTAssertEqual(route("/v2/library/alpine/manifests/latest"), .manifest(name: "library/alpine", reference: .tag("latest")))
        XCTAssertEqual(route("/v2/alpine/manifests/sha256:" + hex), .manifest(name: "alpine", reference: .digest(digest)))
        XCTAssertEqual(route("/v2/a/b/c/blobs/sha256:" + hex), .blob(name: "a/b/c", digest: digest))
        XCTAssertEqual(route("/v2/library/alpine/tags/list"), .tagsList(name: "library/alpine"))
        XCTAssertEqual(route("/v2/alpine/referrers/sha256:" + hex), .referrers(name: "alpine", digest: digest))
    }

    func testNamesContainingRouteWords() {
        XCTAssertEqual(route("/v2/manifests/manifests/latest"), .manifest(name: "manifests", reference: .tag("latest")))
        XCTAssertEqual(route("/v2/a/manifests/b/manifests/v1"), .manifest(name: "a/manifests/b", reference: .tag("v1")))
        XCTAssertEqual(route("/v2/blobs/blobs/sha256:" + hex), .blob(name: "blobs", digest: digest))
        XCTAssertEqual(route("/v2/a/blobs/x/manifests/list"), .manifest(name: "a/blobs/x", reference: .tag("list")))
        XCTAssertEqual(route("/v2/tags/list/tags/list"), .tagsList(name: "tags/list"))
        XCTAssertEqual(route("/v2/manifests/tags/list"), .tagsList(name: "manifests"))
        XCTAssertEqual(route("/v2/referrers/referrers/sha256:" + hex), .referrers(name: "referrers", digest: digest))
    }

    func testRawPathIsNotNormalised() {
        XCTAssertEqual(code("/v2/a//b/manifests/x"), "NAME_INVALID")
        XCTAssertEqual(code("/v2/%61/manifests/x"), "NAME_INVALID")
        XCTAssertEqual(code("/v2/a/../b/manifests/x"), "NAME_INVALID")
        XCTAssertEqual(code("/v2/a/./b/manifests/x"), "NAME_INVALID")
        XCTAssertEqual(code("/v2/a/%2e%2e/b/blobs/sha256:" + hex), "NAME_INVALID")
        XCTAssertEqual(code("/v2//manifests/x"), "NAME_INVALID")
        XCTAssertEqual(code("/v2/Library/alpine/manifests/x"), "NAME_INVALID")
        XCTAssertEqual(code("/v2/a/tags/list/"), "NOT_FOUND")
        XCTAssertEqual(code("/v2/a/manifests/"), "NOT_FOUND")
        XCTAssertEqual(code("/v2/a/manifests/x/"), "NOT_FOUND")
        XCTAssertEqual(code("/v2/a/blobs/"), "NOT_FOUND")
        // A percent-encoded tag is not decoded either.
        XCTAssertEqual(code("/v2/a/manifests/%6c"), "TAG_INVALID")
    }

    func testQueryIsTheCallersJob() {
        // The caller strips "?n=…": left in, it is part of the last segment and refused.
        XCTAssertEqual(code("/v2/a/tags/list?n=1"), "NOT_FOUND")
        XCTAssertEqual(code("/v2/a/manifests/latest?ns=docker.io"), "TAG_INVALID")
        let raw = "/v2/a/tags/list?n=1"
        let path = raw.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0]
        XCTAssertEqual(try Routes.parse(path: path).get(), .tagsList(name: "a"))
    }

    func testInvalidReferences() {
        XCTAssertEqual(code("/v2/a/manifests/.latest"), "TAG_INVALID")
        XCTAssertEqual(code("/v2/a/manifests/-x"), "TAG_INVALID")
        XCTAssertEqual(code("/v2/a/manifests/" + String(repeating: "t", count: 129)), "TAG_INVALID")
        XCTAssertEqual(route("/v2/a/manifests/" + String(repeating: "t", count: 128)),
                       .manifest(name: "a", reference: .tag(String(repeating: "t", count: 128))))
        XCTAssertEqual(code("/v2/a/manifests/sha256:" + hex.uppercased()), "DIGEST_INVALID")
        XCTAssertEqual(code("/v2/a/manifests/sha256:abc"), "DIGEST_INVALID")
        XCTAssertEqual(code("/v2/a/manifests/md5:abc"), "DIGEST_INVALID")
        XCTAssertEqual(code("/v2/a/blobs/latest"), "DIGEST_INVALID")
        XCTAssertEqual(code("/v2/a/blobs/sha256:" + String(hex.dropLast())), "DIGEST_INVALID")
        XCTAssertEqual(code("/v2/a/referrers/latest"), "DIGEST_INVALID")
    }

    func testUnknownShapes() {
        for path in ["/v2/a", "/v2/a/b", "/v2/a/tags/all", "/v2/a/blobs/uploads/", "/v2/a/blobs/uploads/abc-123",
                     "/v2/_catalog", "/v2/manifests/latest", "/v2/tags/list", "/healthz", "v2/a/manifests/x"] {
            XCTAssertEqual(code(path), "NOT_FOUND", path)
        }
    }

    func testErrorStatusAndOrder() {
        guard case .failure(let e) = Routes.parse(path: "/v2/A/manifests/.x") else { return XCTFail() }
        XCTAssertEqual(e.code, "NAME_INVALID")  // the name is checked before the reference
        XCTAssertEqual(e.status, 400)
        guard case .failure(let n) = Routes.parse(path: "/nope") else { return XCTFail() }
        XCTAssertEqual(n.status, 404)
        guard case .failure(let t) = Routes.parse(path: "/v2/a/manifests/.x") else { return XCTFail() }
        XCTAssertEqual(t.status, 400)
        guard case .failure(let d) = Routes.parse(path: "/v2/a/blobs/x") else { return XCTFail() }
        XCTAssertEqual(d.status, 400)
    }

    func testMaximumNameLength() {
        let name = String(repeating: "n", count: 255)
        XCTAssertEqual(route("/v2/\(name)/tags/list"), .tagsList(name: name))
        XCTAssertEqual(code("/v2/\(name)n/tags/list"), "NAME_INVALID")
    }
}
