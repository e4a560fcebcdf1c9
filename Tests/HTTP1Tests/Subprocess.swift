import Foundation
import XCTest

// A copy of Tests/TLSTests/Subprocess.swift (test targets cannot share
// files without a support target in Package.swift), plus absolute paths.

/// External programs (openssl, curl, nginx) as real peers. Output goes to files,
/// not pipes, so a chatty child can never block on a full pipe; every wait
/// is bounded.
final class Subprocess {
    let process = Process()
    let stdoutPath: String
    let stderrPath: String

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// Starts `arguments[0]` (an absolute path, or looked up in /usr/bin) with the rest as arguments.
    init(_ arguments: [String], in directory: String, stdinPath: String? = nil) throws {
        let tag = "\(arguments[0].split(separator: "/").last ?? "child")-\(UUID().uuidString.prefix(8))"
        stdoutPath = "\(directory)/\(tag).out"
        stderrPath = "\(directory)/\(tag).err"
        _ = FileManager.default.createFile(atPath: stdoutPath, contents: nil)
        _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: arguments[0].hasPrefix("/") ? arguments[0] : "/usr/bin/\(arguments[0])")
        process.arguments = Array(arguments.dropFirst())
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        process.standardInput = stdinPath.flatMap { FileHandle(forReadingAtPath: $0) } ?? FileHandle.nullDevice
        process.standardOutput = FileHandle(forWritingAtPath: stdoutPath)
        process.standardError = FileHandle(forWritingAtPath: stderrPath)
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }
    var stdout: String { (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    /// Waits up to `seconds` for exit; false on timeout (the child still runs).
    func waitForExit(seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning {
            if Date() > deadline { return false }
            usleep(10_000)
        }
        return true
    }

    /// Polls `stdout` until it contains `text`; bounded.
    func waitForOutput(_ text: String, seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() <= deadline {
            if stdout.contains(text) { return true }
            if !process.isRunning { return stdout.contains(text) }
            usleep(10_000)
        }
        return false
    }

    /// SIGTERM to this child only (by PID), then SIGKILL if it lingers.
    func terminate() {
        guard process.isRunning else { return }
        kill(pid, SIGTERM)
        if !waitForExit(seconds: 5) {
            kill(pid, SIGKILL)
            _ = waitForExit(seconds: 5)
        }
    }

    /// Runs to completion within `timeout` seconds; returns stdout and stderr,
    /// or throws on timeout or (when `check`) a nonzero exit.
    @discardableResult
    static func run(_ arguments: [String], in directory: String, stdinPath: String? = nil,
                    timeout: Double = 30, check: Bool = true) throws -> (status: Int32, stdout: String, stderr: String) {
        let child = try Subprocess(arguments, in: directory, stdinPath: stdinPath)
        guard child.waitForExit(seconds: timeout) else {
            child.terminate()
            throw Failure(description: "\(arguments.joined(separator: " ")) timed out after \(timeout) s")
        }
        let status = child.process.terminationStatus
        if check && status != 0 {
            throw Failure(description: "\(arguments.joined(separator: " ")) exited \(status): \(child.stderr)")
        }
        return (status, child.stdout, child.stderr)
    }
}

/// A throwaway PKI made with the openssl CLI: a CA, a server certificate for
/// IP 127.0.0.1 and DNS localhost, a client certificate.
struct TestPKI {
    let directory: String
    var caPath: String { "\(directory)/ca.pem" }
    var serverCertPath: String { "\(directory)/server.pem" }
    var serverKeyPath: String { "\(directory)/server.key" }
    var clientCertPath: String { "\(directory)/client.pem" }
    var clientKeyPath: String { "\(directory)/client.key" }

    static func makeTemporaryDirectory(_ prefix: String) -> String {
        var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
        let path = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(path != nil, "mkdtemp failed")
        return String(cString: path!)
    }

    init() throws {
        directory = TestPKI.makeTemporaryDirectory("berth-tls")
        try Subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Berth Test CA",
                            "-addext", "basicConstraints=critical,CA:TRUE",
                            "-addext", "keyUsage=critical,keyCertSign,cRLSign"], in: directory)
        try issue(name: "server", serial: "0x1001", subject: "/CN=localhost",
                  extensions: "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
        try issue(name: "client", serial: "0x1002", subject: "/CN=berth-test-client",
                  extensions: "extendedKeyUsage=clientAuth\n")
    }

    /// Issues `<name>.pem` / `<name>.key` in `directory`, signed by the CA.
    func issue(name: String, serial: String, subject: String, extensions: String, into target: String? = nil) throws {
        let out = target ?? directory
        let ext = "\(directory)/\(name).ext"
        try ("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n" + extensions)
            .write(toFile: ext, atomically: true, encoding: .utf8)
        try Subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                            "-keyout", "\(out)/\(name).key", "-out", "\(directory)/\(name).csr", "-subj", subject], in: directory)
        try Subprocess.run(["openssl", "x509", "-req", "-in", "\(name).csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                            "-set_serial", serial, "-days", "2", "-extfile", ext, "-out", "\(out)/\(name).pem"], in: directory)
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }
}
