import XCTest
@testable import OCI

final class AuthChallengeTests: XCTestCase {
    func testDockerHubHeader() throws {
        let header = #"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#
        let challenges = AuthChallenge.parse(header)
        XCTAssertEqual(challenges.count, 1)
        let c = try XCTUnwrap(challenges.first)
        XCTAssertEqual(c.scheme, .bearer)
        XCTAssertEqual(c.realm, "https://auth.docker.io/token")
        XCTAssertEqual(c.service, "registry.docker.io")
        XCTAssertEqual(c.scope, "repository:library/alpine:pull")
        XCTAssertEqual(c.parameters.count, 3)
    }

    func testMultipleChallenges() {
        let challenges = AuthChallenge.parse(#"Basic realm="x", Bearer realm="y",service="z""#)
        XCTAssertEqual(challenges, [
            AuthChallenge(scheme: .basic, parameters: ["realm": "x"]),
            AuthChallenge(scheme: .bearer, parameters: ["realm": "y", "service": "z"]),
        ])
        let three = AuthChallenge.parse(#"Negotiate, Basic realm="a" , Bearer realm="b""#)
        XCTAssertEqual(three.map(\.scheme), [.other("negotiate"), .basic, .bearer])
        XCTAssertEqual(three[2].realm, "b")
    }

    func testQuotedStrings() {
        let c = AuthChallenge.parse(#"Bearer realm="https://a/t?x=1,y=2", scope="repository:a:pull,push", error="say \"hi\" \\ ok""#)
        XCTAssertEqual(c.count, 1)
        XCTAssertEqual(c.first?.realm, "https://a/t?x=1,y=2")
        XCTAssertEqual(c.first?.scope, "repository:a:pull,push")
        XCTAssertEqual(c.first?.parameters["error"], #"say "hi" \ ok"#)
    }

    func testTokensCaseAndWhitespace() {
        let c = AuthChallenge.parse("  BEARER   Realm = https://r.example/token ,\tSERVICE=reg ,scope=\"s\"  ")
        XCTAssertEqual(c, [AuthChallenge(scheme: .bearer, parameters: ["realm": "https://r.example/token", "service": "reg", "scope": "s"])])
        XCTAssertEqual(AuthChallenge.parse("basic").first?.scheme, .basic)
        XCTAssertEqual(AuthChallenge.parse("Basic").first?.parameters, [:])
    }

    func testFirstOccurrenceOfAKeyWins() {
        XCTAssertEqual(AuthChallenge.parse(#"Bearer realm="good", realm="evil""#).first?.realm, "good")
    }

    func testToken68IsSkipped() {
        let c = AuthChallenge.parse(#"Negotiate YIIBhwYGKwYBBQUCoIIBezCCAXeg==, Bearer realm="r""#)
        XCTAssertEqual(c.map(\.scheme), [.other("negotiate"), .bearer])
        XCTAssertEqual(c[0].parameters, [:])
        XCTAssertEqual(c[1].realm, "r")
    }

    func testGarbageNeverCrashes() {
        let inputs = ["", ",", ",,,", "=", "===", "\"", "\"unterminated", "Bearer realm=\"unterminated", "Bearer realm=",
                      "Bearer realm=,service=x", "Bearer =x", "@@@ Bearer realm=\"r\"", "Bearer realm=\"a\" junk\"q,\" , Basic",
                      "Bearer realm=\"x\\", "\u{0}\u{1}", "Bearer \u{e9}=1", String(repeating: "a=", count: 1000),
                      String(repeating: "\\\"", count: 500), "Bearer realm=\"r\";service=x"]
        for input in inputs {
            _ = AuthChallenge.parse(input)
        }
        XCTAssertEqual(AuthChallenge.parse(""), [])
        XCTAssertEqual(AuthChallenge.parse(" , ,"), [])
        XCTAssertEqual(AuthChallenge.parse("Bearer realm=\"unterminated").first?.realm, "unterminated")
        // Junk before a challenge is skipped up to the next comma.
        XCTAssertEqual(AuthChallenge.parse("@@@, Bearer realm=\"r\"").map(\.scheme), [.bearer])
        XCTAssertEqual(AuthChallenge.parse("Bearer realm=,service=x").first?.parameters, ["service": "x"])
    }

    func testRandomBytesNeverCrash() {
        var rng = SystemRandomNumberGenerator()
        let alphabet = Array(#"Bearer Basic realm=",\ x "#.utf8) + [0, 9, 0xff]
        for _ in 0..<2000 {
            let bytes = (0..<Int.random(in: 0..<40, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }
            _ = AuthChallenge.parse(String(decoding: bytes, as: UTF8.self))
        }
    }
}

final class RealmPolicyTests: XCTestCase {
    func allows(_ realm: String, _ host: String, scheme: String = "https", allow: [String] = []) -> Bool {
        RealmPolicy.allows(realm: realm, upstreamScheme: scheme, upstreamHost: host, allowList: allow)
    }

    func testDockerHub() {
        XCTAssertTrue(allows("https://auth.docker.io/token", "registry-1.docker.io"))
        XCTAssertTrue(allows("https://AUTH.Docker.IO/token?x=1", "registry-1.docker.io"))
        XCTAssertFalse(allows("https://evil.com/token", "registry-1.docker.io"))
        XCTAssertFalse(allows("https://docker.io.evil.com/token", "registry-1.docker.io"))
        XCTAssertFalse(allows("https://evildocker.io/token", "registry-1.docker.io"))
    }

    func testSameHostAnyPort() {
        XCTAssertTrue(allows("https://registry.example.com:5001/token", "registry.example.com"))
        XCTAssertTrue(allows("https://registry.example.com/token", "registry.example.com:443"))
        XCTAssertTrue(allows("https://localhost:9000/token", "localhost"))
    }

    func testPlainHTTP() {
        XCTAssertFalse(allows("http://auth.example.com/token", "registry.example.com"))
        XCTAssertFalse(allows("http://evil.com/token", "registry.example.com", scheme: "http"))
        XCTAssertTrue(allows("http://registry.example.com:8080/token", "registry.example.com", scheme: "http"))
        XCTAssertTrue(allows("http://registry.example.com/token", "registry.example.com"))
        XCTAssertFalse(allows("http://auth.corp.example/token", "registry.example.com", allow: ["auth.corp.example"]))
    }

    func testIPLiterals() {
        XCTAssertTrue(allows("http://127.0.0.1:5001/token", "127.0.0.1", scheme: "http"))
        XCTAssertTrue(allows("https://127.0.0.1:5001/token", "127.0.0.1:5000"))
        XCTAssertFalse(allows("https://127.0.0.2/token", "127.0.0.1"))
        XCTAssertFalse(allows("https://169.254.169.254/latest", "registry.example.com"))
        XCTAssertFalse(allows("https://10.0.0.1/token", "registry.example.com", allow: ["10.0.0.1"]))
        XCTAssertFalse(allows("https://registry.example.com/token", "10.0.0.1"))
        XCTAssertTrue(allows("https://[::1]:5001/token", "[::1]:5000"))
        XCTAssertTrue(allows("https://[::1]/token", "::1"))
        XCTAssertFalse(allows("https://[::1]/token", "127.0.0.1"))
        // Shorthand addresses resolvers accept are IP literals too, never a "registrable domain".
        XCTAssertFalse(allows("https://127.1/token", "10.127.1"))
        XCTAssertFalse(allows("https://0x7f.1/token", "a.0x7f.1"))
        XCTAssertNil(RealmPolicy.registrableDomain("10.0.0.1"))
        XCTAssertNil(RealmPolicy.registrableDomain("127.1"))
    }

    func testAllowList() {
        XCTAssertTrue(allows("https://auth.corp.example/token", "registry.example.com", allow: ["AUTH.corp.example"]))
        XCTAssertFalse(allows("https://x.auth.corp.example/token", "registry.example.com", allow: ["auth.corp.example"]))
        XCTAssertFalse(allows("https://auth.corp.example/token", "registry.example.com", allow: []))
    }

    func testMalformedRealms() {
        for realm in ["https://user:pass@auth.docker.io/token", "https://auth.docker.io@evil.com/token",
                      "https://evil.com\\@auth.docker.io/token", "https:///token", "https://", "ftp://auth.docker.io/token",
                      "file:///etc/passwd", "auth.docker.io/token", "//auth.docker.io/token", "https:auth.docker.io",
                      "https://auth.docker.io:99999/token", "https://auth.docker.io:80x/token", "https://auth docker.io/",
                      "https://auth.docker.io\r\nX: y", "https://auth%2edocker.io/", "https://[::1/token", "https://::1/token",
                      "", "javascript:alert(1)"] {
            XCTAssertFalse(allows(realm, "registry-1.docker.io"), realm)
        }
    }

    /// Found by Fuzz/ `auth`: `2registry.example.com..` lost one dot in the realm parser and
    /// another in the domain check, and passed as example.com while the client would dial the
    /// two-dot name. An empty label anywhere but one trailing dot is no host name.
    func testEmptyLabelsAreNoHostName() {
        for realm in ["https://2registry.example.com..:9/token", "https://auth.docker.io../token", "https://auth..docker.io/token",
                      "https://.docker.io/token", "https://..docker.io/token"] {
            XCTAssertFalse(allows(realm, "registry-1.docker.io"), realm)
        }
        XCTAssertTrue(allows("https://auth.docker.io./token", "registry-1.docker.io"), "one trailing dot is the absolute name")
        XCTAssertNil(RealmPolicy.registrableDomain("a..docker.io"))
        XCTAssertFalse(RealmPolicy.allowsRedirect(toHost: "cdn..docker.io", upstreamHost: "registry-1.docker.io"))
    }

    func testRegistrableDomain() {
        XCTAssertEqual(RealmPolicy.registrableDomain("registry-1.docker.io"), "docker.io")
        XCTAssertEqual(RealmPolicy.registrableDomain("auth.docker.io"), "docker.io")
        XCTAssertEqual(RealmPolicy.registrableDomain("Docker.IO."), "docker.io")
        XCTAssertEqual(RealmPolicy.registrableDomain("a.b.example.co.uk"), "example.co.uk")
        XCTAssertEqual(RealmPolicy.registrableDomain("registry.example.com.au"), "example.com.au")
        XCTAssertEqual(RealmPolicy.registrableDomain("ghcr.io"), "ghcr.io")
        XCTAssertEqual(RealmPolicy.registrableDomain("x.co.com"), "co.com")  // 3-letter TLD: two labels
        XCTAssertNil(RealmPolicy.registrableDomain("co.uk"))
        XCTAssertNil(RealmPolicy.registrableDomain("localhost"))
        XCTAssertNil(RealmPolicy.registrableDomain("a..b"))
        XCTAssertNil(RealmPolicy.registrableDomain(""))
    }

    func testCoUK() {
        XCTAssertTrue(allows("https://auth.example.co.uk/token", "registry.example.co.uk"))
        XCTAssertFalse(allows("https://evil.co.uk/token", "registry.example.co.uk"))
        XCTAssertFalse(allows("https://auth.other.co.uk/token", "registry.example.co.uk"))
    }

    func testRedirectTargets() {
        let allows = RealmPolicy.allowsRedirect
        XCTAssertTrue(allows("production.cloudflare.docker.com", "registry-1.docker.io"))
        XCTAssertTrue(allows("registry-1.docker.io:443", "registry-1.docker.io"))
        XCTAssertTrue(allows("127.0.0.1:9000", "127.0.0.1:5000"), "the upstream's own IP literal, another port")
        for target in ["127.0.0.1", "169.254.169.254", "10.0.0.1", "[::1]", "::1", "2130706433", "0x7f.1", "localhost", "LOCALHOST.", "a.localhost", "bad host", ""] {
            XCTAssertFalse(allows(target, "registry-1.docker.io"), target)
        }
        XCTAssertFalse(allows("127.0.0.2", "127.0.0.1:5000"))
        XCTAssertFalse(allows("169.254.169.254", "10.0.0.5"))
    }
}
