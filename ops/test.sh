#!/usr/bin/env bash
# Runs every test of the workspace against the real Postgres and NATS, which
# it installs and starts first if needed (each test makes its own database and
# NATS prefix), then schemathesis against a fresh server (generated input
# from /openapi.json, about 15 s), then the benchmark harness in its smoke mode
# so it cannot rot.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ops/scripts/services.sh
cargo test --workspace --locked "$@"
bash ops/scripts/schemathesis.sh
cargo run --quiet --locked -p ops --bin agora-bench -- --quick
