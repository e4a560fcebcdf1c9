import HTTP1

// The HTTP/1.1 parsers, fed the same bytes twice: whole, then split at points the input chooses.
// Beyond "no crash", each run checks the calling contract (`consumed` within the input, body ranges
// inside what was consumed, nil only once everything is absorbed, progress on every call) and that
// splitting never changes the outcome: the same heads, body bytes, ends and error.

/// What a parser made of a byte stream.
struct Transcript<Head: Equatable>: Equatable {
    enum Item: Equatable {
        case head(Head, BodyFraming)
        case body([UInt8])
        case end
    }
    var items: [Item] = []
    var error: HTTPParseError?

    mutating func append(_ event: ParseEvent<Head>, _ input: UnsafeRawBufferPointer) {
        switch event {
        case .head(let head, let framing): items.append(.head(head, framing))
        case .end: items.append(.end)
        case .body(let range):
            let bytes = Array(input[range])
            if case .body(let earlier)? = items.last {
                items[items.count - 1] = .body(earlier + bytes)
            } else if !bytes.isEmpty {
                items.append(.body(bytes))
            }
        }
    }
}

/// The two parsers behind one shape.
protocol FuzzedParser {
    associatedtype Head: Equatable
    mutating func parse(_ input: UnsafeRawBufferPointer) throws -> (event: ParseEvent<Head>?, consumed: Int)
    /// End of stream; nil when the parser has nothing to say (requests: never).
    mutating func finish() throws -> ParseEvent<Head>?
}

extension RequestParser: FuzzedParser {
    mutating func finish() throws -> ParseEvent<RequestHead>? { nil }
}

extension ResponseParser: FuzzedParser {}

/// Feeds `input` to `parser` in pieces of the given lengths (the last piece takes the rest).
func transcript<P: FuzzedParser>(_ parser: inout P, _ input: UnsafeRawBufferPointer, pieces: [Int]) -> Transcript<P.Head> {
    var result = Transcript<P.Head>()
    var offset = 0
    var pieceIndex = 0
    do {
        while offset < input.count {
            let length = pieceIndex < pieces.count ? min(pieces[pieceIndex], input.count - offset) : input.count - offset
            pieceIndex += 1
            var rest = UnsafeRawBufferPointer(rebasing: input[offset..<(offset + length)])
            offset += length
            // Every call either consumes bytes or returns an event; an event without bytes (`.end`
            // after a head) cannot repeat forever, so this bound is generous.
            var calls = 0
            while true {
                calls += 1
                require(calls <= 2 * length + 8, "parser made no progress")
                let (event, used) = try parser.parse(rest)
                require((0...rest.count).contains(used), "consumed \(used) of \(rest.count)")
                guard let event else {
                    require(used == rest.count, "nil event with \(rest.count - used) bytes unabsorbed")
                    break
                }
                if case .body(let range) = event {
                    require(range.lowerBound >= 0 && range.upperBound <= used, "body range \(range) outside \(used)")
                }
                result.append(event, rest)
                rest = UnsafeRawBufferPointer(rebasing: rest[used...])  // may be empty: `.end` can still follow
            }
        }
        if let event = try parser.finish() { result.append(event, UnsafeRawBufferPointer(start: nil, count: 0)) }
    } catch let error as HTTPParseError {
        result.error = error
    } catch {
        fail("unexpected error type \(error)")
    }
    return result
}

/// Piece lengths (1...64) from a small generator seeded by the input: deterministic per input.
func pieceLengths(seed: UInt8, total: Int) -> [Int] {
    var state = UInt32(seed) &* 2_654_435_761 | 1
    var lengths: [Int] = []
    var sum = 0
    while sum < total {
        state = state &* 1_103_515_245 &+ 12_345
        let length = 1 + Int((state >> 16) % 64)
        lengths.append(length)
        sum += length
    }
    return lengths
}

/// Byte 0 picks limits (small limits reach the 413/414/431 paths), byte 1 seeds the split, the rest is the stream.
func fuzzParser<P: FuzzedParser>(_ data: UnsafeRawBufferPointer, make: (ParserLimits, UInt8) -> P) {
    guard data.count >= 2 else { return }
    var limits = ParserLimits()
    if data[0] & 1 != 0 { limits.maxHeadBytes = 256 }
    if data[0] & 2 != 0 { limits.maxHeaders = 4 }
    if data[0] & 4 != 0 { limits.maxBodyBytes = 16 }
    let input = UnsafeRawBufferPointer(rebasing: data[2...])

    var whole = make(limits, data[0])
    let once = transcript(&whole, input, pieces: [input.count])
    var split = make(limits, data[0])
    let pieces = transcript(&split, input, pieces: pieceLengths(seed: data[1], total: input.count))
    require(once == pieces, "splitting the input changed the outcome:\n\(once)\nvs\n\(pieces)")

    // Once failed, a parser stays failed with the same error.
    if let error = once.error {
        do {
            _ = try whole.parse(input)
            fail("a failed parser parsed again")
        } catch let again as HTTPParseError {
            require(again == error)
        } catch {
            fail("unexpected error type \(error)")
        }
    }
}

func fuzzRequest(_ data: UnsafeRawBufferPointer) {
    fuzzParser(data) { limits, _ in RequestParser(limits: limits) }
}

/// Bit 3 of byte 0: the response answers a HEAD (no body whatever the headers say).
func fuzzResponse(_ data: UnsafeRawBufferPointer) {
    fuzzParser(data) { limits, flags in
        var parser = ResponseParser(limits: limits)
        parser.expectResponse(toHEAD: flags & 8 != 0)
        return parser
    }
}
