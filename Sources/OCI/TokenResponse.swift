import FoundationEssentials

/// A JSON document Berth refuses (token answers, tag lists).
public struct DocumentError: Error, Equatable, Sendable {
    /// What is wrong with the document.
    public let message: String

    /// A refusal with its reason.
    public init(message: String) { self.message = message }
}

/// A token service answer (Docker token auth spec):
/// `{"token": …}` or `{"access_token": …}`, optional `expires_in` and `issued_at`.
public struct TokenResponse: Equatable, Sendable {
    /// The largest token answer accepted (FIELD-NOTES.md: cap token responses at 1 MiB).
    public static let maxBytes = 1 << 20
    /// The lifetime assumed when `expires_in` is absent, and the least accepted
    /// (the spec tells clients to treat shorter ones as 60 s, as Distribution does).
    public static let minimumLifetime = 60
    /// The longest lifetime believed: one day, so a bogus value cannot pin a token.
    public static let maximumLifetime = 86_400

    /// The bearer token; `token` wins over `access_token` when both are present.
    public let token: String
    /// Lifetime in seconds, clamped to `minimumLifetime...maximumLifetime`.
    public let expiresIn: Int
    /// The `issued_at` timestamp as sent (RFC 3339), if any.
    public let issuedAt: String?

    /// A token answer from its parts, taken as given (no clamping).
    public init(token: String, expiresIn: Int, issuedAt: String? = nil) {
        self.token = token
        self.expiresIn = expiresIn
        self.issuedAt = issuedAt
    }

    /// Parses a token answer. Throws DocumentError for invalid JSON, a body over
    /// `maxBytes`, no non-empty `token`/`access_token`, or a token with bytes that
    /// cannot go into an `Authorization` header (controls, spaces, non-ASCII).
    public static func parse(_ bytes: [UInt8]) throws -> TokenResponse {
        guard bytes.count <= maxBytes else { throw DocumentError(message: "token response exceeds \(maxBytes) bytes") }
        let raw: RawToken
        do {
            raw = try JSONDecoder().decode(RawToken.self, from: Data(bytes))
        } catch {
            throw DocumentError(message: "token response is not a valid JSON object")
        }
        guard let token = [raw.token, raw.accessToken].compactMap({ $0 }).first(where: { !$0.isEmpty }) else {
            throw DocumentError(message: "token response has no token")
        }
        guard token.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
            throw DocumentError(message: "token contains characters not allowed in a header")
        }
        let lifetime = raw.expiresIn.map { $0.isFinite ? Int(max(-1, min($0, Double(maximumLifetime)))) : minimumLifetime }
        return TokenResponse(
            token: token,
            expiresIn: min(max(lifetime ?? minimumLifetime, minimumLifetime), maximumLifetime),
            issuedAt: raw.issuedAt
        )
    }
}

private struct RawToken: Decodable {
    var token: String?
    var accessToken: String?
    var expiresIn: Double?
    var issuedAt: String?

    enum CodingKeys: String, CodingKey {
        case token
        case accessToken = "access_token"
        case expiresIn = "expires_in"
        case issuedAt = "issued_at"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        token = try? c.decodeIfPresent(String.self, forKey: .token)
        accessToken = try? c.decodeIfPresent(String.self, forKey: .accessToken)
        // Some services send the lifetime as a string or a float; junk counts as absent.
        if let n = try? c.decodeIfPresent(Double.self, forKey: .expiresIn) {
            expiresIn = n
        } else if let s = try? c.decodeIfPresent(String.self, forKey: .expiresIn) {
            expiresIn = Double(s)
        } else {
            expiresIn = nil
        }
        issuedAt = try? c.decodeIfPresent(String.self, forKey: .issuedAt)
    }
}
