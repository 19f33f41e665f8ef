-- claim_pending_purchase: instant unlock for the calling user (JWT sub) until
-- the store's webhook confirms the purchase; it lapses without one.
\set u1 'e3000000-0000-0000-0000-000000000001'
\set u2 'e3000000-0000-0000-0000-000000000002'
\set u3 'e3000000-0000-0000-0000-000000000003'
\set u4 'e3000000-0000-0000-0000-000000000004'

-- The claims, as PostgREST sets them for a request (set_config(..., true) in a
-- transaction; here for the session).
CREATE FUNCTION test.as_user(u uuid) RETURNS void LANGUAGE sql AS $$
    SELECT set_config('request.jwt.claims', json_build_object('sub', u, 'role', 'authenticated')::text, false)
$$;
-- The stable part of a claim's result.
CREATE FUNCTION test.claim(product text, tx text) RETURNS jsonb LANGUAGE sql AS $$
    SELECT credits.claim_pending_purchase(product, tx) - 'expires_at'
$$;

-- Without an authenticated user: 28000, nothing written.
SELECT state, message FROM test.error_of($$SELECT credits.claim_pending_purchase('studio_pro_monthly', 'C1')$$);

SELECT test.as_user(:'u1');
SELECT * FROM test.access_of(:'u1');
-- The purchase sheet succeeded: the app claims the transaction and is unlocked at once.
SELECT test.claim('studio_pro_monthly', 'C1');
SELECT * FROM test.access_of(:'u1');
SELECT source, product_id, plan, status, provisional, expires_at - created_at AS grace
  FROM credits.entitlements WHERE user_id = :'u1';
-- The same claim again (a retry): the same unlock, the same window, not another claim.
SELECT test.claim('studio_pro_monthly', 'C1');
SELECT count(*) AS claims FROM credits.entitlements WHERE user_id = :'u1' AND provisional;
-- Packs are not credited on the client's word: they wait for the store.
SELECT test.claim('credits_500', 'C-pack');
SELECT credits.balance(:'u1') AS balance, (SELECT count(*) FROM credits.entitlements WHERE user_id = :'u1') AS entitlements;
-- At most credits.pending_purchase_daily_limit (3) claims in 24 hours.
SELECT test.claim('studio_pro_monthly', 'C2');
SELECT test.claim('studio_plus_monthly', 'C3');
SELECT state, detail->>'limit' AS limit, (detail->>'retry_after_ms')::bigint BETWEEN 86000000 AND 86400000 AS retry_tomorrow
  FROM test.error_of($$SELECT credits.claim_pending_purchase('studio_pro_monthly', 'C4')$$);
-- Bad input.
SELECT s.label, e.state, e.detail->>'field' AS field
  FROM (VALUES
    ('unknown product', $$SELECT credits.claim_pending_purchase('gold_bars', 'C5')$$),
    ('null product',    $$SELECT credits.claim_pending_purchase(NULL, 'C5')$$),
    ('null transaction',$$SELECT credits.claim_pending_purchase('studio_pro_monthly', NULL)$$),
    ('control char',    $$SELECT credits.claim_pending_purchase('studio_pro_monthly', E'C\t5')$$),
    ('long transaction',format($$SELECT credits.claim_pending_purchase('studio_pro_monthly', %L)$$, repeat('c', 256)))
  ) AS s(label, stmt), LATERAL test.error_of(s.stmt) e;

-- The verified webhook for C1 arrives: it confirms the claim, the store's entitlement takes over.
SELECT test.rc_apply(test.rc_event('initial_purchase', 'rc-c1', :'u1', '-1 min',
    jsonb_build_object('transaction_id', 'C1', 'original_transaction_id', 'C1',
                       'expiration_at_ms', test.ms(now() + interval '30 days'))));
SELECT * FROM test.entitlements_of(:'u1');
SELECT * FROM test.access_of(:'u1');
-- Claiming it now says so.
SELECT test.claim('studio_pro_monthly', 'C1');
-- Another user claiming a transaction the store confirmed for user 1 learns
-- nothing: the answer is the one for a transaction the store has not
-- reported (no oracle), the claim counts against the limit, and the store's
-- entitlement stays user 1's alone.
\set u5 'e3000000-0000-0000-0000-000000000005'
SELECT test.as_user(:'u5');
SELECT test.claim('studio_pro_monthly', 'C1') - 'claims_left_today' AS confirmed_for_another,
       test.claim('studio_pro_monthly', 'C1-never-reported') - 'claims_left_today' AS unknown;
SELECT count(*) AS claims_of_u5 FROM credits.entitlements WHERE user_id = :'u5' AND provisional;
SELECT user_id = :'u1' AS owner_is_u1, count(*) FROM credits.entitlements
 WHERE original_transaction_id = 'C1' AND NOT provisional GROUP BY 1;
SELECT * FROM credits.reconcile(:'u1');
SELECT * FROM credits.reconcile(:'u5');
-- Products an admin grants (source 'admin') cannot be claimed: like an unknown product.
INSERT INTO credits.products (product_id, plan, source) VALUES ('staff_pro', 'pro', 'admin');
SELECT e.state, e.message, e.detail FROM test.error_of($$SELECT credits.claim_pending_purchase('staff_pro', 'S1')$$) e
UNION ALL
SELECT e.state, replace(e.message, 'no_such_product', 'staff_pro'), e.detail
  FROM test.error_of($$SELECT credits.claim_pending_purchase('no_such_product', 'S1')$$) e;
SELECT test.as_user(:'u2');

-- Without the webhook, the unlock lapses at the end of the window (lazily, on the next touch).
SET credits.pending_purchase_grace = '1s';
SELECT test.claim('studio_pro_monthly', 'C6');
SELECT * FROM test.access_of(:'u2');
SELECT pg_sleep(1.2);
SELECT * FROM test.access_of(:'u2');
SELECT test.claim('studio_pro_monthly', 'C6');
SELECT entitlement_plan FROM credits.accounts WHERE user_id = :'u2';
-- ... and when another entitlement is still active, the account falls back to it.
SELECT kind FROM credits.apply_purchase(:'u3', 'studio_plus_monthly', 'C7-plus', 'stripe', now(), now() + interval '30 days');
SELECT test.as_user(:'u3');
SELECT test.claim('studio_pro_monthly', 'C7');
SELECT * FROM test.access_of(:'u3');
SELECT pg_sleep(1.2);
SELECT * FROM test.access_of(:'u3');
RESET credits.pending_purchase_grace;
SELECT * FROM credits.reconcile(:'u2');
SELECT * FROM credits.reconcile(:'u3');

-- apply_purchase of the claimed transaction (the app's own backend verified it) confirms it too.
SELECT test.as_user(:'u4');
SELECT test.claim('studio_pro_monthly', 'C8');
SELECT kind FROM credits.apply_purchase(:'u4', 'studio_pro_monthly', 'C8', 'app_store', now(), now() + interval '30 days');
SELECT * FROM test.entitlements_of(:'u4');
-- No claims at all when the limit is 0.
SET credits.pending_purchase_daily_limit = 0;
SELECT state FROM test.error_of($$SELECT credits.claim_pending_purchase('studio_pro_monthly', 'C9')$$);
RESET credits.pending_purchase_daily_limit;
SELECT set_config('request.jwt.claims', '', false);
SELECT * FROM credits.reconcile(:'u4');
