-- RevenueCat's documented sample webhooks (test/fixtures/revenuecat/docs), each
-- fed to apply_revenuecat_event exactly as RevenueCat publishes it, in a
-- transaction of its own (several samples share one event id).  Each is
-- delivered twice (the second is a duplicate that changes nothing); what it
-- left behind is shown, and reconcile() finds nothing to report.
\getenv abs_srcdir PG_ABS_SRCDIR
\set fx :abs_srcdir '/test/fixtures/revenuecat/docs'
CREATE TABLE test.rc_docs (name text PRIMARY KEY, body jsonb NOT NULL);
\set body `cat :fx/initial_purchase.json`
INSERT INTO test.rc_docs VALUES ('initial_purchase', :'body');
\set body `cat :fx/renewal.json`
INSERT INTO test.rc_docs VALUES ('renewal', :'body');
\set body `cat :fx/cancellation.json`
INSERT INTO test.rc_docs VALUES ('cancellation', :'body');
\set body `cat :fx/uncancellation.json`
INSERT INTO test.rc_docs VALUES ('uncancellation', :'body');
\set body `cat :fx/non_renewing_purchase.json`
INSERT INTO test.rc_docs VALUES ('non_renewing_purchase', :'body');
\set body `cat :fx/subscription_paused.json`
INSERT INTO test.rc_docs VALUES ('subscription_paused', :'body');
\set body `cat :fx/billing_issue.json`
INSERT INTO test.rc_docs VALUES ('billing_issue', :'body');
\set body `cat :fx/transfer.json`
INSERT INTO test.rc_docs VALUES ('transfer', :'body');
\set body `cat :fx/refund.json`
INSERT INTO test.rc_docs VALUES ('refund', :'body');
\set body `cat :fx/product_change.json`
INSERT INTO test.rc_docs VALUES ('product_change', :'body');
\set body `cat :fx/trial_started.json`
INSERT INTO test.rc_docs VALUES ('trial_started', :'body');
\set body `cat :fx/trial_cancelled.json`
INSERT INTO test.rc_docs VALUES ('trial_cancelled', :'body');
\set body `cat :fx/expiration.json`
INSERT INTO test.rc_docs VALUES ('expiration', :'body');
\set body `cat :fx/subscription_extended.json`
INSERT INTO test.rc_docs VALUES ('subscription_extended', :'body');
\set body `cat :fx/virtual_currency_transaction.json`
INSERT INTO test.rc_docs VALUES ('virtual_currency_transaction', :'body');
\set body `cat :fx/refund_reversed.json`
INSERT INTO test.rc_docs VALUES ('refund_reversed', :'body');
\set body `cat :fx/invoice_issuance.json`
INSERT INTO test.rc_docs VALUES ('invoice_issuance', :'body');
\set body `cat :fx/experiment_enrollment.json`
INSERT INTO test.rc_docs VALUES ('experiment_enrollment', :'body');
\set body `cat :fx/temporary_entitlement_grant.json`
INSERT INTO test.rc_docs VALUES ('temporary_entitlement_grant', :'body');
SELECT name, body -> 'event' ->> 'type' AS type FROM test.rc_docs ORDER BY name;

-- The samples' products: subscriptions to pro and plus, and a pack of 2100 credits.
INSERT INTO credits.products (product_id, plan) VALUES
    ('com.subscription.weekly', 'pro'), ('com.subscription.monthly', 'plus'),
    ('com.subscription.yearly', 'pro'), ('com.revenuecat.myapp.weekly', 'pro'),
    ('com.revenuecat.myapp.monthly', 'plus'), ('com.revenuecat.myapp.yearly', 'pro'),
    ('premium', 'pro');
INSERT INTO credits.products (product_id, credits) VALUES ('2100_tokens', 2100);

-- The same body moved in time: every *_ms field by the same amount, so the
-- event happened `shift` ago (the samples are dated 2020 to 2025).
CREATE FUNCTION test.rc_shifted(body jsonb, shift interval) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_set(body, '{event}', jsonb_object_agg(k,
               CASE WHEN k LIKE '%\_ms' AND jsonb_typeof(v) = 'number'
                    THEN to_jsonb((v::text::bigint) + delta) ELSE v END))
      FROM jsonb_each(body -> 'event') e(k, v),
           LATERAL (SELECT test.ms(now() - shift) - (body -> 'event' ->> 'event_timestamp_ms')::bigint AS delta) d
$$;

-- The part of an answer that does not vary between runs, also in the
-- answers of the kept events it applied ("replayed").
CREATE FUNCTION test.rc_clean(answer jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT (answer - '{entitlement_id,entry_id,expires_at,event_timestamp_used}'::text[])
        || CASE WHEN answer ? 'replayed'
                THEN jsonb_build_object('replayed', (SELECT jsonb_agg(e - '{entitlement_id,entry_id,expires_at}'::text[])
                                                       FROM jsonb_array_elements(answer -> 'replayed') e))
                ELSE '{}' END
$$;
CREATE FUNCTION test.rc_doc(sample text, shift interval DEFAULT NULL) RETURNS jsonb LANGUAGE sql AS $$
    SELECT test.rc_clean(credits.apply_revenuecat_event(CASE WHEN shift IS NULL THEN d.body ELSE test.rc_shifted(d.body, shift) END))
      FROM test.rc_docs d WHERE d.name = sample
$$;

-- The app users the samples name, by their account ids.
CREATE TABLE test.rc_doc_users AS
    SELECT id, credits.user_uuid(id) AS user_id
      FROM (VALUES ('1234567890'), ('user_1234'), ('41234567890'),
                   ('00005A1C-6091-4F81-BE77-F0A83A271AB6'), ('4BEDB450-8EF2-11E9-B475-0800200C9A66')) v (id);

-- What a sample left behind: the entitlements (status as of now) and balances
-- of those users, the sample events kept, the anonymous ids linked to them.
CREATE FUNCTION test.rc_doc_state(OUT what text, OUT detail text) RETURNS SETOF record LANGUAGE sql AS $$
    SELECT 'entitlement', format('%s %s %s %s next=%s ends=%s', u.id, e.product_id, e.plan, e.status,
                                 e.next_product_id, CASE WHEN e.expires_at IS NULL THEN 'never'
                                                         WHEN e.expires_at > now() THEN 'later' ELSE 'passed' END)
      FROM credits.entitlements e JOIN test.rc_doc_users u USING (user_id)
    UNION ALL
    SELECT 'balance', format('%s %s', u.id, a.balance)
      FROM credits.accounts a JOIN test.rc_doc_users u USING (user_id)
    UNION ALL
    SELECT 'kept', format('%s %s %s', k.event_type, k.reason, k.app_user_ids)
      FROM credits.webhook_events k
     WHERE k.provider = 'revenuecat' AND k.event_id IN (SELECT d.body -> 'event' ->> 'id' FROM test.rc_docs d)
    UNION ALL
    SELECT 'alias', format('%s -> %s', l.app_user_id, u.id)
      FROM credits.revenuecat_aliases l JOIN test.rc_doc_users u USING (user_id)
    ORDER BY 1, 2
$$;

-- ==== Each sample as published ====
-- Most are dated 2020-2023: their subscriptions ended long ago, so the
-- answer says "expired", never "active", and no plan is given.
BEGIN;
SELECT test.rc_doc('initial_purchase') AS first, test.rc_doc('initial_purchase') ->> 'status' AS again;
SELECT * FROM test.rc_doc_state();
SELECT * FROM credits.reconcile();
ROLLBACK;
BEGIN;
SELECT test.rc_doc('renewal') AS first, test.rc_doc('renewal') ->> 'status' AS again;
SELECT * FROM test.rc_doc_state();
SELECT * FROM credits.reconcile();
ROLLBACK;
BEGIN;
SELECT test.rc_doc('cancellation') AS first, test.rc_doc('cancellation') ->> 'status' AS again;
SELECT * FROM test.rc_doc_state();
SELECT * FROM credits.reconcile();
ROLLBACK;
BEGIN;
SELECT test.rc_doc('uncancellation') AS first, test.rc_doc('uncancellation') ->> 'status' AS again;
SELECT * FROM test.rc_doc_state();
SELECT * FROM credits.reconcile();
ROLLBACK;
BEGIN;
SELECT test.rc_doc('non_renewing_purchase') AS first, test.rc_doc('non_renewing_purchase') ->> 'status' AS again;
SELECT * FROM test.rc_doc_state();
SELECT * FROM credits.reconcile();
ROLLBACK;
BEGIN;
SELECT test.rc_doc('subscription_paused') AS first, test.rc_doc('subscription_paused') ->> 'status' AS again;
SELECT * FROM test.rc_doc_state();
SELECT * FROM credits.reconcile();
ROLLBACK;
BEGIN;
SELECT test.rc_doc('billing_issue') AS first, test.rc_doc('billing_issue') ->> 'status' AS again;
SELECT * FROM test.rc_doc_state();
SELECT * FROM credits.reconcile();
ROLLBACK;
BEGIN;
SELECT test.rc_doc('transfer') AS first, test.rc_doc('transfer') ->> 'status' AS again;
SELECT * FROM test.rc_doc_state();
SELECT * FROM credits.reconcile();
ROLLBACK;
BEGIN;
SELECT test.rc_doc('refund') AS first, test.rc_doc('refund') ->> 'status' AS again;
SELECT * FROM test.rc_doc_state();
SELECT * FROM credits.reconcile();
ROLLBACK;
BEGIN;
SELECT test.rc_doc('product_change') AS first, test.rc_doc('product_change') ->> 'status' AS again;
SELECT * FROM test.rc_doc_state();
SELECT * FROM credits.reconcile();
ROLLBACK;
BEGIN;
SELECT test.rc_doc('trial_started') AS first, test.rc_doc('trial_started') ->> 'status' AS again;
SELECT * FROM test.rc_doc_state();
SELECT * FROM credits.reconcile();
ROLLBACK;
BEGIN;
SELECT test.rc_doc('trial_cancelled') AS first, test.rc_doc('trial_cancelled') ->> 'status' AS again;
SELECT * FROM test.rc_doc_state();
SELECT * FROM credits.reconcile();
ROLLBACK;
BEGIN;
SELECT test.rc_doc('expiration') AS first, test.rc_doc('expiration') ->> 'status' AS again;
SELECT * FROM test.rc_doc_state();
SELECT * FROM credits.reconcile();
ROLLBACK;
BEGIN;
SELECT test.rc_doc('subscription_extended') AS first, test.rc_doc('subscription_extended') ->> 'status' AS again;
SELECT * FROM test.rc_doc_state();
SELECT * FROM credits.reconcile();
ROLLBACK;
BEGIN;
SELECT test.rc_doc('virtual_currency_transaction') AS first, test.rc_doc('virtual_currency_transaction') ->> 'status' AS again;
SELECT * FROM test.rc_doc_state();
SELECT * FROM credits.reconcile();
ROLLBACK;
BEGIN;
SELECT test.rc_doc('refund_reversed') AS first, test.rc_doc('refund_reversed') ->> 'status' AS again;
SELECT * FROM test.rc_doc_state();
SELECT * FROM credits.reconcile();
ROLLBACK;
BEGIN;
SELECT test.rc_doc('invoice_issuance') AS first, test.rc_doc('invoice_issuance') ->> 'status' AS again;
SELECT * FROM test.rc_doc_state();
SELECT * FROM credits.reconcile();
ROLLBACK;
BEGIN;
SELECT test.rc_doc('experiment_enrollment') AS first, test.rc_doc('experiment_enrollment') ->> 'status' AS again;
SELECT * FROM test.rc_doc_state();
SELECT * FROM credits.reconcile();
ROLLBACK;
BEGIN;
SELECT test.rc_doc('temporary_entitlement_grant') AS first, test.rc_doc('temporary_entitlement_grant') ->> 'status' AS again;
SELECT * FROM test.rc_doc_state();
SELECT * FROM credits.reconcile();
ROLLBACK;

-- ==== The same samples, happening now (every time moved by one amount) ====
-- INITIAL_PURCHASE: pro until the period ends.
BEGIN;
SELECT test.rc_doc('initial_purchase', '1 minute');
SELECT * FROM test.access_of(credits.user_uuid('1234567890'));
SELECT * FROM test.rc_doc_state();
SELECT * FROM credits.reconcile();
ROLLBACK;

-- NON_RENEWING_PURCHASE of the 2100-token pack: 2100 credits, once.
BEGIN;
SELECT test.rc_doc('non_renewing_purchase', '1 minute');
SELECT test.rc_doc('non_renewing_purchase', '1 minute') ->> 'status' AS again;
SELECT * FROM test.access_of(credits.user_uuid('1234567890'));
SELECT * FROM credits.reconcile();
ROLLBACK;

-- CANCELLATION (unsubscribed), now: access until the end of the period, for
-- user_1234 (the one id in the sample that is not anonymous); its anonymous
-- ids are linked to that user.
BEGIN;
SELECT test.rc_doc('cancellation', '1 minute');
SELECT * FROM test.access_of(credits.user_uuid('user_1234'));
SELECT * FROM test.rc_doc_state();
SELECT * FROM credits.reconcile();
ROLLBACK;

-- BILLING_ISSUE, now: it names only an anonymous id, never linked: kept, answered 200.
-- The CANCELLATION sample (a minute earlier, same subscription) names that id
-- as its app_user_id with user_1234 in its aliases: it links the id and the
-- kept BILLING_ISSUE applies to user_1234, after it.
BEGIN;
SELECT test.rc_doc('billing_issue', '1 minute');
SELECT test.rc_doc('cancellation', '2 minutes');
SELECT * FROM test.rc_doc_state();
SELECT * FROM test.access_of(credits.user_uuid('user_1234'));
SELECT * FROM credits.reconcile();
ROLLBACK;
