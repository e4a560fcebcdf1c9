#!/usr/bin/env bash
# Signature-policy cost: warm manifest-by-tag req/s from one Berth with a `signatures:` rule
# covering the image (signed as cosign signs with a key: the sha256-<hex>.sig tag, its
# simple-signing payload signed by openssl) against one without a policy, alternated in the same
# run, same upstream (issue 13 target: a warm tag resolution with a cached verdict ≥ 0.97× req/s).
#
#   Benchmarks/e2e/signatures.sh [OUTPUT.md]   (default Benchmarks/results/signatures-YYYY-MM-DD.md)
#
# wrk -t2 -c64, REPS alternations (default 5) of WRK_SECONDS (default 10); any non-2xx fails the
# run. CALLGRIND=1 instead counts instructions per warm request of each (one connection, one loop).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${1:-$ROOT/Benchmarks/results/signatures-$(date +%F).md}
REPS=${REPS:-5}
WRK_SECONDS=${WRK_SECONDS:-10}
LOAD0=$(cut -d" " -f1-3 /proc/loadavg)
NAME=signatures.sh
PACKAGES=(wrk curl docker-registry skopeo openssl)
source "$ROOT/Benchmarks/e2e/lib.sh"

start_upstream_with_small_image

# Uploads stdin's bytes as a blob of bench/app; prints its digest.
upload() {
    local f=$TMP/upload d loc; cat > "$f"; d="sha256:$(sha256sum "$f" | cut -d' ' -f1)"
    loc=$(curl -sf -X POST -D - -o /dev/null "http://127.0.0.1:$UP/v2/bench/app/blobs/uploads/" | tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}')
    case "$loc" in http*) ;; *) loc="http://127.0.0.1:$UP$loc" ;; esac
    curl -sf -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$f" "$loc&digest=$d" -o /dev/null
    echo "$d"
}
openssl ecparam -genkey -name prime256v1 -noout -out "$TMP/key.pem"
openssl pkey -in "$TMP/key.pem" -pubout -out "$TMP/key.pub"
printf '{"critical":{"identity":{"docker-reference":"127.0.0.1:%s/bench/app"},"image":{"docker-manifest-digest":"%s"},"type":"cosign container image signature"},"optional":null}' "$UP" "$DIGEST" > "$TMP/payload"
openssl dgst -sha256 -sign "$TMP/key.pem" -out "$TMP/payload.sig" "$TMP/payload"
P=$(upload < "$TMP/payload"); C=$(printf '{}' | upload)
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":2,"digest":"%s"},"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","size":%d,"digest":"%s","annotations":{"dev.cosignproject.cosign/signature":"%s"}}]}' \
    "$C" "$(stat -c %s "$TMP/payload")" "$P" "$(base64 -w0 "$TMP/payload.sig")" > "$TMP/sig.json"
curl -sf -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary "@$TMP/sig.json" \
    "http://127.0.0.1:$UP/v2/bench/app/manifests/sha256-${DIGEST#sha256:}.sig" -o /dev/null
cat > "$TMP/policy.yaml" <<YAML
signatures:
  - repositories: ["127.0.0.1:$UP/bench/**"]
    require: signed
    keys: [$TMP/key.pub]
    mode: enforce
YAML

OFF=$(free_port); ON=$(free_port)
callgrind_setup
"${RUN[@]}" "$BERTH" serve --listen "127.0.0.1:$OFF" --upstream "http://127.0.0.1:$UP" --cache-dir "$TMP/off" --log-level error --workers "$WORKERS" & PIDS+=($!)
OFF_PID=$!
"${RUN[@]}" "$BERTH" serve --config "$TMP/policy.yaml" --listen "127.0.0.1:$ON" --upstream "http://127.0.0.1:$UP" --cache-dir "$TMP/on" --log-level warning --workers "$WORKERS" 2> "$TMP/on.log" & PIDS+=($!)
ON_PID=$!
for _ in $(seq 1 600); do curl -s -o /dev/null "http://127.0.0.1:$OFF/v2/" && curl -s -o /dev/null "http://127.0.0.1:$ON/v2/" && break; sleep 0.1; done
wait_http "http://127.0.0.1:$OFF/v2/"; wait_http "http://127.0.0.1:$ON/v2/"
URL_OFF="http://127.0.0.1:$OFF/v2/bench/app/manifests/v1"
URL_ON="http://127.0.0.1:$ON/v2/bench/app/manifests/v1"
for u in "$URL_OFF" "$URL_ON"; do   # warm each (the signed one verifies here), and check the bytes
    got=$(curl -sf -H "$ACCEPT" "$u" | sha256sum | cut -d' ' -f1)
    [ "sha256:$got" = "$DIGEST" ] || { log "$u answered other bytes (or was refused)"; exit 1; }
done
if [ -n "${CALLGRIND:-}" ]; then
    N=${CG_REQUESTS:-1000}
    IR_OFF=$(callgrind_ir "$OFF_PID" "$URL_OFF" "$N"); IR_ON=$(callgrind_ir "$ON_PID" "$URL_ON" "$N")
    echo "warm manifest by tag, Ir per request (callgrind, $N on one connection): no policy $IR_OFF, policy with a cached verdict $IR_ON ($(ratio "$IR_ON" "$IR_OFF")x)"
    exit 0
fi
for u in "$URL_OFF" "$URL_ON"; do timeout 20 wrk -t2 -c64 -d2s -H "$ACCEPT" "$u" >/dev/null; done
A=(); B=()
for r in $(seq 1 "$REPS"); do
    A+=("$(rps "$URL_OFF")"); B+=("$(rps "$URL_ON")")
    log "rep $r: no policy ${A[-1]} req/s, policy with a cached verdict ${B[-1]} req/s"
done
mA=$(printf '%s\n' "${A[@]}" | median); mB=$(printf '%s\n' "${B[@]}" | median)

mkdir -p "$(dirname "$OUT")"
{
    echo "# Signature-policy cost: warm manifest by tag, no policy vs a rule with a cached verdict"
    echo
    echo "- date: $(date -u '+%F %H:%M UTC'); machine: $(nproc) cores, $(uname -r), Debian $(cat /etc/debian_version)"
    echo "- load average before: $LOAD0; after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- berth $(git -C "$ROOT" rev-parse --short HEAD) release, 2 loops each; upstream docker-registry; the image signed with a P-256 key (cosign's .sig layout)"
    echo "- wrk -t2 -c64 -d${WRK_SECONDS}s GET /v2/bench/app/manifests/v1 (by tag, within tag_ttl), $REPS alternations, medians; the client shares the 2 cores"
    echo
    echo "| Berth | req/s (median) | ratio | samples |"
    echo "|---|---:|---:|---|"
    echo "| no policy | $mA | 1.000 | ${A[*]} |"
    echo "| \`signatures:\` rule, cached verdict | $mB | $(ratio "$mB" "$mA") | ${B[*]} |"
    echo
    echo "Target (issue 13): ≥ 0.97× req/s."
} > "$OUT"
cat "$OUT"
