#!/usr/bin/env bash
# End-to-end HTTP benchmark: Berth against nginx, measured in the same run on
# loopback, alternating the two servers to spread the machine's noise.
#
#   Benchmarks/e2e/http.sh [OUTPUT.md]      (default Benchmarks/results/http-YYYY-MM-DD.md)
#
# What it measures (medians of REPS repetitions, default 5; wrk runs WRK_REPS, default 3):
#   - a 1 GiB file, one curl stream and 4 concurrent curls (aggregate: 4 GiB over the
#     batch's wall time). Berth side: berth-file-server (Berth's HTTP1 server with
#     sendfile; stands in for cached-blob serving until the blob cache lands).
#   - a 2-byte `{}` response (`GET /v2/` on `berth serve`), wrk -t2 -c64 -d10s.
#   - server CPU time (user + system from /proc, all threads; nginx master + workers) per
#     GiB served and per request: less sensitive to a noisy machine than the rates.
#   - resident memory (ps -o rss): Berth idle after start, after the 1 GiB runs and
#     after wrk; nginx master + workers at the same points.
# Both servers run 2 workers and read the same file (one page cache). Clients share the
# 2 cores with the servers: the ratios are the result, not the absolute numbers.
#
# Installs nginx-light, wrk, curl (apt-get), builds release binaries, sends traffic only
# to 127.0.0.1, and stops every process it started (by PID) on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${1:-$ROOT/Benchmarks/results/http-$(date +%F).md}
REPS=${REPS:-5}
WRK_REPS=${WRK_REPS:-3}
WRK_SECONDS=${WRK_SECONDS:-10}
FILE_MIB=${FILE_MIB:-1024}

LOAD0=$(cut -d" " -f1-3 /proc/loadavg)
log() { printf '[http.sh] %s\n' "$*" >&2; }

# --- dependencies -------------------------------------------------------------
# shellcheck source=../../scripts/deps.sh
source "$ROOT/scripts/deps.sh"
install_packages "${BUILD_PACKAGES[@]}" nginx-light wrk curl procps iproute2

# --- build --------------------------------------------------------------------
log "building berth (release)"
(cd "$ROOT" && swift build -c release --product berth >&2)
BERTH="$(cd "$ROOT" && swift build -c release --show-bin-path)/berth"
log "building berth-file-server (release)"
(cd "$ROOT/Benchmarks" && swift build -c release --product berth-file-server >&2)
FILESERVER="$(cd "$ROOT/Benchmarks" && swift build -c release --show-bin-path)/berth-file-server"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# --- processes and cleanup ----------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/berth-http-bench.XXXXXX")
PIDS=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
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

# A loopback port nothing listens on (bounded number of tries).
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$(( (RANDOM % 20000) + 30000 ))
        if ! ss -Htln "sport = :$p" | grep -q .; then echo "$p"; return 0; fi
    done
    log "no free port found"; return 1
}

# Waits (at most 10 s) until http://127.0.0.1:$1$2 answers 200.
wait_ready() {
    for _ in $(seq 1 100); do
        if [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$1$2" || true)" = 200 ]; then return 0; fi
        sleep 0.1
    done
    log "server on port $1 did not answer $2"; return 1
}

rss_kib() { ps -o rss= -p "$1" | awk '{s+=$1} END {print s+0}'; }
# nginx master plus its workers.
nginx_rss_kib() { { ps -o rss= -p "$NGINX_PID"; ps -o rss= --ppid "$NGINX_PID"; } | awk '{s+=$1} END {print s+0}'; }

# CPU time (user + system, clock ticks) of processes and, for nginx, its workers.
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
nginx_ticks() { ticks "$NGINX_PID" $(ps -o pid= --ppid "$NGINX_PID"); }
HZ=$(getconf CLK_TCK)

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "nan"} else if (NR%2) {print a[(NR+1)/2]} else {print (a[NR/2]+a[NR/2+1])/2}}'; }

# --- the file and the servers -------------------------------------------------
mkdir -p "$TMP/www"
chmod 755 "$TMP" "$TMP/www"
log "writing a ${FILE_MIB} MiB file"
dd if=/dev/urandom of="$TMP/www/file" bs=1M count="$FILE_MIB" status=none
chmod 644 "$TMP/www/file"
FILE_BYTES=$(stat -c %s "$TMP/www/file")

BERTH_PORT=$(free_port)
"$BERTH" serve --listen "127.0.0.1:$BERTH_PORT" --log-level warning 2>"$TMP/berth.log" &
BERTH_PID=$!; PIDS+=("$BERTH_PID")

FS_PORT=$(free_port)
while [ "$FS_PORT" = "$BERTH_PORT" ]; do FS_PORT=$(free_port); done
"$FILESERVER" "$TMP/www/file" --listen "127.0.0.1:$FS_PORT" --workers 2 2>"$TMP/file-server.log" &
FS_PID=$!; PIDS+=("$FS_PID")

NGINX_PORT=$(free_port)
while [ "$NGINX_PORT" = "$BERTH_PORT" ] || [ "$NGINX_PORT" = "$FS_PORT" ]; do NGINX_PORT=$(free_port); done
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<EOF
daemon off;
worker_processes 2;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    types { }
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $TMP/www;
        location = /v2/ {
            default_type application/json;
            add_header Docker-Distribution-Api-Version registry/2.0;
            return 200 '{}';
        }
    }
}
EOF
"$NGINX" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" 2>>"$TMP/nginx/error.log" &
NGINX_PID=$!; PIDS+=("$NGINX_PID")

wait_ready "$BERTH_PORT" /v2/
wait_ready "$NGINX_PORT" /v2/
# /file without a range would download the whole file: check readiness with a 1-byte range.
code=
for _ in $(seq 1 100); do
    code=$(curl -s -o /dev/null -m 2 -r 0-0 -w '%{http_code}' "http://127.0.0.1:$FS_PORT/file" || true)
    [ "$code" = 206 ] && break
    sleep 0.1
done
[ "$code" = 206 ] || { log "berth-file-server did not answer a range"; exit 1; }
sleep 1  # let the servers settle before reading idle RSS

IDLE_BERTH=$(rss_kib "$BERTH_PID")
IDLE_FS=$(rss_kib "$FS_PID")
IDLE_NGINX=$(nginx_rss_kib)
log "idle RSS: berth $IDLE_BERTH KiB, berth-file-server $IDLE_FS KiB, nginx $IDLE_NGINX KiB"

BERTH_FILE_URL="http://127.0.0.1:$FS_PORT/file"
NGINX_FILE_URL="http://127.0.0.1:$NGINX_PORT/file"
BERTH_SMALL_URL="http://127.0.0.1:$BERTH_PORT/v2/"
NGINX_SMALL_URL="http://127.0.0.1:$NGINX_PORT/v2/"

# Sanity: both serve the same bytes and the same small body.
for url in "$BERTH_SMALL_URL" "$NGINX_SMALL_URL"; do
    body=$(curl -s -m 5 "$url"); [ "$body" = '{}' ] || { log "$url answered '$body'"; exit 1; }
done

# One download; prints MiB/s, fails if not 200 with the whole file.
single() {
    local out code size speed
    out=$(curl -s -o /dev/null -m 120 -w '%{http_code} %{size_download} %{speed_download}' "$1")
    read -r code size speed <<<"$out"
    if [ "$code" != 200 ] || [ "$size" != "$FILE_BYTES" ]; then log "$1: status $code, $size bytes"; return 1; fi
    awk -v s="$speed" 'BEGIN {printf "%.1f", s / 1048576}'
}

# Four concurrent downloads; prints aggregate MiB/s (4 files over the batch's wall time).
concurrent4() {
    local t0 t1 i pids=() ok=1
    t0=$(date +%s.%N)
    for i in 1 2 3 4; do
        curl -s -o /dev/null -m 240 -w '%{http_code} %{size_download}\n' "$1" >"$TMP/c4.$i" &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do wait "${pids[$i]}" || ok=0; done
    t1=$(date +%s.%N)
    for i in 1 2 3 4; do
        [ "$(cat "$TMP/c4.$i")" = "200 $FILE_BYTES" ] || { log "$1: concurrent download $i: $(cat "$TMP/c4.$i")"; ok=0; }
    done
    [ "$ok" = 1 ] || return 1
    awk -v b="$FILE_BYTES" -v a="$t0" -v z="$t1" 'BEGIN {printf "%.1f", 4 * b / 1048576 / (z - a)}'
}

# wrk run; prints req/s, fails on errors or non-2xx answers.
wrk_rps() {
    local out
    out=$(timeout $((WRK_SECONDS + 30)) wrk -t2 -c64 -d"${WRK_SECONDS}s" "$1")
    if grep -q 'Non-2xx' <<<"$out"; then log "$1: non-2xx answers: $out"; return 1; fi
    if grep -q 'Socket errors' <<<"$out"; then log "$1: $(grep 'Socket errors' <<<"$out")"; fi
    awk '/ requests in / {n=$1} /^Requests\/sec:/ {r=$2} END {print r, n}' <<<"$out"
}

# Warm-up: the page cache, both servers' code paths.
log "warm-up"
single "$BERTH_FILE_URL" >/dev/null
single "$NGINX_FILE_URL" >/dev/null

S_B=(); S_N=(); C_B=(); C_N=(); W_B=(); W_N=()
T_FILE_B=0; T_FILE_N=0; T_WRK_B=0; T_WRK_N=0; REQ_B=0; REQ_N=0
# Runs "$@" for server $who, adding the server's CPU ticks to T_<kind>_<who>.
measured() {
    local kind=$1 who=$2 t0 t1; shift 2
    if [ "$who" = B ]; then t0=$(ticks "$PID_OF_B"); else t0=$(nginx_ticks); fi
    "$@" >"$TMP/measured.out"
    if [ "$who" = B ]; then t1=$(ticks "$PID_OF_B"); else t1=$(nginx_ticks); fi
    eval "T_${kind}_${who}=\$(( T_${kind}_${who} + t1 - t0 ))"
}
PID_OF_B=$FS_PID
for r in $(seq 1 "$REPS"); do
    if (( r % 2 )); then order=(B N); else order=(N B); fi
    for who in "${order[@]}"; do
        if [ "$who" = B ]; then url=$BERTH_FILE_URL; else url=$NGINX_FILE_URL; fi
        measured FILE "$who" single "$url"; v=$(cat "$TMP/measured.out")
        if [ "$who" = B ]; then S_B+=("$v"); else S_N+=("$v"); fi
        log "rep $r single $who: $v MiB/s"
    done
    for who in "${order[@]}"; do
        if [ "$who" = B ]; then url=$BERTH_FILE_URL; else url=$NGINX_FILE_URL; fi
        measured FILE "$who" concurrent4 "$url"; v=$(cat "$TMP/measured.out")
        if [ "$who" = B ]; then C_B+=("$v"); else C_N+=("$v"); fi
        log "rep $r 4x $who: $v MiB/s"
    done
done
AFTER_FS=$(rss_kib "$FS_PID")
AFTER_FILE_NGINX=$(nginx_rss_kib)

log "wrk warm-up"
timeout 20 wrk -t2 -c64 -d2s "$BERTH_SMALL_URL" >/dev/null
timeout 20 wrk -t2 -c64 -d2s "$NGINX_SMALL_URL" >/dev/null
PID_OF_B=$BERTH_PID
for r in $(seq 1 "$WRK_REPS"); do
    if (( r % 2 )); then order=(B N); else order=(N B); fi
    for who in "${order[@]}"; do
        if [ "$who" = B ]; then url=$BERTH_SMALL_URL; else url=$NGINX_SMALL_URL; fi
        measured WRK "$who" wrk_rps "$url"; read -r v n <"$TMP/measured.out"
        if [ "$who" = B ]; then W_B+=("$v"); REQ_B=$((REQ_B + n)); else W_N+=("$v"); REQ_N=$((REQ_N + n)); fi
        log "rep $r wrk $who: $v req/s"
    done
done
AFTER_WRK_BERTH=$(rss_kib "$BERTH_PID")
AFTER_WRK_NGINX=$(nginx_rss_kib)

# Berth, nginx and the server processes are stopped by the trap; do it now so the
# report is written with nothing left running.
kill -0 "$BERTH_PID" "$FS_PID" "$NGINX_PID" 2>/dev/null || { log "a server died during the run"; exit 1; }

# --- report -------------------------------------------------------------------
mS_B=$(echo "${S_B[*]}" | median); mS_N=$(echo "${S_N[*]}" | median)
mC_B=$(echo "${C_B[*]}" | median); mC_N=$(echo "${C_N[*]}" | median)
mW_B=$(echo "${W_B[*]}" | median); mW_N=$(echo "${W_N[*]}" | median)
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}'; }
# Server CPU milliseconds per GiB served (each server served 5 GiB per repetition) and microseconds per request.
GIB_PER_SERVER=$(awk -v r="$REPS" -v b="$FILE_BYTES" 'BEGIN {print 5 * r * b / 1073741824}')
ms_per_gib() { awk -v t="$1" -v hz="$HZ" -v g="$GIB_PER_SERVER" 'BEGIN {printf "%.0f", t / hz * 1000 / g}'; }
us_per_req() { awk -v t="$1" -v hz="$HZ" -v n="$2" 'BEGIN {if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "n/a"}'; }
int() { awk -v a="$1" 'BEGIN {printf "%.0f", a}'; }

CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
SWIFT_V=$(swift --version 2>/dev/null | head -1)
NGINX_V=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')
mkdir -p "$(dirname "$OUT")"
{
    echo "# HTTP end to end: Berth vs nginx"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- machine: $(nproc) cores (nproc), kernel $(uname -r), $CPU"
    echo "- os: $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "- load average before the run: $LOAD0"
    echo "- versions: $SWIFT_V; $NGINX_V; $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}'); $(curl --version | head -1 | awk '{print $1, $2}')"
    echo "- Berth: \`berth serve\` (release, 2 loops) for \`GET /v2/\`; \`berth-file-server\` (Berth's HTTP1 server, release, 2 loops, sendfile) for the file"
    echo "- nginx: worker_processes 2, sendfile on, tcp_nopush on, access_log off, keepalive_requests 1000000"
    echo "- medians of $REPS runs (file) and $WRK_REPS runs (wrk), Berth and nginx alternating; clients run on the same 2 cores"
    echo
    echo "| metric | Berth | nginx | ratio (Berth/nginx) |"
    echo "|---|---:|---:|---:|"
    echo "| ${FILE_MIB} MiB file, 1 curl stream (MiB/s) | $mS_B | $mS_N | $(ratio "$mS_B" "$mS_N") |"
    echo "| ${FILE_MIB} MiB file, 4 concurrent curls, aggregate (MiB/s) | $mC_B | $mC_N | $(ratio "$mC_B" "$mC_N") |"
    echo "| \`{}\` response, wrk -t2 -c64 -d${WRK_SECONDS}s (req/s) | $(int "$mW_B") | $(int "$mW_N") | $(ratio "$mW_B" "$mW_N") |"
    echo "| server CPU per GiB served, file runs (ms, user+sys) | $(ms_per_gib "$T_FILE_B") | $(ms_per_gib "$T_FILE_N") | $(ratio "$T_FILE_B" "$T_FILE_N") |"
    echo "| server CPU per request, wrk runs (µs, user+sys) | $(us_per_req "$T_WRK_B" "$REQ_B") | $(us_per_req "$T_WRK_N" "$REQ_N") | $(ratio "$(us_per_req "$T_WRK_B" "$REQ_B")" "$(us_per_req "$T_WRK_N" "$REQ_N")") |"
    echo "| idle RSS after start, \`berth serve\` vs nginx total (MiB) | $(mib "$IDLE_BERTH") | $(mib "$IDLE_NGINX") | $(ratio "$IDLE_BERTH" "$IDLE_NGINX") |"
    echo "| idle RSS after start, berth-file-server vs nginx total (MiB) | $(mib "$IDLE_FS") | $(mib "$IDLE_NGINX") | $(ratio "$IDLE_FS" "$IDLE_NGINX") |"
    echo "| RSS after the file runs, berth-file-server vs nginx total (MiB) | $(mib "$AFTER_FS") | $(mib "$AFTER_FILE_NGINX") | $(ratio "$AFTER_FS" "$AFTER_FILE_NGINX") |"
    echo "| RSS after wrk, \`berth serve\` vs nginx total (MiB) | $(mib "$AFTER_WRK_BERTH") | $(mib "$AFTER_WRK_NGINX") | $(ratio "$AFTER_WRK_BERTH" "$AFTER_WRK_NGINX") |"
    echo
    echo "Samples (in run order per server):"
    echo
    echo "- 1 stream MiB/s: Berth ${S_B[*]}; nginx ${S_N[*]}"
    echo "- 4 streams MiB/s: Berth ${C_B[*]}; nginx ${C_N[*]}"
    echo "- wrk req/s: Berth ${W_B[*]}; nginx ${W_N[*]}"
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
cat "$OUT"
log "written to $OUT"
