#!/usr/bin/env bash
# The entrypoint of the postgres stand-in image (see its Dockerfile): the
# official image's contract, in short.
set -Eeuo pipefail

say() { printf 'docker-entrypoint: %s\n' "$*"; }

if [ "${1:-}" != postgres ]; then
    exec "$@"
fi

# As root: own the data and socket directories (a bind mount may not be
# ours), then run again as postgres.
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    chmod 3777 /var/run/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    POSTGRES_USER=${POSTGRES_USER:-postgres}
    POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}
    auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != trust ]; then
        say "the database is not initialised and POSTGRES_PASSWORD is not set" >&2
        say "set it, or POSTGRES_HOST_AUTH_METHOD=trust to allow every connection without one" >&2
        exit 1
    fi
    say "initialising $PGDATA"
    # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of options
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "${POSTGRES_PASSWORD:-}") \
        ${POSTGRES_INITDB_ARGS:-} >/dev/null
    printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
    printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"

    # The init scripts run against a server that listens only on its socket,
    # so that nothing connects before they are done.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start >/dev/null
    export PGUSER=$POSTGRES_USER PGPASSWORD=${POSTGRES_PASSWORD:-}
    psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password -h /var/run/postgresql -p 5432)
    if [ "$POSTGRES_DB" != postgres ]; then
        "${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";' >/dev/null
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        [ -e "$f" ] || continue
        case $f in
        *.sh)
            if [ -x "$f" ]; then
                say "running $f"
                "$f"
            else
                say "sourcing $f"
                # shellcheck disable=SC1090
                . "$f"
            fi
            ;;
        *.sql) say "running $f"; "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
        *.sql.gz) say "running $f"; gunzip -c "$f" | "${psql[@]}" --dbname "$POSTGRES_DB" ;;
        *.sql.xz) say "running $f"; xz -dc "$f" | "${psql[@]}" --dbname "$POSTGRES_DB" ;;
        *) say "ignoring $f" ;;
        esac
    done
    unset PGPASSWORD
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    say "init process complete; ready for start up"
fi

exec "$@"
