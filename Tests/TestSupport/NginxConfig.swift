import Foundation

/// A whole nginx.conf for a test's own nginx: in the foreground, every path
/// (pid, logs, temp files under `directory`/tmp, which must exist) in
/// `directory`, `http` as the http block's body. Workers run as root when the
/// test is root: nginx's default `nobody` could not read a 0700 temp dir.
public func nginxMainConfig(directory d: String, workers: Int = 1, http: String) -> String {
    """
    daemon off;
    \(geteuid() == 0 ? "user root;" : "")
    worker_processes \(workers);
    pid \(d)/nginx.pid;
    error_log \(d)/error.log info;
    events { worker_connections 1024; }
    http {
        access_log \(d)/access.log;
        client_body_temp_path \(d)/tmp/body;
        proxy_temp_path \(d)/tmp/proxy;
        fastcgi_temp_path \(d)/tmp/fastcgi;
        uwsgi_temp_path \(d)/tmp/uwsgi;
        scgi_temp_path \(d)/tmp/scgi;
        \(http)
    }
    """
}
