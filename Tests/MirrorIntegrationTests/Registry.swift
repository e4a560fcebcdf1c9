import Foundation
import TestSupport

/// Debian's `docker-registry` (CNCF Distribution 2.8.2) as Berth's upstream:
/// its own config and filesystem storage in a temp dir, a free loopback port,
/// plain or token auth. Its access log (stdout, captured to a file across
/// restarts) is how tests count upstream requests.
final class Registry {
    enum Auth {
        case none
        /// Distribution's `auth: token:`; `rootCertBundle` verifies the tokens' `x5c`.
        case token(realm: String, service: String, issuer: String, rootCertBundle: String)
    }

    /// One access-log line: `"GET /v2/… HTTP/1.1" 200`.
    struct Request {
        let method: String
        let path: String
        let status: Int
    }

    let directory: String
    let auth: Auth
    private(set) var port: UInt16 = 0
    private var process: Subprocess?
    var logPath: String { "\(directory)/registry.log" }
    var url: String { "http://127.0.0.1:\(port)" }
    var hostPort: String { "127.0.0.1:\(port)" }

    init(auth: Auth = .none) throws {
        directory = makeTemporaryDirectory("berth-reg")
        self.auth = auth
        var lastError: Error?
        for _ in 0..<3 {
            port = freeLoopbackPort()
            do {
                try writeConfig()
                try start()
                return
            } catch {
                lastError = error
                stop()
            }
        }
        throw lastError!
    }

    private func writeConfig() throws {
        var yaml = """
        version: 0.1
        log:
          level: info
          accesslog:
            disabled: false
        storage:
          filesystem:
            rootdirectory: \(directory)/storage
          delete:
            enabled: true
        http:
          addr: 127.0.0.1:\(port)
          secret: berth-integration-tests

        """
        if case .token(let realm, let service, let issuer, let bundle) = auth {
            yaml += """
            auth:
              token:
                realm: \(realm)
                service: \(service)
                issuer: \(issuer)
                rootcertbundle: \(bundle)

            """
        }
        try yaml.write(toFile: "\(directory)/config.yml", atomically: true, encoding: .utf8)
    }

    /// Starts (or restarts, same port and storage) and waits until `/v2/` answers.
    func start() throws {
        guard process == nil else { return }
        // Distribution reads every REGISTRY_* variable as configuration (FIELD-NOTES.md).
        var env: [String: String?] = [:]
        for k in ProcessInfo.processInfo.environment.keys where k.hasPrefix("REGISTRY_") { env[k] = .some(nil) }
        let p = try Subprocess(["docker-registry", "serve", "\(directory)/config.yml"], in: directory,
                               environmentOverrides: env, logPath: logPath)
        process = p
        let ready = waitUntil(10) {
            guard p.isRunning else { return true }
            return probeStatus(port: port, path: "/v2/").map { $0 == 200 || $0 == 401 } ?? false
        }
        guard ready, p.isRunning else {
            let log = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
            p.terminate(grace: 2)
            process = nil
            throw Subprocess.Failure(description: "docker-registry did not start on \(port): \(log.suffix(2000))")
        }
    }

    /// Stops the registry (SIGTERM by PID); storage and log stay.
    func stop() {
        guard let p = process else { return }
        p.terminate(grace: 5)
        process = nil
        // Make sure the port no longer answers before a test relies on it.
        _ = waitUntil(5) { probeStatus(port: port, path: "/v2/") == nil }
    }

    /// Stops and removes everything.
    func remove() {
        stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    // MARK: access log

    /// Every request in the access log so far, in order.
    func requests() -> [Request] {
        guard let text = try? String(contentsOfFile: logPath, encoding: .utf8) else { return [] }
        var out: [Request] = []
        for line in text.split(separator: "\n") {
            // 127.0.0.1 - - [date] "GET /v2/x HTTP/1.1" 200 2 "" "agent"
            guard let open = line.range(of: "] \""), let close = line.range(of: " HTTP/1.", range: open.upperBound..<line.endIndex) else { continue }
            let parts = line[open.upperBound..<close.lowerBound].split(separator: " ", maxSplits: 1)
            guard parts.count == 2 else { continue }
            let after = line[close.upperBound...].drop(while: { $0 != " " }).dropFirst()
            out.append(Request(method: String(parts[0]), path: String(parts[1]), status: Int(after.prefix(3)) ?? 0))
        }
        return out
    }

    /// Waits (≤ 3 s) until the log stops growing: Distribution writes an access
    /// line after the response, so a client can finish before its last line lands.
    func settle() {
        func size() -> UInt64 { ((try? FileManager.default.attributesOfItem(atPath: logPath))?[.size] as? NSNumber)?.uint64Value ?? 0 }
        for _ in 0..<20 {
            let before = size()
            usleep(150_000)
            if size() == before { return }
        }
    }

    /// How many `method` requests had a path containing `pathContains` (after `settle`).
    func count(method: String, pathContains: String) -> Int {
        settle()
        return requests().filter { $0.method == method && $0.path.contains(pathContains) }.count
    }

    // MARK: direct access (the truth tests compare Berth against)

    /// The manifest bytes the registry holds for `reference`, exactly.
    func manifest(_ repository: String, _ reference: String, authorization: String? = nil, in dir: String) throws -> (bytes: [UInt8], mediaType: String) {
        var headers = ["Accept: \(allManifestTypes)"]
        if let authorization { headers.append("Authorization: \(authorization)") }
        let r = try Curl.request("\(url)/v2/\(repository)/manifests/\(reference)", headers: headers, in: dir)
        guard r.status == 200 else {
            throw Subprocess.Failure(description: "registry GET manifest \(repository):\(reference) → \(r.status) \(r.bodyText)")
        }
        return (r.body, r.headers["content-type"] ?? "")
    }
}
