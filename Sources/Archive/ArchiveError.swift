/// Why an archive was refused. `kind` is for tests and callers that branch;
/// `description` is the message a user reads.
public struct ArchiveError: Error, Equatable, CustomStringConvertible {
    public enum Kind: Equatable, Sendable {
        /// The stream ended inside a header, an entry, or before the end-of-archive marker.
        case truncated
        /// A header's checksum does not match its bytes (not a tar, or corrupt).
        case badChecksum
        /// A numeric field is not octal or base-256, or is out of range.
        case badNumber
        /// A name or link target that is absolute, has `..`, or leaves the archive.
        case unsafePath
        /// Two entries with one name.
        case duplicate
        /// A pax or GNU long-name record that is malformed or too long.
        case badExtendedHeader
        /// More entries than a sane archive has.
        case tooManyEntries
        /// zlib refused the stream (corrupt data, bad header, CRC mismatch).
        case corruptGzip
    }

    public let kind: Kind
    public let description: String

    public init(_ kind: Kind, _ description: String) {
        self.kind = kind
        self.description = description
    }
}

/// Archive member names, checked before anything trusts them.
public enum ArchivePath {
    /// `name` as a clean relative path (`./a//b/` → `a/b`; the root is ""), or
    /// nil when it is absolute, has a `..` component or a NUL byte.
    public static func normalize(_ name: String) -> String? {
        guard !name.hasPrefix("/"), !name.utf8.contains(0) else { return nil }
        var parts: [Substring] = []
        for part in name.split(separator: "/", omittingEmptySubsequences: true) {
            if part == "." { continue }
            if part == ".." { return nil }
            parts.append(part)
        }
        return parts.joined(separator: "/")
    }

    /// Where a symlink at `entry` pointing to `target` leads, as a clean path
    /// inside the archive, or nil when the target is absolute or climbs out.
    public static func resolveSymlink(at entry: String, target: String) -> String? {
        guard !target.hasPrefix("/"), !target.isEmpty, !target.utf8.contains(0) else { return nil }
        var parts = entry.split(separator: "/").dropLast().map(String.init)
        for part in target.split(separator: "/", omittingEmptySubsequences: true) {
            if part == "." { continue }
            if part == ".." {
                guard !parts.isEmpty else { return nil }
                parts.removeLast()
            } else {
                parts.append(String(part))
            }
        }
        return parts.joined(separator: "/")
    }
}
