import XCTest
import Mirror

final class UpstreamRouterTests: XCTestCase {
    private let router = UpstreamRouter([
        .init(name: "docker.io", prefix: "docker.io", hosts: ["registry-1.docker.io"]),
        .init(name: "ghcr.io", prefix: "ghcr.io"),
        .init(name: "127.0.0.1:5999", prefix: nil),
        .init(name: "harbor.example", prefix: "harbor/proj"),
    ], defaultIndex: 0)

    func testAPathPrefixSelectsItsUpstreamAndIsRemovedFromTheName() {
        XCTAssertEqual(router.select(name: "ghcr.io/org/x", ns: nil, host: nil), .upstream(1, repository: "org/x", namespace: nil))
        XCTAssertEqual(router.select(name: "harbor/proj/app", ns: nil, host: nil), .upstream(3, repository: "app", namespace: nil))
        // The prefix wins over ns and Host: it is the most specific thing the client said.
        XCTAssertEqual(router.select(name: "ghcr.io/org/x", ns: "docker.io", host: "docker.io"), .upstream(1, repository: "org/x", namespace: nil))
    }

    func testAPrefixMustBeWholeComponentsAndLeaveARepository() {
        XCTAssertEqual(router.select(name: "ghcr.iox/a", ns: nil, host: nil), .upstream(0, repository: "ghcr.iox/a", namespace: nil))
        XCTAssertEqual(router.select(name: "ghcr.io", ns: nil, host: nil), .upstream(0, repository: "ghcr.io", namespace: nil))
        XCTAssertEqual(router.select(name: "harbor/projx/app", ns: nil, host: nil), .upstream(0, repository: "harbor/projx/app", namespace: nil))
    }

    func testTheLongestPrefixWins() {
        let r = UpstreamRouter([.init(name: "h1", prefix: "harbor"), .init(name: "h2", prefix: "harbor/team")], defaultIndex: nil)
        XCTAssertEqual(r.select(name: "harbor/team/app", ns: nil, host: nil), .upstream(1, repository: "app", namespace: nil))
        XCTAssertEqual(r.select(name: "harbor/other/app", ns: nil, host: nil), .upstream(0, repository: "other/app", namespace: nil))
    }

    func testNamespaceSelectsByNameOrHostAndIsEchoedAsConfigured() {
        XCTAssertEqual(router.select(name: "org/x", ns: "ghcr.io", host: nil), .upstream(1, repository: "org/x", namespace: "ghcr.io"))
        XCTAssertEqual(router.select(name: "library/alpine", ns: "registry-1.docker.io", host: nil),
                       .upstream(0, repository: "library/alpine", namespace: "docker.io"))
        XCTAssertEqual(router.select(name: "x", ns: "127.0.0.1:5999", host: nil), .upstream(2, repository: "x", namespace: "127.0.0.1:5999"))
        XCTAssertEqual(router.select(name: "org/x", ns: "GHCR.IO", host: nil), .upstream(1, repository: "org/x", namespace: "ghcr.io"))
    }

    func testNamespaceIsPercentDecodedAsContainerdSendsIt() {
        XCTAssertEqual(router.select(name: "x", ns: "127.0.0.1%3A5999", host: nil), .upstream(2, repository: "x", namespace: "127.0.0.1:5999"))
        XCTAssertEqual(router.select(name: "x", ns: "127.0.0.1%3a5999", host: nil), .upstream(2, repository: "x", namespace: "127.0.0.1:5999"))
        guard case .unknown = router.select(name: "x", ns: "127.0.0.1%3", host: nil) else { return XCTFail("a malformed escape matches nothing") }
        guard case .unknown = router.select(name: "x", ns: "ghcr.io%00", host: nil) else { return XCTFail("a control byte matches nothing") }
    }

    func testAnUnknownNamespaceSelectsNothingEvenWithADefault() {
        guard case .unknown(let message) = router.select(name: "org/x", ns: "quay.io", host: nil) else { return XCTFail("quay.io is not configured") }
        XCTAssertTrue(message.contains("quay.io"))
        // A port on a name configured without one is not the same registry.
        XCTAssertEqual(router.select(name: "x", ns: "127.0.0.1", host: nil), .unknown("no configured upstream for registry 127.0.0.1 (ns=127.0.0.1)"))
    }

    func testWithOneUpstreamAnyNamespaceIsServed() {
        let one = UpstreamRouter([.init(name: "127.0.0.1:5999", prefix: nil)], defaultIndex: nil)
        XCTAssertEqual(one.select(name: "library/alpine", ns: "docker.io", host: nil), .upstream(0, repository: "library/alpine", namespace: nil))
        XCTAssertEqual(one.select(name: "a/b", ns: nil, host: "127.0.0.1:5000"), .upstream(0, repository: "a/b", namespace: nil))
    }

    func testHostSelectsWithOrWithoutAPortThenTheDefault() {
        XCTAssertEqual(router.select(name: "org/x", ns: nil, host: "ghcr.io"), .upstream(1, repository: "org/x", namespace: nil))
        XCTAssertEqual(router.select(name: "org/x", ns: nil, host: "ghcr.io:5000"), .upstream(1, repository: "org/x", namespace: nil))
        XCTAssertEqual(router.select(name: "org/x", ns: nil, host: "127.0.0.1:5999"), .upstream(2, repository: "org/x", namespace: nil))
        XCTAssertEqual(router.select(name: "org/x", ns: nil, host: "127.0.0.1:5000"), .upstream(0, repository: "org/x", namespace: nil))
        XCTAssertEqual(router.select(name: "org/x", ns: "", host: nil), .upstream(0, repository: "org/x", namespace: nil))
    }

    func testWithoutADefaultAnUnroutedRequestIsUnknown() {
        let r = UpstreamRouter([.init(name: "a.io", prefix: "a.io"), .init(name: "b.io", prefix: "b.io")], defaultIndex: nil)
        guard case .unknown(let message) = r.select(name: "org/x", ns: nil, host: "127.0.0.1:5000") else { return XCTFail("no default") }
        XCTAssertTrue(message.contains("org/x") && message.contains("/v2/a.io/"), message)
    }

    func testDefaultPrefixIsTheNameWhenItIsAPathComponent() {
        XCTAssertEqual(UpstreamRouter.Entry.defaultPrefix(for: "ghcr.io"), "ghcr.io")
        XCTAssertNil(UpstreamRouter.Entry.defaultPrefix(for: "127.0.0.1:5999"))
        XCTAssertNil(UpstreamRouter.Entry.defaultPrefix(for: "Quay.io"))
    }
}
