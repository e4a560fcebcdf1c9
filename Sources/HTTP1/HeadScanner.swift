#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// The part of request and response parsing that is the same for both: finding where a head (or a
// chunked trailer section) ends, keeping the bytes of a head that arrives in pieces, enforcing the
// size limits, and decoding header-field lines.
//
// Scanning and decoding are two passes. The scanner looks at every byte once (memchr for LF) however
// the input is split, so feeding a head one byte at a time is O(n). Once the end is known the head
// is decoded in one pass over contiguous bytes: straight from the caller's buffer when the head
// arrived whole (the common case, no copy), else from the scanner's buffer.

// MARK: - Byte classes

let cr: UInt8 = 0x0D
let lf: UInt8 = 0x0A
let sp: UInt8 = 0x20
let htab: UInt8 = 0x09
let colon: UInt8 = 0x3A
let comma: UInt8 = 0x2C
let semicolon: UInt8 = 0x3B

/// RFC 9110 tchar: `!#$%&'*+-.^_`|~`, DIGIT, ALPHA, as two 64-bit masks.
@inline(__always)
func isTokenByte(_ b: UInt8) -> Bool {
    if b < 64 { return (0x03FF_6CFA_0000_0000 as UInt64) >> UInt64(b) & 1 == 1 }
    if b < 128 { return (0x57FF_FFFF_C7FF_FFFE as UInt64) >> UInt64(b &- 64) & 1 == 1 }
    return false
}

/// A byte allowed inside a field value (and a reason phrase): HTAB, SP, VCHAR, obs-text.
@inline(__always)
func isFieldValueByte(_ b: UInt8) -> Bool {
    b == htab || (b >= sp && b != 0x7F)
}

@inline(__always)
func isOWS(_ b: UInt8) -> Bool { b == sp || b == htab }

// Eight bytes at a time ("SWAR", Hacker's Delight §6-1): the hot loops check whole words and fall back
// to single bytes only for a word that may hold a byte to stop at.
private let ones: UInt64 = 0x0101_0101_0101_0101
private let highs: UInt64 = 0x8080_8080_8080_8080

/// Whether some byte of `w` is below `n` (n ≤ 128).
@inline(__always)
private func hasByteLess(_ w: UInt64, than n: UInt64) -> Bool {
    (w &- ones &* n) & ~w & highs != 0
}

/// The first index in `p[from..<to]` whose byte is not a field-value byte (HTAB, SP, VCHAR,
/// obs-text), or `to`.
@inline(__always)
func skipFieldValueBytes(_ p: UnsafeRawBufferPointer, from: Int, to: Int) -> Int {
    var k = from
    while true {
        while k + 8 <= to {
            let w = p.loadUnaligned(fromByteOffset: k, as: UInt64.self)
            if hasByteLess(w, than: 0x20) || hasByteLess(w ^ (ones &* 0x7F), than: 1) { break }
            k += 8
        }
        // A word with a CTL, DEL or HTAB in it, or the tail.
        let stop = min(k + 8, to)
        while k < stop {
            guard isFieldValueByte(p[k]) else { return k }
            k += 1
        }
        if k == to { return k }
    }
}

/// The first index in `p[from..<to]` whose byte is not visible ASCII (0x21...0x7E), or `to`.
@inline(__always)
func skipVisibleASCII(_ p: UnsafeRawBufferPointer, from: Int, to: Int) -> Int {
    var k = from
    while k + 8 <= to {
        let w = p.loadUnaligned(fromByteOffset: k, as: UInt64.self)
        if hasByteLess(w, than: 0x21) || ((w &+ ones) | w) & highs != 0 { break }
        k += 8
    }
    while k < to && p[k] &- 0x21 < 0x5E { k += 1 }
    return k
}

/// Decodes bytes as UTF-8; invalid sequences (obs-text that is not UTF-8) become U+FFFD.
@inline(__always)
func makeString(_ p: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> String {
    String(decoding: UnsafeRawBufferPointer(rebasing: p[start..<end]), as: UTF8.self)
}

/// ASCII case-insensitive comparison of `p[start..<end]` with a lowercase literal.
@inline(__always)
func bytesEqualLowercase(_ p: UnsafeRawBufferPointer, _ start: Int, _ end: Int, _ lowercase: StaticString) -> Bool {
    guard end - start == lowercase.utf8CodeUnitCount else { return false }
    let l = lowercase.utf8Start
    for k in 0..<(end - start) where asciiLower(p[start + k]) != l[k] {
        return false
    }
    return true
}

/// Index of the first LF in `p[from..<to]`, or nil.
@inline(__always)
func findLF(_ p: UnsafeRawBufferPointer, from: Int, to: Int) -> Int? {
    guard from < to, let base = p.baseAddress else { return nil }
    guard let hit = memchr(base + from, Int32(lf), to - from) else { return nil }
    return base.distance(to: UnsafeRawPointer(hit))
}

// MARK: - Scanner

/// Finds the end of a head or trailer section (the empty line) across any number of inputs.
struct HeadScanner {
    /// Whether the section begins with a start line (heads) or only fields (trailers).
    private var hasStartLine: Bool
    /// Whether an oversized start line is answered 414 (request line) rather than 431.
    private var startLineIsTarget: Bool
    /// Byte budget for this section and how many field lines it may hold.
    private var budget: Int
    private var maxFields: Int

    /// Bytes of a section that arrived split across inputs; empty when the section is read in one piece.
    private(set) var buffer: [UInt8] = []
    /// Bytes of this section seen so far, CRLFs included (leading empty lines excluded).
    private(set) var sectionBytes = 0
    /// Complete lines seen so far (the start line included).
    private(set) var lines = 0
    /// Still skipping empty lines before a start line.
    private var isLeading: Bool
    /// The last byte seen was a CR (its LF may come in the next input).
    private var lastWasCR = false
    /// Bytes of the current line seen so far (its CR included, once seen).
    private var lineBytes = 0
    /// The current line's first byte is CR: unless LF follows at once, that CR is bare.
    private var lineStartsWithCR = false
    /// Where the section began in the input of the call that completed it (valid when `buffer` is empty).
    private(set) var sectionStart = 0

    init(hasStartLine: Bool, startLineIsTarget: Bool, budget: Int, maxFields: Int) {
        self.hasStartLine = hasStartLine
        self.startLineIsTarget = startLineIsTarget
        self.budget = budget
        self.maxFields = maxFields
        isLeading = hasStartLine
    }

    /// No byte of a section has been seen (only, perhaps, empty lines that are skipped).
    var isIdle: Bool { isLeading || (sectionBytes == 0 && !lastWasCR) }

    /// Field lines seen so far.
    var fieldLines: Int { hasStartLine ? max(lines - 1, 0) : lines }

    /// Forgets the last section, keeping the buffer's capacity.
    mutating func reset() {
        buffer.removeAll(keepingCapacity: buffer.capacity <= 4096)
        sectionBytes = 0
        lines = 0
        isLeading = hasStartLine
        lastWasCR = false
        lineBytes = 0
        lineStartsWithCR = false
        sectionStart = 0
    }

    /// Reuses the scanner for a trailer section with what is left of the budgets.
    mutating func resetForTrailers(budget: Int, maxFields: Int) {
        hasStartLine = false
        startLineIsTarget = false
        self.budget = budget
        self.maxFields = maxFields
        reset()
    }

    /// Scans `input[from...]`. Returns the index just past the section's final LF, or nil when every
    /// byte was absorbed (kept in `buffer` if part of the section) and more input is needed.
    mutating func scan(_ input: UnsafeRawBufferPointer, from: Int) throws -> Int? {
        let n = input.count
        var i = from
        if isLeading {
            // RFC 9112 §2.2: empty lines (CRLF) before a request line are ignored.
            while i < n {
                let b = input[i]
                if lastWasCR {
                    guard b == lf else { throw HTTPParseError.badRequest("bare CR") }
                    lastWasCR = false
                } else if b == cr {
                    lastWasCR = true
                } else if b == lf {
                    throw HTTPParseError.badRequest("bare LF")
                } else {
                    isLeading = false
                    break
                }
                i += 1
            }
            if isLeading { return nil }
        }
        sectionStart = i
        while i < n {
            // Look no further than one byte past the budget.
            let allowance = budget - sectionBytes
            let window = allowance >= n - i ? n : i + allowance + 1
            if lineBytes == 0 { lineStartsWithCR = input[i] == cr }
            guard let j = findLF(input, from: i, to: window) else {
                let taken = window - i
                sectionBytes += taken
                lineBytes += taken
                lastWasCR = input[window - 1] == cr
                if lineStartsWithCR && lineBytes > 1 { throw HTTPParseError.badRequest("bare CR") }
                if sectionBytes > budget { throw limitError() }
                break
            }
            let before = j - i
            // A line that starts with CR is a bare CR, whatever ends it: the same answer as when
            // the line arrives in pieces (above).
            if lineStartsWithCR && lineBytes + before > 1 { throw HTTPParseError.badRequest("bare CR") }
            let endsWithCR = before > 0 ? input[j - 1] == cr : lastWasCR
            guard endsWithCR else { throw HTTPParseError.badRequest("bare LF") }
            sectionBytes += before + 1
            if sectionBytes > budget { throw limitError() }
            i = j + 1
            if lineBytes + before == 1 {
                // The empty line (just CRLF) ends the section. A start line is never empty: leading
                // CRLFs were skipped above.
                if !buffer.isEmpty { buffer.append(contentsOf: input[sectionStart..<i]) }
                return i
            }
            lines += 1
            lineBytes = 0
            lastWasCR = false
            if fieldLines > maxFields {
                throw HTTPParseError.headersTooLarge("more than \(maxFields) header fields")
            }
        }
        buffer.append(contentsOf: input[sectionStart..<n])
        return nil
    }

    private func limitError() -> HTTPParseError {
        if hasStartLine && lines == 0 {
            return startLineIsTarget ? .uriTooLong("request line too long") : .headersTooLarge("status line too long")
        }
        return .headersTooLarge(hasStartLine ? "header section too large" : "trailer section too large")
    }

    /// Calls `body` with the part of an unfinished section kept so far.
    func withBuffer<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try buffer.withUnsafeBytes(body)
    }

    /// Calls `body` with what this scan saw of a section it refused: the buffer, then `input` from the
    /// section's start (error paths only; this copies).
    func withRefused<R>(_ input: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try (buffer + input[min(sectionStart, input.count)...]).withUnsafeBytes(body)
    }

    /// Calls `body` with the complete section ending at `end` in `input`: the caller's bytes when the
    /// section arrived in one piece, else the buffer.
    func withSection<R>(_ input: UnsafeRawBufferPointer, end: Int, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        if buffer.isEmpty {
            return try body(UnsafeRawBufferPointer(rebasing: input[sectionStart..<end]))
        }
        return try buffer.withUnsafeBytes(body)
    }
}

// MARK: - Field lines

/// What the parsers need to know from the fields that affect framing and connection reuse.
struct FieldSummary {
    var hostCount = 0
    var contentLength: UInt64?
    var hasTransferEncoding = false
    var codingCount = 0
    var chunkedCount = 0
    var lastCodingIsChunked = false
    var connectionClose = false
    var connectionKeepAlive = false
}

/// Decodes the field lines of `p` starting at `start` (each line ends in CRLF; the section ends with
/// an empty line). With `keep` false (trailers) the fields are validated and dropped.
func decodeFields(
    _ p: UnsafeRawBufferPointer, from start: Int, into headers: inout HTTPHeaders, keep: Bool,
    summary: inout FieldSummary
) throws {
    var lineStart = start
    let n = p.count
    while lineStart < n {
        // The scanner guarantees each LF is preceded by CR and the last line is empty.
        guard let lfIndex = findLF(p, from: lineStart, to: n) else { throw HTTPParseError.badRequest("truncated head") }
        let lineEnd = lfIndex - 1
        if lineEnd == lineStart { return }
        try decodeField(p, lineStart, lineEnd, into: &headers, keep: keep, summary: &summary)
        lineStart = lfIndex + 1
    }
    throw HTTPParseError.badRequest("truncated head")
}

@inline(__always)
private func decodeField(
    _ p: UnsafeRawBufferPointer, _ start: Int, _ end: Int, into headers: inout HTTPHeaders, keep: Bool,
    summary: inout FieldSummary
) throws {
    let first = p[start]
    if isOWS(first) { throw HTTPParseError.badRequest("obsolete line folding") }
    var i = start
    while i < end && isTokenByte(p[i]) { i += 1 }
    guard i < end, p[i] == colon else {
        throw HTTPParseError.badRequest(i < end && isOWS(p[i]) ? "whitespace before colon" : "invalid header field name")
    }
    let nameEnd = i
    guard nameEnd > start else { throw HTTPParseError.badRequest("empty header field name") }
    var valueStart = nameEnd + 1
    while valueStart < end && isOWS(p[valueStart]) { valueStart += 1 }
    var valueEnd = end
    while valueEnd > valueStart && isOWS(p[valueEnd - 1]) { valueEnd -= 1 }
    guard skipFieldValueBytes(p, from: valueStart, to: valueEnd) == valueEnd else {
        throw HTTPParseError.badRequest("invalid byte in header field value")
    }
    guard keep else { return }

    switch nameEnd - start {
    case 4 where bytesEqualLowercase(p, start, nameEnd, "host"):
        summary.hostCount += 1
    case 10 where bytesEqualLowercase(p, start, nameEnd, "connection"):
        forEachListElement(p, valueStart, valueEnd) { s, e in
            if bytesEqualLowercase(p, s, e, "close") { summary.connectionClose = true }
            if bytesEqualLowercase(p, s, e, "keep-alive") { summary.connectionKeepAlive = true }
        }
    case 14 where bytesEqualLowercase(p, start, nameEnd, "content-length"):
        try decodeContentLength(p, valueStart, valueEnd, &summary)
    case 17 where bytesEqualLowercase(p, start, nameEnd, "transfer-encoding"):
        try decodeTransferEncoding(p, valueStart, valueEnd, &summary)
    default:
        break
    }
    headers.fields.append(HTTPHeaders.Field(name: makeString(p, start, nameEnd), value: makeString(p, valueStart, valueEnd)))
}

/// Calls `body` with the bounds of each non-empty element of a comma-separated list, OWS trimmed.
@inline(__always)
private func forEachListElement(_ p: UnsafeRawBufferPointer, _ start: Int, _ end: Int, _ body: (Int, Int) throws -> Void) rethrows {
    var s = start
    while s <= end {
        var e = s
        while e < end && p[e] != comma { e += 1 }
        var a = s, b = e
        while a < b && isOWS(p[a]) { a += 1 }
        while b > a && isOWS(p[b - 1]) { b -= 1 }
        if a < b { try body(a, b) }
        s = e + 1
    }
}

/// `Content-Length = 1*DIGIT`; a comma list or repeated field is accepted only if every value is equal.
private func decodeContentLength(_ p: UnsafeRawBufferPointer, _ start: Int, _ end: Int, _ summary: inout FieldSummary) throws {
    var s = start
    var sawElement = false
    while s <= end {
        var e = s
        while e < end && p[e] != comma { e += 1 }
        var a = s, b = e
        while a < b && isOWS(p[a]) { a += 1 }
        while b > a && isOWS(p[b - 1]) { b -= 1 }
        guard a < b else { throw HTTPParseError.badRequest("empty Content-Length") }
        var value: UInt64 = 0
        for k in a..<b {
            let d = p[k] &- 0x30
            guard d < 10 else { throw HTTPParseError.badRequest("invalid Content-Length") }
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let (v, o2) = m.addingReportingOverflow(UInt64(d))
            guard !o1 && !o2 else { throw HTTPParseError.badRequest("Content-Length overflow") }
            value = v
        }
        if let previous = summary.contentLength, previous != value {
            throw HTTPParseError.badRequest("conflicting Content-Length values")
        }
        summary.contentLength = value
        sawElement = true
        s = e + 1
    }
    if !sawElement { throw HTTPParseError.badRequest("empty Content-Length") }
}

/// Records the codings of a `Transfer-Encoding` field (`coding *( OWS ";" OWS param )`, comma-separated).
private func decodeTransferEncoding(_ p: UnsafeRawBufferPointer, _ start: Int, _ end: Int, _ summary: inout FieldSummary) throws {
    summary.hasTransferEncoding = true
    try forEachListElement(p, start, end) { a, b in
        var nameEnd = a
        while nameEnd < b && isTokenByte(p[nameEnd]) { nameEnd += 1 }
        guard nameEnd > a else { throw HTTPParseError.badRequest("invalid transfer coding") }
        var rest = nameEnd
        while rest < b && isOWS(p[rest]) { rest += 1 }
        guard rest == b || p[rest] == semicolon else { throw HTTPParseError.badRequest("invalid transfer coding") }
        let isChunked = bytesEqualLowercase(p, a, nameEnd, "chunked")
        summary.codingCount += 1
        if isChunked { summary.chunkedCount += 1 }
        summary.lastCodingIsChunked = isChunked
    }
}
