import Foundation
import XCTest
import Reactor
import HTTP1
import TLS
import TestSupport

/// File ranges over TLS, where the server reads the file itself (on the loop
/// with RWF_NOWAIT when cached, on the pool otherwise) instead of sendfile:
/// every byte in order, whole files and ranges that start and end off the
/// read size, through curl.
final class TLSFileTests: XCTestCase {
    func testFilesAndRangesArriveWholeOverTLS() throws {
        let pki = try TestPKI()
        defer { pki.remove() }
        let dir = makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/blob"
        let bytes = (0..<(5 * 1024 * 1024 + 4099)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 11) }
        FileManager.default.createFile(atPath: path, contents: Data(bytes))
        let tls = try ReloadableServerContext(certificateChainPath: pki.serverCertPath, privateKeyPath: pki.serverKeyPath)
        let server = try TestServer(configure: {
            $0.plain = []
            $0.secure = [SocketAddress("127.0.0.1:0")!]
            $0.tls = tls
        }) { w in
            do {
                let f = try FileDescriptor.openForReading(path)
                let size = try f.size()
                guard case .satisfiable(let ranges) = RangeRequest.parse(w.request.headers["Range"], size: size) else {
                    return w.respond(ResponseHead(status: 200), file: f, range: 0..<size)
                }
                w.respond(ResponseHead(status: 206), file: f, range: ranges[0].lowerBound..<(ranges[0].upperBound + 1))
            } catch {
                w.respond(ResponseHead(status: 500))
            }
        }
        defer { server.stop() }
        let url = "https://127.0.0.1:\(server.port)/blob"
        let out = dir + "/got"
        for range in [nil, 0..<1, 65_535..<65_537, 100_001..<(3 * 1024 * 1024 + 5), 7..<bytes.count] as [Range<Int>?] {
            var args = ["curl", "-sk", "--fail", "-o", out, url, url]  // twice: the second on the kept-alive connection
            if let range { args += ["-r", "\(range.lowerBound)-\(range.upperBound - 1)"] }
            try Subprocess.run(args, in: dir)
            let got = try [UInt8](Data(contentsOf: URL(fileURLWithPath: out)))
            let expected = range.map { Array(bytes[$0]) } ?? bytes
            XCTAssertEqual(got.count, expected.count, "\(String(describing: range))")
            XCTAssertTrue(got == expected, "\(String(describing: range))")
        }
    }
}
