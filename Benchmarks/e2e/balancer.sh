#!/usr/bin/env bash
# What the shipped HAProxy file adds to a warm manifest request: one Berth node answered directly
# and through haproxy running conf/haproxy/berth.cfg (its bind and server lines rewritten to this
# run's ports; everything else as shipped), alternated in the same run (issue 12 target: the
# balancer adds ≤ 10 % to p50).
#
#   Benchmarks/e2e/balancer.sh [OUTPUT.md]      (default Benchmarks/results/balancer-YYYY-MM-DD.md)
#
# wrk -t1 -cCONNS (default 8) --latency, REPS alternations (default 5) of WRK_SECONDS (default 5),
# GET /v2/bench/app/manifests/<digest>; a run with any non-2xx answer fails. Median p50, p99 and
# req/s of each side. Berth, haproxy and wrk share the machine's cores. Installs docker-registry,
# skopeo, wrk, curl, haproxy; stops what it started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${1:-$ROOT/Benchmarks/results/balancer-$(date +%F).md}
REPS=${REPS:-5}
WRK_SECONDS=${WRK_SECONDS:-5}
CONNS=${CONNS:-8}
LOAD0=$(cut -d" " -f1-3 /proc/loadavg)
NAME=balancer.sh
PACKAGES=(wrk curl docker-registry skopeo haproxy)
source "$ROOT/Benchmarks/e2e/lib.sh"

start_upstream_with_small_image
NODE=$(free_port); LB=$(free_port)
"$BERTH" serve --listen "127.0.0.1:$NODE" --upstream "http://127.0.0.1:$UP" --cache-dir "$TMP/node" --log-level error \
    --max-connections-per-client 0 & PIDS+=($!)
wait_http "http://127.0.0.1:$NODE/v2/"
awk -v lb="$LB" -v node="$NODE" '
    /^[ \t]*bind / { print "    bind 127.0.0.1:" lb; next }
    /^[ \t]*server / { if (!done) print "    server berth1 127.0.0.1:" node; done = 1; next }
    { print }' "$ROOT/conf/haproxy/berth.cfg" > "$TMP/haproxy.cfg"
haproxy -c -q -f "$TMP/haproxy.cfg"
haproxy -db -f "$TMP/haproxy.cfg" > "$TMP/haproxy.log" 2>&1 & PIDS+=($!)
for _ in $(seq 1 100); do [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$LB/v2/")" = 200 ] && break; sleep 0.1; done  # up after its first /readyz check
DIRECT="http://127.0.0.1:$NODE/v2/bench/app/manifests/$DIGEST"
VIA="http://127.0.0.1:$LB/v2/bench/app/manifests/$DIGEST"
for u in "$DIRECT" "$VIA"; do   # warm, and check the bytes
    got=$(curl -s -H "$ACCEPT" "$u" | sha256sum | cut -d' ' -f1)
    [ "sha256:$got" = "$DIGEST" ] || { log "$u answered other bytes"; exit 1; }
done

# URL → "p50-µs p99-µs req/s"
latency() {
    local out; out=$(timeout $((WRK_SECONDS + 30)) wrk -t1 -c"$CONNS" -d"${WRK_SECONDS}s" --latency -H "$ACCEPT" "$1")
    if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then log "wrk saw failures on $1:"; echo "$out" >&2; exit 1; fi
    awk 'function us(v) { if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000; if (v ~ /s$/) return v * 1e6; return v }
         $1 == "50%" { p50 = us($2) } $1 == "99%" { p99 = us($2) } /Requests\/sec/ { r = $2 }
         END { printf "%.0f %.0f %s\n", p50, p99, r }' <<<"$out"
}
latency "$DIRECT" > /dev/null; latency "$VIA" > /dev/null
D50=(); D99=(); DR=(); V50=(); V99=(); VR=()
for r in $(seq 1 "$REPS"); do
    read -r a b c < <(latency "$DIRECT"); D50+=("$a"); D99+=("$b"); DR+=("$c")
    read -r a b c < <(latency "$VIA"); V50+=("$a"); V99+=("$b"); VR+=("$c")
    log "rep $r: direct p50 ${D50[-1]} µs p99 ${D99[-1]} µs ${DR[-1]} req/s; via haproxy p50 ${V50[-1]} µs p99 ${V99[-1]} µs ${VR[-1]} req/s"
done
m() { printf '%s\n' "$@" | median; }
mD50=$(m "${D50[@]}"); mD99=$(m "${D99[@]}"); mDR=$(m "${DR[@]}")
mV50=$(m "${V50[@]}"); mV99=$(m "${V99[@]}"); mVR=$(m "${VR[@]}")

mkdir -p "$(dirname "$OUT")"
{
    echo "# The shipped HAProxy file in front of one Berth node: warm manifest latency"
    echo
    echo "- date: $(date -u '+%F %H:%M UTC'); machine: $(nproc) cores, $(uname -r), Debian $(cat /etc/debian_version)"
    echo "- load average before: $LOAD0; after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- berth: $(berth_version), 2 loops; $(haproxy -v | head -1 | cut -d' ' -f1-3), conf/haproxy/berth.cfg as shipped but bind/server; upstream docker-registry"
    echo "- wrk -t1 -c$CONNS -d${WRK_SECONDS}s --latency GET /v2/bench/app/manifests/<digest>, $REPS alternations, medians; Berth, haproxy and wrk share the cores"
    echo
    echo "| path | p50 (µs) | p99 (µs) | req/s | p50 samples | p99 samples | req/s samples |"
    echo "|---|---:|---:|---:|---|---|---|"
    echo "| direct | $mD50 | $mD99 | $mDR | ${D50[*]} | ${D99[*]} | ${DR[*]} |"
    echo "| via haproxy | $mV50 | $mV99 | $mVR | ${V50[*]} | ${V99[*]} | ${VR[*]} |"
    echo
    echo "p50 via haproxy / direct: $(ratio "$mV50" "$mD50") (target ≤ 1.10); added p50: $((mV50 - mD50)) µs; req/s ratio: $(ratio "$mVR" "$mDR")."
} > "$OUT"
cat "$OUT"
