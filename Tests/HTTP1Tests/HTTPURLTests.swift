import HTTP1
import XCTest

final class HTTPURLTests: XCTestCase {
    let base = HTTPURL("https://registry.example:5000/v2/library/alpine/blobs/sha256:00?x=1")!

    func testResolvesEveryFormOfLocation() {
        XCTAssertEqual(base.resolving("https://cdn.example/b?sig=1")?.description, "https://cdn.example/b?sig=1")
        XCTAssertEqual(base.resolving("//cdn.example/b")?.description, "https://cdn.example/b")
        XCTAssertEqual(base.resolving("/v2/other")?.description, "https://registry.example:5000/v2/other")
        XCTAssertEqual(base.resolving("other")?.description, "https://registry.example:5000/v2/library/alpine/blobs/other")
        XCTAssertNil(base.resolving("sha256:11"), "RFC 3986: a scheme, so absolute, and not http(s)")
        XCTAssertNil(base.resolving("/a b"))
        XCTAssertNil(base.resolving("ftp://cdn.example/b"))
    }

    /// Found by Fuzz/ `range`: a relative Location with a fragment put `#…` into the request target.
    func testFragmentsNeverReachTheRequestTarget() {
        XCTAssertEqual(base.resolving("bytes#1-0")?.pathAndQuery, "/v2/library/alpine/blobs/bytes")
        XCTAssertEqual(base.resolving("/x?y#z")?.pathAndQuery, "/x?y")
        XCTAssertEqual(base.resolving("https://cdn.example/b#frag")?.description, "https://cdn.example/b")
        XCTAssertNil(HTTPURL("https://cdn.example/b#frag"), "a URL Berth is given (config, realm) keeps refusing fragments")
    }

    /// Found by Fuzz/ `range`: `http://v::2]:50000/` parsed with host `v::2]` and printed as
    /// `http://[v::2]]:50000/`. Hosts are reg-names or bracketed IPv6 literals.
    func testRefusesHostsThatAreNeitherNamesNorIPv6Literals() {
        for text in ["http://v::2]:50000/", "http://[v::2]:5000/", "http://a[b/", "http://[127.0.0.1]/", "http://a\\b/", "http://:80/"] {
            XCTAssertNil(HTTPURL(text), text)
        }
        XCTAssertEqual(HTTPURL("http://[::FFFF:127.0.0.1]:9/")?.host, "::ffff:127.0.0.1")
        XCTAssertEqual(HTTPURL("http://My-Registry.example_1/")?.host, "my-registry.example_1")
    }

    func testPrintsBackToItself() {
        for text in ["http://a:8080/x?y", "https://[::1]:5000/v2/", "https://registry-1.docker.io/"] {
            XCTAssertEqual(HTTPURL(text)?.description, text)
        }
    }
}
