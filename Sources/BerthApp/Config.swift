import Yams
import Reactor

/// Berth's configuration: `conf/berth.yaml` documents every key and its
/// default; the defaults here are the embedded configuration `berth serve`
/// runs with when no file is given.
///
/// Precedence: defaults < file < `BERTH_<SECTION>_<KEY>` environment < flags.
public struct BerthConfig: Equatable, Sendable {
    /// Plain HTTP address: `:5000`, `127.0.0.1:5000`, `[::1]:5000`.
    public var listen = ":5000"
    public var tls = TLSSection()
    /// Event-loop threads; 0 means one per core.
    public var workers = 0
    public var log = LogSection()

    public struct TLSSection: Equatable, Sendable {
        /// HTTPS address; empty turns HTTPS off.
        public var listen = ""
        /// PEM certificate chain and private key (re-read on SIGHUP).
        public var certificate = ""
        public var key = ""
    }

    public struct LogSection: Equatable, Sendable {
        /// trace, debug, info, notice, warning, error, critical.
        public var level = "info"
    }

    public init() {}

    static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]

    /// Parses YAML text; unknown keys and bad values are errors that name the key.
    public static func parse(yaml: String) throws -> BerthConfig {
        var c = BerthConfig()
        let root: Any?
        do { root = try Yams.load(yaml: yaml) } catch { throw ConfigError(key: "(file)", "not valid YAML: \(error)") }
        guard let root else { return c }
        let top = try table(root, key: "(top level)")
        for (k, v) in top {
            switch k {
            case "listen": c.listen = try string(v, key: "listen")
            case "workers": c.workers = try int(v, key: "workers")
            case "tls":
                for (tk, tv) in try table(v, key: "tls") {
                    switch tk {
                    case "listen": c.tls.listen = try string(tv, key: "tls.listen")
                    case "certificate": c.tls.certificate = try string(tv, key: "tls.certificate")
                    case "key": c.tls.key = try string(tv, key: "tls.key")
                    default: throw ConfigError(key: "tls.\(tk)", "unknown key")
                    }
                }
            case "log":
                for (lk, lv) in try table(v, key: "log") {
                    switch lk {
                    case "level": c.log.level = try string(lv, key: "log.level")
                    default: throw ConfigError(key: "log.\(lk)", "unknown key")
                    }
                }
            default: throw ConfigError(key: k, "unknown key")
            }
        }
        try c.validate()
        return c
    }

    /// Applies `BERTH_LISTEN`, `BERTH_WORKERS`, `BERTH_TLS_LISTEN`,
    /// `BERTH_TLS_CERTIFICATE`, `BERTH_TLS_KEY`, `BERTH_LOG_LEVEL`.
    public mutating func apply(environment env: [String: String]) throws {
        if let v = env["BERTH_LISTEN"] { listen = v }
        if let v = env["BERTH_WORKERS"] {
            guard let n = Int(v) else { throw ConfigError(key: "workers", "BERTH_WORKERS=\(v) is not a whole number") }
            workers = n
        }
        if let v = env["BERTH_TLS_LISTEN"] { tls.listen = v }
        if let v = env["BERTH_TLS_CERTIFICATE"] { tls.certificate = v }
        if let v = env["BERTH_TLS_KEY"] { tls.key = v }
        if let v = env["BERTH_LOG_LEVEL"] { log.level = v }
        try validate()
    }

    /// Checks values that parse but cannot work.
    public func validate() throws {
        guard SocketAddress(listen) != nil else {
            throw ConfigError(key: "listen", "\"\(listen)\" is not an address: use \":5000\", \"127.0.0.1:5000\" or \"[::1]:5000\"")
        }
        if !tls.listen.isEmpty {
            guard SocketAddress(tls.listen) != nil else {
                throw ConfigError(key: "tls.listen", "\"\(tls.listen)\" is not an address: use \":5443\" or \"127.0.0.1:5443\"")
            }
            if tls.certificate.isEmpty { throw ConfigError(key: "tls.certificate", "required when tls.listen is set") }
            if tls.key.isEmpty { throw ConfigError(key: "tls.key", "required when tls.listen is set") }
        }
        guard (0...256).contains(workers) else { throw ConfigError(key: "workers", "\(workers) is out of range 0...256") }
        guard Self.logLevels.contains(log.level) else {
            throw ConfigError(key: "log.level", "\"\(log.level)\" is not one of \(Self.logLevels.joined(separator: ", "))")
        }
    }

    // MARK: YAML helpers

    private static func table(_ v: Any, key: String) throws -> [(String, Any)] {
        guard let d = v as? [String: Any] else { throw ConfigError(key: key, "expected a mapping") }
        return d.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    private static func string(_ v: Any, key: String) throws -> String {
        if let s = v as? String { return s }
        if let i = v as? Int { return String(i) }
        throw ConfigError(key: key, "expected a string")
    }

    private static func int(_ v: Any, key: String) throws -> Int {
        if let i = v as? Int { return i }
        throw ConfigError(key: key, "expected a whole number")
    }
}

/// A configuration value Berth cannot run with; `key` is the dotted key path.
public struct ConfigError: Error, CustomStringConvertible, Equatable {
    public let key: String
    public let message: String
    public init(key: String, _ message: String) {
        self.key = key
        self.message = message
    }
    public var description: String { "config: \(key): \(message)" }
}
