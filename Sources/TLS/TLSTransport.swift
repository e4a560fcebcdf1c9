#if canImport(Glibc)
import Glibc
#endif
import COpenSSL
import Reactor

/// TLS over a connected nonblocking socket, as a Reactor `Transport`.
///
/// OpenSSL talks to the socket only through this class's BIO (`SocketBIO`):
/// its reads are socket reads straight into OpenSSL's record buffer (read-ahead
/// on, so one syscall takes every record that arrived), and its writes append
/// to a `CiphertextQueue` that this class writes to the socket, in batches of
/// up to `pushThreshold`. No memory BIO: those zero-filled and copied every
/// byte on the way in and once more on the way out (a third of the
/// instructions per MiB of a blob). The handshake runs implicitly inside
/// `read`, `write` and `flush`, whichever the owner calls first.
///
/// Driving it under the Reactor's edge-triggered regime (register once for
/// read and write, call `read` until `.wouldBlock`, `flush` on writability):
/// - Every call that makes OpenSSL produce output (handshake flights, alerts,
///   key-update answers, close_notify) pushes that output to the socket at
///   once; what the socket refuses stays queued (`hasPendingOutput`) for
///   `flush`. The queue is unbounded, so OpenSSL never waits to write and
///   `read` never stalls on output.
/// - Bytes are pulled from the socket only when OpenSSL asks for more, and
///   every pulled byte arrived with an edge the owner sees (or is handling),
///   so records read ahead by `write`/`flush` during the handshake are
///   always picked up by the owner's next `read`.
/// - `write` and `flush` advance an unfinished handshake too, so a client
///   that writes its request first, or only waits for writability, starts it.
///
/// End of stream: `read` returns `.processed(0)` after the peer's
/// close_notify, and also at a TCP EOF without one (truncation is not
/// reported here: HTTP framing above notices a body cut short). A TCP EOF
/// before the handshake finished throws.
///
/// Loop thread only; not `Sendable`.
public final class TLSTransport: Transport {
    /// The socket, owned: closed by `close` or `deinit`.
    public let fd: Int32
    /// Keeps the context's settings (and the `SSL_CTX`, also up-ref'd by `SSL_new`) alive.
    private let context: TLSContext
    private let ssl: OpaquePointer        // SSL *, owned; frees the BIO
    private let bio: OpaquePointer        // BIO * over `fd` and `output`; owned by `ssl`
    /// Ciphertext written by OpenSSL, not yet taken by the socket. Holds no
    /// memory while empty.
    private let output = CiphertextQueue()
    /// The BIO's socket read returned 0 (TCP EOF).
    private var sawEndOfFile = false
    /// The BIO's socket read failed: thrown by the call that ran it.
    private var readError: Error?
    private var isOpen = true
    /// The peer's close_notify arrived, or TCP EOF after the handshake.
    private var isInputClosed = false
    /// `shutdownOutput` ran: no more plaintext; send FIN once the ciphertext is out.
    private var isOutputShutdown = false
    private var isFINSent = false
    /// A socket write that failed inside `read`, reported by the next `write` or `flush`.
    private var deferredWriteError: Error?

    /// No more plaintext is accepted while more ciphertext than this waits
    /// for the socket.
    static let pendingOutputLimit = 256 * 1024
    /// Plaintext handed to one SSL_write: a few full records.
    static let writeChunk = 64 * 1024
    /// `write` sends once this much ciphertext is queued (and at its end):
    /// four 16 KiB records per socket write rather than one, a quarter of the
    /// per-write cost on the TCP path.
    static let pushThreshold = 64 * 1024

    // MARK: life cycle

    /// Server side, over an accepted socket. Takes ownership of `fd`.
    public convenience init(acceptedFD fd: Int32, context: TLSContext) throws {
        try self.init(fd: fd, context: context)
        SSL_set_accept_state(ssl)
    }

    /// Client side, over a connected socket. Takes ownership of `fd`.
    ///
    /// Sends `serverName` as SNI unless it is an IP literal, and, when the
    /// context verifies peers, checks the certificate against it: DNS names
    /// against DNS SANs, IP literals against IP SANs (`[v6]` brackets allowed).
    public convenience init(connectedFD fd: Int32, context: TLSContext, serverName: String) throws {
        try self.init(fd: fd, context: context)
        SSL_set_connect_state(ssl)
        var name = serverName
        if name.hasPrefix("[") && name.hasSuffix("]") { name = String(name.dropFirst().dropLast()) }
        let isIPLiteral = SocketAddress(ip: name, port: 0) != nil
        if !isIPLiteral {
            guard berth_SSL_set_tlsext_host_name(ssl, name) == 1 else {
                throw TLSError.drainingQueue("cannot set SNI to \(name)")
            }
        }
        if context.verifiesPeer {
            let param = SSL_get0_param(ssl)
            if isIPLiteral {
                guard X509_VERIFY_PARAM_set1_ip_asc(param, name) == 1 else {
                    throw TLSError.drainingQueue("cannot verify against IP \(name)")
                }
            } else {
                X509_VERIFY_PARAM_set_hostflags(param, UInt32(X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS))
                guard X509_VERIFY_PARAM_set1_host(param, name, 0) == 1 else {
                    throw TLSError.drainingQueue("cannot verify against host name \(name)")
                }
            }
        }
    }

    private init(fd: Int32, context: TLSContext) throws {
        ERR_clear_error()
        guard let ssl = SSL_new(context.ctx) else { throw TLSError.drainingQueue("SSL_new failed") }
        guard let bio = BIO_new(SocketBIO.method) else {
            SSL_free(ssl)
            throw TLSError.drainingQueue("BIO_new failed")
        }
        SSL_set_bio(ssl, bio, bio)  // ssl now owns it (one reference for both directions)
        // One socket read takes every record that has arrived, not a 5-byte
        // header and then its body.
        SSL_set_read_ahead(ssl, 1)
        // A TCP EOF without close_notify ends the stream quietly, as before:
        // no fatal alert queued; `sawEndOfFile` tells `read` what happened.
        _ = SSL_set_options(ssl, UInt64(berth_SSL_OP_IGNORE_UNEXPECTED_EOF()))
        self.fd = fd
        self.context = context
        self.ssl = ssl
        self.bio = bio
        BIO_set_data(bio, Unmanaged.passUnretained(self).toOpaque())
    }

    deinit {
        BIO_set_data(bio, nil)  // SSL_free must not call back into a dying object
        SSL_free(ssl)
        if isOpen { Posix.close(fd: fd) }
    }

    // MARK: state

    /// True once the handshake finished (and the peer verified, when asked).
    public var isHandshakeComplete: Bool { SSL_is_init_finished(ssl) == 1 }

    /// The protocol chosen by ALPN ("http/1.1"), nil when none was.
    public var negotiatedALPN: String? {
        var data: UnsafePointer<UInt8>?
        var length: UInt32 = 0
        SSL_get0_alpn_selected(ssl, &data, &length)
        guard let data, length > 0 else { return nil }
        return String(decoding: UnsafeBufferPointer(start: data, count: Int(length)), as: UTF8.self)
    }

    /// "TLSv1.3" or "TLSv1.2".
    public var negotiatedVersion: String { String(cString: SSL_get_version(ssl)) }

    private var pendingOutputCount: Int { output.count }

    fileprivate var queuedCiphertext: Int { output.count }

    /// Ciphertext waits for the socket: call `flush` when it turns writable.
    public var hasPendingOutput: Bool { pendingOutputCount > 0 }

    // MARK: Transport

    /// Decrypted bytes; `.processed(0)` at end of stream; `.wouldBlock` when
    /// more ciphertext must arrive first (also mid-handshake). Writes what the
    /// protocol needs (handshake flights, alerts) itself; a socket error there
    /// is reported by the next `write` or `flush`. Throws `TLSError` on a
    /// failed handshake or a corrupt record.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> IOResult<Int> {
        if isInputClosed { return .processed(0) }
        guard let base = buffer.baseAddress, buffer.count > 0 else { return .processed(0) }
        let count = Int32(clamping: buffer.count)
        while true {
            clearErrorQueue()
            let r = SSL_read(ssl, base, count)
            // Handshake flights, alerts, key-update answers: out at once. A
            // failing socket write must not hide data already decrypted.
            pushOutputDeferringErrors()
            if r > 0 { return .processed(Int(r)) }
            let code = SSL_get_error(ssl, r)
            switch code {
            case SSL_ERROR_WANT_READ:
                return .wouldBlock  // the BIO's socket read hit EAGAIN
            case SSL_ERROR_ZERO_RETURN:
                if sawEndOfFile && !isHandshakeComplete { throw Self.closedDuringHandshake }
                isInputClosed = true
                return .processed(0)
            default:
                if let error = readError { throw error }
                if sawEndOfFile {
                    if !isHandshakeComplete { throw Self.closedDuringHandshake }
                    isInputClosed = true
                    return .processed(0)
                }
                throw failure(code, during: "read")
            }
        }
    }

    private static let closedDuringHandshake = TLSError(message: "TLS handshake failed: the peer closed the connection")

    /// Encrypts as much of `buffer` as the pending-output bound allows and
    /// pushes the ciphertext to the socket. `.wouldBlock` means either the
    /// socket is backed up (`hasPendingOutput`; retry after `flush` returns
    /// true) or the handshake is still waiting for the peer (no pending
    /// output; retry after the next readable or writable event).
    public func write(_ buffer: UnsafeRawBufferPointer) throws -> IOResult<Int> {
        if let error = deferredWriteError { throw error }
        precondition(!isOutputShutdown, "TLSTransport.write after shutdownOutput")
        guard try advanceHandshake() else { return .wouldBlock }
        guard let base = buffer.baseAddress, buffer.count > 0 else { return .processed(0) }
        var socketIsFull = false
        if pendingOutputCount > Self.pendingOutputLimit {
            socketIsFull = try !pushOutput()
            if pendingOutputCount > Self.pendingOutputLimit { return .wouldBlock }
        }
        var accepted = 0
        while accepted < buffer.count && pendingOutputCount <= Self.pendingOutputLimit {
            clearErrorQueue()
            let chunk = Int32(min(buffer.count - accepted, Self.writeChunk))
            let r = SSL_write(ssl, base + accepted, chunk)
            guard r > 0 else {
                let code = SSL_get_error(ssl, r)
                // The handshake is done and renegotiation is off: only a
                // post-handshake message could ask for input. Let `read` take it.
                if code == SSL_ERROR_WANT_READ { break }
                _ = try? pushOutput()  // the alert, if any
                throw failure(code, during: "write")
            }
            accepted += Int(r)
            if !socketIsFull && pendingOutputCount >= Self.pushThreshold { socketIsFull = try !pushOutput() }
        }
        if !socketIsFull { _ = try pushOutput() }
        return accepted == 0 ? .wouldBlock : .processed(accepted)
    }

    /// Advances an unfinished handshake and writes pending ciphertext; true
    /// when none remains (then, after `shutdownOutput`, the FIN goes out too).
    public func flush() throws -> Bool {
        if let error = deferredWriteError { throw error }
        if !isHandshakeComplete && !isOutputShutdown { _ = try advanceHandshake() }
        guard try pushOutput() else { return false }
        if isOutputShutdown && !isFINSent {
            isFINSent = true
            Posix.shutdownWrite(fd: fd)
        }
        return true
    }

    /// TLS is never zero-copy here: kernel TLS is unavailable on these machines.
    public var canSendFile: Bool { false }

    /// Never called: `canSendFile` is false.
    public func sendFile(from file: Int32, offset: inout off_t, count: Int) throws -> IOResult<Int> {
        preconditionFailure("TLSTransport cannot sendfile; check canSendFile")
    }

    /// Queues close_notify and sends it with whatever ciphertext is still
    /// pending; the TCP FIN follows once all of it is out (here or in `flush`).
    public func shutdownOutput() {
        guard isOpen, !isOutputShutdown else { return }
        isOutputShutdown = true
        if isHandshakeComplete {
            ERR_clear_error()
            _ = SSL_shutdown(ssl)  // 0: close_notify queued, peer's not yet seen
            ERR_clear_error()
        }
        _ = try? flush()
    }

    /// Closes the socket (the owner deregisters it first). The `SSL` is freed with this object.
    public func close() {
        guard isOpen else { return }
        isOpen = false
        Posix.close(fd: fd)
    }

    // MARK: moving ciphertext

    /// The BIO's read: a socket read straight into OpenSSL's buffer.
    fileprivate func bioRead(into buffer: UnsafeMutableRawBufferPointer) -> BIORead {
        if sawEndOfFile { return .endOfFile }
        do {
            switch try Posix.read(fd: fd, into: buffer) {
            case .wouldBlock: return .wouldBlock
            case .processed(0):
                sawEndOfFile = true
                return .endOfFile
            case .processed(let n): return .bytes(n)
            }
        } catch {
            readError = error
            return .failed
        }
    }

    /// The BIO's write: queued, sent by `pushOutput`.
    fileprivate func bioWrite(_ bytes: UnsafeRawBufferPointer) {
        output.append(bytes)
    }

    /// Writes queued ciphertext to the socket. True when nothing remains.
    private func pushOutput() throws -> Bool {
        while !output.isEmpty {
            switch try Posix.write(fd: fd, output.readable) {
            case .wouldBlock: return false
            case .processed(let n): output.consume(n)
            }
        }
        return true
    }

    private func pushOutputDeferringErrors() {
        guard deferredWriteError == nil, hasPendingOutput else { return }
        do { _ = try pushOutput() } catch { deferredWriteError = error }
    }

    /// Runs the handshake as far as the socket allows; true once complete.
    private func advanceHandshake() throws -> Bool {
        while !isHandshakeComplete {
            ERR_clear_error()
            let r = SSL_do_handshake(ssl)
            pushOutputDeferringErrors()
            if r == 1 { break }
            let code = SSL_get_error(ssl, r)
            if let error = readError { throw error }
            if sawEndOfFile { throw Self.closedDuringHandshake }
            guard code == SSL_ERROR_WANT_READ else { throw failure(code, during: "handshake") }
            if let error = deferredWriteError { throw error }
            return false  // the BIO's socket read hit EAGAIN
        }
        return true
    }

    /// The error for a failed SSL_* call, with the verification result when
    /// the peer's certificate was rejected.
    private func failure(_ code: Int32, during what: String) -> TLSError {
        let stage = isHandshakeComplete ? "TLS \(what) failed" : "TLS handshake failed"
        // Without SSL_VERIFY_PEER the result is recorded but ignored: only
        // blame the certificate when it was actually checked.
        let verify = SSL_get_verify_result(ssl)
        if context.verifiesPeer && verify != X509_V_OK {
            let reason = String(cString: X509_verify_cert_error_string(verify))
            return .drainingQueue("\(stage): certificate verification failed: \(reason)", isVerificationFailure: true)
        }
        switch code {
        case SSL_ERROR_SSL: return .drainingQueue(stage)
        case SSL_ERROR_SYSCALL: return .drainingQueue("\(stage): unexpected end of input")
        default: return .drainingQueue("\(stage) (SSL_get_error \(code))")
        }
    }
}

// MARK: - the BIO

fileprivate enum BIORead { case bytes(Int), wouldBlock, endOfFile, failed }

/// A source/sink BIO whose reads and writes are `TLSTransport.bioRead` and
/// `bioWrite` (the transport is the BIO's data pointer, unretained: the
/// transport owns the `SSL`, which owns the BIO).
private enum SocketBIO {
    static let method: OpaquePointer = {
        guard let m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "berth socket") else {
            preconditionFailure("BIO_meth_new failed")
        }
        _ = BIO_meth_set_create(m) { bio in
            BIO_set_init(bio, 1)
            return 1
        }
        _ = BIO_meth_set_write(m) { bio, data, length in
            BIO_clear_flags(bio, BIO_FLAGS_READ | BIO_FLAGS_WRITE | BIO_FLAGS_IO_SPECIAL | BIO_FLAGS_SHOULD_RETRY)
            guard let t = transport(bio), let data, length > 0 else { return length == 0 ? 0 : -1 }
            t.bioWrite(UnsafeRawBufferPointer(start: data, count: Int(length)))
            return length
        }
        _ = BIO_meth_set_read(m) { bio, data, length in
            BIO_clear_flags(bio, BIO_FLAGS_READ | BIO_FLAGS_WRITE | BIO_FLAGS_IO_SPECIAL | BIO_FLAGS_SHOULD_RETRY)
            guard let t = transport(bio), let data, length > 0 else { return length == 0 ? 0 : -1 }
            switch t.bioRead(into: UnsafeMutableRawBufferPointer(start: data, count: Int(length))) {
            case .bytes(let n): return Int32(n)
            case .wouldBlock:
                BIO_set_flags(bio, BIO_FLAGS_READ | BIO_FLAGS_SHOULD_RETRY)
                return -1
            case .endOfFile: return 0
            case .failed: return -1
            }
        }
        _ = BIO_meth_set_ctrl(m) { bio, command, _, _ in
            switch command {
            case BIO_CTRL_FLUSH: return 1  // the transport pushes after every call into OpenSSL
            case BIO_CTRL_WPENDING: return transport(bio).map { $0.queuedCiphertext } ?? 0
            default: return 0
            }
        }
        return m
    }()

    private static func transport(_ bio: OpaquePointer?) -> TLSTransport? {
        guard let p = BIO_get_data(bio) else { return nil }
        return Unmanaged<TLSTransport>.fromOpaque(p).takeUnretainedValue()
    }
}

/// Empties this thread's OpenSSL error queue before a call whose failure is
/// inspected. Peeks first: `ERR_clear_error` walks all 16 slots of the queue
/// every time, ~1,100 instructions per call, twice per request over TLS.
@inline(__always)
func clearErrorQueue() {
    if ERR_peek_error() != 0 { ERR_clear_error() }
}
