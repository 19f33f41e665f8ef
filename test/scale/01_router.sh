#!/usr/bin/env bash
# Scale suite: sharding by user through pgbouncer, printed as TAP: four
# shards and a router (test/scale/cluster.sh up 4: separate clusters), with
# pgbouncer in transaction mode in front of the router.  Every call goes
# through pgbouncer; the shards are read directly only to check where rows
# landed.
#   - users' rows land on the shard their hash names, and only there
#   - ledger ids carry their user's bucket; capture, release and refund route by id
#   - client functions read the JWT at the router (claims set with
#     set_config(..., true) do not outlive the transaction in the pool)
#   - idempotent replays, reconcile and the analytics views across shards
#   - a config change reaches every shard; a shard whose copy differs is
#     reported by credits_router.check_shards(), and the same change again
#     converges
#   - configure_shard's refusals; a shard whose ids lost their bucket (what a
#     restore leaves) is reported until configure_shard runs again
# (A shard down: 03_shard_down.sh; a TRANSFER across shards: 04_transfer.sh.)
# pgbouncer runs as the postgres OS user when started as root.
source "$(dirname "$0")/lib.bash"

SHARDS=4
BOUNCER_DIR=$SCALE_DIR/pgbouncer
BOUNCER_PORT=$((SCALE_PORT + 100))
CLIENT_ROLE=credits_client
ADMIN_ROLE=credits_admin
PG_OS_USER=$(if ((EUID == 0)); then echo postgres; else id -un; fi)

as_server_user() {
    if ((EUID == 0)); then runuser -u "$PG_OS_USER" -- "$@"; else "$@"; fi
}
# Through pgbouncer, one transaction per call: as the owner, the admin role or a user.
bouncer() {
    "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -v VERBOSITY="${VERB:-default}" \
        -h 127.0.0.1 -p "$BOUNCER_PORT" -U postgres -d credits_router "$@"
}
as_admin() { bouncer -c "BEGIN; SET LOCAL ROLE $ADMIN_ROLE; $1; COMMIT;"; }
as_user() {   # as_user UUID SQL: in one transaction with the user's JWT claims, as PostgREST sets them
    bouncer <<SQL
BEGIN;
SET LOCAL ROLE $CLIENT_ROLE;
SELECT set_config('request.jwt.claims', '{"sub": "$1", "role": "authenticated"}', true) \\g /dev/null
$2;
COMMIT;
SQL
}

stop_bouncer() {
    local pid
    pid=$(cat "$BOUNCER_DIR/pgbouncer.pid" 2>/dev/null)
    if [[ $pid =~ ^[0-9]+$ ]]; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
}
trap 'stop_bouncer; scale_down' EXIT

echo "1..26"

# ---- Setup: shards, router, pgbouncer ----------------------------------------
setup() {
    scale_up "$SHARDS" && setup_router 40 "$SHARDS" || return 1
    rm -rf "$BOUNCER_DIR" && mkdir -p "$BOUNCER_DIR" || return 1
    cat >"$BOUNCER_DIR/pgbouncer.ini" <<INI
[databases]
credits_router = host=127.0.0.1 port=$SCALE_PORT dbname=credits_router
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $BOUNCER_DIR/users.txt
admin_users = postgres
pool_mode = transaction
default_pool_size = 2
max_client_conn = 50
logfile = $BOUNCER_DIR/pgbouncer.log
pidfile = $BOUNCER_DIR/pgbouncer.pid
INI
    echo '"postgres" ""' >"$BOUNCER_DIR/users.txt"
    chown -R "$PG_OS_USER" "$BOUNCER_DIR" 2>/dev/null
    as_server_user pgbouncer -q -d "$BOUNCER_DIR/pgbouncer.ini" || return 1
    for _ in $(seq 1 50); do
        bouncer -c 'SELECT 1' >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}
setup
ok "$?" "$SHARDS shards, a router and pgbouncer in front of it"
mode=$("$PGBIN/psql" -X -A -t -h 127.0.0.1 -p "$BOUNCER_PORT" -U postgres -d pgbouncer -c 'SHOW CONFIG' 2>/dev/null |
       awk -F'|' '$1 == "pool_mode" {print $2}')
is "$mode" transaction "pgbouncer runs in transaction mode"

# ---- Routing by user ----------------------------------------------------------
as_admin "SELECT count(credits.grant_credits(id, 100, 'welcome', 'welcome-' || id)) FROM test_users" >/dev/null
ok "$?" "grant_credits for 40 users through pgbouncer"
placed=""
for ((i = 0; i < SHARDS; i++)); do
    placed+=$(shard "$i" -c "SELECT user_id || ' $i' FROM credits.accounts")$'\n'
done
placed=$(grep -v '^$' <<<"$placed" | LC_ALL=C sort)
expected=$(bouncer -c "SELECT id || ' ' || shard FROM test_users ORDER BY 1")
is "$placed" "$expected" "every account is on the shard its user hashes to, and on no other"
used=$(bouncer -c "SELECT count(DISTINCT shard) FROM test_users")
is "$used" "$SHARDS" "the 40 users spread over all $SHARDS shards"

as_admin "SELECT count(credits.credits_consume(id, 'image')) FROM test_users" >/dev/null
balances=$(as_admin "SELECT count(*) FROM test_users WHERE credits.balance(id) = 105 AND credits.daily_available(id) = 4")
is "$balances" 40 "consume, balance and daily_available route to the user's shard (signup 6 + 100 - 1 each)"

misfit=0
for ((i = 0; i < SHARDS; i++)); do
    misfit=$((misfit + $(shard "$i" -c "SELECT count(*) FROM credits.ledger WHERE id % $SHARDS <> $i")))
done
is "$misfit" 0 "every ledger id on shard k is k modulo $SHARDS"

# ---- Client functions: the JWT is read at the router ----------------------------
user=$(bouncer -c "SELECT id FROM test_users WHERE shard = 1 ORDER BY n LIMIT 1")
receipt=$(as_user "$user" "SELECT entry_id || ' ' || user_id || ' ' || balance FROM credits.consume('image', 1, 'jwt-1')")
entry=${receipt%% *}
is "${receipt#* }" "$user 104" "consume() with the user's JWT charges that user"
is "$(shard 1 -c "SELECT count(*) FROM credits.ledger WHERE id = $entry AND user_id = '$user'")" 1 \
    "the entry is on the user's shard (1), id $entry"
reads=$(as_user "$user" "SELECT (SELECT id FROM credits.my_history(1)) || ' ' || credits.my_balance() || ' '
                          || credits.my_daily_available() || ' ' || (SELECT balance FROM credits.my_account)
                          || ' ' || (SELECT operations FROM credits.my_usage() WHERE operation = 'image')")
is "$reads" "$entry 104 3 104 2" "my_history, my_balance, my_daily_available, my_account, my_usage read the user's shard"
replay=$(as_user "$user" "SELECT entry_id || ' ' || replayed FROM credits.consume('image', 1, 'jwt-1')")
is "$replay" "$entry true" "a replayed idempotency key through the router returns the first receipt"
state=$(sqlstate_of bouncer -c "BEGIN; SET LOCAL ROLE $CLIENT_ROLE; SELECT credits.my_balance(); COMMIT;")
is "$state" 28000 "the next transaction on the pool has no claims left: 28000"
state=$(sqlstate_of as_user "$user" "SELECT credits.balance('$user')")
is "$state" 42501 "a client cannot call a service function at the router"
state=$(sqlstate_of as_user "$user" "SELECT credits.consume('video_second', 60)")
is "$state" PT402 "a shard's refusal reaches the client with its SQLSTATE (PT402 not enough credits)"

# ---- Functions on an id: capture, release, refund ------------------------------
routed=$(as_admin "
    WITH one AS (SELECT DISTINCT ON (shard) id, shard FROM test_users ORDER BY shard, n),
         h AS (SELECT o.id, o.shard, (credits.reserve(o.id, 'image', 2)).entry_id AS hold FROM one o),
         c AS (SELECT h.*, CASE WHEN h.shard % 2 = 0 THEN credits.capture(h.hold, 1) ELSE credits.release(h.hold) END AS r FROM h)
    SELECT string_agg(format('%s:%s', c.hold % $SHARDS = c.shard, (c.r).user_id = c.id AND (c.r).kind = CASE WHEN c.shard % 2 = 0 THEN 'capture' ELSE 'release' END), ' ' ORDER BY c.shard) FROM c")
is "$routed" "t:t t:t t:t t:t" "holds carry their shard; capture and release find them through the router"
refund=$(as_admin "SELECT r.user_id || ' ' || r.kind || ' ' || r.amount FROM credits.refund($entry, NULL, 'test') r")
is "$refund" "$user refund 1" "refund of an entry id routes to the entry's shard"
is "$(shard 1 -c "SELECT count(*) FROM credits.ledger WHERE kind = 'refund' AND ref_id = $entry")" 1 \
    "the refund is written next to its charge"

# ---- Every shard at once --------------------------------------------------------
total=0
for ((i = 0; i < SHARDS; i++)); do
    total=$((total + $(shard "$i" -c "SELECT coalesce(sum(operations), 0) FROM credits.usage_daily")))
done
views=$(as_admin "SELECT (SELECT sum(operations) FROM credits.usage_daily) || ' ' || (SELECT count(*) FROM credits.top_users)
                  || ' ' || (SELECT active_users FROM credits.purchases_summary WHERE period = 'today')")
is "$views" "$total 40 40" "usage_daily, top_users and purchases_summary combine every shard"
blocks=$(as_admin "SELECT (SELECT count(DISTINCT user_id) FROM credits.usage_entries) || ' ' || (SELECT count(*) FROM credits.account_plans)")
is "$blocks" "40 40" "usage_entries and account_plans (the views' building blocks) combine every shard"

victim=$(shard 2 -c "SELECT user_id FROM credits.accounts ORDER BY user_id LIMIT 1")
shard 2 -c "UPDATE credits.accounts SET balance = balance + 1 WHERE user_id = '$victim'"
found=$(as_admin "SELECT string_agg(DISTINCT user_id::text, ',') FROM credits.reconcile()")
shard 2 -c "UPDATE credits.accounts SET balance = balance - 1 WHERE user_id = '$victim'"
clean=$(as_admin "SELECT count(*) FROM credits.reconcile()")
is "$found $clean" "$victim 0" "reconcile() through the router finds a discrepancy on shard 2 only, and none once repaired"

# ---- Config on every shard -------------------------------------------------------
bouncer -c "SELECT * FROM credits_router.put_operation('rt_sketch', 3, 10)" >/dev/null
charged=$(as_admin "SELECT string_agg(DISTINCT (-(credits.credits_consume(id, 'rt_sketch')).amount)::text, ',')
                    FROM (SELECT DISTINCT ON (shard) id FROM test_users ORDER BY shard, n) o")
problems=$(as_admin "SELECT string_agg(partition || ':' || cardinality(problems), ' ') FROM credits_router.check_shards()")
is "$charged $problems" "3 0:0 1:0 2:0 3:0" "an operation put at the router prices consumes on every shard; check_shards finds nothing"

shard 2 -c "UPDATE credits.operations SET cost = 7 WHERE name = 'rt_sketch'"
problems=$(as_admin "SELECT string_agg(partition || ':' || array_to_string(problems, ','), ' ')
                     FROM credits_router.check_shards() WHERE cardinality(problems) > 0")
is "$problems" "2:operations" "check_shards reports the shard whose price list differs"
bouncer -c "SELECT * FROM credits_router.put_operation('rt_sketch', 3, 10)" >/dev/null
bouncer -c "SELECT * FROM credits_router.put_setting('credits.hold_timeout', '600')" >/dev/null
problems=$(as_admin "SELECT count(*) FROM credits_router.check_shards() WHERE cardinality(problems) > 0")
settings=$(for ((i = 0; i < SHARDS; i++)); do
               shard "$i" -c "SELECT array_to_string(setconfig, ',') FROM pg_db_role_setting
                                           WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())"
           done | sort -u)
is "$problems $settings" "0 credits.hold_timeout=600" "the same put again converges; a setting reaches every shard"

state=$(sqlstate_of shard 0 -c "SELECT credits.configure_shard(0, 3)")
state2=$(sqlstate_of shard 0 -c "SELECT credits.configure_shard(1, $SHARDS)")
is "$state $state2" "22023 55000" \
    "configure_shard refuses a count that is not a power of 2, and a number whose class the shard's rows are not in"
# What a restore from a dump leaves: the ledger sequence's value, not its step and start.
shard 1 -c "ALTER SEQUENCE credits.ledger_id_seq INCREMENT BY 1"
problems=$(as_admin "SELECT string_agg(partition || ':' || array_to_string(problems, ','), ' ')
                     FROM credits_router.check_shards() WHERE cardinality(problems) > 0")
shard 1 -c "SELECT credits.configure_shard(1, $SHARDS)" >/dev/null
again=$(as_admin "SELECT count(*) FROM credits_router.check_shards() WHERE cardinality(problems) > 0")
is "$problems $again" "1:id_step 0" \
    "check_shards reports a shard whose ids lost their bucket (a restore), until configure_shard runs again"

stop_bouncer
pid=$(cat "$BOUNCER_DIR/pgbouncer.pid" 2>/dev/null)
ok "$([[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; echo $?)" "pgbouncer stopped"
