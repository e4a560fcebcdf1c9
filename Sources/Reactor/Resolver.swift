#if canImport(Glibc)
import Glibc
import CLinux
#endif

/// Name lookups. `getaddrinfo` blocks (DNS, /etc/hosts), so it runs on the
/// blocking pool; IP literals are answered at once.
public enum Resolver {
    /// Calls `completion` on `loop` with the addresses of `host`, IPv4 first.
    public static func resolve(host: String, port: UInt16, pool: BlockingPool, loop: EventLoop,
                               completion: @escaping (Result<[SocketAddress], Error>) -> Void) {
        if let literal = SocketAddress(ip: host, port: port) {
            completion(.success([literal]))
            return
        }
        pool.run(on: loop, { try lookup(host: host, port: port) }, then: completion)
    }

    /// Blocking lookup; call from the pool only.
    public static func lookup(host: String, port: UInt16) throws -> [SocketAddress] {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &result)
        guard rc == 0, let first = result else {
            throw IOError(errno: EHOSTUNREACH, call: "getaddrinfo(\(host)): \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(first) }
        var v4: [SocketAddress] = [], v6: [SocketAddress] = []
        var p: UnsafeMutablePointer<addrinfo>? = first
        while let ai = p {
            var st = sockaddr_storage()
            if let sa = ai.pointee.ai_addr {
                withUnsafeMutableBytes(of: &st) { dst in
                    dst.copyMemory(from: UnsafeRawBufferPointer(start: sa, count: Int(ai.pointee.ai_addrlen)))
                }
                let a = SocketAddress(storage: st)
                if a.family == AF_INET { v4.append(a) } else if a.family == AF_INET6 { v6.append(a) }
            }
            p = ai.pointee.ai_next
        }
        return v4 + v6
    }

    /// The IP addresses of this host's interfaces (port 0): how a node finds itself in a list of peers.
    public static func localAddresses() -> [SocketAddress] {
        var first: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&first) == 0, let first else { return [] }
        defer { freeifaddrs(first) }
        var out: [SocketAddress] = []
        var p: UnsafeMutablePointer<ifaddrs>? = first
        while let ifa = p {
            if let sa = ifa.pointee.ifa_addr, sa.pointee.sa_family == sa_family_t(AF_INET) || sa.pointee.sa_family == sa_family_t(AF_INET6) {
                var st = sockaddr_storage()
                let size = sa.pointee.sa_family == sa_family_t(AF_INET) ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size
                withUnsafeMutableBytes(of: &st) { dst in dst.copyMemory(from: UnsafeRawBufferPointer(start: sa, count: size)) }
                out.append(SocketAddress(storage: st))
            }
            p = ifa.pointee.ifa_next
        }
        return out
    }
}
