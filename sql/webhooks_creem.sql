-- apply_creem_event: Creem's documented events (test/fixtures/creem), signed with the
-- test secret (webhooks_00_setup), applied exactly once, in any order.
\set docs_user '572a1e89-190f-56d9-acb3-47ff96bb8a97'
SELECT credits.user_uuid('my-request-id') = :'docs_user' AS docs_user_is_the_request_id;

-- ==== The documented subscription, as Creem sends it ====
-- checkout.completed: the checkout's request_id is the user; the product maps to pro.
SELECT * FROM test.wh_user(:'docs_user');
SELECT test.said(test.creem(body)) FROM test.wh_fixtures WHERE provider = 'creem' AND name = 'checkout_completed';
SELECT * FROM test.wh_user(:'docs_user');
-- The signature is the hex HMAC-SHA256 of the raw body: a value computed with Python's hmac module.
SELECT credits.apply_creem_event(body, '0a473e626292448443989a9928d23ccd753a4d05f3981d11c1f1ba7f01c88166') ->> 'status' AS pinned_signature,
       credits.apply_creem_event(body, upper('0a473e626292448443989a9928d23ccd753a4d05f3981d11c1f1ba7f01c88166')) ->> 'status' AS upper_case_hex
  FROM test.wh_fixtures WHERE provider = 'creem' AND name = 'checkout_completed';
-- Redelivered (Creem retries with the same event id): the first result, nothing changes.
SELECT test.said(test.creem(body)) FROM test.wh_fixtures WHERE provider = 'creem' AND name = 'checkout_completed';
SELECT count(*) AS entitlements, (SELECT count(*) FROM credits.store_events WHERE source = 'creem') AS recorded
  FROM credits.entitlements WHERE source = 'creem';
-- subscription.paid: the period, paid (its dates moved to now: the sample's are in 2024).
SELECT test.said(test.creem(test.wh('creem', 'subscription_paid', jsonb_build_object(
    'created_at', test.unix_ms(now() - interval '1 hour'),
    'object.current_period_end_date', test.iso(now() + interval '30 days')))));
SELECT * FROM test.wh_user(:'docs_user');
-- subscription.update and .active change nothing but the time of the newest event.
SELECT test.said(test.creem(test.wh('creem', 'subscription_active', jsonb_build_object(
    'id', 'evt_docs_active', 'created_at', test.unix_ms(now() - interval '59 min'), 'object.id', 'sub_6pC2lNB6joCRQIZ1aMrTpi',
    'object.product.id', 'prod_d1AY2Sadk9YAvLI0pj97f')))) ->> 'entitlement_status' AS active;
-- subscription.canceled: no renewal, the plan lasts until the period ends.
SELECT test.said(test.creem(test.wh('creem', 'subscription_canceled', jsonb_build_object(
    'created_at', test.unix_ms(now() - interval '50 min'),
    'object.current_period_end_date', test.iso(now() + interval '30 days')))));
SELECT * FROM test.wh_user(:'docs_user');
-- An older event delivered late (a paid from before the cancel): stale, nothing changes.
SELECT test.said(test.creem(test.wh('creem', 'subscription_paid', jsonb_build_object(
    'id', 'evt_late_paid', 'created_at', test.unix_ms(now() - interval '55 min'),
    'object.current_period_end_date', test.iso(now() + interval '60 days')))));
SELECT * FROM test.wh_user(:'docs_user');
-- subscription.expired: access ends now.
SELECT test.said(test.creem(test.wh('creem', 'subscription_expired', jsonb_build_object(
    'id', 'evt_docs_expired', 'created_at', test.unix_ms(now() - interval '40 min'), 'object.id', 'sub_6pC2lNB6joCRQIZ1aMrTpi',
    'object.product.id', 'prod_d1AY2Sadk9YAvLI0pj97f'))));
SELECT * FROM test.wh_user(:'docs_user');
-- refund.created of the subscription payment: the entitlement is refunded (access ended already).
SELECT test.said(test.creem(test.wh('creem', 'refund_created', jsonb_build_object(
    'created_at', test.unix_ms(now() - interval '30 min')))));
SELECT * FROM test.wh_user(:'docs_user');
-- The other samples name subscriptions and orders credits has not seen: kept for later, answered "ignored".
SELECT name, test.said(test.creem(body)) ->> 'reason' AS reason
  FROM test.wh_fixtures
 WHERE provider = 'creem' AND name IN ('dispute_created', 'subscription_active', 'subscription_expired',
                                       'subscription_trialing', 'subscription_update', 'subscription_paused')
 ORDER BY name;
-- Their products, and then the checkouts that name their user (a minute before each sample):
-- each kept sample is replayed and applied.
INSERT INTO credits.products (product_id, plan) VALUES
    ('prod_AnVJ11ujp7x953ARpJvAF', 'pro'), ('prod_3ELsC3Lt97orn81SOdgQI3', 'pro'), ('prod_3kpf0ZdpcfsSCQ3kDiwg9m', 'pro'),
    ('prod_1dP15yoyogQe2seEt1Evf3', 'pro'), ('prod_sYwbyE1tPbsqbLu6S0bsR', 'pro');
INSERT INTO credits.products (product_id, credits) VALUES ('prod_3EFtQRQ9SNIizK3xwfxZHu', 50);
SELECT s.name, r ->> 'status' AS checkout,
       (SELECT string_agg(concat_ws(' ', x ->> 'type', x ->> 'status', x ->> 'reason', x ->> 'entitlement_status',
                                    'clawed back ' || (x ->> 'clawed_back')), '; ')
          FROM jsonb_array_elements(r -> 'replayed') x) AS replayed
  FROM (VALUES ('subscription_active', 'sub_21lfZb67szyvMiXnm6SVi0', 'prod_AnVJ11ujp7x953ARpJvAF'),
               ('subscription_expired', 'sub_7FgHvrOMC28tG5DEemoCli', 'prod_3ELsC3Lt97orn81SOdgQI3'),
               ('subscription_trialing', 'sub_dxiauR8zZOwULx5QM70wJ', 'prod_3kpf0ZdpcfsSCQ3kDiwg9m'),
               ('subscription_update', 'sub_2qAuJgWmXhXHAuef9k4Kur', 'prod_1dP15yoyogQe2seEt1Evf3'),
               ('subscription_paused', 'sub_3ZT1iYMeDBpiUpRTqq4veE', 'prod_sYwbyE1tPbsqbLu6S0bsR'),
               ('dispute_created', NULL, 'prod_3EFtQRQ9SNIizK3xwfxZHu')) AS s(name, sub, product),
  LATERAL (SELECT f.body::jsonb AS j FROM test.wh_fixtures f WHERE f.provider = 'creem' AND f.name = s.name) f,
  LATERAL test.creem(test.wh('creem', 'checkout_completed', jsonb_build_object(
      'id', 'evt_checkout_for_' || s.name, 'created_at', (f.j ->> 'created_at')::bigint - 60000,
      'object.request_id', 'creem-docs-customer', 'object.product.id', s.product,
      'object.subscription', CASE WHEN s.sub IS NULL THEN 'null' ELSE jsonb_build_object('id', s.sub) END,
      'object.order.id', coalesce('ord_' || s.sub, f.j #>> '{object,order,id}')))) r
 ORDER BY s.name;
SELECT * FROM test.wh_user(credits.user_uuid('creem-docs-customer'));
SELECT count(*) AS still_kept FROM credits.webhook_events WHERE provider = 'creem';

-- ==== A credit pack: credited once, refunded, clawed back ====
\set pack_user '9c4fb8e5-7685-5cc6-9817-aa6a4b43f10f'
SELECT test.said(test.creem(test.wh('creem', 'checkout_completed', jsonb_build_object(
    'id', 'evt_pack_1', 'created_at', test.unix_ms(now() - interval '20 min'),
    'object.metadata', '{"user_id": "user_2NNEqL2nrIRdJ194ndJqAHwEfxC"}'::jsonb,
    'object.product.id', 'prod_pack_100', 'object.order.id', 'ord_pack_1', 'object.subscription', null))));
SELECT * FROM test.wh_user(:'pack_user');
-- Another event for the same order (a second delivery path): the order is credited once.
SELECT test.said(test.creem(test.wh('creem', 'checkout_completed', jsonb_build_object(
    'id', 'evt_pack_1_again', 'created_at', test.unix_ms(now() - interval '19 min'),
    'object.metadata', '{"user_id": "user_2NNEqL2nrIRdJ194ndJqAHwEfxC"}'::jsonb,
    'object.product.id', 'prod_pack_100', 'object.order.id', 'ord_pack_1', 'object.subscription', null))));
SELECT * FROM test.wh_user(:'pack_user');
-- 30 credits are spent (the signup bonus first, then 24 of the pack); the refund claws back
-- what is left of the pack.
SELECT sum(c.amount) AS spent FROM generate_series(1, 3) g, LATERAL credits.credits_consume(:'pack_user', 'image', 10 + 0 * g) c;
SELECT test.said(test.creem(test.wh('creem', 'refund_created', jsonb_build_object(
    'id', 'evt_pack_1_refund', 'created_at', test.unix_ms(now() - interval '10 min'),
    'object.order.id', 'ord_pack_1', 'object.transaction.order', 'ord_pack_1',
    'object.subscription', null, 'object.transaction.subscription', null))));
SELECT * FROM test.wh_user(:'pack_user');
-- The refund again, as a dispute of the same order: nothing left to claw back twice.
SELECT test.said(test.creem(test.wh('creem', 'dispute_created', jsonb_build_object(
    'id', 'evt_pack_1_dispute', 'created_at', test.unix_ms(now() - interval '9 min'),
    'object.order.id', 'ord_pack_1', 'object.subscription', null, 'object.transaction.subscription', null))));

-- ==== Out of order: the refund first, then its purchase ====
\set late_user '7a416f5b-cc87-5526-a4f2-e0ebe4f64180'
SELECT test.said(test.creem(test.wh('creem', 'refund_created', jsonb_build_object(
    'id', 'evt_pack_2_refund', 'created_at', test.unix_ms(now() - interval '5 min'),
    'object.order.id', 'ord_pack_2', 'object.subscription', null, 'object.transaction.subscription', null))));
SELECT provider, event_id, reason, tries FROM credits.webhook_events WHERE event_id = 'evt_pack_2_refund';
-- The purchase applies, and replays the refund it was waiting for.
SELECT test.said(test.creem(test.wh('creem', 'checkout_completed', jsonb_build_object(
    'id', 'evt_pack_2', 'created_at', test.unix_ms(now() - interval '6 min'),
    'object.metadata', '{"user_id": "auth0|507f1f77bcf86cd799439011"}'::jsonb,
    'object.product.id', 'prod_pack_100', 'object.order.id', 'ord_pack_2', 'object.subscription', null))));
SELECT * FROM test.wh_user(:'late_user');
SELECT count(*) AS still_kept FROM credits.webhook_events WHERE event_id = 'evt_pack_2_refund';

-- ==== Out of order: a renewal before the checkout that names the user ====
\set order_user 'd2152bb8-acca-58be-a845-5a088d0d9fa9'
SELECT test.said(test.creem(test.wh('creem', 'subscription_paid', jsonb_build_object(
    'id', 'evt_sub_2_paid', 'created_at', test.unix_ms(now() - interval '3 min'),
    'object.id', 'sub_2', 'object.current_period_end_date', test.iso(now() + interval '30 days')))));
SELECT test.said(test.creem(test.wh('creem', 'checkout_completed', jsonb_build_object(
    'id', 'evt_sub_2_checkout', 'created_at', test.unix_ms(now() - interval '4 min'),
    'object.request_id', 'Zr3kQ9xWb1mN4pL7vT2yC8dF', 'object.subscription.id', 'sub_2', 'object.order.id', 'ord_sub_2'))));
SELECT * FROM test.wh_user(:'order_user');

-- ==== An unmapped product: kept, applied once the product is mapped ====
SELECT test.said(test.creem(test.wh('creem', 'checkout_completed', jsonb_build_object(
    'id', 'evt_new_product', 'created_at', test.unix_ms(now() - interval '2 min'),
    'object.request_id', 'Zr3kQ9xWb1mN4pL7vT2yC8dF', 'object.product.id', 'prod_new_pack',
    'object.order.id', 'ord_new', 'object.subscription', null))));
SELECT test.said(r) FROM jsonb_array_elements(credits.replay_webhook_events('creem') -> 'results') r
 WHERE r ->> 'event_id' = 'evt_new_product';
INSERT INTO credits.products (product_id, credits) VALUES ('prod_new_pack', 25);
SELECT (x - 'results') AS replay, (SELECT test.said(r) FROM jsonb_array_elements(x -> 'results') r
                                    WHERE r ->> 'event_id' = 'evt_new_product') AS new_product
  FROM credits.replay_webhook_events('creem') x;
SELECT * FROM test.wh_user(:'order_user');
-- An event type credits does not apply: acknowledged, kept.
SELECT test.said(test.creem('{"id": "evt_unknown", "eventType": "customer.updated", "created_at": 1728734325927, "object": {"id": "cust_1", "object": "customer"}}'));

-- ==== Signatures ====
SELECT (test.error_of(format('SELECT test.creem(%L, %L)', body, 'whsec_wrong'))).*
  FROM test.wh_fixtures WHERE provider = 'creem' AND name = 'checkout_completed';
SELECT label, e.state, e.detail ->> 'reason' AS reason
  FROM test.wh_fixtures f, (VALUES
    ('no header', NULL),
    ('empty', ''),
    ('not hex', repeat('z', 64)),
    ('too short', 'abcdef'),
    ('sha256= prefix', 'sha256=0a473e626292448443989a9928d23ccd753a4d05f3981d11c1f1ba7f01c88166'),
    ('one byte off', '0a473e626292448443989a9928d23ccd753a4d05f3981d11c1f1ba7f01c88167')
  ) AS s(label, signature),
  LATERAL test.error_of(format('SELECT credits.apply_creem_event(%L, %L)', f.body, s.signature)) e
 WHERE f.provider = 'creem' AND f.name = 'checkout_completed';
-- The body changed by a byte (a jsonb round trip reorders keys): refused.
SELECT (test.error_of(format('SELECT credits.apply_creem_event(%L, %L)', body::jsonb::text,
                             '0a473e626292448443989a9928d23ccd753a4d05f3981d11c1f1ba7f01c88166'))).detail
  FROM test.wh_fixtures WHERE provider = 'creem' AND name = 'checkout_completed';
-- Refusals are counted (credits.stats), and nothing of them is written.
SELECT reason, operation, denials >= 8 AS counted FROM credits.stats WHERE reason = 'bad_signature' AND operation = 'creem';
-- A signed body that is not Creem's: 22023 with the field.
SELECT e.state, e.detail ->> 'field' AS field, e.message
  FROM (VALUES ('not json'), ('[]'), ('{"id": "evt_x"}'), ('{"id": "evt_x", "eventType": "checkout.completed", "created_at": "yesterday", "object": {}}'),
               ('{"id": "evt_x", "eventType": "checkout.completed", "created_at": 1, "object": {"id": 5}}')) AS s(body),
  LATERAL test.error_of(format('SELECT test.creem(%L)', s.body)) e;

SELECT * FROM credits.reconcile();
