#!/usr/bin/env bash
# Runs every test of the workspace against the real Postgres and NATS, which
# it installs and starts first if needed. Each test makes its own database.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ops/scripts/services.sh
exec cargo test --workspace --locked "$@"
