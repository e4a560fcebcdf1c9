import OCI

/// The cached blobs in recency order: O(1) insert, touch, remove and
/// least-recent lookup. Nodes live in one array and link by index, so a touch
/// moves two integers and allocates nothing. Held blobs (pinned, or kept for
/// a tag's history) are kept out of the list: eviction never walks past them.
///
/// A value type; `CacheIndex` keeps it behind its lock.
struct LRUList {
    struct Node {
        var digest: Digest
        var size: UInt64
        /// Unix seconds of the last use.
        var lastUse: Int64
        var pinned = false
        /// Kept out of eviction for a tag's history (`cache.keep_history`).
        var kept = false
        var isHeld: Bool { pinned || kept }
        var prev: Int32 = -1
        var next: Int32 = -1
    }

    private(set) var nodes: [Node] = []
    private var freeSlots: [Int32] = []
    private var slots: [Digest: Int32] = [:]
    private var head: Int32 = -1   // most recently used
    private var tail: Int32 = -1   // least recently used
    /// Bytes of every blob, pinned ones included.
    private(set) var bytes: UInt64 = 0
    private(set) var pinnedBytes: UInt64 = 0
    /// Bytes of kept blobs that are not also pinned.
    private(set) var keptBytes: UInt64 = 0

    var count: Int { slots.count }

    func contains(_ d: Digest) -> Bool { slots[d] != nil }

    /// Room for `n` blobs without regrowing (loading a journal).
    mutating func reserveCapacity(_ n: Int) {
        nodes.reserveCapacity(n)
        slots.reserveCapacity(n)
    }

    func node(_ d: Digest) -> Node? { slots[d].map { nodes[Int($0)] } }

    /// Adds `d` as the most recent (or refreshes it when present).
    mutating func insert(_ d: Digest, size: UInt64, lastUse: Int64) {
        if let i = slots[d] {
            let old = nodes[Int(i)].size
            bytes = bytes - old + size
            if nodes[Int(i)].pinned { pinnedBytes = pinnedBytes - old + size } else if nodes[Int(i)].kept { keptBytes = keptBytes - old + size }
            nodes[Int(i)].size = size
            touch(d, at: lastUse)
            return
        }
        let node = Node(digest: d, size: size, lastUse: lastUse)
        let i: Int32
        if let f = freeSlots.popLast() {
            i = f
            nodes[Int(i)] = node
        } else {
            i = Int32(nodes.count)
            nodes.append(node)
        }
        slots[d] = i
        bytes += size
        linkAtHead(i)
    }

    /// Marks `d` used now. False when it is not cached.
    @discardableResult
    mutating func touch(_ d: Digest, at now: Int64) -> Bool {
        guard let i = slots[d] else { return false }
        nodes[Int(i)].lastUse = now
        if !nodes[Int(i)].isHeld && head != i {
            unlink(i)
            linkAtHead(i)
        }
        return true
    }

    @discardableResult
    mutating func remove(_ d: Digest) -> Node? {
        guard let i = slots.removeValue(forKey: d) else { return nil }
        let n = nodes[Int(i)]
        if n.pinned { pinnedBytes -= n.size } else if n.kept { keptBytes -= n.size } else { unlink(i) }
        bytes -= n.size
        freeSlots.append(i)
        return n
    }

    mutating func setPinned(_ d: Digest, _ pinned: Bool) {
        guard let i = slots[d] else { return }
        hold(i) { $0.pinned = pinned }
    }

    mutating func setKept(_ d: Digest, _ kept: Bool) {
        guard let i = slots[d] else { return }
        hold(i) { $0.kept = kept }
    }

    /// Changes a node's pin or kept flag, moving it out of or back into the
    /// list and between the byte counts.
    private mutating func hold(_ i: Int32, _ change: (inout Node) -> Void) {
        let before = nodes[Int(i)]
        change(&nodes[Int(i)])
        let after = nodes[Int(i)]
        func count(_ n: Node, _ sign: Bool) {
            if n.pinned { pinnedBytes = sign ? pinnedBytes + n.size : pinnedBytes - n.size }
            else if n.kept { keptBytes = sign ? keptBytes + n.size : keptBytes - n.size }
        }
        count(before, false)
        count(after, true)
        if before.isHeld && !after.isHeld { linkAtHead(i) } else if !before.isHeld && after.isHeld { unlink(i) }
    }

    /// Least recently used blobs not held, oldest first, until `bytes` of them
    /// are collected (or the list ends).
    func oldest(totalling wanted: UInt64) -> [Node] {
        var out: [Node] = []
        var sum: UInt64 = 0
        var i = tail
        while i >= 0 && sum < wanted {
            out.append(nodes[Int(i)])
            sum += nodes[Int(i)].size
            i = nodes[Int(i)].prev
        }
        return out
    }

    /// Every blob, least recent first (held ones first of all).
    func allOldestFirst() -> [Node] {
        var out = slots.values.map { nodes[Int($0)] }.filter(\.isHeld)
        var i = tail
        while i >= 0 {
            out.append(nodes[Int(i)])
            i = nodes[Int(i)].prev
        }
        return out
    }

    private mutating func unlink(_ i: Int32) {
        let p = nodes[Int(i)].prev, n = nodes[Int(i)].next
        if p >= 0 { nodes[Int(p)].next = n } else { head = n }
        if n >= 0 { nodes[Int(n)].prev = p } else { tail = p }
        nodes[Int(i)].prev = -1
        nodes[Int(i)].next = -1
    }

    private mutating func linkAtHead(_ i: Int32) {
        nodes[Int(i)].prev = -1
        nodes[Int(i)].next = head
        if head >= 0 { nodes[Int(head)].prev = i }
        head = i
        if tail < 0 { tail = i }
    }
}
