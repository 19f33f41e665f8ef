-- Reads never write.  For a user never touched and for each kind of lazy
-- maintenance due (a lot expired, a hold timed out, an allocation due, an
-- entitlement lapsed), every read function answers in a READ ONLY
-- transaction what the next write will leave, and writes nothing in any
-- transaction.  Writes in a READ ONLY transaction are refused with 25006.
-- Two of the users of test/fixtures/reads_setup.sql:
\set new   'c2000000-0000-0000-0000-000000000001'
\set lot   'c2000000-0000-0000-0000-000000000002'
\set VERBOSITY default
\set SHOW_CONTEXT never

\i test/fixtures/reads_setup.sql
SELECT u.name, r.plan FROM reads_fixture.users u, reads_fixture.reads(u.id) r WHERE u.name IN ('ent', 'all') ORDER BY u.name;
SELECT pg_sleep(1.2);

-- What the reads answer in a READ ONLY transaction (temporary tables may still be written).
CREATE TEMP TABLE read_only AS SELECT u.name, r.* FROM reads_fixture.users u, reads_fixture.reads(u.id) r WITH NO DATA;
BEGIN TRANSACTION READ ONLY;
INSERT INTO read_only SELECT u.name, r.* FROM reads_fixture.users u, reads_fixture.reads(u.id) r;
COMMIT;
SELECT * FROM read_only ORDER BY name;

-- The same reads in a read-write transaction write nothing: no transaction id is assigned.
BEGIN;
SELECT count(*) AS users_read FROM reads_fixture.users u, reads_fixture.reads(u.id) r;
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
SELECT name, credits.open_account(id) AS created FROM reads_fixture.users ORDER BY name;
SELECT u.name, r.* FROM reads_fixture.users u, reads_fixture.reads(u.id) r
EXCEPT SELECT * FROM read_only;
SELECT * FROM read_only
EXCEPT SELECT u.name, r.* FROM reads_fixture.users u, reads_fixture.reads(u.id) r;
SELECT u.name, e.kind, e.amount, e.reason
  FROM reads_fixture.users u JOIN credits.ledger e ON e.user_id = u.id
 WHERE e.kind IN ('expire', 'release', 'allocation')
 ORDER BY u.name, e.id;
SELECT * FROM credits.reconcile() r JOIN reads_fixture.users u ON u.id = r.user_id;

-- Leave nothing behind for the other test files.
SELECT count(*) AS deleted FROM reads_fixture.users, credits.delete_account(id) d WHERE d.deleted;
DELETE FROM credits.products WHERE product_id IN ('reads_plus_monthly', 'reads_max_monthly');
DELETE FROM credits.plans WHERE name IN ('reads_monthly', 'reads_plus', 'reads_max');
SET client_min_messages = warning;
DROP SCHEMA reads_fixture CASCADE;
RESET client_min_messages;
