import XCTest
@testable import Mirror

/// `auth.rules` as values: glob matching over `upstream/repository` and how rules combine.
final class PullRulesTests: XCTestCase {
    func testGlobs() {
        let cases: [(String, String, Bool)] = [
            ("**", "docker.io/library/alpine", true),
            ("docker.io/**", "docker.io/library/alpine", true),
            ("docker.io/**", "docker.iox/library/alpine", false),
            ("docker.io/library/*", "docker.io/library/alpine", true),
            ("docker.io/library/*", "docker.io/library/a/b", false),
            ("docker.io/*/alpine", "docker.io/library/alpine", true),
            ("*/team/**", "ghcr.io/team/app", true),
            ("*/team/**", "ghcr.io/other/app", false),
            ("ghcr.io/team/app", "ghcr.io/team/app", true),
            ("ghcr.io/team/app", "ghcr.io/team/app2", false),
            ("ghcr.io/team/app*", "ghcr.io/team/app2", true),
            ("127.0.0.1:5999/**", "127.0.0.1:5999/x", true),
            ("**/x", "a/b/c/x", true),
            ("**/x", "a/b/c/y", false),
        ]
        for (glob, path, expected) in cases {
            XCTAssertEqual(PullRules.matches(glob, path), expected, "\(glob) ~ \(path)")
        }
    }

    func testManyStarsStayCheap() {
        let glob = String(repeating: "*", count: 200) + "x"
        let path = String(repeating: "a", count: 255)
        XCTAssertFalse(PullRules.matches(glob, path))
        XCTAssertFalse(PullRules.matches(String(repeating: "**/", count: 100) + "x", String(repeating: "a/", count: 120)))
    }

    func testNoRulesAllowEveryone() {
        XCTAssertTrue(PullRules().allows(user: "anonymous", "docker.io/library/alpine"))
    }

    func testRulesAreClosedByDefaultAndDenyWins() {
        let rules = PullRules([
            .init(users: ["alice", "bob"], allow: ["docker.io/**"], deny: ["docker.io/library/secret"]),
            .init(users: ["alice"], allow: ["ghcr.io/team/**"]),
            .init(users: ["*"], allow: ["docker.io/library/*"]),
            .init(users: ["mallory"], deny: ["**"]),
        ])
        XCTAssertTrue(rules.allows(user: "alice", "ghcr.io/team/app"))
        XCTAssertFalse(rules.allows(user: "bob", "ghcr.io/team/app"), "bob has no rule allowing ghcr.io")
        XCTAssertTrue(rules.allows(user: "bob", "docker.io/org/app"))
        XCTAssertFalse(rules.allows(user: "alice", "docker.io/library/secret"), "a deny wins over every allow")
        XCTAssertTrue(rules.allows(user: "anonymous", "docker.io/library/alpine"), "* names every user, anonymous too")
        XCTAssertFalse(rules.allows(user: "anonymous", "docker.io/org/app"))
        XCTAssertFalse(rules.allows(user: "carol", "ghcr.io/team/app"), "a user no rule allows may pull nothing")
        XCTAssertFalse(rules.allows(user: "mallory", "docker.io/library/alpine"), "deny ** overrides the * allow")
    }

    func testGlobValidation() {
        XCTAssertNil(PullRules.invalidGlob("docker.io/library/*"))
        XCTAssertNil(PullRules.invalidGlob("**"))
        XCTAssertNil(PullRules.invalidGlob("127.0.0.1:5999/a-b_c.d/**"))
        for bad in ["", "docker.io/[ab]", "a?b", "***", "a//b", " x"] {
            XCTAssertNotNil(PullRules.invalidGlob(bad), bad)
        }
    }
}
