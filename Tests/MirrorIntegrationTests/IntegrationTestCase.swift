import Foundation
import XCTest
import TestSupport

/// Shared fixture for the end-to-end tests: a work directory, the peers a
/// test starts (stopped by PID in `tearDown`, newest first), pulls through
/// Berth with skopeo, and byte-exact checks of what was pulled.
class IntegrationTestCase: XCTestCase {
    var workDir: String!
    var builder: ImageBuilder!
    var cleanups: [() -> Void] = []
    private var berths: [BerthProcess] = []

    override func setUpWithError() throws {
        try super.setUpWithError()
        for tool in ["docker-registry", "skopeo", "curl", "openssl", "gzip"] where Subprocess.resolve(tool) == nil {
            throw Subprocess.Failure(description: "\(tool) is not installed (scripts/test installs the test peers)")
        }
        guard BerthProcess.binaryPath != nil else {
            throw Subprocess.Failure(description: "berth binary not found next to the test bundle: run `swift build --build-tests`")
        }
        workDir = makeTemporaryDirectory("berth-it")
        builder = ImageBuilder(directory: workDir)
    }

    override func tearDown() {
        if let run = testRun, run.totalFailureCount > 0 {
            for b in berths { print("---- berth log (\(b.hostPort)) ----\n\(b.log.suffix(6000))") }
        }
        for c in cleanups.reversed() { c() }
        cleanups = []
        berths = []
        if let workDir { try? FileManager.default.removeItem(atPath: workDir) }
        super.tearDown()
    }

    // MARK: peers

    func startRegistry(_ auth: Registry.Auth = .none) throws -> Registry {
        let r = try Registry(auth: auth)
        cleanups.append { r.remove() }
        return r
    }

    func startBerth(upstream: String, arguments: [String] = [], environment: [String: String?] = [:],
                    workers: Int = 2, port: UInt16? = nil) throws -> BerthProcess {
        let b = try BerthProcess(upstream: upstream, arguments: arguments, environment: environment, workers: workers, port: port)
        berths.append(b)
        cleanups.append { b.remove() }
        return b
    }

    /// A Berth in front of `upstreams` from a `--config` file (written as `configPath`),
    /// each named by its host:port with its prefix; the first is the default.
    func startBerth(upstreams: [(registry: Registry, prefix: String)], configPath: String) throws -> BerthProcess {
        var yaml = "upstreams:\n"
        for (i, u) in upstreams.enumerated() {
            yaml += "  - name: \"\(u.registry.hostPort)\"\n    prefix: \(u.prefix)\n    url: \"\(u.registry.url)\"\n"
            if i == 0 { yaml += "    default: true\n" }
        }
        try yaml.write(toFile: configPath, atomically: true, encoding: .utf8)
        return try startBerth(upstream: "", arguments: ["--config", configPath])
    }

    /// What `berth client-config CLIENT --config CONFIG --endpoint <berth>` prints (it must succeed).
    func clientConfig(_ client: String, config: String, endpoint berth: BerthProcess,
                      file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let binary = try XCTUnwrap(BerthProcess.binaryPath)
        let r = try Subprocess.run([binary, "client-config", client, "--config", config, "--endpoint", berth.url],
                                   in: workDir, timeout: 30, check: false)
        XCTAssertEqual(r.status, 0, r.stderr, file: file, line: line)
        return r.stdout
    }

    func startTokenService(username: String, password: String) throws -> TokenService {
        let t = try TokenService(username: username, password: password)
        cleanups.append { t.stop() }
        return t
    }

    /// A Distribution with token auth and the TokenService that signs its tokens (user `username`, a random password).
    func startTokenAuthRegistry(username: String) throws -> (registry: Registry, tokens: TokenService, password: String) {
        let password = UUID().uuidString
        let tokens = try startTokenService(username: username, password: password)
        let registry = try startRegistry(.token(realm: tokens.realm, service: tokens.service, issuer: tokens.issuer,
                                                rootCertBundle: tokens.certificatePath))
        return (registry, tokens, password)
    }

    func startProxy(connectPorts: [UInt16] = []) throws -> TinyProxy {
        let p = try TinyProxy(connectPorts: connectPorts)
        cleanups.append { p.stop() }
        return p
    }

    func startFakeUpstream(host: String = "127.0.0.1") throws -> FakeUpstream {
        let f = try FakeUpstream(host: host)
        cleanups.append { f.stop() }
        return f
    }

    // MARK: pulling and checking

    /// `skopeo copy docker://<berth>/<reference> dir:<new dir>`; returns the dir.
    func pull(_ berth: BerthProcess, _ reference: String, all: Bool = false) throws -> String {
        let out = "\(workDir!)/pull-\(UUID().uuidString.prefix(8))"
        var extra = ["--src-tls-verify=false"]
        if all { extra.append("--all") }
        try Skopeo.copy("docker://\(berth.hostPort)/\(reference)", "dir:\(out)", extra: extra, in: workDir)
        return out
    }

    /// A single-image `dir:` pull: manifest bytes exactly the registry's, every
    /// referenced blob present, every file hashing to its name.
    func assertLayout(_ dir: String, image: PushedImage, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(readBytes("\(dir)/manifest.json"), image.manifest, "manifest bytes differ from the registry's", file: file, line: line)
        assertBlobs(dir, image.blobs, file: file, line: line)
        assertEveryFileMatchesItsName(dir, file: file, line: line)
    }

    /// A `--all` pull of an index: the index bytes, each platform manifest and its blobs.
    func assertLayout(_ dir: String, index: PushedIndex, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(readBytes("\(dir)/manifest.json"), index.index, "index bytes differ from the registry's", file: file, line: line)
        for child in index.children {
            let path = "\(dir)/\(child.digest.dropFirst(7)).manifest.json"
            XCTAssertEqual(readBytes(path), child.manifest, "platform manifest \(child.digest) missing or altered", file: file, line: line)
            assertBlobs(dir, child.blobs, file: file, line: line)
        }
        assertEveryFileMatchesItsName(dir, file: file, line: line)
    }

    func assertBlobs(_ dir: String, _ digests: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertFalse(digests.isEmpty, "no blobs to check", file: file, line: line)
        for d in digests {
            let hex = String(d.dropFirst(7))
            XCTAssertEqual(sha256Hex(file: "\(dir)/\(hex)"), hex, "blob \(d) missing or corrupt in \(dir)", file: file, line: line)
        }
    }

    /// Every blob file is named by its own SHA-256; `<hex>.manifest.json` too.
    func assertEveryFileMatchesItsName(_ dir: String, file: StaticString = #filePath, line: UInt = #line) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        XCTAssertFalse(names.isEmpty, "nothing pulled into \(dir)", file: file, line: line)
        for name in names where name != "manifest.json" && name != "version" && !name.hasPrefix("signature") {
            let hex = name.hasSuffix(".manifest.json") ? String(name.dropLast(".manifest.json".count)) : name
            XCTAssertEqual(sha256Hex(file: "\(dir)/\(name)"), hex, "\(name) does not hash to its name", file: file, line: line)
        }
    }

    /// GET (or HEAD) through Berth with curl.
    func get(_ berth: BerthProcess, _ path: String, method: String = "GET", headers: [String] = [], timeout: Double = 30) throws -> CurlResult {
        try Curl.request(berth.url + path, method: method, headers: headers, in: workDir, timeout: timeout)
    }
}
