#if canImport(Glibc)
import Glibc
#endif

extension Posix {
    /// Runs `command` through `/bin/sh -c`, inheriting stdin/stdout/stderr, and
    /// waits for it: its exit status, or 128 + the signal that ended it. Blocking.
    public static func runShell(_ command: String) throws -> Int32 {
        var pid: pid_t = 0
        let args = ["/bin/sh", "-c", command]
        var argv: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        let rc = posix_spawn(&pid, "/bin/sh", nil, nil, &argv, environ)
        guard rc == 0 else { throw IOError(errno: rc, call: "posix_spawn /bin/sh") }
        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, 0)
            if r == pid { break }
            if r < 0 && errno == EINTR { continue }
            throw IOError(errno: errno, call: "waitpid")
        }
        // WIFEXITED / WEXITSTATUS / WTERMSIG are macros Swift cannot import.
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }

    /// True when `fd` is a terminal.
    public static func isTerminal(fd: Int32) -> Bool { isatty(fd) == 1 }

    /// Sets an environment variable of this process (for a child that reads it).
    public static func setEnvironment(_ name: String, _ value: String) {
        setenv(name, value, 1)
    }
}
