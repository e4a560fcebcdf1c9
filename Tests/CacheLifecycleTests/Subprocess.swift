import Foundation
import XCTest

// A trimmed copy of Tests/BerthAppTests/Subprocess.swift (test targets cannot
// share files without a support target in Package.swift), plus SIGKILL.

/// External programs (docker-registry, curl, skopeo, berth) as real peers.
/// Output goes to files, not pipes, so a chatty child can never block on a
/// full pipe; every wait is bounded; children are signalled by PID only.
final class Subprocess {
    let process = Process()
    let stdoutPath: String
    let stderrPath: String

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// Starts `arguments[0]` (an absolute path, or looked up in /usr/bin, then /usr/sbin, /sbin)
    /// with the rest as arguments. `environment` replaces the inherited one when given.
    init(_ arguments: [String], in directory: String, environment: [String: String]? = nil) throws {
        let tag = "\(arguments[0].split(separator: "/").last ?? "child")-\(UUID().uuidString.prefix(8))"
        stdoutPath = "\(directory)/\(tag).out"
        stderrPath = "\(directory)/\(tag).err"
        _ = FileManager.default.createFile(atPath: stdoutPath, contents: nil)
        _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: Subprocess.resolve(arguments[0]))
        process.arguments = Array(arguments.dropFirst())
        if let environment { process.environment = environment }
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle(forWritingAtPath: stdoutPath)
        process.standardError = FileHandle(forWritingAtPath: stderrPath)
        try process.run()
    }

    static func resolve(_ name: String) -> String {
        if name.hasPrefix("/") { return name }
        for dir in ["/usr/bin", "/usr/sbin", "/sbin", "/bin"] where FileManager.default.isExecutableFile(atPath: "\(dir)/\(name)") {
            return "\(dir)/\(name)"
        }
        return "/usr/bin/\(name)"
    }

    var pid: Int32 { process.processIdentifier }
    var stdout: String { (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    /// Waits up to `seconds` for exit; false on timeout (the child still runs).
    func waitForExit(seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning {
            if Date() > deadline { return false }
            usleep(5_000)
        }
        return true
    }

    /// SIGTERM to this child only (by PID), then SIGKILL if it lingers.
    func terminate() {
        guard process.isRunning else { return }
        kill(pid, SIGTERM)
        if !waitForExit(seconds: 10) {
            kill(pid, SIGKILL)
            _ = waitForExit(seconds: 5)
        }
    }

    /// SIGKILL to this child only (by PID), and waits for it to be gone.
    func killHard() {
        guard process.isRunning else { return }
        kill(pid, SIGKILL)
        _ = waitForExit(seconds: 10)
    }

    /// Runs to completion within `timeout` seconds; returns stdout and stderr,
    /// or throws on timeout or (when `check`) a nonzero exit.
    @discardableResult
    static func run(_ arguments: [String], in directory: String, environment: [String: String]? = nil,
                    timeout: Double = 30, check: Bool = true) throws -> (status: Int32, stdout: String, stderr: String) {
        let child = try Subprocess(arguments, in: directory, environment: environment)
        defer {
            try? FileManager.default.removeItem(atPath: child.stdoutPath)
            try? FileManager.default.removeItem(atPath: child.stderrPath)
        }
        guard child.waitForExit(seconds: timeout) else {
            child.killHard()
            throw Failure(description: "\(arguments.joined(separator: " ")) timed out after \(timeout) s")
        }
        let status = child.process.terminationStatus
        let (out, err) = (child.stdout, child.stderr)
        if check && status != 0 {
            throw Failure(description: "\(arguments.joined(separator: " ")) exited \(status): \(err)")
        }
        return (status, out, err)
    }
}
