import Synchronization

/// The `X-Request-Id` every response carries: the client's own when it is
/// well-formed, else a fresh one.
public enum RequestID {
    /// The header name.
    public static let header = "X-Request-Id"

    /// True for 1–64 bytes of `[A-Za-z0-9._-]`: the only shape of a client's id
    /// that is reused. CR, LF, NUL, spaces, quotes and backslashes are all
    /// outside it, so a reused id is safe as is in a header and in a log line
    /// (header serialisation drops CR/LF/NUL values anyway: the second fence).
    public static func isValid(_ id: String) -> Bool {
        let bytes = id.utf8
        guard (1...64).contains(bytes.count) else { return false }
        return bytes.allSatisfy { b in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b == 0x2e || b == 0x5f || b == 0x2d
        }
    }
}

/// Fresh request ids: a random per-process prefix and a counter, both in hex
/// (`4f1c09ae7d2b-1a3`). Unique within the process, unlikely to collide across
/// restarts and replicas, and cheap: one relaxed atomic add per id.
public final class RequestIDGenerator: Sendable {
    public let prefix: String
    private let prefixBytes: [UInt8]
    private let counter = Atomic<UInt64>(0)

    /// `prefix` for tests; by default 12 random hex digits and a `-`.
    public init(prefix: String? = nil) {
        self.prefix = prefix ?? String(UInt64.random(in: 1 << 44 ..< 1 << 48), radix: 16) + "-"
        prefixBytes = Array(self.prefix.utf8)
    }

    public func next() -> String {
        // One allocation, written in place (concatenating two Strings cost three).
        var n = counter.wrappingAdd(1, ordering: .relaxed).newValue
        let digits = max(1, (UInt64.bitWidth - n.leadingZeroBitCount + 3) / 4)
        return String(unsafeUninitializedCapacity: prefixBytes.count + digits) { buf in
            _ = buf.initialize(from: prefixBytes)
            var i = prefixBytes.count + digits
            repeat {
                i -= 1
                let d = UInt8(n & 0xf)
                buf[i] = d < 10 ? 0x30 + d : 0x57 + d
                n >>= 4
            } while i > prefixBytes.count
            return prefixBytes.count + digits
        }
    }

    /// The client's id from `headers` when well-formed, else a fresh one.
    public func id(for headers: HTTPHeaders) -> String {
        if let sent = headers[RequestID.header], RequestID.isValid(sent) { return sent }
        return next()
    }
}
