import HTTP1

/// The `/v2/` front door: answers what Berth serves itself and refuses the rest
/// with OCI-style errors. Proxy routes (manifests, blobs, tags, referrers)
/// plug in here with the proxy core.
///
/// Loop thread only; `handle` is called by the HTTP server for every request.
public final class Router {
    public init() {}

    static let apiVersion = ("Docker-Distribution-API-Version", "registry/2.0")

    public func handle(_ w: ResponseWriter) {
        let req = w.request
        switch req.method {
        case .get, .head: break
        default:
            var head = ResponseHead(status: 405)
            head.headers.add("Allow", "GET, HEAD")
            Router.error(w, .unsupported, "Berth is a pull-only mirror: \(req.method.name) is not served", head: head)
            return
        }
        let path = req.target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0]
        switch path {
        case "/v2/", "/v2":
            var head = ResponseHead(status: 200)
            head.headers.add("Content-Type", "application/json")
            head.headers.add(Router.apiVersion.0, Router.apiVersion.1)
            w.respond(head, body: Array("{}".utf8))
        case "/healthz":
            var head = ResponseHead(status: 200)
            head.headers.add("Content-Type", "text/plain")
            w.respond(head, body: Array("ok\n".utf8))
        default:
            Router.error(w, .notFound, "no route for \(path)")
        }
    }

    /// Answers an OCI error; `head` may carry extra headers and a status other than the code's.
    public static func error(_ w: ResponseWriter, _ code: OCIErrorCode, _ message: String, head: ResponseHead? = nil) {
        var head = head ?? ResponseHead(status: code.status)
        head.headers.set("Content-Type", "application/json")
        head.headers.set(apiVersion.0, apiVersion.1)
        w.respond(head, body: ociErrorBody(code, message))
    }
}
