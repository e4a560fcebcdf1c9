# Sourced by scripts/run, scripts/test and .ci/run: installs Debian packages
# that are missing. Needs root or sudo.
install_packages() {
    local missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    # Keep package installs from starting services (nginx, docker-registry) on this machine.
    local policy=/usr/sbin/policy-rc.d created=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod +x "$policy" && created=1
    fi
    $sudo apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    local rc=$?
    [ -n "$created" ] && $sudo rm -f "$policy"
    return $rc
}
BUILD_PACKAGES=(pkg-config libssl-dev zlib1g-dev)
TEST_PACKAGES=(openssl curl nginx-light docker-registry skopeo podman containerd tinyproxy haproxy systemd)
