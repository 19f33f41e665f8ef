#!/usr/bin/env bash
# A randomized abusive client, printed as TAP (issue 12).  Eight connections
# act for four users of a client role with Supabase's attributes, the JWT
# claims set per request: consumes, time zone changes (to zones whose
# midnight has just passed among others), instant-unlock claims, deletions
# of their own account and reads, while a store keeps reporting pack
# purchases from a small pool of transaction ids.  Deleting and changing
# the zone are allowed every second, so both happen many times.  Then:
# the books balance, no user ran more operations than the daily limit allows
# in the local days the run spanned, no user claimed more than the claim
# limit, no signup bonus and no purchase was credited twice, and each user
# has at most one tombstone.  Last, the denial counters are per database.
#
# Needs the harness environment: PGBIN, PGHOST, PGPORT, PGUSER; LOAD_SECONDS
# bounds the load (the whole script takes about LOAD_SECONDS + 8 s).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SECS=${LOAD_SECONDS:-8}
SECS=$((SECS + 4))
DB=credits_abuse
DB2=credits_abuse_other
N=0

psql_q() { "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -d "$DB" "$@"; }
ok() {   # ok CONDITION(0/1 exit) DESCRIPTION
    N=$((N + 1))
    if [[ $1 == 0 ]]; then echo "ok $N - $2"; else echo "not ok $N - $2"; fi
}
cleanup() {
    "$PGBIN/dropdb" --if-exists "$DB" >/dev/null 2>&1
    "$PGBIN/dropdb" --if-exists "$DB2" >/dev/null 2>&1
    "$PGBIN/psql" -X -q -d postgres -c 'DROP ROLE IF EXISTS abuse_load_client' \
        -c 'DROP ROLE IF EXISTS abuse_load_admin' >/dev/null 2>&1
}

echo "1..10"
cleanup
"$PGBIN/psql" -X -q -d postgres -c 'CREATE ROLE abuse_load_client NOLOGIN NOINHERIT' \
    -c 'CREATE ROLE abuse_load_admin NOLOGIN NOINHERIT' >/dev/null &&
    "$PGBIN/createdb" "$DB" || { echo "Bail out! setup of roles or database failed"; exit 1; }
psql_q -c "ALTER DATABASE $DB SET credits.deletion_interval = '1s'" \
       -c "ALTER DATABASE $DB SET credits.timezone_change_interval = '1s'" >/dev/null &&
    psql_q -f "$HERE/abuse_setup.sql" >/dev/null || { echo "Bail out! setup failed"; exit 1; }

start=$(psql_q -c "SELECT now()")
"$PGBIN/pgbench" -n -c 8 -j 2 -T "$SECS" -d "$DB" \
    -f "$HERE/abuse_client.pgbench@9" -f "$HERE/abuse_store.pgbench@1" >"$PGHOST/abuse.log" 2>&1
rc=$?
ok "$rc" "$SECS s of abusive clients, no client aborted on an unexpected error"
grep -E "^(number of transactions actually processed|tps|.*aborted)" "$PGHOST/abuse.log" | sed 's/^/# /'
[[ $rc == 0 ]] || sed 's/^/# /' "$PGHOST/abuse.log" | tail -20
psql_q -c "SELECT '# ' || action || ': ' || count(*) FROM abuse.log GROUP BY action ORDER BY action"

rows=$(psql_q -c 'SELECT count(*) FROM credits.reconcile()')
ok "$([[ $rows == 0 ]]; echo $?)" "reconcile() finds no discrepancy ($rows)"

deletions=$(psql_q -c "SELECT count(*) FROM abuse.log WHERE action = 'delete'")
ok "$([[ $deletions -ge 4 ]]; echo $?)" "users deleted their accounts repeatedly ($deletions deletions)"

# Local days the run spanned: a day boundary of any zone used inside the run
# allows one more daily allowance (none, almost always, in a few seconds).
bound=$(psql_q -c "SELECT 5 * (1 + count(*)) FROM abuse.zones z
                    WHERE date_trunc('day', '$start'::timestamptz AT TIME ZONE z.name)
                       <> date_trunc('day', now() AT TIME ZONE z.name)")
over=$(psql_q -c "SELECT count(*) FROM (SELECT user_id FROM abuse.log WHERE action = 'consume'
                   GROUP BY user_id HAVING count(*) > $bound) x")
most=$(psql_q -c "SELECT coalesce(max(n), 0) FROM (SELECT count(*) n FROM abuse.log WHERE action = 'consume' GROUP BY user_id) x")
ok "$([[ $over == 0 ]]; echo $?)" "no user ran more than the daily limit allows ($most at most, limit $bound)"

over=$(psql_q -c "SELECT count(*) FROM (SELECT user_id FROM abuse.log WHERE action = 'claim unlocked'
                   GROUP BY user_id HAVING count(*) > 3) x")
ok "$([[ $over == 0 ]]; echo $?)" "no user made more than 3 instant-unlock claims, deletions or not"

# Every credit ever granted: the current ledgers and the tombstones of the
# deleted accounts.  Bonuses: 6 per user, once; packs: 50 per transaction.
granted=$(psql_q -c "SELECT (SELECT coalesce(sum(amount), 0) FROM credits.ledger WHERE kind IN ('grant', 'purchase'))
                           + (SELECT coalesce(sum(granted), 0) FROM credits.deleted_accounts)")
expected=$(psql_q -c "SELECT 6 * (SELECT count(*) FROM abuse.users) + 50 * (SELECT count(*) FROM credits.purchases)")
ok "$([[ $granted == "$expected" ]]; echo $?)" "no bonus or purchase credited twice (granted $granted, expected $expected)"

bonuses=$(psql_q -c "SELECT count(*) FROM credits.ledger WHERE reason = 'signup bonus'")
ok "$([[ $bonuses -le 4 ]]; echo $?)" "signup bonuses in the ledgers: $bonuses (at most one per user, none after a deletion)"

tombstones=$(psql_q -c "SELECT count(*) FROM credits.deleted_accounts")
ok "$([[ $tombstones -le 4 ]]; echo $?)" "one tombstone per user id at most ($tombstones)"

# Denial counters belong to their database.
"$PGBIN/createdb" "$DB2" && "$PGBIN/psql" -X -q -d "$DB2" -c 'CREATE EXTENSION credits' >/dev/null
other=$("$PGBIN/psql" -X -q -A -t -d "$DB2" -c "SELECT count(*) FROM credits.stats")
ok "$([[ $other == 0 ]]; echo $?)" "another database sees none of these denial counters ($other)"
"$PGBIN/psql" -X -q -d "$DB2" -c 'SELECT credits.stats_reset()' >/dev/null
mine=$(psql_q -c "SELECT coalesce(sum(denials), 0) FROM credits.stats")
ok "$([[ $mine -gt 0 ]]; echo $?)" "its stats_reset() leaves this database's counters ($mine denials)"

cleanup
