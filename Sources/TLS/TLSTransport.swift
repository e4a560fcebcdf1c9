#if canImport(Glibc)
import Glibc
#endif
import COpenSSL
import Reactor

/// TLS over a connected nonblocking socket, as a Reactor `Transport`.
///
/// OpenSSL never touches the socket: it reads ciphertext from one memory BIO
/// and writes ciphertext into another, and this class moves bytes between
/// those BIOs and the socket. The handshake runs implicitly inside `read`,
/// `write` and `flush`, whichever the owner calls first.
///
/// Driving it under the Reactor's edge-triggered regime (register once for
/// read and write, call `read` until `.wouldBlock`, `flush` on writability):
/// - Every call that makes OpenSSL produce output (handshake flights, alerts,
///   key-update answers, close_notify) pushes that output to the socket at
///   once; what the socket refuses stays in the outgoing BIO
///   (`hasPendingOutput`) for `flush`. The outgoing BIO is unbounded, so
///   OpenSSL never waits to write and `read` never stalls on output.
/// - Bytes are pulled from the socket only when OpenSSL asks for more, and
///   every pulled byte arrived with an edge the owner sees (or is handling),
///   so data moved into the incoming BIO by `write`/`flush` during the
///   handshake is always picked up by the owner's next `read`.
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
    private let ssl: OpaquePointer        // SSL *, owned; frees both BIOs
    private let networkIn: OpaquePointer  // BIO * OpenSSL reads ciphertext from; owned by `ssl`
    private var networkOut: OpaquePointer // BIO * OpenSSL writes ciphertext to; owned by `ssl`
    /// Most ciphertext held in `networkOut` since it was last empty.
    private var pendingOutputPeak = 0
    /// Socket reads land here before they go into `networkIn`; also the sink
    /// for ciphertext discarded from `networkOut` after a socket write. One per
    /// thread, not per connection: its bytes never outlive the call that
    /// filled them, and a transport is used on one thread at a time (32 KiB
    /// per connection up front made an idle HTTPS connection cost ~43 KiB).
    private var scratch: UnsafeMutableRawBufferPointer { Self.threadScratch() }
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
    /// A memory BIO keeps its largest buffer for life: after backing up past
    /// this much, a drained `networkOut` is replaced so an idle connection
    /// does not hold ~256 KiB. Above one write chunk, so a socket that keeps
    /// up never pays for it.
    static let outputShrinkThreshold = 128 * 1024
    /// Plaintext handed to one SSL_write: a few full records.
    static let writeChunk = 64 * 1024
    static let scratchSize = 32 * 1024

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
        guard let input = BIO_new(BIO_s_mem()) else {
            SSL_free(ssl)
            throw TLSError.drainingQueue("BIO_new failed")
        }
        guard let output = Self.makeOutputBIO() else {
            BIO_free(input)
            SSL_free(ssl)
            throw TLSError.drainingQueue("BIO_new failed")
        }
        // An empty memory BIO means "nothing yet" (retry), not end of file:
        // Berth decides about EOF itself from the socket.
        _ = berth_BIO_set_mem_eof_return(input, -1)
        SSL_set_bio(ssl, input, output)  // ssl now owns both
        self.fd = fd
        self.context = context
        self.ssl = ssl
        networkIn = input
        networkOut = output
    }

    private static let scratchKey: pthread_key_t = {
        var key = pthread_key_t()
        let r = pthread_key_create(&key) { p in p?.deallocate() }
        precondition(r == 0, "pthread_key_create failed: \(r)")
        return key
    }()

    /// This thread's scratch buffer, made on first use and freed when the thread ends.
    private static func threadScratch() -> UnsafeMutableRawBufferPointer {
        if let p = pthread_getspecific(scratchKey) { return UnsafeMutableRawBufferPointer(start: p, count: scratchSize) }
        let b = UnsafeMutableRawBufferPointer.allocate(byteCount: scratchSize, alignment: 16)
        pthread_setspecific(scratchKey, b.baseAddress)
        return b
    }

    private static func makeOutputBIO() -> OpaquePointer? {
        guard let bio = BIO_new(BIO_s_mem()) else { return nil }
        _ = berth_BIO_set_mem_eof_return(bio, -1)
        return bio
    }

    deinit {
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

    private var pendingOutputCount: Int { Int(BIO_ctrl_pending(networkOut)) }

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
            ERR_clear_error()
            let r = SSL_read(ssl, base, count)
            // Handshake flights, alerts, key-update answers: out at once. A
            // failing socket write must not hide data already decrypted.
            pushOutputDeferringErrors()
            if r > 0 { return .processed(Int(r)) }
            let code = SSL_get_error(ssl, r)
            switch code {
            case SSL_ERROR_WANT_READ:
                switch try pullFromSocket() {
                case .more: continue
                case .wouldBlock: return .wouldBlock
                case .endOfFile:
                    isInputClosed = true
                    return .processed(0)
                }
            case SSL_ERROR_ZERO_RETURN:
                isInputClosed = true
                return .processed(0)
            default:
                throw failure(code, during: "read")
            }
        }
    }

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
            ERR_clear_error()
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
            pendingOutputPeak = max(pendingOutputPeak, pendingOutputCount)
            if !socketIsFull { socketIsFull = try !pushOutput() }
        }
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

    private enum Pull { case more, wouldBlock, endOfFile }

    /// Reads one scratch buffer of ciphertext from the socket into `networkIn`.
    private func pullFromSocket() throws -> Pull {
        let scratch = self.scratch
        switch try Posix.read(fd: fd, into: scratch) {
        case .wouldBlock:
            return .wouldBlock
        case .processed(0):
            if !isHandshakeComplete {
                throw TLSError(message: "TLS handshake failed: the peer closed the connection")
            }
            return .endOfFile
        case .processed(let n):
            let written = BIO_write(networkIn, scratch.baseAddress, Int32(n))
            precondition(written == Int32(n), "memory BIO refused \(n) bytes")
            return .more
        }
    }

    /// Writes pending ciphertext straight from `networkOut`'s buffer to the
    /// socket. True when nothing remains.
    private func pushOutput() throws -> Bool {
        while true {
            var data: UnsafeMutablePointer<CChar>?
            let length = berth_BIO_get_mem_data(networkOut, &data)
            guard length > 0, let data else {
                if pendingOutputPeak > Self.outputShrinkThreshold, let fresh = Self.makeOutputBIO() {
                    SSL_set0_wbio(ssl, fresh)  // frees the old, empty BIO
                    networkOut = fresh
                }
                pendingOutputPeak = 0
                return true
            }
            switch try Posix.write(fd: fd, UnsafeRawBufferPointer(start: data, count: Int(length))) {
            case .wouldBlock:
                return false
            case .processed(let n):
                // Memory BIOs cannot skip bytes, so the sent prefix is read
                // out into scratch: one cache-hot copy, no allocation.
                var left = n
                let scratch = self.scratch
                while left > 0 {
                    let r = BIO_read(networkOut, scratch.baseAddress, Int32(min(left, scratch.count)))
                    precondition(r > 0, "memory BIO lost pending bytes")
                    left -= Int(r)
                }
            }
        }
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
            guard code == SSL_ERROR_WANT_READ else { throw failure(code, during: "handshake") }
            if let error = deferredWriteError { throw error }
            switch try pullFromSocket() {
            case .more: continue
            case .wouldBlock: return false
            case .endOfFile: return false  // not reached: pullFromSocket throws before the handshake ends
            }
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
