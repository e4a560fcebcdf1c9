#!/usr/bin/env bash
# Connection limits under hostile load: `berth serve` (release, default limits)
# holding 10,000 idle keep-alive connections plus a few hundred slowloris ones,
# while a normal client is measured.
#
#   Benchmarks/e2e/slowloris.sh [OUTPUT.md]   (default Benchmarks/results/limits-YYYY-MM-DD.md)
#
# What it measures (Benchmarks/Sources/berth-slowloris does the client side):
#   - GET /v2/ latency of a normal client (p50/p90/p99/max over REQUESTS requests),
#     on a fresh connection each and on one kept-alive connection: with nothing
#     else open, with IDLE idle keep-alive connections open, and with those plus
#     SLOWLORIS connections that dribble one header byte a second (that phase is
#     spread over LOADED_SECONDS, past the 20 s head deadline, so the slowloris
#     connections are cut with 408 and replaced while the client is measured);
#   - server RSS (VmRSS) before and after opening the idle connections, per connection;
#   - the same idle/latency figures over HTTPS (no slowloris there);
#   - when BASELINE_REF (a commit, e.g. aaa94a9) or BASELINE_BERTH (a binary) is set:
#     wrk -t2 -c64 GET /v2/ req/s, the baseline and this tree alternated WRK_REPS times.
# Everything shares the 2 cores; loopback only; every process started here is
# stopped by its PID on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${1:-$ROOT/Benchmarks/results/limits-$(date +%F).md}
IDLE=${IDLE:-10000}
SLOWLORIS=${SLOWLORIS:-300}
REQUESTS=${REQUESTS:-2000}
LOADED_SECONDS=${LOADED_SECONDS:-25}
WRK_REPS=${WRK_REPS:-5}
WRK_SECONDS=${WRK_SECONDS:-10}
BASELINE_REF=${BASELINE_REF:-}
BASELINE_BERTH=${BASELINE_BERTH:-}

LOAD0=$(cut -d" " -f1-3 /proc/loadavg)
log() { printf '[slowloris.sh] %s\n' "$*" >&2; }

# --- dependencies and builds ----------------------------------------------------
# shellcheck source=../../scripts/deps.sh
source "$ROOT/scripts/deps.sh"
install_packages "${BUILD_PACKAGES[@]}" curl procps iproute2 openssl
if [ -n "$BASELINE_REF$BASELINE_BERTH" ]; then install_packages wrk; fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/berth-slowloris.XXXXXX")
PIDS=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building berth (release)"
(cd "$ROOT" && swift build -c release --product berth >&2)
BERTH="$(cd "$ROOT" && swift build -c release --show-bin-path)/berth"
log "building the load generator"
swiftc -O -I "$ROOT/Sources/COpenSSL" "$ROOT/Benchmarks/Sources/berth-slowloris/main.swift" -o "$TMP/berth-slowloris"
if [ -n "$BASELINE_REF" ] && [ -z "$BASELINE_BERTH" ]; then
    log "building the baseline $BASELINE_REF (release) in $TMP/baseline"
    mkdir -p "$TMP/baseline"
    git -C "$ROOT" archive "$BASELINE_REF" | tar -x -C "$TMP/baseline"
    (cd "$TMP/baseline" && swift build -c release --product berth >&2)
    BASELINE_BERTH="$TMP/baseline/.build/release/berth"
fi

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null

# A loopback port no socket uses (bounded number of tries), below the ephemeral
# range (32768-60999 here) so no client connection can hold it meanwhile.
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$(( (RANDOM % 12000) + 20000 ))
        if ! ss -Htan "sport = :$p" | grep -q .; then echo "$p"; return 0; fi
    done
    log "no free port found"; return 1
}

# Waits (at most 10 s) until the URL answers 200.
wait_ready() {
    for _ in $(seq 1 100); do
        if [ "$(curl -sk -o /dev/null -m 2 -w '%{http_code}' "$1" || true)" = 200 ]; then return 0; fi
        sleep 0.1
    done
    log "server at $1 did not become ready"; return 1
}

# start_ready BINARY SCHEME [extra args]: starts it on a free port until it answers
# (three tries: a port picked as free can be lost to a race); sets SERVER_PID and PORT.
# For https the extra args must carry --tls-listen 127.0.0.1:TLSPORT, spelled as @TLS@.
start_ready() {
    local bin=$1 scheme=$2; shift 2
    for _ in 1 2 3; do
        PORT=$(free_port)
        local tlsport args=()
        tlsport=$(free_port)
        for a in "$@"; do args+=("${a//@TLS@/$tlsport}"); done
        start_berth "$bin" "$PORT" "${args[@]}"
        [ "$scheme" = https ] && PORT=$tlsport
        if wait_ready "$scheme://127.0.0.1:$PORT/v2/"; then return 0; fi
        log "server log: $(tail -3 "$TMP"/cache.*.log 2>/dev/null | tail -3)"
        stop_berth "$SERVER_PID"
    done
    log "cannot start $bin"; return 1
}

# start_berth BINARY PORT [extra args]: starts it, sets SERVER_PID.
start_berth() {
    local bin=$1 port=$2; shift 2
    local dir
    dir=$(mktemp -d "$TMP/cache.XXXXXX")
    "$bin" serve --listen "127.0.0.1:$port" --cache-dir "$dir" --workers 2 --log-level warning "$@" \
        >"$dir.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
}

stop_berth() {
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# --- the runs ---------------------------------------------------------------------
# The keep-alive timeout is raised to 300 s so the idle connections outlive the
# whole run (at the default 60 s they would close during the loaded phase);
# every other limit is at its default.
declare -A R
run_generator() {  # NAME PORT PID [--tls] [generator args]
    local name=$1 port=$2 pid=$3; shift 3
    log "$name: generator against 127.0.0.1:$port (server pid $pid)"
    while IFS='=' read -r k v; do R["$name.$k"]=$v; done < <(
        "$TMP/berth-slowloris" --port "$port" --pid "$pid" --idle "$IDLE" --requests "$REQUESTS" \
            --loaded-seconds "$LOADED_SECONDS" "$@")
}

start_ready "$BERTH" http --keepalive-timeout 300s
run_generator plain "$PORT" "$SERVER_PID" --slowloris "$SLOWLORIS"
R[plain.fds_limit]=$(awk '/Max open files/ {print $4}' "/proc/$SERVER_PID/limits")
stop_berth "$SERVER_PID"

start_ready "$BERTH" https --keepalive-timeout 300s \
    --tls-listen "127.0.0.1:@TLS@" --tls-certificate "$TMP/cert.pem" --tls-key "$TMP/key.pem"
run_generator tls "$PORT" "$SERVER_PID" --tls --slowloris 0
stop_berth "$SERVER_PID"

# --- req/s against the baseline, alternated ---------------------------------------------
WRK_BASE=(); WRK_NEW=()
wrk_once() {  # BINARY -> req/s
    local port pid rps
    start_ready "$1" http
    port=$PORT; pid=$SERVER_PID
    rps=$(wrk -t2 -c64 -d"${WRK_SECONDS}s" "http://127.0.0.1:$port/v2/" | awk '/Requests\/sec/ {print $2}')
    local non2xx
    non2xx=$(wrk -t1 -c1 -d1s "http://127.0.0.1:$port/v2/" | grep -c "Non-2xx" || true)
    [ "$non2xx" = 0 ] || { log "non-2xx answers from $1"; return 1; }
    stop_berth "$pid"
    echo "$rps"
}
if [ -n "$BASELINE_BERTH" ]; then
    for i in $(seq 1 "$WRK_REPS"); do
        log "wrk round $i/$WRK_REPS"
        WRK_BASE+=("$(wrk_once "$BASELINE_BERTH")")
        WRK_NEW+=("$(wrk_once "$BERTH")")
    done
fi
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# --- report -------------------------------------------------------------------------
v() { echo "${R[$1]:-n/a}"; }
ms() { awk -v u="${R[$1]:-0}" 'BEGIN { printf "%.2f", u / 1000 }'; }
{
    echo "# Connection limits under hostile load"
    echo
    echo "- date: $(date -u '+%F %H:%M UTC')"
    echo "- machine: $(nproc) cores, $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME") (a 2-core Debian 12 VM)"
    echo "- load average before the run: $LOAD0"
    echo "- berth: $(git -C "$ROOT" rev-parse --short HEAD) release, \`berth serve --workers 2\`, default limits (header_timeout 20s, max_connections auto = $(( $(v plain.fds_limit) - 1024 )) at RLIMIT_NOFILE $(v plain.fds_limit), max_connections_per_client 1024) except keepalive_timeout 300s so the idle connections outlive the run"
    echo "- client: Benchmarks/Sources/berth-slowloris on the same 2 cores; idle connections from 127.1.K.1, slowloris from 127.2.K.1 (≤ 800 per address), the normal client from 127.0.0.1"
    echo "- each idle connection made one GET /v2/ and then stayed open; each slowloris connection sent a request line, then one header byte a second; cut ones were replaced at once"
    echo "- latencies: GET /v2/ (\`{}\`), from before connect (fresh) or before send (keep-alive) to the last body byte; $REQUESTS requests per row"
    echo
    echo "## Plain HTTP: $(v plain.idle.opened) idle + $SLOWLORIS slowloris"
    echo
    echo "| phase | fresh p50 | fresh p99 | fresh max | keep-alive p50 | keep-alive p99 | keep-alive max | failures |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for ph in baseline idle loaded; do
        label=$ph
        [ $ph = baseline ] && label="nothing else open"
        [ $ph = idle ] && label="$(v plain.idle.opened) idle open"
        [ $ph = loaded ] && label="$(v plain.idle.opened) idle + $SLOWLORIS slowloris, over ${LOADED_SECONDS} s"
        echo "| $label | $(ms plain.$ph.fresh.p50_us) ms | $(ms plain.$ph.fresh.p99_us) ms | $(ms plain.$ph.fresh.max_us) ms | $(ms plain.$ph.keepalive.p50_us) ms | $(ms plain.$ph.keepalive.p99_us) ms | $(ms plain.$ph.keepalive.max_us) ms | $(( $(v plain.$ph.fresh.failures) + $(v plain.$ph.keepalive.failures) )) |"
    done
    echo
    echo "- server RSS: $(v plain.rss_before_idle_kib) KiB before the idle connections, $(v plain.rss_after_idle_kib) KiB after: **$(v plain.rss_per_idle_connection_bytes) bytes per idle connection** (user memory; the kernel's socket buffers are not in VmRSS); $(v plain.rss_with_slowloris_kib) KiB with the slowloris ones too"
    echo "- opening the idle connections took $(v plain.idle.open_seconds) s; $(v plain.idle.still_open) of them were still open at the end"
    echo "- slowloris: $(v plain.slowloris.answered_408) cut with 408 at the head deadline, $(v plain.slowloris.closed_quietly) closed otherwise, $(v plain.slowloris.open_at_end) open at the end"
    echo
    echo "## HTTPS (TLS 1.3, P-256): $(v tls.idle.opened) idle"
    echo
    echo "| phase | fresh p50 | fresh p99 | keep-alive p50 | keep-alive p99 | failures |"
    echo "|---|---:|---:|---:|---:|---:|"
    for ph in baseline idle; do
        label="nothing else open"; [ $ph = idle ] && label="$(v tls.idle.opened) idle open"
        echo "| $label | $(ms tls.$ph.fresh.p50_us) ms | $(ms tls.$ph.fresh.p99_us) ms | $(ms tls.$ph.keepalive.p50_us) ms | $(ms tls.$ph.keepalive.p99_us) ms | $(( $(v tls.$ph.fresh.failures) + $(v tls.$ph.keepalive.failures) )) |"
    done
    echo
    echo "- server RSS: $(v tls.rss_before_idle_kib) KiB before, $(v tls.rss_after_idle_kib) KiB after: **$(v tls.rss_per_idle_connection_bytes) bytes per idle TLS connection**"
    echo "- fresh HTTPS latency includes the full handshake"
    if [ ${#WRK_NEW[@]} -gt 0 ]; then
        b=$(median "${WRK_BASE[@]}"); n=$(median "${WRK_NEW[@]}")
        echo
        echo "## Cost of the limits: wrk -t2 -c64 -d${WRK_SECONDS}s GET /v2/, alternated"
        echo
        echo "| binary | req/s (median of $WRK_REPS) | samples |"
        echo "|---|---:|---|"
        echo "| baseline ${BASELINE_REF:-$BASELINE_BERTH} | $b | ${WRK_BASE[*]} |"
        echo "| this tree | $n | ${WRK_NEW[*]} |"
        echo
        echo "- ratio (this tree / baseline): $(awk -v a="$n" -v b="$b" 'BEGIN { printf "%.3f", a / b }'); load average after the run: $(cut -d" " -f1-3 /proc/loadavg) (other builds share the machine: read the samples, not only the medians)"
    fi
    echo
    echo "Raw generator output:"
    echo
    echo '```'
    for k in $(printf '%s\n' "${!R[@]}" | sort); do echo "$k=${R[$k]}"; done
    echo '```'
} > "$OUT"
log "wrote $OUT"
