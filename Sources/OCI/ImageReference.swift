/// An image as a user writes it: `repo[:tag]` or `repo@digest`, optionally
/// behind a registry host (`docker.io/library/alpine:3.20`), which is dropped:
/// Berth has one upstream. A missing tag means `latest`.
public struct ImageReference: Equatable, Sendable, CustomStringConvertible {
    public let name: String
    public let reference: Reference

    public init?(_ text: String) {
        var rest = Substring(text)
        var reference: Reference?
        if let at = rest.firstIndex(of: "@") {
            guard let d = Digest(String(rest[rest.index(after: at)...])) else { return nil }
            reference = .digest(d)
            rest = rest[..<at]
        }
        // A first component with '.' or ':' (or "localhost") names a registry host.
        if let slash = rest.firstIndex(of: "/") {
            let first = rest[..<slash]
            if first.contains(".") || first.contains(":") || first == "localhost" { rest = rest[rest.index(after: slash)...] }
        }
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
        name = String(rest)
        self.reference = reference
    }

    public var description: String {
        switch reference {
        case .tag(let t): return "\(name):\(t)"
        case .digest(let d): return "\(name)@\(d)"
        }
    }
}
