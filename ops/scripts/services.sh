#!/usr/bin/env bash
# Makes sure PostgreSQL and NATS (with JetStream) answer on loopback: installs
# them from Debian's packages if they are missing, starts them if they are
# stopped, and lets the local `postgres` user in over TCP without a password.
# Sourced by run.sh and test.sh; safe to run again at any time.
set -euo pipefail

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_for_port() {
    local port=$1 name=$2
    for _ in $(seq 1 60); do
        port_open "$port" && return 0
        sleep 0.5
    done
    echo "services.sh: $name did not come up on 127.0.0.1:$port" >&2
    return 1
}

apt_updated=0
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then
        as_root apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        echo "services.sh: installing PostgreSQL from Debian's packages"
        apt_install postgresql postgresql-client
    fi
    if ! port_open 5432; then
        local version
        version=$(ls /etc/postgresql | sort -V | tail -n 1)
        echo "services.sh: starting PostgreSQL $version"
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
        wait_for_port 5432 PostgreSQL
    fi
    if ! command -v psql >/dev/null 2>&1; then
        apt_install postgresql-client
    fi
    # A fresh Debian cluster asks for a password over TCP; the local
    # development default (postgres@127.0.0.1, no password) needs trust.
    if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc 'SELECT 1' >/dev/null 2>&1; then
        local hba
        hba=$(as_root su postgres -c "psql -tAc 'SHOW hba_file'" | tr -d '[:space:]')
        echo "services.sh: trusting loopback connections in $hba"
        as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
        as_root su postgres -c "psql -tAc 'SELECT pg_reload_conf()'" >/dev/null
        sleep 0.5
    fi
    # Search needs unaccent and pg_trgm (migration 0009), which Debian ships
    # in postgresql-contrib for the server's major version.
    local sharedir
    sharedir=$(pg_config --sharedir 2>/dev/null || echo "/usr/share/postgresql/$(ls /etc/postgresql | sort -V | tail -n 1)")
    if [ ! -f "$sharedir/extension/unaccent.control" ] || [ ! -f "$sharedir/extension/pg_trgm.control" ]; then
        echo "services.sh: installing postgresql-contrib (unaccent, pg_trgm)"
        apt_install postgresql-contrib
    fi
}

ensure_nats() {
    if port_open 4222; then
        return 0
    fi
    if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then
        echo "services.sh: installing nats-server from Debian's packages"
        apt_install nats-server
    fi
    local bin
    bin=$(command -v nats-server || echo /usr/sbin/nats-server)
    echo "services.sh: starting NATS with JetStream"
    as_root mkdir -p /var/lib/nats-server
    as_root start-stop-daemon --start --oknodo --background --exec "$bin" -- \
        -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
    wait_for_port 4222 NATS
}

ensure_postgres
ensure_nats
