#!/usr/bin/env bash
# HTTPS serving: `berth serve` (a TLS listener in front of a local docker-registry, the
# manifest and a 16 MiB blob cached) against nginx serving the same bytes over TLS, in
# the same run, alternating the two servers.
#
#   Benchmarks/e2e/https.sh [OUTPUT.md]     (default Benchmarks/results/https-YYYY-MM-DD.md)
#
# Both servers are pinned to one core (SERVER_CPU, default 0) with one worker; wrk -t1
# runs pinned to the other (CLIENT_CPU, default 1). TLS 1.3 only on both sides, the same
# P-256 certificate, nginx with its default 16 KiB ssl_buffer_size.
#   - manifest: GET /v2/bench/app/manifests/<digest> (a 1.6 KiB schema 2 manifest, Berth
#     answers it from memory), wrk -t1 -c$MANIFEST_CONNS, keep-alive → req/s
#   - blob: GET /v2/bench/app/blobs/<digest> (16 MiB, Berth reads its cache file), wrk
#     -t1 -c$BLOB_CONNS → MiB/s from wrk's Transfer/sec
#   - server CPU (user + sys from /proc, every thread; nginx master + worker) per request
#     and per GiB: less noisy than the rates on this shared machine
# REPS rounds (default 3) of B N / N B; medians. Every wrk run must be all 2xx.
#
# CALLGRIND=1 instead runs `berth serve` under valgrind --tool=callgrind and prints the
# instructions per manifest request and per MiB of blob (curl, one keep-alive connection;
# counters zeroed after a warm-up): repeatable where wall clock is not.
#
# Installs what it needs (apt-get), sends traffic only to 127.0.0.1, and stops every
# process it started (by PID) on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${1:-$ROOT/Benchmarks/results/https-$(date +%F).md}
REPS=${REPS:-3}
WRK_SECONDS=${WRK_SECONDS:-10}
MANIFEST_CONNS=${MANIFEST_CONNS:-32}
BLOB_CONNS=${BLOB_CONNS:-4}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
CALLGRIND=${CALLGRIND:-}
CG_MANIFESTS=${CG_MANIFESTS:-2000}
CG_BLOBS=${CG_BLOBS:-8}
BERTH=${BERTH:-}

LOAD0=$(cut -d" " -f1-3 /proc/loadavg)
BERTH_PREBUILT=${BERTH:-}
NAME=https
PACKAGES=(nginx-light wrk curl docker-registry skopeo openssl procps util-linux valgrind)
# shellcheck source=lib.sh
source "$ROOT/Benchmarks/e2e/lib.sh"  # builds berth (release); TMP, PIDS, cleanup, log, free_port, start_registry
ACCEPT='Accept: application/vnd.docker.distribution.manifest.v2+json'

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
chmod 644 "$TMP/key.pem"

# --- upstream and image: one 16 MiB layer and eight 1 KiB ones -------------------------
UP=$(free_port)
start_registry "$UP" up
wait_ok "http://127.0.0.1:$UP/v2/"
IMG=$TMP/img; mkdir -p "$IMG"
add_layer() {  # BYTES → appends a layer to LAYERS, sets H
    head -c "$1" /dev/urandom > "$IMG/l"; H=$(sha256sum "$IMG/l" | cut -d' ' -f1); mv "$IMG/l" "$IMG/$H"
    LAYERS="$LAYERS${LAYERS:+,}{\"mediaType\":\"application/vnd.docker.image.rootfs.diff.tar.gzip\",\"size\":$1,\"digest\":\"sha256:$H\"}"
}
LAYERS=""
add_layer $((16 * 1024 * 1024))
for _ in 1 2 3 4 5 6 7 8; do add_layer 1024; done
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}' > "$IMG/c"
C=$(sha256sum "$IMG/c" | cut -d' ' -f1); CS=$(stat -c %s "$IMG/c"); mv "$IMG/c" "$IMG/$C"
printf '{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":%d,"digest":"sha256:%s"},"layers":[%s]}' "$CS" "$C" "$LAYERS" > "$IMG/manifest.json"
echo 'Directory Transport Version: 1.1' > "$IMG/version"
skopeo copy -q --dest-tls-verify=false "dir:$IMG" "docker://127.0.0.1:$UP/bench/app:v1" >&2
# skopeo compresses the layers on the way (random bytes are not gzip): take the
# manifest and the big layer as the upstream holds them.
curl -sf -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' -o "$TMP/manifest" \
    "http://127.0.0.1:$UP/v2/bench/app/manifests/v1"
MANIFEST="sha256:$(sha256sum "$TMP/manifest" | cut -d' ' -f1)"
MANIFEST_BYTES=$(stat -c %s "$TMP/manifest")
BLOB=$(python3 -c 'import json,sys; print(max(json.load(open(sys.argv[1]))["layers"], key=lambda l: l["size"])["digest"])' "$TMP/manifest")
curl -sf -o "$TMP/blob" "http://127.0.0.1:$UP/v2/bench/app/blobs/$BLOB"
BLOB_BYTES=$(stat -c %s "$TMP/blob")

# --- nginx: the same bytes at the same paths ----------------------------------------
mkdir -p "$TMP/www/v2/bench/app/manifests" "$TMP/www/v2/bench/app/blobs" "$TMP/nginx"
cp "$TMP/manifest" "$TMP/www/v2/bench/app/manifests/$MANIFEST"
cp "$TMP/blob" "$TMP/www/v2/bench/app/blobs/$BLOB"
chmod -R a+rX "$TMP/www"

# --- berth ------------------------------------------------------------------------------
BP=$(free_port); BTLS=$(free_port)
start_berth() {  # [wrapper...]: starts berth serve on BP/BTLS, pinned, one loop
    "$@" "$BERTH" serve --listen "127.0.0.1:$BP" --tls-listen "127.0.0.1:$BTLS" \
        --tls-certificate "$TMP/cert.pem" --tls-key "$TMP/key.pem" --upstream "http://127.0.0.1:$UP" \
        --cache-dir "$TMP/berth-cache" --workers 1 --log-level error >"$TMP/berth.log" 2>&1 &
    BERTH_PID=$!; PIDS+=("$BERTH_PID")
}
B_MANIFEST="https://127.0.0.1:$BTLS/v2/bench/app/manifests/$MANIFEST"
B_BLOB="https://127.0.0.1:$BTLS/v2/bench/app/blobs/$BLOB"
# Fills the cache (plain listener), then checks both answers over TLS byte for byte.
warm_berth() {
    local timeout=${1:-2}
    curl -s -o /dev/null -H "$ACCEPT" "http://127.0.0.1:$BP/v2/bench/app/manifests/$MANIFEST"
    curl -s -o /dev/null "http://127.0.0.1:$BP/v2/bench/app/blobs/$BLOB"
    for _ in $(seq 1 100); do
        curl -sk -m "$timeout" -o "$TMP/got" -H "$ACCEPT" "$B_BLOB" -D "$TMP/hdr" || true
        grep -qi '^cache-status:.*hit' "$TMP/hdr" && break
        sleep 0.1
    done
    cmp -s "$TMP/got" "$TMP/blob" || { log "berth: wrong blob bytes over TLS"; exit 1; }
    grep -qi '^cache-status:.*hit' "$TMP/hdr" || { log "berth: blob not cached"; exit 1; }
    curl -sk -m "$timeout" -o "$TMP/got" -H "$ACCEPT" "$B_MANIFEST"
    cmp -s "$TMP/got" "$TMP/manifest" || { log "berth: wrong manifest bytes over TLS"; exit 1; }
}

# --- callgrind mode ---------------------------------------------------------------------
if [ -n "$CALLGRIND" ]; then
    mkdir -p "$TMP/cg"
    # Valgrind 3.19 cannot read the toolchain's DWARF 5: profile a copy without it
    # (the symbol table stays, so functions keep their names).
    objcopy --strip-debug "$BERTH" "$TMP/berth-nodebug"
    BERTH=$TMP/berth-nodebug
    start_berth valgrind --tool=callgrind --callgrind-out-file="$TMP/cg/out.%p" --dump-instr=no
    wait_ok "http://127.0.0.1:$BP/v2/" 2400
    warm_berth 60
    # Requests on one keep-alive connection: curl's config file repeats the URL.
    many() {  # URL N [headers]
        local url=$1 n=$2 i; shift 2
        : > "$TMP/cg/urls"
        for i in $(seq 1 "$n"); do printf 'url = "%s"\noutput = "/dev/null"\n' "$url" >> "$TMP/cg/urls"; done
        curl -sk --http1.1 "$@" -K "$TMP/cg/urls" -w '%{http_code}\n' | grep -vc '^200$' || true
    }
    ir() { callgrind_control -d "$1" "$BERTH_PID" >/dev/null; local f; f=$(ls -t "$TMP"/cg/out.* | head -1)
           awk '/^summary:|^totals:/ {print $2; exit}' "$f"; }
    many "$B_MANIFEST" 50 -H "$ACCEPT" >/dev/null  # warm-up
    callgrind_control -z "$BERTH_PID" >/dev/null
    bad=$(many "$B_MANIFEST" "$CG_MANIFESTS" -H "$ACCEPT")
    [ "$bad" = 0 ] || { log "$bad non-200 manifest answers"; exit 1; }
    M_IR=$(ir manifest)
    many "$B_BLOB" 2 >/dev/null
    callgrind_control -z "$BERTH_PID" >/dev/null
    bad=$(many "$B_BLOB" "$CG_BLOBS")
    [ "$bad" = 0 ] || { log "$bad non-200 blob answers"; exit 1; }
    B_IR=$(ir blob)
    awk -v m="$M_IR" -v n="$CG_MANIFESTS" -v b="$B_IR" -v k="$CG_BLOBS" -v s="$BLOB_BYTES" 'BEGIN {
        printf "manifest: %d Ir / request (%d requests, one connection)\n", m / n, n
        printf "blob:     %d Ir / MiB (%d × %.1f MiB, one connection)\n", b / (k * s / 1048576), k, s / 1048576 }'
    cp "$TMP"/cg/out.* "${CG_KEEP:-/tmp}/" 2>/dev/null && log "callgrind files copied to ${CG_KEEP:-/tmp}"
    exit 0
fi

start_berth taskset -c "$SERVER_CPU"
wait_ok "http://127.0.0.1:$BP/v2/"
warm_berth

NP=$(free_port)
nginx_conf 1 "        listen 127.0.0.1:$NP ssl; ssl_protocols TLSv1.3;
        ssl_certificate $TMP/cert.pem; ssl_certificate_key $TMP/key.pem;
        root $TMP/www;
        location /v2/bench/app/manifests/ { default_type application/vnd.docker.distribution.manifest.v2+json; }
        location /v2/bench/app/blobs/ { default_type application/octet-stream; }"
taskset -c "$SERVER_CPU" "$NGINX" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" 2>>"$TMP/nginx/error.log" &
NGINX_PID=$!; PIDS+=("$NGINX_PID")
N_MANIFEST="https://127.0.0.1:$NP/v2/bench/app/manifests/$MANIFEST"
N_BLOB="https://127.0.0.1:$NP/v2/bench/app/blobs/$BLOB"
wait_ok "$N_MANIFEST"
curl -sk -o "$TMP/got" "$N_BLOB"; cmp -s "$TMP/got" "$TMP/blob" || { log "nginx: wrong blob bytes"; exit 1; }
for url in "$B_MANIFEST" "$N_MANIFEST"; do
    [ "$(curl -sk -o /dev/null -w '%{http_code}' --tlsv1.3 --tls-max 1.3 "$url")" = 200 ] || { log "$url: no TLS 1.3"; exit 1; }
done
nginx_pids() { echo "$NGINX_PID" $(ps -o pid= --ppid "$NGINX_PID"); }

# wrk pinned to the client core; prints "rate requests" (rate: req/s, or MiB/s with BYTES).
wrk_run() {  # URL CONNS MODE(rps|mib)
    local out
    out=$(taskset -c "$CLIENT_CPU" timeout $((WRK_SECONDS + 30)) wrk -t1 -c"$2" -d"${WRK_SECONDS}s" -H "$ACCEPT" "$1")
    if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then log "wrk saw failures on $1:"; echo "$out" >&2; exit 1; fi
    awk -v mode="$3" '
        / requests in / {n = $1}
        /^Requests\/sec:/ {r = $2}
        /^Transfer\/sec:/ {v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[A-Za-z]+$/, "", v)
            m = (u == "GB") ? v * 1024 : (u == "MB") ? v : (u == "KB") ? v / 1024 : v / 1048576}
        END {print (mode == "mib" ? m : r), n}' <<<"$out"
}

log "warm-up"
for url in "$B_MANIFEST" "$N_MANIFEST" "$B_BLOB" "$N_BLOB"; do
    taskset -c "$CLIENT_CPU" wrk -t1 -c4 -d2s -H "$ACCEPT" "$url" >/dev/null
done

MB=(); MN=(); BB=(); BN=()
T_M_B=0; T_M_N=0; T_B_B=0; T_B_N=0; R_M_B=0; R_M_N=0; R_B_B=0; R_B_N=0
measure() {  # KIND(M|B) WHO(B|N)
    local kind=$1 who=$2 url conns mode t0 t1 v n pids
    if [ "$kind" = M ]; then conns=$MANIFEST_CONNS; mode=rps; else conns=$BLOB_CONNS; mode=mib; fi
    if [ "$who" = B ]; then pids=$BERTH_PID; [ "$kind" = M ] && url=$B_MANIFEST || url=$B_BLOB
    else pids=$(nginx_pids); [ "$kind" = M ] && url=$N_MANIFEST || url=$N_BLOB; fi
    # shellcheck disable=SC2086
    t0=$(ticks $pids)
    read -r v n < <(wrk_run "$url" "$conns" "$mode")
    [ -n "$v" ] || { log "no result from wrk on $url"; exit 1; }
    # shellcheck disable=SC2086
    t1=$(ticks $pids)
    eval "T_${kind}_${who}=\$(( T_${kind}_${who} + t1 - t0 )); R_${kind}_${who}=\$(( R_${kind}_${who} + n ))"
    V=$v
}
for r in $(seq 1 "$REPS"); do
    if (( r % 2 )); then order=(B N); else order=(N B); fi
    for who in "${order[@]}"; do
        measure M "$who"; v=$V; if [ "$who" = B ]; then MB+=("$v"); else MN+=("$v"); fi
        log "round $r manifest $who: $v req/s"
    done
    for who in "${order[@]}"; do
        measure B "$who"; v=$V; if [ "$who" = B ]; then BB+=("$v"); else BN+=("$v"); fi
        log "round $r blob $who: $v MiB/s"
    done
done
LOAD1=$(cut -d" " -f1-3 /proc/loadavg)
kill -0 "$BERTH_PID" "$NGINX_PID" 2>/dev/null || { log "a server died during the run"; exit 1; }

mMB=$(printf "%s\n" "${MB[@]}" | median); mMN=$(printf "%s\n" "${MN[@]}" | median)
mBB=$(printf "%s\n" "${BB[@]}" | median); mBN=$(printf "%s\n" "${BN[@]}" | median)
us_per_req() { awk -v t="$1" -v hz="$HZ" -v n="$2" 'BEGIN {if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "n/a"}'; }
ms_per_gib() { awk -v t="$1" -v hz="$HZ" -v n="$2" -v b="$BLOB_BYTES" 'BEGIN {if (n > 0) printf "%.0f", t / hz * 1000 / (n * b / 1073741824); else print "n/a"}'; }
int() { awk -v a="$1" 'BEGIN {printf "%.0f", a}'; }
mkdir -p "$(dirname "$OUT")"
{
    echo "# HTTPS serving: Berth vs nginx, same run"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); berth: $(berth_version)"
    echo "- machine: $(nproc) cores, kernel $(uname -r), $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo); shared (fuzzers at nice 10)"
    echo "- load average: $LOAD0 before, $LOAD1 after"
    echo "- versions: $(swift --version 2>/dev/null | head -1); $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'); $(openssl version); $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}')"
    echo "- servers pinned to CPU $SERVER_CPU (\`berth serve --workers 1\`, its pool threads too; nginx worker_processes 1), wrk -t1 pinned to CPU $CLIENT_CPU"
    echo "- TLS 1.3, the same P-256 certificate; nginx defaults otherwise (ssl_buffer_size 16k, sendfile on has no effect under TLS)"
    echo "- manifest: $MANIFEST_BYTES-byte schema 2 manifest by digest, wrk -c$MANIFEST_CONNS, keep-alive; blob: 16 MiB cached layer, wrk -c$BLOB_CONNS"
    echo "- $REPS rounds, Berth and nginx alternating (B N, N B, …), ${WRK_SECONDS} s each; medians; every answer 2xx"
    echo
    echo "| metric | Berth | nginx | Berth/nginx |"
    echo "|---|---:|---:|---:|"
    echo "| manifest req/s | $(int "$mMB") | $(int "$mMN") | $(ratio "$mMB" "$mMN") |"
    echo "| 16 MiB blob MiB/s | $(int "$mBB") | $(int "$mBN") | $(ratio "$mBB" "$mBN") |"
    echo "| server CPU per manifest request (µs) | $(us_per_req "$T_M_B" "$R_M_B") | $(us_per_req "$T_M_N" "$R_M_N") | $(ratio "$(us_per_req "$T_M_B" "$R_M_B")" "$(us_per_req "$T_M_N" "$R_M_N")") |"
    echo "| server CPU per GiB of blob (ms) | $(ms_per_gib "$T_B_B" "$R_B_B") | $(ms_per_gib "$T_B_N" "$R_B_N") | $(ratio "$(ms_per_gib "$T_B_B" "$R_B_B")" "$(ms_per_gib "$T_B_N" "$R_B_N")") |"
    echo
    echo "Samples in run order: manifest req/s Berth ${MB[*]}, nginx ${MN[*]}; blob MiB/s Berth ${BB[*]}, nginx ${BN[*]}."
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
cat "$OUT"
log "written to $OUT"
