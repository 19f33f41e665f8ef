# shellcheck shell=bash
# Helpers of the operations tests (test/ops/*.sh, test/load/crash.sh):
# TAP output, psql against a database, digests of every table of the
# extension, and throwaway extra clusters.  Sourced.
#
# Needs the harness environment: PGBIN, PGHOST (the harness's private
# directory, owned by the server's OS user), PGPORT, PGUSER, PG_OS_USER.

OPS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
N=0
EXTRA_CLUSTERS=()

ok() {   # ok STATUS(0 = pass) DESCRIPTION
    N=$((N + 1))
    if [[ $1 == 0 ]]; then echo "ok $N - $2"; else echo "not ok $N - $2"; fi
}
is() {   # is GOT EXPECTED DESCRIPTION
    if [[ $1 == "$2" ]]; then ok 0 "$3"; else ok 1 "$3"; echo "#   got:      $1"; echo "#   expected: $2"; fi
}
as_server_user() {
    if ((EUID == 0)); then runuser -u "$PG_OS_USER" -- "$@"; else "$@"; fi
}
# q DB [psql args...]: unaligned, tuples only, stop on error.
q() {
    local db=$1
    shift
    "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -d "$db" "$@"
}

# digest DB [psql args...]: one line per table of the extension (rows and a
# hash of them, in a collation-independent order) and per sequence (its
# state).  The unlogged untouched_seeds marks are not data and are skipped.
digest() {
    local db=$1
    shift
    q "$db" "$@" <<'SQL'
SELECT format($f$SELECT 'table ' || %L || ' ' || count(*) || ' ' || coalesce(md5(string_agg(t::text, E'\n' ORDER BY t::text COLLATE "C")), '-') FROM %s t$f$,
              c.oid::regclass, c.oid::regclass)
  FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
 WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_extension'::regclass
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'credits')
   AND d.deptype = 'e' AND c.relkind = 'r' AND c.relpersistence = 'p'
UNION ALL
SELECT format($f$SELECT 'sequence ' || %L || ' ' || last_value || ' ' || is_called FROM %s$f$, c.oid::regclass, c.oid::regclass)
  FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
 WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_extension'::regclass
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'credits')
   AND d.deptype = 'e' AND c.relkind = 'S'
ORDER BY 1
\gexec
SQL
}

free_port() {   # free_port FROM: the first port >= FROM nobody listens on
    local port=$1
    while timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; do port=$((port + 1)); done
    echo "$port"
}

# cluster_conf DIR PORT: settings of an extra cluster (like the harness's).
cluster_conf() {
    cat >>"$1/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $2
unix_socket_directories = '$PGHOST'
fsync = off
synchronous_commit = off
lc_messages = 'C'
timezone = 'UTC'
wal_level = logical
shared_preload_libraries = 'credits'
CONF
}

# extra_cluster_start DIR PORT: start a cluster in DIR (initdb'd or restored).
extra_cluster_start() {
    EXTRA_CLUSTERS+=("$1")
    as_server_user "$PGBIN/pg_ctl" -D "$1" -l "$1.log" -w -t 60 start >/dev/null 2>&1 9>&-
}
# extra_cluster_new NAME: initdb + start in $PGHOST/NAME; sets EXTRA_PORT.
extra_cluster_new() {
    local dir=$PGHOST/$1
    rm -rf "$dir"
    as_server_user "$PGBIN/initdb" -D "$dir" -U postgres --auth=trust --no-locale \
        --encoding=UTF8 --no-sync >/dev/null 2>&1 || return 1
    EXTRA_PORT=$(free_port $((PGPORT + 100)))
    cluster_conf "$dir" "$EXTRA_PORT"
    extra_cluster_start "$dir"
}
extra_clusters_stop() {
    local dir
    for dir in "${EXTRA_CLUSTERS[@]}"; do
        if [[ -f $dir/postmaster.pid ]]; then
            as_server_user "$PGBIN/pg_ctl" -D "$dir" -m immediate -w -t 30 stop >/dev/null 2>&1
        fi
        rm -rf "$dir"
    done
    EXTRA_CLUSTERS=()
}
