import Reactor
import BlobStore
import Telemetry

extension Mirror {
    /// The families read at each scrape: upstream circuit state, fills, and the cache against its budget.
    static func collect(_ registries: [Registry], _ fills: FillRegistry, _ store: BlobStore, into out: inout Exposition) {
        let now = Clock.monotonicNanos()
        out.family("berth_upstream_circuit_open", .gauge,
                   "1 while Berth holds requests to the upstream off: after a 429 or ratelimit-remaining: 0 (rate_limit), or a timeout (outage).",
                   registries.flatMap { r -> [([(String, String)], Double)] in
                       let held = r.breaker.heldOff(now: now)
                       return [([("upstream", r.config.name), ("cause", "rate_limit")], held == true ? 1 : 0),
                               ([("upstream", r.config.name), ("cause", "outage")], held == false ? 1 : 0)]
                   })
        let f = fills.totals
        out.family("berth_fills_total", .counter,
                   "Blob fills from upstreams by outcome: started, joined (a request that found one in flight: single-flight), stored (verified and cached), relayed (served but not cached: over budget or a write error), failed.",
                   [([("event", "started")], Double(f.started)), ([("event", "joined")], Double(f.joined)),
                    ([("event", "stored")], Double(f.stored)), ([("event", "relayed")], Double(f.relayed)),
                    ([("event", "failed")], Double(f.failed))])
        out.family("berth_fills_in_flight", .gauge, "Blob fills in progress.", Double(fills.count))
        out.family("berth_relay_memory_bytes", .gauge, "Bytes held in the memory windows of relayed fills.", Double(BlobFill.relayMemoryInUse))
        let u = store.index.usage
        out.family("berth_cache_bytes", .gauge,
                   "Bytes under the cache directory as the budget counts them, by part: blobs, reserved (fills in progress), index, quarantine.",
                   [([("part", "blobs")], Double(u.blobs)), ([("part", "reserved")], Double(u.reserved)),
                    ([("part", "index")], Double(u.journal)), ([("part", "quarantine")], Double(u.quarantine))])
        out.family("berth_cache_blobs", .gauge, "Blobs (manifests, configs, layers) in the cache.", Double(u.count))
        out.family("berth_cache_pinned_bytes", .gauge, "Bytes of blobs pinned out of eviction.", Double(u.pinned))
        out.family("berth_cache_kept_bytes", .gauge, "Bytes of blobs held out of eviction for tag history (cache.keep_history), not pinned.", Double(u.kept))
        out.family("berth_cache_budget_bytes", .gauge, "The cache budget (cache.max_size).", Double(store.budget.maxBytes))
        out.family("berth_cache_usage_ratio", .gauge, "Bytes under the cache directory over the budget (0 to 1; eviction starts at the high watermark).",
                   store.budget.maxBytes == 0 ? 0 : Double(u.total) / Double(store.budget.maxBytes))
        let e = store.evicted
        out.family("berth_cache_evictions_total", .counter, "Blobs evicted (least recently used first) since start.", Double(e.count))
        out.family("berth_cache_evicted_bytes_total", .counter, "Bytes of blobs evicted since start.", Double(e.bytes))
    }

    /// With `peers:`: blob misses sent to the owner node first, by outcome.
    static func collect(_ peers: PeerCounts, into out: inout Exposition) {
        out.family("berth_peer_fetches_total", .counter,
                   "Blob misses sent to a peer node (peers:) before the upstream, by outcome: filled (the peer held it), missing (it did not: fetched upstream), failed (no answer: fetched upstream, the peer skipped for 10 s).",
                   [([("result", "filled")], Double(peers.filled.load(ordering: .relaxed))),
                    ([("result", "missing")], Double(peers.missing.load(ordering: .relaxed))),
                    ([("result", "failed")], Double(peers.failed.load(ordering: .relaxed)))])
    }
}
