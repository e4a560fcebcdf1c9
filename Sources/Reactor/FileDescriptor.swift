#if canImport(Glibc)
import Glibc
import CLinux
#endif

/// An open file that closes itself when the last owner lets go.
///
/// A response being served holds one: the file stays readable while it is
/// sent, even if the cache unlinks its name meanwhile.
public final class FileDescriptor: @unchecked Sendable {  // `fd` is immutable; close happens once, in deinit
    public let fd: Int32

    public init(takingOwnershipOf fd: Int32) { self.fd = fd }

    /// Opens `path` read-only.
    public static func openForReading(_ path: String) throws -> FileDescriptor {
        FileDescriptor(takingOwnershipOf: try Posix.open(path: path, flags: O_RDONLY))
    }

    /// Size in bytes (fstat).
    public func size() throws -> UInt64 { UInt64(try Posix.fstat(fd: fd).st_size) }

    deinit { Posix.close(fd: fd) }
}
