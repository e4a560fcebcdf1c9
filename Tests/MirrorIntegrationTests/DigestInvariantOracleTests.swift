import Testing

/// The oracle of the digest-invariant property test can fail: each broken
/// answer below is refused, each honest one accepted.
@Suite("DigestInvariantOracle")
struct DigestInvariantOracleTests {
    let blob: [UInt8] = (0..<100).map { UInt8($0) }
    let digest = "sha256:" + String(repeating: "ab", count: 32)
    var facts: UpstreamFacts { UpstreamFacts(size: blob.count, retryAfter: "7") }

    func judge(_ kind: ClientSpec.Kind, _ o: ClientOutcome, facts: UpstreamFacts? = nil, strict: Bool = false) -> Verdict {
        DigestInvariantOracle.judge(ClientSpec(kind: kind, viaCurl: false, delayMs: 0), o, blob: blob, digest: digest,
                                    facts: facts ?? self.facts, strictRanges: strict)
    }

    func ok(_ status: Int, _ body: [UInt8], _ headers: [String: String] = [:]) -> ClientOutcome {
        var h = headers
        if h["content-length"] == nil && h["transfer-encoding"] == nil { h["content-length"] = String(body.count) }
        return ClientOutcome(status: status, headers: h, body: body)
    }

    @Test func wholeBodies() {
        #expect(judge(.full, ok(200, blob)) == .exact("whole"))
        var bad = blob
        bad[50] ^= 1
        #expect(judge(.full, ok(200, bad)).isViolation, "a complete 200 with a wrong byte")
        #expect(judge(.full, ok(200, Array(blob.prefix(99)))).isViolation, "a complete 200 one byte short by its own framing")
        #expect(judge(.full, ok(200, blob, ["transfer-encoding": "chunked"])) == .exact("whole"))
        var cut = ok(200, Array(blob.prefix(40)))
        cut.headers["content-length"] = "100"
        #expect(judge(.full, cut) == .visibleError("body 40 of 100 bytes"))
        var cutByError = ok(200, Array(bad.prefix(60)))
        cutByError.error = "closedEarly"
        #expect(judge(.full, cutByError).isViolation, "bytes no upstream sent at that place, even in a failed exchange")
        var f = facts
        f.wrongBodies = [bad]
        #expect(judge(.full, cutByError, facts: f) == .visibleError("closedEarly"))
    }

    @Test func statuses() {
        #expect(judge(.full, ok(404, [])).isViolation, "404 when the upstream never said 404")
        #expect(judge(.full, ok(400, [])).isViolation)
        #expect(judge(.full, ok(502, [])) == .visibleError("502"))
        #expect(judge(.full, ok(429, [], ["retry-after": "7"])).isViolation, "429 though the upstream never sent one")
        var f = facts
        f.statuses = [429]
        #expect(judge(.full, ok(429, [], ["retry-after": "7"]), facts: f) == .visibleError("429"))
        #expect(judge(.full, ok(429, [], ["retry-after": "8"]), facts: f).isViolation, "Retry-After must pass through")
        var slow = ok(200, blob)
        slow.seconds = 30
        #expect(judge(.full, slow).isViolation, "answers within 20 s")
    }

    @Test func ranges() {
        let one = ClientSpec.Kind.range([.closed(10, 19)])
        #expect(judge(one, ok(206, Array(blob[10...19]), ["content-range": "bytes 10-19/100"])) == .exact("range"))
        #expect(judge(one, ok(206, Array(blob[11...20]), ["content-range": "bytes 11-20/100"])).isViolation, "not the range asked for")
        #expect(judge(one, ok(206, Array(blob[10...19]), ["content-range": "bytes 10-19/101"])).isViolation, "wrong total")
        #expect(judge(one, ok(200, blob)) == .exact("whole for a range"))
        #expect(judge(one, ok(416, [], ["content-range": "bytes */100"])).isViolation, "416 for a satisfiable range")
        #expect(judge(.range([.from(100)]), ok(416, [], ["content-range": "bytes */100"])) == .visibleError("416"))
        #expect(judge(.range([.from(100)]), ok(206, [], ["content-range": "bytes 100-100/100"])).isViolation)

        var bad = blob
        bad[15] ^= 1
        var f = facts
        f.wrongBodies = [bad]
        let corrupt = ok(206, Array(bad[10...19]), ["content-range": "bytes 10-19/100"])
        #expect(judge(one, corrupt).isViolation, "wrong bytes no upstream sent")
        #expect(judge(one, corrupt, facts: f) == .unverifiedRange, "DECISIONS: ranges before the end go out unverified")
        #expect(judge(one, corrupt, facts: f, strict: true).isViolation)
        bad[99] ^= 1
        f.wrongBodies = [bad]
        let tail = ClientSpec.Kind.range([.suffix(5)])
        #expect(judge(tail, ok(206, Array(bad[95...99]), ["content-range": "bytes 95-99/100"]), facts: f).isViolation,
                "a range with the last byte waits for the digest check")

        // An upstream that declared (and sent) 8 bytes more than the blob: its length shows in the Content-Range.
        let longer = blob + [UInt8](repeating: 0x5a, count: 8)
        f.wrongBodies = [longer]
        #expect(judge(one, ok(206, Array(blob[10...19]), ["content-range": "bytes 10-19/108"]), facts: f) == .unverifiedRange)
        #expect(judge(one, ok(206, Array(blob[10...19]), ["content-range": "bytes 10-19/108"])).isViolation, "a total nobody declared")
        #expect(judge(.range([.from(100)]), ok(206, Array(longer[100...107]), ["content-range": "bytes 100-107/108"]), facts: f).isViolation,
                "the declared last byte waits for the digest check")
    }

    @Test func multipartRanges() {
        let kind = ClientSpec.Kind.range([.closed(0, 1), .suffix(3)])
        func body(_ parts: [(ClosedRange<Int>, [UInt8])]) -> [UInt8] {
            var out: [UInt8] = []
            for (i, p) in parts.enumerated() {
                out += Array("\(i == 0 ? "" : "\r\n")--b\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes \(p.0.lowerBound)-\(p.0.upperBound)/100\r\n\r\n".utf8)
                out += p.1
            }
            return out + Array("\r\n--b--\r\n".utf8)
        }
        let headers = ["content-type": "multipart/byteranges; boundary=b"]
        let good = body([(0...1, Array(blob[0...1])), (97...99, Array(blob[97...99]))])
        #expect(judge(kind, ok(206, good, headers)) == .exact("multirange"))
        let wrong = body([(0...1, [9, 9]), (97...99, Array(blob[97...99]))])
        #expect(judge(kind, ok(206, wrong, headers)).isViolation)
        let reordered = body([(97...99, Array(blob[97...99])), (0...1, Array(blob[0...1]))])
        #expect(judge(kind, ok(206, reordered, headers)).isViolation)
        #expect(judge(kind, ok(206, Array(good.dropLast(4)), headers)).isViolation, "an unterminated multipart body")
    }

    @Test func heads() {
        let h = ["content-length": "100", "docker-content-digest": digest]
        #expect(judge(.head, ok(200, [], h)) == .exact("head"))
        #expect(judge(.head, ok(200, [], ["content-length": "100"])).isViolation, "HEAD without its digest")
        var f = facts
        f.declaredLengths = [0, UInt64.max]
        #expect(judge(.head, ok(200, [], ["content-length": "0", "docker-content-digest": digest]), facts: f) == .unverifiedHead(0))
        #expect(judge(.head, ok(200, [], ["content-length": String(UInt64.max), "docker-content-digest": digest]), facts: f).isViolation,
                "an implausible length GET refuses must not reach a HEAD either")
        let chunked = ok(200, [], ["transfer-encoding": "chunked", "docker-content-digest": digest])
        #expect(judge(.head, chunked).isViolation, "no length although the upstream gave one")
        f.sentUnknownLength = true
        #expect(judge(.head, chunked, facts: f) == .exact("head, length unknown"))
        #expect(judge(.head, ok(200, [], ["content-length": "0", "docker-content-digest": digest])).isViolation,
                "a made-up length 0")
    }
}
