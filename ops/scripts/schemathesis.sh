#!/usr/bin/env bash
# Generated-input testing: schemathesis (from PyPI) against a fresh `agora
# serve`, driven by the server's own /openapi.json, with every check and the
# stateful phase that follows the document's links. Fails unless the run has
# no server error and no answer that breaks the document.
#
# Each run gets its own database (made by `agora migrate`, dropped at exit),
# its own NATS prefix (stream deleted at exit) and a free loopback port, so it
# can run beside the tests. With AGORA_AUTH=on (needs `agora token`) every
# request carries an admin token; by default auth is off.
#
#   ops/scripts/schemathesis.sh                 # the CI run, bounded examples
#   ST_MAX_EXAMPLES=200 ops/scripts/schemathesis.sh
#   ops/scripts/schemathesis.sh --include-operation-id placeOrder   # extra args go to schemathesis
set -euo pipefail
cd "$(dirname "$0")/../.."

SCHEMATHESIS_VERSION=4.32.5
NATS_PY_VERSION=2.16.0
MAX_EXAMPLES=${ST_MAX_EXAMPLES:-50}
SEED=${ST_SEED:-}

venv="${XDG_CACHE_HOME:-$HOME/.cache}/agora/venv-schemathesis-$SCHEMATHESIS_VERSION"
if [[ ! -x "$venv/bin/schemathesis" || ! -f "$venv/.complete" ]]; then
    echo "schemathesis: installing $SCHEMATHESIS_VERSION into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "schemathesis==$SCHEMATHESIS_VERSION" "nats-py==$NATS_PY_VERSION"
    touch "$venv/.complete"
fi

cargo build --quiet --locked -p ops --bin agora
agora="${CARGO_TARGET_DIR:-target}/debug/agora"

admin_url=${AGORA_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
suffix="$(date +%s)_$$"
database="agora_st_$suffix"
server="${admin_url%%\?*}"
server="${server%/*}"
port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

export DATABASE_URL="$server/$database"
export NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}
export AGORA_NATS_PREFIX="st$suffix"
export AGORA_HTTP_ADDR="127.0.0.1:$port"
# Reads with ?min_version= of rows that never get there wait this long: keep
# it short so random versions do not dominate the run.
export AGORA_CONSISTENCY_WAIT_MS=${AGORA_CONSISTENCY_WAIT_MS:-500}
export AGORA_AUTH=${AGORA_AUTH:-off}
export RUST_LOG=${RUST_LOG:-warn}
if [[ "$AGORA_AUTH" != off && -z "${AGORA_JWT_SECRET:-}" ]]; then
    AGORA_JWT_SECRET=$("$venv/bin/python" -c 'import secrets; print(secrets.token_hex(32))')
    export AGORA_JWT_SECRET
fi

log=$(mktemp -t agora-schemathesis-XXXXXX.log)
document=$(mktemp -t agora-openapi-XXXXXX.json)
server_pid=""
cleanup() {
    rm -f "$document"
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    psql -q "$admin_url" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 || true
    "$venv/bin/python" - "$NATS_URL" "$AGORA_NATS_PREFIX" <<'PY' || true
import asyncio, sys
import nats

async def main(url, prefix):
    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream(prefix.upper().replace("-", "_") + "_EVENTS")
    finally:
        await nc.close()

asyncio.run(main(*sys.argv[1:]))
PY
}
trap cleanup EXIT

"$agora" migrate >"$log" 2>&1
"$agora" serve >>"$log" 2>&1 &
server_pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
    if curl -sf "$base/readyz" >/dev/null; then break; fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
        cat "$log" >&2
        echo "schemathesis: agora serve exited before it was ready" >&2
        exit 1
    fi
    sleep 0.1
done
curl -sf "$base/readyz" >/dev/null || { cat "$log" >&2; echo "schemathesis: agora serve is not ready" >&2; exit 1; }

schema="$base/openapi.json"
if [[ "$AGORA_AUTH" == off ]]; then
    # Without auth the server lets every request in, so test the document as
    # this server honours it: the same, minus its security requirements.
    schema=$document
    curl -sf "$base/openapi.json" | "$venv/bin/python" -c '
import json, sys
doc = json.load(sys.stdin)
for item in doc["paths"].values():
    for operation in item.values():
        operation["security"] = []
json.dump(doc, sys.stdout)' >"$schema"
fi

args=(
    --config-file ops/scripts/schemathesis.toml
    run "$schema"
    --url "$base"
    --checks all
    --max-examples "$MAX_EXAMPLES"
    --phases examples,coverage,fuzzing,stateful
    --workers 2
    --request-timeout 10
    --suppress-health-check too_slow,filter_too_much
)
[[ -n "$SEED" ]] && args+=(--seed "$SEED")
if [[ "$AGORA_AUTH" != off ]]; then
    token=$("$agora" token --sub "$("$venv/bin/python" -c 'import uuid; print(uuid.uuid4())')" --role admin)
    args+=(-H "Authorization: Bearer $token")
fi

# Whole floats in generated bodies are sent as integers (see the hooks file).
export PYTHONPATH="$PWD/ops/scripts${PYTHONPATH:+:$PYTHONPATH}"
export SCHEMATHESIS_HOOKS=schemathesis_hooks

started=$(date +%s)
status=0
"$venv/bin/schemathesis" "${args[@]}" "$@" || status=$?
echo "schemathesis: finished in $(( $(date +%s) - started )) s, exit $status" >&2
if grep -q "panicked" "$log"; then
    grep -B2 -A10 "panicked" "$log" >&2
    status=1
fi
if [[ "$status" == 0 ]]; then rm -f "$log"; else echo "schemathesis: server log in $log" >&2; fi
exit "$status"
