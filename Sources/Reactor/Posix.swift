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

    /// Loops on EINTR and throws for the rest; `path`, when given, goes into
    /// the error (`rename /cache/index.log.snapshot`).
    @inline(__always)
    static func blocking<T: FixedWidthInteger>(_ name: StaticString, _ path: String? = nil, _ body: () -> T) throws -> T {
        while true {
            let r = body()
            if r >= 0 { return r }
            let e = errno
            if e == EINTR { continue }
            if e == EBADF || e == EFAULT { preconditionFailure("\(name) on a bad descriptor or buffer: errno \(e)") }
            throw IOError(errno: e, call: path.map { "\(name) \($0)" } ?? "\(name)")
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

    /// A pread that never waits for the disk (preadv2 with RWF_NOWAIT), safe
    /// on the event loop: `.wouldBlock` when the first bytes are not in the
    /// page cache, or when the filesystem cannot say (EOPNOTSUPP); read on the
    /// pool then. May return fewer bytes than asked (those that were cached).
    public static func preadNoWait(fd: Int32, into buffer: UnsafeMutableRawBufferPointer, offset: off_t) throws -> IOResult<Int> {
        var iov = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
        do {
            return try retrying("preadv2") { CLinux.preadv2(fd, &iov, 1, offset, RWF_NOWAIT) }
        } catch let error as IOError where error.errno == EOPNOTSUPP {
            return .wouldBlock
        }
    }

    public static func close(fd: Int32) {
        // close(2) releases the descriptor even when it reports EINTR: never retry.
        let r = Glibc.close(fd)
        if r < 0 && errno == EBADF { preconditionFailure("close of a bad descriptor \(fd)") }
    }

    public static func open(path: String, flags: Int32, mode: mode_t = 0o644) throws -> Int32 {
        try blocking("open", path) { Glibc.open(path, flags | O_CLOEXEC, mode) }
    }

    public static func fstat(fd: Int32) throws -> Glibc.stat {
        var st = Glibc.stat()
        _ = try blocking("fstat") { Glibc.fstat(fd, &st) }
        return st
    }

    // MARK: files (blocking: the worker pool, the CLI, startup)

    /// Writes all of `buffer` at `offset`, continuing after short writes.
    /// For blocking descriptors (regular files): a failure midway throws, and
    /// what reached the file before it is the caller's to discard.
    public static func pwriteAll(fd: Int32, _ buffer: UnsafeRawBufferPointer, offset: off_t) throws {
        var done = 0
        while done < buffer.count {
            let n = try blocking("pwrite") { Glibc.pwrite(fd, buffer.baseAddress! + done, buffer.count - done, offset + off_t(done)) }
            // pwrite(2) returns 0 for a nonzero count only when nothing can be written: never loop on it.
            if n == 0 { throw IOError(errno: EIO, call: "pwrite (no progress)") }
            done += n
        }
    }

    /// Writes all of `buffer` at the descriptor's position, continuing after
    /// short writes. For blocking descriptors (regular files, the CLI's pipes).
    public static func writeAll(fd: Int32, _ buffer: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < buffer.count {
            let n = try blocking("write") { Glibc.write(fd, buffer.baseAddress! + done, buffer.count - done) }
            if n == 0 { throw IOError(errno: EIO, call: "write (no progress)") }
            done += n
        }
    }

    public static func fsync(fd: Int32) throws {
        _ = try blocking("fsync") { Glibc.fsync(fd) }
    }

    /// Makes the entries of `path` (a directory) durable: after a `rename`
    /// into it, the new name survives a crash only once this returns.
    public static func fsyncDirectory(path: String) throws {
        let fd = try blocking("open", path) { Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        defer { close(fd: fd) }
        _ = try blocking("fsync", path) { Glibc.fsync(fd) }
    }

    public static func ftruncate(fd: Int32, length: off_t) throws {
        _ = try blocking("ftruncate") { Glibc.ftruncate(fd, length) }
    }

    /// `flock(2)`: `.wouldBlock` when `operation` has `LOCK_NB` and another holds the lock.
    public static func flock(fd: Int32, operation: Int32) throws -> IOResult<Int32> {
        try retrying("flock") { cFlock(fd, operation) }
    }

    public static func rename(from: String, to: String) throws {
        _ = try blocking("rename", "\(from) to \(to)") { Glibc.rename(from, to) }
    }

    /// Removes `path`. False when there was nothing to remove (ENOENT): most
    /// callers (temp files, evicted blobs, a stale socket) expect that at times.
    @discardableResult
    public static func unlink(path: String) throws -> Bool {
        while Glibc.unlink(path) != 0 {
            let e = errno
            if e == ENOENT { return false }
            if e == EINTR { continue }
            if e == EFAULT { preconditionFailure("unlink with a bad buffer") }
            throw IOError(errno: e, call: "unlink \(path)")
        }
        return true
    }

    /// Creates the directory `path`; one that already exists is fine.
    public static func mkdirIfMissing(path: String, mode: mode_t = 0o755) throws {
        while Glibc.mkdir(path, mode) != 0 {
            let e = errno
            if e == EEXIST { return }
            if e == EINTR { continue }
            if e == EFAULT { preconditionFailure("mkdir with a bad buffer") }
            throw IOError(errno: e, call: "mkdir \(path)")
        }
    }

    /// `stat(2)` of `path` (symlinks followed). ENOENT throws like any failure.
    public static func stat(path: String) throws -> Glibc.stat {
        var st = Glibc.stat()
        _ = try blocking("stat", path) { cStat(path, &st) }
        return st
    }

    public static func statvfs(path: String) throws -> Glibc.statvfs {
        var st = Glibc.statvfs()
        _ = try blocking("statvfs", path) { cStatvfs(path, &st) }
        return st
    }

    /// Calls `body` with the name of every entry of the directory `path` but
    /// `.` and `..` (opendir, readdir, closedir), in directory order.
    public static func forEachEntry(inDirectory path: String, _ body: (String) throws -> Void) throws {
        var opened: OpaquePointer?
        while opened == nil {
            opened = opendir(path)
            if opened == nil {
                let e = errno
                if e != EINTR { throw IOError(errno: e, call: "opendir \(path)") }
            }
        }
        let dir = opened!
        defer { closedir(dir) }
        while true {
            errno = 0  // readdir(3) returns NULL both at the end and on an error: errno tells them apart
            guard let entry = readdir(dir) else {
                let e = errno
                if e != 0 { throw IOError(errno: e, call: "readdir \(path)") }
                return
            }
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name == "." || name == ".." { continue }
            try body(name)
        }
    }

    // MARK: sockets

    /// A close-on-exec socket, nonblocking unless `blocking` (command-line
    /// clients that wait with `SO_RCVTIMEO`).
    public static func socket(domain: Int32, type: Int32, blocking isBlocking: Bool = false) throws -> Int32 {
        let flags = Int32(SOCK_CLOEXEC.rawValue) | (isBlocking ? 0 : Int32(SOCK_NONBLOCK.rawValue))
        return try blocking("socket") { Glibc.socket(domain, type | flags, 0) }
    }

    /// `send(2)`; on a blocking socket with `SO_SNDTIMEO`, `.wouldBlock` means the timeout passed.
    public static func send(fd: Int32, _ buffer: UnsafeRawBufferPointer, flags: Int32 = Int32(MSG_NOSIGNAL)) throws -> IOResult<Int> {
        try retrying("send") { Glibc.send(fd, buffer.baseAddress, buffer.count, flags) }
    }

    /// `recv(2)`; on a blocking socket with `SO_RCVTIMEO`, `.wouldBlock` means the timeout passed.
    public static func recv(fd: Int32, into buffer: UnsafeMutableRawBufferPointer, flags: Int32 = 0) throws -> IOResult<Int> {
        try retrying("recv") { Glibc.recv(fd, buffer.baseAddress, buffer.count, flags) }
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

// Inside `Posix`, `stat`, `statvfs` and `flock` name the wrappers above (and
// the C structs of the same names): these reach the C functions.
private func cStat(_ path: String, _ st: inout Glibc.stat) -> Int32 { stat(path, &st) }
private func cStatvfs(_ path: String, _ st: inout Glibc.statvfs) -> Int32 { statvfs(path, &st) }
private func cFlock(_ fd: Int32, _ operation: Int32) -> Int32 { flock(fd, operation) }
