#if canImport(Glibc)
import Glibc
#endif
import Reactor
import OCI
import Synchronization

/// The content-addressed cache on disk, shared by every repository and loop.
///
/// ```
/// <root>/blobs/sha256/<first 2 hex>/<hex>   verified content: layers, configs, manifests
/// <root>/tmp/<hex>.<n>.partial              fills in progress; removed at startup
/// <root>/index.log                          journal of tags, manifest types, repository links
/// ```
///
/// A file appears under `blobs/` only by `rename` after its bytes hashed to
/// its name, were fsynced, and the directory entry was fsynced: after a crash
/// a name under `blobs/` is always whole and right. Temp files have their own
/// directory and suffix, so nothing half-written ever looks like a blob.
///
/// Threading: path helpers and `open` are safe anywhere; `commit`, `discard`,
/// `scanTemp` block (fsync, rename, unlink) and run on the blocking pool.
public final class BlobStore: @unchecked Sendable {  // immutable paths; `tempSerial` is atomic
    public let root: String
    public let index: CacheIndex
    private let tempSerial = Atomic<Int>(0)

    /// Opens (creating if needed) the cache at `root`, removes leftover temp
    /// files, and loads the index. Blocking: call at startup.
    public init(root: String, pool: BlockingPool) throws {
        self.root = root
        for dir in [root, root + "/blobs", root + "/blobs/sha256", root + "/tmp"] {
            if mkdir(dir, 0o755) != 0 && errno != EEXIST {
                throw IOError(errno: errno, call: "mkdir \(dir)")
            }
        }
        BlobStore.removeTempFiles(in: root + "/tmp")
        index = try CacheIndex(path: root + "/index.log", pool: pool)
    }

    /// Where a verified blob lives.
    public func path(for digest: Digest) -> String {
        "\(root)/blobs/\(digest.algorithm.rawValue)/\(digest.hex.prefix(2))/\(digest.hex)"
    }

    /// Opens a verified blob, nil when it is not cached.
    public func open(_ digest: Digest) -> FileDescriptor? {
        try? FileDescriptor.openForReading(path(for: digest))
    }

    /// True when the blob is cached (a stat; cheap).
    public func contains(_ digest: Digest) -> Bool {
        var st = stat()
        return stat(path(for: digest), &st) == 0
    }

    /// A new temp file for filling `digest`, open for reading and writing.
    public func makeTempFile(for digest: Digest) throws -> (path: String, file: FileDescriptor) {
        let path = "\(root)/tmp/\(digest.hex).\(getpid()).\(tempSerial.wrappingAdd(1, ordering: .relaxed).newValue).partial"
        let fd = try Posix.open(path: path, flags: O_RDWR | O_CREAT | O_EXCL, mode: 0o644)
        return (path, FileDescriptor(takingOwnershipOf: fd))
    }

    /// Publishes a verified temp file under its digest: fsync, rename, fsync the
    /// directory. Blocking: pool only.
    public func commit(tempPath: String, file: FileDescriptor, digest: Digest) throws {
        guard fsync(file.fd) == 0 else { throw IOError(errno: errno, call: "fsync") }
        let dir = "\(root)/blobs/\(digest.algorithm.rawValue)/\(digest.hex.prefix(2))"
        if mkdir(dir, 0o755) != 0 && errno != EEXIST { throw IOError(errno: errno, call: "mkdir \(dir)") }
        guard rename(tempPath, path(for: digest)) == 0 else { throw IOError(errno: errno, call: "rename") }
        let dfd = Glibc.open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            _ = fsync(dfd)
            Glibc.close(dfd)
        }
    }

    /// Stores small verified content (a manifest) in one go. Blocking: pool only.
    public func store(_ bytes: [UInt8], as digest: Digest) throws {
        if contains(digest) { return }
        let (path, file) = try makeTempFile(for: digest)
        do {
            var off = 0
            while off < bytes.count {
                let n = bytes[off...].withUnsafeBytes { Glibc.write(file.fd, $0.baseAddress, $0.count) }
                if n < 0 { if errno == EINTR { continue }; throw IOError(errno: errno, call: "write") }
                off += n
            }
            try commit(tempPath: path, file: file, digest: digest)
        } catch {
            unlink(path)
            throw error
        }
    }

    /// Removes a temp file. Blocking: pool only.
    public func discard(tempPath: String) {
        unlink(tempPath)
    }

    /// Reads a whole (small) cached blob, such as a manifest. Blocking: pool only.
    public func read(_ digest: Digest, maxBytes: Int) throws -> [UInt8]? {
        guard let f = open(digest) else { return nil }
        let size = Int(try f.size())
        guard size <= maxBytes else { throw IOError(errno: EFBIG, call: "read \(digest)") }
        var buf = [UInt8](repeating: 0, count: size)
        var off = 0
        while off < size {
            let n = try buf.withUnsafeMutableBytes { try Posix.pread(fd: f.fd, into: UnsafeMutableRawBufferPointer(rebasing: $0[off...]), offset: off_t(off)) }
            if n == 0 { break }
            off += n
        }
        return off == size ? buf : nil
    }

    static func removeTempFiles(in dir: String) {
        guard let d = opendir(dir) else { return }
        defer { closedir(d) }
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name.hasSuffix(".partial") { unlink(dir + "/" + name) }
        }
    }
}

