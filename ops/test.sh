#!/usr/bin/env bash
# Runs every test of the workspace against the real Postgres and NATS, which
# it installs and starts first if needed (each test makes its own database and
# NATS prefix), then the benchmark harness in its smoke mode so it cannot rot.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ops/scripts/services.sh
cargo test --workspace --locked "$@"
cargo run --quiet --locked -p ops --bin agora-bench -- --quick
