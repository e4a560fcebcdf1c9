// Load generator for Benchmarks/e2e/slowloris.sh: holds thousands of idle
// keep-alive connections and a few hundred slowloris ones against a server on
// 127.0.0.1, and measures a normal client meanwhile. One file, Glibc and
// OpenSSL only, so the script builds it with swiftc (no package resolution):
//
//   swiftc -O -I Sources/COpenSSL Benchmarks/Sources/berth-slowloris/main.swift -o berth-slowloris
//   berth-slowloris --port P --pid SERVER_PID [--tls] [--idle 10000] [--slowloris 300]
//                   [--requests 2000] [--loaded-seconds 25] [--path /v2/]
//
// Prints `key=value` lines (latencies in microseconds, memory in KiB).
// Sources of the connections: the normal client is 127.0.0.1; idle ones come
// from 127.1.K.1 and slowloris ones from 127.2.K.1, at most 800 per address,
// so the default per-client cap (1024) admits them all: the benchmark
// measures the server's cost per connection, not its refusals.
// Every loop is bounded in count and time; traffic goes to 127.0.0.1 only.
import Glibc
import COpenSSL

// MARK: arguments

var args = [String: String]()
var flags = Set<String>()
do {
    var it = CommandLine.arguments.dropFirst().makeIterator()
    while let a = it.next() {
        if a == "--tls" { flags.insert("tls"); continue }
        guard a.hasPrefix("--"), let v = it.next() else { fputs("bad argument \(a)\n", stderr); exit(2) }
        args[String(a.dropFirst(2))] = v
    }
}
func intArg(_ k: String, _ d: Int) -> Int { args[k].flatMap(Int.init) ?? d }
let port = UInt16(intArg("port", 0))
let serverPID = intArg("pid", 0)
let useTLS = flags.contains("tls")
let idleCount = intArg("idle", 10_000)
let slowCount = intArg("slowloris", 300)
let requestCount = intArg("requests", 2000)
let loadedSeconds = Double(intArg("loaded-seconds", 25))
let path = args["path"] ?? "/v2/"
guard port != 0, serverPID != 0 else { fputs("--port and --pid are required\n", stderr); exit(2) }

func out(_ k: String, _ v: Any) { print("\(k)=\(v)"); fflush(stdout) }
func note(_ s: String) { fputs("[berth-slowloris] \(s)\n", stderr) }

func nowNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// VmRSS of the server, KiB.
func serverRSS() -> Int {
    guard let f = fopen("/proc/\(serverPID)/status", "r") else { return -1 }
    defer { fclose(f) }
    var line = [CChar](repeating: 0, count: 512)
    while fgets(&line, Int32(line.count), f) != nil {
        let s = String(cString: line)
        if s.hasPrefix("VmRSS:") {
            return Int(s.dropFirst(6).split(whereSeparator: { $0 == " " || $0 == "\t" }).first ?? "") ?? -1
        }
    }
    return -1
}

// MARK: connections

let sslContext: OpaquePointer? = {
    guard useTLS else { return nil }
    let ctx = SSL_CTX_new(TLS_client_method())
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nil)
    return ctx
}()

final class Conn {
    let fd: Int32
    var ssl: OpaquePointer?
    var buffered: [UInt8] = []

    /// A blocking connection from `source` to 127.0.0.1:port (TLS handshake done when `tls`).
    init?(source: String, tls: Bool, timeoutSeconds: Int = 10) {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { note("socket: \(String(cString: strerror(errno)))"); return nil }
        var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        local.sin_addr.s_addr = inet_addr(source)
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        sin.sin_addr.s_addr = inet_addr("127.0.0.1")
        let ok = withUnsafePointer(to: &local) { l in
            withUnsafePointer(to: &sin) { r in
                l.withMemoryRebound(to: sockaddr.self, capacity: 1) { la in
                    r.withMemoryRebound(to: sockaddr.self, capacity: 1) { ra in
                        bind(fd, la, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
                            && connect(fd, ra, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
                    }
                }
            }
        }
        guard ok else { note("connect from \(source): \(String(cString: strerror(errno)))"); close(fd); return nil }
        if tls {
            ssl = SSL_new(sslContext)
            SSL_set_fd(ssl, fd)
            guard SSL_connect(ssl) == 1 else { note("TLS handshake failed"); SSL_free(ssl); close(fd); return nil }
        }
    }

    deinit {
        if let ssl { SSL_free(ssl) }
        close(fd)
    }

    func send(_ bytes: [UInt8]) -> Bool {
        var off = 0
        while off < bytes.count {
            let n: Int = bytes[off...].withUnsafeBytes { b in
                if let ssl { return Int(SSL_write(ssl, b.baseAddress, Int32(b.count))) }
                return Glibc.send(fd, b.baseAddress, b.count, Int32(MSG_NOSIGNAL))
            }
            if n <= 0 { return false }
            off += n
        }
        return true
    }

    private func recvSome() -> Bool {
        var buf = [UInt8](repeating: 0, count: 16 * 1024)
        let n: Int = buf.withUnsafeMutableBytes { b in
            if let ssl { return Int(SSL_read(ssl, b.baseAddress, Int32(b.count))) }
            return recv(fd, b.baseAddress, b.count, 0)
        }
        if n <= 0 { return false }
        buffered.append(contentsOf: buf[0..<n])
        return true
    }

    /// Reads one Content-Length response; returns its status.
    func readResponse() -> Int? {
        var headEnd: Int?
        for _ in 0..<1000 {
            if let r = buffered.firstRange(of: [13, 10, 13, 10]) { headEnd = r.upperBound; break }
            if !recvSome() { return nil }
        }
        guard let headEnd else { return nil }
        let head = String(decoding: buffered[0..<headEnd], as: UTF8.self)
        let parts = head.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, let status = Int(parts[1]) else { return nil }
        var length = 0
        for line in head.split(separator: "\r\n") where line.lowercased().hasPrefix("content-length:") {
            length = Int(line.dropFirst(15).trimmingCharacters()) ?? 0
        }
        for _ in 0..<1000 where buffered.count < headEnd + length {
            if !recvSome() { return nil }
        }
        buffered.removeFirst(min(buffered.count, headEnd + length))
        return status
    }

    /// Whether the peer is still there: nothing to read and no EOF (nonblocking peek).
    var isOpen: Bool {
        var b: UInt8 = 0
        let n = recv(fd, &b, 1, Int32(MSG_DONTWAIT | MSG_PEEK))
        return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)
    }
}

extension Substring {
    func trimmingCharacters() -> String { String(self.drop { $0 == " " }.reversed().drop { $0 == " " || $0 == "\r" }.reversed()) }
}

let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".utf8)

// MARK: measurements

func percentile(_ sorted: [UInt64], _ p: Double) -> Double {
    guard !sorted.isEmpty else { return -1 }
    let i = min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.up)) - 1)
    return Double(sorted[max(i, 0)]) / 1000
}

func report(_ name: String, _ samples: [UInt64], failures: Int) {
    let s = samples.sorted()
    out("\(name).count", s.count)
    out("\(name).failures", failures)
    out("\(name).p50_us", Int(percentile(s, 0.50).rounded()))
    out("\(name).p90_us", Int(percentile(s, 0.90).rounded()))
    out("\(name).p99_us", Int(percentile(s, 0.99).rounded()))
    out("\(name).max_us", (s.last ?? 0) / 1000)
}

/// `count` requests, each on a fresh connection (connect + handshake + request + answer),
/// spread over `seconds` (0 = back to back).
func measureFresh(_ name: String, count: Int, seconds: Double) {
    var samples: [UInt64] = []
    var failures = 0
    let gap = seconds > 0 ? UInt32(seconds * 1e6 / Double(count)) : 0
    for _ in 0..<count {
        let t0 = nowNanos()
        if let c = Conn(source: "127.0.0.1", tls: useTLS), c.send(request), c.readResponse() == 200 {
            samples.append(nowNanos() - t0)
        } else {
            failures += 1
        }
        if gap > 0 { usleep(gap) }
    }
    report(name, samples, failures: failures)
}

/// `count` requests on one kept-alive connection, spread over `seconds`.
func measureKeepAlive(_ name: String, count: Int, seconds: Double) {
    var samples: [UInt64] = []
    var failures = 0
    let gap = seconds > 0 ? UInt32(seconds * 1e6 / Double(count)) : 0
    var c = Conn(source: "127.0.0.1", tls: useTLS)
    for _ in 0..<count {
        if c == nil { c = Conn(source: "127.0.0.1", tls: useTLS) }
        let t0 = nowNanos()
        if let conn = c, conn.send(request), conn.readResponse() == 200 {
            samples.append(nowNanos() - t0)
        } else {
            failures += 1
            c = nil
        }
        if gap > 0 { usleep(gap) }
    }
    report(name, samples, failures: failures)
}

// MARK: slowloris

/// Connections that send a request line, then one header byte a second and
/// never finish the head; each one the server ends (408 or close) is counted
/// and replaced, so `count` stay open. Runs on its own thread until `stop`.
final class Slowloris: @unchecked Sendable {  // `stop` is the only shared field; read with a relaxed race that ends the loop a tick late at worst
    let count: Int
    var stop = false
    private(set) var answered408 = 0
    private(set) var closedQuietly = 0
    private(set) var openAtEnd = 0
    private var thread = pthread_t()

    init(count: Int) { self.count = count }

    private func open(_ j: Int) -> Conn? {
        let c = Conn(source: "127.2.\(j / 200).1", tls: false)
        guard let c, c.send(Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n".utf8)) else { return nil }
        return c
    }

    func start() {
        let box = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&thread, nil, { raw in
            let me = Unmanaged<Slowloris>.fromOpaque(raw!).takeRetainedValue()
            me.run()
            return nil
        }, box)
    }

    func join() { pthread_join(thread, nil) }

    private func run() {
        var conns: [Conn?] = (0..<count).map { open($0) }
        let deadline = nowNanos() + 600_000_000_000  // bounded: 10 minutes at most
        while !stop && nowNanos() < deadline {
            for j in conns.indices {
                guard let c = conns[j] else { conns[j] = open(j); continue }
                var buf = [UInt8](repeating: 0, count: 512)
                let n = recv(c.fd, &buf, buf.count, Int32(MSG_DONTWAIT))
                if n > 0 || n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK) {
                    if n > 0 && String(decoding: buf[0..<n], as: UTF8.self).hasPrefix("HTTP/1.1 408") { answered408 += 1 } else { closedQuietly += 1 }
                    conns[j] = open(j)
                    continue
                }
                var b: UInt8 = 0x61  // "a": the header name never ends
                if Glibc.send(c.fd, &b, 1, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) != 1 { conns[j] = open(j) }
            }
            usleep(1_000_000)
        }
        openAtEnd = conns.filter { $0?.isOpen == true }.count
    }
}

// MARK: run

note("port \(port), server pid \(serverPID), tls \(useTLS), idle \(idleCount), slowloris \(slowCount)")
for _ in 0..<50 { _ = Conn(source: "127.0.0.1", tls: useTLS).map { $0.send(request) && $0.readResponse() == 200 } }  // warm-up

out("rss_start_kib", serverRSS())
measureFresh("baseline.fresh", count: requestCount, seconds: 0)
measureKeepAlive("baseline.keepalive", count: requestCount, seconds: 0)

// Idle keep-alive connections: each answers one request, then stays open.
let rssBefore = serverRSS()
var idle: [Conn] = []
idle.reserveCapacity(idleCount)
let openStart = nowNanos()
for i in 0..<idleCount {
    guard let c = Conn(source: "127.1.\(i / 800).1", tls: useTLS) else { break }
    guard c.send(request), c.readResponse() == 200 else { note("idle connection \(i) got no answer"); break }
    idle.append(c)
}
out("idle.opened", idle.count)
out("idle.open_seconds", Double((nowNanos() - openStart) / 100_000_000) / 10)
usleep(500_000)  // let the server's last accepts settle before reading its memory (not a synchronisation)
let rssAfter = serverRSS()
out("rss_before_idle_kib", rssBefore)
out("rss_after_idle_kib", rssAfter)
if !idle.isEmpty { out("rss_per_idle_connection_bytes", (rssAfter - rssBefore) * 1024 / idle.count) }

measureFresh("idle.fresh", count: requestCount, seconds: 0)
measureKeepAlive("idle.keepalive", count: requestCount, seconds: 0)

if slowCount > 0 {
    let slow = Slowloris(count: slowCount)
    slow.start()
    usleep(2_000_000)  // let them connect and start dribbling
    // Spread over `loadedSeconds`, past the 20 s head deadline: the slowloris
    // connections are cut (408) and replaced while the normal client is measured.
    measureFresh("loaded.fresh", count: requestCount, seconds: loadedSeconds / 2)
    measureKeepAlive("loaded.keepalive", count: requestCount, seconds: loadedSeconds / 2)
    out("rss_with_slowloris_kib", serverRSS())
    slow.stop = true
    slow.join()
    out("slowloris.answered_408", slow.answered408)
    out("slowloris.closed_quietly", slow.closedQuietly)
    out("slowloris.open_at_end", slow.openAtEnd)
}
out("idle.still_open", idle.filter(\.isOpen).count)
