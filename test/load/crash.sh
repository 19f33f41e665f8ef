#!/usr/bin/env bash
# Crash with acknowledged receipts, printed as TAP.  Four clients run a mixed
# load (consume, grant, reserve, refund; each call with its own idempotency
# key, synchronous_commit on) and write down every receipt the server
# acknowledged; then the postmaster and all its processes get SIGKILL at once
# and the server restarts (crash recovery).  Every acknowledged receipt must
# be in the ledger, every key that committed (acknowledged or not) must replay
# with the same entry id, and the books must balance.
#
# Needs the harness environment: PGBIN, PGHOST, PGPORT, PGUSER, PGDATA_DIR
# and PG_OS_USER (the server's OS user).
set -uo pipefail

DB=credits_crash
CLIENTS=4
LOAD_SECONDS=${CRASH_LOAD_SECONDS:-3}
OUT=$PGHOST/crash
N=0

q() { "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -d "$DB" "$@"; }
ok() {
    N=$((N + 1))
    if [[ $1 == 0 ]]; then echo "ok $N - $2"; else echo "not ok $N - $2"; fi
}
as_server_user() {
    if ((EUID == 0)); then runuser -u "$PG_OS_USER" -- "$@"; else "$@"; fi
}

# user_of CLIENT I: the user of a client's I-th call (nine users, shared).
user_of() { echo "c0000000-0000-0000-0000-00000000000$(((($1 * 3 + $2 % 3) % 9) + 1))"; }

# calls CLIENT: an endless stream of calls, each printing kind|user|key|entry_id.
calls() {
    local c=$1 i=0 user
    while :; do
        i=$((i + 1))
        user=$(user_of "$c" "$i")
        case $((i % 4)) in
            0) echo "SELECT 'g', user_id, 'crash-g-$c-$i', entry_id FROM credits.grant_credits('$user', 5, 'crash test', 'crash-g-$c-$i');" ;;
            1) echo "SELECT 'r', user_id, 'crash-r-$c-$i', entry_id FROM credits.reserve('$user', 'image', 1, 'crash-r-$c-$i');" ;;
            2) echo "SELECT 'c', user_id, 'crash-c-$c-$i', entry_id FROM credits.credits_consume('$user', 'image', 1, 'crash-c-$c-$i');" ;;
            3) echo "SELECT 'f', user_id, 'crash-f-$c-$i', entry_id FROM credits.refund(
                         (SELECT id FROM credits.ledger WHERE user_id = '$(user_of "$c" $((i - 1)))'
                             AND idempotency_key = 'crash-c-$c-$((i - 1))'),
                         1, 'crash refund', 'crash-f-$c-$i');" ;;
        esac
    done
}

echo "1..8"
rm -rf "$OUT" && mkdir -p "$OUT"
"$PGBIN/dropdb" --if-exists "$DB" && "$PGBIN/createdb" "$DB" || { echo "Bail out! createdb failed"; exit 1; }
q >/dev/null <<'SQL' || { echo "Bail out! setup failed"; exit 1; }
CREATE EXTENSION IF NOT EXISTS credits;
INSERT INTO credits.plans (name, daily_limit, signup_bonus) VALUES ('crash', NULL, 1000000);
-- a crash test, not a rate limit one: the shipped plan's limiter is lifted
UPDATE credits.plans SET signup_bonus = 1000000, daily_limit = NULL, rate_burst = NULL, rate_per_second = NULL
 WHERE name = 'free';
SQL

# The load; the clients' receipts are what the server acknowledged.
pids=()
for c in $(seq 1 "$CLIENTS"); do
    calls "$c" | PGOPTIONS="-c synchronous_commit=on" "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -d "$DB" \
        >"$OUT/acked.$c" 2>"$OUT/client.$c.err" &
    pids+=($!)
done
sleep "$LOAD_SECONDS"

# The crash: SIGKILL to the postmaster and every process it started, at once.
# The postmaster is stopped first so that it cannot start a process (an
# autovacuum worker, say) between the listing of its children and the kill:
# such a survivor would keep the shared memory attached and refuse the restart.
pm=$(head -n 1 "$PGDATA_DIR/postmaster.pid")
kill -STOP "$pm"
children=$(ps -o pid= --ppid "$pm" | tr '\n' ' ')
# shellcheck disable=SC2086
kill -KILL "$pm" $children
# Wait until they are gone.  A killed process may stay a zombie when nobody
# reaps it (a container's init): then its stale postmaster.pid would stop the
# restart (and its socket lock file), so they go once every process is dead
# or a zombie.
for _ in $(seq 1 300); do
    alive=$(ps -o stat= -p "$pm,${children// /,}0" 2>/dev/null | grep -vc Z)
    ((alive == 0)) && break
    sleep 0.1
done
if ps -o stat= -p "$pm" | grep -q Z; then
    rm -f "$PGDATA_DIR/postmaster.pid" "$PGHOST/.s.PGSQL.$PGPORT.lock"
fi
unexpected=0
for p in "${pids[@]}"; do
    wait "$p"
done
for c in $(seq 1 "$CLIENTS"); do
    # psql exits when the connection is lost; any other error is a failure.
    if grep -v -E "server closed the connection|connection to server was lost|no connection to the server|terminat|before or while processing" \
        "$OUT/client.$c.err" | grep -q .; then
        unexpected=$((unexpected + 1))
        sed 's/^/# /' "$OUT/client.$c.err" | head -5
    fi
done
ok "$unexpected" "the clients ran until the crash with no other error"
cat "$OUT"/acked.* | grep -E '^[a-z]\|' >"$OUT/acked"
acked=$(wc -l <"$OUT/acked")
ok "$([[ $acked -gt 100 ]]; echo $?)" "receipts acknowledged before the crash: $acked"

# restart: crash recovery; a second try after a pause, and what the server
# said (as TAP comments) when it still does not come up.
restart() {
    local try
    for try in 1 2; do
        if as_server_user "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$PGHOST/postgres.log" -w -t 120 start \
            >"$OUT/pg_ctl.$try" 2>&1 9>&-; then
            return 0
        fi
        sleep 3
    done
    sed 's/^/# pg_ctl: /' "$OUT"/pg_ctl.* | tail -n 10
    tail -n 20 "$PGHOST/postgres.log" | sed 's/^/# server log: /'
    ps -o pid,ppid,stat,args -u "$PG_OS_USER" | sed 's/^/# ps: /'
    return 1
}
restart
ok $? "the server restarts after SIGKILL (crash recovery)"

lost=$(q <<SQL
CREATE TEMP TABLE acked (kind text, user_id uuid, key text, entry_id bigint);
\copy acked FROM '$OUT/acked' WITH (DELIMITER '|')
SELECT count(*) FROM acked a
 WHERE NOT EXISTS (SELECT 1 FROM credits.ledger l
                    WHERE l.id = a.entry_id AND l.user_id = a.user_id AND l.idempotency_key = a.key);
SQL
)
ok "$([[ $lost == 0 ]]; echo $?)" "every acknowledged receipt is in the ledger ($lost missing)"

# Replay every key that committed, acknowledged or not, with its parameters.
replays=$(q <<'SQL'
SELECT count(*) || ' ' || count(*) FILTER (WHERE r.entry_id IS DISTINCT FROM l.id OR NOT r.replayed)
  FROM credits.ledger l
 CROSS JOIN LATERAL (
     SELECT * FROM credits.grant_credits(l.user_id, 5, 'crash test', l.idempotency_key)
      WHERE l.idempotency_key LIKE 'crash-g-%'
     UNION ALL
     SELECT * FROM credits.reserve(l.user_id, 'image', 1, l.idempotency_key)
      WHERE l.idempotency_key LIKE 'crash-r-%'
     UNION ALL
     SELECT * FROM credits.credits_consume(l.user_id, 'image', 1, l.idempotency_key)
      WHERE l.idempotency_key LIKE 'crash-c-%'
     UNION ALL
     SELECT * FROM credits.refund(l.ref_id, 1, 'crash refund', l.idempotency_key)
      WHERE l.idempotency_key LIKE 'crash-f-%') r
 WHERE l.idempotency_key LIKE 'crash-%';
SQL
)
read -r committed differ <<<"$replays"
ok "$([[ $committed -ge $acked && $differ == 0 ]]; echo $?)" \
    "every committed key replays with the same entry id ($committed keys, $differ differ)"
after=$(q -c "SELECT count(*) FROM credits.ledger WHERE idempotency_key LIKE 'crash-%'")
ok "$([[ -n $after && $after == "$committed" ]]; echo $?)" "the replays wrote nothing ($after keyed entries)"
rows=$(q -c "SELECT count(*) FROM credits.reconcile()")
ok "$([[ $rows == 0 ]]; echo $?)" "reconcile() finds no discrepancy after the crash ($rows)"
kinds=$(cut -d'|' -f1 "$OUT/acked" | sort -u | tr -d '\n')
ok "$([[ $kinds == cfgr ]]; echo $?)" "the load mixed consumes, refunds, grants and reserves ($kinds)"
