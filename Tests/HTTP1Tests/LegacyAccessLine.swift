import Foundation
import HTTP1

// The access-log renderer as it was before the line went straight into a
// loop's byte buffer (commit 01dc4c0): kept verbatim as the reference that
// `AccessLineTests` compares the fast renderer with, byte for byte (only
// `appendDecimal` is spelled through `String` here: the same digits; the
// path goes through the live `loggablePath`, tested on its own; the time
// through Foundation's formatter).
// Do not "improve" it: its output is the format.

enum LegacyAccessLine {
    static func line(_ r: AccessRecord) -> [UInt8] {
        var out: [UInt8] = []
        render(r, into: &out)
        return out
    }

    static func render(_ r: AccessRecord, into out: inout [UInt8]) {
        raw(#"{"time":""#, &out)
        appendRFC3339(unixMillis: r.unixMillis, to: &out)
        out.append(0x22)
        field("request_id", r.requestID, &out)
        if let client = r.client { field("client", client, &out) }
        if let v = r.notes.user { field("user", v, &out) }
        if let method = r.method { field("method", method, &out) }
        if let target = r.target { field("path", HTTP1.loggablePath(target), &out) }
        if let v = r.notes.upstream { field("upstream", v, &out) }
        if let v = r.notes.repository { field("repository", v, &out) }
        if let v = r.notes.reference { field("reference", v, &out) }
        raw(#","status":"#, &out)
        appendDecimal(r.status, to: &out)
        if let v = r.notes.cacheStatus {
            field("cache_status", v.utf8.starts(with: "Berth; ".utf8) ? v.dropFirst(7) : v[...], &out)
        }
        raw(#","bytes":"#, &out)
        appendDecimal(r.bodyBytes, to: &out)
        raw(#","duration_ms":"#, &out)
        appendMillis(nanos: r.durationNanos, to: &out)
        if let n = r.notes.upstreamNanos {
            raw(#","upstream_ms":"#, &out)
            appendMillis(nanos: n, to: &out)
        }
        if let v = r.notes.error { field("error", v, &out) }
        if let v = r.notes.errorMessage { field("error_message", v, &out) }
        if !r.isComplete { raw(#","incomplete":true"#, &out) }
        raw("}\n", &out)
    }

    private static func raw(_ s: StaticString, _ out: inout [UInt8]) {
        out.append(contentsOf: UnsafeRawBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
    }

    private static func field(_ name: StaticString, _ value: String, _ out: inout [UInt8]) { field(name, value[...], &out) }

    private static func field(_ name: StaticString, _ value: Substring, _ out: inout [UInt8]) {
        out.append(0x2c)
        out.append(0x22)
        raw(name, &out)
        out.append(0x22)
        out.append(0x3a)
        appendJSONString(value, to: &out)
    }

    private static func needsEscape(_ b: UInt8) -> Bool { b < 0x20 || b == 0x22 || b == 0x5c || b == 0x7f }

    static func appendJSONString(_ s: Substring, to out: inout [UInt8]) {
        out.append(0x22)
        var s = s
        s.withUTF8 { bytes in
            guard let first = bytes.firstIndex(where: needsEscape) else { return out.append(contentsOf: bytes) }
            out.append(contentsOf: bytes[..<first])
            for b in bytes[first...] {
                switch b {
                case 0x22: out.append(0x5c); out.append(0x22)
                case 0x5c: out.append(0x5c); out.append(0x5c)
                case 0x0a: out.append(0x5c); out.append(0x6e)
                case 0x0d: out.append(0x5c); out.append(0x72)
                case 0x09: out.append(0x5c); out.append(0x74)
                case ..<0x20, 0x7f:
                    let hex: StaticString = "0123456789abcdef"
                    raw(#"\u00"#, &out)
                    out.append(hex.utf8Start[Int(b >> 4)])
                    out.append(hex.utf8Start[Int(b & 0xf)])
                default: out.append(b)
                }
            }
        }
        out.append(0x22)
    }

    private static func appendDecimal<T: BinaryInteger>(_ value: T, to out: inout [UInt8]) {
        out.append(contentsOf: String(value).utf8)
    }

    private static func appendMillis(nanos: UInt64, to out: inout [UInt8]) {
        let micros = nanos / 1000
        appendDecimal(micros / 1000, to: &out)
        out.append(0x2e)
        let frac = micros % 1000
        out.append(UInt8(0x30 + frac / 100))
        out.append(UInt8(0x30 + frac / 10 % 10))
        out.append(UInt8(0x30 + frac % 10))
    }

    /// Foundation's formatter, not the arithmetic both renderers share: an
    /// oracle of its own (the fixtures' times were checked against the old code).
    static func appendRFC3339(unixMillis: Int64, to out: inout [UInt8]) {
        let ms = unixMillis >= 0 ? unixMillis : 0
        let date = Date(timeIntervalSince1970: TimeInterval(ms / 1000))
        out.append(contentsOf: formatter.string(from: date).utf8)
        let frac = ms % 1000
        out.append(contentsOf: ".\(frac / 100)\(frac / 10 % 10)\(frac % 10)Z".utf8)
    }

    nonisolated(unsafe) private static let formatter: DateFormatter = {  // the tests call it from one thread
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd'T'HH:mm:ss"
        return f
    }()
}
