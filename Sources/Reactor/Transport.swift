#if canImport(Glibc)
import Glibc
import CLinux
#endif

/// A byte stream over a nonblocking socket: plain TCP here, TLS in the `TLS`
/// module. Connections above it (HTTP server and client) are written once
/// against this protocol.
///
/// Contract, loop thread only:
/// - `read` returns `.processed(0)` at end of stream and `.wouldBlock` when
///   nothing can be read until the descriptor is ready again.
/// - `write` may accept fewer bytes than offered. A transport that buffers
///   internally (TLS) reports buffered output through `hasPendingOutput`;
///   the owner calls `flush` when the socket turns writable.
/// - `sendFile` is zero-copy where `canSendFile` is true; other transports
///   never have it called.
public protocol Transport: AnyObject {
    var fd: Int32 { get }
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> IOResult<Int>
    func write(_ buffer: UnsafeRawBufferPointer) throws -> IOResult<Int>
    var hasPendingOutput: Bool { get }
    /// Writes buffered output; true when none remains.
    func flush() throws -> Bool
    var canSendFile: Bool { get }
    func sendFile(from file: Int32, offset: inout off_t, count: Int) throws -> IOResult<Int>
    /// Sends what the protocol needs to end the stream cleanly (TLS close_notify), best effort.
    func shutdownOutput()
    /// Closes the descriptor. The owner deregisters it from its loop first.
    func close()
}

/// Plain TCP.
public final class SocketTransport: Transport {
    public let fd: Int32
    private var isOpen = true

    /// Takes ownership of a connected nonblocking socket.
    public init(fd: Int32) { self.fd = fd }

    deinit { if isOpen { Posix.close(fd: fd) } }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> IOResult<Int> {
        try Posix.read(fd: fd, into: buffer)
    }

    public func write(_ buffer: UnsafeRawBufferPointer) throws -> IOResult<Int> {
        try Posix.write(fd: fd, buffer)
    }

    public var hasPendingOutput: Bool { false }
    public func flush() throws -> Bool { true }
    public var canSendFile: Bool { true }

    public func sendFile(from file: Int32, offset: inout off_t, count: Int) throws -> IOResult<Int> {
        try Posix.sendfile(out: fd, in: file, offset: &offset, count: count)
    }

    public func shutdownOutput() { Posix.shutdownWrite(fd: fd) }

    /// Gives up ownership: the descriptor is neither closed here nor by deinit
    /// (another transport, such as TLS, has taken it over).
    public func relinquish() { isOpen = false }

    public func close() {
        guard isOpen else { return }
        isOpen = false
        Posix.close(fd: fd)
    }
}

/// Socket setup shared by listeners and outgoing connections.
public enum Sockets {
    /// A nonblocking listening socket; `reusePort` lets every loop own one
    /// listener on the same address so the kernel spreads connections.
    ///
    /// A unix-domain address is bound once (`reusePort` does not apply), then
    /// given `unixMode` before `listen`, so no client can connect while the
    /// socket is still open to everyone. The caller removes a stale socket file
    /// first (it alone knows whether another process still owns it).
    public static func listen(on address: SocketAddress, reusePort: Bool, backlog: Int32 = 4096,
                              unixMode: mode_t = 0o600) throws -> Int32 {
        let fd = try Posix.socket(domain: address.family, type: Int32(SOCK_STREAM.rawValue))
        if let path = address.unixPath {
            do {
                try Posix.bind(fd: fd, address: address)
                guard chmod(path, unixMode) == 0 else { throw IOError(errno: errno, call: "chmod \(path)") }
                try Posix.listen(fd: fd, backlog: backlog)
                return fd
            } catch {
                Posix.close(fd: fd)
                throw error
            }
        }
        do {
            try Posix.setsockopt(fd: fd, level: SOL_SOCKET, name: SO_REUSEADDR, value: Int32(1))
            if reusePort { try Posix.setsockopt(fd: fd, level: SOL_SOCKET, name: SO_REUSEPORT, value: Int32(1)) }
            if address.family == AF_INET6 {
                try Posix.setsockopt(fd: fd, level: Int32(IPPROTO_IPV6), name: IPV6_V6ONLY, value: Int32(0))
            }
            try Posix.bind(fd: fd, address: address)
            try Posix.listen(fd: fd, backlog: backlog)
            return fd
        } catch {
            Posix.close(fd: fd)
            throw error
        }
    }

    /// Starts connecting to `address`; returns the socket and whether it is already connected.
    public static func connect(to address: SocketAddress) throws -> (fd: Int32, connected: Bool) {
        let fd = try Posix.socket(domain: address.family, type: Int32(SOCK_STREAM.rawValue))
        do {
            try setNoDelay(fd)
            switch try Posix.connect(fd: fd, address: address) {
            case .processed: return (fd, true)
            case .wouldBlock: return (fd, false)
            }
        } catch {
            Posix.close(fd: fd)
            throw error
        }
    }

    /// Disables Nagle: responses go out as soon as they are written.
    public static func setNoDelay(_ fd: Int32) throws {
        try Posix.setsockopt(fd: fd, level: Int32(IPPROTO_TCP), name: TCP_NODELAY, value: Int32(1))
    }
}
