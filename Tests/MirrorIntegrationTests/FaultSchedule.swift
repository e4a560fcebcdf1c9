import Foundation
import PropertyBased

// The inputs of the digest-invariant property test (issue 8): one blob, what
// the upstream does on each attempt to fetch it, what the clients ask for,
// and whether (and when) Berth is killed with SIGKILL.
//
// Every choice is drawn from small integer "rolls" through the property
// library's generators, so a failing schedule replays from its seed and
// shrinks towards roll 0, which is always the simplest case (a correct
// upstream, a full GET, the empty blob, no kill).

/// What the upstream does with one request for the blob (GET or HEAD).
enum Fault: Equatable, CustomStringConvertible {
    /// 200, the right bytes, `Content-Length`.
    case correct
    /// 200, the right bytes, chunked (no `Content-Length`).
    case chunked
    /// 200 with the right length, one byte changed (an empty blob gets one byte instead).
    case wrongByte(at: Int, xor: UInt8)
    /// Declares the whole length, sends the first `sent` bytes, then resets after `delayMs`.
    case cut(sent: Int, delayMs: Int)
    /// Closes the connection before any response byte.
    case reset
    /// The right answer after `ms` (shorter than Berth's head timeout).
    case stallHead(ms: Int)
    /// The first `sent` bytes, a pause of `ms` (shorter than Berth's idle timeout), the rest.
    case stallBody(sent: Int, ms: Int)
    /// 429 with `Retry-After`.
    case rateLimited
    /// 500, 502 or 503 with an error body.
    case serverError(Int)
    /// 200 with `Content-Length: 0` whatever the blob.
    case zeroLength
    /// Declares and sends only the first `length` bytes (fewer than the blob's).
    case shortLength(Int)
    /// The blob followed by `count` bytes more, all declared.
    case extraBytes(count: Int)
    /// Declares `length` (2^62 or 2^64-1), sends a few bytes, resets.
    case hugeLength(UInt64)
    /// No head at all until Berth's head timeout gives up.
    case hangHead
    /// The first `sent` bytes, then silence past Berth's idle timeout.
    case hangBody(sent: Int)

    /// Maps rolls to a fault for a blob of `size` bytes. `kind` 0...99 picks the
    /// fault (weights below), `a` and `b` (0...1000) place it.
    init(kind: Int, a: Int, b: Int, size: Int) {
        let at = size == 0 ? 0 : min(size - 1, a * size / 1001)   // an offset inside the blob
        let prefix = a * size / 1001                                // 0..<size (0 for the empty blob)
        switch kind {
        case ..<20: self = .correct
        case ..<23: self = .chunked
        case ..<35: self = .wrongByte(at: at, xor: UInt8(1 + b % 255))
        case ..<47: self = .cut(sent: prefix, delayMs: b % 40)
        case ..<53: self = .reset
        case ..<58: self = .stallHead(ms: b / 3)            // ≤ 333 ms
        case ..<65: self = .stallBody(sent: prefix, ms: b / 3)
        case ..<71: self = .rateLimited
        case ..<79: self = .serverError([500, 502, 503][b % 3])
        case ..<84: self = .zeroLength
        case ..<88: self = size == 0 ? .extraBytes(count: 1 + b % 16) : .shortLength(prefix)
        case ..<91: self = .extraBytes(count: 1 + b % 16)
        case ..<96: self = .hugeLength(b % 2 == 0 ? 1 << 62 : UInt64.max)
        case ..<98: self = .hangHead
        default: self = .hangBody(sent: prefix)
        }
    }

    var description: String {
        switch self {
        case .correct: return "correct"
        case .chunked: return "chunked"
        case .wrongByte(let at, let x): return "wrongByte@\(at)^\(x)"
        case .cut(let sent, let d): return "cut@\(sent)+\(d)ms"
        case .reset: return "reset"
        case .stallHead(let ms): return "stallHead\(ms)ms"
        case .stallBody(let sent, let ms): return "stallBody@\(sent)/\(ms)ms"
        case .rateLimited: return "429"
        case .serverError(let s): return "\(s)"
        case .zeroLength: return "zeroLength"
        case .shortLength(let n): return "shortLength\(n)"
        case .extraBytes(let n): return "extra+\(n)"
        case .hugeLength(let n): return "huge\(n == UInt64.max ? "2^64-1" : "2^62")"
        case .hangHead: return "hangHead"
        case .hangBody(let sent): return "hangBody@\(sent)"
        }
    }

    /// Faults that wait for one of Berth's timeouts (head or idle).
    var waitsForATimeout: Bool {
        switch self {
        case .hangHead, .hangBody: return true
        default: return false
        }
    }
}

/// One member of a `Range: bytes=` header.
enum RangeMember: Equatable, CustomStringConvertible {
    case closed(UInt64, UInt64)   // first-last
    case from(UInt64)             // first-
    case suffix(UInt64)           // -n

    var text: String {
        switch self {
        case .closed(let a, let b): return "\(a)-\(b)"
        case .from(let a): return "\(a)-"
        case .suffix(let n): return "-\(n)"
        }
    }
    var description: String { text }

    /// From rolls: `kind` 0...99, `a`, `b` 0...1000 as fractions of `size`
    /// (a few members land past the end: unsatisfiable ones).
    init(kind: Int, a: Int, b: Int, size: Int) {
        let s = UInt64(size)
        let first = UInt64(a) * s / 1001
        switch kind {
        case ..<55: self = .closed(first, first + UInt64(b) * s / 4000)
        case ..<70: self = .from(first)
        case ..<90: self = .suffix(1 + UInt64(b) * s / 2000)
        default: self = .from(s + UInt64(b % 3))            // past the end
        }
    }

    /// The member resolved against `size` (RFC 9110 §14.1.2), nil when unsatisfiable.
    func resolved(size: UInt64) -> ClosedRange<UInt64>? {
        switch self {
        case .closed(let a, let b): return a < size ? a...min(b, size - 1) : nil
        case .from(let a): return a < size ? a...(size - 1) : nil
        case .suffix(let n): return n > 0 && size > 0 ? (size - min(n, size))...(size - 1) : nil
        }
    }
}

/// One client of the schedule.
struct ClientSpec: Equatable, CustomStringConvertible {
    enum Kind: Equatable {
        case full
        case head
        case range([RangeMember])
        /// A GET that leaves after `bytes` body bytes (or at the head when 0).
        case leaveEarly(bytes: Int)
    }
    var kind: Kind
    /// curl instead of Berth's in-process HTTP1 client (an independent parser).
    var viaCurl: Bool
    /// Starts this long after the schedule's clients start (0...150 ms).
    var delayMs: Int

    var rangeHeader: String? {
        guard case .range(let members) = kind else { return nil }
        return "bytes=" + members.map(\.text).joined(separator: ",")
    }

    var description: String {
        let what: String
        switch kind {
        case .full: what = "GET"
        case .head: what = "HEAD"
        case .range: what = "GET \(rangeHeader!)"
        case .leaveEarly(let n): what = "GET-leave@\(n)"
        }
        return "\(what)\(viaCurl ? " (curl)" : "")\(delayMs > 0 ? " +\(delayMs)ms" : "")"
    }
}

/// When the schedule kills Berth with SIGKILL.
enum KillPoint: Equatable, CustomStringConvertible {
    case none
    /// While upstream attempt `attempt` is being served, after `permille` of its body.
    case duringAttempt(attempt: Int, permille: Int)
    /// `ms` after the clients started, wherever they are.
    case afterDelay(ms: Int)
    /// Once every client is done (fills may still be committing).
    case afterClients

    init(kind: Int, a: Int) {
        switch kind {
        case ..<92: self = .none
        case ..<96: self = .duringAttempt(attempt: a % 3, permille: a)
        case ..<98: self = .afterDelay(ms: a / 5)
        default: self = .afterClients
        }
    }

    var description: String {
        switch self {
        case .none: return "none"
        case .duringAttempt(let i, let p): return "during attempt \(i) at \(p)‰"
        case .afterDelay(let ms): return "after \(ms) ms"
        case .afterClients: return "after the clients"
        }
    }
}

/// One schedule: a blob, the upstream's behaviour per attempt, the clients, a kill.
struct Schedule: CustomStringConvertible {
    var size: Int
    var contentSeed: UInt64
    /// Attempt i (GET or HEAD, in arrival order) gets `faults[i]`; later attempts are served correctly.
    var faults: [Fault]
    var clients: [ClientSpec]
    var kill: KillPoint
    /// Fetch the blob correctly once first (under another repository): the
    /// faults then meet Berth's access-check HEAD for a cached digest.
    var prewarm: Bool
    /// `Retry-After` value of this schedule's 429s.
    var retryAfter: String

    var description: String {
        "Schedule(size: \(size), seed: \(contentSeed), prewarm: \(prewarm), faults: \(faults), clients: \(clients), kill: \(kill))"
    }

    /// The blob's bytes: `size` bytes from a SplitMix64 stream seeded with `contentSeed`.
    func makeBlob() -> [UInt8] {
        var state = contentSeed
        var out = [UInt8]()
        out.reserveCapacity(size + 8)
        while out.count < size {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            withUnsafeBytes(of: z.littleEndian) { out.append(contentsOf: $0) }
        }
        return Array(out.prefix(size))
    }

    /// Size buckets by roll (0...999): the empty blob, tiny, up to 4 KiB, up to 64 KiB, up to 256 KiB.
    static func size(roll: Int, seed: UInt64) -> Int {
        let r = Int(seed % 1_000_003)
        switch roll {
        case ..<30: return 0
        case ..<100: return 1 + r % 64
        case ..<400: return 1 + r % 4096
        case ..<800: return 1 + r % 65536
        default: return 1 + r % (256 << 10)
        }
    }
}

// MARK: generators

enum ScheduleGen {
    static let roll100 = Gen.int(in: 0...99)
    static let roll1000 = Gen.int(in: 0...1000)

    /// (kind, a, b) rolls of one fault; placed once the blob's size is known.
    static let faultRolls = zip(roll100, roll1000, roll1000)

    /// (kind, transport, delay, range kinds and fractions) rolls of one client.
    static let clientRolls = zip(roll100, roll100, Gen.int(in: 0...150), zip(roll100, roll1000, roll1000).array(of: 1...3))

    static func client(_ t: (Int, Int, Int, [(Int, Int, Int)]), size: Int) -> ClientSpec {
        let (kind, transport, delay, members) = t
        let k: ClientSpec.Kind
        switch kind {
        case ..<40: k = .full
        case ..<50: k = .head
        case ..<75: k = .range([RangeMember(kind: members[0].0, a: members[0].1, b: members[0].2, size: size)])
        case ..<90: k = .range(members.map { RangeMember(kind: $0.0, a: $0.1, b: $0.2, size: size) })
        default: k = .leaveEarly(bytes: members[0].1 * size / 1001)
        }
        return ClientSpec(kind: k, viaCurl: transport >= 85, delayMs: delay)
    }

    /// The whole schedule.
    static let schedule = zip(
        Gen.int(in: 0...999),                     // size bucket
        Gen<UInt64>.value(in: 1...UInt64.max),    // content seed (fresh digest per schedule)
        faultRolls.array(of: 1...4),
        clientRolls.array(of: 1...4),
        zip(roll100, roll1000),                   // kill
        roll100                                   // prewarm, Retry-After
    ).map { t -> Schedule in
        let (sizeRoll, seed, faults, clients, kill, misc) = t
        let size = Schedule.size(roll: sizeRoll, seed: seed)
        var specs = clients.map { client($0, size: size) }
        specs[0].delayMs = 0  // the first client starts at once: every schedule begins with a cold miss
        return Schedule(
            size: size, contentSeed: seed,
            faults: faults.map { Fault(kind: $0.0, a: $0.1, b: $0.2, size: size) },
            clients: specs,
            kill: KillPoint(kind: kill.0, a: kill.1),
            prewarm: misc >= 90,
            retryAfter: String(1 + misc % 60))
    }
}
