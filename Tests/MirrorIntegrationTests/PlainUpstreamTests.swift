import Foundation
import XCTest
import TestSupport

/// Berth in front of a plain (no auth) Distribution 2.8: skopeo and curl
/// pull through it; every byte is checked against the registry's.
final class PlainUpstreamTests: IntegrationTestCase {
    func testColdAndWarmPullByTagAndByDigest() throws {
        let registry = try startRegistry()
        let image = try builder.pushImage(to: registry, repository: "test/app", tag: "v1",
                                          layerSizes: [1 << 20, 3 << 20, 200_000])
        XCTAssertEqual(image.blobs.count, 4, "config and three layers")
        let berth = try startBerth(upstream: registry.url)

        assertLayout(try pull(berth, "test/app:v1"), image: image)
        for d in image.blobs {
            XCTAssertEqual(registry.count(method: "GET", pathContains: "/blobs/\(d)"), 1, "cold pull fetches \(d) from the upstream once")
        }

        let blobGets = registry.count(method: "GET", pathContains: "/blobs/")
        let manifestGets = registry.count(method: "GET", pathContains: "/manifests/")
        assertLayout(try pull(berth, "test/app:v1"), image: image)
        XCTAssertEqual(registry.count(method: "GET", pathContains: "/blobs/"), blobGets, "a warm pull fetches no blob")
        XCTAssertEqual(registry.count(method: "GET", pathContains: "/manifests/"), manifestGets, "a fresh tag is answered from the cache")

        assertLayout(try pull(berth, "test/app@\(image.digest)"), image: image)
        XCTAssertEqual(registry.count(method: "GET", pathContains: "/blobs/"), blobGets)
    }

    func testMultiArchIndexKeepsEveryPlatform() throws {
        let registry = try startRegistry()
        let index = try builder.pushIndex(to: registry, repository: "test/multi", tag: "latest")
        let platforms = (jsonObject(index.index)?["manifests"] as? [[String: Any]] ?? [])
            .compactMap { ($0["platform"] as? [String: Any])?["architecture"] as? String }
        XCTAssertEqual(platforms, ["amd64", "arm64"])
        let berth = try startBerth(upstream: registry.url)

        assertLayout(try pull(berth, "test/multi:latest", all: true), index: index)
        let blobGets = registry.count(method: "GET", pathContains: "/blobs/")
        assertLayout(try pull(berth, "test/multi:latest", all: true), index: index)
        XCTAssertEqual(registry.count(method: "GET", pathContains: "/blobs/"), blobGets, "a warm pull fetches no blob")

        let raw = try Skopeo.inspectRaw("docker://\(berth.hostPort)/test/multi:latest", in: workDir)
        XCTAssertEqual(raw, index.index, "the index is served unchanged, every platform kept")
        for child in index.children {
            XCTAssertEqual(try Skopeo.inspectRaw("docker://\(berth.hostPort)/test/multi@\(child.digest)", in: workDir), child.manifest)
        }
    }

    func testArtifactManifestBlobsAndReferrers() throws {
        let registry = try startRegistry()
        let subject = try builder.pushImage(to: registry, repository: "test/art", tag: "v1", layerSizes: [100_000])
        let artifact = try builder.pushArtifact(to: registry, repository: "test/art", tag: "sbom", subject: subject)
        let doc = jsonObject(artifact.manifest)
        XCTAssertEqual(doc?["artifactType"] as? String, "application/vnd.berth.test.sbom.v1+json")
        XCTAssertEqual((doc?["subject"] as? [String: Any])?["digest"] as? String, subject.digest)
        let berth = try startBerth(upstream: registry.url)

        let r = try get(berth, "/v2/test/art/manifests/sbom", headers: ["Accept: \(ImageBuilder.ociManifest)"])
        XCTAssertEqual(r.status, 200, r.bodyText)
        XCTAssertEqual(r.body, artifact.manifest, "artifact manifest bytes differ from the registry's")
        XCTAssertEqual(r.headers["content-type"], ImageBuilder.ociManifest)
        XCTAssertEqual(r.headers["docker-content-digest"], artifact.digest)
        XCTAssertEqual(try Skopeo.inspectRaw("docker://\(berth.hostPort)/test/art:sbom", in: workDir), artifact.manifest)

        for d in artifact.blobs {
            let b = try get(berth, "/v2/test/art/blobs/\(d)")
            XCTAssertEqual(b.status, 200, "blob \(d): \(b.bodyText)")
            XCTAssertEqual("sha256:" + sha256Hex(b.body), d)
        }

        // Distribution 2.8 has no referrers API: Berth answers from what it cached, the artifact pulled above
        // (its record is written on the pool after the answer: wait for it, bounded).
        var refs = try get(berth, "/v2/test/art/referrers/\(subject.digest)")
        XCTAssertTrue(waitUntil(10) {
            refs = (try? self.get(berth, "/v2/test/art/referrers/\(subject.digest)")) ?? refs
            return refs.bodyText.contains(artifact.digest)
        }, refs.bodyText)
        XCTAssertEqual(refs.status, 200, refs.bodyText)
        XCTAssertEqual(refs.headers["content-type"], ImageBuilder.ociIndex)
        let list = jsonObject(refs.body)
        XCTAssertEqual(list?["schemaVersion"] as? Int, 2)
        XCTAssertEqual(list?["mediaType"] as? String, ImageBuilder.ociIndex)
        let entries = try XCTUnwrap(list?["manifests"] as? [[String: Any]], refs.bodyText)
        XCTAssertEqual(entries.count, 1, refs.bodyText)
        XCTAssertEqual(entries.first?["digest"] as? String, artifact.digest)
        XCTAssertEqual(entries.first?["size"] as? Int, artifact.manifest.count)
        XCTAssertEqual(entries.first?["artifactType"] as? String, "application/vnd.berth.test.sbom.v1+json")
        let other = try get(berth, "/v2/test/art/referrers/\(subject.digest)?artifactType=application/vnd.example.other")
        XCTAssertEqual((jsonObject(other.body)?["manifests"] as? [Any])?.count, 0, other.bodyText)
        XCTAssertEqual(other.headers["oci-filters-applied"], "artifactType")
        let none = try get(berth, "/v2/test/art/referrers/\(artifact.digest)")
        XCTAssertEqual((jsonObject(none.body)?["manifests"] as? [Any])?.count, 0, "nothing refers to the artifact: the empty index")

        // The same with the upstream gone, after a restart (the record is journaled).
        registry.stop()
        try berth.restart()
        let offline = try get(berth, "/v2/test/art/referrers/\(subject.digest)")
        XCTAssertEqual(offline.status, 200, offline.bodyText)
        XCTAssertEqual((jsonObject(offline.body)?["manifests"] as? [[String: Any]])?.first?["digest"] as? String, artifact.digest, offline.bodyText)
    }

    func testConcurrentColdGetsOfOneBlobReachTheUpstreamOnce() throws {
        let registry = try startRegistry()
        let blob = try builder.uploadRandomBlob(size: 64 << 20, to: registry, repository: "test/big")
        let berth = try startBerth(upstream: registry.url)

        let clients = try (0..<8).map { i in
            try Subprocess(["curl", "-s", "-o", "\(workDir!)/big-\(i)", "-w", "%{http_code}", "--max-time", "90",
                            "\(berth.url)/v2/test/big/blobs/\(blob.digest)"], in: workDir)
        }
        for (i, c) in clients.enumerated() {
            XCTAssertTrue(c.waitForExit(seconds: 100), "client \(i) finished")
            XCTAssertEqual(c.exitCode, 0, "client \(i): curl exit \(c.exitCode) \(c.stderr)")
            XCTAssertEqual(c.stdout, "200", "client \(i) status")
            XCTAssertEqual(sha256Hex(file: "\(workDir!)/big-\(i)").map { "sha256:" + $0 }, blob.digest, "client \(i) bytes")
        }
        XCTAssertEqual(registry.count(method: "GET", pathContains: "/blobs/\(blob.digest)"), 1,
                       "eight concurrent cold GETs share one upstream fetch")
        XCTAssertTrue(waitUntil(10) { berth.isCached(blob.digest) }, "the blob is cached after the fill")
    }

    /// Regression: on the fill's own loop, `subscribe` calls back before it
    /// returns, and FillReader dropped that callback; a reader joining after the
    /// last byte (while the verified fill is fsynced and renamed) then never
    /// heard from the fill again and got a 504 after 20 s. One worker puts
    /// every reader on the fill's loop.
    func testReadersJoiningAFillWhileItCommitsAreAnswered() throws {
        let registry = try startRegistry()
        let blob = try builder.uploadRandomBlob(size: 64 << 20, to: registry, repository: "test/late")
        let berth = try startBerth(upstream: registry.url, workers: 1)
        let url = "\(berth.url)/v2/test/late/blobs/\(blob.digest)"

        let first = try Subprocess(["curl", "-s", "-o", "\(workDir!)/late-first", "-w", "%{http_code}", "--max-time", "60", url], in: workDir)
        XCTAssertTrue(first.waitForExit(seconds: 70))
        // At once, while the commit (fsync of 64 MiB, rename) is likely still running.
        let late = try (0..<6).map { i in
            try Subprocess(["curl", "-s", "-o", "\(workDir!)/late-\(i)", "-w", "%{http_code}", "--max-time", "12", url], in: workDir)
        }
        XCTAssertEqual(first.stdout, "200")
        XCTAssertEqual(sha256Hex(file: "\(workDir!)/late-first").map { "sha256:" + $0 }, blob.digest)
        for (i, c) in late.enumerated() {
            XCTAssertTrue(c.waitForExit(seconds: 20), "late client \(i) finished")
            XCTAssertEqual(c.exitCode, 0, "late client \(i): curl exit \(c.exitCode) (28 = stuck until the deadline)")
            XCTAssertEqual(c.stdout, "200", "late client \(i) status")
            XCTAssertEqual(sha256Hex(file: "\(workDir!)/late-\(i)").map { "sha256:" + $0 }, blob.digest, "late client \(i) bytes")
        }
        XCTAssertEqual(registry.count(method: "GET", pathContains: "/blobs/\(blob.digest)"), 1)
    }

    func testColdRangeRequestAnswers206() throws {
        let registry = try startRegistry()
        let blob = try builder.uploadRandomBlob(size: 4 << 20, to: registry, repository: "test/range")
        let bytes = try XCTUnwrap(readBytes(blob.path))
        let berth = try startBerth(upstream: registry.url)

        let offset = 1_234_567
        let r = try get(berth, "/v2/test/range/blobs/\(blob.digest)", headers: ["Range: bytes=\(offset)-"])
        XCTAssertEqual(r.status, 206, r.bodyText)
        XCTAssertEqual(r.headers["content-range"], "bytes \(offset)-\(bytes.count - 1)/\(bytes.count)")
        XCTAssertEqual(r.headers["content-length"], String(bytes.count - offset))
        XCTAssertEqual(r.body.count, bytes.count - offset)
        XCTAssertTrue(r.body == Array(bytes[offset...]), "range bytes differ")

        // The fill ran to the end: the whole blob is cached and right.
        XCTAssertTrue(waitUntil(10) { berth.isCached(blob.digest) })
        let whole = try get(berth, "/v2/test/range/blobs/\(blob.digest)")
        XCTAssertEqual(whole.status, 200)
        XCTAssertEqual("sha256:" + sha256Hex(whole.body), blob.digest)
        let warm = try get(berth, "/v2/test/range/blobs/\(blob.digest)", headers: ["Range: bytes=0-99"])
        XCTAssertEqual(warm.status, 206)
        XCTAssertEqual(warm.headers["content-range"], "bytes 0-99/\(bytes.count)")
        XCTAssertTrue(warm.body == Array(bytes[0..<100]))
        XCTAssertEqual(registry.count(method: "GET", pathContains: "/blobs/\(blob.digest)"), 1)
    }

    func testHeadOnUncachedBlobAnswersLengthAndDigest() throws {
        let registry = try startRegistry()
        let size = (2 << 20) + 17
        let blob = try builder.uploadRandomBlob(size: size, to: registry, repository: "test/head")
        let berth = try startBerth(upstream: registry.url)

        let r = try get(berth, "/v2/test/head/blobs/\(blob.digest)", method: "HEAD")
        XCTAssertEqual(r.status, 200, "a cold HEAD is never a false 404")
        XCTAssertEqual(r.headers["content-length"], String(size))
        XCTAssertEqual(r.headers["docker-content-digest"], blob.digest)
        XCTAssertEqual(registry.count(method: "GET", pathContains: "/blobs/\(blob.digest)"), 0, "a HEAD downloads nothing")

        let missing = "sha256:" + String(repeating: "0", count: 64)
        let m = try get(berth, "/v2/test/head/blobs/\(missing)", method: "HEAD")
        XCTAssertEqual(m.status, 404, "an unknown blob is a 404")
    }
}
