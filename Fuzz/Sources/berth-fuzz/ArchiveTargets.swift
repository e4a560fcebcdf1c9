import Archive

// `berth import` reads archives from anyone: tar framing, pax and GNU long names, links, gzip.
// Whatever the bytes, the reader must not crash, must hand out only clean relative names and
// link targets inside the archive, and must never give more data than the stream holds.

/// The first byte picks the chunk size the source hands out (framing must not depend on it).
func fuzzArchive(_ data: UnsafeRawBufferPointer) {
    guard let first = data.first else { return }
    let bytes = Array(data.dropFirst())
    let chunk = Int(first % 64) + 1
    var source: ByteSource = MemorySource(bytes, chunk: chunk)
    if isGzip(bytes) {
        guard let gz = try? GzipSource(source, bufferSize: 256) else { return }
        source = gz
    }
    let reader = TarReader(source)
    var buffer = [UInt8](repeating: 0, count: 700)
    var total = 0
    let limit = 64 << 20  // a gzip bomb from 8 KiB of input stays far below this
    do {
        // Bounded by TarReader.maxEntries and by the input (each entry costs at least a block).
        while let entry = try reader.next() {
            require(ArchivePath.normalize(entry.name) == entry.name, "name \(entry.name) is not clean")
            switch entry.kind {
            case .symlink(let t), .hardlink(let t):
                require(ArchivePath.normalize(t) == t && !t.hasPrefix("/"), "link target \(t) is not clean")
            default: break
            }
            while total < limit {
                let n = try buffer.withUnsafeMutableBytes { try reader.read(into: $0) }
                if n == 0 { break }
                total += n
            }
            if !isGzip(bytes) { require(total <= bytes.count, "more data than the archive holds") }
        }
    } catch is ArchiveError {
        // Refusals are the expected outcome for most inputs.
    } catch {
        fail("unexpected error type: \(error)")
    }
}
