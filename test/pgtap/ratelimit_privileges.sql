-- Rate limiting, denial counters and analytics: what exists, and that none of
-- it is open to PUBLIC (clients get nothing here; admins are granted
-- deliberately).
BEGIN;
SELECT plan(38);

SELECT has_table('credits', 'rate_limits', 'the limiter''s buckets');
SELECT col_is_pk('credits', 'rate_limits', ARRAY['user_id', 'action'], 'one row per user and action');
SELECT columns_are('credits', 'rate_limits', ARRAY['user_id', 'action', 'tat'], 'a bucket is one timestamp');
SELECT ok((SELECT relrowsecurity FROM pg_class WHERE oid = 'credits.rate_limits'::regclass),
          'row level security is enabled on credits.rate_limits');
SELECT has_column('credits', 'accounts', 'rate_tat', 'the plan limiter''s state lives on the account row');
SELECT has_type('credits', 'rate_limit_result', 'rate_limit returns a named row type');

SELECT function_returns('credits', 'rate_limit', ARRAY['uuid', 'text', 'integer', 'double precision'],
                        'credits.rate_limit_result', 'credits.rate_limit(user_id, action, burst, per_second)');
SELECT is_definer('credits', 'rate_limit', ARRAY['uuid', 'text', 'integer', 'double precision'],
                  'rate_limit is SECURITY DEFINER');
SELECT is_definer('credits', 'rate_limit_at', ARRAY['uuid', 'text', 'integer', 'double precision', 'timestamp with time zone'],
                  'rate_limit_at is SECURITY DEFINER');
SELECT ok((SELECT proconfig @> ARRAY['search_path=pg_catalog, pg_temp']
             FROM pg_proc WHERE oid = 'credits.rate_limit(uuid, text, integer, double precision)'::regprocedure),
          'rate_limit pins search_path');
SELECT ok((SELECT proconfig @> ARRAY['search_path=pg_catalog, pg_temp']
             FROM pg_proc WHERE oid = 'credits.account_summary(uuid, integer)'::regprocedure),
          'account_summary pins search_path');

SELECT has_view('credits', 'stats', 'credits.stats');
SELECT columns_are('credits', 'stats', ARRAY['reason', 'operation', 'denials', 'last_denied_at', 'scope'],
                   'credits.stats columns');
SELECT has_view('credits', 'usage_daily', 'credits.usage_daily');
SELECT has_view('credits', 'depletions', 'credits.depletions');
SELECT has_view('credits', 'top_users', 'credits.top_users');
SELECT has_view('credits', 'purchases_summary', 'credits.purchases_summary');

-- Nothing here is executable or readable by PUBLIC.
SELECT ok(NOT has_function_privilege('public', 'credits.rate_limit(uuid, text, integer, double precision)', 'EXECUTE'),
          'PUBLIC cannot call rate_limit');
SELECT ok(NOT has_function_privilege('public', 'credits.rate_limit_at(uuid, text, integer, double precision, timestamptz)', 'EXECUTE'),
          'PUBLIC cannot call rate_limit_at');
SELECT ok(NOT has_function_privilege('public', 'credits.rate_limit_prune()', 'EXECUTE'),
          'PUBLIC cannot call rate_limit_prune');
SELECT ok(NOT has_function_privilege('public', 'credits.denial_counters()', 'EXECUTE'),
          'PUBLIC cannot call denial_counters');
SELECT ok(NOT has_function_privilege('public', 'credits.stats_reset()', 'EXECUTE'),
          'PUBLIC cannot reset the counters');
SELECT ok(NOT has_function_privilege('public', 'credits.account_summary(uuid, integer)', 'EXECUTE'),
          'PUBLIC cannot call account_summary');
SELECT ok(NOT has_table_privilege('public', 'credits.rate_limits', 'SELECT'), 'PUBLIC cannot read rate_limits');
SELECT ok(NOT has_table_privilege('public', 'credits.stats', 'SELECT'), 'PUBLIC cannot read credits.stats');
SELECT ok(NOT has_table_privilege('public', 'credits.usage_daily', 'SELECT')
          AND NOT has_table_privilege('public', 'credits.depletions', 'SELECT')
          AND NOT has_table_privilege('public', 'credits.top_users', 'SELECT')
          AND NOT has_table_privilege('public', 'credits.purchases_summary', 'SELECT')
          AND NOT has_table_privilege('public', 'credits.usage_entries', 'SELECT')
          AND NOT has_table_privilege('public', 'credits.account_plans', 'SELECT'),
          'PUBLIC cannot read the analytics views');

-- A role with no grants is refused, whatever it tries.
CREATE ROLE rl_tap_nobody;
GRANT USAGE ON SCHEMA credits TO rl_tap_nobody;
SET LOCAL ROLE rl_tap_nobody;
SELECT throws_ok($$SELECT credits.rate_limit('00000000-0000-4000-8000-00000000c001', 'x', 1, 1)$$,
                 '42501', NULL, 'an ungranted role cannot call rate_limit');
SELECT throws_ok($$SELECT * FROM credits.stats$$, '42501', NULL, 'an ungranted role cannot read credits.stats');
SELECT throws_ok($$SELECT credits.stats_reset()$$, '42501', NULL, 'an ungranted role cannot reset the counters');
SELECT throws_ok($$SELECT * FROM credits.top_users$$, '42501', NULL, 'an ungranted role cannot read top_users');
RESET ROLE;

-- After grant_roles(client, admin): the admin role reads the views and calls
-- the limiter; the client role gets none of it.
CREATE ROLE rl_tap_client;
CREATE ROLE rl_tap_admin;
SELECT credits.grant_roles('rl_tap_client', 'rl_tap_admin');
SELECT ok(has_table_privilege('rl_tap_admin', 'credits.stats', 'SELECT')
          AND has_table_privilege('rl_tap_admin', 'credits.usage_daily', 'SELECT')
          AND has_table_privilege('rl_tap_admin', 'credits.depletions', 'SELECT')
          AND has_table_privilege('rl_tap_admin', 'credits.top_users', 'SELECT')
          AND has_table_privilege('rl_tap_admin', 'credits.purchases_summary', 'SELECT'),
          'the admin role reads credits.stats and the analytics views');
SELECT ok(NOT has_table_privilege('rl_tap_admin', 'credits.stats', 'INSERT, UPDATE, DELETE, TRUNCATE'),
          'the admin role cannot write them');
SELECT ok(has_function_privilege('rl_tap_admin', 'credits.rate_limit(uuid, text, integer, double precision)', 'EXECUTE')
          AND has_function_privilege('rl_tap_admin', 'credits.stats_reset()', 'EXECUTE')
          AND has_function_privilege('rl_tap_admin', 'credits.account_summary(uuid, integer)', 'EXECUTE'),
          'the admin role calls rate_limit, stats_reset and account_summary');
SELECT ok(NOT has_table_privilege('rl_tap_client', 'credits.stats', 'SELECT')
          AND NOT has_table_privilege('rl_tap_client', 'credits.usage_daily', 'SELECT')
          AND NOT has_table_privilege('rl_tap_client', 'credits.depletions', 'SELECT')
          AND NOT has_table_privilege('rl_tap_client', 'credits.top_users', 'SELECT')
          AND NOT has_table_privilege('rl_tap_client', 'credits.purchases_summary', 'SELECT')
          AND NOT has_table_privilege('rl_tap_client', 'credits.usage_entries', 'SELECT')
          AND NOT has_table_privilege('rl_tap_client', 'credits.account_plans', 'SELECT'),
          'the client role reads none of the admin views');
SELECT ok(NOT has_table_privilege('rl_tap_client', 'credits.rate_limits', 'SELECT'),
          'the client role cannot read the limiter''s buckets');
SELECT ok(NOT has_function_privilege('rl_tap_client', 'credits.rate_limit(uuid, text, integer, double precision)', 'EXECUTE'),
          'the client role cannot call rate_limit');
SELECT ok(NOT has_function_privilege('rl_tap_client', 'credits.rate_limit_at(uuid, text, integer, double precision, timestamptz)', 'EXECUTE')
          AND NOT has_function_privilege('rl_tap_client', 'credits.rate_limit_prune()', 'EXECUTE'),
          'the client role cannot call rate_limit_at or rate_limit_prune');
SELECT ok(NOT has_function_privilege('rl_tap_client', 'credits.stats_reset()', 'EXECUTE')
          AND NOT has_function_privilege('rl_tap_client', 'credits.denial_counters()', 'EXECUTE')
          AND NOT has_function_privilege('rl_tap_client', 'credits.account_summary(uuid, integer)', 'EXECUTE'),
          'the client role cannot reset or read the counters, nor call account_summary');

SELECT * FROM finish();
ROLLBACK;
