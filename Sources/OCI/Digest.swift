/// A content digest algorithm Berth accepts: the two the OCI image spec registers.
public enum DigestAlgorithm: String, Sendable, CaseIterable {
    case sha256
    case sha512

    /// The exact number of lowercase hex characters of an encoded digest.
    public var hexLength: Int {
        switch self {
        case .sha256: return 64
        case .sha512: return 128
        }
    }
}

/// A validated content digest, `<algorithm>:<lowercase hex>`.
///
/// Only the canonical form is accepted (DECISIONS.md "Paths"): lowercase
/// `[a-f0-9]` of the algorithm's exact length, no whitespace, no other
/// algorithm. Two digests naming the same content are then equal as values,
/// and a digest can go into a file name or a path without escaping.
public struct Digest: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The algorithm part.
    public let algorithm: DigestAlgorithm
    /// The encoded part: lowercase hex, exactly `algorithm.hexLength` characters.
    public let hex: String

    /// Parses `sha256:<64 lowercase hex>` or `sha512:<128 lowercase hex>`; anything else is nil.
    public init?(_ text: String) {
        // Over the bytes: every request path with a digest comes through here.
        var text = text
        guard let d = text.withUTF8({ Digest(utf8: $0) }) else { return nil }
        self = d
    }

    /// `init(_:)` over UTF-8 bytes (a slice of a request path).
    public init?(utf8 b: UnsafeBufferPointer<UInt8>) {
        guard let colon = b.firstIndex(of: UInt8(ascii: ":")) else { return nil }
        let name = UnsafeBufferPointer(rebasing: b[..<colon])
        guard let algorithm = DigestAlgorithm.allCases.first(where: { name.elementsEqual($0.rawValue.utf8) }),
              b.count - colon - 1 == algorithm.hexLength else { return nil }
        let hex = UnsafeBufferPointer(rebasing: b[(colon + 1)...])
        for byte in hex where !Digest.isLowerHex(byte) { return nil }
        self.algorithm = algorithm
        self.hex = String(decoding: hex, as: UTF8.self)
    }

    /// A digest from its parts; nil unless `hex` is lowercase hex of the algorithm's exact length.
    public init?(algorithm: DigestAlgorithm, hex: String) {
        guard hex.utf8.count == algorithm.hexLength, hex.utf8.allSatisfy(Digest.isLowerHex) else { return nil }
        self.algorithm = algorithm
        self.hex = hex
    }

    /// `sha256:…`, the form used on the wire and in paths.
    public var description: String { algorithm.rawValue + ":" + hex }

    /// Orders by algorithm name, then hex: the order of `description`.
    public static func < (lhs: Digest, rhs: Digest) -> Bool {
        if lhs.algorithm != rhs.algorithm { return lhs.algorithm.rawValue < rhs.algorithm.rawValue }
        return lhs.hex.utf8.lexicographicallyPrecedes(rhs.hex.utf8)
    }

    @inline(__always)
    static func isLowerHex(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "f"))
    }
}
