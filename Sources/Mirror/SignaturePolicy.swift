import Synchronization
import HTTP1
import OCI
import Signatures
import BlobStore

/// `signatures:`: repositories whose tags are served only when the image
/// carries a valid cosign signature by a trusted key. Rules are globs over
/// `UPSTREAM/REPO` (as `auth.rules`); the first rule that matches (and does
/// not exempt the repository) applies; none: no policy.
public struct SignaturePolicy: Sendable {
    public struct Rule: Sendable {
        /// How the log and errors name it (`signatures[0]`).
        public var name: String
        /// The rule and its keys, as verdicts are recorded (`signatures[0]/<key fingerprint>`):
        /// a verdict under other keys is not reused.
        public var id: String
        public var repositories: [String]
        public var exempt: [String]
        public var keys: [PublicKey]
        /// Refuse (403) what does not verify; false: serve it, logged (`mode: warn`).
        public var enforce: Bool
        public init(name: String, id: String? = nil, repositories: [String], exempt: [String] = [], keys: [PublicKey], enforce: Bool) {
            self.name = name
            self.id = id ?? name
            self.repositories = repositories
            self.exempt = exempt
            self.keys = keys
            self.enforce = enforce
        }
    }

    public var rules: [Rule]
    public init(_ rules: [Rule] = []) { self.rules = rules }

    /// The rule for `path` (`upstream/repository`, lowercased upstream), if any.
    func rule(for path: String) -> Rule? {
        rules.first { r in
            r.repositories.contains { PullRules.matches($0, path) } && !r.exempt.contains { PullRules.matches($0, path) }
        }
    }
}

/// Verdicts per rule (and its keys) and manifest digest, kept in the cache
/// index (journal `V`): they survive restarts and serve an offline mirror.
/// Only verdicts about signatures are kept (an upstream that could not be
/// asked is asked again).
struct VerdictCache {
    let index: CacheIndex

    func get(_ d: Digest, rule: String) -> Verdict? { index.verdict(d, policy: rule).flatMap(Verdict.init(code:)) }
    func put(_ d: Digest, rule: String, _ v: Verdict) { index.setVerdict(d, policy: rule, v.code) }
}

/// A tag where cosign keeps an image's signature, attestation or SBOM (`sha256-<hex>.sig`):
/// served without a policy check, or a client verifying through Berth could never read it.
func isCosignArtifactTag(_ tag: String) -> Bool {
    guard tag.hasPrefix("sha256-"), let dot = tag.lastIndex(of: ".") else { return false }
    return tag.distance(from: tag.startIndex, to: dot) == 7 + 64 && [".sig", ".att", ".sbom"].contains(String(tag[dot...]))
}

extension ManifestRequest {
    /// Runs `proceed` when no policy covers this repository, or the manifest
    /// verifies, or the policy only warns; else answers 403 `DENIED` naming the
    /// policy and the reason (503 when the signatures cannot be fetched). A
    /// verified index's children count as verified: cosign signs the index.
    func signatureGate(_ digest: Digest, children: [Digest] = [], _ proceed: @escaping () -> Void) {
        guard !settings.signaturePolicy.rules.isEmpty else { return proceed() }
        // Warm: served as verified on this loop before (the request's state is the loop's).
        if let count = mirror.knownVerified(w.loop, key, digest) {
            count?()
            return proceed()
        }
        guard let rule = settings.signaturePolicy.rule(for: ctx.config.name.lowercased() + "/" + repo) else { return proceed() }
        if case .tag(let t) = reference, isCosignArtifactTag(t) { return proceed() }
        if let v = mirror.verdicts.get(digest, rule: rule.id) { return decide(v, rule, digest, proceed) }
        if ctx.config.isOffline { return refuseUnverifiable(rule, digest, "no verdict recorded and the mirror is offline", proceed) }
        SignatureCheck(upstream: upstream, repo: repo, digest: digest, keys: rule.keys, headTimeout: ctx.config.manifestHeadTimeoutNanos, for: w)
            .run { [self] r in
            switch r {
            case .success(let v):
                mirror.verdicts.put(digest, rule: rule.id, v)
                if v.isVerified { for c in children { mirror.verdicts.put(c, rule: rule.id, v) } }
                mirror.log(v.isVerified ? .info : .warning, "signature of \(name)@\(digest): \(v) (\(rule.name))")
                decide(v, rule, digest, proceed)
            case .failure(let e):
                refuseUnverifiable(rule, digest, "signatures could not be fetched: \(e.message)", proceed)
            }
        }
    }

    private func decide(_ v: Verdict, _ rule: SignaturePolicy.Rule, _ digest: Digest, _ proceed: () -> Void) {
        let kind = String(v.code.prefix { $0 != ":" })
        if v.isVerified {
            let counter = settings.metrics?.signatureDecisionCounter(rule: rule.name, verdict: kind, action: "served")
            counter?()
            mirror.noteVerified(w.loop, key, digest, under: ctx.state, count: counter)
            return proceed()
        }
        let why = "signature policy \(rule.name) for \(ctx.config.name)/\(repo): \(v)"
        guard rule.enforce else {
            count(rule, kind, "warned")
            mirror.log(.warning, "serving \(name)@\(digest) unverified: \(why) (mode: warn)")
            return proceed()
        }
        if case .tag(let tag) = reference, let last = lastVerified(tag, rule, besides: digest) {
            count(rule, kind, "last_verified")
            mirror.log(.warning, "\(name):\(tag) now names \(digest), refused by \(why); serving the last verified \(last.digest)")
            return sendCached(last.digest, last.mediaType, cacheStatus: "hit; detail=last-verified")
        }
        count(rule, kind, "refused")
        Mirror.error(w, .denied, "\(name)@\(digest) refused by \(why)")
    }

    private func count(_ rule: SignaturePolicy.Rule, _ verdict: String, _ action: String) {
        settings.metrics?.signatureDecisionCounter(rule: rule.name, verdict: verdict, action: action)()
    }

    /// The newest digest `tag` named before that this rule verified and the cache still holds (tag history).
    private func lastVerified(_ tag: String, _ rule: SignaturePolicy.Rule, besides digest: Digest) -> (digest: Digest, mediaType: String)? {
        for e in index.history(key, tag).reversed() where e.digest != digest {
            guard mirror.verdicts.get(e.digest, rule: rule.id)?.isVerified == true, let type = index.mediaType(of: e.digest),
                  mirror.manifests.get(e.digest) != nil || mirror.store.contains(e.digest) else { continue }
            return (e.digest, type)
        }
        return nil
    }

    private func refuseUnverifiable(_ rule: SignaturePolicy.Rule, _ digest: Digest, _ why: String, _ proceed: () -> Void) {
        guard rule.enforce else {
            count(rule, "unavailable", "warned")
            mirror.log(.warning, "serving \(name)@\(digest) unverified: \(why) (\(rule.name), mode: warn)")
            return proceed()
        }
        count(rule, "unavailable", "refused")
        Mirror.error(w, .unavailable, "\(name)@\(digest) cannot be verified for signature policy \(rule.name): \(why)", status: 503)
    }
}

/// Fetches a digest's cosign signatures through the upstream (the `.sig`
/// tag's manifest, then each payload, every body checked against its digest)
/// and judges them. Loop thread only.
final class SignatureCheck {
    let upstream: Upstream
    let repo: String
    let digest: Digest
    let keys: [PublicKey]
    let headTimeout: UInt64
    /// The request waiting on the check (its access-log upstream wait).
    let w: ResponseWriter

    init(upstream: Upstream, repo: String, digest: Digest, keys: [PublicKey], headTimeout: UInt64, for w: ResponseWriter) {
        self.w = w
        self.upstream = upstream
        self.repo = repo
        self.digest = digest
        self.keys = keys
        self.headTimeout = headTimeout
    }

    func run(_ done: @escaping (Result<Verdict, UpstreamError>) -> Void) {
        var h = HTTPHeaders()
        h.add("Accept", "\(MediaType.ociManifest), \(MediaType.dockerManifest)")
        upstream.fetch(.get, "/v2/\(repo)/manifests/\(CosignSignature.tag(for: digest))", repository: repo, headers: h,
                       headTimeout: headTimeout, maxBytes: ManifestSummary.maxBytes, for: w) { [self] r in
            switch r {
            case .failure(let e): done(.failure(e))
            case .success(let (head, _)) where head.status == 404: bundles(besides: .unsigned, done)
            case .success(let (head, body)) where head.status == 200:
                let signatures: [CosignSignature]
                do { signatures = try CosignSignature.parse(body) } catch { return bundles(besides: .malformed("\(error)"), done) }
                payloads(signatures[...], []) { [self] r in
                    switch r {
                    case .failure(let e): done(.failure(e))
                    case .success(let v): v.isVerified ? done(.success(v)) : bundles(besides: v, done)
                    }
                }
            case .success(let (head, _)):
                done(.failure(UpstreamError(status: 502, code: .unavailable, message: "the signature tag answered \(head.status)")))
            }
        }
    }

    // MARK: cosign 3: Sigstore bundles attached as OCI 1.1 referrers

    /// The verdict from the image's Sigstore bundle referrers (the referrers
    /// API; without it, the `sha256-<hex>` tag's index), or `tagVerdict` (the
    /// `.sig` tag's) when no bundle verifies and that says more.
    private func bundles(besides tagVerdict: Verdict, _ done: @escaping (Result<Verdict, UpstreamError>) -> Void) {
        func judge(_ found: [SigstoreBundle], _ unreadable: String?) {
            var verdict = Verdict.of(digest, bundles: found, keys: keys)
            if verdict == .unsigned, let unreadable { verdict = .malformed(unreadable) }
            done(.success(verdict.isVerified || tagVerdict == .unsigned ? verdict : tagVerdict))
        }
        var h = HTTPHeaders()
        h.add("Accept", MediaType.ociIndex)
        let type = percentEncoded("application/vnd.dev.sigstore.bundle.v0.3+json")
        upstream.fetch(.get, "/v2/\(repo)/referrers/\(digest)?artifactType=\(type)", repository: repo, headers: h,
                       headTimeout: headTimeout, maxBytes: ManifestSummary.maxBytes, for: w) { [self] r in
            switch r {
            case .failure(let e): done(.failure(e))
            case .success(let (head, body)) where head.status == 200:
                artifacts(body, judge)
            case .success:
                // No referrers API (404, or what a registry answers for a route it lacks): the tag scheme.
                upstream.fetch(.get, "/v2/\(repo)/manifests/\(SigstoreBundle.referrersTag(for: digest))", repository: repo, headers: h,
                               headTimeout: headTimeout, maxBytes: ManifestSummary.maxBytes, for: w) { [self] r in
                    switch r {
                    case .failure(let e): done(.failure(e))
                    case .success(let (head, _)) where head.status == 404: judge([], nil)
                    case .success(let (head, body)) where head.status == 200: artifacts(body, judge)
                    case .success(let (head, _)):
                        done(.failure(UpstreamError(status: 502, code: .unavailable, message: "the referrers tag answered \(head.status)")))
                    }
                }
            }
        }
    }

    /// Each bundle artifact the index lists: its manifest, then its bundle layer, every body checked against its digest.
    private func artifacts(_ index: [UInt8], _ judge: @escaping ([SigstoreBundle], String?) -> Void) {
        let listed: [Digest]
        do { listed = try SigstoreBundle.artifacts(inIndex: index) } catch { return judge([], "\(error)") }
        var found: [SigstoreBundle] = []
        var unreadable: String?
        func next(_ rest: ArraySlice<Digest>) {
            guard let d = rest.first else { return judge(found, unreadable) }
            var h = HTTPHeaders()
            h.add("Accept", MediaType.ociManifest)
            upstream.fetch(.get, "/v2/\(repo)/manifests/\(d)", repository: repo, headers: h, headTimeout: headTimeout,
                           maxBytes: ManifestSummary.maxBytes, for: w) { [self] r in
                guard case .success(let (head, body)) = r, head.status == 200, SHA256Hasher.hex(body) == d.hex,
                      let layer = try? SigstoreBundle.layer(inManifest: body) else {
                    unreadable = unreadable ?? "bundle artifact \(d) could not be read"
                    return next(rest.dropFirst())
                }
                upstream.fetch(.get, "/v2/\(repo)/blobs/\(layer.digest)", repository: repo, headTimeout: headTimeout,
                               maxBytes: SigstoreBundle.maxBytes, for: w) { r in
                    if case .success(let (head, body)) = r, head.status == 200, SHA256Hasher.hex(body) == layer.digest.hex {
                        do { found.append(try SigstoreBundle.parse(body)) } catch { unreadable = unreadable ?? "\(error)" }
                    } else {
                        unreadable = unreadable ?? "bundle \(layer.digest) could not be read"
                    }
                    next(rest.dropFirst())
                }
            }
        }
        next(listed[...])
    }

    private func payloads(_ rest: ArraySlice<CosignSignature>, _ got: [(payload: [UInt8], signature: [UInt8])],
                          _ done: @escaping (Result<Verdict, UpstreamError>) -> Void) {
        guard let s = rest.first else { return done(.success(Verdict.of(digest, signatures: got, keys: keys))) }
        upstream.fetch(.get, "/v2/\(repo)/blobs/\(s.payload.digest)", repository: repo, headTimeout: headTimeout,
                       maxBytes: SimpleSigningPayload.maxBytes, for: w) { [self] r in
            switch r {
            case .failure(let e): done(.failure(e))
            case .success(let (head, body)):
                // A payload that is missing or not what its digest says counts as no signature.
                var next = got
                if head.status == 200, SHA256Hasher.hex(body) == s.payload.digest.hex { next.append((body, s.signature)) }
                payloads(rest.dropFirst(), next, done)
            }
        }
    }
}
