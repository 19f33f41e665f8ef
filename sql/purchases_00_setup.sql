-- Purchases: the products the purchases_* files sell, the RevenueCat fixtures
-- (test/fixtures/revenuecat/*.json) and helpers to patch and apply them.

-- Products: a subscription names a plan, a pack a number of credits.  Every
-- other column has a default.
INSERT INTO credits.plans (name, daily_limit, rank) VALUES ('plus', 50, 5);
INSERT INTO credits.products (product_id, plan) VALUES
    ('studio_pro_monthly', 'pro'), ('studio_pro_yearly', 'pro'), ('studio_plus_monthly', 'plus');
INSERT INTO credits.products (product_id, credits, pack_expires_after) VALUES ('credits_500', 500, '1 year');
INSERT INTO credits.products (product_id, credits) VALUES ('credits_50', 50);
SELECT product_id, plan, credits, pack_expires_after, source FROM credits.products ORDER BY product_id;
-- A product is a plan or a pack, not both, not neither.
SELECT (test.error_of($$INSERT INTO credits.products (product_id) VALUES ('nothing')$$)).state;
SELECT (test.error_of($$INSERT INTO credits.products (product_id, plan, credits) VALUES ('both', 'pro', 5)$$)).state;
SELECT (test.error_of($$INSERT INTO credits.products (product_id, credits) VALUES ('negative', -5)$$)).state;

-- The fixtures, read from the source tree.
\getenv abs_srcdir PG_ABS_SRCDIR
\set fx :abs_srcdir '/test/fixtures/revenuecat'
CREATE TABLE test.rc_fixtures (name text PRIMARY KEY, body jsonb NOT NULL);
\set body `cat :fx/initial_purchase.json`
INSERT INTO test.rc_fixtures VALUES ('initial_purchase', :'body');
\set body `cat :fx/renewal.json`
INSERT INTO test.rc_fixtures VALUES ('renewal', :'body');
\set body `cat :fx/product_change.json`
INSERT INTO test.rc_fixtures VALUES ('product_change', :'body');
\set body `cat :fx/cancellation.json`
INSERT INTO test.rc_fixtures VALUES ('cancellation', :'body');
\set body `cat :fx/cancellation_refund.json`
INSERT INTO test.rc_fixtures VALUES ('cancellation_refund', :'body');
\set body `cat :fx/uncancellation.json`
INSERT INTO test.rc_fixtures VALUES ('uncancellation', :'body');
\set body `cat :fx/expiration.json`
INSERT INTO test.rc_fixtures VALUES ('expiration', :'body');
\set body `cat :fx/billing_issue.json`
INSERT INTO test.rc_fixtures VALUES ('billing_issue', :'body');
\set body `cat :fx/non_renewing_purchase.json`
INSERT INTO test.rc_fixtures VALUES ('non_renewing_purchase', :'body');
\set body `cat :fx/subscription_extended.json`
INSERT INTO test.rc_fixtures VALUES ('subscription_extended', :'body');
\set body `cat :fx/temporary_entitlement_grant.json`
INSERT INTO test.rc_fixtures VALUES ('temporary_entitlement_grant', :'body');
\set body `cat :fx/refund_reversed.json`
INSERT INTO test.rc_fixtures VALUES ('refund_reversed', :'body');
\set body `cat :fx/transfer.json`
INSERT INTO test.rc_fixtures VALUES ('transfer', :'body');
\set body `cat :fx/subscription_paused.json`
INSERT INTO test.rc_fixtures VALUES ('subscription_paused', :'body');
\set body `cat :fx/test.json`
INSERT INTO test.rc_fixtures VALUES ('test', :'body');
\set body `cat :fx/subscriber_alias.json`
INSERT INTO test.rc_fixtures VALUES ('subscriber_alias', :'body');
\set body `cat :fx/invoice_issuance.json`
INSERT INTO test.rc_fixtures VALUES ('invoice_issuance', :'body');
SELECT name, body -> 'event' ->> 'type' AS type, body ->> 'api_version' AS api_version
  FROM test.rc_fixtures ORDER BY name;

-- Milliseconds since the Unix epoch, as RevenueCat sends times.
CREATE FUNCTION test.ms(t timestamptz) RETURNS bigint LANGUAGE sql AS $$
    SELECT (extract(epoch FROM t) * 1000)::bigint
$$;

-- A fixture with its event patched (id, user, transaction, times...).
CREATE FUNCTION test.rc(fixture text, patch jsonb DEFAULT '{}') RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_set(f.body, '{event}', (f.body -> 'event') || patch)
      FROM test.rc_fixtures f WHERE f.name = fixture
$$;

-- A fixture for one scenario: event id, app user, store time relative to now, more fields.
CREATE FUNCTION test.rc_event(fixture text, id text, app_user uuid, at interval, patch jsonb DEFAULT '{}')
RETURNS jsonb LANGUAGE sql AS $$
    SELECT test.rc(fixture, jsonb_build_object('id', id, 'app_user_id', app_user,
                                               'event_timestamp_ms', test.ms(now() + at)) || patch)
$$;

-- Applies a webhook body and shows the part of the result that does not vary
-- between runs (ids and times are checked separately where they matter).
CREATE FUNCTION test.rc_apply(payload jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT credits.apply_revenuecat_event(payload) - '{event_id,entitlement_id,entry_id,expires_at}'::text[]
$$;

-- A user's entitlements, with the end relative to now.
CREATE FUNCTION test.entitlements_of(u uuid)
RETURNS TABLE (source text, product_id text, plan text, status text, provisional boolean, ends text)
LANGUAGE sql AS $$
    SELECT e.source, e.product_id, e.plan, e.status::text, e.provisional,
           CASE WHEN e.expires_at IS NULL THEN 'never'
                WHEN e.expires_at > now() THEN 'later' ELSE 'passed' END
      FROM credits.entitlements e WHERE e.user_id = u ORDER BY e.id
$$;

-- The plan the engine applies to the user right now, after any lazy maintenance.
CREATE FUNCTION test.access_of(u uuid, OUT plan text, OUT daily_available bigint, OUT balance bigint)
LANGUAGE plpgsql AS $$
BEGIN
    daily_available := credits.daily_available(u);
    balance := credits.balance(u);
    plan := (credits.account_status(u)).plan;
END
$$;
