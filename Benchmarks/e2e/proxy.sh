#!/usr/bin/env bash
# End-to-end proxy benchmark: Berth against Distribution's proxy mode
# (docker-registry with proxy.remoteurl) and nginx (proxy_cache with
# proxy_cache_lock), all in front of the same local upstream (docker-registry),
# measured in the same run on loopback.
#
#   Benchmarks/e2e/proxy.sh [OUTPUT.md]   (default Benchmarks/results/proxy-YYYY-MM-DD.md)
#
# Rows:
#   cold pull      skopeo copy of a multi-layer image (4 layers, 96 MiB) through each
#                  proxy with an empty cache vs. directly from the upstream (median of REPS)
#   warm by tag    wrk GET /v2/<repo>/manifests/<tag> (Accept: schema2), -c64
#   warm by digest wrk GET /v2/<repo>/manifests/<digest>, -c64
#   warm blob      curl of a cached 1 GiB blob, MiB/s
#   herd           HERD (20) concurrent cold GETs of the 1 GiB blob: wall time, upstream
#                  GETs counted in the upstream's access log, followers' time to first byte
#   verified fill  one cold GET of the 1 GiB blob (hash + write + fsync + rename) in MiB/s,
#                  against one core of `openssl speed -evp sha256`
# The client programs share the 2 cores with the servers: ratios are the result.
# Sends traffic only to 127.0.0.1; stops every process it started, by PID.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${1:-$ROOT/Benchmarks/results/proxy-$(date +%F).md}
REPS=${REPS:-3}
HERD=${HERD:-20}
BIG_MIB=${BIG_MIB:-1024}
WRK_SECONDS=${WRK_SECONDS:-8}
log() { printf '[proxy.sh] %s\n' "$*" >&2; }

source "$ROOT/scripts/deps.sh"
install_packages "${BUILD_PACKAGES[@]}" nginx-light wrk curl docker-registry skopeo openssl

log "building berth (release)"
(cd "$ROOT" && swift build -c release --product berth >&2)
BERTH="$(cd "$ROOT" && swift build -c release --show-bin-path)/berth"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/berth-proxy-bench.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.3
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    [ -n "${KEEP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 200); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done; log "no answer from $1"; exit 1; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s.%N; }

# --- upstream: docker-registry ---------------------------------------------------
UP=$(free_port)
mkdir -p "$TMP/up"
cat > "$TMP/up/config.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: false}}
storage: {filesystem: {rootdirectory: $TMP/up/data}}
http: {addr: 127.0.0.1:$UP}
YML
env -u REGISTRY_AUTH_FILE docker-registry serve "$TMP/up/config.yml" > "$TMP/up/access.log" 2>&1 & PIDS+=($!)
wait_http "http://127.0.0.1:$UP/v2/"

# A 4-layer image (dir: layout, schema2) and a 1 GiB blob pushed by plain HTTP.
log "building and pushing the test image"
IMG=$TMP/img; mkdir -p "$IMG"
LAYERS=""
for i in 1 2 3 4; do
    head -c $((24 * 1024 * 1024)) /dev/urandom > "$IMG/l"
    h=$(sha256sum "$IMG/l" | cut -d' ' -f1); mv "$IMG/l" "$IMG/$h"
    LAYERS="$LAYERS${LAYERS:+,}{\"mediaType\":\"application/vnd.docker.image.rootfs.diff.tar.gzip\",\"size\":$((24*1024*1024)),\"digest\":\"sha256:$h\"}"
done
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}' > "$IMG/c"
C=$(sha256sum "$IMG/c" | cut -d' ' -f1); CS=$(stat -c %s "$IMG/c"); mv "$IMG/c" "$IMG/$C"
printf '{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":%d,"digest":"sha256:%s"},"layers":[%s]}' "$CS" "$C" "$LAYERS" > "$IMG/manifest.json"
echo 'Directory Transport Version: 1.1' > "$IMG/version"
skopeo copy -q --dest-tls-verify=false "dir:$IMG" "docker://127.0.0.1:$UP/bench/app:v1" >&2
MDIGEST=$(curl -s -D - -o /dev/null -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://127.0.0.1:$UP/v2/bench/app/manifests/v1" | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}')

head -c $((BIG_MIB * 1024 * 1024)) /dev/urandom > "$TMP/big"
BIG=sha256:$(sha256sum "$TMP/big" | cut -d' ' -f1)
LOC=$(curl -s -D - -o /dev/null -X POST "http://127.0.0.1:$UP/v2/bench/big/blobs/uploads/" | tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}')
case "$LOC" in http*) ;; *) LOC="http://127.0.0.1:$UP$LOC";; esac
curl -s -o /dev/null -X PUT -H "Content-Type: application/octet-stream" -T "$TMP/big" "$LOC&digest=$BIG"
rm -f "$TMP/big"

# --- the proxies --------------------------------------------------------------------
BP=$(free_port); DP=$(free_port); NP=$(free_port)
log "ports: upstream $UP, berth $BP, distribution $DP, nginx $NP; work dir $TMP"
start_berth() {
    rm -rf "$TMP/berth-cache"
    "$BERTH" serve --listen "127.0.0.1:$BP" --upstream "http://127.0.0.1:$UP" --cache-dir "$TMP/berth-cache" --log-level error &
    BERTH_PID=$!; PIDS+=($BERTH_PID); wait_http "http://127.0.0.1:$BP/v2/"
}
stop_berth() { kill "$BERTH_PID"; wait "$BERTH_PID" 2>/dev/null || true; }
start_dist() {
    rm -rf "$TMP/dist"; mkdir -p "$TMP/dist"
    cat > "$TMP/dist/config.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $TMP/dist/data}}
http: {addr: 127.0.0.1:$DP}
proxy: {remoteurl: "http://127.0.0.1:$UP"}
YML
    env -u REGISTRY_AUTH_FILE docker-registry serve "$TMP/dist/config.yml" > "$TMP/dist/log" 2>&1 &
    DIST_PID=$!; PIDS+=($DIST_PID); wait_http "http://127.0.0.1:$DP/v2/"
}
stop_dist() { kill "$DIST_PID"; wait "$DIST_PID" 2>/dev/null || true; }
start_nginx() {
    rm -rf "$TMP/ngx"; mkdir -p "$TMP/ngx/cache" "$TMP/ngx/logs"
    cat > "$TMP/ngx/nginx.conf" <<NGX
$( [ "$(id -u)" = 0 ] && echo "user root;" ) daemon off; worker_processes 2; pid $TMP/ngx/nginx.pid; error_log $TMP/ngx/logs/error.log error;
events { worker_connections 4096; }
http {
  access_log off; sendfile on; tcp_nopush on;
  client_body_temp_path $TMP/ngx/body; proxy_temp_path $TMP/ngx/ptmp; fastcgi_temp_path $TMP/ngx/f; uwsgi_temp_path $TMP/ngx/u; scgi_temp_path $TMP/ngx/s;
  proxy_cache_path $TMP/ngx/cache levels=1:2 keys_zone=c:10m max_size=20g inactive=1h use_temp_path=off;
  server {
    listen 127.0.0.1:$NP;
    location / {
      proxy_pass http://127.0.0.1:$UP; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_cache c; proxy_cache_valid 200 206 1h; proxy_cache_lock on; proxy_cache_lock_timeout 600s; proxy_cache_lock_age 600s;
      proxy_cache_key \$uri\$http_accept; proxy_buffering on; proxy_max_temp_file_size 0;
    }
  }
}
NGX
    nginx -p "$TMP/ngx" -c "$TMP/ngx/nginx.conf" &
    NGINX_PID=$!; PIDS+=($NGINX_PID); wait_http "http://127.0.0.1:$NP/v2/"
}
stop_nginx() { kill "$NGINX_PID"; wait "$NGINX_PID" 2>/dev/null || true; }

pull_time() { # $1 = port; prints seconds for a skopeo copy into a fresh dir
    rm -rf "$TMP/out"; local t0; t0=$(now)
    skopeo copy -q --src-tls-verify=false "docker://127.0.0.1:$1/bench/app:v1" "dir:$TMP/out" >&2
    echo "$(now) - $t0" | bc -l
}
upstream_gets() { grep -c "\"GET /v2/bench/big/blobs/$BIG" "$TMP/up/access.log" || true; }

# --- cold pull ----------------------------------------------------------------------
log "cold pulls"
direct=(); viaB=(); viaD=()
for _ in $(seq 1 "$REPS"); do
    direct+=("$(pull_time "$UP")")
    start_berth; viaB+=("$(pull_time "$BP")"); stop_berth
    start_dist; viaD+=("$(pull_time "$DP")"); stop_dist
done
COLD_DIRECT=$(printf '%s\n' "${direct[@]}" | median)
COLD_B=$(printf '%s\n' "${viaB[@]}" | median)
COLD_D=$(printf '%s\n' "${viaD[@]}" | median)

# --- warm: manifests and a cached 1 GiB blob -------------------------------------
wrk_rps() { wrk -t2 -c64 -d"${WRK_SECONDS}s" -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "$1" | awk '/Requests\/sec/{print $2}'; }
blob_speed() { curl -s -o /dev/null -w '%{speed_download}' "$1" | awk '{printf "%.0f", $1/1048576}'; }
log "warm rows"
start_berth; start_dist; start_nginx
for p in $BP $DP $NP; do
    skopeo copy -q --src-tls-verify=false "docker://127.0.0.1:$p/bench/app:v1" "dir:$TMP/warm-$p" >&2
    curl -s -o /dev/null -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "http://127.0.0.1:$p/v2/bench/app/manifests/$MDIGEST"
    curl -s -o /dev/null "http://127.0.0.1:$p/v2/bench/big/blobs/$BIG"
done
TAG_B=$(wrk_rps "http://127.0.0.1:$BP/v2/bench/app/manifests/v1"); TAG_D=$(wrk_rps "http://127.0.0.1:$DP/v2/bench/app/manifests/v1"); TAG_N=$(wrk_rps "http://127.0.0.1:$NP/v2/bench/app/manifests/v1")
DIG_B=$(wrk_rps "http://127.0.0.1:$BP/v2/bench/app/manifests/$MDIGEST"); DIG_D=$(wrk_rps "http://127.0.0.1:$DP/v2/bench/app/manifests/$MDIGEST"); DIG_N=$(wrk_rps "http://127.0.0.1:$NP/v2/bench/app/manifests/$MDIGEST")
bb=(); bd=(); bn=()
for _ in $(seq 1 "$REPS"); do
    bb+=("$(blob_speed "http://127.0.0.1:$BP/v2/bench/big/blobs/$BIG")")
    bd+=("$(blob_speed "http://127.0.0.1:$DP/v2/bench/big/blobs/$BIG")")
    bn+=("$(blob_speed "http://127.0.0.1:$NP/v2/bench/big/blobs/$BIG")")
done
BLOB_B=$(printf '%s\n' "${bb[@]}" | median); BLOB_D=$(printf '%s\n' "${bd[@]}" | median); BLOB_N=$(printf '%s\n' "${bn[@]}" | median)
stop_berth; stop_dist; stop_nginx

# --- one cold GET (verified fill) and the herd ---------------------------------------
log "verified fill and herd"
start_berth
before=$(upstream_gets); t0=$(now)
curl -s -o /dev/null "http://127.0.0.1:$BP/v2/bench/big/blobs/$BIG"
ONE_COLD=$(echo "$(now) - $t0" | bc -l)
FILL_MIBS=$(echo "$BIG_MIB / $ONE_COLD" | bc -l)
stop_berth
SHA_MIBS=$(openssl speed -evp sha256 -bytes 16384 -seconds 3 2>/dev/null | awk '/^sha256/{v=$NF; sub("k","",v); printf "%.0f", v*1000/1048576}')

herd() { # $1 = port; prints wall, and writes TTFBs to $TMP/ttfb
    : > "$TMP/ttfb"; local t0; t0=$(now); local ps=()
    for _ in $(seq 1 "$HERD"); do
        curl -s -o /dev/null -w '%{time_starttransfer}\n' "http://127.0.0.1:$1/v2/bench/big/blobs/$BIG" >> "$TMP/ttfb" & ps+=($!)
    done
    for p in "${ps[@]}"; do wait "$p"; done
    echo "$(now) - $t0" | bc -l
}
start_berth; b0=$(upstream_gets); HERD_B=$(herd "$BP"); HERD_B_GETS=$(( $(upstream_gets) - b0 )); TTFB_B=$(sort -g "$TMP/ttfb" | median); TTFB_B_MAX=$(sort -g "$TMP/ttfb" | tail -1); stop_berth
start_nginx; n0=$(upstream_gets); HERD_N=$(herd "$NP"); HERD_N_GETS=$(( $(upstream_gets) - n0 )); TTFB_N=$(sort -g "$TMP/ttfb" | median); TTFB_N_MAX=$(sort -g "$TMP/ttfb" | tail -1); stop_nginx

# --- report ------------------------------------------------------------------------------
r() { echo "$1 / $2" | bc -l | awk '{printf "%.2f", $1}'; }
f() { awk -v x="$1" 'BEGIN{printf "%.2f", x}'; }
mkdir -p "$(dirname "$OUT")"
{
echo "# Proxy benchmark, $(date -u '+%F %H:%M UTC')"
echo
echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), Debian $(cat /etc/debian_version). Upstream: docker-registry $(dpkg-query -W -f='${Version}' docker-registry) on loopback; image: 4 × 24 MiB layers; big blob: $BIG_MIB MiB."
echo
echo "| Row | Berth | Distribution proxy | nginx proxy_cache | Ratio | Target |"
echo "|---|---|---|---|---|---|"
echo "| cold pull (s), direct from upstream: $(f "$COLD_DIRECT") | $(f "$COLD_B") | $(f "$COLD_D") | – | Berth/direct $(r "$COLD_B" "$COLD_DIRECT") | ≤ 1.15 |"
echo "| warm manifest by tag (req/s, 64 conns) | $TAG_B | $TAG_D | $TAG_N | Berth/Distribution $(r "$TAG_B" "$TAG_D") | ≥ 3 |"
echo "| warm manifest by digest (req/s, 64 conns) | $DIG_B | $DIG_D | $DIG_N | Berth/Distribution $(r "$DIG_B" "$DIG_D") | ≥ 3 |"
echo "| warm 1 GiB blob (MiB/s, one stream) | $BLOB_B | $BLOB_D | $BLOB_N | Berth/Distribution $(r "$BLOB_B" "$BLOB_D"), Berth/nginx $(r "$BLOB_B" "$BLOB_N") | |"
echo "| herd: $HERD cold GETs of 1 GiB, wall (s) | $(f "$HERD_B") | – | $(f "$HERD_N") | Berth/nginx $(r "$HERD_B" "$HERD_N"); Berth herd/one cold GET $(r "$HERD_B" "$ONE_COLD") | ≤ 0.8 vs nginx; ≤ 1.3 vs one GET |"
echo "| herd: upstream GETs | $HERD_B_GETS | – | $HERD_N_GETS | | 1 |"
echo "| herd: time to first byte, median / max (s) | $(f "$TTFB_B") / $(f "$TTFB_B_MAX") | – | $(f "$TTFB_N") / $(f "$TTFB_N_MAX") | | ms, not the fill |"
echo "| verified fill, one cold GET (MiB/s) vs one core of openssl sha256 ($SHA_MIBS MiB/s) | $(f "$FILL_MIBS") | – | – | $(r "$FILL_MIBS" "$SHA_MIBS") | ≥ 0.8 |"
} | tee "$OUT"
