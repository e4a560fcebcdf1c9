import Logging

/// Log lines go to stderr with the configured level.
public func makeLogger(level: String) -> Logger {
    var logger = Logger(label: "berth") { StreamLogHandler.standardError(label: $0) }
    logger.logLevel = Logger.Level(rawValue: level) ?? .info
    return logger
}
