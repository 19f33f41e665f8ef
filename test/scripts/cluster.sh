# shellcheck shell=bash
# Throwaway PostgreSQL cluster (of the major run.sh picked) for the harness.  Sourced by run.sh.
#
#   cluster_start test|demo|bench   initdb + start in $WORK/data, export PG* vars
#   cluster_stop                    stop it (idempotent; called from the EXIT trap)
#
# Needs: PGBIN, WORK (a private temp dir the caller removes), PG_OS_USER.

PG_FIRST_PORT=${CREDITS_PG_PORT:-54329}

# Postgres refuses to run as root: the server runs as the `postgres` OS user
# (created by the postgresql-NN package) or, failing that, a system user of ours.
pick_pg_os_user() {
    if ((EUID != 0)); then
        PG_OS_USER=$(id -un)
    elif id -u postgres >/dev/null 2>&1; then
        PG_OS_USER=postgres
    else
        id -u credits_pg >/dev/null 2>&1 ||
            useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin credits_pg
        PG_OS_USER=credits_pg
    fi
}

# Run a server-side binary as PG_OS_USER, from a directory that user can read.
as_pg() {
    if ((EUID == 0)); then
        (cd "$WORK" && runuser -u "$PG_OS_USER" -- "$@")
    else
        (cd "$WORK" && "$@")
    fi
}

# True when something already accepts TCP connections on 127.0.0.1:$1.
port_in_use() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

bench_shared_buffers_mb() {
    local mem_mb
    mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    local mb=$((mem_mb / 4))
    ((mb > 6144)) && mb=6144
    ((mb < 256)) && mb=256
    echo "$mb"
}

write_cluster_conf() {
    local mode=$1 port=$2
    {
        echo "# --- credits harness ($mode) ---"
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $port"
        echo "unix_socket_directories = '$WORK'"
        echo "log_min_messages = warning"
        echo "lc_messages = 'C'"
        echo "timezone = 'UTC'"
        # As recommended in production: denial counters in shared memory
        # (credits.stats).  The demo runs without it, as a first install does;
        # test/load/stress.sh also runs a phase without it.
        if [[ $mode != demo ]]; then echo "shared_preload_libraries = 'credits'"; fi
        if [[ $mode == bench ]]; then
            # Durable like production; synchronous_commit is left to bench/.
            # The seeded tables (~4 GB for the three implementations) stay in
            # shared buffers, so the runs measure CPU, not a page cache that
            # some virtual machines keep small: a quarter of the memory, at
            # most 6 GB, at least 256 MB.
            echo "fsync = on"
            echo "shared_buffers = $(bench_shared_buffers_mb)MB"
            echo "max_connections = 200"
        else
            echo "fsync = off"
            echo "full_page_writes = off"
            echo "synchronous_commit = off"
        fi
    } >>"$WORK/data/postgresql.conf"   # appended: later settings win, owner unchanged
}

cluster_start() {
    local mode=$1
    pick_pg_os_user
    chown "$PG_OS_USER" "$WORK"
    chmod 700 "$WORK"

    if ! as_pg "$PGBIN/initdb" -D "$WORK/data" -U postgres --auth=trust \
            --no-locale --encoding=UTF8 --no-sync >"$WORK/initdb.log" 2>&1; then
        echo "initdb failed:" >&2
        cat "$WORK/initdb.log" >&2
        return 1
    fi

    # Probe upward for a free port; retry on a bind race with another program.
    local port=$PG_FIRST_PORT
    for _ in $(seq 1 20); do
        while port_in_use "$port"; do port=$((port + 1)); done
        write_cluster_conf "$mode" "$port"
        rm -f "$WORK/postgres.log"
        # 9>&- : the postmaster must not inherit the flock descriptor, or a
        # stray server would hold the install lock forever.
        if as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/postgres.log" -w -t 60 start \
                >"$WORK/pg_ctl.log" 2>&1 9>&-; then
            export PGHOST=$WORK PGPORT=$port PGUSER=postgres PGDATABASE=postgres
            return 0
        fi
        if grep -q "could not bind\|could not create any TCP/IP sockets" "$WORK/postgres.log" 2>/dev/null; then
            port=$((port + 1))
            continue
        fi
        break
    done
    echo "could not start the test cluster:" >&2
    cat "$WORK/pg_ctl.log" "$WORK/postgres.log" >&2 2>/dev/null || true
    return 1
}

cluster_stop() {
    [[ -n ${WORK:-} && -f $WORK/data/postmaster.pid ]] || return 0
    as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
        as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate -w -t 30 stop >/dev/null 2>&1 ||
        {
            # Last resort: the postmaster pid is the first line of postmaster.pid.
            local pid
            pid=$(head -n 1 "$WORK/data/postmaster.pid" 2>/dev/null || true)
            if [[ $pid =~ ^[0-9]+$ ]]; then kill -KILL "$pid" 2>/dev/null; fi
        }
    return 0
}
