#!/usr/bin/env bash
# A cold miss of one 1 GiB blob, one client: Berth against nginx `proxy_cache`, both in front of
# the same upstream (nginx serving the file as a registry would), each round on an empty cache,
# alternated (issue 11: rate ≥ 1.5× nginx's; report CPU per GiB for both, which bounds it here).
#
#   Benchmarks/e2e/miss.sh [OUTPUT.md]      (default Benchmarks/results/miss-YYYY-MM-DD.md)
#
# Each round restarts each mirror on an emptied cache, then one curl -o /dev/null through it;
# every answer 200 with the whole length, and Berth's copy must then be cached (verified). CPU
# per GiB: user + system of the mirror's processes (Berth: every thread, its hashing pool too;
# nginx: master and workers) over the transfer. Upstream, mirror and client share the cores.
# REPS rounds (default 3), MIB (default 1024), WORKERS per server (default 2). Installs
# nginx-light, curl; sends traffic only to 127.0.0.1; stops what it started (by PID).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${1:-$ROOT/Benchmarks/results/miss-$(date +%F).md}
REPS=${REPS:-3}
MIB=${MIB:-1024}
WORKERS=${WORKERS:-2}
LOAD0=$(cut -d" " -f1-3 /proc/loadavg)
NAME=miss
PACKAGES=(nginx-light curl)
BERTH_PREBUILT=${BERTH:-}
source "$ROOT/Benchmarks/e2e/lib.sh"

# The upstream: nginx serving the blob under a registry path (its own config and PID).
UP=$(free_port); BP=$(free_port); NP=$(free_port)
nginx_blob_upstream "$MIB" "$UP" 1
PATH_=$BLOB_PATH

start_berth() {
    rm -rf "$TMP/berth-cache"
    "$BERTH" serve --listen "127.0.0.1:$BP" --upstream "http://127.0.0.1:$UP" --cache-dir "$TMP/berth-cache" \
        --cache-max-size "$((MIB * 3))MiB" --workers "$WORKERS" --log-level error > "$TMP/berth.log" 2>&1 &
    BERTH_PID=$!; PIDS+=("$BERTH_PID"); wait_http "http://127.0.0.1:$BP/v2/"
}
start_proxy() {
    rm -rf "$TMP/px"; mkdir -p "$TMP/px/cache"
    cat > "$TMP/px/nginx.conf" <<NGX
daemon off; worker_processes $WORKERS; pid $TMP/px/nginx.pid; error_log $TMP/px/error.log error;
events { worker_connections 1024; }
http {
  access_log off; sendfile on; tcp_nopush on;
  client_body_temp_path $TMP/px/body; proxy_temp_path $TMP/px/ptmp; fastcgi_temp_path $TMP/px/f; uwsgi_temp_path $TMP/px/u; scgi_temp_path $TMP/px/s;
  proxy_cache_path $TMP/px/cache levels=1:2 keys_zone=c:10m max_size=20g inactive=1h use_temp_path=off;
  server {
    listen 127.0.0.1:$NP;
    location / {
      proxy_pass http://127.0.0.1:$UP; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_cache c; proxy_cache_valid 200 1h; proxy_cache_lock on; proxy_buffering on; proxy_max_temp_file_size 0;
    }
  }
}
NGX
    chmod -R 777 "$TMP/px"
    "$NGINX" -c "$TMP/px/nginx.conf" -e "$TMP/px/error.log" 2>>"$TMP/px/error.log" &
    PROXY_PID=$!; PIDS+=("$PROXY_PID"); wait_http "http://127.0.0.1:$NP/v2/"
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

get() {  # URL → "MB/s"; fails unless 200 with the whole length
    local out code size speed
    out=$(curl -s -o /dev/null -w '%{http_code} %{size_download} %{speed_download}' "$1")
    read -r code size speed <<<"$out"
    [ "$code" = 200 ] && [ "$size" = "$SIZE" ] || { log "$1 answered $code with $size bytes"; exit 1; }
    awk -v s="$speed" 'BEGIN {printf "%.0f", s / 1e6}'
}
curl -s -o /dev/null "http://127.0.0.1:$UP$PATH_"  # the file in the page cache
RB=(); RN=(); CB=(); CN=()
for r in $(seq 1 "$REPS"); do
    if (( r % 2 )); then order=(B N); else order=(N B); fi
    for who in "${order[@]}"; do
        if [ "$who" = B ]; then
            start_berth; t0=$(ticks "$BERTH_PID"); rate=$(get "http://127.0.0.1:$BP$PATH_"); t1=$(ticks "$BERTH_PID")
            for _ in $(seq 1 200); do [ -f "$TMP/berth-cache/blobs/sha256/${DIGEST:7:2}/${DIGEST:7}" ] && break; sleep 0.05; done
            [ -f "$TMP/berth-cache/blobs/sha256/${DIGEST:7:2}/${DIGEST:7}" ] || { log "Berth did not keep the blob"; exit 1; }
            stop "$BERTH_PID"; RB+=("$rate"); CB+=("$(awk -v t=$((t1 - t0)) -v hz="$HZ" -v m="$MIB" 'BEGIN {printf "%.0f", t / hz * 1000 / (m / 1024)}')")
        else
            start_proxy; pids="$PROXY_PID $(ps -o pid= --ppid "$PROXY_PID" | tr '\n' ' ')"
            # shellcheck disable=SC2086
            t0=$(ticks $pids); rate=$(get "http://127.0.0.1:$NP$PATH_"); t1=$(ticks $pids)
            stop "$PROXY_PID"; RN+=("$rate"); CN+=("$(awk -v t=$((t1 - t0)) -v hz="$HZ" -v m="$MIB" 'BEGIN {printf "%.0f", t / hz * 1000 / (m / 1024)}')")
        fi
        log "round $r $who: $rate MB/s"
    done
done
med() { printf "%s\n" "$@" | median; }
mB=$(med "${RB[@]}"); mN=$(med "${RN[@]}"); mCB=$(med "${CB[@]}"); mCN=$(med "${CN[@]}")
DIRECT=$(get "http://127.0.0.1:$UP$PATH_")
mkdir -p "$(dirname "$OUT")"
{
    echo "# Cold ${MIB} MiB miss, one client: Berth vs nginx proxy_cache, same run"
    echo
    echo "- date: $(date -u '+%F %H:%M UTC'); berth: $(berth_version); machine: $(nproc) cores, $(uname -r)"
    echo "- load average: $LOAD0 before, $(cut -d' ' -f1-3 /proc/loadavg) after"
    echo "- upstream: nginx serving the file from the page cache ($DIRECT MB/s to curl directly, after the rounds); both mirrors $WORKERS workers, restarted on an empty cache each round; $REPS rounds alternating; medians"
    echo "- Berth streams to the client while it writes the temp file and hashes (SHA-256) on its pool; the last byte waits for the digest check; the blob is then kept. nginx: proxy_cache, proxy_buffering, no digest check."
    echo
    echo "| metric | Berth | nginx proxy_cache | Berth/nginx |"
    echo "|---|---:|---:|---:|"
    echo "| MB/s | $mB | $mN | $(ratio "$mB" "$mN") |"
    echo "| mirror CPU per GiB (ms) | $mCB | $mCN | $(ratio "$mCB" "$mCN") |"
    echo
    echo "Samples in run order: MB/s Berth ${RB[*]}, nginx ${RN[*]}; CPU ms/GiB Berth ${CB[*]}, nginx ${CN[*]}."
} > "$OUT"
cat "$OUT"
