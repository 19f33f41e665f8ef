-- apply_revenuecat_event: RevenueCat webhook bodies (test/fixtures/revenuecat),
-- every event type, applied exactly once and in any order.
\set u1 'e5000000-0000-0000-0000-000000000001'
\set u2 'e5000000-0000-0000-0000-000000000002'
\set u3 'e5000000-0000-0000-0000-000000000003'
\set u4 'e5000000-0000-0000-0000-000000000004'
\set u5 'e5000000-0000-0000-0000-000000000005'
\set u6 'e5000000-0000-0000-0000-000000000006'
\set u7 'e5000000-0000-0000-0000-000000000007'
\set u8 'e5000000-0000-0000-0000-000000000008'
\set u9 'e5000000-0000-0000-0000-000000000009'

-- ==== A subscription's life (user 1), events in store order ====
-- INITIAL_PURCHASE: premium at once, enforced in the database.
SELECT * FROM test.access_of(:'u1');
SELECT test.rc_apply(test.rc_event('initial_purchase', 'rc-1', :'u1', '-60 min',
    jsonb_build_object('transaction_id', 'S1', 'original_transaction_id', 'S1',
                       'purchased_at_ms', test.ms(now() - interval '60 min'),
                       'expiration_at_ms', test.ms(now() + interval '30 days'))));
SELECT * FROM test.access_of(:'u1');
SELECT c.amount, c.daily_remaining FROM generate_series(1, 7) g, LATERAL credits.credits_consume(:'u1', 'image', 1 + 0 * g) c;
-- reserve too: a minute of video (300 credits at list price) is held for 0.
SELECT kind, amount, balance, daily_remaining FROM credits.reserve(:'u1', 'video_second', 60);
SELECT kind, amount, balance FROM credits.capture((SELECT max(id) FROM credits.holds WHERE user_id = :'u1'));
SELECT * FROM test.entitlements_of(:'u1');
SELECT store, environment, period_type, transaction_id, original_transaction_id, last_event_id
  FROM credits.entitlements WHERE user_id = :'u1';
-- The same delivery again (RevenueCat retries with the same id): duplicate, nothing changes.
SELECT test.rc_apply(test.rc_event('initial_purchase', 'rc-1', :'u1', '-60 min',
    jsonb_build_object('transaction_id', 'S1', 'original_transaction_id', 'S1',
                       'expiration_at_ms', test.ms(now() + interval '30 days'))));
SELECT count(*) AS entitlements, (SELECT count(*) FROM credits.store_events WHERE event_id = 'rc-1') AS recorded
  FROM credits.entitlements WHERE user_id = :'u1';
-- RENEWAL: the next transaction of the same subscription.
SELECT test.rc_apply(test.rc_event('renewal', 'rc-2', :'u1', '-50 min',
    jsonb_build_object('transaction_id', 'S1-2', 'original_transaction_id', 'S1',
                       'expiration_at_ms', test.ms(now() + interval '60 days'))));
SELECT count(*) AS entitlements, max(transaction_id) AS transaction_id,
       max(expires_at) > now() + interval '59 days' AS extended
  FROM credits.entitlements WHERE user_id = :'u1';
-- CANCELLATION (unsubscribed): access lasts until the end of the period.
SELECT test.rc_apply(test.rc_event('cancellation', 'rc-3', :'u1', '-40 min',
    jsonb_build_object('transaction_id', 'S1-2', 'original_transaction_id', 'S1',
                       'expiration_at_ms', test.ms(now() + interval '60 days'))));
SELECT * FROM test.entitlements_of(:'u1');
-- UNCANCELLATION: renewing again.
SELECT test.rc_apply(test.rc_event('uncancellation', 'rc-4', :'u1', '-35 min',
    jsonb_build_object('transaction_id', 'S1-2', 'original_transaction_id', 'S1',
                       'expiration_at_ms', test.ms(now() + interval '60 days'))));
-- PRODUCT_CHANGE: recorded; the new product takes effect at the next renewal.
SELECT test.rc_apply(test.rc_event('product_change', 'rc-5', :'u1', '-30 min',
    jsonb_build_object('product_id', 'studio_pro_monthly', 'new_product_id', 'studio_pro_yearly',
                       'transaction_id', 'S1-2', 'original_transaction_id', 'S1',
                       'expiration_at_ms', test.ms(now() + interval '60 days'))));
SELECT product_id, next_product_id, status FROM credits.entitlements WHERE user_id = :'u1';
-- SUBSCRIPTION_EXTENDED: the period ends later.
SELECT test.rc_apply(test.rc_event('subscription_extended', 'rc-6', :'u1', '-25 min',
    jsonb_build_object('transaction_id', 'S1-2', 'original_transaction_id', 'S1',
                       'expiration_at_ms', test.ms(now() + interval '90 days'))));
SELECT expires_at > now() + interval '89 days' AS extended FROM credits.entitlements WHERE user_id = :'u1';
-- BILLING_ISSUE: the period has ended but the store's grace period keeps access.
SELECT test.rc_apply(test.rc_event('billing_issue', 'rc-7', :'u1', '-20 min',
    jsonb_build_object('transaction_id', 'S1-2', 'original_transaction_id', 'S1',
                       'expiration_at_ms', test.ms(now() - interval '1 min'),
                       'grace_period_expiration_at_ms', test.ms(now() + interval '14 days'))));
SELECT * FROM test.entitlements_of(:'u1');
SELECT * FROM test.access_of(:'u1');
-- Out of order: a RENEWAL older than what was applied rolls nothing back (status and end stay
-- the newer events'); it is newer than the last purchase, so it records its transaction and product.
SELECT test.rc_apply(test.rc_event('renewal', 'rc-2-late', :'u1', '-45 min',
    jsonb_build_object('transaction_id', 'S1-2', 'original_transaction_id', 'S1',
                       'expiration_at_ms', test.ms(now() + interval '60 days'))));
SELECT status, last_event_id FROM credits.entitlements WHERE user_id = :'u1';
SELECT count(*) AS recorded FROM credits.store_events WHERE event_id = 'rc-2-late';
-- SUBSCRIPTION_PAUSED: no revocation yet; it pauses at the end of the period.
SELECT test.rc_apply(test.rc_event('subscription_paused', 'rc-8', :'u1', '-15 min',
    jsonb_build_object('product_id', 'studio_pro_monthly', 'transaction_id', 'S1-2', 'original_transaction_id', 'S1',
                       'expiration_at_ms', test.ms(now() + interval '14 days'))));
SELECT * FROM test.access_of(:'u1');
-- EXPIRATION: access ends; the engine falls back to the base plan and its daily limit
-- (8 operations were counted today, so none are left on free).
SELECT test.rc_apply(test.rc_event('expiration', 'rc-9', :'u1', '-10 min',
    jsonb_build_object('transaction_id', 'S1-2', 'original_transaction_id', 'S1',
                       'expiration_reason', 'SUBSCRIPTION_PAUSED',
                       'expiration_at_ms', test.ms(now() - interval '10 min'))));
SELECT * FROM test.entitlements_of(:'u1');
SELECT * FROM test.access_of(:'u1');
SELECT state, detail->>'daily_limit' AS daily_limit FROM test.error_of(format($$SELECT credits.credits_consume(%L, 'image')$$, :'u1'));
SELECT status_reason FROM credits.entitlements WHERE user_id = :'u1';
-- A late UNCANCELLATION (older than the EXPIRATION) does not bring access back.
SELECT test.rc_apply(test.rc_event('uncancellation', 'rc-4-late', :'u1', '-12 min',
    jsonb_build_object('transaction_id', 'S1-2', 'original_transaction_id', 'S1',
                       'expiration_at_ms', test.ms(now() + interval '60 days'))));
SELECT * FROM test.access_of(:'u1');
-- The user resubscribes: RENEWAL of the same subscription, now on the yearly product.
SELECT test.rc_apply(test.rc_event('renewal', 'rc-10', :'u1', '-5 min',
    jsonb_build_object('product_id', 'studio_pro_yearly', 'transaction_id', 'S1-3', 'original_transaction_id', 'S1',
                       'expiration_at_ms', test.ms(now() + interval '365 days'))));
SELECT product_id, next_product_id, status FROM credits.entitlements WHERE user_id = :'u1';
-- CANCELLATION with cancel_reason CUSTOMER_SUPPORT: a store refund ends the entitlement now.
SELECT test.rc_apply(test.rc_event('cancellation', 'rc-11', :'u1', '-2 min',
    jsonb_build_object('product_id', 'studio_pro_yearly', 'cancel_reason', 'CUSTOMER_SUPPORT',
                       'transaction_id', 'S1-3', 'original_transaction_id', 'S1',
                       'expiration_at_ms', test.ms(now() + interval '365 days'))));
SELECT * FROM test.entitlements_of(:'u1');
SELECT * FROM test.access_of(:'u1');
SELECT event_id, event_type, result->>'status' AS status FROM credits.store_events
 WHERE user_id = :'u1' ORDER BY event_at;
SELECT * FROM credits.reconcile(:'u1');

-- ==== A credit pack (user 2): NON_RENEWING_PURCHASE, refund, refund reversed ====
SELECT test.rc_apply(test.rc_event('non_renewing_purchase', 'rc-p1', :'u2', '-60 min',
    '{"transaction_id": "P1", "original_transaction_id": "P1"}'));
SELECT l.amount, l.expires_at = e.created_at + interval '1 year' AS expires_in_a_year, e.kind, e.reference,
       e.metadata->>'event_id' AS event_id, e.metadata->>'store' AS store
  FROM credits.lots l JOIN credits.ledger e ON e.id = l.entry_id WHERE e.user_id = :'u2' AND e.kind = 'purchase';
-- Delivered twice: duplicate.  The same transaction in another event: credited once.
SELECT test.rc_apply(test.rc_event('non_renewing_purchase', 'rc-p1', :'u2', '-60 min',
    '{"transaction_id": "P1", "original_transaction_id": "P1"}'));
SELECT test.rc_apply(test.rc_event('non_renewing_purchase', 'rc-p1-bis', :'u2', '-59 min',
    '{"transaction_id": "P1", "original_transaction_id": "P1"}'));
-- The app's backend reporting the same transaction gets the webhook's receipt.
SELECT kind, amount, replayed FROM credits.apply_purchase(:'u2', 'credits_500', 'P1', 'revenuecat', now());
SELECT credits.balance(:'u2') AS balance;
-- 200 of the 500 are spent (the pack expires first, so it is burnt first).
SELECT amount, balance FROM credits.credits_consume(:'u2', 'video_second', 40);
-- The store refunds the pack: what is left (300) is clawed back by an `adjust` entry; the 200
-- already spent stay spent, and the balance never goes below zero.
SELECT test.rc_apply(test.rc_event('cancellation_refund', 'rc-p2', :'u2', '-30 min',
    '{"transaction_id": "P1", "original_transaction_id": "P1"}'));
SELECT kind, amount, balance_after, reason, reference, ref_id = (SELECT id FROM credits.ledger WHERE user_id = 'e5000000-0000-0000-0000-000000000002' AND kind = 'purchase') AS refers_to_purchase
  FROM credits.ledger WHERE user_id = :'u2' AND kind = 'adjust';
-- Refunded again under another event id: nothing more to take.
SELECT test.rc_apply(test.rc_event('cancellation_refund', 'rc-p3', :'u2', '-25 min',
    '{"transaction_id": "P1", "original_transaction_id": "P1"}'));
-- REFUND_REVERSED: the clawed-back credits come back, expiring like the pack.
SELECT test.rc_apply(test.rc_event('refund_reversed', 'rc-p4', :'u2', '-20 min',
    '{"transaction_id": "P1", "original_transaction_id": "P1"}'));
-- A refund older than the reversal, delivered late: stale, ignored.
SELECT test.rc_apply(test.rc_event('cancellation_refund', 'rc-p5', :'u2', '-22 min',
    '{"transaction_id": "P1", "original_transaction_id": "P1"}'));
SELECT kind, amount, balance_after FROM credits.ledger WHERE user_id = :'u2' ORDER BY id;
SELECT l.amount, l.remaining, l.expires_at = p.expires_at AS same_expiry
  FROM credits.lots l JOIN credits.ledger e ON e.id = l.entry_id,
       LATERAL (SELECT pl.expires_at FROM credits.lots pl JOIN credits.ledger pe ON pe.id = pl.entry_id
                 WHERE pe.user_id = 'e5000000-0000-0000-0000-000000000002' AND pe.kind = 'purchase') p
 WHERE e.user_id = :'u2' AND e.kind = 'adjust' AND e.amount > 0;
SELECT refund_state, clawed_back FROM credits.purchases WHERE transaction_id = 'P1' AND source = 'revenuecat';
-- A refund of a pack that was entirely spent: nothing to claw back, the balance stays.
SELECT test.rc_apply(test.rc_event('non_renewing_purchase', 'rc-p6', :'u8', '-20 min',
    '{"product_id": "credits_50", "transaction_id": "P8", "original_transaction_id": "P8"}'));
SELECT amount, balance FROM credits.credits_consume(:'u8', 'video_second', 10);
SELECT amount, balance FROM credits.credits_consume(:'u8', 'prompt_kchar', 6);
SELECT test.rc_apply(test.rc_event('cancellation_refund', 'rc-p7', :'u8', '-10 min',
    '{"product_id": "credits_50", "transaction_id": "P8", "original_transaction_id": "P8"}'));
SELECT count(*) AS adjust_entries FROM credits.ledger WHERE user_id = :'u8' AND kind = 'adjust';
SELECT * FROM credits.reconcile(:'u2');
SELECT * FROM credits.reconcile(:'u8');

-- ==== A refund that arrives before its purchase (user 3): the purchase credits nothing ====
SELECT test.rc_apply(test.rc_event('cancellation_refund', 'rc-r1', :'u3', '-10 min',
    '{"transaction_id": "P3", "original_transaction_id": "P3"}'));
SELECT test.rc_apply(test.rc_event('non_renewing_purchase', 'rc-r2', :'u3', '-20 min',
    '{"transaction_id": "P3", "original_transaction_id": "P3"}'));
SELECT credits.balance(:'u3') AS balance, (SELECT count(*) FROM credits.ledger WHERE user_id = :'u3' AND kind = 'purchase') AS purchases;
SELECT state, detail FROM test.error_of(format($$SELECT credits.apply_purchase(%L, 'credits_500', 'P3', 'revenuecat', now())$$, :'u3'));
-- ... and a reversal that arrives before its refund: the purchase credits, the late refund is stale.
SELECT test.rc_apply(test.rc_event('refund_reversed', 'rc-r3', :'u3', '-5 min',
    '{"transaction_id": "P4", "original_transaction_id": "P4"}'));
SELECT test.rc_apply(test.rc_event('cancellation_refund', 'rc-r4', :'u3', '-8 min',
    '{"transaction_id": "P4", "original_transaction_id": "P4"}'));
SELECT test.rc_apply(test.rc_event('non_renewing_purchase', 'rc-r5', :'u3', '-30 min',
    '{"transaction_id": "P4", "original_transaction_id": "P4"}'));
SELECT * FROM credits.reconcile(:'u3');

-- ==== TEMPORARY_ENTITLEMENT_GRANT (user 4): access while the store is unreachable ====
SELECT test.rc_apply(test.rc_event('temporary_entitlement_grant', 'rc-t1', :'u4', '-30 min',
    jsonb_build_object('transaction_id', 'TMP-1', 'expiration_at_ms', test.ms(now() + interval '23 hours'))));
SELECT * FROM test.entitlements_of(:'u4');
SELECT * FROM test.access_of(:'u4');
-- The purchase could not be validated: EXPIRATION with the same transaction_id ends it.
SELECT test.rc_apply(test.rc_event('expiration', 'rc-t2', :'u4', '-20 min',
    jsonb_build_object('transaction_id', 'TMP-1', 'original_transaction_id', NULL,
                       'expiration_at_ms', test.ms(now() + interval '23 hours'))));
SELECT * FROM test.entitlements_of(:'u4');
SELECT * FROM test.access_of(:'u4');
-- A temporary grant for a credit pack credits nothing: credits wait for the validated purchase.
SELECT test.rc_apply(test.rc_event('temporary_entitlement_grant', 'rc-t3', :'u4', '-10 min',
    jsonb_build_object('product_id', 'credits_500', 'transaction_id', 'TMP-2',
                       'expiration_at_ms', test.ms(now() + interval '23 hours'))));
SELECT credits.balance(:'u4') AS balance;

-- ==== TRANSFER (users 5, 6, 7): a restore moves the subscription between app users ====
SELECT test.rc_apply(test.rc_event('initial_purchase', 'rc-x1', :'u5', '-60 min',
    jsonb_build_object('transaction_id', 'S5', 'original_transaction_id', 'S5',
                       'expiration_at_ms', test.ms(now() + interval '30 days'))));
SELECT (test.access_of(:'u5')).plan AS u5, (test.access_of(:'u6')).plan AS u6;
-- transferred_to holds an anonymous RevenueCat id (not ours) and user 6.
SELECT test.rc_apply(test.rc('transfer', jsonb_build_object('id', 'rc-x2', 'event_timestamp_ms', test.ms(now() - interval '50 min'),
    'transferred_from', jsonb_build_array(:'u5'),
    'transferred_to', jsonb_build_array('$RCAnonymousID:6a5b4c3d2e1f40918273645546372819', upper(:'u6')))));
SELECT (test.access_of(:'u5')).plan AS u5, (test.access_of(:'u6')).plan AS u6;
SELECT * FROM test.entitlements_of(:'u6');
SELECT test.rc_apply(test.rc('transfer', jsonb_build_object('id', 'rc-x2', 'event_timestamp_ms', test.ms(now() - interval '50 min'),
    'transferred_from', jsonb_build_array(:'u5'), 'transferred_to', jsonb_build_array(:'u6')))) ->> 'status' AS again;
-- Nothing left to move from user 5: ignored.
SELECT test.rc_apply(test.rc('transfer', jsonb_build_object('id', 'rc-x3', 'event_timestamp_ms', test.ms(now() - interval '45 min'),
    'transferred_from', jsonb_build_array(:'u5'), 'transferred_to', jsonb_build_array(:'u7'))));
-- The store's next event names the new owner (user 7) without a TRANSFER we saw: the newest
-- event wins, the subscription moves, and both accounts change.
SELECT test.rc_apply(test.rc_event('renewal', 'rc-x4', :'u7', '-40 min',
    jsonb_build_object('transaction_id', 'S5-2', 'original_transaction_id', 'S5',
                       'expiration_at_ms', test.ms(now() + interval '60 days'))));
SELECT (test.access_of(:'u6')).plan AS u6, (test.access_of(:'u7')).plan AS u7;
-- A transfer to app user ids that are not ours: the subscription leaves user 7.
SELECT test.rc_apply(test.rc('transfer', jsonb_build_object('id', 'rc-x5', 'event_timestamp_ms', test.ms(now() - interval '30 min'),
    'transferred_from', jsonb_build_array(:'u7'), 'transferred_to', jsonb_build_array('$RCAnonymousID:00aa'))));
SELECT * FROM test.entitlements_of(:'u7');
SELECT (test.access_of(:'u7')).plan AS u7;
SELECT * FROM credits.reconcile(:'u5');
SELECT * FROM credits.reconcile(:'u6');
SELECT * FROM credits.reconcile(:'u7');

-- ==== Sandbox, TEST, types we do not handle, products we do not sell (user 9) ====
SELECT test.rc_apply(test.rc_event('initial_purchase', 'rc-s1', :'u9', '-10 min',
    jsonb_build_object('environment', 'SANDBOX', 'transaction_id', 'SB1', 'original_transaction_id', 'SB1',
                       'expiration_at_ms', test.ms(now() + interval '1 hour'))));
SELECT test.rows_of(:'u9') AS rows_written, (SELECT count(*) FROM credits.store_events WHERE event_id = 'rc-s1') AS recorded;
SET credits.accept_sandbox = on;
SELECT test.rc_apply(test.rc_event('initial_purchase', 'rc-s1', :'u9', '-10 min',
    jsonb_build_object('environment', 'SANDBOX', 'transaction_id', 'SB1', 'original_transaction_id', 'SB1',
                       'expiration_at_ms', test.ms(now() + interval '1 hour'))));
RESET credits.accept_sandbox;
SELECT environment FROM credits.entitlements WHERE user_id = :'u9';
-- TEST (from the dashboard; its app user is not a uuid) and an event type we do not handle:
-- acknowledged as ignored, never an error that makes the store retry.
SELECT test.rc_apply(test.rc('test'));
SELECT test.rc_apply(test.rc('invoice_issuance'));
SELECT test.rc_apply('{"api_version": "1.0", "event": {"id": "rc-new", "type": "SOMETHING_NEW_IN_2030"}}');
-- A product we do not sell: ignored and not recorded, so a replay after mapping it applies it.
SELECT test.rc_apply(test.rc_event('initial_purchase', 'rc-u1', :'u9', '-5 min',
    jsonb_build_object('product_id', 'studio_max_monthly', 'transaction_id', 'SM1', 'original_transaction_id', 'SM1',
                       'expiration_at_ms', test.ms(now() + interval '30 days'))));
INSERT INTO credits.plans (name, rank, bypass_credits) VALUES ('max', 20, true);
INSERT INTO credits.products (product_id, plan) VALUES ('studio_max_monthly', 'max');
SELECT test.rc_apply(test.rc_event('initial_purchase', 'rc-u1', :'u9', '-5 min',
    jsonb_build_object('product_id', 'studio_max_monthly', 'transaction_id', 'SM1', 'original_transaction_id', 'SM1',
                       'expiration_at_ms', test.ms(now() + interval '30 days'))));
-- A pack product in a subscription-only event: ignored.
SELECT test.rc_apply(test.rc_event('cancellation', 'rc-u2', :'u9', '-4 min',
    '{"product_id": "credits_50", "transaction_id": "X9", "original_transaction_id": "X9"}'));

-- ==== Malformed payloads: 22023 naming the field; nothing written ====
SELECT s.label, e.state, e.detail->>'field' AS field, e.message
  FROM (VALUES
    ('null',                  NULL::jsonb),
    ('array',                 '[]'),
    ('no event',              '{"api_version": "1.0"}'),
    ('event not an object',   '{"api_version": "1.0", "event": "INITIAL_PURCHASE"}'),
    ('api version 2',         test.rc('initial_purchase') || '{"api_version": "2.0"}'),
    ('no id',                 test.rc('initial_purchase') #- '{event,id}'),
    ('id a number',           test.rc('initial_purchase', '{"id": 42}')),
    ('id too long',           test.rc('initial_purchase', jsonb_build_object('id', repeat('i', 256)))),
    ('no type',               test.rc('initial_purchase') #- '{event,type}'),
    ('no timestamp',          test.rc('initial_purchase') #- '{event,event_timestamp_ms}'),
    ('timestamp a string',    test.rc('initial_purchase', '{"event_timestamp_ms": "yesterday"}')),
    ('timestamp negative',    test.rc('initial_purchase', '{"event_timestamp_ms": -1}')),
    ('timestamp fractional',  test.rc('initial_purchase', '{"event_timestamp_ms": 1767225605123.5}')),
    ('timestamp year 9999',   test.rc('initial_purchase', '{"event_timestamp_ms": 253402300800000}')),
    ('no app user at all',    test.rc('initial_purchase') #- '{event,app_user_id}' #- '{event,original_app_user_id}' #- '{event,aliases}'),
    ('no product',            test.rc('initial_purchase') #- '{event,product_id}'),
    ('product a list',        test.rc('initial_purchase', '{"product_id": ["a"]}')),
    ('no transaction',        test.rc('initial_purchase') #- '{event,transaction_id}'),
    ('expiration a string',   test.rc('initial_purchase', '{"expiration_at_ms": "soon"}')),
    ('purchase a bool',       test.rc('initial_purchase', '{"purchased_at_ms": true}')),
    ('transfer without from', test.rc('transfer') #- '{event,transferred_from}'),
    ('transfer to a string',  test.rc('transfer', '{"transferred_to": "E2D1C0B9-A8F7-4E6D-9C5B-4A3928170615"}')),
    ('transfer to numbers',   test.rc('transfer', '{"transferred_to": [1, 2]}'))
  ) AS s(label, payload),
  LATERAL test.error_of(format('SELECT credits.apply_revenuecat_event(%L)', s.payload)) e;
SELECT (SELECT count(*) FROM credits.store_events WHERE event_id = '7B1F3C2E-0A4D-4E55-9C1B-3D2E5F607182') AS recorded,
       test.rows_of('5d0b9c7e-3f1a-4c2b-9e8d-7a6b5c4d3e2f') AS rows_written;
-- The fixtures as they are (times in 2026, a user of their own) apply cleanly.
SELECT test.rc_apply(test.rc('initial_purchase')) ->> 'status' AS initial_purchase,
       test.rc_apply(test.rc('renewal')) ->> 'status' AS renewal;

SELECT * FROM credits.reconcile();
