import Foundation

/// A throwaway PKI made with the openssl CLI: a CA, a server certificate for
/// IP 127.0.0.1 and DNS localhost, a client certificate.
public struct TestPKI {
    public let directory: String
    public var caPath: String { "\(directory)/ca.pem" }
    public var serverCertPath: String { "\(directory)/server.pem" }
    public var serverKeyPath: String { "\(directory)/server.key" }
    public var clientCertPath: String { "\(directory)/client.pem" }
    public var clientKeyPath: String { "\(directory)/client.key" }

    public static func makeTemporaryDirectory(_ prefix: String) -> String {
        TestSupport.makeTemporaryDirectory(prefix)
    }

    public init() throws {
        directory = TestSupport.makeTemporaryDirectory("berth-tls")
        try Subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Berth Test CA",
                            "-addext", "basicConstraints=critical,CA:TRUE",
                            "-addext", "keyUsage=critical,keyCertSign,cRLSign"], in: directory)
        try issue(name: "server", serial: "0x1001", subject: "/CN=localhost",
                  extensions: "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
        try issue(name: "client", serial: "0x1002", subject: "/CN=berth-test-client",
                  extensions: "extendedKeyUsage=clientAuth\n")
    }

    /// Issues `<name>.pem` / `<name>.key` in `directory` (or `target`), signed by the CA.
    public func issue(name: String, serial: String, subject: String, extensions: String, into target: String? = nil) throws {
        let out = target ?? directory
        let ext = "\(directory)/\(name).ext"
        try ("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n" + extensions)
            .write(toFile: ext, atomically: true, encoding: .utf8)
        try Subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                            "-keyout", "\(out)/\(name).key", "-out", "\(directory)/\(name).csr", "-subj", subject], in: directory)
        try Subprocess.run(["openssl", "x509", "-req", "-in", "\(name).csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                            "-set_serial", serial, "-days", "2", "-extfile", ext, "-out", "\(out)/\(name).pem"], in: directory)
    }

    public func remove() { try? FileManager.default.removeItem(atPath: directory) }
}
