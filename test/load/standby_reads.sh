#!/usr/bin/env bash
# Reads on a hot standby, printed as TAP.  A streaming replica of the test
# cluster (pg_basebackup -R) answers every read function for users with each
# kind of lazy maintenance due (never touched, a lot expired, a hold timed
# out, an allocation due, an entitlement lapsed): no error, and the same
# answers the primary gives once its next write has done the maintenance.
# A write on the standby is refused with 25006.
#
# Needs the harness environment: PGBIN, PGHOST, PGPORT, PGUSER, PGDATA_DIR
# and PG_OS_USER (the server's OS user).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DB=credits_standby
STANDBY_DIR=$(dirname "$PGDATA_DIR")/standby
STANDBY_PORT=$((PGPORT + 100))
# the first free port from there (other clusters may run on this machine)
while timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$STANDBY_PORT" 2>/dev/null; do
    STANDBY_PORT=$((STANDBY_PORT + 1))
done
N=0

ok() {   # ok CONDITION(0/1 exit) DESCRIPTION
    N=$((N + 1))
    if [[ $1 == 0 ]]; then echo "ok $N - $2"; else echo "not ok $N - $2"; fi
}
as_server_user() {
    if ((EUID == 0)); then runuser -u "$PG_OS_USER" -- "$@"; else "$@"; fi
}
primary() { "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -d "$DB" "$@"; }
standby() { "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -p "$STANDBY_PORT" -d "$DB" "$@"; }
stop_standby() {
    if [[ -f $STANDBY_DIR/postmaster.pid ]]; then
        as_server_user "$PGBIN/pg_ctl" -D "$STANDBY_DIR" -m immediate -w stop >/dev/null 2>&1
    fi
    rm -rf "$STANDBY_DIR"
}
trap stop_standby EXIT

echo "1..7"
"$PGBIN/dropdb" --if-exists "$DB" && "$PGBIN/createdb" "$DB" || { echo "Bail out! createdb failed"; exit 1; }
primary -c 'CREATE EXTENSION credits' -f "$HERE/../fixtures/reads_setup.sql" >/dev/null ||
    { echo "Bail out! setup failed"; exit 1; }

# The replica: a base backup of the running cluster, streaming from it.
stop_standby
as_server_user "$PGBIN/pg_basebackup" -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -D "$STANDBY_DIR" -R -X stream \
    >"$PGHOST/standby-basebackup.log" 2>&1
ok "$?" "pg_basebackup of the primary"
as_server_user "$PGBIN/pg_ctl" -D "$STANDBY_DIR" -l "$PGHOST/standby.log" -w -t 60 \
    -o "-p $STANDBY_PORT -c hot_standby=on -c shared_preload_libraries=''" start >/dev/null 2>&1 9>&-
ok "$?" "the hot standby starts"

# Wait for the standby to replay everything, then for the maintenance to fall due.
lsn=$(primary -c 'SELECT pg_current_wal_lsn()')
for _ in $(seq 1 100); do
    caught_up=$(standby -c "SELECT pg_last_wal_replay_lsn() >= '$lsn'::pg_lsn" 2>/dev/null)
    [[ $caught_up == t ]] && break
    sleep 0.1
done
ok "$([[ $caught_up == t ]]; echo $?)" "the standby replayed the setup"
sleep 1.2

read_all='SELECT name, r.* FROM reads_fixture.users u, reads_fixture.reads(u.id) r ORDER BY name'
on_standby=$(standby -c "$read_all" 2>"$PGHOST/standby-reads.err")
ok "$?" "every read function answers on the standby, maintenance due and all"
sed 's/^/# standby: /' "$PGHOST/standby-reads.err"
echo "$on_standby" | sed 's/^/# standby: /'

sqlstate=$(standby -v VERBOSITY=sqlstate -c "SELECT credits.credits_consume(id, 'image') FROM reads_fixture.users WHERE name = 'lot'" 2>&1)
ok "$([[ $sqlstate == *25006* ]]; echo $?)" "a write on the standby is refused with 25006 (${sqlstate//$'\n'/ })"

# The primary's next write does the maintenance; the standby had answered the same.
primary -c 'SELECT credits.open_account(id) FROM reads_fixture.users' >/dev/null
on_primary=$(primary -c "$read_all")
ok "$([[ -n $on_primary && $on_primary == "$on_standby" ]]; echo $?)" \
    "the standby answered what the primary answers after its maintenance"
[[ $on_primary == "$on_standby" ]] || echo "$on_primary" | sed 's/^/# primary: /'
discrepancies=$(primary -c 'SELECT count(*) FROM credits.reconcile()')
ok "$([[ $discrepancies == 0 ]]; echo $?)" "the primary's books balance after the maintenance ($discrepancies)"
