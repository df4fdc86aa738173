#!/usr/bin/env bash
# Checks formatting and lints first (cheap, and the first thing a reviewer
# reads), then runs every test of the workspace against the real Postgres and
# NATS, which it installs and starts first if needed (each test makes its own
# database and NATS prefix), then schemathesis against a fresh server (generated input
# from /openapi.json, about 15 s), then the benchmark harness in its smoke mode
# so it cannot rot. The third-party tools the contract tests check with
# (client generators, the AsyncAPI parser, a CloudEvents SDK, chromium) are
# installed first, pinned and cached by ops/scripts/tools.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
# rustup's default profile has both; a minimal toolchain may not, and this
# machine cannot fetch them, so say so rather than fail for want of a tool.
if cargo fmt --version >/dev/null 2>&1; then
    cargo fmt --all -- --check
else
    echo "test.sh: rustfmt is not installed; skipping the format check" >&2
fi
if cargo clippy --version >/dev/null 2>&1; then
    cargo clippy --workspace --all-targets --locked -- -D warnings
else
    echo "test.sh: clippy is not installed; skipping the lints" >&2
fi
bash ops/scripts/services.sh
bash ops/scripts/tools.sh all
cargo test --workspace --locked "$@"
bash ops/scripts/schemathesis.sh
cargo run --quiet --locked -p ops --bin agora-bench -- --quick
