#!/usr/bin/env bash
# bench/pooler.sh OUT_DIR MODE: credits and the floor behind pgbouncer, as an
# app with many users runs them.  Called by bench/run.sh (BENCH_ONLY matching
# "pooler") on its seeded database; appends to OUT_DIR/pooler.tsv:
#
#   mode sync phase impl rate clients tps p50_ms p95_ms p99_ms failed disk_ms
#
# 1. steady: pgbouncer (the Debian package) in transaction mode with
#    BENCH_POOLER_POOL (4) server connections, BENCH_POOLER_CLIENTS (1000)
#    pgbench clients, open loop (pgbench --rate) at each of
#    BENCH_POOLER_RATES, BENCH_POOLER_TIME seconds, the floor and credits
#    alternating, the whole series BENCH_POOLER_RUNS (5) times (the report
#    takes medians), for each synchronous_commit of BENCH_POOLER_SYNC
#    ("on off").  Latency is measured from each
#    transaction's scheduled start (pgbench's logs with --rate include the
#    wait for a free server connection).  Simple protocol: pgbouncer 1.18 does
#    not keep prepared statements across server connections.
# 2. fresh: pgbouncer restarted (new server backends, nothing warm), then
#    BENCH_POOLER_FRESH_RATE TPS at once for 5 s; percentiles of the first
#    second and of the whole run; BENCH_POOLER_RUNS times, alternating.
# 3. first call: pgbench -C straight to the server (a new backend for every
#    transaction), 2 clients: the latency of a backend's first call, next to
#    the same call in a warm backend.
#
# synchronous_commit is set on the database for each series (on first, as an
# app runs; fresh and first call run with the first).  Beside every run
# bench/disk_probe.c times an fdatasync every 10 ms on the cluster's file
# system; disk_ms is the longest.  With synchronous_commit on a commit waits
# for its WAL flush, so a disk that stalls for hundreds of ms (this machine's
# virtual disk does, at random) puts that stall into the p99 of whichever
# implementation is running; the report shows the medians of all runs and,
# with synchronous_commit on, judges the goal on the runs in which the disk
# did not stall.
# Needs PGBIN, PGHOST, PGPORT, PGUSER,
# PGDATABASE (seeded by run.sh), BENCH_USERS and, as root,
# BENCH_PG_OS_USER (pgbouncer refuses to run as root).
set -euo pipefail

OUT=${1:?usage: pooler.sh OUT_DIR MODE}
MODE=${2:?usage: pooler.sh OUT_DIR MODE}
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RATES=${BENCH_POOLER_RATES:-250 500 1000 1500 2000}
CLIENTS=${BENCH_POOLER_CLIENTS:-1000}
POOL=${BENCH_POOLER_POOL:-4}
SECS=${BENCH_POOLER_TIME:-8}
POOLER_RUNS=${BENCH_POOLER_RUNS:-5}
FRESH_RATE=${BENCH_POOLER_FRESH_RATE:-1000}
SYNCS=${BENCH_POOLER_SYNC:-on off}
SYNC=${SYNCS%% *}
PROBE_DIR=$(dirname "${BENCH_PGDATA:-$OUT/x}")
USERS=${BENCH_USERS:-100000}
TSV=$OUT/pooler.tsv
DIR=$OUT/pgbouncer_$MODE
PGB_PID=

psql_q() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }
as_server_user() {
    if ((EUID == 0)); then runuser -u "${BENCH_PG_OS_USER:-postgres}" -- "$@"; else "$@"; fi
}
port_free() { ! timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

mkdir -p "$DIR"
chmod 777 "$DIR"
PGB_PORT=6432
while ! port_free $PGB_PORT; do PGB_PORT=$((PGB_PORT + 1)); done

cat >"$DIR/pgbouncer.ini" <<EOF
[databases]
$PGDATABASE = host=$PGHOST port=$PGPORT dbname=$PGDATABASE user=$PGUSER

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = trust
auth_file = $DIR/users.txt
pool_mode = transaction
default_pool_size = $POOL
max_client_conn = $((CLIENTS + 100))
max_db_connections = $POOL
server_lifetime = 3600
ignore_startup_parameters = extra_float_digits,options
logfile = $DIR/pgbouncer.log
pidfile = $DIR/pgbouncer.pid
EOF
echo "\"$PGUSER\" \"\"" >"$DIR/users.txt"
chmod 644 "$DIR"/*

pgb_start() {
    as_server_user pgbouncer -d "$DIR/pgbouncer.ini" >/dev/null 2>&1
    for _ in $(seq 1 50); do
        [[ -s $DIR/pgbouncer.pid ]] && ! port_free $PGB_PORT && break
        sleep 0.1
    done
    PGB_PID=$(cat "$DIR/pgbouncer.pid")
}
pgb_stop() {
    if [[ -n $PGB_PID ]]; then
        kill "$PGB_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$PGB_PID" 2>/dev/null || break; sleep 0.1; done
        PGB_PID=
    fi
}
trap 'pgb_stop; psql_q -c "ALTER DATABASE $PGDATABASE RESET synchronous_commit" >/dev/null 2>&1 || true' EXIT

# Percentiles (ms) of the latencies (column 3, microseconds) of pgbench logs,
# optionally only of transactions that ended before epoch second $2.
percentiles() {   # percentiles LOG_PREFIX [UNTIL_EPOCH]
    cat "$1".* 2>/dev/null | awk -v until="${2:-0}" 'until == 0 || $5 < until {print $3}' | sort -n |
        awk '{v[NR] = $1}
             function p(q,  i) {i = int(NR * q); if (i < 1) i = 1; return v[i] / 1000}
             END {if (NR == 0) print "- - -"; else printf "%.2f %.2f %.2f\n", p(0.50), p(0.95), p(0.99)}'
}

# One open-loop run through the pooler, the disk probe beside it:
# run IMPL PHASE RATE SECONDS
run() {
    local impl=$1 phase=$2 rate=$3 secs=$4 id=pooler_${MODE}_${SYNC}_$2_$1_$3
    local jobs=2 rc=0 probe=
    rm -f "$OUT/log/$id".*
    ulimit -n 20000 2>/dev/null || true
    if [[ -x $OUT/disk_probe ]]; then
        "$OUT/disk_probe" "$PROBE_DIR/disk_probe.$$" $((secs + 2)) >"$OUT/$id.disk" 2>&1 &
        probe=$!
    fi
    "$PGBIN/pgbench" -n -M simple -h 127.0.0.1 -p "$PGB_PORT" -c "$CLIENTS" -j $jobs -T "$secs" \
        --rate="$rate" -D lo=1 -D hi="$USERS" -f "$BENCH/${impl}_consume.pgbench" \
        --log --log-prefix="$OUT/log/$id" >"$OUT/$id.out" 2>&1 || rc=$?
    local tps failed pct first disk=-
    if [[ -n $probe ]] && wait "$probe"; then disk=$(cat "$OUT/$id.disk"); fi
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$OUT/$id.out")
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$OUT/$id.out")
    ((rc == 0)) || failed="${failed:-0}+ERR"
    pct=$(percentiles "$OUT/log/$id")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$MODE" "$SYNC" "$phase" "$impl" "$rate" \
        "$CLIENTS" "${tps:-0}" $pct "${failed:-0}" "$disk" >>"$TSV"
    printf '   pooler %-9s sync=%-3s %-6s %-8s rate=%-5s tps=%-8s p50/p95/p99=%s ms failed=%s disk=%s ms\n' \
        "$MODE" "$SYNC" "$phase" "$impl" "$rate" "${tps:-?}" "${pct// //}" "${failed:-0}" "$disk"
    if [[ $phase == fresh ]]; then
        # the first second of transactions
        first=$(cat "$OUT/log/$id".* 2>/dev/null | awk 'NR == 1 || $5 < m {m = $5} END {print m + 0}')
        pct=$(percentiles "$OUT/log/$id" $((first + 1)))
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$MODE" "$SYNC" "fresh_first_second" \
            "$impl" "$rate" "$CLIENTS" "" $pct "" "$disk" >>"$TSV"
        printf '   pooler %-9s first second of it: p50/p95/p99=%s ms\n' "$MODE" "${pct// //}"
    fi
    rm -f "$OUT/log/$id".* "$OUT/$id.disk"
}

cc -O2 -o "$OUT/disk_probe" "$BENCH/disk_probe.c" 2>"$OUT/disk_probe.log" ||
    echo "   (bench/disk_probe.c did not build: no disk column; see $OUT/disk_probe.log)"
set_sync() {
    SYNC=$1
    psql_q -c "ALTER DATABASE $PGDATABASE SET synchronous_commit = $SYNC" >/dev/null
}

# 1. steady
for sync in $SYNCS; do
    set_sync "$sync"
    pgb_start
    run floor warmup "${RATES%% *}" 3 >/dev/null
    run credits warmup "${RATES%% *}" 3 >/dev/null
    sed -i '/\twarmup\t/d' "$TSV"
    n=0
    for ((r = 1; r <= POOLER_RUNS; r++)); do
        for rate in $RATES; do
            if ((n % 2 == 0)); then order="floor credits"; else order="credits floor"; fi
            for impl in $order; do run "$impl" steady "$rate" "$SECS"; done
            n=$((n + 1))
        done
    done
    pgb_stop
done
set_sync "${SYNCS%% *}"

# 2. fresh server connections, each implementation after its own restart,
# BENCH_POOLER_RUNS times (at least once)
for ((r = 1; r <= (POOLER_RUNS > 1 ? POOLER_RUNS : 1); r++)); do
    if ((r % 2 == 1)); then order="floor credits"; else order="credits floor"; fi
    for impl in $order; do
        pgb_start
        run "$impl" fresh "$FRESH_RATE" 5
        pgb_stop
    done
done

# 3. a backend's first call, straight to the server
for impl in floor credits; do
    for how in first warm; do
        id=firstcall_${MODE}_${impl}_$how
        conn=
        [[ $how == first ]] && conn=-C
        "$PGBIN/pgbench" -n -M simple $conn -c 2 -j 2 -T 5 -D lo=1 -D hi="$USERS" \
            -f "$BENCH/${impl}_consume.pgbench" >"$OUT/$id.out" 2>&1 || true
        lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' "$OUT/$id.out")
        ctime=$(sed -n 's/^average connection time = \([0-9.]*\) ms/\1/p' "$OUT/$id.out")
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$MODE" "$SYNC" "call_$how" "$impl" "" 2 \
            "" "${lat:-}" "${ctime:-}" "" "" "" >>"$TSV"
        printf '   backend %-9s %-7s %-6s call latency %s ms (connection %s ms)\n' \
            "$MODE" "$impl" "$how" "${lat:-?}" "${ctime:--}"
    done
done
