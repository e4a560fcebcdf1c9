#!/usr/bin/env bash
# Routing cost: warm manifest-by-digest req/s from one Berth with a single upstream against one
# with five upstreams configured (issue 9 target: ≥ 0.97×), alternating the two in the same run.
#
#   Benchmarks/e2e/routing.sh [OUTPUT.md]    (default Benchmarks/results/routing-YYYY-MM-DD.md)
#
# The five-upstream Berth is asked three ways: a bare name (falls through prefix, ns and Host to
# the default), a path prefix (/v2/up5/…) and ?ns=. The four other upstreams point at closed
# loopback ports and are never contacted (every request is a warm hit). wrk -t2 -c64, REPS
# alternations (default 5) of WRK_SECONDS (default 10); a run with any non-2xx answer fails.
# Installs docker-registry, skopeo, wrk, curl; traffic to 127.0.0.1 only; stops what it started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${1:-$ROOT/Benchmarks/results/routing-$(date +%F).md}
REPS=${REPS:-5}
WRK_SECONDS=${WRK_SECONDS:-10}
LOAD0=$(cut -d" " -f1-3 /proc/loadavg)
NAME=routing.sh
PACKAGES=(wrk curl docker-registry skopeo)
source "$ROOT/Benchmarks/e2e/lib.sh"

# --- upstream and a small image ------------------------------------------------------
start_upstream_with_small_image

# --- the two Berths -----------------------------------------------------------------------
ONE=$(free_port); FIVE=$(free_port)
"$BERTH" serve --listen "127.0.0.1:$ONE" --upstream "http://127.0.0.1:$UP" --cache-dir "$TMP/one" --log-level error & PIDS+=($!)
{
    echo "upstreams:"
    for i in 1 2 3 4; do printf '  - name: "up%d.example"\n    prefix: up%d\n    url: "http://127.0.0.1:%d"\n' "$i" "$i" "$(free_port)"; done
    printf '  - name: "127.0.0.1:%s"\n    prefix: up5\n    url: "http://127.0.0.1:%s"\n    default: true\n' "$UP" "$UP"
} > "$TMP/five.yaml"
"$BERTH" serve --config "$TMP/five.yaml" --listen "127.0.0.1:$FIVE" --cache-dir "$TMP/five" --log-level error & PIDS+=($!)
wait_http "http://127.0.0.1:$ONE/v2/"; wait_http "http://127.0.0.1:$FIVE/v2/"

URL_ONE="http://127.0.0.1:$ONE/v2/bench/app/manifests/$DIGEST"
URL_DEFAULT="http://127.0.0.1:$FIVE/v2/bench/app/manifests/$DIGEST"
URL_PREFIX="http://127.0.0.1:$FIVE/v2/up5/bench/app/manifests/$DIGEST"
URL_NS="http://127.0.0.1:$FIVE/v2/bench/app/manifests/$DIGEST?ns=127.0.0.1:$UP"
for u in "$URL_ONE" "$URL_DEFAULT" "$URL_PREFIX" "$URL_NS"; do   # warm each, and check the bytes
    got=$(curl -s -H "$ACCEPT" "$u" | sha256sum | cut -d' ' -f1)
    [ "sha256:$got" = "$DIGEST" ] || { log "$u answered other bytes"; exit 1; }
done

timeout 20 wrk -t2 -c64 -d2s -H "$ACCEPT" "$URL_ONE" >/dev/null; timeout 20 wrk -t2 -c64 -d2s -H "$ACCEPT" "$URL_DEFAULT" >/dev/null
A=(); B=(); P=(); N=()
for r in $(seq 1 "$REPS"); do
    A+=("$(rps "$URL_ONE")"); B+=("$(rps "$URL_DEFAULT")"); P+=("$(rps "$URL_PREFIX")"); N+=("$(rps "$URL_NS")")
    log "rep $r: one ${A[-1]}, five/default ${B[-1]}, five/prefix ${P[-1]}, five/ns ${N[-1]}"
done
mA=$(printf '%s\n' "${A[@]}" | median); mB=$(printf '%s\n' "${B[@]}" | median)
mP=$(printf '%s\n' "${P[@]}" | median); mN=$(printf '%s\n' "${N[@]}" | median)

mkdir -p "$(dirname "$OUT")"
{
    echo "# Routing cost: one upstream vs five"
    echo
    echo "- date: $(date -u '+%F %H:%M UTC'); machine: $(nproc) cores, $(uname -r), Debian $(cat /etc/debian_version)"
    echo "- load average before: $LOAD0; after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- berth $(git -C "$ROOT" rev-parse --short HEAD) release, 2 loops each; upstream docker-registry $(dpkg-query -W -f='${Version}' docker-registry); every request a warm hit"
    echo "- wrk -t2 -c64 -d${WRK_SECONDS}s GET /v2/bench/app/manifests/<digest>, $REPS alternations, medians; the client shares the 2 cores"
    echo
    echo "| Berth | req/s (median) | ratio to one upstream | samples |"
    echo "|---|---:|---:|---|"
    echo "| one upstream (\`--upstream\`) | $mA | 1.000 | ${A[*]} |"
    echo "| five upstreams, bare name → default | $mB | $(ratio "$mB" "$mA") | ${B[*]} |"
    echo "| five upstreams, path prefix \`/v2/up5/…\` | $mP | $(ratio "$mP" "$mA") | ${P[*]} |"
    echo "| five upstreams, \`?ns=\` | $mN | $(ratio "$mN" "$mA") | ${N[*]} |"
    echo
    echo "Target (issue 9): five upstreams ≥ 0.97× one."
} > "$OUT"
cat "$OUT"
