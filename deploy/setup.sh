#!/usr/bin/env bash
# Installs what building, running and testing replication-sidecar needs on a fresh Debian machine
# with the Swift toolchain: only what is missing, so it is cheap to run every time.
set -euo pipefail

packages=(pkg-config libmicrohttpd-dev zlib1g-dev libsqlite3-dev libcrypt-dev libhiredis-dev prometheus netcat-openbsd
    curl openssl chromium redis-server postgresql iproute2)
missing=()
for package in "${packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Python environments of the project's own (the system's Python stays untouched), each rebuilt only
# when its pinned requirements change.
root="$(cd "$(dirname "$0")/.." && pwd)"
prepare_venv() {  # DIRECTORY REQUIREMENTS [a further pip install ...]
    local venv="$1" requirements="$2"
    shift 2
    cmp -s "$requirements" "$venv/requirements.installed" 2>/dev/null && return
    echo "setup: preparing $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
    if (($#)); then "$venv/bin/pip" install -q --disable-pip-version-check "$@"; fi
    cp "$requirements" "$venv/requirements.installed"
}

# The Prometheus client's parsers and the Kubernetes schema check.
prepare_venv "$root/.venv" "$root/Tests/python-requirements.txt"
# Synapse 1.6.1's own replication code, for the interoperability tests: its sdist builds only without
# build isolation (it needs pkg_resources and wheel from the environment).
prepare_venv "$root/.venv-synapse" "$root/Tests/Interop/requirements.txt" --no-deps --no-build-isolation matrix-synapse==1.6.1
# Today's Synapse (1.163.2, a manylinux wheel with its Rust extension) with its Redis and PostgreSQL extras, for
# the tests that run a real deployment replicating over Redis.
prepare_venv "$root/.venv-synapse-modern" "$root/Tests/InteropModern/requirements.txt"
