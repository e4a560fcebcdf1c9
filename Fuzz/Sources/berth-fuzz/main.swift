import Glibc

// `berth-fuzz TARGET [libFuzzer flags] [CORPUS...]`: runs one fuzz target under libFuzzer's driver.
//
// SwiftPM cannot link `-sanitize=fuzzer` into an executable (its `main` clashes with libFuzzer's), so
// this `main` hands control to `LLVMFuzzerRunDriver` from `libclang_rt.fuzzer_no_main` (FIELD-NOTES.md).
// A target checks invariants with `precondition`: a violation, like a crash or an ASan report, is a
// finding that libFuzzer saves as `crash-*` for replay (`berth-fuzz TARGET crash-…`).

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32

/// The target chosen on the command line; read by the C callback, which cannot capture.
nonisolated(unsafe) var selected: (UnsafeRawBufferPointer) -> Void = { _ in }

var arguments = CommandLine.arguments
guard arguments.count >= 2, let target = fuzzTargets[arguments[1]] else {
    print("usage: berth-fuzz TARGET [libFuzzer flags] [CORPUS...]\ntargets: \(fuzzTargets.keys.sorted().joined(separator: " "))")
    exit(2)
}
selected = target
arguments.remove(at: 1)

// libFuzzer keeps pointers into argv for the whole run: these copies are never freed.
var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
var argc = Int32(arguments.count)
let status = argv.withUnsafeMutableBufferPointer { buffer -> Int32 in
    var base = buffer.baseAddress
    return LLVMFuzzerRunDriver(&argc, &base) { data, size in
        selected(UnsafeRawBufferPointer(start: data, count: size))
        return 0
    }
}
exit(status)

/// `precondition` that keeps its message in release builds (where `-O` drops it) so a finding says what broke.
func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String = "invariant", file: StaticString = #file, line: UInt = #line) {
    if !condition() { fail(message(), file: file, line: line) }
}

func fail(_ message: String, file: StaticString = #file, line: UInt = #line) -> Never {
    fputs("\(file):\(line): \(message)\n", stderr)
    abort()
}
