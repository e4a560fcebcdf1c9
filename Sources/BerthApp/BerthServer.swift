#if canImport(Glibc)
import Glibc
#endif
import Logging
import Reactor
import TLS
import HTTP1
import Mirror
import Synchronization

/// Wires configuration to the runtime: event loops, the blocking pool, the
/// HTTP(S) server and the router; handles SIGTERM/SIGINT (graceful stop) and
/// SIGHUP (certificate reload).
public final class BerthServer: @unchecked Sendable {  // set up once in `start`; afterwards only loop-thread and atomic state
    public let config: BerthConfig
    let logger: Logger
    let group: EventLoopGroup
    let pool: BlockingPool
    private(set) var http: HTTPServer!
    private var tls: ReloadableServerContext?
    private var signals: SignalSource?
    private let finished = Atomic<Bool>(false)
    /// How long in-flight responses may run after SIGTERM.
    public var shutdownGraceNanos: UInt64 = 15_000_000_000

    public init(config: BerthConfig, logger: Logger) throws {
        self.config = config
        self.logger = logger
        group = try EventLoopGroup(count: config.workers == 0 ? System.coreCount : config.workers)
        pool = BlockingPool(threads: 2)
    }

    /// Binds the listeners and starts the loops. Throws when an address cannot be bound
    /// or the certificate cannot be loaded.
    public func start(handleSignals: Bool = true) throws {
        var sc = HTTPServer.Configuration()
        sc.plain = [SocketAddress(config.listen)!]
        if !config.tls.listen.isEmpty {
            tls = try ReloadableServerContext(certificateChainPath: config.tls.certificate, privateKeyPath: config.tls.key)
            sc.secure = [SocketAddress(config.tls.listen)!]
            sc.tls = tls
        }
        sc.errorBody = { status, reason in ("application/json", ociErrorBody(ociCode(forStatus: status), reason)) }
        let router = Router()
        let log = logger
        http = HTTPServer(configuration: sc, group: group, pool: pool, logger: { level, message in
            switch level {
            case .debug: log.debug("\(message)")
            case .info: log.info("\(message)")
            case .warning: log.warning("\(message)")
            case .error: log.error("\(message)")
            }
        }, handler: router.handle)
        try http.start()
        if handleSignals {
            let loop = group.loops[0]
            signals = try SignalSource(loop: loop) { [weak self] signo in self?.signal(signo) }
        }
        group.start()
        logger.info("berth listening", metadata: [
            "http": "\(http.boundAddresses().map(\.description).joined(separator: ","))",
            "https": "\(config.tls.listen)",
            "workers": "\(group.loops.count)",
        ])
    }

    /// The addresses bound, plain first (ports resolved).
    public var boundAddresses: [SocketAddress] { http.boundAddresses() }

    private func signal(_ signo: Int32) {
        switch signo {
        case SIGHUP:
            guard let tls else { logger.info("SIGHUP: no TLS configured, nothing to reload"); return }
            pool.submit { [logger] in
                do {
                    try tls.reload()
                    logger.info("SIGHUP: TLS certificate reloaded")
                } catch {
                    logger.error("SIGHUP: TLS reload failed, keeping the old certificate: \(error)")
                }
            }
        default:
            logger.info("signal \(signo): stopping; in-flight responses get \(shutdownGraceNanos / 1_000_000_000) s")
            stop()
        }
    }

    /// Stops accepting, lets responses finish up to the grace period, then stops the loops.
    public func stop() {
        http.beginShutdown()
        let deadline = Clock.monotonicNanos() + shutdownGraceNanos
        func check() {
            if http.connectionCount == 0 || Clock.monotonicNanos() >= deadline {
                if http.connectionCount > 0 { logger.warning("closing \(http.connectionCount) connections still busy") }
                finished.store(true, ordering: .sequentiallyConsistent)
                return
            }
            group.loops[0].schedule(afterNanos: 50_000_000, check)
        }
        group.loops[0].execute(check)
    }

    /// Blocks the calling thread until `stop` has finished, then stops the loops.
    public func waitUntilStopped() {
        while !finished.load(ordering: .sequentiallyConsistent) { usleep(20_000) }
        group.shutdown()
        pool.shutdown()
    }
}
