import Foundation
import Reactor
import TLS
import XCTest
import TestSupport

/// An EventLoop running on its own thread for one test.
final class LoopThread {
    let loop: EventLoop
    private var thread: OSThread?

    init() throws {
        loop = try EventLoop()
        let loop = self.loop
        thread = OSThread(name: "tls-test-loop") { loop.run() }
    }

    /// Runs `body` on the loop and waits (bounded) for its result.
    func sync<T>(_ body: @escaping () throws -> T) throws -> T {
        let done = DispatchSemaphore(value: 0)
        var result: Result<T, Error>?
        loop.execute {
            result = Result { try body() }
            done.signal()
        }
        guard done.wait(timeout: .now() + 10) == .success, let result else {
            throw Subprocess.Failure(description: "event loop did not answer within 10 s")
        }
        return try result.get()
    }

    func stop() {
        loop.stop()
        thread?.join()
        thread = nil
    }
}

/// One TLS connection driven the way Berth's HTTP code drives a Transport:
/// registered once, edge-triggered for read and write; `read` until
/// `.wouldBlock`, `flush` on writability. Loop thread only.
final class Pump: Selectable {
    let loop: EventLoop
    let transport: TLSTransport
    private var isConnecting: Bool
    private var isClosed = false

    /// Bytes still to send, and how many went out.
    var outgoing: [UInt8] = []
    var sent = 0
    /// Send close_notify (and FIN) once `outgoing` is out.
    var shutdownWhenSent = false
    private var didShutdown = false
    /// Everything decrypted so far (unless `keepsInput` is false).
    var incoming: [UInt8] = []
    var keepsInput = true
    var receivedCount = 0

    /// Read at most this much per timer tick instead of on readiness (a slow peer).
    var slowReadBytesPerTick: Int?
    var slowReadIntervalNanos: UInt64 = 2_000_000

    /// Called after input arrives; may set `outgoing`.
    var onInput: ((Pump) -> Void)?
    /// Finish when this returns true (checked after every step); default: at end of input.
    var isDone: ((Pump) -> Bool)?
    /// Called once, with the error if the connection failed.
    var onFinish: ((Pump, Error?) -> Void)?

    // What the transport did, for assertions.
    var sawPendingOutput = false
    var sawWriteWouldBlock = false
    var sawEndOfInput = false

    private var readBuffer = [UInt8](repeating: 0, count: 64 * 1024)

    init(loop: EventLoop, transport: TLSTransport, connecting: Bool = false) {
        self.loop = loop
        self.transport = transport
        self.isConnecting = connecting
    }

    func start() throws {
        try loop.register(fd: transport.fd, events: Readiness.readable | Readiness.writable | Readiness.readHangup | Readiness.edge, handler: self)
        if let bytes = slowReadBytesPerTick { scheduleSlowRead(bytes) }
    }

    /// Strictly what the HTTP code does: on writability `flush` (which also
    /// drives an unfinished handshake) and then write more; on readability
    /// `read` until `.wouldBlock`, then write whatever the input produced.
    /// Nothing else: a handshake that needs anything more would stall here.
    func handleEvents(_ events: UInt32) {
        if isConnecting {
            let error = Posix.socketError(fd: transport.fd)
            if error != 0 { return finish(IOError(errno: error, call: "connect")) }
            if events & (Readiness.writable | Readiness.error | Readiness.hangup) == 0 { return }
            isConnecting = false
        }
        guard !isClosed else { return }
        do {
            if events & Readiness.writable != 0 {
                if try transport.flush() { try writeMore() } else { sawPendingOutput = true }
            }
            if events & (Readiness.readable | Readiness.readHangup | Readiness.hangup | Readiness.error) != 0,
               slowReadBytesPerTick == nil {
                try readAvailable(limit: .max)
            }
            checkDone()
        } catch {
            finish(error)
        }
    }

    private func scheduleSlowRead(_ bytes: Int) {
        loop.schedule(afterNanos: slowReadIntervalNanos) { [weak self] in
            guard let self, !self.isClosed else { return }
            if !self.isConnecting {
                do {
                    try self.readAvailable(limit: bytes)
                    self.checkDone()
                } catch {
                    self.finish(error)
                }
            }
            if !self.isClosed { self.scheduleSlowRead(bytes) }
        }
    }

    private func checkDone() {
        if !isClosed, isDone?(self) ?? sawEndOfInput { finish(nil) }
    }

    private func writeMore() throws {
        while sent < outgoing.count {
            let result = try outgoing.withUnsafeBytes { try transport.write(UnsafeRawBufferPointer(rebasing: $0[sent...])) }
            guard case .processed(let n) = result else {
                if transport.isHandshakeComplete { sawWriteWouldBlock = true }
                break
            }
            sent += n
            if transport.hasPendingOutput { sawPendingOutput = true }
        }
        if sent == outgoing.count && !outgoing.isEmpty && shutdownWhenSent && !didShutdown {
            didShutdown = true
            transport.shutdownOutput()
        }
    }

    private func readAvailable(limit: Int) throws {
        var budget = limit
        while budget > 0 && !sawEndOfInput {
            let want = min(budget, readBuffer.count)
            let result = try readBuffer.withUnsafeMutableBytes { try transport.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[..<want])) }
            switch result {
            case .wouldBlock:
                return
            case .processed(0):
                sawEndOfInput = true
            case .processed(let n):
                if keepsInput { incoming.append(contentsOf: readBuffer[..<n]) }
                receivedCount += n
                budget -= n
                let before = outgoing.count
                onInput?(self)
                if outgoing.count != before { try writeMore() }
            }
        }
    }

    func finish(_ error: Error?) {
        guard !isClosed else { return }
        isClosed = true
        if error == nil { transport.shutdownOutput() }
        loop.deregister(fd: transport.fd)
        transport.close()
        onFinish?(self, error)
        onFinish = nil
        onInput = nil
        isDone = nil
    }
}

/// A TLS server on 127.0.0.1:0 answering every request head with a fixed response.
final class TestServer: Selectable {
    let loop: EventLoop
    let fd: Int32
    let port: UInt16
    private let contextProvider: () -> TLSContext
    /// Connections accepted and not finished; loop thread only.
    private var connections: [ObjectIdentifier: Pump] = [:]
    /// Errors seen by server connections; loop thread only.
    var errors: [Error] = []
    /// Customizes each accepted connection (default: fixed HTTP response).
    var configure: ((Pump) -> Void)?

    static let body = "hello over tls\n"
    static let response = Array("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)".utf8)

    init(loop: EventLoop, context: @escaping () -> TLSContext) throws {
        self.loop = loop
        contextProvider = context
        fd = try Sockets.listen(on: SocketAddress(ip: "127.0.0.1", port: 0)!, reusePort: false)
        port = try Posix.localAddress(fd: fd).port
    }

    /// Call on the loop thread.
    func start() throws {
        try loop.register(fd: fd, events: Readiness.readable, handler: self)
    }

    func handleEvents(_ events: UInt32) {
        while true {
            let accepted: IOResult<Int32>
            do { accepted = try Posix.accept(fd: fd) } catch { errors.append(error); return }
            guard case .processed(let client) = accepted else { return }
            do {
                try Sockets.setNoDelay(client)
                let pump = Pump(loop: loop, transport: try TLSTransport(acceptedFD: client, context: contextProvider()))
                pump.onInput = { pump in
                    if pump.outgoing.isEmpty, pump.incoming.count >= 4,
                       pump.incoming.firstRange(of: Array("\r\n\r\n".utf8)) != nil {
                        pump.outgoing = TestServer.response
                        pump.shutdownWhenSent = true
                    }
                }
                pump.onFinish = { [weak self] pump, error in
                    if let error { self?.errors.append(error) }
                    self?.connections[ObjectIdentifier(pump)] = nil
                }
                configure?(pump)
                connections[ObjectIdentifier(pump)] = pump
                try pump.start()
            } catch {
                errors.append(error)
            }
        }
    }

    /// Call on the loop thread.
    func stop() {
        for pump in connections.values { pump.finish(nil) }
        loop.deregister(fd: fd)
        Posix.close(fd: fd)
    }
}

/// Connects a Berth TLS client to 127.0.0.1:`port`, sends `request`, and
/// waits (bounded) until `isDone` or end of input. Returns the pump for
/// inspection, and the error if it failed.
func runClient(on thread: LoopThread, port: UInt16, context: TLSContext, serverName: String,
               request: [UInt8], configure: ((Pump) -> Void)? = nil, timeout: Double = 30) throws -> (pump: Pump, error: Error?) {
    let done = DispatchSemaphore(value: 0)
    var failure: Error?
    let pump: Pump = try thread.sync {
        let (fd, connected) = try Sockets.connect(to: SocketAddress(ip: "127.0.0.1", port: port)!)
        let transport = try TLSTransport(connectedFD: fd, context: context, serverName: serverName)
        let pump = Pump(loop: thread.loop, transport: transport, connecting: !connected)
        pump.outgoing = request
        configure?(pump)
        pump.onFinish = { _, error in
            failure = error
            done.signal()
        }
        try pump.start()
        return pump
    }
    guard done.wait(timeout: .now() + timeout) == .success else {
        _ = try? thread.sync { pump.finish(Subprocess.Failure(description: "timed out")) }
        throw Subprocess.Failure(description: "TLS client did not finish within \(timeout) s")
    }
    return try thread.sync { (pump, failure) }
}

/// A free TCP port on 127.0.0.1 for an external server to bind.
func freePort() throws -> UInt16 {
    let fd = try Sockets.listen(on: SocketAddress(ip: "127.0.0.1", port: 0)!, reusePort: false)
    defer { Posix.close(fd: fd) }
    return try Posix.localAddress(fd: fd).port
}
