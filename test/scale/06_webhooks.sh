#!/usr/bin/env bash
# Scale suite: the whole API at the router, and webhooks whose user is known
# only from the body, on two shards.
#   - every function of a shard's schema credits is offered by the router
#     with the same arguments and result, or listed as shard-only
#     (credits_router.function_parity(): the next new function cannot be
#     forgotten); the client role is granted the same functions
#   - store config (webhook secrets, the RevenueCat entitlement map and
#     sandbox allowlist) set at the router reaches every shard; a shard whose
#     copy differs is reported by check_shards until the same call converges
#   - Stripe and Creem (test/fixtures): signed events go to the shard of the
#     user the body names; a renewal or refund that names none goes to the
#     shard holding its subscription or payment; an invoice that arrives
#     before its checkout is kept on its key's shard and applied on the
#     user's shard once the checkout names the user
#   - RevenueCat: an id that is not a uuid routes as credits.user_uuid maps
#     it; an anonymous buyer's kept purchase moves to the shard of the user a
#     later TRANSFER links it to, and applies there; later events naming only
#     the anonymous id follow the link; replay_webhook_events on every shard
#   - a shard restored from a dump (pg_dump / pg_restore) is reported until
#     configure_shard runs again
source "$(dirname "$0")/lib.bash"

FX=$(cd "$(dirname "$0")/../fixtures" && pwd)
echo "1..22"
scale_up 2
ok "$?" "a router and 2 shards"
setup_router 20 2

# ---- The API -------------------------------------------------------------------
missing=$(router -c "SELECT string_agg(function_name || ' ' || problem, ', ') FROM credits_router.function_parity()")
is "$missing" "" "every shard function is at the router with the same signature, or listed as shard-only"
only=$(router -c "SELECT count(*) FROM credits_router.shard_only_functions() o
                  WHERE NOT EXISTS (SELECT 1 FROM credits_router.shard_functions_on(0) s WHERE s.function_name = o.function_name)")
is "$only" 0 "every function listed as shard-only exists on the shards"
same=$(router -c "SELECT credits.user_uuid('user_2NNEqL2nrIRdJ194ndJqAHwEfxC')")
is "$same" "$(shard 1 -c "SELECT credits.user_uuid('user_2NNEqL2nrIRdJ194ndJqAHwEfxC')")" "user_uuid at the router maps like a shard"
client_fns="SELECT string_agg(f::text, ' ' ORDER BY f::text) FROM credits.client_functions() f"
is "$(router -c "$client_fns")" "$(shard 1 -c "$client_fns")" \
    "the router grants the client role the functions a shard grants it (credits.client_functions, written in both)"

# ---- Store config on every shard --------------------------------------------------
router >/dev/null <<'SQL'
SELECT credits.set_webhook_secret('stripe', 'whsec_scale_stripe');
SELECT credits.set_webhook_secret('creem', 'whsec_scale_creem');
SELECT count(*) FROM credits_router.put_product('price_pack_200', credits => 200);
SELECT count(*) FROM credits_router.put_product('price_pro_monthly', plan => 'pro');
SELECT count(*) FROM credits_router.put_product('prod_d1AY2Sadk9YAvLI0pj97f', plan => 'pro');
SELECT count(*) FROM credits_router.put_product('studio_pro_monthly', plan => 'pro');
SELECT credits.map_revenuecat_entitlement('pro', 'pro');
SELECT credits.allow_sandbox_user('qa-tester');
SQL
copies=$(for k in 0 1; do shard "$k" -c "SELECT (SELECT count(*) FROM credits_secrets.webhook_secrets) || '/'
                                          || (SELECT count(*) FROM credits.revenuecat_entitlements) || '/'
                                          || (SELECT count(*) FROM credits.revenuecat_sandbox_users)"; done | sort -u)
problems=$(router -c "SELECT count(*) FROM credits_router.check_shards() WHERE cardinality(problems) > 0")
is "$copies $problems" "2/1/1 0" "webhook secrets, the entitlement map and the sandbox allowlist set at the router are on both shards"
shard 1 -c "UPDATE credits.revenuecat_entitlements SET plan = 'free' WHERE entitlement_id = 'pro'"
shard 1 -c "DELETE FROM credits.revenuecat_sandbox_users" >/dev/null
problems=$(router -c "SELECT string_agg(partition || ':' || array_to_string(problems, ','), ' ')
                      FROM credits_router.check_shards() WHERE cardinality(problems) > 0")
is "$problems" "1:revenuecat_entitlements,revenuecat_sandbox_users" \
    "check_shards reports a shard whose RevenueCat mapping or sandbox allowlist differs"
router -c "SELECT credits.map_revenuecat_entitlement('pro', 'pro'), credits.allow_sandbox_user('qa-tester')" >/dev/null
shard 1 -c "SELECT credits.set_webhook_secret('stripe', 'whsec_other')" >/dev/null
problems=$(router -c "SELECT string_agg(partition || ':' || array_to_string(problems, ','), ' ')
                      FROM credits_router.check_shards() WHERE cardinality(problems) > 0")
router -c "SELECT credits.set_webhook_secret('stripe', 'whsec_scale_stripe')" >/dev/null
again=$(router -c "SELECT count(*) FROM credits_router.check_shards() WHERE cardinality(problems) > 0")
is "$problems $again" "1:webhook_secrets 0" "a shard with another webhook secret is reported; the same calls at the router converge"

# ---- Stripe and Creem through the router -------------------------------------------
router -v stripe_checkout="$(cat "$FX/stripe/checkout_session_completed.json")" \
       -v stripe_invoice="$(cat "$FX/stripe/invoice_paid.json")" \
       -v stripe_sub="$(cat "$FX/stripe/customer_subscription_updated.json")" \
       -v creem_checkout="$(cat "$FX/creem/checkout_completed.json")" \
       -v creem_refund="$(cat "$FX/creem/refund_created.json")" >/dev/null <<'SQL'
CREATE SCHEMA test;
CREATE TABLE test.fx (name text PRIMARY KEY, body jsonb NOT NULL);
INSERT INTO test.fx VALUES ('stripe_checkout', :'stripe_checkout'), ('stripe_invoice', :'stripe_invoice'),
    ('stripe_sub', :'stripe_sub'), ('creem_checkout', :'creem_checkout'), ('creem_refund', :'creem_refund');
-- HMAC-SHA256 (RFC 2104) in SQL, as sql/webhooks_00_setup.sql signs the test bodies.
CREATE FUNCTION test.hmac_sha256(key text, message text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    k bytea := convert_to(key, 'UTF8');
    ipad bytea;
    opad bytea;
BEGIN
    k := k || decode(repeat('00', 64 - length(k)), 'hex');
    ipad := k;
    opad := k;
    FOR i IN 0..63 LOOP
        ipad := set_byte(ipad, i, get_byte(k, i) # 54);
        opad := set_byte(opad, i, get_byte(k, i) # 92);
    END LOOP;
    RETURN encode(sha256(opad || sha256(ipad || convert_to(message, 'UTF8'))), 'hex');
END $$;
-- A fixture with members set (dotted paths), as text.
CREATE FUNCTION test.wh(fixture text, patch jsonb) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    body jsonb := (SELECT f.body FROM test.fx f WHERE f.name = fixture);
    k text;
    v jsonb;
BEGIN
    FOR k, v IN SELECT * FROM jsonb_each(patch) LOOP
        body := jsonb_set(body, string_to_array(k, '.'), v, true);
    END LOOP;
    RETURN body::text;
END $$;
CREATE FUNCTION test.stripe(body text) RETURNS jsonb LANGUAGE sql AS $$
    SELECT credits.apply_stripe_event(body, format('t=%s,v1=%s', t, test.hmac_sha256('whsec_scale_stripe', t || '.' || body)))
      FROM (SELECT extract(epoch FROM now())::bigint::text AS t) x $$;
CREATE FUNCTION test.creem(body text) RETURNS jsonb LANGUAGE sql AS $$
    SELECT credits.apply_creem_event(body, test.hmac_sha256('whsec_scale_creem', body)) $$;
SQL

# A pack bought by a user of shard 1, named by client_reference_id.
U1=$(user_on 1 1)
said=$(router -c "SELECT test.stripe(test.wh('stripe_checkout', jsonb_build_object(
    'id', 'evt_scale_pack', 'data.object.payment_status', 'paid', 'data.object.client_reference_id', '$U1',
    'data.object.metadata', '{\"price_id\": \"price_pack_200\"}'::jsonb))) ->> 'status'")
where=$(for k in 0 1; do shard "$k" -c "SELECT count(*) FROM credits.store_events WHERE event_id = 'evt_scale_pack'"; done | tr '\n' ' ')
is "$said $where$(router -c "SELECT credits.balance('$U1')")" "applied 0 1 206" \
    "a Stripe checkout goes to the shard of the user it names (and only there): 200 credits"

# A subscription whose invoice arrives before its checkout and names no user: kept on its key's shard.
sub=$(router -c "SELECT s FROM (SELECT 'sub_scale_' || g AS s FROM generate_series(1, 50) g) x
                 WHERE credits_router.key_shard('stripe', s) & 1 = 0 LIMIT 1")
U2=$(user_on 1 2)
said=$(router -c "SELECT test.stripe(test.wh('stripe_invoice', jsonb_build_object(
    'id', 'evt_scale_invoice', 'created', extract(epoch FROM now() - interval '5 min')::bigint,
    'data.object.parent.subscription_details.subscription', '$sub',
    'data.object.lines.data.0.pricing.price_details', '{\"price\": \"price_pro_monthly\"}'::jsonb,
    'data.object.lines.data.0.period.end', extract(epoch FROM now() + interval '30 days')::bigint))) ->> 'reason'")
kept=$(shard 0 -c "SELECT count(*) FROM credits.webhook_events WHERE event_id = 'evt_scale_invoice'")
is "$said $kept" "unknown_user 1" "an invoice before its checkout, naming no user, is kept on its subscription's shard (0)"
said=$(router -c "SELECT test.stripe(test.wh('stripe_checkout', jsonb_build_object(
    'id', 'evt_scale_sub', 'created', extract(epoch FROM now() - interval '6 min')::bigint,
    'data.object.mode', 'subscription', 'data.object.payment_status', 'paid', 'data.object.subscription', '$sub',
    'data.object.client_reference_id', '$U2', 'data.object.metadata', '{\"price_id\": \"price_pro_monthly\"}'::jsonb))) ->> 'status'")
moved=$(shard 0 -c "SELECT count(*) FROM credits.webhook_events")$(shard 1 -c "SELECT ' ' || count(*) FROM credits.store_events WHERE event_id = 'evt_scale_invoice'")
until_=$(router -c "SELECT plan || ' ' || (plan_until > now() + interval '29 days') FROM credits.account_status('$U2')")
is "$said $moved $until_" "applied 0 1 pro true" \
    "the checkout naming the user (shard 1) brings the kept invoice there: applied, pro for the paid period"

# The subscription's update names no user: the router finds the shard that holds the subscription.
said=$(router -c "SELECT test.stripe(test.wh('stripe_sub', jsonb_build_object(
    'id', 'evt_scale_cancel', 'created', extract(epoch FROM now() - interval '1 min')::bigint,
    'data.object.id', '$sub', 'data.object.metadata', '{}'::jsonb, 'data.object.status', 'active',
    'data.object.cancel_at_period_end', true,
    'data.object.items.data.0.price.id', 'price_pro_monthly'))) ->> 'entitlement_status'")
is "$said" "cancelled" "a subscription event without a user goes to the shard holding the subscription"

# Creem: the checkout names the user by request_id (not a uuid: user_uuid); the refund names only the order.
CU=$(router -c "SELECT credits.user_uuid('my-request-id')")
CS=$(router -c "SELECT credits_router.user_shard('$CU') & 1")
said=$(router -c "SELECT test.creem(body::text) ->> 'status' FROM test.fx WHERE name = 'creem_checkout'")
is "$said $(shard "$CS" -c "SELECT plan FROM credits.account_status('$CU')")" "applied pro" \
    "a Creem checkout goes to the shard of credits.user_uuid(request_id) ($CS)"
said=$(router -c "SELECT test.creem(body::text) ->> 'status' FROM test.fx WHERE name = 'creem_refund'")
is "$said $(router -c "SELECT plan FROM credits.account_status('$CU')")" "applied free" \
    "a Creem refund naming only its order and subscription goes to the shard that holds them"

# ---- RevenueCat: ids that are not uuids, anonymous buyers ------------------------------
now_ms=$(router -c "SELECT (extract(epoch FROM now()) * 1000)::bigint")
rc() {   # rc EVENT-FIELDS: apply a RevenueCat body at the router, print the result
    router -c "SELECT credits.apply_revenuecat_event('{\"api_version\": \"1.0\", \"event\": {\"environment\": \"PRODUCTION\",
        \"store\": \"APP_STORE\", \"event_timestamp_ms\": $now_ms, $1}}')"
}
purchase_fields() {   # purchase_fields EVENT_ID APP_USER_ID TXN
    echo "\"id\": \"$1\", \"type\": \"INITIAL_PURCHASE\", \"app_user_id\": \"$2\", \"original_app_user_id\": \"$2\",
          \"aliases\": [\"$2\"], \"product_id\": \"studio_pro_monthly\", \"entitlement_ids\": [\"pro\"],
          \"transaction_id\": \"$3\", \"original_transaction_id\": \"$3\", \"purchased_at_ms\": $((now_ms - 1000)),
          \"expiration_at_ms\": $((now_ms + 86400000))"
}
ext=$(router -c "SELECT 'ba_user_' || g FROM generate_series(1, 50) g
                 WHERE credits_router.user_shard(credits.user_uuid('ba_user_' || g)) & 1 = 1 LIMIT 1")
said=$(rc "$(purchase_fields rc_scale_ext "$ext" rc_txn_ext)" | jq -r .status)
is "$said $(shard 1 -c "SELECT plan FROM credits.account_status(credits.user_uuid('$ext'))")" "applied pro" \
    "a RevenueCat app user id that is not a uuid goes to the shard of its user_uuid (1)"

router -c "SELECT count(*) FROM credits_router.put_setting('credits.external_user_ids', 'on')" >/dev/null
is "$(as_user "$ext" "SELECT plan FROM credits.my_account")" "pro" \
    "with credits.external_user_ids put at the router, a client whose JWT sub is that id reads its account on shard 1"
anon=$(router -c "SELECT '\$RCAnonymousID:scale' || g FROM generate_series(1, 50) g
                  WHERE credits_router.key_shard('revenuecat', '\$RCAnonymousID:scale' || g) & 1 = 0 LIMIT 1")
said=$(rc "$(purchase_fields rc_scale_anon "$anon" rc_txn_anon)" | jq -r .reason)
kept=$(shard 0 -c "SELECT count(*) FROM credits.webhook_events WHERE event_id = 'rc_scale_anon'")
is "$said $kept" "anonymous_user 1" "an anonymous buyer's purchase is kept on its anonymous id's shard (0)"
U3=$(user_on 1 3)
said=$(rc "\"id\": \"rc_scale_link\", \"type\": \"TRANSFER\", \"transferred_from\": [\"$anon\"], \"transferred_to\": [\"$U3\"]" | jq -r .status)
after=$(shard 0 -c "SELECT count(*) FROM credits.webhook_events")$(shard 1 -c "SELECT ' ' || count(*) FROM credits.store_events WHERE event_id = 'rc_scale_anon'")
is "$said $after $(router -c "SELECT plan FROM credits.account_status('$U3')")" "applied 0 1 pro" \
    "a TRANSFER linking the anonymous id to a user of shard 1 moves the kept purchase there, where it applies"
said=$(rc "\"id\": \"rc_scale_anon_renew\", \"type\": \"RENEWAL\", \"app_user_id\": \"$anon\", \"original_app_user_id\": \"$anon\",
           \"aliases\": [\"$anon\"], \"product_id\": \"studio_pro_monthly\", \"transaction_id\": \"rc_txn_anon_2\",
           \"original_transaction_id\": \"rc_txn_anon\", \"purchased_at_ms\": $now_ms,
           \"expiration_at_ms\": $((now_ms + 2 * 86400000))" | jq -r .status)
is "$said $(shard 1 -c "SELECT count(*) FROM credits.store_events WHERE event_id = 'rc_scale_anon_renew'")" "applied 1" \
    "a later event naming only the anonymous id goes to the shard that linked it (1) and applies there"
# A kept invoice of the subscription left on shard 0 (a move cut short, or a reshard): the router's replay moves it.
body=$(router -c "SELECT test.wh('stripe_invoice', jsonb_build_object(
    'id', 'evt_scale_stranded', 'created', extract(epoch FROM now())::bigint,
    'data.object.id', 'in_scale_stranded', 'data.object.parent.subscription_details.subscription', '$sub',
    'data.object.lines.data.0.pricing.price_details', '{\"price\": \"price_pro_monthly\"}'::jsonb,
    'data.object.lines.data.0.period.end', extract(epoch FROM now() + interval '60 days')::bigint))")
shard 0 -v body="$body" >/dev/null <<SQL
INSERT INTO credits.webhook_events (provider, event_id, event_type, event_at, subscription_id, transaction_id, reason, payload)
VALUES ('stripe', 'evt_scale_stranded', 'invoice.paid', now(), '$sub', 'in_scale_stranded', 'unknown_user', :'body');
SQL
replay=$(router -c "SELECT (r ->> 'moved') || ' ' || (r ->> 'kept') FROM credits.replay_webhook_events() r")
kept=0
for k in 0 1; do kept=$((kept + $(shard "$k" -c "SELECT count(*) FROM credits.webhook_events"))); done
applied=$(shard 1 -c "SELECT count(*) FROM credits.store_events WHERE event_id = 'evt_scale_stranded'")
is "$replay $applied" "1 $kept 1" \
    "replay_webhook_events at the router moves a kept event to its user's shard, where it applies, and replays every shard"

# ---- A shard restored from a dump ---------------------------------------------------
conn1=$(shard_conninfo 1)
"$PGBIN/pg_dump" -Fc -d "$conn1" -f "$SCALE_DIR/shard1.dump" &&
    psql_c "${conn1/dbname=credits/dbname=postgres}" -c "CREATE DATABASE restored" &&
    "$PGBIN/pg_restore" -d "${conn1/dbname=credits/dbname=restored}" "$SCALE_DIR/shard1.dump" 2>"$SCALE_DIR/restore.log"
router -c "ALTER SERVER credits_shards OPTIONS (SET p1 '${conn1/dbname=credits/dbname=restored}')"
problems=$(router -c "SELECT string_agg(partition || ':' || array_to_string(problems, ','), ' ')
                      FROM credits_router.check_shards() WHERE cardinality(problems) > 0")
"$PGBIN/psql" -X -q -A -t -d "${conn1/dbname=credits/dbname=restored}" -c "SELECT credits.configure_shard(1, 2)" >/dev/null
router -c "SELECT count(*) FROM credits_router.put_setting('credits.external_user_ids', 'on')" >/dev/null
again=$(router -c "SELECT count(*) FROM credits_router.check_shards() WHERE cardinality(problems) > 0")
is "$problems $again" "1:id_step,settings 0" \
    "a shard restored with pg_restore is reported (id_step; its database settings are not in the dump) until configure_shard and the setting run again"
state=$(router -c "SELECT balance || ' ' || plan FROM credits.account_status('$U1')")
is "$state" "206 free" "the restored shard serves its users"
