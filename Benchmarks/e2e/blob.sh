#!/usr/bin/env bash
# A warm blob, one stream: `berth serve` answering a cached 1 GiB layer against nginx serving
# the same file (sendfile, tcp_nopush), alternated in the same run (issue 11 target: ≥ 1.0×).
#
#   Benchmarks/e2e/blob.sh [OUTPUT.md]      (default Benchmarks/results/blob-YYYY-MM-DD.md)
#
# nginx serves the file as a registry would (GET /v2/bench/big/blobs/<digest>) and is also
# Berth's upstream: Berth fills its cache from it once, then both serve the same bytes from
# the page cache. curl -o /dev/null, REPS alternations (default 5), every answer 200 with the
# whole length. PIN=1 (default): one worker each pinned to core SERVER_CPU (0), curl pinned to
# CLIENT_CPU (1); PIN= : two workers each, nothing pinned. Also the servers' CPU per GiB.
# Installs nginx-light, curl; sends traffic only to 127.0.0.1; stops what it started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${1:-$ROOT/Benchmarks/results/blob-$(date +%F).md}
REPS=${REPS:-5}
MIB=${MIB:-1024}
PIN=${PIN-1}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
LOAD0=$(cut -d" " -f1-3 /proc/loadavg)
NAME=blob
PACKAGES=(nginx-light curl)
BERTH_PREBUILT=${BERTH:-}
source "$ROOT/Benchmarks/e2e/lib.sh"
if [ -n "$PIN" ]; then WORKERS=1; SERVER_WRAP=(taskset -c "$SERVER_CPU"); CLIENT_WRAP=(taskset -c "$CLIENT_CPU")
else WORKERS=2; SERVER_WRAP=(); CLIENT_WRAP=(); fi

NP=$(free_port); BP=$(free_port)
nginx_blob_upstream "$MIB" "$NP" "$WORKERS" "${SERVER_WRAP[@]}"
"${SERVER_WRAP[@]}" "$BERTH" serve --listen "127.0.0.1:$BP" --upstream "http://127.0.0.1:$NP" --cache-dir "$TMP/cache" \
    --cache-max-size "$((MIB * 3))MiB" --workers "$WORKERS" --log-level error > "$TMP/berth.log" 2>&1 &
BERTH_PID=$!; PIDS+=("$BERTH_PID")
wait_http "http://127.0.0.1:$BP/v2/"
N_URL="http://127.0.0.1:$NP$BLOB_PATH"
B_URL="http://127.0.0.1:$BP$BLOB_PATH"
curl -sf -o /dev/null "$B_URL"  # the fill
for _ in $(seq 1 200); do [ -f "$TMP/cache/blobs/sha256/${DIGEST:7:2}/${DIGEST:7}" ] && break; sleep 0.05; done
[ -f "$TMP/cache/blobs/sha256/${DIGEST:7:2}/${DIGEST:7}" ] || { log "the blob was not cached"; exit 1; }
nginx_pids() { echo "$NGINX_PID" $(ps -o pid= --ppid "$NGINX_PID"); }

get() {  # URL → MB/s; fails unless 200 with the whole length
    local out code size speed
    out=$("${CLIENT_WRAP[@]}" curl -s -o /dev/null -w '%{http_code} %{size_download} %{speed_download}' "$1")
    read -r code size speed <<<"$out"
    [ "$code" = 200 ] && [ "$size" = "$SIZE" ] || { log "$1 answered $code with $size bytes"; exit 1; }
    awk -v s="$speed" 'BEGIN {printf "%.0f", s / 1e6}'
}
get "$B_URL" >/dev/null; get "$N_URL" >/dev/null  # warm
[ "$(curl -s -D - -o /dev/null "$B_URL" | tr -d '\r' | awk -F': ' 'tolower($1)=="cache-status"{print $2}')" = "Berth; hit" ] || { log "Berth did not answer from its cache"; exit 1; }
RB=(); RN=(); T_B=0; T_N=0
for r in $(seq 1 "$REPS"); do
    if (( r % 2 )); then order=(B N); else order=(N B); fi
    for who in "${order[@]}"; do
        if [ "$who" = B ]; then pids=$BERTH_PID; url=$B_URL; else pids=$(nginx_pids); url=$N_URL; fi
        # shellcheck disable=SC2086
        t0=$(ticks $pids); rate=$(get "$url"); t1=$(ticks $pids)  # shellcheck disable=SC2086
        if [ "$who" = B ]; then RB+=("$rate"); T_B=$((T_B + t1 - t0)); else RN+=("$rate"); T_N=$((T_N + t1 - t0)); fi
        log "round $r $who: $rate MB/s"
    done
done
med() { printf "%s\n" "$@" | median; }
mB=$(med "${RB[@]}"); mN=$(med "${RN[@]}")
cpu() { awk -v t="$1" -v hz="$HZ" -v n="$REPS" -v mib="$MIB" 'BEGIN {printf "%.0f", t / hz * 1000 / n / (mib / 1024)}'; }
mkdir -p "$(dirname "$OUT")"
{
    echo "# Warm ${MIB} MiB blob, one stream: Berth vs nginx, same run"
    echo
    echo "- date: $(date -u '+%F %H:%M UTC'); berth: $(berth_version); machine: $(nproc) cores, $(uname -r)"
    echo "- load average: $LOAD0 before, $(cut -d' ' -f1-3 /proc/loadavg) after"
    echo "- ${PIN:+both servers one worker pinned to core $SERVER_CPU, curl pinned to core $CLIENT_CPU}${PIN:-both servers 2 workers, nothing pinned}; nginx sendfile + tcp_nopush; $REPS rounds alternating; medians; every answer 200 with $SIZE bytes"
    echo
    echo "| metric | Berth | nginx | Berth/nginx |"
    echo "|---|---:|---:|---:|"
    echo "| MB/s | $mB | $mN | $(ratio "$mB" "$mN") |"
    echo "| server CPU per GiB (ms) | $(cpu $T_B) | $(cpu $T_N) | $(ratio "$(cpu $T_B)" "$(cpu $T_N)") |"
    echo
    echo "Samples in run order: Berth ${RB[*]}, nginx ${RN[*]} MB/s."
} > "$OUT"
cat "$OUT"
