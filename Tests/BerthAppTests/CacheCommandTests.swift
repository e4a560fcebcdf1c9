import Foundation
import XCTest
import Reactor
import HTTP1
import BlobStore
import OCI
import TestSupport

/// `berth cache` as a user runs it: the built binary against a real
/// `berth serve` (through admin.sock) and against the files alone. The
/// upstream is an in-process HTTPServer serving a generated two-platform
/// image (an OCI index, two manifests, a shared config-less layout).
final class CacheCommandTests: XCTestCase {
    var directory: String!
    var cacheDir: String { directory + "/cache" }
    var upstream: FakeRegistry!
    var berth: BerthProcess?

    override func setUpWithError() throws {
        directory = TestPKI.makeTemporaryDirectory("berth-cachecli")
        upstream = try FakeRegistry()
    }

    override func tearDown() {
        berth?.stop()
        upstream?.stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func startBerth(_ extra: [String] = []) throws -> BerthProcess {
        let b = try BerthProcess(directory: directory, extra: ["--cache-dir", cacheDir, "--upstream", "http://127.0.0.1:\(upstream.port)",
                                                              "--upstream-dockerhub", "false"] + extra)
        berth = b
        return b
    }

    @discardableResult
    private func cache(_ args: [String], expect status: Int32 = 0, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let binary = try XCTUnwrap(locateBerthBinary())
        let r = try Subprocess.run([binary, "cache"] + args + ["--cache-dir", cacheDir], in: directory, timeout: 120, check: false)
        XCTAssertEqual(r.status, status, "berth cache \(args.joined(separator: " ")): \(r.stdout) \(r.stderr)", file: file, line: line)
        return r.stdout + r.stderr
    }

    private func listing(_ args: [String] = []) throws -> [[String: Any]] {
        let out = try cache(["ls", "--json"] + args)
        let json = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any]
        return try XCTUnwrap(json?["entries"] as? [[String: Any]], out)
    }

    // MARK: tests

    func testPinThroughServerThenLsAndDuInBothModes() throws {
        _ = try startBerth()
        let pinned = try cache(["pin", "test/app:v1"])
        XCTAssertTrue(pinned.contains("pinned test/app:v1 → \(upstream.image.index)"), pinned)
        XCTAssertTrue(pinned.contains("\(upstream.image.allDigests.count) digests, \(upstream.image.allDigests.count) cached"), pinned)
        XCTAssertEqual(upstream.blobGETs, upstream.image.blobs.count, "every blob of every platform fetched once, through Berth")

        let entries = try listing()
        XCTAssertEqual(entries.count, 1, "\(entries)")
        let e = try XCTUnwrap(entries.first)
        XCTAssertEqual(e["repository"] as? String, "test/app")
        XCTAssertEqual(e["tag"] as? String, "v1")
        XCTAssertEqual(e["digest"] as? String, upstream.image.index.description)
        XCTAssertEqual((e["bytes"] as? NSNumber)?.uint64Value, upstream.image.totalBytes)
        XCTAssertEqual(e["pinned"] as? Bool, true)
        let text = try cache(["ls"])
        XCTAssertTrue(text.contains("test/app"), text)
        XCTAssertTrue(text.contains("v1"), text)
        XCTAssertTrue(text.contains(CacheSize.human(upstream.image.totalBytes)), text)
        XCTAssertTrue(text.contains("pinned"), text)
        let du = try cache(["du"])
        XCTAssertTrue(du.contains("(server running)"), du)
        XCTAssertTrue(du.contains("in \(upstream.image.allDigests.count) blobs"), du)
        XCTAssertTrue(du.contains("(\(upstream.image.totalBytes) bytes) of the blobs, 1 pinned images"), du)

        berth?.stop()
        berth = nil
        XCTAssertEqual(try listing().first?["bytes"] as? NSNumber, e["bytes"] as? NSNumber, "the files alone say the same")
        let du2 = try cache(["du"])
        XCTAssertTrue(du2.contains("(no server running)"), du2)
        XCTAssertTrue(du2.contains("(\(upstream.image.totalBytes) bytes) of the blobs, 1 pinned images"), du2)

        // Unpin, drop the tag, collect: everything goes (files mode).
        try cache(["unpin", "test/app:v1"])
        try cache(["rm", "test/app:v1"])
        let gc = try cache(["gc", "--grace", "0s"])
        XCTAssertTrue(gc.contains("removed \(upstream.image.allDigests.count) blobs"), gc)
        XCTAssertTrue(try listing().isEmpty)
    }

    func testPinnedFromConfigurationAtStartup() throws {
        let b = try startBerth(["--pin", "test/app:v1"])
        XCTAssertTrue(b.waitForLog("pinned test/app:v1", seconds: 30), b.child.stderr)
        let e = try XCTUnwrap(try listing().first)
        XCTAssertEqual(e["pinned"] as? Bool, true)
        XCTAssertEqual((e["cached"] as? NSNumber)?.intValue, upstream.image.allDigests.count)
        // A pinned image cannot be removed by tag or by digest.
        let refused = try cache(["rm", "test/app:v1"], expect: 1)
        XCTAssertTrue(refused.contains("pinned"), refused)
        try cache(["rm", upstream.image.blobs[0].description], expect: 1)
    }

    func testVerifyThroughServerQuarantinesAFlippedByte() throws {
        _ = try startBerth()
        try cache(["pin", "test/app:v1"])
        let layer = upstream.image.blobs.last!
        try flipByte(of: layer)
        let out = try cache(["verify"], expect: 1)
        XCTAssertTrue(out.contains("1 mismatches"), out)
        XCTAssertTrue(out.contains("mismatch: \(layer)"), out)
        try assertQuarantined(layer)
        try cache(["verify"], expect: 0)
        // The server forgot it: the next pull fetches it again, verified.
        let entries = try listing()
        XCTAssertEqual((entries.first?["cached"] as? NSNumber)?.intValue, upstream.image.allDigests.count - 1)
    }

    func testVerifyOnTheFilesQuarantinesAFlippedByte() throws {
        _ = try startBerth()
        try cache(["pin", "test/app:v1"])
        berth?.stop()
        berth = nil
        let config = upstream.image.configs[0]
        try flipByte(of: config)
        let out = try cache(["verify"], expect: 1)
        XCTAssertTrue(out.contains("checked \(upstream.image.allDigests.count) blobs"), out)
        XCTAssertTrue(out.contains("mismatch: \(config)"), out)
        try assertQuarantined(config)
        try cache(["verify"], expect: 0)
    }

    func testSecondServerOnTheSameCacheRefusesToStart() throws {
        let first = try startBerth()
        let binary = try XCTUnwrap(locateBerthBinary())
        let r = try Subprocess.run([binary, "serve", "--listen", "127.0.0.1:\(freeLoopbackPort())", "--cache-dir", cacheDir,
                                    "--upstream", "http://127.0.0.1:\(upstream.port)"], in: directory, timeout: 20, check: false)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("another berth serve (pid \(first.pid)) is using the cache directory"), r.stderr)
        XCTAssertTrue(isListening(first.port), "the first server is untouched")
        // The admin socket is private to the server's user.
        var st = stat()
        XCTAssertEqual(stat(cacheDir + "/admin.sock", &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o600)
    }

    func testPinWithoutServerPinsOnlyWhatIsCachedAndRmThroughServer() throws {
        let b = try startBerth()
        // The admin API is not on the public listener.
        let c = try RawClient(port: b.port)
        c.send("GET /usage HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        XCTAssertEqual(c.readResponse()?.status, 404)
        try cache(["pin", "test/app:v1"])
        try cache(["unpin", "test/app:v1"])
        XCTAssertEqual(try listing().first?["pinned"] as? Bool, false)
        // A blob removed through the server is gone from its index and the disk.
        let layer = upstream.image.blobs.last!
        let removed = try cache(["rm", layer.description])
        XCTAssertTrue(removed.contains("removed \(layer)"), removed)
        XCTAssertFalse(FileManager.default.fileExists(atPath: blobPath(layer)))
        XCTAssertEqual((try listing().first?["cached"] as? NSNumber)?.intValue, upstream.image.allDigests.count - 1)
        berth?.stop()
        berth = nil
        // Without a server, a partly cached image is not pinned (nothing fetches the rest)…
        let refused = try cache(["pin", "test/app:v1"], expect: 1)
        XCTAssertTrue(refused.contains("only partly cached") && refused.contains("start berth serve"), refused)
        try cache(["pin", "test/app:nope"], expect: 1)
        // …while one of its platform manifests, entirely cached, is.
        let amd64 = upstream.image.manifests[0]
        let pinned = try cache(["pin", "test/app@\(amd64)"])
        XCTAssertTrue(pinned.contains("4 digests, 4 cached"), pinned)
        let du = try cache(["du"])
        XCTAssertTrue(du.contains("1 pinned images"), du)
    }

    func testUsageErrorsExitTwo() throws {
        try cache(["pin", "Not A Reference"], expect: 2)
        try cache(["gc", "--grace", "soon"], expect: 2)
        let binary = try XCTUnwrap(locateBerthBinary())
        let r = try Subprocess.run([binary, "cache", "ls", "--cache-dir", directory + "/nothing-here"], in: directory, check: false)
        XCTAssertEqual(r.status, 2, r.stderr)
    }

    // MARK: helpers

    private func blobPath(_ d: Digest) -> String { "\(cacheDir)/blobs/sha256/\(d.hex.prefix(2))/\(d.hex)" }

    private func flipByte(of d: Digest) throws {
        let fd = open(blobPath(d), O_RDWR)
        XCTAssertGreaterThanOrEqual(fd, 0, "\(d) is cached")
        defer { close(fd) }
        var byte: UInt8 = 0
        XCTAssertEqual(pread(fd, &byte, 1, 7), 1)
        byte ^= 0x01
        XCTAssertEqual(pwrite(fd, &byte, 1, 7), 1)
    }

    private func assertQuarantined(_ d: Digest, file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertFalse(FileManager.default.fileExists(atPath: blobPath(d)), "moved out of the blob tree", file: file, line: line)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: cacheDir + "/quarantine")) ?? []
        XCTAssertEqual(names.filter { $0.hasPrefix(d.hex + ".") }.count, 1, "\(names)", file: file, line: line)
    }
}

/// The CLI's size format (a copy of CacheReport.size, which is the thing shown).
enum CacheSize {
    static func human(_ bytes: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var v = Double(bytes)
        var i = 0
        while v >= 1024 && i < units.count - 1 { v /= 1024; i += 1 }
        let tenths = Int((v * 10).rounded())
        return i == 0 ? "\(bytes) B" : "\(tenths / 10).\(tenths % 10) \(units[i])"
    }
}

/// A generated two-platform image: an OCI index over two image manifests,
/// each with its own config and a layer, plus one layer both share.
struct GeneratedImage {
    var index = Digest(algorithm: .sha256, hex: String(repeating: "0", count: 64))!
    var manifests: [Digest] = []
    var configs: [Digest] = []
    var blobs: [Digest] = []           // configs and layers, each once
    var content: [Digest: (bytes: [UInt8], type: String)] = [:]
    var totalBytes: UInt64 = 0         // everything the index covers
    var allDigests: [Digest] { [index] + manifests + blobs }

    init() {
        func add(_ bytes: [UInt8], _ type: String) -> Digest {
            let d = Digest(algorithm: .sha256, hex: SHA256Hasher.hex(bytes))!
            if content[d] == nil { totalBytes += UInt64(bytes.count) }
            content[d] = (bytes, type)
            return d
        }
        func noise(_ seed: Int, _ n: Int) -> [UInt8] {
            var x = UInt64(seed) &* 0x9E37_79B9_7F4A_7C15 | 1
            return (0..<n).map { _ in x ^= x << 13; x ^= x >> 7; x ^= x << 17; return UInt8(truncatingIfNeeded: x) }
        }
        let shared = add(noise(1, 400_000), "application/octet-stream")
        blobs.append(shared)
        var children: [String] = []
        for (i, arch) in ["amd64", "arm64"].enumerated() {
            let config = add(Array("{\"architecture\":\"\(arch)\",\"os\":\"linux\"}".utf8), "application/octet-stream")
            let layer = add(noise(10 + i, 250_000 + i * 1000), "application/octet-stream")
            configs.append(config)
            blobs += [config, layer]
            let sizes = [config: content[config]!.bytes.count, layer: content[layer]!.bytes.count, shared: 400_000]
            let desc = { (d: Digest, t: String) in "{\"mediaType\":\"\(t)\",\"digest\":\"\(d)\",\"size\":\(sizes[d]!)}" }
            let manifest = "{\"schemaVersion\":2,\"mediaType\":\"\(MediaType.ociManifest)\",\"config\":\(desc(config, "application/vnd.oci.image.config.v1+json")),"
                + "\"layers\":[\(desc(shared, "application/vnd.oci.image.layer.v1.tar")),\(desc(layer, "application/vnd.oci.image.layer.v1.tar"))]}"
            let m = add(Array(manifest.utf8), MediaType.ociManifest)
            manifests.append(m)
            children.append("{\"mediaType\":\"\(MediaType.ociManifest)\",\"digest\":\"\(m)\",\"size\":\(manifest.utf8.count),\"platform\":{\"architecture\":\"\(arch)\",\"os\":\"linux\"}}")
        }
        index = add(Array("{\"schemaVersion\":2,\"mediaType\":\"\(MediaType.ociIndex)\",\"manifests\":[\(children.joined(separator: ","))]}".utf8), MediaType.ociIndex)
    }
}

/// An upstream registry in this process: `test/app:v1` is `GeneratedImage`.
final class FakeRegistry: @unchecked Sendable {  // counters behind a lock; the server runs on its own loops
    let image = GeneratedImage()
    let group: EventLoopGroup
    let pool = BlockingPool(threads: 1)
    private var server: HTTPServer!
    private let lock = NSLock()
    private var gets = 0
    var port: UInt16 { server.boundAddresses()[0].port }
    var blobGETs: Int { lock.lock(); defer { lock.unlock() }; return gets }

    init() throws {
        group = try EventLoopGroup(count: 1)
        var c = HTTPServer.Configuration()
        c.plain = [SocketAddress("127.0.0.1:0")!]
        let image = self.image
        server = HTTPServer(configuration: c, group: group, pool: pool) { [unowned self] w in
            let path = w.request.target
            var head = ResponseHead(status: 200)
            if path == "/v2/" {
                head.headers.add("Content-Type", "application/json")
                return w.respond(head, body: Array("{}".utf8))
            }
            let prefix = "/v2/test/app/"
            guard path.hasPrefix(prefix) else { return w.respond(ResponseHead(status: 404)) }
            let rest = path.dropFirst(prefix.count)
            var digest: Digest?
            if rest == "manifests/v1" { digest = image.index }
            else if rest.hasPrefix("manifests/") { digest = Digest(String(rest.dropFirst("manifests/".count))) }
            else if rest.hasPrefix("blobs/") {
                digest = Digest(String(rest.dropFirst("blobs/".count)))
                if w.request.method == .get { self.lock.lock(); self.gets += 1; self.lock.unlock() }
            }
            guard let d = digest, let item = image.content[d] else { return w.respond(ResponseHead(status: 404)) }
            head.headers.add("Content-Type", item.type)
            head.headers.add("Docker-Content-Digest", d.description)
            w.respond(head, body: item.bytes)
        }
        try server.start()
        group.start()
    }

    func stop() {
        server.beginShutdown()
        group.shutdown()
        pool.shutdown()
    }
}
