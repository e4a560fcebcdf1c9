import XCTest
@testable import OCI

final class RepositoryNameTests: XCTestCase {
    func testValidNames() {
        for name in ["a", "alpine", "library/alpine", "a__b", "a_b", "a.b", "a-b", "a--b", "a---b", "0", "a0/b1/c2",
                     "my.registry-name/some_repo__x/leaf", "manifests", "a/blobs/b", "a/manifests"] {
            XCTAssertTrue(RepositoryName.isValid(name), name)
        }
    }

    func testInvalidNames() {
        for name in ["", "A", "Alpine", "library/Alpine", "a___b", "a..b", "a._b", "a.-b", "a_-b", "-a", "_a", ".a", "a-", "a_",
                     "a.", "a/", "/a", "a//b", "a/../b", "..", "a/./b", "%2e", "a/%2e%2e/b", "%61", "a b", "a\u{e9}",
                     "a:b", "a@b", "a\\b", "a/b/"] {
            XCTAssertFalse(RepositoryName.isValid(name), name)
        }
    }

    func testLengthLimit() {
        let max = String(repeating: "a", count: 255)
        XCTAssertTrue(RepositoryName.isValid(max))
        XCTAssertFalse(RepositoryName.isValid(max + "a"))
        let components = Array(repeating: "ab", count: 85).joined(separator: "/")  // 85*2 + 84 = 254
        XCTAssertEqual(components.utf8.count, 254)
        XCTAssertTrue(RepositoryName.isValid(components))
        XCTAssertTrue(RepositoryName.isValid(components + "a"))
        XCTAssertFalse(RepositoryName.isValid(components + "ab"))
    }

    func testSubstringInput() {
        let path = "/v2/library/alpine/x"
        XCTAssertTrue(RepositoryName.isValid(path.dropFirst(4).dropLast(2)))
    }
}

final class TagTests: XCTestCase {
    func testValidTags() {
        for tag in ["latest", "v1.2.3", "_", "_x", "3.19", "A", "a-b_c.D", "x" + String(repeating: "-", count: 127)] {
            XCTAssertTrue(Tag.isValid(tag), tag)
        }
    }

    func testInvalidTags() {
        for tag in ["", ".hidden", "-x", "a/b", "a:b", "a b", "sha256:abc", "caf\u{e9}", "a+b", "%61"] {
            XCTAssertFalse(Tag.isValid(tag), tag)
        }
    }

    func testLengthLimit() {
        XCTAssertTrue(Tag.isValid(String(repeating: "a", count: 128)))
        XCTAssertFalse(Tag.isValid(String(repeating: "a", count: 129)))
    }

    func testReference() throws {
        let hex = String(repeating: "c", count: 64)
        XCTAssertEqual(Reference("latest"), .tag("latest"))
        XCTAssertEqual(Reference("sha256:" + hex), .digest(try XCTUnwrap(Digest("sha256:" + hex))))
        XCTAssertNil(Reference("sha256:" + hex.uppercased()))
        XCTAssertNil(Reference(".x"))
        XCTAssertEqual(Reference.tag("v1").description, "v1")
        XCTAssertEqual(Reference("sha256:" + hex)?.description, "sha256:" + hex)
    }
}

final class ImageReferenceTests: XCTestCase {
    func testForms() {
        XCTAssertEqual(ImageReference("alpine")?.description, "alpine:latest")
        XCTAssertEqual(ImageReference("library/alpine:3.20")?.description, "library/alpine:3.20")
        XCTAssertEqual(ImageReference("docker.io/library/alpine:3.20")?.name, "library/alpine")
        XCTAssertEqual(ImageReference("docker.io/library/alpine:3.20")?.registry, "docker.io")
        XCTAssertNil(ImageReference("library/alpine:3.20")?.registry)
        XCTAssertEqual(ImageReference("127.0.0.1:5000/team/app:v1")?.description, "127.0.0.1:5000/team/app:v1")
        XCTAssertEqual(ImageReference("127.0.0.1:5000/team/app:v1")?.name, "team/app")
        XCTAssertEqual(ImageReference("localhost/app")?.qualifiedName, "localhost/app")
        XCTAssertEqual(ImageReference("harbor/app:1")?.registry, nil, "a plain first component is a repository component, not a registry")
        let d = "sha256:" + String(repeating: "a", count: 64)
        XCTAssertEqual(ImageReference("team/app@" + d)?.reference, .digest(Digest(d)!))
        XCTAssertNil(ImageReference("Team/App:v1"))
        XCTAssertNil(ImageReference("app@sha256:short"))
        XCTAssertNil(ImageReference("app:.bad"))
    }

    func testEveryReferencePrintsBackToItself() {
        // Fuzz/ names found "sha512:b/localhost/vateba2a" printing as "localhost/vateba2a:latest" while registries were dropped.
        for text in ["sha512:b/localhost/vateba2a", "a.b/c.d/e", "localhost/x:1", "127.0.0.1:5000/a@sha256:" + String(repeating: "0", count: 64)] {
            let image = ImageReference(text)
            XCTAssertNotNil(image, text)
            XCTAssertEqual(image.flatMap { ImageReference($0.description) }, image, text)
        }
    }

    func testARegistryIsHostAndPortOnly() {
        // It travels as ?ns=: nothing that could end or extend a query value.
        XCTAssertNil(ImageReference("ghcr.io&ns=x.io/org/app:1"))
        XCTAssertNil(ImageReference("a.io?x/org/app:1"))
        XCTAssertNil(ImageReference("a.io#x/app"))
        XCTAssertEqual(ImageReference("[::1]:5000/app")?.registry, "[::1]:5000")
    }
}
