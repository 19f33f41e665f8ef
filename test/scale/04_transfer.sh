#!/usr/bin/env bash
# Scale suite: a RevenueCat TRANSFER from user A (shard 0) to user B
# (shard 1), with a crash between its halves (src/shard_transfer.c).
#   - A buys a subscription (pro) through the router
#   - B's shard is down: the TRANSFER fails with PT503 after its first half
#     committed on A's shard (A has lost pro, B has not got it yet)
#   - B's shard is back: the store's retry of the same event converges (B
#     pro, A not, the first half replayed, not applied twice); a third
#     delivery is a duplicate and changes nothing
#   - a TRANSFER between two users of one shard stays one transaction there
source "$(dirname "$0")/lib.bash"

echo "1..8"
scale_up 2
ok "$?" "a router and 2 shards"
setup_router 20 2
router -c "SELECT count(*) FROM credits_router.put_product('studio_pro_monthly', plan => 'pro')" >/dev/null
A=$(user_on 0 1) B=$(user_on 1 1) C=$(user_on 1 2)
now_ms=$(router -c "SELECT (extract(epoch FROM now()) * 1000)::bigint")

rc_event() {   # rc_event JSON-FIELDS: a RevenueCat webhook body
    echo "{\"api_version\": \"1.0\", \"event\": {\"environment\": \"PRODUCTION\", \"store\": \"APP_STORE\", $1}}"
}
purchase() {   # purchase EVENT_ID USER TXN
    router -c "SELECT credits.apply_revenuecat_event('$(rc_event "\"id\": \"$1\", \"type\": \"INITIAL_PURCHASE\",
        \"event_timestamp_ms\": $((now_ms - 60000)), \"app_user_id\": \"$2\", \"product_id\": \"studio_pro_monthly\",
        \"transaction_id\": \"$3\", \"original_transaction_id\": \"$3\", \"purchased_at_ms\": $((now_ms - 60000)),
        \"expiration_at_ms\": $((now_ms + 86400000))")') ->> 'status'"
}
transfer() {   # transfer EVENT_ID FROM TO
    router -c "SELECT credits.apply_revenuecat_event('$(rc_event "\"id\": \"$1\", \"type\": \"TRANSFER\",
        \"event_timestamp_ms\": $now_ms, \"transferred_from\": [\"$2\"], \"transferred_to\": [\"$3\"]")')"
}
plans() { router -c "SELECT string_agg((credits.account_status(u)).plan, ' ' ORDER BY o) FROM unnest(ARRAY[$1]::uuid[]) WITH ORDINALITY x(u, o)"; }

is "$(purchase ev-buy "$A" T-1) $(plans "'$A', '$B'")" "applied pro free" "A (shard 0) buys pro"

scale stop 1
state=$(sqlstate_of transfer ev-move "$A" "$B")
scale start 1
half=$(shard 0 -c "SELECT status FROM credits.entitlements WHERE original_transaction_id = 'T-1'")
is "$state $half $(plans "'$A', '$B'")" "PT503 transferred free free" \
    "B's shard down: the TRANSFER fails (PT503) after A's half; the subscription is on nobody, never on two"

out=$(transfer ev-move "$A" "$B")
is "$(jq -r '.status + " " + .plan + " " + (.moved | tostring)' <<<"$out") $(plans "'$A', '$B'")" \
    "applied pro 1 free pro" "the retry of the same event converges: B has pro, A not"
again=$(transfer ev-move "$A" "$B")
rows=$(shard 0 -c "SELECT count(*) FILTER (WHERE status = 'transferred') || '/' || count(*) FROM credits.entitlements")
rows+=" $(shard 1 -c "SELECT count(*) FILTER (WHERE status = 'active' AND user_id = '$B') || '/' || count(*) FROM credits.entitlements")"
is "$(jq -r .status <<<"$again") $rows $(plans "'$A', '$B'")" "duplicate 1/1 1/1 free pro" \
    "a third delivery is a duplicate: one transferred row on A's shard, one active on B's"
halves=$(shard 0 -c "SELECT source FROM credits.store_events WHERE event_id = 'ev-move'")
halves+=" $(shard 1 -c "SELECT source FROM credits.store_events WHERE event_id = 'ev-move'")"
is "$halves" "revenuecat-transfer revenuecat" "each shard recorded its half once, keyed by the event id"

# B to C, both on shard 1: one transaction there, as on a single node
out=$(transfer ev-local "$B" "$C")
is "$(jq -r '.status + " " + (.moved | tostring)' <<<"$out") $(plans "'$B', '$C'")" "applied 1 free pro" \
    "a TRANSFER within one shard is applied there in one call"
is "$(router -c "SELECT count(*) FROM credits.reconcile()")" 0 "reconcile() finds nothing on either shard"
