#if canImport(Glibc)
import Glibc
#endif
import Reactor

/// `<cache dir>/berth.lock`: held (`flock(LOCK_EX | LOCK_NB)`) by `berth serve`
/// for its whole life, and by a `berth cache` command acting on the files
/// directly. Whoever cannot take it knows another process owns the cache:
/// a second server refuses to start, and `berth cache` talks to the running
/// server through `admin.sock` instead. The kernel drops the lock when the
/// holder exits, however it exits, so a stale file never blocks anyone.
public final class CacheLock {
    public let path: String
    private let fd: Int32

    public static func path(in directory: String) -> String { directory + "/berth.lock" }

    private init(path: String, fd: Int32) {
        self.path = path
        self.fd = fd
    }

    deinit { Posix.close(fd: fd) }

    /// The outcome of trying the lock.
    public enum Attempt {
        case acquired(CacheLock)
        /// Someone holds it; the pid it wrote, when readable.
        case held(pid: Int32?)
    }

    /// Tries the lock of `directory` (which must exist) without waiting; on
    /// success writes this process's pid into the file for messages.
    public static func attempt(_ directory: String) throws -> Attempt {
        let p = path(in: directory)
        let fd = try Posix.open(path: p, flags: O_RDWR | O_CREAT, mode: 0o644)
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let e = errno
            if e == EINTR { continue }
            var buf = [UInt8](repeating: 0, count: 32)
            let n = pread(fd, &buf, buf.count, 0)
            Posix.close(fd: fd)
            if e == EWOULDBLOCK {
                let text = n > 0 ? String(decoding: buf[0..<n], as: UTF8.self) : ""
                return .held(pid: Int32(text.split(separator: "\n").first ?? ""))
            }
            throw IOError(errno: e, call: "flock \(p)")
        }
        let text = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pwrite(fd, text, text.count, 0)
        return .acquired(CacheLock(path: p, fd: fd))
    }

    /// Creates `directory` and its parents as needed.
    public static func makeDirectory(_ directory: String) throws {
        var prefix = directory.hasPrefix("/") ? "/" : ""
        for part in directory.split(separator: "/") {
            prefix += part
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST { throw IOError(errno: errno, call: "mkdir \(prefix)") }
            prefix += "/"
        }
    }
}
