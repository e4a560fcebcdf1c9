import Foundation
import XCTest
import Reactor
import TLS
import HTTP1
import TestSupport

/// The built `berth` binary as a child process, talked to over loopback by a
/// raw socket, curl, openssl s_client and Berth's own HTTPClient.
final class BerthServeTests: XCTestCase {
    var directory: String!
    var berth: BerthProcess?
    var pki: TestPKI?
    var harness: ClientHarness?

    override func setUpWithError() throws {
        directory = TestPKI.makeTemporaryDirectory("berth-serve")
    }

    override func tearDown() {
        harness?.stop()
        berth?.stop()
        pki?.remove()
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func exchange(_ request: String, port: UInt16, head: Bool = false) throws -> (status: Int, headers: [String: String], body: [UInt8]) {
        let c = try RawClient(port: port)
        c.send(request)
        return try XCTUnwrap(c.readResponse(head: head), "no response to \(request.prefix(40))")
    }

    /// `errors[0].code` of an OCI error body.
    private func ociCode(_ body: [UInt8]) -> String? {
        guard let json = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any],
              let errors = json["errors"] as? [[String: Any]] else { return nil }
        return errors.first?["code"] as? String
    }

    // MARK: plain HTTP

    func testAPIVersionCheck() throws {
        let b = try BerthProcess(directory: directory)
        berth = b
        let r = try exchange("GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", port: b.port)
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(String(decoding: r.body, as: UTF8.self), "{}")
        XCTAssertEqual(r.headers["docker-distribution-api-version"], "registry/2.0")
        XCTAssertEqual(r.headers["content-type"], "application/json")
        let h = try exchange("HEAD /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", port: b.port, head: true)
        XCTAssertEqual(h.status, 200)
        XCTAssertEqual(h.headers["content-length"], "2")
    }

    func testHealthz() throws {
        let b = try BerthProcess(directory: directory)
        berth = b
        let r = try exchange("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", port: b.port)
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(String(decoding: r.body, as: UTF8.self), "ok\n")
    }

    func testUnknownPathIsOCINotFound() throws {
        let b = try BerthProcess(directory: directory)
        berth = b
        let r = try exchange("GET /nothing/here HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", port: b.port)
        XCTAssertEqual(r.status, 404)
        XCTAssertEqual(r.headers["content-type"], "application/json")
        XCTAssertEqual(ociCode(r.body), "NOT_FOUND", String(decoding: r.body, as: UTF8.self))
    }

    func testPostIsMethodNotAllowed() throws {
        let b = try BerthProcess(directory: directory)
        berth = b
        let r = try exchange("POST /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n", port: b.port)
        XCTAssertEqual(r.status, 405)
        XCTAssertEqual(r.headers["allow"], "GET, HEAD")
        XCTAssertEqual(ociCode(r.body), "UNSUPPORTED", String(decoding: r.body, as: UTF8.self))
    }

    func testSIGTERMLetsTheRequestInFlightFinishThenExitsZero() throws {
        let b = try BerthProcess(directory: directory)
        berth = b
        let c = try RawClient(port: b.port)
        // One write: a whole request, then the start of a second one. Once the
        // first answer is here the server has parsed the partial head too (same
        // read), so the connection is busy, not idle, when SIGTERM arrives.
        c.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        XCTAssertEqual(c.readResponse()?.status, 200)
        b.signal(SIGTERM)
        XCTAssertTrue(waitUntil(10) { !isListening(b.port) }, "still accepting after SIGTERM")
        XCTAssertTrue(b.child.process.isRunning, "exited with a request in flight")
        c.send("\r\n")
        let r = try XCTUnwrap(c.readResponse(), "the request in flight got no answer")
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(String(decoding: r.body, as: UTF8.self), "{}")
        XCTAssertEqual(r.headers["connection"], "close")
        XCTAssertTrue(c.readsEOF())
        XCTAssertTrue(b.child.waitForExit(seconds: 10), "berth did not exit after its last response")
        XCTAssertEqual(b.child.process.terminationReason, .exit)
        XCTAssertEqual(b.child.process.terminationStatus, 0, b.child.stderr)
        XCTAssertFalse(isListening(b.port))
    }

    // MARK: readiness and drain

    func testReadyzIsReadyThenDrainingFromSIGTERMWhileTheListenersStillAccept() throws {
        let b = try BerthProcess(directory: directory, extra: ["--drain-delay", "60s"])
        berth = b
        let readyz = "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        let ready = try exchange(readyz, port: b.port)
        XCTAssertEqual(ready.status, 200)
        XCTAssertEqual(ready.headers["content-type"], "application/json")
        XCTAssertEqual(String(decoding: ready.body, as: UTF8.self), #"{"status":"ready"}"#)
        // A kept-alive connection (a balancer's, a client pool's) is open: the drain is announced.
        let held = try RawClient(port: b.port)
        held.send(readyz)
        XCTAssertEqual(held.readResponse()?.status, 200)

        b.signal(SIGTERM)
        var last: (status: Int, headers: [String: String], body: [UInt8])?
        XCTAssertTrue(waitUntil(10) { last = try? self.exchange(readyz, port: b.port); return last?.status == 503 },
                      "no 503 on a new connection after SIGTERM: \(String(describing: last?.status))")
        XCTAssertEqual(String(decoding: last?.body ?? [], as: UTF8.self), #"{"status":"draining"}"#)
        held.send(readyz)
        XCTAssertEqual(held.readResponse()?.status, 503, "the kept-alive connection hears it too")
        XCTAssertEqual(try exchange("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", port: b.port).status, 200,
                       "alive and serving while draining")
        XCTAssertEqual(try exchange("GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", port: b.port).status, 200)
        XCTAssertTrue(b.child.process.isRunning)

        // A second signal ends the announcement: the listeners close and berth exits.
        b.signal(SIGTERM)
        XCTAssertTrue(waitUntil(10) { !isListening(b.port) }, "still accepting after the second SIGTERM")
        XCTAssertTrue(held.readsEOF(), "the idle kept-alive connection is closed")
        XCTAssertTrue(b.child.waitForExit(seconds: 10), "berth did not exit")
        XCTAssertEqual(b.child.process.terminationStatus, 0, b.child.stderr)
    }

    func testDrainAnnouncementIsSkippedWithNoConnectionOpen() throws {
        let b = try BerthProcess(directory: directory, extra: ["--drain-delay", "60s"])
        berth = b
        XCTAssertEqual(try exchange("GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", port: b.port).status, 200)
        // The client has closed; under load berth may not have seen it yet (it would then rightly announce).
        XCTAssertTrue(waitUntil(10) { openServerSockets(port: b.port) == 0 }, "berth still holds a connection")
        b.signal(SIGTERM)
        XCTAssertTrue(b.child.waitForExit(seconds: 10), "berth waited out the 60 s announcement with no connection open")
        guard !b.child.process.isRunning else { return }
        XCTAssertEqual(b.child.process.terminationStatus, 0, b.child.stderr)
    }

    func testEveryAnswerCarriesARequestIDAndABadOneIsReplaced() throws {
        let b = try BerthProcess(directory: directory)
        berth = b
        let mine = try exchange("GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: abc-1.2_3\r\n\r\n", port: b.port)
        XCTAssertEqual(mine.headers["x-request-id"], "abc-1.2_3")
        // Refusals the server makes before any handler (a body on GET, a bare CR) carry one too.
        for request in ["GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: has space\r\n\r\n",
                        "GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: ok-id\r\nContent-Length: 2\r\n\r\nhi",
                        "GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: a\rb\r\n\r\n",
                        "GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: a\u{0}b\r\n\r\n",
                        "GET /nothing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"] {
            let r = try exchange(request, port: b.port)
            let id = try XCTUnwrap(r.headers["x-request-id"], "no X-Request-Id on the \(r.status) to \(request.debugDescription)")
            XCTAssertNotNil(id.range(of: #"^[0-9a-z.-]{1,64}$"#, options: .regularExpression), id)
            XCTAssertFalse(id.contains(" ") || id.contains("a\rb"))
        }
        XCTAssertEqual(try exchange("GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: ok-id\r\nContent-Length: 2\r\n\r\nhi",
                                    port: b.port).headers["x-request-id"], "ok-id", "a refused request keeps its well-formed id")
    }

    // MARK: configuration errors

    private func runExpectingConfigError(_ args: [String], key: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let binary = try XCTUnwrap(locateBerthBinary(), file: file, line: line)
        let child = try Subprocess([binary, "serve"] + args, in: directory, environment: cleanEnvironment())
        guard child.waitForExit(seconds: 15) else {
            child.terminate()
            return XCTFail("berth kept running with a bad configuration", file: file, line: line)
        }
        XCTAssertEqual(child.process.terminationStatus, 2, child.stderr, file: file, line: line)
        XCTAssertTrue(child.stderr.contains("config: \(key):"), "stderr: \(child.stderr)", file: file, line: line)
    }

    func testBadConfigFileExitsTwoNamingTheKey() throws {
        let path = directory + "/bad.yaml"
        try "listen: \"127.0.0.1:\(freeLoopbackPort())\"\nlog:\n  level: loud\n".write(toFile: path, atomically: true, encoding: .utf8)
        try runExpectingConfigError(["--config", path], key: "log.level")
        let unknown = directory + "/unknown.yaml"
        try "listen: \"127.0.0.1:\(freeLoopbackPort())\"\ncolour: blue\n".write(toFile: unknown, atomically: true, encoding: .utf8)
        try runExpectingConfigError(["--config", unknown], key: "colour")
        try runExpectingConfigError(["--listen", "nowhere"], key: "listen")
        try runExpectingConfigError(["--listen", "127.0.0.1:\(freeLoopbackPort())", "--tls-listen", "127.0.0.1:\(freeLoopbackPort())"],
                                    key: "tls.certificate")
    }

    // MARK: connection limits

    func testServeHelpListsTheConnectionLimitFlags() throws {
        let binary = try XCTUnwrap(locateBerthBinary())
        let out = try Subprocess.run([binary, "serve", "--help"], in: directory, timeout: 15)
        for flag in ["--header-timeout", "--keepalive-timeout", "--max-connections", "--max-connections-per-client"] {
            XCTAssertTrue(out.stdout.contains(flag), "\(flag) missing from berth serve --help")
        }
    }

    func testHeaderTimeoutFlagAnswers408AndConnectionCapsAreLogged() throws {
        let b = try BerthProcess(directory: directory, extra: ["--header-timeout", "300ms", "--max-connections", "100",
                                                               "--max-connections-per-client", "7"])
        berth = b
        XCTAssertTrue(b.waitForLog("max_connections=100"), b.child.stderr)
        XCTAssertTrue(b.child.stderr.contains("max_connections_per_client=7"), b.child.stderr)
        let c = try RawClient(port: b.port)
        c.send("GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n")  // the head never ends
        let r = try XCTUnwrap(c.readResponse(), "no answer before the head deadline's close")
        XCTAssertEqual(r.status, 408)
        XCTAssertEqual(r.headers["connection"], "close")
        XCTAssertTrue(c.readsEOF())
    }

    // MARK: TLS

    /// A PKI, and its server certificate copied to `live/` where berth reads it.
    private func makeLiveCertificate() throws -> (pki: TestPKI, cert: String, key: String) {
        let p = try TestPKI()
        pki = p
        let live = directory + "/live"
        try FileManager.default.createDirectory(atPath: live, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: p.serverCertPath, toPath: live + "/cert.pem")
        try FileManager.default.copyItem(atPath: p.serverKeyPath, toPath: live + "/key.pem")
        return (p, live + "/cert.pem", live + "/key.pem")
    }

    /// The serial of the certificate a new connection to `port` is shown, as `openssl x509` prints it.
    private func servedSerial(port: UInt16) throws -> String {
        let out = try Subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:\(port)"], in: directory, timeout: 15, check: false)
        let file = directory + "/served-\(UUID().uuidString.prefix(6)).txt"
        try out.stdout.write(toFile: file, atomically: true, encoding: .utf8)
        let serial = try Subprocess.run(["openssl", "x509", "-in", file, "-noout", "-serial"], in: directory, timeout: 15)
        return serial.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func testHTTPSWithCurlAndALPN() throws {
        let live = try makeLiveCertificate()
        let b = try BerthProcess(directory: directory, tls: (live.cert, live.key))
        berth = b
        let port = try XCTUnwrap(b.tlsPort)
        let curl = try Subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", live.pki.caPath,
                                       "-D", directory + "/headers.txt", "https://127.0.0.1:\(port)/v2/"], in: directory, timeout: 20)
        XCTAssertEqual(curl.stdout, "{}")
        let headers = try String(contentsOfFile: directory + "/headers.txt", encoding: .utf8).lowercased()
        XCTAssertTrue(headers.hasPrefix("http/1.1 200"), headers)
        XCTAssertTrue(headers.contains("docker-distribution-api-version: registry/2.0"), headers)

        let sclient = try Subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:\(port)", "-alpn", "http/1.1",
                                          "-CAfile", live.pki.caPath, "-verify_ip", "127.0.0.1"], in: directory, timeout: 15, check: false)
        XCTAssertTrue(sclient.stdout.contains("ALPN protocol: http/1.1"), sclient.stdout)
        XCTAssertTrue(sclient.stdout.contains("Verify return code: 0 (ok)"), sclient.stdout)
        // The plain listener still answers next to the TLS one.
        XCTAssertEqual(try exchange("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", port: b.port).status, 200)
    }

    func testSIGHUPReloadsTheCertificateAndKeepsOpenConnections() throws {
        let live = try makeLiveCertificate()
        let b = try BerthProcess(directory: directory, tls: (live.cert, live.key))
        berth = b
        let port = try XCTUnwrap(b.tlsPort)
        XCTAssertEqual(try servedSerial(port: port), "serial=1001")

        // A client that trusts only the first CA holds a keep-alive connection.
        let h = try ClientHarness(tls: try TLSContext.makeClient(extraCAPath: live.pki.caPath))
        harness = h
        let url = "https://127.0.0.1:\(port)/v2/"
        guard case .success(let (head1, body1))? = h.get(url) else { return XCTFail("first request failed") }
        XCTAssertEqual(head1.status, 200)
        XCTAssertEqual(body1, Array("{}".utf8))
        XCTAssertEqual(h.idleConnectionCount, 1)

        // The replacement comes from another CA, so that client could not
        // verify a new connection: its next request succeeding proves the old
        // connection was kept and reused.
        let next = try TestPKI()
        defer { next.remove() }
        try next.issue(name: "rotated", serial: "0x2002", subject: "/CN=localhost",
                       extensions: "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        for (from, to) in [("rotated.key", live.key), ("rotated.pem", live.cert)] {
            let staging = to + ".new"
            try FileManager.default.copyItem(atPath: next.directory + "/" + from, toPath: staging)
            XCTAssertEqual(rename(staging, to), 0)
        }
        b.signal(SIGHUP)
        XCTAssertTrue(b.waitForLog("SIGHUP: configuration reloaded"), b.child.stderr)
        XCTAssertEqual(try servedSerial(port: port), "serial=2002")

        guard case .success(let (head2, body2))? = h.get(url) else { return XCTFail("the kept-alive connection stopped working") }
        XCTAssertEqual(head2.status, 200)
        XCTAssertEqual(body2, Array("{}".utf8))
        XCTAssertEqual(h.idleConnectionCount, 1)

        // New connections verify against the new CA only.
        let curlNew = try Subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", next.caPath, url], in: directory, timeout: 20)
        XCTAssertEqual(curlNew.stdout, "{}")
        let curlOld = try Subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", live.pki.caPath, url],
                                         in: directory, timeout: 20, check: false)
        XCTAssertNotEqual(curlOld.status, 0)
    }

    func testFailedReloadKeepsTheOldCertificate() throws {
        let live = try makeLiveCertificate()
        let b = try BerthProcess(directory: directory, tls: (live.cert, live.key))
        berth = b
        let port = try XCTUnwrap(b.tlsPort)
        try "not a key\n".write(toFile: live.key, atomically: true, encoding: .utf8)
        b.signal(SIGHUP)
        XCTAssertTrue(b.waitForLog("SIGHUP: new configuration refused, the running one stays"), b.child.stderr)
        XCTAssertEqual(try servedSerial(port: port), "serial=1001")
        let curl = try Subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", live.pki.caPath,
                                       "https://127.0.0.1:\(port)/v2/"], in: directory, timeout: 20)
        XCTAssertEqual(curl.stdout, "{}")
    }

    /// `server.*` reloads: a per-client cap set by SIGHUP closes a client's second connection
    /// at accept while its first one keeps being served; lifting it lets the next one in.
    func testServerLimitsAreReloadedBySIGHUP() throws {
        let config = "\(directory!)/berth.yaml"
        let cacheDir = "\(directory!)/cache"
        try "cache:\n  dir: \"\(cacheDir)\"\n".write(toFile: config, atomically: true, encoding: .utf8)
        let b = try BerthProcess(directory: directory, extra: ["--config", config])
        berth = b
        let first = try RawClient(port: b.port)
        first.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertEqual(first.readResponse()?.status, 200)
        let second = try RawClient(port: b.port)
        second.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertEqual(second.readResponse()?.status, 200, "no cap at start beyond the default 1,024")

        try "cache:\n  dir: \"\(cacheDir)\"\nserver:\n  max_connections_per_client: 2\n  keepalive_timeout: 30s\n".write(toFile: config, atomically: true, encoding: .utf8)
        b.signal(SIGHUP)
        XCTAssertTrue(b.waitForLog("SIGHUP: server limits in force"), b.child.stderr)
        XCTAssertTrue(b.waitForLog("max_connections_per_client=2"), b.child.stderr)
        XCTAssertFalse(b.child.stderr.contains("server changed; these take effect at the next start"), b.child.stderr)
        let third = try RawClient(port: b.port)
        XCTAssertTrue(third.readsEOF(), "a third connection from 127.0.0.1 is closed at accept under the reloaded cap")
        first.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertEqual(first.readResponse()?.status, 200, "connections already open keep being served")

        try "cache:\n  dir: \"\(cacheDir)\"\nserver:\n  max_connections_per_client: 0\n".write(toFile: config, atomically: true, encoding: .utf8)
        b.signal(SIGHUP)
        XCTAssertTrue(b.waitForLog("max_connections_per_client=0"), b.child.stderr)
        let fourth = try RawClient(port: b.port)
        fourth.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertEqual(fourth.readResponse()?.status, 200, "the cap lifted by the next reload")
    }

    /// `log.level` reloads: lines under the old level were not written, lines at the new one are.
    func testLogLevelIsReloadedBySIGHUP() throws {
        let config = "\(directory!)/berth.yaml"
        let body = "cache:\n  dir: \"\(directory!)/cache\"\nupstream:\n  url: \"http://127.0.0.1:1\"\n"
        try (body + "log:\n  level: error\n").write(toFile: config, atomically: true, encoding: .utf8)
        let b = try BerthProcess(directory: directory, extra: ["--config", config], logLevel: nil)
        berth = b
        let probe = try RawClient(port: b.port)
        probe.send("GET /v2/team/app/manifests/v1 HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertEqual(probe.readResponse()?.status, 502, "the upstream is refused")
        try (body + "log:\n  level: info\n").write(toFile: config, atomically: true, encoding: .utf8)
        b.signal(SIGHUP)
        XCTAssertTrue(b.waitForLog("SIGHUP: configuration reloaded"), b.child.stderr)
        XCTAssertFalse(b.child.stderr.contains("GET /v2/team/app/manifests/v1: 502"), "a warning under level error: \(b.child.stderr)")
        probe.send("GET /v2/team/app/manifests/v2 HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertEqual(probe.readResponse()?.status, 502)
        XCTAssertTrue(b.waitForLog("GET /v2/team/app/manifests/v2: 502"), "a warning under level info: \(b.child.stderr)")
        XCTAssertFalse(b.child.stderr.contains("log.level"), "not reported as needing a restart")
    }
}
