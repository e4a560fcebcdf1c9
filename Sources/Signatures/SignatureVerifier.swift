import COpenSSL
import OCI

/// A trusted public key (PEM `PUBLIC KEY`): ECDSA P-256 or P-384, RSA, or
/// Ed25519, verified through OpenSSL's EVP as cosign signs with each: SHA-256
/// (SHA-384 for P-384) over the payload, RSA as PKCS #1 v1.5, Ed25519 over
/// the payload itself.
public final class PublicKey: @unchecked Sendable {  // the EVP_PKEY is only read after init
    public let kind: String
    private let key: OpaquePointer
    private let digest: OpaquePointer?

    public init(pem: [UInt8]) throws {
        guard let bio = pem.withUnsafeBytes({ BIO_new_mem_buf($0.baseAddress, Int32($0.count)) }) else {
            throw SignatureFormatError("cannot read the key")
        }
        defer { BIO_free(bio) }
        guard let k = PEM_read_bio_PUBKEY(bio, nil, nil, nil) else {
            ERR_clear_error()
            throw SignatureFormatError("not a PEM public key (-----BEGIN PUBLIC KEY-----)")
        }
        switch EVP_PKEY_get_base_id(k) {
        case EVP_PKEY_EC where EVP_PKEY_get_bits(k) == 256: (kind, digest) = ("ECDSA P-256", EVP_sha256())
        case EVP_PKEY_EC where EVP_PKEY_get_bits(k) == 384: (kind, digest) = ("ECDSA P-384", EVP_sha384())
        case EVP_PKEY_RSA where EVP_PKEY_get_bits(k) >= 2048: (kind, digest) = ("RSA-\(EVP_PKEY_get_bits(k))", EVP_sha256())
        case EVP_PKEY_ED25519: (kind, digest) = ("Ed25519", nil)
        default:
            EVP_PKEY_free(k)
            throw SignatureFormatError("unsupported key: ECDSA P-256 or P-384, RSA of 2048 bits or more, or Ed25519")
        }
        key = k
    }

    deinit { EVP_PKEY_free(key) }

    /// True when `signature` is this key's over `message`.
    public func verify(_ message: [UInt8], signature: [UInt8]) -> Bool {
        guard let ctx = EVP_MD_CTX_new() else { return false }
        defer {
            EVP_MD_CTX_free(ctx)
            ERR_clear_error()
        }
        guard EVP_DigestVerifyInit(ctx, nil, digest, nil, key) == 1 else { return false }
        return message.withUnsafeBytes { m in
            signature.withUnsafeBytes { s in
                EVP_DigestVerify(ctx, s.bindMemory(to: UInt8.self).baseAddress, s.count,
                                 m.bindMemory(to: UInt8.self).baseAddress, m.count) == 1
            }
        }
    }
}

/// Whether an image digest carries a valid signature by a trusted key.
public enum Verdict: Equatable, Sendable, CustomStringConvertible {
    /// Verified by `keys[key]`.
    case verified(key: Int)
    /// No signature found.
    case unsigned
    /// A signature verifies with a trusted key, but its payload vouches for another digest.
    case digestMismatch(Digest)
    /// Signatures exist, none verifies with a trusted key (a bad signature, or another key's).
    case noTrustedSignature
    /// The signature artifacts cannot be read.
    case malformed(String)

    public var isVerified: Bool { if case .verified = self { return true } else { return false } }

    /// A one-word form for the cache index: `verified:K`, `unsigned`, `mismatch:DIGEST`, `untrusted`, `malformed`.
    public var code: String {
        switch self {
        case .verified(let k): return "verified:\(k)"
        case .unsigned: return "unsigned"
        case .digestMismatch(let d): return "mismatch:\(d)"
        case .noTrustedSignature: return "untrusted"
        case .malformed: return "malformed"
        }
    }

    /// A verdict from its `code`; nil for anything else.
    public init?(code: String) {
        if code.hasPrefix("verified:"), let k = Int(code.dropFirst(9)), k >= 0 { self = .verified(key: k); return }
        if code.hasPrefix("mismatch:"), let d = Digest(String(code.dropFirst(9))) { self = .digestMismatch(d); return }
        switch code {
        case "unsigned": self = .unsigned
        case "untrusted": self = .noTrustedSignature
        case "malformed": self = .malformed("recorded earlier")
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case .verified(let k): return "verified with key \(k + 1)"
        case .unsigned: return "no signature"
        case .digestMismatch(let d): return "digest mismatch: the signed payload names \(d)"
        case .noTrustedSignature: return "bad signature or untrusted key: no signature verifies with a trusted key"
        case .malformed(let why): return "bad signature: \(why)"
        }
    }

    /// The verdict on `digest` from cosign 3's Sigstore bundles, against `keys`:
    /// verified when a trusted key signed an envelope whose statement names `digest`.
    public static func of(_ digest: Digest, bundles: [SigstoreBundle], keys: [PublicKey]) -> Verdict {
        guard bundles.contains(where: { !$0.signatures.isEmpty }) else { return .unsigned }
        var mismatch: Digest?
        var malformed: String?
        for b in bundles {
            let signed = b.signedBytes
            for sig in b.signatures {
                guard let k = keys.firstIndex(where: { $0.verify(signed, signature: sig) }) else { continue }
                // Only a statement a trusted key signed is read.
                do {
                    let digests = try b.signedDigests()
                    if digests.contains(digest) { return .verified(key: k) }
                    mismatch = digests[0]
                } catch {
                    malformed = "\(error)"
                }
            }
        }
        if let mismatch { return .digestMismatch(mismatch) }
        if let malformed { return .malformed(malformed) }
        return .noTrustedSignature
    }

    /// The verdict on `digest` from its signatures (payload bytes, raw signature), against `keys`.
    public static func of(_ digest: Digest, signatures: [(payload: [UInt8], signature: [UInt8])], keys: [PublicKey]) -> Verdict {
        guard !signatures.isEmpty else { return .unsigned }
        var mismatch: Digest?
        var malformed: String?
        for s in signatures {
            guard let k = keys.firstIndex(where: { $0.verify(s.payload, signature: s.signature) }) else { continue }
            // Only a payload a trusted key signed is read.
            do {
                let p = try SimpleSigningPayload.parse(s.payload)
                if p.manifestDigest == digest { return .verified(key: k) }
                mismatch = p.manifestDigest
            } catch {
                malformed = "\(error)"
            }
        }
        if let mismatch { return .digestMismatch(mismatch) }
        if let malformed { return .malformed(malformed) }
        return .noTrustedSignature
    }
}
