import Foundation
import XCTest
import TestSupport
import Yams

/// `conf/kubernetes/*.yaml` without a cluster: every document parsed and its
/// references checked (selectors, ports, probes, volumes, ConfigMaps); every
/// Berth container run as the kubelet would start it from the image built by
/// docker/Dockerfile (its command/args and env exactly, its ConfigMap and
/// volumes mapped to directories, as its user with fsGroup); the DaemonSet's
/// hosts.toml regenerated with `berth client-config`; the StatefulSet's HAProxy
/// config through `haproxy -c` and against conf/haproxy/berth.cfg.
final class KubernetesFilesTests: IntegrationTestCase {
    static let directory = repositoryRoot + "/conf/kubernetes"
    static let workloadKinds: Set<String> = ["Deployment", "StatefulSet", "DaemonSet"]

    static func manifests() throws -> [(file: String, documents: [[String: Any]])] {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".yaml") }.sorted()
        return try names.map { ($0, try yamlDocuments(directory + "/" + $0)) }
    }

    static func isBerth(_ container: [String: Any]) -> Bool {
        let image = yamlString(container, "image") ?? ""
        return (image.split(separator: "/").last ?? "").split(separator: ":").first == "berth"
    }

    /// The containerPort a probe or Service port names (by number or by name), nil when no container declares it.
    static func resolvePort(_ ref: Any?, in containers: [[String: Any]]) -> Int? {
        let ports = containers.flatMap { yamlList($0, "ports") }
        if let n = ref as? Int { return ports.contains { $0["containerPort"] as? Int == n } ? n : nil }
        return ports.first { $0["name"] as? String == (ref as? String) }?["containerPort"] as? Int
    }

    static func document(_ docs: [[String: Any]], kind: String, name: String?) -> [String: Any]? {
        docs.first { $0["kind"] as? String == kind && yamlString($0, "metadata.name") == name }
    }

    // MARK: - the manifests as data

    func testEveryManifestIsWellFormedAndItsReferencesResolve() throws {
        let manifests = try Self.manifests()
        XCTAssertEqual(Set(manifests.map(\.file)), ["deployment.yaml", "daemonset.yaml", "statefulset.yaml"])
        let apiVersions = ["ConfigMap": "v1", "Service": "v1", "PersistentVolumeClaim": "v1",
                           "Deployment": "apps/v1", "StatefulSet": "apps/v1", "DaemonSet": "apps/v1"]
        let dnsLabel = try NSRegularExpression(pattern: "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
        for (file, docs) in manifests {
            XCTAssertTrue(docs.contains { Self.workloadKinds.contains($0["kind"] as? String ?? "") }, "\(file): a workload")
            for doc in docs {
                let kind = doc["kind"] as? String ?? "?"
                let name = yamlString(doc, "metadata.name") ?? ""
                let at = "\(file) \(kind)/\(name)"
                XCTAssertEqual(doc["apiVersion"] as? String, apiVersions[kind], "\(at): apiVersion of a known kind")
                XCTAssertEqual(dnsLabel.numberOfMatches(in: name, range: NSRange(location: 0, length: name.utf16.count)), 1, "\(at): metadata.name")
                switch kind {
                case "ConfigMap":
                    XCTAssertTrue(yamlMap(doc, "data").values.allSatisfy { $0 is String }, "\(at): data values are strings")
                case "Service":
                    try checkService(doc, in: docs, at: at)
                case "Deployment", "StatefulSet", "DaemonSet":
                    try checkWorkload(doc, in: docs, at: at)
                default: break
                }
            }
        }
    }

    private func checkService(_ service: [String: Any], in docs: [[String: Any]], at: String) throws {
        let selector = yamlMap(service, "spec.selector") as? [String: String] ?? [:]
        XCTAssertFalse(selector.isEmpty, "\(at): a selector")
        let targets = docs.filter { Self.workloadKinds.contains($0["kind"] as? String ?? "") }.filter { w in
            let labels = yamlMap(w, "spec.template.metadata.labels") as? [String: String] ?? [:]
            return selector.allSatisfy { labels[$0.key] == $0.value }
        }
        XCTAssertEqual(targets.count, 1, "\(at): selects one workload")
        let containers = targets.flatMap { yamlList($0, "spec.template.spec.containers") }
        for port in yamlList(service, "spec.ports") {
            XCTAssertNotNil(Self.resolvePort(port["targetPort"] ?? port["port"], in: containers), "\(at): targetPort \(port) is a container port")
        }
    }

    private func checkWorkload(_ workload: [String: Any], in docs: [[String: Any]], at: String) throws {
        let matchLabels = yamlMap(workload, "spec.selector.matchLabels") as? [String: String] ?? [:]
        let labels = yamlMap(workload, "spec.template.metadata.labels") as? [String: String] ?? [:]
        XCTAssertFalse(matchLabels.isEmpty, "\(at): selector.matchLabels")
        XCTAssertTrue(matchLabels.allSatisfy { labels[$0.key] == $0.value }, "\(at): the selector matches the template's labels")
        let pod = yamlMap(workload, "spec.template.spec")
        let volumes = yamlList(pod, "volumes")
        let volumeNames = Set(volumes.compactMap { $0["name"] as? String } + yamlList(workload, "spec.volumeClaimTemplates").compactMap { yamlString($0, "metadata.name") })
        for v in volumes {
            if let cm = yamlString(v, "configMap.name") { XCTAssertNotNil(Self.document(docs, kind: "ConfigMap", name: cm), "\(at): ConfigMap \(cm) in the file") }
            if let claim = yamlString(v, "persistentVolumeClaim.claimName") { XCTAssertNotNil(Self.document(docs, kind: "PersistentVolumeClaim", name: claim), "\(at): PVC \(claim) in the file") }
        }
        if workload["kind"] as? String == "StatefulSet" {
            let service = Self.document(docs, kind: "Service", name: yamlString(workload, "spec.serviceName"))
            XCTAssertEqual(yamlString(service, "spec.clusterIP"), "None", "\(at): serviceName names a headless Service")
        }
        let containers = yamlList(pod, "containers")
        XCTAssertFalse(containers.isEmpty, "\(at): containers")
        for c in containers + yamlList(pod, "initContainers") {
            let cat = "\(at) container \(c["name"] as? String ?? "?")"
            XCTAssertNotNil(c["image"] as? String, "\(cat): image")
            for m in yamlList(c, "volumeMounts") { XCTAssertTrue(volumeNames.contains(m["name"] as? String ?? ""), "\(cat): mount \(m) names a volume") }
            for e in yamlList(c, "env") { XCTAssertTrue(e["value"] is String || e["valueFrom"] != nil, "\(cat): env \(e) has a string value") }
            for probe in ["readinessProbe", "livenessProbe", "startupProbe"] where c[probe] != nil {
                let port = yamlValue(c, "\(probe).httpGet.port") ?? yamlValue(c, "\(probe).tcpSocket.port")
                XCTAssertNotNil(Self.resolvePort(port, in: [c]), "\(cat): \(probe)'s port is a container port")
            }
            guard Self.isBerth(c), yamlList(pod, "containers").contains(where: { $0["name"] as? String == c["name"] as? String }) else { continue }
            XCTAssertEqual(yamlString(c, "readinessProbe.httpGet.path"), "/readyz", "\(cat): readiness on /readyz")
            XCTAssertEqual(yamlString(c, "livenessProbe.httpGet.path"), "/healthz", "\(cat): liveness on /healthz")
            XCTAssertTrue(yamlValue(c, "securityContext.runAsNonRoot") as? Bool ?? yamlValue(pod, "securityContext.runAsNonRoot") as? Bool ?? false, "\(cat): runAsNonRoot")
            XCTAssertEqual(yamlValue(c, "securityContext.allowPrivilegeEscalation") as? Bool, false, "\(cat): no privilege escalation")
            XCTAssertNotNil(yamlValue(c, "resources.limits.memory"), "\(cat): a memory limit")
            XCTAssertNotNil(yamlValue(c, "resources.requests.memory"), "\(cat): a memory request")
        }
    }

    // MARK: - Berth containers run as the kubelet starts them

    /// A pod's volumes as directories: ConfigMap volumes hold the ConfigMap's
    /// keys (root's, read-only); PVCs, claim templates and emptyDirs belong to
    /// fsGroup (group-writable, setgid) as the kubelet leaves them; hostPaths
    /// are root's 0755 directories, as on a node.
    private func makeVolumes(_ workload: [String: Any], in docs: [[String: Any]], root: String) throws -> [String: (host: String, configMap: [String: Any]?)] {
        let pod = yamlMap(workload, "spec.template.spec")
        let fsGroup = (yamlValue(pod, "securityContext.fsGroup") as? Int).map(UInt32.init)
        var out: [String: (host: String, configMap: [String: Any]?)] = [:]
        var volumes = yamlList(pod, "volumes")
        volumes += yamlList(workload, "spec.volumeClaimTemplates").map { ["name": yamlString($0, "metadata.name") ?? "", "persistentVolumeClaim": [:]] }
        for v in volumes {
            let name = v["name"] as? String ?? ""
            let host = "\(root)/\(name)"
            try FileManager.default.createDirectory(atPath: host, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            if let cm = yamlString(v, "configMap.name") {
                let doc = try XCTUnwrap(Self.document(docs, kind: "ConfigMap", name: cm))
                out[name] = (host, doc)
                for (key, text) in yamlMap(doc, "data") { try "\(text)".write(toFile: "\(host)/\(key)", atomically: true, encoding: .utf8) }
                continue
            }
            out[name] = (host, nil)
            if v["hostPath"] == nil, let fsGroup, geteuid() == 0 {
                chown(host, 0, fsGroup)
                chmod(host, 0o2775)
            }
        }
        return out
    }

    /// The container's filesystem: the image's files under its volume mounts. A
    /// ConfigMap file its command line names (--config) gets its container paths
    /// (cache.dir) mapped too.
    private func filesystem(_ container: [String: Any], argv: [String], volumes: [String: (host: String, configMap: [String: Any]?)],
                            dockerfile: Dockerfile) throws -> ContainerFilesystem {
        let fs = imageFilesystem(dockerfile, binary: try XCTUnwrap(BerthProcess.binaryPath))
        for m in yamlList(container, "volumeMounts") {
            let v = try XCTUnwrap(volumes[m["name"] as? String ?? ""])
            fs.mount(m["mountPath"] as? String ?? "", host: v.host, writable: v.configMap == nil && m["readOnly"] as? Bool != true)
        }
        for arg in argv {
            guard let host = fs.hostPath(arg), let v = volumes.values.first(where: { $0.configMap != nil && host.hasPrefix($0.host + "/") }),
                  let text = yamlMap(v.configMap, "data")[(host as NSString).lastPathComponent] as? String else { continue }
            try fs.writeMapped(text, to: host)
        }
        return fs
    }

    /// The kubelet's process for `container` in an image built from `dockerfile`:
    /// command replaces ENTRYPOINT (and drops CMD), args replace CMD; env over the image's ENV
    /// (a secret's optional key left out); the container's or the pod's user, fsGroup as a group.
    private func process(_ container: [String: Any], pod: [String: Any], dockerfile: Dockerfile) throws -> (ContainerProcess, groups: [UInt32]) {
        var env: [(String, String)] = []
        for e in yamlList(container, "env") {
            if let value = e["value"] as? String { env.append((e["name"] as? String ?? "", value)) } else {
                XCTAssertEqual(yamlValue(e, "valueFrom.secretKeyRef.optional") as? Bool, true, "\(e): a secret the test has not, optional")
            }
        }
        var p = try DockerFilesTests.imageProcess(dockerfile, entrypoint: container["command"] as? [String],
                                                  command: container["args"] as? [String], environment: env)
        func setting(_ key: String) -> Int? { yamlValue(container, "securityContext.\(key)") as? Int ?? yamlValue(pod, "securityContext.\(key)") as? Int }
        let uid = setting("runAsUser").map(UInt32.init) ?? p.user?.uid
        let gid = setting("runAsGroup").map(UInt32.init) ?? p.user?.gid
        p.user = uid.map { ($0, gid ?? 0) }
        return (p, setting("fsGroup").map { [UInt32($0)] } ?? [])
    }

    func testEveryBerthContainerServesWithItsExactCommandLineAndEnvironment() throws {
        let dockerfile = try Dockerfile(path: DockerFilesTests.dockerfilePath)
        chmod(workDir, 0o755)
        var started = 0, metricsChecked = 0
        for (file, docs) in try Self.manifests() {
            for workload in docs where Self.workloadKinds.contains(workload["kind"] as? String ?? "") {
                let pod = yamlMap(workload, "spec.template.spec")
                let root = "\(workDir!)/\(file)-\(yamlString(workload, "metadata.name") ?? "")"
                let volumes = try makeVolumes(workload, in: docs, root: root)
                try runInitContainers(pod, volumes: volumes, dockerfile: dockerfile, in: root)
                for c in yamlList(pod, "containers") where Self.isBerth(c) {
                    var (p, groups) = try process(c, pod: pod, dockerfile: dockerfile)
                    let fs = try filesystem(c, argv: p.argv, volumes: volumes, dockerfile: dockerfile)
                    let config = p.argv.firstIndex(of: "--config").map { p.argv[$0 + 1] } ?? ""
                    XCTAssertNotNil(fs.hostPath(config).flatMap { fs.containerText[$0] }, "\(file): --config \(config) is the ConfigMap's berth.yaml, not the image's")
                    p.supplementaryGroups = groups
                    let containerPort = try XCTUnwrap(Self.resolvePort(yamlValue(c, "readinessProbe.httpGet.port"), in: [c]))
                    let berth = try BerthContainerRun.start(p, fs: fs, containerPort: containerPort, in: root)
                    cleanups.append { berth.stop() }
                    for probe in ["readinessProbe", "livenessProbe"] {
                        let path = try XCTUnwrap(yamlString(c, "\(probe).httpGet.path"))
                        XCTAssertEqual(probeStatus(port: berth.port, path: path), 200, "\(file): \(probe) \(path)")
                    }
                    // metrics.listen on: a container port named metrics, the scrape annotations, and /metrics answering.
                    if let listen = berth.settings.metricsListen, let metricsPort = berth.metricsPort {
                        let declared = Self.resolvePort("metrics", in: [c])
                        XCTAssertEqual(declared, Int(listen.split(separator: ":").last ?? ""), "\(file): metrics.listen \(listen) is the port named metrics")
                        let annotations = yamlMap(workload, "spec.template.metadata.annotations")
                        XCTAssertEqual(annotations["prometheus.io/port"] as? String, declared.map(String.init), "\(file): scrape annotation port")
                        XCTAssertEqual(probeStatus(port: metricsPort, path: annotations["prometheus.io/path"] as? String ?? "/metrics"), 200,
                                       "\(file): /metrics")
                        metricsChecked += 1
                    }
                    let cache = try XCTUnwrap(berth.hostCacheDir)
                    XCTAssertTrue(waitUntil(5) { !((try? FileManager.default.contentsOfDirectory(atPath: cache)) ?? []).isEmpty },
                                  "\(file): berth wrote nothing in its cache volume")
                    berth.stop()
                    started += 1
                }
            }
        }
        XCTAssertEqual(started, 3, "one Berth container in each of the three files")
        XCTAssertGreaterThanOrEqual(metricsChecked, 1, "deployment.yaml turns metrics on")
    }

    /// Init containers run as their user (the DaemonSet's installs hosts.toml and chowns the cache);
    /// only when the test is root, as they are. False when they were not run.
    @discardableResult
    private func runInitContainers(_ pod: [String: Any], volumes: [String: (host: String, configMap: [String: Any]?)],
                                   dockerfile: Dockerfile, in root: String) throws -> Bool {
        guard geteuid() == 0 else { return false }
        for c in yamlList(pod, "initContainers") {
            var (p, _) = try process(c, pod: pod, dockerfile: dockerfile)
            let fs = try filesystem(c, argv: p.argv, volumes: volumes, dockerfile: dockerfile)
            if p.user?.uid == 0 { p.user = nil }
            let r = try Subprocess.run(p.launchArguments(fs), in: root, environment: p.launchEnvironment(fs), timeout: 30, check: false)
            XCTAssertEqual(r.status, 0, "init container \(c["name"] ?? ""): \(r.stdout) \(r.stderr)")
        }
        return true
    }

    // MARK: - DaemonSet: containerd's hosts.toml

    func testDaemonSetInstallsTheHostsTomlThatBerthClientConfigPrints() throws {
        let docs = try yamlDocuments(Self.directory + "/daemonset.yaml")
        let daemonSet = try XCTUnwrap(docs.first { $0["kind"] as? String == "DaemonSet" })
        let pod = yamlMap(daemonSet, "spec.template.spec")
        let berth = try XCTUnwrap(yamlList(pod, "containers").first(where: Self.isBerth))
        let port = try XCTUnwrap(yamlList(berth, "ports").first)
        XCTAssertEqual(port["hostPort"] as? Int, 5000, "hostPort 5000 on every node")
        XCTAssertEqual(port["hostPort"] as? Int, port["containerPort"] as? Int, "hostNetwork: hostPort = containerPort")
        XCTAssertEqual(pod["hostNetwork"] as? Bool, true, "containerd reaches 127.0.0.1:5000 on any CNI")

        let hostsMap = try XCTUnwrap(docs.first { $0["kind"] as? String == "ConfigMap" && yamlMap($0, "data")["hosts.toml"] != nil })
        let hostsToml = try XCTUnwrap(yamlMap(hostsMap, "data")["hosts.toml"] as? String)
        XCTAssertTrue(hostsToml.contains("[host.\"http://127.0.0.1:\(port["hostPort"] as? Int ?? 0)\"]"), "containerd is sent to the node's Berth")
        // The file's first line is the command that printed it: run it again.
        let firstLine = try XCTUnwrap(hostsToml.split(separator: "\n").first)
        let prefix = "# Generated by: berth "
        XCTAssertTrue(firstLine.hasPrefix(prefix), String(firstLine))
        let words = shellWords(String(firstLine.dropFirst(prefix.count)))
        let dockerfile = try Dockerfile(path: DockerFilesTests.dockerfilePath)
        let root = "\(workDir!)/daemonset"
        let volumes = try makeVolumes(daemonSet, in: docs, root: root)
        let (serve, _) = try process(berth, pod: pod, dockerfile: dockerfile)
        let fs = try filesystem(berth, argv: serve.argv, volumes: volumes, dockerfile: dockerfile)
        let configIndex = try XCTUnwrap(words.firstIndex(of: "--config")) + 1
        let serveConfigIndex = try XCTUnwrap(serve.argv.firstIndex(of: "--config")) + 1
        XCTAssertEqual(words[configIndex], serve.argv[serveConfigIndex], "generated from the config berth serve reads")
        let binary = try XCTUnwrap(BerthProcess.binaryPath)
        let r = try Subprocess.run([binary] + words.map { fs.mapPaths(in: $0) }, in: workDir,
                                   environment: ["PATH": "/usr/bin:/bin"], timeout: 30, check: false)
        XCTAssertEqual(r.status, 0, r.stderr)
        let mappedConfig = try XCTUnwrap(fs.hostPath(words[configIndex]))
        XCTAssertEqual(r.stdout.replacingOccurrences(of: mappedConfig, with: words[configIndex]), hostsToml,
                       "daemonset.yaml's hosts.toml is what berth client-config prints")

        // The init container puts it where containerd looks for docker.io.
        guard try runInitContainers(pod, volumes: volumes, dockerfile: dockerfile, in: root) else { throw XCTSkip("the init container runs as root: run the tests as root") }
        let certsD = try XCTUnwrap(yamlList(pod, "volumes").first { yamlString($0, "hostPath.path") == "/etc/containerd/certs.d" })
        let installed = try String(contentsOfFile: "\(volumes[certsD["name"] as? String ?? ""]!.host)/docker.io/hosts.toml", encoding: .utf8)
        XCTAssertEqual(installed, hostsToml)
    }

    // MARK: - StatefulSet: HAProxy in front of the nodes

    func testStatefulSetHAProxyConfigIsValidAndKeepsTheShippedRules() throws {
        guard Subprocess.resolve("haproxy") != nil else { throw XCTSkip("haproxy is not installed (scripts/deps.sh TEST_PACKAGES)") }
        let docs = try yamlDocuments(Self.directory + "/statefulset.yaml")
        let sts = try XCTUnwrap(docs.first { $0["kind"] as? String == "StatefulSet" })
        let haproxyMap = try XCTUnwrap(docs.first { $0["kind"] as? String == "ConfigMap" && yamlMap($0, "data")["haproxy.cfg"] != nil })
        let embedded = try XCTUnwrap(yamlMap(haproxyMap, "data")["haproxy.cfg"] as? String)
        let shipped = try String(contentsOfFile: repositoryRoot + "/conf/haproxy/berth.cfg", encoding: .utf8)
        func significant(_ cfg: String) -> [String] {
            cfg.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
        }
        // Every line of the shipped file but its bind and server lines, in order.
        var rest = significant(embedded)[...]
        for line in significant(shipped) where !line.hasPrefix("bind ") && !line.hasPrefix("server ") {
            guard let i = rest.firstIndex(of: line) else { XCTFail("statefulset.yaml's haproxy.cfg lacks (or reorders) \"\(line)\" of conf/haproxy/berth.cfg"); break }
            rest = rest[(i + 1)...]
        }

        // The nodes behind it: prefetch off (a node would fetch blobs other nodes own), no per-client cap.
        let nodesConfig = try XCTUnwrap(docs.first { $0["kind"] as? String == "ConfigMap" && yamlMap($0, "data")["berth.yaml"] != nil })
        let berthYAML = try XCTUnwrap(try Yams.load(yaml: yamlMap(nodesConfig, "data")["berth.yaml"] as? String ?? "") as? [String: Any])
        XCTAssertEqual(yamlValue(berthYAML, "upstream.prefetch") as? Bool, false, "nodes run with upstream.prefetch: false")
        XCTAssertEqual(yamlValue(berthYAML, "server.max_connections_per_client") as? Int, 0, "every connection comes from HAProxy")
        XCTAssertFalse(yamlList(sts, "spec.template.spec.containers").flatMap { yamlList($0, "env") }.contains { ($0["name"] as? String ?? "").hasPrefix("BERTH_UPSTREAM_PREFETCH") })

        // One server per node, by the node's stable name under the headless Service.
        let nodes = try XCTUnwrap(yamlValue(sts, "spec.replicas") as? Int)
        let servers = significant(embedded).filter { $0.hasPrefix("server ") }.map { $0.split(separator: " ").map(String.init) }
        XCTAssertEqual(servers.count, nodes, "a server line per replica")
        let name = yamlString(sts, "metadata.name") ?? "", service = yamlString(sts, "spec.serviceName") ?? ""
        let nodePort = try XCTUnwrap(Self.resolvePort("http", in: yamlList(sts, "spec.template.spec.containers")))
        for (i, s) in servers.enumerated() {
            XCTAssertTrue(s.count > 2 && s[2].hasPrefix("\(name)-\(i).\(service).") && s[2].hasSuffix(".svc.cluster.local:\(nodePort)"), "server \(s)")
        }
        XCTAssertEqual(Set(servers.map { $0[1] }).count, nodes, "distinct server names")
        // The nodes' peers: the server addresses in the servers' order (the ring's ids).
        XCTAssertEqual(yamlValue(berthYAML, "peers") as? [String], servers.map { $0[2] }, "peers: lists the server lines' addresses in order")
        let haproxy = try XCTUnwrap(docs.first { $0["kind"] as? String == "Deployment" })
        let bind = try XCTUnwrap(significant(embedded).first { $0.hasPrefix("bind ") })
        let haproxyPort = try XCTUnwrap(Self.resolvePort("http", in: yamlList(haproxy, "spec.template.spec.containers")))
        XCTAssertTrue(bind.hasSuffix(":\(haproxyPort)"), "\(bind) is the container port \(haproxyPort)")
        let mount = try XCTUnwrap(yamlList(yamlList(haproxy, "spec.template.spec.containers").first, "volumeMounts").first)
        XCTAssertEqual(mount["mountPath"] as? String, "/usr/local/etc/haproxy", "where the haproxy image reads haproxy.cfg")

        // haproxy -c, with no name looked up (the cluster's names do not resolve here; no lookup leaves loopback).
        let cfg = "\(workDir!)/haproxy.cfg"
        try embedded.replacingOccurrences(of: "init-addr last,libc,none", with: "init-addr none").write(toFile: cfg, atomically: true, encoding: .utf8)
        let r = try Subprocess.run(["haproxy", "-c", "-f", cfg], in: workDir, timeout: 30, check: false)
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        XCTAssertFalse((r.stdout + r.stderr).contains("WARNING"), r.stdout + r.stderr)
    }
}
