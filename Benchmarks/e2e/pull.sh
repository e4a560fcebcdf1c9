#!/usr/bin/env bash
# Pull benchmark with `berth bench --compare`: the upstream directly, Berth,
# Distribution's proxy (docker-registry proxy.remoteurl) and nginx proxy_cache
# (proxy_cache_lock), all over one local upstream (docker-registry), in one run,
# rounds interleaved (direct, Berth, Distribution, nginx, direct, …). Each round
# has a cold pass (the --cold-cmd restarts the endpoint's server on an emptied
# cache; the upstream itself is left as it is) and a warm pass right after it.
#
#   Benchmarks/e2e/pull.sh [OUTPUT.md]   (default Benchmarks/results/bench-YYYY-MM-DD.md)
#   ROUNDS=3 PULLERS=2 LAYERS_MIB="30 20 15 10 6 4" env knobs
#   RTT_MS=40: every endpoint (direct too) reaches the upstream through latency-proxy.py,
#   which delays each chunk RTT_MS/2 each way (a registry that far away; bandwidth not limited)
#
# Time to pulled is what `berth bench` measures on its side: HEAD by tag, GET
# manifest, GET config, GET layers 3 at a time, every body hashed (--verify).
# The client shares the 2 cores with the servers: ratios are the result.
# Sends traffic only to 127.0.0.1; stops every process it started, by PID.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${1:-$ROOT/Benchmarks/results/bench-$(date +%F).md}
ROUNDS=${ROUNDS:-3}
PULLERS=${PULLERS:-2}
LAYERS_MIB=${LAYERS_MIB:-"30 20 15 10 6 4"}
log() { printf '[pull.sh] %s\n' "$*" >&2; }

source "$ROOT/scripts/deps.sh"
install_packages "${BUILD_PACKAGES[@]}" nginx-light curl docker-registry skopeo python3

if [ -z "${BERTH:-}" ]; then
    log "building berth (release)"
    (cd "$ROOT" && swift build -c release --product berth >&2)
    BERTH="$(cd "$ROOT" && swift build -c release --show-bin-path)/berth"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/berth-pull-bench.XXXXXX")
chmod 755 "$TMP"   # nginx workers must read their cache (FIELD-NOTES.md)
UP_PID=""
cleanup() {
    for f in "$TMP"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
    [ -n "$UP_PID" ] && kill "$UP_PID" 2>/dev/null || true
    sleep 0.3
    for f in "$TMP"/*.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true; done
    [ -n "${KEEP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 200); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done; log "no answer from $1"; exit 1; }

# --- upstream: docker-registry ---------------------------------------------------
UP=$(free_port); BP=$(free_port); DP=$(free_port); NP=$(free_port); BQ=$(free_port)
mkdir -p "$TMP/up"
cat > "$TMP/up/config.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $TMP/up/data}}
http: {addr: 127.0.0.1:$UP}
YML
env -u REGISTRY_AUTH_FILE docker-registry serve "$TMP/up/config.yml" > "$TMP/up/log" 2>&1 & UP_PID=$!
wait_http "http://127.0.0.1:$UP/v2/"
UPX=$UP   # the upstream as the endpoints reach it
if [ "${RTT_MS:-0}" != 0 ]; then
    UPX=$(free_port)
    python3 "$ROOT/Benchmarks/e2e/latency-proxy.py" "$UPX" "$UP" "$((RTT_MS / 2))" > "$TMP/latency.log" 2>&1 & echo $! > "$TMP/latency.pid"
    wait_http "http://127.0.0.1:$UPX/v2/"
fi

log "building and pushing bench/app:v1 (layers of $LAYERS_MIB MiB)"
IMG=$TMP/img; mkdir -p "$IMG"
LAYERS=""; TOTAL=0; N=0
for mib in $LAYERS_MIB; do
    head -c $((mib * 1024 * 1024)) /dev/urandom > "$IMG/l"
    h=$(sha256sum "$IMG/l" | cut -d' ' -f1); mv "$IMG/l" "$IMG/$h"
    LAYERS="$LAYERS${LAYERS:+,}{\"mediaType\":\"application/vnd.docker.image.rootfs.diff.tar.gzip\",\"size\":$((mib*1024*1024)),\"digest\":\"sha256:$h\"}"
    TOTAL=$((TOTAL + mib)); N=$((N + 1))
done
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}' > "$IMG/c"
C=$(sha256sum "$IMG/c" | cut -d' ' -f1); CS=$(stat -c %s "$IMG/c"); mv "$IMG/c" "$IMG/$C"
printf '{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":%d,"digest":"sha256:%s"},"layers":[%s]}' "$CS" "$C" "$LAYERS" > "$IMG/manifest.json"
echo 'Directory Transport Version: 1.1' > "$IMG/version"
skopeo copy -q --dest-tls-verify=false "dir:$IMG" "docker://127.0.0.1:$UP/bench/app:v1" >&2
rm -rf "$IMG"

# --- the mirrors, (re)started on an empty cache by cold.sh ---------------------------
cat > "$TMP/dist.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $TMP/dist-data}}
http: {addr: 127.0.0.1:$DP}
proxy: {remoteurl: "http://127.0.0.1:$UPX"}
YML
cat > "$TMP/nginx.conf" <<NGX
$( [ "$(id -u)" = 0 ] && echo "user root;" ) daemon off; worker_processes 2; pid $TMP/ngx/nginx.pid; error_log $TMP/ngx/error.log error;
events { worker_connections 4096; }
http {
  access_log off; sendfile on; tcp_nopush on;
  client_body_temp_path $TMP/ngx/body; proxy_temp_path $TMP/ngx/ptmp; fastcgi_temp_path $TMP/ngx/f; uwsgi_temp_path $TMP/ngx/u; scgi_temp_path $TMP/ngx/s;
  proxy_cache_path $TMP/ngx/cache levels=1:2 keys_zone=c:10m max_size=20g inactive=1h use_temp_path=off;
  server {
    listen 127.0.0.1:$NP;
    location / {
      proxy_pass http://127.0.0.1:$UPX; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_cache c; proxy_cache_valid 200 206 1h; proxy_cache_lock on; proxy_cache_lock_timeout 600s; proxy_cache_lock_age 600s;
      proxy_cache_key \$request_method\$uri\$http_accept; proxy_buffering on; proxy_max_temp_file_size 0;
    }
  }
}
NGX
# cold.sh: stop the endpoint's server by the PID it recorded, empty its cache, start it again (detached, logs to files).
cat > "$TMP/cold.sh" <<SH
#!/usr/bin/env bash
set -euo pipefail
wait_http() { for _ in \$(seq 1 200); do curl -s -o /dev/null "\$1" && return 0; sleep 0.05; done; echo "no answer from \$1" >&2; exit 1; }
stop() { # \$1 = pid file
    [ -f "\$1" ] || return 0
    local p; p=\$(cat "\$1"); kill "\$p" 2>/dev/null || true
    for _ in \$(seq 1 100); do kill -0 "\$p" 2>/dev/null || break; sleep 0.05; done
    rm -f "\$1"
}
case "\$BERTH_BENCH_ENDPOINT" in
  http://127.0.0.1:$UPX) ;;   # the upstream: nothing to empty
  http://127.0.0.1:$BP)
    stop "$TMP/berth.pid"; rm -rf "$TMP/berth-cache"
    "$BERTH" serve --listen 127.0.0.1:$BP --upstream http://127.0.0.1:$UPX --cache-dir "$TMP/berth-cache" --log-level error \
        > "$TMP/berth.log" 2>&1 < /dev/null & echo \$! > "$TMP/berth.pid"
    wait_http http://127.0.0.1:$BP/v2/ ;;
  http://127.0.0.1:$BQ)   # Berth with manifest-driven prefetch off
    stop "$TMP/berthq.pid"; rm -rf "$TMP/berthq-cache"
    BERTH_UPSTREAM_PREFETCH=false "$BERTH" serve --listen 127.0.0.1:$BQ --upstream http://127.0.0.1:$UPX --cache-dir "$TMP/berthq-cache" --log-level error \
        > "$TMP/berthq.log" 2>&1 < /dev/null & echo \$! > "$TMP/berthq.pid"
    wait_http http://127.0.0.1:$BQ/v2/ ;;
  http://127.0.0.1:$DP)
    stop "$TMP/dist.pid"; rm -rf "$TMP/dist-data"
    env -u REGISTRY_AUTH_FILE docker-registry serve "$TMP/dist.yml" > "$TMP/dist.log" 2>&1 < /dev/null & echo \$! > "$TMP/dist.pid"
    wait_http http://127.0.0.1:$DP/v2/ ;;
  http://127.0.0.1:$NP)
    stop "$TMP/nginx.pid"; rm -rf "$TMP/ngx"; mkdir -p "$TMP/ngx/cache"
    nginx -p "$TMP/ngx" -c "$TMP/nginx.conf" > "$TMP/nginx.log" 2>&1 < /dev/null & echo \$! > "$TMP/nginx.pid"
    wait_http http://127.0.0.1:$NP/v2/ ;;
  *) echo "cold.sh: unknown endpoint \$BERTH_BENCH_ENDPOINT" >&2; exit 1 ;;
esac
SH
chmod +x "$TMP/cold.sh"

# --- the run --------------------------------------------------------------------------
E_UP=http://127.0.0.1:$UPX; E_B=http://127.0.0.1:$BP; E_D=http://127.0.0.1:$DP; E_N=http://127.0.0.1:$NP; E_BQ=http://127.0.0.1:$BQ
log "berth bench: $ROUNDS rounds × (cold + warm) × 5 endpoints, $PULLERS pullers; work dir $TMP"
set +e
"$BERTH" bench --json --verify --pullers "$PULLERS" --rounds "$ROUNDS" --cold-cmd "$TMP/cold.sh" \
    "$E_UP" bench/app:v1 --compare "$E_B" "$E_BQ" "$E_D" "$E_N" > "$TMP/bench.json"
STATUS=$?
set -e
[ "$STATUS" = 0 ] || log "berth bench exited $STATUS: some request was not 2xx or did not verify (see the failures column)"
# Resident memory of the Berth endpoint after its last cold and warm passes (issue 11 target: ≤ 32 MiB).
BERTH_RSS_KIB=$(ps -o rss= -p "$(cat "$TMP/berth.pid")" 2>/dev/null | tr -d ' ' || true)

# --- report ------------------------------------------------------------------------------
mkdir -p "$(dirname "$OUT")"
python3 - "$TMP/bench.json" "$E_UP" "$E_B" "$E_D" "$E_N" "$E_BQ" <<PY | tee "$OUT"
import json, sys
r = json.load(open(sys.argv[1]))
names = {sys.argv[2]: "upstream (direct)", sys.argv[3]: "Berth", sys.argv[4]: "Distribution proxy", sys.argv[5]: "nginx proxy_cache",
         sys.argv[6]: "Berth, prefetch off"}
print("# Pull benchmark (berth bench --compare), $(date -u '+%F %H:%M UTC')")
print()
print("Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), Debian $(cat /etc/debian_version); "
      "upstream docker-registry $(dpkg-query -W -f='${Version}' docker-registry), nginx $(nginx -v 2>&1 | sed 's/.*\///'), all on loopback${RTT_MS:+, the upstream behind latency-proxy.py at $RTT_MS ms of round trip}. "
      "Image bench/app:v1: $N layers, $TOTAL MiB (${LAYERS_MIB// /, } MiB), Docker schema2.")
print()
print(f"\`berth bench --verify --pullers {r['pullers']} --rounds {r['rounds']} --cold-cmd cold.sh UPSTREAM bench/app:v1 --compare BERTH BERTH-NO-PREFETCH DISTRIBUTION NGINX\`: "
      "each round runs, per endpoint in turn, a cold pass (the endpoint restarted on an empty cache) and then a warm pass. "
      "Time to pulled: HEAD by tag → GET manifest → GET config → GET $N layers, 3 at a time, every body hashed. "
      "Medians over the rounds of each pass's p50 (and p99) across the pullers; ratio = p50 / the upstream's, direct.")
print()
print("| phase | endpoint | pulled p50 (ms) | pulled p99 (ms) | MB/s (all pullers) | p50 / direct | p99 / direct | failed passes |")
print("|---|---|---|---|---|---|---|---|")
base99 = {}
for c in r["comparison"]:
    base99.setdefault(c["phase"], c["pulledP99"])
    print(f"| {c['phase']} | {names.get(c['endpoint'], c['endpoint'])} | {c['pulledP50']:.0f} | {c['pulledP99']:.0f} | {c['bytesPerSecond']/1e6:.0f} | "
          f"{c['ratio']:.2f}× | {c['pulledP99'] / base99[c['phase']]:.2f}× | {c['failedPasses']} |")
print()
print("Every pass:")
print()
print("| round | phase | endpoint | ok | pulled p50 / p99 (ms) | manifest TTFB p50 (ms) | blob TTFB p50 (ms) | MB/s | requests (status) |")
print("|---|---|---|---|---|---|---|---|---|")
for p in r["passes"]:
    reqs = ", ".join(f"{k} {v['count']}" + ("" if set(v['byStatus']) <= {'200'} else " " + str(v['byStatus'])) for k, v in sorted(p["requests"].items()))
    print(f"| {p['round']} | {p['phase']} | {names.get(p['endpoint'], p['endpoint'])} | {p['completed']}/{p['pullers']} | {p['pulled']['p50']:.0f} / {p['pulled']['p99']:.0f} | "
          f"{p['manifestTTFB']['p50']:.1f} | {p['blobTTFB']['p50']:.1f} | {p['bytesPerSecond']/1e6:.0f} | {reqs} |")
print()
print(f"Failed requests in all: {r['failures']} (berth bench exit status $STATUS).")
rss = "${BERTH_RSS_KIB:-}"
print(f"Berth's resident memory after its last passes (ps rss): {int(rss) / 1024:.1f} MiB (target ≤ 32 MiB)." if rss else "Berth's resident memory: not read.")
PY
