#!/usr/bin/env bash
# Access-log and metrics cost: warm manifest-by-digest req/s from one Berth with `--log-access FILE`
# (MODE=log, the default), `--metrics-listen` (MODE=metrics) or both (MODE=both) against one with
# neither (issue 12 target: ≤ 5 % cost), alternated in the same run, same upstream.
#
#   Benchmarks/e2e/accesslog.sh [OUTPUT.md]    (default Benchmarks/results/accesslog-YYYY-MM-DD.md;
#                                               MODE=metrics: metrics-YYYY-MM-DD.md)
#
# wrk -t2 -c64, REPS alternations (default 3) of WRK_SECONDS (default 10); a run with any
# non-2xx answer fails. Besides req/s, each Berth's CPU time (user + system, its log writer
# included, from /proc) per request: on a machine shared with other work it moves less than
# req/s. The logged Berth's lines are counted (dropped lines are reported in its log).
# ACCESS_LOG=/dev/null logs there instead of a file under the work directory (the rendering
# and writing without the filesystem). CALLGRIND=1 instead counts instructions per warm request
# of each (one keep-alive connection, one loop, the log writer's thread included; CG_REQUESTS,
# default 2000). Installs docker-registry, skopeo, wrk, curl; stops what it started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
MODE=${MODE:-log}
case "$MODE" in log) STEM=accesslog ;; metrics) STEM=metrics ;; both) STEM=observability ;; *) echo "MODE is log, metrics or both" >&2; exit 2 ;; esac
OUT=${1:-$ROOT/Benchmarks/results/$STEM-$(date +%F).md}
REPS=${REPS:-3}
WRK_SECONDS=${WRK_SECONDS:-10}
LOAD0=$(cut -d" " -f1-3 /proc/loadavg)
NAME=accesslog.sh
PACKAGES=(wrk curl docker-registry skopeo)
source "$ROOT/Benchmarks/e2e/lib.sh"

start_upstream_with_small_image

OFF=$(free_port); ON=$(free_port); METRICS=$(free_port)
callgrind_setup
ON_FLAGS=(); ON_LABEL=""
if [ "$MODE" != metrics ]; then ON_FLAGS+=(--log-access "${ACCESS_LOG:-$TMP/access.log}"); ON_LABEL="log.access: ${ACCESS_LOG:-FILE}"; fi
if [ "$MODE" != log ]; then ON_FLAGS+=(--metrics-listen "127.0.0.1:$METRICS"); ON_LABEL="${ON_LABEL:+$ON_LABEL, }metrics.listen"; fi
"${RUN[@]}" "$BERTH" serve --listen "127.0.0.1:$OFF" --upstream "http://127.0.0.1:$UP" --cache-dir "$TMP/off" --log-level error --workers "$WORKERS" & PIDS+=($!)
OFF_PID=$!
"${RUN[@]}" "$BERTH" serve --listen "127.0.0.1:$ON" --upstream "http://127.0.0.1:$UP" --cache-dir "$TMP/on" --log-level warning --workers "$WORKERS" \
    "${ON_FLAGS[@]}" 2> "$TMP/on.log" & PIDS+=($!)
ON_PID=$!
for _ in $(seq 1 600); do curl -s -o /dev/null "http://127.0.0.1:$OFF/v2/" && curl -s -o /dev/null "http://127.0.0.1:$ON/v2/" && break; sleep 0.1; done
wait_http "http://127.0.0.1:$OFF/v2/"; wait_http "http://127.0.0.1:$ON/v2/"
URL_OFF="http://127.0.0.1:$OFF/v2/bench/app/manifests/$DIGEST"
URL_ON="http://127.0.0.1:$ON/v2/bench/app/manifests/$DIGEST"
for u in "$URL_OFF" "$URL_ON"; do   # warm each, and check the bytes
    got=$(curl -s -H "$ACCEPT" "$u" | sha256sum | cut -d' ' -f1)
    [ "sha256:$got" = "$DIGEST" ] || { log "$u answered other bytes"; exit 1; }
done
if [ -n "${CALLGRIND:-}" ]; then
    N=${CG_REQUESTS:-2000}
    IR_OFF=$(callgrind_ir "$OFF_PID" "$URL_OFF" "$N"); IR_ON=$(callgrind_ir "$ON_PID" "$URL_ON" "$N")
    echo "warm manifest by digest, Ir per request (callgrind, $N on one connection): neither $IR_OFF, $ON_LABEL $IR_ON ($(ratio "$IR_ON" "$IR_OFF")x)"
    exit 0
fi

timeout 20 wrk -t2 -c64 -d2s -H "$ACCEPT" "$URL_OFF" >/dev/null; timeout 20 wrk -t2 -c64 -d2s -H "$ACCEPT" "$URL_ON" >/dev/null
measure() {  # PID URL → "req/s cpu-µs-per-request"
    local t0 r t1; t0=$(ticks "$1"); r=$(rps "$2"); t1=$(ticks "$1")
    echo "$r $(awk -v d=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v r="$r" -v s="$WRK_SECONDS" 'BEGIN{printf "%.2f", d / hz * 1e6 / (r * s)}')"
}
A=(); B=(); CA=(); CB=()
for r in $(seq 1 "$REPS"); do
    read -r rate cpu < <(measure "$OFF_PID" "$URL_OFF"); A+=("$rate"); CA+=("$cpu")
    read -r rate cpu < <(measure "$ON_PID" "$URL_ON"); B+=("$rate"); CB+=("$cpu")
    log "rep $r: off ${A[-1]} req/s ${CA[-1]} µs CPU/req, on ${B[-1]} req/s ${CB[-1]} µs CPU/req"
done
mA=$(printf '%s\n' "${A[@]}" | median); mB=$(printf '%s\n' "${B[@]}" | median)
mCA=$(printf '%s\n' "${CA[@]}" | median); mCB=$(printf '%s\n' "${CB[@]}" | median)
sleep 1  # the writer empties its buffer within 100 ms; this only rounds the line count
LOGFILE=${ACCESS_LOG:-$TMP/access.log}
LINES=$([ -f "$LOGFILE" ] && wc -l < "$LOGFILE" || echo 0)
LOGBYTES=$([ -f "$LOGFILE" ] && stat -c %s "$LOGFILE" || echo 0)
DROPS=$(grep -c 'dropp' "$TMP/on.log" || true)
COUNTED=-
if [ "$MODE" != log ]; then  # the metrics were on: the manifest requests they counted
    COUNTED=$(curl -sf "http://127.0.0.1:$METRICS/metrics" | awk '/^berth_requests_total\{route="manifest"/{s += $2} END {printf "%d", s}')
fi

mkdir -p "$(dirname "$OUT")"
{
    echo "# Observability cost: neither vs $ON_LABEL"
    echo
    echo "- date: $(date -u '+%F %H:%M UTC'); machine: $(nproc) cores, $(uname -r), Debian $(cat /etc/debian_version)"
    echo "- load average before: $LOAD0; after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- berth $(git -C "$ROOT" rev-parse --short HEAD) release, 2 loops each; upstream docker-registry $(dpkg-query -W -f='${Version}' docker-registry); every request a warm hit"
    echo "- wrk -t2 -c64 -d${WRK_SECONDS}s GET /v2/bench/app/manifests/<digest>, $REPS alternations, medians; the client shares the 2 cores"
    echo "- the logged Berth wrote $LINES lines ($LOGBYTES bytes, $((LOGBYTES / (LINES > 0 ? LINES : 1))) per line); log lines about dropping: $DROPS; manifest requests in its /metrics: $COUNTED"
    echo
    echo "| Berth | req/s (median) | ratio to off | samples | server CPU µs/request (median) | ratio to off | samples |"
    echo "|---|---:|---:|---|---:|---:|---|"
    echo "| neither | $mA | 1.000 | ${A[*]} | $mCA | 1.000 | ${CA[*]} |"
    echo "| \`$ON_LABEL\` | $mB | $(ratio "$mB" "$mA") | ${B[*]} | $mCB | $(ratio "$mCB" "$mCA") | ${CB[*]} |"
    echo
    echo "Target (issue 12): metrics and the access log cost ≤ 5 % (req/s ratio ≥ 0.95, CPU ratio ≤ 1.05)."
} > "$OUT"
cat "$OUT"
