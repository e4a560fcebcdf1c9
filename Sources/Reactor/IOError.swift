#if canImport(Glibc)
import Glibc
import CLinux
#endif

/// A failed system call: the call's name and the errno it set.
///
/// Callers match on `errno` only where a value changes what they do
/// (`ECONNREFUSED`, `ENOSPC`, `EMFILE`); everything else is logged and closes
/// the connection it happened on.
public struct IOError: Error, CustomStringConvertible, Equatable {
    public let errno: Int32
    public let call: String

    public init(errno: Int32, call: String) {
        self.errno = errno
        self.call = call
    }

    public var description: String {
        "\(call): \(String(cString: strerror(errno))) (errno \(errno))"
    }
}

/// The outcome of a nonblocking call: done with a value, or try again when the
/// descriptor is ready.
public enum IOResult<T: Equatable>: Equatable {
    case processed(T)
    case wouldBlock
}
