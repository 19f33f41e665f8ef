#!/usr/bin/env bash
# Backups restore and replicas replicate, printed as TAP.
#
# A database with every kind of row (populate.sql) is copied five ways:
# pg_dump | psql, pg_dump -Fc | pg_restore (new databases), pg_dumpall into a
# new cluster, pg_basebackup started as a cluster, and a logical subscriber
# (FOR TABLES IN SCHEMA credits, credits_secrets) that is then switched over, and one in
# another database of the same cluster.  Each copy must
# come back with exit status 0 and no manual step, hold every row of every
# table and the state of every sequence, reconcile, replay an idempotency key
# with the same entry id, settle an open hold, and hand out new ids.
#
# Needs the harness environment (see lib.bash).
set -uo pipefail
# shellcheck source=test/ops/lib.bash
source "$(dirname "${BASH_SOURCE[0]}")/lib.bash"
# A subscription left behind would retry against a stopped publisher forever.
drop_subscription() {
    q ops_sub -c "ALTER SUBSCRIPTION ops_sub DISABLE" -c "ALTER SUBSCRIPTION ops_sub SET (slot_name = NONE)" \
        -c "DROP SUBSCRIPTION ops_sub" >/dev/null 2>&1
}
cleanup() {
    drop_subscription
    extra_clusters_stop
}
trap cleanup EXIT
drop_subscription

SRC=ops_src
USER1=0b5e0000-0000-0000-0000-000000000001
USER2=0b5e0000-0000-0000-0000-000000000002
USER3=0b5e0000-0000-0000-0000-000000000003   # premium (a subscription): no daily limit
LOG_START=$(stat -L -c %s "$PGHOST/postgres.log" 2>/dev/null || echo 0)
OUT=$PGHOST/ops-backup
rm -rf "$OUT" && mkdir -p "$OUT" && chown "$PG_OS_USER" "$OUT"

echo "1..45"
"$PGBIN/dropdb" --if-exists "$SRC" && "$PGBIN/createdb" "$SRC" &&
    q "$SRC" -f "$OPS_DIR/populate.sql" >/dev/null || { echo "Bail out! populate failed"; exit 1; }

undumped=$(q "$SRC" -c "
    SELECT coalesce(string_agg(c.oid::regclass::text, ', '), '')
      FROM pg_depend d JOIN pg_class c ON c.oid = d.objid, pg_extension e
     WHERE e.extname = 'credits' AND d.classid = 'pg_class'::regclass
       AND d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid AND d.deptype = 'e'
       AND c.relkind IN ('r', 'S') AND c.relpersistence = 'p' AND c.oid <> ALL (e.extconfig)")
is "$undumped" "" "every table and sequence of the extension is dumped (pg_extension_config_dump)"
digest "$SRC" >"$OUT/src.digest"
tables=$(grep -c '^table ' "$OUT/src.digest")
# Every table that populate.sql fills must have rows, or a lost table could go unnoticed.
empty=$(awk '$1 == "table" && $3 == 0 && $2 != "credits.removed_seeds" {print $2}' "$OUT/src.digest" | tr '\n' ' ')
is "$empty" "" "the source has rows in every table ($tables tables)"
removed=$(q "$SRC" -c "SELECT string_agg(table_name || '.' || key, ',' ORDER BY table_name, key) FROM credits.removed_seeds")
is "$removed" "operations.prompt_kchar,plans.pro" "the deleted and the renamed seed are recorded in credits.removed_seeds"

c1=$(q "$SRC" -c "SELECT id FROM credits.ledger WHERE idempotency_key = 'ops-c1'")
hold=$(q "$SRC" -c "SELECT id FROM credits.holds WHERE status = 'open'")
last=$(q "$SRC" -c "SELECT max(id) FROM credits.ledger")

# check_copy LABEL DB [psql connection args]: the copy equals the source and works.
check_copy() {
    local label=$1 db=$2
    shift 2
    local got
    digest "$db" "$@" >"$OUT/$label.digest" 2>&1
    if diff "$OUT/src.digest" "$OUT/$label.digest" >"$OUT/$label.diff"; then
        ok 0 "$label: every row of every table and every sequence as in the source"
    else
        ok 1 "$label: every row of every table and every sequence as in the source"
        sed 's/^/# /' "$OUT/$label.diff"
    fi
    got=$(q "$db" "$@" -c "SELECT count(*) FROM credits.reconcile()")
    is "$got" 0 "$label: reconcile() finds no discrepancy"
    got=$(q "$db" "$@" -c "SELECT entry_id || ' ' || replayed FROM credits.credits_consume('$USER1', 'image', 2, 'ops-c1')")
    is "$got" "$c1 true" "$label: a committed idempotency key replays with the same entry id"
    got=$(q "$db" "$@" -c "SELECT kind || ' ' || amount FROM credits.capture($hold, 1)")
    is "$got" "capture -2" "$label: the open hold is captured"
    got=$(q "$db" "$@" -c "SELECT (credits.credits_consume('$USER3', 'image', 1, 'ops-new')).entry_id > $last,
                                  (credits.grant_credits('$USER1', 5, 'after restore')).entry_id > $last" | tr '\n' ' ')
    is "$got" "t|t " "$label: new entries get new ids (no duplicate key)"
}

# 1. pg_dump, plain, into a new database.
"$PGBIN/pg_dump" -d "$SRC" -f "$OUT/src.sql"
ok $? "plain: pg_dump exits 0"
"$PGBIN/dropdb" --if-exists ops_plain && "$PGBIN/createdb" ops_plain
q ops_plain -f "$OUT/src.sql" >"$OUT/plain.log" 2>&1
rc=$?
ok $rc "plain: psql -v ON_ERROR_STOP=1 restores it with exit status 0"
[[ $rc == 0 ]] || sed 's/^/# /' "$OUT/plain.log" | tail -5
check_copy plain ops_plain

# 2. pg_dump -Fc and pg_restore into a new database.
"$PGBIN/pg_dump" -Fc -d "$SRC" -f "$OUT/src.dump"
ok $? "custom: pg_dump -Fc exits 0"
"$PGBIN/dropdb" --if-exists ops_custom && "$PGBIN/createdb" ops_custom
"$PGBIN/pg_restore" --exit-on-error -d ops_custom "$OUT/src.dump" >"$OUT/custom.log" 2>&1
rc=$?
ok $rc "custom: pg_restore --exit-on-error exits 0"
[[ $rc == 0 ]] || sed 's/^/# /' "$OUT/custom.log" | tail -5
check_copy custom ops_custom

# 3. pg_dumpall (this database, with roles and settings) into a new cluster.
excludes=()
while IFS= read -r other; do excludes+=("--exclude-database=$other"); done < <(
    q postgres -c "SELECT datname FROM pg_database WHERE NOT datistemplate AND datname NOT IN ('postgres', '$SRC')")
# A setting of the extension made for the database travels with pg_dumpall.
q postgres -c "ALTER DATABASE $SRC SET credits.hold_timeout = '10min'" >/dev/null
"$PGBIN/pg_dumpall" "${excludes[@]}" -f "$OUT/all.sql"
ok $? "dumpall: pg_dumpall exits 0"
extra_cluster_new ops-dumpall || { echo "Bail out! could not start a new cluster"; exit 1; }
DUMPALL_PORT=$EXTRA_PORT
# As documented for pg_dumpall: psql -f, which goes on past the one expected
# error (CREATE ROLE of the role running the restore, which exists).
"$PGBIN/psql" -X -q -p "$DUMPALL_PORT" -d postgres -f "$OUT/all.sql" >"$OUT/dumpall.log" 2>&1
ok $? "dumpall: psql -f restores it into a new cluster with exit status 0"
got=$(q "$SRC" -p "$DUMPALL_PORT" -c "SHOW credits.hold_timeout")
is "$got" "10min" "dumpall: the database's credits.* settings came along"
errors=$(grep ERROR "$OUT/dumpall.log" | grep -v 'role "postgres" already exists')
is "$errors" "" "dumpall: no error but the documented one (the restoring role exists)"

# 4. pg_basebackup, started as a cluster of its own.
as_server_user "$PGBIN/pg_basebackup" -h "$PGHOST" -p "$PGPORT" -U postgres -D "$PGHOST/ops-base" \
    -X stream -c fast --no-sync >"$OUT/base.log" 2>&1
ok $? "basebackup: pg_basebackup exits 0"
BASE_PORT=$(free_port $((DUMPALL_PORT + 1)))
echo "port = $BASE_PORT" >>"$PGHOST/ops-base/postgresql.conf"
extra_cluster_start "$PGHOST/ops-base"
ok $? "basebackup: the copy starts as a cluster"
check_copy basebackup "$SRC" -p "$BASE_PORT"

# 5. A logical subscriber of the whole schema, then a switch-over to it.  The
# publisher is the dumpall copy (its cluster has wal_level = logical); it
# keeps writing while the subscriber catches up.
PUB=(-p "$DUMPALL_PORT")
q "$SRC" "${PUB[@]}" -c "CREATE PUBLICATION ops_pub FOR TABLES IN SCHEMA credits, credits_secrets" >/dev/null
"$PGBIN/dropdb" --if-exists ops_sub && "$PGBIN/createdb" ops_sub &&
    q ops_sub -c "CREATE EXTENSION credits" \
      -c "CREATE SUBSCRIPTION ops_sub CONNECTION 'host=$PGHOST port=$DUMPALL_PORT dbname=$SRC user=postgres'
          PUBLICATION ops_pub" >/dev/null 2>"$OUT/sub.log"
ok $? "replica: CREATE SUBSCRIPTION for the whole schema"
q "$SRC" "${PUB[@]}" >/dev/null <<SQL
SELECT credits.credits_consume('$USER3', 'image', 1, 'ops-during-sync');
UPDATE credits.plans SET signup_bonus = 41 WHERE name = 'free';
DELETE FROM credits.operations WHERE name = 'video_second';
INSERT INTO credits.operations (name, cost) VALUES ('prompt_kchar', 4);
SELECT credits.delete_account('$USER2');
SQL
tables_of() { grep '^table ' "$1"; }
caught_up=1
for _ in $(seq 1 60); do
    digest "$SRC" "${PUB[@]}" >"$OUT/pub.digest"
    digest ops_sub >"$OUT/sub.digest"
    if diff <(tables_of "$OUT/pub.digest") <(tables_of "$OUT/sub.digest") >"$OUT/replica.diff"; then
        caught_up=0
        break
    fi
    sleep 0.5
done
ok $caught_up "replica: the subscriber catches up (every row of every table, seeds edited, deleted and re-created)"
[[ $caught_up == 0 ]] || { sed 's/^/# /' "$OUT/replica.diff"; tail -c +$((LOG_START + 1)) "$PGHOST/postgres.log" | grep ERROR | tail -3 | sed 's/^/# /'; }
retries=$(tail -c +$((LOG_START + 1)) "$PGHOST/postgres.log" | grep -c 'duplicate key')
is "$retries" 0 "replica: no table sync or apply failed on a duplicate key"
# Switch-over (README): stop writes, wait for catch-up (done), copy the
# sequences, which logical replication does not carry, drop the subscription.
q "$SRC" "${PUB[@]}" -c "SELECT format('SELECT pg_catalog.setval(%L, %s, %L);', schemaname || '.' || sequencename,
                                       coalesce(last_value, 1), last_value IS NOT NULL)
                           FROM pg_sequences WHERE schemaname = 'credits'" >"$OUT/sequences.sql"
q ops_sub -f "$OUT/sequences.sql" -c "DROP SUBSCRIPTION ops_sub" >/dev/null
ok $? "replica: sequences copied and the subscription dropped (with its slot on the publisher)"
digest "$SRC" "${PUB[@]}" >"$OUT/src.digest"     # the publisher is the source now
check_copy replica ops_sub

# Two databases of one cluster: the slot is made first, the subscription
# must not create it (CREATE SUBSCRIPTION would wait for itself).
q "$SRC" "${PUB[@]}" -c "SELECT pg_create_logical_replication_slot('ops_sub2', 'pgoutput')" >/dev/null
"$PGBIN/createdb" "${PUB[@]}" ops_sub2 &&
    q ops_sub2 "${PUB[@]}" -c "CREATE EXTENSION credits" \
      -c "CREATE SUBSCRIPTION ops_sub2 CONNECTION 'host=$PGHOST port=$DUMPALL_PORT dbname=$SRC user=postgres'
          PUBLICATION ops_pub WITH (create_slot = false, slot_name = 'ops_sub2')" >/dev/null
ok $? "same cluster: CREATE SUBSCRIPTION on a slot made beforehand"
caught_up=1
for _ in $(seq 1 60); do
    digest ops_sub2 "${PUB[@]}" >"$OUT/sub2.digest"
    if diff <(tables_of "$OUT/src.digest") <(tables_of "$OUT/sub2.digest") >"$OUT/replica2.diff"; then
        caught_up=0
        break
    fi
    sleep 0.5
done
ok $caught_up "same cluster: the subscriber in another database catches up"
[[ $caught_up == 0 ]] || sed 's/^/# /' "$OUT/replica2.diff"
q ops_sub2 "${PUB[@]}" -c "DROP SUBSCRIPTION ops_sub2" >/dev/null 2>&1
ok $? "same cluster: DROP SUBSCRIPTION drops the slot too"

# And the dumpall copy itself (checked last: it is the publisher above).
check_copy dumpall "$SRC" "${PUB[@]}"
