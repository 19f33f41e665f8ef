-- perf_replay: a retried request is answered from its ledger entry (charged
-- once), and lazy maintenance done under the account lock while answering a
-- replay is saved with the account (the books still balance).
\set u1 'f0000000-0000-0000-0000-000000000001'
\set u2 'f0000000-0000-0000-0000-000000000002'

-- A keyed consume, then its replay: the same entry, replayed, charged once.
SELECT entry_id AS first_id, balance AS first_balance
  FROM credits.credits_consume(:'u1', 'image', 1, 'perf-1') \gset
SELECT entry_id = :first_id AS same_entry, balance = :first_balance AS same_balance, replayed
  FROM credits.credits_consume(:'u1', 'image', 1, 'perf-1');
SELECT credits.balance(:'u1') AS balance, credits.daily_available(:'u1') AS daily_available;
-- The replay wrote no entry: one consume so far.
SELECT count(*) AS consumes FROM credits.ledger WHERE user_id = :'u1' AND kind = 'consume';
-- Other parameters under the same key are still a conflict naming the original entry.
SELECT state, detail->>'original_entry_id' = :'first_id' AS names_original
  FROM test.error_of($$SELECT credits.credits_consume('f0000000-0000-0000-0000-000000000001', 'image', 2, 'perf-1')$$);
-- A replay writes nothing: it looks the key up before locking the account
-- (a row lock FOR UPDATE takes a transaction id and writes WAL), so the
-- transaction gets no id ...
BEGIN;
SELECT replayed FROM credits.credits_consume(:'u1', 'image', 1, 'perf-1');
SELECT pg_current_xact_id_if_assigned() IS NULL AS replay_took_no_xid;
COMMIT;
-- ... and the WAL insert position does not move.  Other backends may write
-- WAL meanwhile (autovacuum), so of five replays, each its own transaction,
-- at least one must see the position unmoved; a locking replay moves it
-- every time.  The same for a retried grant and reservation.
SELECT balance FROM credits.grant_credits(:'u1', 3, 'keyed grant', 'perf-wal-grant') \g /dev/null
SELECT entry_id FROM credits.reserve(:'u1', 'image', 1, 'perf-wal-hold') \g /dev/null
DO $$
DECLARE
    before pg_lsn;
    quiet int := 0;
    u uuid := 'f0000000-0000-0000-0000-000000000001';
BEGIN
    FOR i IN 1..5 LOOP
        COMMIT;
        before := pg_current_wal_insert_lsn();
        PERFORM credits.credits_consume(u, 'image', 1, 'perf-1');
        PERFORM credits.grant_credits(u, 3, 'keyed grant', 'perf-wal-grant');
        PERFORM credits.reserve(u, 'image', 1, 'perf-wal-hold');
        IF pg_current_wal_insert_lsn() = before THEN
            quiet := quiet + 1;
        END IF;
    END LOOP;
    PERFORM set_config('test.replays_without_wal', quiet::text, false);
END $$;
SELECT current_setting('test.replays_without_wal')::int > 0 AS replays_write_no_wal;

-- A key never used by this user is a new request (the lookup is per user).
SELECT kind, amount, replayed FROM credits.credits_consume(:'u1', 'image', 1, 'perf-2');

-- Maintenance and replays: a lot expires, then a retried grant is the next
-- call.  The replay is answered before the account is locked, so it writes
-- no `expire` entry; the books balance either way, and the next write
-- expires the lot.
SELECT balance FROM credits.grant_credits(:'u2', 5, 'expires in a second', NULL, now() + interval '1 second');
SELECT balance FROM credits.grant_credits(:'u2', 3, 'keyed grant', 'perf-grant-1');
SELECT pg_sleep(1.2);
SELECT kind, amount, balance, replayed FROM credits.grant_credits(:'u2', 3, 'keyed grant', 'perf-grant-1');
SELECT kind, amount, balance_after FROM credits.ledger WHERE user_id = :'u2' ORDER BY id;
SELECT balance FROM credits.accounts WHERE user_id = :'u2';
SELECT * FROM credits.reconcile(:'u2');
-- the next write expires the lot, then spends
SELECT balance FROM credits.credits_consume(:'u2', 'image', 1);
SELECT kind, amount FROM credits.ledger WHERE user_id = :'u2' ORDER BY id DESC LIMIT 2;
SELECT * FROM credits.reconcile(:'u2');
-- The same for a retried consume: the first receipt, and the expired credits
-- are gone from the balance (read without writing).
SELECT balance FROM credits.grant_credits(:'u1', 4, 'expires in a second', NULL, now() + interval '1 second');
SELECT balance FROM credits.credits_consume(:'u1', 'image', 1, 'perf-3');
SELECT pg_sleep(1.2);
SELECT balance, replayed FROM credits.credits_consume(:'u1', 'image', 1, 'perf-3');
SELECT credits.balance(:'u1') AS balance_after_expiry;
SELECT * FROM credits.reconcile(:'u1');
