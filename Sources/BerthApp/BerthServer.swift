#if canImport(Glibc)
import Glibc
#endif
import Logging
import Reactor
import TLS
import HTTP1
import Mirror
import BlobStore
import OCI
import Synchronization
import Dispatch
import Signatures
import Telemetry

/// Wires configuration to the runtime: event loops, the blocking pool, the
/// HTTP(S) server and the router; handles SIGTERM/SIGINT (graceful stop) and
/// SIGHUP (configuration reload).
public final class BerthServer: @unchecked Sendable {  // set up once in `start`; afterwards only loop-thread and atomic state
    public let config: BerthConfig
    let logger: Logger
    let group: EventLoopGroup
    let pool: BlockingPool
    private(set) var http: HTTPServer!
    private var tls: ReloadableServerContext?
    private var signals: SignalSource?
    private var store: BlobStore?
    private var lock: CacheLock?
    private var admin: AdminServer?
    private var mirror: Mirror?
    private var accessLog: AccessLog?
    /// Prometheus metrics and their own listener (`metrics.listen`); nil when off.
    private var metrics: BerthMetrics?
    private var metricsServer: HTTPServer?
    /// Posted once when `stop` has drained the connections.
    private let finished = OneShot()
    /// How long in-flight responses may run after SIGTERM.
    public var shutdownGraceNanos: UInt64 = 15_000_000_000
    /// Builds the configuration anew for SIGHUP, as at start (the file,
    /// `BERTH_*`, the flags given); nil: SIGHUP re-reads the certificate only.
    public var configurationLoader: (() throws -> BerthConfig)?
    private let isReloading = Atomic<Bool>(false)
    /// `server.drain_delay` in force, in nanoseconds (a reload may change it).
    private let drainDelayNanos: Atomic<UInt64>

    public init(config: BerthConfig, logger: Logger) throws {
        self.config = config
        self.logger = logger
        drainDelayNanos = Atomic(UInt64(config.server.drainDelay * 1e9))
        group = try EventLoopGroup(count: config.workers == 0 ? System.coreCount : config.workers)
        pool = BlockingPool(threads: 4)
    }

    /// Binds the listeners and starts the loops. Throws when an address cannot be bound
    /// or the certificate cannot be loaded.
    public func start(handleSignals: Bool = true) throws {
        // Connections cost descriptors: take what the hard limit allows before the caps are worked out.
        System.raiseOpenFileLimit()
        var sc = HTTPServer.Configuration()
        sc.plain = [SocketAddress(config.listen)!]
        sc.headTimeoutNanos = UInt64(config.server.headerTimeout * 1e9)
        sc.idleTimeoutNanos = UInt64(config.server.keepaliveTimeout * 1e9)
        sc.maxConnections = config.server.maxConnections == 0 ? nil : config.server.maxConnections
        sc.maxConnectionsPerClient = config.server.maxConnectionsPerClient
        if !config.tls.listen.isEmpty {
            tls = try ReloadableServerContext(certificateChainPath: config.tls.certificate, privateKeyPath: config.tls.key)
            sc.secure = [SocketAddress(config.tls.listen)!]
            sc.tls = tls
        }
        sc.errorBody = { status, reason in ("application/json", ociErrorBody(ociCode(forStatus: status), reason)) }
        let log = logger
        let logSink: (HTTPServer.LogLevel, String) -> Void = { level, message in
            switch level {
            case .debug: log.debug("\(message)")
            case .info: log.info("\(message)")
            case .warning: log.warning("\(message)")
            case .error: log.error("\(message)")
            }
        }
        try lockCache()
        if config.log.access != "off" {
            do {
                accessLog = try AccessLog.open(config.log.access, pool: pool) { [logger] in logger.warning("\($0)") }
            } catch {
                throw ConfigError(key: "log.access", "cannot open \(config.log.access): \(error)")
            }
            sc.accessLog = accessLog
        }
        if !config.metrics.listen.isEmpty {
            let metrics = BerthMetrics(shards: group.loops.count)
            self.metrics = metrics
            sc.observer = { r, loop in
                metrics.requestEnded(shard: loop, target: r.target, method: r.method, status: r.status,
                                     cacheStatus: r.notes.cacheStatus, bytes: r.bodyBytes, durationNanos: r.durationNanos)
            }
        }
        let mirror = try makeMirror(log: logSink)
        self.mirror = mirror
        http = HTTPServer(configuration: sc, group: group, pool: pool, logger: logSink, handler: mirror.handle)
        try http.start()
        if let metrics { try startMetrics(metrics, log: logSink) }
        let pinner = http.boundAddresses().first.map { Pinner(store: store!, pool: pool, address: $0) }
        admin = try AdminServer(store: store!, pinner: pinner, group: group, pool: pool, key: config.indexKey) { [logger] in logger.info("\($0)") }
        if handleSignals {
            let loop = group.loops[0]
            signals = try SignalSource(loop: loop) { [weak self] signo in self?.signal(signo) }
        }
        group.start()
        scheduleSnapshots()
        if let pinner {
            pinConfigured(pinner)
            preloadConfigured(pinner)
        }
        logger.info("berth listening", metadata: [
            "http": "\(http.boundAddresses().map(\.description).joined(separator: ","))",
            "https": "\(config.tls.listen)",
            "metrics": "\(metricsServer?.boundAddresses().map(\.description).joined(separator: ",") ?? "off")",
            "upstreams": "\(config.effectiveUpstreams.map { "\($0.resolvedName)=\($0.allURLs.joined(separator: "|"))" }.joined(separator: ","))",
            "cache": "\(config.cache.dir)",
            "workers": "\(group.loops.count)",
            "max_connections": "\(http.limiter.maxConnections)",
            "max_connections_per_client": "\(http.limiter.maxPerClient)",
        ])
        if config.server.maxConnections > http.limiter.maxConnections {
            logger.warning("server.max_connections lowered to what the open-file limit allows", metadata: [
                "configured": "\(config.server.maxConnections)", "in_force": "\(http.limiter.maxConnections)",
                "nofile": "\(System.openFileLimit)",
            ])
        }
    }

    /// The proxy core's settings from `config`, with every file it names read
    /// (passwords, CA bundles, client certificates, htpasswd, signature keys):
    /// at start, and again for each reload.
    private func makeMirrorConfiguration(_ config: BerthConfig) throws -> MirrorConfiguration {
        let list = config.effectiveUpstreams
        let section = { [config] (i: Int) in config.upstreams.isEmpty ? "upstream" : "upstreams[\(i)]" }
        var upstreams: [UpstreamConfiguration] = []
        for (i, u) in list.enumerated() {
            var up = UpstreamConfiguration(url: HTTPURL(u.allURLs[0])!, name: u.resolvedName)
            up.urls = u.allURLs.map { HTTPURL($0)! }
            up.prefix = u.resolvedPrefix
            up.hosts = u.hosts
            up.isDefault = u.isDefault || list.count == 1
            up.username = u.username.isEmpty ? nil : u.username
            var password = u.password
            if !u.passwordFile.isEmpty {
                guard let text = readFile(u.passwordFile) else { throw ConfigError(key: "\(section(i)).password_file", "cannot read \(u.passwordFile)") }
                password = String(text.prefix { $0 != "\n" && $0 != "\r" })
            }
            up.password = password.isEmpty ? nil : password
            up.realmAllowList = u.realmAllow
            if u.dockerhub != "auto" { up.dockerHubNames = u.dockerhub == "true" }
            up.connectTimeoutNanos = UInt64(u.connectTimeout * 1e9)
            up.manifestHeadTimeoutNanos = UInt64(u.manifestTimeout * 1e9)
            up.blobHeadTimeoutNanos = UInt64(u.blobTimeout * 1e9)
            up.idleTimeoutNanos = UInt64(u.idleTimeout * 1e9)
            up.negativeTTLNanos = UInt64(u.negativeTTL * 1e9)
            up.tagTTLNanos = u.tagTTL.map { UInt64($0 * 1e9) }
            up.breakerWindowNanos = UInt64(u.breakerWindow * 1e9)
            up.maxBackoffNanos = UInt64(u.backoffMax * 1e9)
            up.maxRequests = u.maxRequests
            up.proxy = u.proxy.isEmpty ? nil : HTTPURL(u.proxy)
            up.isOffline = u.offline || config.offline
            up.prefetch = u.prefetch
            up.tls = try TLSContext.makeClient(extraCAPath: u.ca.isEmpty ? nil : u.ca,
                                               certificatePath: u.certificate.isEmpty ? nil : u.certificate,
                                               privateKeyPath: u.key.isEmpty ? nil : u.key)
            // A reload keeps this upstream's tokens and connections while none of this changes
            // (whether it is the default is compared apart: with one upstream it always is).
            var section = u
            section.isDefault = false
            let files = [u.ca, u.certificate, u.key].map { $0.isEmpty ? "" : readFile($0) ?? "" }
            up.fingerprint = SHA256Hasher.hex(Array("\(section)\u{0}\(password)\u{0}\(config.offline)\u{0}\(files)".utf8))
            upstreams.append(up)
        }
        var mc = MirrorConfiguration(upstreams: upstreams)
        if !config.auth.htpasswd.isEmpty {
            guard let text = readFile(config.auth.htpasswd) else { throw ConfigError(key: "auth.htpasswd", "cannot read \(config.auth.htpasswd)") }
            do {
                mc.clientAuth = ClientAuth(users: try ClientAuth.parseHtpasswd(text), allowsAnonymous: config.auth.anonymous)
            } catch {
                throw ConfigError(key: "auth.htpasswd", "\(config.auth.htpasswd): \(error)")
            }
        }
        mc.pullRules = PullRules(config.auth.rules)
        mc.signaturePolicy = try SignaturePolicy(config.signatures.enumerated().map { i, r in
            let keys = try r.keys.map { path -> PublicKey in
                guard let pem = readFile(path) else { throw ConfigError(key: "signatures[\(i)].keys", "cannot read \(path)") }
                do { return try PublicKey(pem: Array(pem.utf8)) } catch { throw ConfigError(key: "signatures[\(i)].keys", "\(path): \(error)") }
            }
            // Verdicts are recorded per rule and keys: new keys verify again.
            let pems = r.keys.compactMap(readFile).joined(separator: "\n")
            return SignaturePolicy.Rule(name: "signatures[\(i)]", id: "signatures[\(i)]/" + SHA256Hasher.hex(Array(pems.utf8)).prefix(16),
                                        repositories: r.repositories, exempt: r.exempt, keys: keys, enforce: r.mode == "enforce")
        })
        mc.tagTTLNanos = UInt64(config.cache.tagTTL * 1e9)
        mc.metrics = metrics
        mc.peers = resolvePeers(config)
        return mc
    }

    /// `peers:` as members of the ring: each entry in order, a name with several
    /// addresses as each of them (sorted), one that does not resolve as a member
    /// never asked (so the others keep their places). A member whose port is one
    /// this node listens on, at one of its own addresses, is this node.
    private func resolvePeers(_ config: BerthConfig) -> [PeerAddress] {
        guard !config.peers.isEmpty else { return [] }
        let listens = [config.listen, config.tls.listen].compactMap { SocketAddress($0) }
        let local = Set(Resolver.localAddresses().map(\.ip))
        let entries = config.peers.compactMap { e in BerthConfig.peerHostPort(e).map { (entry: e, host: $0.host, port: $0.port) } }  // validated
        let answers = Self.lookUp(entries.map { ($0.host, $0.port) }, within: 3)
        // This node: a member on one of its listening ports, at the listener's own address, or at
        // any address of this host (loopback included) when the listener takes every address.
        func isSelf(_ a: SocketAddress) -> Bool {
            listens.contains { l in
                l.port == a.port && (l.ip == a.ip || ((l.ip == "0.0.0.0" || l.ip == "::") && (local.contains(a.ip) || a.ip.hasPrefix("127."))))
            }
        }
        var members: [PeerAddress] = []
        for (e, answer) in zip(entries, answers) {
            let all: [SocketAddress]
            switch answer {
            case .success(let addresses): all = addresses
            case .failure(let error):
                logger.warning("peer \(e.entry) does not resolve: it keeps its place on the ring and is not asked (\(error))")
                members.append(PeerAddress(name: e.entry, address: nil, isSelf: false, host: e.host, port: e.port))
                continue
            }
            var found = all.filter { $0.family == AF_INET }
            if found.isEmpty { found = all }
            var seen = Set<String>()
            found = found.filter { seen.insert($0.description).inserted }.sorted { $0.description < $1.description }
            for a in found {
                members.append(PeerAddress(name: found.count > 1 ? "\(e.entry)=\(a)" : e.entry, address: a, isSelf: isSelf(a)))
            }
        }
        logger.info("peers: \(members.map { $0.isSelf ? "\($0) (this node)" : "\($0)" }.joined(separator: ", "))")
        if !members.contains(where: \.isSelf) {
            logger.warning("peers: this node is not in the list (no member listens on \(listens.map(\.description).joined(separator: ", ")) here); blob misses still ask the owner first")
        }
        return members
    }

    /// Every name looked up at once, the whole waiting at most `seconds` (a resolver that does not
    /// answer must not hold up a start or a reload): a lookup still running then counts as failed.
    static func lookUp(_ names: [(host: String, port: UInt16)], within seconds: Double) -> [Result<[SocketAddress], Error>] {
        struct Late: Error, CustomStringConvertible { var description: String { "no answer from the resolver in time" } }
        let results = Mutex<[Result<[SocketAddress], Error>]>(names.map { _ in .failure(Late()) })
        let group = DispatchGroup()
        for (i, n) in names.enumerated() {
            DispatchQueue.global().async(group: group) {
                let r = Result { try Resolver.lookup(host: n.host, port: n.port) }
                results.withLock { $0[i] = r }
            }
        }
        _ = group.wait(timeout: .now() + seconds)
        return results.withLock { $0 }
    }

    private func makeMirror(log: @escaping (HTTPServer.LogLevel, String) -> Void) throws -> Mirror {
        let mc = try makeMirrorConfiguration(config)
        let budget = config.makeBudget()
        let store = try BlobStore(root: config.cache.dir, pool: pool, budget: budget, keepHistory: config.cache.keepHistory)
        store.log = { [logger] in logger.warning("\($0)") }
        store.index.log = store.log
        self.store = store
        let usage = store.index.usage
        logger.info("cache loaded", metadata: [
            "blobs": "\(usage.count)", "bytes": "\(usage.blobs)", "budget": "\(budget.maxBytes)",
            "journal_lines": "\(store.index.loadedLines)", "clean": "\(store.index.wasCleanlyClosed)",
        ])
        if store.index.droppedTailBytes > 0 {
            logger.warning("cache index: cut a torn last record (\(store.index.droppedTailBytes) bytes) off index.log, left by a crash mid-append")
        }
        if !store.index.wasCleanlyClosed {
            // After a crash the journal may miss blobs published just before it: scan in the background.
            pool.submit { [logger] in
                let t0 = Clock.monotonicNanos()
                let r = store.reconcile()
                logger.info("cache reconciled with the files on disk", metadata: [
                    "added": "\(r.added)", "removed": "\(r.removed)", "ms": "\((Clock.monotonicNanos() - t0) / 1_000_000)",
                ])
            }
        }
        store.checkPinnedBudget()
        store.startEvictionIfOverHigh()
        return Mirror(config: mc, store: store, group: group, pool: pool, log: log)
    }

    /// Serves `/metrics` on `metrics.listen` (the text is rendered on the
    /// pool: it reads /proc), with the connection families of the main listeners.
    private func startMetrics(_ metrics: BerthMetrics, log: @escaping (HTTPServer.LogLevel, String) -> Void) throws {
        let limiter = http.limiter
        metrics.addCollector { out in
            let t = limiter.totals
            out.family("berth_connections_open", .gauge, "Client connections open.", Double(limiter.openCount))
            out.family("berth_connections_max", .gauge, "The connection cap in force (server.max_connections against the open-file limit).",
                       Double(limiter.maxConnections))
            out.family("berth_connections_accepted_total", .counter, "Client connections accepted under the caps.", Double(t.admitted))
            out.family("berth_connections_refused_total", .counter,
                       "Client connections closed at accept, by cap: server (max_connections) or client (max_connections_per_client).",
                       [([("limit", "server")], Double(t.serverFull)), ([("limit", "client")], Double(t.clientFull))])
        }
        var mc = HTTPServer.Configuration()
        mc.plain = [SocketAddress(config.metrics.listen)!]  // validated with the configuration
        mc.maxConnections = 256
        let pool = self.pool
        let server = HTTPServer(configuration: mc, group: group, pool: pool, logger: log) { w in
            let path = w.request.target.prefix { $0 != "?" }
            guard path == "/metrics" else {
                var head = ResponseHead(status: 404)
                head.headers.add("Content-Type", "text/plain")
                return w.respond(head, body: Array("only /metrics is served here\n".utf8))
            }
            pool.submit {
                let body = metrics.render()
                w.loop.execute {
                    var head = ResponseHead(status: 200)
                    head.headers.add("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                    w.respond(head, body: body)
                }
            }
        }
        try server.start()
        metricsServer = server
    }

    /// Takes `<cache dir>/berth.lock` for the life of the process: a second
    /// server on the same directory refuses to start, and `berth cache`
    /// commands know to use the admin socket.
    private func lockCache() throws {
        let dir = config.cache.dir
        try CacheLock.makeDirectory(dir)
        switch try CacheLock.attempt(dir) {
        case .acquired(let l):
            lock = l
        case .held(let pid):
            throw StartError(description: "another berth serve\(pid.map { " (pid \($0))" } ?? "") is using the cache directory \(dir) "
                             + "(it holds \(CacheLock.path(in: dir))); stop it first or use another --cache-dir")
        }
    }

    /// Warms and pins `cache.pinned` in the background: startup never waits
    /// on the upstream; failures are logged (and retried at the next start).
    private func pinConfigured(_ pinner: Pinner) {
        for text in config.cache.pinned {
            guard let image = ImageReference(text) else { continue }  // validated with the configuration
            if let have = store?.index.pinnedImage(image.description), case .digest = image.reference {
                logger.info("pinned image \(image) already recorded (\(have.covered.count) digests)")
                continue
            }
            pinner.pin(image, on: group.next()) { [logger] r in
                switch r {
                case .success(let w):
                    logger.info("pinned \(image)", metadata: ["manifest": "\(w.manifest)", "digests": "\(w.covered.count)", "blob_bytes": "\(w.blobBytes)"])
                case .failure(let e):
                    logger.error("cannot pin \(image) (cache.pinned): \(e)")
                }
            }
        }
    }

    /// Warms `preload.images` in the background, two at a time, as `berth preload`
    /// does: startup never waits; each result is logged, then a summary.
    private func preloadConfigured(_ pinner: Pinner) {
        let images = config.preload.images.compactMap(ImageReference.init)  // validated with the configuration
        guard !images.isEmpty else { return }
        let platforms = config.preload.platforms.compactMap(Platform.init)
        final class Progress { var next = 0, loaded = 0, failed: [String] = [] }  // on `loop` only
        let progress = Progress(), loop = group.next(), logger = logger
        func lane() {
            guard progress.next < images.count else { return }
            let image = images[progress.next]
            progress.next += 1
            pinner.warm(image, pin: false, platforms: platforms, on: loop) { r in
                switch r {
                case .success(let w):
                    progress.loaded += 1
                    logger.info("preloaded \(image)", metadata: ["manifest": "\(w.manifest)", "digests": "\(w.covered.count)", "blob_bytes": "\(w.blobBytes)"])
                case .failure(let e):
                    progress.failed.append(image.description)
                    logger.error("cannot preload \(image) (preload.images): \(e)")
                }
                if progress.loaded + progress.failed.count == images.count {
                    let failed = progress.failed.isEmpty ? "" : "; failed: " + progress.failed.joined(separator: ", ")
                    logger.info("preload: \(progress.loaded) of \(images.count) images loaded\(failed)")
                }
                lane()
            }
        }
        loop.execute {
            lane()
            lane()
        }
    }

    /// Every minute, when the index changed, rewrite it compactly with the
    /// current recency (touches are not journaled one by one).
    private func scheduleSnapshots() {
        group.loops[0].schedule(afterNanos: 60_000_000_000) { [weak self] in
            guard let self, let store = self.store else { return }
            if store.index.needsSnapshot {
                self.pool.submit { [logger] in
                    do { try store.index.snapshot() } catch { logger.error("cannot write the cache index: \(error)") }
                }
            }
            self.scheduleSnapshots()
        }
    }

    /// The addresses bound, plain first (ports resolved).
    public var boundAddresses: [SocketAddress] { http.boundAddresses() }

    private func signal(_ signo: Int32) {
        switch signo {
        case SIGHUP:
            // Files are read and TLS contexts built: on the pool.
            pool.submit { [self] in
                guard !isReloading.exchange(true, ordering: .acquiring) else {
                    return logger.warning("SIGHUP: a reload is under way; this signal is ignored")
                }
                defer { isReloading.store(false, ordering: .releasing) }
                reload()
            }
        default:
            let delay = http.connectionCount > 0 ? Double(drainDelayNanos.load(ordering: .relaxed)) / 1e9 : 0
            logger.info("signal \(signo): stopping; /readyz answers 503, listeners close in \(delay) s, then in-flight responses get \(shutdownGraceNanos / 1_000_000_000) s")
            stop()
        }
    }

    /// Announces the drain (`/readyz` 503) for `server.drain_delay` while the
    /// listeners still accept (not at all when no connection is open), then
    /// stops accepting, lets responses finish up to the grace period, and stops the loops.
    /// A second call (a second signal) ends the announcement at once.
    public func stop() {
        guard stopPhase.compareExchange(expected: .running, desired: .announcing, ordering: .relaxed).exchanged else {
            if stopPhase.compareExchange(expected: .announcing, desired: .closing, ordering: .relaxed).exchanged {
                group.loops[0].execute { self.closeListeners() }
            }
            return
        }
        mirror?.beginDraining()
        let until = Clock.monotonicNanos() + drainDelayNanos.load(ordering: .relaxed)
        let announcing = http.connectionCount > 0
        func announce() {
            if announcing && Clock.monotonicNanos() < until && stopPhase.load(ordering: .relaxed) == .announcing {
                group.loops[0].schedule(afterNanos: 50_000_000, announce)
                return
            }
            if stopPhase.compareExchange(expected: .announcing, desired: .closing, ordering: .relaxed).exchanged { closeListeners() }
        }
        group.loops[0].execute(announce)
    }

    private enum StopPhase: UInt8, AtomicRepresentable { case running, announcing, closing }
    private let stopPhase = Atomic<StopPhase>(.running)

    private func closeListeners() {
        admin?.stop()
        http.beginShutdown()
        metricsServer?.beginShutdown()
        let deadline = Clock.monotonicNanos() + shutdownGraceNanos
        func check() {
            if http.connectionCount == 0 || Clock.monotonicNanos() >= deadline {
                if http.connectionCount > 0 { logger.warning("closing \(http.connectionCount) connections still busy") }
                finished.signal()
                return
            }
            group.loops[0].schedule(afterNanos: 50_000_000, check)
        }
        group.loops[0].execute(check)
    }

    /// Reloads the configuration (upstreams, credentials, CA bundles, client
    /// auth and rules, signature policy, peers, TTLs, upstream and server limits,
    /// the log level, the TLS certificate) without dropping connections or fills. Everything is built
    /// before anything is swapped: a configuration that does not load, or names
    /// a file that cannot be read, is refused whole and the running one stays.
    /// Keys that need a restart keep their running values, with a warning. Pool thread.
    private func reload() {
        guard let loader = configurationLoader, let mirror else {
            guard let tls else { return logger.info("SIGHUP: no TLS configured, nothing to reload") }
            do {
                try tls.reload()
                logger.info("SIGHUP: TLS certificate reloaded")
            } catch {
                logger.error("SIGHUP: TLS reload failed, keeping the old certificate: \(error)")
            }
            return
        }
        do {
            let new = try loader()
            // HTTPS switched off in the file: a restart-only change (tls.listen), the running certificate stays.
            let certificate = try tls.flatMap { _ in
                new.tls.listen.isEmpty ? nil : try TLSContext.makeServer(certificateChainPath: new.tls.certificate, privateKeyPath: new.tls.key)
            }
            let mc = try makeMirrorConfiguration(new)
            if let tls, let certificate {
                tls.replace(with: certificate, certificateChainPath: new.tls.certificate, privateKeyPath: new.tls.key)
            }
            let cap = http.update(headTimeoutNanos: UInt64(new.server.headerTimeout * 1e9), idleTimeoutNanos: UInt64(new.server.keepaliveTimeout * 1e9),
                                  maxConnections: new.server.maxConnections == 0 ? nil : new.server.maxConnections,
                                  maxConnectionsPerClient: new.server.maxConnectionsPerClient)
            drainDelayNanos.store(UInt64(new.server.drainDelay * 1e9), ordering: .relaxed)
            if logger.logLevel.rawValue != new.log.level {
                setLogLevel(new.log.level)
                logger.notice("SIGHUP: log level \(new.log.level)")
            }
            if new.server != config.server {
                logger.info("SIGHUP: server limits in force", metadata: [
                    "header_timeout": "\(new.server.headerTimeout)", "keepalive_timeout": "\(new.server.keepaliveTimeout)",
                    "max_connections": "\(cap)", "max_connections_per_client": "\(new.server.maxConnectionsPerClient)",
                    "drain_delay": "\(new.server.drainDelay)",
                ])
            }
            // Logged once every loop serves with it: a request sent after the line sees the new configuration.
            let (logger, pending, tlsNote) = (logger, config.restartOnlyChanges(to: new), tls == nil ? "off" : certificate == nil ? "running certificate kept" : "certificate re-read")
            mirror.reload(mc) { summary in
                logger.info("SIGHUP: configuration reloaded", metadata: ["upstreams": "\(summary)", "tls": "\(tlsNote)"])
                if !pending.isEmpty {
                    logger.warning("SIGHUP: \(pending.joined(separator: ", ")) changed; these take effect at the next start (the running values stay)")
                }
            }
        } catch {
            logger.error("SIGHUP: new configuration refused, the running one stays: \(error)")
        }
    }

    /// Blocks the calling thread until `stop` has finished, then stops the loops.
    public func waitUntilStopped() {
        finished.wait()
        if accessLog != nil {
            let flushed = OneShot()
            http.flushAccessLog { flushed.signal() }
            flushed.wait()
        }
        group.shutdown()
        pool.shutdown()
        accessLog?.close()
        do { try store?.index.snapshot(clean: true) } catch { logger.error("cannot write the cache index: \(error)") }
    }
}

/// A flag one thread raises and another sleeps on (no polling).
final class OneShot: @unchecked Sendable {  // `raised` guarded by `mutex`
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()
    private var raised = false

    init() {
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&cond, nil)
    }

    func signal() {
        pthread_mutex_lock(&mutex)
        raised = true
        pthread_cond_broadcast(&cond)
        pthread_mutex_unlock(&mutex)
    }

    func wait() {
        pthread_mutex_lock(&mutex)
        while !raised { pthread_cond_wait(&cond, &mutex) }
        pthread_mutex_unlock(&mutex)
    }
}

/// Why `berth serve` cannot start (besides configuration errors).
public struct StartError: Error, CustomStringConvertible {
    public let description: String
}
