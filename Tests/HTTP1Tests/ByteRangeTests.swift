import HTTP1
import XCTest
import TestSupport

final class ByteRangeTests: XCTestCase {
    private func parse(_ header: String?, size: UInt64 = 1000, maxRanges: Int = 16) -> RangeRequest {
        RangeRequest.parse(header, size: size, maxRanges: maxRanges)
    }

    func testNoHeader() {
        XCTAssertEqual(parse(nil), .none)
    }

    func testFirstLast() {
        XCTAssertEqual(parse("bytes=0-499"), .satisfiable([0...499]))
        XCTAssertEqual(parse("bytes=500-999"), .satisfiable([500...999]))
        XCTAssertEqual(parse("bytes=0-0"), .satisfiable([0...0]))
        XCTAssertEqual(parse("bytes=999-999"), .satisfiable([999...999]))
    }

    func testLastIsClippedToSize() {
        XCTAssertEqual(parse("bytes=500-5000"), .satisfiable([500...999]))
        XCTAssertEqual(parse("bytes=0-18446744073709551615"), .satisfiable([0...999]))
        XCTAssertEqual(parse("bytes=0-99999999999999999999999"), .satisfiable([0...999]))
    }

    func testOpenEnded() {
        XCTAssertEqual(parse("bytes=9500-", size: 10_000), .satisfiable([9500...9999]))
        XCTAssertEqual(parse("bytes=0-"), .satisfiable([0...999]))
        XCTAssertEqual(parse("bytes=999-"), .satisfiable([999...999]))
    }

    func testSuffix() {
        XCTAssertEqual(parse("bytes=-500"), .satisfiable([500...999]))
        XCTAssertEqual(parse("bytes=-1"), .satisfiable([999...999]))
        XCTAssertEqual(parse("bytes=-1000"), .satisfiable([0...999]))
        XCTAssertEqual(parse("bytes=-5000"), .satisfiable([0...999]))
        XCTAssertEqual(parse("bytes=-99999999999999999999999"), .satisfiable([0...999]))
        XCTAssertEqual(parse("bytes=-0"), .unsatisfiable)
    }

    func testUnitIsCaseInsensitive() {
        XCTAssertEqual(parse("Bytes=0-1"), .satisfiable([0...1]))
        XCTAssertEqual(parse("BYTES=0-1"), .satisfiable([0...1]))
    }

    func testSeveralRangesInRequestOrder() {
        XCTAssertEqual(parse("bytes=500-600,601-999"), .satisfiable([500...600, 601...999]))
        XCTAssertEqual(parse("bytes=500-700, 0-10 ,\t-5"), .satisfiable([500...700, 0...10, 995...999]))
        // Overlaps are kept as sent.
        XCTAssertEqual(parse("bytes=0-10,5-15"), .satisfiable([0...10, 5...15]))
        // Empty list elements are skipped (RFC 9110 §5.6.1).
        XCTAssertEqual(parse("bytes=0-1,,2-3,"), .satisfiable([0...1, 2...3]))
    }

    func testUnsatisfiableMembersAreDropped() {
        XCTAssertEqual(parse("bytes=0-1,1000-1001,2000-"), .satisfiable([0...1]))
        XCTAssertEqual(parse("bytes=-0,5-6"), .satisfiable([5...6]))
    }

    func testUnsatisfiable() {
        XCTAssertEqual(parse("bytes=1000-"), .unsatisfiable)
        XCTAssertEqual(parse("bytes=1000-2000"), .unsatisfiable)
        XCTAssertEqual(parse("bytes=1000-2000, 5000-"), .unsatisfiable)
        XCTAssertEqual(parse("bytes=99999999999999999999999-"), .unsatisfiable)
    }

    func testEmptyRepresentation() {
        XCTAssertEqual(parse("bytes=0-", size: 0), .unsatisfiable)
        XCTAssertEqual(parse("bytes=0-0", size: 0), .unsatisfiable)
        XCTAssertEqual(parse("bytes=-1", size: 0), .unsatisfiable)
        XCTAssertEqual(parse("bytes=-0", size: 0), .unsatisfiable)
    }

    func testLastBeforeFirstIgnoresTheHeader() {
        XCTAssertEqual(parse("bytes=500-499"), .none)
        XCTAssertEqual(parse("bytes=0-1,10-5"), .none)
        XCTAssertEqual(parse("bytes=2000-1500"), .none)
    }

    func testSyntaxErrorsIgnoreTheHeader() {
        for header in [
            "", "bytes", "bytes=", "bytes= ", "bytes=,", "items=0-1", "bytes 0-1", "bytes =0-1", "bytes= 0-1x",
            "bytes=-", "bytes=1", "bytes=a-b", "bytes=0-1-2", "bytes=0 -1", "bytes=0- 1", "bytes=+1-2",
            "bytes=0x1-2", "bytes=--1", "bytes=0-1;2-3", "bytes=\u{0661}-2",
        ] {
            XCTAssertEqual(parse(header), .none, header.debugDescription)
        }
    }

    func testOWSAroundTheList() {
        XCTAssertEqual(parse("bytes= 0-1"), .satisfiable([0...1]))
        XCTAssertEqual(parse("bytes=0-1 "), .satisfiable([0...1]))
    }

    func testTooManyRanges() {
        let sixteen = (0..<16).map { "\($0 * 10)-\($0 * 10 + 1)" }.joined(separator: ",")
        guard case .satisfiable(let ranges) = parse("bytes=" + sixteen) else { return XCTFail() }
        XCTAssertEqual(ranges.count, 16)
        XCTAssertEqual(ranges.last, 150...151)
        XCTAssertEqual(parse("bytes=" + sixteen + ",500-501"), .none)
        XCTAssertEqual(parse("bytes=0-1,2-3,4-5", maxRanges: 2), .none)
        // Unsatisfiable members count too.
        XCTAssertEqual(parse("bytes=0-1,5000-,6000-", maxRanges: 2), .none)
    }
}
