// Micro-benchmarks for the HTTP1 module's hot paths: request parsing (the head
// every pull sends), pipelined batches, upstream response parsing with a
// chunked body, `Range` resolution and response-head serialization.
//
// Run: `cd Benchmarks && swift package benchmark` (add `--filter 'RequestParser.*'`
// for one group). Each benchmark reports throughput (operations per second,
// one operation = one message), wall clock and mallocs per operation batch.

import Benchmark
import HTTP1

// MARK: - Inputs

/// A containerd 1.6 blob GET as it reaches a mirror (7 header fields).
let blobRequest = Array((
    "GET /v2/library/ubuntu/blobs/sha256:3c645031de2917ade93ec54b118d5d3e45de72ef580b8f419a8cdc41e01d042c?ns=docker.io HTTP/1.1\r\n"
        + "Host: 127.0.0.1:5000\r\n"
        + "User-Agent: containerd/1.6.20+unknown\r\n"
        + "Accept: application/vnd.docker.image.rootfs.diff.tar.gzip, application/vnd.oci.image.layer.v1.tar+gzip, */*\r\n"
        + "Accept-Encoding: gzip\r\n"
        + "Authorization: Bearer eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJhY2Nlc3MiOlt7InR5cGUiOiJyZXBvc2l0b3J5In1dfQ.c2lnbmF0dXJl\r\n"
        + "Range: bytes=0-\r\n"
        + "Docker-Distribution-Api-Version: registry/2.0\r\n"
        + "\r\n").utf8)

/// A Docker manifest HEAD by tag, then a ping, then the blob GET: 16 requests pipelined.
let pipelinedBatch: [UInt8] = {
    let manifest = Array((
        "HEAD /v2/library/ubuntu/manifests/22.04 HTTP/1.1\r\n"
            + "Host: 127.0.0.1:5000\r\n"
            + "User-Agent: docker/24.0.5 go/go1.20.6 git-commit/a61e2b4 os/linux arch/amd64\r\n"
            + "Accept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json\r\n"
            + "Accept-Encoding: gzip\r\n"
            + "Connection: keep-alive\r\n"
            + "\r\n").utf8)
    let ping = Array("GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:5000\r\nUser-Agent: docker/24.0.5\r\nAccept-Encoding: gzip\r\n\r\n".utf8)
    var out: [UInt8] = []
    for i in 0..<16 {
        switch i % 3 {
        case 0: out += manifest
        case 1: out += ping
        default: out += blobRequest
        }
    }
    return out
}()
let pipelinedCount = 16

/// An upstream blob response (redirect target style headers), chunked, 4 × 4 KiB chunks.
let chunkedResponse: [UInt8] = {
    var s = "HTTP/1.1 200 OK\r\n"
        + "Content-Type: application/octet-stream\r\n"
        + "Docker-Content-Digest: sha256:3c645031de2917ade93ec54b118d5d3e45de72ef580b8f419a8cdc41e01d042c\r\n"
        + "Docker-Distribution-Api-Version: registry/2.0\r\n"
        + "Etag: \"sha256:3c645031de2917ade93ec54b118d5d3e45de72ef580b8f419a8cdc41e01d042c\"\r\n"
        + "Date: Fri, 20 Nov 2026 10:00:00 GMT\r\n"
        + "Transfer-Encoding: chunked\r\n"
        + "\r\n"
    var out = Array(s.utf8)
    let chunk = [UInt8](repeating: 0x61, count: 4096)
    for _ in 0..<4 {
        out += Array("1000\r\n".utf8)
        out += chunk
        out += [0x0d, 0x0a]
    }
    s = "0\r\n\r\n"
    out += Array(s.utf8)
    return out
}()

/// The `Range` values clients send: Docker's resume, a closed range, a suffix, a multi-range.
let rangeHeaders = ["bytes=0-", "bytes=1048576-", "bytes=100-199", "bytes=-512", "bytes=0-99, 200-299, 1000-"]

// MARK: - Helpers

/// Parses every message in `bytes` with `parser`; returns messages completed.
@inline(__always)
func parseAll(_ parser: inout RequestParser, _ bytes: UnsafeRawBufferPointer) throws -> Int {
    var offset = 0
    var ends = 0
    while true {
        let (event, used) = try parser.parse(UnsafeRawBufferPointer(rebasing: bytes[offset...]))
        offset += used
        guard let event else { break }
        switch event {
        case .head(let head, _): blackHole(head)
        case .body: break
        case .end: ends += 1
        }
    }
    return ends
}

@inline(__always)
func parseAll(_ parser: inout ResponseParser, _ bytes: UnsafeRawBufferPointer) throws -> Int {
    var offset = 0
    var bodyBytes = 0
    while true {
        let (event, used) = try parser.parse(UnsafeRawBufferPointer(rebasing: bytes[offset...]))
        offset += used
        guard let event else { break }
        switch event {
        case .head(let head, _): blackHole(head)
        case .body(let r): bodyBytes += r.count
        case .end: return bodyBytes
        }
    }
    return bodyBytes
}

// MARK: - Benchmarks

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.throughput, .wallClock, .mallocCountTotal],
        warmupIterations: 3,
        scalingFactor: .kilo,
        maxDuration: .seconds(2),
        maxIterations: 1_000
    )

    Benchmark("RequestParser: containerd blob GET (8 headers)") { benchmark in
        var parser = RequestParser()
        try blobRequest.withUnsafeBytes { bytes in
            for _ in benchmark.scaledIterations {
                let n = try parseAll(&parser, bytes)
                precondition(n == 1)
            }
        }
    }

    Benchmark("RequestParser: 16 pipelined requests (1 op = 1 batch)") { benchmark in
        var parser = RequestParser()
        try pipelinedBatch.withUnsafeBytes { bytes in
            for _ in benchmark.scaledIterations {
                let n = try parseAll(&parser, bytes)
                precondition(n == pipelinedCount)
            }
        }
    }

    Benchmark("RequestParser: blob GET split in 2 reads") { benchmark in
        var parser = RequestParser()
        let cut = blobRequest.count / 2
        try blobRequest.withUnsafeBytes { bytes in
            for _ in benchmark.scaledIterations {
                var n = try parseAll(&parser, UnsafeRawBufferPointer(rebasing: bytes[..<cut]))
                n += try parseAll(&parser, UnsafeRawBufferPointer(rebasing: bytes[cut...]))
                precondition(n == 1)
            }
        }
    }

    Benchmark("ResponseParser: 7-header head + chunked 16 KiB body") { benchmark in
        var parser = ResponseParser()
        try chunkedResponse.withUnsafeBytes { bytes in
            for _ in benchmark.scaledIterations {
                parser.expectResponse(toHEAD: false)
                let n = try parseAll(&parser, bytes)
                precondition(n == 16384)
            }
        }
    }

    Benchmark("RangeRequest.parse: 5 typical headers (1 op = 5 parses)") { benchmark in
        for _ in benchmark.scaledIterations {
            for h in rangeHeaders {
                blackHole(RangeRequest.parse(h, size: 1 << 30))
            }
        }
    }

    Benchmark("ResponseHead.write: /v2/ answer head") { benchmark in
        var head = ResponseHead(status: 200)
        head.headers.add("Content-Type", "application/json")
        head.headers.add("Docker-Distribution-Api-Version", "registry/2.0")
        head.headers.add("Content-Length", "2")
        var out: [UInt8] = []
        out.reserveCapacity(512)
        for _ in benchmark.scaledIterations {
            out.removeAll(keepingCapacity: true)
            head.write(into: &out)
            blackHole(out.count)
        }
    }
}
