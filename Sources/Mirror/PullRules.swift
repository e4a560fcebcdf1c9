/// `auth.rules`: who may pull what, as globs over `upstream/repository`
/// (`docker.io/library/alpine`, `ghcr.io/team/**`). `*` matches within one
/// path segment, `**` across segments.
///
/// With no rules every user who authenticated may pull everything. With
/// rules, access is closed by default: a pull is allowed when a rule naming
/// the user (or `*`, which names every user, `anonymous` too) allows it and
/// no rule naming the user denies it. A deny always wins.
public struct PullRules: Sendable, Equatable {
    public struct Rule: Sendable, Equatable {
        public var users: [String]
        public var allow: [String]
        public var deny: [String]

        public init(users: [String], allow: [String] = [], deny: [String] = []) {
            self.users = users
            self.allow = allow
            self.deny = deny
        }
    }

    public var rules: [Rule]

    public init(_ rules: [Rule] = []) { self.rules = rules }

    public var isEmpty: Bool { rules.isEmpty }

    /// May `user` pull `path` (`upstream/repository`, the repository as the upstream names it)?
    public func allows(user: String, _ path: String) -> Bool {
        if rules.isEmpty { return true }
        var allowed = false
        for rule in rules where rule.users.contains(user) || rule.users.contains("*") {
            if rule.deny.contains(where: { Self.matches($0, path) }) { return false }
            if !allowed { allowed = rule.allow.contains { Self.matches($0, path) } }
        }
        return allowed
    }

    /// Why `glob` is not a valid rule pattern, or nil when it is.
    public static func invalidGlob(_ glob: String) -> String? {
        if glob.isEmpty { return "an empty pattern" }
        if glob.contains("***") { return "\"\(glob)\": use * (one segment) or ** (any depth)" }
        if glob.contains("//") { return "\"\(glob)\": empty path segment" }
        let allowed = Set("abcdefghijklmnopqrstuvwxyz0123456789._-/:*".utf8)
        if let bad = glob.utf8.first(where: { !allowed.contains($0) }) {
            return "\"\(glob)\": \"\(Character(Unicode.Scalar(bad)))\" is not allowed (lowercase names, / and * only)"
        }
        return nil
    }

    private enum Token { case byte(UInt8), star, starStar }

    /// Whole-string glob match, linear in pattern × path length (no backtracking).
    static func matches(_ glob: String, _ path: String) -> Bool {
        var tokens: [Token] = []
        let g = Array(glob.utf8)
        var i = 0
        while i < g.count {
            if g[i] == UInt8(ascii: "*") {
                if i + 1 < g.count, g[i + 1] == UInt8(ascii: "*") { tokens.append(.starStar); i += 2 } else { tokens.append(.star); i += 1 }
            } else {
                tokens.append(.byte(g[i])); i += 1
            }
        }
        let text = Array(path.utf8), n = text.count
        // reach[j]: the tokens so far can match text[0..<j].
        var reach = [Bool](repeating: false, count: n + 1)
        reach[0] = true
        var next = reach
        for token in tokens {
            switch token {
            case .byte(let c):
                next[0] = false
                for j in 0..<n { next[j + 1] = reach[j] && text[j] == c }
            case .star, .starStar:
                let crossesSlash: Bool = { if case .starStar = token { return true } else { return false } }()
                next[0] = reach[0]
                for j in stride(from: 1, through: n, by: 1) {
                    next[j] = reach[j] || (next[j - 1] && (crossesSlash || text[j - 1] != UInt8(ascii: "/")))
                }
            }
            swap(&reach, &next)
        }
        return reach[n]
    }
}
