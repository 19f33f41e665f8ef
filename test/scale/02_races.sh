#!/usr/bin/env bash
# Scale suite: the races of the isolation specs core_double_tap,
# core_last_credit and core_daily_limit, through the router, for a user on
# each of two shards at once (16 concurrent client sessions each time).
#   - double tap: one idempotency key sent 8 times at once charges once
#   - last credit: 8 requests for the last credit, one wins, 7 get PT402
#   - daily limit: 10 requests at once with 5 left today, 5 win, 5 get PT429
source "$(dirname "$0")/lib.bash"

echo "1..8"
scale_up 2
ok "$?" "a router and 2 shards"
setup_router 40 2

# race NAME SQL_PER_USER USERS...: 8 (or RACERS) sessions per user at once,
# one output line per session: "user ok|SQLSTATE"
race() {
    local name=$1 sql=$2 user i
    shift 2
    for user in "$@"; do
        for ((i = 1; i <= ${RACERS:-8}; i++)); do
            (state=$(sqlstate_of as_user "$user" "${sql//USER/$user}")
             echo "$user ${state:-ok}") >"$SCALE_DIR.race.$name.$user.$i" &
        done
    done
    wait
    cat "$SCALE_DIR.race.$name".*
    rm -f "$SCALE_DIR.race.$name".*
}
per_user() {   # per_user OUTPUT USER: "oks refusals(states)"
    awk -v u="$2" '$1 == u {if ($2 == "ok") ok++; else {bad++; s[$2] = 1}}
                   END {printf "%d %d", ok, bad; for (k in s) printf " %s", k; print ""}' <<<"$1"
}

u0=$(user_on 0 1) u1=$(user_on 1 1)
out=$(race tap "SELECT credits.consume('image', 1, 'tap-1')" "$u0" "$u1")
entries=$(shard 0 -c "SELECT count(*) FROM credits.ledger WHERE user_id = '$u0' AND idempotency_key = 'tap-1'")
entries+=" $(shard 1 -c "SELECT count(*) FROM credits.ledger WHERE user_id = '$u1' AND idempotency_key = 'tap-1'")"
is "$(per_user "$out" "$u0") / $(per_user "$out" "$u1") / $entries" "8 0 / 8 0 / 1 1" \
    "double tap on two shards at once: 8 taps each answered, one entry each"
balances=$(router -c "SELECT credits.balance('$u0') || ' ' || credits.balance('$u1')")
is "$balances" "5 5" "each was charged once (signup bonus 6 - 1)"

# last credit: 6 - 5 (one video second) = 1 left
u0=$(user_on 0 2) u1=$(user_on 1 2)
router -c "SELECT credits.credits_consume('$u0', 'video_second'), credits.credits_consume('$u1', 'video_second')" >/dev/null
out=$(race last "SELECT credits.consume('image')" "$u0" "$u1")
is "$(per_user "$out" "$u0") / $(per_user "$out" "$u1")" "1 7 PT402 / 1 7 PT402" \
    "last credit on two shards at once: one request wins each, the others get PT402"
is "$(router -c "SELECT credits.balance('$u0') || ' ' || credits.balance('$u1')")" "0 0" "no balance below zero"

# daily limit: free plan, 5 a day; 100 credits so that only the limit refuses
u0=$(user_on 0 3) u1=$(user_on 1 3)
router -c "SELECT count(credits.grant_credits(u, 100, 'race')) FROM unnest(ARRAY['$u0', '$u1']::uuid[]) u" >/dev/null
out=$(RACERS=10 race daily "SELECT credits.consume('image')" "$u0" "$u1")
is "$(per_user "$out" "$u0") / $(per_user "$out" "$u1")" "5 5 PT429 / 5 5 PT429" \
    "daily limit on two shards at once: 5 of 10 requests win each, the others get PT429"
is "$(router -c "SELECT credits.daily_available('$u0') || ' ' || credits.daily_available('$u1')")" "0 0" \
    "nothing left today for either"
is "$(router -c "SELECT count(*) FROM credits.reconcile()")" 0 "reconcile() finds nothing on either shard"
