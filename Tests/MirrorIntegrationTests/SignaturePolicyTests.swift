import Foundation
import XCTest
import TestSupport

/// `signatures:` against Debian's docker-registry: images signed the way
/// cosign signs with a key (a simple-signing payload signed by the `openssl`
/// command, pushed as the `sha256-<hex>.sig` tag with cosign's annotation; no
/// cosign binary needed), pulled through Berth with skopeo.
final class SignaturePolicyTests: IntegrationTestCase {
    private func openssl(_ args: [String]) throws {
        let r = try Subprocess.run(["openssl"] + args, in: workDir, timeout: 60, check: false)
        XCTAssertEqual(r.status, 0, r.stderr)
    }

    /// A P-256 key pair: (private key path, public key path).
    private func keyPair(_ name: String) throws -> (String, String) {
        let base = "\(workDir!)/\(name)"
        try openssl(["ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", base + ".key"])
        try openssl(["pkey", "-in", base + ".key", "-pubout", "-out", base + ".pub"])
        return (base + ".key", base + ".pub")
    }

    /// Pushes a cosign signature of `digest` (or of `claims`, the digest the payload names) under `repository`.
    private func sign(_ digest: String, claims: String? = nil, in registry: Registry, repository: String, key: String) throws {
        let payload = Array(#"{"critical":{"identity":{"docker-reference":"\#(registry.hostPort)/\#(repository)"},"image":{"docker-manifest-digest":"\#(claims ?? digest)"},"type":"cosign container image signature"},"optional":null}"#.utf8)
        let file = "\(workDir!)/payload-\(UUID().uuidString.prefix(6))"
        try Data(payload).write(to: URL(fileURLWithPath: file))
        try openssl(["dgst", "-sha256", "-sign", key, "-out", file + ".sig", file])
        let signature = try Data(contentsOf: URL(fileURLWithPath: file + ".sig")).base64EncodedString()
        let payloadDigest = try builder.uploadBlob(bytes: payload, to: registry, repository: repository)
        let config = Array("{}".utf8)
        let configDigest = try builder.uploadBlob(bytes: config, to: registry, repository: repository)
        let manifest = jsonBytes([
            "schemaVersion": 2, "mediaType": ImageBuilder.ociManifest,
            "config": ["mediaType": "application/vnd.oci.image.config.v1+json", "size": config.count, "digest": configDigest],
            "layers": [["mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "size": payload.count, "digest": payloadDigest,
                        "annotations": ["dev.cosignproject.cosign/signature": signature]]],
        ] as [String: Any])
        let tag = "sha256-" + digest.dropFirst("sha256:".count) + ".sig"
        try builder.putManifest(manifest, mediaType: ImageBuilder.ociManifest, to: registry, repository: repository, reference: tag)
    }

    /// Attaches a cosign 3 signature of `digest` (a statement about `claims`, default `digest`) the way cosign
    /// does on a registry without the referrers API (Distribution 2.8): a Sigstore bundle (DSSE envelope, in-toto
    /// statement, its pre-authentication encoding signed by `key`) as an OCI 1.1 artifact whose subject is the
    /// image, listed in the index tagged `sha256-<hex>`.
    private func signWithBundle(_ image: PushedImage, claims: String? = nil, in registry: Registry, repository: String, key: String) throws {
        let claimed = (claims ?? image.digest).dropFirst("sha256:".count)
        let statement = Array(#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"\#(registry.hostPort)/\#(repository)","digest":{"sha256":"\#(claimed)"}}],"predicateType":"https://sigstore.dev/cosign/sign/v1","predicate":{}}"#.utf8)
        let type = "application/vnd.in-toto+json"
        let file = "\(workDir!)/pae-\(UUID().uuidString.prefix(6))"
        try Data(Array("DSSEv1 \(type.utf8.count) \(type) \(statement.count) ".utf8) + statement).write(to: URL(fileURLWithPath: file))
        try openssl(["dgst", "-sha256", "-sign", key, "-out", file + ".sig", file])
        let signature = try Data(contentsOf: URL(fileURLWithPath: file + ".sig")).base64EncodedString()
        let bundleType = "application/vnd.dev.sigstore.bundle.v0.3+json"
        let bundle = jsonBytes(["mediaType": bundleType, "verificationMaterial": ["publicKey": ["hint": "test"]],
                                "dsseEnvelope": ["payload": Data(statement).base64EncodedString(), "payloadType": type,
                                                 "signatures": [["sig": signature, "keyid": ""]]]] as [String: Any])
        let bundleDigest = try builder.uploadBlob(bytes: bundle, to: registry, repository: repository)
        let empty = Array("{}".utf8)
        let emptyDigest = try builder.uploadBlob(bytes: empty, to: registry, repository: repository)
        let artifact = jsonBytes([
            "schemaVersion": 2, "mediaType": ImageBuilder.ociManifest, "artifactType": bundleType,
            "config": ["mediaType": ImageBuilder.emptyConfig, "size": empty.count, "digest": emptyDigest],
            "layers": [["mediaType": bundleType, "size": bundle.count, "digest": bundleDigest]],
            "subject": ["mediaType": image.mediaType, "size": image.manifest.count, "digest": image.digest],
        ] as [String: Any])
        let artifactDigest = "sha256:" + sha256Hex(artifact)
        try builder.putManifest(artifact, mediaType: ImageBuilder.ociManifest, to: registry, repository: repository, reference: artifactDigest)
        let index = jsonBytes(["schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                               "manifests": [["mediaType": ImageBuilder.ociManifest, "digest": artifactDigest, "size": artifact.count,
                                              "artifactType": bundleType]]] as [String: Any])
        try builder.putManifest(index, mediaType: "application/vnd.oci.image.index.v1+json", to: registry, repository: repository,
                                reference: "sha256-" + image.digest.dropFirst("sha256:".count))
    }

    private func config(_ registry: Registry, key: String, mode: String, tagTTL: String = "5m") throws -> String {
        let path = "\(workDir!)/berth-\(mode).yaml"
        try """
            upstream:
              url: "\(registry.url)"
            cache:
              tag_ttl: \(tagTTL)
            signatures:
              - repositories: ["\(registry.hostPort)/team/**"]
                exempt: ["\(registry.hostPort)/team/free"]
                require: signed
                keys: [\(key)]
                mode: \(mode)
            """.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// A registry and two key pairs: (registry, trusted private key, trusted public key, the other private key).
    private func registryAndKeys() throws -> (Registry, String, String, String) {
        let (trustedKey, trustedPub) = try keyPair("trusted")
        return (try startRegistry(), trustedKey, trustedPub, try keyPair("other").0)
    }

    func testEnforceServesSignedImagesAndRefusesTheRestWithTheReason() throws {
        let (registry, trustedKey, trustedPub, otherKey) = try registryAndKeys()
        let signed = try builder.pushImage(to: registry, repository: "team/signed", tag: "v1", layerSizes: [100_000])
        let unsigned = try builder.pushImage(to: registry, repository: "team/unsigned", tag: "v1", layerSizes: [50_000])
        let foreign = try builder.pushImage(to: registry, repository: "team/foreign", tag: "v1", layerSizes: [50_000])
        let mismatch = try builder.pushImage(to: registry, repository: "team/mismatch", tag: "v1", layerSizes: [50_000])
        let free = try builder.pushImage(to: registry, repository: "team/free", tag: "v1", layerSizes: [20_000])
        try sign(signed.digest, in: registry, repository: "team/signed", key: trustedKey)
        try sign(foreign.digest, in: registry, repository: "team/foreign", key: otherKey)
        try sign(mismatch.digest, claims: unsigned.digest, in: registry, repository: "team/mismatch", key: trustedKey)

        let berth = try startBerth(upstream: "", arguments: ["--config", try config(registry, key: trustedPub, mode: "enforce")])
        assertLayout(try pull(berth, "team/signed:v1"), image: signed)
        assertLayout(try pull(berth, "team/signed@\(signed.digest)"), image: signed)
        assertLayout(try pull(berth, "team/free:v1"), image: free)
        for (repo, reason) in [("team/unsigned", "no signature"), ("team/foreign", "untrusted key"), ("team/mismatch", "digest mismatch")] {
            let r = try get(berth, "/v2/\(repo)/manifests/v1", headers: ["Accept: \(allManifestTypes)"])
            XCTAssertEqual(r.status, 403, "\(repo): \(r.bodyText)")
            XCTAssertTrue(r.bodyText.contains("DENIED") && r.bodyText.contains("signatures[0]") && r.bodyText.contains(reason), r.bodyText)
            XCTAssertThrowsError(try pull(berth, "\(repo):v1"), "skopeo is refused \(repo)")
        }
        // cosign's own artifacts stay readable through Berth (a client verifying through it).
        let sigTag = "sha256-" + signed.digest.dropFirst("sha256:".count) + ".sig"
        XCTAssertEqual(try get(berth, "/v2/team/signed/manifests/\(sigTag)", headers: ["Accept: \(allManifestTypes)"]).status, 200)
        // An index signed as cosign signs it: its platform manifests, asked by digest, pass too.
        let index = try builder.pushIndex(to: registry, repository: "team/multi", tag: "v1")
        try sign("sha256:" + sha256Hex(index.index), in: registry, repository: "team/multi", key: trustedKey)
        assertLayout(try pull(berth, "team/multi:v1", all: true), index: index)
        // A cached verdict: the refusal holds on a warm request and for the image by digest.
        XCTAssertEqual(try get(berth, "/v2/team/unsigned/manifests/\(unsigned.digest)", headers: ["Accept: \(allManifestTypes)"]).status, 403)
    }

    /// cosign 3's default: a Sigstore bundle attached as an OCI 1.1 referrer (here through the `sha256-<hex>`
    /// tag, as on any registry without the referrers API) verifies like the `.sig` tag, and fails for the same reasons.
    func testCosign3BundlesAttachedAsReferrersAreVerified() throws {
        let (registry, trustedKey, trustedPub, otherKey) = try registryAndKeys()
        let signed = try builder.pushImage(to: registry, repository: "team/bundled", tag: "v1", layerSizes: [60_000])
        let foreign = try builder.pushImage(to: registry, repository: "team/bforeign", tag: "v1", layerSizes: [30_000])
        let mismatch = try builder.pushImage(to: registry, repository: "team/bmismatch", tag: "v1", layerSizes: [30_000])
        try signWithBundle(signed, in: registry, repository: "team/bundled", key: trustedKey)
        try signWithBundle(foreign, in: registry, repository: "team/bforeign", key: otherKey)
        try signWithBundle(mismatch, claims: signed.digest, in: registry, repository: "team/bmismatch", key: trustedKey)

        let berth = try startBerth(upstream: "", arguments: ["--config", try config(registry, key: trustedPub, mode: "enforce")])
        assertLayout(try pull(berth, "team/bundled:v1"), image: signed)
        registry.settle()
        XCTAssertGreaterThanOrEqual(registry.count(method: "GET", pathContains: "/manifests/sha256-" + signed.digest.dropFirst("sha256:".count)), 1,
                                    "the referrers tag was read (Distribution 2.8 has no referrers API)")
        for (repo, reason) in [("team/bforeign", "untrusted key"), ("team/bmismatch", "digest mismatch")] {
            let r = try get(berth, "/v2/\(repo)/manifests/v1", headers: ["Accept: \(allManifestTypes)"])
            XCTAssertEqual(r.status, 403, "\(repo): \(r.bodyText)")
            XCTAssertTrue(r.bodyText.contains("DENIED") && r.bodyText.contains(reason), r.bodyText)
        }
        // Warm verified answers are remembered per loop; a reload that trusts another key forgets them.
        for _ in 0..<4 { XCTAssertEqual(try get(berth, "/v2/team/bundled/manifests/v1", headers: ["Accept: \(allManifestTypes)"]).status, 200) }
        let otherPub = "\(workDir!)/other.pub"
        try openssl(["pkey", "-in", "\(workDir!)/other.key", "-pubout", "-out", otherPub])
        _ = try config(registry, key: otherPub, mode: "enforce")  // rewrites the file berth was started with
        kill(try XCTUnwrap(berth.pid), SIGHUP)
        XCTAssertTrue(waitUntil(10) { berth.log.contains("SIGHUP: configuration reloaded") }, berth.log)
        for _ in 0..<4 {
            let r = try get(berth, "/v2/team/bundled/manifests/v1", headers: ["Accept: \(allManifestTypes)"])
            XCTAssertEqual(r.status, 403, "signed by a key no longer trusted: \(r.bodyText)")
        }
    }

    /// Issue 13's "Done when" for podman and containerd: both pull the signed image through Berth (as their
    /// registry, so no fallback to the origin can hide a refusal) and are refused the unsigned one, with the reason.
    func testPodmanAndContainerdPullSignedAndAreRefusedUnsigned() throws {
        for tool in ["podman", "containerd", "ctr"] where Subprocess.resolve(tool) == nil {
            throw XCTSkip("\(tool) is not installed (scripts/deps.sh TEST_PACKAGES)")
        }
        let registry = try startRegistry()
        let (trustedKey, trustedPub) = try keyPair("trusted")
        let signed = try builder.pushImage(to: registry, repository: "team/signed", tag: "v1", layerSizes: [100_000], tarLayers: true)
        let unsigned = try builder.pushImage(to: registry, repository: "team/unsigned", tag: "v1", layerSizes: [50_000], tarLayers: true)
        try sign(signed.digest, in: registry, repository: "team/signed", key: trustedKey)
        let berth = try startBerth(upstream: "", arguments: ["--config", try config(registry, key: trustedPub, mode: "enforce")])

        let registriesConf = "\(workDir!)/registries.conf"
        try "[[registry]]\nlocation = \"\(berth.hostPort)\"\ninsecure = true\n".write(toFile: registriesConf, atomically: true, encoding: .utf8)
        XCTAssertEqual(try podmanPull("\(berth.hostPort)/team/signed:v1", registriesConf: registriesConf), signed.digest)
        let (podman, env) = try podman(registriesConf: registriesConf)
        let refused = try Subprocess.run(podman + ["pull", "--signature-policy", "\(workDir!)/policy.json", "\(berth.hostPort)/team/unsigned:v1"],
                                         in: workDir, environmentOverrides: env, timeout: 120, check: false)
        XCTAssertNotEqual(refused.status, 0, refused.stdout)
        XCTAssertTrue(refused.stderr.contains("no signature") || refused.stderr.contains("denied"), refused.stderr)

        let ctr = try startContainerd()
        let fetched = try Subprocess.run(ctr + ["content", "fetch", "--plain-http", "\(berth.hostPort)/team/signed:v1"], in: workDir, timeout: 120, check: false)
        XCTAssertEqual(fetched.status, 0, fetched.stdout + fetched.stderr)
        let held = try Subprocess.run(ctr + ["content", "ls", "-q"], in: workDir, timeout: 30).stdout
        for d in [signed.digest] + signed.blobs { XCTAssertTrue(held.contains(d), "containerd holds \(d)") }
        let denied = try Subprocess.run(ctr + ["content", "fetch", "--plain-http", "\(berth.hostPort)/team/unsigned:v1"], in: workDir, timeout: 120, check: false)
        XCTAssertNotEqual(denied.status, 0, denied.stdout)
        XCTAssertFalse(try Subprocess.run(ctr + ["content", "ls", "-q"], in: workDir, timeout: 30).stdout.contains(unsigned.digest))
    }

    /// A tag pushed over upstream with an unsigned image keeps serving the last verified one (tag history).
    func testATagMovedToAnUnsignedImageKeepsItsLastVerifiedDigest() throws {
        let registry = try startRegistry()
        let (trustedKey, trustedPub) = try keyPair("trusted")
        let v1 = try builder.pushImage(to: registry, repository: "team/moving", tag: "prod", layerSizes: [60_000])
        try sign(v1.digest, in: registry, repository: "team/moving", key: trustedKey)
        let berth = try startBerth(upstream: "", arguments: ["--config", try config(registry, key: trustedPub, mode: "enforce", tagTTL: "0s")])
        assertLayout(try pull(berth, "team/moving:prod"), image: v1)
        let v2 = try builder.pushImage(to: registry, repository: "team/moving", tag: "prod", layerSizes: [60_000])
        assertLayout(try pull(berth, "team/moving:prod"), image: v1)
        XCTAssertTrue(berth.log.contains("team/moving:prod now names \(v2.digest)") && berth.log.contains("serving the last verified \(v1.digest)"),
                      berth.log)
        XCTAssertEqual(try get(berth, "/v2/team/moving/manifests/\(v2.digest)", headers: ["Accept: \(allManifestTypes)"]).status, 403,
                       "the unsigned image itself stays refused by digest")
    }

    /// Verdicts are journaled: after a restart with the upstream gone (offline), the signed image is
    /// served and the unsigned one refused on their recorded verdicts; `cache ls` shows them.
    func testVerdictsSurviveARestartAndServeOffline() throws {
        let registry = try startRegistry()
        let (trustedKey, trustedPub) = try keyPair("trusted")
        let signed = try builder.pushImage(to: registry, repository: "team/signed", tag: "v1", layerSizes: [40_000])
        let unsigned = try builder.pushImage(to: registry, repository: "team/unsigned", tag: "v1", layerSizes: [40_000])
        try sign(signed.digest, in: registry, repository: "team/signed", key: trustedKey)
        let config = try config(registry, key: trustedPub, mode: "enforce")
        let online = try startBerth(upstream: "", arguments: ["--config", config])
        assertLayout(try pull(online, "team/signed:v1"), image: signed)
        XCTAssertEqual(try get(online, "/v2/team/unsigned/manifests/v1", headers: ["Accept: \(allManifestTypes)"]).status, 403)
        let binary = try XCTUnwrap(BerthProcess.binaryPath)
        XCTAssertTrue(waitUntil(10) {
            let ls = (try? Subprocess.run([binary, "cache", "ls", "--cache-dir", online.cacheDir], in: self.workDir, timeout: 30).stdout) ?? ""
            return ls.contains("SIGNATURE") && ls.contains("verified") && ls.contains("unsigned")
        }, "cache ls shows the verdicts")
        online.stop()
        registry.stop()

        let offline = try startBerth(upstream: "", arguments: ["--config", config, "--cache-dir", online.cacheDir, "--offline"])
        assertLayout(try pull(offline, "team/signed:v1"), image: signed)
        let r = try get(offline, "/v2/team/unsigned/manifests/v1", headers: ["Accept: \(allManifestTypes)"])
        XCTAssertEqual(r.status, 403, r.bodyText)
        XCTAssertTrue(r.bodyText.contains("no signature"), r.bodyText)
        XCTAssertNotNil(unsigned)
    }

    func testWarnServesWhatDoesNotVerifyAndSaysSo() throws {
        let registry = try startRegistry()
        let (_, trustedPub) = try keyPair("trusted")
        let unsigned = try builder.pushImage(to: registry, repository: "team/unsigned", tag: "v1", layerSizes: [50_000])
        let berth = try startBerth(upstream: "", arguments: ["--config", try config(registry, key: trustedPub, mode: "warn")])
        assertLayout(try pull(berth, "team/unsigned:v1"), image: unsigned)
        XCTAssertTrue(berth.log.contains("serving team/unsigned@\(unsigned.digest) unverified"), berth.log)
    }

    func testABadKeyFileStopsTheStart() throws {
        let registry = try startRegistry()
        let bad = "\(workDir!)/bad.pub"
        try "not a key".write(toFile: bad, atomically: true, encoding: .utf8)
        let binary = try XCTUnwrap(BerthProcess.binaryPath)
        let r = try Subprocess.run([binary, "serve", "--config", try config(registry, key: bad, mode: "enforce"), "--cache-dir", "\(workDir!)/c",
                                    "--listen", "127.0.0.1:\(freeLoopbackPort())"], in: workDir, timeout: 30, check: false)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue((r.stdout + r.stderr).contains("signatures[0].keys"), r.stdout + r.stderr)
    }
}
