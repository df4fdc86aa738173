#!/usr/bin/env bash
# Installs the third-party tools the contract tests check Agora with, at the
# versions pinned in ops/tools/, and prints where they are:
#
#   ops/scripts/tools.sh node       # node_modules of ops/tools/package-lock.json (npm ci)
#   ops/scripts/tools.sh python     # bin/ of a venv with ops/tools/requirements.txt
#   ops/scripts/tools.sh chromium   # Debian's chromium (apt), its path
#   ops/scripts/tools.sh all        # all three, nothing printed (ops/test.sh runs it first)
#   ops/scripts/tools.sh freeze     # rewrites requirements.txt from requirements.in
#
# Installs are cached under ~/.cache/agora/tools, keyed by a hash of the pin
# file, so a warm run costs a few milliseconds and a changed pin installs
# afresh. Tests call this concurrently; one lock serializes the installs.
# Node.js, npm and python3-venv come from Debian's packages when missing.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
tools="$root/ops/tools"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/agora/tools"
mkdir -p "$cache"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then
        as_root apt-get update -qq >&2
        apt_updated=1
    fi
    echo "tools.sh: installing $* from Debian's packages" >&2
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

hash_of() {
    cat "$@" | sha256sum | cut -c1-16
}

node_modules() {
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        apt_install nodejs npm
    fi
    local dir="$cache/node-$(hash_of "$tools/package.json" "$tools/package-lock.json")"
    if [ ! -f "$dir/.complete" ]; then
        echo "tools.sh: npm ci into $dir" >&2
        rm -rf "$dir"
        mkdir -p "$dir"
        cp "$tools/package.json" "$tools/package-lock.json" "$dir/"
        # No install scripts: none of these tools needs one, and one of their
        # dependencies would report the install over the network.
        (cd "$dir" && SCARF_ANALYTICS=false npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
        touch "$dir/.complete"
    fi
    echo "$dir/node_modules"
}

venv() {
    local dir="$cache/venv-$(hash_of "$tools/requirements.txt")"
    if [ ! -f "$dir/.complete" ]; then
        echo "tools.sh: pip install into $dir" >&2
        rm -rf "$dir"
        if ! python3 -m venv "$dir" >/dev/null 2>&1; then
            rm -rf "$dir"
            apt_install python3-venv
            python3 -m venv "$dir"
        fi
        "$dir/bin/pip" install --quiet --disable-pip-version-check --no-deps \
            -r "$tools/requirements.txt" >&2
        touch "$dir/.complete"
    fi
    echo "$dir/bin"
}

chromium_path() {
    if [ ! -x /usr/bin/chromium ]; then
        apt_install chromium
    fi
    echo /usr/bin/chromium
}

freeze() {
    local dir
    dir=$(mktemp -d)
    python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$tools/requirements.in"
    {
        echo "# Every package of the contract tools' venv, pinned; made from requirements.in by"
        echo "# ops/scripts/tools.sh freeze. Installed by ops/scripts/tools.sh python."
        "$dir/bin/pip" freeze --all --exclude pip --exclude setuptools --exclude wheel
    } >"$tools/requirements.txt"
    rm -rf "$dir"
}

exec 9>"$cache/.lock"
flock 9
case "${1:-all}" in
    node) node_modules ;;
    python) venv ;;
    chromium) chromium_path ;;
    all) node_modules >/dev/null; venv >/dev/null; chromium_path >/dev/null ;;
    freeze) freeze ;;
    *) echo "usage: $0 node|python|chromium|all|freeze" >&2; exit 2 ;;
esac
