/// One member of a tar archive, its name already checked by `ArchivePath`.
public struct TarEntry: Equatable, Sendable {
    public enum Kind: Equatable, Sendable {
        case file
        case directory
        /// A symlink; the target resolved to a clean path inside the archive.
        case symlink(String)
        /// A hard link to an earlier member (a clean path inside the archive).
        case hardlink(String)
        /// Devices, FIFOs and other kinds an image archive has no use for.
        case other
    }

    /// A clean relative path ("" is the archive root).
    public let name: String
    public let kind: Kind
    /// Data bytes that follow the header (files only; 0 for the others).
    public let size: Int64
}

/// Reads a tar stream entry by entry: ustar, pax extended headers (`path`,
/// `linkpath`, `size`), GNU long names (`L`, `K`) and base-256 sizes, as
/// `docker save`, Go's archive/tar (skopeo) and GNU tar write them.
///
/// Nothing is trusted: every header's checksum is checked, names and link
/// targets must stay inside the archive (no absolute paths, no `..` out),
/// a name may appear once (directories excepted), sizes must fit an `Int64`,
/// and the stream must end with the end-of-archive marker, so a truncated
/// archive is an error, never a short success.
public final class TarReader {
    /// Extended headers (pax records, GNU long names) are at most this long.
    public static let maxExtendedHeader = 1 << 20
    /// Members per archive at most (bounds the name set and the loop).
    public static let maxEntries = 1_000_000

    private let source: ByteSource
    /// Data bytes of the current entry not yet read, and its padding to 512.
    private var remaining: Int64 = 0
    private var padding = 0
    private var seen: Set<String> = []
    private var count = 0
    private var ended = false
    private var block = [UInt8](repeating: 0, count: 512)

    public init(_ source: ByteSource) { self.source = source }

    /// The next entry, nil after the end-of-archive marker. Unread data of the
    /// previous entry is skipped.
    public func next() throws -> TarEntry? {
        guard !ended else { return nil }
        try skipRest()
        var longName: String?
        var longLink: String?
        var pax: [String: String] = [:]
        // Each round consumes one header (and its data): bounded by maxEntries.
        while true {
            count += 1
            guard count <= Self.maxEntries else { throw ArchiveError(.tooManyEntries, "more than \(Self.maxEntries) archive members") }
            guard try readBlock() else { throw ArchiveError(.truncated, "the archive ends without its end-of-archive marker") }
            if block.allSatisfy({ $0 == 0 }) {
                // One zero block then the end of the stream is accepted (some writers stop there).
                let second = try readBlockOrEnd()
                if let second, !second.allSatisfy({ $0 == 0 }) {
                    throw ArchiveError(.badChecksum, "a zero block in the middle of the archive")
                }
                guard longName == nil, longLink == nil, pax.isEmpty else {
                    throw ArchiveError(.truncated, "the archive ends after an extended header")
                }
                ended = true
                return nil
            }
            let header = try TarHeader(block)
            switch header.type {
            case UInt8(ascii: "x"):
                pax = try Self.parsePax(try readExtended(header.size))
                continue
            case UInt8(ascii: "g"):
                _ = try readExtended(header.size)  // global defaults: nothing an image archive needs
                continue
            case UInt8(ascii: "L"):
                longName = Self.cString(try readExtended(header.size))
                continue
            case UInt8(ascii: "K"):
                longLink = Self.cString(try readExtended(header.size))
                continue
            default:
                break
            }
            let rawName = pax["path"] ?? longName ?? header.name
            let rawLink = pax["linkpath"] ?? longLink ?? header.linkName
            var size = header.size
            if let s = pax["size"] {
                guard let v = Int64(s), v >= 0 else { throw ArchiveError(.badNumber, "pax size \"\(s)\" of \(rawName)") }
                size = v
            }
            guard let name = ArchivePath.normalize(rawName) else {
                throw ArchiveError(.unsafePath, "archive member \"\(rawName)\" is absolute or leaves the archive")
            }
            let kind: TarEntry.Kind
            switch header.type {
            case 0, UInt8(ascii: "0"), UInt8(ascii: "7"): kind = .file
            case UInt8(ascii: "5"): kind = .directory
            case UInt8(ascii: "2"):
                guard let t = ArchivePath.resolveSymlink(at: name, target: rawLink) else {
                    throw ArchiveError(.unsafePath, "symlink \(name) → \"\(rawLink)\" points outside the archive")
                }
                kind = .symlink(t)
            case UInt8(ascii: "1"):
                guard let t = ArchivePath.normalize(rawLink), !t.isEmpty else {
                    throw ArchiveError(.unsafePath, "hard link \(name) → \"\(rawLink)\" points outside the archive")
                }
                kind = .hardlink(t)
            default: kind = .other
            }
            if kind != .directory {
                guard !name.isEmpty else { throw ArchiveError(.unsafePath, "a member with an empty name") }
                guard seen.insert(name).inserted else { throw ArchiveError(.duplicate, "archive member \(name) appears twice") }
            }
            // Links and directories carry no data whatever the header says, except that
            // old writers may give hard links a size; honour the stream framing either way.
            remaining = size
            padding = Int((512 - size % 512) % 512)
            return TarEntry(name: name, kind: kind, size: kind == .file || kind == .other ? size : 0)
        }
    }

    /// Reads the current entry's data; 0 at its end. A stream that ends early throws.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard remaining > 0, buffer.count > 0 else { return 0 }
        let want = Int(min(Int64(buffer.count), remaining))
        let n = try source.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[..<want]))
        guard n > 0 else { throw ArchiveError(.truncated, "the archive ends inside a member") }
        remaining -= Int64(n)
        return n
    }

    // MARK: framing

    private func skipRest() throws {
        var scratch = [UInt8](repeating: 0, count: 1 << 16)
        // Each round consumes at least one byte of a finite remainder or throws.
        while remaining > 0 {
            _ = try scratch.withUnsafeMutableBytes { try read(into: $0) }
        }
        if padding > 0 {
            let got = try scratch.withUnsafeMutableBytes { try source.readFully(into: UnsafeMutableRawBufferPointer(rebasing: $0[..<padding])) }
            guard got == padding else { throw ArchiveError(.truncated, "the archive ends inside a member's padding") }
            padding = 0
        }
    }

    /// False at a clean end of stream before the block; throws when it ends inside one.
    private func readBlock() throws -> Bool {
        let n = try block.withUnsafeMutableBytes { try source.readFully(into: $0) }
        if n == 0 { return false }
        guard n == 512 else { throw ArchiveError(.truncated, "the archive ends inside a header") }
        return true
    }

    private func readBlockOrEnd() throws -> [UInt8]? {
        var b = [UInt8](repeating: 0, count: 512)
        let n = try b.withUnsafeMutableBytes { try source.readFully(into: $0) }
        if n == 0 { return nil }
        guard n == 512 else { throw ArchiveError(.truncated, "the archive ends inside its end-of-archive marker") }
        return b
    }

    private func readExtended(_ size: Int64) throws -> [UInt8] {
        guard size <= Int64(Self.maxExtendedHeader) else {
            throw ArchiveError(.badExtendedHeader, "an extended header of \(size) bytes (at most \(Self.maxExtendedHeader))")
        }
        var data = [UInt8](repeating: 0, count: Int(size))
        let n = try data.withUnsafeMutableBytes { try source.readFully(into: $0) }
        guard n == data.count else { throw ArchiveError(.truncated, "the archive ends inside an extended header") }
        let pad = Int((512 - size % 512) % 512)
        var p = [UInt8](repeating: 0, count: pad)
        let m = try p.withUnsafeMutableBytes { try source.readFully(into: $0) }
        guard m == pad else { throw ArchiveError(.truncated, "the archive ends inside an extended header") }
        return data
    }

    static func cString(_ bytes: [UInt8]) -> String {
        String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// pax records: `<length> <key>=<value>\n`, length counting the whole record.
    static func parsePax(_ data: [UInt8]) throws -> [String: String] {
        var out: [String: String] = [:]
        var i = 0
        // Each record advances by its length (at least 1): bounded by the data size.
        while i < data.count {
            guard let sp = data[i...].firstIndex(of: 0x20),
                  let len = Int(String(decoding: data[i..<sp], as: UTF8.self)), len > sp - i, i + len <= data.count,
                  data[i + len - 1] == 0x0a else {
                throw ArchiveError(.badExtendedHeader, "a malformed pax record")
            }
            let record = data[(sp + 1)..<(i + len - 1)]
            guard let eq = record.firstIndex(of: UInt8(ascii: "=")) else { throw ArchiveError(.badExtendedHeader, "a pax record without '='") }
            out[String(decoding: record[..<eq], as: UTF8.self)] = String(decoding: record[(eq + 1)...], as: UTF8.self)
            i += len
        }
        return out
    }
}

/// The fields of one 512-byte header block that matter here.
struct TarHeader {
    let name: String
    let linkName: String
    let size: Int64
    let type: UInt8

    init(_ b: [UInt8]) throws {
        // The checksum counts its own field as spaces; old writers summed signed bytes.
        var unsigned = 0, signed = 0
        for (i, byte) in b.enumerated() {
            let v = (148..<156).contains(i) ? 0x20 : Int(byte)
            unsigned += v
            signed += (148..<156).contains(i) ? 0x20 : Int(Int8(bitPattern: byte))
        }
        guard let stored = try? Self.number(b[148..<156]), stored == Int64(unsigned) || stored == Int64(signed) else {
            throw ArchiveError(.badChecksum, "a tar header's checksum does not match (not a tar archive, or corrupt)")
        }
        size = try Self.number(b[124..<136])
        type = b[156]
        var n = TarReader.cString(Array(b[0..<100]))
        // ustar splits long names into prefix/name.
        if b[257..<262].elementsEqual("ustar".utf8) {
            let prefix = TarReader.cString(Array(b[345..<500]))
            if !prefix.isEmpty { n = prefix + "/" + n }
        }
        name = n
        linkName = TarReader.cString(Array(b[157..<257]))
    }

    /// An octal field (NUL/space terminated) or GNU base-256 (high bit set).
    static func number(_ field: ArraySlice<UInt8>) throws -> Int64 {
        if let first = field.first, first & 0x80 != 0 {
            guard first & 0x40 == 0 else { throw ArchiveError(.badNumber, "a negative base-256 number in a tar header") }
            var v: Int64 = Int64(first & 0x3f)
            for byte in field.dropFirst() {
                let (m, o1) = v.multipliedReportingOverflow(by: 256)
                let (s, o2) = m.addingReportingOverflow(Int64(byte))
                guard !o1, !o2 else { throw ArchiveError(.badNumber, "a base-256 number in a tar header overflows") }
                v = s
            }
            return v
        }
        var v: Int64 = 0
        var digits = 0
        var done = false
        for byte in field {
            if byte == 0 || byte == 0x20 {
                if digits > 0 { done = true }
                continue
            }
            guard !done, byte >= 0x30, byte <= 0x37 else { throw ArchiveError(.badNumber, "a tar header field is not octal") }
            let (m, o1) = v.multipliedReportingOverflow(by: 8)
            let (s, o2) = m.addingReportingOverflow(Int64(byte - 0x30))
            guard !o1, !o2 else { throw ArchiveError(.badNumber, "an octal number in a tar header overflows") }
            v = s
            digits += 1
        }
        return v
    }
}
