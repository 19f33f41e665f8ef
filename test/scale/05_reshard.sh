#!/usr/bin/env bash
# Scale suite: resharding from 2 shards to 4 while clients keep calling,
# following README, "Resharding, step by step".
#   - 40 users with history (grants, consumes, an open hold each, a refund),
#     recorded through the router before; a webhook secret, a RevenueCat
#     entitlement map and sandbox allowlist (copied to the new shards)
#   - steps: add shards 2 and 3, route p2/p3 to their parents, split the
#     parents (configure_shard(k, 4)), move the users (one of them after an
#     interrupted earlier attempt left a stale copy on the target), route
#     p2/p3 to the new shards
#   - during the moves a client charging moving users gets receipts or
#     PT503, nothing else, and every receipt is kept
#   - a user of a moving partition deleted during the window (after the
#     new shard first copied its parent's deletion records): after step 5's
#     second copy_from_parent it reads on its new shard as it did right
#     after the deletion, not as a new user with a fresh signup bonus
#   - after: every account on the one shard that owns it, balances and
#     entry counts as before plus the acknowledged calls, the old holds are
#     captured through the router by their old ids, check_shards() and
#     reconcile() find nothing
source "$(dirname "$0")/lib.bash"

echo "1..11"
scale_up 2
ok "$?" "a router and 2 shards"
setup_router 40 2
router >/dev/null <<'SQL'
SELECT count(*) FROM credits_router.put_plan('unlimited', NULL);
SELECT credits.set_webhook_secret('stripe', 'whsec_reshard'), credits.map_revenuecat_entitlement('pro', 'pro'),
       credits.allow_sandbox_user('qa-tester');
SELECT count(credits.grant_credits(id, 1000, 'seed', 'seed-' || n)) FROM test_users;
SELECT count(*) FROM test_users, LATERAL credits.set_plan(id, 'unlimited');
SELECT count(credits.credits_consume(id, 'image', 2, 'c-' || n)) FROM test_users;
CREATE TABLE holds AS SELECT id, (credits.reserve(id, 'image', 3)).entry_id AS hold FROM test_users;
SELECT count(credits.refund(r.entry_id, 1, 'test'))
  FROM test_users, LATERAL credits.credits_consume(id, 'image', 1, 'r-' || n) r;
SQL
ok "$?" "40 users with grants, consumes, refunds and an open hold each; store config"
before=$(router -c "SELECT string_agg(id || ':' || credits.balance(id), ' ' ORDER BY n) FROM test_users")
entries_before=$(( $(shard 0 -c "SELECT count(*) FROM credits.ledger") + $(shard 1 -c "SELECT count(*) FROM credits.ledger") ))

# 1. two new shards, configured as 2 and 3 of 4, with their parents' config and deletion records
mapfile -t new < <(scale add 2)
shard 2 -c "SELECT credits.copy_from_parent('$(shard_conninfo 0)')" >/dev/null &&
    shard 3 -c "SELECT credits.copy_from_parent('$(shard_conninfo 1)')" >/dev/null
ok "$?" "shards 2 and 3 added (${#new[@]} conninfos), with their parents' config and deletion records"
# a user of p2 deleted during the window, after the new shard copied its parent's deletion
# records (before the split: once split, the parent refuses to create p2/p3 accounts)
gone=$(router -c "SELECT id FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, 200)) g
                   WHERE credits_router.user_shard(id) & 3 = 2 LIMIT 1")
router -c "SELECT credits.grant_credits('$gone', 50, 'test', 'gone-grant')" >/dev/null &&
    router -c "SELECT credits.delete_account('$gone')" >/dev/null
gone_reads=$(router -c "SELECT credits.balance('$gone')")
new_reads=$(router -c "SELECT credits.balance(gen_random_uuid())")

# 2. the router routes 4 partitions, p2 and p3 still to their parents; 3. split the parents
router -c "ALTER SERVER credits_shards OPTIONS (ADD p2 '$(shard_conninfo 0)', ADD p3 '$(shard_conninfo 1)')" &&
    shard 0 -c "SELECT credits.configure_shard(0, 4)" >/dev/null && shard 1 -c "SELECT credits.configure_shard(1, 4)" >/dev/null
moving=$(router -c "SELECT count(*) FROM test_users WHERE credits_router.user_shard(id) & 3 >= 2")
ok "$?" "p2/p3 routed to shards 0/1, which are split into 0 and 1 of 4 ($moving users to move)"

# an interrupted earlier attempt: a stale, partial copy of one moving user on its target
stale=$(router -c "SELECT id FROM test_users WHERE credits_router.user_shard(id) & 3 = 2 ORDER BY n LIMIT 1")
stale_copy=$(shard 0 -c "SELECT jsonb_build_object('accounts', jsonb_set(credits.export_user('$stale') -> 'accounts', '{0,balance}', '0'))")
shard 2 -c "SELECT count(*) FROM credits.import_user('$stale', '$stale_copy', '{\"ledger\": 0, \"lots\": 0, \"entitlements\": 0}')" >/dev/null
# 4. move the users while a client keeps charging the moving ones
mapfile -t movers < <(router -c "SELECT id FROM test_users WHERE credits_router.user_shard(id) & 3 >= 2 ORDER BY n")
(for ((i = 1; i <= 60; i++)); do
     u=${movers[$((i % ${#movers[@]}))]}
     state=$(sqlstate_of router -c "SELECT credits.credits_consume('$u', 'image', 1, 'during-$i')")
     echo "during-$i $u ${state:-ok}"
 done >"$SCALE_DIR.during") &
client=$!
moved=$(router -c "SELECT credits_router.move_users(2, '$(shard_conninfo 2)') + credits_router.move_users(3, '$(shard_conninfo 3)')")
# 5. the deletion records of users deleted meanwhile, then route p2 and p3 to the new shards
shard 2 -c "SELECT credits.copy_from_parent('$(shard_conninfo 0)')" >/dev/null &&
    shard 3 -c "SELECT credits.copy_from_parent('$(shard_conninfo 1)')" >/dev/null
router -c "ALTER SERVER credits_shards OPTIONS (SET p2 '$(shard_conninfo 2)', SET p3 '$(shard_conninfo 3)')"
wait "$client"
states=$(awk '{print $3}' "$SCALE_DIR.during" | sort | uniq -c | awk '{printf "%s:%s ", $2, $1}')
echo "# calls during the move: $states"
is "$moved $(awk '$3 != "ok" && $3 != "PT503"' "$SCALE_DIR.during" | wc -l)" "$moving 0" \
    "every user to move was moved, while the client's calls got receipts or PT503 only"

# where every account is now
placed=$(for k in 0 1 2 3; do shard "$k" -c "SELECT user_id || ' $k' FROM credits.accounts"; done | LC_ALL=C sort)
expected=$(router -c "SELECT id || ' ' || (credits_router.user_shard(id) & 3) FROM test_users ORDER BY 1")
is "$placed" "$expected" "every account is on the one shard that owns it under 4 shards"
problems=$(router -c "SELECT string_agg(partition || ':' || array_to_string(problems, ','), ' ')
                      FROM credits_router.check_shards() WHERE cardinality(problems) > 0")
is "${problems:-none} $(router -c "SELECT count(*) FROM credits.reconcile()")" "none 0" \
    "check_shards() and reconcile() find nothing on the 4 shards"

# nothing lost, nothing doubled
acked=$(awk '$3 == "ok"' "$SCALE_DIR.during" | wc -l)
after=$(router -c "SELECT string_agg(id || ':' || credits.balance(id), ' ' ORDER BY n) FROM test_users")
expect=$(awk 'NR == FNR {if ($3 == "ok") spent[$2]++; next}
              {for (i = 1; i <= NF; i++) {split($i, f, ":"); printf "%s%s:%d", (i > 1 ? " " : ""), f[1], f[2] - spent[f[1]]}}' \
         "$SCALE_DIR.during" <(echo "$before"))
entries_after=0
for k in 0 1 2 3; do entries_after=$((entries_after + $(shard "$k" -c "SELECT count(*) FROM credits.ledger"))); done
is "$after / $entries_after" "$expect / $((entries_before + acked))" \
    "balances and ledger entries are those from before plus the $acked acknowledged calls"

# the holds reserved under 2 shards, captured through the router by their ids
captured=$(router -c "SELECT count(*) FILTER (WHERE (credits.capture(h.hold, 1)).user_id = h.id) FROM holds h")
is "$captured" 40 "the 40 holds reserved before are captured by their old ids, on the users' new shards"

# after the switch: a moved user is served by its new shard, with ids that route there
u=${movers[0]}
entry=$(router -c "SELECT entry_id FROM credits.credits_consume('$u', 'image', 1, 'after')")
home=$(router -c "SELECT credits_router.user_shard('$u') & 3")
is "$((entry & 3)) $(shard "$home" -c "SELECT count(*) FROM credits.ledger WHERE id = $entry AND user_id = '$u'")" "$home 1" \
    "a moved user's next entry is written on its new shard ($home), with an id that routes there"
gone_after=$(router -c "SELECT credits.balance('$gone')")
is "$gone_after $([[ $gone_reads != "$new_reads" ]] && echo differs)" "$gone_reads differs" \
    "a user deleted during the window reads on its new shard as right after the deletion ($gone_reads), not as a new user ($new_reads)"
