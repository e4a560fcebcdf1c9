// swift-tools-version:6.1
import PackageDescription

// Module graph (one-way): Reactor → TLS → HTTP1 → Mirror (using OCI and BlobStore) → BerthApp → berth;
// Bench (over HTTP1, OCI, Mirror's token flow) → berth.
// Archive (tar, gzip over CZlib) is a leaf beside OCI: only BerthApp's import/export use it.
// Telemetry (Prometheus metrics over swift-prometheus, Reactor for /proc) is used by Mirror and BerthApp.
// Swift 5 language mode: the reactor owns its threading model (one loop per
// thread, explicit hand-offs), documented next to each type, instead of
// annotating every loop-bound class for the Swift 6 checker.
// Release builds use the default `-O`: preconditions, bounds and overflow
// checks are part of the design, so no unchecked optimisation mode.
let settings: [SwiftSetting] = []

let package = Package(
    name: "Berth",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "berth", targets: ["berth"]),
        .library(name: "HTTP1", targets: ["HTTP1"]),
        // For Benchmarks/ (CacheBenchmarks): the cache index and store with the modules their API uses.
        .library(name: "BlobStore", targets: ["BlobStore", "OCI", "Reactor"]),
        // For Fuzz/ (the config loader target).
        .library(name: "BerthApp", targets: ["BerthApp"]),
        // For Fuzz/ (the archive target).
        .library(name: "Archive", targets: ["Archive"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        // Tests only: seeded, shrinking property checks (Swift Testing) for the digest invariant.
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
        // `berth bench`: latency percentiles.
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        // `metrics.listen`: the registry, counters and histograms behind /metrics.
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CLinux"),
        .systemLibrary(name: "CCrypt"),
        .target(name: "Reactor", dependencies: ["CLinux"], swiftSettings: settings),
        .target(name: "TLS", dependencies: ["COpenSSL", "Reactor"], swiftSettings: settings),
        .target(name: "HTTP1", dependencies: ["Reactor", "TLS"], swiftSettings: settings),
        .target(name: "OCI", swiftSettings: settings),
        // Tar and gzip as pure stream logic (zlib only): `berth import`/`export` read and write through it.
        .target(name: "Archive", dependencies: ["CZlib"], swiftSettings: settings),
        .target(name: "BlobStore", dependencies: ["Reactor", "OCI", "COpenSSL"], swiftSettings: settings),
        // Cosign key-based signature verification through OpenSSL's EVP (signature policy).
        .target(name: "Signatures", dependencies: ["COpenSSL", "OCI"], swiftSettings: settings),
        .target(name: "Telemetry", dependencies: ["Reactor", .product(name: "Prometheus", package: "swift-prometheus")], swiftSettings: settings),
        .target(name: "Mirror", dependencies: ["HTTP1", "OCI", "BlobStore", "TLS", "Reactor", "CCrypt", "Signatures", "Telemetry"], swiftSettings: settings),
        // `berth bench`: pulls like containerd against any /v2/ endpoint and reports percentiles.
        .target(
            name: "Bench",
            dependencies: [
                "Reactor", "TLS", "HTTP1", "OCI", "Mirror", "BlobStore",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            swiftSettings: settings
        ),
        .target(
            name: "BerthApp",
            dependencies: [
                "Reactor", "TLS", "HTTP1", "Mirror", "BlobStore", "Archive", "Signatures", "Telemetry",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: settings
        ),
        .executableTarget(
            name: "berth",
            dependencies: [
                "BerthApp", "Bench", "Reactor", "OCI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: settings
        ),
        // Helpers shared by the test targets: Subprocess, TestPKI, ports, waits, temporary directories.
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "ReactorTests", dependencies: ["Reactor"]),
        .testTarget(name: "TLSTests", dependencies: ["TestSupport", "TLS", "Reactor"]),
        .testTarget(name: "HTTP1Tests", dependencies: ["TestSupport", "HTTP1", "Reactor", "TLS"]),
        .testTarget(name: "OCITests", dependencies: ["OCI"]),
        .testTarget(name: "SignaturesTests", dependencies: ["Signatures", "OCI", "TestSupport"]),
        .testTarget(name: "BenchTests", dependencies: ["Bench", "OCI"]),
        .testTarget(name: "ArchiveTests", dependencies: ["Archive"]),
        .testTarget(name: "TelemetryTests", dependencies: ["Telemetry", "TestSupport"]),
        // Mirror logic as values, without sockets: routing, the peer ring (checked once against a real haproxy).
        .testTarget(name: "MirrorTests", dependencies: ["Mirror", "OCI", "BlobStore", "TestSupport"]),
        .testTarget(name: "BlobStoreTests", dependencies: ["BlobStore", "OCI", "Reactor"]),
        .testTarget(name: "BerthAppTests", dependencies: ["TestSupport", "BerthApp", "Mirror", "HTTP1", "Reactor", "TLS", "BlobStore", "OCI"]),
        .testTarget(name: "MirrorIntegrationTests", dependencies: [
            "TestSupport", "HTTP1", "Reactor", "TLS", "COpenSSL", "BlobStore", "OCI", "Archive",
            .product(name: "PropertyBased", package: "swift-property-based"),
            // Deployment files (conf/kubernetes/, docker/compose.yaml) read as data.
            .product(name: "Yams", package: "Yams"),
        ]),
        // Cache lifecycle end to end: the built `berth` binary against Debian's docker-registry,
        // with a small filesystem (ENOSPC), kill -9, eviction under a budget (needs root for mount).
        .testTarget(name: "CacheLifecycleTests", dependencies: ["TestSupport", "BlobStore", "OCI", "Reactor", "COpenSSL"]),
    ],
    swiftLanguageModes: [.v5]
)
