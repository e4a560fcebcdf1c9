#if canImport(Glibc)
import Glibc
import CLinux
#endif

/// Every system call Berth makes, wrapped once.
///
/// `retrying` loops on EINTR, reports EAGAIN/EWOULDBLOCK as `.wouldBlock` and
/// throws `IOError` for the rest. EBADF and EFAULT are programming errors and
/// stop the process: a closed descriptor used again must never be silent.
public enum Posix {
    @inline(__always)
    static func retrying<T: FixedWidthInteger>(_ name: StaticString, _ body: () -> T) throws -> IOResult<T> {
        while true {
            let r = body()
            if r >= 0 { return .processed(r) }
            let e = errno
            switch e {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return .wouldBlock
            case EBADF, EFAULT: preconditionFailure("\(name) on a bad descriptor or buffer: errno \(e)")
            default: throw IOError(errno: e, call: "\(name)")
            }
        }
    }

    @inline(__always)
    static func blocking<T: FixedWidthInteger>(_ name: StaticString, _ body: () -> T) throws -> T {
        while true {
            let r = body()
            if r >= 0 { return r }
            let e = errno
            if e == EINTR { continue }
            if e == EBADF || e == EFAULT { preconditionFailure("\(name) on a bad descriptor or buffer: errno \(e)") }
            throw IOError(errno: e, call: "\(name)")
        }
    }

    // MARK: descriptors

    public static func read(fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws -> IOResult<Int> {
        try retrying("read") { Glibc.read(fd, buffer.baseAddress, buffer.count) }
    }

    public static func write(fd: Int32, _ buffer: UnsafeRawBufferPointer) throws -> IOResult<Int> {
        try retrying("write") { Glibc.write(fd, buffer.baseAddress, buffer.count) }
    }

    public static func writev(fd: Int32, _ iov: UnsafeBufferPointer<iovec>) throws -> IOResult<Int> {
        try retrying("writev") { Glibc.writev(fd, iov.baseAddress, Int32(iov.count)) }
    }

    public static func sendfile(out: Int32, in fileFD: Int32, offset: inout off_t, count: Int) throws -> IOResult<Int> {
        try retrying("sendfile") { Glibc.sendfile(out, fileFD, &offset, count) }
    }

    public static func pread(fd: Int32, into buffer: UnsafeMutableRawBufferPointer, offset: off_t) throws -> Int {
        try blocking("pread") { Glibc.pread(fd, buffer.baseAddress, buffer.count, offset) }
    }

    public static func close(fd: Int32) {
        // close(2) releases the descriptor even when it reports EINTR: never retry.
        let r = Glibc.close(fd)
        if r < 0 && errno == EBADF { preconditionFailure("close of a bad descriptor \(fd)") }
    }

    public static func open(path: String, flags: Int32, mode: mode_t = 0o644) throws -> Int32 {
        try blocking("open") { Glibc.open(path, flags | O_CLOEXEC, mode) }
    }

    public static func fstat(fd: Int32) throws -> stat {
        var st = stat()
        _ = try blocking("fstat") { Glibc.fstat(fd, &st) }
        return st
    }

    // MARK: sockets

    public static func socket(domain: Int32, type: Int32) throws -> Int32 {
        try blocking("socket") { Glibc.socket(domain, type | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
    }

    public static func setsockopt<T>(fd: Int32, level: Int32, name: Int32, value: T) throws {
        var v = value
        _ = try withUnsafeBytes(of: &v) { p in
            try blocking("setsockopt") { Glibc.setsockopt(fd, level, name, p.baseAddress, socklen_t(p.count)) }
        }
    }

    public static func bind(fd: Int32, address: SocketAddress) throws {
        _ = try address.withSockAddr { sa, len in try blocking("bind") { Glibc.bind(fd, sa, len) } }
    }

    public static func listen(fd: Int32, backlog: Int32) throws {
        _ = try blocking("listen") { Glibc.listen(fd, backlog) }
    }

    /// Accepts one connection as a nonblocking, close-on-exec socket.
    public static func accept(fd: Int32) throws -> IOResult<Int32> {
        try retrying("accept4") { CLinux.accept4(fd, nil, nil, Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)) }
    }

    /// A socket `accept` returned, with the peer's address.
    public struct Accepted: Equatable {
        public let fd: Int32
        public let peer: SocketAddress
    }

    /// Accepts one connection as a nonblocking, close-on-exec socket and says who connected
    /// (the kernel fills the address in the same call: no `getpeername`).
    public static func acceptWithPeer(fd: Int32) throws -> IOResult<Accepted> {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let r = try withUnsafeMutablePointer(to: &storage) { p in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                try retrying("accept4") { CLinux.accept4(fd, sa, &len, Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)) }
            }
        }
        switch r {
        case .wouldBlock: return .wouldBlock
        case .processed(let client): return .processed(Accepted(fd: client, peer: SocketAddress(storage: storage)))
        }
    }

    /// Starts a nonblocking connect: `.processed` when connected at once,
    /// `.wouldBlock` when in progress (wait for writability, then `socketError`).
    public static func connect(fd: Int32, address: SocketAddress) throws -> IOResult<Int32> {
        while true {
            let r = address.withSockAddr { sa, len in Glibc.connect(fd, sa, len) }
            if r == 0 { return .processed(0) }
            switch errno {
            case EINTR: continue
            case EINPROGRESS, EAGAIN: return .wouldBlock
            case let e: throw IOError(errno: e, call: "connect")
            }
        }
    }

    /// The pending error of a socket (SO_ERROR), 0 when none.
    public static func socketError(fd: Int32) -> Int32 {
        var v: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(fd, SOL_SOCKET, SO_ERROR, &v, &len) < 0 { return errno }
        return v
    }

    public static func localAddress(fd: Int32) throws -> SocketAddress {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = try withUnsafeMutablePointer(to: &storage) { p in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                try blocking("getsockname") { getsockname(fd, sa, &len) }
            }
        }
        return SocketAddress(storage: storage)
    }

    public static func shutdownWrite(fd: Int32) {
        _ = Glibc.shutdown(fd, Int32(SHUT_WR))
    }

    // MARK: epoll, eventfd

    public static func epollCreate() throws -> Int32 {
        try blocking("epoll_create1") { epoll_create1(Int32(EPOLL_CLOEXEC)) }
    }

    public static func epollCtl(epfd: Int32, op: Int32, fd: Int32, events: UInt32, data: UInt64) throws {
        var ev = epoll_event()
        ev.events = events
        ev.data.u64 = data
        _ = try blocking("epoll_ctl") { epoll_ctl(epfd, op, fd, &ev) }
    }

    public static func epollWait(epfd: Int32, events: UnsafeMutableBufferPointer<epoll_event>, timeoutMillis: Int32) throws -> Int {
        let r = epoll_wait(epfd, events.baseAddress, Int32(events.count), timeoutMillis)
        if r >= 0 { return Int(r) }
        if errno == EINTR { return 0 }
        throw IOError(errno: errno, call: "epoll_wait")
    }

    public static func eventfd() throws -> Int32 {
        try blocking("eventfd") { CLinux.eventfd(0, Int32(EFD_CLOEXEC) | Int32(EFD_NONBLOCK)) }
    }
}
