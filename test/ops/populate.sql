-- Every kind of row the extension keeps, for the backup, replica and
-- upgrade tests (test/ops/*.sh): admin-edited seeds, a deleted and a renamed seed, a custom
-- plan in use, products, holds open and settled, a refund, a pack, a
-- subscription, RevenueCat events, a deleted account, limiter state.
-- Users are fixed uuids, so a test can replay their keys afterwards.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS credits;

-- Config: seeds edited and deleted, a custom plan and operation, products.
UPDATE credits.plans SET daily_limit = 7, signup_bonus = 40 WHERE name = 'free';
UPDATE credits.operations SET cost = 2, description = 'one image, repriced' WHERE name = 'image';
DELETE FROM credits.operations WHERE name = 'prompt_kchar';
INSERT INTO credits.plans (name, daily_limit, signup_bonus, monthly_allocation, rank, rate_burst, rate_per_second)
VALUES ('studio', 50, 100, 500, 5, 20, 2);
INSERT INTO credits.operations (name, cost, max_units, required_plan) VALUES ('upscale', 3, 4, 'studio');
INSERT INTO credits.products (product_id, plan) VALUES ('ops_pro_monthly', 'pro');
INSERT INTO credits.products (product_id, credits, pack_expires_after) VALUES ('ops_pack_100', 100, '90 days');
UPDATE credits.plans SET name = 'premium' WHERE name = 'pro';     -- a renamed seed (cascades to products)

CREATE TEMP TABLE u (n int, id uuid);
INSERT INTO u SELECT n, ('0b5e0000-0000-0000-0000-' || lpad(n::text, 12, '0'))::uuid FROM generate_series(1, 6) n;

-- 1: free plan, consumes with keys, a refund, open and settled holds.
SELECT credits.credits_consume(id, 'image', 2, 'ops-c1') FROM u WHERE n = 1;
SELECT credits.credits_consume(id, 'video_second', 3, 'ops-c2', 'job-7') FROM u WHERE n = 1;
SELECT credits.refund((credits.credits_consume(id, 'image', 1, 'ops-c3')).entry_id, NULL, 'bad output', 'ops-r1')
  FROM u WHERE n = 1;
SELECT credits.reserve(id, 'image', 3, 'ops-h-open') FROM u WHERE n = 1;
SELECT credits.capture((credits.reserve(id, 'image', 3, 'ops-h-cap')).entry_id, 2) FROM u WHERE n = 1;
SELECT credits.release((credits.reserve(id, 'image', 1, 'ops-h-rel')).entry_id) FROM u WHERE n = 1;
-- 2: the custom plan, an admin grant with an expiry, a monthly allocation.
SELECT credits.set_plan(id, 'studio') FROM u WHERE n = 2;
SELECT credits.grant_credits(id, 25, 'support gesture', 'ops-g1', now() + interval '30 days') FROM u WHERE n = 2;
SELECT credits.credits_consume(id, 'upscale', 2, 'ops-c4') FROM u WHERE n = 2;
SELECT credits.set_timezone(id, 'Europe/Paris') FROM u WHERE n = 2;
-- 3: a pack and a subscription through apply_purchase.
SELECT credits.apply_purchase(id, 'ops_pack_100', 'ops-tx-pack', 'stripe', now()) FROM u WHERE n = 3;
SELECT credits.apply_purchase(id, 'ops_pro_monthly', 'ops-tx-sub', 'stripe', now(), now() + interval '30 days')
  FROM u WHERE n = 3;
SELECT credits.credits_consume(id, 'video_second', 2, 'ops-c5') FROM u WHERE n = 3;
-- 4: RevenueCat events (a subscription, then a renewal).
SELECT credits.apply_revenuecat_event(jsonb_build_object('api_version', '1.0', 'event', jsonb_build_object(
           'id', 'ops-rc-' || t, 'type', t, 'app_user_id', id, 'product_id', 'ops_pro_monthly',
           'transaction_id', 'ops-rc-tx-' || t, 'original_transaction_id', 'ops-rc-orig',
           'event_timestamp_ms', (extract(epoch FROM now()) * 1000)::bigint + o,
           'purchased_at_ms', (extract(epoch FROM now()) * 1000)::bigint,
           'expiration_at_ms', (extract(epoch FROM now() + interval '30 days') * 1000)::bigint,
           'environment', 'PRODUCTION', 'store', 'APP_STORE')))
  FROM u, (VALUES ('INITIAL_PURCHASE', 0), ('RENEWAL', 1)) e(t, o) WHERE n = 4 ORDER BY o;
-- 5: an account deleted (a tombstone), after spending.
SELECT credits.credits_consume(id, 'image', 1, 'ops-c6') FROM u WHERE n = 5;
SELECT credits.delete_account(id) FROM u WHERE n = 5;
-- 6: the general limiter's state.
SELECT credits.rate_limit(id, 'ops-export', 5, 1) FROM u WHERE n = 6;

-- Webhooks (1.1 on; upgrade.sh fills a 1.0 database with this file too): a provider's
-- secret, and an event kept for replay (as apply_creem_event keeps one whose product is not
-- mapped yet; written directly: a signed body is not the point here).
DO $$
BEGIN
    IF to_regclass('credits.webhook_events') IS NOT NULL THEN
        PERFORM credits.set_webhook_secret('creem', 'whsec_ops_populate');
        INSERT INTO credits.webhook_events (provider, event_id, event_type, event_at, transaction_id,
                                            reason, payload)
        VALUES ('creem', 'evt_ops_kept', 'checkout.completed', now() - interval '1 hour', 'ord_ops_kept',
                'unknown_product', '{"id": "evt_ops_kept", "eventType": "checkout.completed"}');
    END IF;
END
$$;

-- Sharding (1.1 on): this database's place, shard 0 of 1 (credits.shard_config round-trips;
-- the ledger id step does not, and needs no repair on a single node).
DO $$
BEGIN
    IF to_regclass('credits.shard_config') IS NOT NULL THEN
        PERFORM credits.configure_shard(0, 1);
    END IF;
END
$$;

-- Settings and delegations (1.1 on): a setting changed by the admin, and the owner's tasks
-- delegated (here to the owner itself: the row is what the copies must keep).
DO $$
BEGIN
    IF to_regclass('credits.settings') IS NOT NULL THEN
        INSERT INTO credits.settings (name, value) VALUES ('deletion_retention', '400d');
        PERFORM credits.delegate_owner(current_user);
    END IF;
END
$$;

-- RevenueCat (1.1 on): an entitlement id mapped to a plan, a sandbox tester, and an
-- anonymous id linked to a user by an alias event.
DO $$
BEGIN
    IF to_regclass('credits.revenuecat_aliases') IS NOT NULL THEN
        PERFORM credits.map_revenuecat_entitlement('ops_gold', 'premium');
        PERFORM credits.allow_sandbox_user('ops-app-review', 'App Review');
        PERFORM credits.apply_revenuecat_event(jsonb_build_object('api_version', '1.0', 'event', jsonb_build_object(
            'id', 'ops-rc-alias', 'type', 'SUBSCRIBER_ALIAS', 'app_user_id', 'ops-rc-user',
            'aliases', jsonb_build_array('$RCAnonymousID:ops'),
            'event_timestamp_ms', (extract(epoch FROM now()) * 1000)::bigint)));
    END IF;
END
$$;
