-- perf_client_reads: the client reads my_balance() and my_daily_available()
-- are C functions (a SQL function with SECURITY DEFINER and a pinned
-- search_path is never inlined: it ran the SQL function executor and three
-- search_path switches per call), and they answer exactly what the service
-- reads answer for the caller: created or not, limited or not, 28000
-- without a user.
\set u1 'f1000000-0000-0000-0000-000000000001'
\set u2 'f1000000-0000-0000-0000-000000000002'

SELECT p.oid::regprocedure AS fn, l.lanname, p.prosecdef, p.provolatile,
       p.proconfig = '{"search_path=pg_catalog, pg_temp"}' AS pins_search_path
  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
 WHERE p.oid IN ('credits.my_balance()'::regprocedure, 'credits.my_daily_available()'::regprocedure)
 ORDER BY 1::text;

-- No user: 28000, as before.
SELECT state FROM test.error_of($$SELECT credits.my_balance()$$);
SELECT state FROM test.error_of($$SELECT credits.my_daily_available()$$);
SET request.jwt.claims = '{"sub": "not-a-uuid", "role": "authenticated"}';
SELECT state FROM test.error_of($$SELECT credits.my_daily_available()$$);

-- A user without an account yet reads as its first touch would create it.
SELECT set_config('request.jwt.claims', format('{"sub": "%s"}', :'u1'), false) \g /dev/null
SELECT credits.my_balance() = credits.balance(:'u1') AS same_balance,
       credits.my_daily_available() IS NOT DISTINCT FROM credits.daily_available(:'u1') AS same_daily,
       credits.my_daily_available() AS daily_available;
-- After a consume and a grant.
SELECT kind FROM credits.credits_consume(:'u1', 'image', 2);
SELECT kind FROM credits.grant_credits(:'u1', 40, 'perf_client_reads');
SELECT credits.my_balance() AS my_balance, credits.balance(:'u1') AS balance,
       credits.my_daily_available() AS my_daily, credits.daily_available(:'u1') AS daily;
-- Without a daily limit: NULL, like daily_available.
SELECT credits.set_plan(:'u2', 'pro');
SELECT set_config('request.jwt.claims', format('{"sub": "%s"}', :'u2'), false) \g /dev/null
SELECT credits.my_daily_available() IS NULL AS unlimited, credits.daily_available(:'u2') IS NULL AS service_unlimited,
       credits.my_balance() = credits.balance(:'u2') AS same_balance;
-- Reads never write: in a READ ONLY transaction too.
BEGIN READ ONLY;
SELECT credits.my_balance() = credits.balance(:'u2') AS read_only_ok;
COMMIT;
RESET request.jwt.claims;
