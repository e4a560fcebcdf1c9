import HTTP1
import OCI

/// The mirror's upstream token flow for another client of a registry
/// (`berth bench`): the challenge learned once from `/v2/`, the realm checked
/// by `RealmPolicy`, bearer tokens per `repository:<name>:pull` scope cached
/// until shortly before they expire, basic credentials where the registry asks
/// for them. The same code as the mirror's, not a copy. Loop thread only.
package final class RegistryCredentials {
    private let upstream: Upstream

    /// Credentials for `url` (the registry's origin), sent with `client`.
    package init(client: HTTPClient, url: HTTPURL, username: String?, password: String?) {
        var config = UpstreamConfiguration(url: url)
        config.username = username
        config.password = password
        let breaker = CircuitBreaker(name: config.name, windowNanos: 0, maxBackoffNanos: 0)
        upstream = Upstream(client: client, auth: UpstreamAuth(config: config), failover: Failover([url]),
                            breaker: breaker, limiter: RequestLimiter(limit: 0), deadlineNanos: 60_000_000_000)
    }

    /// The `Authorization` value for pulling `repository` (nil when the registry needs none),
    /// or why there is none (`UpstreamError.description`). `refresh` drops a cached token first.
    package func authorization(repository: String, refresh: Bool = false, _ done: @escaping (Result<String?, UpstreamError>) -> Void) {
        upstream.authorization(repository: repository, refresh: refresh, done)
    }
}
