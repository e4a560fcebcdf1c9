import XCTest
@testable import BerthApp

/// `upstreams:`: a list of registries; the single `upstream:` section is a one-element list.
final class UpstreamsConfigTests: XCTestCase {
    private func refused(_ yaml: String, key: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try BerthConfig.parse(yaml: yaml), file: file, line: line) { error in
            XCTAssertEqual((error as? ConfigError)?.key, key, "\(error)", file: file, line: line)
        }
    }

    func testAListOfUpstreamsWithTheirNamesPrefixesAndDefault() throws {
        let c = try BerthConfig.parse(yaml: """
        upstreams:
          - url: https://registry-1.docker.io
            default: true
          - name: ghcr.io
            url: https://ghcr.io
            username: bot
            password_file: /run/secrets/ghcr
          - name: harbor.corp
            url: https://harbor.corp:8443
            prefix: harbor
            hosts: [harbor-old.corp]
            dockerhub: false
          - url: http://127.0.0.1:5999
        """)
        let u = c.effectiveUpstreams
        XCTAssertEqual(u.map(\.resolvedName), ["docker.io", "ghcr.io", "harbor.corp", "127.0.0.1:5999"])
        XCTAssertEqual(u.map(\.resolvedPrefix), ["docker.io", "ghcr.io", "harbor", nil])
        XCTAssertEqual(u.map(\.isDefault), [true, false, false, false])
        XCTAssertEqual(u[1].username, "bot")
        XCTAssertEqual(u[1].passwordFile, "/run/secrets/ghcr")
        XCTAssertEqual(u[2].hosts, ["harbor-old.corp"])
        XCTAssertEqual(u[2].dockerhub, "false")
    }

    func testTheSingleSectionIsAOneElementList() throws {
        let c = try BerthConfig.parse(yaml: "upstream:\n  url: http://127.0.0.1:5999\n")
        XCTAssertEqual(c.effectiveUpstreams.count, 1)
        XCTAssertEqual(c.effectiveUpstreams[0].resolvedName, "127.0.0.1:5999")
        XCTAssertEqual(BerthConfig().effectiveUpstreams.map(\.resolvedName), ["docker.io"], "the embedded default mirrors Docker Hub")
        XCTAssertEqual(try BerthConfig.parse(yaml: "upstream:\n  url: https://quay.io:443\n").effectiveUpstreams[0].resolvedName, "quay.io")
    }

    func testAnEmptyPrefixMeansNone() throws {
        let c = try BerthConfig.parse(yaml: "upstreams:\n  - name: ghcr.io\n    url: https://ghcr.io\n    prefix: \"\"\n")
        XCTAssertNil(c.effectiveUpstreams[0].resolvedPrefix)
    }

    func testMistakesNameTheKey() {
        refused("upstreams:\n  - url: https://a.io\n    default: true\n  - url: https://b.io\n    default: true\n", key: "upstreams")
        refused("upstreams:\n  - url: https://a.io\n  - url: https://a.io/\n", key: "upstreams[1].name")
        refused("upstreams:\n  - name: a\n    url: https://a.io\n    prefix: x\n  - name: b\n    url: https://b.io\n    prefix: x\n", key: "upstreams[1].prefix")
        refused("upstreams:\n  - url: ftp://a.io\n", key: "upstreams[0].url")
        refused("upstreams:\n  - url: https://a.io\n    prefix: Bad/Prefix\n", key: "upstreams[0].prefix")
        refused("upstreams:\n  - url: https://a.io\n    colour: blue\n", key: "upstreams[0].colour")
        refused("upstreams:\n  - url: https://a.io\n    certificate: c.pem\n", key: "upstreams[0].key")
        refused("upstreams: []\n", key: "upstreams")
        refused("upstream:\n  url: https://a.io\nupstreams:\n  - url: https://b.io\n", key: "upstream")
        refused("upstream:\n  name: a.io\n", key: "upstream.name")
    }

    func testEachUpstreamsPasswordComesFromItsOwnVariable() throws {
        var c = try BerthConfig.parse(yaml: "upstreams:\n  - name: ghcr.io\n    url: https://ghcr.io\n  - url: http://127.0.0.1:5999\n")
        XCTAssertEqual(BerthConfig.passwordVariable(forUpstream: "ghcr.io"), "BERTH_UPSTREAMS_GHCR_IO_PASSWORD")
        try c.apply(environment: ["BERTH_UPSTREAMS_GHCR_IO_PASSWORD": "s3cret", "BERTH_UPSTREAMS_127_0_0_1_5999_PASSWORD": "p2"])
        XCTAssertEqual(c.upstreams.map(\.password), ["s3cret", "p2"])
    }
}

final class UpstreamURLsConfigTests: XCTestCase {
    func testURLsListFailoverOrderAndNameFromTheFirst() throws {
        let c = try BerthConfig.parse(yaml: "upstreams:\n  - urls: [\"https://mirror-a.corp\", \"https://mirror-b.corp:8443\"]\n")
        XCTAssertEqual(c.effectiveUpstreams[0].allURLs, ["https://mirror-a.corp", "https://mirror-b.corp:8443"])
        XCTAssertEqual(c.effectiveUpstreams[0].resolvedName, "mirror-a.corp")
    }

    func testURLAndURLsTogetherOrABadOneAreRefused() {
        for (yaml, key) in [("upstreams:\n  - url: https://a.io\n    urls: [https://b.io]\n", "upstreams[0].urls"),
                            ("upstreams:\n  - urls: [https://a.io, \"ftp://b.io\"]\n", "upstreams[0].urls"),
                            ("upstreams:\n  - urls: []\n", "upstreams[0].urls"),
                            ("upstream:\n  urls: [https://a.io]\n", "upstream.urls")] {
            XCTAssertThrowsError(try BerthConfig.parse(yaml: yaml), yaml) { XCTAssertEqual(($0 as? ConfigError)?.key, key, "\($0)") }
        }
    }
}

final class UpstreamHealthConfigTests: XCTestCase {
    func testPerUpstreamTagTTLOfflineBreakerAndNegativeTTL() throws {
        var c = try BerthConfig.parse(yaml: """
        upstreams:
          - url: https://a.io
            tag_ttl: 1h
            offline: true
            breaker_window: 5s
            negative_ttl: 0
          - url: https://b.io
        """)
        XCTAssertEqual(c.upstreams[0].tagTTL, 3600)
        XCTAssertEqual(c.upstreams[0].offline, true)
        XCTAssertEqual(c.upstreams[0].breakerWindow, 5)
        XCTAssertEqual(c.upstreams[0].negativeTTL, 0)
        XCTAssertNil(c.upstreams[1].tagTTL, "cache.tag_ttl applies")
        XCTAssertEqual(c.upstreams[1].breakerWindow, 30)
        XCTAssertFalse(c.offline)
        try c.apply(environment: ["BERTH_OFFLINE": "true"])
        XCTAssertTrue(c.offline)
        XCTAssertThrowsError(try c.apply(environment: ["BERTH_OFFLINE": "yes"]))
        XCTAssertThrowsError(try BerthConfig.parse(yaml: "upstreams:\n  - url: https://a.io\n    offline: maybe\n"))
    }

    func testMaxRequestsAndTheUpstreamDurationsByEnvironment() throws {
        var c = try BerthConfig.parse(yaml: "upstream:\n  max_requests: 8\n  idle_timeout: 1m\n")
        XCTAssertEqual(c.upstream.maxRequests, 8)
        XCTAssertEqual(c.upstream.idleTimeout, 60)
        try c.apply(environment: ["BERTH_UPSTREAM_MAX_REQUESTS": "0", "BERTH_UPSTREAM_CONNECT_TIMEOUT": "2s",
                                  "BERTH_UPSTREAM_BREAKER_WINDOW": "0s", "BERTH_UPSTREAM_BACKOFF_MAX": "90"])
        XCTAssertEqual(c.upstream.maxRequests, 0)
        XCTAssertEqual(c.upstream.connectTimeout, 2)
        XCTAssertEqual(c.upstream.breakerWindow, 0)
        XCTAssertEqual(c.upstream.backoffMax, 90)
        try c.setUpstreamDuration("blob_timeout", "45s")
        XCTAssertEqual(c.upstream.blobTimeout, 45)
        XCTAssertThrowsError(try c.apply(environment: ["BERTH_UPSTREAM_MAX_REQUESTS": "-1"]))
        XCTAssertThrowsError(try c.apply(environment: ["BERTH_UPSTREAM_MANIFEST_TIMEOUT": "soon"])) {
            XCTAssertEqual(($0 as? ConfigError)?.key, "upstream.manifest_timeout")
        }
        XCTAssertEqual(try BerthConfig.parse(yaml: "upstreams:\n  - url: https://a.io\n    proxy: http://10.0.0.1:3128\n").upstreams[0].proxy,
                       "http://10.0.0.1:3128")
        for bad in ["https://p:3128", "http://u:p@p:3128", "http://p:3128/x", "p:3128"] {
            XCTAssertThrowsError(try BerthConfig.parse(yaml: "upstream:\n  proxy: \"\(bad)\"\n"), bad) {
                XCTAssertEqual(($0 as? ConfigError)?.key, "upstream.proxy")
            }
        }
        XCTAssertThrowsError(try BerthConfig.parse(yaml: "upstreams:\n  - url: https://a.io\n    max_requests: -2\n")) {
            XCTAssertEqual(($0 as? ConfigError)?.key, "upstreams[0].max_requests")
        }
    }
}

final class AuthConfigTests: XCTestCase {
    func testAuthSection() throws {
        var c = try BerthConfig.parse(yaml: "auth:\n  htpasswd: /etc/berth/htpasswd\n  anonymous: true\n")
        XCTAssertEqual(c.auth, .init(htpasswd: "/etc/berth/htpasswd", anonymous: true))
        try c.apply(environment: ["BERTH_AUTH_HTPASSWD": "/run/h", "BERTH_AUTH_ANONYMOUS": "false"])
        XCTAssertEqual(c.auth, .init(htpasswd: "/run/h", anonymous: false))
    }

    func testRules() throws {
        let c = try BerthConfig.parse(yaml: """
            auth:
              rules:
                - users: [alice, bob]
                  allow: ["docker.io/**"]
                  deny: [docker.io/library/secret]
                - users: ["*"]
                  allow: ["ghcr.io/team/*"]
            """)
        XCTAssertEqual(c.auth.rules, [.init(users: ["alice", "bob"], allow: ["docker.io/**"], deny: ["docker.io/library/secret"]),
                                      .init(users: ["*"], allow: ["ghcr.io/team/*"])])
        let bad: [(String, String)] = [
            ("auth:\n  rules: {users: [a]}\n", "auth.rules"),
            ("auth:\n  rules:\n    - allow: [\"**\"]\n", "auth.rules[0].users"),
            ("auth:\n  rules:\n    - users: [a]\n      allow: [\"Docker.io/**\"]\n", "auth.rules[0]"),
            ("auth:\n  rules:\n    - users: [a]\n      allow: \"**\"\n", "auth.rules[0].allow"),
            ("auth:\n  rules:\n    - users: [a]\n      permit: [\"**\"]\n", "auth.rules[0].permit"),
        ]
        for (yaml, key) in bad {
            XCTAssertThrowsError(try BerthConfig.parse(yaml: yaml), yaml) { XCTAssertEqual(($0 as? ConfigError)?.key, key, "\($0)") }
        }
    }
}
