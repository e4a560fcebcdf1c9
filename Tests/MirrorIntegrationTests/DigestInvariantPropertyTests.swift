import Foundation
import Testing
import PropertyBased
import HTTP1
import TestSupport

/// Issue 8's digest invariant as a property: random fault schedules played by
/// an in-process upstream against one long-running `berth serve` (killed with
/// SIGKILL and restarted when a schedule says so), with concurrent clients,
/// some with Range headers. After each schedule:
///
/// - every client got exact bytes or an error it can see (`DigestInvariantOracle`);
/// - a later GET of the digest, once the upstream behaves, returns the exact blob;
/// - the blob's file under `blobs/` hashes to its name and no temp file of it stays;
/// - after a restart: no temp file survived, every file under `blobs/` hashes to its name.
///
/// Environment:
/// - `BERTH_PROPERTY_SCHEDULES=N`: schedules to run (default 200, what CI runs);
/// - `BERTH_PROPERTY_SEED=<seed>`: replay the one schedule a failure printed
///   (the string inside its `.fixedSeed("…")` hint);
/// - `BERTH_PROPERTY_SHRINK=1`: shrink a failing schedule (re-runs it many times);
/// - `BERTH_PROPERTY_STRICT_RANGES=1`: also refuse 206 answers carrying a
///   corrupt upstream's bytes before the digest check (see `Verdict.unverifiedRange`);
/// - `BERTH_PROPERTY_SUMMARY=FILE`: append the run's summary to FILE.
@Suite("DigestInvariant")
struct DigestInvariantPropertyTests {
    static let env = ProcessInfo.processInfo.environment
    static let scheduleCount = env["BERTH_PROPERTY_SCHEDULES"].flatMap(Int.init) ?? 200

    @Test("Digest invariant under random fault schedules", .shrinking(env["BERTH_PROPERTY_SHRINK"] == "1"))
    func digestInvariantHoldsUnderRandomFaultSchedules() async throws {
        guard BerthProcess.binaryPath != nil else {
            Issue.record("berth binary not found next to the test bundle: run `swift build --build-tests` first")
            return
        }
        let harness = try DigestInvariantHarness(strictRanges: Self.env["BERTH_PROPERTY_STRICT_RANGES"] == "1")
        defer { harness.shutdown() }
        let started = Date()
        if let seed = Self.env["BERTH_PROPERTY_SEED"] {
            guard var rng = Xoshiro(seed: seed) else {
                Issue.record("BERTH_PROPERTY_SEED=\(seed) is not a seed printed by a failing run")
                return
            }
            let schedule = ScheduleGen.schedule.run(using: &rng)
            print("DigestInvariant: replaying \(schedule)")
            await harness.run(schedule)
        } else {
            await propertyCheck(count: Self.scheduleCount, input: ScheduleGen.schedule) { schedule in
                await harness.run(schedule)
            }
        }
        harness.checkWholeCache(afterRestart: false)
        let summary = harness.summary(wall: Date().timeIntervalSince(started))
        print(summary)
        if let path = Self.env["BERTH_PROPERTY_SUMMARY"] {
            let line = Data((summary + "\n").utf8)
            if let h = FileHandle(forWritingAtPath: path) {
                h.seekToEndOfFile()
                h.write(line)
                try? h.close()
            } else {
                _ = FileManager.default.createFile(atPath: path, contents: line)
            }
        }
    }
}

/// One upstream, one berth, one in-process client, shared by every schedule.
final class DigestInvariantHarness {
    let upstream: FakeUpstream
    let berth: BerthProcess
    let client: InProcessClient
    let scratch: String
    let strictRanges: Bool
    private var number = 0
    private var counts: [String: Int] = [:]
    private var restarts = 0

    /// Berth's upstream timeouts, short so that hung heads and stalled bodies
    /// cost a second and a half, not 15–30 s. The faults' own stalls stay under a third of it.
    static let timeout = 1.5
    static let config = """
        upstream:
          connect_timeout: 1s
          manifest_timeout: 1500ms
          blob_timeout: 1500ms
          idle_timeout: 1500ms
          # Each schedule must see its own faults only: no upstream-wide breaker or 429 back-off
          # carried into the next one (those have their own tests in FailoverTests).
          breaker_window: 0s
          backoff_max: 0s
          negative_ttl: 0s
        """

    init(strictRanges: Bool) throws {
        self.strictRanges = strictRanges
        scratch = makeTemporaryDirectory("berth-prop")
        let configPath = scratch + "/berth.yaml"
        try Self.config.write(toFile: configPath, atomically: true, encoding: .utf8)
        upstream = try FakeUpstream()
        client = try InProcessClient()
        berth = try BerthProcess(upstream: upstream.url, arguments: ["--config", configPath, "--log-level", "info"])
    }

    func shutdown() {
        berth.remove()
        client.shutdown()
        upstream.stop()
        try? FileManager.default.removeItem(atPath: scratch)
    }

    private func count(_ key: String, _ n: Int = 1) { counts[key, default: 0] += n }

    // MARK: one schedule

    func run(_ s: Schedule) async {
        let started = Date()
        await play(s)
        // Each schedule's blob is its own: its routes (and the bytes they hold) go with it.
        upstream.unroute(currentPaths.chaos)
        upstream.unroute(currentPaths.warm)
        let took = Date().timeIntervalSince(started)
        slowest = max(slowest, took)
        count(took < 1 ? "schedules under 1 s" : took < 3 ? "schedules 1-3 s" : "schedules over 3 s")
        if took > 5 { print("DigestInvariant: slow schedule #\(number) (\(String(format: "%.1f", took)) s): \(s)\n  \(lastNotes.joined(separator: "\n  "))") }
    }

    private var slowest = 0.0
    private var currentPaths = (chaos: "", warm: "")
    private var lastNotes: [String] = []

    private func play(_ s: Schedule) async {
        number += 1
        var failures: [String] = []
        var notes: [String] = []
        let t0 = Date()
        func mark(_ what: String) { notes.append(String(format: "t=%.2f s ", Date().timeIntervalSince(t0)) + what) }
        if !berth.isRunning {
            // A previous schedule left it dead (that one failed already); start afresh.
            berth.killHard()
            do { try berth.start() } catch { return record(s, ["berth does not start: \(error)"], notes, nil) }
        }
        let blob = s.makeBlob()
        let digest = "sha256:" + sha256Hex(blob)
        let hex = String(digest.dropFirst(7))
        let path = "/v2/prop/s\(number)/blobs/\(digest)"
        let url = berth.url + path
        let warmPath = "/v2/prop/w\(number)/blobs/\(digest)"
        currentPaths = (path, warmPath)

        if s.prewarm {
            upstream.route(warmPath, FakeUpstream.serve(blob, digest: digest))
            let o = await client.request(berth.url + warmPath)
            guard o.error == nil, o.status == 200, o.body == blob else {
                return record(s, ["prewarm GET from a correct upstream failed: \(o)"], notes, nil)
            }
            if !waitUntil(5, { self.berth.isCached(digest) }) { return record(s, ["prewarmed blob never cached"], notes, nil) }
        }

        let player = FaultPlayer(blob: blob, digest: digest, faults: s.faults, retryAfter: s.retryAfter)
        let pid = berth.pid
        if case .duringAttempt(let attempt, let permille) = s.kill, let pid { player.killAt = (attempt, permille, pid) }
        upstream.route(path, player.route)

        // The clients, concurrently; a kill on a timer races them.
        let delayKill: Task<Bool, Never>? = {
            guard case .afterDelay(let ms) = s.kill, let pid else { return nil }
            return Task {
                try? await Task.sleep(nanoseconds: UInt64(ms) * 1_000_000)
                kill(pid, SIGKILL)
                return true
            }
        }()
        let outcomes = await withTaskGroup(of: (Int, ClientOutcome).self) { group -> [ClientOutcome] in
            for (i, spec) in s.clients.enumerated() {
                group.addTask { [client, scratch] in
                    if spec.delayMs > 0 { try? await Task.sleep(nanoseconds: UInt64(spec.delayMs) * 1_000_000) }
                    var headers: [(String, String)] = []
                    if let r = spec.rangeHeader { headers.append(("Range", r)) }
                    let head = spec.kind == .head
                    if spec.viaCurl && CurlClient.isInstalled {
                        return (i, await CurlClient.request(url, head: head, headers: headers.map { "\($0.0): \($0.1)" }, in: scratch))
                    }
                    var leave: Int?
                    if case .leaveEarly(let n) = spec.kind { leave = n }
                    return (i, await client.request(url, method: head ? .head : .get, headers: headers, leaveAfter: leave))
                }
            }
            var out = [ClientOutcome](repeating: ClientOutcome(), count: s.clients.count)
            for await (i, o) in group { out[i] = o }
            return out
        }
        mark("clients done")
        // The player decides a kill on the upstream's loop thread; a client may have its answer first
        // (a 502 for a huge declared length goes out while that thread is preempted just before the
        // kill): once the attempt has started, wait (bounded) for that decision before reading it.
        if case .duringAttempt(let attempt, _) = s.kill, player.attemptCount > attempt { _ = waitUntil(2) { player.didKill } }
        var killed = player.didKill
        if let delayKill { killed = await delayKill.value || killed }
        if s.kill == .afterClients, let pid {
            kill(pid, SIGKILL)
            killed = true
        }

        // Every client: exact bytes or an error it can see.
        let facts = UpstreamFacts(size: blob.count, wrongBodies: player.bodiesSent, declaredLengths: player.declaredLengths,
                                  statuses: player.statusesSent, retryAfter: s.retryAfter,
                                  sentUnknownLength: player.didSendUnknownLength)
        for (spec, o) in zip(s.clients, outcomes) {
            let v = DigestInvariantOracle.judge(spec, o, blob: blob, digest: digest, facts: facts, strictRanges: strictRanges)
            notes.append("client \(spec): \(o) → \(v)")
            switch v {
            case .exact(let what): count("client: exact \(what)")
            case .visibleError(let why): count("client: visible error " + Self.errorClass(why))
            case .unverifiedRange: count("client: 206 with a corrupt upstream's bytes before the digest check (DECISIONS)")
            case .unverifiedHead: count("client: HEAD passed on the upstream's declared length")
            case .violation(let why): failures.append("client \(spec): \(why); it saw \(o)")
            }
            count(spec.viaCurl ? "clients via curl" : "clients in-process")
        }
        for entry in player.attemptLog { count("upstream attempt " + Self.faultClass(entry)) }

        // A kill: the restart finds no temp file and only whole, right blobs.
        if killed {
            count("kill -9 restarts")
            restarts += 1
            if !waitUntil(10, { !self.berth.isRunning }) { failures.append("berth still runs after SIGKILL") }
            berth.killHard()
            do { try berth.start() } catch { return record(s, failures + ["berth did not restart after SIGKILL: \(error)"], notes, player) }
            mark("restarted")
            failures += cacheProblems(afterRestart: true)
            mark("cache checked")
        } else if !berth.isRunning {
            failures.append("berth exited although nobody killed it")
            return record(s, failures, notes, player)
        }

        // Once the upstream behaves, a GET of the digest returns it.
        player.behave()
        if !waitUntil(20, { player.isQuiet(grace: Self.timeout + 0.5) }) {
            failures.append("upstream requests still open 20 s after the schedule: \(player.openCount)")
        }
        mark("upstream quiet")
        var recovered = false
        for attempt in 1...3 {
            let before = player.attemptCount
            let o = await client.request(url)
            if o.error == nil, o.status == 200, o.body == blob {
                recovered = true
                if attempt > 1 { count("later GET needed a retry (it joined a fill of the faulty phase)") }
                break
            }
            notes.append("later GET \(attempt): \(o)")
            // A retry is fair only when this GET followed a fill of the faulty phase, not a fetch from the behaving upstream.
            if player.attemptCount > before && o.status != 504 {
                failures.append("a later GET failed although Berth fetched from the behaving upstream: \(o)")
                break
            }
        }
        mark("later GET done")
        if !recovered { failures.append("no later GET of \(digest) returned the blob once the upstream behaved") }

        // Its file hashes to its name; no temp file of it stays.
        if recovered {
            if !waitUntil(5, { self.berth.isCached(digest) }) {
                failures.append("\(digest) served whole but never cached")
            } else if let h = sha256Hex(file: berth.cachedBlobPath(digest)), h != hex {
                failures.append("blobs/\(hex) hashes to \(h)")
            }
        }
        let isTempOfThis = { (name: String) in name.hasPrefix(hex + ".") }
        if !waitUntil(5, { !self.tempFiles().contains(where: isTempOfThis) }) {
            failures.append("temp files of \(digest) left: \(tempFiles().filter(isTempOfThis))")
        }
        mark("end")
        record(s, failures, notes, player)
    }

    private func record(_ s: Schedule, _ failures: [String], _ notes: [String], _ player: FaultPlayer?) {
        lastNotes = notes + ["upstream attempts: \(player?.attemptLog.joined(separator: ", ") ?? "none")"]
        guard !failures.isEmpty else { return }
        count("failed schedules")
        let message = """
            digest invariant broken in schedule #\(number): \(s)
            \(failures.map { "  - " + $0 }.joined(separator: "\n"))
            upstream attempts: \(player?.attemptLog.joined(separator: ", ") ?? "none")
            \(notes.map { "  " + $0 }.joined(separator: "\n"))
            ---- berth log (tail) ----
            \(logTail(berth.logPath, bytes: 6000))
            """
        Issue.record(Comment(rawValue: message))
    }

    // MARK: the cache on disk

    private func tempFiles() -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: berth.cacheDir + "/tmp")) ?? []
    }

    /// After a restart: nothing in `tmp/`, nothing but Berth's own files at the
    /// top, and every file under `blobs/` named by a digest it hashes to.
    func cacheProblems(afterRestart: Bool) -> [String] {
        let fm = FileManager.default
        let root = berth.cacheDir
        var problems: [String] = []
        if afterRestart, !tempFiles().isEmpty { problems.append("temp files survived the restart: \(tempFiles())") }
        let known: Set<String> = ["blobs", "tmp", "index.log", "berth.lock", "admin.sock", "quarantine"]
        for entry in (try? fm.contentsOfDirectory(atPath: root)) ?? [] where !known.contains(entry) && afterRestart {
            problems.append("\(entry) left in the cache directory after the restart")
        }
        let blobs = root + "/blobs/sha256"
        for prefix in (try? fm.contentsOfDirectory(atPath: blobs)) ?? [] {
            for name in (try? fm.contentsOfDirectory(atPath: "\(blobs)/\(prefix)")) ?? [] {
                count("blob files hashed")
                guard name.count == 64, name.hasPrefix(prefix), name.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
                    problems.append("blobs/sha256/\(prefix)/\(name) is not named by a digest")
                    continue
                }
                let h = sha256Hex(file: "\(blobs)/\(prefix)/\(name)")
                if h != name { problems.append("blobs/sha256/\(prefix)/\(name) hashes to \(h ?? "(unreadable)")") }
            }
        }
        return problems
    }

    /// The end of the run: every file under `blobs/` still hashes to its name.
    func checkWholeCache(afterRestart: Bool) {
        let problems = cacheProblems(afterRestart: afterRestart)
        if !problems.isEmpty { Issue.record(Comment(rawValue: "the cache after the run:\n" + problems.joined(separator: "\n"))) }
    }

    // MARK: reporting

    func summary(wall: Double) -> String {
        let lines = counts.sorted { $0.key < $1.key }.map { "  \($0.key): \($0.value)" }
        return "DigestInvariant: \(number) schedules in \(String(format: "%.1f", wall)) s, \(restarts) kill -9 restarts, slowest schedule \(String(format: "%.1f", slowest)) s"
            + (strictRanges ? " (strict ranges)" : "") + "\n" + lines.joined(separator: "\n")
    }

    static func errorClass(_ why: String) -> String {
        if why.hasPrefix("curl exit") { return "(curl exit \(why.dropFirst(10).prefix(while: \.isNumber)))" }
        if let colon = why.firstIndex(of: ":") { return "(\(why[..<colon]))" }
        if why.hasPrefix("body ") { return "(short body)" }
        return "(\(why))"
    }

    static func faultClass(_ entry: String) -> String {
        // "GET#0:cut@12+3ms" → "GET cut"
        let parts = entry.split(separator: ":", maxSplits: 1)
        let method = parts[0].split(separator: "#")[0]
        let f = parts.count > 1 ? parts[1] : ""
        let fault = f.first?.isNumber == true ? f : f.prefix(while: \.isLetter)
        return "\(method) \(fault)"
    }
}

/// The last `bytes` of a file, as text.
func logTail(_ path: String, bytes: Int) -> String {
    guard let h = FileHandle(forReadingAtPath: path) else { return "(no log)" }
    defer { try? h.close() }
    let end = h.seekToEndOfFile()
    h.seek(toFileOffset: end > UInt64(bytes) ? end - UInt64(bytes) : 0)
    return String(decoding: h.readDataToEndOfFile(), as: UTF8.self)
}
