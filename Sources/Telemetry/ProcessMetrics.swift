import Reactor

/// The standard `process_*` families (as Prometheus client libraries name
/// them), read from the kernel at each scrape.
enum ProcessMetrics {
    /// When this process started, Unix seconds (taken at first use: before the listeners open).
    static let startTime = Double(Clock.unixMillis()) / 1000

    static func collect(into out: inout Exposition) {
        out.family("process_cpu_seconds_total", .counter, "Total user and system CPU time spent in seconds.", System.cpuSeconds)
        out.family("process_resident_memory_bytes", .gauge, "Resident memory size in bytes.", Double(System.residentBytes()))
        var fds = 0
        try? Posix.forEachEntry(inDirectory: "/proc/self/fd") { _ in fds += 1 }
        out.family("process_open_fds", .gauge, "Number of open file descriptors.", Double(max(fds - 1, 0)))  // less the directory's own
        out.family("process_max_fds", .gauge, "Maximum number of open file descriptors.", Double(System.openFileLimit))
        out.family("process_start_time_seconds", .gauge, "Start time of the process since unix epoch in seconds.", startTime)
    }
}
