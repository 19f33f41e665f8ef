-- apply_revenuecat_event: upgrades, anonymous buyers, kept events, sandbox
-- allowlist, clock bounds (issue 15).  Bodies are the fixtures of
-- test/fixtures/revenuecat patched per scenario; reconcile() after each.
\set a1 'f1500000-0000-0000-0000-000000000001'
\set a2 'f1500000-0000-0000-0000-000000000002'
\set a3 'f1500000-0000-0000-0000-000000000003'
\set a4 'f1500000-0000-0000-0000-000000000004'
\set a5 'f1500000-0000-0000-0000-000000000005'
\set a6 'f1500000-0000-0000-0000-000000000006'
\set a7 'f1500000-0000-0000-0000-000000000007'

-- ==== An App Store upgrade: RENEWAL of the new product, PRODUCT_CHANGE naming the old ====
-- plus monthly, then upgraded to pro yearly.
SELECT test.rc_apply(test.rc_event('initial_purchase', 'up-1', :'a1', '-1 hour',
    jsonb_build_object('product_id', 'studio_plus_monthly', 'transaction_id', 'UP1', 'original_transaction_id', 'UP1',
                       'expiration_at_ms', test.ms(now() + interval '20 days')))) ->> 'plan' AS plan;
-- Equal timestamps, RENEWAL first.
SELECT test.rc_apply(test.rc_event('renewal', 'up-2', :'a1', '-10 min',
    jsonb_build_object('product_id', 'studio_pro_yearly', 'transaction_id', 'UP1-2', 'original_transaction_id', 'UP1',
                       'expiration_at_ms', test.ms(now() + interval '365 days'))));
SELECT test.rc_apply(test.rc_event('product_change', 'up-3', :'a1', '-10 min',
    jsonb_build_object('product_id', 'studio_plus_monthly', 'new_product_id', 'studio_pro_yearly',
                       'transaction_id', 'UP1', 'original_transaction_id', 'UP1',
                       'expiration_at_ms', test.ms(now() + interval '20 days'))));
SELECT product_id, plan, next_product_id, status, expires_at > now() + interval '300 days' AS yearly
  FROM credits.entitlements WHERE user_id = :'a1';
-- A later PRODUCT_CHANGE (and its retry) keeps the new plan too.
SELECT test.rc_apply(test.rc_event('product_change', 'up-4', :'a1', '-5 min',
    jsonb_build_object('product_id', 'studio_plus_monthly', 'new_product_id', 'studio_pro_yearly',
                       'transaction_id', 'UP1', 'original_transaction_id', 'UP1',
                       'expiration_at_ms', test.ms(now() + interval '20 days')))) ->> 'entitlement_plan' AS plan;
SELECT test.rc_apply(test.rc_event('product_change', 'up-4', :'a1', '-5 min',
    jsonb_build_object('product_id', 'studio_plus_monthly', 'new_product_id', 'studio_pro_yearly',
                       'transaction_id', 'UP1', 'original_transaction_id', 'UP1'))) ->> 'status' AS retry;
-- Status-only events name the old product too: they change the status, never product, plan or end.
CREATE FUNCTION test.rc_status_only(fixture text, id text, u uuid, at interval, product text, txn text)
RETURNS TABLE (status text, product_id text, plan text, entitlement_status text, yearly boolean)
LANGUAGE plpgsql AS $$
BEGIN
    status := test.rc_apply(test.rc_event(fixture, id, u, at,
        jsonb_build_object('product_id', product, 'transaction_id', txn, 'original_transaction_id', txn,
                           'cancel_reason', 'UNSUBSCRIBE',
                           'expiration_at_ms', test.ms(now() + interval '20 days')))) ->> 'status';
    SELECT e.product_id, e.plan, e.status::text, e.expires_at > now() + interval '300 days'
      INTO product_id, plan, entitlement_status, yearly
      FROM credits.entitlements e WHERE e.user_id = u;
    RETURN NEXT;
END
$$;
SELECT * FROM test.rc_status_only('billing_issue', 'up-5', :'a1', '-4 min', 'studio_plus_monthly', 'UP1');
SELECT * FROM test.rc_status_only('subscription_paused', 'up-6', :'a1', '-3 min', 'studio_plus_monthly', 'UP1');
SELECT * FROM test.rc_status_only('cancellation', 'up-7', :'a1', '-2 min', 'studio_plus_monthly', 'UP1');
SELECT * FROM test.rc_status_only('uncancellation', 'up-8', :'a1', '-1 min', 'studio_plus_monthly', 'UP1');
-- Each delivered again, and out of order (older than the last one applied): nothing changes.
SELECT * FROM test.rc_status_only('billing_issue', 'up-5', :'a1', '-4 min', 'studio_plus_monthly', 'UP1');
SELECT * FROM test.rc_status_only('cancellation', 'up-9', :'a1', '-90 s', 'studio_plus_monthly', 'UP1');
SELECT product_id, plan, next_product_id, status FROM credits.entitlements WHERE user_id = :'a1';
SELECT * FROM test.access_of(:'a1');
SELECT * FROM credits.reconcile(:'a1');

-- The other order: PRODUCT_CHANGE first (pending), then the RENEWAL of the new product at the same time.
SELECT test.rc_apply(test.rc_event('initial_purchase', 'up-16', :'a2', '-1 hour',
    jsonb_build_object('product_id', 'studio_plus_monthly', 'transaction_id', 'UP2', 'original_transaction_id', 'UP2',
                       'expiration_at_ms', test.ms(now() + interval '20 days')))) ->> 'plan' AS plan;
SELECT test.rc_apply(test.rc_event('product_change', 'up-17', :'a2', '-10 min',
    jsonb_build_object('product_id', 'studio_plus_monthly', 'new_product_id', 'studio_pro_yearly',
                       'transaction_id', 'UP2', 'original_transaction_id', 'UP2'))) ->> 'plan' AS plan_still;
SELECT product_id, plan, next_product_id FROM credits.entitlements WHERE user_id = :'a2';
SELECT test.rc_apply(test.rc_event('renewal', 'up-18', :'a2', '-10 min',
    jsonb_build_object('product_id', 'studio_pro_yearly', 'transaction_id', 'UP2-2', 'original_transaction_id', 'UP2',
                       'expiration_at_ms', test.ms(now() + interval '365 days')))) ->> 'plan' AS plan;
SELECT product_id, plan, next_product_id FROM credits.entitlements WHERE user_id = :'a2';
SELECT * FROM credits.reconcile(:'a2');

-- ==== Anonymous purchase, then login: the TRANSFER path ====
-- A pack bought before login: no id that is not anonymous. 200, kept.
SELECT test.rc_apply(test.rc_event('non_renewing_purchase', 'anon-1', NULL, '-30 min',
    '{"app_user_id": "$RCAnonymousID:aa01", "original_app_user_id": "$RCAnonymousID:aa01", "aliases": ["$RCAnonymousID:aa01"], "product_id": "credits_50", "transaction_id": "ANON-T1"}'));
SELECT event_type, reason, app_user_ids FROM credits.webhook_events WHERE event_id = 'anon-1';
-- RevenueCat retries nothing (it was a 200); a duplicate delivery is kept once.
SELECT test.rc_apply(test.rc_event('non_renewing_purchase', 'anon-1', NULL, '-30 min',
    '{"app_user_id": "$RCAnonymousID:aa01", "original_app_user_id": "$RCAnonymousID:aa01", "aliases": ["$RCAnonymousID:aa01"], "product_id": "credits_50", "transaction_id": "ANON-T1"}')) ->> 'reason' AS again;
SELECT tries FROM credits.webhook_events WHERE event_id = 'anon-1';
-- The user logs in; RevenueCat transfers the anonymous purchases: the kept purchase applies to them.
SELECT test.rc_clean(credits.apply_revenuecat_event(test.rc('transfer', jsonb_build_object('id', 'anon-2',
    'event_timestamp_ms', test.ms(now() - interval '20 min'),
    'transferred_from', jsonb_build_array('$RCAnonymousID:aa01'), 'transferred_to', jsonb_build_array(:'a3'))))) - 'event_id';
SELECT * FROM test.access_of(:'a3');
SELECT count(*) AS still_kept FROM credits.webhook_events WHERE event_id = 'anon-1';
-- A late retry of the purchase: a duplicate.
SELECT test.rc_apply(test.rc_event('non_renewing_purchase', 'anon-1', NULL, '-30 min',
    '{"app_user_id": "$RCAnonymousID:aa01", "original_app_user_id": "$RCAnonymousID:aa01", "aliases": ["$RCAnonymousID:aa01"], "product_id": "credits_50", "transaction_id": "ANON-T1"}')) ->> 'status' AS retry;
-- Later events that name only the anonymous id find the user through the link.
SELECT test.rc_apply(test.rc_event('non_renewing_purchase', 'anon-3', NULL, '-10 min',
    '{"app_user_id": "$RCAnonymousID:aa01", "original_app_user_id": "$RCAnonymousID:aa01", "aliases": ["$RCAnonymousID:aa01"], "product_id": "credits_50", "transaction_id": "ANON-T2"}')) ->> 'credits' AS credits;
SELECT * FROM test.access_of(:'a3');
SELECT * FROM credits.reconcile(:'a3');

-- The TRANSFER first, the anonymous purchase after it (out of order): applied to the user at once.
SELECT credits.apply_revenuecat_event(test.rc('transfer', jsonb_build_object('id', 'anon-4',
    'event_timestamp_ms', test.ms(now() - interval '20 min'),
    'transferred_from', jsonb_build_array('$RCAnonymousID:aa02'), 'transferred_to', jsonb_build_array(:'a4'))))
    ->> 'reason' AS transfer;
SELECT test.rc_apply(test.rc_event('non_renewing_purchase', 'anon-5', NULL, '-30 min',
    '{"app_user_id": "$RCAnonymousID:aa02", "original_app_user_id": "$RCAnonymousID:aa02", "aliases": ["$RCAnonymousID:aa02"], "product_id": "credits_50", "transaction_id": "ANON-T3"}')) ->> 'credits' AS credits;
SELECT * FROM test.access_of(:'a4');
SELECT * FROM credits.reconcile(:'a4');

-- ==== Anonymous subscription, then login: the alias path ====
SELECT test.rc_apply(test.rc_event('initial_purchase', 'alias-1', NULL, '-30 min',
    '{"app_user_id": "$RCAnonymousID:bb01", "original_app_user_id": "$RCAnonymousID:bb01", "aliases": ["$RCAnonymousID:bb01"], "transaction_id": "AL1",
      "original_transaction_id": "AL1"}'
    || jsonb_build_object('expiration_at_ms', test.ms(now() + interval '30 days')))) ->> 'reason' AS reason;
-- SUBSCRIBER_ALIAS (deprecated, but documented): the anonymous id is the user 5d0b9c7e-...
SELECT test.rc_clean(test.rc_apply(test.rc('subscriber_alias', jsonb_build_object('event_timestamp_ms', test.ms(now() - interval '5 min'),
    'original_app_user_id', '$RCAnonymousID:bb01', 'aliases', jsonb_build_array('$RCAnonymousID:bb01')))));
SELECT * FROM test.access_of('5d0b9c7e-3f1a-4c2b-9e8d-7a6b5c4d3e2f');
SELECT test.rc_apply(test.rc('subscriber_alias', jsonb_build_object('event_timestamp_ms', test.ms(now() - interval '5 min'),
    'original_app_user_id', '$RCAnonymousID:bb01', 'aliases', jsonb_build_array('$RCAnonymousID:bb01'))))
    ->> 'status' AS again;
SELECT * FROM credits.reconcile('5d0b9c7e-3f1a-4c2b-9e8d-7a6b5c4d3e2f');

-- The aliases of any later event link too: a kept anonymous pack, then a purchase that names the user and the alias.
SELECT test.rc_apply(test.rc_event('non_renewing_purchase', 'alias-2', NULL, '-30 min',
    '{"app_user_id": "$RCAnonymousID:aa03", "original_app_user_id": "$RCAnonymousID:aa03", "aliases": ["$RCAnonymousID:aa03"], "product_id": "credits_50", "transaction_id": "AL2"}')) ->> 'reason' AS reason;
SELECT test.rc_clean(test.rc_apply(test.rc_event('non_renewing_purchase', 'alias-3', :'a5', '-5 min',
    '{"aliases": ["$RCAnonymousID:aa03"], "product_id": "credits_50", "transaction_id": "AL3"}')));
SELECT * FROM test.access_of(:'a5');
SELECT * FROM credits.reconcile(:'a5');

-- ==== Kept, then applied after the mapping is fixed ====
SELECT test.rc_apply(test.rc_event('initial_purchase', 'map-1', :'a6', '-30 min',
    jsonb_build_object('product_id', 'gold_monthly', 'entitlement_ids', jsonb_build_array('gold'),
                       'transaction_id', 'MAP1', 'original_transaction_id', 'MAP1',
                       'expiration_at_ms', test.ms(now() + interval '30 days'))));
SELECT test.rc_apply(test.rc_event('initial_purchase', 'map-2', :'a6', '-20 min',
    jsonb_build_object('product_id', 'goldsub:annual-base', 'entitlement_ids', jsonb_build_array(),
                       'transaction_id', 'MAP2', 'original_transaction_id', 'MAP2',
                       'expiration_at_ms', test.ms(now() + interval '30 days')))) ->> 'reason' AS reason;
SELECT event_id, reason FROM credits.webhook_events WHERE event_id LIKE 'map-%' ORDER BY event_id;
SELECT * FROM test.access_of(:'a6');
-- The admin maps the RevenueCat entitlement "gold" to pro, and the Play subscription to plus; then replays.
SELECT credits.map_revenuecat_entitlement('gold', 'pro');
INSERT INTO credits.products (product_id, plan) VALUES ('goldsub', 'plus');
SELECT r ->> 'event_id' AS event_id, r ->> 'status' AS status, r ->> 'entitlement_plan' AS plan
  FROM jsonb_array_elements(credits.replay_webhook_events('revenuecat') -> 'results') r
 WHERE r ->> 'event_id' LIKE 'map-%' ORDER BY 1;
SELECT product_id, plan, status FROM credits.entitlements WHERE user_id = :'a6' ORDER BY id;
SELECT * FROM test.access_of(:'a6');
SELECT count(*) AS still_kept FROM credits.webhook_events WHERE event_id LIKE 'map-%';
SELECT (test.error_of($$SELECT credits.map_revenuecat_entitlement('gold', 'no_such_plan')$$)).state;
SELECT * FROM credits.reconcile(:'a6');

-- ==== Sandbox: App Review buys in the sandbox against production ====
SHOW credits.accept_sandbox;
SELECT test.rc_apply(test.rc_event('non_renewing_purchase', 'sbx-1', :'a7', '-10 min',
    '{"environment": "SANDBOX", "product_id": "credits_50", "transaction_id": "SBX1"}')) ->> 'reason' AS reason;
SELECT credits.allow_sandbox_user(:'a7', 'App Review account');
SELECT test.rc_apply(test.rc_event('non_renewing_purchase', 'sbx-1', :'a7', '-10 min',
    '{"environment": "SANDBOX", "product_id": "credits_50", "transaction_id": "SBX1"}')) ->> 'credits' AS credits;
SELECT * FROM test.access_of(:'a7');
-- Not on the list: still kept.
SELECT test.rc_apply(test.rc_event('non_renewing_purchase', 'sbx-2', :'a6', '-10 min',
    '{"environment": "SANDBOX", "product_id": "credits_50", "transaction_id": "SBX2"}')) ->> 'reason' AS reason;
SELECT credits.disallow_sandbox_user(:'a7') AS removed, credits.disallow_sandbox_user(:'a7') AS again;
SELECT * FROM credits.reconcile(:'a7');

-- ==== Clock: RevenueCat's TRANSFER sample is dated 4466 ====
\getenv abs_srcdir PG_ABS_SRCDIR
\set fx :abs_srcdir '/test/fixtures/revenuecat'
SELECT test.rc_apply(test.rc_event('initial_purchase', 'far-1', '00005a1c-6091-4f81-be77-f0a83a271ab6', '-1 hour',
    jsonb_build_object('transaction_id', 'FAR1', 'original_transaction_id', 'FAR1',
                       'expiration_at_ms', test.ms(now() + interval '30 days')))) ->> 'plan' AS plan;
-- As published (event_timestamp_ms 78789789798798): taken as now, the subscription moves.
\set body `cat :fx/docs/transfer.json`
SELECT credits.apply_revenuecat_event(:'body') - '{event_id,event_timestamp_used}'::text[];
-- So a renewal a minute later is not stale.
SELECT test.rc_apply(test.rc_event('renewal', 'far-2', '4bedb450-8ef2-11e9-b475-0800200c9a66', '+1 min',
    jsonb_build_object('transaction_id', 'FAR1-2', 'original_transaction_id', 'FAR1',
                       'expiration_at_ms', test.ms(now() + interval '60 days')))) ->> 'status' AS renewal;
SELECT * FROM test.entitlements_of('4bedb450-8ef2-11e9-b475-0800200c9a66');
SELECT * FROM credits.reconcile('4bedb450-8ef2-11e9-b475-0800200c9a66');

-- ==== TEMPORARY_ENTITLEMENT_GRANT without a product: by entitlement, or 200 kept ====
SELECT test.rc_apply(test.rc_event('temporary_entitlement_grant', 'teg-1', :'a5', '-1 min',
    '{"product_id": null, "transaction_id": null, "expiration_at_ms": null, "entitlement_ids": null}')) ->> 'reason' AS reason;
SELECT test.rc_apply(test.rc_event('temporary_entitlement_grant', 'teg-2', :'a5', '-1 min',
    '{"product_id": null, "transaction_id": null, "expiration_at_ms": null, "entitlement_ids": ["gold"]}'));
SELECT product_id, plan, status, expires_at - now() BETWEEN interval '23 hours' AND interval '24 hours' AS one_day
  FROM credits.entitlements WHERE user_id = :'a5' AND source = 'revenuecat';
SELECT * FROM credits.reconcile(:'a5');

-- ==== Nothing ignored is lost ====
SELECT provider, event_type, reason, EXISTS (SELECT 1 FROM unnest(app_user_ids) i WHERE i LIKE '$RCAnonymousID:%') AS anonymous
  FROM credits.webhook_events WHERE provider = 'revenuecat' ORDER BY event_id;
SELECT * FROM credits.reconcile();
