import Foundation
import Reactor
import TLS
import XCTest
import TestSupport

/// TLSTransport against real peers on 127.0.0.1: curl and `openssl s_client`
/// talking to Berth's server side, `openssl s_server` answering Berth's
/// client side, and Berth talking to itself for a large transfer.
final class TLSTransportTests: XCTestCase {
    nonisolated(unsafe) static var pki: TestPKI!
    var pki: TestPKI { Self.pki }
    var thread: LoopThread!
    var server: TestServer?
    var children: [Subprocess] = []

    override class func setUp() {
        super.setUp()
        signal(SIGPIPE, SIG_IGN)
        pki = try! TestPKI()
    }

    override class func tearDown() {
        pki?.remove()
        super.tearDown()
    }

    override func setUpWithError() throws {
        thread = try LoopThread()
    }

    override func tearDownWithError() throws {
        for child in children { child.terminate() }
        children = []
        if let server { try? thread.sync { server.stop() } }
        server = nil
        thread.stop()
    }

    // MARK: helpers

    /// Starts a Berth TLS server with the test certificate; returns its port.
    func startServer(context: @escaping () -> TLSContext) throws -> UInt16 {
        let loop = thread.loop
        let server = try thread.sync { () -> TestServer in
            let s = try TestServer(loop: loop, context: context)
            try s.start()
            return s
        }
        self.server = server
        return server.port
    }

    func serverErrors() throws -> [String] {
        guard let server else { return [] }
        return try thread.sync { server.errors.map { "\($0)" } }
    }

    /// Starts `openssl s_server` on a free port and waits (bounded) until it accepts.
    func startSServer(_ extra: [String]) throws -> UInt16 {
        let port = try freePort()
        let child = try Subprocess(["openssl", "s_server", "-accept", "127.0.0.1:\(port)",
                                    "-cert", pki.serverCertPath, "-key", pki.serverKeyPath] + extra,
                                   in: pki.directory)
        children.append(child)
        guard child.waitForOutput("ACCEPT", seconds: 10) else {
            XCTFail("s_server did not start: \(child.stderr)")
            throw Subprocess.Failure(description: "s_server did not start")
        }
        return port
    }

    func writeRequestFile() throws -> String {
        let path = "\(pki.directory)/request.txt"
        try "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    // MARK: 1. Berth as server

    func testServerAnswersCurlOverTLS13AndTLS12() throws {
        let context = try TLSContext.makeServer(certificateChainPath: pki.serverCertPath, privateKeyPath: pki.serverKeyPath)
        let port = try startServer { context }

        let v13 = try Subprocess.run(["curl", "-sS", "-v", "--max-time", "20", "--cacert", pki.caPath, "--tlsv1.3",
                                      "https://127.0.0.1:\(port)/"], in: pki.directory)
        XCTAssertEqual(v13.stdout, TestServer.body)
        XCTAssertTrue(v13.stderr.contains("SSL connection using TLSv1.3"), v13.stderr)
        XCTAssertTrue(v13.stderr.contains("ALPN: server accepted http/1.1"), v13.stderr)

        let v12 = try Subprocess.run(["curl", "-sS", "-v", "--max-time", "20", "--cacert", pki.caPath, "--tlsv1.2", "--tls-max", "1.2",
                                      "https://localhost:\(port)/", "--resolve", "localhost:\(port):127.0.0.1"], in: pki.directory)
        XCTAssertEqual(v12.stdout, TestServer.body)
        XCTAssertTrue(v12.stderr.contains("SSL connection using TLSv1.2"), v12.stderr)
        XCTAssertEqual(try serverErrors(), [])
    }

    func testServerNegotiatesALPNWithSClient() throws {
        let context = try TLSContext.makeServer(certificateChainPath: pki.serverCertPath, privateKeyPath: pki.serverKeyPath)
        let port = try startServer { context }
        let result = try Subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:\(port)", "-alpn", "http/1.1",
                                         "-CAfile", pki.caPath, "-verify_return_error", "-ign_eof"],
                                        in: pki.directory, stdinPath: try writeRequestFile())
        XCTAssertTrue(result.stdout.contains("ALPN protocol: http/1.1"), result.stdout)
        XCTAssertTrue(result.stdout.contains("Verify return code: 0 (ok)"), result.stdout)
        XCTAssertTrue(result.stdout.contains(TestServer.body), result.stdout)
    }

    func testServerRejectsTLS11() throws {
        let context = try TLSContext.makeServer(certificateChainPath: pki.serverCertPath, privateKeyPath: pki.serverKeyPath)
        let port = try startServer { context }
        let result = try Subprocess.run(["curl", "-sS", "--max-time", "20", "--cacert", pki.caPath, "--tlsv1.1", "--tls-max", "1.1",
                                         "https://127.0.0.1:\(port)/"], in: pki.directory, check: false)
        XCTAssertNotEqual(result.status, 0)
        XCTAssertNotEqual(result.stdout, TestServer.body)
    }

    // MARK: 2. Berth as client

    static let wwwRequest = Array("GET / HTTP/1.0\r\n\r\n".utf8)

    func testClientVerifiesServerByIPAndByName() throws {
        let port = try startSServer(["-www"])
        let context = try TLSContext.makeClient(extraCAPath: pki.caPath)
        for name in ["127.0.0.1", "localhost"] {
            let (pump, error) = try runClient(on: thread, port: port, context: context, serverName: name, request: Self.wwwRequest)
            XCTAssertNil(error, "\(name): \(String(describing: error))")
            let (complete, alpn, version, text) = try thread.sync {
                (pump.transport.isHandshakeComplete, pump.transport.negotiatedALPN, pump.transport.negotiatedVersion,
                 String(decoding: pump.incoming, as: UTF8.self))
            }
            XCTAssertTrue(complete)
            XCTAssertEqual(alpn, nil, "s_server without -alpn negotiates none")
            XCTAssertEqual(version, "TLSv1.3")
            XCTAssertTrue(text.hasPrefix("HTTP/1.0 200 ok"), text)
            XCTAssertTrue(text.contains("TLSv1.3"), text)
        }
    }

    func testClientRoundTripsWithALPN() throws {
        let port = try startSServer(["-rev", "-alpn", "http/1.1"])
        let context = try TLSContext.makeClient(extraCAPath: pki.caPath)
        let line = "berth says hello\n"
        let (pump, error) = try runClient(on: thread, port: port, context: context, serverName: "127.0.0.1",
                                          request: Array(line.utf8)) { pump in
            pump.isDone = { $0.incoming.contains(UInt8(ascii: "\n")) && String(decoding: $0.incoming, as: UTF8.self).contains("olleh") }
        }
        XCTAssertNil(error, String(describing: error))
        let (alpn, text) = try thread.sync { (pump.transport.negotiatedALPN, String(decoding: pump.incoming, as: UTF8.self)) }
        XCTAssertEqual(alpn, "http/1.1")
        XCTAssertTrue(text.contains(String(line.dropLast().reversed())), text)
    }

    func testClientRejectsWrongServerName() throws {
        let port = try startSServer(["-www"])
        let context = try TLSContext.makeClient(extraCAPath: pki.caPath)
        let (pump, error) = try runClient(on: thread, port: port, context: context, serverName: "wrong.example", request: Self.wwwRequest)
        let tlsError = try XCTUnwrap(error as? TLSError, String(describing: error))
        XCTAssertTrue(tlsError.isVerificationFailure)
        XCTAssertTrue(tlsError.message.contains("verification failed"), tlsError.message)
        XCTAssertTrue(tlsError.message.lowercased().contains("hostname mismatch"), tlsError.message)
        XCTAssertFalse(try thread.sync { pump.transport.isHandshakeComplete })
    }

    func testClientRejectsUnknownCAWithSystemStoreOnly() throws {
        let port = try startSServer(["-www"])
        let context = try TLSContext.makeClient()
        let (_, error) = try runClient(on: thread, port: port, context: context, serverName: "127.0.0.1", request: Self.wwwRequest)
        let tlsError = try XCTUnwrap(error as? TLSError, String(describing: error))
        XCTAssertTrue(tlsError.isVerificationFailure)
        XCTAssertTrue(tlsError.message.contains("verification failed"), tlsError.message)
    }

    func testClientWithoutVerificationAcceptsUnknownCA() throws {
        let port = try startSServer(["-www"])
        let context = try TLSContext.makeClient(verifyPeer: false)
        let (pump, error) = try runClient(on: thread, port: port, context: context, serverName: "wrong.example", request: Self.wwwRequest)
        XCTAssertNil(error, String(describing: error))
        XCTAssertTrue(try thread.sync { String(decoding: pump.incoming, as: UTF8.self) }.hasPrefix("HTTP/1.0 200 ok"))
    }

    // MARK: 3. client certificate

    func testClientCertificateAcceptedByServerRequiringOne() throws {
        let port = try startSServer(["-www", "-Verify", "1", "-CAfile", pki.caPath])
        let context = try TLSContext.makeClient(extraCAPath: pki.caPath, certificatePath: pki.clientCertPath,
                                                privateKeyPath: pki.clientKeyPath)
        let (pump, error) = try runClient(on: thread, port: port, context: context, serverName: "127.0.0.1", request: Self.wwwRequest)
        XCTAssertNil(error, String(describing: error))
        let text = try thread.sync { String(decoding: pump.incoming, as: UTF8.self) }
        XCTAssertTrue(text.hasPrefix("HTTP/1.0 200 ok"), text)
        XCTAssertTrue(text.contains("berth-test-client"), text)

        // Without the certificate the same server refuses the connection.
        let bare = try TLSContext.makeClient(extraCAPath: pki.caPath)
        let (_, refused) = try runClient(on: thread, port: port, context: bare, serverName: "127.0.0.1", request: Self.wwwRequest)
        XCTAssertNotNil(refused as? TLSError, String(describing: refused))
    }

    // MARK: 5. large transfer with slow readers

    func testLargeTransferBothWaysWithSlowReaders() throws {
        let size = 8 * 1024 * 1024
        func pattern(_ seed: UInt8) -> [UInt8] { (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31) ^ seed } }
        let fromClient = pattern(0x5A), fromServer = pattern(0xA5)
        let context = try TLSContext.makeServer(certificateChainPath: pki.serverCertPath, privateKeyPath: pki.serverKeyPath)
        let port = try startServer { context }
        let serverDone = DispatchSemaphore(value: 0)
        var serverReport: (received: [UInt8], pending: Bool, blocked: Bool, error: Error?)?
        try thread.sync {
            self.server!.configure = { pump in
                try? Posix.setsockopt(fd: pump.transport.fd, level: SOL_SOCKET, name: SO_SNDBUF, value: Int32(64 * 1024))
                try? Posix.setsockopt(fd: pump.transport.fd, level: SOL_SOCKET, name: SO_RCVBUF, value: Int32(64 * 1024))
                pump.onInput = nil
                pump.outgoing = fromServer
                pump.slowReadBytesPerTick = 192 * 1024
                pump.isDone = { $0.receivedCount == size && $0.sent == size && !$0.transport.hasPendingOutput }
                let original = pump.onFinish
                pump.onFinish = { pump, error in
                    serverReport = (pump.incoming, pump.sawPendingOutput, pump.sawWriteWouldBlock, error)
                    original?(pump, error)
                    serverDone.signal()
                }
            }
        }
        let client = try TLSContext.makeClient(extraCAPath: pki.caPath)
        let started = Date()
        let (pump, error) = try runClient(on: thread, port: port, context: client, serverName: "127.0.0.1",
                                          request: fromClient, configure: { pump in
            try? Posix.setsockopt(fd: pump.transport.fd, level: SOL_SOCKET, name: SO_SNDBUF, value: Int32(64 * 1024))
            try? Posix.setsockopt(fd: pump.transport.fd, level: SOL_SOCKET, name: SO_RCVBUF, value: Int32(64 * 1024))
            pump.slowReadBytesPerTick = 192 * 1024
            pump.isDone = { $0.receivedCount == size && $0.sent == size && !$0.transport.hasPendingOutput }
        }, timeout: 60)
        XCTAssertNil(error, String(describing: error))
        XCTAssertEqual(serverDone.wait(timeout: .now() + 30), .success)
        let clientReport = try thread.sync { (pump.incoming, pump.sawPendingOutput, pump.sawWriteWouldBlock) }
        XCTAssertTrue(clientReport.0 == fromServer, "client received \(clientReport.0.count) bytes, not the server's 8 MiB")
        XCTAssertTrue(clientReport.1, "client never had pending output")
        XCTAssertTrue(clientReport.2, "client write never hit the pending-output bound")
        let report = try XCTUnwrap(try thread.sync { serverReport })
        XCTAssertNil(report.error)
        XCTAssertTrue(report.received == fromClient, "server received \(report.received.count) bytes, not the client's 8 MiB")
        XCTAssertTrue(report.pending, "server never had pending output")
        XCTAssertTrue(report.blocked, "server write never hit the pending-output bound")
        print("8 MiB each way with slow readers: \(String(format: "%.2f", Date().timeIntervalSince(started))) s")
    }

    func testLargeDownloadToRateLimitedCurl() throws {
        let size = 8 * 1024 * 1024
        let body = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 13) }
        let context = try TLSContext.makeServer(certificateChainPath: pki.serverCertPath, privateKeyPath: pki.serverKeyPath)
        let port = try startServer { context }
        let sawPending = DispatchSemaphore(value: 0)
        try thread.sync {
            self.server!.configure = { pump in
                try? Posix.setsockopt(fd: pump.transport.fd, level: SOL_SOCKET, name: SO_SNDBUF, value: Int32(64 * 1024))
                pump.onInput = { pump in
                    if pump.outgoing.isEmpty, pump.incoming.firstRange(of: Array("\r\n\r\n".utf8)) != nil {
                        pump.outgoing = Array("HTTP/1.1 200 OK\r\nContent-Length: \(size)\r\nConnection: close\r\n\r\n".utf8) + body
                        pump.shutdownWhenSent = true
                    }
                }
                let original = pump.onFinish
                pump.onFinish = { pump, error in
                    if pump.sawPendingOutput && pump.sawWriteWouldBlock { sawPending.signal() }
                    original?(pump, error)
                }
            }
        }
        let result = try Subprocess.run(["curl", "-sS", "--max-time", "40", "--limit-rate", "16M", "--cacert", pki.caPath,
                                         "-o", "download.bin", "https://127.0.0.1:\(port)/"], in: pki.directory, timeout: 45)
        XCTAssertEqual(result.status, 0)
        let downloaded = try Data(contentsOf: URL(fileURLWithPath: "\(pki.directory)/download.bin"))
        XCTAssertTrue(downloaded == Data(body), "downloaded \(downloaded.count) bytes, not the 8 MiB body")
        XCTAssertEqual(sawPending.wait(timeout: .now() + 10), .success, "server never buffered output for the slow reader")
        XCTAssertEqual(try serverErrors(), [])
    }
}
