import Foundation

/// Debian's tinyproxy on a free loopback port, as the HTTP proxy an upstream
/// is reached through. `connectPorts` limits the ports CONNECT may reach
/// (empty: any). Its log records every CONNECT.
public final class TinyProxy {
    public let directory: String
    public private(set) var port: UInt16 = 0
    private var process: Subprocess?
    public var url: String { "http://127.0.0.1:\(port)" }
    public var logPath: String { "\(directory)/tinyproxy.log" }

    public init(connectPorts: [UInt16] = []) throws {
        directory = makeTemporaryDirectory("berth-proxy")
        for _ in 0..<3 {
            port = freeLoopbackPort()
            var conf = """
            Port \(port)
            Listen 127.0.0.1
            Timeout 60
            LogFile "\(logPath)"
            LogLevel Info
            MaxClients 200
            Allow 127.0.0.1

            """
            for p in connectPorts { conf += "ConnectPort \(p)\n" }
            try conf.write(toFile: "\(directory)/tinyproxy.conf", atomically: true, encoding: .utf8)
            let p = try Subprocess(["tinyproxy", "-d", "-c", "\(directory)/tinyproxy.conf"], in: directory)
            let port = self.port
            if waitUntil(10, { !p.isRunning || Self.accepts(port) }), p.isRunning {
                process = p
                return
            }
            p.terminate(grace: 2)
        }
        throw Subprocess.Failure(description: "tinyproxy did not start: \(log.suffix(2000))")
    }

    /// The log so far.
    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// CONNECT requests it received for `authority` (host:port).
    public func connects(to authority: String) -> Int {
        log.components(separatedBy: "\n").filter { $0.contains("CONNECT") && $0.contains("Request") && $0.contains(authority) }.count
    }

    public func stop() {
        process?.terminate(grace: 5)
        process = nil
        try? FileManager.default.removeItem(atPath: directory)
    }

    private static func accepts(_ port: UInt16) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 } }
    }
}
