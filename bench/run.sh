#!/usr/bin/env bash
# bench/run.sh: the credits benchmark against its two baselines.
#
# `make bench` runs it in a throwaway durable cluster (fsync on,
# shared_buffers a quarter of the memory up to 6 GB) with PGHOST/PGPORT/PGUSER
# (a superuser) and PGBIN set, and BENCH_PGDATA/BENCH_PGLOG/BENCH_PG_OS_USER
# so that it can restart the server; it can also be pointed at any scratch
# cluster with credits installed (then it measures that server as it is).
#
# Modes (BENCH_MODES): every case runs twice, first "installed" (no
# shared_preload_libraries, no setting changed: CREATE EXTENSION and go), then
# "preloaded" (shared_preload_libraries = 'credits'); the server is restarted
# in between (pg_ctl restart -o) and the data read back into shared buffers
# (pg_prewarm).  Every mode runs its own floor, so each ratio compares runs
# made seconds apart in the same mode.
#
# What it does, in one database (default credits_bench, recreated):
#   1. seeds users with history in credits' tables and in the baselines'
#      (bench/seed.sql), checks credits.reconcile() on a sample of them;
#   2. runs pgbench cases, interleaving credits and the baselines (a) floor and
#      (b) plpgsql for every configuration, so the ratios compare runs made
#      minutes apart on the same server, whatever else it is doing;
#   3. checks that reads and consume cost the same for a user with 10 entries
#      today and one with BENCH_DEEP_TODAY, and that a backend's memory does
#      not grow over BENCH_MEMORY_CALLS calls;
#   4. prints the table (bench/report.sh) and keeps everything in BENCH_OUT.
# Baselines: (a) floor and (b) plpgsql (bench/baselines.sql), and for consume
# pgledger (bench/pgledger: the public PL/pgSQL ledger, its transfer).
#
# Settings (environment):
#   BENCH_TIME=8          seconds per pgbench run of the consume cases
#   BENCH_TIME_SHORT=5    seconds per run of the other cases
#   BENCH_TIME_O1=3       seconds per run of the O(1) checks (3 alternating pairs)
#   BENCH_RUNS=1          repeat the whole matrix; the report shows medians
#   BENCH_FULL=0          1: every case at clients 1, 8, 32 x synchronous_commit off, on
#                         (default: see cases() below)
#   BENCH_USERS=100000    users; BENCH_HISTORY=30 past entries each, except every
#                         BENCH_VETERAN_EVERY=100th user with BENCH_VETERAN_HISTORY=500
#   BENCH_HOT_USERS=10    hot users, with BENCH_HOT_TODAY=2000 entries today already
#   BENCH_DEEP_TODAY=100000  entries today of the "deep" user of the O(1) check
#   BENCH_MEMORY_CALLS=200000  consume calls in one backend for the memory check
#   BENCH_DB=credits_bench, BENCH_OUT=<new temp dir>, BENCH_REUSE=1 keeps a seeded db
#   BENCH_ONLY=regex      run only the cases whose name matches (e.g. 'consume_low|o1|memory')
#   BENCH_SETUP_SQL=...   extra SQL right after CREATE EXTENSION (local experiments)
#   BENCH_MODES="installed preloaded"  (needs BENCH_PGDATA to restart; without it,
#                         the server's own mode only); O(1) and memory run in the last
#   BENCH_POOLER_MODES=installed  modes that also run bench/pooler.sh (pgbouncer,
#                         1000 clients, open loop; its header lists its settings)
#   BENCH_ROUTER=1        0: skip bench/router.sh (the PL/Proxy hop: a router and a
#                         shard as two more clusters, direct vs routed calls)
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PGBIN=${PGBIN:-$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)}
DB=${BENCH_DB:-credits_bench}
T=${BENCH_TIME:-8}
T_SHORT=${BENCH_TIME_SHORT:-5}
T_O1=${BENCH_TIME_O1:-3}
RUNS=${BENCH_RUNS:-1}
FULL=${BENCH_FULL:-0}
USERS=${BENCH_USERS:-100000}
HISTORY=${BENCH_HISTORY:-30}
VETERAN_EVERY=${BENCH_VETERAN_EVERY:-100}
VETERAN_HISTORY=${BENCH_VETERAN_HISTORY:-500}
HOT=${BENCH_HOT_USERS:-10}
HOT_TODAY=${BENCH_HOT_TODAY:-2000}
DEEP_TODAY=${BENCH_DEEP_TODAY:-100000}
MEM_CALLS=${BENCH_MEMORY_CALLS:-200000}
REUSE=${BENCH_REUSE:-0}
ONLY=${BENCH_ONLY:-.}
MODES=${BENCH_MODES:-installed preloaded}
OUT=${BENCH_OUT:-$(mktemp -d /tmp/credits-bench.XXXXXX)}
REPLAY_USERS=$((USERS < 1000 ? USERS : 1000))
SHALLOW=$((USERS + 1))
DEEP=$((USERS + 2))
export PGDATABASE=$DB PGAPPNAME=credits-bench PGOPTIONS="-c client_min_messages=warning"

mkdir -p "$OUT/log"
chmod 777 "$OUT" "$OUT/log" 2>/dev/null || true
RESULTS=$OUT/results.tsv
START=$(date +%s)

psql_q() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }
psql_at() { "$PGBIN/psql" -X -A -t -q -v ON_ERROR_STOP=1 "$@"; }
say() { printf '== [%4ds] %s\n' $(($(date +%s) - START)) "$*"; }

if ((HISTORY < 6 || (VETERAN_EVERY > 0 && VETERAN_HISTORY < 6))); then
    echo "BENCH_HISTORY must be at least 6 (every user has spent its signup bonus)" >&2
    exit 2
fi

# ---------------------------------------------------------------------------
# 1. database and data
# ---------------------------------------------------------------------------
seed() {
    local vars=(-v users="$USERS" -v history="$HISTORY" -v hot_users="$HOT"
                -v hot_today="$HOT_TODAY" -v deep_today="$DEEP_TODAY"
                -v veteran_every="$VETERAN_EVERY" -v veteran_history="$VETERAN_HISTORY")
    say "seeding $USERS users: $HISTORY past entries each, every ${VETERAN_EVERY}th $VETERAN_HISTORY; $HOT hot users with $HOT_TODAY today; one with $DEEP_TODAY today"
    "$PGBIN/dropdb" --if-exists "$DB"
    "$PGBIN/createdb" "$DB"
    psql_q -c "CREATE EXTENSION credits" -c "CREATE EXTENSION pg_prewarm" \
        -c "SET client_min_messages = warning" -f "$BENCH/baselines.sql"
    # pgledger as upstream installs it (justfile dbload), then the users' accounts
    psql_q -1 -f "$BENCH/pgledger/ulid-to-uuid.sql" -f "$BENCH/pgledger/uuid-to-ulid.sql" \
        -f "$BENCH/pgledger/pgledger.sql" >/dev/null
    if [[ -n ${BENCH_SETUP_SQL:-} ]]; then psql_q -c "$BENCH_SETUP_SQL"; fi
    psql_q "${vars[@]}" -v part=setup -f "$BENCH/seed.sql" >/dev/null
    # the three ledgers load in parallel sessions
    local pids=() part
    for part in credits floor plpgsql; do
        psql_q "${vars[@]}" -v part=$part -f "$BENCH/seed.sql" >"$OUT/seed_$part.log" 2>&1 &
        pids+=($!)
    done
    psql_q "${vars[@]}" -f "$BENCH/pgledger/seed.sql" >"$OUT/seed_pgledger.log" 2>&1 &
    pids+=($!)
    local failed=0
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    if ((failed)); then
        cat "$OUT"/seed_*.log >&2
        echo "!! seeding failed" >&2
        exit 1
    fi

    # Idempotency keys to replay, made through each implementation's own path.
    psql_q -v n="$REPLAY_USERS" <<'SQL'
SET synchronous_commit = off;
SELECT count(credits.credits_consume(bench.uid(n), 'image', 1, 'replay-' || n))
  FROM generate_series(1, :n) n \g /dev/null
SELECT count(bench.plpgsql_consume(bench.uid(n), 'image', 1, 'replay-' || n))
  FROM generate_series(1, :n) n \g /dev/null
WITH acct AS (
    UPDATE bench.floor_accounts a
       SET balance = a.balance - 1, day_count = a.day_count + 1, updated_at = now()
     WHERE a.user_id IN (SELECT bench.uid(n) FROM generate_series(1, :n) n)
    RETURNING a.user_id, a.balance
)
INSERT INTO bench.floor_ledger (user_id, amount, balance_after, operation, units, idempotency_key, metadata)
SELECT acct.user_id, -1, acct.balance, 'image', 1,
       'replay-' || ltrim(right(acct.user_id::text, 12), '0'), '{}'
  FROM acct;
-- where each ledger stood after seeding (for the ledger sizes reached)
CREATE TABLE bench.seed_marks AS
SELECT (SELECT max(id) FROM credits.ledger) AS credits_id,
       (SELECT max(id) FROM bench.floor_ledger) AS floor_id,
       (SELECT max(id) FROM bench.plpgsql_ledger) AS plpgsql_id;
SQL

    say "checking credits.reconcile() on a sample of seeded users"
    # One call per user (a constant argument lets the planner use the user's
    # indexes): a hot user, regular ones, a veteran, the shallow and deep users.
    local bad=0 n rows
    for n in 1 $((HOT + 1)) $((USERS / 2)) "$USERS" $((VETERAN_EVERY > 0 ? VETERAN_EVERY * 3 : 2)) \
             "$SHALLOW" "$DEEP"; do
        rows=$(psql_at -c "SELECT count(*) FROM credits.reconcile(bench.uid($n))")
        bad=$((bad + rows))
    done
    if [[ $bad != 0 ]]; then
        echo "!! credits.reconcile() disagrees on seeded users ($bad rows)" >&2
        exit 1
    fi
    psql_q -c "CHECKPOINT"
}

if [[ $REUSE == 1 ]] && psql_at -c "SELECT 1 FROM bench.seed_marks" >/dev/null 2>&1; then
    say "reusing the seeded database $DB"
else
    seed
fi

HAS_RESERVE=$(psql_at -c "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                          WHERE n.nspname = 'credits' AND p.proname IN ('reserve', 'capture')")

# ---------------------------------------------------------------------------
# 2. the cases
# ---------------------------------------------------------------------------
# One pgbench run: impl script name lo hi clients sync seconds
# (bench/<impl>_<script>.pgbench; users lo..hi).  Appends
# "name clients sync impl run tps avg_ms p99_ms failed" to results.tsv.
RUN_NO=1
bench_one() {
    local impl=$1 script=$BENCH/${1%_heard}_$2.pgbench name=$3 lo=$4 hi=$5 clients=$6 sync=$7 secs=$8
    local opts="-c synchronous_commit=$sync"
    local id=${MODE}_${name}_c${clients}_${sync}_${impl}_r${RUN_NO}
    local jobs=$((clients < 2 ? clients : 2))
    local rc=0 listener=
    rm -f "$OUT/log/$id".*
    # credits_heard: credits with credits.notify = on (it is off by default)
    # while a session has run LISTEN credits, so that every commit sends its
    # NOTIFY (preloaded, none is sent without a listener)
    if [[ $impl == *_heard ]]; then
        opts="$opts -c credits.notify=on"
        "$PGBIN/psql" -X -q -c "LISTEN credits" -c "SELECT pg_sleep($secs + 5)" >/dev/null 2>&1 &
        listener=$!
        sleep 1
    fi
    PGOPTIONS="$opts" \
        "$PGBIN/pgbench" -n -M prepared -c "$clients" -j "$jobs" -T "$secs" \
        -D lo="$lo" -D hi="$hi" -f "$script" \
        --log --log-prefix="$OUT/log/$id" >"$OUT/$id.out" 2>&1 || rc=$?
    if [[ -n $listener ]]; then
        kill "$listener" 2>/dev/null || true
        wait "$listener" 2>/dev/null || true
    fi
    local tps avg p99 failed
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$OUT/$id.out")
    avg=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' "$OUT/$id.out")
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$OUT/$id.out")
    if ((rc != 0)) || [[ -z $tps ]] || grep -q -i 'error\|abort' "$OUT/$id.out"; then
        failed="${failed:-0}+ERR"
        printf '   !! %s: pgbench exit %s, see %s\n' "$id" "$rc" "$OUT/$id.out"
        grep -i -m3 'error\|abort' "$OUT/$id.out" | sed 's/^/      /' || true
    fi
    # p99 from the per-transaction logs (column 3: latency in microseconds)
    p99=$(cat "$OUT/log/$id".* 2>/dev/null | awk '{print $3}' | sort -n |
          awk '{v[NR] = $1} END {if (NR == 0) print ""; else {i = int(NR * 0.99); if (i < 1) i = 1; printf "%.3f", v[i] / 1000}}')
    rm -f "$OUT/log/$id".*
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$MODE/$name" "$clients" "$sync" "$impl" "$RUN_NO" \
        "${tps:-0}" "${avg:-}" "${p99:-}" "${failed:-0}" >>"$RESULTS"
    printf '   %-9s %-16s c=%-2s sync=%-3s %-13s tps=%-9s avg=%-7s p99=%-7s ms failed=%s\n' \
        "$MODE" "$name" "$clients" "$sync" "$impl" "${tps:-?}" "${avg:-?}" "${p99:-?}" "${failed:-0}"
}

# Runs one configuration for every implementation, rotating who goes first.
ROT=0
bench_config() {
    local case=$1 lo=$2 hi=$3 clients=$4 sync=$5 secs=$6 impls=$7
    local script=${case%_low}
    script=${script%_hot}
    [[ $case =~ $ONLY ]] || return 0
    local list=($impls) n i
    n=${#list[@]}
    for ((i = 0; i < n; i++)); do
        bench_one "${list[$(((i + ROT) % n))]}" "$script" "$case" "$lo" "$hi" "$clients" "$sync" "$secs"
    done
    ROT=$((ROT + 1))
}

# The matrix.  Default: consume (the headline) at clients 1, 8, 32 with
# synchronous_commit off and 8 (low) / 32 (hot) with it on; the other cases at
# 8 clients, sync off.  BENCH_FULL=1: everything at 1, 8, 32 x off, on.
# credits runs with its defaults and nobody listening (preloaded, it sends no
# NOTIFY then); credits_heard, with a LISTEN credits session connected (a
# NOTIFY at every commit), joins the configurations the targets are read from
# and the sync-on ones.
ALL="floor plpgsql credits"
HEAD="floor plpgsql credits credits_heard pgledger"
CONSUME="floor plpgsql credits pgledger"
cases() {
    local c s
    if [[ $FULL == 1 ]]; then
        for s in off on; do
            for c in 1 8 32; do
                bench_config consume_low 1 "$USERS" $c $s "$T" "$HEAD"
                bench_config consume_hot 1 "$HOT" $c $s "$T" "$HEAD"
                bench_config grant 1 "$USERS" $c $s "$T_SHORT" "$ALL"
                bench_config reads 1 "$USERS" $c $s "$T_SHORT" "$ALL"
                bench_config replay 1 "$REPLAY_USERS" $c $s "$T_SHORT" "$ALL"
                if [[ $HAS_RESERVE == 2 ]]; then
                    bench_config reserve_capture 1 "$USERS" $c $s "$T_SHORT" credits
                fi
            done
        done
    else
        bench_config consume_low 1 "$USERS" 1 off "$T" "$ALL"
        bench_config consume_low 1 "$USERS" 8 off "$T" "$HEAD"
        bench_config consume_low 1 "$USERS" 32 off "$T" "$ALL"
        bench_config consume_hot 1 "$HOT" 8 off "$T" "$CONSUME"
        bench_config consume_hot 1 "$HOT" 32 off "$T" "$HEAD"
        bench_config consume_low 1 "$USERS" 8 on "$T" "$HEAD"
        bench_config consume_hot 1 "$HOT" 32 on "$T" "$HEAD"
        bench_config grant 1 "$USERS" 8 off "$T_SHORT" "$ALL"
        bench_config reads 1 "$USERS" 8 off "$T_SHORT" "$ALL"
        bench_config replay 1 "$REPLAY_USERS" 8 off "$T_SHORT" "$ALL"
        if [[ $HAS_RESERVE == 2 ]]; then
            bench_config reserve_capture 1 "$USERS" 8 off "$T_SHORT" credits
        fi
    fi
}

# The server's mode: "preloaded" when credits is in shared_preload_libraries.
current_mode() {
    if [[ ,$(psql_at -c "SHOW shared_preload_libraries" | tr -d ' '), == *,credits,* ]]; then
        echo preloaded
    else
        echo installed
    fi
}

# Restarts the server in mode $1 and reads the bench data back into shared
# buffers (a restart empties them; the runs measure CPU, not the disk).
switch_mode() {
    local want=$1 preload=
    [[ $want == preloaded ]] && preload=credits
    [[ $(current_mode) == "$want" ]] && return 0
    # on the command line (ALTER SYSTEM ... = '' would name one library "")
    local cmd=("$PGBIN/pg_ctl" -D "$BENCH_PGDATA" -l "$BENCH_PGLOG" -m fast -w -t 300 restart
               -o "-c shared_preload_libraries='$preload'")
    if ((EUID == 0)); then
        (cd "$BENCH_PGDATA" && runuser -u "$BENCH_PG_OS_USER" -- "${cmd[@]}") >"$OUT/restart.log" 2>&1 9>&- || true
    else
        "${cmd[@]}" >"$OUT/restart.log" 2>&1 9>&- || true
    fi
    if [[ $(current_mode 2>/dev/null) != "$want" ]]; then
        echo "!! could not restart the server $want" >&2
        tail -n 20 "$OUT/restart.log" "$BENCH_PGLOG" >&2
        exit 1
    fi
    say "restarted $want; reading the tables back into shared buffers"
    psql_q -c "SELECT sum(pg_prewarm(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname IN ('credits', 'bench', 'public') AND c.relkind IN ('r', 'i')" >/dev/null
}

if [[ -z ${BENCH_PGDATA:-} ]]; then
    MODES=$(current_mode)
    echo "   (BENCH_PGDATA not set: measuring the server as it runs, $MODES)"
fi
: >"$RESULTS"
for MODE in $MODES; do
    switch_mode "$MODE"
    for ((RUN_NO = 1; RUN_NO <= RUNS; RUN_NO++)); do
        say "pgbench cases, $MODE, run $RUN_NO of $RUNS ($(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg))"
        cases
    done
    # the pooler benchmark (bench/pooler.sh), as installed by default
    if [[ pooler =~ $ONLY && " ${BENCH_POOLER_MODES:-installed} " == *" $MODE "* ]]; then
        say "pgbouncer, transaction mode, $MODE"
        PGBIN=$PGBIN BENCH_USERS=$USERS bash "$BENCH/pooler.sh" "$OUT" "$MODE" ||
            echo "   !! bench/pooler.sh failed (exit $?)"
    fi
done
if [[ $HAS_RESERVE != 2 ]]; then
    echo "   (reserve_capture skipped: credits.reserve/credits.capture do not exist in this build)"
fi

# ---------------------------------------------------------------------------
# 3. O(1) and memory checks
# ---------------------------------------------------------------------------
O1=$OUT/o1.tsv
: >"$O1"
if [[ o1 =~ $ONLY ]]; then
    say "O(1): one client, user with 10 entries today vs one with $DEEP_TODAY today"
    # Alternating short runs (credits: 3 pairs, the report takes medians;
    # plpgsql, the contrast: 1 pair), so that a burst of other load does not
    # land on one side only.
    for impl in credits plpgsql; do
        reps=3
        [[ $impl == plpgsql ]] && reps=1
        for ((RUN_NO = 1; RUN_NO <= reps; RUN_NO++)); do
            for what in reads consume; do
                order="shallow deep"
                ((RUN_NO % 2 == 0)) && order="deep shallow"
                for who in $order; do
                    u=$SHALLOW
                    [[ $who == deep ]] && u=$DEEP
                    bench_one $impl $what "o1_${what}_$who" $u $u 1 off "$T_O1"
                done
            done
        done
    done
fi

MEM=$OUT/memory.txt
: >"$MEM"
# The calls run in chunks of MEM_CHUNK, one CALL each: a PL/pgSQL procedure
# that COMMITs in a loop keeps a few bytes per iteration until the CALL ends
# (the floor's statement in the same loop grows alike), which would hide what
# a credits call leaves behind.
MEM_CHUNK=10000
mem_calls_script() {
    local chunks=$(((MEM_CALLS + MEM_CHUNK - 1) / MEM_CHUNK)) k
    cat <<'SQL'
SET synchronous_commit = off;
CREATE TEMP TABLE mem (at text, rss_kb bigint, anon_kb bigint, contexts_bytes bigint);
CREATE FUNCTION pg_temp.mem_point(label text) RETURNS void LANGUAGE sql AS $$
    INSERT INTO mem SELECT label,
        substring(pg_read_file('/proc/self/status') from 'VmRSS:\s*(\d+)')::bigint,
        substring(pg_read_file('/proc/self/status') from 'RssAnon:\s*(\d+)')::bigint,
        (SELECT sum(total_bytes) FROM pg_backend_memory_contexts)
$$;
SELECT set_config('bench.users', :'users', false) \g /dev/null
-- n consume calls, one transaction each, with a fresh idempotency key each
CREATE PROCEDURE pg_temp.mem_calls(n int, tag text) LANGUAGE plpgsql AS $$
DECLARE
    users int := current_setting('bench.users')::int;
BEGIN
    FOR i IN 1..n LOOP
        PERFORM credits.credits_consume(bench.uid(1 + (i::bigint * 7919) % users), 'image', 1,
                                        'mem-' || tag || '-' || i);
        COMMIT;
    END LOOP;
END $$;
-- warm up the same path first: plans prepared, caches filled
CALL pg_temp.mem_calls(5000, 'warm');
SELECT pg_temp.mem_point('before');
SQL
    for ((k = 1; k <= chunks; k++)); do
        echo "CALL pg_temp.mem_calls($MEM_CHUNK, 'c$k');"
        ((k == chunks / 2)) && echo "SELECT pg_temp.mem_point('half');"
    done
    cat <<'SQL'
SELECT pg_temp.mem_point('after');
SELECT format('calls=%s rss_before_kb=%s rss_after_kb=%s anon_before_kb=%s anon_half_kb=%s anon_after_kb=%s contexts_before=%s contexts_half=%s contexts_after=%s',
              :'calls', b.rss_kb, a.rss_kb, b.anon_kb, h.anon_kb, a.anon_kb,
              b.contexts_bytes, h.contexts_bytes, a.contexts_bytes)
  FROM mem b, mem h, mem a WHERE b.at = 'before' AND h.at = 'half' AND a.at = 'after';
SQL
}
if [[ memory =~ $ONLY ]]; then
    MEM_CALLS=$(((MEM_CALLS + MEM_CHUNK - 1) / MEM_CHUNK * MEM_CHUNK))
    ((MEM_CALLS >= 2 * MEM_CHUNK)) || MEM_CALLS=$((2 * MEM_CHUNK))
    say "memory: $MEM_CALLS consume calls (one transaction each) in one backend"
    mem_calls_script | psql_at -v calls="$MEM_CALLS" -v users="$USERS" >"$MEM"
fi

# ---------------------------------------------------------------------------
# 4. ledger sizes reached, and the report
# ---------------------------------------------------------------------------
SIZES=$OUT/ledger_sizes.tsv
psql_at -F $'\t' -v users="$USERS" -v hot="$HOT" -v history="$HISTORY" >"$SIZES" <<'SQL'
WITH m AS (SELECT * FROM bench.seed_marks),
added AS (
    SELECT 'credits' AS impl, user_id, count(*) AS n
      FROM credits.ledger, m WHERE id > m.credits_id GROUP BY user_id
    UNION ALL
    SELECT 'floor', user_id, count(*) FROM bench.floor_ledger, m WHERE id > m.floor_id GROUP BY user_id
    UNION ALL
    SELECT 'plpgsql', user_id, count(*) FROM bench.plpgsql_ledger, m WHERE id > m.plpgsql_id GROUP BY user_id
),
classed AS (
    SELECT a.impl, a.n, s.n AS user_no, 2 + s.n_hist + s.n_today AS seeded, s.n_today,
           CASE WHEN s.n <= :hot THEN 'hot'
                WHEN s.n > :users THEN 'o1'
                WHEN s.n_hist > :history THEN 'veteran'
                ELSE 'low' END AS class
      FROM added a JOIN bench.seed_users s ON s.user_id = a.user_id
)
SELECT impl, class, count(*) AS users_touched,
       round(avg(seeded + n)) AS avg_entries, max(seeded + n) AS max_entries,
       max(n_today + n) AS max_today
  FROM classed
 WHERE class <> 'o1'
 GROUP BY impl, class
 ORDER BY class, impl;
SQL

{
    echo "# credits bench: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, PostgreSQL $("$PGBIN/postgres" -V | awk '{print $3}')"
    echo "# users=$USERS history=$HISTORY (every ${VETERAN_EVERY}th: $VETERAN_HISTORY) hot_users=$HOT hot_today=$HOT_TODAY deep_today=$DEEP_TODAY"
    echo "# time=${T}s short=${T_SHORT}s runs=$RUNS full=$FULL load_average_end=$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/meta.txt"

bash "$BENCH/report.sh" "$OUT" | tee "$OUT/report.md"
if [[ ${BENCH_ROUTER:-1} == 1 && router =~ $ONLY ]]; then
    say "router: the PL/Proxy hop, direct vs routed calls (bench/router.sh)"
    echo
    BENCH_OUT=$OUT PGBIN=$PGBIN bash "$BENCH/router.sh" | tee -a "$OUT/report.md"
fi
say "done; raw results in $OUT"
