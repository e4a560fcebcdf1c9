import Foundation

/// An external program (docker-registry, skopeo, curl, openssl, berth) run as
/// a real peer. Output goes to files, never pipes, so a chatty child cannot
/// block on a full pipe; every wait is bounded; only this child is signalled,
/// by its PID.
final class Subprocess {
    let process = Process()
    let arguments: [String]
    let stdoutPath: String
    let stderrPath: String

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// Starts `arguments[0]` (an absolute path, or a name looked up in the usual
    /// bin directories) with the rest as arguments. `environment` entries are
    /// added to (or, with a nil value, removed from) this process's environment.
    /// With `logPath`, stdout and stderr both append to that one file.
    init(_ arguments: [String], in directory: String, environment: [String: String?] = [:], logPath: String? = nil) throws {
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
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        process.standardInput = FileHandle.nullDevice
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

    static func resolve(_ name: String) -> String? {
        if name.hasPrefix("/") { return FileManager.default.isExecutableFile(atPath: name) ? name : nil }
        for dir in ["/usr/bin", "/bin", "/usr/sbin", "/usr/local/bin"] where FileManager.default.isExecutableFile(atPath: "\(dir)/\(name)") {
            return "\(dir)/\(name)"
        }
        return nil
    }

    var pid: Int32 { process.processIdentifier }
    var isRunning: Bool { process.isRunning }
    var stdoutData: Data { FileManager.default.contents(atPath: stdoutPath) ?? Data() }
    var stdout: String { String(decoding: stdoutData, as: UTF8.self) }
    var stderr: String { String(decoding: FileManager.default.contents(atPath: stderrPath) ?? Data(), as: UTF8.self) }
    var exitCode: Int32 { process.terminationStatus }

    /// Waits up to `seconds` for exit; false on timeout (the child still runs).
    func waitForExit(seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning {
            if Date() > deadline { return false }
            usleep(5_000)
        }
        return true
    }

    /// SIGTERM to this child only (by PID), then SIGKILL if it lingers past `grace` seconds.
    func terminate(grace: Double = 10) {
        guard process.isRunning else { return }
        kill(pid, SIGTERM)
        if !waitForExit(seconds: grace) {
            kill(pid, SIGKILL)
            _ = waitForExit(seconds: 5)
        }
    }

    /// Runs to completion within `timeout` seconds. Throws on timeout (after
    /// killing the child) or, when `check`, on a nonzero exit.
    @discardableResult
    static func run(_ arguments: [String], in directory: String, environment: [String: String?] = [:],
                    timeout: Double = 60, check: Bool = true) throws -> Subprocess {
        let child = try Subprocess(arguments, in: directory, environment: environment)
        guard child.waitForExit(seconds: timeout) else {
            child.terminate(grace: 2)
            throw Failure(description: "\(arguments.joined(separator: " ")) timed out after \(timeout) s")
        }
        if check && child.exitCode != 0 {
            throw Failure(description: "\(arguments.joined(separator: " ")) exited \(child.exitCode): \(child.stderr)")
        }
        return child
    }
}
