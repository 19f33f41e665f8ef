-- Reads never write.  For a user never touched and for each kind of lazy
-- maintenance due (a lot expired, a hold timed out, an allocation due, an
-- entitlement lapsed), every read function answers in a READ ONLY
-- transaction what the next write will leave, and writes nothing in any
-- transaction.  Writes in a READ ONLY transaction are refused with 25006.
\set new   'c2000000-0000-0000-0000-000000000001'
\set lot   'c2000000-0000-0000-0000-000000000002'
\set hold  'c2000000-0000-0000-0000-000000000003'
\set month 'c2000000-0000-0000-0000-000000000004'
\set ent   'c2000000-0000-0000-0000-000000000005'
\set all   'c2000000-0000-0000-0000-000000000006'
\set VERBOSITY default
\set SHOW_CONTEXT never

INSERT INTO credits.plans (name, daily_limit, signup_bonus, rank) VALUES
    ('reads_monthly', 5, 6, 0),
    ('reads_plus', 50, 0, 1),
    ('reads_max', 500, 0, 2);
INSERT INTO credits.products (product_id, plan) VALUES
    ('reads_plus_monthly', 'reads_plus'),
    ('reads_max_monthly', 'reads_max');

CREATE TEMP TABLE users (name text PRIMARY KEY, id uuid NOT NULL);
INSERT INTO users VALUES ('new', :'new'), ('lot', :'lot'), ('hold', :'hold'),
    ('month', :'month'), ('ent', :'ent'), ('all', :'all');

-- Every read of one user: the service functions, and the client functions
-- and view with the user's JWT claims (transaction-local, as PostgREST sets them).
CREATE FUNCTION pg_temp.reads(u uuid)
RETURNS TABLE (balance bigint, daily bigint, plan text, my_balance bigint, my_daily bigint,
               view_plan text, view_balance bigint, view_daily bigint, usage bigint)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('request.jwt.claims', json_build_object('sub', u, 'role', 'authenticated')::text, true);
    RETURN QUERY SELECT credits.balance(u), credits.daily_available(u), (credits.account_status(u)).plan,
        credits.my_balance(), credits.my_daily_available(), m.plan, m.balance, m.daily_remaining,
        (SELECT coalesce(sum(operations), 0)::bigint FROM credits.my_usage())
      FROM credits.my_account m;
    PERFORM set_config('request.jwt.claims', '', true);
END
$$;

-- A lot that expires: 4 credits for a second, and one operation today.
SELECT credits.open_account(id) FROM users WHERE name IN ('lot', 'all');
SELECT r.amount FROM users, credits.credits_consume(id, 'image') r WHERE name IN ('lot', 'all');
SELECT r.amount FROM users, credits.grant_credits(id, 4, 'flash', expires_at => clock_timestamp() + interval '1 second') r
 WHERE name IN ('lot', 'all');
-- A hold that times out, reserved today: its credits and its operation come back.
SET credits.hold_timeout = 1;
SELECT r.kind, r.amount FROM users, credits.reserve(id, 'image', 2) r WHERE name IN ('hold', 'all');
RESET credits.hold_timeout;
-- An allocation due: the admin gives the plan a monthly allocation after the account was made.
SELECT credits.set_plan(id, 'reads_monthly') FROM users WHERE name IN ('month', 'all');
UPDATE credits.plans SET monthly_allocation = 100 WHERE name = 'reads_monthly';
-- An entitlement that lapses while a lower one is still active.
SELECT r.kind FROM users, credits.apply_purchase(id, 'reads_plus_monthly', 'reads-plus-' || name, 'stripe', now(), now() + interval '30 days') r
 WHERE name IN ('ent', 'all');
SELECT r.kind FROM users, credits.apply_purchase(id, 'reads_max_monthly', 'reads-max-' || name, 'stripe', now(), clock_timestamp() + interval '1 second') r
 WHERE name IN ('ent', 'all');
SELECT u.name, r.plan FROM users u, pg_temp.reads(u.id) r WHERE u.name IN ('ent', 'all') ORDER BY u.name;
SELECT pg_sleep(1.2);

-- What the reads answer in a READ ONLY transaction (temporary tables may still be written).
CREATE TEMP TABLE read_only AS SELECT u.name, r.* FROM users u, pg_temp.reads(u.id) r WITH NO DATA;
BEGIN TRANSACTION READ ONLY;
INSERT INTO read_only SELECT u.name, r.* FROM users u, pg_temp.reads(u.id) r;
COMMIT;
SELECT * FROM read_only ORDER BY name;

-- The same reads in a read-write transaction write nothing: no transaction id is assigned.
BEGIN;
SELECT count(*) AS users_read FROM users u, pg_temp.reads(u.id) r;
SELECT pg_current_xact_id_if_assigned() IS NULL AS wrote_nothing;
COMMIT;
SELECT count(*) AS accounts_of_new_users FROM credits.accounts WHERE user_id = :'new';

-- Writes in a READ ONLY transaction: 25006, with a hint.
SET default_transaction_read_only = on;
SELECT * FROM credits.credits_consume(:'lot', 'image');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM credits.grant_credits(:'new', 1, 'read only');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM credits.reserve(:'lot', 'image');
\echo :LAST_ERROR_SQLSTATE
SELECT credits.set_plan(:'lot', 'free');
\echo :LAST_ERROR_SQLSTATE
SELECT credits.open_account(:'new');
\echo :LAST_ERROR_SQLSTATE
SET default_transaction_read_only = off;

-- The next write (open_account) does the maintenance; the reads then answer
-- exactly what they answered read-only before it.
SELECT name, credits.open_account(id) AS created FROM users ORDER BY name;
SELECT u.name, r.* FROM users u, pg_temp.reads(u.id) r
EXCEPT SELECT * FROM read_only;
SELECT * FROM read_only
EXCEPT SELECT u.name, r.* FROM users u, pg_temp.reads(u.id) r;
SELECT u.name, e.kind, e.amount, e.reason
  FROM users u JOIN credits.ledger e ON e.user_id = u.id
 WHERE e.kind IN ('expire', 'release', 'allocation')
 ORDER BY u.name, e.id;
SELECT * FROM credits.reconcile() r JOIN users u ON u.id = r.user_id;

-- Leave nothing behind for the other test files.
SELECT count(*) AS deleted FROM users, credits.delete_account(id) d WHERE d.deleted;
DELETE FROM credits.products WHERE product_id IN ('reads_plus_monthly', 'reads_max_monthly');
DELETE FROM credits.plans WHERE name IN ('reads_monthly', 'reads_plus', 'reads_max');
