import Foundation
import XCTest
@testable import BerthApp
import TestSupport

/// `conf/berth.yaml` documents the embedded defaults; bad values are refused
/// with the key that holds them; the environment overrides the file.
final class BerthConfigTests: XCTestCase {
    /// The repository's `conf/berth.yaml`, found from this file's path.
    static var shippedConfigPath: String {
        URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent()  // BerthAppTests
            .deletingLastPathComponent()  // Tests
            .deletingLastPathComponent()  // package root
            .appendingPathComponent("conf/berth.yaml").path
    }

    private func assertRefused(_ yaml: String, key: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try BerthConfig.parse(yaml: yaml), file: file, line: line) { error in
            guard let e = error as? ConfigError else { return XCTFail("not a ConfigError: \(error)", file: file, line: line) }
            XCTAssertEqual(e.key, key, "\(e)", file: file, line: line)
            XCTAssertTrue(e.description.contains(key), file: file, line: line)
        }
    }

    func testShippedFileIsExactlyTheEmbeddedDefaults() throws {
        let text = try String(contentsOfFile: Self.shippedConfigPath, encoding: .utf8)
        let parsed = try BerthConfig.parse(yaml: text)
        XCTAssertEqual(parsed, BerthConfig())
        // And the defaults are the documented ones.
        XCTAssertEqual(parsed.listen, ":5000")
        XCTAssertEqual(parsed.tls.listen, "")
        XCTAssertEqual(parsed.workers, 0)
        XCTAssertEqual(parsed.log.level, "info")
    }

    func testEveryKeyIsRead() throws {
        let c = try BerthConfig.parse(yaml: """
        listen: "127.0.0.1:6000"
        workers: 3
        tls:
          listen: "[::1]:6443"
          certificate: /etc/berth/cert.pem
          key: /etc/berth/key.pem
        log:
          level: debug
        """)
        XCTAssertEqual(c.listen, "127.0.0.1:6000")
        XCTAssertEqual(c.workers, 3)
        XCTAssertEqual(c.tls.listen, "[::1]:6443")
        XCTAssertEqual(c.tls.certificate, "/etc/berth/cert.pem")
        XCTAssertEqual(c.tls.key, "/etc/berth/key.pem")
        XCTAssertEqual(c.log.level, "debug")
    }

    func testEmptyFileIsTheDefaults() throws {
        XCTAssertEqual(try BerthConfig.parse(yaml: ""), BerthConfig())
        XCTAssertEqual(try BerthConfig.parse(yaml: "# only a comment\n"), BerthConfig())
    }

    func testUnknownKeysNameTheKey() {
        assertRefused("colour: blue\n", key: "colour")
        assertRefused("tls:\n  cert: x.pem\n", key: "tls.cert")
        assertRefused("log:\n  format: json\n", key: "log.format")
    }

    func testBadListenAddress() {
        assertRefused("listen: nowhere\n", key: "listen")
        assertRefused("listen: \"127.0.0.1\"\n", key: "listen")
        assertRefused("listen: \"127.0.0.1:99999\"\n", key: "listen")
        assertRefused("tls:\n  listen: \"localhost:5443\"\n  certificate: c.pem\n  key: k.pem\n", key: "tls.listen")
    }

    func testPeers() throws {
        let c = try BerthConfig.parse(yaml: "peers: [\"10.0.0.11:5000\", berth-1.berth-nodes:5000, \"[fd00::13]:5000\", \"http://10.0.0.14:5001/\"]\n")
        XCTAssertEqual(c.peers.count, 4)
        XCTAssertEqual(BerthConfig.peerHostPort(c.peers[1])?.host, "berth-1.berth-nodes")
        XCTAssertEqual(BerthConfig.peerHostPort(c.peers[2])?.host, "fd00::13")
        XCTAssertEqual(BerthConfig.peerHostPort(c.peers[3])?.port, 5001)
        for bad in ["10.0.0.11", "a b:5000", "x:0", "x:70000", ":5000", "user@x:5000", "https://x:5000"] {
            assertRefused("peers: [\"\(bad)\"]\n", key: "peers")
        }
        assertRefused("peers: 10.0.0.11:5000\n", key: "peers")
        var e = BerthConfig()
        try e.apply(environment: ["BERTH_PEERS": "10.0.0.11:5000, 10.0.0.12:5000,"])
        XCTAssertEqual(e.peers, ["10.0.0.11:5000", "10.0.0.12:5000"])
    }

    func testBadLogLevel() {
        assertRefused("log:\n  level: loud\n", key: "log.level")
    }

    func testBadWorkers() {
        assertRefused("workers: many\n", key: "workers")
        assertRefused("workers: 1000\n", key: "workers")
        assertRefused("workers: -1\n", key: "workers")
    }

    func testTLSListenWithoutCertificate() {
        assertRefused("tls:\n  listen: \":5443\"\n", key: "tls.certificate")
        assertRefused("tls:\n  listen: \":5443\"\n  certificate: c.pem\n", key: "tls.key")
    }

    func testSectionThatIsNotAMapping() {
        assertRefused("tls: yes\n", key: "tls")
    }

    func testPreloadSection() throws {
        let c = try BerthConfig.parse(yaml: "preload:\n  images: [library/alpine:3.20, ghcr.io/org/app@sha256:\(String(repeating: "a", count: 64))]\n  platforms: [linux/arm64/v8]\n")
        XCTAssertEqual(c.preload.images.count, 2)
        XCTAssertEqual(c.preload.platforms, ["linux/arm64/v8"])
        assertRefused("preload:\n  images: [\"Not An Image\"]\n", key: "preload.images")
        assertRefused("preload:\n  platforms: [arm64]\n", key: "preload.platforms")
        assertRefused("preload:\n  image: [a]\n", key: "preload.image")
    }

    func testInvalidYAML() {
        assertRefused("listen: [unclosed\n", key: "(file)")
    }

    /// Found by Fuzz/ `config`: Yams traps on a mapping key that is not a scalar; Berth crashed on such a file.
    func testMappingKeysThatAreNotNamesAreRefusedNotACrash() {
        assertRefused("? [a, b]\n: 1\n", key: "(file)")
        assertRefused("tls:\n  ? {x: 1}\n  : 2\n", key: "(file)")
        assertRefused("- ? [a]\n  : b\n", key: "(file)")
    }

    /// Found by Fuzz/ `config`: 7 KB of nested `? ` complex keys kept Yams' duplicate check busy for
    /// minutes. Complex keys are refused before Yams parses; plain configurations are untouched.
    func testComplexKeysAreRefusedBeforeYamsParses() throws {
        let seed = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fuzz/corpus/config/seed-6-complex-keys-timeout").path
        let slow = String(decoding: try XCTUnwrap(FileManager.default.contents(atPath: seed)), as: UTF8.self)
        assertRefused(slow, key: "(file)")
        for bad in ["? a\n: 1\n", "x:\n  - ? a\n    : b\n", "{? a : b}\n", "[a, b]: 1\n", "x: {[a]: b}\n", "{a: 1}: 2\n"] {
            XCTAssertTrue(BerthConfig.hasComplexKey(bad), bad)
        }
        for fine in ["listen: \":5000\"  # [a]: b\n", "images: [a, b]\nplatforms: []\n", "password: \"x]: ? y\"\n", "q: what?\n",
                     "auth:\n  rules:\n    - {users: [\"*\"], allow: [\"docker.io/**\"]}\n", "a: 'it''s]: fine'\n"] {
            XCTAssertFalse(BerthConfig.hasComplexKey(fine), fine)
        }
        XCTAssertFalse(BerthConfig.hasComplexKey(try String(contentsOfFile: Self.shippedConfigPath, encoding: .utf8)))
    }

    /// Found by Fuzz/ `config`: Yams reads `6999999999999074147:47:31` as a YAML 1.1 base-60
    /// integer and traps on the overflow. Numbers are decimal (or 0x hex) here; others are text.
    func testSexagesimalAndOverflowingNumbersAreRefusedNotACrash() throws {
        assertRefused("server:\n  max_connections_per_client: 6999999999999074147:47:31\n", key: "server.max_connections_per_client")
        assertRefused("server:\n  max_connections_per_client: 99999999999999999999999\n", key: "server.max_connections_per_client")
        assertRefused("server:\n  max_connections_per_client: 1:30\n", key: "server.max_connections_per_client")
        XCTAssertEqual(try BerthConfig.parse(yaml: "server:\n  max_connections_per_client: 0x10\n").server.maxConnectionsPerClient, 16)
        assertRefused("server:\n  max_connections_per_client: -3\n", key: "server.max_connections_per_client")
        XCTAssertEqual(try BerthConfig.parse(yaml: "cache:\n  dir: 2001-12-14\n").cache.dir, "2001-12-14", "no timestamp type either")
    }

    /// Found by Fuzz/ `config`: a bare "-66" parsed as a duration of -66 s; as nanoseconds
    /// (`UInt64(seconds * 1e9)`) that, "inf" or "nan" traps at start.
    func testDurationsAreFiniteAndNotNegative() throws {
        for bad in ["-66", "-1s", "inf", "nan", "1e300", "-0.5m", "11000d", "400000h"] {
            XCTAssertThrowsError(try BerthConfig.parseDuration(bad, key: "k"), bad)
        }
        XCTAssertThrowsError(try BerthConfig.parseDuration(-5, key: "k"))
        XCTAssertThrowsError(try BerthConfig.parseDuration(Double.infinity, key: "k"))
        assertRefused("upstream:\n  connect_timeout: -5\n", key: "upstream.connect_timeout")
        assertRefused("cache:\n  tag_ttl: .inf\n", key: "cache.tag_ttl")
        XCTAssertEqual(try BerthConfig.parseDuration("250ms", key: "k"), 0.25)
        XCTAssertEqual(try BerthConfig.parseDuration("0", key: "k"), 0)
        XCTAssertEqual(try BerthConfig.parseDuration("2h", key: "k"), 7200)
        XCTAssertEqual(try BerthConfig.parseDuration(90, key: "k"), 90)
    }

    func testEnvironmentOverridesFile() throws {
        var c = try BerthConfig.parse(yaml: """
        listen: "127.0.0.1:6000"
        workers: 3
        log:
          level: debug
        """)
        try c.apply(environment: [
            "BERTH_LISTEN": "127.0.0.1:7000",
            "BERTH_LOG_LEVEL": "warning",
            "BERTH_TLS_LISTEN": "127.0.0.1:7443",
            "BERTH_TLS_CERTIFICATE": "/c.pem",
            "BERTH_TLS_KEY": "/k.pem",
            "UNRELATED": "x",
        ])
        XCTAssertEqual(c.listen, "127.0.0.1:7000")
        XCTAssertEqual(c.log.level, "warning")
        XCTAssertEqual(c.workers, 3, "a key the environment does not name keeps the file's value")
        XCTAssertEqual(c.tls.listen, "127.0.0.1:7443")
        XCTAssertEqual(c.tls.certificate, "/c.pem")
        XCTAssertEqual(c.tls.key, "/k.pem")
        try c.apply(environment: ["BERTH_WORKERS": "2"])
        XCTAssertEqual(c.workers, 2)
    }

    func testAccessLogAndDrainDelay() throws {
        XCTAssertEqual(BerthConfig().log.access, "off")
        XCTAssertEqual(BerthConfig().server.drainDelay, 2)
        var c = try BerthConfig.parse(yaml: "log:\n  access: /var/log/berth/access.log\nserver:\n  drain_delay: 500ms\n")
        XCTAssertEqual(c.log.access, "/var/log/berth/access.log")
        XCTAssertEqual(c.server.drainDelay, 0.5)
        XCTAssertEqual(try BerthConfig.parse(yaml: "log:\n  access: off\n").log.access, "off", "YAML's bare off (false) is off")
        try c.apply(environment: ["BERTH_LOG_ACCESS": "stdout", "BERTH_SERVER_DRAIN_DELAY": "5s"])
        XCTAssertEqual(c.log.access, "stdout")
        XCTAssertEqual(c.server.drainDelay, 5)
        assertRefused("log:\n  access: \"\"\n", key: "log.access")
        assertRefused("log:\n  access: true\n", key: "log.access")
        assertRefused("server:\n  drain_delay: -1s\n", key: "server.drain_delay")
    }

    func testMetricsListenIsOffByDefaultAndAnAddressOfItsOwn() throws {
        XCTAssertEqual(BerthConfig().metrics.listen, "")
        var c = try BerthConfig.parse(yaml: "metrics:\n  listen: 127.0.0.1:9090\n")
        XCTAssertEqual(c.metrics.listen, "127.0.0.1:9090")
        try c.apply(environment: ["BERTH_METRICS_LISTEN": ":9100"])
        XCTAssertEqual(c.metrics.listen, ":9100")
        assertRefused("metrics:\n  listen: nowhere\n", key: "metrics.listen")
        assertRefused("listen: :5000\nmetrics:\n  listen: :5000\n", key: "metrics.listen")
        assertRefused("metrics:\n  port: 9090\n", key: "metrics.port")
    }

    func testRestartOnlyChangesAreNamedAndReloadableOnesAreNot() throws {
        let running = try BerthConfig.parse(yaml: "listen: :5000\ncache:\n  tag_ttl: 5m\n")
        var next = running
        next.upstream.url = "https://ghcr.io"
        next.cache.tagTTL = 60
        next.auth.htpasswd = "/etc/berth/htpasswd"
        next.server.drainDelay = 1
        next.server.maxConnectionsPerClient = 8
        next.log.level = "debug"
        next.peers = ["10.0.0.11:5000"]
        XCTAssertEqual(running.restartOnlyChanges(to: next), [], "upstreams, tag_ttl, auth, server limits, log level and peers reload")
        next.listen = ":6000"
        next.cache.maxSize = "1GiB"
        next.metrics.listen = ":9090"
        next.log.access = "stdout"
        XCTAssertEqual(running.restartOnlyChanges(to: next), ["listen", "cache", "metrics", "log.access"])
    }

    func testServerLimits() throws {
        let d = BerthConfig()
        XCTAssertEqual(d.server.headerTimeout, 20)
        XCTAssertEqual(d.server.keepaliveTimeout, 60)
        XCTAssertEqual(d.server.maxConnections, 0, "auto")
        XCTAssertEqual(d.server.maxConnectionsPerClient, 1024)
        var c = try BerthConfig.parse(yaml: """
        server:
          header_timeout: 5s
          keepalive_timeout: 2m
          max_connections: 5000
          max_connections_per_client: 0
        """)
        XCTAssertEqual(c.server.headerTimeout, 5)
        XCTAssertEqual(c.server.keepaliveTimeout, 120)
        XCTAssertEqual(c.server.maxConnections, 5000)
        XCTAssertEqual(c.server.maxConnectionsPerClient, 0)
        XCTAssertEqual(try BerthConfig.parse(yaml: "server:\n  max_connections: auto\n").server.maxConnections, 0)
        try c.apply(environment: [
            "BERTH_SERVER_HEADER_TIMEOUT": "750ms",
            "BERTH_SERVER_KEEPALIVE_TIMEOUT": "75",
            "BERTH_SERVER_MAX_CONNECTIONS": "auto",
            "BERTH_SERVER_MAX_CONNECTIONS_PER_CLIENT": "64",
        ])
        XCTAssertEqual(c.server.headerTimeout, 0.75)
        XCTAssertEqual(c.server.keepaliveTimeout, 75)
        XCTAssertEqual(c.server.maxConnections, 0)
        XCTAssertEqual(c.server.maxConnectionsPerClient, 64)
    }

    func testBadServerLimitsNameTheKey() {
        assertRefused("server:\n  header_timeout: 0s\n", key: "server.header_timeout")
        assertRefused("server:\n  header_timeout: soon\n", key: "server.header_timeout")
        assertRefused("server:\n  keepalive_timeout: 0\n", key: "server.keepalive_timeout")
        assertRefused("server:\n  max_connections: 0\n", key: "server.max_connections")
        assertRefused("server:\n  max_connections: lots\n", key: "server.max_connections")
        assertRefused("server:\n  max_connections_per_client: -1\n", key: "server.max_connections_per_client")
        assertRefused("server:\n  client_header_timeout: 5s\n", key: "server.client_header_timeout")
        var c = BerthConfig()
        XCTAssertThrowsError(try c.apply(environment: ["BERTH_SERVER_MAX_CONNECTIONS_PER_CLIENT": "many"])) { e in
            XCTAssertEqual((e as? ConfigError)?.key, "server.max_connections_per_client")
        }
        XCTAssertThrowsError(try c.apply(environment: ["BERTH_SERVER_MAX_CONNECTIONS": "-3"])) { e in
            XCTAssertEqual((e as? ConfigError)?.key, "server.max_connections")
        }
    }

    func testBadEnvironmentValueNamesTheKey() throws {
        var c = BerthConfig()
        XCTAssertThrowsError(try c.apply(environment: ["BERTH_WORKERS": "two"])) { e in
            XCTAssertEqual((e as? ConfigError)?.key, "workers")
        }
        c = BerthConfig()
        XCTAssertThrowsError(try c.apply(environment: ["BERTH_LOG_LEVEL": "loud"])) { e in
            XCTAssertEqual((e as? ConfigError)?.key, "log.level")
        }
    }
}
