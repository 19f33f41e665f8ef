#!/usr/bin/env bash
# Versions upgrade, printed as TAP.
#
# ALTER EXTENSION credits UPDATE from 1.0, run while another session keeps
# consuming and granting, must give exactly the catalog of a fresh install
# (test/ops/catalog.sql: tables, columns, defaults, constraints, indexes,
# functions with their properties and ACLs, types, policies, triggers with
# tgenabled, config-dump marks, sequences, comments), keep every row of 1.0
# and keep the books reconciling.  The library refuses a schema version it
# does not run on, with the ALTER EXTENSION to run.
#
# The 1.0 database is made and loaded by the real 1.0 library, built from the
# commit tagged v1.0, as a user's would be; the load's connections keep it
# loaded while this release is installed over it and ALTER EXTENSION runs.
# 1.0 does not build on PostgreSQL 18 (released for 15): there the upgrade
# part is skipped.
#
# Needs the harness environment (see lib.bash), and ROOT and PG_CONFIG.
set -uo pipefail
# shellcheck source=test/ops/lib.bash
source "$(dirname "${BASH_SOURCE[0]}")/lib.bash"
LOAD_DIR=$OPS_DIR/../load
OUT=$PGHOST/ops-upgrade
rm -rf "$OUT" && mkdir -p "$OUT"
USER1=0b5e0000-0000-0000-0000-000000000001
LOG_START=$(stat -L -c %s "$PGHOST/postgres.log" 2>/dev/null || echo 0)

V1_0=131b6ab79248d848609ab959b5e405b44fe81ad8   # the commit tagged v1.0 (a clone may not have the tag)
install_this_release() {
    make -C "$ROOT" --no-print-directory PG_CONFIG="$PG_CONFIG" install >"$OUT/install.log" 2>&1
}
trap install_this_release EXIT   # whatever happens, leave this release installed

# A server that preloads credits keeps this release's library in every
# backend (dlopen of the same path returns the library already loaded), so
# the 1.0 build installed below would never run: restart without preloading
# (test/load/stress.sh leaves it so too).
if [[ $(q postgres -c "SHOW shared_preload_libraries") == *credits* ]]; then
    as_server_user "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w stop >/dev/null 2>&1
    as_server_user "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$PGHOST/postgres.log" -w -t 60 \
        -o "-c shared_preload_libraries=''" start >/dev/null 2>&1 9>&-
fi

echo "1..15"
newdb() { "$PGBIN/dropdb" --if-exists "$1" && "$PGBIN/createdb" "$1"; }
newdb ops_fresh && q ops_fresh -c "CREATE EXTENSION credits" || { echo "Bail out! fresh install failed"; exit 1; }
default=$(q ops_fresh -c "SELECT extversion FROM pg_extension WHERE extname = 'credits'")
q ops_fresh -f "$OPS_DIR/catalog.sql" >"$OUT/fresh.catalog"

# The library refuses a schema version other than its own: a new connection
# after the version changed, with the ALTER EXTENSION to run.
newdb ops_version && q ops_version -c "CREATE EXTENSION credits" >/dev/null
call() {
    "$PGBIN/psql" -X -q -A -t -d ops_version -v VERBOSITY=verbose \
        -c "SELECT credits.balance('$USER1')" 2>&1 | head -3 | tr '\n' ' '
}
set_version() { q ops_version -c "UPDATE pg_extension SET extversion = '$1' WHERE extname = 'credits'"; }
for v in 1.0 9.1; do
    set_version "$v"
    got=$(call)
    ok "$([[ $got == *"ERROR:  0A000: the credits library $default does not run on version $v of the extension"* &&
             $got == *"\"installed_version\": \"$v\""* &&
             $got == *"HINT:  ALTER EXTENSION credits UPDATE TO '$default'"* ]]; echo $?)" \
        "schema version $v is refused (0A000) with the ALTER EXTENSION to run"
    [[ $got == *0A000* ]] || echo "# $got"
done
set_version "$default"
got=$(call)
is "$got" "6 " "the current schema runs"

# The real 1.0: built from its commit, installed, and a database made with it.
mkdir -p "$OUT/v1.0"
if ! git -C "$ROOT" archive "$V1_0" | tar -x -C "$OUT/v1.0" ||
   ! make -C "$OUT/v1.0" --no-print-directory PG_CONFIG="$PG_CONFIG" \
        PG_CPPFLAGS="-Wall -Wno-unused-parameter -Wno-missing-field-initializers" all install \
        >"$OUT/v1.0-build.log" 2>&1; then
    if [[ $("$PG_CONFIG" --version) == "PostgreSQL 15"* ]]; then
        echo "Bail out! 1.0 does not build here: $(tail -3 "$OUT/v1.0-build.log" | tr '\n' ' ')"
        exit 1
    fi
    for i in $(seq $((N + 1)) 15); do echo "ok $i # SKIP 1.0 does not build on $("$PG_CONFIG" --version)"; done
    exit 0
fi
newdb ops_old && q ops_old -c "CREATE EXTENSION credits VERSION '1.0'" || { echo "Bail out! 1.0 install failed"; exit 1; }
q ops_old -f "$OPS_DIR/catalog.sql" >"$OUT/old.catalog"
facts=$(wc -l <"$OUT/fresh.catalog")
changed=$(diff "$OUT/old.catalog" "$OUT/fresh.catalog" | grep -c '^[<>]')
ok "$([[ $facts -gt 500 && $changed -gt 0 ]]; echo $?)" \
    "the catalog of 1.0 and of a fresh $default differ ($changed of $facts facts): the comparison sees the upgrade"

# 1.0 with every kind of row, and the load's users; then a snapshot of 1.0's rows.
q ops_old -f "$OPS_DIR/populate.sql" >/dev/null && q ops_old -f "$LOAD_DIR/setup.sql" >/dev/null
ok $? "1.0 populated (every kind of row) by the 1.0 library"
q ops_old >/dev/null <<'SQL'
CREATE SCHEMA snap;
SELECT format('CREATE TABLE snap.%I AS SELECT * FROM %s', c.relname, c.oid::regclass)
  FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
 WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_extension'::regclass
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'credits')
   AND d.deptype = 'e' AND c.relkind = 'r'
\gexec
SQL

# The upgrade, under load: four clients consume and grant (test/load) on 1.0
# while this release is installed over it and ALTER EXTENSION runs; pgbench
# aborts a client on any unexpected error.
"$PGBIN/pgbench" -n -c 4 -j 2 -T 5 -d ops_old \
    -f "$LOAD_DIR/consume.pgbench@9" -f "$LOAD_DIR/grant.pgbench@1" >"$OUT/pgbench.log" 2>&1 &
load_pid=$!
sleep 1
install_this_release || { echo "Bail out! make install failed"; exit 1; }
sleep 0.5
start=$(date +%s%N)
q ops_old -c "ALTER EXTENSION credits UPDATE" >"$OUT/alter.log" 2>&1
rc=$?
ms=$((($(date +%s%N) - start) / 1000000))
ok $rc "ALTER EXTENSION credits UPDATE from 1.0 under load ($ms ms)"
[[ $rc == 0 ]] || sed 's/^/# /' "$OUT/alter.log"
wait "$load_pid"
rc=$?
ok $rc "the load ran through the upgrade with no error (lock waits only)"
grep -E "^(number of transactions actually processed|.*aborted)" "$OUT/pgbench.log" | sed 's/^/# /'
[[ $rc == 0 ]] || tail -5 "$OUT/pgbench.log" | sed 's/^/# /'
deadlocks=$(tail -c +$((LOG_START + 1)) "$PGHOST/postgres.log" | grep -c "deadlock detected")
is "$deadlocks" 0 "no deadlock between the upgrade and the load"

version=$(q ops_old -c "SELECT extversion FROM pg_extension WHERE extname = 'credits'")
is "$version" "$default" "the extension is at $default"
q ops_old -f "$OPS_DIR/catalog.sql" >"$OUT/upgraded.catalog"
if diff "$OUT/fresh.catalog" "$OUT/upgraded.catalog" >"$OUT/catalog.diff"; then
    ok 0 "the upgraded catalog is exactly the fresh install's ($facts facts)"
else
    ok 1 "the upgraded catalog is exactly the fresh install's ($facts facts)"
    sed 's/^/# /' "$OUT/catalog.diff" | head -40
fi

# Every 1.0 row is still there, unchanged (the load's users excepted: the load changed them),
# but for what the upgrade changes on purpose: the shipped plans get a rate limit.
lost=$(q ops_old <<'SQL'
UPDATE snap.plans SET rate_burst = 10, rate_per_second = 1 WHERE name = 'free' AND rate_burst IS NULL;
UPDATE snap.plans SET rate_burst = 20, rate_per_second = 2 WHERE name = 'pro' AND rate_burst IS NULL;
SELECT format($f$SELECT %L || ' ' || count(*) FROM (SELECT * FROM snap.%I t %s EXCEPT ALL SELECT %s FROM credits.%I t) x$f$,
              c.relname, c.relname,
              CASE WHEN EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'user_id')
                   THEN 'WHERE NOT EXISTS (SELECT 1 FROM load.users u WHERE u.id = t.user_id)' ELSE '' END,
              (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) FROM pg_attribute a
                WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
              c.relname)
  FROM pg_class c WHERE c.relnamespace = 'snap'::regnamespace AND c.relkind = 'r'
 ORDER BY c.relname
\gexec
SQL
)
missing=$(awk '$2 != 0' <<<"$lost" | tr '\n' ' ')
tables=$(wc -l <<<"$lost")
is "$missing" "" "every row of 1.0 is preserved ($tables tables compared)"
rows=$(q ops_old -c "SELECT count(*) FROM credits.reconcile()")
is "$rows" 0 "reconcile() finds no discrepancy after the upgrade and the load"
got=$(q ops_old -c "SELECT replayed FROM credits.credits_consume('$USER1', 'image', 2, 'ops-c1')")
is "$got" t "a key of 1.0 replays after the upgrade"
marks=$(q ops_old -c "SELECT string_agg(table_name || '.' || key, ',' ORDER BY table_name, key) FROM credits.untouched_seeds")
is "$marks" "operations.video_second" "the upgrade marks the seeds 1.0 left as installed (and only those)"
removed=$(q ops_old -c "SELECT string_agg(table_name || '.' || key, ',' ORDER BY table_name, key) FROM credits.removed_seeds")
is "$removed" "operations.prompt_kchar,plans.pro" "the upgrade records the seeds deleted or renamed under 1.0 (a restore will not bring it back)"
