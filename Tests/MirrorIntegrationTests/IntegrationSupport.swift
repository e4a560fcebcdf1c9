import Foundation
import XCTest
import Reactor
import HTTP1
import BlobStore
import TestSupport

// MARK: - readiness

/// The status of `GET path` on 127.0.0.1:`port`, nil when nothing answers
/// within a second (a readiness probe; no keep-alive, no body read).
func probeStatus(port: UInt16, path: String) -> Int? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var tv = timeval(tv_sec: 1, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var sin = sockaddr_in()
    sin.sin_family = sa_family_t(AF_INET)
    sin.sin_port = port.bigEndian
    sin.sin_addr.s_addr = inet_addr("127.0.0.1")
    let r = withUnsafePointer(to: &sin) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard r == 0 else { return nil }
    let req = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n\r\n".utf8)
    guard req.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == req.count else { return nil }
    var buf = [UInt8](repeating: 0, count: 512)
    var got: [UInt8] = []
    while got.count < 12 {
        let n = recv(fd, &buf, buf.count, 0)
        if n <= 0 { break }
        got += buf[0..<n]
    }
    let line = String(decoding: got, as: UTF8.self)
    guard line.hasPrefix("HTTP/1."), got.count >= 12 else { return nil }
    return Int(line.dropFirst(9).prefix(3))
}

// MARK: - digests and files

func sha256Hex(_ bytes: [UInt8]) -> String { SHA256Hasher.hex(bytes) }

/// SHA-256 of a file's bytes, streamed in 1 MiB reads.
func sha256Hex(file path: String) -> String? {
    guard let h = FileHandle(forReadingAtPath: path) else { return nil }
    defer { try? h.close() }
    let hasher = SHA256Hasher()
    while true {
        let chunk = h.readData(ofLength: 1 << 20)
        if chunk.isEmpty { break }
        chunk.withUnsafeBytes { hasher.update($0) }
    }
    return hasher.finalizeHex()
}

func readBytes(_ path: String) -> [UInt8]? { FileManager.default.contents(atPath: path).map { [UInt8]($0) } }

/// Writes `count` random bytes to `path` and returns their digest (`sha256:<hex>`).
func writeRandomFile(_ path: String, count: Int) throws -> String {
    let source = FileHandle(forReadingAtPath: "/dev/urandom")!
    defer { try? source.close() }
    FileManager.default.createFile(atPath: path, contents: nil)
    let out = FileHandle(forWritingAtPath: path)!
    defer { try? out.close() }
    let hasher = SHA256Hasher()
    var left = count
    while left > 0 {
        let chunk = source.readData(ofLength: min(left, 1 << 20))
        guard !chunk.isEmpty else { throw Subprocess.Failure(description: "/dev/urandom returned nothing") }
        chunk.withUnsafeBytes { hasher.update($0) }
        out.write(chunk)
        left -= chunk.count
    }
    return "sha256:" + hasher.finalizeHex()
}

// MARK: - JSON

func jsonObject(_ bytes: [UInt8]) -> [String: Any]? {
    (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any]
}

func jsonBytes(_ object: Any) -> [UInt8] {
    [UInt8](try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]))
}

/// The digests a manifest references: config and layers (images) or manifests (indexes).
func referencedDigests(_ manifest: [UInt8]) -> (blobs: [String], manifests: [String]) {
    guard let doc = jsonObject(manifest) else { return ([], []) }
    var blobs: [String] = []
    if let c = doc["config"] as? [String: Any], let d = c["digest"] as? String { blobs.append(d) }
    for l in doc["layers"] as? [[String: Any]] ?? [] { if let d = l["digest"] as? String { blobs.append(d) } }
    let manifests = (doc["manifests"] as? [[String: Any]] ?? []).compactMap { $0["digest"] as? String }
    return (blobs, manifests)
}

// MARK: - curl

/// One HTTP exchange through the curl CLI: status, the last response's
/// headers (names lowercased), the body in a file, and curl's exit code.
struct CurlResult {
    var status: Int
    var headers: [String: String]
    var bodyPath: String
    var exitCode: Int32
    var body: [UInt8] { readBytes(bodyPath) ?? [] }
    var bodyText: String { String(decoding: body, as: UTF8.self) }
}

enum Curl {
    /// `method` on `url`. `headers` are "Name: value" lines; `uploadFile` is sent as the body.
    static func request(_ url: String, method: String = "GET", headers: [String] = [], uploadFile: String? = nil,
                        output: String? = nil, in dir: String, timeout: Double = 30) throws -> CurlResult {
        let tag = UUID().uuidString.prefix(8)
        let headerPath = "\(dir)/curl-\(tag).headers"
        let bodyPath = output ?? "\(dir)/curl-\(tag).body"
        var args = ["curl", "-s", "-S", "-D", headerPath, "-o", bodyPath, "-w", "%{http_code}",
                    "--max-time", String(Int(timeout))]
        switch method {
        case "HEAD": args.append("-I")
        case "GET": break
        default: args += ["-X", method]
        }
        for h in headers { args += ["-H", h] }
        // -T streams the file (no copy in memory); an empty body still gets a Content-Length.
        if let uploadFile { args += ["-T", uploadFile] } else if method == "POST" || method == "PUT" { args += ["--data-binary", ""] }
        args.append(url)
        let child = try Subprocess.run(args, in: dir, timeout: timeout + 10, check: false)
        return CurlResult(status: Int(child.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0,
                          headers: parseHeaders(headerPath), bodyPath: bodyPath, exitCode: child.exitCode)
    }

    /// Headers of the last response in a `curl -D` dump.
    static func parseHeaders(_ path: String) -> [String: String] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [:] }
        var headers: [String: String] = [:]
        for line in text.components(separatedBy: "\r\n") {
            if line.hasPrefix("HTTP/") { headers = [:]; continue }
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return headers
    }
}

/// Every manifest type a client may ask for.
let allManifestTypes = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
].joined(separator: ", ")

// MARK: - skopeo

enum Skopeo {
    /// `skopeo copy` with TLS verification off on the registry side(s) given.
    static func copy(_ source: String, _ destination: String, extra: [String] = [], in dir: String,
                     timeout: Double = 120) throws {
        try Subprocess.run(["skopeo", "copy", "--retry-times", "0"] + extra + [source, destination],
                           in: dir, environmentOverrides: ["REGISTRY_AUTH_FILE": nil], timeout: timeout)
    }

    /// The raw manifest bytes of `reference`, exactly as served.
    static func inspectRaw(_ reference: String, extra: [String] = [], in dir: String) throws -> [UInt8] {
        let child = try Subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false"] + extra + [reference],
                                       in: dir, environmentOverrides: ["REGISTRY_AUTH_FILE": nil], timeout: 60)
        return [UInt8](child.stdoutData)
    }
}

// MARK: - an in-process HTTP server

/// Berth's own HTTP1 server on a loopback port with a test handler (the token
/// service, the fault-injecting fake upstream).
final class LoopbackServer {
    let group: EventLoopGroup
    let pool = BlockingPool(threads: 1)
    let server: HTTPServer
    let port: UInt16

    init(host: String = "127.0.0.1", handler: @escaping (ResponseWriter) -> Void) throws {
        // As `berth serve` does: a peer that left must not kill the test process.
        signal(SIGPIPE, SIG_IGN)
        group = try EventLoopGroup(count: 1)
        var c = HTTPServer.Configuration()
        c.plain = [SocketAddress("\(host):0")!]
        server = HTTPServer(configuration: c, group: group, pool: pool, handler: handler)
        try server.start()
        group.start()
        var p: UInt16 = 0
        for _ in 0..<400 {
            if let a = server.boundAddresses().first { p = a.port; break }
            usleep(5_000)
        }
        port = p
    }

    private var stopped = false

    func stop() {
        guard !stopped else { return }
        stopped = true
        group.shutdown()
        pool.shutdown()
    }
}

/// Splits `path?query` and decodes the query's `key=value` pairs (percent and `+`).
func splitQuery(_ target: String) -> (path: String, query: [(String, String)]) {
    guard let q = target.firstIndex(of: "?") else { return (target, []) }
    let pairs = target[target.index(after: q)...].split(separator: "&").map { pair -> (String, String) in
        let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
        let decode = { (s: Substring) in (String(s).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String(s)) }
        return (decode(kv[0]), kv.count > 1 ? decode(kv[1]) : "")
    }
    return (String(target[..<q]), pairs)
}
