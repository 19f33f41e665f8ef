#!/usr/bin/env bash
# Scale suite: a shard killed under load (README, "Pooling and scale-out",
# "A shard down").  Four workers charge users of both shards through the
# router, each call with its own idempotency key; shard 1 is killed
# (immediate stop: a crash) in the middle and started again.
#   - the calls of shard 1's users fail with PT503 and a hint, nothing else
#   - shard 0's users are not affected (no failed call)
#   - nothing acknowledged is lost: every key that returned a receipt is in
#     its user's shard after the restart, once
#   - retrying the failed calls with their keys converges: one entry per key,
#     balances reconcile on every shard
source "$(dirname "$0")/lib.bash"

echo "1..8"
scale_up 2
ok "$?" "a router and 2 shards"
setup_router 8 2
router -c "SELECT count(*) FROM credits_router.put_plan('unlimited', NULL)" \
       -c "SELECT count(credits.grant_credits(id, 10000, 'load')) FROM test_users" \
       -c "SELECT count(*) FROM test_users, LATERAL credits.set_plan(id, 'unlimited')" >/dev/null
ok "$?" "10000 credits for 8 users on 2 shards, on a plan without a daily limit, through the router"

OUT=$SCALE_DIR.load
mkdir -p "$OUT"
# worker W: 150 calls over the 8 users; one line per call: key user shard ok|SQLSTATE
worker() {
    local w=$1 i n user shard state
    mapfile -t users < <(router -F ' ' -c "SELECT id, shard FROM test_users ORDER BY n")
    for ((i = 1; i <= 150; i++)); do
        n=$(((i + w) % ${#users[@]}))
        user=${users[$n]% *} shard=${users[$n]#* }
        state=$(VERB=sqlstate router -c "SELECT credits.credits_consume('$user', 'image', 1, 'k-$w-$i')" 2>&1 >/dev/null |
                sed -n 's/^ERROR: *\([0-9A-Z]\{5\}\).*/\1/p')
        echo "k-$w-$i $user $shard ${state:-ok}"
    done >"$OUT/w$w"
}
for w in 1 2 3 4; do worker "$w" & done
sleep 3
scale stop 1
sleep 3
hint=$(router -c "SELECT credits.balance('$(user_on 1)')" 2>&1 >/dev/null | grep -c 'HINT:.*retry')
scale start 1
wait
cat "$OUT"/w* >"$OUT/all"

failed1=$(awk '$3 == 1 && $4 != "ok"' "$OUT/all" | wc -l)
states1=$(awk '$3 == 1 && $4 != "ok" {print $4}' "$OUT/all" | sort -u | tr '\n' ' ')
echo "# $(wc -l <"$OUT/all") calls; shard 1 failed $failed1 (${states1:-none})"
ok "$([[ $failed1 -gt 0 && $states1 == "PT503 " ]]; echo $?)" \
    "the calls of shard 1's users while it was down failed with PT503 only"
is "$hint" 1 "the error says to retry later (hint)"
is "$(awk '$3 == 0 && $4 != "ok"' "$OUT/all" | wc -l)" 0 "no call of shard 0's users failed"

# every acknowledged key, once, on its user's shard
acked=$(awk '$4 == "ok" {print $1}' "$OUT/all" | sort)
found=$( (shard 0 -c "SELECT idempotency_key FROM credits.ledger WHERE idempotency_key LIKE 'k-%'"
          shard 1 -c "SELECT idempotency_key FROM credits.ledger WHERE idempotency_key LIKE 'k-%'") | sort)
missing=$(comm -23 <(echo "$acked") <(echo "$found") | wc -l)
dups=$(echo "$found" | uniq -d | wc -l)
is "$missing $dups" "0 0" "every acknowledged call is in its shard after the restart, once"

# the failed calls again, with their keys
while read -r key user _ state; do
    [[ $state == ok ]] || router -c "SELECT credits.credits_consume('$user', 'image', 1, '$key')" >/dev/null 2>&1
done <"$OUT/all"
found=$( (shard 0 -c "SELECT idempotency_key FROM credits.ledger WHERE idempotency_key LIKE 'k-%'"
          shard 1 -c "SELECT idempotency_key FROM credits.ledger WHERE idempotency_key LIKE 'k-%'") | sort)
is "$(echo "$found" | wc -l) $(echo "$found" | uniq -d | wc -l)" "600 0" \
    "the failed calls retried with their keys: one entry per key, 600 in all"
is "$(router -c "SELECT count(*) FROM credits.reconcile()") $(router -c "SELECT sum(credits.balance(id)) FROM test_users")" \
    "0 $((8 * (10000 + 6) - 600))" "balances reconcile on both shards and add up"
