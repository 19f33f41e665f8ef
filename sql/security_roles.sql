-- credits.grant_roles(client_role, admin_role): plain Postgres, with roles of
-- your own.  It sets the two roles' privileges on schema credits to exactly:
-- the client functions and the read surface for the client, every service
-- function for the admin, and no table writes for anybody.

-- Bad input.
SELECT credits.grant_roles(NULL, 'postgres');
SELECT credits.grant_roles('postgres', NULL);
SELECT credits.grant_roles('postgres', 'postgres');
SELECT credits.grant_roles('regress_credits_no_such_role', 'postgres');
SELECT credits.grant_roles('postgres', 'regress_credits_no_such_role');
-- A superuser (or BYPASSRLS) client role would see every row.
SELECT credits.grant_roles('postgres', 'pg_monitor');
BEGIN;
CREATE ROLE regress_credits_app NOLOGIN;
CREATE ROLE regress_credits_backend NOLOGIN;
ALTER ROLE regress_credits_app BYPASSRLS;
SAVEPOINT s;
SELECT credits.grant_roles('regress_credits_app', 'regress_credits_backend');
ROLLBACK TO s;
-- A client role that inherits the admin role would call the admin functions.
ALTER ROLE regress_credits_app NOBYPASSRLS;
GRANT regress_credits_backend TO regress_credits_app;
SELECT credits.grant_roles('regress_credits_app', 'regress_credits_backend');
ROLLBACK;

BEGIN;
CREATE ROLE regress_credits_app NOLOGIN;
CREATE ROLE regress_credits_backend NOLOGIN;
-- Nothing is granted to them yet (nor to PUBLIC).
SELECT count(*) AS callable FROM pg_proc p
 WHERE p.pronamespace = 'credits'::regnamespace
   AND (has_function_privilege('regress_credits_app', p.oid, 'EXECUTE')
        OR has_function_privilege('regress_credits_backend', p.oid, 'EXECUTE'));
SELECT credits.grant_roles('regress_credits_app', 'regress_credits_backend');
-- Running it again changes nothing.
SELECT credits.grant_roles('regress_credits_app', 'regress_credits_backend');

-- The client role: exactly the client functions ...
SELECT p.oid::regprocedure AS client_may_call FROM pg_proc p
 WHERE p.pronamespace = 'credits'::regnamespace
   AND has_function_privilege('regress_credits_app', p.oid, 'EXECUTE')
 ORDER BY p.oid::regprocedure::text COLLATE "C";
-- ... which are the ones credits.client_functions() lists.
SELECT (SELECT array_agg(f ORDER BY f::text) FROM credits.client_functions() f)
     = (SELECT array_agg(p.oid::regprocedure ORDER BY p.oid::regprocedure::text) FROM pg_proc p
         WHERE p.pronamespace = 'credits'::regnamespace
           AND has_function_privilege('regress_credits_app', p.oid, 'EXECUTE')) AS same_list;
-- ... and SELECT on the read surface, nothing else.
SELECT c.oid::regclass AS client_may_read FROM pg_class c
 WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
   AND has_table_privilege('regress_credits_app', c.oid, 'SELECT')
 ORDER BY c.oid::regclass::text COLLATE "C";

-- The admin role: every other function but the owner's setup functions and triggers.
SELECT p.oid::regprocedure AS admin_may_not_call FROM pg_proc p
 WHERE p.pronamespace = 'credits'::regnamespace
   AND NOT has_function_privilege('regress_credits_backend', p.oid, 'EXECUTE')
 ORDER BY p.oid::regprocedure::text COLLATE "C";
-- (but the row level security policies' helper, which every reader runs)
SELECT count(*) AS admin_calls_client_functions FROM credits.client_functions() f
 WHERE has_function_privilege('regress_credits_backend', f, 'EXECUTE')
   AND f <> 'credits.current_user_id_or_null()'::regprocedure;

-- Nobody may write a table, a view or a sequence.
SELECT r.role, c.oid::regclass, v.verb
  FROM unnest(ARRAY['regress_credits_app', 'regress_credits_backend', 'public']) AS r(role)
 CROSS JOIN pg_class c
 CROSS JOIN unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) AS v(verb)
 WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
   AND has_table_privilege(r.role, c.oid, v.verb);
SELECT r.role, c.oid::regclass
  FROM unnest(ARRAY['regress_credits_app', 'regress_credits_backend']) AS r(role)
 CROSS JOIN pg_class c
 WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind = 'S'
   AND has_sequence_privilege(r.role, c.oid, 'USAGE, SELECT, UPDATE');

-- A broad grant made by hand (a common "fix" for permission errors) is
-- undone by running grant_roles again.
GRANT ALL ON ALL TABLES IN SCHEMA credits TO regress_credits_app, regress_credits_backend;
GRANT ALL ON ALL FUNCTIONS IN SCHEMA credits TO regress_credits_app;
SELECT count(*) AS writable_by_app FROM pg_class c
 WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind = 'r'
   AND has_table_privilege('regress_credits_app', c.oid, 'INSERT');
SELECT credits.grant_roles('regress_credits_app', 'regress_credits_backend');
SELECT count(*) AS writable_after FROM pg_class c
 CROSS JOIN unnest(ARRAY['regress_credits_app', 'regress_credits_backend']) AS r(role)
 WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind IN ('r', 'p', 'v')
   AND has_table_privilege(r.role, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE');
SELECT count(*) AS admin_functions_callable_by_app FROM pg_proc p
 WHERE p.pronamespace = 'credits'::regnamespace
   AND has_function_privilege('regress_credits_app', p.oid, 'EXECUTE')
   AND p.oid NOT IN (SELECT credits.client_functions());

-- The two roles at work, as an app server would use them.
SET LOCAL ROLE regress_credits_backend;
SELECT amount, balance FROM credits.grant_credits('5ec0f00d-0000-4000-8000-000000000006', 4, 'pack');
SELECT credits.balance('5ec0f00d-0000-4000-8000-000000000006');
SAVEPOINT s;
SELECT * FROM credits.my_balance();
ROLLBACK TO s;
-- The admin role may read the tables, but without BYPASSRLS (which Supabase's
-- service_role has) row level security shows it no user's rows.
SELECT count(*) FROM credits.ledger;
ROLLBACK TO s;
RESET ROLE;
SET LOCAL ROLE regress_credits_app;
SELECT set_config('request.jwt.claims', '{"sub": "5ec0f00d-0000-4000-8000-000000000006"}', true) IS NOT NULL AS signed_in;
SELECT kind, amount, balance FROM credits.consume('image');
SELECT kind, amount, reason FROM credits.ledger ORDER BY id;
SELECT balance, daily_remaining FROM credits.my_account;
SAVEPOINT s;
SELECT * FROM credits.credits_consume('5ec0f00d-0000-4000-8000-000000000006', 'image');
ROLLBACK TO s;
SELECT * FROM credits.grant_credits('5ec0f00d-0000-4000-8000-000000000006', 100, 'free money');
ROLLBACK TO s;
INSERT INTO credits.ledger (user_id, kind, amount, balance_after, actor)
VALUES ('5ec0f00d-0000-4000-8000-000000000006', 'grant', 100, 100, 'me');
ROLLBACK TO s;
UPDATE credits.accounts SET balance = 1000;
ROLLBACK TO s;
-- A role that is not the owner cannot run grant_roles (GRANT needs ownership).
SELECT credits.grant_roles('regress_credits_app', 'regress_credits_backend');
ROLLBACK;

-- A role grant_roles was never run for has nothing at all.
BEGIN;
CREATE ROLE regress_credits_app NOLOGIN;
SET LOCAL ROLE regress_credits_app;
SELECT set_config('request.jwt.claims', '{"sub": "5ec0f00d-0000-4000-8000-000000000006"}', true) IS NOT NULL AS signed_in;
SAVEPOINT s;
SELECT kind, amount FROM credits.ledger;
ROLLBACK TO s;
SELECT * FROM credits.consume('image');
ROLLBACK;
