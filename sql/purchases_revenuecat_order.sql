-- Duplicates and out-of-order deliveries of every documented RevenueCat
-- event (issue 15), driven by RevenueCat's own samples
-- (test/fixtures/revenuecat/docs, sources in its README).
--
-- What RevenueCat says: a webhook is retried until it gets a 200 (so the same
-- event, same event.id, can arrive again), deliveries are not ordered (a
-- later event of a subscription can arrive before an earlier one), and
-- event_timestamp_ms is when RevenueCat created the event.  What credits
-- guarantees, checked below for each sample:
--   (a) a second delivery of an event is a replay: the same answer (marked
--       "duplicate" when it was applied; "ignored" and kept again when it was
--       kept), no new ledger row, no change to any entitlement, account,
--       purchase or kept event;
--   (b) an event delivered after a later event of the same subscription or
--       transaction leaves the same end state (entitlement product, plan,
--       status, expiry, pending product; account plan and balance; ledger
--       amounts; recorded purchases) as the two delivered in order: the
--       newest event of a subscription decides its status, an older one
--       arriving after it is "stale" (kept, changes nothing), except a
--       purchase newer than the last purchase seen, which sets the product
--       and plan it names ("older_purchase") as it would have in order;
--   (c) reconcile() finds nothing after each.
--
-- Each sample is used as published except: app_user_id is our user (the
-- TRANSFER sample already names uuids: it is used as is), event.id is the
-- sample's name (several samples share one id: they are independent
-- examples), and every *_ms field is moved by one amount so the event
-- happened a given time ago (the samples are dated 2020 to 4466).  The
-- related event of a pair is another sample made to name the same
-- subscription (product_id, transaction_id, original_transaction_id of the
-- sample under test), as the samples are examples of different ones.
\getenv abs_srcdir PG_ABS_SRCDIR
\set fx :abs_srcdir '/test/fixtures/revenuecat/docs'
CREATE TABLE test.rc_order_docs (name text PRIMARY KEY, body jsonb NOT NULL);
\set body `cat :fx/initial_purchase.json`
INSERT INTO test.rc_order_docs VALUES ('initial_purchase', :'body');
\set body `cat :fx/renewal.json`
INSERT INTO test.rc_order_docs VALUES ('renewal', :'body');
\set body `cat :fx/cancellation.json`
INSERT INTO test.rc_order_docs VALUES ('cancellation', :'body');
\set body `cat :fx/uncancellation.json`
INSERT INTO test.rc_order_docs VALUES ('uncancellation', :'body');
\set body `cat :fx/non_renewing_purchase.json`
INSERT INTO test.rc_order_docs VALUES ('non_renewing_purchase', :'body');
\set body `cat :fx/subscription_paused.json`
INSERT INTO test.rc_order_docs VALUES ('subscription_paused', :'body');
\set body `cat :fx/billing_issue.json`
INSERT INTO test.rc_order_docs VALUES ('billing_issue', :'body');
\set body `cat :fx/transfer.json`
INSERT INTO test.rc_order_docs VALUES ('transfer', :'body');
\set body `cat :fx/refund.json`
INSERT INTO test.rc_order_docs VALUES ('refund', :'body');
\set body `cat :fx/product_change.json`
INSERT INTO test.rc_order_docs VALUES ('product_change', :'body');
\set body `cat :fx/trial_started.json`
INSERT INTO test.rc_order_docs VALUES ('trial_started', :'body');
\set body `cat :fx/trial_cancelled.json`
INSERT INTO test.rc_order_docs VALUES ('trial_cancelled', :'body');
\set body `cat :fx/expiration.json`
INSERT INTO test.rc_order_docs VALUES ('expiration', :'body');
\set body `cat :fx/subscription_extended.json`
INSERT INTO test.rc_order_docs VALUES ('subscription_extended', :'body');
\set body `cat :fx/virtual_currency_transaction.json`
INSERT INTO test.rc_order_docs VALUES ('virtual_currency_transaction', :'body');
\set body `cat :fx/refund_reversed.json`
INSERT INTO test.rc_order_docs VALUES ('refund_reversed', :'body');
\set body `cat :fx/invoice_issuance.json`
INSERT INTO test.rc_order_docs VALUES ('invoice_issuance', :'body');
\set body `cat :fx/experiment_enrollment.json`
INSERT INTO test.rc_order_docs VALUES ('experiment_enrollment', :'body');
\set body `cat :fx/temporary_entitlement_grant.json`
INSERT INTO test.rc_order_docs VALUES ('temporary_entitlement_grant', :'body');
SELECT count(*) AS samples, count(DISTINCT body -> 'event' ->> 'type') AS event_types FROM test.rc_order_docs;

-- The samples' products (as in purchases_revenuecat_docs).
INSERT INTO credits.products (product_id, plan) VALUES
    ('com.subscription.weekly', 'pro'), ('com.subscription.monthly', 'plus'),
    ('com.subscription.yearly', 'pro'), ('com.revenuecat.myapp.weekly', 'pro'),
    ('com.revenuecat.myapp.monthly', 'plus'), ('com.revenuecat.myapp.yearly', 'pro'),
    ('premium', 'pro')
ON CONFLICT (product_id) DO NOTHING;
INSERT INTO credits.products (product_id, credits) VALUES ('2100_tokens', 2100)
ON CONFLICT (product_id) DO NOTHING;

-- Our users: every sample's app user, and the TRANSFER sample's
-- transferred_from and transferred_to.
CREATE TABLE test.rc_order_users (label text PRIMARY KEY, user_id uuid NOT NULL);
INSERT INTO test.rc_order_users VALUES
    ('from', 'f1600000-0000-0000-0000-000000000001'), ('to', 'f1600000-0000-0000-0000-000000000002');

-- A sample, happened `ago` before now (every *_ms field moved by one amount),
-- with its own event id, our users, and the fields in `patch`.
CREATE FUNCTION test.rc_o(sample text, ago interval, patch jsonb DEFAULT '{}') RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_set(d.body, '{event}', jsonb_object_agg(k,
               CASE WHEN k LIKE '%\_ms' AND jsonb_typeof(v) = 'number'
                    THEN to_jsonb((v::text::bigint) + test.ms(now() - ago) - (d.body -> 'event' ->> 'event_timestamp_ms')::bigint)
                    WHEN k IN ('app_user_id', 'transferred_from')
                    THEN (SELECT CASE WHEN k = 'app_user_id' THEN to_jsonb(user_id) ELSE jsonb_build_array(user_id) END
                            FROM test.rc_order_users WHERE label = 'from')
                    WHEN k = 'transferred_to'
                    THEN (SELECT jsonb_build_array(user_id) FROM test.rc_order_users WHERE label = 'to')
                    ELSE v END)
               || jsonb_build_object('id', sample)
               || patch)
      FROM test.rc_order_docs d, jsonb_each(d.body -> 'event') e(k, v)
     WHERE d.name = sample
     GROUP BY d.body
$$;

-- The fields that name a sample's subscription, to make another sample name it too.
CREATE FUNCTION test.rc_same_subscription(sample text) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('product_id', body -> 'event' -> 'product_id',
                              'transaction_id', body -> 'event' -> 'transaction_id',
                              'original_transaction_id', body -> 'event' -> 'original_transaction_id')
      FROM test.rc_order_docs WHERE name = sample
$$;
-- The same, and the same period (purchase and expiration times of the sample happened `ago`):
-- a status event names the period the subscription is in.
CREATE FUNCTION test.rc_same_period(sample text, ago interval) RETURNS jsonb LANGUAGE sql AS $$
    SELECT test.rc_same_subscription(sample)
           || jsonb_build_object('purchased_at_ms', b -> 'event' -> 'purchased_at_ms',
                                 'expiration_at_ms', b -> 'event' -> 'expiration_at_ms')
      FROM test.rc_o(sample, ago) b
$$;

-- Everything a delivery can change, without ids (sequences do not roll back);
-- times are exact (one transaction: now() is the same throughout).
CREATE FUNCTION test.rc_order_state() RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object(
        'entitlements', (SELECT coalesce(jsonb_agg(jsonb_build_object('user', u.label, 'product', e.product_id,
                                    'plan', e.plan, 'status', e.status, 'reason', e.status_reason,
                                    'next', e.next_product_id, 'expires_at', e.expires_at,
                                    'transaction', e.transaction_id, 'last_event_at', e.last_event_at)
                                  ORDER BY e.original_transaction_id, e.product_id), '[]')
                           FROM credits.entitlements e JOIN test.rc_order_users u USING (user_id)),
        'accounts', (SELECT coalesce(jsonb_agg(jsonb_build_object('user', u.label, 'plan', (credits.account_status(u.user_id)).plan,
                                'balance', a.balance) ORDER BY u.label), '[]')
                       FROM credits.accounts a JOIN test.rc_order_users u USING (user_id)),
        'ledger', (SELECT coalesce(jsonb_agg(jsonb_build_object('user', t.label, 'net', t.net) ORDER BY t.label), '[]')
                     FROM (SELECT u.label, sum(l.amount) AS net
                             FROM credits.ledger l JOIN test.rc_order_users u USING (user_id)
                            GROUP BY u.label) t),
        'purchases', (SELECT coalesce(jsonb_agg(jsonb_build_object('user', u.label, 'transaction', p.transaction_id,
                                 'kind', p.kind, 'product', p.product_id, 'refund', p.refund_state)
                                 ORDER BY p.transaction_id), '[]')
                        FROM credits.purchases p JOIN test.rc_order_users u USING (user_id)
                       WHERE p.source = 'revenuecat'))
$$;

-- The bookkeeping of deliveries: events applied, events kept and why.
CREATE FUNCTION test.rc_order_books() RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object(
        'ledger_rows', (SELECT count(*) FROM credits.ledger l JOIN test.rc_order_users u USING (user_id)),
        'applied', (SELECT coalesce(jsonb_agg(s.event_id ORDER BY s.event_id), '[]')
                      FROM credits.store_events s WHERE s.source = 'revenuecat'),
        'kept', (SELECT coalesce(jsonb_agg(k.event_id || ': ' || k.reason ORDER BY k.event_id), '[]')
                   FROM credits.webhook_events k WHERE k.provider = 'revenuecat'))
$$;

-- The state in one line: entitlements, then account plans and balances.
CREATE FUNCTION test.rc_order_summary(state jsonb) RETURNS text LANGUAGE sql AS $$
    SELECT concat_ws('; ',
        (SELECT string_agg(format('%s %s %s %s%s ends %s', e ->> 'user', e ->> 'product', e ->> 'plan', e ->> 'status',
                                  CASE WHEN e ->> 'next' IS NULL THEN '' ELSE ' next ' || (e ->> 'next') END,
                                  CASE WHEN e ->> 'expires_at' IS NULL THEN 'never'
                                       WHEN (e ->> 'expires_at')::timestamptz > now() THEN 'later'
                                       WHEN (e ->> 'expires_at')::timestamptz = now() THEN 'now' ELSE 'passed' END), ', ')
           FROM jsonb_array_elements(state -> 'entitlements') e),
        (SELECT string_agg(format('%s %s %s', a ->> 'user', a ->> 'plan', a ->> 'balance'), ', ')
           FROM jsonb_array_elements(state -> 'accounts') a))
$$;

-- Delivers the bodies in order, notes the answers (status/reason) and the
-- state, then rolls everything back (an error caught by a block of its own).
CREATE FUNCTION test.rc_deliver(bodies jsonb[]) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    body jsonb;
    answers jsonb := '[]';
    seen text;
BEGIN
    BEGIN
        FOREACH body IN ARRAY bodies LOOP
            answers := answers || jsonb_build_array(credits.apply_revenuecat_event(body) - 'replayed');
        END LOOP;
        RAISE EXCEPTION 'rolled back' USING DETAIL = jsonb_build_object(
            'answers', answers, 'state', test.rc_order_state(), 'books', test.rc_order_books(),
            'reconcile', (SELECT count(*) FROM credits.reconcile()))::text;
    EXCEPTION WHEN raise_exception THEN
        GET STACKED DIAGNOSTICS seen = PG_EXCEPTION_DETAIL;
    END;
    RETURN seen::jsonb;
END
$$;

CREATE FUNCTION test.rc_statuses(run jsonb) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(concat_ws(' ', a ->> 'type', a ->> 'status', a ->> 'reason'), ', ' ORDER BY n)
      FROM jsonb_array_elements(run -> 'answers') WITH ORDINALITY x(a, n)
$$;

-- One sample: `earlier` happened 2 hours ago, `later` 1 hour ago (one of the
-- two is the sample); delivered in order, in the other order, and in order
-- with the sample delivered again.
CREATE FUNCTION test.rc_order_case(sample text, earlier jsonb, later jsonb,
    OUT in_order text, OUT out_of_order text, OUT same_end_state boolean,
    OUT again text, OUT same_answer boolean, OUT nothing_changed boolean,
    OUT reconcile_rows bigint, OUT end_state text)
LANGUAGE plpgsql AS $$
DECLARE
    fwd jsonb := test.rc_deliver(ARRAY[earlier, later]);
    rev jsonb := test.rc_deliver(ARRAY[later, earlier]);
    dup jsonb := test.rc_deliver(ARRAY[earlier, later, CASE WHEN earlier -> 'event' ->> 'id' = sample THEN earlier ELSE later END]);
    first jsonb := dup -> 'answers' -> CASE WHEN earlier -> 'event' ->> 'id' = sample THEN 0 ELSE 1 END;
    second jsonb := dup -> 'answers' -> 2;
BEGIN
    in_order := test.rc_statuses(fwd);
    out_of_order := test.rc_statuses(rev);
    same_end_state := fwd -> 'state' = rev -> 'state';
    again := concat_ws(' ', second ->> 'status', second ->> 'reason');
    -- "linked": anonymous ids this delivery linked (none the second time)
    same_answer := (first - '{status,reason,linked}'::text[]) = (second - '{status,reason,linked}'::text[])
                   AND (second ->> 'status' = 'duplicate' OR second ->> 'status' = first ->> 'status');
    nothing_changed := fwd -> 'state' = dup -> 'state' AND fwd -> 'books' = dup -> 'books';
    reconcile_rows := (fwd ->> 'reconcile')::bigint + (rev ->> 'reconcile')::bigint + (dup ->> 'reconcile')::bigint;
    end_state := test.rc_order_summary(fwd -> 'state');
    IF NOT same_answer THEN
        RAISE NOTICE 'first: %', first;
        RAISE NOTICE 'again: %', second;
    END IF;
    IF NOT same_end_state THEN
        RAISE NOTICE 'in order: %', fwd -> 'state';
        RAISE NOTICE 'out of order: %', rev -> 'state';
    END IF;
END
$$;

\x on
-- ==== INITIAL_PURCHASE ====
-- The purchase arrives after the RENEWAL of the same subscription: stale (its
-- transaction is recorded all the same), the renewal's product, plan and expiry stay.
SELECT * FROM test.rc_order_case('initial_purchase',
    test.rc_o('initial_purchase', '2 hours'),
    test.rc_o('renewal', '1 hour', test.rc_same_subscription('initial_purchase')));
-- The trial start (an INITIAL_PURCHASE of period TRIAL) after its CANCELLATION:
-- cancelled, with access until the trial's end, either way.
SELECT * FROM test.rc_order_case('trial_started',
    test.rc_o('trial_started', '2 hours'),
    test.rc_o('trial_cancelled', '1 hour', test.rc_same_period('trial_started', '2 hours')));

-- ==== RENEWAL ====
-- A renewal after the EXPIRATION that followed it: stays expired.
SELECT * FROM test.rc_order_case('renewal',
    test.rc_o('renewal', '2 hours'),
    test.rc_o('expiration', '1 hour', test.rc_same_subscription('renewal')));

-- ==== CANCELLATION ====
-- Unsubscribed, then resubscribed (UNCANCELLATION); the cancellation arrives last: active.
SELECT * FROM test.rc_order_case('cancellation',
    test.rc_o('cancellation', '2 hours'),
    test.rc_o('uncancellation', '1 hour', test.rc_same_period('cancellation', '2 hours')));
-- A trial cancelled, after the EXPIRATION at the trial's end: expired.
SELECT * FROM test.rc_order_case('trial_cancelled',
    test.rc_o('trial_cancelled', '2 hours'),
    test.rc_o('expiration', '1 hour', test.rc_same_subscription('trial_cancelled')));
-- A refund (CANCELLATION, CUSTOMER_SUPPORT) delivered before the purchase it
-- refunds: refunded either way, access ended when the refund was applied.
SELECT * FROM test.rc_order_case('refund',
    test.rc_o('initial_purchase', '2 hours', test.rc_same_subscription('refund')),
    test.rc_o('refund', '1 hour'));

-- ==== UNCANCELLATION ====
-- Resubscribed, then the subscription expired: the resubscription arrives last, stays expired.
SELECT * FROM test.rc_order_case('uncancellation',
    test.rc_o('uncancellation', '2 hours'),
    test.rc_o('expiration', '1 hour', test.rc_same_subscription('uncancellation')));

-- ==== NON_RENEWING_PURCHASE ====
-- A pack of 2100 credits, and its refund (the refund sample, naming the
-- pack's transaction).  In order the credits are clawed back; the refund
-- first leaves a tombstone and the purchase credits nothing.  Either way the
-- net is 0 (the ledger rows differ: in order it shows the credit and the claw-back).
SELECT * FROM test.rc_order_case('non_renewing_purchase',
    test.rc_o('non_renewing_purchase', '2 hours'),
    test.rc_o('refund', '1 hour', test.rc_same_subscription('non_renewing_purchase')));

-- ==== SUBSCRIPTION_PAUSED ====
-- Paused (at the end of the period) after the purchase: paused, access until the period ends.
SELECT * FROM test.rc_order_case('subscription_paused',
    test.rc_o('initial_purchase', '2 hours', test.rc_same_subscription('subscription_paused')),
    test.rc_o('subscription_paused', '1 hour', test.rc_same_period('initial_purchase', '2 hours')
                                               || test.rc_same_subscription('subscription_paused')));

-- ==== BILLING_ISSUE ====
-- A billing issue, then the cancellation for it; the billing issue arrives last: cancelled.
SELECT * FROM test.rc_order_case('billing_issue',
    test.rc_o('billing_issue', '2 hours'),
    test.rc_o('cancellation', '1 hour', test.rc_same_period('billing_issue', '2 hours')));

-- ==== TRANSFER ====
-- The sample (from and to: our two users) after the purchase of the user it
-- transfers from: the subscription moves to the other user.
SELECT * FROM test.rc_order_case('transfer',
    test.rc_o('initial_purchase', '2 hours'),
    test.rc_o('transfer', '1 hour'));

-- ==== PRODUCT_CHANGE ====
-- A change to the yearly product, after the purchase of the monthly one:
-- pending (it takes effect at the next renewal), still monthly.
SELECT * FROM test.rc_order_case('product_change',
    test.rc_o('initial_purchase', '2 hours', test.rc_same_subscription('product_change')),
    test.rc_o('product_change', '1 hour', test.rc_same_period('initial_purchase', '2 hours')
                                          || test.rc_same_subscription('product_change')));

-- ==== EXPIRATION ====
-- Expired, after the purchase.
SELECT * FROM test.rc_order_case('expiration',
    test.rc_o('initial_purchase', '2 hours', test.rc_same_subscription('expiration')),
    test.rc_o('expiration', '1 hour'));

-- ==== SUBSCRIPTION_EXTENDED ====
-- Extended (a later end) after the purchase: active until the new end.
SELECT * FROM test.rc_order_case('subscription_extended',
    test.rc_o('initial_purchase', '2 hours', test.rc_same_subscription('subscription_extended')),
    test.rc_o('subscription_extended', '1 hour', jsonb_build_object('expiration_at_ms', test.ms(now() + interval '30 days'))));

-- ==== REFUND_REVERSED ====
-- A refund of the subscription (the refund sample naming it), then its reversal:
-- the reversal first, the older refund is stale: active either way.
SELECT * FROM test.rc_order_case('refund_reversed',
    test.rc_o('refund', '2 hours', test.rc_same_subscription('refund_reversed')),
    test.rc_o('refund_reversed', '1 hour', jsonb_build_object('expiration_at_ms', test.ms(now() + interval '30 days'))));

-- ==== Types kept, never applied: VIRTUAL_CURRENCY_TRANSACTION, INVOICE_ISSUANCE,
-- EXPERIMENT_ENROLLMENT, TEMPORARY_ENTITLEMENT_GRANT (the sample names no product
-- and no entitlement) ====
-- Kept in any order; the purchase they accompany applies either way.
SELECT * FROM test.rc_order_case('virtual_currency_transaction',
    test.rc_o('initial_purchase', '2 hours'),
    test.rc_o('virtual_currency_transaction', '1 hour'));
SELECT * FROM test.rc_order_case('invoice_issuance',
    test.rc_o('invoice_issuance', '2 hours'),
    test.rc_o('initial_purchase', '1 hour'));
SELECT * FROM test.rc_order_case('experiment_enrollment',
    test.rc_o('experiment_enrollment', '2 hours'),
    test.rc_o('initial_purchase', '1 hour'));
SELECT * FROM test.rc_order_case('temporary_entitlement_grant',
    test.rc_o('temporary_entitlement_grant', '2 hours'),
    test.rc_o('initial_purchase', '1 hour'));

-- ==== One instant, any order ====
-- RevenueCat sends the events of one store notification with the same
-- event_timestamp_ms (a first payment that fails: INITIAL_PURCHASE,
-- BILLING_ISSUE and CANCELLATION at one millisecond), and delivers them in
-- any order.  At one instant the events take their place in a subscription's
-- life: the purchase first, then a renewal or product change, then an
-- uncancellation or extension, a billing issue, a pause, a cancellation, the
-- expiration, a refund, its reversal.  (Before, the last delivered won: an
-- INITIAL_PURCHASE delivered last made the subscription active again.)
SELECT * FROM test.rc_order_case('initial_purchase',
    test.rc_o('initial_purchase', '1 hour'),
    test.rc_o('billing_issue', '1 hour', test.rc_same_period('initial_purchase', '1 hour')));
SELECT * FROM test.rc_order_case('initial_purchase',
    test.rc_o('initial_purchase', '1 hour'),
    test.rc_o('cancellation', '1 hour', test.rc_same_period('initial_purchase', '1 hour')
                                        || '{"cancel_reason": "BILLING_ERROR"}'));
SELECT * FROM test.rc_order_case('renewal',
    test.rc_o('renewal', '1 hour'),
    test.rc_o('expiration', '1 hour', test.rc_same_subscription('renewal')));
SELECT * FROM test.rc_order_case('refund_reversed',
    test.rc_o('refund', '1 hour', test.rc_same_subscription('refund_reversed')),
    test.rc_o('refund_reversed', '1 hour', jsonb_build_object('expiration_at_ms', test.ms(now() + interval '30 days'))));
-- A pack's refund and its reversal at one instant, before the purchase: reversed.
SELECT * FROM test.rc_order_case('refund_reversed',
    test.rc_o('refund', '1 hour', test.rc_same_subscription('non_renewing_purchase')),
    test.rc_o('refund_reversed', '1 hour', test.rc_same_subscription('non_renewing_purchase')));

-- ==== A status event seen first ====
-- A subscription's first event delivered can be a status event (the purchase
-- is late): it names the product and end until a purchase sets them, and the
-- newest such event does.  A trial cancelled, then a billing issue of a later
-- period (each sample's own period): the billing issue's end, either way.
SELECT * FROM test.rc_order_case('trial_cancelled',
    test.rc_o('trial_cancelled', '2 hours'),
    test.rc_o('billing_issue', '1 hour', test.rc_same_subscription('trial_cancelled')));
\x off

-- An App Store upgrade from monthly (plus) to yearly (pro), then a
-- cancellation: RevenueCat's status events after an upgrade name the old
-- product and its end.  Delivered in order, and with the cancellation (or the
-- product change) first: the upgrade holds (pro, yearly end), cancelled.
-- (Before, the cancellation seen first set the old product, and the older
-- RENEWAL that followed it was stale: plus until the next renewal.)
CREATE FUNCTION test.rc_upgrade(step text) RETURNS jsonb LANGUAGE sql AS $$
    SELECT CASE step
        WHEN 'purchase' THEN test.rc_o('initial_purchase', '3 hours', jsonb_build_object(
            'product_id', 'com.subscription.monthly', 'transaction_id', 'UPG1', 'original_transaction_id', 'UPG1',
            'expiration_at_ms', test.ms(now() + interval '20 days')))
        WHEN 'renewal' THEN test.rc_o('renewal', '2 hours', jsonb_build_object(
            'product_id', 'com.subscription.yearly', 'transaction_id', 'UPG1-2', 'original_transaction_id', 'UPG1',
            'expiration_at_ms', test.ms(now() + interval '365 days')))
        WHEN 'change' THEN test.rc_o('product_change', '2 hours', jsonb_build_object(
            'product_id', 'com.subscription.monthly', 'new_product_id', 'com.subscription.yearly',
            'transaction_id', 'UPG1', 'original_transaction_id', 'UPG1',
            'expiration_at_ms', test.ms(now() + interval '20 days')))
        WHEN 'cancel' THEN test.rc_o('cancellation', '1 hour', jsonb_build_object(
            'product_id', 'com.subscription.monthly', 'transaction_id', 'UPG1', 'original_transaction_id', 'UPG1',
            'expiration_at_ms', test.ms(now() + interval '20 days')))
    END
$$;
SELECT test.rc_statuses(o) AS out_of_order, o -> 'state' = i -> 'state' AS same_end_state,
       (i ->> 'reconcile')::int + (o ->> 'reconcile')::int AS reconcile_rows, test.rc_order_summary(o -> 'state') AS end_state
  FROM test.rc_deliver(ARRAY[test.rc_upgrade('purchase'), test.rc_upgrade('renewal'), test.rc_upgrade('change'), test.rc_upgrade('cancel')]) i,
       (VALUES (ARRAY['purchase', 'renewal', 'change', 'cancel']), (ARRAY['cancel', 'renewal', 'change', 'purchase']),
               (ARRAY['cancel', 'change', 'purchase', 'renewal']), (ARRAY['change', 'cancel', 'purchase', 'renewal']),
               (ARRAY['renewal', 'cancel', 'purchase', 'change'])) p(steps),
       LATERAL test.rc_deliver(ARRAY(SELECT test.rc_upgrade(x) FROM unnest(p.steps) WITH ORDINALITY u(x, n) ORDER BY n)) o;

-- A cancellation, then an extension (SUBSCRIPTION_EXTENDED sets no status:
-- still cancelled, with a later end).  Delivered with the extension before
-- the cancellation, or before both: the older cancellation still sets the
-- status (before, it was stale: active).
CREATE FUNCTION test.rc_extended(step text) RETURNS jsonb LANGUAGE sql AS $$
    SELECT CASE step
        WHEN 'purchase' THEN test.rc_o('initial_purchase', '3 hours')
        WHEN 'cancel' THEN test.rc_o('cancellation', '2 hours', test.rc_same_period('initial_purchase', '3 hours'))
        WHEN 'extend' THEN test.rc_o('subscription_extended', '1 hour', test.rc_same_subscription('initial_purchase')
                                     || jsonb_build_object('expiration_at_ms', test.ms(now() + interval '30 days')))
    END
$$;
SELECT test.rc_statuses(o) AS out_of_order, o -> 'state' = i -> 'state' AS same_end_state,
       (i ->> 'reconcile')::int + (o ->> 'reconcile')::int AS reconcile_rows, test.rc_order_summary(o -> 'state') AS end_state,
       o -> 'state' -> 'entitlements' -> 0 ->> 'reason' AS reason
  FROM test.rc_deliver(ARRAY[test.rc_extended('purchase'), test.rc_extended('cancel'), test.rc_extended('extend')]) i,
       (VALUES (ARRAY['purchase', 'cancel', 'extend']), (ARRAY['purchase', 'extend', 'cancel']),
               (ARRAY['extend', 'cancel', 'purchase']), (ARRAY['extend', 'purchase', 'cancel']),
               (ARRAY['cancel', 'extend', 'purchase'])) p(steps),
       LATERAL test.rc_deliver(ARRAY(SELECT test.rc_extended(x) FROM unnest(p.steps) WITH ORDINALITY u(x, n) ORDER BY n)) o;

-- Every sample was used above, as the event delivered late or early.
SELECT count(*) AS samples_not_covered FROM test.rc_order_docs
 WHERE name NOT IN ('initial_purchase', 'trial_started', 'renewal', 'cancellation', 'trial_cancelled',
                    'refund', 'uncancellation', 'non_renewing_purchase', 'subscription_paused',
                    'billing_issue', 'transfer', 'product_change', 'expiration', 'subscription_extended',
                    'refund_reversed', 'virtual_currency_transaction', 'invoice_issuance',
                    'experiment_enrollment', 'temporary_entitlement_grant');
-- Nothing was left behind.
SELECT count(*) AS entitlements FROM credits.entitlements e JOIN test.rc_order_users u USING (user_id);
