import Foundation

// Small helpers shared by the test targets: ports, directories, waits, the built binary.

/// A loopback port nobody listens on right now (bound to port 0, then released).
/// Callers that lose the race retry with a new one.
public func freeLoopbackPort() -> UInt16 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    precondition(fd >= 0)
    defer { close(fd) }
    var sin = sockaddr_in()
    sin.sin_family = sa_family_t(AF_INET)
    sin.sin_port = 0
    sin.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &sin) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
    }
    precondition(ok, "cannot bind a loopback port")
    return UInt16(bigEndian: sin.sin_port)
}

/// Waits until `condition` holds, polling every `everyMillis` (20 ms), at most `seconds`.
@discardableResult
public func waitUntil(_ seconds: Double = 10, everyMillis: UInt32 = 20, _ condition: () -> Bool) -> Bool {
    let end = Date().addingTimeInterval(seconds)
    while Date() < end {
        if condition() { return true }
        usleep(everyMillis * 1000)
    }
    return condition()
}

/// A new directory `/tmp/<prefix>-XXXXXX` (short paths: some peers limit them).
public func makeTemporaryDirectory(_ prefix: String) -> String {
    var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
    let path = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    precondition(path != nil, "mkdtemp failed")
    return String(cString: path!)
}

/// The built `berth` executable: next to the test bundle (`swift build`
/// puts every product in one directory), else under the package's `.build`
/// (found from `file`, a file two levels below the package root).
public func locateBerthBinary(file: String = #filePath) -> String? {
    var candidates: [URL] = []
    let main = Bundle.main.bundleURL
    candidates.append(main.appendingPathComponent("berth"))
    candidates.append(main.deletingLastPathComponent().appendingPathComponent("berth"))
    for b in Bundle.allBundles {
        candidates.append(b.bundleURL.deletingLastPathComponent().appendingPathComponent("berth"))
    }
    if let argv0 = CommandLine.arguments.first {
        candidates.append(URL(fileURLWithPath: argv0).deletingLastPathComponent().appendingPathComponent("berth"))
    }
    let root = URL(fileURLWithPath: file).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    candidates.append(root.appendingPathComponent(".build/debug/berth"))
    candidates.append(root.appendingPathComponent(".build/release/berth"))
    var isDirectory: ObjCBool = false
    return candidates.map(\.path).first {
        FileManager.default.fileExists(atPath: $0, isDirectory: &isDirectory) && !isDirectory.boolValue
            && FileManager.default.isExecutableFile(atPath: $0)
    }
}
