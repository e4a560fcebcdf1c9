#if canImport(Glibc)
import Glibc
#endif
import Reactor
import Mirror
import Synchronization

/// `berth preload` against a running server: `parallel` images at once, each
/// one `/preload` stream on the admin socket; a progress line on a terminal
/// (images, blobs, bytes, rate), one line per image as it ends, a summary.
/// Exit code 0 when every image loaded, else 1.
struct PreloadClient {
    let admin: AdminClient
    let pin: Bool
    let platforms: [String]
    let json: Bool

    private struct State {
        var next = 0
        var finished = 0
        var progress: [Int: WarmProgress] = [:]
        var failed: [String] = []
        var progressShown = false
    }

    func run(_ images: [String], parallel: Int) -> Int32 {
        let state = Mutex(State())
        let tty = isatty(1) == 1 && !json
        let started = Clock.monotonicNanos()
        /// Wipes a progress line drawn on the terminal, so a line can take its place.
        func wipe(_ s: inout State) {
            if s.progressShown { print("\r\u{1b}[K", terminator: "") }
            s.progressShown = false
        }
        let workers = (0..<min(parallel, images.count)).map { _ in
            OSThread(name: "berth-preload") {
                while true {
                    guard let i = state.withLock({ s -> Int? in
                        guard s.next < images.count else { return nil }
                        defer { s.next += 1 }
                        return s.next
                    }) else { return }
                    let line = load(images[i]) { p in state.withLock { $0.progress[i] = p } }
                    state.withLock { s in
                        s.finished += 1
                        wipe(&s)
                        if let error = line.error {
                            s.failed.append(images[i])
                            FileOut.stderr("berth: \(error)\n")
                        } else if let r = line.result {
                            print(json ? String(decoding: CacheReport.json(r), as: UTF8.self)
                                       : CacheReport.text(r, verb: pin ? "pinned" : "preloaded").trimmingCharacters(in: .newlines))
                            fflush(stdout)
                        }
                    }
                }
            }
        }
        // The progress line is redrawn every 250 ms until the workers are done.
        while state.withLock({ $0.finished < images.count }) {
            if tty {
                state.withLock { s in
                    let p = s.progress.values
                    let bytes = p.reduce(UInt64(0)) { $0 + $1.bytesDone }
                    let seconds = Double(Clock.monotonicNanos() - started) / 1e9
                    print("\r\u{1b}[Kpreload: \(s.finished)/\(images.count) images, \(p.reduce(0) { $0 + $1.blobsDone })/\(p.reduce(0) { $0 + $1.blobs }) blobs, "
                          + "\(CacheReport.size(bytes)), \(CacheReport.size(UInt64(Double(bytes) / max(seconds, 0.001))))/s", terminator: "")
                    fflush(stdout)
                    s.progressShown = true
                }
            }
            usleep(250_000)
        }
        for w in workers { w.join() }
        let failed = state.withLock { s -> [String] in
            wipe(&s)
            return s.failed
        }
        if !json {
            let bytes = state.withLock { $0.progress.values.reduce(UInt64(0)) { $0 + $1.bytesDone } }
            let seconds = Double(Clock.monotonicNanos() - started) / 1e9
            print("preload: \(images.count - failed.count) of \(images.count) images loaded, \(CacheReport.size(bytes)) fetched in "
                  + "\(CacheReport.format1(seconds)) s\(failed.isEmpty ? "" : "; failed: " + failed.joined(separator: ", "))")
        }
        return failed.isEmpty ? 0 : 1
    }

    /// One image through the server's `/preload` stream; its last line.
    private func load(_ image: String, progress: (WarmProgress) -> Void) -> CacheReport.PreloadLine {
        var target = "/preload?image=" + percentEncoded(image)
        if !platforms.isEmpty { target += "&platform=" + percentEncoded(platforms.joined(separator: ",")) }
        if pin { target += "&pin=1" }
        var last: CacheReport.PreloadLine?
        do {
            let response = try admin.send("POST", target, timeoutSeconds: 24 * 3600) { bytes in
                guard let line = try? CacheReport.decode(CacheReport.PreloadLine.self, bytes) else { return }
                if let p = line.progress { progress(p) } else { last = line }
            }
            guard response.status == 200 else {
                let message = (try? CacheReport.decode(CacheReport.Failure.self, response.body).error) ?? String(decoding: response.body, as: UTF8.self)
                return .init(error: message)
            }
        } catch {
            return .init(error: "\(image): the server's admin socket did not answer: \(error)")
        }
        return last ?? .init(error: "\(image): the server's answer ended without a result")
    }
}
