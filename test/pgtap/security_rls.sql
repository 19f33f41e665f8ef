-- Security suite, part 3: what a signed-in user can see and do.
--   - row level security: a user reads only their own rows, a request
--     without a user reads none, prices are public, tombstones are not;
--   - spoofing: a user id passed anywhere (arguments, metadata, extra claims)
--     changes nothing; the admin functions are out of reach;
--   - SQL injection: hostile strings in every text argument are stored and
--     returned verbatim, never executed;
--   - hostile objects in public (now(), =, >, sum, current_setting) or
--     pg_temp do not change what the extension's functions do, even with the
--     caller's search_path pointing at them.
BEGIN;
SELECT plan(69 + (
    SELECT count(*)::int FROM pg_class c
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'user_id' AND NOT a.attisdropped
     WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')));

\ir ../fixtures/supabase.sql
SELECT credits.grant_roles('authenticated', 'service_role') \gset
-- Let users create objects in public, as some projects do (undone by the ROLLBACK).
GRANT CREATE ON SCHEMA public TO authenticated;

\set alice '5ec0aaaa-0000-4000-8000-00000000000a'
\set bob   '5ec0bbbb-0000-4000-8000-00000000000b'
\set dave  '5ec0dddd-0000-4000-8000-00000000000d'
\set erin  '5ec0eeee-0000-4000-8000-00000000000e'

-- Data, written by the backend (service_role).
SELECT postgrest.as_service() AS role \gset
SELECT credits.grant_credits(:'alice', 10, 'pack A', expires_at => now() + interval '1 day') IS NOT NULL AS ok \gset
SELECT credits.credits_consume(:'alice', 'image') IS NOT NULL AS ok \gset
SELECT credits.credits_consume(:'alice', 'image', 2) IS NOT NULL AS ok \gset
SELECT credits.grant_credits(:'bob', 20, 'pack B') IS NOT NULL AS ok \gset
SELECT credits.reserve(:'alice', 'image', reference => 'alice-job') IS NOT NULL AS ok \gset
SELECT credits.reserve(:'bob', 'image', reference => 'bob-running-job') IS NOT NULL AS ok \gset
SELECT entry_id AS bob_last FROM credits.credits_consume(:'bob', 'video_second', 1,
       idempotency_key => 'bob-key', reference => 'bob-secret-job') \gset
SELECT credits.balance(:'erin') AS erin_start \gset
SELECT postgrest.end_request() AS role \gset
SELECT count(*) AS alice_entries FROM credits.ledger WHERE user_id = :'alice' \gset
SELECT count(*) AS alice_lots FROM credits.lots WHERE user_id = :'alice' \gset
SELECT credits.balance(:'alice') AS alice_balance \gset
SELECT credits.balance(:'bob') AS bob_balance \gset
SELECT count(*) AS plans FROM credits.plans \gset
SELECT count(*) AS operations FROM credits.operations \gset

-- ---- Row level security ----
SELECT postgrest.as_user(:'alice') AS role \gset
SELECT results_eq('SELECT DISTINCT user_id FROM credits.ledger', ARRAY[:'alice'::uuid],
                  'alice reads only her ledger rows');
SELECT results_eq('SELECT count(*)::int FROM credits.ledger', ARRAY[:alice_entries],
                  'alice reads all of her ledger rows');
SELECT results_eq('SELECT DISTINCT user_id FROM credits.lots', ARRAY[:'alice'::uuid], 'alice reads only her lots');
SELECT results_eq('SELECT count(*)::int FROM credits.lots', ARRAY[:alice_lots], 'alice reads all of her lots');
SELECT results_eq('SELECT user_id FROM credits.accounts', ARRAY[:'alice'::uuid], 'alice reads only her account row');
SELECT results_eq('SELECT user_id, balance FROM credits.my_account',
                  format('VALUES (%L::uuid, %s::bigint)', :'alice', :alice_balance),
                  'my_account is alice''s row, with her balance');
SELECT is_empty(format('SELECT * FROM credits.ledger WHERE user_id = %L', :'bob'),
                'asking for bob''s ledger rows by id returns nothing');
SELECT is_empty($$SELECT * FROM credits.ledger WHERE reference = 'bob-secret-job' OR idempotency_key = 'bob-key'$$,
                'asking for bob''s ledger rows by content returns nothing');
SELECT is_empty(format('SELECT * FROM credits.lots WHERE user_id = %L', :'bob'), 'bob''s lots are invisible');
SELECT is_empty(format('SELECT * FROM credits.accounts WHERE user_id = %L', :'bob'), 'bob''s account is invisible');
SELECT results_eq('SELECT DISTINCT user_id FROM credits.holds', ARRAY[:'alice'::uuid], 'alice reads only her holds');
SELECT is_empty(format('SELECT * FROM credits.holds WHERE user_id = %L', :'bob'), 'bob''s holds are invisible');
SELECT results_eq('SELECT count(*)::int FROM credits.plans', ARRAY[:plans], 'plans are public');
SELECT results_eq('SELECT count(*)::int FROM credits.operations', ARRAY[:operations], 'the price list is public');
SELECT throws_ok('SELECT * FROM credits.deleted_accounts', '42501', NULL, 'tombstones are not readable');
-- A function of the caller's own in a WHERE clause sees only rows the
-- policy let through (policies are applied first: security barrier).
CREATE FUNCTION public.security_test_peek(t text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS $$
BEGIN
    PERFORM set_config('security_test.seen', coalesce(current_setting('security_test.seen', true), '') || '|' || coalesce(t, ''), true);
    RETURN true;
END $$;
SELECT count(*) AS peeked FROM credits.ledger WHERE public.security_test_peek(reference || idempotency_key) \gset
SELECT count(*) AS peeked FROM credits.ledger WHERE public.security_test_peek(reference) \gset
SELECT count(*) AS peeked FROM credits.my_account WHERE public.security_test_peek(user_id::text) \gset
SELECT unalike(coalesce(current_setting('security_test.seen', true), ''), '%bob%',
               'a cheap function in the caller''s WHERE never sees bob''s rows');
SELECT unalike(coalesce(current_setting('security_test.seen', true), ''), '%' || :'bob' || '%',
               'nor bob''s account through my_account');
SELECT postgrest.end_request() AS role \gset

-- The catch-all: every relation of the schema with a user_id column (tables
-- added later included) shows alice no row of anybody else, or nothing at all.
CREATE FUNCTION public.security_test_foreign_rows(rel regclass, me uuid) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM %s WHERE user_id IS DISTINCT FROM $1', rel) INTO n USING me;
    RETURN n;
EXCEPTION WHEN insufficient_privilege THEN
    RETURN -1;      -- not readable at all
END $$;
SELECT postgrest.as_user(:'alice') AS role \gset
SELECT ok(public.security_test_foreign_rows(c.oid::regclass, :'alice') <= 0,
          format('alice reads no other user''s row of %s', c.oid::regclass))
  FROM pg_class c
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'user_id' AND NOT a.attisdropped
 WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
 ORDER BY c.oid::regclass::text;
SELECT postgrest.end_request() AS role \gset

-- No user in the request: nothing to see, and the client functions refuse.
SELECT postgrest.as_role('authenticated', '{"role": "authenticated"}') AS role \gset
SELECT is_empty('SELECT * FROM credits.ledger', 'no sub: no ledger rows');
SELECT is_empty('SELECT * FROM credits.lots', 'no sub: no lots');
SELECT is_empty('SELECT * FROM credits.accounts', 'no sub: no account rows');
SELECT is_empty('SELECT * FROM credits.my_account', 'no sub: no my_account row');
SELECT results_eq('SELECT count(*)::int FROM credits.operations', ARRAY[:operations], 'no sub: prices still public');
SELECT throws_ok('SELECT credits.my_balance()', '28000', 'no authenticated user', 'no sub: my_balance is 28000');
SELECT throws_ok($$SELECT credits.consume('image')$$, '28000', 'no authenticated user', 'no sub: consume is 28000');
SELECT postgrest.as_role('authenticated', '{"sub": "5ec0aaaa; DROP TABLE credits.ledger", "role": "authenticated"}') AS role \gset
SELECT is_empty('SELECT * FROM credits.ledger', 'a sub that is not a uuid: no rows');
SELECT throws_ok('SELECT credits.my_balance()', '28000', 'no authenticated user', 'a sub that is not a uuid: 28000');
SELECT postgrest.end_request() AS role \gset

-- ---- Spoofing ----
SELECT postgrest.as_user(:'alice') AS role \gset
SELECT throws_ok(format('SELECT credits.credits_consume(%L, %L)', :'bob', 'image'), '42501', NULL,
                 'alice cannot spend bob''s credits through the service function');
SELECT throws_ok(format('SELECT credits.balance(%L)', :'bob'), '42501', NULL, 'alice cannot read bob''s balance');
SELECT throws_ok(format('SELECT credits.grant_credits(%L, 1000, %L)', :'alice', 'free money'), '42501', NULL,
                 'alice cannot grant herself credits');
SELECT throws_ok(format('SELECT credits.set_plan(%L, %L)', :'alice', 'pro'), '42501', NULL,
                 'alice cannot give herself a plan');
SELECT throws_ok(format('SELECT credits.delete_account(%L)', :'bob'), '42501', NULL, 'alice cannot delete bob');
SELECT results_eq(format($$SELECT user_id FROM credits.consume('image', metadata => '{"user_id": "%s", "sub": "%s"}')$$,
                         :'bob', :'bob'),
                  ARRAY[:'alice'::uuid], 'a user id in metadata is data: the charge is alice''s');
SELECT is_empty(format('SELECT id FROM credits.my_history(1000, %s) WHERE id = %s', :bob_last + 1, :bob_last),
                'before_id past bob''s entry does not return it');
SELECT results_eq(format('SELECT count(*)::int FROM credits.my_history(1000, %s)', :bob_last + 1),
                  format('SELECT count(*)::int FROM credits.ledger WHERE id <= %s', :bob_last),
                  'before_id pages only through alice''s entries');
SELECT postgrest.as_role('authenticated', format('{"sub": "%s", "user_id": "%s", "role": "service_role"}', :'alice', :'bob')::jsonb) AS role \gset
SELECT results_eq('SELECT credits.current_user_id()', ARRAY[:'alice'::uuid],
                  'other claims (user_id, role) do not change who the user is');
SELECT postgrest.end_request() AS role \gset
SELECT is(credits.balance(:'bob'), :bob_balance::bigint, 'bob''s balance is untouched');

-- ---- SQL injection: hostile strings are data ----
CREATE TEMP TABLE hostile (n int PRIMARY KEY, s text NOT NULL);
INSERT INTO hostile VALUES
    (1, $h$'; DROP TABLE credits.ledger; --$h$),
    (2, $h$' OR '1'='1$h$),
    (3, $h$$$; SELECT pg_sleep(10); $$$h$),
    (4, $h$Robert'); DELETE FROM credits.accounts; --$h$),
    (5, $h$\'; TRUNCATE credits.lots CASCADE; SELECT '$h$),
    (6, $h$%s %I %L ${user_id} {{sub}} */ /* " \" $1 $2$h$),
    (7, $h$ʼ; DROP SCHEMA credits CASCADE; -- ＇ ; $h$);
GRANT SELECT ON hostile TO PUBLIC;
-- Dave is on a plan without a daily limit for this part.
SELECT credits.set_plan(:'dave', 'pro') AS ok \gset
SELECT count(*) AS relations_before FROM pg_class WHERE relnamespace = 'credits'::regnamespace \gset
SELECT count(*) AS others_before FROM credits.ledger WHERE user_id <> :'dave' \gset
-- An admin may even name an operation like that.
INSERT INTO credits.operations (name, cost) SELECT s, 1 FROM hostile WHERE n = 4;

SELECT postgrest.as_user(:'dave') AS role \gset
CREATE TEMP TABLE dave_receipts (n int, entry_id bigint, replayed boolean);
GRANT ALL ON dave_receipts TO PUBLIC;
INSERT INTO dave_receipts
SELECT h.n, r.entry_id, r.replayed
  FROM hostile h, credits.consume('image', 1, idempotency_key => h.s, reference => h.s,
                                  metadata => jsonb_build_object('note', h.s)) r;
-- The same requests again: replayed by key, so the key was looked up as data.
INSERT INTO dave_receipts
SELECT h.n, r.entry_id, r.replayed
  FROM hostile h, credits.consume('image', 1, idempotency_key => h.s, reference => h.s,
                                  metadata => jsonb_build_object('note', h.s)) r;
SELECT throws_ok(format('SELECT credits.set_my_timezone(%L)', s), '22023', NULL,
                 format('hostile time zone %s is refused as bad input', n))
  FROM hostile WHERE n IN (1, 4);
SELECT lives_ok(format('SELECT credits.consume(%L)', s), 'an operation with a hostile name is charged by name')
  FROM hostile WHERE n = 4;
SELECT results_eq($$SELECT operation FROM credits.my_usage() WHERE operation <> 'image'$$,
                  $$SELECT s FROM hostile WHERE n = 4$$, 'my_usage returns the hostile operation name verbatim');
SELECT results_eq($$SELECT reference FROM credits.my_history(1000) WHERE kind = 'consume' AND reference IS NOT NULL ORDER BY id$$,
                  'SELECT s FROM hostile ORDER BY n', 'my_history returns hostile references verbatim');
SELECT postgrest.end_request() AS role \gset

SELECT is((SELECT count(*) FROM dave_receipts WHERE NOT replayed)::int, 7, 'seven hostile requests charged once each');
SELECT is((SELECT count(*) FROM dave_receipts WHERE replayed)::int, 7, 'and replayed once each');
SELECT is_empty($$
    SELECT h.n FROM hostile h
      JOIN dave_receipts d ON d.n = h.n AND NOT d.replayed
      JOIN credits.ledger e ON e.id = d.entry_id
     WHERE e.idempotency_key IS DISTINCT FROM h.s OR e.reference IS DISTINCT FROM h.s
        OR e.metadata ->> 'note' IS DISTINCT FROM h.s
$$, 'keys, references and metadata are stored verbatim');
SELECT is((SELECT operation FROM credits.ledger WHERE user_id = :'dave' AND operation NOT IN ('image')),
          (SELECT s FROM hostile WHERE n = 4), 'the hostile operation name is stored verbatim');

SELECT postgrest.as_service() AS role \gset
CREATE TEMP TABLE grant_receipts AS
SELECT h.n, r.entry_id
  FROM hostile h, credits.grant_credits(:'dave', 1, h.s, idempotency_key => 'grant ' || h.s,
                                        reference => h.s, metadata => jsonb_build_object(h.s, h.s)) r;
SELECT throws_ok(format('SELECT credits.set_plan(%L, %L)', :'dave', s), '22023', NULL,
                 format('hostile plan name %s is refused as bad input', n))
  FROM hostile WHERE n IN (1, 2);
SELECT postgrest.end_request() AS role \gset
SELECT is_empty($$
    SELECT h.n FROM hostile h JOIN grant_receipts g USING (n) JOIN credits.ledger e ON e.id = g.entry_id
     WHERE e.reason IS DISTINCT FROM h.s OR e.reference IS DISTINCT FROM h.s
        OR e.idempotency_key IS DISTINCT FROM 'grant ' || h.s OR e.metadata ->> h.s IS DISTINCT FROM h.s
$$, 'grant reasons, keys, references and metadata keys are stored verbatim');
SELECT is((SELECT count(*) FROM pg_class WHERE relnamespace = 'credits'::regnamespace)::int, :relations_before,
          'every relation of schema credits is still there');
SELECT is((SELECT count(*) FROM credits.ledger WHERE user_id <> :'dave')::int, :others_before,
          'nobody else''s ledger changed');
SELECT is_empty(format('SELECT * FROM credits.reconcile(%L)', :'dave'), 'dave''s books balance');

-- ---- Hostile objects in public and pg_temp ----
-- Erin creates look-alikes of what the extension calls, and points her own
-- search_path at them first.
SELECT postgrest.as_user(:'erin') AS role \gset
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql AS $$ SELECT '2000-01-01 00:00:00+00'::timestamptz $$;
CREATE FUNCTION public.security_test_true(uuid, uuid) RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE OPERATOR public.= (LEFTARG = uuid, RIGHTARG = uuid, FUNCTION = public.security_test_true);
CREATE FUNCTION public.security_test_true(text, text) RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.security_test_true);
CREATE FUNCTION public.security_test_false(bigint, integer) RETURNS boolean LANGUAGE sql AS 'SELECT false';
CREATE OPERATOR public.> (LEFTARG = bigint, RIGHTARG = integer, FUNCTION = public.security_test_false);
CREATE FUNCTION public.security_test_zero(bigint, bigint) RETURNS bigint LANGUAGE sql AS 'SELECT 0::bigint';
CREATE AGGREGATE public.sum(bigint) (SFUNC = public.security_test_zero, STYPE = bigint, INITCOND = '0');
CREATE FUNCTION public.current_setting(text, boolean) RETURNS text LANGUAGE sql
    AS $$ SELECT '{"sub": "5ec0bbbb-0000-4000-8000-00000000000b", "role": "authenticated"}' $$;
CREATE FUNCTION pg_temp.now() RETURNS timestamptz LANGUAGE sql AS $$ SELECT '2000-01-01 00:00:00+00'::timestamptz $$;
CREATE TEMP TABLE attack (k text PRIMARY KEY, v text);
SET LOCAL search_path = pg_temp, public, pg_catalog;
-- The look-alikes are live for Erin's own queries ...
INSERT INTO pg_temp.attack VALUES
    ('now', now()::text),
    ('text_eq', ('a'::text = 'b'::text)::text),
    ('uuid_eq', ('5ec0aaaa-0000-4000-8000-00000000000a'::uuid = '5ec0bbbb-0000-4000-8000-00000000000b'::uuid)::text);
-- ... and now she calls the extension.
INSERT INTO pg_temp.attack
SELECT 'receipt', to_jsonb(r)::text FROM credits.consume('prompt_kchar', 2, idempotency_key => 'erin-1') r;
INSERT INTO pg_temp.attack
SELECT 'replay', to_jsonb(r)::text FROM credits.consume('prompt_kchar', 2, idempotency_key => 'erin-1') r;
INSERT INTO pg_temp.attack VALUES
    ('my_balance', credits.my_balance()::text),
    ('my_daily_available', credits.my_daily_available()::text),
    ('current_user_id', credits.current_user_id()::text),
    ('ledger_rows', (SELECT count(*) FROM credits.ledger)::text),
    ('my_account', (SELECT to_jsonb(a) FROM credits.my_account a)::text),
    ('history_rows', (SELECT count(*) FROM credits.my_history(100))::text),
    ('usage', (SELECT jsonb_agg(u) FROM credits.my_usage() u)::text);
SET LOCAL search_path TO DEFAULT;
SELECT postgrest.end_request() AS role \gset
CREATE TEMP TABLE attack_results AS SELECT * FROM attack;   -- read back with the default search_path

SELECT is((SELECT v FROM attack_results WHERE k = 'now')::timestamptz, '2000-01-01 00:00:00+00'::timestamptz,
          'the fake now() is live for the caller''s own queries');
SELECT is((SELECT v FROM attack_results WHERE k = 'text_eq'), 'true', 'the fake text = is live for the caller');
SELECT is((SELECT v FROM attack_results WHERE k = 'uuid_eq'), 'true', 'the fake uuid = is live for the caller');
SELECT is((SELECT (v::jsonb ->> 'user_id')::uuid FROM attack_results WHERE k = 'receipt'), :'erin'::uuid,
          'consume charged erin');
SELECT is((SELECT (v::jsonb ->> 'amount')::bigint FROM attack_results WHERE k = 'receipt'), -2::bigint,
          'consume charged the price of prompt_kchar x 2 (the right operation row)');
SELECT is((SELECT (v::jsonb ->> 'balance')::bigint FROM attack_results WHERE k = 'receipt'), (:erin_start - 2)::bigint,
          'the balance after is right');
SELECT ok((SELECT (v::jsonb ->> 'created_at')::timestamptz FROM attack_results WHERE k = 'receipt')
              BETWEEN now() - interval '1 hour' AND now() + interval '1 hour',
          'the entry carries the real time, not the fake now()');
SELECT is((SELECT (v::jsonb ->> 'replayed')::boolean FROM attack_results WHERE k = 'replay'), true,
          'the retry is replayed (the key was matched with the real =)');
SELECT is((SELECT v FROM attack_results WHERE k = 'my_balance')::bigint, (:erin_start - 2)::bigint, 'my_balance is right');
SELECT is((SELECT v FROM attack_results WHERE k = 'my_daily_available')::bigint, 4::bigint,
          'my_daily_available is right');
SELECT is((SELECT v FROM attack_results WHERE k = 'current_user_id')::uuid, :'erin'::uuid,
          'the fake current_setting() does not change the user');
SELECT is((SELECT v FROM attack_results WHERE k = 'ledger_rows')::int,
          (SELECT count(*)::int FROM credits.ledger WHERE user_id = :'erin'),
          'row level security still shows erin exactly her rows');
SELECT is((SELECT (v::jsonb ->> 'user_id')::uuid FROM attack_results WHERE k = 'my_account'), :'erin'::uuid,
          'my_account is still erin''s row');
SELECT is((SELECT v FROM attack_results WHERE k = 'history_rows')::int,
          (SELECT count(*)::int FROM credits.ledger WHERE user_id = :'erin'), 'my_history is still erin''s');
SELECT is((SELECT v::jsonb FROM attack_results WHERE k = 'usage'),
          '[{"units": 2, "credits": 2, "list_cost": 2, "operation": "prompt_kchar", "operations": 1}]'::jsonb,
          'my_usage sums with the real sum()');
SELECT is(credits.balance(:'bob'), :bob_balance::bigint, 'bob''s balance is untouched');
SELECT is(credits.balance(:'alice'), (:alice_balance - 1)::bigint,
          'alice''s balance is untouched (since her own consume in the spoofing part)');
SELECT is_empty(format('SELECT * FROM credits.reconcile(%L)', :'erin'), 'erin''s books balance');

SELECT * FROM finish();
ROLLBACK;
