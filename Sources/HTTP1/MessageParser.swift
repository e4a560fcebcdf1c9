// The message-level state machine shared by RequestParser and ResponseParser: head, then body
// (fixed length, chunked with trailers, or until close), then `.end`, then the next head. The two
// public parsers differ only in how a complete head is decoded, which a `HeadDecoder` supplies.

/// Turns a complete head section into a head and its body framing.
protocol HeadDecoder {
    associatedtype Head
    /// Decodes the section `p` (start line through the empty line). `fieldCount` is the number of
    /// field lines. Returns nil for a head to skip (interim 1xx responses).
    mutating func decode(_ p: UnsafeRawBufferPointer, fieldCount: Int) throws -> (Head, BodyFraming)?
    /// Checks the complete start line at the beginning of `p` (which may end before the head does).
    func checkStartLine(_ p: UnsafeRawBufferPointer) throws
    /// Whether the section's start line is a request line (an oversized one is answered 414).
    static var startLineIsTarget: Bool { get }
}

/// Longest chunk extension accepted; extensions are skipped, this bounds the work spent on them.
let maxChunkExtensionBytes = 4096

struct MessageParser<Decoder: HeadDecoder> {
    private enum State {
        case head
        case fixed(remaining: UInt64)
        case chunkSize
        case chunkSizeBWS
        case chunkExtension
        case chunkSizeLF
        case chunkData(remaining: UInt64)
        case chunkDataCR
        case chunkDataLF
        case trailers
        case untilClose
        case endPending
        case closed
        case failed(HTTPParseError)
    }

    var decoder: Decoder
    private let limits: ParserLimits
    /// Request bodies are bounded; responses are not (nil).
    private let bodyLimit: UInt64?
    private var state = State.head
    private var scanner: HeadScanner

    // Chunked framing.
    private var chunkSize: UInt64 = 0
    private var chunkDigits = 0
    private var chunkExtensionBytes = 0
    private var chunkedTotal: UInt64 = 0
    /// What the head used of the limits, for the trailer section.
    private var headBytes = 0
    private var headFields = 0
    /// The start line of the head being collected was checked on its own.
    private var isStartLineChecked = false

    init(decoder: Decoder, limits: ParserLimits, bodyLimit: UInt64?) {
        self.decoder = decoder
        self.limits = limits
        self.bodyLimit = bodyLimit
        scanner = Self.makeHeadScanner(limits)
    }

    private static func makeHeadScanner(_ limits: ParserLimits) -> HeadScanner {
        HeadScanner(
            hasStartLine: true, startLineIsTarget: Decoder.startLineIsTarget,
            budget: limits.maxHeadBytes, maxFields: limits.maxHeaders)
    }

    mutating func parse(_ input: UnsafeRawBufferPointer) throws -> (event: ParseEvent<Decoder.Head>?, consumed: Int) {
        if case .failed(let error) = state { throw error }
        do {
            return try step(input)
        } catch let error as HTTPParseError {
            state = .failed(error)
            throw error
        }
    }

    mutating func finish() throws -> ParseEvent<Decoder.Head>? {
        switch state {
        case .failed(let error):
            throw error
        case .untilClose:
            state = .closed
            return .end
        case .endPending:
            state = .closed
            return .end
        case .head where scanner.isIdle, .closed:
            state = .closed
            return nil
        case .head:
            try fail(.badRequest("connection closed inside a message head"))
        default:
            try fail(.badRequest("connection closed inside a message body"))
        }
    }

    private mutating func fail(_ error: HTTPParseError) throws -> Never {
        state = .failed(error)
        throw error
    }

    // Returns at the first event; returns nil only once every byte of `input` has been absorbed.
    private mutating func step(_ input: UnsafeRawBufferPointer) throws -> (event: ParseEvent<Decoder.Head>?, consumed: Int) {
        let n = input.count
        var i = 0
        while true {
            switch state {
            case .head:
                let scanned: Int?
                do {
                    scanned = try scanner.scan(input, from: i)
                } catch {
                    // A bad start line is reported first whether or not the rest of the head came in
                    // the same read (found by Fuzz/ `request`: 431 whole, 400 split).
                    if !isStartLineChecked && scanner.lines > 0 {
                        try scanner.withRefused(input) { try decoder.checkStartLine($0) }
                    }
                    throw error
                }
                guard let end = scanned else {
                    // A head split across inputs: refuse a bad start line (an HTTP/0.9 request,
                    // say) now rather than wait for an empty line that may never come.
                    if !isStartLineChecked && scanner.lines > 0 {
                        isStartLineChecked = true
                        try scanner.withBuffer { try decoder.checkStartLine($0) }
                    }
                    return (nil, n)
                }
                isStartLineChecked = false
                let fieldCount = scanner.fieldLines
                let decoded = try scanner.withSection(input, end: end) { try decoder.decode($0, fieldCount: fieldCount) }
                headBytes = scanner.sectionBytes
                headFields = fieldCount
                scanner.reset()
                i = end
                guard let (head, framing) = decoded else { continue }  // interim response: read the next head
                switch framing {
                case .none, .length(0): state = .endPending
                case .length(let length): state = .fixed(remaining: length)
                case .chunked:
                    chunkedTotal = 0
                    startChunkSize()
                case .untilClose: state = .untilClose
                }
                return (.head(head, framing), i)

            case .fixed(let remaining):
                guard i < n else { return (nil, n) }
                let take = Int(min(UInt64(n - i), remaining))
                state = remaining == UInt64(take) ? .endPending : .fixed(remaining: remaining - UInt64(take))
                return (.body(i..<(i + take)), i + take)

            case .untilClose:
                guard i < n else { return (nil, n) }
                return (.body(i..<n), n)

            case .endPending:
                state = .head
                return (.end, i)

            case .chunkSize:
                guard i < n else { return (nil, n) }
                let b = input[i]
                i += 1
                if let digit = hexValue(b) {
                    guard chunkDigits < 16 else { throw HTTPParseError.badRequest("chunk size too large") }
                    chunkSize = chunkSize << 4 | UInt64(digit)
                    chunkDigits += 1
                    continue
                }
                guard chunkDigits > 0 else { throw HTTPParseError.badRequest("invalid chunk size") }
                try afterChunkSize(b)

            case .chunkSizeBWS:
                guard i < n else { return (nil, n) }
                let b = input[i]
                i += 1
                if !isOWS(b) { try afterChunkSize(b) }

            case .chunkExtension:
                guard i < n else { return (nil, n) }
                let b = input[i]
                i += 1
                if b == cr {
                    state = .chunkSizeLF
                } else {
                    guard isFieldValueByte(b) else { throw HTTPParseError.badRequest("invalid byte in chunk extension") }
                    chunkExtensionBytes += 1
                    guard chunkExtensionBytes <= maxChunkExtensionBytes else {
                        throw HTTPParseError.badRequest("chunk extension too long")
                    }
                }

            case .chunkSizeLF:
                guard i < n else { return (nil, n) }
                guard input[i] == lf else { throw HTTPParseError.badRequest("bare CR in chunk size line") }
                i += 1
                if chunkSize == 0 {
                    // Trailers share the head's budget; the final empty line is always allowed.
                    let budget = max(limits.maxHeadBytes - headBytes, 0) + 2
                    scanner.resetForTrailers(budget: budget, maxFields: max(limits.maxHeaders - headFields, 0))
                    state = .trailers
                } else {
                    let (total, overflow) = chunkedTotal.addingReportingOverflow(chunkSize)
                    if let bodyLimit, overflow || total > bodyLimit {
                        throw HTTPParseError.tooLarge("request body larger than \(bodyLimit) bytes")
                    }
                    chunkedTotal = overflow ? .max : total
                    state = .chunkData(remaining: chunkSize)
                }

            case .chunkData(let remaining):
                guard i < n else { return (nil, n) }
                let take = Int(min(UInt64(n - i), remaining))
                state = remaining == UInt64(take) ? .chunkDataCR : .chunkData(remaining: remaining - UInt64(take))
                return (.body(i..<(i + take)), i + take)

            case .chunkDataCR:
                guard i < n else { return (nil, n) }
                guard input[i] == cr else { throw HTTPParseError.badRequest("chunk data not followed by CRLF") }
                i += 1
                state = .chunkDataLF

            case .chunkDataLF:
                guard i < n else { return (nil, n) }
                guard input[i] == lf else { throw HTTPParseError.badRequest("chunk data not followed by CRLF") }
                i += 1
                startChunkSize()

            case .trailers:
                guard let end = try scanner.scan(input, from: i) else { return (nil, n) }
                try scanner.withSection(input, end: end) { section in
                    var discarded = HTTPHeaders()
                    var summary = FieldSummary()
                    try decodeFields(section, from: 0, into: &discarded, keep: false, summary: &summary)
                }
                scanner = Self.makeHeadScanner(limits)
                state = .head
                return (.end, end)

            case .closed:
                guard i < n else { return (nil, n) }
                throw HTTPParseError.badRequest("data after the end of the stream")

            case .failed(let error):
                throw error
            }
        }
    }

    private mutating func startChunkSize() {
        chunkSize = 0
        chunkDigits = 0
        chunkExtensionBytes = 0
        state = .chunkSize
    }

    /// The byte after a chunk size's digits (and any whitespace): `;` starts an extension, CR ends the line.
    private mutating func afterChunkSize(_ b: UInt8) throws {
        switch b {
        case cr: state = .chunkSizeLF
        case semicolon: state = .chunkExtension
        case sp, htab: state = .chunkSizeBWS
        default: throw HTTPParseError.badRequest("invalid chunk size")
        }
    }
}

@inline(__always)
private func hexValue(_ b: UInt8) -> UInt8? {
    switch b {
    case 0x30...0x39: return b &- 0x30
    case 0x41...0x46: return b &- 0x41 &+ 10
    case 0x61...0x66: return b &- 0x61 &+ 10
    default: return nil
    }
}
