import HTTP1
import OCI

/// The OCI distribution error codes Berth answers with, and their statuses.
/// One table, as in the spec: a handler names the code, the status follows.
public enum OCIErrorCode: String, Sendable {
    case blobUnknown = "BLOB_UNKNOWN"
    case digestInvalid = "DIGEST_INVALID"
    case manifestUnknown = "MANIFEST_UNKNOWN"
    case manifestInvalid = "MANIFEST_INVALID"
    case nameInvalid = "NAME_INVALID"
    case nameUnknown = "NAME_UNKNOWN"
    case tagInvalid = "TAG_INVALID"
    case unauthorized = "UNAUTHORIZED"
    case denied = "DENIED"
    case unsupported = "UNSUPPORTED"
    case tooManyRequests = "TOOMANYREQUESTS"
    case notFound = "NOT_FOUND"
    case rangeInvalid = "RANGE_INVALID"
    case unavailable = "UNAVAILABLE"

    /// The status a bare occurrence of this code is answered with.
    public var status: Int {
        switch self {
        case .blobUnknown, .manifestUnknown, .nameUnknown, .notFound: return 404
        case .digestInvalid, .manifestInvalid, .nameInvalid, .tagInvalid: return 400
        case .unauthorized: return 401
        case .denied: return 403
        case .unsupported: return 405
        case .tooManyRequests: return 429
        case .rangeInvalid: return 416
        case .unavailable: return 503
        }
    }
}

/// `{"errors":[{"code":…,"message":…}]}`, the body of every OCI error answer.
public func ociErrorBody(_ code: OCIErrorCode, _ message: String) -> [UInt8] {
    Array(#"{"errors":[{"code":"\#(code.rawValue)","message":"\#(jsonEscaped(message))"}]}"#.utf8) + [0x0a]
}

/// The OCI code for a status the HTTP layer refuses with before routing.
public func ociCode(forStatus status: Int) -> OCIErrorCode {
    switch status {
    case 404: return .notFound
    case 405: return .unsupported
    case 416: return .rangeInvalid
    case 429: return .tooManyRequests
    default: return .unsupported
    }
}
