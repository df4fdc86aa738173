#!/usr/bin/env bash
# Runs the whole system on this machine: Postgres and NATS (installed and
# started if needed), the database and its schema, the bundled test payment
# gateway on 127.0.0.1:8090, then `agora serve` with every role in one process
# on http://127.0.0.1:8080. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ops/scripts/services.sh
cargo build --release --bin agora
export AGORA_AUTH="${AGORA_AUTH:-off}"
# The gateway takes only requests with this token; the saga sends it.
if [[ -z "${AGORA_GATEWAY_TOKEN:-}" ]]; then
    AGORA_GATEWAY_TOKEN=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
    export AGORA_GATEWAY_TOKEN
fi
echo "run.sh: the payment gateway's token (AGORA_GATEWAY_TOKEN): $AGORA_GATEWAY_TOKEN"
./target/release/agora migrate
./target/release/agora gateway &
gateway=$!
trap 'kill "$gateway" 2>/dev/null || true' EXIT
./target/release/agora serve "$@"
