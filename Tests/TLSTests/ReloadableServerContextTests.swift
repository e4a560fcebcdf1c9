import Foundation
import Reactor
import TLS
import XCTest
import TestSupport

/// Certificate rotation: overwrite the files, reload, and see what a new
/// connection from `openssl s_client` is served.
final class ReloadableServerContextTests: XCTestCase {
    var pki: TestPKI!
    var thread: LoopThread!
    var server: TestServer?
    /// Where the live certificate and key sit (overwritten by the tests).
    var liveDirectory: String!
    var liveCert: String { "\(liveDirectory!)/server.pem" }
    var liveKey: String { "\(liveDirectory!)/server.key" }

    override func setUpWithError() throws {
        signal(SIGPIPE, SIG_IGN)
        pki = try TestPKI()
        liveDirectory = "\(pki.directory)/live"
        try FileManager.default.createDirectory(atPath: liveDirectory, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: pki.serverCertPath, toPath: liveCert)
        try FileManager.default.copyItem(atPath: pki.serverKeyPath, toPath: liveKey)
        thread = try LoopThread()
    }

    override func tearDownWithError() throws {
        if let server { try? thread.sync { server.stop() } }
        server = nil
        thread.stop()
        pki.remove()
    }

    /// Starts a Berth server taking each connection's context from `reloadable`.
    func startServer(_ reloadable: ReloadableServerContext) throws -> UInt16 {
        let loop = thread.loop
        let server = try thread.sync { () -> TestServer in
            let s = try TestServer(loop: loop) { reloadable.current }
            try s.start()
            return s
        }
        self.server = server
        return server.port
    }

    /// The serial number of the certificate a new connection is served, as
    /// `openssl x509 -serial` prints it ("serial=1001").
    func servedSerial(port: UInt16) throws -> String {
        let request = "\(pki.directory)/request.txt"
        try "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".write(toFile: request, atomically: true, encoding: .utf8)
        let session = try Subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:\(port)", "-CAfile", pki.caPath,
                                          "-verify_return_error", "-showcerts", "-ign_eof"], in: pki.directory, stdinPath: request)
        XCTAssertTrue(session.stdout.contains(TestServer.body), session.stdout)
        let begin = try XCTUnwrap(session.stdout.range(of: "-----BEGIN CERTIFICATE-----"), session.stdout)
        let end = try XCTUnwrap(session.stdout.range(of: "-----END CERTIFICATE-----", range: begin.upperBound..<session.stdout.endIndex))
        let pem = "\(pki.directory)/served.pem"
        try String(session.stdout[begin.lowerBound..<end.upperBound]).appending("\n").write(toFile: pem, atomically: true, encoding: .utf8)
        return try Subprocess.run(["openssl", "x509", "-in", pem, "-noout", "-serial"], in: pki.directory)
            .stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Overwrites the live files in place with a new certificate and key.
    func rotate(serial: String) throws {
        let staging = "\(pki.directory)/staging-\(serial)"
        try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true)
        try pki.issue(name: "server", serial: serial, subject: "/CN=localhost",
                      extensions: "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n", into: staging)
        try Data(contentsOf: URL(fileURLWithPath: "\(staging)/server.pem")).write(to: URL(fileURLWithPath: liveCert))
        try Data(contentsOf: URL(fileURLWithPath: "\(staging)/server.key")).write(to: URL(fileURLWithPath: liveKey))
    }

    func testReloadServesNewCertificateToNewConnections() throws {
        let reloadable = try ReloadableServerContext(certificateChainPath: liveCert, privateKeyPath: liveKey)
        let port = try startServer(reloadable)
        XCTAssertEqual(try servedSerial(port: port), "serial=1001")

        let before = reloadable.current
        try rotate(serial: "0x2002")
        XCTAssertEqual(try servedSerial(port: port), "serial=1001", "files changed, but no reload yet")
        try reloadable.reload()
        XCTAssertFalse(reloadable.current === before)
        XCTAssertEqual(try servedSerial(port: port), "serial=2002")
        XCTAssertEqual(try thread.sync { self.server!.errors.map { "\($0)" } }, [])
    }

    func testReloadWithBrokenKeyThrowsAndKeepsOldContext() throws {
        let reloadable = try ReloadableServerContext(certificateChainPath: liveCert, privateKeyPath: liveKey)
        let port = try startServer(reloadable)
        let before = reloadable.current

        try "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n".write(toFile: liveKey, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try reloadable.reload()) { error in
            let message = (error as? TLSError)?.message ?? "\(error)"
            XCTAssertTrue(message.contains("cannot load the private key"), message)
        }
        XCTAssertTrue(reloadable.current === before)
        XCTAssertEqual(try servedSerial(port: port), "serial=1001")

        // A valid key that belongs to another certificate is refused as well.
        try Data(contentsOf: URL(fileURLWithPath: pki.clientKeyPath)).write(to: URL(fileURLWithPath: liveKey))
        XCTAssertThrowsError(try reloadable.reload()) { error in
            let message = (error as? TLSError)?.message ?? "\(error)"
            XCTAssertTrue(message.contains("key values mismatch"), message)
        }
        XCTAssertTrue(reloadable.current === before)
        XCTAssertEqual(try servedSerial(port: port), "serial=1001")
    }

    func testInitThrowsForMissingFiles() {
        XCTAssertThrowsError(try ReloadableServerContext(certificateChainPath: "\(pki.directory)/missing.pem", privateKeyPath: liveKey)) { error in
            XCTAssertTrue(error is TLSError, "\(error)")
        }
    }
}
