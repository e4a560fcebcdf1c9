#!/usr/bin/env bash
# A cached manifest, served: `berth serve` against nginx serving the same bytes as a static
# file, in the same run, alternating the two servers.
#
#   Benchmarks/e2e/manifest.sh [OUTPUT.md]     (default Benchmarks/results/manifest-YYYY-MM-DD.md)
#
# The manifest is bench/app:v1 from lib.sh (a schema 2 manifest, one layer), cached by
# Berth from a local docker-registry.
#   - wall clock: GET /v2/bench/app/manifests/<digest> over plain HTTP, both servers with
#     2 workers (Berth's 2 loops, nginx worker_processes 2), wrk -t2 -c$CONNS --latency
#     for WRK_SECONDS, REPS rounds of B N / N B; medians of req/s and of p99; every answer
#     2xx. Clients share the 2 cores with the servers: the ratios are the result.
#   - server CPU (user + sys from /proc, all threads; nginx master + workers) per request.
#   PIN=1: both servers with one worker pinned to core SERVER_CPU (default 0), wrk -t1 pinned
#   to CLIENT_CPU (default 1): no server thread competes with the client for a core, so the
#   tail measures the server rather than the scheduler.
#
# CALLGRIND=1 instead runs `berth serve --workers 1` under valgrind --tool=callgrind and
# prints, per cached manifest request (curl, one keep-alive connection, counters zeroed
# after a warm-up), the instructions (Ir), the calls to malloc/calloc/realloc/posix_memalign
# and to swift_allocObject, for plain HTTP and TLS, by digest and by tag. Repeatable where
# the wall clock is not. The callgrind files are kept in CG_KEEP (default /tmp).
#
# BERTH=path uses a given binary instead of building one. Installs what it needs
# (apt-get), sends traffic only to 127.0.0.1, stops every process it started (by PID).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${1:-$ROOT/Benchmarks/results/manifest-$(date +%F).md}
REPS=${REPS:-5}
WRK_SECONDS=${WRK_SECONDS:-10}
CONNS=${CONNS:-64}
CALLGRIND=${CALLGRIND:-}
CG_REQUESTS=${CG_REQUESTS:-2000}
CG_KEEP=${CG_KEEP:-/tmp}
PIN=${PIN:-}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
if [ -n "$PIN" ]; then WORKERS=1; SERVER_WRAP=(taskset -c "$SERVER_CPU"); CLIENT_WRAP=(taskset -c "$CLIENT_CPU"); WRK_THREADS=1
else WORKERS=2; SERVER_WRAP=(); CLIENT_WRAP=(); WRK_THREADS=2; fi

LOAD0=$(cut -d" " -f1-3 /proc/loadavg)

NAME=manifest
PACKAGES=(nginx-light wrk curl docker-registry skopeo openssl procps valgrind binutils)
BERTH_PREBUILT=${BERTH:-}
# shellcheck source=lib.sh
source "$ROOT/Benchmarks/e2e/lib.sh"  # builds berth (release) unless given; TMP, PIDS, cleanup, log, free_port, start_registry

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
chmod 644 "$TMP/key.pem"

start_upstream_with_small_image  # UP, DIGEST
curl -sf -H "$ACCEPT" -o "$TMP/manifest" "http://127.0.0.1:$UP/v2/bench/app/manifests/$DIGEST"
MANIFEST_BYTES=$(stat -c %s "$TMP/manifest")

BP=$(free_port); BTLS=$(free_port)
start_berth() {  # WORKERS [wrapper...]
    local workers=$1; shift
    "$@" "$BERTH" serve --listen "127.0.0.1:$BP" --tls-listen "127.0.0.1:$BTLS" \
        --tls-certificate "$TMP/cert.pem" --tls-key "$TMP/key.pem" --upstream "http://127.0.0.1:$UP" \
        --cache-dir "$TMP/berth-cache" --workers "$workers" --log-level error >"$TMP/berth.log" 2>&1 &
    BERTH_PID=$!; PIDS+=("$BERTH_PID")
}
# Caches the manifest (by tag and by digest) and checks Berth's bytes, plain and TLS.
warm_berth() {
    local t=${1:-2} path
    for path in manifests/v1 "manifests/$DIGEST"; do
        curl -s -m "$t" -o /dev/null -H "$ACCEPT" "http://127.0.0.1:$BP/v2/bench/app/$path"
        curl -s -m "$t" -o "$TMP/got" -H "$ACCEPT" "http://127.0.0.1:$BP/v2/bench/app/$path"
        cmp -s "$TMP/got" "$TMP/manifest" || { log "berth: wrong manifest bytes ($path)"; exit 1; }
        curl -sk -m "$t" -o "$TMP/got" -H "$ACCEPT" "https://127.0.0.1:$BTLS/v2/bench/app/$path"
        cmp -s "$TMP/got" "$TMP/manifest" || { log "berth: wrong manifest bytes over TLS ($path)"; exit 1; }
    done
}

# --- callgrind mode ---------------------------------------------------------------------
if [ -n "$CALLGRIND" ]; then
    mkdir -p "$TMP/cg"
    # Valgrind 3.19 cannot read the toolchain's DWARF 5: profile a copy without it.
    objcopy --strip-debug "$BERTH" "$TMP/berth-nodebug"
    BERTH=$TMP/berth-nodebug
    start_berth 1 valgrind --tool=callgrind --callgrind-out-file="$TMP/cg/out.%p" --dump-instr=no
    wait_ok "http://127.0.0.1:$BP/v2/" 2400
    warm_berth 60
    many() {  # URL N: N requests on one keep-alive connection; prints the number of non-200s
        local url=$1 n=$2 i
        : > "$TMP/cg/urls"
        for i in $(seq 1 "$n"); do printf 'url = "%s"\noutput = "/dev/null"\n' "$url" >> "$TMP/cg/urls"; done
        timeout 600 curl -sk --http1.1 -H "$ACCEPT" -K "$TMP/cg/urls" -w '%{http_code}\n' | grep -vc '^200$' || true
    }
    # Ir, mallocs and Swift object allocations of the last dump, per request.
    per_request() {  # LABEL N
        local f; f=$(ls -t "$TMP"/cg/out.* | head -1)
        python3 - "$f" "$1" "$2" <<'EOF'
import re, sys
path, label, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
names, total, calls, cur = {}, 0, {}, None
pending = None
for line in open(path, errors="replace"):
    m = re.match(r'^(c?fn)=\((\d+)\)(?: (.*))?$', line.rstrip("\n"))
    if m:
        kind, i, name = m.groups()
        if name: names[i] = name
        if kind == "cfn": pending = names.get(i, i)
        continue
    m = re.match(r'^calls=(\d+)', line)
    if m and pending is not None:
        calls[pending] = calls.get(pending, 0) + int(m.group(1)); pending = None; continue
    m = re.match(r'^(summary|totals): (\d+)', line)
    if m: total = int(m.group(2))
mallocs = sum(v for k, v in calls.items() if k in ("malloc", "calloc", "realloc", "posix_memalign", "aligned_alloc"))
objs = calls.get("swift_allocObject", 0)
rr = sum(v for k, v in calls.items() if k in ("swift_retain", "swift_release", "swift_bridgeObjectRetain", "swift_bridgeObjectRelease"))
print(f"| {label} | {total // n:,} | {mallocs / n:.1f} | {objs / n:.1f} | {rr / n:.1f} |")
EOF
    }
    echo "| request ($CG_REQUESTS, one keep-alive connection) | Ir / request | malloc / request | swift_allocObject / request | retain+release / request |"
    echo "|---|---:|---:|---:|---:|"
    for case in "plain digest|http://127.0.0.1:$BP/v2/bench/app/manifests/$DIGEST" \
                "plain tag|http://127.0.0.1:$BP/v2/bench/app/manifests/v1" \
                "TLS digest|https://127.0.0.1:$BTLS/v2/bench/app/manifests/$DIGEST" \
                "TLS tag|https://127.0.0.1:$BTLS/v2/bench/app/manifests/v1"; do
        label=${case%%|*}; url=${case#*|}
        many "$url" 50 >/dev/null  # warm-up
        callgrind_control -z "$BERTH_PID" >/dev/null
        bad=$(many "$url" "$CG_REQUESTS")
        [ "$bad" = 0 ] || { log "$bad non-200 answers on $url"; exit 1; }
        callgrind_control -d "${label// /-}" "$BERTH_PID" >/dev/null
        per_request "$label" "$CG_REQUESTS"
        f=$(ls -t "$TMP"/cg/out.* | head -1); cp "$f" "$CG_KEEP/callgrind.manifest.${label// /-}"
    done
    log "callgrind files copied to $CG_KEEP/callgrind.manifest.*"
    exit 0
fi

# --- wall clock -------------------------------------------------------------------------
start_berth "$WORKERS" "${SERVER_WRAP[@]}"
wait_ok "http://127.0.0.1:$BP/v2/"
warm_berth

mkdir -p "$TMP/www/v2/bench/app/manifests"
cp "$TMP/manifest" "$TMP/www/v2/bench/app/manifests/$DIGEST"
chmod -R a+rX "$TMP/www"
NP=$(free_port)
nginx_conf "$WORKERS" "        listen 127.0.0.1:$NP; root $TMP/www;
        location /v2/bench/app/manifests/ {
            default_type application/vnd.docker.distribution.manifest.v2+json;
            add_header Docker-Content-Digest $DIGEST; add_header Docker-Distribution-API-Version registry/2.0;
        }"
"${SERVER_WRAP[@]}" "$NGINX" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" 2>>"$TMP/nginx/error.log" &
NGINX_PID=$!; PIDS+=("$NGINX_PID")
B_URL="http://127.0.0.1:$BP/v2/bench/app/manifests/$DIGEST"
N_URL="http://127.0.0.1:$NP/v2/bench/app/manifests/$DIGEST"
wait_ok "$N_URL"
curl -s -o "$TMP/got" "$N_URL"; cmp -s "$TMP/got" "$TMP/manifest" || { log "nginx: wrong manifest bytes"; exit 1; }
nginx_pids() { echo "$NGINX_PID" $(ps -o pid= --ppid "$NGINX_PID"); }

# wrk → "req/s p50_ms p99_ms requests"; fails on any non-2xx or socket error.
wrk_run() {  # URL
    local out
    out=$(timeout $((WRK_SECONDS + 30)) "${CLIENT_WRAP[@]}" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${WRK_SECONDS}s" --latency -H "$ACCEPT" "$1")
    if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then log "wrk saw failures on $1:"; echo "$out" >&2; exit 1; fi
    awk 'function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        / requests in / {n = $1}
        /^Requests\/sec:/ {r = $2}
        $1 == "50%" {p50 = ms($2)} $1 == "99%" {p99 = ms($2)}
        END {print r, p50, p99, n}' <<<"$out"
}

log "warm-up"
for url in "$B_URL" "$N_URL"; do timeout 20 "${CLIENT_WRAP[@]}" wrk -t"$WRK_THREADS" -c"$CONNS" -d2s -H "$ACCEPT" "$url" >/dev/null; done

RB=(); RN=(); PB=(); PN=(); P50B=(); P50N=(); T_B=0; T_N=0; N_B=0; N_N=0
for r in $(seq 1 "$REPS"); do
    if (( r % 2 )); then order=(B N); else order=(N B); fi
    for who in "${order[@]}"; do
        if [ "$who" = B ]; then pids=$BERTH_PID; url=$B_URL; else pids=$(nginx_pids); url=$N_URL; fi
        # shellcheck disable=SC2086
        t0=$(ticks $pids)
        read -r rps p50 p99 n < <(wrk_run "$url")
        [ -n "$rps" ] || { log "no result from wrk on $url"; exit 1; }
        # shellcheck disable=SC2086
        t1=$(ticks $pids)
        if [ "$who" = B ]; then RB+=("$rps"); PB+=("$p99"); P50B+=("$p50"); T_B=$((T_B + t1 - t0)); N_B=$((N_B + n))
        else RN+=("$rps"); PN+=("$p99"); P50N+=("$p50"); T_N=$((T_N + t1 - t0)); N_N=$((N_N + n)); fi
        log "round $r $who: $rps req/s, p50 $p50 ms, p99 $p99 ms"
    done
done
LOAD1=$(cut -d" " -f1-3 /proc/loadavg)
kill -0 "$BERTH_PID" "$NGINX_PID" 2>/dev/null || { log "a server died during the run"; exit 1; }

med() { printf "%s\n" "$@" | median; }
mRB=$(med "${RB[@]}"); mRN=$(med "${RN[@]}"); mPB=$(med "${PB[@]}"); mPN=$(med "${PN[@]}")
m50B=$(med "${P50B[@]}"); m50N=$(med "${P50N[@]}")
us() { awk -v t="$1" -v hz="$HZ" -v n="$2" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}'; }
mkdir -p "$(dirname "$OUT")"
{
    echo "# Cached manifest over plain HTTP: Berth vs nginx, same run"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); berth: $(berth_version)"
    echo "- machine: $(nproc) cores, kernel $(uname -r); load average $LOAD0 before, $LOAD1 after"
    echo "- GET of a $MANIFEST_BYTES-byte manifest by digest; wrk -t$WRK_THREADS -c$CONNS -d${WRK_SECONDS}s --latency; both servers $WORKERS worker(s)${PIN:+, pinned to core $SERVER_CPU, wrk to core $CLIENT_CPU}; $REPS rounds alternating; medians; every answer 2xx"
    echo
    echo "| metric | Berth | nginx | Berth/nginx |"
    echo "|---|---:|---:|---:|"
    echo "| req/s | $(printf %.0f "$mRB") | $(printf %.0f "$mRN") | $(ratio "$mRB" "$mRN") |"
    echo "| p50 (ms) | $m50B | $m50N | $(ratio "$m50B" "$m50N") |"
    echo "| p99 (ms) | $mPB | $mPN | $(ratio "$mPB" "$mPN") |"
    echo "| server CPU per request (µs) | $(us "$T_B" "$N_B") | $(us "$T_N" "$N_N") | $(ratio "$(us "$T_B" "$N_B")" "$(us "$T_N" "$N_N")") |"
    echo
    echo "Samples in run order: req/s Berth ${RB[*]}, nginx ${RN[*]}; p99 ms Berth ${PB[*]}, nginx ${PN[*]}."
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
cat "$OUT"
log "written to $OUT"
