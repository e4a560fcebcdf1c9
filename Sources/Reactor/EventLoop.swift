#if canImport(Glibc)
import Glibc
import CLinux
#endif
import Synchronization

/// Something registered with an event loop: told about readiness on its descriptor.
///
/// Called on the loop thread only. A handler may close its own descriptor
/// (after `deregister`) from inside `handleEvents`; later events for that
/// descriptor in the same batch are dropped by the generation check.
public protocol Selectable: AnyObject {
    func handleEvents(_ events: UInt32)
}

/// Epoll readiness bits, named.
public enum Readiness {
    public static let readable = UInt32(EPOLLIN.rawValue)
    public static let writable = UInt32(EPOLLOUT.rawValue)
    public static let readHangup = UInt32(EPOLLRDHUP.rawValue)
    public static let hangup = UInt32(EPOLLHUP.rawValue)
    public static let error = UInt32(EPOLLERR.rawValue)
    /// Edge-triggered: reported once per change of state.
    public static let edge = UInt32(EPOLLET.rawValue)
}

/// One thread's epoll loop: descriptor readiness, timers and tasks posted from
/// other threads.
///
/// **Edge- or level-triggered.** Connections register once, edge-triggered,
/// for reading *and* writing, and are never modified afterwards: that saves
/// an `epoll_ctl` every time a response stops or starts waiting for the
/// socket. The price is a rule every handler keeps: after an edge it reads
/// (or writes) until `EAGAIN`, or remembers that it stopped early and resumes
/// by itself. Listening sockets are level-triggered so an `accept` burst cut
/// short (EMFILE, fairness) is reported again on the next turn.
///
/// Threading: everything here is loop-thread-only except `execute`,
/// `schedule`, `stop` and `inLoop`, which any thread may call.
public final class EventLoop: @unchecked Sendable {  // cross-thread entry points are locked or atomic
    /// Position in its group; useful for logs and per-loop state.
    public let index: Int

    private let epfd: Int32
    private let wakeFD: Int32
    private var registrations: [Registration?] = []  // indexed by fd; loop thread only
    private var generation: UInt32 = 0               // loop thread only
    private var timers = TimerHeap()                 // loop thread only
    private let tasks = Mutex<[() -> Void]>([])
    private let running = Atomic<Bool>(false)
    private let stopRequested = Atomic<Bool>(false)
    private let threadID = Atomic<UInt>(0)
    private var cachedNow: UInt64 = 0                // loop thread only

    private struct Registration {
        let handler: Selectable
        let generation: UInt32
    }

    public init(index: Int = 0) throws {
        self.index = index
        epfd = try Posix.epollCreate()
        wakeFD = try Posix.eventfd()
        try Posix.epollCtl(epfd: epfd, op: EPOLL_CTL_ADD, fd: wakeFD, events: Readiness.readable, data: UInt64(UInt32.max))
        cachedNow = Clock.monotonicNanos()
    }

    deinit {
        Posix.close(fd: wakeFD)
        Posix.close(fd: epfd)
    }

    /// True when called on this loop's thread.
    public var inLoop: Bool { threadID.load(ordering: .relaxed) == UInt(pthread_self()) }

    /// Monotonic nanoseconds, read once per loop turn: cheap enough for every
    /// timeout check.
    public var now: UInt64 { cachedNow }

    // MARK: descriptors

    /// Registers `fd`; `events` are `Readiness` bits (add `.edge` for edge-triggered).
    public func register(fd: Int32, events: UInt32, handler: Selectable) throws {
        generation &+= 1
        if generation == UInt32.max { generation = 1 }
        let index = Int(fd)
        if index >= registrations.count {
            registrations.append(contentsOf: repeatElement(nil, count: max(index + 1 - registrations.count, 64)))
        }
        try Posix.epollCtl(epfd: epfd, op: EPOLL_CTL_ADD, fd: fd, events: events, data: UInt64(fd) | UInt64(generation) << 32)
        registrations[index] = Registration(handler: handler, generation: generation)
    }

    /// Changes the interest set of a registered descriptor.
    public func modify(fd: Int32, events: UInt32) throws {
        guard let reg = registrations[Int(fd)] else { return }
        try Posix.epollCtl(epfd: epfd, op: EPOLL_CTL_MOD, fd: fd, events: events, data: UInt64(fd) | UInt64(reg.generation) << 32)
    }

    /// Stops events for `fd`. Call before closing it.
    public func deregister(fd: Int32) {
        guard Int(fd) < registrations.count, registrations[Int(fd)] != nil else { return }
        registrations[Int(fd)] = nil
        try? Posix.epollCtl(epfd: epfd, op: EPOLL_CTL_DEL, fd: fd, events: 0, data: 0)
    }

    // MARK: timers and tasks

    /// Runs `body` on this loop after `delay` nanoseconds, unless cancelled.
    /// Safe from any thread: off the loop, the timer is handed over with `execute`
    /// (the heap itself is loop-thread only).
    @discardableResult
    public func schedule(afterNanos delay: UInt64, _ body: @escaping () -> Void) -> Timer {
        let timer = Timer(deadline: Clock.monotonicNanos() &+ delay, body: body)
        if inLoop { timers.push(timer) } else { execute { self.timers.push(timer) } }
        return timer
    }

    /// Runs `task` on the loop thread soon. Safe from any thread.
    public func execute(_ task: @escaping () -> Void) {
        let wasEmpty = tasks.withLock { q -> Bool in
            q.append(task)
            return q.count == 1
        }
        if wasEmpty || !inLoop { wake() }
    }

    private func wake() {
        var one: UInt64 = 1
        _ = withUnsafeBytes(of: &one) { try? Posix.write(fd: wakeFD, $0) }
    }

    /// Asks `run` to return after the current turn. Safe from any thread.
    public func stop() {
        stopRequested.store(true, ordering: .sequentiallyConsistent)
        wake()
    }

    // MARK: the loop

    /// Runs until `stop`. Call from the thread that will own the loop.
    public func run() {
        threadID.store(UInt(pthread_self()), ordering: .relaxed)
        running.store(true, ordering: .relaxed)
        let capacity = 512
        let events = UnsafeMutableBufferPointer<epoll_event>.allocate(capacity: capacity)
        defer { events.deallocate() }
        while !stopRequested.load(ordering: .relaxed) {
            let timeout = nextTimeoutMillis()
            let n: Int
            do { n = try Posix.epollWait(epfd: epfd, events: events, timeoutMillis: timeout) } catch {
                preconditionFailure("epoll_wait failed: \(error)")
            }
            cachedNow = Clock.monotonicNanos()
            for i in 0..<n {
                let data = events[i].data.u64
                let fd = Int(truncatingIfNeeded: data & 0xffff_ffff)
                if data == UInt64(UInt32.max) {
                    var buf: UInt64 = 0
                    _ = withUnsafeMutableBytes(of: &buf) { try? Posix.read(fd: wakeFD, into: $0) }
                    continue
                }
                // Drop events for a descriptor closed (and perhaps reused) earlier in this batch.
                guard fd < registrations.count, let reg = registrations[fd],
                      reg.generation == UInt32(truncatingIfNeeded: data >> 32) else { continue }
                reg.handler.handleEvents(events[i].events)
            }
            runTimers()
            runTasks()
        }
        running.store(false, ordering: .relaxed)
        stopRequested.store(false, ordering: .relaxed)
    }

    private func nextTimeoutMillis() -> Int32 {
        if !tasks.withLock({ $0.isEmpty }) { return 0 }
        guard let deadline = timers.nextDeadline() else { return -1 }
        let now = Clock.monotonicNanos()
        if deadline <= now { return 0 }
        return Int32(min((deadline - now + 999_999) / 1_000_000, 60_000))
    }

    private func runTimers() {
        let now = Clock.monotonicNanos()
        while let timer = timers.popExpired(now: now) {
            if !timer.isCancelled { timer.fire() }
        }
    }

    private func runTasks() {
        // Run only what is queued now: tasks that post tasks wait for the next turn.
        let batch = tasks.withLock { q -> [() -> Void] in
            let b = q
            q.removeAll(keepingCapacity: true)
            return b
        }
        for task in batch { task() }
    }
}

/// A scheduled callback; `cancel` before it fires to drop it. Loop thread only.
public final class Timer {
    let deadline: UInt64
    private var body: (() -> Void)?
    public private(set) var isCancelled = false

    init(deadline: UInt64, body: @escaping () -> Void) {
        self.deadline = deadline
        self.body = body
    }

    public func cancel() {
        isCancelled = true
        body = nil
    }

    func fire() {
        let b = body
        body = nil
        b?()
    }
}

/// Binary min-heap of timers by deadline; cancelled timers are dropped lazily.
struct TimerHeap {
    private var items: [Timer] = []

    mutating func push(_ t: Timer) {
        items.append(t)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if items[parent].deadline <= items[i].deadline { break }
            items.swapAt(parent, i)
            i = parent
        }
    }

    mutating func nextDeadline() -> UInt64? {
        while let first = items.first, first.isCancelled { _ = pop() }
        return items.first?.deadline
    }

    mutating func popExpired(now: UInt64) -> Timer? {
        guard let first = items.first, first.deadline <= now || first.isCancelled else { return nil }
        return pop()
    }

    private mutating func pop() -> Timer? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < items.count && items[l].deadline < items[m].deadline { m = l }
            if r < items.count && items[r].deadline < items[m].deadline { m = r }
            if m == i { break }
            items.swapAt(i, m)
            i = m
        }
        return top
    }
}

/// Monotonic time.
public enum Clock {
    public static func monotonicNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    /// Wall-clock time in Unix milliseconds.
    public static func unixMillis() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }
}
