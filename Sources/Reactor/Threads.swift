#if canImport(Glibc)
import Glibc
import CLinux
#endif
import Synchronization

/// Starts a detached-joinable POSIX thread running `body`.
public final class OSThread: @unchecked Sendable {  // `handle` is written once before any reader
    private var handle = pthread_t()

    private final class Box { let body: () -> Void; init(_ b: @escaping () -> Void) { body = b } }

    public init(name: String, _ body: @escaping () -> Void) {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        let r = pthread_create(&handle, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body()
            return nil
        }, box)
        precondition(r == 0, "pthread_create failed: \(r)")
        _ = pthread_setname_np(handle, String(name.prefix(15)))
    }

    public func join() { pthread_join(handle, nil) }

    /// Lets the thread end without a `join` (its resources are freed when it returns).
    public func detach() { pthread_detach(handle) }
}

/// One event loop per thread, `count` of them (default: one per core).
public final class EventLoopGroup: @unchecked Sendable {  // `loops` is immutable after init; `cursor` is atomic
    public let loops: [EventLoop]
    private var threads: [OSThread] = []
    private let cursor = Atomic<Int>(0)

    public init(count: Int = System.coreCount) throws {
        loops = try (0..<max(1, count)).map { try EventLoop(index: $0) }
    }

    /// Starts every loop on its own thread.
    public func start() {
        threads = loops.map { loop in OSThread(name: "berth-loop-\(loop.index)") { loop.run() } }
    }

    /// Round-robin choice, for work that is not tied to a connection.
    public func next() -> EventLoop {
        loops[cursor.wrappingAdd(1, ordering: .relaxed).oldValue % loops.count]
    }

    /// Stops every loop and waits for its thread.
    public func shutdown() {
        for loop in loops { loop.stop() }
        for t in threads { t.join() }
        threads = []
    }
}

/// A small pool of threads for work that may block: fsync, rename, directory
/// scans, hashing whole files, name lookups, building TLS contexts. Results go
/// back to a loop with `EventLoop.execute`.
public final class BlockingPool: @unchecked Sendable {  // `queue` and `closed` are guarded by `mutex`
    private var queue: [() -> Void] = []
    private var head = 0
    private var closed = false
    private var cond = pthread_cond_t()
    private var mutex = pthread_mutex_t()
    private var threads: [OSThread] = []

    public init(threads count: Int = 2) {
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&cond, nil)
        threads = (0..<max(1, count)).map { i in OSThread(name: "berth-pool-\(i)") { [unowned self] in self.work() } }
    }

    /// Runs `work` on a pool thread.
    public func submit(_ work: @escaping () -> Void) {
        pthread_mutex_lock(&mutex)
        queue.append(work)
        pthread_cond_signal(&cond)
        pthread_mutex_unlock(&mutex)
    }

    /// Runs `work` on a pool thread, then `completion` with its result on `loop`.
    public func run<T>(on loop: EventLoop, _ work: @escaping () throws -> T, then completion: @escaping (Result<T, Error>) -> Void) {
        submit {
            let result = Result { try work() }
            loop.execute { completion(result) }
        }
    }

    private func work() {
        while true {
            pthread_mutex_lock(&mutex)
            while head == queue.count && !closed { pthread_cond_wait(&cond, &mutex) }
            if head == queue.count { pthread_mutex_unlock(&mutex); return }
            let job = queue[head]
            head += 1
            if head == queue.count { queue.removeAll(keepingCapacity: true); head = 0 }
            pthread_mutex_unlock(&mutex)
            job()
        }
    }

    /// Finishes queued work, then stops the threads.
    public func shutdown() {
        pthread_mutex_lock(&mutex)
        closed = true
        pthread_cond_broadcast(&cond)
        pthread_mutex_unlock(&mutex)
        for t in threads { t.join() }
        threads = []
    }
}

/// Facts about the machine.
public enum System {
    public static var coreCount: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    /// The open-file limit (RLIMIT_NOFILE) after raising the soft limit to the
    /// hard one, as servers do at start (descriptors are what connections cost).
    /// Returns the soft limit in force.
    @discardableResult
    public static func raiseOpenFileLimit() -> Int {
        var rl = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl)
        }
        return openFileLimit
    }

    /// The soft open-file limit (RLIMIT_NOFILE) in force.
    public static var openFileLimit: Int {
        var rl = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl) == 0 else { return 1024 }
        return Int(clamping: min(rl.rlim_cur, rlim_t(Int32.max)))
    }

    /// User and system CPU time this process has used, in seconds (getrusage).
    public static var cpuSeconds: Double {
        var u = rusage()
        guard getrusage(RUSAGE_SELF.rawValue, &u) == 0 else { return 0 }
        return Double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + Double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6
    }

    /// Resident set size in bytes, from /proc/self/statm.
    public static func residentBytes() -> Int {
        guard let f = fopen("/proc/self/statm", "r") else { return 0 }
        defer { fclose(f) }
        var size = 0, rss = 0
        withUnsafeMutablePointer(to: &size) { s in
            withUnsafeMutablePointer(to: &rss) { r in
                _ = withVaList([s, r]) { vfscanf(f, "%ld %ld", $0) }
            }
        }
        return rss * Int(sysconf(Int32(_SC_PAGESIZE)))
    }
}

/// Delivers SIGTERM, SIGINT and SIGHUP through a signalfd on a loop instead of
/// an async-signal handler. `blockProcessSignals()` must run on the main thread
/// before any other thread starts, so every thread inherits the mask.
public final class SignalSource: Selectable {
    private let fd: Int32
    private let loop: EventLoop
    private let handler: (Int32) -> Void

    public static let handled: [Int32] = [SIGTERM, SIGINT, SIGHUP]

    public static func blockProcessSignals() {
        var set = sigset_t()
        sigemptyset(&set)
        for s in handled { sigaddset(&set, s) }
        pthread_sigmask(SIG_BLOCK, &set, nil)
        signal(SIGPIPE, SIG_IGN)
    }

    /// Call on `loop`'s thread (or before it runs).
    public init(loop: EventLoop, handler: @escaping (Int32) -> Void) throws {
        var set = sigset_t()
        sigemptyset(&set)
        for s in SignalSource.handled { sigaddset(&set, s) }
        fd = try Posix.blocking("signalfd") { signalfd(-1, &set, Int32(SFD_NONBLOCK | SFD_CLOEXEC)) }
        self.loop = loop
        self.handler = handler
        try loop.register(fd: fd, events: Readiness.readable, handler: self)
    }

    public func handleEvents(_ events: UInt32) {
        var info = signalfd_siginfo()
        while case .processed(let n)? = try? withUnsafeMutableBytes(of: &info, { try Posix.read(fd: fd, into: $0) }),
              n == MemoryLayout<signalfd_siginfo>.size {
            handler(Int32(info.ssi_signo))
        }
    }
}
