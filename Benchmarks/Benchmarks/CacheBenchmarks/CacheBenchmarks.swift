// Micro-benchmarks for the cache index and store (BlobStore module): a hit's
// `touch`, choosing and forgetting eviction victims, loading a journal of a
// million blobs at startup, and re-hashing cached files as `verify` would.
//
// Run: `cd Benchmarks && swift package benchmark --target CacheBenchmarks`.
// Targets (issue "Cache lifecycle"): touch ≤ 1 µs; 100,000 victims < 1 s;
// a 1,000,000-blob journal loads in < 3 s; re-hash rate against one core of
// `openssl speed -evp sha256` (run by hand, see Benchmarks/results/cache-*.md).

#if canImport(Glibc)
import Glibc
#endif
import Benchmark
import BlobStore
import OCI
import Reactor

// MARK: - Inputs

/// A seeded generator: the same digests every run.
struct SplitMix {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The `i`th synthetic digest (64 hex digits from four generator outputs).
func syntheticDigestText(_ i: Int) -> String {
    var g = SplitMix(state: UInt64(i) &* 0x2545_F491_4F6C_DD1D)
    let digits = Array("0123456789abcdef".utf8)
    var hex = [UInt8]()
    hex.reserveCapacity(64)
    for _ in 0..<4 {
        var v = g.next()
        for _ in 0..<16 {
            hex.append(digits[Int(v & 0xf)])
            v >>= 4
        }
    }
    return "sha256:" + String(decoding: hex, as: UTF8.self)
}

/// A journal as a snapshot writes it: `B digest size lastUse` per blob,
/// oldest first; with `links`, an `L repo digest` line per blob (every blob
/// lives in at least one repository; 1,000 repositories); a clean-stop record.
func makeJournal(blobs: Int, size: Int, links: Bool) -> [UInt8] {
    var out = [UInt8]()
    out.reserveCapacity(blobs * (links ? 190 : 95))
    let t0 = 1_790_000_000
    for i in 0..<blobs {
        out += Array("B\t\(syntheticDigestText(i))\t\(size)\t\(t0 + i / 100)\n".utf8)
    }
    if links {
        for i in 0..<blobs {
            out += Array("L\tteam\(i % 1000)/app\t\(syntheticDigestText(i))\n".utf8)
        }
    }
    out += Array("C\t\(t0 + blobs)\n".utf8)
    return out
}

func makeDirectory(_ prefix: String) -> String {
    var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
    let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    precondition(p != nil)
    return String(cString: p!)
}

func writeFile(_ path: String, _ bytes: [UInt8]) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    precondition(fd >= 0, "open \(path)")
    var off = 0
    while off < bytes.count {
        let n = bytes[off...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        precondition(n > 0)
        off += n
    }
    close(fd)
}

func removeTree(_ path: String) {
    var st = stat()
    guard lstat(path, &st) == 0 else { return }
    if (st.st_mode & S_IFMT) == S_IFDIR, let d = opendir(path) {
        var names: [String] = []
        while let e = readdir(d) {
            let n = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if n != "." && n != ".." { names.append(n) }
        }
        closedir(d)
        for n in names { removeTree(path + "/" + n) }
        rmdir(path)
    } else {
        unlink(path)
    }
}

/// Shared by the benchmarks; built by their setup hooks, outside measurement.
nonisolated(unsafe) var pool = BlockingPool(threads: 2)
nonisolated(unsafe) var millionDir = ""          // index.log: 1,000,000 B records (+ C)
nonisolated(unsafe) var millionLinkedDir = ""    // index.log: 1,000,000 B + 1,000,000 L records (+ C)
nonisolated(unsafe) var touchStore: BlobStore?
nonisolated(unsafe) var touchOrder: [Digest] = []
nonisolated(unsafe) var evictionJournal: [UInt8] = []
nonisolated(unsafe) var hashDir = ""
let hashFiles = 8
let hashFileBytes = 64 << 20

func prepareMillion() {
    guard millionDir.isEmpty else { return }
    millionDir = makeDirectory("berth-bench-index")
    writeFile(millionDir + "/index.log", makeJournal(blobs: 1_000_000, size: 4 << 20, links: false))
}

func prepareMillionLinked() {
    guard millionLinkedDir.isEmpty else { return }
    millionLinkedDir = makeDirectory("berth-bench-index-linked")
    writeFile(millionLinkedDir + "/index.log", makeJournal(blobs: 1_000_000, size: 4 << 20, links: true))
}

// MARK: - Benchmarks

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.throughput, .wallClock, .mallocCountTotal],
        warmupIterations: 1,
        scalingFactor: .one,
        maxDuration: .seconds(5),
        maxIterations: 1_000
    )

    // A hit: `touch` moves the node to the head of the LRU (under the index lock).
    // 1,000,000 blobs, touched in a random order so the nodes are not in cache.
    Benchmark("CacheIndex.touch: hit among 1,000,000 blobs",
              configuration: .init(metrics: [.throughput, .wallClock, .mallocCountTotal], scalingFactor: .kilo, maxDuration: .seconds(3)),
              closure: { benchmark in
                  guard let store = touchStore else { return }
                  let order = touchOrder
                  let mask = order.count - 1
                  var i = 0
                  let now: Int64 = 1_800_000_000
                  benchmark.startMeasurement()
                  for _ in benchmark.scaledIterations {
                      store.index.touch(order[i & mask], now: now)
                      i &+= 1
                  }
              },
              setup: {
                  prepareMillion()
                  touchStore = try BlobStore(root: millionDir, pool: pool, budget: Budget(maxBytes: 1 << 60))
                  var g = SplitMix(state: 42)
                  touchOrder = (0..<(1 << 16)).map { _ in Digest(syntheticDigestText(Int(g.next() % 1_000_000)))! }
              },
              teardown: {
                  touchStore = nil
                  removeTree(millionDir)
                  millionDir = ""
              })

    // Eviction as `BlobStore.reserve` does it in memory: pick the oldest
    // unpinned blobs adding up to the bytes needed, then forget each (an `X`
    // journal record each). One operation = 100,000 victims out of 200,000.
    Benchmark("CacheIndex: choose + remove 100,000 eviction victims (1 op = 100,000)",
              configuration: .init(metrics: [.wallClock, .mallocCountTotal], scalingFactor: .one, maxDuration: .seconds(10), maxIterations: 10),
              closure: { benchmark in
                  let dir = makeDirectory("berth-bench-evict")
                  writeFile(dir + "/index.log", evictionJournal)
                  guard let store = try? BlobStore(root: dir, pool: pool, budget: Budget(maxBytes: 1 << 60)) else { fatalError("store") }
                  benchmark.startMeasurement()
                  let victims = store.index.evictionCandidates(totalling: 100_000 * 1000)
                  for v in victims { store.index.removeBlob(v.digest) }
                  benchmark.stopMeasurement()
                  precondition(victims.count == 100_000 && store.index.usage.count == 100_000)
                  store.index.flush()
                  removeTree(dir)
              },
              setup: { evictionJournal = makeJournal(blobs: 200_000, size: 1000, links: false) },
              teardown: { evictionJournal = [] })

    // Startup: `BlobStore.init` replays the journal (the index load) after a clean stop.
    Benchmark("BlobStore.init: load a journal of 1,000,000 blobs (B records)",
              configuration: .init(metrics: [.wallClock, .mallocCountTotal, .peakMemoryResident], scalingFactor: .one,
                                   maxDuration: .seconds(20), maxIterations: 5),
              closure: { _ in
                  guard let store = try? BlobStore(root: millionDir, pool: pool, budget: Budget(maxBytes: 1 << 60)) else { fatalError("store") }
                  precondition(store.index.usage.count == 1_000_000)
                  blackHole(store)
              },
              setup: { prepareMillion() },
              teardown: {
                  removeTree(millionDir)
                  millionDir = ""
              })

    Benchmark("BlobStore.init: load a journal of 1,000,000 blobs + 1,000,000 repository links",
              configuration: .init(metrics: [.wallClock, .mallocCountTotal, .peakMemoryResident], scalingFactor: .one,
                                   maxDuration: .seconds(20), maxIterations: 5),
              closure: { _ in
                  guard let store = try? BlobStore(root: millionLinkedDir, pool: pool, budget: Budget(maxBytes: 1 << 60)) else { fatalError("store") }
                  precondition(store.index.usage.count == 1_000_000)
                  precondition(store.index.isLinked("team7/app", Digest(syntheticDigestText(7))!))
                  blackHole(store)
              },
              setup: { prepareMillionLinked() },
              teardown: {
                  removeTree(millionLinkedDir)
                  millionLinkedDir = ""
              })

    // `verify`-like: read a cached file and SHA-256 it (page cache warm, so this is
    // the hashing rate plus read(2) copies). One operation = one 64 MiB file.
    Benchmark("Re-hash cached files: read + SHA-256 (1 op = 64 MiB)",
              configuration: .init(metrics: [.throughput, .wallClock], scalingFactor: .one, maxDuration: .seconds(5), maxIterations: 200),
              closure: { benchmark in
                  var buf = [UInt8](repeating: 0, count: 1 << 20)
                  for k in benchmark.scaledIterations {
                      let fd = open("\(hashDir)/f\(k % hashFiles)", O_RDONLY)
                      precondition(fd >= 0)
                      let h = SHA256Hasher()
                      while true {
                          let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                          if n <= 0 { break }
                          buf.withUnsafeBytes { h.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                      }
                      close(fd)
                      blackHole(h.finalizeHex())
                  }
              },
              setup: {
                  hashDir = makeDirectory("berth-bench-hash")
                  var g = SplitMix(state: 7)
                  for f in 0..<hashFiles {
                      var bytes = [UInt8](repeating: 0, count: hashFileBytes)
                      bytes.withUnsafeMutableBytes { raw in
                          let words = raw.bindMemory(to: UInt64.self)
                          for i in words.indices { words[i] = g.next() }
                      }
                      writeFile("\(hashDir)/f\(f)", bytes)
                  }
              },
              teardown: { removeTree(hashDir) })
}
