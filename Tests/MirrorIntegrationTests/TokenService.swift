import Foundation
import COpenSSL
import HTTP1
import TestSupport

/// A Docker-token-spec token server for the token-auth registry, written for
/// the tests and run in-process on Berth's own HTTP1 server.
///
/// `GET /token?service=…&scope=repository:<name>:<actions>…` with Basic
/// credentials answers `{"token", "access_token", "expires_in", "issued_at"}`:
/// an RS256 JWT whose header carries the signing certificate in `x5c` (the
/// same self-signed certificate is the registry's `rootcertbundle`) and whose
/// `access` grants pull and push on every repository scope asked for. Wrong or
/// missing credentials get 401. Token requests are counted.
final class TokenService {
    let directory: String
    let username: String
    let password: String
    let service = "berth-test-registry"
    let issuer = "berth-test-token-issuer"
    /// Seconds a token lives (Distribution allows 60 s of leeway on top).
    let lifetime = 300
    var certificatePath: String { "\(directory)/token.pem" }
    var realm: String { "http://127.0.0.1:\(port)/token" }
    private(set) var port: UInt16 = 0

    private let certificateDERBase64: String
    private let key: OpaquePointer  // EVP_PKEY, owned
    private var server: LoopbackServer?
    private let lock = NSLock()
    private var issued = 0
    private var refused = 0

    init(username: String, password: String) throws {
        self.username = username
        self.password = password
        directory = makeTemporaryDirectory("berth-token")
        try Subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "token.key",
                            "-out", "token.pem", "-days", "2", "-subj", "/CN=berth-test-token-issuer"], in: directory, timeout: 60)
        // x5c wants standard base64 of the DER: the PEM body is exactly that, folded.
        let pem = try String(contentsOfFile: "\(directory)/token.pem", encoding: .utf8)
        certificateDERBase64 = pem.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
        let keyPEM = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(directory)/token.key")))
        let bio = keyPEM.withUnsafeBytes { BIO_new_mem_buf($0.baseAddress, Int32($0.count)) }
        defer { BIO_free(bio) }
        guard let key = PEM_read_bio_PrivateKey(bio, nil, nil, nil) else {
            throw Subprocess.Failure(description: "cannot load the token signing key")
        }
        self.key = key
        server = try LoopbackServer { [weak self] w in self?.handle(w) }
        port = server!.port
    }

    deinit {
        server?.stop()
        EVP_PKEY_free(key)
    }

    func stop() {
        server?.stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Tokens issued so far (requests with good credentials).
    var issuedCount: Int { lock.withLock { issued } }
    /// Token requests refused for bad credentials.
    var refusedCount: Int { lock.withLock { refused } }
    /// Every token request so far.
    var requestCount: Int { lock.withLock { issued + refused } }

    // MARK: serving

    private func handle(_ w: ResponseWriter) {
        let (path, query) = splitQuery(w.request.target)
        guard path == "/token" else {
            return w.respond(ResponseHead(status: 404), body: Array("not found\n".utf8))
        }
        let expected = "Basic " + Data("\(username):\(password)".utf8).base64EncodedString()
        guard w.request.headers["Authorization"] == expected else {
            lock.withLock { refused += 1 }
            var head = ResponseHead(status: 401)
            head.headers.add("Content-Type", "application/json")
            head.headers.add("WWW-Authenticate", "Basic realm=\"berth-test-token\"")
            return w.respond(head, body: Array(#"{"details":"incorrect username or password"}"#.utf8))
        }
        let scopes = query.filter { $0.0 == "scope" }.flatMap { $0.1.split(separator: " ").map(String.init) }
        let token = makeToken(subject: username, scopes: scopes)
        lock.withLock { issued += 1 }
        let body = jsonBytes([
            "token": token, "access_token": token, "expires_in": lifetime,
            "issued_at": ISO8601DateFormatter().string(from: Date()),
        ] as [String: Any])
        var head = ResponseHead(status: 200)
        head.headers.add("Content-Type", "application/json")
        w.respond(head, body: body)
    }

    // MARK: JWT

    /// An RS256 JWT for `subject` granting pull and push on each `repository:<name>:<actions>` scope.
    func makeToken(subject: String, scopes: [String]) -> String {
        var access: [[String: Any]] = []
        for scope in scopes {
            let parts = scope.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count >= 3, parts[0] == "repository" else { continue }
            let name = parts[1..<(parts.count - 1)].joined(separator: ":")
            access.append(["type": "repository", "name": name, "actions": ["pull", "push"]])
        }
        let now = Int(Date().timeIntervalSince1970)
        let header: [String: Any] = ["typ": "JWT", "alg": "RS256", "x5c": [certificateDERBase64]]
        let claims: [String: Any] = [
            "iss": issuer, "sub": subject, "aud": service,
            "exp": now + lifetime, "nbf": now - 1, "iat": now,
            "jti": UUID().uuidString, "access": access,
        ]
        let signingInput = base64URL(jsonBytes(header)) + "." + base64URL(jsonBytes(claims))
        return signingInput + "." + base64URL(sign(Array(signingInput.utf8)))
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 through OpenSSL's EVP.
    private func sign(_ input: [UInt8]) -> [UInt8] {
        let ctx = EVP_MD_CTX_new()!
        defer { EVP_MD_CTX_free(ctx) }
        precondition(EVP_DigestSignInit(ctx, nil, EVP_sha256(), nil, key) == 1, "EVP_DigestSignInit failed")
        var length = 0
        precondition(input.withUnsafeBufferPointer { EVP_DigestSign(ctx, nil, &length, $0.baseAddress, $0.count) } == 1)
        var signature = [UInt8](repeating: 0, count: length)
        let ok = signature.withUnsafeMutableBufferPointer { out in
            input.withUnsafeBufferPointer { EVP_DigestSign(ctx, out.baseAddress, &length, $0.baseAddress, $0.count) }
        }
        precondition(ok == 1, "EVP_DigestSign failed")
        return Array(signature.prefix(length))
    }
}

/// Base64url without padding (RFC 7515 §2).
func base64URL(_ bytes: [UInt8]) -> String {
    Data(bytes).base64EncodedString()
        .replacingOccurrences(of: "+", with: "-")
        .replacingOccurrences(of: "/", with: "_")
        .replacingOccurrences(of: "=", with: "")
}
