import ArgumentParser
import Bench
import OCI
import BerthApp
import Reactor
#if canImport(Glibc)
import Glibc
#endif

// MARK: berth bench

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Pull images from any /v2/ endpoint the way containerd does and report time to pulled (p50/p95/p99), TTFB, bytes/s and requests.",
        discussion: """
        Each pull: HEAD the manifest by tag (every manifest type in Accept), GET the index, GET the platform's manifest, \
        GET the config, GET the layers with --parallel in flight. Each round runs, per endpoint in turn (ENDPOINT, then \
        every --compare URL: A B A B), a cold pass after --cold-cmd when one is given, then a warm pass; a pass pulls each \
        image with --pullers pulls at once. --cold-cmd runs through /bin/sh with BERTH_BENCH_ENDPOINT set to the endpoint.
        The password for --user comes from BERTH_BENCH_PASSWORD or --password-file. Token and basic auth as the registry asks.
        Exit codes: 0 every request answered 2xx with the right bytes; 1 a non-2xx answer, no answer or a digest/size \
        mismatch (or --cold-cmd failed); 2 usage error.
        """
    )

    @Argument(help: "The registry endpoint, e.g. http://127.0.0.1:5000.")
    var endpoint: String
    @Argument(help: "Images: [UPSTREAM/]REPO[:TAG|@DIGEST]. An UPSTREAM is sent as ?ns=, as containerd does.")
    var images: [String]
    @Flag(name: .long, help: "Print the result as JSON.")
    var json = false
    @Option(name: .long, help: "Pulls of each image at once.")
    var pullers = 1
    @Option(name: .long, help: "Rounds (each: a cold pass when --cold-cmd is given, then a warm pass).")
    var rounds = 1
    @Option(name: .customLong("cold-cmd"), help: "Shell command run before each cold pass (e.g. one that empties the mirror's cache).")
    var coldCmd: String?
    @Option(name: .long, help: "Extra PEM CA bundle for https endpoints.")
    var ca: String?
    @Option(name: .long, help: "Username for the registry's basic or token auth.")
    var user: String?
    @Option(name: .customLong("password-file"), help: "File holding the password for --user (else BERTH_BENCH_PASSWORD).")
    var passwordFile: String?
    @Option(name: .long, help: "Layers fetched at once per pull (containerd's max_concurrent_downloads).")
    var parallel = 3
    @Option(name: .long, help: "Platform picked from an index: os/arch[/variant].")
    var platform = "linux/amd64"
    @Flag(name: .long, help: "Hash every body and compare it with its digest.")
    var verify = false
    @Option(name: .long, parsing: .upToNextOption, help: "Further endpoints run the same rounds, interleaved; ratios are to ENDPOINT.")
    var compare: [String] = []
    @Option(name: .long, help: "Configuration file; accepted as by every command, not used.")
    var config: String?
    @Option(name: .customLong("cache-dir"), help: "Cache directory; accepted as by every command, not used.")
    var cacheDir: String?

    func run() throws {
        var o = BenchOptions(endpoints: [endpoint] + compare, images: images)
        o.pullers = pullers
        o.rounds = rounds
        o.coldCommand = coldCmd
        o.caPath = ca
        o.username = user
        o.pull.parallel = parallel
        o.pull.verify = verify
        guard let p = Platform(platform) else {
            FileOut.stderr("berth: --platform \"\(platform)\" is not os/arch[/variant]\n")
            throw ExitCode(2)
        }
        o.pull.platform = p
        if user != nil {
            if let passwordFile {
                guard let text = readFile(passwordFile) else {
                    FileOut.stderr("berth: cannot read \(passwordFile)\n")
                    throw ExitCode(2)
                }
                o.password = String(text.split(separator: "\n", omittingEmptySubsequences: false).first ?? "")
            } else {
                o.password = ProcessEnvironment.all()["BERTH_BENCH_PASSWORD"]
            }
        }
        let tty = !json && Posix.isTerminal(fd: 1)
        let result: BenchResult
        do {
            result = try BenchRunner.run(o, progress: tty ? { line in
                print("\r\u{1b}[2K" + line, terminator: "")
                fflush(stdout)
            } : nil)
        } catch let e as BenchError {
            if tty { print("\r\u{1b}[2K", terminator: "") }
            FileOut.stderr("berth: \(e)\n")
            throw ExitCode(e.isUsage ? 2 : 1)
        }
        if tty { print("\r\u{1b}[2K", terminator: "") }
        print(json ? result.json() : result.table(), terminator: "")
        if result.failures > 0 { throw ExitCode(1) }
    }
}
