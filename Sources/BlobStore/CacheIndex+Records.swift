#if canImport(Glibc)
import Glibc
#endif
import Reactor
import OCI

/// The journal's record format (listed on `CacheIndex`): a snapshot rendered
/// from the state, and records replayed into it at load.
extension CacheIndex {
    static func render(_ s: State, clean: Bool) -> [UInt8] {
        var out = ""
        out.reserveCapacity(s.lru.count * 96)
        for n in s.lru.allOldestFirst() { out += "B\t\(n.digest)\t\(n.size)\t\(n.lastUse)\n" }
        for d in s.pins { out += "P\t\(d)\t1\n" }
        for (image, p) in s.pinnedImages {
            out += "I\t\(image)\t\(p.manifest)\t\(p.pinnedAt)\t\(p.covered.map(\.description).joined(separator: ","))\n"
        }
        for (repo, tags) in s.history {
            for (tag, entries) in tags {
                for e in entries { out += "H\t\(repo)\t\(tag)\t\(e.digest)\t\(e.firstSeen)\t\(e.lastSeen)\n" }
            }
        }
        // After the history: replaying a tag's record only confirms its last entry.
        for (repo, tags) in s.tags {
            for (tag, r) in tags { out += "T\t\(repo)\t\(tag)\t\(r.digest)\t\(r.mediaType)\t\(r.confirmedAt)\n" }
        }
        for (repo, subjects) in s.referrers {
            for (subject, manifests) in subjects {
                // Evicted referrers are forgotten here; a new pull records them again.
                for m in manifests where s.lru.contains(m) { out += "R\t\(repo)\t\(subject)\t\(m)\n" }
            }
        }
        for (d, byPolicy) in s.verdicts where s.lru.contains(d) {
            for (p, c) in byPolicy { out += "V\t\(d)\t\(p)\t\(c)\n" }
        }
        for (d, t) in s.mediaTypes { out += "M\t\(d)\t\(t)\n" }
        for l in s.links { out += "L\t\(l.repository)\t\(l.digest)\n" }
        if clean { out += "C\t\(time(nil))\n" }
        return Array(out.utf8)
    }

    // MARK: loading

    /// Replays the journal into `s`: returns the lines read, whether the last
    /// was a clean stop, the bytes of whole records and those of a torn tail after them.
    static func load(fd: Int32, into s: inout State) throws -> (lines: Int, clean: Bool, complete: Int, dropped: Int) {
        let bytes = try readWhole(fd)
        var lines = 0
        var complete = 0
        var clean = bytes.isEmpty
        bytes.withUnsafeBufferPointer { buf in
            // A snapshot is mostly `B` and `L` records: size the LRU and the links once instead of growing them a million times.
            var blobs = 0, links = 0
            var start = 0
            while start < buf.count {
                if buf[start] == UInt8(ascii: "B") { blobs += 1 } else if buf[start] == UInt8(ascii: "L") { links += 1 }
                guard let p = memchr(buf.baseAddress! + start, 0x0a, buf.count - start) else { break }
                start = buf.baseAddress!.distance(to: p.assumingMemoryBound(to: UInt8.self)) + 1
            }
            s.lru.reserveCapacity(blobs)
            s.links.reserveCapacity(links)
            start = 0
            while start < buf.count {
                guard let p = memchr(buf.baseAddress! + start, 0x0a, buf.count - start) else { break }  // torn last record
                let nl = buf.baseAddress!.distance(to: p.assumingMemoryBound(to: UInt8.self))
                lines += 1
                let line = UnsafeBufferPointer(rebasing: buf[start..<nl])
                start = nl + 1
                clean = apply(line, to: &s)
            }
            complete = start
        }
        return (lines, clean, complete, bytes.count - complete)
    }

    /// Applies one record; returns true when it is a clean-stop record.
    /// Fields are found as byte ranges; only what the index keeps becomes a
    /// String (a digest's hex, a name), so a `B` record costs one allocation.
    private static func apply(_ line: UnsafeBufferPointer<UInt8>, to s: inout State) -> Bool {
        withUnsafeTemporaryAllocation(of: Range<Int>.self, capacity: 8) { f -> Bool in
            var n = 0, from = 0
            for i in 0..<line.count where line[i] == 0x09 {
                f[n] = from..<i
                n += 1
                from = i + 1
                if n == 7 { break }  // more fields than any record has: only `C` matches
            }
            if n < 7 {
                f[n] = from..<line.count
                n += 1
            }
            guard f[0].count == 1 else { return false }
            let kind = line[f[0].lowerBound]
            switch (kind, n) {
            case (UInt8(ascii: "B"), 4):
                if let d = digest(line, f[1]), let size = number(line, f[2]), let t = signedNumber(line, f[3]) {
                    s.lru.insert(d, size: size, lastUse: t)
                }
            case (UInt8(ascii: "X"), 2):
                if let d = digest(line, f[1]) { s.lru.remove(d) }
            case (UInt8(ascii: "P"), 3):
                if let d = digest(line, f[1]) {
                    let on = f[2].count == 1 && line[f[2].lowerBound] == UInt8(ascii: "1")
                    if on { s.pins.insert(d) } else { s.pins.remove(d) }
                    s.lru.setPinned(d, on)
                }
            case (UInt8(ascii: "T"), 6):
                if let d = digest(line, f[3]), let t = signedNumber(line, f[5]) {
                    setTag(&s, text(line, f[1]), text(line, f[2]), TagRecord(digest: d, mediaType: text(line, f[4]), confirmedAt: t))
                }
            case (UInt8(ascii: "H"), 6):
                if let d = digest(line, f[3]), let first = signedNumber(line, f[4]), let last = signedNumber(line, f[5]) {
                    let (repo, tag) = (text(line, f[1]), text(line, f[2]))
                    var list = s.history[repo]?[tag] ?? []
                    list.removeAll { $0.digest == d }
                    list.append(HistoryEntry(digest: d, firstSeen: first, lastSeen: last))
                    if list.count > historyLimit { list.removeFirst(list.count - historyLimit) }
                    s.history[repo, default: [:]][tag] = list
                }
            case (UInt8(ascii: "V"), 4):
                if let d = digest(line, f[1]) { s.verdicts[d, default: [:]][text(line, f[2])] = text(line, f[3]) }
            case (UInt8(ascii: "R"), 4):
                if let subject = digest(line, f[2]), let m = digest(line, f[3]) {
                    s.referrers[text(line, f[1]), default: [:]][subject, default: []].insert(m)
                }
            case (UInt8(ascii: "h"), 3):
                forgetHistory(&s, text(line, f[1]), text(line, f[2]))
            case (UInt8(ascii: "t"), 3):
                s.tags[text(line, f[1])]?[text(line, f[2])] = nil
            case (UInt8(ascii: "M"), 3):
                if let d = digest(line, f[1]) { s.mediaTypes[d] = text(line, f[2]) }
            case (UInt8(ascii: "L"), 3):
                if let d = digest(line, f[2]) { s.links.insert(Link(repository: text(line, f[1]), digest: d)) }
            case (UInt8(ascii: "I"), 5):
                if let m = digest(line, f[2]), let t = signedNumber(line, f[3]) {
                    let covered = text(line, f[4]).split(separator: ",").compactMap { Digest(String($0)) }
                    s.pinnedImages[text(line, f[1])] = PinnedImage(manifest: m, covered: covered, pinnedAt: t)
                }
            case (UInt8(ascii: "i"), 2):
                s.pinnedImages[text(line, f[1])] = nil
            case (UInt8(ascii: "C"), _):
                return true
            default:
                break
            }
            return false
        }
    }

    @inline(__always)
    private static func text(_ line: UnsafeBufferPointer<UInt8>, _ r: Range<Int>) -> String {
        String(decoding: UnsafeBufferPointer(rebasing: line[r]), as: UTF8.self)
    }

    /// `sha256:<hex>` from a field; nil when it is not a valid digest.
    private static func digest(_ line: UnsafeBufferPointer<UInt8>, _ r: Range<Int>) -> Digest? {
        let b = UnsafeBufferPointer(rebasing: line[r])
        guard let colon = b.firstIndex(of: UInt8(ascii: ":")),
              let algorithm = DigestAlgorithm(rawValue: String(decoding: UnsafeBufferPointer(rebasing: b[..<colon]), as: UTF8.self))
        else { return nil }
        return Digest(algorithm: algorithm, hex: String(decoding: UnsafeBufferPointer(rebasing: b[(colon + 1)...]), as: UTF8.self))
    }

    /// Decimal digits only; nil when empty, not digits, or too big.
    private static func number(_ line: UnsafeBufferPointer<UInt8>, _ r: Range<Int>) -> UInt64? {
        guard !r.isEmpty else { return nil }
        var v: UInt64 = 0
        for i in r {
            let d = line[i] &- UInt8(ascii: "0")
            guard d < 10 else { return nil }
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(UInt64(d))
            guard !o1, !o2 else { return nil }
            v = a
        }
        return v
    }

    private static func signedNumber(_ line: UnsafeBufferPointer<UInt8>, _ r: Range<Int>) -> Int64? {
        if !r.isEmpty && line[r.lowerBound] == UInt8(ascii: "-") {
            guard let m = number(line, (r.lowerBound + 1)..<r.upperBound), m <= UInt64(Int64.max) else { return nil }
            return -Int64(m)
        }
        guard let v = number(line, r), v <= UInt64(Int64.max) else { return nil }
        return Int64(v)
    }

    private static func readWhole(_ fd: Int32) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(try Posix.fstat(fd: fd).st_size))
        var off = 0
        while off < out.count {
            let n = try out.withUnsafeMutableBytes { try Posix.pread(fd: fd, into: UnsafeMutableRawBufferPointer(rebasing: $0[off...]), offset: off_t(off)) }
            if n == 0 { break }
            off += n
        }
        out.removeLast(out.count - off)
        return out
    }
}
