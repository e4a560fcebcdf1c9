import XCTest
@testable import OCI

final class TokenResponseTests: XCTestCase {
    func parse(_ s: String) throws -> TokenResponse { try TokenResponse.parse(Array(s.utf8)) }

    func testDockerHubShape() throws {
        let t = try parse(#"{"token":"eyJhbGciOi.x.y","access_token":"eyJhbGciOi.x.y","expires_in":300,"issued_at":"2024-05-01T10:00:00.123Z"}"#)
        XCTAssertEqual(t.token, "eyJhbGciOi.x.y")
        XCTAssertEqual(t.expiresIn, 300)
        XCTAssertEqual(t.issuedAt, "2024-05-01T10:00:00.123Z")
    }

    func testVariants() throws {
        XCTAssertEqual(try parse(#"{"access_token":"abc"}"#), TokenResponse(token: "abc", expiresIn: 60))
        XCTAssertEqual(try parse(#"{"token":"abc"}"#).expiresIn, 60)
        XCTAssertEqual(try parse(#"{"token":"t","access_token":"a"}"#).token, "t")
        XCTAssertEqual(try parse(#"{"token":"","access_token":"a"}"#).token, "a")
        XCTAssertEqual(try parse(#"{"token":"t","expires_in":3600,"refresh_token":"r","scope":"x"}"#).expiresIn, 3600)
        XCTAssertEqual(try parse(#"{"token":"t","expires_in":10}"#).expiresIn, 60)      // below the spec's minimum
        XCTAssertEqual(try parse(#"{"token":"t","expires_in":-5}"#).expiresIn, 60)
        XCTAssertEqual(try parse(#"{"token":"t","expires_in":1e300}"#).expiresIn, TokenResponse.maximumLifetime)
        XCTAssertEqual(try parse(#"{"token":"t","expires_in":"120"}"#).expiresIn, 120)
        XCTAssertEqual(try parse(#"{"token":"t","expires_in":299.9}"#).expiresIn, 299)
        XCTAssertEqual(try parse(#"{"token":"t","expires_in":null}"#).expiresIn, 60)
        XCTAssertEqual(try parse(#"{"token":"t","expires_in":"soon"}"#).expiresIn, 60)
    }

    func testRefusals() {
        for body in ["", "null", "[]", "{}", #"{"token":""}"#, #"{"token":5}"#, #"{"access_token":null}"#, "{\"token\":\"a",
                     #"{"token":"a\r\nX-Injected: 1"}"#, #"{"token":"a b"}"#, #"{"token":"caf\u00e9"}"#, "<html>"] {
            XCTAssertThrowsError(try parse(body), body)
        }
        let huge = Array(#"{"token":""#.utf8) + Array(repeating: UInt8(ascii: "a"), count: TokenResponse.maxBytes) + Array(#""}"#.utf8)
        XCTAssertThrowsError(try TokenResponse.parse(huge))
    }
}

final class DockerHubTests: XCTestCase {
    func testHosts() {
        for host in ["docker.io", "registry-1.docker.io", "index.docker.io", "registry.hub.docker.com", "Registry-1.Docker.IO",
                     "registry-1.docker.io:443", "docker.io."] {
            XCTAssertTrue(DockerHub.isDockerHub(host: host), host)
        }
        for host in ["ghcr.io", "quay.io", "evil-docker.io", "docker.io.evil.com", "auth.docker.io", "127.0.0.1", ""] {
            XCTAssertFalse(DockerHub.isDockerHub(host: host), host)
        }
    }

    func testLibraryNamespace() {
        XCTAssertEqual(DockerHub.upstreamName("alpine", host: "registry-1.docker.io"), "library/alpine")
        XCTAssertEqual(DockerHub.upstreamName("library/alpine", host: "registry-1.docker.io"), "library/alpine")
        XCTAssertEqual(DockerHub.upstreamName("bitnami/redis", host: "docker.io"), "bitnami/redis")
        XCTAssertEqual(DockerHub.upstreamName("alpine", host: "ghcr.io"), "alpine")
        XCTAssertEqual(DockerHub.upstreamName("alpine", host: "127.0.0.1:5000"), "alpine")
    }
}

final class TagListTests: XCTestCase {
    func testParseSortsAndEncodes() throws {
        let list = try TagList.parse(Array(#"{"name":"library/alpine","tags":["latest","3.19","3.2","Edge","3.19","bad tag",".x"]}"#.utf8))
        XCTAssertEqual(list.name, "library/alpine")
        XCTAssertEqual(list.tags, ["3.19", "3.2", "Edge", "latest"])
        XCTAssertEqual(String(decoding: list.encoded(), as: UTF8.self),
                       #"{"name":"library/alpine","tags":["3.19","3.2","Edge","latest"]}"#)
        let decoded = try JSONSerialization.jsonObject(with: Data(list.encoded())) as? [String: Any]
        XCTAssertEqual(decoded?["tags"] as? [String], list.tags)
    }

    func testNullAndMissingTags() throws {
        XCTAssertEqual(try TagList.parse(Array(#"{"name":"a","tags":null}"#.utf8)).tags, [])
        XCTAssertEqual(try TagList.parse(Array(#"{"name":"a"}"#.utf8)).tags, [])
        XCTAssertEqual(String(decoding: TagList(name: "a", tags: []).encoded(), as: UTF8.self), #"{"name":"a","tags":[]}"#)
    }

    func testRefusals() {
        for body in ["", "[]", "{}", #"{"tags":["a"]}"#, #"{"name":"a","tags":"x"}"#, #"{"name":"a","tags":[1]}"#] {
            XCTAssertThrowsError(try TagList.parse(Array(body.utf8)), body)
        }
    }

    func testPaging() {
        let list = TagList(name: "r", tags: ["e", "a", "c", "b", "d"])
        XCTAssertEqual(list.page(n: nil, last: nil).tags, ["a", "b", "c", "d", "e"])
        XCTAssertFalse(list.page(n: nil, last: nil).more)
        XCTAssertEqual(list.page(n: 2, last: nil).tags, ["a", "b"])
        XCTAssertTrue(list.page(n: 2, last: nil).more)
        XCTAssertEqual(list.page(n: 2, last: "b").tags, ["c", "d"])
        XCTAssertTrue(list.page(n: 2, last: "b").more)
        XCTAssertEqual(list.page(n: 2, last: "d").tags, ["e"])
        XCTAssertFalse(list.page(n: 2, last: "d").more)
        XCTAssertEqual(list.page(n: 1, last: "d").tags, ["e"])
        XCTAssertFalse(list.page(n: 1, last: "d").more)       // exactly exhausted
        XCTAssertEqual(list.page(n: 5, last: nil).tags.count, 5)
        XCTAssertFalse(list.page(n: 5, last: nil).more)
        XCTAssertEqual(list.page(n: nil, last: "bb").tags, ["c", "d", "e"])  // `last` need not be a tag
        XCTAssertEqual(list.page(n: nil, last: "e").tags, [])
        XCTAssertEqual(list.page(n: nil, last: "z").tags, [])
        XCTAssertEqual(list.page(n: nil, last: "").tags.count, 5)
        XCTAssertEqual(list.page(n: 0, last: nil).tags, [])
        XCTAssertFalse(list.page(n: 0, last: nil).more)
        XCTAssertEqual(list.page(n: -3, last: nil).tags, [])
    }

    func testByteOrderNotLocaleOrder() {
        let list = TagList(name: "r", tags: ["b", "B", "a", "_", "1", "A"])
        XCTAssertEqual(list.tags, ["1", "A", "B", "_", "a", "b"])
        XCTAssertEqual(list.page(n: nil, last: "B").tags, ["_", "a", "b"])
    }

    func testPageSizeBoundCVE20232253() {
        let tags = (0..<12_000).map { String(format: "t%05d", $0) }
        let list = TagList(name: "r", tags: tags)
        let page = list.page(n: Int.max, last: nil)
        XCTAssertEqual(page.tags.count, TagList.maxPageSize)
        XCTAssertTrue(page.more)
        let rest = list.page(n: Int.max, last: page.tags.last)
        XCTAssertEqual(rest.tags.count, 2_000)
        XCTAssertFalse(rest.more)
        XCTAssertEqual(list.page(n: nil, last: nil).tags.count, TagList.maxPageSize)
    }

    func testEscaping() {
        let encoded = String(decoding: TagList.encode(name: "a\"b\\c\n", tags: ["x"]), as: UTF8.self)
        XCTAssertEqual(encoded, #"{"name":"a\"b\\c\n","tags":["x"]}"#)
    }
}
