// swift-tools-version:6.1
import PackageDescription

// libFuzzer targets for Berth's parsers: one executable, `berth-fuzz TARGET [libFuzzer flags]`.
// Build and run it with `Fuzz/run` (it adds the sanitizer and coverage flags and links
// libFuzzer's driver; see ../shared/FIELD-NOTES.md for why it is not `-sanitize=fuzzer`).
let package = Package(
    name: "BerthFuzz",
    dependencies: [.package(name: "Berth", path: "..")],
    targets: [
        .executableTarget(
            name: "berth-fuzz",
            dependencies: [
                .product(name: "HTTP1", package: "Berth"),
                .product(name: "BlobStore", package: "Berth"),  // brings OCI
                .product(name: "BerthApp", package: "Berth"),
                .product(name: "Archive", package: "Berth"),
            ]
        ),
    ],
    swiftLanguageModes: [.v5]
)
