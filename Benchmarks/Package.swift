// swift-tools-version:6.1
import PackageDescription

// Benchmarks for Berth, kept out of the root package so its `swift build` and
// `swift test` do not resolve or build the benchmark harness.
//
//   cd Benchmarks && swift package benchmark          # parser and cache micro-benchmarks
//   Benchmarks/e2e/http.sh                             # Berth against nginx, end to end
//
// The root package is a path dependency; its identity is its directory's name
// (whatever the clone is called), so it is computed here rather than spelled.
let root = Context.packageDirectory.split(separator: "/").dropLast().last.map(String.init) ?? "berth"

let package = Package(
    name: "BerthBenchmarks",
    platforms: [.macOS(.v13)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "HTTP1Benchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "HTTP1", package: root),
            ],
            path: "Benchmarks/HTTP1Benchmarks",
            swiftSettings: [.swiftLanguageMode(.v5)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "CacheBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "BlobStore", package: root),
            ],
            path: "Benchmarks/CacheBenchmarks",
            swiftSettings: [.swiftLanguageMode(.v5)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "berth-file-server",
            dependencies: [.product(name: "HTTP1", package: root)],
            path: "Sources/berth-file-server",
            swiftSettings: [.swiftLanguageMode(.v5)]
        ),
    ]
)
