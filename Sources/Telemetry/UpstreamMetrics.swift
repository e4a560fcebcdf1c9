public import Prometheus
import Synchronization

/// One upstream's metrics, all labelled `upstream="<name>"`: every content
/// request Berth sends it (a retry or a failover is a request of its own).
public final class UpstreamMetrics: Sendable {
    public let name: String
    private let registry: PrometheusCollectorRegistry
    /// From sending a request to its response head.
    public let timeToFirstByte: DurationHistogram
    /// Body bytes per second of responses of 1 MiB or more (smaller ones say little about the link).
    public let throughput: ValueHistogram
    /// Response body bytes received.
    public let receivedBytes: Counter
    public let rateLimited: Counter
    private let tokens: (ok: Counter, failed: Counter)
    private let retries: (unauthorized: Counter, failover: Counter)
    private let responses = Mutex<[Int16: Counter]>([:])
    private let errors = Mutex<[String: Counter]>([:])

    /// Bodies at least this long are timed for `throughput`.
    public static let throughputMinBytes: UInt64 = 1 << 20

    init(name: String, registry: PrometheusCollectorRegistry) {
        self.name = name
        self.registry = registry
        let u = [("upstream", name)]
        timeToFirstByte = registry.makeDurationHistogram(
            descriptor: .init(namespace: "berth", subsystem: "upstream", metricName: "time_to_first_byte", unitName: "seconds",
                              helpText: "From a request sent to an upstream to its response head."),
            labels: u, buckets: [.milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
                                 .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5),
                                 .seconds(10), .seconds(30)])
        throughput = registry.makeValueHistogram(
            descriptor: .init(namespace: "berth", subsystem: "upstream", metricName: "throughput", unitName: "bytes_per_second",
                              helpText: "Body rate of upstream responses of 1 MiB or more, from response head to last byte."),
            labels: u, buckets: [1e6, 5e6, 10e6, 25e6, 50e6, 100e6, 250e6, 500e6, 1e9, 2.5e9])
        receivedBytes = registry.makeCounter(
            descriptor: .init(namespace: "berth", subsystem: "upstream", metricName: "received", unitName: "bytes_total",
                              helpText: "Response body bytes received from the upstream."), labels: u)
        rateLimited = registry.makeCounter(
            descriptor: .init(namespace: "berth", subsystem: "upstream", metricName: "rate_limited", unitName: "total",
                              helpText: "Upstream answers that rate-limited Berth: 429, or ratelimit-remaining: 0."), labels: u)
        let tokenName = MetricNameDescriptor(namespace: "berth", subsystem: "upstream", metricName: "tokens", unitName: "total",
                                             helpText: "Bearer tokens fetched from the upstream's token service, by outcome.")
        tokens = (registry.makeCounter(descriptor: tokenName, labels: u + [("outcome", "ok")]),
                  registry.makeCounter(descriptor: tokenName, labels: u + [("outcome", "failed")]))
        let retryName = MetricNameDescriptor(namespace: "berth", subsystem: "upstream", metricName: "retries", unitName: "total",
                                             helpText: "Requests sent again: after a 401 (new token), or to the next URL (failover).")
        retries = (registry.makeCounter(descriptor: retryName, labels: u + [("reason", "unauthorized")]),
                   registry.makeCounter(descriptor: retryName, labels: u + [("reason", "failover")]))
    }

    /// A response head arrived `nanos` after its request went out.
    public func responded(status: Int, afterNanos nanos: UInt64) {
        timeToFirstByte.recordNanoseconds(Int64(clamping: nanos))
        let code = Int16(clamping: status)
        let c = responses.withLock { table in
            if let c = table[code] { return c }
            let c = registry.makeCounter(descriptor: .init(namespace: "berth", subsystem: "upstream", metricName: "responses", unitName: "total",
                                                           helpText: "Upstream response heads received, by status."),
                                         labels: [("upstream", name), ("status", String(code))])
            table[code] = c
            return c
        }
        c.increment()
        if status == 429 { rateLimited.increment() }
    }

    /// A body of `bytes` ended `nanos` after its head.
    public func bodyEnded(bytes: UInt64, afterNanos nanos: UInt64) {
        guard bytes >= Self.throughputMinBytes, nanos > 0 else { return }
        throughput.record(Double(bytes) / (Double(nanos) / 1e9))
    }

    /// A request that got no complete answer: `kind` is connect, timeout, reset, tls, refused…
    public func failed(_ kind: String) {
        let c = errors.withLock { table in
            if let c = table[kind] { return c }
            let c = registry.makeCounter(descriptor: .init(namespace: "berth", subsystem: "upstream", metricName: "errors", unitName: "total",
                                                           helpText: "Upstream requests that ended without a complete response, by kind."),
                                         labels: [("upstream", name), ("kind", kind)])
            table[kind] = c
            return c
        }
        c.increment()
    }

    public func tokenFetched(ok: Bool) { (ok ? tokens.ok : tokens.failed).increment() }
    public func retried(failover: Bool) { (failover ? retries.failover : retries.unauthorized).increment() }
}
