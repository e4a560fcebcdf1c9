import Reactor
import HTTP1
import BlobStore
import CCrypt
import Synchronization

/// Who may pull: an htpasswd file of bcrypt entries (`user:$2y$…`), and
/// whether anonymous requests are let through too. Basic credentials are
/// checked with the system's libcrypt on the blocking pool (bcrypt costs
/// milliseconds); a verified user and password is remembered for a few
/// minutes (as a SHA-256 of the header, never the password) so a pull's
/// hundreds of requests cost one bcrypt.
public final class ClientAuth: @unchecked Sendable {  // immutable after init but `verified`, behind its Mutex
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    let users: [String: String]
    public let allowsAnonymous: Bool
    private let verified = Mutex<[String: (user: String, until: UInt64)]>([:])
    static let rememberNanos: UInt64 = 300_000_000_000

    public init(users: [String: String], allowsAnonymous: Bool) {
        self.users = users
        self.allowsAnonymous = allowsAnonymous
    }

    /// Parses htpasswd text: `user:hash` lines, `#` comments and blank lines
    /// ignored. Only bcrypt hashes are accepted (`htpasswd -B`); anything else
    /// is refused naming the line, so a weak or unsupported hash never lets
    /// everyone in or locks everyone out silently.
    public static func parseHtpasswd(_ text: String) throws -> [String: String] {
        var users: [String: String] = [:]
        // "\r\n" is one Character in Swift: split on either ending.
        for (i, raw) in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }).enumerated() {
            let line = raw.hasSuffix("\r") ? raw.dropLast() : raw
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let colon = line.firstIndex(of: ":"), colon != line.startIndex else {
                throw Failure(description: "line \(i + 1): expected user:hash")
            }
            let user = String(line[..<colon]), hash = String(line[line.index(after: colon)...])
            if user == "anonymous" { throw Failure(description: "line \(i + 1): the user name anonymous is reserved for requests without credentials") }
            guard ["$2y$", "$2b$", "$2a$"].contains(where: hash.hasPrefix), hash.utf8.count == 60 else {
                throw Failure(description: "line \(i + 1) (\(user)): only bcrypt hashes are supported (htpasswd -B)")
            }
            users[user] = hash
        }
        return users
    }

    public enum Outcome: Equatable {
        case allowed(user: String)
        /// No or wrong credentials: 401 with a Basic challenge.
        case refused(String)
    }

    private var anonymous: Outcome { allowsAnonymous ? .allowed(user: "anonymous") : .refused("authentication required") }

    /// Decides on `authorization` (the request's header); `done` runs on `loop`.
    func check(_ authorization: String?, loop: EventLoop, pool: BlockingPool, _ done: @escaping (Outcome) -> Void) {
        guard let authorization else { return done(anonymous) }
        guard authorization.utf8.count < 1024, authorization.lowercased().hasPrefix("basic "),
              let decoded = base64Decode(String(authorization.dropFirst(6)).filter { $0 != " " }),
              let colon = decoded.firstIndex(of: UInt8(ascii: ":")) else {
            return done(.refused("malformed Basic credentials"))
        }
        // An empty user and password is no credentials: containers/image sends
        // `Basic Og==` after a challenge when it has none.
        if decoded.count == 1 { return done(anonymous) }
        let key = SHA256Hasher.hex(Array(authorization.utf8))
        let now = loop.now
        if let hit = verified.withLock({ $0[key] }), hit.until > now { return done(.allowed(user: hit.user)) }
        let user = String(decoding: decoded[..<colon], as: UTF8.self)
        let password = Array(decoded[decoded.index(after: colon)...])
        guard let hash = users[user] else { return done(.refused("unknown user or wrong password")) }
        pool.run(on: loop, { Self.bcryptMatches(password, hash) }) { [self] result in
            guard case .success(true) = result else { return done(.refused("unknown user or wrong password")) }
            verified.withLock { v in
                if v.count > 10_000 { v.removeAll() }
                v[key] = (user, now + Self.rememberNanos)
            }
            done(.allowed(user: user))
        }
    }

    /// libcrypt's `crypt_r` of `password` with `hash` as its setting, compared in constant time.
    static func bcryptMatches(_ password: [UInt8], _ hash: String) -> Bool {
        guard !password.contains(0) else { return false }
        var data = crypt_data()
        let out: String? = withUnsafeMutablePointer(to: &data) { d in
            (password + [0]).withUnsafeBufferPointer { p in
                p.withMemoryRebound(to: CChar.self) { pw in
                    crypt_r(pw.baseAddress, hash, d).map { String(cString: $0) }
                }
            }
        }
        guard let out, out.utf8.count == hash.utf8.count else { return false }
        return zip(out.utf8, hash.utf8).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }
}

/// RFC 4648 base64 decoding; nil on anything malformed.
func base64Decode(_ s: String) -> [UInt8]? {
    var out: [UInt8] = [], acc: UInt32 = 0, bits = 0, padding = 0
    for c in s.utf8 {
        let v: UInt32
        switch c {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): v = UInt32(c - UInt8(ascii: "A"))
        case UInt8(ascii: "a")...UInt8(ascii: "z"): v = UInt32(c - UInt8(ascii: "a")) + 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): v = UInt32(c - UInt8(ascii: "0")) + 52
        case UInt8(ascii: "+"): v = 62
        case UInt8(ascii: "/"): v = 63
        case UInt8(ascii: "="): padding += 1; continue
        default: return nil
        }
        guard padding == 0 else { return nil }
        acc = acc << 6 | v
        bits += 6
        if bits >= 8 {
            bits -= 8
            out.append(UInt8(truncatingIfNeeded: acc >> UInt32(bits)))
        }
    }
    guard (s.utf8.count % 4 == 0) || padding == 0, padding <= 2 else { return nil }
    return out
}
