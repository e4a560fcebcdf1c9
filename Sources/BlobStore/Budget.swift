#if canImport(Glibc)
import Glibc
#endif
import Reactor

/// How much the cache may hold, and when eviction starts and stops.
///
/// The budget bounds everything under the cache directory at every moment:
/// blobs, fills in progress (reserved from their Content-Length before the
/// first byte is written) and the index. Past `high` of the budget, least
/// recently used blobs are evicted in the background down to `low`.
public struct Budget: Equatable, Sendable {
    public var maxBytes: UInt64
    public var high: Double = 0.9
    public var low: Double = 0.8

    public init(maxBytes: UInt64, high: Double = 0.9, low: Double = 0.8) {
        self.maxBytes = maxBytes
        self.high = high
        self.low = low
    }

    var highBytes: UInt64 { UInt64(Double(maxBytes) * high) }
    public var lowBytes: UInt64 { UInt64(Double(maxBytes) * low) }

    /// Size of the filesystem holding `path`, in bytes.
    public static func filesystemSize(_ path: String) -> UInt64? {
        guard let st = try? Posix.statvfs(path: path) else { return nil }
        return UInt64(st.f_blocks) * UInt64(st.f_frsize)
    }

    /// The default: the smaller of 50 GiB and 80 % of the cache's filesystem.
    public static func defaultBudget(for path: String) -> Budget {
        let cap: UInt64 = 50 << 30
        guard let fs = filesystemSize(path) else { return Budget(maxBytes: cap) }
        return Budget(maxBytes: min(cap, fs / 10 * 8))
    }

    /// Parses `50GiB`, `500MiB`, `1.5TB`, `123456` (bytes) or `80%` (of the
    /// filesystem holding `path`). Nil when the text is none of these.
    public static func parseSize(_ text: String, filesystemOf path: String) -> UInt64? {
        let t = text.trimmingSpaces()
        if t.hasSuffix("%") {
            guard let pct = Double(t.dropLast()), pct > 0, pct <= 100, let fs = filesystemSize(path) else { return nil }
            return UInt64(Double(fs) * pct / 100)
        }
        let units: [(String, Double)] = [
            ("KiB", 1024), ("MiB", 1_048_576), ("GiB", 1_073_741_824), ("TiB", 1_099_511_627_776),
            ("KB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12),
            ("K", 1024), ("M", 1_048_576), ("G", 1_073_741_824), ("T", 1_099_511_627_776), ("B", 1),
        ]
        for (suffix, scale) in units where t.hasSuffix(suffix) {
            guard let n = Double(t.dropLast(suffix.count).trimmingSpaces()), n >= 0 else { return nil }
            return UInt64(n * scale)
        }
        return UInt64(t)
    }
}

extension StringProtocol {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while s.first == " " { s = s.dropFirst() }
        while s.last == " " { s = s.dropLast() }
        return String(s)
    }
}
