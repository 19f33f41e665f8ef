-- Smaller hardening: deep JWT claims, rate_limit_at at the end of time, the
-- expire_holds batch, IANA time zone names, drift reported as 55000.
\set u1 '00000000-0000-4000-8000-00000000f101'
\set u2 '00000000-0000-4000-8000-00000000f102'
\set u3 '00000000-0000-4000-8000-00000000f103'
\set u4 '00000000-0000-4000-8000-00000000f104'

-- ==== 1. Deeply nested claims: current_user_id_or_null() (RLS policies) never raises.
BEGIN;
SELECT set_config('request.jwt.claims', repeat('[', 200000), true) IS NOT NULL AS set;
SELECT credits.current_user_id_or_null() AS deep_arrays;
SELECT set_config('request.jwt.claims',
                  '{"sub": "00000000-0000-4000-8000-00000000f101", "x": ' || repeat('{"a": ', 100000) || '1'
                  || repeat('}', 100000) || '}', true) IS NOT NULL AS set;
SELECT credits.current_user_id_or_null() AS deep_objects;
SELECT state, detail FROM test.error_of('SELECT credits.current_user_id()');
-- Quotes and brackets inside strings do not count as nesting.
SELECT set_config('request.jwt.claims',
                  '{"sub": "00000000-0000-4000-8000-00000000f101", "note": "' || repeat('[{\"', 100) || '", '
                  || '"app_metadata": ' || repeat('{"a": ', 30) || '1' || repeat('}', 30) || '}', true) IS NOT NULL AS set;
SELECT credits.current_user_id_or_null() = :'u1' AS shallow_enough;
ROLLBACK;

-- ==== 2. rate_limit_at near the end of the timestamp range: 22008, nothing stored.
SELECT allowed FROM credits.rate_limit_at(:'u1', 'end-of-time', 10, 0.0001, '294276-06-01 00:00:00+00');
SELECT state, detail->>'field' AS field
  FROM test.error_of(format($$SELECT credits.rate_limit_at(%L, 'end-of-time-2', 10, 0.0001, '294276-12-31 23:59:59+00')$$, :'u1'));
SELECT count(*) AS stored FROM credits.rate_limits WHERE user_id = :'u1' AND action = 'end-of-time-2';
SELECT state, detail->>'field' AS field
  FROM test.error_of(format($$SELECT credits.rate_limit_at(%L, 'end-of-time', 10, 0.0001, '294276-12-31 23:59:59+00')$$, :'u1'));

-- ==== 3. expire_holds(batch_size): at most batch_size accounts per call.
SELECT sum(n) >= 0 AS swept_others FROM (SELECT credits.expire_holds() AS n FROM generate_series(1, 3)) s;
SET credits.hold_timeout = 1;
SELECT count(*) AS holds FROM (VALUES (:'u2'::uuid), (:'u3'), (:'u4')) u(id), LATERAL credits.reserve(u.id, 'image') r;
RESET credits.hold_timeout;
SELECT pg_sleep(1.2);
SELECT credits.expire_holds(2) AS first_batch;
SELECT credits.expire_holds(2) AS second_batch;
SELECT credits.expire_holds() AS nothing_left;
SELECT status, count(*) FROM credits.holds WHERE user_id IN (:'u2', :'u3', :'u4') GROUP BY status;
SELECT state, detail->>'field' AS field FROM test.error_of('SELECT credits.expire_holds(0)');
SELECT pg_get_function_identity_arguments('credits.expire_holds'::regproc) AS args;

-- ==== 4. Time zones: IANA names exactly as pg_timezone_names lists them.
-- Every name it lists is accepted, but zic's "Factory" placeholder (abbreviation -00).
SELECT count(*) > 400 AS many FROM pg_timezone_names;
SELECT count(*) FILTER (WHERE e.state <> 'no error' AND z.abbrev <> '-00') AS refused_names,
       count(*) FILTER (WHERE e.state = 'no error' AND z.abbrev = '-00') AS accepted_factory
  FROM pg_timezone_names z,
       LATERAL test.error_of(format('SELECT credits.set_timezone(%L, %L)', :'u1', z.name)) e;
SELECT v.tz, e.state, e.detail->>'field' AS field
  FROM (VALUES ('Europe/Paris'), ('America/Havana'), ('Etc/GMT+5'), ('UTC'),
               ('europe/paris'), ('CEST'), ('UTC+3'), ('<+03>-3'), ('Factory'), ('../../etc/passwd'),
               ('/usr/share/zoneinfo/UTC'), ('Europe/'), (''), ('right/UTC'), ('zone.tab')) v(tz),
       LATERAL test.error_of(format('SELECT credits.set_timezone(%L, %L)', :'u1', v.tz)) e;
SELECT timezone FROM credits.accounts WHERE user_id = :'u1';

-- ==== 5. Drift (a cached number changed outside the functions) is 55000, with reconcile in the hint.
SET session_replication_role = replica;
UPDATE credits.accounts SET balance = balance + 100 WHERE user_id = :'u2';
RESET session_replication_role;
SELECT credits.balance(:'u2') AS cached, (SELECT sum(remaining) FROM credits.lots WHERE user_id = :'u2') AS in_lots;
SELECT state, message, detail, hint LIKE '%credits.reconcile()%' AS says_reconcile
  FROM test.error_of(format($$SELECT credits.credits_consume(%L, 'image', 10)$$, :'u2'));
SET session_replication_role = replica;
UPDATE credits.accounts SET balance = balance - 100 WHERE user_id = :'u2';
RESET session_replication_role;
SELECT count(*) AS discrepancies FROM credits.reconcile(:'u2');
-- The ledger refuses changes whoever asks: 0A000, not a privilege error.
SELECT state, message, detail FROM test.error_of('DELETE FROM credits.ledger WHERE false');
