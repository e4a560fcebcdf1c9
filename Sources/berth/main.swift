import ArgumentParser
import Foundation
import BerthApp
import Reactor
#if canImport(Glibc)
import Glibc
#endif

struct Berth: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "berth",
        abstract: "A pull-through caching container-registry mirror.",
        subcommands: [Serve.self, Cache.self, ClientConfigCommand.self, Preload.self, Import.self, Export.self, BenchCommand.self],
        defaultSubcommand: Serve.self
    )
}

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the registry API. Without --config, runs on the embedded defaults (see conf/berth.yaml)."
    )

    @Option(name: .long, help: "Configuration file (YAML).")
    var config: String?
    @Option(name: .long, help: "Plain HTTP address (listen), e.g. :5000 or 127.0.0.1:5000.")
    var listen: String?
    @Option(name: .customLong("tls-listen"), help: "HTTPS address (tls.listen), e.g. :5443.")
    var tlsListen: String?
    @Option(name: .customLong("tls-certificate"), help: "PEM certificate chain (tls.certificate).")
    var tlsCertificate: String?
    @Option(name: .customLong("tls-key"), help: "PEM private key (tls.key).")
    var tlsKey: String?
    @Option(name: .customLong("header-timeout"), help: "A request head must be complete this long after it started, e.g. 20s (server.header_timeout).")
    var headerTimeout: String?
    @Option(name: .customLong("keepalive-timeout"), help: "Close kept-alive connections idle this long, e.g. 60s (server.keepalive_timeout).")
    var keepaliveTimeout: String?
    @Option(name: .customLong("max-connections"), help: "Connections open at once: auto (open-file limit - 1024) or a number (server.max_connections).")
    var maxConnections: String?
    @Option(name: .customLong("max-connections-per-client"), help: "Connections open at once per IPv4 address or IPv6 /64; 0 = no cap (server.max_connections_per_client).")
    var maxConnectionsPerClient: Int?
    @Option(name: .long, help: "Event-loop threads (workers); 0 = one per core.")
    var workers: Int?
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error, critical (log.level).")
    var logLevel: String?
    @Option(name: .customLong("log-access"), help: "Access log, one JSON line per request: off, stdout or a file path (log.access).")
    var logAccess: String?
    @Option(name: .customLong("metrics-listen"), help: "Serve Prometheus /metrics on this address, its own listener, e.g. 127.0.0.1:9090 (metrics.listen; off by default).")
    var metricsListen: String?
    @Option(name: .customLong("drain-delay"), help: "After SIGTERM, /readyz answers 503 this long before the listeners close, e.g. 2s; skipped with no connection open (server.drain_delay).")
    var drainDelay: String?
    @Option(name: .long, help: "Upstream registry URL (upstream.url), e.g. https://ghcr.io.")
    var upstream: String?
    @Option(name: .customLong("upstream-user"), help: "Upstream username (upstream.username); the password comes from BERTH_UPSTREAM_PASSWORD or --upstream-password-file.")
    var upstreamUser: String?
    @Option(name: .customLong("upstream-password-file"), help: "File holding the upstream password (upstream.password_file).")
    var upstreamPasswordFile: String?
    @Option(name: .customLong("upstream-ca"), help: "Extra PEM CA bundle for the upstream (upstream.ca).")
    var upstreamCA: String?
    @Option(name: .customLong("upstream-certificate"), help: "Client certificate for the upstream (upstream.certificate).")
    var upstreamCertificate: String?
    @Option(name: .customLong("upstream-key"), help: "Client key for the upstream (upstream.key).")
    var upstreamKey: String?
    @Option(name: .customLong("realm-allow"), help: "Extra trusted token-realm host (upstream.realm_allow); repeatable.")
    var realmAllow: [String] = []
    @Option(name: .customLong("upstream-dockerhub"), help: "Docker Hub naming (library/ for single names): auto, true, false (upstream.dockerhub).")
    var upstreamDockerhub: String?
    @Option(name: .customLong("upstream-proxy"), help: "HTTP proxy for the upstream, e.g. http://proxy.corp:3128; connections go through CONNECT (upstream.proxy).")
    var upstreamProxy: String?
    @Option(name: .customLong("upstream-connect-timeout"), help: "Upstream connect timeout, e.g. 5s (upstream.connect_timeout).")
    var upstreamConnectTimeout: String?
    @Option(name: .customLong("upstream-manifest-timeout"), help: "Until a manifest response head arrives, e.g. 15s (upstream.manifest_timeout).")
    var upstreamManifestTimeout: String?
    @Option(name: .customLong("upstream-blob-timeout"), help: "Until a blob response head arrives, e.g. 30s (upstream.blob_timeout).")
    var upstreamBlobTimeout: String?
    @Option(name: .customLong("upstream-idle-timeout"), help: "Between upstream body bytes, e.g. 30s (upstream.idle_timeout).")
    var upstreamIdleTimeout: String?
    @Option(name: .customLong("upstream-negative-ttl"), help: "How long an upstream 404 for a tag is remembered, e.g. 15s; 0s: off (upstream.negative_ttl).")
    var upstreamNegativeTTL: String?
    @Option(name: .customLong("upstream-breaker-window"), help: "After an upstream timeout, how long it is not asked, e.g. 30s; 0s: off (upstream.breaker_window).")
    var upstreamBreakerWindow: String?
    @Option(name: .customLong("upstream-backoff-max"), help: "The longest wait a 429's Retry-After imposes, e.g. 600s; 0s: off (upstream.backoff_max).")
    var upstreamBackoffMax: String?
    @Option(name: .customLong("upstream-max-requests"), help: "Requests in flight to the upstream at once; 0: no cap (upstream.max_requests).")
    var upstreamMaxRequests: Int?
    @Option(name: .customLong("cache-dir"), help: "Cache directory (cache.dir).")
    var cacheDir: String?
    @Option(name: .customLong("tag-ttl"), help: "How long a tag mapping is trusted, e.g. 5m (cache.tag_ttl).")
    var tagTTL: String?
    @Option(name: .customLong("cache-max-size"), help: "Cache budget, e.g. 50GiB or 80% (cache.max_size).")
    var cacheMaxSize: String?
    @Option(name: .customLong("pin"), help: "Image never evicted (cache.pinned); repeatable.")
    var pin: [String] = []
    @Flag(name: .long, help: "Serve only what is cached; never contact an upstream (offline).")
    var offline = false
    @Option(name: .customLong("peer"), help: "A node of the cluster, host:port, in the balancer's server order (adds to peers); repeatable.")
    var peer: [String] = []
    @Option(name: .customLong("auth-htpasswd"), help: "htpasswd file (bcrypt) clients authenticate against (auth.htpasswd).")
    var authHtpasswd: String?
    @Flag(name: .customLong("auth-anonymous"), help: "With --auth-htpasswd, also serve requests without credentials (auth.anonymous).")
    var authAnonymous = false

    func run() throws {
        let c: BerthConfig
        do {
            c = try makeConfig()
        } catch let e as ConfigError {
            FileOut.stderr("berth: \(e)\n")
            throw ExitCode(2)
        }
        SignalSource.blockProcessSignals()
        let logger = makeLogger(level: c.log.level)
        let server = try BerthServer(config: c, logger: logger)
        // SIGHUP builds the configuration again the same way: the file and BERTH_* as they are then, these flags.
        server.configurationLoader = { try makeConfig() }
        do { try server.start() } catch {
            logger.critical("cannot start: \(error)")
            throw ExitCode(1)
        }
        server.waitUntilStopped()
    }

    /// The embedded defaults, the file, `BERTH_*`, then the flags; validated.
    func makeConfig() throws -> BerthConfig {
        var c = try loadConfig(file: config)
        if let listen { c.listen = listen }
        if let tlsListen { c.tls.listen = tlsListen }
        if let tlsCertificate { c.tls.certificate = tlsCertificate }
        if let tlsKey { c.tls.key = tlsKey }
        if let workers { c.workers = workers }
        if let headerTimeout { c.server.headerTimeout = try BerthConfig.parseDuration(headerTimeout, key: "server.header_timeout") }
        if let keepaliveTimeout { c.server.keepaliveTimeout = try BerthConfig.parseDuration(keepaliveTimeout, key: "server.keepalive_timeout") }
        if let maxConnections { c.server.maxConnections = try BerthConfig.parseConnectionCap(maxConnections, key: "server.max_connections") }
        if let maxConnectionsPerClient { c.server.maxConnectionsPerClient = maxConnectionsPerClient }
        if let logLevel { c.log.level = logLevel }
        if let logAccess { c.log.access = logAccess }
        if let metricsListen { c.metrics.listen = metricsListen }
        if let drainDelay { c.server.drainDelay = try BerthConfig.parseDuration(drainDelay, key: "server.drain_delay") }
        if let upstream { c.upstream.url = upstream }
        if let upstreamUser { c.upstream.username = upstreamUser }
        if let upstreamPasswordFile { c.upstream.passwordFile = upstreamPasswordFile }
        if let upstreamCA { c.upstream.ca = upstreamCA }
        if let upstreamCertificate { c.upstream.certificate = upstreamCertificate }
        if let upstreamKey { c.upstream.key = upstreamKey }
        if !realmAllow.isEmpty { c.upstream.realmAllow = realmAllow }
        if let upstreamDockerhub { c.upstream.dockerhub = upstreamDockerhub }
        let durations = [("connect_timeout", upstreamConnectTimeout), ("manifest_timeout", upstreamManifestTimeout),
                         ("blob_timeout", upstreamBlobTimeout), ("idle_timeout", upstreamIdleTimeout),
                         ("negative_ttl", upstreamNegativeTTL), ("breaker_window", upstreamBreakerWindow),
                         ("backoff_max", upstreamBackoffMax)]
        for case let (key, text?) in durations { try c.setUpstreamDuration(key, text) }
        if let upstreamMaxRequests { c.upstream.maxRequests = upstreamMaxRequests }
        if let upstreamProxy { c.upstream.proxy = upstreamProxy }
        if let cacheDir { c.cache.dir = cacheDir }
        if let cacheMaxSize { c.cache.maxSize = cacheMaxSize }
        if !pin.isEmpty { c.cache.pinned = pin }
        if offline { c.offline = true }
        c.peers += peer
        if let authHtpasswd { c.auth.htpasswd = authHtpasswd }
        if authAnonymous { c.auth.anonymous = true }
        if let tagTTL { c.cache.tagTTL = try BerthConfig.parseDuration(tagTTL, key: "cache.tag_ttl") }
        try c.validate()
        return c
    }
}

/// The embedded defaults, then `--config FILE`, then `BERTH_*` variables: what every command starts from.
func loadConfig(file path: String?) throws -> BerthConfig {
    var c = BerthConfig()
    if let path {
        guard let text = readFile(path) else { throw ConfigError(key: "(file)", "cannot read \(path)") }
        c = try BerthConfig.parse(yaml: text)
    }
    try c.apply(environment: ProcessEnvironment.all())
    return c
}

// MARK: berth client-config

struct ClientConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "client-config",
        abstract: "Print the containerd hosts.toml files, Docker daemon.json or podman registries.conf that pull every configured upstream through this Berth.",
        discussion: """
        The configuration is read as `berth serve` reads it (--config, BERTH_* variables). Notes and warnings go to stderr.
        Without --endpoint, clients are pointed at the plain-HTTP listen address, a wildcard address (:5000) as 127.0.0.1.
        """
    )

    @Argument(help: "containerd, docker or podman.")
    var client: ClientConfig.Client
    @Option(name: .long, help: "Configuration file (YAML), as for berth serve.")
    var config: String?
    @Option(name: .long, help: "The address clients reach Berth at, e.g. http://mirror.internal:5000 (default: from listen).")
    var endpoint: String?
    @Option(name: .long, help: "Plain HTTP address (listen), for the default endpoint.")
    var listen: String?
    @Option(name: .customLong("cache-dir"), help: "Cache directory (cache.dir); accepted as by every command, not used.")
    var cacheDir: String?

    func run() throws {
        let c: BerthConfig
        let target: ClientConfig.Endpoint
        do {
            var loaded = try loadConfig(file: config)
            if let listen { loaded.listen = listen }
            if let cacheDir { loaded.cache.dir = cacheDir }
            try loaded.validate()
            c = loaded
            if let endpoint {
                guard let e = ClientConfig.Endpoint(endpoint) else {
                    throw ConfigError(key: "--endpoint", "\"\(endpoint)\" is not a URL such as http://mirror.internal:5000 (no path)")
                }
                target = e
            } else {
                guard let e = ClientConfig.Endpoint(listen: c.listen) else { throw ConfigError(key: "listen", "\"\(c.listen)\" is not an address") }
                target = e
            }
        } catch let e as ConfigError {
            FileOut.stderr("berth: \(e)\n")
            throw ExitCode(2)
        }
        let out = ClientConfig.make(client, config: c, endpoint: target, configPath: config)
        print(out.text, terminator: "")
        for note in out.notes { FileOut.stderr("berth: \(note)\n") }
    }
}

extension ClientConfig.Client: ExpressibleByArgument {}

// MARK: berth cache

struct Cache: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Inspect and manage the cache. Talks to the running berth serve (admin.sock) when one holds the cache's berth.lock; otherwise acts on the files directly.",
        discussion: "Exit codes: 0 done; 1 verification found mismatches or the operation failed; 2 usage or configuration error.",
        subcommands: [List.self, Usage.self, History.self, Pin.self, Unpin.self, Remove.self, GC.self, Verify.self]
    )
}

struct CacheOptions: ParsableArguments {
    @Option(name: .customLong("cache-dir"), help: "Cache directory (cache.dir).")
    var cacheDir: String?
    @Option(name: .long, help: "Configuration file (YAML), for cache.dir and the budget.")
    var config: String?
    @Flag(name: .long, help: "Print the report as JSON.")
    var json = false

    var options: CacheCommand.Options {
        var o = CacheCommand.Options()
        o.cacheDir = cacheDir
        o.configPath = config
        o.json = json
        return o
    }
}

func runCache(_ op: CacheCommand.Operation, _ options: CacheOptions) throws {
    let code = CacheCommand.run(op, options.options)
    if code != 0 { throw ExitCode(code) }
}

extension Cache {
    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "Repositories, tags, digests, cached sizes, last use, pins.")
        @OptionGroup var common: CacheOptions
        func run() throws { try runCache(.ls, common) }
    }

    struct Usage: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "du", abstract: "Usage against the budget: blobs, pinned, reserved, index, quarantine.")
        @OptionGroup var common: CacheOptions
        func run() throws { try runCache(.du, common) }
    }

    struct History: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Every digest a tag has named, newest first, with when the upstream first and last gave it.",
            discussion: "A tag the upstream moved keeps the images of its last cache.keep_history digests cached: pull one by digest to roll back."
        )
        @Argument(help: "[UPSTREAM/]REPO[:TAG]; without a tag, every tag of the repository") var image: String
        @OptionGroup var common: CacheOptions
        func run() throws { try runCache(.history(image), common) }
    }

    struct Pin: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Pin what IMAGE points to now (manifest and every blob of every platform): never evicted.",
            discussion: "With a server running, the image is pulled through it first. Without one, only an image that is entirely cached can be pinned."
        )
        @Argument(help: "repo[:tag] or repo@sha256:…") var image: String
        @OptionGroup var common: CacheOptions
        func run() throws { try runCache(.pin(image), common) }
    }

    struct Unpin: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Unpin IMAGE; digests other pinned images cover stay pinned.")
        @Argument(help: "The image as it was pinned.") var image: String
        @OptionGroup var common: CacheOptions
        func run() throws { try runCache(.unpin(image), common) }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rm",
            abstract: "Remove a tag mapping (repo:tag) or a blob (sha256:… or repo@sha256:…) and its index record."
        )
        @Argument(help: "IMAGE or DIGEST") var target: String
        @OptionGroup var common: CacheOptions
        func run() throws { try runCache(.rm(target), common) }
    }

    struct GC: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "gc",
            abstract: "Remove blobs no cached manifest references (tag targets and pins stay) unused for the grace period, and old quarantined files."
        )
        @Option(name: .long, help: "Grace period, e.g. 1h, 30m, 0s.") var grace = "1h"
        @OptionGroup var common: CacheOptions
        func run() throws {
            let seconds: Double
            do { seconds = try BerthConfig.parseDuration(grace, key: "--grace") } catch {
                FileOut.stderr("berth: \(error)\n")
                throw ExitCode(2)
            }
            try runCache(.gc(graceSeconds: seconds), common)
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Re-hash every blob on every core; move mismatches to <cache dir>/quarantine/. Exit 1 when any mismatched."
        )
        @OptionGroup var common: CacheOptions
        func run() throws { try runCache(.verify, common) }
    }
}

// MARK: berth preload, berth import, berth export

struct Preload: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pull images into the cache through the running berth serve: every platform, verified like any pull.",
        discussion: """
        Each image goes through the server's own path (its upstreams, credentials, verification, budget and single-flight \
        fills), --parallel images at a time; a rerun fetches only what is missing. A failed image does not stop the others. \
        On a terminal a progress line shows images, blobs, bytes and rate.
        Exit codes: 0 all loaded; 1 any failed, or no server runs on the cache; 2 usage or configuration error.
        """
    )
    @Argument(help: "[UPSTREAM/]REPO[:TAG|@DIGEST], one or more.") var images: [String] = []
    @Option(name: .customShort("f"), help: "A file listing images, one per line (# comments, blank lines ignored).") var list: String?
    @Flag(help: "Pin what is loaded (as berth cache pin).") var pin = false
    @Option(help: "Only these platforms of an index, e.g. linux/amd64,linux/arm64 (default: every platform).") var platform: String?
    @Option(help: "Images loaded at once.") var parallel = 2
    @OptionGroup var common: CacheOptions
    func run() throws {
        var all = images
        if let list {
            guard let text = readFile(list) else {
                FileOut.stderr("berth: cannot read \(list)\n")
                throw ExitCode(2)
            }
            all += text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
                .filter { !$0.isEmpty && !$0.hasPrefix("#") }
        }
        let platforms = (platform ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        try runCache(.preload(images: all, pin: pin, platforms: platforms, parallel: parallel), common)
    }
}

/// An absolute form of `path` (the server may run in another directory).
func absolutePath(_ path: String) -> String {
    path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
}

struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load images from a docker save archive or an OCI image layout (a tar, a directory, either tar gzip-compressed) into the cache.",
        discussion: """
        Every blob is verified against its digest before it enters the cache; a bad archive (unsafe paths, wrong digests, \
        truncation) is refused and leaves the cache as it was. Tags come from org.opencontainers.image.ref.name or RepoTags, \
        or from --as. A classic docker save image gets an OCI manifest built from its config and layers: its digest is new.
        Goes through the running berth serve (admin.sock) when one holds the cache; then it serves the images at once.
        Exit codes: 0 imported; 1 refused or failed; 2 usage or configuration error.
        """
    )
    @Argument(help: "The archive (.tar, .tar.gz) or OCI layout directory.") var path: String
    @Option(name: .customLong("as"), help: "Name the image [UPSTREAM/]REPO:TAG (when the archive has no name, or to rename).") var name: String?
    @OptionGroup var common: CacheOptions
    func run() throws { try runCache(.importArchive(path: absolutePath(path), as: name), common) }
}

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write cached images as an OCI image layout in a tar (.tar) or a gzip tar (.tar.gz), readable by skopeo (oci-archive:FILE:REPO:TAG) and berth import.",
        discussion: "Each tag is named [UPSTREAM/]REPO:TAG in index.json; every cached platform of an index is included. Exit codes: 0 written; 1 not cached or failed; 2 usage error."
    )
    @Argument(help: "[UPSTREAM/]REPO[:TAG|@DIGEST], one or more (or none with --pulled-since).") var images: [String] = []
    @Option(name: .customLong("pulled-since"), help: "Also every cached tag whose image was used this recently, e.g. 7d, 12h.") var pulledSince: String?
    @Option(name: .shortAndLong, help: "The bundle to write: FILE.tar or FILE.tar.gz.") var output: String
    @OptionGroup var common: CacheOptions
    func run() throws {
        var since: Double?
        if let pulledSince {
            do { since = try BerthConfig.parseDuration(pulledSince, key: "--pulled-since") } catch {
                FileOut.stderr("berth: \(error)\n")
                throw ExitCode(2)
            }
        }
        try runCache(.export(images: images, output: absolutePath(output), pulledSince: since), common)
    }
}

// `berth cache`, `client-config`, `preload`, `import`, `export` and `bench` usage errors exit 2 like configuration errors (ArgumentParser would say 64).
if ["cache", "client-config", "preload", "import", "export", "bench"].contains(CommandLine.arguments.dropFirst().first) {
    do {
        var command = try Berth.parseAsRoot()
        try command.run()
    } catch {
        let code = Berth.exitCode(for: error)
        if code == .validationFailure {
            FileOut.stderr(Berth.fullMessage(for: error) + "\n")
            exit(2)
        }
        Berth.exit(withError: error)
    }
} else {
    Berth.main()
}
