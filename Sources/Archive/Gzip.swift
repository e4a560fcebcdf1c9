import CZlib

/// Streaming gzip decompression through zlib (`inflateInit2` with
/// 16 + MAX_WBITS: gzip framing, CRC-32 and length checked by zlib).
/// Concatenated members (`cat a.gz b.gz`) are read as one stream, as gzip does.
///
/// A source, so the tar reader pulls inflated bytes as it needs them: one
/// input buffer, no whole-archive copy.
public final class GzipSource: ByteSource {
    private var stream = z_stream()
    private let base: ByteSource
    private var input: [UInt8]
    private var inputStart = 0, inputEnd = 0
    private var baseEnded = false
    /// True between members: the last member ended and no byte of a next one was inflated.
    private var atMemberEnd = false

    public init(_ base: ByteSource, bufferSize: Int = 1 << 17) throws {
        self.base = base
        input = [UInt8](repeating: 0, count: bufferSize)
        guard CZlib_inflateInit2(&stream, 16 + MAX_WBITS) == Z_OK else {
            throw ArchiveError(.corruptGzip, "zlib cannot start inflating: \(Self.message(stream))")
        }
    }

    deinit { inflateEnd(&stream) }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard buffer.count > 0 else { return 0 }
        // Each round either inflates bytes, refills input, or ends: the input is finite.
        while true {
            if inputStart == inputEnd && !baseEnded {
                inputEnd = try input.withUnsafeMutableBytes { try base.read(into: $0) }
                inputStart = 0
                if inputEnd == 0 { baseEnded = true }
            }
            if inputStart == inputEnd && baseEnded {
                if atMemberEnd { return 0 }
                throw ArchiveError(.truncated, "the gzip stream ends early (truncated archive)")
            }
            if atMemberEnd {
                // More bytes after a member: the next member starts.
                guard inflateReset(&stream) == Z_OK else { throw ArchiveError(.corruptGzip, "zlib: \(Self.message(stream))") }
                atMemberEnd = false
            }
            let (produced, status) = input.withUnsafeMutableBytes { inp -> (Int, Int32) in
                stream.next_in = inp.baseAddress!.assumingMemoryBound(to: Bytef.self) + inputStart
                stream.avail_in = uInt(inputEnd - inputStart)
                stream.next_out = buffer.baseAddress!.assumingMemoryBound(to: Bytef.self)
                stream.avail_out = uInt(buffer.count)
                let r = inflate(&stream, Z_NO_FLUSH)
                inputStart = inputEnd - Int(stream.avail_in)
                return (buffer.count - Int(stream.avail_out), r)
            }
            switch status {
            case Z_STREAM_END:
                atMemberEnd = true
            case Z_OK, Z_BUF_ERROR:
                break
            default:
                throw ArchiveError(.corruptGzip, "the gzip stream is corrupt: \(Self.message(stream))")
            }
            if produced > 0 { return produced }
        }
    }

    static func message(_ s: z_stream) -> String {
        s.msg.map { String(cString: $0) } ?? "error"
    }
}

/// Streaming gzip compression through zlib (`deflateInit2`, gzip framing).
/// `finish()` writes the trailer; the base sink is not closed.
public final class GzipSink: ByteSink {
    private var stream = z_stream()
    private let base: ByteSink
    private var output: [UInt8]
    private var isFinished = false

    /// `level` 1 (fast) … 9 (small); 6 is gzip's default.
    public init(_ base: ByteSink, level: Int32 = 6, bufferSize: Int = 1 << 17) throws {
        self.base = base
        output = [UInt8](repeating: 0, count: bufferSize)
        guard CZlib_deflateInit2(&stream, level, 16 + MAX_WBITS) == Z_OK else {
            throw ArchiveError(.corruptGzip, "zlib cannot start deflating: \(GzipSource.message(stream))")
        }
    }

    deinit { deflateEnd(&stream) }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        precondition(!isFinished)
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        stream.next_in = UnsafeMutablePointer(mutating: base.assumingMemoryBound(to: Bytef.self))
        stream.avail_in = uInt(bytes.count)
        try pump(Z_NO_FLUSH)
    }

    /// Flushes everything and writes the gzip trailer.
    public func finish() throws {
        guard !isFinished else { return }
        stream.next_in = nil
        stream.avail_in = 0
        try pump(Z_FINISH)
        isFinished = true
    }

    private func pump(_ flush: Int32) throws {
        // Each round drains one output buffer; deflate ends when input is consumed (or the stream finished).
        while true {
            let (n, r) = output.withUnsafeMutableBytes { out -> (Int, Int32) in
                stream.next_out = out.baseAddress!.assumingMemoryBound(to: Bytef.self)
                stream.avail_out = uInt(out.count)
                let r = deflate(&stream, flush)
                return (out.count - Int(stream.avail_out), r)
            }
            guard r == Z_OK || r == Z_STREAM_END || r == Z_BUF_ERROR else {
                throw ArchiveError(.corruptGzip, "zlib deflate failed: \(GzipSource.message(stream))")
            }
            if n > 0 { try output.withUnsafeBytes { try base.write(UnsafeRawBufferPointer(rebasing: $0[..<n])) } }
            if flush == Z_FINISH {
                if r == Z_STREAM_END { return }
            } else if stream.avail_in == 0 && stream.avail_out > 0 {
                return
            }
        }
    }
}

/// True when `bytes` start with gzip's magic number.
public func isGzip(_ bytes: some Collection<UInt8>) -> Bool {
    bytes.starts(with: [0x1f, 0x8b])
}
