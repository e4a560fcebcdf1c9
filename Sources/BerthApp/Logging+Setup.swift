import Logging
import Synchronization

/// Log lines go to stderr with the configured level. Every copy of the logger
/// reads one shared level, so a reload can change it (`setLogLevel`).
public func makeLogger(level: String) -> Logger {
    setLogLevel(level)
    return Logger(label: "berth") { SharedLevelHandler(inner: StreamLogHandler.standardError(label: $0)) }
}

/// Sets the level every logger made by `makeLogger` logs at (an unknown name: info).
public func setLogLevel(_ name: String) {
    let level = Logger.Level(rawValue: name) ?? .info
    sharedLogLevel.store(UInt8(Logger.Level.allCases.firstIndex(of: level)!), ordering: .relaxed)
}

/// The level in force, as an index into `Logger.Level.allCases`.
private let sharedLogLevel = Atomic<UInt8>(2)  // info

/// `StreamLogHandler` with its level read from `sharedLogLevel`.
struct SharedLevelHandler: LogHandler {
    var inner: StreamLogHandler

    var logLevel: Logger.Level {
        get { Logger.Level.allCases[Int(sharedLogLevel.load(ordering: .relaxed))] }
        set { sharedLogLevel.store(UInt8(Logger.Level.allCases.firstIndex(of: newValue)!), ordering: .relaxed) }
    }

    var metadata: Logger.Metadata {
        get { inner.metadata }
        set { inner.metadata = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { inner[metadataKey: key] }
        set { inner[metadataKey: key] = newValue }
    }

    func log(event: LogEvent) { inner.log(event: event) }
}
