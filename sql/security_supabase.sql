-- Supabase: credits.attach_supabase_auth() ties accounts to auth.users, and
-- the client functions work through PostgREST's per-request role and claims.
-- test/fixtures/supabase.sql reproduces the roles, the auth schema and
-- PostgREST's settings; it is loaded inside a transaction that rolls back.

-- Without Supabase there is no auth.users: a clear error.  (On the Supabase-shaped
-- cluster of test/ops/supabase.sh auth.users exists: expected/security_supabase_1.out.)
SELECT credits.attach_supabase_auth();
-- Detaching is harmless anywhere.
SELECT credits.detach_supabase_auth();

BEGIN;
-- (the fixture is loaded without echo)
\set ECHO none
\i test/fixtures/supabase.sql
\set ECHO all
SELECT credits.grant_roles('authenticated', 'service_role');
SELECT credits.attach_supabase_auth();
-- Attaching twice is harmless.
SELECT credits.attach_supabase_auth();
SELECT tgname, tgenabled FROM pg_trigger
 WHERE tgrelid = 'auth.users'::regclass AND NOT tgisinternal ORDER BY tgname;

-- Supabase Auth signs a user up: the account exists at once, with its bonus.
SET LOCAL ROLE supabase_auth_admin;
INSERT INTO auth.users (id, email) VALUES ('5ec05b0b-0000-4000-8000-000000000007', 'frank@example.com');
RESET ROLE;
SELECT plan, balance, day_count FROM credits.accounts WHERE user_id = '5ec05b0b-0000-4000-8000-000000000007';
SELECT kind, amount, reason, actor FROM credits.ledger
 WHERE user_id = '5ec05b0b-0000-4000-8000-000000000007' ORDER BY id;

-- A request of Frank's, as PostgREST runs it (POST /rpc/consume with his JWT).
SELECT postgrest.as_user('5ec05b0b-0000-4000-8000-000000000007');
SELECT current_user, auth.uid() = credits.current_user_id() AS same_user;
SELECT kind, amount, balance, daily_remaining FROM credits.consume('image', 2);
SELECT balance, daily_remaining FROM credits.my_account;
SELECT kind, amount, actor FROM credits.ledger ORDER BY id;
SELECT postgrest.end_request();

-- The anon key can do nothing.
SELECT postgrest.as_anon();
SAVEPOINT s;
SELECT * FROM credits.consume('image');
ROLLBACK TO s;
SELECT * FROM credits.my_account;
ROLLBACK TO s;
SELECT postgrest.end_request();

-- The service_role key: the admin functions, for any user.
SELECT postgrest.as_service();
SELECT amount, balance FROM credits.grant_credits('5ec05b0b-0000-4000-8000-000000000007', 10, 'support gesture');
SELECT postgrest.end_request();

-- Supabase Auth deletes the user: the account goes, a tombstone stays.
SELECT count(*) AS tombstones FROM credits.deleted_accounts \gset
SET LOCAL ROLE supabase_auth_admin;
DELETE FROM auth.users WHERE id = '5ec05b0b-0000-4000-8000-000000000007';
RESET ROLE;
SELECT count(*) AS frank_accounts FROM credits.accounts WHERE user_id = '5ec05b0b-0000-4000-8000-000000000007';
SELECT count(*) AS frank_entries FROM credits.ledger WHERE user_id = '5ec05b0b-0000-4000-8000-000000000007';
SELECT count(*) - :tombstones AS new_tombstones FROM credits.deleted_accounts;
SELECT plan, entries, granted, spent, balance FROM credits.deleted_accounts ORDER BY id DESC LIMIT 1;

-- A failing account creation fails the signup (nothing half-done): here the
-- default plan is missing.
SET LOCAL credits.default_plan = 'no_such_plan';
SAVEPOINT s;
INSERT INTO auth.users (id, email) VALUES ('5ec05b0b-0000-4000-8000-000000000008', 'gina@example.com');
ROLLBACK TO s;
RESET credits.default_plan;
SELECT count(*) AS gina_users FROM auth.users WHERE email = 'gina@example.com';

-- Detach: the triggers go.
SELECT credits.detach_supabase_auth();
SELECT count(*) AS triggers FROM pg_trigger WHERE tgrelid = 'auth.users'::regclass AND NOT tgisinternal;
INSERT INTO auth.users (id, email) VALUES ('5ec05b0b-0000-4000-8000-000000000009', 'hank@example.com');
SELECT count(*) AS hank_accounts FROM credits.accounts WHERE user_id = '5ec05b0b-0000-4000-8000-000000000009';
ROLLBACK;
