/// An image as a user writes it: `[UPSTREAM/]REPO[:TAG|@DIGEST]`, where
/// UPSTREAM is a first component that names a registry (it has '.' or ':',
/// or is `localhost`: `ghcr.io/org/x:1`, `127.0.0.1:5999/team/app`). Without
/// one, the default upstream is meant. A missing tag means `latest`.
public struct ImageReference: Equatable, Sendable, CustomStringConvertible {
    /// The registry named in front of the repository, nil for the default upstream.
    public let registry: String?
    /// The repository, without the registry.
    public let name: String
    public let reference: Reference

    /// `registry/name`, or `name` without a registry.
    public var qualifiedName: String { registry.map { "\($0)/\(name)" } ?? name }

    /// Splits a registry-looking first component off `name` (`ghcr.io/org/x` → `ghcr.io`, `org/x`).
    public static func splitRegistry<S: StringProtocol>(_ name: S) -> (registry: String?, rest: Substring) {
        let s = Substring(name)
        guard let slash = s.firstIndex(of: "/") else { return (nil, s) }
        let first = s[..<slash]
        guard first.contains(".") || first.contains(":") || first == "localhost" else { return (nil, s) }
        return (String(first), s[s.index(after: slash)...])
    }

    public init?(_ text: String) {
        var rest = Substring(text)
        var reference: Reference?
        if let at = rest.firstIndex(of: "@") {
            guard let d = Digest(String(rest[rest.index(after: at)...])) else { return nil }
            reference = .digest(d)
            rest = rest[..<at]
        }
        let (registry, repository) = Self.splitRegistry(rest)
        rest = repository
        if reference == nil {
            if let colon = rest.lastIndex(of: ":"), !rest[colon...].contains("/") {
                let tag = rest[rest.index(after: colon)...]
                guard Tag.isValid(tag) else { return nil }
                reference = .tag(String(tag))
                rest = rest[..<colon]
            } else {
                reference = .tag("latest")
            }
        }
        guard RepositoryName.isValid(rest), let reference else { return nil }
        // A registry is host[:port]: nothing that could end a query value or a path.
        guard registry?.utf8.allSatisfy({ b in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b == 0x2e || b == 0x2d || b == 0x3a || b == 0x5b || b == 0x5d
        }) ?? true else { return nil }
        self.registry = registry
        name = String(rest)
        self.reference = reference
    }

    public var description: String {
        switch reference {
        case .tag(let t): return "\(qualifiedName):\(t)"
        case .digest(let d): return "\(qualifiedName)@\(d)"
        }
    }
}
