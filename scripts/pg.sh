#!/usr/bin/env bash
# A throwaway local PostgreSQL server for tests and development (never for production).
#   scripts/pg.sh start    initialise (once) and start; prints the URL to use
#   scripts/pg.sh stop     stop it
#   scripts/pg.sh url      print the URL
# Installs Debian's postgresql package when no server binaries are found and apt-get is
# usable (CI machines start with none). Runs as the `postgres` user when started as root.
set -euo pipefail

PGPORT="${FINGERPRINTS_PG_PORT:-55432}"
PGROOT="${FINGERPRINTS_PG_DIR:-/tmp/fingerprints-pg-$PGPORT}"
PGDATA="$PGROOT/data"
URL="postgresql+psycopg://postgres@127.0.0.1:$PGPORT/postgres"

find_bin() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -z "$dir" ]] && command -v pg_config >/dev/null 2>&1; then
        dir=$(pg_config --bindir)
    fi
    echo "$dir"
}

install_server() {
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "pg.sh: installing postgresql from the distribution's packages" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
        echo "pg.sh: no PostgreSQL server found; install your distribution's postgresql package" >&2
        exit 1
    fi
}

as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start() {
    local bin
    bin=$(find_bin)
    if [[ -z "$bin" || ! -x "$bin/initdb" ]]; then
        install_server
        bin=$(find_bin)
    fi
    if [[ -f "$PGDATA/postmaster.pid" ]] && as_owner "$bin/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
        echo "$URL"
        return
    fi
    mkdir -p "$PGROOT"
    [[ $(id -u) -eq 0 ]] && chown postgres "$PGROOT"
    if [[ ! -f "$PGDATA/PG_VERSION" ]]; then
        as_owner "$bin/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 --no-locale >/dev/null
    fi
    # max_connections: every test database and replica keeps a small pool.
    as_owner "$bin/pg_ctl" -D "$PGDATA" -l "$PGROOT/server.log" -w -t 60 \
        -o "-p $PGPORT -k $PGROOT -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off" \
        start >/dev/null
    echo "$URL"
}

stop() {
    local bin
    bin=$(find_bin)
    [[ -n "$bin" && -f "$PGDATA/postmaster.pid" ]] && as_owner "$bin/pg_ctl" -D "$PGDATA" -m fast stop >/dev/null
    return 0
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    url) echo "$URL" ;;
    *) echo "usage: $0 start|stop|url" >&2; exit 2 ;;
esac
