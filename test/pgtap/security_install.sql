-- Security suite, part 4: installing on Supabase.  CREATE EXTENSION grants
-- the client functions to authenticated and the service functions to
-- service_role when those roles exist, revokes everything from PUBLIC, and
-- the grants are the extension's initial privileges (pg_dump keeps them).
BEGIN;
SELECT plan(12);

\ir ../fixtures/supabase.sql
-- Reinstall, now that the Supabase roles exist (all undone by the ROLLBACK).
DROP EXTENSION credits;
CREATE EXTENSION credits;

SELECT ok(has_function_privilege('authenticated', 'credits.consume(text, bigint, text, text, jsonb)', 'EXECUTE'),
          'authenticated may call consume right after CREATE EXTENSION');
SELECT ok(has_function_privilege('authenticated', 'credits.my_history(integer, bigint)', 'EXECUTE'),
          'authenticated may call my_history');
SELECT ok(NOT has_function_privilege('authenticated', 'credits.credits_consume(uuid, text, bigint, text, text, jsonb)', 'EXECUTE'),
          'authenticated may not call credits_consume');
SELECT ok(has_function_privilege('service_role', 'credits.credits_consume(uuid, text, bigint, text, text, jsonb)', 'EXECUTE'),
          'service_role may call credits_consume');
SELECT ok(has_function_privilege('service_role', 'credits.delete_account(uuid)', 'EXECUTE'),
          'service_role may call delete_account');
SELECT ok(NOT has_function_privilege('anon', 'credits.consume(text, bigint, text, text, jsonb)', 'EXECUTE'),
          'anon may not call consume');
SELECT ok(has_table_privilege('authenticated', 'credits.ledger', 'SELECT'), 'authenticated may read (its rows of) the ledger');
SELECT ok(has_table_privilege('authenticated', 'credits.my_account', 'SELECT'), 'authenticated may read my_account');
SELECT is_empty($$
    SELECT c.oid::regclass, r.role FROM pg_class c
     CROSS JOIN unnest(ARRAY['anon', 'authenticated', 'service_role']) AS r(role)
     WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
       AND has_table_privilege(r.role, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')
$$, 'nobody may write a relation after CREATE EXTENSION');
SELECT is_empty($$
    SELECT p.oid::regprocedure FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
     WHERE p.pronamespace = 'credits'::regnamespace AND a.grantee = 0
$$, 'PUBLIC may execute nothing after CREATE EXTENSION');
SELECT ok(EXISTS (SELECT 1 FROM pg_init_privs i
                   WHERE i.objoid = 'credits.consume(text, bigint, text, text, jsonb)'::regprocedure
                     AND i.classoid = 'pg_proc'::regclass
                     AND i.initprivs::text LIKE '%authenticated=X/%'),
          'the grant is recorded as an initial privilege of the extension');
-- And it works end to end.
SELECT postgrest.as_user('5ec01a57-0000-4000-8000-000000000001') AS role \gset
SELECT results_eq($$SELECT kind, amount, balance FROM credits.consume('image')$$,
                  $$VALUES ('consume'::text, -1::bigint, 5::bigint)$$,
                  'a signed-in user consumes right after CREATE EXTENSION');
SELECT postgrest.end_request() AS role \gset

SELECT * FROM finish();
ROLLBACK;
