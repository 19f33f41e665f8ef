# shellcheck shell=bash
# Shared by the scale suite's scripts (test/scale/[0-9]*.sh): TAP output, a
# router and N shards from cluster.sh, and psql through the router or on one
# shard.  Each script brings its own clusters up in SCALE_DIR and down on exit.
#
# Needs PGBIN; SCALE_DIR and SCALE_PORT are set by the suite runner
# (test/scripts/suites.sh, run_scale) or default to cluster.sh's.
set -uo pipefail

SCALE_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
export SCALE_DIR=${SCALE_DIR:-/tmp/credits-scale-$EUID}
export SCALE_PORT=${SCALE_PORT:-25400}
TAP_N=0
ROUTER=

ok() {   # ok CONDITION(0/1 exit) DESCRIPTION
    TAP_N=$((TAP_N + 1))
    if [[ $1 == 0 ]]; then echo "ok $TAP_N - $2"; else echo "not ok $TAP_N - $2"; fi
}
is() {   # is GOT EXPECTED DESCRIPTION
    ok "$([[ $1 == "$2" ]]; echo $?)" "$3"
    [[ $1 == "$2" ]] || { echo "# got:      ${1//$'\n'/ | }"; echo "# expected: ${2//$'\n'/ | }"; }
}

scale() { bash "$SCALE_LIB_DIR/cluster.sh" "$@"; }
scale_up() {   # scale_up N: the router's conninfo in ROUTER; bails out when the clusters do not start
    ROUTER=$(scale up "$1" 2>"$SCALE_DIR.log" | tail -n 1)
    if [[ $ROUTER != host=* ]]; then
        echo "Bail out! cluster.sh up $1 failed: $(tail -n 5 "$SCALE_DIR.log" | tr '\n' ' ')"
        exit 1
    fi
}
scale_down() { scale down >/dev/null 2>&1; }
trap scale_down EXIT

shard_conninfo() { echo "host=127.0.0.1 port=$((SCALE_PORT + 1 + $1)) dbname=credits user=postgres"; }
psql_c() { "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -v VERBOSITY="${VERB:-default}" "$@"; }
router() { psql_c "$ROUTER" "$@"; }
shard() { psql_c "$(shard_conninfo "$1")" "${@:2}"; }
as_user() {   # as_user UUID SQL [ROLE]: in one transaction with the user's JWT claims, as PostgREST sets them
    router <<SQL
BEGIN;
SET LOCAL ROLE ${3:-credits_client};
SELECT set_config('request.jwt.claims', '{"sub": "$1", "role": "authenticated"}', true) \\g /dev/null
$2;
COMMIT;
SQL
}
# The SQLSTATE of the error a command prints (VERBOSITY sqlstate).
sqlstate_of() { VERB=sqlstate "$@" 2>&1 >/dev/null | sed -n 's/^ERROR: *\([0-9A-Z]\{5\}\).*/\1/p' | head -1; }

# Roles and a table of test users (n, id, shard) in the router database.
setup_router() {   # setup_router USERS SHARDS
    router >/dev/null <<SQL
DO \$\$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'credits_client') THEN CREATE ROLE credits_client NOLOGIN; END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'credits_admin') THEN CREATE ROLE credits_admin NOLOGIN; END IF;
END \$\$;
SELECT credits_router.grant_roles('credits_client', 'credits_admin');
CREATE TABLE test_users AS
    SELECT u.n, u.id, credits_router.user_shard(u.id) & ($2 - 1) AS shard
      FROM (SELECT g AS n, gen_random_uuid() AS id FROM generate_series(1, $1) g) u;
GRANT SELECT ON test_users TO credits_admin;
SQL
}
# user_on SHARD [NTH]: the NTH (default 1) test user of a shard
user_on() { router -c "SELECT id FROM test_users WHERE shard = $1 ORDER BY n OFFSET ${2:-1} - 1 LIMIT 1"; }
