/// What a manifest request names: a tag or a digest.
public enum Reference: Hashable, Sendable, CustomStringConvertible {
    case tag(String)
    case digest(Digest)

    /// Parses a manifest reference: a valid digest, else a valid tag, else nil.
    public init?<S: StringProtocol>(_ text: S) {
        if let digest = Digest(String(text)) {
            self = .digest(digest)
        } else if Tag.isValid(text) {
            self = .tag(String(text))
        } else {
            return nil
        }
    }

    /// `init(_:)` over UTF-8 bytes (a slice of a request path).
    public init?(utf8 b: UnsafeBufferPointer<UInt8>) {
        if let digest = Digest(utf8: b) {
            self = .digest(digest)
        } else if Tag.isValid(utf8: b) {
            self = .tag(String(decoding: b, as: UTF8.self))
        } else {
            return nil
        }
    }

    /// The reference as it appears in a path: the tag, or `sha256:…`.
    public var description: String {
        switch self {
        case .tag(let tag): return tag
        case .digest(let digest): return digest.description
        }
    }

    /// The digest, when the reference is one.
    public var digest: Digest? {
        if case .digest(let digest) = self { return digest }
        return nil
    }
}
