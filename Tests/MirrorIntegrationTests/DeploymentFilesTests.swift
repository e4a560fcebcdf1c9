import Foundation
import XCTest
import TestSupport

/// The shipped deployment files, checked by the tools that read them.
final class DeploymentFilesTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    /// `systemd-analyze verify` warns on stderr (exit 0) about a value it ignores: any warning fails.
    func testSystemdUnitVerifies() throws {
        guard Subprocess.resolve("systemd-analyze") != nil else { throw XCTSkip("systemd-analyze is not installed") }
        let binary = try XCTUnwrap(BerthProcess.binaryPath)
        let unit = try String(contentsOfFile: Self.root + "/conf/systemd/berth.service", encoding: .utf8)
        XCTAssertTrue(unit.contains("ExecStart=/usr/local/bin/berth serve"))
        for key in ["DynamicUser=yes", "ProtectSystem=strict", "StateDirectory=berth", "NoNewPrivileges=yes"] {
            XCTAssertTrue(unit.contains(key), key)
        }
        let dir = makeTemporaryDirectory("berth-unit")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try unit.replacingOccurrences(of: "/usr/local/bin/berth", with: binary).write(toFile: dir + "/berth.service", atomically: true, encoding: .utf8)
        let r = try Subprocess.run(["systemd-analyze", "verify", dir + "/berth.service"], in: dir, timeout: 60, check: false)
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        XCTAssertEqual(r.stderr.trimmingCharacters(in: .whitespacesAndNewlines), "", "no warning")
    }

    func testHAProxyConfigIsValidAsShipped() throws {
        guard Subprocess.resolve("haproxy") != nil else { throw XCTSkip("haproxy is not installed (scripts/deps.sh TEST_PACKAGES)") }
        let r = try Subprocess.run(["haproxy", "-c", "-f", Self.root + "/conf/haproxy/berth.cfg"], in: Self.root, timeout: 30, check: false)
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        XCTAssertFalse((r.stdout + r.stderr).contains("WARNING"), r.stdout + r.stderr)
    }

    /// `nginx -t` on the shipped http-context file, included as Debian's nginx.conf includes conf.d/*.conf
    /// (nginx -t parses and resolves addresses; it binds no port). Any [warn] fails.
    func testNginxConfigIsValidAsShipped() throws {
        guard Subprocess.resolve("nginx") != nil else { throw XCTSkip("nginx is not installed (scripts/deps.sh TEST_PACKAGES)") }
        let dir = makeTemporaryDirectory("berth-nginx-t")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try NginxBalancerTests.mainConfig(including: Self.root + "/conf/nginx/berth.conf", directory: dir)
            .write(toFile: dir + "/nginx.conf", atomically: true, encoding: .utf8)
        let r = try Subprocess.run(["nginx", "-t", "-p", dir + "/", "-e", dir + "/error.log", "-c", dir + "/nginx.conf"], in: dir, timeout: 30, check: false)
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        XCTAssertFalse((r.stdout + r.stderr).contains("[warn]"), r.stdout + r.stderr)
        let shipped = try String(contentsOfFile: Self.root + "/conf/nginx/berth.conf", encoding: .utf8)
        for rule in ["hash $berth_key consistent;", "proxy_buffering off;", "proxy_http_version 1.1;",
                     "proxy_next_upstream error timeout http_502 http_503 http_504;"] {
            XCTAssertTrue(shipped.contains(rule), rule)
        }
    }
}
