import Foundation
import XCTest
import TestSupport
import Archive

/// `berth import` and `berth export` end to end: Debian's docker-registry as
/// the upstream, skopeo writing `docker-archive:` and `oci-archive:` fixtures
/// and reading exports back, images pulled through `berth serve` with the
/// upstream stopped, every digest checked.
final class ImportExportTests: IntegrationTestCase {
    /// Runs the built `berth` with `arguments`; returns (status, stdout, stderr).
    func berth(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let binary = try XCTUnwrap(BerthProcess.binaryPath)
        var env: [String: String?] = [:]
        for k in ProcessInfo.processInfo.environment.keys where k.hasPrefix("BERTH_") { env[k] = .some(nil) }
        let r = try Subprocess.run([binary] + arguments, in: workDir, environmentOverrides: env, timeout: 300, check: false)
        return (r.status, r.stdout, r.stderr)
    }

    /// An image pushed as OCI (skopeo reads only OCI media types from an OCI layout's index.json).
    func pushOCIImage(to registry: Registry, repository: String, tag: String, layerSizes: [Int]) throws -> PushedImage {
        let layout = try builder.makeDirLayout(layerSizes: layerSizes, tarLayers: true)
        try Skopeo.copy("dir:\(layout)", "docker://\(registry.hostPort)/\(repository):\(tag)",
                        extra: ["--dest-tls-verify=false", "--format", "oci"], in: workDir)
        let (bytes, type) = try registry.manifest(repository, tag, in: workDir)
        return PushedImage(repository: repository, tag: tag, manifest: bytes, mediaType: type, blobs: referencedDigests(bytes).blobs)
    }

    /// Everything under the cache's blob tree and temp dir, for "nothing changed" checks.
    func cacheFiles(_ dir: String) -> [String] {
        let fm = FileManager.default
        let blobs = (fm.enumerator(atPath: dir + "/blobs")?.allObjects as? [String] ?? []).sorted()
        let tmp = ((try? fm.contentsOfDirectory(atPath: dir + "/tmp")) ?? []).map { "tmp/" + $0 }
        return blobs + tmp
    }

    func testClassicDockerSaveImportedDirectlyThenPulledWithTheUpstreamStopped() throws {
        let registry = try startRegistry()
        let image = try builder.pushImage(to: registry, repository: "team/app", tag: "1", layerSizes: [400_000, 150_000], tarLayers: true)
        let archive = "\(workDir!)/saved.tar"
        // skopeo writes the classic docker save layout: manifest.json, <hex>.tar layers, <id>/layer.tar symlinks.
        try Skopeo.copy("docker://\(registry.hostPort)/team/app:1", "docker-archive:\(archive):team/app:1",
                        extra: ["--src-tls-verify=false"], in: workDir)
        let b = try startBerth(upstream: registry.url)
        b.stop()
        registry.stop()

        let r = try berth(["import", archive, "--cache-dir", b.cacheDir])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("digest") && r.stdout.contains("is new"), r.stdout)
        let built = try XCTUnwrap(r.stdout.split(separator: " ").first { $0.hasPrefix("sha256:") }.map(String.init))
        XCTAssertEqual(b.partialFiles(), [])

        try b.start()
        let dir = try pull(b, "team/app:1")
        assertEveryFileMatchesItsName(dir)
        let manifest = try XCTUnwrap(readBytes("\(dir)/manifest.json"))
        XCTAssertEqual("sha256:" + sha256Hex(manifest), built, "the manifest served is the one import built")
        // The config is the registry's, byte for byte; the layers are its uncompressed tars (their diff IDs).
        let config = try XCTUnwrap(jsonObject(manifest)?["config"] as? [String: Any])
        XCTAssertEqual(config["digest"] as? String, image.blobs[0])
        let diffIDs = try XCTUnwrap(((jsonObject(readBytes("\(dir)/\(image.blobs[0].dropFirst(7))") ?? [])?["rootfs"] as? [String: Any])?["diff_ids"]) as? [String])
        XCTAssertEqual(referencedDigests(manifest).blobs, [image.blobs[0]] + diffIDs)
        XCTAssertFalse(b.log.contains("unreachable"), "served from the import, the upstream was not needed")
    }

    func testExportReadBySkopeoThenImportedIntoAFreshOfflineCacheThroughTheServer() throws {
        let registry = try startRegistry()
        let image = try pushOCIImage(to: registry, repository: "team/oci", tag: "v1", layerSizes: [300_000, 200_000])
        let online = try startBerth(upstream: registry.url)
        assertLayout(try pull(online, "team/oci:v1"), image: image)

        // Export through the running server's admin socket.
        let bundle = "\(workDir!)/bundle.tar.gz"
        let e = try berth(["export", "team/oci:v1", "-o", bundle, "--cache-dir", online.cacheDir])
        XCTAssertEqual(e.status, 0, e.stderr)
        XCTAssertTrue(online.log.contains("admin: exporting"), "the export went through the server")
        let read = "\(workDir!)/skopeo-read"
        try Skopeo.copy("oci-archive:\(bundle):team/oci:v1", "dir:\(read)", in: workDir)
        assertLayout(read, image: image)
        online.stop()
        registry.stop()

        // Directly into a cache directory that does not exist yet (a new air-gapped machine).
        let fresh = "\(workDir!)/new-machine/cache"
        let direct = try berth(["import", bundle, "--cache-dir", fresh])
        XCTAssertEqual(direct.status, 0, direct.stderr)
        XCTAssertTrue(direct.stdout.contains(image.digest), direct.stdout)

        // Import into an empty cache served offline: through its admin socket, then served at once.
        let offline = try startBerth(upstream: registry.url, arguments: ["--offline"])
        let i = try berth(["import", bundle, "--cache-dir", offline.cacheDir])
        XCTAssertEqual(i.status, 0, i.stderr)
        XCTAssertTrue(i.stdout.contains(image.digest), i.stdout)
        XCTAssertFalse(i.stdout.contains("is new"), "an OCI layout keeps its digests")
        XCTAssertTrue(offline.log.contains("admin: imported"), "the import went through the server")
        assertLayout(try pull(offline, "team/oci:v1"), image: image)
        assertLayout(try pull(offline, "team/oci@\(image.digest)"), image: image)
        XCTAssertEqual(offline.partialFiles(), [])
    }

    /// Issue 10's "Done when": a list preloaded on a connected machine, exported, carried over and
    /// imported on a machine with no upstream, pulled by skopeo, podman and containerd from Berth offline.
    func testPreloadedExportedImportedAndServedOfflineToSkopeoPodmanAndContainerd() throws {
        for tool in ["podman", "containerd", "ctr", "skopeo"] where Subprocess.resolve(tool) == nil {
            throw XCTSkip("\(tool) is not installed (scripts/deps.sh TEST_PACKAGES)")
        }
        let registry = try startRegistry()
        let oci = try pushOCIImage(to: registry, repository: "site/api", tag: "v1", layerSizes: [300_000, 40_000])
        let docker = try builder.pushImage(to: registry, repository: "site/web", tag: "v2", layerSizes: [200_000], tarLayers: true)
        let dir = workDir!
        let configPath = "\(dir)/berth.yaml"
        try "upstream:\n  url: \"\(registry.url)\"\n".write(toFile: configPath, atomically: true, encoding: .utf8)

        // The connected machine: preload the site's list through the server, export it.
        let connected = try startBerth(upstream: "", arguments: ["--config", configPath])
        let list = "\(dir)/site-images.txt"
        try "site/api:v1\nsite/web:v2\n".write(toFile: list, atomically: true, encoding: .utf8)
        let preload = try berth(["preload", "-f", list, "--cache-dir", connected.cacheDir])
        XCTAssertEqual(preload.status, 0, preload.stdout + preload.stderr)
        let bundle = "\(dir)/site.tar.gz"
        let export = try berth(["export", "site/api:v1", "site/web:v2", "-o", bundle, "--cache-dir", connected.cacheDir])
        XCTAssertEqual(export.status, 0, export.stderr)
        connected.stop()
        registry.stop()

        // The air-gapped machine: import into a new cache, serve it offline.
        let cache = "\(dir)/air-gapped/cache"
        let imported = try berth(["import", bundle, "--cache-dir", cache])
        XCTAssertEqual(imported.status, 0, imported.stderr)
        let offline = try startBerth(upstream: "", arguments: ["--config", configPath, "--cache-dir", cache, "--offline"])
        assertLayout(try pull(offline, "site/api:v1"), image: oci)
        assertLayout(try pull(offline, "site/web:v2"), image: docker)

        let registriesConf = "\(dir)/registries.conf"
        try clientConfig("podman", config: configPath, endpoint: offline).write(toFile: registriesConf, atomically: true, encoding: .utf8)
        XCTAssertEqual(try podmanPull("\(registry.hostPort)/site/api:v1", registriesConf: registriesConf), oci.digest)
        XCTAssertEqual(try podmanPull("\(registry.hostPort)/site/web:v2", registriesConf: registriesConf), docker.digest)

        let hostsDir = "\(dir)/certs.d"
        XCTAssertEqual(try writeHostsFiles(try clientConfig("containerd", config: configPath, endpoint: offline), under: hostsDir), [registry.hostPort])
        let ctr = try startContainerd()
        for reference in ["site/api:v1", "site/web:v2"] {
            let fetch = try Subprocess.run(ctr + ["content", "fetch", "--hosts-dir", hostsDir, "\(registry.hostPort)/\(reference)"],
                                           in: dir, timeout: 120, check: false)
            XCTAssertEqual(fetch.status, 0, fetch.stdout + fetch.stderr)
        }
        let held = try Subprocess.run(ctr + ["content", "ls", "-q"], in: dir, timeout: 30).stdout
        for d in [oci.digest, docker.digest] + oci.blobs + docker.blobs { XCTAssertTrue(held.contains(d), "containerd holds \(d): \(held)") }
        XCTAssertFalse(offline.log.contains("unreachable"), "nothing was dialled")
    }

    /// An SBOM exported with its image is listed as the image's referrer on the air-gapped side.
    func testAnImportedArtifactIsListedAsAReferrerOffline() throws {
        let registry = try startRegistry()
        let image = try pushOCIImage(to: registry, repository: "team/app", tag: "v1", layerSizes: [50_000])
        let sbom = try builder.pushArtifact(to: registry, repository: "team/app", tag: "v1-sbom", subject: image)
        let online = try startBerth(upstream: registry.url)
        for tag in ["v1", "v1-sbom"] { XCTAssertEqual(try berth(["preload", "team/app:\(tag)", "--cache-dir", online.cacheDir]).status, 0) }
        let bundle = "\(workDir!)/with-sbom.tar"
        XCTAssertEqual(try berth(["export", "team/app:v1", "team/app:v1-sbom", "-o", bundle, "--cache-dir", online.cacheDir]).status, 0)
        online.stop()
        registry.stop()

        let offline = try startBerth(upstream: registry.url, arguments: ["--offline"])
        XCTAssertEqual(try berth(["import", bundle, "--cache-dir", offline.cacheDir]).status, 0)
        let refs = try get(offline, "/v2/team/app/referrers/\(image.digest)")
        XCTAssertEqual(refs.status, 200, refs.bodyText)
        let entries = try XCTUnwrap(jsonObject(refs.body)?["manifests"] as? [[String: Any]], refs.bodyText)
        XCTAssertEqual(entries.compactMap { $0["digest"] as? String }, [sbom.digest], refs.bodyText)
        XCTAssertEqual((entries.first?["annotations"] as? [String: String])?["org.opencontainers.image.created"], "2026-01-01T00:00:00Z")
        XCTAssertEqual(try get(offline, "/v2/team/app/manifests/v1-sbom", headers: ["Accept: \(ImageBuilder.ociManifest)"]).body, sbom.manifest)
    }

    /// On a terminal (`script` gives one) export and import draw a progress line, through the server and without one.
    func testProgressOnATerminal() throws {
        let registry = try startRegistry()
        _ = try pushOCIImage(to: registry, repository: "team/tty", tag: "v1", layerSizes: [400_000])
        let online = try startBerth(upstream: registry.url)
        XCTAssertEqual(try berth(["preload", "team/tty:v1", "--cache-dir", online.cacheDir]).status, 0)
        let binary = try XCTUnwrap(BerthProcess.binaryPath)
        let bundle = "\(workDir!)/tty.tar.gz"
        func onTerminal(_ command: String) throws -> String {
            let r = try Subprocess.run(["script", "-qfec", command, "/dev/null"], in: workDir, timeout: 120, check: false)
            XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
            return r.stdout
        }
        let export = try onTerminal("\(binary) export team/tty:v1 -o \(bundle) --cache-dir \(online.cacheDir)")
        XCTAssertTrue(export.contains("\u{1b}[Kexport: ") && export.contains("(100 %)"), export.debugDescription)
        online.stop()
        let imported = try onTerminal("\(binary) import \(bundle) --cache-dir \(workDir!)/tty-cache")
        XCTAssertTrue(imported.contains("\u{1b}[Kimport: ") && imported.contains("(100 %)"), imported.debugDescription)
    }

    func testOCIArchiveFromSkopeoImportedWithAndWithoutAs() throws {
        let registry = try startRegistry()
        let image = try pushOCIImage(to: registry, repository: "team/src", tag: "v2", layerSizes: [100_000])
        let archive = "\(workDir!)/oci.tar"
        try Skopeo.copy("docker://\(registry.hostPort)/team/src:v2", "oci-archive:\(archive):team/src:v2",
                        extra: ["--src-tls-verify=false"], in: workDir)
        try Subprocess.run(["gzip", "-k", "-1", archive], in: workDir, timeout: 60)
        let b = try startBerth(upstream: registry.url, arguments: ["--offline"])
        XCTAssertEqual(try berth(["import", archive, "--cache-dir", b.cacheDir]).status, 0)
        let r = try berth(["import", archive + ".gz", "--as", "renamed/app:7", "--cache-dir", b.cacheDir])
        XCTAssertEqual(r.status, 0, r.stderr)
        assertLayout(try pull(b, "team/src:v2"), image: image)
        assertLayout(try pull(b, "renamed/app:7"), image: image)

        // --pulled-since through the server: every tag used within the hour, each named in index.json.
        let recent = "\(workDir!)/recent.tar"
        let e = try berth(["export", "--pulled-since", "1h", "-o", recent, "--cache-dir", b.cacheDir])
        XCTAssertEqual(e.status, 0, e.stderr)
        XCTAssertTrue(e.stdout.contains("team/src:v2") && e.stdout.contains("renamed/app:7"), e.stdout)
        let again = try berth(["import", recent, "--cache-dir", "\(workDir!)/other-cache"])
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertTrue(again.stdout.contains("team/src:v2") && again.stdout.contains("renamed/app:7"), again.stdout)
    }

    func testAnIndexIsExportedWithEveryCachedPlatformAndServedOfflineAfterImport() throws {
        let registry = try startRegistry()
        let index = try builder.pushIndex(to: registry, repository: "team/multi", tag: "v3")
        let online = try startBerth(upstream: registry.url)
        assertLayout(try pull(online, "team/multi:v3", all: true), index: index)
        let bundle = "\(workDir!)/multi.tar"
        let e = try berth(["export", "team/multi:v3", "-o", bundle, "--cache-dir", online.cacheDir])
        XCTAssertEqual(e.status, 0, e.stderr)
        XCTAssertTrue(e.stdout.contains("\(1 + index.children.reduce(0) { $0 + 1 + $1.blobs.count }) blobs"), e.stdout)
        let read = "\(workDir!)/skopeo-read-all"
        try Skopeo.copy("oci-archive:\(bundle):team/multi:v3", "dir:\(read)", extra: ["--all"], in: workDir)
        assertLayout(read, index: index)
        online.stop()
        registry.stop()

        let offline = try startBerth(upstream: registry.url, arguments: ["--offline"])
        let i = try berth(["import", bundle, "--cache-dir", offline.cacheDir])
        XCTAssertEqual(i.status, 0, i.stderr)
        assertLayout(try pull(offline, "team/multi:v3", all: true), index: index)
    }

    func testHostileArchivesAreRefusedAndLeaveTheCacheUnchanged() throws {
        let registry = try startRegistry()
        _ = try pushOCIImage(to: registry, repository: "team/ok", tag: "v1", layerSizes: [50_000])
        let good = "\(workDir!)/good.tar"
        try Skopeo.copy("docker://\(registry.hostPort)/team/ok:v1", "oci-archive:\(good):team/ok:v1",
                        extra: ["--src-tls-verify=false"], in: workDir)
        let b = try startBerth(upstream: registry.url)
        b.stop()
        XCTAssertEqual(try berth(["import", good, "--cache-dir", b.cacheDir]).status, 0)
        let before = cacheFiles(b.cacheDir)
        let listing = try berth(["cache", "ls", "--cache-dir", b.cacheDir]).stdout

        func member(_ name: String, type: UInt8 = UInt8(ascii: "0"), link: String = "", data: [UInt8] = []) -> [UInt8] {
            TarWriter.header(name: name, linkName: link, size: Int64(data.count), type: type)
                + data + [UInt8](repeating: 0, count: (512 - data.count % 512) % 512)
        }
        let end = [UInt8](repeating: 0, count: 1024)
        let goodBytes = try XCTUnwrap(readBytes(good))
        let payload = [UInt8](repeating: 7, count: 5000)
        var hostile: [(String, [UInt8], String)] = [
            ("dotdot.tar", member("../escape", data: payload) + end, "leaves the archive"),
            ("absolute.tar", member("/tmp/abs", data: payload) + end, "absolute"),
            ("symlink.tar", member("blobs/sha256/x", type: UInt8(ascii: "2"), link: "../../../etc/passwd") + end, "outside the archive"),
            ("digest.tar", member("blobs/sha256/" + String(repeating: "ab", count: 32), data: payload) + end, "does not match its digest"),
            ("truncated.tar", Array(goodBytes.prefix(goodBytes.count / 2)), "ends"),
        ]
        // A gzip stream cut short: the whole good archive compressed, then halved.
        try Subprocess.run(["gzip", "-k", "-1", good], in: workDir, timeout: 60)
        let gz = try XCTUnwrap(readBytes(good + ".gz"))
        hostile.append(("truncated.tar.gz", Array(gz.prefix(gz.count - 100)), "gzip"))
        // The good archive with one blob's bytes changed: every member streams in, then the import is refused.
        var flipped = goodBytes
        if let r = goodBytes.firstRange(of: Array("{\"schemaVersion\"".utf8)) { flipped[r.lowerBound + 2] ^= 0x01 }
        hostile.append(("flipped.tar", flipped, "does not match its digest"))

        for (name, bytes, message) in hostile {
            let path = "\(workDir!)/\(name)"
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            let r = try berth(["import", path, "--cache-dir", b.cacheDir])
            XCTAssertEqual(r.status, 1, "\(name): \(r.stdout)")
            XCTAssertTrue(r.stderr.contains(message), "\(name): \(r.stderr)")
            XCTAssertEqual(cacheFiles(b.cacheDir), before, "\(name) left something behind")
        }
        XCTAssertEqual(try berth(["cache", "ls", "--cache-dir", b.cacheDir]).stdout, listing)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(workDir!)/../escape"))
    }
}
