import Foundation
import XCTest
import Reactor
import TLS
@testable import HTTP1
import TestSupport

/// `HTTPClient(proxy:)` through Debian's tinyproxy: a CONNECT tunnel, then TLS
/// (or plain HTTP) to the origin, kept alive; a proxy that refuses the tunnel
/// fails the request with its answer.
final class HTTPClientProxyTests: XCTestCase {
    var pki: TestPKI!
    var nginx: NginxPeer!
    var proxies: [TinyProxy] = []
    var harnesses: [ClientHarness] = []

    override func setUpWithError() throws {
        pki = try TestPKI()
        let p = pki!
        nginx = try NginxPeer(portCount: 2) { ports, _ in
            """
            server {
                listen 127.0.0.1:\(ports[0]) ssl;
                ssl_certificate \(p.serverCertPath);
                ssl_certificate_key \(p.serverKeyPath);
                location = /hello { return 200 "hello over tls"; }
                location = /conn { return 200 "$connection"; }
            }
            server {
                listen 127.0.0.1:\(ports[1]);
                location = /hello { return 200 "hello in plain"; }
            }
            """
        }
        try nginx.start()
    }

    override func tearDown() {
        for h in harnesses { h.stop() }
        for p in proxies { p.stop() }
        nginx?.stop()
        pki?.remove()
    }

    private func harness(through proxy: TinyProxy) throws -> ClientHarness {
        let h = try ClientHarness(tls: try TLSContext.makeClient(extraCAPath: pki.caPath), proxy: HTTPURL(proxy.url)!)
        harnesses.append(h)
        return h
    }

    private func startProxy(connectPorts: [UInt16] = []) throws -> TinyProxy {
        let p = try TinyProxy(connectPorts: connectPorts)
        proxies.append(p)
        return p
    }

    func testHTTPSThroughATunnelKeptAlive() throws {
        let proxy = try startProxy()
        let h = try harness(through: proxy)
        let origin = "https://127.0.0.1:\(nginx.ports[0])"
        let r = h.get(origin + "/hello")
        XCTAssertNil(r.error)
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r.text, "hello over tls", "TLS is verified end to end: the proxy sees only the tunnel")
        let a = h.get(origin + "/conn"), b = h.get(origin + "/conn")
        XCTAssertEqual(a.text, b.text, "the tunnelled connection is pooled and reused")
        XCTAssertEqual(proxy.connects(to: "127.0.0.1:\(nginx.ports[0])"), 1, proxy.log)
    }

    func testPlainHTTPThroughATunnel() throws {
        let proxy = try startProxy()
        let r = try harness(through: proxy).get("http://127.0.0.1:\(nginx.ports[1])/hello")
        XCTAssertNil(r.error)
        XCTAssertEqual(r.text, "hello in plain")
        XCTAssertEqual(proxy.connects(to: "127.0.0.1:\(nginx.ports[1])"), 1, proxy.log)
    }

    func testARefusedTunnelFailsWithTheProxysAnswer() throws {
        let proxy = try startProxy(connectPorts: [443])  // tinyproxy refuses CONNECT to any other port
        let r = try harness(through: proxy).get("https://127.0.0.1:\(nginx.ports[0])/hello")
        XCTAssertEqual(r.error?.kind, .connectFailed)
        XCTAssertTrue(r.error?.message.contains("proxy refused CONNECT 127.0.0.1:\(nginx.ports[0])") ?? false, "\(String(describing: r.error))")
        XCTAssertNil(r.head)
    }

    func testAProxyThatIsDownFailsTheConnect() throws {
        let h = try ClientHarness(tls: nil, proxy: HTTPURL("http://127.0.0.1:\(freeLoopbackPort())")!)
        harnesses.append(h)
        let r = h.get("http://127.0.0.1:\(nginx.ports[1])/hello")
        XCTAssertEqual(r.error?.kind, .connectFailed)
    }
}
