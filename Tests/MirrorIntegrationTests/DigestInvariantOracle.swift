import Foundation

/// What the upstream did during one schedule, as far as judging a client needs.
struct UpstreamFacts {
    var size: Int
    /// Bodies sent in place of the blob and declared whole (a changed byte,
    /// extra bytes, a short or zero length).
    var wrongBodies: [[UInt8]] = []
    /// Every Content-Length an attempt declared.
    var declaredLengths: Set<UInt64> = []
    /// Every status an attempt answered.
    var statuses: Set<Int> = []
    var retryAfter: String = ""
    /// Some attempt answered 200 without a Content-Length (chunked).
    var sentUnknownLength = false
}

/// The judgement on one client's exchange.
enum Verdict: Equatable {
    /// The exact bytes asked for (`what`: whole, range, head, …).
    case exact(String)
    /// A failure the client can see: a non-2xx status, a transport error, a short body.
    case visibleError(String)
    /// A 206 whose bytes are those of a corrupt upstream body, for a range
    /// that ends before the blob's last byte: DECISIONS.md ("Range answers are
    /// served from the fill as it passes the range") lets such a range go out
    /// before the digest is known. Refused with `strictRanges`.
    case unverifiedRange
    /// A HEAD whose Content-Length is one the upstream's HEAD declared, not the
    /// blob's: a cold HEAD is answered from the upstream's, with nothing to verify.
    case unverifiedHead(UInt64)
    /// The property is broken.
    case violation(String)

    var isViolation: Bool { if case .violation = self { return true } else { return false } }
}

/// The digest invariant, client side: every client got exact bytes or an
/// error it can see. Pure: tested on its own in `DigestInvariantOracleTests`.
enum DigestInvariantOracle {
    /// Berth's plausibility limit for a blob length (BlobFetch.maxLength, 1 TiB).
    static let maxPlausibleLength: UInt64 = 1 << 40
    /// DECISIONS.md: a client behind a hung upstream gets an answer within 20 s (plus slack for a loaded machine).
    static let answerWithinSeconds = 22.0

    static func judge(_ spec: ClientSpec, _ o: ClientOutcome, blob: [UInt8], digest: String,
                      facts: UpstreamFacts, strictRanges: Bool = false) -> Verdict {
        let size = UInt64(blob.count)
        if o.seconds > answerWithinSeconds {
            return .violation("no answer within \(answerWithinSeconds) s (\(o.seconds) s)")
        }
        let declared = o.headers["content-length"].flatMap { UInt64($0) }

        if case .leaveEarly = spec.kind {
            // Whatever it got before leaving sat at the right offsets.
            if o.status == 200, !isPrefixOfSomeBody(o.body, at: 0, blob: blob, facts: facts) {
                return .violation("a client that left early got bytes no upstream attempt sent there")
            }
            return .exact("left early")
        }

        // Transport failures are visible; the bytes before them must still be in place.
        if let error = o.error {
            if let status = o.status, (200..<300).contains(status), spec.kind != .head {
                if status == 200, !isPrefixOfSomeBody(o.body, at: 0, blob: blob, facts: facts) {
                    return .violation("a cut 200 body carried bytes no upstream attempt sent there")
                }
                if status == 206, !isMultipart(o), let r = parseContentRange(o.headers["content-range"]),
                   !isPrefixOfSomeBody(o.body, at: Int(r.range.lowerBound), blob: blob, facts: facts) {
                    return .violation("a cut 206 body carried bytes no upstream attempt sent there")
                }
            }
            return .visibleError(error)
        }
        guard let status = o.status else { return .violation("no status and no error") }

        switch status {
        case 200..<300:
            if let declared, UInt64(o.body.count) < declared, spec.kind != .head {
                return .visibleError("body \(o.body.count) of \(declared) bytes")
            }
            if spec.kind != .head, o.headers["content-length"] == nil, o.headers["transfer-encoding"] == nil {
                return .violation("a \(status) body with neither Content-Length nor chunked framing")
            }
            return judgeSuccess(spec, o, status: status, blob: blob, size: size, digest: digest, facts: facts, strictRanges: strictRanges)
        case 416:
            guard spec.kind != .head, case .range(let members) = spec.kind else { return .violation("416 to a request without Range") }
            // Unsatisfiable for the blob, or for a length some lying upstream attempt declared.
            let sizes = [size] + facts.declaredLengths.filter { $0 <= maxPlausibleLength }
            guard let unsatisfiableFor = sizes.first(where: { s in members.allSatisfy { $0.resolved(size: s) == nil } }) else {
                return .violation("416 for a satisfiable range \(spec.rangeHeader!) of a \(size)-byte blob")
            }
            guard o.headers["content-range"] == "bytes */\(unsatisfiableFor)" || sizes.contains(where: { o.headers["content-range"] == "bytes */\($0)" }) else {
                return .violation("416 with Content-Range \(o.headers["content-range"] ?? "none")")
            }
            return .visibleError("416")
        case 429:
            guard facts.statuses.contains(429) else { return .violation("429 although the upstream never rate-limited") }
            guard o.headers["retry-after"] == facts.retryAfter else {
                return .violation("429 with Retry-After \(o.headers["retry-after"] ?? "none"), the upstream said \(facts.retryAfter)")
            }
            return .visibleError("429")
        case 500..<600:
            return .visibleError("\(status)")
        default:
            // 404 only when the upstream said 404 (DECISIONS.md), and it never does here; no 400/401/403 either.
            return .violation("status \(status) to a valid request")
        }
    }

    private static func judgeSuccess(_ spec: ClientSpec, _ o: ClientOutcome, status: Int, blob: [UInt8], size: UInt64,
                                     digest: String, facts: UpstreamFacts, strictRanges: Bool) -> Verdict {
        switch spec.kind {
        case .head:
            guard status == 200 else { return .violation("HEAD answered \(status)") }
            guard o.headers["docker-content-digest"] == digest else {
                return .violation("HEAD with Docker-Content-Digest \(o.headers["docker-content-digest"] ?? "none")")
            }
            guard let n = o.headers["content-length"].flatMap({ UInt64($0) }) else {
                // No length is honest only when the upstream gave none either (then the GET would be chunked too).
                if o.headers["transfer-encoding"]?.lowercased() == "chunked" && facts.sentUnknownLength { return .exact("head, length unknown") }
                return .violation("HEAD without a Content-Length")
            }
            if n == size { return .exact("head") }
            // A cold HEAD is answered from the upstream's HEAD: it may pass on a length the upstream declared, never an implausible one.
            if facts.declaredLengths.contains(n) && n <= maxPlausibleLength { return .unverifiedHead(n) }
            return .violation("HEAD with Content-Length \(n) for a \(size)-byte blob")
        case .full, .leaveEarly:
            guard status == 200 else { return .violation("GET answered \(status)") }
            return o.body == blob ? .exact("whole") : .violation("200 with \(o.body.count) wrong bytes of \(blob.count) (complete by its framing)")
        case .range(let members):
            if status == 200 {
                // RFC 9110 lets a server ignore Range (Berth does when the upstream sent no length).
                return o.body == blob ? .exact("whole for a range") : .violation("200 to a Range request with wrong bytes")
            }
            guard status == 206 else { return .violation("a Range request answered \(status)") }
            let parts: [(range: ClosedRange<UInt64>, total: UInt64, bytes: ArraySlice<UInt8>)]
            if isMultipart(o) {
                guard let boundary = multipartBoundary(o), let p = parseByteranges(o.body, boundary: boundary) else {
                    return .violation("206 multipart/byteranges that is not well formed")
                }
                parts = p
            } else {
                guard let cr = parseContentRange(o.headers["content-range"]) else { return .violation("206 without a Content-Range") }
                parts = [(cr.range, cr.total, o.body[...])]
            }
            // The parts must be exactly those of one representation: the blob,
            // or (before the digest check) a body some attempt sent in its place.
            func matches(_ rep: [UInt8]) -> (ok: Bool, touchesEnd: Bool) {
                let n = UInt64(rep.count)
                let expected = members.compactMap { $0.resolved(size: n) }
                guard !expected.isEmpty, (expected.count > 1) == isMultipart(o), parts.map(\.range) == expected else { return (false, false) }
                for p in parts {
                    guard p.total == n, UInt64(p.bytes.count) == UInt64(p.range.count),
                          p.bytes.elementsEqual(rep[Int(p.range.lowerBound)...Int(p.range.upperBound)]) else { return (false, false) }
                }
                return (true, parts.contains { $0.range.upperBound == n - 1 })
            }
            if matches(blob).ok { return .exact(parts.count == 1 ? "range" : "multirange") }
            for rep in facts.wrongBodies {
                let m = matches(rep)
                guard m.ok else { continue }
                if m.touchesEnd { return .violation("206 with a corrupt upstream body's last byte: it went out before the digest check") }
                return strictRanges ? .violation("206 with a corrupt upstream body's bytes (strict ranges)") : .unverifiedRange
            }
            // Say what is wrong, against the blob.
            let expected = members.compactMap { $0.resolved(size: size) }
            if expected.isEmpty { return .violation("206 for a range \(spec.rangeHeader!) unsatisfiable for a \(size)-byte blob") }
            if parts.map(\.range) != expected { return .violation("206 parts \(parts.map(\.range)) for \(spec.rangeHeader!) (expected \(expected))") }
            if let p = parts.first(where: { $0.total != size }) { return .violation("Content-Range total \(p.total) for a \(size)-byte blob") }
            return .violation("206 with wrong bytes, complete by its framing")
        }
    }

    // MARK: helpers

    /// `body` equals the bytes at `offset` of the blob or of a corrupt body an attempt sent.
    static func isPrefixOfSomeBody(_ body: [UInt8], at offset: Int, blob: [UInt8], facts: UpstreamFacts) -> Bool {
        if body.isEmpty { return true }
        for candidate in [blob] + facts.wrongBodies where offset + body.count <= candidate.count {
            if candidate[offset..<(offset + body.count)].elementsEqual(body) { return true }
        }
        return false
    }

    static func isMultipart(_ o: ClientOutcome) -> Bool {
        o.headers["content-type"]?.lowercased().hasPrefix("multipart/byteranges") ?? false
    }

    static func multipartBoundary(_ o: ClientOutcome) -> String? {
        guard isMultipart(o), let ct = o.headers["content-type"], let r = ct.range(of: "boundary=") else { return nil }
        return String(ct[r.upperBound...]).trimmingCharacters(in: CharacterSet(charactersIn: "\" "))
    }

    /// `bytes a-b/total`.
    static func parseContentRange(_ value: String?) -> (range: ClosedRange<UInt64>, total: UInt64)? {
        guard let v = value, v.hasPrefix("bytes ") else { return nil }
        let rest = v.dropFirst(6)
        let slash = rest.split(separator: "/", omittingEmptySubsequences: false)
        guard slash.count == 2, let total = UInt64(slash[1]) else { return nil }
        let ab = slash[0].split(separator: "-", omittingEmptySubsequences: false)
        guard ab.count == 2, let a = UInt64(ab[0]), let b = UInt64(ab[1]), a <= b else { return nil }
        return (a...b, total)
    }

    /// Parts of a `multipart/byteranges` body (RFC 9110 §14.6), each read by
    /// the length its Content-Range gives (the bytes are binary).
    static func parseByteranges(_ body: [UInt8], boundary: String) -> [(range: ClosedRange<UInt64>, total: UInt64, bytes: ArraySlice<UInt8>)]? {
        var i = 0
        var parts: [(ClosedRange<UInt64>, UInt64, ArraySlice<UInt8>)] = []
        let dash = Array("--\(boundary)".utf8), crlf: [UInt8] = [13, 10]
        func skip(_ s: [UInt8]) -> Bool {
            guard i + s.count <= body.count, body[i..<(i + s.count)].elementsEqual(s) else { return false }
            i += s.count
            return true
        }
        _ = skip(crlf)
        while true {
            guard skip(dash) else { return nil }
            if skip(Array("--".utf8)) { return parts.isEmpty ? nil : parts }
            guard skip(crlf) else { return nil }
            var contentRange: String?
            while true {
                guard let end = (i..<max(i, body.count - 1)).first(where: { body[$0] == 13 && body[$0 + 1] == 10 }) else { return nil }
                let line = String(decoding: body[i..<end], as: UTF8.self)
                i = end + 2
                if line.isEmpty { break }
                if line.lowercased().hasPrefix("content-range:") {
                    contentRange = line.dropFirst("content-range:".count).trimmingCharacters(in: .whitespaces)
                }
            }
            guard let cr = parseContentRange(contentRange) else { return nil }
            let n = Int(cr.range.count)
            guard i + n <= body.count else { return nil }
            parts.append((cr.range, cr.total, body[i..<(i + n)]))
            i += n
            guard skip(crlf) else { return nil }
        }
    }
}
