import Foundation
import XCTest
import TestSupport

/// `docker/Dockerfile` and `docker/compose.yaml` without a Docker engine: the
/// files parsed, and the built `berth` run with the image's exact ENTRYPOINT,
/// CMD and ENV as its unprivileged USER (the compose service's environment on
/// top, against Debian's docker-registry standing in for its `registry` service).
final class DockerFilesTests: IntegrationTestCase {
    static let dockerfilePath = repositoryRoot + "/docker/Dockerfile"

    /// The image's user as uid and gid: numeric (Kubernetes' runAsNonRoot can check only those), not root.
    static func imageUser(_ stage: Dockerfile.Stage, file: StaticString = #filePath, line: UInt = #line) throws -> (uid: UInt32, gid: UInt32) {
        let user = try XCTUnwrap(stage.arguments(of: "USER").last, "the final stage sets USER", file: file, line: line)
        let parts = user.split(separator: ":").map { UInt32($0) }
        let uid = try XCTUnwrap(parts.first ?? nil, "USER \(user) is numeric", file: file, line: line)
        XCTAssertNotEqual(uid, 0, "USER is not root", file: file, line: line)
        return (uid, parts.count > 1 ? try XCTUnwrap(parts[1], "USER \(user): numeric group", file: file, line: line) : uid)
    }

    /// The image's process for `entrypoint`/`command` overrides (compose's and Kubernetes' rules alike:
    /// a new entrypoint drops the image's CMD), with `environment` over the image's ENV.
    static func imageProcess(_ dockerfile: Dockerfile, entrypoint: [String]? = nil, command: [String]? = nil,
                             environment: [(String, String)] = []) throws -> ContainerProcess {
        let stage = dockerfile.final
        let argv = (entrypoint ?? stage.command("ENTRYPOINT") ?? []) + (command ?? (entrypoint == nil ? stage.command("CMD") ?? [] : []))
        var env: [String: String] = [:]
        for (k, v) in stage.environment + environment { env[k] = v }
        return ContainerProcess(argv: argv, environment: env, user: try imageUser(stage))
    }

    /// The image's VOLUMEs as directories owned by its user, mounted into `fs`.
    func mountVolumes(_ stage: Dockerfile.Stage, into fs: ContainerFilesystem, user: (uid: UInt32, gid: UInt32)) throws {
        chmod(workDir, 0o755)  // the container's user reaches its volumes under it
        for (i, volume) in stage.arguments(of: "VOLUME").flatMap(shellWords).enumerated() {
            let host = "\(workDir!)/volume-\(i)"
            try makeVolumeDirectory(host, owner: user)
            fs.mount(volume, host: host, writable: true)
        }
    }

    func testDockerfileIsMultiStageNonRootAndItsEntrypointServes() throws {
        let dockerfile = try Dockerfile(path: Self.dockerfilePath)
        XCTAssertGreaterThanOrEqual(dockerfile.stages.count, 2, "multi-stage: the toolchain stays in the build stage")
        let stage = dockerfile.final
        XCTAssertTrue(stage.from.hasPrefix("debian:") && stage.from.contains("slim"), "a small final base: \(stage.from)")
        XCTAssertFalse(stage.arguments(of: "RUN").joined().contains("swift"), "no toolchain in the final stage")
        for run in stage.arguments(of: "RUN") where run.contains("apt-get install") {
            XCTAssertTrue(run.contains("--no-install-recommends") && run.contains("rm -rf /var/lib/apt/lists"), run)
        }
        XCTAssertEqual(stage.copies.filter { $0.stage != nil }.count, 1, "one binary from the build stage")
        let ignore = try String(contentsOfFile: repositoryRoot + "/.dockerignore", encoding: .utf8)
        XCTAssertTrue(ignore.split(separator: "\n").contains(".build/"), ".dockerignore keeps .build out of the build context")

        let binary = try XCTUnwrap(BerthProcess.binaryPath)
        let fs = imageFilesystem(dockerfile, binary: binary)
        let process = try Self.imageProcess(dockerfile)
        XCTAssertNotNil(fs.hostPath(process.argv[0]), "the entrypoint \(process.argv[0]) is the binary the image copies")
        XCTAssertEqual(Array(process.argv.dropFirst().prefix(1)), ["serve"])
        try mountVolumes(stage, into: fs, user: process.user!)
        let exposed = stage.arguments(of: "EXPOSE").flatMap(shellWords).compactMap { Int($0.split(separator: "/")[0]) }
        XCTAssertEqual(exposed.count, 1, "one EXPOSE")
        let berth = try BerthContainerRun.start(process, fs: fs, containerPort: exposed.first ?? 0, in: workDir)
        cleanups.append { berth.stop() }
        XCTAssertEqual(probeStatus(port: berth.port, path: "/readyz"), 200)
        // It runs as the image's user and writes its cache on the volume.
        let cache = try XCTUnwrap(berth.hostCacheDir)
        XCTAssertTrue(waitUntil(5) { ((try? FileManager.default.contentsOfDirectory(atPath: cache)) ?? []).isEmpty == false }, "berth wrote nothing under \(cache)")
        if geteuid() == 0 {
            let status = try String(contentsOfFile: "/proc/\(berth.process.pid)/status", encoding: .utf8)
            let uidLine = status.split(separator: "\n").first { $0.hasPrefix("Uid:") } ?? ""
            XCTAssertEqual(uidLine.split(whereSeparator: { $0 == "\t" || $0 == " " }).dropFirst().first.map(String.init), String(process.user!.uid), "runs as USER")
        }
    }

    /// compose.yaml: Berth in front of a Distribution registry. Berth runs with the
    /// berth service's environment (its `registry:5000` URL pointed at the local
    /// docker-registry) and the image's entrypoint; an image pulled through it
    /// arrives byte for byte.
    func testComposeRunsBerthInFrontOfTheRegistryService() throws {
        let compose = try XCTUnwrap(try yamlDocuments(repositoryRoot + "/docker/compose.yaml").first)
        let services = yamlMap(compose, "services")
        let service = try XCTUnwrap(services["berth"] as? [String: Any], "a berth service")
        XCTAssertEqual(yamlString(service, "build.dockerfile"), "docker/Dockerfile")
        XCTAssertEqual(yamlString(service, "build.context"), "..", "the build context is the repository root")
        let upstreamService = try XCTUnwrap(services["registry"] as? [String: Any], "a registry service")
        XCTAssertTrue(yamlString(upstreamService, "image")?.hasPrefix("registry:2") ?? false, "Distribution's image")
        XCTAssertEqual(service["depends_on"] as? [String], ["registry"])
        let declaredVolumes = Set(yamlMap(compose, "volumes").keys)
        for s in services.values {
            for v in yamlValue(s, "volumes") as? [String] ?? [] {
                XCTAssertTrue(declaredVolumes.contains(String(v.split(separator: ":")[0])), "\(v): a declared named volume")
            }
        }

        var environment: [(String, String)] = []
        for (k, v) in yamlMap(service, "environment") {
            XCTAssertTrue(v is String, "compose wants \(k)'s value quoted or a plain string")
            environment.append((k, "\(v)"))
        }
        let upstream = try XCTUnwrap(environment.first { $0.0 == "BERTH_UPSTREAM_URL" }?.1)
        let upstreamURL = try XCTUnwrap(URL(string: upstream))
        XCTAssertEqual(upstreamURL.host, "registry", "BERTH_UPSTREAM_URL names the registry service")
        XCTAssertEqual(upstreamURL.port, 5000, "Distribution's port in its container")

        let registry = try startRegistry()
        let image = try builder.pushImage(to: registry, repository: "team/app", tag: "v1", layerSizes: [120_000, 60_000])
        // The one rewrite the test must make: the service name has no address here.
        environment = environment.map { $0.0 == "BERTH_UPSTREAM_URL" ? ($0.0, registry.url) : $0 }

        let dockerfile = try Dockerfile(path: Self.dockerfilePath)
        let fs = imageFilesystem(dockerfile, binary: try XCTUnwrap(BerthProcess.binaryPath))
        let process = try Self.imageProcess(dockerfile, entrypoint: yamlValue(service, "entrypoint") as? [String],
                                            command: yamlValue(service, "command") as? [String], environment: environment)
        chmod(workDir, 0o755)
        for (i, v) in (yamlValue(service, "volumes") as? [String] ?? []).enumerated() {
            let host = "\(workDir!)/compose-volume-\(i)"
            try makeVolumeDirectory(host, owner: process.user)
            fs.mount(String(v.split(separator: ":")[1]), host: host, writable: true)
        }
        let published = try XCTUnwrap((service["ports"] as? [String])?.first, "a published port")
        let containerPort = try XCTUnwrap(Int(published.split(separator: ":").last ?? ""))
        let berth = try BerthContainerRun.start(process, fs: fs, containerPort: containerPort, in: workDir)
        cleanups.append { berth.stop() }
        XCTAssertEqual(probeStatus(port: berth.port, path: "/readyz"), 200)
        let out = "\(workDir!)/compose-pull"
        try Skopeo.copy("docker://127.0.0.1:\(berth.port)/team/app:v1", "dir:\(out)", extra: ["--src-tls-verify=false"], in: workDir)
        assertLayout(out, image: image)
        let cache = try XCTUnwrap(berth.hostCacheDir)
        for d in image.blobs {
            let hex = d.dropFirst(7)
            XCTAssertTrue(FileManager.default.fileExists(atPath: "\(cache)/blobs/sha256/\(hex.prefix(2))/\(hex)"), "\(d) cached on the compose volume")
        }
    }
}
