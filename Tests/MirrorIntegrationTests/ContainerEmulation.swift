import Foundation
import XCTest
import Yams
import TestSupport

// Deployment files for engines that do not run here (Docker, Kubernetes):
// their YAML and Dockerfile read as data, and a container's process run as
// the engine would start it — its exact command line and environment, as its
// user, with the container paths it names mapped to directories of the test.

/// The package root (this file is Tests/MirrorIntegrationTests/ContainerEmulation.swift).
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

// MARK: - YAML

/// Every document of a YAML file; each must be a mapping.
func yamlDocuments(_ path: String) throws -> [[String: Any]] {
    let text = try String(contentsOfFile: path, encoding: .utf8)
    return try Yams.load_all(yaml: text).enumerated().map { i, doc in
        guard let map = doc as? [String: Any] else {
            throw Subprocess.Failure(description: "\(path): document \(i + 1) is not a mapping")
        }
        return map
    }
}

/// `value` at a dotted path of mapping keys ("spec.template.spec"), nil when any step is missing.
func yamlValue(_ value: Any?, _ path: String) -> Any? {
    path.split(separator: ".").reduce(value) { ($0 as? [String: Any])?[String($1)] }
}

func yamlString(_ value: Any?, _ path: String) -> String? { yamlValue(value, path) as? String }
func yamlMap(_ value: Any?, _ path: String) -> [String: Any] { yamlValue(value, path) as? [String: Any] ?? [:] }
func yamlList(_ value: Any?, _ path: String) -> [[String: Any]] { yamlValue(value, path) as? [[String: Any]] ?? [] }

// MARK: - Dockerfile

/// A Dockerfile's stages, each a list of instructions (continuation lines joined, comments dropped).
struct Dockerfile {
    struct Stage {
        var from: String
        var instructions: [(keyword: String, arguments: String)] = []

        func arguments(of keyword: String) -> [String] { instructions.filter { $0.keyword == keyword }.map(\.arguments) }

        /// The last ENTRYPOINT or CMD, exec form (a JSON array) or shell form (`/bin/sh -c …`).
        func command(_ keyword: String) -> [String]? {
            guard let text = arguments(of: keyword).last else { return nil }
            if text.hasPrefix("["), let list = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String] { return list }
            return ["/bin/sh", "-c", text]
        }

        /// ENV, in order: `K=V K2="V 2"` or the legacy `K V`.
        var environment: [(String, String)] {
            arguments(of: "ENV").flatMap { text -> [(String, String)] in
                guard text.contains("=") else {
                    let kv = text.split(separator: " ", maxSplits: 1)
                    return [(String(kv[0]), kv.count > 1 ? String(kv[1]) : "")]
                }
                return shellWords(text).map { word in
                    let kv = word.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                    return (String(kv[0]), kv.count > 1 ? String(kv[1]) : "")
                }
            }
        }

        /// COPY instructions: the stage copied from (nil: the build context), sources, destination.
        var copies: [(stage: String?, sources: [String], destination: String)] {
            arguments(of: "COPY").map { text in
                var words = shellWords(text)
                var stage: String?
                while let flag = words.first, flag.hasPrefix("--") {
                    if flag.hasPrefix("--from=") { stage = String(flag.dropFirst(7)) }
                    words.removeFirst()
                }
                return (stage, Array(words.dropLast()), words.last ?? "")
            }
        }
    }

    let stages: [Stage]
    var final: Stage { stages[stages.count - 1] }

    init(path: String) throws {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        var logical: [String] = []
        var pending = ""
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("#") || (line.isEmpty && pending.isEmpty) { continue }
            if line.hasSuffix("\\") { pending += line.dropLast() + " "; continue }
            logical.append(pending + line)
            pending = ""
        }
        var stages: [Stage] = []
        for line in logical where !line.isEmpty {
            let parts = line.split(separator: " ", maxSplits: 1)
            let keyword = parts[0].uppercased()
            let arguments = parts.count > 1 ? parts[1].trimmingCharacters(in: .whitespaces) : ""
            if keyword == "FROM" {
                stages.append(Stage(from: arguments))
            } else {
                guard !stages.isEmpty else { throw Subprocess.Failure(description: "\(path): \(keyword) before FROM") }
                stages[stages.count - 1].instructions.append((keyword, arguments))
            }
        }
        guard !stages.isEmpty else { throw Subprocess.Failure(description: "\(path): no FROM") }
        self.stages = stages
    }
}

/// Splits on spaces, honouring double quotes (enough for ENV and COPY lines).
func shellWords(_ text: String) -> [String] {
    var words: [String] = []
    var current = ""
    var quoted = false
    var started = false
    for c in text {
        if c == "\"" { quoted.toggle(); started = true } else if c == " " && !quoted {
            if started { words.append(current) }
            current = ""
            started = false
        } else { current.append(c); started = true }
    }
    if started { words.append(current) }
    return words
}

// MARK: - a container's filesystem

/// Container paths → host paths: volumes mounted over files the image holds,
/// as a container engine stacks them (a mount hides the image's files below it).
final class ContainerFilesystem {
    private(set) var mounts: [(container: String, host: String, writable: Bool)] = []
    private var imageFiles: [(container: String, host: String)] = []

    func addImageFile(_ container: String, host: String) { imageFiles.append((container, host)) }
    /// Files the test rewrote with host paths, by host path: their text as the container sees it.
    private(set) var containerText: [String: String] = [:]

    /// Writes `text` at `host` with its container paths mapped, remembering the container's view.
    func writeMapped(_ text: String, to host: String) throws {
        containerText[host] = text
        try mapPaths(in: text).write(toFile: host, atomically: true, encoding: .utf8)
    }
    func mount(_ container: String, host: String, writable: Bool) { mounts.append((container, host, writable)) }

    /// The host path of `path` (absolute in the container), nil when neither a mount nor an image file holds it.
    func hostPath(_ path: String) -> String? {
        func under(_ root: String) -> Bool { path == root || path.hasPrefix(root.hasSuffix("/") ? root : root + "/") }
        if let m = mounts.filter({ under($0.container) }).max(by: { $0.container.count < $1.container.count }) {
            return m.host + path.dropFirst(m.container.count)
        }
        return imageFiles.first { $0.container == path }?.host
    }

    /// True when `path` lies on a writable mount (a volume), not in the image.
    func isOnWritableVolume(_ path: String) -> Bool {
        mounts.contains { $0.writable && (path == $0.container || path.hasPrefix($0.container + "/")) }
    }

    /// `text` with every container path it names (a mount's, or an image file's) replaced by its host path.
    func mapPaths(in text: String) -> String {
        let roots = (mounts.map(\.container) + imageFiles.map(\.container)).sorted { $0.count > $1.count }
        guard !roots.isEmpty else { return text }
        let alternatives = roots.map { NSRegularExpression.escapedPattern(for: $0) }.joined(separator: "|")
        let regex = try! NSRegularExpression(pattern: #"(?<![\w./-])(?:"# + alternatives + #")(?![\w.-])(?:/[\w./-]*)?"#)
        var out = text
        let ns = text as NSString
        for match in regex.matches(in: text, range: NSRange(location: 0, length: ns.length)).reversed() {
            let found = ns.substring(with: match.range)
            guard let host = hostPath(found), let range = Range(match.range, in: out) else { continue }
            out.replaceSubrange(range, with: host)
        }
        return out
    }
}

// MARK: - running a container's process

/// A container's process as the engine starts it: `argv` and `environment`
/// exactly (container paths mapped), as `user` (uid, gid) when the test runs
/// as root, in a working directory nobody but root may write.
struct ContainerProcess {
    var argv: [String]
    var environment: [String: String]
    var user: (uid: UInt32, gid: UInt32)?
    /// Supplementary groups (a pod's fsGroup); none otherwise.
    var supplementaryGroups: [UInt32] = []

    /// The launch line: `setpriv` drops to the container's user when the test is root.
    func launchArguments(_ fs: ContainerFilesystem) -> [String] {
        let mapped = argv.map { fs.mapPaths(in: $0) }
        guard let user, geteuid() == 0 else { return mapped }
        let groups = supplementaryGroups.isEmpty ? "--clear-groups" : "--groups=" + supplementaryGroups.map(String.init).joined(separator: ",")
        return ["setpriv", "--reuid=\(user.uid)", "--regid=\(user.gid)", groups, "--"] + mapped
    }

    func launchEnvironment(_ fs: ContainerFilesystem) -> [String: String] {
        var env = ["PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/nonexistent"]
        for (k, v) in environment { env[k] = fs.mapPaths(in: v) }
        return env
    }
}

/// Where a Berth container listens and keeps its cache, read as `berth serve`
/// reads them: flag, else environment, else the config file, else the default.
struct BerthSettings {
    var listen: String
    var listenFlagIndex: Int?
    var cacheDir: String
    /// `metrics.listen` as the container would bind it; nil when off.
    var metricsListen: String?

    init(argv: [String], environment: [String: String], fs: ContainerFilesystem, workingDirectory: String) throws {
        func flag(_ name: String) -> Int? { argv.firstIndex(of: name).map { $0 + 1 }.flatMap { $0 < argv.count ? $0 : nil } }
        var config: [String: Any] = [:]
        if let i = flag("--config") {
            guard let host = fs.hostPath(argv[i]) else { throw Subprocess.Failure(description: "--config \(argv[i]): no such file in the container") }
            let text = try fs.containerText[host] ?? String(contentsOfFile: host, encoding: .utf8)
            config = try Yams.load(yaml: text) as? [String: Any] ?? [:]
        }
        listenFlagIndex = flag("--listen")
        listen = listenFlagIndex.map { argv[$0] } ?? environment["BERTH_LISTEN"] ?? yamlString(config, "listen") ?? ":5000"
        let dir = flag("--cache-dir").map { argv[$0] } ?? environment["BERTH_CACHE_DIR"] ?? yamlString(config, "cache.dir") ?? "./data"
        cacheDir = dir.hasPrefix("/") ? dir : URL(fileURLWithPath: dir, relativeTo: URL(fileURLWithPath: workingDirectory)).standardized.path
        metricsListen = (flag("--metrics-listen").map { argv[$0] } ?? environment["BERTH_METRICS_LISTEN"] ?? yamlString(config, "metrics.listen"))
            .flatMap { $0.isEmpty ? nil : $0 }
    }

    var port: Int? { listen.split(separator: ":").last.flatMap { Int($0) } }
}

/// A Berth container started from its spec by `BerthContainerRun.start`.
final class BerthContainerRun {
    let process: Subprocess
    let port: UInt16
    let settings: BerthSettings
    let fs: ContainerFilesystem

    /// Where its `/metrics` listens once rewritten to a free loopback port; nil when metrics are off.
    private(set) var metricsPort: UInt16?

    private init(process: Subprocess, port: UInt16, settings: BerthSettings, fs: ContainerFilesystem) {
        self.process = process
        self.port = port
        self.settings = settings
        self.fs = fs
    }

    /// Checks that `spec` listens on `containerPort` and caches on a writable
    /// volume, then starts it with only its listen address rewritten to a free
    /// loopback port, and waits (≤ 15 s) for /healthz.
    static func start(_ spec: ContainerProcess, fs: ContainerFilesystem, containerPort: Int, in directory: String,
                      file: StaticString = #filePath, line: UInt = #line) throws -> BerthContainerRun {
        let root = directory + "/rootfs"  // the working directory: "/", read-only for the container's user
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        let settings = try BerthSettings(argv: spec.argv, environment: spec.environment, fs: fs, workingDirectory: "/")
        XCTAssertEqual(settings.port, containerPort, "berth listens on \(settings.listen), the container port is \(containerPort)", file: file, line: line)
        XCTAssertTrue(fs.isOnWritableVolume(settings.cacheDir), "the cache dir \(settings.cacheDir) is not on a volume", file: file, line: line)
        let port = freeLoopbackPort()
        var rewritten = spec
        if let i = settings.listenFlagIndex { rewritten.argv[i] = "127.0.0.1:\(port)" } else { rewritten.environment["BERTH_LISTEN"] = "127.0.0.1:\(port)" }
        // The metrics listener too (the environment overrides the file; a flag would come last, so none is expected).
        let metricsPort = settings.metricsListen.map { _ in freeLoopbackPort() }
        if let metricsPort { rewritten.environment["BERTH_METRICS_LISTEN"] = "127.0.0.1:\(metricsPort)" }
        let p = try Subprocess(rewritten.launchArguments(fs), in: root, environment: rewritten.launchEnvironment(fs),
                               logPath: directory + "/berth-\(port).log")
        var run = BerthContainerRun(process: p, port: port, settings: settings, fs: fs)
        run.metricsPort = metricsPort
        guard waitUntil(15, { !p.isRunning || probeStatus(port: port, path: "/healthz") == 200 }), p.isRunning else {
            p.terminate(grace: 2)
            throw Subprocess.Failure(description: "\(rewritten.launchArguments(fs)) did not become healthy: \(p.stdout.suffix(3000))")
        }
        return run
    }

    var url: String { "http://127.0.0.1:\(port)" }
    var hostCacheDir: String? { fs.hostPath(settings.cacheDir) }

    func stop() { process.terminate(grace: 10) }
}

/// A directory owned by `user` (a volume as the container's user finds it: fsGroup, or the image's `install -d -o`).
func makeVolumeDirectory(_ path: String, owner user: (uid: UInt32, gid: UInt32)?) throws {
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
    if let user, geteuid() == 0 { chown(path, user.uid, user.gid) }
}

/// The image's files the containers use: the berth binary (copied from the
/// build stage) and what COPY takes from the build context.
func imageFilesystem(_ dockerfile: Dockerfile, binary: String) -> ContainerFilesystem {
    let fs = ContainerFilesystem()
    for copy in dockerfile.final.copies {
        if copy.stage != nil {
            if (copy.destination as NSString).lastPathComponent == "berth" { fs.addImageFile(copy.destination, host: binary) }
        } else if copy.sources.count == 1 {
            fs.addImageFile(copy.destination, host: repositoryRoot + "/" + copy.sources[0])
        }
    }
    return fs
}
