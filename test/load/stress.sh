#!/usr/bin/env bash
# Load and fault test, printed as TAP.  Eight clients hammer twenty accounts
# with consumes (random units, idempotency keys drawn from a small pool, so
# replays and key conflicts are frequent), grants, balance and daily-limit
# exhaustion; then the same load is cut by an immediate shutdown (a crash)
# and the server recovers.  Without preloading it also checks that, as
# installed, no NOTIFY credits is sent (credits.notify is opt-in).  After each phase the books must balance, no
# account may exceed its daily limit, and no client may have died of an
# unexpected error (a deadlock, a constraint violation).
#
# Needs the harness environment: PGBIN, PGHOST, PGPORT, PGUSER, PGDATA_DIR
# and PG_OS_USER (the server's OS user); LOAD_SECONDS bounds each phase.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SECONDS_PER_PHASE=${LOAD_SECONDS:-8}
DB=credits_load
N=0

psql_q() { "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -d "$DB" "$@"; }
ok() {   # ok CONDITION(0/1 exit) DESCRIPTION
    N=$((N + 1))
    if [[ $1 == 0 ]]; then echo "ok $N - $2"; else echo "not ok $N - $2"; fi
}
as_server_user() {
    if ((EUID == 0)); then runuser -u "$PG_OS_USER" -- "$@"; else "$@"; fi
}

pgbench_load() {   # pgbench_load SECONDS LOG
    "$PGBIN/pgbench" -n -c 8 -j 2 -T "$1" -d "$DB" \
        -f "$HERE/consume.pgbench@9" -f "$HERE/grant.pgbench@1" >"$2" 2>&1
}

check_books() {   # check_books PHASE
    local phase=$1 rows over
    rows=$(psql_q -c 'SELECT count(*) FROM credits.reconcile()')
    ok "$([[ $rows == 0 ]]; echo $?)" "$phase: reconcile() finds no discrepancy ($rows)"
    over=$(psql_q -c "SELECT count(*) FROM (
               SELECT l.user_id FROM credits.ledger l
                WHERE l.kind = 'consume' AND l.created_at >= date_trunc('day', now())
                GROUP BY l.user_id HAVING count(*) > 1500) x")
    ok "$([[ $over == 0 ]]; echo $?)" "$phase: no account ran more than its 1500 operations today ($over over)"
    rows=$(psql_q -c "SELECT count(*) FROM credits.accounts WHERE balance < 0")
    ok "$([[ $rows == 0 ]]; echo $?)" "$phase: no negative balance"
}

echo "1..18"
"$PGBIN/dropdb" --if-exists "$DB" && "$PGBIN/createdb" "$DB" || { echo "Bail out! createdb failed"; exit 1; }
psql_q -f "$HERE/setup.sql" >/dev/null || { echo "Bail out! setup failed"; exit 1; }

# Phase 1: steady load.
pgbench_load "$SECONDS_PER_PHASE" "$PGHOST/load1.log"
rc=$?
ok "$rc" "phase 1: $SECONDS_PER_PHASE s of load, no client aborted on an unexpected error"
grep -E "^(number of transactions actually processed|tps|.*aborted)" "$PGHOST/load1.log" | sed 's/^/# /'
[[ $rc == 0 ]] || sed 's/^/# /' "$PGHOST/load1.log" | tail -20
psql_q -c "SELECT '# ledger after phase 1: ' || string_agg(kind || ' ' || n, ', ') FROM (SELECT kind, count(*) n FROM credits.ledger GROUP BY kind ORDER BY kind) k"
check_books "phase 1"
deadlocks=$(psql_q -c "SELECT coalesce(sum(deadlocks), 0) FROM pg_stat_database")
ok "$([[ $deadlocks == 0 ]]; echo $?)" "phase 1: no deadlock ($deadlocks)"

# Phase 2: the same load, cut by a crash (immediate shutdown) half-way.
pgbench_load "$SECONDS_PER_PHASE" "$PGHOST/load2.log" &
load_pid=$!
sleep $((SECONDS_PER_PHASE / 2))
as_server_user "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m immediate -w stop >/dev/null 2>&1
wait "$load_pid"
as_server_user "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$PGHOST/postgres.log" -w -t 60 start >/dev/null 2>&1 9>&-
ok "$?" "phase 2: the server crashed under load and recovered"
check_books "phase 2"
# The crash reset the statistics: look for deadlocks in the server log instead.
deadlocks=$(grep -c "deadlock detected" "$PGHOST/postgres.log")
ok "$([[ $deadlocks == 0 ]]; echo $?)" "phase 2: no deadlock in the server log ($deadlocks)"

# Phase 3: the same load on a server without shared_preload_libraries (the
# extension must not need it; denial counters are then per backend).
as_server_user "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w stop >/dev/null 2>&1
as_server_user "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$PGHOST/postgres.log" -w -t 60 \
    -o "-c shared_preload_libraries=''" start >/dev/null 2>&1 9>&-
preloaded=$(psql_q -c "SHOW shared_preload_libraries")
ok "$([[ -z $preloaded ]]; echo $?)" "phase 3: restarted without shared_preload_libraries"
pgbench_load $((SECONDS_PER_PHASE / 2)) "$PGHOST/load3.log"
ok "$?" "phase 3: load without preloading, no client aborted on an unexpected error"
check_books "phase 3"
# A refusal in this session is counted in this backend's counters.
scope=$(psql_q -c "SELECT load.try(\$\$SELECT credits.credits_consume(gen_random_uuid(), 'video_second', 60)\$\$)" \
               -c "SELECT string_agg(DISTINCT scope, ',') FROM credits.stats WHERE reason = 'insufficient_credits'")
ok "$([[ $scope == $'PT402\nthis backend' ]]; echo $?)" "phase 3: credits.stats counts a denial without preloading (${scope//$'\n'/, })"

# As installed (not preloaded, no setting changed) a change sends no NOTIFY,
# even to a listener; credits.notify = on in the writer's session turns it on.
# The listening psql runs the writer as a shell command, then polls.
heard() {   # heard WRITER_SETTING: notifications a listener receives for one consume
    psql_q -c "LISTEN credits" \
        -c "\\! PGOPTIONS='$1' '$PGBIN/psql' -X -q -d $DB -c \"SELECT credits.credits_consume(gen_random_uuid(), 'image', 1)\" >/dev/null" \
        -c "SELECT 1" 2>&1 | grep -c 'Asynchronous notification "credits"'
}
n=$(heard "")
ok "$([[ $n == 0 ]]; echo $?)" "phase 3: as installed, a listener hears no NOTIFY credits ($n heard)"
n=$(heard "-c credits.notify=on")
ok "$([[ $n == 1 ]]; echo $?)" "phase 3: with credits.notify = on, a listener hears the change ($n heard)"
