import Foundation
import HTTP1

/// A `FakeUpstream` route that plays a schedule's faults for one blob: the
/// i-th request for the path (GET or HEAD, in arrival order) gets `faults[i]`,
/// later ones the right answer, and every one once `behave()` was called.
/// It records what each attempt sent and knows how many are still open, so
/// the test can wait for the upstream to be quiet instead of sleeping.
///
/// The route runs on the fake upstream's loop; the counters are read from
/// the test's thread under `lock`.
final class FaultPlayer {
    let blob: [UInt8]
    let digest: String
    let retryAfter: String
    let faults: [Fault]
    /// Berth's PID and where to SIGKILL it (attempt index and permille of its body).
    var killAt: (attempt: Int, permille: Int, pid: Int32)?

    private let lock = NSLock()
    private var attempts = 0
    /// Attempts still open: when each started, and whether it hangs on purpose.
    private var open: [Int: (started: Date, hangs: Bool)] = [:]
    private var behaving = false
    private var killed = false
    private var log: [String] = []
    /// Bodies some attempt sent in place of the blob, declared whole (a changed
    /// byte, extra bytes, a short or zero length): a range served before the
    /// digest check may carry their bytes and length.
    private var wrongBodies: [[UInt8]] = []
    /// Content-Length values some attempt declared.
    private var declared: Set<UInt64> = []
    private var statuses: Set<Int> = []
    /// Some 200 went out without a Content-Length (chunked).
    private var sentUnknownLength = false

    init(blob: [UInt8], digest: String, faults: [Fault], retryAfter: String) {
        self.blob = blob
        self.digest = digest
        self.faults = faults
        self.retryAfter = retryAfter
    }

    /// From now on every request gets the right answer.
    func behave() { lock.withLock { behaving = true } }

    /// Upstream requests answered so far / still open.
    var attemptCount: Int { lock.withLock { attempts } }
    var openCount: Int { lock.withLock { open.count } }

    /// True when every open attempt is a hang older than `grace`: Berth's own
    /// timeout has given up on it by then, so no fill of Berth's still follows
    /// it. (Berth's HTTP server, which FakeUpstream is, does not see a peer
    /// close while a response is pending, so a hang cannot end at Berth's close.)
    func isQuiet(grace: Double) -> Bool {
        lock.withLock { open.values.allSatisfy { $0.hangs && Date().timeIntervalSince($0.started) > grace } }
    }
    var didKill: Bool { lock.withLock { killed } }
    var attemptLog: [String] { lock.withLock { log } }
    var bodiesSent: [[UInt8]] { lock.withLock { wrongBodies } }
    var declaredLengths: Set<UInt64> { lock.withLock { declared } }
    var statusesSent: Set<Int> { lock.withLock { statuses } }
    var didSendUnknownLength: Bool { lock.withLock { sentUnknownLength } }

    var route: FakeUpstream.Route { { [self] w in play(w) } }

    // MARK: playing

    private func play(_ w: ResponseWriter) {
        let (index, fault, kill) = lock.withLock { () -> (Int, Fault, Int?) in
            let i = attempts
            attempts += 1
            let f: Fault = behaving || i >= faults.count ? .correct : faults[i]
            open[i] = (Date(), f.waitsForATimeout)
            log.append("\(w.request.method.name)#\(i):\(f)")
            let k = killAt.flatMap { $0.attempt == i && !behaving ? $0.permille : nil }
            return (i, f, k)
        }
        var closed = false
        let finish = { [self] in
            guard !closed else { return }
            closed = true
            lock.withLock { open[index] = nil }
        }
        w.onClose = finish
        // SIGKILL to Berth once `permille` of `count` body bytes went out (the test's own child, by PID).
        let killAfter: (Int) -> Int? = { count in kill.map { min(count, $0 * count / 1000) } }
        let fireKill = { [self] in
            let pid = lock.withLock { () -> Int32? in
                guard !killed, let k = killAt else { return nil }
                killed = true
                return k.pid
            }
            if let pid { Foundation.kill(pid, SIGKILL) }
        }
        func head(_ status: Int) -> ResponseHead {
            var h = ResponseHead(status: status)
            h.headers.add("Content-Type", "application/octet-stream")
            h.headers.add("Docker-Content-Digest", digest)
            return h
        }
        /// A whole body (its length declared), with the kill point inside it if there is one.
        func send(_ body: [UInt8], status: Int = 200) {
            note(declared: UInt64(body.count), status: status)
            if body != blob { lock.withLock { wrongBodies.append(body) } }
            guard let k = killAfter(body.count), w.request.method == .get else {
                if kill != nil { fireKill() }
                w.respond(head(status), body: body)
                return finish()
            }
            w.start(head(status), contentLength: UInt64(body.count))
            body[0..<k].withUnsafeBytes { _ = w.write($0) }
            fireKill()
            body[k...].withUnsafeBytes { _ = w.write($0) }
            w.end()
            finish()
        }
        /// Declares `declared`, sends `body`, then resets after `delayMs`.
        func sendThenCut(declared: UInt64, _ body: ArraySlice<UInt8>, delayMs: Int) {
            note(declared: declared, status: 200)
            w.start(head(200), contentLength: declared)
            let k = killAfter(body.count) ?? body.count
            body[body.startIndex..<(body.startIndex + k)].withUnsafeBytes { _ = w.write($0) }
            if kill != nil { fireKill() }
            body[(body.startIndex + k)...].withUnsafeBytes { _ = w.write($0) }
            _ = w.loop.schedule(afterNanos: UInt64(delayMs) * 1_000_000) { w.abort(); finish() }
        }

        switch fault {
        case .correct:
            send(blob)
        case .chunked:
            note(declared: nil, status: 200)
            w.start(head(200), contentLength: nil)
            let half = blob.count / 2
            blob[..<half].withUnsafeBytes { _ = w.write($0) }
            if kill != nil { fireKill() }
            _ = w.loop.schedule(afterNanos: 5_000_000) {
                self.blob[half...].withUnsafeBytes { _ = w.write($0) }
                w.end()
                finish()
            }
        case .wrongByte(let at, let x):
            var bad = blob
            if bad.isEmpty { bad = [x] } else { bad[at] ^= x }
            send(bad)
        case .cut(let sent, let delayMs):
            sendThenCut(declared: UInt64(blob.count), blob[..<sent], delayMs: delayMs)
        case .reset:
            if kill != nil { fireKill() }
            w.abort()
            finish()
        case .stallHead(let ms):
            if kill != nil { fireKill() }
            _ = w.loop.schedule(afterNanos: UInt64(ms) * 1_000_000) {
                guard w.isActive else { return finish() }
                send(self.blob)
            }
        case .stallBody(let sent, let ms):
            note(declared: UInt64(blob.count), status: 200)
            w.start(head(200), contentLength: UInt64(blob.count))
            blob[..<sent].withUnsafeBytes { _ = w.write($0) }
            if kill != nil { fireKill() }
            _ = w.loop.schedule(afterNanos: UInt64(ms) * 1_000_000) {
                self.blob[sent...].withUnsafeBytes { _ = w.write($0) }
                w.end()
                finish()
            }
        case .rateLimited:
            if kill != nil { fireKill() }
            note(declared: nil, status: 429)
            var h = ResponseHead(status: 429)
            h.headers.add("Content-Type", "application/json")
            h.headers.add("Retry-After", retryAfter)
            w.respond(h, body: Array(#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#.utf8))
            finish()
        case .serverError(let status):
            if kill != nil { fireKill() }
            note(declared: nil, status: status)
            var h = ResponseHead(status: status)
            h.headers.add("Content-Type", "application/json")
            w.respond(h, body: Array(#"{"errors":[{"code":"UNAVAILABLE","message":"fake upstream failure"}]}"#.utf8))
            finish()
        case .zeroLength:
            if kill != nil { fireKill() }
            send([])
        case .shortLength(let n):
            send(Array(blob[..<n]))
        case .extraBytes(let count):
            send(blob + [UInt8](repeating: 0x5a, count: count))
        case .hugeLength(let n):
            sendThenCut(declared: n, blob.prefix(4096), delayMs: 5)
        case .hangHead:
            if kill != nil { fireKill() }
            // Berth's head timeout gives up on it; the abort only frees the connection.
            _ = w.loop.schedule(afterNanos: 10_000_000_000) { w.abort(); finish() }
        case .hangBody(let sent):
            note(declared: UInt64(blob.count), status: 200)
            w.start(head(200), contentLength: UInt64(blob.count))
            blob[..<sent].withUnsafeBytes { _ = w.write($0) }
            if kill != nil { fireKill() }
            _ = w.loop.schedule(afterNanos: 10_000_000_000) { w.abort(); finish() }
        }
    }

    private func note(declared length: UInt64?, status: Int) {
        lock.withLock {
            if let length { declared.insert(length) } else if status == 200 { sentUnknownLength = true }
            statuses.insert(status)
        }
    }
}
