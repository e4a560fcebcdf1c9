/// berth-file-server: serves one file at `/file` over plain HTTP with Berth's
/// HTTP1 server (`sendfile`, single `Range` → 206, unsatisfiable → 416), the
/// same way the `/file` handler in Tests/HTTP1Tests/ServerTests.swift does.
///
/// It stands in for cached-blob serving until the blob cache lands: the
/// end-to-end benchmark (Benchmarks/e2e/http.sh) measures 1 GiB downloads from
/// it against nginx. Once `berth serve` answers blobs from its cache, the
/// benchmark should move to `berth serve` and this tool can go.
///
///     berth-file-server FILE [--listen 127.0.0.1:8080] [--workers N]
///
/// Every other path answers 404. Stops on SIGTERM/SIGINT.

#if canImport(Glibc)
import Glibc
#endif
import Reactor
import HTTP1

func fail(_ message: String) -> Never {
    fputs("berth-file-server: \(message)\n", stderr)
    exit(2)
}

var args = Array(CommandLine.arguments.dropFirst())
var listen = "127.0.0.1:8080"
var workers = 0
var path: String?
while !args.isEmpty {
    let a = args.removeFirst()
    switch a {
    case "--listen":
        guard !args.isEmpty else { fail("--listen needs an address") }
        listen = args.removeFirst()
    case "--workers":
        guard !args.isEmpty, let n = Int(args.removeFirst()), n >= 0 else { fail("--workers needs a number") }
        workers = n
    case "-h", "--help":
        print("usage: berth-file-server FILE [--listen HOST:PORT] [--workers N (0 = one per core)]")
        exit(0)
    default:
        if a.hasPrefix("-") || path != nil { fail("unexpected argument \(a)") }
        path = a
    }
}
guard let path else { fail("usage: berth-file-server FILE [--listen HOST:PORT] [--workers N]") }
guard let address = SocketAddress(listen) else { fail("--listen: not an IP literal with a port: \(listen)") }
// Fail early on a missing file; each request opens its own descriptor, as the cache will.
do { _ = try FileDescriptor.openForReading(path) } catch { fail("cannot open \(path): \(error)") }

SignalSource.blockProcessSignals()
let group = try EventLoopGroup(count: workers == 0 ? System.coreCount : workers)
let pool = BlockingPool(threads: 1)
var config = HTTPServer.Configuration()
config.plain = [address]

let server = HTTPServer(configuration: config, group: group, pool: pool) { w in
    let target = w.request.target
    guard w.request.method == .get || w.request.method == .head else {
        var h = ResponseHead(status: 405)
        h.headers.add("Allow", "GET, HEAD")
        w.respond(h)
        return
    }
    guard target == "/file" else {
        w.respond(ResponseHead(status: 404), body: Array("not found\n".utf8))
        return
    }
    do {
        let f = try FileDescriptor.openForReading(path)
        let size = try f.size()
        switch RangeRequest.parse(w.request.headers["Range"], size: size) {
        case .none:
            var h = ResponseHead(status: 200)
            h.headers.add("Content-Type", "application/octet-stream")
            h.headers.add("Accept-Ranges", "bytes")
            w.respond(h, file: f, range: 0..<size)
        case .satisfiable(let ranges):
            // One range served; a multi-range request gets its first (as the test handler does).
            let r = ranges[0]
            var h = ResponseHead(status: 206)
            h.headers.add("Content-Type", "application/octet-stream")
            h.headers.add("Content-Range", "bytes \(r.lowerBound)-\(r.upperBound)/\(size)")
            w.respond(h, file: f, range: r.lowerBound..<(r.upperBound + 1))
        case .unsatisfiable:
            var h = ResponseHead(status: 416)
            h.headers.add("Content-Range", "bytes */\(size)")
            w.respond(h)
        }
    } catch {
        w.respond(ResponseHead(status: 500))
    }
}

do { try server.start() } catch { fail("cannot listen on \(listen): \(error)") }
var stopped = false
let signals = try SignalSource(loop: group.loops[0]) { _ in
    server.beginShutdown()
    stopped = true
}
group.start()
fputs("berth-file-server: serving \(path) at http://\(server.boundAddresses().first.map(\.description) ?? listen)/file with \(group.loops.count) workers\n", stderr)
// Give in-flight downloads up to 15 s after a stop signal, then exit.
var deadline: UInt64 = 0
while true {
    usleep(50_000)
    if stopped {
        if deadline == 0 { deadline = Clock.monotonicNanos() + 15_000_000_000 }
        if server.connectionCount == 0 || Clock.monotonicNanos() >= deadline { break }
    }
}
group.shutdown()
pool.shutdown()
withExtendedLifetime(signals) {}
