import Foundation
import XCTest
import TestSupport

/// podman and containerd as a test starts them: everything under the work
/// directory, nothing global read or written (but the empty
/// /run/containers/networks podman 4.3 creates as root).
extension IntegrationTestCase {
    /// The podman command prefix and environment for `registriesConf`, with
    /// mirror credentials from `authFile` (podman never sends `--creds` to a mirror).
    func podman(registriesConf: String, authFile: String? = nil) throws -> (args: [String], env: [String: String?]) {
        let storageConf = "\(workDir!)/storage.conf"
        try "[storage]\ndriver = \"vfs\"\nrunroot = \"\(workDir!)/podman-run\"\ngraphroot = \"\(workDir!)/podman-root\"\n".write(toFile: storageConf, atomically: true, encoding: .utf8)
        let args = ["podman", "--root", "\(workDir!)/podman-root", "--runroot", "\(workDir!)/podman-run",
                    "--tmpdir", "\(workDir!)/podman-tmp", "--storage-driver", "vfs", "--events-backend", "file",
                    "--cgroup-manager", "cgroupfs", "--network-config-dir", "\(workDir!)/podman-networks"]
        var env: [String: String?] = ["CONTAINERS_REGISTRIES_CONF": registriesConf, "CONTAINERS_CONF": "/dev/null",
                                      "CONTAINERS_STORAGE_CONF": storageConf]
        if let authFile { env["REGISTRY_AUTH_FILE"] = authFile }
        return (args, env)
    }

    /// `podman pull` of `reference` (skipped when the sandbox refuses podman); its digest afterwards.
    func podmanPull(_ reference: String, registriesConf: String, authFile: String? = nil) throws -> String {
        let (podman, env) = try podman(registriesConf: registriesConf, authFile: authFile)
        let policy = "\(workDir!)/policy.json"
        try #"{"default": [{"type": "insecureAcceptAnything"}]}"#.write(toFile: policy, atomically: true, encoding: .utf8)
        let pull = try Subprocess.run(podman + ["pull", "--signature-policy", policy, reference], in: workDir,
                                      environmentOverrides: env, timeout: 120, check: false)
        if pull.status != 0, let reason = sandboxRefusal(pull.stderr) { throw XCTSkip("podman cannot run here: \(reason)") }
        XCTAssertEqual(pull.status, 0, pull.stdout + pull.stderr)
        let inspect = try Subprocess.run(podman + ["image", "inspect", "--format", "{{.Digest}}", reference], in: workDir,
                                         environmentOverrides: env, timeout: 60, check: false)
        return inspect.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Writes each `hosts.toml` that `berth client-config containerd` printed where
    /// its comment says, under `dir` instead of /etc/containerd/certs.d; the registries named.
    func writeHostsFiles(_ generated: String, under dir: String) throws -> Set<String> {
        var current: String?
        var files: [String: String] = [:]
        for line in generated.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("# /etc/containerd/certs.d/"), line.hasSuffix("/hosts.toml") {
                current = String(line.dropFirst("# /etc/containerd/certs.d/".count).dropLast("/hosts.toml".count))
            } else if let c = current {
                files[c, default: ""] += line + "\n"
            }
        }
        for (registry, text) in files {
            try FileManager.default.createDirectory(atPath: "\(dir)/\(registry)", withIntermediateDirectories: true)
            try text.write(toFile: "\(dir)/\(registry)/hosts.toml", atomically: true, encoding: .utf8)
        }
        return Set(files.keys)
    }

    /// A containerd 1.6 daemon of the test's own (root, state and socket under the
    /// work directory, CRI off), stopped at cleanup; the `ctr` prefix that talks to it.
    func startContainerd() throws -> [String] {
        let socket = "\(workDir!)/containerd.sock"
        try """
        version = 2
        root = "\(workDir!)/containerd-root"
        state = "\(workDir!)/containerd-state"
        disabled_plugins = ["io.containerd.grpc.v1.cri"]
        [grpc]
          address = "\(socket)"
        """.write(toFile: "\(workDir!)/containerd.toml", atomically: true, encoding: .utf8)
        let daemon = try Subprocess(["containerd", "--config", "\(workDir!)/containerd.toml"], in: workDir,
                                    logPath: "\(workDir!)/containerd.log")
        cleanups.append { daemon.terminate(grace: 5) }
        let ctr = ["ctr", "--address", socket, "--namespace", "berth-test"]
        XCTAssertTrue(waitUntil(15) { (try? Subprocess.run(ctr + ["version"], in: self.workDir, timeout: 10, check: false))?.status == 0 },
                      "containerd did not start")
        return ctr
    }
}

/// A podman failure that is the sandbox's, not Berth's (no user namespaces, no mounts…).
func sandboxRefusal(_ stderr: String) -> String? {
    for marker in ["operation not permitted", "cannot set up namespace", "permission denied", "read-only file system"]
    where stderr.lowercased().contains(marker) {
        return stderr.split(separator: "\n").first { $0.lowercased().contains(marker) }.map(String.init) ?? marker
    }
    return nil
}
