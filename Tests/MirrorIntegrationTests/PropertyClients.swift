import Foundation
import Reactor
import HTTP1
import TestSupport

/// What one client of a schedule saw.
struct ClientOutcome: CustomStringConvertible {
    /// nil when no response head arrived.
    var status: Int?
    /// Response headers, names lowercased.
    var headers: [String: String] = [:]
    var body: [UInt8] = []
    /// The transport error (in-process client) or curl's failure, nil when the exchange ended cleanly.
    var error: String?
    /// From the request to the end of the exchange.
    var seconds: Double = 0

    var description: String {
        let h = ["content-length", "content-range", "content-type", "transfer-encoding", "retry-after", "docker-content-digest"]
            .compactMap { k in headers[k].map { "\(k): \($0)" } }.joined(separator: "; ")
        return "status \(status.map(String.init) ?? "none"), \(body.count) body bytes, error \(error ?? "none"), "
            + "\(String(format: "%.2f", seconds)) s [\(h)]"
    }
}

/// Berth's own HTTP1 client on a loop of its own, driven from async tests.
final class InProcessClient {
    let group: EventLoopGroup
    let pool = BlockingPool(threads: 1)
    let client: HTTPClient
    var loop: EventLoop { group.loops[0] }

    init() throws {
        signal(SIGPIPE, SIG_IGN)
        group = try EventLoopGroup(count: 1)
        client = HTTPClient(loop: group.loops[0], pool: pool, tls: nil)
        group.start()
    }

    func shutdown() {
        group.shutdown()
        pool.shutdown()
    }

    /// One request; `leaveAfter` cancels it once that many body bytes arrived (0: at the head).
    func request(_ url: String, method: HTTPMethod = .get, headers: [(String, String)] = [],
                 leaveAfter: Int? = nil) async -> ClientOutcome {
        guard let u = HTTPURL(url) else { return ClientOutcome(error: "bad URL \(url)") }
        var r = ClientRequest(method: method, url: u, headers: HTTPHeaders(headers))
        r.connectTimeoutNanos = 5_000_000_000
        r.headTimeoutNanos = 30_000_000_000
        r.idleTimeoutNanos = 30_000_000_000
        let started = Date()
        var outcome = await withCheckedContinuation { (cont: CheckedContinuation<ClientOutcome, Never>) in
            let collector = Collector(leaveAfter: leaveAfter) { cont.resume(returning: $0) }
            loop.execute { [client] in client.execute(r, delegate: collector) }
        }
        outcome.seconds = Date().timeIntervalSince(started)
        return outcome
    }

    /// Gathers one response on the client's loop.
    private final class Collector: ClientResponseDelegate {
        let leaveAfter: Int?
        let done: (ClientOutcome) -> Void
        var outcome = ClientOutcome()
        var left = false

        init(leaveAfter: Int?, done: @escaping (ClientOutcome) -> Void) {
            self.leaveAfter = leaveAfter
            self.done = done
        }

        func didReceiveHead(_ head: ResponseHead, url: HTTPURL, task: ClientTask) {
            outcome.status = head.status
            for (name, value) in head.headers {
                let k = name.lowercased()
                // A repeated framing header is itself worth seeing in the verdict.
                outcome.headers[k] = outcome.headers[k].map { "\($0), \(value)" } ?? value
            }
            if leaveAfter == 0 { leave(task) }
        }

        func didReceiveBody(_ bytes: UnsafeRawBufferPointer, task: ClientTask) -> Bool {
            outcome.body.append(contentsOf: bytes)
            if let n = leaveAfter, outcome.body.count >= n {
                leave(task)
                return false
            }
            return true
        }

        private func leave(_ task: ClientTask) {
            guard !left else { return }
            left = true
            task.cancel()
        }

        func didFinish(_ error: HTTPClientError?, task: ClientTask) {
            if let error { outcome.error = left ? "left (\(error.kind))" : error.description }
            done(outcome)
        }
    }
}

/// curl as a client: a parser that is not Berth's. Exit 0 means curl took the
/// response as complete; its files are removed afterwards.
enum CurlClient {
    static let isInstalled = Subprocess.resolve("curl") != nil

    static func request(_ url: String, head: Bool, headers: [String], in dir: String) async -> ClientOutcome {
        await withCheckedContinuation { (cont: CheckedContinuation<ClientOutcome, Never>) in
            Thread.detachNewThread {
                cont.resume(returning: run(url, head: head, headers: headers, in: dir))
            }
        }
    }

    private static func run(_ url: String, head: Bool, headers: [String], in dir: String) -> ClientOutcome {
        let tag = UUID().uuidString.prefix(8)
        let headerPath = "\(dir)/curl-\(tag).h", bodyPath = "\(dir)/curl-\(tag).b"
        defer {
            try? FileManager.default.removeItem(atPath: headerPath)
            try? FileManager.default.removeItem(atPath: bodyPath)
        }
        var args = ["curl", "-s", "-S", "-D", headerPath, "-o", bodyPath, "-w", "%{http_code}", "--max-time", "30"]
        if head { args.append("-I") }
        for h in headers { args += ["-H", h] }
        args.append(url)
        let started = Date()
        var o = ClientOutcome()
        do {
            let r = try Subprocess.run(args, in: dir, timeout: 40, check: false)
            let code = Int(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
            o.status = code == 0 ? nil : code
            o.headers = Curl.parseHeaders(headerPath)
            o.body = readBytes(bodyPath) ?? []
            if r.exitCode != 0 { o.error = "curl exit \(r.exitCode): \(r.stderr.trimmingCharacters(in: .whitespacesAndNewlines))" }
        } catch {
            o.error = "curl: \(error)"
        }
        o.seconds = Date().timeIntervalSince(started)
        return o
    }
}
