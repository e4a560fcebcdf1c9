import HTTP1
import Mirror
import OCI
import Reactor
import TLS

/// What one `berth bench` run does.
public struct BenchOptions: Sendable {
    /// ENDPOINT, then every `--compare` URL: each gets the same passes, interleaved.
    public var endpoints: [String]
    /// `[UPSTREAM/]REPO[:TAG|@DIGEST]`.
    public var images: [String]
    public var pullers = 1
    public var rounds = 1
    public var pull = PullOptions()
    /// Run through `/bin/sh -c` before each cold pass, with `BERTH_BENCH_ENDPOINT` set to the endpoint; a failure stops the bench.
    public var coldCommand: String?
    /// Extra CA bundle for https endpoints.
    public var caPath: String?
    public var username: String?
    public var password: String?

    public init(endpoints: [String], images: [String]) {
        self.endpoints = endpoints
        self.images = images
    }
}

/// A bench that could not run (bad arguments, a failed `--cold-cmd`); failed requests are results, not this.
public struct BenchError: Error, CustomStringConvertible {
    public let description: String
    /// Usage errors exit 2, a run that stopped exits 1.
    public let isUsage: Bool

    init(_ description: String, usage: Bool = false) {
        self.description = description
        isUsage = usage
    }
}

/// Runs the passes of a bench on one event loop (the calling thread's) and aggregates them.
///
/// The order: for each round, for each endpoint in turn (A B A B), a cold pass
/// after `--cold-cmd` when one is given, then a warm pass; a pass pulls each
/// image in turn with every puller at once.
public enum BenchRunner {
    /// Progress lines (`round 1/3 http://… warm x:1`) go to `progress`, nil for none.
    public static func run(_ options: BenchOptions, progress: ((String) -> Void)? = nil) throws -> BenchResult {
        var endpoints: [HTTPURL] = []
        for e in options.endpoints {
            guard let u = HTTPURL(e), u.pathAndQuery == "/" || u.pathAndQuery.isEmpty else {
                throw BenchError("\"\(e)\" is not an endpoint URL such as http://127.0.0.1:5000 (no path)", usage: true)
            }
            endpoints.append(u)
        }
        var images: [ImageReference] = []
        for i in options.images {
            guard let r = ImageReference(i) else { throw BenchError("\"\(i)\" is not an image ([UPSTREAM/]REPO[:TAG|@DIGEST])", usage: true) }
            images.append(r)
        }
        guard !endpoints.isEmpty, !images.isEmpty else { throw BenchError("an endpoint and at least one image are needed", usage: true) }
        guard options.pullers >= 1, options.pullers <= 1000, options.rounds >= 1, options.rounds <= 10_000,
              options.pull.parallel >= 1, options.pull.parallel <= 64 else {
            throw BenchError("--pullers must be 1–1000, --rounds 1–10000, --parallel 1–64", usage: true)
        }
        var tls: TLSContext?
        if endpoints.contains(where: \.isSecure) {
            do { tls = try TLSContext.makeClient(extraCAPath: options.caPath) } catch {
                throw BenchError("cannot set up TLS: \(error)", usage: true)
            }
        }
        let loop = try EventLoop()
        let pool = BlockingPool(threads: 2)
        defer { pool.shutdown() }
        let client = HTTPClient(loop: loop, pool: pool, tls: tls, maxIdlePerOrigin: options.pullers * options.pull.parallel + 4)
        let credentials = endpoints.map { RegistryCredentials(client: client, url: $0, username: options.username, password: options.password) }

        var steps: [Step] = []
        for round in 1...options.rounds {
            for e in endpoints.indices {
                for phase in options.coldCommand == nil ? [Phase.warm] : [.cold, .warm] {
                    if phase == .cold { steps.append(.coldCommand(endpoint: e)) }
                    for i in images.indices { steps.append(.pass(endpoint: e, image: i, round: round, phase: phase)) }
                }
            }
        }
        let run = Run(loop: loop, pool: pool, client: client, credentials: credentials, endpoints: endpoints,
                      images: images, options: options, steps: steps, progress: progress)
        loop.execute { run.next() }
        loop.run()
        if let failure = run.failure { throw failure }
        return BenchResult(endpoints: options.endpoints, images: options.images, rounds: options.rounds,
                           pullers: options.pullers, parallel: options.pull.parallel, verify: options.pull.verify,
                           passes: run.passes)
    }

    enum Step {
        case coldCommand(endpoint: Int)
        case pass(endpoint: Int, image: Int, round: Int, phase: Phase)
    }

    /// The steps, one after another, on the loop. Loop thread only.
    final class Run {
        let loop: EventLoop
        let pool: BlockingPool
        let client: HTTPClient
        let credentials: [RegistryCredentials]
        let endpoints: [HTTPURL]
        let images: [ImageReference]
        let options: BenchOptions
        let steps: [Step]
        let progress: ((String) -> Void)?
        var cursor = 0
        var passes: [PassReport] = []
        var failure: BenchError?

        init(loop: EventLoop, pool: BlockingPool, client: HTTPClient, credentials: [RegistryCredentials], endpoints: [HTTPURL],
             images: [ImageReference], options: BenchOptions, steps: [Step], progress: ((String) -> Void)?) {
            self.loop = loop
            self.pool = pool
            self.client = client
            self.credentials = credentials
            self.endpoints = endpoints
            self.images = images
            self.options = options
            self.steps = steps
            self.progress = progress
        }

        func next() {
            guard cursor < steps.count else { return loop.stop() }
            let step = steps[cursor]
            cursor += 1
            switch step {
            case .coldCommand(let e):
                guard let command = options.coldCommand else { return next() }
                progress?("cold command for \(options.endpoints[e])")
                Posix.setEnvironment("BERTH_BENCH_ENDPOINT", options.endpoints[e])
                pool.run(on: loop, { try Posix.runShell(command) }) { [self] result in
                    switch result {
                    case .success(0): next()
                    case .success(let status):
                        failure = BenchError("--cold-cmd exited \(status) before a cold pass on \(options.endpoints[e]): stopped")
                        loop.stop()
                    case .failure(let error):
                        failure = BenchError("--cold-cmd could not run: \(error)")
                        loop.stop()
                    }
                }
            case .pass(let e, let i, let round, let phase):
                progress?("round \(round)/\(options.rounds) \(options.endpoints[e]) \(phase.rawValue) \(options.images[i])")
                var records: [PullRecord] = []
                for _ in 0..<options.pullers {
                    let pull = Pull(client: client, credentials: credentials[e], endpoint: endpoints[e], image: images[i],
                                    options: options.pull) { [self] record in
                        records.append(record)
                        guard records.count == options.pullers else { return }
                        passes.append(PassReport(endpoint: options.endpoints[e], image: options.images[i], round: round,
                                                 phase: phase, pulls: records))
                        // Off this call stack: the last pull's request is still unwinding.
                        loop.execute { self.next() }
                    }
                    pull.start()
                }
            }
        }
    }
}
