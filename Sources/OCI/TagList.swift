import FoundationEssentials

/// A repository's tags, as the spec wants them served whatever the upstream did:
/// valid tags only, no duplicates, sorted lexically (byte order), paged by `n` and `last`.
public struct TagList: Equatable, Sendable {
    /// The largest `n` honoured (CVE-2023-2253: a client-supplied count never sizes anything unbounded).
    public static let maxPageSize = 10_000
    /// The largest tag list document accepted from an upstream.
    public static let maxBytes = 16 << 20

    /// The repository name.
    public let name: String
    /// The tags, sorted by byte order, deduplicated, invalid tags dropped.
    public let tags: [String]

    /// A tag list; `tags` are filtered to valid tags, deduplicated and sorted by byte order.
    public init(name: String, tags: [String]) {
        self.name = name
        self.tags = Array(Set(tags.filter { Tag.isValid($0) })).sorted(by: TagList.precedes)
    }

    /// Parses `{"name": …, "tags": [...]}`; `"tags": null` (as some registries send) is an empty list.
    public static func parse(_ bytes: [UInt8]) throws -> TagList {
        guard bytes.count <= maxBytes else { throw DocumentError(message: "tag list exceeds \(maxBytes) bytes") }
        do {
            let raw = try JSONDecoder().decode(RawTagList.self, from: Data(bytes))
            return TagList(name: raw.name, tags: raw.tags ?? [])
        } catch {
            throw DocumentError(message: "tag list is not a valid JSON document")
        }
    }

    /// `{"name":…,"tags":[…]}` with every tag.
    public func encoded() -> [UInt8] {
        TagList.encode(name: name, tags: tags)
    }

    /// `{"name":…,"tags":[…]}` for a page of tags.
    public static func encode(name: String, tags: [String]) -> [UInt8] {
        var out = #"{"name":""# + jsonEscaped(name) + #"","tags":["#
        for (i, tag) in tags.enumerated() {
            if i > 0 { out += "," }
            out += "\"" + jsonEscaped(tag) + "\""
        }
        out += "]}"
        return Array(out.utf8)
    }

    /// The tags strictly after `last` (which need not be a tag), at most `n`.
    ///
    /// `n` is bounded to `maxPageSize`; a negative `n` counts as 0; nil means
    /// every remaining tag (still at most `maxPageSize`). `more` is true when tags
    /// remain after the page, for a `Link` header — but never for `n == 0`:
    /// a link to the same empty page would send a client round in a loop.
    public func page(n: Int?, last: String?) -> (tags: [String], more: Bool) {
        var start = tags.startIndex
        if let last {
            // First tag > last, by binary search over the sorted tags.
            var lo = tags.startIndex, hi = tags.endIndex
            while lo < hi {
                let mid = (lo + hi) / 2
                if TagList.precedes(last, tags[mid]) { hi = mid } else { lo = mid + 1 }
            }
            start = lo
        }
        let limit = max(0, min(n ?? TagList.maxPageSize, TagList.maxPageSize))
        if limit == 0 { return ([], false) }
        let end = min(tags.endIndex, start + limit)
        return (Array(tags[start..<end]), end < tags.endIndex)
    }

    static func precedes(_ a: String, _ b: String) -> Bool {
        a.utf8.lexicographicallyPrecedes(b.utf8)
    }
}

private struct RawTagList: Decodable {
    var name: String
    var tags: [String]?
}

/// JSON string escaping: quotes, backslash, control characters.
public func jsonEscaped(_ s: String) -> String {
    var out = ""
    out.reserveCapacity(s.utf8.count)
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if scalar.value < 0x20 {
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    return out
}
