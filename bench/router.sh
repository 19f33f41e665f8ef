#!/usr/bin/env bash
# bench/router.sh: the cost of the PL/Proxy hop (README, "Pooling and
# scale-out", "Cost of the hop and projection").  `make bench` runs it after
# bench/run.sh; it can run alone with the extension installed for PGBIN.
#
# A router and one shard (test/scale/cluster.sh up 1: two clusters on this
# machine, fsync off, synchronous commit on), BENCH_ROUTER_USERS users with
# credits on a plan without a daily limit.  For consume (credits_consume)
# and balance, at 1 and 4 clients: pgbench against the shard directly, then
# the same calls through the router.  Prints, and keeps in
# $BENCH_OUT/router.md, per case: calls/s and mean latency of each, the
# latency ratio (router / direct) and the router's added time per call.
#
# Settings: BENCH_ROUTER_TIME=8 (seconds per run), BENCH_ROUTER_USERS=1000,
# BENCH_OUT (default: a new directory under /tmp).
set -euo pipefail

BENCH=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$BENCH")
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
T=${BENCH_ROUTER_TIME:-8}
USERS=${BENCH_ROUTER_USERS:-1000}
OUT=${BENCH_OUT:-$(mktemp -d /tmp/credits-bench-router.XXXXXX)}
export SCALE_DIR=$OUT/scale SCALE_PORT=${BENCH_ROUTER_PORT:-27400} PGBIN

cleanup() { bash "$ROOT/test/scale/cluster.sh" down >/dev/null 2>&1 || true; }
trap cleanup EXIT

mkdir -p "$OUT"
chmod 755 "$OUT"   # the clusters run as the postgres OS user
ROUTER=$(bash "$ROOT/test/scale/cluster.sh" up 1 2>"$OUT/router-cluster.log" | tail -n 1)
SHARD="host=127.0.0.1 port=$((SCALE_PORT + 1)) dbname=credits user=postgres"
psql_q() { "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }

psql_q "$ROUTER" >/dev/null <<SQL
SELECT count(*) FROM credits_router.put_plan('bench_unlimited', NULL);
SELECT count(credits.grant_credits(u, 100000000, 'bench'))
  FROM (SELECT ('00000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid AS u
          FROM generate_series(1, $USERS) n) x;
SELECT count(*) FROM (SELECT ('00000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid AS u
                        FROM generate_series(1, $USERS) n) x, LATERAL credits.set_plan(x.u, 'bench_unlimited');
SQL

cat >"$OUT/consume.pgbench" <<'PGB'
\set n random(1, :users)
SELECT credits.credits_consume(('00000000-0000-4000-8000-' || lpad(:n::text, 12, '0'))::uuid, 'image', 1);
PGB
cat >"$OUT/balance.pgbench" <<'PGB'
\set n random(1, :users)
SELECT credits.balance(('00000000-0000-4000-8000-' || lpad(:n::text, 12, '0'))::uuid);
PGB

run() {   # run CONNINFO SCRIPT CLIENTS: "tps latency_ms"
    local out
    out=$("$PGBIN/pgbench" -n -M prepared -c "$3" -j "$(($3 < 2 ? $3 : 2))" -T "$T" -D users="$USERS" \
          -f "$OUT/$2.pgbench" "$1" 2>&1) || { echo "0 0"; echo "$out" >>"$OUT/errors.log"; return; }
    echo "$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out") $(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")"
}

{
    echo "## Router overhead: PL/Proxy router + 1 shard on this machine ($(nproc) cores, ${T}s per run)"
    echo
    echo "| case | clients | direct calls/s | direct ms | router calls/s | router ms | latency ratio | added ms/call |"
    echo "|---|---|---|---|---|---|---|---|"
} >"$OUT/router.md"
for script in consume balance; do
    for clients in 1 4; do
        read -r dtps dlat < <(run "$SHARD" "$script" "$clients")
        read -r rtps rlat < <(run "$ROUTER" "$script" "$clients")
        awk -v s="$script" -v c="$clients" -v dt="$dtps" -v dl="$dlat" -v rt="$rtps" -v rl="$rlat" 'BEGIN {
            printf "| %s | %d | %.0f | %.3f | %.0f | %.3f | %.2f | %.3f |\n",
                   s, c, dt, dl, rt, rl, (dl > 0 ? rl / dl : 0), rl - dl }' >>"$OUT/router.md"
    done
done
cat "$OUT/router.md"
