-- apply_stripe_event: Stripe's documented objects in their events (test/fixtures/stripe),
-- signed with the test secret (webhooks_00_setup) as Stripe signs, applied exactly once, in any order.
SELECT credits.user_uuid('stripe-pack-buyer') AS pack_user,
       credits.user_uuid('Zr3kQ9xWb1mN4pL7vT2yC8dF-sub') AS sub_user \gset

-- ==== A credit pack (mode payment) ====
-- As documented, the session is unpaid (an asynchronous payment method): nothing yet.
SELECT test.said(test.stripe(body)) FROM test.wh_fixtures WHERE provider = 'stripe' AND name = 'checkout_session_completed';
-- Paid, with the app's user and the price it sold (Stripe sends no line items in the event).
SELECT test.said(test.stripe(test.wh('stripe', 'checkout_session_completed', jsonb_build_object(
    'id', 'evt_pack_paid', 'created', test.unix_s(now() - interval '1 hour'),
    'data.object.payment_status', 'paid', 'data.object.client_reference_id', 'stripe-pack-buyer',
    'data.object.metadata', '{"price_id": "price_pack_200"}'::jsonb))));
SELECT * FROM test.wh_user(:'pack_user');
-- Redelivered: the first result.
SELECT test.said(test.stripe(test.wh('stripe', 'checkout_session_completed', jsonb_build_object(
    'id', 'evt_pack_paid', 'created', test.unix_s(now() - interval '1 hour'),
    'data.object.payment_status', 'paid', 'data.object.client_reference_id', 'stripe-pack-buyer',
    'data.object.metadata', '{"price_id": "price_pack_200"}'::jsonb)))) ->> 'status' AS redelivered;
-- The same payment reported by another event (async_payment_succeeded): credited once.
SELECT test.said(test.stripe(test.wh('stripe', 'checkout_session_completed', jsonb_build_object(
    'id', 'evt_pack_async', 'type', 'checkout.session.async_payment_succeeded', 'created', test.unix_s(now() - interval '59 min'),
    'data.object.payment_status', 'paid', 'data.object.metadata', '{"user_id": "stripe-pack-buyer", "price_id": "price_pack_200"}'::jsonb))));
SELECT * FROM test.wh_user(:'pack_user');
-- A partial refund leaves the credits; the full refund claws back what is left (10 credits
-- were spent: the signup bonus, then 4 of the pack).
SELECT amount AS spent FROM credits.credits_consume(:'pack_user', 'image', 10);
SELECT test.said(test.stripe(test.wh('stripe', 'charge_refunded', jsonb_build_object(
    'id', 'evt_refund_partial', 'created', test.unix_s(now() - interval '40 min'),
    'data.object.payment_intent', 'pi_1PgafyB7WZ01zgkWSjxsAJo3'))));
SELECT test.said(test.stripe(test.wh('stripe', 'charge_refunded', jsonb_build_object(
    'id', 'evt_refund_full', 'created', test.unix_s(now() - interval '30 min'),
    'data.object.payment_intent', 'pi_1PgafyB7WZ01zgkWSjxsAJo3', 'data.object.refunded', true))));
SELECT * FROM test.wh_user(:'pack_user');
-- The documented dispute names a charge credits never saw: kept for later.
SELECT test.said(test.stripe(body)) FROM test.wh_fixtures WHERE provider = 'stripe' AND name = 'charge_dispute_created';

-- ==== A subscription's life (mode subscription), to expiry ====
SELECT test.said(test.stripe(test.wh('stripe', 'checkout_session_completed', jsonb_build_object(
    'id', 'evt_sub_checkout', 'created', test.unix_s(now() - interval '2 hours'),
    'data.object.mode', 'subscription', 'data.object.payment_status', 'paid',
    'data.object.subscription', 'sub_1Pgc6rB7WZ01zgkWNy0Cn5nw', 'data.object.payment_intent', null,
    'data.object.client_reference_id', 'Zr3kQ9xWb1mN4pL7vT2yC8dF-sub',
    'data.object.metadata', '{"price_id": "price_pro_monthly"}'::jsonb))));
SELECT * FROM test.wh_user(:'sub_user');
-- invoice.paid: the period paid (the subscription is in parent.subscription_details since API 2025-03).
SELECT test.said(test.stripe(test.wh('stripe', 'invoice_paid', jsonb_build_object(
    'id', 'evt_sub_invoice', 'created', test.unix_s(now() - interval '119 min'),
    'data.object.parent.subscription_details.subscription', 'sub_1Pgc6rB7WZ01zgkWNy0Cn5nw',
    'data.object.lines.data.0.pricing.price_details', '{"price": "price_pro_monthly"}'::jsonb,
    'data.object.lines.data.0.period.end', test.unix_s(now() + interval '30 days')))));
SELECT * FROM test.wh_user(:'sub_user');
-- The documented invoice names a placeholder subscription ("subscription") and no user: kept.
SELECT test.said(test.stripe(body)) ->> 'reason' AS documented_invoice FROM test.wh_fixtures WHERE provider = 'stripe' AND name = 'invoice_paid';
-- As documented, the update moves to a price credits does not sell: kept until it is mapped.
SELECT test.said(test.stripe(test.wh('stripe', 'customer_subscription_updated', jsonb_build_object(
    'created', test.unix_s(now() - interval '100 min')))));
-- Canceled at the period end: the plan lasts until then.
SELECT test.said(test.stripe(test.wh('stripe', 'customer_subscription_updated', jsonb_build_object(
    'id', 'evt_sub_cancel', 'created', test.unix_s(now() - interval '90 min'),
    'data.object.items.data.0.price.id', 'price_pro_monthly',
    'data.object.items.data.0.current_period_end', test.unix_s(now() + interval '30 days')))));
SELECT * FROM test.wh_user(:'sub_user');
-- customer.subscription.deleted: access ends.
SELECT test.said(test.stripe(test.wh('stripe', 'customer_subscription_deleted', jsonb_build_object(
    'id', 'evt_sub_deleted', 'created', test.unix_s(now() - interval '60 min')))));
SELECT * FROM test.wh_user(:'sub_user');
-- An update from before the deletion, delivered late: stale.
SELECT test.said(test.stripe(test.wh('stripe', 'customer_subscription_updated', jsonb_build_object(
    'id', 'evt_sub_late', 'created', test.unix_s(now() - interval '70 min'), 'data.object.cancel_at_period_end', false,
    'data.object.items.data.0.price.id', 'price_pro_monthly',
    'data.object.items.data.0.current_period_end', test.unix_s(now() + interval '30 days')))));
SELECT * FROM test.wh_user(:'sub_user');
-- The documented update (a price credits does not sell) was kept; the deletion replayed it: stale.
SELECT count(*) AS still_kept FROM credits.webhook_events
 WHERE event_id = 'evt_1Pgc76B7WZ01zgkWwyRHS12y_customer_subscription_updated';

-- ==== A price not mapped yet: kept, applied by a replay once it is mapped ====
SELECT test.said(test.stripe(test.wh('stripe', 'checkout_session_completed', jsonb_build_object(
    'id', 'evt_new_price', 'created', test.unix_s(now() - interval '10 min'),
    'data.object.payment_status', 'paid', 'data.object.client_reference_id', 'stripe-pack-buyer',
    'data.object.payment_intent', 'pi_new_price', 'data.object.metadata', '{"price_id": "price_new_pack"}'::jsonb))));
INSERT INTO credits.products (product_id, credits) VALUES ('price_new_pack', 40);
SELECT x - 'results' AS replay, (SELECT jsonb_agg(test.said(r) ->> 'reason' ORDER BY r ->> 'event_id') FROM jsonb_array_elements(x -> 'results') r) AS reasons
  FROM credits.replay_webhook_events('stripe') x;
SELECT * FROM test.wh_user(:'pack_user');
-- A dispute of that payment (the documented dispute with its payment_intent): clawed back like a refund.
SELECT test.said(test.stripe(test.wh('stripe', 'charge_dispute_created', jsonb_build_object(
    'id', 'evt_dispute_new_price', 'created', test.unix_s(now() - interval '5 min'),
    'data.object.payment_intent', 'pi_new_price'))));
SELECT * FROM test.wh_user(:'pack_user');
SELECT event_id, reason FROM credits.webhook_events WHERE provider = 'stripe' ORDER BY event_id;
SELECT * FROM credits.reconcile();
-- Kept events can be forgotten after a while (admins delete nothing by hand).
SELECT credits.forget_webhook_events('stripe') AS forgotten_too_young,
       credits.forget_webhook_events('stripe', interval '0 seconds') AS forgotten;
SELECT count(*) AS kept FROM credits.webhook_events WHERE provider = 'stripe';

-- ==== Signatures ====
SELECT body FROM test.wh_fixtures WHERE provider = 'stripe' AND name = 'charge_refunded' \gset
SELECT label, e.state, e.detail ->> 'reason' AS reason
  FROM (VALUES
    ('no header', NULL),
    ('empty', ''),
    ('wrong secret', test.stripe_header(:'body', now(), 'whsec_wrong')),
    ('no timestamp', regexp_replace(test.stripe_header(:'body'), 't=[0-9]+,', '')),
    ('v0 only', replace(test.stripe_header(:'body'), 'v1=', 'v0=')),
    ('6 minutes old', test.stripe_header(:'body', now() - interval '6 min')),
    ('6 minutes ahead', test.stripe_header(:'body', now() + interval '6 min')),
    ('timestamp swapped', regexp_replace(test.stripe_header(:'body', now() - interval '1 hour'), 't=[0-9]+', 't=' || test.unix_s(now()))),
    ('4 minutes old', test.stripe_header(:'body', now() - interval '4 min')),
    ('a second v1 matches', regexp_replace(test.stripe_header(:'body'), ',v1=', ',v1=' || repeat('0', 64) || ',v1='))
  ) AS s(label, header),
  LATERAL test.error_of(format('SELECT credits.apply_stripe_event(%L, %L)', :'body', s.header)) e;
-- The tolerance is a setting (superuser).
SET credits.stripe_signature_tolerance = '10min';
SELECT credits.apply_stripe_event(:'body', test.stripe_header(:'body', now() - interval '6 min')) ->> 'status' AS six_minutes_old;
RESET credits.stripe_signature_tolerance;
SELECT reason, operation, denials >= 8 AS counted FROM credits.stats WHERE reason = 'bad_signature' AND operation = 'stripe';
-- A signed body that is not a Stripe event: 22023 with the field.
SELECT e.state, e.detail ->> 'field' AS field, e.message
  FROM (VALUES ('{"id": "evt_x", "type": "charge.refunded", "created": 1}'),
               ('{"id": "evt_x", "type": "charge.refunded", "created": 1, "data": {"object": {"refunded": "yes"}}}'),
               ('{"id": "evt_x", "type": "checkout.session.completed", "created": 1, "data": {"object": {"mode": "payment", "metadata": []}}}'),
               ('{"id": "evt_x", "type": "checkout.session.completed", "created": -5, "data": {"object": {}}}')) AS s(body),
  LATERAL test.error_of(format('SELECT test.stripe(%L)', s.body)) e;

SELECT * FROM credits.reconcile();
