/// Where archive bytes come from: a file, a gzip stream, memory in tests.
///
/// Pull-based, so the tar reader runs at the pace of whoever consumes the
/// entries and never holds more than one buffer of the archive.
public protocol ByteSource: AnyObject {
    /// Reads up to `buffer.count` bytes; 0 only at the end of the stream.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
}

/// Where archive bytes go: a file, a gzip stream, memory in tests.
public protocol ByteSink: AnyObject {
    /// Takes every byte of `bytes` (or throws).
    func write(_ bytes: UnsafeRawBufferPointer) throws
}

/// Bytes in memory, handed out in chunks of at most `chunk` (tests cut archives anywhere).
public final class MemorySource: ByteSource {
    private let bytes: [UInt8]
    private var offset = 0
    private let chunk: Int

    public init(_ bytes: [UInt8], chunk: Int = 1 << 16) {
        self.bytes = bytes
        self.chunk = max(1, chunk)
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = min(buffer.count, bytes.count - offset, chunk)
        guard n > 0 else { return 0 }
        bytes.withUnsafeBytes { src in
            buffer.baseAddress!.copyMemory(from: src.baseAddress! + offset, byteCount: n)
        }
        offset += n
        return n
    }
}

/// Collects written bytes in memory (tests, small documents).
public final class MemorySink: ByteSink {
    public private(set) var bytes: [UInt8] = []
    public init() {}
    public func write(_ bytes: UnsafeRawBufferPointer) throws { self.bytes.append(contentsOf: bytes) }
}

/// A source that first replays bytes already read from `base` (a peeked magic number).
public final class PrefixedSource: ByteSource {
    private var prefix: [UInt8]
    private var offset = 0
    private let base: ByteSource

    public init(prefix: [UInt8], base: ByteSource) {
        self.prefix = prefix
        self.base = base
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        if offset < prefix.count {
            let n = min(buffer.count, prefix.count - offset)
            prefix.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + offset, byteCount: n) }
            offset += n
            return n
        }
        return try base.read(into: buffer)
    }
}

extension ByteSource {
    /// Reads until `buffer` is full or the stream ends; returns the bytes read.
    public func readFully(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var filled = 0
        // Each round reads at least one byte or ends: bounded by the buffer size.
        while filled < buffer.count {
            let n = try read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[filled...]))
            if n == 0 { break }
            filled += n
        }
        return filled
    }
}
