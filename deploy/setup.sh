#!/usr/bin/env bash
# Installs what building, running and testing replication-sidecar needs on a fresh Debian machine
# with the Swift toolchain: only what is missing, so it is cheap to run every time.
set -euo pipefail

packages=(pkg-config libmicrohttpd-dev zlib1g-dev libsqlite3-dev prometheus netcat-openbsd curl openssl)
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

# Python packages the tests use (the Prometheus client's parsers), in a virtual environment of the
# project's own, so the system's Python stays untouched.
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
requirements="$root/Tests/python-requirements.txt"
if ! cmp -s "$requirements" "$venv/requirements.installed" 2>/dev/null; then
    echo "setup: preparing $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/requirements.installed"
fi

# Synapse 1.6.1's own replication code, for the interoperability tests: the sdist builds only without
# build isolation (it needs pkg_resources and wheel from the environment).
synapse_venv="$root/.venv-synapse"
synapse_requirements="$root/Tests/Interop/requirements.txt"
if ! cmp -s "$synapse_requirements" "$synapse_venv/requirements.installed" 2>/dev/null; then
    echo "setup: preparing $synapse_venv (Synapse 1.6.1)" >&2
    python3 -m venv "$synapse_venv"
    "$synapse_venv/bin/pip" install -q --disable-pip-version-check -r "$synapse_requirements"
    "$synapse_venv/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation matrix-synapse==1.6.1
    cp "$synapse_requirements" "$synapse_venv/requirements.installed"
fi
