-- Purchases: tables locked down by RLS (a client sees only its own
-- entitlements), functions pinned and not callable by PUBLIC, settings'
-- defaults, and premium bypass switched on and off by webhooks.
BEGIN;
SELECT plan(35);

SELECT has_table('credits', t, 'table credits.' || t)
  FROM unnest(ARRAY['products', 'purchases', 'entitlements', 'store_events']) t;
SELECT ok((SELECT bool_and(c.relrowsecurity) FROM pg_class c
            WHERE c.oid IN ('credits.products'::regclass, 'credits.purchases'::regclass,
                            'credits.entitlements'::regclass, 'credits.store_events'::regclass)),
          'row level security is enabled on every purchases table');
SELECT policies_are('credits', 'entitlements', ARRAY['own_rows'],
                    'entitlements: one policy, a user selects their own rows');
SELECT policies_are('credits', 'products', ARRAY['readable', 'owner_tasks_insert', 'owner_tasks_update', 'owner_tasks_delete'],
                    'products: readable by everyone, like plans; written by the owner''s delegates');

SELECT ok(p.prosecdef AND p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'],
          p.proname || ' is SECURITY DEFINER with a pinned search_path')
  FROM pg_proc p
 WHERE p.pronamespace = 'credits'::regnamespace
   AND p.proname IN ('apply_purchase', 'apply_revenuecat_event', 'claim_pending_purchase')
 ORDER BY p.proname;
SELECT ok(NOT has_function_privilege('public', p.oid, 'EXECUTE'),
          p.proname || ' is not executable by PUBLIC')
  FROM pg_proc p
 WHERE p.pronamespace = 'credits'::regnamespace
   AND p.proname IN ('apply_purchase', 'apply_revenuecat_event', 'claim_pending_purchase')
 ORDER BY p.proname;

LOAD 'credits';   -- the settings exist once the library is loaded (first call, or shared_preload_libraries)
SELECT is(current_setting('credits.notify'), 'off', 'credits.notify defaults to off (opt-in)');
SELECT is(current_setting('credits.accept_sandbox'), 'off', 'credits.accept_sandbox defaults to off');
SELECT is(current_setting('credits.pending_purchase_grace'), '10min', 'credits.pending_purchase_grace defaults to 10 minutes');
SELECT is(current_setting('credits.pending_purchase_daily_limit'), '3', 'credits.pending_purchase_daily_limit defaults to 3');

-- Products need only an id and a plan or a number of credits.
SELECT lives_ok($$INSERT INTO credits.products (product_id, plan) VALUES ('tap_pro', 'pro')$$, 'a subscription product');
SELECT lives_ok($$INSERT INTO credits.products (product_id, credits) VALUES ('tap_pack', 20)$$, 'a pack product');

-- Premium bypass follows the store: on with INITIAL_PURCHASE, off with EXPIRATION.
CREATE TEMP TABLE u AS SELECT gen_random_uuid() AS a, gen_random_uuid() AS b;
CREATE FUNCTION pg_temp.rc(kind text, id text, who uuid) RETURNS jsonb LANGUAGE sql AS $$
    SELECT credits.apply_revenuecat_event(jsonb_build_object('api_version', '1.0', 'event', jsonb_build_object(
        'id', id, 'type', kind, 'app_user_id', who, 'product_id', 'tap_pro',
        'transaction_id', 'tap-' || who, 'original_transaction_id', 'tap-' || who,
        'event_timestamp_ms', (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
        'expiration_at_ms', (extract(epoch FROM now() + interval '30 days') * 1000)::bigint)))
$$;
SELECT is(pg_temp.rc('INITIAL_PURCHASE', 'tap-1', a) ->> 'status', 'applied', 'INITIAL_PURCHASE applied') FROM u;
SELECT is((credits.credits_consume(a, 'video_second', 10)).amount, 0::bigint, 'premium: an operation is charged 0') FROM u;
SELECT is(credits.daily_available(a), NULL::bigint, 'premium: no daily limit') FROM u;
SELECT is(pg_temp.rc('EXPIRATION', 'tap-2', a) ->> 'status', 'applied', 'EXPIRATION applied') FROM u;
SELECT throws_ok(format($$SELECT credits.credits_consume(%L, 'video_second', 10)$$, a), 'PT402', NULL,
                 'back on free: the same operation costs 50 credits it does not have') FROM u;
SELECT is(credits.daily_available(a), 4::bigint, 'back on free: the daily limit counts today''s operation') FROM u;

-- On Supabase: the client (authenticated) sees its own entitlements only, writes none, may
-- claim a pending purchase, and cannot reach the service functions.
SELECT is(pg_temp.rc('INITIAL_PURCHASE', 'tap-3', b) ->> 'status', 'applied', 'another user subscribes') FROM u;
\ir ../fixtures/supabase.sql
SELECT credits.grant_roles('authenticated', 'service_role') \gset
GRANT SELECT ON u TO authenticated;
SELECT postgrest.as_user(a) AS role FROM u \gset
SELECT results_eq('SELECT user_id FROM credits.entitlements', 'SELECT a FROM u',
                  'a client sees its own entitlement, not the other user''s');
SELECT results_eq('SELECT product_id FROM credits.products ORDER BY 1', $$VALUES ('tap_pack'::text), ('tap_pro')$$,
                  'a client reads the product catalog');
SELECT throws_ok($$UPDATE credits.entitlements SET expires_at = 'infinity'$$, '42501', NULL,
                 'a client cannot extend its entitlement');
SELECT throws_ok($$SELECT * FROM credits.purchases$$, '42501', NULL, 'a client cannot read purchases');
SELECT throws_ok($$SELECT credits.apply_revenuecat_event('{}')$$, '42501', NULL,
                 'a client cannot call the webhook function');
SELECT throws_ok($$SELECT credits.apply_purchase(gen_random_uuid(), 'tap_pack', 't', 'x', now())$$, '42501', NULL,
                 'a client cannot apply a purchase');
SELECT is(credits.claim_pending_purchase('tap_pro', 'tap-claim-1') ->> 'status', 'unlocked',
          'a client may claim a pending purchase');
SELECT postgrest.end_request() AS role \gset
SELECT postgrest.as_service() AS role \gset
SELECT is(credits.apply_revenuecat_event('{"api_version": "1.0", "event": {"id": "tap-t", "type": "TEST"}}') ->> 'status',
          'ignored', 'the service role applies webhooks');
SELECT postgrest.end_request() AS role \gset

SELECT is_empty('SELECT * FROM credits.reconcile()', 'the books balance');

SELECT * FROM finish();
ROLLBACK;
