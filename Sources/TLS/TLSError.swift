import COpenSSL

/// A TLS failure: a context that could not be built, a handshake that failed
/// (verification, protocol version, alert from the peer) or a corrupt record.
///
/// `message` says what Berth was doing and carries OpenSSL's error queue,
/// drained at the point of failure, so a log line alone explains it.
public struct TLSError: Error, CustomStringConvertible {
    /// What failed, followed by OpenSSL's own error strings.
    public let message: String

    /// True when the failure is the peer's certificate failing verification
    /// (unknown issuer, expired, wrong name).
    public let isVerificationFailure: Bool

    init(message: String, isVerificationFailure: Bool = false) {
        self.message = message
        self.isVerificationFailure = isVerificationFailure
    }

    public var description: String { message }

    /// `what`, followed by every entry of this thread's OpenSSL error queue
    /// (which it empties).
    static func drainingQueue(_ what: String, isVerificationFailure: Bool = false) -> TLSError {
        let queue = drainErrorQueue()
        return TLSError(
            message: queue.isEmpty ? what : "\(what) (\(queue.joined(separator: "; ")))",
            isVerificationFailure: isVerificationFailure
        )
    }

    /// Empties this thread's OpenSSL error queue into readable strings.
    static func drainErrorQueue() -> [String] {
        var entries: [String] = []
        var buffer = [CChar](repeating: 0, count: 256)
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            ERR_error_string_n(code, &buffer, buffer.count)
            entries.append(String(cString: buffer))
        }
        return entries
    }
}
