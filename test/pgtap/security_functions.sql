-- Security suite, part 2: functions.  Enumerated from pg_proc, so a function
-- added later is covered without touching this file:
--   - nobody (PUBLIC) may execute any function of schema credits by default;
--   - every SECURITY DEFINER function, and every function whose body is SQL
--     or PL/pgSQL, pins search_path to pg_catalog, pg_temp;
--   - anon may call nothing; authenticated exactly the client functions;
--     service_role every other function but the owner's setup functions;
--   - client functions take no user id: no uuid argument, nothing named user.
BEGIN;
SELECT plan((
    SELECT (count(*)                                                  -- not PUBLIC
            + count(*) FILTER (WHERE prosecdef OR prolang IN (SELECT oid FROM pg_language
                                                                WHERE lanname IN ('sql', 'plpgsql')))
            + 3 * count(*)                                            -- privileges of the 3 roles
            + 2 * count(*) FILTER (WHERE prorettype <> 'trigger'::regtype)  -- anon / authenticated calls
            - 11                                                      -- (not the client functions)
            + 8                                                       -- client list, signatures
            + 10                                                      -- client calls that work
            + 8)::int                                                 -- service_role calls that work
      FROM pg_proc WHERE pronamespace = 'credits'::regnamespace));

\ir ../fixtures/supabase.sql
SELECT credits.grant_roles('authenticated', 'service_role') \gset

-- The contract's client functions, written out here on purpose (not read
-- from the extension): adding one is a decision this test must see.
CREATE TEMP TABLE client_fns (fn regprocedure PRIMARY KEY);
INSERT INTO client_fns VALUES
    ('credits.consume(text, bigint, text, text, jsonb)'),
    ('credits.my_balance()'),
    ('credits.my_daily_available()'),
    ('credits.my_account_status()'),
    ('credits.set_my_timezone(text)'),
    ('credits.my_history(integer, bigint)'),
    ('credits.my_usage(timestamptz)'),
    ('credits.delete_my_account()'),
    ('credits.claim_pending_purchase(text, text)'),
    ('credits.current_user_id()'),
    ('credits.current_user_id_or_null()');
-- Setup functions only the owner runs (and the roles it delegates them to: credits.delegate_owner).
CREATE TEMP TABLE owner_fns (fn regprocedure PRIMARY KEY);
INSERT INTO owner_fns VALUES
    ('credits.grant_roles(name, name)'),
    ('credits.attach_supabase_auth()'),
    ('credits.detach_supabase_auth()'),
    ('credits.publish_accounts(name)'),
    ('credits.unpublish_accounts(name)'),
    ('credits.delegate_owner(name)'),
    ('credits.revoke_owner(name)'),
    ('credits.owner_grants(name)');

-- Every function, with a call that passes NULL for each argument: enough to
-- reach the privilege check, which comes before the function runs.
CREATE TEMP TABLE fns AS
SELECT p.oid::regprocedure AS fn,
       p.prorettype = 'trigger'::regtype AS is_trigger,
       p.oid IN (SELECT fn FROM client_fns) AS is_client,
       p.oid IN (SELECT fn FROM owner_fns) AS is_owner_only,
       format('SELECT %s(%s)', p.oid::regproc,
              coalesce((SELECT string_agg(format('NULL::%s', format_type(t, NULL)), ', ' ORDER BY i)
                          FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a(t, i)), '')) AS call
  FROM pg_proc p WHERE p.pronamespace = 'credits'::regnamespace;
GRANT SELECT ON fns TO PUBLIC;

-- Nobody by default.
SELECT ok(NOT EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                       WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'),
          format('%s is not executable by PUBLIC', p.oid::regprocedure))
  FROM pg_proc p WHERE p.pronamespace = 'credits'::regnamespace ORDER BY p.oid::regprocedure::text;

-- Pinned search_path.
SELECT ok(coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false),
          format('%s%s pins search_path = pg_catalog, pg_temp', p.oid::regprocedure,
                 CASE WHEN p.prosecdef THEN ' (SECURITY DEFINER)' ELSE '' END))
  FROM pg_proc p
 WHERE p.pronamespace = 'credits'::regnamespace
   AND (p.prosecdef OR p.prolang IN (SELECT oid FROM pg_language WHERE lanname IN ('sql', 'plpgsql')))
 ORDER BY p.oid::regprocedure::text;

-- Who may execute what.
SELECT is(has_function_privilege('anon', fn, 'EXECUTE'), false, format('anon may not execute %s', fn))
  FROM fns ORDER BY fn::text;
SELECT is(has_function_privilege('authenticated', fn, 'EXECUTE'), is_client,
          format('authenticated %s execute %s', CASE WHEN is_client THEN 'may' ELSE 'may not' END, fn))
  FROM fns ORDER BY fn::text;
-- (current_user_id_or_null is the row level security policies' helper: every reader runs it)
SELECT is(has_function_privilege('service_role', fn, 'EXECUTE'), admin_may,
          format('service_role %s execute %s', CASE WHEN admin_may THEN 'may' ELSE 'may not' END, fn))
  FROM (SELECT fn, NOT (is_client OR is_owner_only OR is_trigger)
                   OR fn = 'credits.current_user_id_or_null()'::regprocedure AS admin_may
          FROM fns) f
 ORDER BY fn::text;

-- The client functions: as listed, present, and taking no user id.
SELECT set_eq('SELECT fn FROM client_fns', 'SELECT credits.client_functions()',
              'credits.client_functions() lists exactly the contract''s client functions');
SELECT is((SELECT count(*) FROM client_fns)::int, 11, 'eleven client functions');
SELECT is((SELECT count(*) FROM owner_fns o JOIN pg_proc p ON p.oid = o.fn)::int, 8, 'eight setup functions');
SELECT is_empty($$
    SELECT c.fn FROM client_fns c JOIN pg_proc p ON p.oid = c.fn
     WHERE 'uuid'::regtype = ANY (p.proargtypes::oid[])
$$, 'no client function takes a uuid argument');
SELECT is_empty($$
    SELECT c.fn, a.name
      FROM client_fns c JOIN pg_proc p ON p.oid = c.fn,
           unnest(p.proargnames, coalesce(p.proargmodes, array_fill('i'::"char", ARRAY[p.pronargs]))) a(name, mode)
     WHERE a.mode IN ('i', 'b', 'v')   -- input arguments (a result column named user_id is no way in)
       AND (a.name ILIKE '%user%' OR a.name ILIKE '%account%' OR a.name ILIKE '%sub%')
$$, 'no client function has an argument named like a user');
SELECT is_empty($$
    SELECT c.fn FROM client_fns c JOIN pg_proc p ON p.oid = c.fn
     WHERE p.provariadic <> 0 OR 'json'::regtype = ANY (p.proargtypes::oid[])
$$, 'no client function takes variadic or json arguments a user id could hide in');
SELECT is_empty($$
    SELECT fn FROM fns WHERE is_client AND fn::text LIKE 'credits.credits_%'
$$, 'no service function is in the client list');
SELECT is_empty($$
    SELECT p.oid::regprocedure FROM pg_proc p
     WHERE p.pronamespace = 'credits'::regnamespace AND p.prosecdef
       AND p.proowner <> (SELECT extowner FROM pg_extension WHERE extname = 'credits')
$$, 'every SECURITY DEFINER function belongs to the extension owner');

-- anon can call nothing.
SELECT postgrest.as_anon() AS role \gset
SELECT throws_ok(call, '42501', NULL, format('anon cannot call %s', fn))
  FROM fns WHERE NOT is_trigger ORDER BY fn::text;
SELECT postgrest.end_request() AS role \gset

-- A signed-in user can call the client functions, and nothing else.
SELECT postgrest.as_user('5ec0f4a0-0000-4000-8000-000000000001') AS role \gset
SELECT throws_ok(call, '42501', NULL, format('authenticated cannot call %s', fn))
  FROM fns WHERE NOT is_trigger AND NOT is_client ORDER BY fn::text;
SELECT lives_ok($$SELECT credits.consume('image')$$, 'authenticated calls consume');
SELECT lives_ok($$SELECT credits.my_balance()$$, 'authenticated calls my_balance');
SELECT lives_ok($$SELECT credits.my_daily_available()$$, 'authenticated calls my_daily_available');
SELECT lives_ok($$SELECT * FROM credits.my_account_status()$$, 'authenticated calls my_account_status');
SELECT lives_ok($$SELECT credits.set_my_timezone('Asia/Tokyo')$$, 'authenticated calls set_my_timezone');
SELECT lives_ok($$SELECT * FROM credits.my_history(10)$$, 'authenticated calls my_history');
SELECT lives_ok($$SELECT * FROM credits.my_usage()$$, 'authenticated calls my_usage');
SELECT lives_ok($$SELECT credits.current_user_id()$$, 'authenticated calls current_user_id');
SELECT lives_ok($$SELECT credits.current_user_id_or_null()$$, 'authenticated calls current_user_id_or_null');
SELECT lives_ok($$SELECT * FROM credits.delete_my_account()$$, 'authenticated calls delete_my_account');
SELECT postgrest.end_request() AS role \gset

-- The service role calls the admin functions.
SELECT postgrest.as_service() AS role \gset
SELECT lives_ok($$SELECT credits.grant_credits('5ec0f4a0-0000-4000-8000-000000000002', 5, 'pack')$$,
                'service_role calls grant_credits');
SELECT lives_ok($$SELECT credits.credits_consume('5ec0f4a0-0000-4000-8000-000000000002', 'image')$$,
                'service_role calls credits_consume');
SELECT lives_ok($$SELECT credits.balance('5ec0f4a0-0000-4000-8000-000000000002')$$, 'service_role calls balance');
SELECT lives_ok($$SELECT credits.daily_available('5ec0f4a0-0000-4000-8000-000000000002')$$,
                'service_role calls daily_available');
SELECT lives_ok($$SELECT credits.set_plan('5ec0f4a0-0000-4000-8000-000000000002', 'pro')$$, 'service_role calls set_plan');
SELECT lives_ok($$SELECT credits.set_timezone('5ec0f4a0-0000-4000-8000-000000000002', 'UTC')$$,
                'service_role calls set_timezone');
SELECT is_empty($$SELECT * FROM credits.reconcile('5ec0f4a0-0000-4000-8000-000000000002')$$,
                'service_role calls reconcile (and the books balance)');
SELECT lives_ok($$SELECT credits.delete_account('5ec0f4a0-0000-4000-8000-000000000002')$$,
                'service_role calls delete_account');
SELECT postgrest.end_request() AS role \gset

SELECT * FROM finish();
ROLLBACK;
