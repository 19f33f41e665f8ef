#!/usr/bin/env bash
# test/scale/cluster.sh: a credits router and N shards, each its own local
# PostgreSQL cluster on a private port, for the scale suite and by hand.
#
#   bash test/scale/cluster.sh up N     N shards (a power of 2) and a router;
#                                       the last line printed is the router's
#                                       libpq connection string
#   bash test/scale/cluster.sh add K    K more shards, configured for the
#                                       new count but not routed to yet
#                                       (resharding: README, "Pooling and
#                                       scale-out"); prints their conninfos
#   bash test/scale/cluster.sh stop K / start K
#                                       stop (immediate: a crash) or start shard K
#   bash test/scale/cluster.sh down     stop and remove everything
#
# Every cluster lives under SCALE_DIR (default /tmp/credits-scale-$UID):
# shard k in shard<k>/ on port SCALE_PORT + 1 + k, the router in router/ on
# SCALE_PORT (default 25400: below the ephemeral port range, which
# outgoing connections of other programs take ports from).  fsync is off (a test rig) but commits are
# synchronous: a server killed with `stop` loses nothing it acknowledged.  The servers run as the postgres OS user when
# started as root.  Needs credits, credits_router and PL/Proxy installed for
# PostgreSQL PG_MAJOR (default 15): `make install` and test/scripts/deps.sh.
# Shard k holds database credits (CREATE EXTENSION credits, dblink; then
# credits.configure_shard(k, N)); the router holds database credits_router
# (CREATE EXTENSION credits_router; server credits_shards with p0 .. pN-1).
set -euo pipefail

PG_MAJOR=${PG_MAJOR:-15}
PGBIN=${PGBIN:-/usr/lib/postgresql/$PG_MAJOR/bin}
SCALE_DIR=${SCALE_DIR:-/tmp/credits-scale-$EUID}
SCALE_PORT=${SCALE_PORT:-25400}
OS_USER=$(if ((EUID == 0)); then echo postgres; else id -un; fi)

as_pg() {
    if ((EUID == 0)); then (cd "$SCALE_DIR" && runuser -u "$OS_USER" -- "$@"); else (cd "$SCALE_DIR" && "$@"); fi
}
shard_port() { echo $((SCALE_PORT + 1 + $1)); }
conninfo() { echo "host=127.0.0.1 port=$1 dbname=$2 user=postgres"; }
psql_on() {   # psql_on PORT DB SQL...
    "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U postgres -d "$2" "${@:3}"
}
shard_count() { find "$SCALE_DIR" -maxdepth 1 -name 'shard*' -type d 2>/dev/null | wc -l; }

# start_server DIR PORT: initdb on first use, then start (fsync off: a test rig).
start_server() {
    local dir=$1 port=$2
    if [[ ! -f $dir/PG_VERSION ]]; then
        as_pg "$PGBIN/initdb" -D "$dir" -U postgres --auth=trust --no-locale --encoding=UTF8 --no-sync >/dev/null
        cat >>"$dir/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = ''
shared_preload_libraries = 'credits'
fsync = off
full_page_writes = off
synchronous_commit = on
max_connections = 100
log_min_messages = warning
lc_messages = 'C'
timezone = 'UTC'
CONF
    fi
    start_dir "$dir"
}

# start_dir DIR: pg_ctl start; a port that a server stopped a moment ago
# (a crash, the previous run) may stay taken for a while: retry.
start_dir() {
    for _ in $(seq 1 40); do
        as_pg "$PGBIN/pg_ctl" -D "$1" -l "$1/server.log" -w -t 60 start >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    echo "could not start the server in $1: see $1/server.log" >&2
    return 1
}

stop_server() {   # stop_server DIR MODE
    [[ -f $1/postmaster.pid ]] || return 0
    as_pg "$PGBIN/pg_ctl" -D "$1" -m "$2" -w -t 30 stop >/dev/null 2>&1 || true
}

# new_shard K COUNT: a shard cluster with its credits database, shard K of COUNT.
new_shard() {
    local k=$1 count=$2 port
    port=$(shard_port "$k")
    start_server "$SCALE_DIR/shard$k" "$port"
    psql_on "$port" postgres -c "CREATE DATABASE credits" >/dev/null
    psql_on "$port" credits -c "CREATE EXTENSION credits" -c "CREATE EXTENSION dblink" \
        -c "SELECT credits.configure_shard($k, $count)" >/dev/null
}

partitions() {   # the OPTIONS list of server credits_shards for COUNT shards
    local i opts=()
    for ((i = 0; i < $1; i++)); do opts+=("p$i '$(conninfo "$(shard_port "$i")" credits)'"); done
    (IFS=,; echo "${opts[*]}")
}

up() {
    local n=$1 k
    if ((n < 1 || (n & (n - 1)) != 0)); then echo "N must be a power of 2" >&2; exit 2; fi
    down >/dev/null 2>&1 || true
    mkdir -p "$SCALE_DIR"
    if ((EUID == 0)); then chown "$OS_USER" "$SCALE_DIR"; fi
    for ((k = 0; k < n; k++)); do new_shard "$k" "$n"; done
    start_server "$SCALE_DIR/router" "$SCALE_PORT"
    psql_on "$SCALE_PORT" postgres -c "CREATE DATABASE credits_router" >/dev/null
    psql_on "$SCALE_PORT" credits_router >/dev/null <<SQL
CREATE EXTENSION credits_router CASCADE;
CREATE SERVER credits_shards FOREIGN DATA WRAPPER plproxy OPTIONS ($(partitions "$n"));
CREATE USER MAPPING FOR PUBLIC SERVER credits_shards OPTIONS (user 'postgres');
SQL
    conninfo "$SCALE_PORT" credits_router
}

# add K: shards n .. n+K-1 of the new count n+K (empty; the router is not changed).
add() {
    local more=$1 n k
    n=$(shard_count)
    for ((k = n; k < n + more; k++)); do
        new_shard "$k" $((n + more))
        conninfo "$(shard_port "$k")" credits
    done
}

down() {
    local d
    for d in "$SCALE_DIR"/router "$SCALE_DIR"/shard*; do
        [[ -d $d ]] && stop_server "$d" fast
    done
    rm -rf "$SCALE_DIR"
}

case ${1:-} in
    up) up "${2:?usage: cluster.sh up N}" ;;
    add) add "${2:?usage: cluster.sh add K}" ;;
    stop) stop_server "$SCALE_DIR/shard${2:?shard number}" immediate ;;
    start) start_dir "$SCALE_DIR/shard${2:?shard number}" ;;
    down) down ;;
    *) echo "usage: $0 up N | add K | stop K | start K | down" >&2; exit 2 ;;
esac
