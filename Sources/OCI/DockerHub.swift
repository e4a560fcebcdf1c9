/// Docker Hub's peculiarities: several host names, and the implicit `library/`
/// namespace of official images.
public enum DockerHub {
    /// The host names that mean Docker Hub's registry.
    public static let hosts: Set<String> = ["docker.io", "registry-1.docker.io", "index.docker.io", "registry.hub.docker.com"]

    /// True for a Docker Hub registry host (case-insensitive; a port or trailing dot is ignored).
    public static func isDockerHub(host: String) -> Bool {
        var h = RealmPolicy.stripPort(host).lowercased()
        if h.hasSuffix(".") { h.removeLast() }
        return hosts.contains(h)
    }

    /// The name to ask the upstream for: a one-component name on Docker Hub
    /// gets `library/` (`alpine` → `library/alpine`); anything else is unchanged.
    public static func upstreamName(_ name: String, host: String) -> String {
        guard isDockerHub(host: host), !name.isEmpty, !name.utf8.contains(UInt8(ascii: "/")) else { return name }
        return "library/" + name
    }
}
