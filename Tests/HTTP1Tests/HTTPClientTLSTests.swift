import Foundation
import XCTest
import Reactor
import TLS
@testable import HTTP1
import TestSupport

/// HTTPClient over https against nginx with a throwaway CA: verification
/// against an extra CA file, a certificate for another name, no CA at all.
final class HTTPClientTLSTests: XCTestCase {
    var pki: TestPKI!
    var nginx: NginxPeer!
    var harnesses: [ClientHarness] = []
    var goodOrigin: String { "https://127.0.0.1:\(nginx.ports[0])" }
    var otherNameOrigin: String { "https://127.0.0.1:\(nginx.ports[1])" }

    override func setUpWithError() throws {
        pki = try TestPKI()
        // Same CA, but for a name and an address that are not 127.0.0.1.
        try pki.issue(name: "other", serial: "0x1003", subject: "/CN=other.invalid",
                      extensions: "subjectAltName=DNS:other.invalid,IP:10.0.0.9\nextendedKeyUsage=serverAuth\n")
        let p = pki!
        nginx = try NginxPeer(portCount: 2) { ports, _ in
            """
            server {
                listen 127.0.0.1:\(ports[0]) ssl;
                ssl_certificate \(p.serverCertPath);
                ssl_certificate_key \(p.serverKeyPath);
                location = /hello { return 200 "hello over tls"; }
                location = /conn { return 200 "$connection"; }
                location / { }
            }
            server {
                listen 127.0.0.1:\(ports[1]) ssl;
                ssl_certificate \(p.directory)/other.pem;
                ssl_certificate_key \(p.directory)/other.key;
                location = /hello { return 200 "should not be read"; }
            }
            """
        }
        try nginx.start()
    }

    override func tearDown() {
        for h in harnesses { h.stop() }
        nginx?.stop()
        pki?.remove()
    }

    private func harness(_ tls: TLSContext?) throws -> ClientHarness {
        let h = try ClientHarness(tls: tls)
        harnesses.append(h)
        return h
    }

    func testVerifiesAgainstTheExtraCA() throws {
        let h = try harness(try TLSContext.makeClient(extraCAPath: pki.caPath))
        let r = h.get(goodOrigin + "/hello")
        XCTAssertFalse(r.timedOutWaiting)
        XCTAssertNil(r.error)
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r.text, "hello over tls")
        // Keep-alive over TLS: the pooled connection answers the next requests.
        let a = h.get(goodOrigin + "/conn"), b = h.get(goodOrigin + "/conn")
        XCTAssertNil(a.error)
        XCTAssertNotNil(Int(a.text))
        XCTAssertEqual(a.text, b.text)
    }

    func testLargeBodyOverTLSWithPausingDelegate() throws {
        let bytes = (0..<(4 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 11) }
        FileManager.default.createFile(atPath: nginx.wwwPath + "/big.bin", contents: Data(bytes))
        let h = try harness(try TLSContext.makeClient(extraCAPath: pki.caPath))
        let d = RecordingDelegate()
        d.keepsBody = false
        d.pauseEvery = 100_000
        let r = h.run(ClientRequest(url: HTTPURL(goodOrigin + "/big.bin")!), d, seconds: 60)
        XCTAssertFalse(r.timedOutWaiting)
        XCTAssertNil(r.error)
        XCTAssertEqual(r.byteCount, bytes.count)
        XCTAssertEqual(r.checksum, fnv1a(bytes))
        XCTAssertEqual(r.callsWhilePaused, 0)
        XCTAssertFalse(r.finishedWhilePaused)
    }

    func testCertificateForAnotherNameIsRefused() throws {
        let h = try harness(try TLSContext.makeClient(extraCAPath: pki.caPath))
        let r = h.get(otherNameOrigin + "/hello")
        XCTAssertFalse(r.timedOutWaiting)
        XCTAssertEqual(r.error?.kind, .tls, "\(String(describing: r.error))")
        XCTAssertTrue(r.error?.message.contains("certificate verification failed") == true, "\(String(describing: r.error))")
        XCTAssertNil(r.head)
        XCTAssertEqual(r.body, [])
    }

    func testWithoutTheCAIsRefused() throws {
        let h = try harness(try TLSContext.makeClient())
        let r = h.get(goodOrigin + "/hello")
        XCTAssertFalse(r.timedOutWaiting)
        XCTAssertEqual(r.error?.kind, .tls, "\(String(describing: r.error))")
        XCTAssertTrue(r.error?.message.contains("certificate verification failed") == true, "\(String(describing: r.error))")
        XCTAssertNil(r.head)
    }

    func testHTTPSWithoutATLSContextIsRefused() throws {
        let h = try harness(nil)
        let r = h.get(goodOrigin + "/hello")
        XCTAssertFalse(r.timedOutWaiting)
        XCTAssertEqual(r.error?.kind, .tls)
    }
}
