import COpenSSL
import Synchronization

/// One `SSL_CTX`: certificates, keys, trust and protocol settings shared by
/// every connection made with it.
///
/// Build contexts off the event loop (on a `BlockingPool` thread, or at
/// startup): the factories read certificate and key files.
public final class TLSContext: @unchecked Sendable {  // immutable after the factory returns; SSL_new on a configured SSL_CTX is thread-safe
    /// The owned `SSL_CTX *`; freed in `deinit`.
    let ctx: OpaquePointer
    /// Whether connections made with this context verify their peer (client side).
    let verifiesPeer: Bool

    /// Wraps `ctx`, whose reference this object now owns.
    init(takingOwnership ctx: OpaquePointer, verifiesPeer: Bool) {
        self.ctx = ctx
        self.verifiesPeer = verifiesPeer
    }

    deinit { SSL_CTX_free(ctx) }

    /// The ALPN protocol Berth speaks, in wire format (length-prefixed).
    static let alpnHTTP11: [UInt8] = [8] + Array("http/1.1".utf8)

    // MARK: server

    /// A server context: the PEM certificate chain (leaf first) and its PEM
    /// private key; TLS 1.2 and 1.3 only; ALPN selects "http/1.1" when the
    /// client offers it and carries on without ALPN otherwise.
    public static func makeServer(certificateChainPath: String, privateKeyPath: String) throws -> TLSContext {
        ERR_clear_error()
        guard let ctx = SSL_CTX_new(TLS_server_method()) else { throw TLSError.drainingQueue("SSL_CTX_new failed") }
        let context = TLSContext(takingOwnership: ctx, verifiesPeer: false)
        try context.applyCommonSettings()
        _ = berth_SSL_CTX_set_options(ctx, berth_SSL_OP_CIPHER_SERVER_PREFERENCE())
        try context.useCertificate(chainPath: certificateChainPath, keyPath: privateKeyPath)
        SSL_CTX_set_alpn_select_cb(ctx, { _, out, outLength, offered, offeredLength, _ in
            // `offered` is the client's list: length-prefixed names. Point
            // into it (OpenSSL copies the choice before the buffer goes away).
            guard let out, let outLength, let offered else { return SSL_TLSEXT_ERR_NOACK }
            let wanted = TLSContext.alpnHTTP11
            var i = 0
            let count = Int(offeredLength)
            while i < count {
                let length = Int(offered[i])
                let start = i + 1
                guard start + length <= count else { break }
                if length == wanted.count - 1,
                   (0..<length).allSatisfy({ offered[start + $0] == wanted[1 + $0] }) {
                    out.pointee = offered + start
                    outLength.pointee = UInt8(length)
                    return SSL_TLSEXT_ERR_OK
                }
                i = start + length
            }
            return SSL_TLSEXT_ERR_NOACK
        }, nil)
        return context
    }

    // MARK: client

    /// A client context: verifies the peer against the system trust store
    /// plus `extraCAPath` (a PEM bundle) when given; presents the client
    /// certificate at `certificatePath` (key at `privateKeyPath`, or in the
    /// same file) when given; offers ALPN "http/1.1"; TLS 1.2 minimum.
    ///
    /// `verifyPeer: false` accepts any certificate: for tests and for
    /// upstreams explicitly configured as insecure, never a default.
    public static func makeClient(
        extraCAPath: String? = nil,
        certificatePath: String? = nil,
        privateKeyPath: String? = nil,
        verifyPeer: Bool = true
    ) throws -> TLSContext {
        ERR_clear_error()
        guard let ctx = SSL_CTX_new(TLS_client_method()) else { throw TLSError.drainingQueue("SSL_CTX_new failed") }
        let context = TLSContext(takingOwnership: ctx, verifiesPeer: verifyPeer)
        try context.applyCommonSettings()
        if verifyPeer {
            guard SSL_CTX_set_default_verify_paths(ctx) == 1 else {
                throw TLSError.drainingQueue("cannot load the system trust store")
            }
            if let extraCAPath {
                guard SSL_CTX_load_verify_locations(ctx, extraCAPath, nil) == 1 else {
                    throw TLSError.drainingQueue("cannot load CA certificates from \(extraCAPath)")
                }
            }
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nil)
        } else {
            SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nil)
        }
        if let certificatePath {
            try context.useCertificate(chainPath: certificatePath, keyPath: privateKeyPath ?? certificatePath)
        } else if privateKeyPath != nil {
            throw TLSError(message: "a client private key was given without a certificate")
        }
        // Unlike nearly every other OpenSSL call, 0 means success here.
        let alpn = alpnHTTP11
        guard SSL_CTX_set_alpn_protos(ctx, alpn, UInt32(alpn.count)) == 0 else {
            throw TLSError.drainingQueue("cannot set ALPN protocols")
        }
        return context
    }

    // MARK: shared setup

    private func applyCommonSettings() throws {
        guard berth_SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1 else {
            throw TLSError.drainingQueue("cannot require TLS 1.2")
        }
        // Renegotiation is a TLS 1.2 feature HTTP/1.1 does not need, and it
        // would let the peer make `write` wait for input.
        _ = berth_SSL_CTX_set_options(ctx, berth_SSL_OP_NO_RENEGOTIATION() | berth_SSL_OP_NO_COMPRESSION())
        // Partial writes: SSL_write reports records as it encrypts them.
        // Moving buffer: a retried write may come from another address.
        // Release buffers: idle connections give back their 2×~17 KiB record buffers.
        _ = berth_SSL_CTX_set_mode(ctx, Int(SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS))
    }

    private func useCertificate(chainPath: String, keyPath: String) throws {
        guard SSL_CTX_use_certificate_chain_file(ctx, chainPath) == 1 else {
            throw TLSError.drainingQueue("cannot load the certificate chain \(chainPath)")
        }
        // Also fails when the key does not match the leaf ("key values mismatch").
        guard SSL_CTX_use_PrivateKey_file(ctx, keyPath, SSL_FILETYPE_PEM) == 1 else {
            throw TLSError.drainingQueue("cannot load the private key \(keyPath) for \(chainPath)")
        }
        guard SSL_CTX_check_private_key(ctx) == 1 else {
            throw TLSError.drainingQueue("the private key \(keyPath) does not match the certificate \(chainPath)")
        }
    }
}

/// A server context that can be replaced at runtime (SIGHUP reload): new
/// connections get the new context, existing ones keep the one they started
/// with (each `SSL` holds a reference to its `SSL_CTX`).
public final class ReloadableServerContext: @unchecked Sendable {  // the context and its paths are read and swapped under `lock`
    private struct State {
        var context: TLSContext
        var certificateChainPath: String
        var privateKeyPath: String
    }
    private let lock: Mutex<State>

    /// Builds the first context; throws when the files do not make one.
    public init(certificateChainPath: String, privateKeyPath: String) throws {
        lock = Mutex(State(context: try TLSContext.makeServer(certificateChainPath: certificateChainPath, privateKeyPath: privateKeyPath),
                           certificateChainPath: certificateChainPath, privateKeyPath: privateKeyPath))
    }

    /// The context for a connection accepted now.
    public var current: TLSContext { lock.withLock { $0.context } }

    /// The certificate chain and key files the context came from.
    public var paths: (certificateChain: String, privateKey: String) { lock.withLock { ($0.certificateChainPath, $0.privateKeyPath) } }

    /// Re-reads both files and swaps the context in. On failure the old
    /// context stays and the error is thrown. Reads files: call off the loop.
    public func reload() throws {
        let (chain, key) = paths
        let fresh = try TLSContext.makeServer(certificateChainPath: chain, privateKeyPath: key)
        lock.withLock { $0.context = fresh }
    }

    /// Swaps in a context built from other files (a configuration reload).
    public func replace(with context: TLSContext, certificateChainPath: String, privateKeyPath: String) {
        lock.withLock { $0 = State(context: context, certificateChainPath: certificateChainPath, privateKeyPath: privateKeyPath) }
    }
}
