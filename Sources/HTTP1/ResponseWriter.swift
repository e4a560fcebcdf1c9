import Reactor

/// The answer to one request, written by a handler on the connection's loop,
/// at once or later (after an upstream fetch).
///
/// Three shapes: a whole body from memory (`respond(_:body:)`), a range of an
/// open file (`respond(_:file:range:)`, zero-copy `sendfile` on plain
/// connections), or a stream (`start`, `write`, `end`) with backpressure:
/// `write` returns false once the connection holds more than its high-water
/// mark, and `onWritable` runs when it has drained. For HEAD requests the head
/// is sent and every body byte is dropped, so handlers write one code path.
///
/// Loop thread only.
public final class ResponseWriter {
    public let request: RequestHead
    public let loop: EventLoop
    weak var connection: ServerConnection?
    var isHeadOnly: Bool { request.method == .head }

    enum Phase { case idle, streaming(chunked: Bool, remaining: UInt64?), done }
    var phase = Phase.idle

    /// Runs when buffered output falls below the low-water mark after `write` returned false.
    public var onWritable: (() -> Void)?
    /// Runs once if the connection closes before the response ended (client gone, timeout, abort).
    public var onClose: (() -> Void)?
    /// Added to whichever head the handler sends (a router's `OCI-Namespace`).
    public var extraHeaders = HTTPHeaders()
    /// Sent as `X-Request-Id` on the answer; names the request in the logs.
    public let requestID: String
    /// What the access log says beyond status, bytes and times (set by the handler).
    public var notes = AccessNotes()
    /// The status sent; 0 until a head is out.
    private(set) var status = 0
    /// Body bytes handed to the connection (none for HEAD).
    private(set) var bodyBytes: UInt64 = 0

    /// An access log or an observer is on: the answer's `Cache-Status` is noted.
    let isObserved: Bool

    init(request: RequestHead, requestID: String, isObserved: Bool, loop: EventLoop, connection: ServerConnection) {
        self.request = request
        self.requestID = requestID
        self.isObserved = isObserved
        self.loop = loop
        self.connection = connection
    }

    /// The handler's head with what every answer carries.
    private func completed(_ head: ResponseHead) -> ResponseHead {
        var head = head
        for (name, value) in extraHeaders { head.headers.add(name, value) }
        head.headers.add(RequestID.header, requestID)
        status = head.status
        if isObserved { notes.cacheStatus = head.headers["Cache-Status"] }
        return head
    }

    /// True while the client is connected and the response has not ended.
    public var isActive: Bool {
        if case .done = phase { return false }
        return connection != nil
    }

    /// A complete response from memory. Sets `Content-Length`.
    public func respond(_ head: ResponseHead, body: [UInt8] = []) {
        guard case .idle = phase, let c = connection else { return }
        var head = completed(head)
        head.headers.set("Content-Length", String(body.count))
        phase = .done
        if !isHeadOnly { bodyBytes += UInt64(body.count) }
        c.send(head: head, body: isHeadOnly ? nil : body, file: nil)
    }

    /// A head serialized once for a whole body of `bodyCount` bytes, to answer
    /// many requests with (`respond(_:body:)` with a `PreparedHead`): what this
    /// writer would send for `head`, `extraHeaders` and `Content-Length` included,
    /// except `X-Request-Id` and `Connection: close`, which each answer adds.
    public func prepare(_ head: ResponseHead, bodyCount: Int) -> PreparedHead {
        var head = head
        for (name, value) in extraHeaders { head.headers.add(name, value) }
        head.headers.set("Content-Length", String(bodyCount))
        var bytes: [UInt8] = []
        head.write(into: &bytes)
        bytes.removeLast(2)  // the empty line: the answer's own fields go before it
        return PreparedHead(status: head.status, bytes: bytes, bodyCount: bodyCount, cacheStatus: head.headers["Cache-Status"])
    }

    /// A complete response from memory with a prepared head: the bytes are
    /// copied out as they are, no field is built or checked per answer. The
    /// head carries the `extraHeaders` of the writer it was prepared with; this
    /// writer's are not added. `body` must be `prepared.bodyCount` bytes long.
    public func respond(_ prepared: PreparedHead, body: [UInt8]) {
        guard case .idle = phase, let c = connection else { return }
        precondition(body.count == prepared.bodyCount, "body length differs from the prepared Content-Length")
        status = prepared.status
        if isObserved { notes.cacheStatus = prepared.cacheStatus }
        phase = .done
        if !isHeadOnly { bodyBytes += UInt64(body.count) }
        c.send(prepared: prepared.bytes, requestID: requestID, body: isHeadOnly ? nil : body)
    }

    /// `range` of `file` as the body. Sets `Content-Length` to the range's length.
    public func respond(_ head: ResponseHead, file: FileDescriptor, range: Range<UInt64>) {
        guard case .idle = phase, let c = connection else { return }
        var head = completed(head)
        head.headers.set("Content-Length", String(range.count))
        phase = .done
        if !isHeadOnly { bodyBytes += UInt64(range.count) }
        c.send(head: head, body: nil, file: isHeadOnly || range.isEmpty ? nil : (file, range))
    }

    /// Starts a streamed body: with `contentLength` the body is sent as is,
    /// without it chunked.
    public func start(_ head: ResponseHead, contentLength: UInt64?) {
        guard case .idle = phase, let c = connection else { return }
        var head = completed(head)
        if let contentLength {
            head.headers.set("Content-Length", String(contentLength))
            head.headers.remove("Transfer-Encoding")
        } else {
            head.headers.set("Transfer-Encoding", "chunked")
            head.headers.remove("Content-Length")
        }
        if isHeadOnly {
            phase = .done
            c.send(head: head, body: nil, file: nil)
            return
        }
        phase = .streaming(chunked: contentLength == nil, remaining: contentLength)
        c.sendHead(head)
    }

    /// Appends body bytes. Returns false when the caller should wait for `onWritable`.
    @discardableResult
    public func write(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard case .streaming(let chunked, let remaining) = phase, let c = connection else { return false }
        if isHeadOnly || bytes.isEmpty { return c.belowHighWater }
        if let remaining {
            precondition(UInt64(bytes.count) <= remaining, "streamed body longer than its Content-Length")
            phase = .streaming(chunked: false, remaining: remaining - UInt64(bytes.count))
        }
        bodyBytes += UInt64(bytes.count)
        return c.queueBody(bytes, chunked: chunked)
    }

    /// Sends what `write` queued now: small writes otherwise wait until 64 KiB
    /// gather or the response ends (a progress line must not).
    public func flush() {
        guard case .streaming = phase, let c = connection else { return }
        c.flushQueued()
    }

    /// Appends `range` of `file` to a streamed body (zero-copy on plain
    /// connections). Consecutive ranges of one file join into one pending
    /// send, so a reader following a growing file just calls this as bytes
    /// land. In a chunked body the range is one chunk.
    public func writeFile(_ file: FileDescriptor, range: Range<UInt64>) {
        guard case .streaming(let chunked, let remaining) = phase, let c = connection, !range.isEmpty else { return }
        if isHeadOnly { return }
        bodyBytes += UInt64(range.count)
        if chunked {
            var size: [UInt8] = []
            appendHex(Int(range.count), to: &size)
            size += [0x0d, 0x0a]
            _ = size.withUnsafeBytes { c.queueBody($0, chunked: false) }
            c.queueFile(file, range: range)
            _ = [UInt8]([0x0d, 0x0a]).withUnsafeBytes { c.queueBody($0, chunked: false) }
            return
        }
        if let remaining {
            precondition(UInt64(range.count) <= remaining, "streamed body longer than its Content-Length")
            phase = .streaming(chunked: false, remaining: remaining - UInt64(range.count))
        }
        c.queueFile(file, range: range)
    }

    /// Ends a streamed body. Ending short of the declared length cuts the connection:
    /// a client must never take a truncated body for a whole one.
    public func end() {
        guard case .streaming(let chunked, let remaining) = phase, let c = connection else { return }
        phase = .done
        if let remaining, remaining > 0 {
            c.abort()
            return
        }
        c.endBody(chunked: chunked)
    }

    /// Cuts the connection now: the client sees an incomplete response.
    public func abort() {
        phase = .done
        connection?.abort()
    }

    /// The response is out: drop callbacks (they often capture this writer).
    func finished() {
        phase = .done
        onClose = nil
        onWritable = nil
    }

    func connectionClosed() {
        connection = nil
        let wasDone: Bool
        if case .done = phase { wasDone = true } else { wasDone = false }
        phase = .done
        let cb = onClose
        onClose = nil
        onWritable = nil
        if !wasDone { cb?() }
    }
}


/// A response head serialized once (`ResponseWriter.prepare`) and sent as is
/// for many answers: a cached manifest's.
public struct PreparedHead: Sendable {
    /// The status code.
    public let status: Int
    /// Status line and fields, without the closing empty line.
    let bytes: [UInt8]
    /// The `Content-Length` it carries.
    public let bodyCount: Int
    /// Its `Cache-Status` value, for the access log.
    public let cacheStatus: String?
}
