/// The deadlines that bound what a server connection waits for, decided as a
/// value: the connection says what it waits for (`Wait`), this says whether
/// the wait has run out (`Expiry`). No clock inside: tests pass `now`.
///
/// | waiting for                                  | bound                          | on expiry      |
/// |----------------------------------------------|--------------------------------|----------------|
/// | the first request of a new connection        | `head`, from accept            | close quietly  |
/// | (TLS handshake included) — nothing arrived   |                                |                |
/// | the rest of a request head                   | `head`, from accept (first     | 408, close     |
/// |                                              | request) or its first byte     |                |
/// | the next request on a kept-alive connection  | `idle`, since the last answer  | close quietly  |
/// | the client to take queued output             | `stall`, since the last write  | close          |
/// | a handler (the upstream)                     | the handler's own timeouts     | —              |
///
/// The head bound is absolute: a client dribbling a byte a second does not
/// move it, so a connection costs at most `head` before it sends a request.
public struct ConnectionTimeouts: Equatable, Sendable {
    /// A request head must be complete this long after it started.
    public var headNanos: UInt64
    /// A kept-alive connection with no request in flight closes after this long.
    public var idleNanos: UInt64
    /// A response the client stops reading closes after this long without progress.
    public var stallNanos: UInt64

    public init(headNanos: UInt64, idleNanos: UInt64, stallNanos: UInt64) {
        self.headNanos = headNanos
        self.idleNanos = idleNanos
        self.stallNanos = stallNanos
    }

    /// What a connection waits for, with the moment its bound counts from.
    public enum Wait: Equatable, Sendable {
        /// Accepted; not one byte of a request yet (a TLS handshake may be under way).
        case firstRequest(acceptedAt: UInt64)
        /// Answered at least one request; nothing of the next one yet.
        case nextRequest(idleSince: UInt64)
        /// Part of a request has arrived; the head bound counts from `since`.
        case head(since: UInt64)
        /// The handler is producing the answer.
        case handler
        /// Output is queued that the client has not taken.
        case client(lastProgress: UInt64)
    }

    /// What to do about a wait.
    public enum Expiry: Equatable, Sendable {
        /// Still within its bound (or unbounded here).
        case none
        /// Close without a word: nothing was asked, or no answer can get through.
        case close
        /// Answer 408 Request Timeout, then close.
        case requestTimeout
    }

    /// The moment `wait` runs out; nil when it is not bounded here.
    public func deadline(of wait: Wait) -> UInt64? {
        switch wait {
        case .firstRequest(let t), .head(let t): return t &+ headNanos
        case .nextRequest(let t): return t &+ idleNanos
        case .client(let t): return t &+ stallNanos
        case .handler: return nil
        }
    }

    /// Whether `wait` has run out at `now`, and how to end it.
    public func expiry(of wait: Wait, now: UInt64) -> Expiry {
        guard let deadline = deadline(of: wait), now >= deadline else { return .none }
        if case .head = wait { return .requestTimeout }
        return .close
    }

    /// How often a loop checks its connections: a quarter of the shortest
    /// bound, between 10 ms and 1 s. A deadline fires at most that late.
    public var sweepIntervalNanos: UInt64 {
        let shortest = min(headNanos, idleNanos, stallNanos)
        return min(max(shortest / 4, 10_000_000), 1_000_000_000)
    }
}
