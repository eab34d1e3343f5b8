#!/usr/bin/env bash
# One idempotent bootstrap for a fresh Debian 12 machine (run as root):
# Debian packages, then .venv with wattvisor and its Python dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the build of .venv needs (compilers, headers) and libvirt's QEMU driver (a
# library, not a program). Every program the code, tests and benchmarks run, with its
# package, is listed once in src/wattvisor/host/binaries.py; this script reads it there.
BUILD_PACKAGES=(
    python3 python3-venv python3-dev gcc pkg-config libvirt-dev libvirt-daemon-driver-qemu
)
BINARIES_MODULE=src/wattvisor/host/binaries.py

export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d
added_policy=""
updated=""
trap '[ -n "$added_policy" ] && rm -f "$policy"' EXIT

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

# install_missing PACKAGE...: apt-get install those not installed yet; sets $newly.
install_missing() {
    local pkg missing=()
    newly=()
    for pkg in "$@"; do
        installed "$pkg" || missing+=("$pkg")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
        exit 1
    fi
    echo "setup: installing Debian packages: ${missing[*]}"
    # Packages such as postgresql and prometheus start their own service on install;
    # wattvisor and its tests start what they need themselves, so keep those off.
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && added_policy=1
    fi
    if [ -z "$updated" ]; then
        apt-get update -q
        updated=1
    fi
    apt-get install -y -q --no-install-recommends "${missing[@]}"
    newly=("${missing[@]}")
}

install_missing "${BUILD_PACKAGES[@]}"
runtime=$(python3 "$BINARIES_MODULE")  # fails the script if the list cannot be read
mapfile -t RUNTIME_PACKAGES <<< "$runtime"
# Node.js from another source (e.g. NodeSource's nodejs, which ships npm itself) already
# provides node and npm; Debian's npm would conflict with it, so only install what is absent.
for i in "${!RUNTIME_PACKAGES[@]}"; do
    case "${RUNTIME_PACKAGES[$i]}" in
        nodejs) command -v node >/dev/null && unset 'RUNTIME_PACKAGES[i]' ;;
        npm) command -v npm >/dev/null && unset 'RUNTIME_PACKAGES[i]' ;;
    esac
done
install_missing "${RUNTIME_PACKAGES[@]}"

# libvirtd picks its firewall backend when it starts: a daemon that was already running
# when iptables arrived keeps failing to start networks until it is restarted.
if [[ " ${newly[*]} " == *" iptables "* ]]; then
    pid=$(cat /run/libvirtd.pid 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        echo "setup: libvirtd (pid $pid) started before iptables was installed; libvirt" \
             "networks fail until it restarts: stop it, then run \`make libvirtd\`" >&2
    fi
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi

stamp=.venv/.wattvisor-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ ! -x .venv/bin/wattvisor ]; then
    echo "setup: installing Python dependencies into .venv"
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[dev]'
    echo "$want" > "$stamp"
fi
# OpenStack Placement's gabbi API tests (tests/placement_gabbi) read the YAML files its
# package ships; nothing of it is imported, so none of its dependencies are installed.
PLACEMENT_GABBITS='openstack-placement>=16.0'
if ! .venv/bin/pip show -q openstack-placement >/dev/null 2>&1; then
    echo "setup: installing $PLACEMENT_GABBITS (its gabbi test files only)"
    .venv/bin/pip install -q --no-deps "$PLACEMENT_GABBITS"
fi
# The OpenStack CLI with its Placement plugin, which tests/api/test_placement_osc_client.py
# drives against /placement as a real client. It lives in a virtualenv of its own so that
# OpenStack's dependency tree stays out of .venv and the product.
OSC_VENV=.cache/osc-venv
OSC_PACKAGES=('python-openstackclient>=7.0' 'osc-placement>=4.0')
if [ ! -x "$OSC_VENV/bin/openstack" ]; then
    echo "setup: installing ${OSC_PACKAGES[*]} into $OSC_VENV"
    mkdir -p .cache
    "$PYTHON" -m venv "$OSC_VENV"
    "$OSC_VENV/bin/pip" install -q "${OSC_PACKAGES[@]}"
fi
# The web dashboard: built from dashboard/ into src/wattvisor/api/dashboard_static (not
# committed; a clean clone builds it here), rebuilt when its sources are newer than the
# build. npm installs exactly what package-lock.json pins.
built=src/wattvisor/api/dashboard_static/index.html
if [ ! -f "$built" ] || [ -n "$(find dashboard -path dashboard/node_modules -prune -o -type f -newer "$built" -print -quit)" ]; then
    echo "setup: building the dashboard (npm ci && npm run build in dashboard/)"
    (cd dashboard && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent)
fi
echo "setup: ready (.venv/bin/wattvisor)"
