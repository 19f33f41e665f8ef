-- Security suite, part 1: role x relation x verb.  No client role (anon,
-- authenticated) and not even the admin role (service_role, which bypasses
-- row level security on Supabase) may write any relation of schema credits;
-- anon may not read any either.  Relations are enumerated from pg_class, so
-- a table added later is covered without touching this file.
BEGIN;
SELECT plan((
    SELECT (3 * (4 * count(*) FILTER (WHERE relkind IN ('r', 'p'))      -- INSERT/UPDATE/DELETE/TRUNCATE
                 + 4 * count(*) FILTER (WHERE relkind IN ('v', 'm'))     -- privileges on views
                 + 2 * count(*) FILTER (WHERE relkind = 'S'))            -- nextval/setval
            + count(*) FILTER (WHERE relkind IN ('r', 'p', 'v', 'm'))    -- anon SELECT
            + count(*) FILTER (WHERE relkind IN ('r', 'p'))               -- RLS enabled
            + 2)::int
      FROM pg_class WHERE relnamespace = 'credits'::regnamespace AND relkind IN ('r', 'p', 'v', 'm', 'S')));

\ir ../fixtures/supabase.sql
SELECT credits.grant_roles('authenticated', 'service_role') \gset

-- One statement per relation and verb, written so that only privileges can stop it.
CREATE TEMP TABLE write_attempts AS
SELECT c.oid::regclass AS rel, v.verb,
       CASE v.verb
           WHEN 'INSERT' THEN format('INSERT INTO %s DEFAULT VALUES', c.oid::regclass)
           -- (SET col = DEFAULT reads nothing: only the UPDATE privilege is in play)
           WHEN 'UPDATE' THEN format('UPDATE %s SET %I = DEFAULT', c.oid::regclass, a.attname)
           WHEN 'DELETE' THEN format('DELETE FROM %s', c.oid::regclass)
           WHEN 'TRUNCATE' THEN format('TRUNCATE %s', c.oid::regclass)
           WHEN 'nextval' THEN format('SELECT nextval(%L)', c.oid::regclass)
           WHEN 'setval' THEN format('SELECT setval(%L, 1)', c.oid::regclass)
       END AS sql
  FROM pg_class c
  LEFT JOIN LATERAL (SELECT a.attname FROM pg_attribute a     -- a column an UPDATE may set
                      WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                        AND a.attidentity = '' AND a.attgenerated = ''
                      ORDER BY a.attnum LIMIT 1) a ON true
  JOIN LATERAL unnest(CASE WHEN c.relkind = 'S' THEN ARRAY['nextval', 'setval']
                           ELSE ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE'] END) AS v(verb) ON true
 WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind IN ('r', 'p', 'S');
GRANT SELECT ON write_attempts TO PUBLIC;

SELECT is((SELECT count(DISTINCT rel) FROM write_attempts WHERE verb = 'INSERT')::int >= 5, true,
          'the matrix covers every table (at least accounts, ledger, lots, plans, operations)');
SELECT is((SELECT count(*) FROM write_attempts WHERE sql IS NULL)::int, 0, 'every attempt has a statement');

-- anon (the public API key)
SELECT postgrest.as_anon() AS role \gset
SELECT throws_ok(sql, '42501', NULL, format('anon cannot %s %s', verb, rel))
  FROM write_attempts ORDER BY rel::text, verb;
SELECT throws_ok(format('SELECT * FROM %s', c.oid::regclass), '42501', NULL,
                 format('anon cannot SELECT %s', c.oid::regclass))
  FROM pg_class c
 WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
 ORDER BY c.oid::regclass::text;
SELECT postgrest.end_request() AS role \gset

-- authenticated (a signed-in user, with a valid JWT)
SELECT postgrest.as_user('5ec07a90-0000-4000-8000-000000000001') AS role \gset
SELECT throws_ok(sql, '42501', NULL, format('authenticated cannot %s %s', verb, rel))
  FROM write_attempts ORDER BY rel::text, verb;
SELECT postgrest.end_request() AS role \gset

-- service_role (the backend's key: all admin functions, but no direct writes)
SELECT postgrest.as_service() AS role \gset
SELECT throws_ok(sql, '42501', NULL, format('service_role cannot %s %s', verb, rel))
  FROM write_attempts ORDER BY rel::text, verb;
SELECT postgrest.end_request() AS role \gset

-- Views are not writable by anybody either (today they are not updatable at
-- all; the privileges make sure they stay closed if one ever becomes so).
SELECT is(has_table_privilege(r.role, c.oid, v.verb), false,
          format('%s has no %s privilege on %s', r.role, v.verb, c.oid::regclass))
  FROM pg_class c
 CROSS JOIN unnest(ARRAY['anon', 'authenticated', 'service_role']) AS r(role)
 CROSS JOIN unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) AS v(verb)
 WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind IN ('v', 'm')
 ORDER BY c.oid::regclass::text, r.role, v.verb;

-- Row level security is enabled on every table, so that a grant added by
-- mistake still shows nothing without a policy.
SELECT ok(c.relrowsecurity, format('row level security is enabled on %s', c.oid::regclass))
  FROM pg_class c
 WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind IN ('r', 'p')
 ORDER BY c.oid::regclass::text;

SELECT * FROM finish();
ROLLBACK;
