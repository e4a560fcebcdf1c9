#!/usr/bin/env bash
# Cached pulls through a 429 storm (issue 9 target: they keep today's latency): warm
# manifest-by-tag requests to one Berth (tag_ttl 1s, so tags keep revalidating) while its upstream
# behaves, and while it answers 429 to everything, alternated in the same run.
#
#   Benchmarks/e2e/storm.sh [OUTPUT.md]    (default Benchmarks/results/storm-YYYY-MM-DD.md)
#
# The upstream is nginx in front of Debian's docker-registry; a flag file makes nginx answer
# 429 with Retry-After: 5 to every request. wrk -t2 -c64, REPS alternations (default 5) of
# WRK_SECONDS (default 10); any non-2xx answer from Berth fails the run. The storm's 429s are
# counted in nginx's log. Traffic to 127.0.0.1 only; stops what it started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${1:-$ROOT/Benchmarks/results/storm-$(date +%F).md}
REPS=${REPS:-5}
WRK_SECONDS=${WRK_SECONDS:-10}
LOAD0=$(cut -d" " -f1-3 /proc/loadavg)
NAME=storm.sh
PACKAGES=(wrk curl docker-registry skopeo nginx-light)
source "$ROOT/Benchmarks/e2e/lib.sh"
chmod 755 "$TMP"

# --- registry, nginx in front of it, a small image -------------------------------------
REG=$(free_port); UP=$(free_port); B=$(free_port)
mkdir -p "$TMP/nginx"
start_registry "$REG" reg
cat > "$TMP/nginx/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log $TMP/nginx/access.log;
    client_body_temp_path $TMP/nginx;
    proxy_temp_path $TMP/nginx;
    server {
        listen 127.0.0.1:$UP;
        client_max_body_size 0;
        location / {
            if (-f $TMP/storm) { add_header Retry-After 5 always; return 429; }
            proxy_pass http://127.0.0.1:$REG;
            proxy_set_header Host \$http_host;
        }
    }
}
CONF
nginx -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" & PIDS+=($!)
wait_http "http://127.0.0.1:$REG/v2/"; wait_http "http://127.0.0.1:$UP/v2/"
push_small_image "$REG"

"$BERTH" serve --listen "127.0.0.1:$B" --upstream "http://127.0.0.1:$UP" --cache-dir "$TMP/cache" --tag-ttl 1s --log-level error & PIDS+=($!)
wait_http "http://127.0.0.1:$B/v2/"
URL="http://127.0.0.1:$B/v2/bench/app/manifests/v1"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "$ACCEPT" "$URL")" = 200 ] || { log "Berth did not serve the tag"; exit 1; }
# The tag is recorded off the loop; wait until it is a hit.
for _ in $(seq 1 100); do curl -s -D - -o /dev/null -H "$ACCEPT" "$URL" | grep -qi '^cache-status:.*hit' && break; sleep 0.05; done

run() {  # → "req/s p99-ms"; fails on errors or non-2xx
    local out; out=$(timeout $((WRK_SECONDS + 30)) wrk -t2 -c64 -d"${WRK_SECONDS}s" --latency -H "$ACCEPT" "$URL")
    if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then log "wrk saw failures:"; echo "$out" >&2; exit 1; fi
    local p99; p99=$(awk '$1=="99%"{v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' <<<"$out")
    echo "$(awk '/Requests\/sec/{print $2}' <<<"$out") $p99"
}
count429() { grep -c '" 429 ' "$TMP/nginx/access.log" || true; }
timeout 20 wrk -t2 -c64 -d2s -H "$ACCEPT" "$URL" >/dev/null
NR=(); NP=(); SR=(); SP=(); STORM429=0
for r in $(seq 1 "$REPS"); do
    rm -f "$TMP/storm"; read -r rps p99 < <(run); NR+=("$rps"); NP+=("$p99")
    before=$(count429); touch "$TMP/storm"; read -r rps p99 < <(run); SR+=("$rps"); SP+=("$p99")
    STORM429=$((STORM429 + $(count429) - before))
    log "rep $r: normal ${NR[-1]} req/s p99 ${NP[-1]} ms; storm ${SR[-1]} req/s p99 ${SP[-1]} ms"
done
rm -f "$TMP/storm"
mNR=$(printf '%s\n' "${NR[@]}" | median); mNP=$(printf '%s\n' "${NP[@]}" | median)
mSR=$(printf '%s\n' "${SR[@]}" | median); mSP=$(printf '%s\n' "${SP[@]}" | median)
[ "$STORM429" -gt 0 ] || { log "the upstream never answered 429: the storm did not happen"; exit 1; }

mkdir -p "$(dirname "$OUT")"
{
    echo "# Cached pulls through a 429 storm"
    echo
    echo "- date: $(date -u '+%F %H:%M UTC'); machine: $(nproc) cores, $(uname -r), Debian $(cat /etc/debian_version)"
    echo "- load average before: $LOAD0; after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- berth $(git -C "$ROOT" rev-parse --short HEAD) release, 2 loops, \`--tag-ttl 1s\`; upstream nginx $(dpkg-query -W -f='${Version}' nginx-light) in front of docker-registry; the storm: every upstream request answered 429, Retry-After 5"
    echo "- wrk -t2 -c64 -d${WRK_SECONDS}s --latency GET /v2/bench/app/manifests/v1 (by tag), $REPS alternations, medians; the client shares the 2 cores"
    echo "- 429s the upstream answered during the storm passes: $STORM429 (Berth backs off for Retry-After, serving the cached tag stale meanwhile)"
    echo
    echo "| upstream | req/s (median) | p99 ms (median) | req/s ratio | p99 ratio | samples req/s | samples p99 |"
    echo "|---|---:|---:|---:|---:|---|---|"
    echo "| behaving | $mNR | $mNP | 1.000 | 1.000 | ${NR[*]} | ${NP[*]} |"
    echo "| 429 storm | $mSR | $mSP | $(ratio "$mSR" "$mNR") | $(ratio "$mSP" "$mNP") | ${SR[*]} | ${SP[*]} |"
    echo
    echo "Target (issue 9): through a 429 storm, cached pulls keep today's latency."
} > "$OUT"
cat "$OUT"
