import XCTest
import Glibc
@testable import Reactor

final class SocketAddressTests: XCTestCase {
    func testUnixPathRoundTripsAndLimits() {
        let a = SocketAddress(unixPath: "/tmp/x/admin.sock")
        XCTAssertEqual(a?.unixPath, "/tmp/x/admin.sock")
        XCTAssertEqual(a?.family, AF_UNIX)
        XCTAssertEqual(a?.description, "unix:/tmp/x/admin.sock")
        XCTAssertNil(SocketAddress(unixPath: ""))
        XCTAssertNil(SocketAddress(unixPath: "/" + String(repeating: "a", count: 107)), "sun_path holds 107 bytes and a NUL")
        XCTAssertNil(SocketAddress("127.0.0.1:80")?.unixPath, "IP addresses are unchanged")
        XCTAssertEqual(SocketAddress("127.0.0.1:80")?.port, 80)
    }

    func testUnixListenerIsPrivateAndAcceptsConnections() throws {
        let dir = NSTemporaryDirectory() + "berth-unix-\(getpid())-\(Int.random(in: 0..<1_000_000))"
        XCTAssertEqual(mkdir(dir, 0o755), 0)
        defer { unlink(dir + "/s.sock"); rmdir(dir) }
        let address = try XCTUnwrap(SocketAddress(unixPath: dir + "/s.sock"))
        let fd = try Sockets.listen(on: address, reusePort: true)
        defer { Posix.close(fd: fd) }
        var st = stat()
        XCTAssertEqual(stat(dir + "/s.sock", &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o600)
        XCTAssertEqual(try Posix.localAddress(fd: fd).unixPath, dir + "/s.sock")
        let client = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(client) }
        XCTAssertNoThrow(try address.connectBlocking(client))
        var accepted: Int32 = -1
        for _ in 0..<100 {
            if case .processed(let c)? = try? Posix.accept(fd: fd) { accepted = c; break }
            usleep(10_000)
        }
        XCTAssertGreaterThanOrEqual(accepted, 0)
        if accepted >= 0 { Posix.close(fd: accepted) }
    }
}
