#if canImport(Glibc)
import Glibc
#endif
import Reactor

/// One accepted connection: reads requests, hands each to the server's
/// handler, writes the answers in order.
///
/// Requests are answered one at a time. While a response is being written the
/// socket is not read: pipelined requests wait in the kernel's buffer (or in
/// `pending`, at most one read's worth), which is the backpressure against a
/// client that sends faster than it reads.
///
/// Loop thread only. Registered once, edge-triggered for read and write (see
/// `EventLoop`): `socketDrained` remembers whether the last read hit EAGAIN.
final class ServerConnection: Selectable {
    let transport: Transport
    /// Who connected, as the per-client cap counts it (nil for unix-domain peers).
    let client: ClientKey?
    /// `ip:port` of the peer, kept only when an access log names it.
    let peer: String?
    unowned let context: LoopContext
    var slot = -1                          // index in context.connections
    private var parser: RequestParser

    private enum State { case reading, responding, closed }
    private var state = State.reading
    private var pending: [UInt8] = []      // bytes read past the request being answered
    private var socketDrained = false
    private var inputEnded = false
    // The moments the deadlines count from (see `wait` and `ConnectionTimeouts`).
    private let acceptedAt: UInt64
    private var hasAnswered = false        // a response finished: later heads count from their first byte
    private var headStartedAt: UInt64 = 0  // first byte of the request being read (after the first request)
    private var idleSince: UInt64 = 0      // the last response finished
    private var lastWriteProgress: UInt64  // bytes last left for the client (or the socket drained some)
    private var current: (head: RequestHead, writer: ResponseWriter?)?
    private var keepAlive = true
    var closeAfterResponse = false         // set by graceful shutdown
    private var headStarted = false        // some bytes of the next request have arrived
    private var isDriving = false          // `drive` is on the stack
    private var dispatchedAt: UInt64 = 0   // monotonic, when the access log or an observer is on

    // Output, in order: `segments` (bytes and file ranges queued earlier), then
    // `out[outOffset...]`, the bytes queued since the last file range.
    private enum Segment {
        case bytes([UInt8], offset: Int)
        case file(FileDescriptor, next: UInt64, end: UInt64)
    }
    private var segments: [Segment] = []
    private var out: [UInt8] = []
    private var outOffset = 0
    private var fileReadInFlight = false   // TLS: a pread for the head file segment is on the pool
    private var responseEnded = false
    private var wantsWritable = false

    static let highWater = 256 * 1024
    static let lowWater = 64 * 1024
    static let idleOutputCapacity = 4096

    init(transport: Transport, client: ClientKey?, peer: String?, context: LoopContext) {
        self.transport = transport
        self.client = client
        self.peer = peer
        self.context = context
        self.parser = RequestParser(limits: context.server.configuration.limits)
        acceptedAt = context.loop.now
        lastWriteProgress = acceptedAt
    }

    /// What the connection waits for, for the loop's sweep.
    var wait: ConnectionTimeouts.Wait {
        switch state {
        case .reading:
            if !headStarted && pending.isEmpty {
                return hasAnswered ? .nextRequest(idleSince: idleSince) : .firstRequest(acceptedAt: acceptedAt)
            }
            return .head(since: hasAnswered ? headStartedAt : acceptedAt)
        case .responding:
            return isWaitingOnClient ? .client(lastProgress: lastWriteProgress) : .handler
        case .closed:
            return .handler
        }
    }

    var isIdle: Bool { state == .reading && !headStarted && pending.isEmpty }
    var belowHighWater: Bool { queuedBytes < Self.highWater }
    /// Bytes held in memory for the client (file ranges cost no memory).
    private var queuedBytes: Int {
        var n = out.count - outOffset
        for case .bytes(let b, let off) in segments { n += b.count - off }
        return n
    }
    private var hasQueuedOutput: Bool { !segments.isEmpty || outOffset < out.count }
    /// Output is queued that the client has not taken yet.
    var isWaitingOnClient: Bool { hasQueuedOutput || transport.hasPendingOutput }

    // MARK: events

    func handleEvents(_ events: UInt32) {
        // Writable again: the client took bytes (counts against the stall bound).
        // Incoming bytes do not count: a client that sends but never reads is stalled.
        if events & Readiness.writable != 0 { lastWriteProgress = context.loop.now }
        if events & (Readiness.readable | Readiness.readHangup | Readiness.hangup | Readiness.error) != 0 {
            socketDrained = false
        }
        flushOutput()
        drive()
    }

    /// Requests answered per `drive` before yielding to other connections.
    static let requestsPerTurn = 32
    /// File bytes one connection sends per loop turn before yielding to the others.
    static let fileBytesPerTurn = 2 << 20

    /// Reads and answers requests until the socket is drained, a response is
    /// waiting on its handler or the socket, or this turn's budget is spent.
    ///
    /// The one place that loops over requests: a handler that answers at once
    /// returns here (`finishResponse` only flips the state while driving)
    /// instead of recursing into the next request.
    private func drive() {
        guard !isDriving else { return }
        isDriving = true
        defer { isDriving = false }
        var budget = Self.requestsPerTurn
        var pendingNeedsMore = false  // `pending` holds a fragment the parser could not use yet
        while state == .reading && budget > 0 {
            if !pending.isEmpty && !pendingNeedsMore {
                let bytes = pending
                pending = []
                if bytes.withUnsafeBytes({ feed($0) }) { budget -= 1 } else { pendingNeedsMore = !pending.isEmpty }
                continue
            }
            guard !socketDrained && !inputEnded else { return }
            let scratch = context.scratch
            let n: Int
            do {
                switch try transport.read(into: scratch) {
                case .wouldBlock:
                    socketDrained = true
                    return
                case .processed(let count):
                    n = count
                }
            } catch {
                context.server.log(.debug, "read failed: \(error)")
                close()
                return
            }
            if n == 0 {
                // End of input while reading: nothing more can be answered.
                inputEnded = true
                close()
                return
            }
            if pendingNeedsMore {
                pending.append(contentsOf: UnsafeRawBufferPointer(rebasing: scratch[0..<n]))
                pendingNeedsMore = false
                continue
            }
            if feed(UnsafeRawBufferPointer(rebasing: scratch[0..<n])) { budget -= 1 }
        }
        if budget == 0 && state == .reading {
            // Fairness: let the loop's other connections run, then carry on.
            context.loop.execute { [weak self] in self?.drive() }
        }
    }

    /// Parses `bytes` up to the end of one request. The rest is copied to
    /// `pending` before the handler runs, so nothing points into the loop's
    /// shared read buffer while a handler (or a nested read) uses it.
    /// Returns true when a request was dispatched.
    private func feed(_ bytes: UnsafeRawBufferPointer) -> Bool {
        if !headStarted && bytes.first == 0x16 {
            // A TLS ClientHello on a plain port: clients such as skopeo probe https first
            // and fall back to http when the handshake fails. Not a malformed request.
            context.server.log(.debug, "TLS handshake on a plain HTTP port; closing")
            close()
            return false
        }
        var offset = 0
        // The parser may still have an event after the input is used up (`.end`
        // after a head or a body's last byte): call it until it returns nil.
        var mayHaveEvent = true
        while (offset < bytes.count || mayHaveEvent) && state == .reading {
            mayHaveEvent = false
            do {
                let (event, consumed) = try parser.parse(UnsafeRawBufferPointer(rebasing: bytes[offset...]))
                offset += consumed
                if consumed > 0 && !headStarted {
                    headStarted = true
                    headStartedAt = context.loop.now
                }
                guard let event else {
                    if consumed == 0 { break }
                    continue
                }
                mayHaveEvent = true
                switch event {
                case .head(let head, let framing):
                    current = (head, nil)
                    if let refusal = refusal(for: head, framing: framing) {
                        refuse(refusal.status, refusal.reason)
                        return false
                    }
                case .body:
                    break  // only methods answered with an error and a close carry bodies
                case .end:
                    headStarted = false
                    if offset < bytes.count { pending.append(contentsOf: bytes[offset...]) }
                    if let head = current?.head { dispatch(head) }
                    return true
                }
            } catch let error as HTTPParseError {
                refuse(error.status, error.reason)
                return false
            } catch {
                close()
                return false
            }
        }
        if offset < bytes.count && state != .closed {
            pending.append(contentsOf: bytes[offset...])
        }
        return false
    }

    /// Requests the server refuses before any handler sees them.
    private func refusal(for head: RequestHead, framing: BodyFraming) -> (status: Int, reason: String)? {
        let hasBody: Bool
        switch framing {
        case .none, .length(0): hasBody = false
        default: hasBody = true
        }
        switch head.method {
        case .get, .head:
            return hasBody ? (400, "a \(head.method.name) request carries no body") : nil
        case .unknown(let token):
            return (501, "method \(token) is not implemented")
        default:
            // Known methods that Berth does not serve are answered by the handler
            // (405 with Allow); a body they carry is not read, so the connection closes after.
            if hasBody { keepAlive = false; closeAfterResponse = true }
            return nil
        }
    }

    /// The request head did not arrive in time: 408 and close. (Logged at
    /// debug: under a slowloris flood this happens per connection.)
    func requestTimedOut(after nanos: UInt64) {
        guard state == .reading else { return }
        let seconds = Double(nanos / 1_000_000) / 1000
        refuse(408, "request head not complete within \(seconds) s", level: .debug)
    }

    private func refuse(_ status: Int, _ reason: String, level: HTTPServer.LogLevel = .info) {
        state = .responding
        lastWriteProgress = context.loop.now
        keepAlive = false
        let (contentType, body) = context.server.configuration.errorBody(status, reason)
        var head = ResponseHead(status: status)
        head.headers.add("Content-Type", contentType)
        head.headers.add("Content-Length", String(body.count))
        head.headers.add("Connection", "close")
        if status == 405 { head.headers.add("Allow", "GET, HEAD") }
        let request = current?.head
        let id = request.map { context.server.requestIDs.id(for: $0.headers) } ?? context.server.requestIDs.next()
        head.headers.add(RequestID.header, id)
        context.server.log(level, "request_id=\(id) refused request: \(status) \(reason)")
        current = nil
        if context.isObserved {
            var r = AccessRecord(unixMillis: Clock.unixMillis(), requestID: id, client: peer, method: request?.method.name,
                                 target: request?.target, status: status, bodyBytes: UInt64(body.count), durationNanos: 0)
            r.notes.errorMessage = reason
            context.observe(r)
        }
        send(head: head, body: body, file: nil)
    }

    private func dispatch(_ head: RequestHead) {
        state = .responding
        lastWriteProgress = context.loop.now
        responseEnded = false
        keepAlive = head.keepAlive && !closeAfterResponse
        let isObserved = context.isObserved
        if isObserved { dispatchedAt = Clock.monotonicNanos() }
        let writer = ResponseWriter(request: head, requestID: context.server.requestIDs.id(for: head.headers), isObserved: isObserved,
                                    loop: context.loop, connection: self)
        current = (head, writer)
        context.server.handler(writer)
    }

    // MARK: output (called by ResponseWriter)

    func send(head: ResponseHead, body: [UInt8]?, file: (FileDescriptor, Range<UInt64>)?) {
        var head = head
        if !keepAlive { head.headers.set("Connection", "close") }
        head.write(into: &out)
        if let body { out.append(contentsOf: body) }
        if let (fd, range) = file { appendFile(fd, range) }
        responseEnded = true
        flushOutput()
    }

    /// A prepared head (`PreparedHead`), then the request's id, `Connection: close`
    /// when the connection ends, and the body.
    func send(prepared: [UInt8], requestID: String, body: [UInt8]?) {
        out.append(contentsOf: prepared)
        out.append(contentsOf: "X-Request-Id: ".utf8)
        var id = requestID
        id.withUTF8 { out.append(contentsOf: $0) }  // valid by construction (RequestID.isValid or generated)
        out.append(contentsOf: [0x0d, 0x0a])
        if !keepAlive { out.append(contentsOf: "Connection: close\r\n".utf8) }
        out.append(contentsOf: [0x0d, 0x0a])
        if let body { out.append(contentsOf: body) }
        responseEnded = true
        flushOutput()
    }

    func sendHead(_ head: ResponseHead) {
        var head = head
        if !keepAlive { head.headers.set("Connection", "close") }
        head.write(into: &out)
        flushOutput()
    }

    func queueBody(_ bytes: UnsafeRawBufferPointer, chunked: Bool) -> Bool {
        if chunked {
            appendHex(bytes.count, to: &out)
            out.append(contentsOf: [0x0d, 0x0a])
            out.append(contentsOf: bytes)
            out.append(contentsOf: [0x0d, 0x0a])
        } else {
            out.append(contentsOf: bytes)
        }
        if out.count - outOffset >= Self.lowWater { flushOutput() }
        if belowHighWater { return true }
        wantsWritable = true
        return false
    }

    func flushQueued() { flushOutput() }

    func queueFile(_ fd: FileDescriptor, range: Range<UInt64>) {
        appendFile(fd, range)
        flushOutput()
    }

    /// Queues a file range after everything queued so far; joins it to the
    /// previous range when it continues it.
    private func appendFile(_ fd: FileDescriptor, _ range: Range<UInt64>) {
        guard !range.isEmpty else { return }
        if outOffset < out.count {
            segments.append(.bytes(out, offset: outOffset))
            out = []
            outOffset = 0
        } else if case .file(let f, let next, let end)? = segments.last, f === fd, end == range.lowerBound {
            segments[segments.count - 1] = .file(f, next: next, end: range.upperBound)
            return
        }
        segments.append(.file(fd, next: range.lowerBound, end: range.upperBound))
    }

    func endBody(chunked: Bool) {
        if chunked { out.append(contentsOf: "0\r\n\r\n".utf8) }
        responseEnded = true
        flushOutput()
    }

    func abort() {
        close()
    }

    /// Writes what is queued, in order; finishes the response when everything is out.
    private func flushOutput() {
        guard state == .responding else { return }
        do {
            if transport.hasPendingOutput, try !transport.flush() { return }
            while let first = segments.first {
                switch first {
                case .bytes(let b, var off):
                    let done = try writeBytes(b, from: &off)
                    if !done { segments[0] = .bytes(b, offset: off); return }
                case .file(let fd, var next, let end):
                    let done = try sendFile(fd, next: &next, end: end)
                    if !done { segments[0] = .file(fd, next: next, end: end); return }
                }
                segments.removeFirst()
            }
            if !(try writeBytes(out, from: &outOffset)) { return }
            if outOffset > 0 {
                if out.capacity > 4 * Self.highWater { out = [] } else { out.removeAll(keepingCapacity: true) }
                outOffset = 0
            }
            if transport.hasPendingOutput, try !transport.flush() { return }
        } catch {
            context.server.log(.debug, "write failed: \(error)")
            close()
            return
        }
        if wantsWritable, let writer = current?.writer {
            wantsWritable = false
            // On the next turn, never from inside the writer's own `write`:
            // a producer re-entered mid-send would send twice or lose its place.
            context.loop.execute { [weak writer] in
                guard let writer, writer.isActive else { return }
                writer.onWritable?()
            }
        }
        if responseEnded { finishResponse() }
    }

    /// Writes `bytes[offset...]`; true when all of it is out.
    private func writeBytes(_ bytes: [UInt8], from offset: inout Int) throws -> Bool {
        while offset < bytes.count {
            let r = try bytes.withUnsafeBytes { try transport.write(UnsafeRawBufferPointer(rebasing: $0[offset...])) }
            guard case .processed(let n) = r else { return false }
            offset += n
            lastWriteProgress = context.loop.now
        }
        return true
    }

    /// This turn's share of file bytes is sent: the rest goes on the next turn,
    /// after the loop's other connections (false: not all out yet).
    private func continueNextTurn() -> Bool {
        context.loop.execute { [weak self] in self?.flushOutput() }
        return false
    }

    /// Sends `next..<end` of a file; true when all of it is out. Zero-copy on
    /// plain connections. Through TLS, what the page cache holds is read on
    /// the loop with RWF_NOWAIT (it never waits for the disk) straight into
    /// TLS; the rest is read on the pool (reads may block) and the bytes go
    /// in front of the rest of the range.
    private func sendFile(_ fd: FileDescriptor, next: inout UInt64, end: UInt64) throws -> Bool {
        if transport.canSendFile {
            // At most `fileBytesPerTurn` per turn (nginx's sendfile_max_chunk): a reader
            // that keeps up would otherwise hold the loop in one sendfile for the whole
            // file, and the socket would go out in a trickle of small segments.
            var budget = Self.fileBytesPerTurn
            while next < end {
                if budget == 0 { return continueNextTurn() }
                var offset = off_t(next)
                let count = Int(min(end - next, UInt64(budget)))
                guard case .processed(let n) = try transport.sendFile(from: fd.fd, offset: &offset, count: count) else { return false }
                if n == 0 { throw IOError(errno: EIO, call: "sendfile: file shorter than its range") }
                next += UInt64(n)
                budget -= n
                lastWriteProgress = context.loop.now
            }
            return true
        }
        if next >= end { return true }
        if fileReadInFlight { return false }
        // A pool round trip per chunk cost two context switches and an
        // allocation; a cached blob never needs one.
        let buffer = context.fileScratch
        var budget = Self.fileBytesPerTurn
        while next < end {
            if budget <= 0 { return continueNextTurn() }
            let want = Int(min(end - next, UInt64(buffer.count)))
            guard case .processed(let n) = try Posix.preadNoWait(fd: fd.fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[..<want]),
                                                                  offset: off_t(next)) else { break }
            if n == 0 { throw IOError(errno: EIO, call: "pread: file shorter than its range") }
            var sent = 0
            while sent < n, case .processed(let w) = try transport.write(UnsafeRawBufferPointer(rebasing: buffer[sent..<n])) { sent += w }
            next += UInt64(sent)
            budget -= sent
            if sent > 0 { lastWriteProgress = context.loop.now }
            if sent < n { return false }  // backed up: the rest is read again after `flush`
        }
        if next >= end { return true }
        fileReadInFlight = true
        let chunk = Int(min(end - next, UInt64(Self.highWater)))
        let at = next
        context.server.pool.run(on: context.loop, {
            // Not zero-filled first: pread overwrites what it returns (the fill
            // was a tenth of the instructions per MiB of a blob over TLS).
            let buf = try [UInt8](unsafeUninitializedCapacity: chunk) { b, count in
                count = try Posix.pread(fd: fd.fd, into: UnsafeMutableRawBufferPointer(b), offset: off_t(at))
            }
            if buf.isEmpty { throw IOError(errno: EIO, call: "pread: file shorter than its range") }
            return buf
        }, then: { [weak self] result in
            guard let self, self.state == .responding else { return }
            self.fileReadInFlight = false
            switch result {
            case .success(let bytes):
                // The chunk read goes first; the file segment resumes after it.
                guard case .file(let f, let n, let e)? = self.segments.first, f === fd, n == at else { return }
                self.segments[0] = .file(f, next: n + UInt64(bytes.count), end: e)
                self.segments.insert(.bytes(bytes, offset: 0), at: 0)
                self.flushOutput()
            case .failure(let error):
                self.context.server.log(.warning, "file read failed: \(error)")
                self.close()
            }
        })
        return false
    }

    private func finishResponse() {
        if let writer = current?.writer { logAccess(writer, isComplete: true) }
        current?.writer?.finished()
        current = nil
        if !keepAlive || closeAfterResponse {
            transport.shutdownOutput()
            close()
            return
        }
        state = .reading
        hasAnswered = true
        idleSince = context.loop.now
        headStartedAt = idleSince  // for pipelined bytes already waiting in `pending`
        // An idle connection keeps no big output buffer (a 4 MiB manifest answer grows it).
        if out.capacity > Self.idleOutputCapacity { out = [] }
        if inputEnded && isIdle { close(); return }
        drive()  // a no-op when called from inside `drive`, which carries on by itself
    }

    // MARK: closing

    func close() {
        guard state != .closed else { return }
        if let writer = current?.writer { logAccess(writer, isComplete: false) }
        state = .closed
        context.loop.deregister(fd: transport.fd)
        transport.close()
        segments = []
        context.remove(self)
        if let writer = current?.writer {
            current = nil
            writer.connectionClosed()
        }
    }

    // MARK: access log

    /// The access-log line of the request `writer` answered, or of one cut
    /// short (then its body bytes are those that had left the queue).
    private func logAccess(_ writer: ResponseWriter, isComplete: Bool) {
        guard writer.isObserved else { return }
        let duration = Clock.monotonicNanos() &- dispatchedAt
        var bytes = writer.bodyBytes
        if !isComplete {
            var unsent = UInt64(queuedBytes)
            for case .file(_, let next, let end) in segments { unsent += end - next }
            bytes -= min(bytes, unsent)
        }
        // Moved, not copied (a retain and a release per note): the answer is
        // over, and nothing reads the writer's notes after this.
        var notes = AccessNotes()
        swap(&notes, &writer.notes)
        context.observe(unixMillis: Clock.unixMillis() - Int64(duration / 1_000_000), requestID: writer.requestID, client: peer,
                        method: writer.request.method.name, target: writer.request.target, status: writer.status,
                        bodyBytes: bytes, durationNanos: duration, isComplete: isComplete, notes: notes)
    }


    /// Closes an idle connection now; marks a busy one to close after its response.
    func closeGracefully() {
        if isIdle { close() } else { closeAfterResponse = true }
    }
}

/// Appends `value` in lowercase hex (a chunk-size line).
@inline(__always)
func appendHex(_ value: Int, to out: inout [UInt8]) {
    if value == 0 { out.append(0x30); return }
    var shift = (Int.bitWidth - value.leadingZeroBitCount + 3) / 4 * 4 - 4
    while shift >= 0 {
        let d = UInt8((value >> shift) & 0xf)
        out.append(d < 10 ? 0x30 + d : 0x57 + d)
        shift -= 4
    }
}
