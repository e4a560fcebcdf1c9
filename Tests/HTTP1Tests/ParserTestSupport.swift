import HTTP1
import XCTest
import TestSupport

/// The two parsers seen through one interface, so every test can run them the same way.
protocol TestableParser {
    associatedtype Head: Equatable
    mutating func parse(_ input: UnsafeRawBufferPointer) throws -> (event: ParseEvent<Head>?, consumed: Int)
}

extension RequestParser: TestableParser {}
extension ResponseParser: TestableParser {}

/// An event with its body bytes copied out, so runs with different input splits compare equal.
enum Event<Head: Equatable>: Equatable, CustomStringConvertible {
    case head(Head, BodyFraming)
    case body([UInt8])
    case end

    var description: String {
        switch self {
        case .head(let head, let framing): return "head(\(head), \(framing))"
        case .body(let bytes): return "body(\(String(decoding: bytes, as: UTF8.self).debugDescription))"
        case .end: return "end"
        }
    }
}

/// Feeds `input` split into `pieces` and returns the events, adjacent body pieces merged.
/// Checks the calling contract on the way: a nil event consumes the whole input, ranges lie inside
/// the consumed prefix.
func events<P: TestableParser>(
    _ parser: inout P, _ input: [UInt8], pieces: [Int]? = nil, file: StaticString = #filePath, line: UInt = #line
) throws -> [Event<P.Head>] {
    var result: [Event<P.Head>] = []
    var start = 0
    var sizes = pieces ?? [input.count]
    if sizes.reduce(0, +) < input.count { sizes.append(input.count - sizes.reduce(0, +)) }
    for size in sizes where start < input.count || size == 0 {
        let piece = Array(input[start..<min(start + size, input.count)])
        start += piece.count
        var offset = 0
        while true {
            let (event, used) = try piece.withUnsafeBytes { raw in
                try parser.parse(UnsafeRawBufferPointer(rebasing: raw[offset...]))
            }
            let available = piece.count - offset
            XCTAssertLessThanOrEqual(used, available, "consumed more than given", file: file, line: line)
            guard let event else {
                XCTAssertEqual(used, available, "nil event must absorb all input", file: file, line: line)
                break
            }
            switch event {
            case .head(let head, let framing):
                result.append(.head(head, framing))
            case .body(let range):
                XCTAssertFalse(range.isEmpty, "empty body event", file: file, line: line)
                XCTAssertLessThanOrEqual(range.upperBound, used, "body range past consumed", file: file, line: line)
                let bytes = Array(piece[(offset + range.lowerBound)..<(offset + range.upperBound)])
                if case .body(let previous)? = result.last {
                    result[result.count - 1] = .body(previous + bytes)
                } else {
                    result.append(.body(bytes))
                }
            case .end:
                result.append(.end)
            }
            offset += used
        }
    }
    return result
}

/// One byte per call.
func bytewise(_ count: Int) -> [Int] { Array(repeating: 1, count: count) }

/// The error a parse of `input` (split into `pieces`) throws, or nil.
func parseError<P: TestableParser>(_ parser: P, _ input: [UInt8], pieces: [Int]? = nil) -> HTTPParseError? {
    var parser = parser
    do {
        _ = try events(&parser, input, pieces: pieces)
        return nil
    } catch let error as HTTPParseError {
        // The parser stays dead.
        let again = try? [UInt8]("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8).withUnsafeBytes { try parser.parse($0) }
        XCTAssertNil(again, "parser must stay dead after an error")
        return error
    } catch {
        XCTFail("unexpected error \(error)")
        return nil
    }
}

/// Asserts that `text` is refused with `status`, fed in one piece and one byte at a time.
func assertRefused<P: TestableParser>(
    _ parser: P, _ text: String, _ status: Int, file: StaticString = #filePath, line: UInt = #line
) {
    let bytes = Array(text.utf8)
    assertRefused(parser, bytes: bytes, status, file: file, line: line)
}

func assertRefused<P: TestableParser>(
    _ parser: P, bytes: [UInt8], _ status: Int, file: StaticString = #filePath, line: UInt = #line
) {
    let whole = parseError(parser, bytes)
    XCTAssertEqual(whole?.status, status, "one piece: \(String(describing: whole))", file: file, line: line)
    let split = parseError(parser, bytes, pieces: bytewise(bytes.count))
    XCTAssertEqual(split?.status, status, "byte by byte: \(String(describing: split))", file: file, line: line)
}

/// A few fixed irregular splits, to cross piece boundaries at every kind of position.
func irregularPieces(_ count: Int) -> [Int] {
    var sizes: [Int] = []
    var total = 0
    var k = 0
    while total < count {
        let size = [3, 1, 7, 2, 13, 5, 1, 31][k % 8]
        sizes.append(size)
        total += size
        k += 1
    }
    return sizes
}
