#!/usr/bin/env bash
# Installs what building, running and testing replication-sidecar needs on a fresh Debian machine
# with the Swift toolchain: only what is missing, so it is cheap to run every time.
set -euo pipefail

packages=(pkg-config libmicrohttpd-dev prometheus netcat-openbsd)
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
