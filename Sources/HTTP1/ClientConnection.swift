#if canImport(Glibc)
import Glibc
#endif
import Reactor
import TLS

/// One connection to an origin, used by one `ClientTask` at a time and pooled
/// between them. Registered once, edge-triggered for read and write.
/// Loop thread only.
final class ClientConnection: Selectable {
    unowned let client: HTTPClient
    let origin: HTTPURL
    let fd: Int32
    private var transport: Transport
    private var parser = ResponseParser()
    /// `tunneling`: connected to the proxy, the CONNECT answer not yet read.
    private enum State { case connecting, tunneling, ready, closed }
    private var state: State
    private var task: ClientTask?
    private var out: [UInt8] = []
    private var outOffset = 0
    private var socketDrained = false
    private var paused = false
    private var sawResponseBytes = false
    private var keepAlive = true
    private var requestCount = 0
    private var idleSince: UInt64 = 0

    /// Through a proxy: `address` is the proxy's, and a `CONNECT` to the origin
    /// opens a tunnel before TLS (if any) and the first request.
    private let viaProxy: Bool
    private var tunnelReply: [UInt8] = []

    init(client: HTTPClient, origin: HTTPURL, address: SocketAddress, viaProxy: Bool = false) throws {
        self.client = client
        self.origin = origin
        self.viaProxy = viaProxy
        let (fd, connected) = try Sockets.connect(to: address)
        self.fd = fd
        self.transport = SocketTransport(fd: fd)
        self.state = .connecting
        if connected { try connectedToPeer() }
        try client.loop.register(fd: fd, events: Readiness.readable | Readiness.writable | Readiness.readHangup | Readiness.edge, handler: self)
    }

    /// TCP is up: ask the proxy for a tunnel, or start TLS.
    private func connectedToPeer() throws {
        guard viaProxy else {
            state = .ready
            return try startTLSIfNeeded()
        }
        state = .tunneling
        // Sent before any request bytes; `drive` writes `out` only once ready.
        let authority = origin.authority
        let connect = Array("CONNECT \(authority) HTTP/1.1\r\nHost: \(authority)\r\n\r\n".utf8)
        // A fresh socket's send buffer takes these few bytes whole.
        guard case .processed(connect.count) = try connect.withUnsafeBytes({ try Posix.send(fd: fd, $0) }) else {
            throw HTTPClientError(.connectFailed, "proxy: CONNECT not sent whole")
        }
    }

    /// Reads the proxy's answer to CONNECT: 2xx opens the tunnel; anything else fails the request.
    private func readTunnelReply() throws {
        while true {
            var chunk = [UInt8](repeating: 0, count: 4096)
            guard case .processed(let n) = try chunk.withUnsafeMutableBytes({ try Posix.recv(fd: fd, into: $0) }) else { return }
            if n == 0 { throw HTTPClientError(.connectFailed, "proxy closed the connection before answering CONNECT \(origin.authority)") }
            tunnelReply += chunk[..<n]
            if let end = Self.headEnd(tunnelReply) {
                let statusLine = String(decoding: tunnelReply.prefix { $0 != 0x0d }, as: UTF8.self)
                let parts = statusLine.split(separator: " ", maxSplits: 2)
                // A refusal may come with a body (an error page): only its status line matters.
                guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]), (200..<300).contains(status) else {
                    throw HTTPClientError(.connectFailed, "proxy refused CONNECT \(origin.authority): \(statusLine.prefix(200))")
                }
                // A tunnel carries nothing of the origin's before the client speaks.
                guard end == tunnelReply.count else { throw HTTPClientError(.connectFailed, "proxy sent bytes after its CONNECT answer") }
                tunnelReply = []
                state = .ready
                return try startTLSIfNeeded()
            }
            if tunnelReply.count > 16 * 1024 { throw HTTPClientError(.connectFailed, "proxy's CONNECT answer is over 16 KiB") }
        }
    }

    private func startTLSIfNeeded() throws {
        guard origin.isSecure else { return }
        guard let tls = client.tls else { throw HTTPClientError(.tls, "no TLS context") }
        // The TLS transport takes over the descriptor from the plain wrapper.
        let plain = transport as! SocketTransport
        plain.relinquish()
        do {
            transport = try TLSTransport(connectedFD: fd, context: tls, serverName: origin.host)
        } catch {
            throw HTTPClientError(.tls, "\(origin.authority): \(error)")
        }
    }

    /// The index just past the first CR LF CR LF.
    static func headEnd(_ b: [UInt8]) -> Int? {
        guard b.count >= 4 else { return nil }
        for i in 3..<b.count where b[i] == 0x0a && b[i - 1] == 0x0d && b[i - 2] == 0x0a && b[i - 3] == 0x0d { return i + 1 }
        return nil
    }

    func isReusable(now: UInt64, idleTimeout: UInt64) -> Bool {
        state == .ready && keepAlive && task == nil && now &- idleSince < idleTimeout
    }

    func send(_ head: RequestHead, for task: ClientTask) {
        self.task = task
        requestCount += 1
        sawResponseBytes = false
        paused = false
        parser.expectResponse(toHEAD: head.method == .head)
        head.write(into: &out)
        if state == .ready { drive() }
    }

    func resumeReading() {
        guard paused else { return }
        paused = false
        // Even with nothing stashed: the pause may have come with the body's
        // last byte, and its `.end` is still to be parsed.
        let bytes = stash
        stash = []
        bytes.withUnsafeBytes { consume($0) }
        if !paused { drive() }
    }

    func handleEvents(_ events: UInt32) {
        if events & (Readiness.readable | Readiness.readHangup | Readiness.hangup | Readiness.error) != 0 {
            socketDrained = false
        }
        if state == .connecting {
            let err = Posix.socketError(fd: fd)
            if err != 0 {
                fail(HTTPClientError(.connectFailed, "\(origin.authority): \(IOError(errno: err, call: "connect"))"))
                return
            }
            guard events & Readiness.writable != 0 else { return }
            do { try connectedToPeer() } catch let e as HTTPClientError { fail(e); return } catch {
                fail(HTTPClientError(.connectFailed, "\(origin.authority): \(error)"))
                return
            }
        }
        if state == .tunneling {
            do { try readTunnelReply() } catch let e as HTTPClientError { fail(e); return } catch {
                fail(HTTPClientError(.connectFailed, "proxy: \(error)"))
                return
            }
            guard state == .ready else { return }
        }
        if task == nil {
            // Idle in the pool: any readiness means the server closed or misbehaved.
            if state == .ready && events & (Readiness.readable | Readiness.readHangup | Readiness.hangup | Readiness.error) != 0 {
                client.forget(self)
                close()
            }
            return
        }
        drive()
    }

    private func drive() {
        guard state == .ready, task != nil else { return }
        do {
            if transport.hasPendingOutput, try !transport.flush() { return }
            while outOffset < out.count {
                let r = try out.withUnsafeBytes { try transport.write(UnsafeRawBufferPointer(rebasing: $0[outOffset...])) }
                guard case .processed(let n) = r else { break }
                outOffset += n
            }
            if outOffset == out.count { out.removeAll(keepingCapacity: true); outOffset = 0 }
            if transport.hasPendingOutput { _ = try transport.flush() }
        } catch let e as TLSError {
            fail(HTTPClientError(.tls, "\(origin.authority): \(e)"))
            return
        } catch {
            fail(HTTPClientError(.closedEarly, "\(origin.authority): \(error)"))
            return
        }
        readResponse()
    }

    /// Reads per turn before yielding: a fast upstream streaming a large body
    /// must not keep its loop from every other connection until the body ends.
    static let readsPerTurn = 16

    private func readResponse() {
        var budget = Self.readsPerTurn
        while state == .ready && task != nil && !paused && !socketDrained {
            if budget == 0 {
                if !yieldScheduled {
                    yieldScheduled = true
                    client.loop.execute { [weak self] in
                        guard let self else { return }
                        self.yieldScheduled = false
                        self.readResponse()
                    }
                }
                return
            }
            budget -= 1
            let n: Int
            do {
                switch try transport.read(into: scratch) {
                case .wouldBlock:
                    socketDrained = true
                    return
                case .processed(let count): n = count
                }
            } catch let e as TLSError {
                fail(HTTPClientError(.tls, "\(origin.authority): \(e)"))
                return
            } catch {
                fail(HTTPClientError(.closedEarly, "\(origin.authority): \(error)"))
                return
            }
            if n == 0 {
                keepAlive = false
                do {
                    if case .end? = try parser.finish() {
                        complete()
                    } else {
                        fail(HTTPClientError(.closedEarly, "\(origin.authority) closed the connection mid-response"))
                    }
                } catch {
                    fail(HTTPClientError(.closedEarly, "\(origin.authority) closed the connection mid-response"))
                }
                return
            }
            sawResponseBytes = true
            consume(UnsafeRawBufferPointer(rebasing: scratch[0..<n]))
        }
    }

    private func consume(_ bytes: UnsafeRawBufferPointer) {
        var offset = 0
        // `.end` of a bodiless response, or of a body whose last byte ended the
        // buffer, comes from one more call with no bytes left.
        var mayEnd = true
        while offset < bytes.count || mayEnd, !paused, let task {
            mayEnd = false
            let event: ParseEvent<ResponseHead>?
            let consumed: Int
            do {
                (event, consumed) = try parser.parse(UnsafeRawBufferPointer(rebasing: bytes[offset...]))
            } catch {
                keepAlive = false
                fail(HTTPClientError(.protocolError, "\(origin.authority): \(error)"))
                return
            }
            let start = offset
            offset += consumed
            guard let event else {
                if consumed == 0 { break }
                continue
            }
            switch event {
            case .head(let head, _):
                mayEnd = true
                keepAlive = head.keepAlive
                task.connectionReceivedHead(head)
            case .body(let range):
                // `range` indexes the slice handed to the parser, which began at `start`.
                let slice = UnsafeRawBufferPointer(rebasing: bytes[(start + range.lowerBound)..<(start + range.upperBound)])
                mayEnd = true
                if !task.connectionReceivedBody(slice) { paused = true }
            case .end:
                complete()
                return
            }
        }
        if offset < bytes.count && state == .ready && paused {
            stash = Array(bytes[offset...])  // read past the pause: handed over on resume
        }
    }

    /// Bytes read before the delegate paused, not yet parsed.
    private var stash: [UInt8] = []
    private var yieldScheduled = false
    /// Read buffer, one per connection: a delegate may start another request
    /// on the same loop while this one's bytes are being handed out.
    private let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)

    deinit { scratch.deallocate() }

    private func complete() {
        guard let t = task else { return }
        task = nil
        idleSince = client.loop.now
        let reusable = keepAlive && state == .ready && out.isEmpty && !transport.hasPendingOutput
        t.connectionFinishedResponse(reusable: reusable)
    }

    private func fail(_ error: HTTPClientError) {
        let t = task
        task = nil
        let reused = requestCount > 1
        let before = !sawResponseBytes
        close()
        t?.connectionFailed(error, beforeResponse: before, wasReused: reused)
    }

    func close() {
        guard state != .closed else { return }
        state = .closed
        client.loop.deregister(fd: fd)
        transport.close()
    }
}
