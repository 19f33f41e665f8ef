-- Webhooks (Stripe, Creem): the products they sell, the provider fixtures
-- (test/fixtures/stripe, test/fixtures/creem) and helpers that sign and apply them.

-- HMAC-SHA256 (RFC 2104) in SQL, independent of the extension's C code, to sign the test bodies.
CREATE FUNCTION test.hmac_sha256(key text, message text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    k bytea := convert_to(key, 'UTF8');
    inner_pad bytea;
    outer_pad bytea;
BEGIN
    IF length(k) > 64 THEN
        k := sha256(k);
    END IF;
    k := k || decode(repeat('00', 64 - length(k)), 'hex');
    inner_pad := k;
    outer_pad := k;
    FOR i IN 0..63 LOOP
        inner_pad := set_byte(inner_pad, i, get_byte(k, i) # 54);   -- 0x36
        outer_pad := set_byte(outer_pad, i, get_byte(k, i) # 92);   -- 0x5c
    END LOOP;
    RETURN encode(sha256(outer_pad || sha256(inner_pad || convert_to(message, 'UTF8'))), 'hex');
END
$$;
-- RFC 4231 test case 2, and a key longer than the block (Python's hmac module gives 3a5531d5...).
SELECT test.hmac_sha256('Jefe', 'what do ya want for nothing?')
         = '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843' AS rfc4231_case_2,
       test.hmac_sha256(repeat('k', 100), 'a key longer than the block')
         = '3a5531d5efbb037c3beead2ac6cf8d3a70efe15c37b8b740f1ff32679dbf17d4' AS long_key;

-- No secret yet: a setup error, not a bad signature.
SELECT * FROM test.err($$SELECT credits.apply_creem_event('{}', 'abc')$$);
SELECT * FROM test.err($$SELECT credits.apply_stripe_event('{}', 't=1,v1=abc')$$);
-- Setting secrets: admin only, checked, never readable (webhooks_secrets.sql says by whom).
SELECT credits.set_webhook_secret('stripe', 'whsec_test_5tr1pe');
SELECT credits.set_webhook_secret('creem', 'whsec_test_cr33m');
SELECT * FROM test.err($$SELECT credits.set_webhook_secret('paddle', 'x')$$);
SELECT * FROM test.err($$SELECT credits.set_webhook_secret('stripe', '')$$);
SELECT * FROM test.err($$SELECT credits.set_webhook_secret(NULL, 'x')$$);

-- The products: Stripe sells by price id, Creem by product id.
INSERT INTO credits.products (product_id, plan) VALUES
    ('price_pro_monthly', 'pro'), ('prod_d1AY2Sadk9YAvLI0pj97f', 'pro');
INSERT INTO credits.products (product_id, credits) VALUES
    ('price_pack_200', 200), ('prod_pack_100', 100);

-- The fixtures, read from the source tree, byte for byte.
\getenv abs_srcdir PG_ABS_SRCDIR
CREATE TABLE test.wh_fixtures (provider text, name text, body text NOT NULL, PRIMARY KEY (provider, name));
\set fx :abs_srcdir '/test/fixtures/creem'
\set body `cat :fx/checkout_completed.json`
INSERT INTO test.wh_fixtures VALUES ('creem', 'checkout_completed', :'body');
\set body `cat :fx/subscription_active.json`
INSERT INTO test.wh_fixtures VALUES ('creem', 'subscription_active', :'body');
\set body `cat :fx/subscription_paid.json`
INSERT INTO test.wh_fixtures VALUES ('creem', 'subscription_paid', :'body');
\set body `cat :fx/subscription_canceled.json`
INSERT INTO test.wh_fixtures VALUES ('creem', 'subscription_canceled', :'body');
\set body `cat :fx/subscription_expired.json`
INSERT INTO test.wh_fixtures VALUES ('creem', 'subscription_expired', :'body');
\set body `cat :fx/subscription_paused.json`
INSERT INTO test.wh_fixtures VALUES ('creem', 'subscription_paused', :'body');
\set body `cat :fx/subscription_trialing.json`
INSERT INTO test.wh_fixtures VALUES ('creem', 'subscription_trialing', :'body');
\set body `cat :fx/subscription_update.json`
INSERT INTO test.wh_fixtures VALUES ('creem', 'subscription_update', :'body');
\set body `cat :fx/refund_created.json`
INSERT INTO test.wh_fixtures VALUES ('creem', 'refund_created', :'body');
\set body `cat :fx/dispute_created.json`
INSERT INTO test.wh_fixtures VALUES ('creem', 'dispute_created', :'body');
\set fx :abs_srcdir '/test/fixtures/stripe'
\set body `cat :fx/checkout_session_completed.json`
INSERT INTO test.wh_fixtures VALUES ('stripe', 'checkout_session_completed', :'body');
\set body `cat :fx/invoice_paid.json`
INSERT INTO test.wh_fixtures VALUES ('stripe', 'invoice_paid', :'body');
\set body `cat :fx/customer_subscription_updated.json`
INSERT INTO test.wh_fixtures VALUES ('stripe', 'customer_subscription_updated', :'body');
\set body `cat :fx/customer_subscription_deleted.json`
INSERT INTO test.wh_fixtures VALUES ('stripe', 'customer_subscription_deleted', :'body');
\set body `cat :fx/charge_refunded.json`
INSERT INTO test.wh_fixtures VALUES ('stripe', 'charge_refunded', :'body');
\set body `cat :fx/charge_dispute_created.json`
INSERT INTO test.wh_fixtures VALUES ('stripe', 'charge_dispute_created', :'body');
SELECT provider, name, coalesce(body::jsonb ->> 'eventType', body::jsonb ->> 'type') AS type,
       body::jsonb ->> 'id' AS event_id
  FROM test.wh_fixtures ORDER BY provider, name;

-- A fixture with fields replaced: patch is {"dotted.path": value, ...}; a null value removes the member.
CREATE FUNCTION test.wh(provider text, fixture text, patch jsonb DEFAULT '{}') RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    body jsonb := (SELECT f.body::jsonb FROM test.wh_fixtures f WHERE f.provider = wh.provider AND f.name = fixture);
    k text;
    v jsonb;
BEGIN
    FOR k, v IN SELECT * FROM jsonb_each(patch) LOOP
        IF v = 'null' THEN
            body := body #- string_to_array(k, '.');
        ELSE
            body := jsonb_set(body, string_to_array(k, '.'), v, true);
        END IF;
    END LOOP;
    RETURN body::text;
END
$$;

-- Milliseconds (Creem) and seconds (Stripe) since the Unix epoch, ISO times (Creem periods).
CREATE FUNCTION test.unix_ms(t timestamptz) RETURNS bigint LANGUAGE sql AS $$
    SELECT (extract(epoch FROM t) * 1000)::bigint $$;
CREATE FUNCTION test.unix_s(t timestamptz) RETURNS bigint LANGUAGE sql AS $$
    SELECT extract(epoch FROM t)::bigint $$;
CREATE FUNCTION test.iso(t timestamptz) RETURNS text LANGUAGE sql AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') $$;

-- Signed deliveries, as the providers send them.
CREATE FUNCTION test.creem(body text, secret text DEFAULT 'whsec_test_cr33m') RETURNS jsonb
LANGUAGE sql AS $$
    SELECT credits.apply_creem_event(body, test.hmac_sha256(secret, body)) $$;
CREATE FUNCTION test.stripe_header(body text, at timestamptz DEFAULT now(),
                                   secret text DEFAULT 'whsec_test_5tr1pe') RETURNS text
LANGUAGE sql AS $$
    SELECT format('t=%s,v1=%s', test.unix_s(at), test.hmac_sha256(secret, test.unix_s(at) || '.' || body)) $$;
CREATE FUNCTION test.stripe(body text) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT credits.apply_stripe_event(body, test.stripe_header(body)) $$;

-- What a result says, without the ids and times that vary between runs.
CREATE FUNCTION test.said(result jsonb) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT (result - '{entitlement_id,entry_id,expires_at,provider,confirmed_claims}'::text[])
           || CASE WHEN result ? 'replayed'
                   THEN jsonb_build_object('replayed', (SELECT jsonb_agg(test.said(r)) FROM jsonb_array_elements(result -> 'replayed') r))
                   ELSE '{}' END
$$;

-- A user's access and credits, as the app would check them.
CREATE FUNCTION test.wh_user(who uuid,
    OUT plan text, OUT balance bigint, OUT entitlements text, OUT purchases bigint)
LANGUAGE sql AS $$
    SELECT s.plan, s.balance,
           (SELECT string_agg(e.source || ':' || e.original_transaction_id || '=' || e.status
                              || CASE WHEN e.expires_at IS NULL THEN ' (no end)'
                                      WHEN e.expires_at > now() THEN ' (until later)' ELSE ' (ended)' END, ', '
                              ORDER BY e.original_transaction_id)
              FROM credits.entitlements e WHERE e.user_id = who),
           (SELECT count(*) FROM credits.purchases p WHERE p.user_id = who)
      FROM credits.account_status(who) s
$$;
