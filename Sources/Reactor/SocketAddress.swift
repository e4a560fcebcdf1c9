#if canImport(Glibc)
import Glibc
import CLinux
#endif

/// An IPv4, IPv6 or unix-domain socket address.
///
/// Parsed from `host:port`, `[v6]:port` or `:port` (all interfaces). Only IP
/// literals are parsed here: name lookups block and belong on the worker pool
/// (`Resolver`). Unix-domain addresses (`init(unixPath:)`) serve local
/// administration, such as the cache's admin socket.
public struct SocketAddress: Equatable, CustomStringConvertible, Sendable {
    var storage: sockaddr_storage

    init(storage: sockaddr_storage) { self.storage = storage }

    public var family: Int32 { Int32(storage.ss_family) }

    /// `"127.0.0.1:5000"`, `"[::1]:443"`, `":5000"` (IPv6 any, dual-stack) or
    /// `"0.0.0.0:5000"`. Nil when the text is not an IP literal with a port.
    public init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]) else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty { host = "::" }
        self.init(ip: host, port: port)
    }

    /// An address from an IP literal and a port; nil when `ip` is not a literal.
    public init?(ip: String, port: UInt16) {
        var st = sockaddr_storage()
        var a4 = in_addr()
        var a6 = in6_addr()
        if inet_pton(AF_INET, ip, &a4) == 1 {
            withUnsafeMutablePointer(to: &st) { p in
                p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    sin.pointee.sin_family = sa_family_t(AF_INET)
                    sin.pointee.sin_port = port.bigEndian
                    sin.pointee.sin_addr = a4
                }
            }
        } else if inet_pton(AF_INET6, ip, &a6) == 1 {
            withUnsafeMutablePointer(to: &st) { p in
                p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin in
                    sin.pointee.sin6_family = sa_family_t(AF_INET6)
                    sin.pointee.sin6_port = port.bigEndian
                    sin.pointee.sin6_addr = a6
                }
            }
        } else {
            return nil
        }
        storage = st
    }

    /// A unix-domain stream address; nil when `path` is empty or longer than
    /// `sun_path` holds (107 bytes on Linux).
    public init?(unixPath path: String) {
        var st = sockaddr_storage()
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: sockaddr_un().sun_path)
        guard !bytes.isEmpty, bytes.count < capacity, !bytes.contains(0) else { return nil }
        withUnsafeMutablePointer(to: &st) { p in
            p.withMemoryRebound(to: sockaddr_un.self, capacity: 1) { sun in
                sun.pointee.sun_family = sa_family_t(AF_UNIX)
                withUnsafeMutableBytes(of: &sun.pointee.sun_path) { dst in
                    dst.copyBytes(from: bytes)
                }
            }
        }
        storage = st
    }

    /// The path of a unix-domain address, nil for IP addresses.
    public var unixPath: String? {
        guard family == AF_UNIX else { return nil }
        return withUnsafePointer(to: storage) { p in
            p.withMemoryRebound(to: sockaddr_un.self, capacity: 1) { sun in
                withUnsafeBytes(of: sun.pointee.sun_path) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            }
        }
    }

    /// The port of an IP address; 0 for a unix-domain one.
    public var port: UInt16 {
        get {
            if family == AF_UNIX { return 0 }
            return withUnsafePointer(to: storage) { p in
                family == AF_INET
                    ? p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) }
                    : p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) }
            }
        }
    }

    /// The IP literal, without brackets.
    public var ip: String {
        var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        withUnsafePointer(to: storage) { p in
            if family == AF_INET {
                p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    var a = sin.pointee.sin_addr
                    _ = inet_ntop(AF_INET, &a, &buf, socklen_t(buf.count))
                }
            } else {
                p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin in
                    var a = sin.pointee.sin6_addr
                    _ = inet_ntop(AF_INET6, &a, &buf, socklen_t(buf.count))
                }
            }
        }
        return String(cString: buf)
    }

    /// The IPv4 address in host byte order, for an IPv4 address and for an
    /// IPv4-mapped IPv6 one (how a dual-stack listener sees IPv4 peers); nil otherwise.
    public var ipv4: UInt32? {
        withUnsafePointer(to: storage) { p in
            switch family {
            case AF_INET:
                return p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt32(bigEndian: $0.pointee.sin_addr.s_addr) }
            case AF_INET6:
                return p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin -> UInt32? in
                    let (high, low) = Self.halves(sin.pointee.sin6_addr)
                    guard high == 0, low >> 32 == 0xffff else { return nil }
                    return UInt32(truncatingIfNeeded: low)
                }
            default:
                return nil
            }
        }
    }

    /// The 128 bits of an IPv6 address as two host-order halves (`high` holds
    /// the /64 prefix); nil for other families.
    public var ipv6: (high: UInt64, low: UInt64)? {
        guard family == AF_INET6 else { return nil }
        return withUnsafePointer(to: storage) { p in
            p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { Self.halves($0.pointee.sin6_addr) }
        }
    }

    private static func halves(_ a: in6_addr) -> (high: UInt64, low: UInt64) {
        withUnsafeBytes(of: a) { b in
            (UInt64(bigEndian: b.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
             UInt64(bigEndian: b.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
        }
    }

    public var description: String {
        if let path = unixPath { return "unix:" + path }
        return family == AF_INET6 ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }

    func withSockAddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws -> R) rethrows -> R {
        let len: socklen_t
        switch family {
        case AF_INET: len = socklen_t(MemoryLayout<sockaddr_in>.size)
        case AF_UNIX: len = socklen_t(MemoryLayout<sa_family_t>.size + (unixPath?.utf8.count ?? 0) + 1)
        default: len = socklen_t(MemoryLayout<sockaddr_in6>.size)
        }
        return try withUnsafePointer(to: storage) { p in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { try body($0, len) }
        }
    }

    public static func == (a: SocketAddress, b: SocketAddress) -> Bool { a.description == b.description }
}

extension SocketAddress {
    /// Connects a blocking socket `fd` (for command-line clients, not loops).
    public func connectBlocking(_ fd: Int32) throws {
        while true {
            let r = withSockAddr { sa, len in Glibc.connect(fd, sa, len) }
            if r == 0 { return }
            if errno == EINTR { continue }
            throw IOError(errno: errno, call: "connect \(description)")
        }
    }
}
