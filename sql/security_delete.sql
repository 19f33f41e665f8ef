-- Account deletion: credits.delete_account(user_id) (admin) and
-- credits.delete_my_account() (client, from the JWT): every row of the user
-- goes, ledger included; an anonymous tombstone of the totals stays.
\set dana  '5ec0da4a-0000-4000-8000-000000000003'
\set erin  '5ec0e414-0000-4000-8000-000000000004'
\set ghost '5ec06405-0000-4000-8000-000000000005'

-- The tombstone table has no column that could identify a user.
SELECT column_name, data_type FROM information_schema.columns
 WHERE table_schema = 'credits' AND table_name = 'deleted_accounts' ORDER BY ordinal_position;

-- Dana uses the app for a while.
SET request.jwt.claims = '{"sub": "5ec0da4a-0000-4000-8000-000000000003", "role": "authenticated"}';
SELECT kind, amount, balance FROM credits.consume('image', 2, idempotency_key => 'dana-1', reference => 'job 1');
SELECT amount, balance FROM credits.grant_credits(:'dana', 10, 'pack', expires_at => now() + interval '1 day');
SELECT kind, amount, balance FROM credits.consume('video_second', 1);
SELECT kind, amount, balance FROM credits.reserve(:'dana', 'image', 1);   -- a job still running
SELECT credits.set_my_timezone('Europe/Paris');
SELECT kind, amount FROM credits.my_history();

-- Her rows, table by table (every table of schema credits with a user_id column).
CREATE TEMP VIEW dana_rows AS
SELECT c.relname,
       (xpath('/row/n/text()',
              query_to_xml(format('SELECT count(*) AS n FROM %s WHERE user_id = %L',
                                  c.oid::regclass, '5ec0da4a-0000-4000-8000-000000000003'),
                           false, true, '')))[1]::text::int AS n
  FROM pg_class c
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'user_id' AND NOT a.attisdropped
 WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind IN ('r', 'p');
SELECT relname, n > 0 AS has_rows FROM dana_rows WHERE relname IN ('accounts', 'holds', 'ledger', 'lots') ORDER BY relname;

-- She deletes her account.  The summary is the tombstone's totals:
-- balance = granted - spent + refunded - expired + adjusted.
SELECT user_id = :'dana' AS dana, deleted, tombstone_id IS NOT NULL AS has_tombstone,
       entries, granted, spent, refunded, expired, adjusted, balance, deleted_at IS NOT NULL AS dated
  FROM credits.delete_my_account();
SELECT relname, n FROM dana_rows WHERE n <> 0;
SELECT count(*) AS dana_rows_left FROM dana_rows WHERE n <> 0;
SELECT plan, entries, granted, spent, refunded, expired, adjusted, balance,
       account_created_on = (now() AT TIME ZONE 'UTC')::date AS created_today
  FROM credits.deleted_accounts ORDER BY id DESC LIMIT 1;

-- Deleting again finds nothing: no error, deleted = false, no new tombstone.
SELECT count(*) AS tombstones FROM credits.deleted_accounts \gset
SELECT user_id = :'dana' AS dana, deleted, tombstone_id, entries, granted, spent, balance, deleted_at
  FROM credits.delete_account(:'dana');
SELECT count(*) = :tombstones AS no_new_tombstone FROM credits.deleted_accounts;
-- A user who never had an account: the same.
SELECT deleted, tombstone_id, entries FROM credits.delete_account(:'ghost');
SELECT * FROM credits.delete_account(NULL);

-- Dana comes back: the history is empty, but deletion is not a reset: no
-- second signup bonus, and today's operations still count (security_abuse).
SELECT credits.my_balance(), credits.my_daily_available();
SELECT kind, amount, reason FROM credits.my_history();
SELECT timezone FROM credits.my_account;
SELECT * FROM credits.reconcile(:'dana');
RESET request.jwt.claims;

-- The ledger is still append-only for everyone else: the exception was
-- only for the DELETE inside delete_account.
SELECT credits.open_account(:'erin') AS created;
DELETE FROM credits.ledger WHERE user_id = :'erin';
UPDATE credits.ledger SET amount = 1000 WHERE user_id = :'erin';
TRUNCATE credits.ledger;

-- ... even when the deletion fails half-way through the ledger: an error
-- raised while the exception is on (here a test trigger) turns it off again.
BEGIN;
CREATE FUNCTION public.security_test_fail_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'simulated failure while deleting ledger rows';
END $$;
CREATE TRIGGER zz_fail_delete BEFORE DELETE ON credits.ledger
    FOR EACH ROW EXECUTE FUNCTION public.security_test_fail_delete();
SAVEPOINT before_delete;
SELECT * FROM credits.delete_account(:'erin');
ROLLBACK TO before_delete;
DROP TRIGGER zz_fail_delete ON credits.ledger;
DELETE FROM credits.ledger WHERE user_id = :'erin';
ROLLBACK;
SELECT count(*) AS erin_entries FROM credits.ledger WHERE user_id = :'erin';
DELETE FROM credits.ledger WHERE user_id = :'erin';

-- Ledger rows without an account row (not something the functions write,
-- but an admin could): they are deleted and counted all the same.
INSERT INTO credits.ledger (user_id, kind, amount, balance_after, actor)
VALUES (:'ghost', 'adjust', 0, 0, 'test');
SELECT deleted, entries, granted, spent, adjusted, balance FROM credits.delete_account(:'ghost');
SELECT plan, entries, account_created_on IS NOT NULL AS dated FROM credits.deleted_accounts ORDER BY id DESC LIMIT 1;
SELECT count(*) AS ghost_entries FROM credits.ledger WHERE user_id = :'ghost';

-- Erin, deleted by an admin; then the books of everyone balance.
SELECT deleted, entries, granted, spent, balance FROM credits.delete_account(:'erin');
SELECT * FROM credits.reconcile(:'erin');
SELECT count(*) AS bad_tombstones FROM credits.deleted_accounts
 WHERE balance <> granted - spent + refunded - expired + adjusted;
