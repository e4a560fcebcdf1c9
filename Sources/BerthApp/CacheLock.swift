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
        let locked: IOResult<Int32>
        do { locked = try Posix.flock(fd: fd, operation: LOCK_EX | LOCK_NB) } catch {
            Posix.close(fd: fd)
            throw error  // callers name the lock file
        }
        guard case .processed = locked else {
            var buf = [UInt8](repeating: 0, count: 32)
            // The pid is only for the message: an unreadable file still means "held".
            let n = (try? buf.withUnsafeMutableBytes { try Posix.pread(fd: fd, into: $0, offset: 0) }) ?? 0
            Posix.close(fd: fd)
            let text = String(decoding: buf[0..<n], as: UTF8.self)
            return .held(pid: Int32(text.split(separator: "\n").first ?? ""))
        }
        // The pid is only for messages (`berth cache` naming the server): the lock holds without it.
        let text = Array("\(getpid())\n".utf8)
        do {
            try Posix.ftruncate(fd: fd, length: 0)
            try text.withUnsafeBytes { try Posix.pwriteAll(fd: fd, $0, offset: 0) }
        } catch {
            FileOut.stderr("berth: cannot write the pid into \(p): \(error)\n")
        }
        return .acquired(CacheLock(path: p, fd: fd))
    }

    /// Creates `directory` and its parents as needed.
    public static func makeDirectory(_ directory: String) throws {
        var prefix = directory.hasPrefix("/") ? "/" : ""
        for part in directory.split(separator: "/") {
            prefix += part
            try Posix.mkdirIfMissing(path: prefix)
            prefix += "/"
        }
    }
}
