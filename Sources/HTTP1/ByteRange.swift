/// A `Range` request header resolved against a representation's size (RFC 9110 §14).
public enum RangeRequest: Equatable, Sendable {
    /// No Range header, or one to ignore (not `bytes=`, malformed, a last-pos before its first-pos,
    /// too many ranges): serve 200 with the whole representation.
    case none
    /// The satisfiable ranges, clipped to the size, in request order (unsatisfiable members dropped;
    /// overlapping members are kept as sent).
    case satisfiable([ClosedRange<UInt64>])
    /// No member is satisfiable: answer 416 with `Content-Range: bytes */size`.
    case unsatisfiable

    /// Parses `bytes=` followed by a comma-separated list (OWS allowed around commas; empty list
    /// elements are skipped as RFC 9110 §5.6.1 asks) of `first-last`, `first-` and `-suffix`.
    public static func parse(_ header: String?, size: UInt64, maxRanges: Int = 16) -> RangeRequest {
        guard let header else { return .none }
        var bytes = Array(header.utf8)[...]
        guard bytes.count >= 6, bytes.prefix(6).map(asciiLower).elementsEqual("bytes=".utf8) else { return .none }
        bytes = bytes.dropFirst(6)

        var ranges: [ClosedRange<UInt64>] = []
        var members = 0
        for element in bytes.split(separator: comma, omittingEmptySubsequences: false) {
            let member = trimOWS(element)
            if member.isEmpty { continue }
            members += 1
            if members > maxRanges { return .none }
            guard let dash = member.firstIndex(of: 0x2D) else { return .none }
            let firstDigits = member[member.startIndex..<dash]
            let lastDigits = member[(dash + 1)...]
            if firstDigits.isEmpty {
                // Suffix: the last `suffix` bytes.
                guard let suffix = decimal(lastDigits) else { return .none }
                if suffix > 0 && size > 0 {
                    ranges.append((size - min(suffix, size))...(size - 1))
                }
                continue
            }
            guard let first = decimal(firstDigits) else { return .none }
            var last = UInt64.max
            if !lastDigits.isEmpty {
                guard let value = decimal(lastDigits) else { return .none }
                guard value >= first else { return .none }  // RFC 9110 §14.1.1: invalid, ignore the header
                last = value
            }
            if first < size {
                ranges.append(first...min(last, size - 1))
            }
        }
        if members == 0 { return .none }
        return ranges.isEmpty ? .unsatisfiable : .satisfiable(ranges)
    }
}

private func trimOWS(_ s: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
    var s = s
    while let f = s.first, isOWS(f) { s = s.dropFirst() }
    while let l = s.last, isOWS(l) { s = s.dropLast() }
    return s
}

/// `1*DIGIT`, saturating at `UInt64.max` (a position that large is past any size anyway).
private func decimal(_ digits: ArraySlice<UInt8>) -> UInt64? {
    guard !digits.isEmpty else { return nil }
    var value: UInt64 = 0
    for b in digits {
        let d = b &- 0x30
        guard d < 10 else { return nil }
        let (m, o1) = value.multipliedReportingOverflow(by: 10)
        let (v, o2) = m.addingReportingOverflow(UInt64(d))
        value = o1 || o2 ? .max : v
    }
    return value
}
