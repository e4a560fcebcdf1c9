/// Writes a tar stream: ustar headers, a pax `path` record for names over
/// 100 bytes, data padded to 512, and the two-block end marker.
///
/// Entries are written as regular files with mode 0644, owner 0, and the
/// given mtime, so the same content always gives the same bytes.
public final class TarWriter {
    private let sink: ByteSink
    private var remaining: Int64 = 0
    private var padding = 0
    private var isOpen = false

    public init(_ sink: ByteSink) { self.sink = sink }

    /// Starts a regular file of `size` bytes; write them with `write`.
    public func beginFile(_ name: String, size: Int64, mtime: Int64 = 0) throws {
        precondition(!isOpen && remaining == 0, "the previous entry is not complete")
        precondition(size >= 0)
        if name.utf8.count > 100 {
            let record = Self.paxRecord("path", name)
            try writeHeader(name: "PaxHeaders/" + String(name.suffix(80)), size: Int64(record.count), type: UInt8(ascii: "x"), mtime: mtime)
            try writePadded(record)
        }
        try writeHeader(name: String(decoding: name.utf8.prefix(100), as: UTF8.self), size: size, type: UInt8(ascii: "0"), mtime: mtime)
        remaining = size
        padding = Int((512 - size % 512) % 512)
        isOpen = true
        if size == 0 { try endFile() }
    }

    /// The next data bytes of the open file; never more than its size.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        precondition(isOpen && Int64(bytes.count) <= remaining, "more bytes than the entry's size")
        try sink.write(bytes)
        remaining -= Int64(bytes.count)
        if remaining == 0 { try endFile() }
    }

    /// A whole (small) file in one call.
    public func addFile(_ name: String, _ bytes: [UInt8], mtime: Int64 = 0) throws {
        try beginFile(name, size: Int64(bytes.count), mtime: mtime)
        if !bytes.isEmpty { try bytes.withUnsafeBytes { try write($0) } }
    }

    /// A directory entry.
    public func addDirectory(_ name: String, mtime: Int64 = 0) throws {
        precondition(!isOpen)
        try writeHeader(name: name.hasSuffix("/") ? name : name + "/", size: 0, type: UInt8(ascii: "5"), mtime: mtime, mode: 0o755)
    }

    /// The end-of-archive marker. The sink is not closed.
    public func finish() throws {
        precondition(!isOpen, "the last entry is not complete")
        try [UInt8](repeating: 0, count: 1024).withUnsafeBytes { try sink.write($0) }
    }

    private func endFile() throws {
        isOpen = false
        if padding > 0 { try [UInt8](repeating: 0, count: padding).withUnsafeBytes { try sink.write($0) } }
        padding = 0
    }

    private func writePadded(_ bytes: [UInt8]) throws {
        var b = bytes
        b += [UInt8](repeating: 0, count: (512 - b.count % 512) % 512)
        try b.withUnsafeBytes { try sink.write($0) }
    }

    private func writeHeader(name: String, size: Int64, type: UInt8, mtime: Int64, mode: Int = 0o644) throws {
        try Self.header(name: name, size: size, type: type, mtime: mtime, mode: mode).withUnsafeBytes { try sink.write($0) }
    }

    /// One ustar header block (tests build hostile archives with it too).
    public static func header(name: String, linkName: String = "", size: Int64, type: UInt8, mtime: Int64 = 0, mode: Int = 0o644) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 512)
        func put(_ s: some Sequence<UInt8>, at offset: Int, max: Int) {
            for (i, c) in s.prefix(max).enumerated() { b[offset + i] = c }
        }
        func octal(_ v: Int64, at offset: Int, width: Int) {
            let digits = String(v, radix: 8)
            let padded = String(repeating: "0", count: max(0, width - 1 - digits.count)) + digits
            put(padded.utf8, at: offset, max: width - 1)
        }
        put(name.utf8, at: 0, max: 100)
        octal(Int64(mode), at: 100, width: 8)
        octal(0, at: 108, width: 8)
        octal(0, at: 116, width: 8)
        if size < 0o77777777777 {
            octal(size, at: 124, width: 12)
        } else {
            // GNU base-256 for sizes of 8 GiB and more.
            b[124] = 0x80
            var v = size
            for i in stride(from: 135, to: 124, by: -1) { b[i] = UInt8(v & 0xff); v >>= 8 }
        }
        octal(mtime, at: 136, width: 12)
        b[156] = type
        put(linkName.utf8, at: 157, max: 100)
        put("ustar\u{0}00".utf8, at: 257, max: 8)
        for i in 148..<156 { b[i] = 0x20 }
        let sum = b.reduce(0) { $0 + Int($1) }
        octal(Int64(sum), at: 148, width: 7)
        b[154] = 0
        b[155] = 0x20
        return b
    }

    /// `<len> key=value\n` where len counts the whole record, its own digits included.
    static func paxRecord(_ key: String, _ value: String) -> [UInt8] {
        let body = " \(key)=\(value)\n".utf8.count
        var len = body + String(body).count
        if String(len).count != String(body).count { len = body + String(len).count }
        return Array("\(len) \(key)=\(value)\n".utf8)
    }
}
