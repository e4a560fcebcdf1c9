#if canImport(Glibc)
import Glibc
#endif

/// Access-log lines rendered straight into one growable byte buffer: each
/// field's UTF-8 copied in place (8 bytes at a time while nothing needs a JSON
/// escape), numbers written as digits, the time's date and second formatted
/// once per second. No `String` is built, no array grows byte by byte, and
/// nothing is allocated per line once the buffer has its size.
///
/// The format is `AccessRecord.render`'s (README: access log); the tests hold
/// it to the renderer this replaced, byte for byte.
///
/// Loop thread only: each `LoopContext` keeps one and hands its bytes to the
/// `AccessLog` in chunks. Not `Sendable`.
final class AccessLineBuffer {
    private(set) var base: UnsafeMutablePointer<UInt8>
    /// Bytes rendered.
    private(set) var count = 0
    private(set) var capacity: Int
    /// Complete lines in the buffer.
    private(set) var lines = 0
    private let initialCapacity: Int
    /// The Unix second `secondText` spells, or -1.
    private var second: Int64 = -1
    /// `2026-12-03T13:37:09.000Z` for `second`: the 24 bytes a time is, its milliseconds patched in.
    private var secondText: (UInt64, UInt64, UInt64) = (0, 0, 0)

    /// Bytes a line needs besides its strings: every field name, quote and
    /// separator, the time, four numbers of at most 20 digits. 400 would do.
    static let fixedBytes = 512

    init(capacity: Int = 4096) {
        initialCapacity = max(capacity, 64)
        self.capacity = initialCapacity
        base = .allocate(capacity: initialCapacity)
    }

    deinit { base.deallocate() }

    /// The rendered lines.
    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    /// Empties the buffer; one that grew past four times its first size
    /// (a line with a huge path) goes back to that size.
    func removeAll() {
        count = 0
        lines = 0
        if capacity > 4 * initialCapacity {
            base.deallocate()
            capacity = initialCapacity
            base = .allocate(capacity: capacity)
        }
    }

    private func reserve(_ n: Int) {
        guard capacity - count < n else { return }
        let grown = max(2 * capacity, count + n)
        let new = UnsafeMutablePointer<UInt8>.allocate(capacity: grown)
        new.update(from: base, count: count)
        base.deallocate()
        base = new
        capacity = grown
    }

    /// Appends `r` as one JSON object and a newline. Absent notes are left
    /// out. The path is `loggablePath(target)`: no query value that could be
    /// a credential, no user info.
    func append(_ r: borrowing AccessRecord) {
        append(unixMillis: r.unixMillis, requestID: r.requestID, client: r.client, method: r.method, target: r.target,
               status: r.status, bodyBytes: r.bodyBytes, durationNanos: r.durationNanos, isComplete: r.isComplete, notes: r.notes)
    }

    /// Appends a record given as its fields (see `AccessRecord`): a loop
    /// renders a finished request without building one.
    func append(unixMillis: Int64, requestID: String, client: String?, method: String?, target: String?, status: Int,
                bodyBytes: UInt64, durationNanos: UInt64, isComplete: Bool, notes n: borrowing AccessNotes) {
        let redactedPath = target.flatMap { isPlainPath($0) ? nil : loggablePath($0) }
        // Room for the worst case: every string byte escaped as \u00XX (`fixedBytes`
        // leaves more than the 8 bytes per string a word store may overshoot).
        var strings = requestID.utf8.count + (redactedPath?.utf8.count ?? target?.utf8.count ?? 0)
        strings += (client?.utf8.count ?? 0) + (method?.utf8.count ?? 0)
        strings += (n.user?.utf8.count ?? 0) + (n.upstream?.utf8.count ?? 0) + (n.repository?.utf8.count ?? 0)
        strings += (n.reference?.utf8.count ?? 0) + (n.cacheStatus?.utf8.count ?? 0)
        strings += (n.error?.utf8.count ?? 0) + (n.errorMessage?.utf8.count ?? 0)
        reserve(Self.fixedBytes + 6 * strings)
        var p = base + count
        p.raw(#"{"time":""#)
        time(unixMillis: unixMillis, &p)
        p.byte(0x22)
        p.field(#","request_id":"#, requestID)
        if let v = client { p.field(#","client":"#, v) }
        if let v = n.user { p.field(#","user":"#, v) }
        if let v = method { p.field(#","method":"#, v) }
        if let v = redactedPath { p.field(#","path":"#, v) } else if let v = target { p.field(#","path":"#, v) }
        if let v = n.upstream { p.field(#","upstream":"#, v) }
        if let v = n.repository { p.field(#","repository":"#, v) }
        if let v = n.reference { p.field(#","reference":"#, v) }
        p.raw(#","status":"#)
        p.decimal(UInt64(clamping: status))
        if let v = n.cacheStatus { p.cacheStatus(v) }
        p.raw(#","bytes":"#)
        p.decimal(bodyBytes)
        p.raw(#","duration_ms":"#)
        p.millis(nanos: durationNanos)
        if let v = n.upstreamNanos {
            p.raw(#","upstream_ms":"#)
            p.millis(nanos: v)
        }
        if let v = n.error { p.field(#","error":"#, v) }
        if let v = n.errorMessage { p.field(#","error_message":"#, v) }
        if !isComplete { p.raw(#","incomplete":true"#) }
        p.raw("}\n")
        count = p - base
        lines += 1
    }

    /// `2026-12-03T13:37:09.123Z` (RFC 3339, UTC, milliseconds); negative
    /// times as the epoch. The date and second are formatted when the second
    /// changes: lines of one second patch in their milliseconds only.
    private func time(unixMillis: Int64, _ p: inout UnsafeMutablePointer<UInt8>) {
        let ms = unixMillis >= 0 ? unixMillis : 0
        let secs = ms / 1000
        if secs != second {
            second = secs
            withUnsafeMutableBytes(of: &secondText) { formatRFC3339(second: secs, into: $0.baseAddress!.assumingMemoryBound(to: UInt8.self)) }
        }
        withUnsafeBytes(of: secondText) { UnsafeMutableRawPointer(p).copyMemory(from: $0.baseAddress!, byteCount: 24) }
        let frac = Int(ms % 1000)
        p[20] = UInt8(truncatingIfNeeded: 0x30 + frac / 100)
        p[21] = UInt8(truncatingIfNeeded: 0x30 + frac / 10 % 10)
        p[22] = UInt8(truncatingIfNeeded: 0x30 + frac % 10)
        p += 24
    }
}

/// `YYYY-MM-DDTHH:MM:SS.000Z` (24 bytes) for a Unix second ≥ 0, computed
/// without libc (`gmtime_r` takes glibc's time-zone lock on every call).
private func formatRFC3339(second secs: Int64, into out: UnsafeMutablePointer<UInt8>) {
    let days = secs / 86_400
    let rem = secs % 86_400
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468
    let era = z / 146_097
    let doe = z - era * 146_097
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
    let mp = (5 * doy + 2) / 153
    let day = doy - (153 * mp + 2) / 5 + 1
    let month = mp < 10 ? mp + 3 : mp - 9
    let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
    var p = out
    func two(_ v: Int64) { p[0] = UInt8(truncatingIfNeeded: 0x30 + v / 10); p[1] = UInt8(truncatingIfNeeded: 0x30 + v % 10); p += 2 }
    two(year / 100); two(year % 100)
    p.byte(0x2d); two(month)
    p.byte(0x2d); two(day)
    p.byte(0x54); two(rem / 3600)
    p.byte(0x3a); two(rem / 60 % 60)
    p.byte(0x3a); two(rem % 60)
    p.raw(".000Z")
}

/// True for an origin-form target without a query (nearly every request):
/// logged as it is. Others go through `loggablePath`.
private func isPlainPath(_ target: String) -> Bool {
    withUTF8(target) { b in b.first == 0x2f && memchr(b.baseAddress!, 0x3f, b.count) == nil }
}

/// `body` over `s`'s UTF-8 in place (a native string's storage; a copy only for others).
@inline(__always)
func withUTF8<R>(_ s: String, _ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R {
    if let r = try s.utf8.withContiguousStorageIfAvailable(body) { return r }
    var s = s
    return try s.withUTF8(body)
}

@inline(__always)
func withUTF8<R>(_ s: Substring, _ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R {
    if let r = try s.utf8.withContiguousStorageIfAvailable(body) { return r }
    var s = s
    return try s.withUTF8(body)
}

// MARK: writing through a pointer

/// Writes at the pointer and moves it on. The caller has reserved the room.
/// (`jsonString` is internal for its tests; the rest is this file's.)
extension UnsafeMutablePointer<UInt8> {
    @inline(__always)
    fileprivate mutating func byte(_ b: UInt8) {
        pointee = b
        self += 1
    }

    @inline(__always)
    fileprivate mutating func raw(_ s: StaticString) {
        let n = s.utf8CodeUnitCount
        let src = UnsafeRawPointer(s.utf8Start)
        if n >= 8 && n <= 16 {
            // A field name: two word copies that may overlap, not a call to memcpy.
            let head = src.loadUnaligned(as: UInt64.self), tail = src.loadUnaligned(fromByteOffset: n - 8, as: UInt64.self)
            UnsafeMutableRawPointer(self).storeBytes(of: head, as: UInt64.self)
            UnsafeMutableRawPointer(self).storeBytes(of: tail, toByteOffset: n - 8, as: UInt64.self)
        } else {
            for i in 0..<n { self[i] = s.utf8Start[i] }
        }
        self += n
    }

    /// `name` (with its quotes, comma and colon) and `value` as a JSON string.
    @inline(__always)
    fileprivate mutating func field(_ name: StaticString, _ value: String) {
        raw(name)
        withUTF8(value) { jsonString($0) }
    }

    /// A `Substring` field (a redacted path).
    fileprivate mutating func field(_ name: StaticString, _ value: Substring) {
        raw(name)
        withUTF8(value) { jsonString($0) }
    }

    /// `cache_status`: what `Cache-Status` said, without Berth's own name (`Berth; hit` → `hit`).
    fileprivate mutating func cacheStatus(_ value: String) {
        raw(#","cache_status":"#)
        withUTF8(value) { b in
            let prefix: StaticString = "Berth; "
            let skip = b.count >= 7 && memcmp(b.baseAddress!, prefix.utf8Start, 7) == 0 ? 7 : 0
            jsonString(UnsafeBufferPointer(rebasing: b[skip...]))
        }
    }

    /// Decimal digits of `v`.
    @inline(__always)
    fileprivate mutating func decimal(_ v: UInt64) {
        var digits = 1
        var t = v
        while t >= 10 { t /= 10; digits += 1 }
        var v = v
        var i = digits
        repeat {
            i -= 1
            self[i] = UInt8(truncatingIfNeeded: 0x30 + v % 10)
            v /= 10
        } while i > 0
        self += digits
    }

    /// `12.345`: milliseconds with three decimals, from nanoseconds.
    @inline(__always)
    fileprivate mutating func millis(nanos: UInt64) {
        let micros = nanos / 1000
        decimal(micros / 1000)
        let frac = micros % 1000
        self[0] = 0x2e
        self[1] = UInt8(truncatingIfNeeded: 0x30 + frac / 100)
        self[2] = UInt8(truncatingIfNeeded: 0x30 + frac / 10 % 10)
        self[3] = UInt8(truncatingIfNeeded: 0x30 + frac % 10)
        self += 4
    }

    /// `s` as a JSON string: quotes, backslashes, control bytes and DEL
    /// escaped, the rest (valid UTF-8, as every Swift string is) copied as
    /// is. Sixteen (then eight) bytes at a time while they hold nothing to escape, the
    /// last few bytes too (taken from the string's last word, never read past
    /// its end), so a value without escapes (nearly all) costs about a copy.
    /// Needs room for `6 * s.count + 10` bytes: a word store may write up to
    /// 7 bytes past the end of the string's copy (overwritten by what follows).
    @inline(__always)
    mutating func jsonString(_ s: UnsafeBufferPointer<UInt8>) {
        byte(0x22)
        let n = s.count
        if let src = s.baseAddress {
            var i = 0
            while n - i >= 16 {
                let v = UnsafeRawPointer(src + i).loadUnaligned(as: SIMD16<UInt8>.self)
                if vectorNeedsEscape(v) { return escaping(src + i, n - i) }
                UnsafeMutableRawPointer(self).storeBytes(of: v, as: SIMD16<UInt8>.self)
                self += 16
                i += 16
            }
            if n - i >= 8 {
                let w = UnsafeRawPointer(src + i).loadUnaligned(as: UInt64.self)
                if wordNeedsEscape(w) { return escaping(src + i, n - i) }
                UnsafeMutableRawPointer(self).storeBytes(of: w, as: UInt64.self)
                self += 8
                i += 8
            }
            let k = n - i
            if k > 0 {
                // The last k bytes: the top of the string's last word when it has
                // one (the rest filled with `A`), else one by one.
                guard n >= 8 else { return escaping(src + i, k) }
                let last = UnsafeRawPointer(src + n - 8).loadUnaligned(as: UInt64.self)
                let w = last >> (8 * (8 - k)) | 0x4141_4141_4141_4141 << (8 * k)
                if wordNeedsEscape(w) { return escaping(src + i, k) }
                UnsafeMutableRawPointer(self).storeBytes(of: w, as: UInt64.self)
                self += k
            }
        }
        byte(0x22)
    }

    /// The rest of a JSON string from `src`, `n` bytes, one by one, and its closing quote.
    @inline(never)
    private mutating func escaping(_ src: UnsafePointer<UInt8>, _ n: Int) {
        for i in 0..<n { escapeByte(src[i]) }
        byte(0x22)
    }

    @inline(__always)
    private mutating func escapeByte(_ b: UInt8) {
        switch b {
        case 0x22: byte(0x5c); byte(0x22)
        case 0x5c: byte(0x5c); byte(0x5c)
        case 0x0a: byte(0x5c); byte(0x6e)
        case 0x0d: byte(0x5c); byte(0x72)
        case 0x09: byte(0x5c); byte(0x74)
        case ..<0x20, 0x7f:
            let hex: StaticString = "0123456789abcdef"
            raw(#"\u00"#)
            byte(hex.utf8Start[Int(b >> 4)])
            byte(hex.utf8Start[Int(b & 0xf)])
        default: byte(b)
        }
    }
}

/// True when one of the 8 bytes of `w` is below 0x20, `"`, `\` or DEL.
/// `(x - 0x01…) & ~x & 0x80…` is non-zero exactly when a byte of `x` is zero
/// (and `(x - n·0x01…) & ~x & 0x80…` when one is below n ≤ 0x80); the XORs
/// turn "equals c" into "is zero". Bytes ≥ 0x80 (UTF-8 beyond ASCII) never
/// match: `~w` clears their high bit (so do the XORs: every c < 0x80).
@inline(__always)
func wordNeedsEscape(_ w: UInt64) -> Bool {
    let ones: UInt64 = 0x0101_0101_0101_0101
    let below20 = w &- ones &* 0x20
    let quote = (w ^ (ones &* 0x22)) &- ones
    let backslash = (w ^ (ones &* 0x5c)) &- ones
    let del = (w ^ (ones &* 0x7f)) &- ones
    return (below20 | quote | backslash | del) & ~w & 0x8080_8080_8080_8080 != 0
}

/// True when one of the 16 bytes is below 0x20, `"`, `\` or DEL: the test
/// of `wordNeedsEscape` in each byte lane (lanes do not borrow from each
/// other), in the integer operations Swift turns into SSE2 instructions (its
/// SIMD comparisons compile to a loop over the lanes).
@inline(__always)
func vectorNeedsEscape(_ v: SIMD16<UInt8>) -> Bool {
    let below20 = v &- SIMD16(repeating: 0x20)
    let quote = (v ^ SIMD16(repeating: 0x22)) &- SIMD16(repeating: 1)
    let backslash = (v ^ SIMD16(repeating: 0x5c)) &- SIMD16(repeating: 1)
    let del = (v ^ SIMD16(repeating: 0x7f)) &- SIMD16(repeating: 1)
    let hits = (below20 | quote | backslash | del) & ~v & SIMD16(repeating: 0x80)
    let halves = unsafeBitCast(hits, to: SIMD2<UInt64>.self)
    return halves[0] | halves[1] != 0
}
