import Foundation
import TestSupport

/// The built `berth` binary run as the system under test: a free loopback
/// port, a temp cache dir (kept across `restart`), readiness by `/healthz`,
/// stop by SIGTERM to its PID.
final class BerthProcess {
    let upstream: String
    let cacheDir: String
    let directory: String
    let arguments: [String]
    let environment: [String: String?]
    let workers: Int
    private(set) var port: UInt16 = 0
    private var process: Subprocess?
    var logPath: String { "\(directory)/berth.log" }
    var hostPort: String { "127.0.0.1:\(port)" }
    var url: String { "http://127.0.0.1:\(port)" }
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// `arguments` are extra flags (`--tag-ttl 0s`, `--upstream-user u`); `environment` extra variables;
    /// `port` one chosen beforehand (a cluster's nodes name each other), else a free one.
    init(upstream: String, arguments: [String] = [], environment: [String: String?] = [:], workers: Int = 2, port fixed: UInt16? = nil) throws {
        self.upstream = upstream
        self.workers = workers
        self.arguments = arguments
        self.environment = environment
        directory = makeTemporaryDirectory("berth-proc")
        cacheDir = directory + "/cache"
        var lastError: Error?
        for _ in 0..<(fixed == nil ? 3 : 1) {
            port = fixed ?? freeLoopbackPort()
            do { try start(); return } catch { lastError = error }
        }
        throw lastError!
    }

    /// The `berth` executable next to the test bundle (`.build/<triple>/debug/`),
    /// or `BERTH_BINARY`, or `.build/debug/berth` under the package root.
    static let binaryPath: String? = {
        let fm = FileManager.default
        if let p = ProcessInfo.processInfo.environment["BERTH_BINARY"], fm.isExecutableFile(atPath: p) { return p }
        var starts = [Bundle.main.bundleURL, URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()]
        for bundle in Bundle.allBundles where bundle.bundleURL.pathExtension == "xctest" {
            starts.append(bundle.bundleURL.deletingLastPathComponent())
        }
        for start in starts {
            var dir = start.resolvingSymlinksInPath()
            for _ in 0..<3 {
                let candidate = dir.appendingPathComponent("berth").path
                var isDir: ObjCBool = false
                if fm.fileExists(atPath: candidate, isDirectory: &isDir), !isDir.boolValue, fm.isExecutableFile(atPath: candidate) {
                    return candidate
                }
                dir.deleteLastPathComponent()
            }
        }
        // Tests/MirrorIntegrationTests/BerthProcess.swift → package root.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let fallback = root.appendingPathComponent(".build/debug/berth").path
        return fm.isExecutableFile(atPath: fallback) ? fallback : nil
    }()

    /// Starts berth and waits (≤ 10 s) for `/healthz`.
    func start() throws {
        guard process == nil else { return }
        guard let binary = BerthProcess.binaryPath else {
            throw Subprocess.Failure(description: "berth binary not found: run `swift build --build-tests` first")
        }
        var env = environment
        // The tests control the upstream settings; none may leak in from the environment.
        for k in ProcessInfo.processInfo.environment.keys where k.hasPrefix("BERTH_") && environment[k] == nil { env[k] = .some(nil) }
        let args = [binary, "serve", "--listen", hostPort] + (upstream.isEmpty ? [] : ["--upstream", upstream]) + ["--cache-dir", cacheDir,
                    "--workers", String(workers), "--log-level", "debug"] + arguments
        let p = try Subprocess(args, in: directory, environmentOverrides: env, logPath: logPath)
        process = p
        let ready = waitUntil(10) { !p.isRunning || probeStatus(port: port, path: "/healthz") == 200 }
        guard ready, p.isRunning else {
            p.terminate(grace: 2)
            process = nil
            throw Subprocess.Failure(description: "berth did not become healthy on \(port): \(log.suffix(2000))")
        }
    }

    /// SIGTERM by PID; waits for the graceful stop (bounded), SIGKILL after.
    func stop() {
        process?.terminate(grace: 20)
        process = nil
    }

    /// The running berth's PID, nil when none runs.
    var pid: Int32? { process.flatMap { $0.isRunning ? $0.pid : nil } }
    var isRunning: Bool { process?.isRunning ?? false }

    /// SIGKILL to this berth's PID (a crash: no graceful stop), then waits until it is gone.
    func killHard() {
        process?.killHard()
        process = nil
    }

    /// Stop, then start on the same port with the same cache dir.
    func restart() throws {
        stop()
        try start()
    }

    func remove() {
        stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    // MARK: the cache on disk

    func cachedBlobPath(_ digest: String) -> String {
        let hex = digest.hasPrefix("sha256:") ? String(digest.dropFirst(7)) : digest
        return "\(cacheDir)/blobs/sha256/\(hex.prefix(2))/\(hex)"
    }

    func isCached(_ digest: String) -> Bool { FileManager.default.fileExists(atPath: cachedBlobPath(digest)) }

    /// Temp fills still under `<cache>/tmp`.
    func partialFiles() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: cacheDir + "/tmp")) ?? []).filter { $0.hasSuffix(".partial") }
    }
}
