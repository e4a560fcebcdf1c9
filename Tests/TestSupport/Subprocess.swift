import Foundation

// Shared by the test targets that drive external programs (openssl, curl,
// nginx, docker-registry, skopeo, berth) as real peers.

/// An external program run as a real peer. Output goes to files, never pipes,
/// so a chatty child cannot block on a full pipe; every wait is bounded; only
/// this child is signalled, by its PID.
public final class Subprocess {
    public let process = Process()
    public let arguments: [String]
    public let stdoutPath: String
    public let stderrPath: String

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        public init(description: String) { self.description = description }
    }

    /// What `run` returns: the exit status and the output, read once the child exited.
    public struct Result {
        public let status: Int32
        public let stdoutData: Data
        public let stderr: String
        public var stdout: String { String(decoding: stdoutData, as: UTF8.self) }
        public var exitCode: Int32 { status }
    }

    /// The directories a bare program name is looked up in, in order.
    public static let searchPath = ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"]

    /// Starts `arguments[0]` (an absolute path, or a name looked up in `searchPath`)
    /// with the rest as arguments.
    /// - `stdinPath`: a file read as standard input (else /dev/null).
    /// - `environment`: replaces the inherited environment when given.
    /// - `environmentOverrides`: entries added to (or, with a nil value, removed
    ///   from) `environment`, or the inherited environment when that is nil.
    /// - `logPath`: stdout and stderr both append to that one file.
    public init(_ arguments: [String], in directory: String, stdinPath: String? = nil,
                environment: [String: String]? = nil, environmentOverrides: [String: String?] = [:],
                logPath: String? = nil) throws {
        self.arguments = arguments
        let tag = "\((arguments[0] as NSString).lastPathComponent)-\(UUID().uuidString.prefix(8))"
        stdoutPath = logPath ?? "\(directory)/\(tag).out"
        stderrPath = logPath ?? "\(directory)/\(tag).err"
        for p in Set([stdoutPath, stderrPath]) where !FileManager.default.fileExists(atPath: p) {
            _ = FileManager.default.createFile(atPath: p, contents: nil)
        }
        guard let executable = Subprocess.resolve(arguments[0]) else {
            throw Failure(description: "\(arguments[0]) is not installed")
        }
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = Array(arguments.dropFirst())
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        if environment != nil || !environmentOverrides.isEmpty {
            var env = environment ?? ProcessInfo.processInfo.environment
            for (k, v) in environmentOverrides { env[k] = v }
            process.environment = env
        }
        process.standardInput = stdinPath.flatMap { FileHandle(forReadingAtPath: $0) } ?? FileHandle.nullDevice
        let out = FileHandle(forWritingAtPath: stdoutPath)!
        out.seekToEndOfFile()
        process.standardOutput = out
        if stderrPath == stdoutPath {
            process.standardError = out
        } else {
            let err = FileHandle(forWritingAtPath: stderrPath)!
            err.seekToEndOfFile()
            process.standardError = err
        }
        try process.run()
    }

    /// `name` itself when it is an absolute path to an executable, else the first
    /// executable `name` in `searchPath`; nil when there is none.
    public static func resolve(_ name: String) -> String? {
        if name.hasPrefix("/") { return FileManager.default.isExecutableFile(atPath: name) ? name : nil }
        for dir in searchPath where FileManager.default.isExecutableFile(atPath: "\(dir)/\(name)") {
            return "\(dir)/\(name)"
        }
        return nil
    }

    public var pid: Int32 { process.processIdentifier }
    public var isRunning: Bool { process.isRunning }
    public var stdoutData: Data { FileManager.default.contents(atPath: stdoutPath) ?? Data() }
    public var stdout: String { String(decoding: stdoutData, as: UTF8.self) }
    public var stderr: String { String(decoding: FileManager.default.contents(atPath: stderrPath) ?? Data(), as: UTF8.self) }
    public var exitCode: Int32 { process.terminationStatus }

    /// Waits up to `seconds` for exit; false on timeout (the child still runs).
    public func waitForExit(seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning {
            if Date() > deadline { return false }
            usleep(5_000)
        }
        return true
    }

    /// Polls `stdout` until it contains `text`; bounded.
    public func waitForOutput(_ text: String, seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() <= deadline {
            if stdout.contains(text) { return true }
            if !process.isRunning { return stdout.contains(text) }
            usleep(10_000)
        }
        return false
    }

    /// SIGTERM to this child only (by PID), then SIGKILL if it lingers past `grace` seconds.
    public func terminate(grace: Double = 5) {
        guard process.isRunning else { return }
        kill(pid, SIGTERM)
        if !waitForExit(seconds: grace) {
            kill(pid, SIGKILL)
            _ = waitForExit(seconds: 5)
        }
    }

    /// SIGKILL to this child only (by PID), and waits for it to be gone.
    public func killHard() {
        guard process.isRunning else { return }
        kill(pid, SIGKILL)
        _ = waitForExit(seconds: 10)
    }

    /// Runs to completion within `timeout` seconds and returns the status and
    /// output (the output files are removed). Throws on timeout (after stopping
    /// the child) or, when `check`, on a nonzero exit.
    @discardableResult
    public static func run(_ arguments: [String], in directory: String, stdinPath: String? = nil,
                           environment: [String: String]? = nil, environmentOverrides: [String: String?] = [:],
                           timeout: Double = 30, check: Bool = true) throws -> Result {
        let child = try Subprocess(arguments, in: directory, stdinPath: stdinPath,
                                   environment: environment, environmentOverrides: environmentOverrides)
        defer {
            try? FileManager.default.removeItem(atPath: child.stdoutPath)
            try? FileManager.default.removeItem(atPath: child.stderrPath)
        }
        guard child.waitForExit(seconds: timeout) else {
            child.terminate(grace: 2)
            throw Failure(description: "\(arguments.joined(separator: " ")) timed out after \(timeout) s")
        }
        let result = Result(status: child.exitCode, stdoutData: child.stdoutData, stderr: child.stderr)
        if check && result.status != 0 {
            throw Failure(description: "\(arguments.joined(separator: " ")) exited \(result.status): \(result.stderr)")
        }
        return result
    }
}
