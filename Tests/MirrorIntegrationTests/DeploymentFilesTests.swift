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
}
