# Sourced by the e2e benchmarks that pull a small image through Berth (routing.sh, storm.sh,
# accesslog.sh): installs their packages (PACKAGES) and builds the release binary (BERTH), a
# work directory removed on exit with every process started, helpers, and the image. Set NAME,
# ROOT and PACKAGES before sourcing; traffic to 127.0.0.1 only.
source "$ROOT/scripts/deps.sh"
install_packages "${BUILD_PACKAGES[@]}" "${PACKAGES[@]}"
if [ -n "${BERTH_PREBUILT:-}" ]; then
    BERTH=$BERTH_PREBUILT  # a binary given by the caller (a before/after comparison)
else
    (cd "$ROOT" && swift build -c release --product berth >&2)
    BERTH=$ROOT/.build/release/berth
fi
log() { printf '[%s] %s\n' "$NAME" "$*" >&2; }
TMP=$(mktemp -d "/tmp/berth-$NAME.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 200); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done; log "no answer from $1"; exit 1; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a/b}'; }
ACCEPT='Accept: application/vnd.docker.distribution.manifest.v2+json'
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
chmod 755 "$TMP"  # nginx started as root runs its workers as nobody: a 0700 folder gets 403s
# CPU ticks (user + system) of PIDs; a PID already gone counts 0. HZ ticks make a second.
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo "$t"; }
HZ=$(getconf CLK_TCK)
# What was measured: the binary the caller gave (BERTH_PREBUILT), or the commit built here.
berth_version() {
    if [ -n "${BERTH_PREBUILT:-}" ]; then echo "the binary $BERTH_PREBUILT"
    else echo "$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- Sources || echo ' + uncommitted changes')"; fi
}
# Until URL answers 200 (plain or https, certificate not checked): TRIES x 50 ms, default 10 s.
wait_ok() {  # URL [TRIES]
    for _ in $(seq 1 "${2:-200}"); do
        [ "$(curl -sk -o /dev/null -m 2 -w '%{http_code}' "$1" || true)" = 200 ] && return 0
        sleep 0.05
    done
    log "no 200 from $1"; exit 1
}

# Starts docker-registry on 127.0.0.1:PORT, storage under $TMP/DIR.
start_registry() {  # PORT DIR
    mkdir -p "$TMP/$2"
    printf 'version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: 127.0.0.1:%s}\n' "$TMP/$2/data" "$1" > "$TMP/$2/config.yml"
    env -u REGISTRY_AUTH_FILE docker-registry serve "$TMP/$2/config.yml" > "$TMP/$2/log" 2>&1 & PIDS+=($!)
}

# Pushes bench/app:v1 (a Docker schema 2 manifest, one 100 kB layer) to the registry on
# 127.0.0.1:PORT; sets DIGEST to the manifest's digest.
push_small_image() {  # PORT
    local img=$TMP/img L C CS
    mkdir -p "$img"
    head -c 100000 /dev/urandom > "$img/l"; L=$(sha256sum "$img/l" | cut -d' ' -f1); mv "$img/l" "$img/$L"
    printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}' > "$img/c"
    C=$(sha256sum "$img/c" | cut -d' ' -f1); CS=$(stat -c %s "$img/c"); mv "$img/c" "$img/$C"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":%d,"digest":"sha256:%s"},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":100000,"digest":"sha256:%s"}]}' "$CS" "$C" "$L" > "$img/manifest.json"
    echo 'Directory Transport Version: 1.1' > "$img/version"
    skopeo copy -q --dest-tls-verify=false "dir:$img" "docker://127.0.0.1:$1/bench/app:v1" >&2
    DIGEST=$(curl -s -D - -o /dev/null -H "$ACCEPT" "http://127.0.0.1:$1/v2/bench/app/manifests/v1" | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}')
    [ -n "$DIGEST" ] || { log "no manifest digest from the upstream"; exit 1; }
}

# A docker-registry on a free port (UP) holding bench/app:v1.
start_upstream_with_small_image() {
    UP=$(free_port)
    start_registry "$UP" up
    wait_http "http://127.0.0.1:$UP/v2/"
    push_small_image "$UP"
}

# wrk -t2 -c64 for WRK_SECONDS on URL → req/s; fails on socket errors or any non-2xx answer.
rps() {  # URL
    local out; out=$(timeout $((WRK_SECONDS + 30)) wrk -t2 -c64 -d"${WRK_SECONDS}s" -H "$ACCEPT" "$1")
    if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then log "wrk saw failures on $1:"; echo "$out" >&2; exit 1; fi
    awk '/Requests\/sec/{print $2}' <<<"$out"
}

# Writes $TMP/nginx/nginx.conf: WORKERS worker processes, access log off, sendfile and
# keep-alive as the benchmarks compare, and one server block holding SERVER (its body).
nginx_conf() {  # WORKERS SERVER
    mkdir -p "$TMP/nginx"
    cat >"$TMP/nginx/nginx.conf" <<EOF
daemon off; worker_processes $1; pid $TMP/nginx/nginx.pid; error_log $TMP/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off; sendfile on; tcp_nopush on; tcp_nodelay on; keepalive_requests 1000000; types { }
    client_body_temp_path $TMP/nginx/body; proxy_temp_path $TMP/nginx/proxy; fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi; scgi_temp_path $TMP/nginx/scgi;
    server {
$2
    }
}
EOF
}

# CALLGRIND=1 in a script: count instructions per request instead of timing. Sets WORKERS (1: one
# loop), BERTH (a copy without DWARF, which valgrind 3.19 cannot read) and RUN, the prefix that
# starts a Berth under callgrind, with deterministic hashing; without CALLGRIND, WORKERS=2 and RUN empty.
callgrind_setup() {
    WORKERS=2; RUN=()
    [ -n "${CALLGRIND:-}" ] || return 0
    WORKERS=1
    # Swift seeds its hashing per process: dictionary probes, and so the counts, moved by
    # ±1,000 instructions per request from run to run of the same binary.
    export SWIFT_DETERMINISTIC_HASHING=1
    objcopy --strip-debug "$BERTH" "$TMP/berth-nodebug"; BERTH=$TMP/berth-nodebug
    RUN=(valgrind --tool=callgrind --dump-instr=no "--callgrind-out-file=$TMP/cg.%p")
}

# Instructions per request of the callgrind-run Berth PID over N GETs of URL on one keep-alive
# connection (curl -K), counters zeroed after a warm-up of N/10; fails on any non-200.
# CG_KEEP=PREFIX keeps the profile as PREFIX.PID for callgrind_annotate.
callgrind_ir() {  # PID URL N
    local urls=$TMP/cg-urls.$1 bad
    for _ in $(seq 1 "$3"); do printf 'url = "%s"\noutput = "/dev/null"\n' "$2"; done > "$urls"
    bad=$(curl -s -H "$ACCEPT" -K <(head -$(($3 / 10 * 2)) "$urls") -w '%{http_code}\n' | grep -vc '^200$' || true)
    [ "$bad" = 0 ] || { log "$bad non-200 answers during the warm-up"; exit 1; }
    callgrind_control -z "$1" >/dev/null
    bad=$(curl -s -H "$ACCEPT" -K "$urls" -w '%{http_code}\n' | grep -vc '^200$' || true)
    [ "$bad" = 0 ] || { log "$bad non-200 answers"; exit 1; }
    callgrind_control -d "$1" >/dev/null
    local profile; profile=$(ls -t "$TMP"/cg.$1* | head -1)
    [ -z "${CG_KEEP:-}" ] || cp "$profile" "$CG_KEEP.$1"
    awk '/^summary:|^totals:/ {print int($2 / '"$3"'); exit}' "$profile"
}

# A random MIB MiB blob that nginx (WORKERS processes, started under WRAPPER... if given) serves
# on 127.0.0.1:PORT as a registry would: GET /v2/bench/big/blobs/<digest>, with its
# Docker-Content-Digest. Sets DIGEST, SIZE, BLOB_PATH and NGINX_PID.
nginx_blob_upstream() {  # MIB PORT WORKERS [WRAPPER...]
    local mib=$1 port=$2 workers=$3; shift 3
    SIZE=$((mib << 20))
    mkdir -p "$TMP/www/v2/bench/big/blobs"
    head -c "$SIZE" /dev/urandom > "$TMP/blob"
    DIGEST=sha256:$(sha256sum "$TMP/blob" | cut -d' ' -f1)
    BLOB_PATH=/v2/bench/big/blobs/$DIGEST
    mv "$TMP/blob" "$TMP/www$BLOB_PATH"
    chmod -R a+rX "$TMP/www"
    nginx_conf "$workers" "        listen 127.0.0.1:$port; root $TMP/www;
        location = /v2/ { default_type application/json; return 200 '{}'; }
        location ~ ^/v2/bench/big/blobs/(?<digest>sha256:[0-9a-f]+)\$ { default_type application/octet-stream; add_header Docker-Content-Digest \$digest; }"
    "$@" "$NGINX" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" 2>>"$TMP/nginx/error.log" &
    NGINX_PID=$!; PIDS+=("$NGINX_PID")
    wait_http "http://127.0.0.1:$port/v2/"
}
