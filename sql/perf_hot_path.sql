-- The hot path reads and writes its rows directly (src/rows.c): what it must
-- keep doing exactly like the SQL statements it replaced.
\set u1 'c7000000-0000-0000-0000-000000000001'
\set u2 'c7000000-0000-0000-0000-000000000002'
INSERT INTO credits.plans (name) VALUES ('hot_path_test');   -- no daily limit, no bonus
SET credits.default_plan = 'hot_path_test';

-- Spend order across lots: the expiring lot first, then the older of the others.
SELECT balance FROM credits.grant_credits(:'u1', 3, 'promo', expires_at => now() + interval '1 day');
SELECT balance FROM credits.grant_credits(:'u1', 10, 'pack');
SELECT balance FROM credits.grant_credits(:'u1', 5, 'second pack');
SELECT amount, balance FROM credits.credits_consume(:'u1', 'image', 2);
SELECT reason, remaining, spendable
  FROM credits.lots l JOIN credits.ledger e ON e.id = l.entry_id WHERE l.user_id = :'u1' ORDER BY l.id;
-- Taking a lot's last credit empties it: it is no longer spendable.
SELECT amount, balance FROM credits.credits_consume(:'u1', 'image', 1);
-- Then the next lot in order, and a charge larger than one lot spans two.
SELECT amount, balance FROM credits.credits_consume(:'u1', 'image', 4);
SELECT amount, balance FROM credits.credits_consume(:'u1', 'image', 7);
SELECT reason, remaining, spendable
  FROM credits.lots l JOIN credits.ledger e ON e.id = l.entry_id WHERE l.user_id = :'u1' ORDER BY l.id;
SELECT array_length(lot_moves, 1) AS lots_touched, amount
  FROM credits.ledger WHERE user_id = :'u1' AND kind = 'consume' ORDER BY id;
-- Every lot's spendable flag matches its remaining credits, and the books balance.
SELECT count(*) AS stale_flags FROM credits.lots WHERE spendable <> (remaining > 0);
SELECT count(*) AS discrepancies FROM credits.reconcile(:'u1');

-- Spending from a lot that keeps credits is a HOT update: no index entry per charge.
SELECT pg_stat_force_next_flush();
SELECT pg_stat_get_tuples_updated('credits.lots'::regclass) AS updated_before,
       pg_stat_get_tuples_hot_updated('credits.lots'::regclass) AS hot_before \gset
SELECT balance FROM credits.credits_consume(:'u1', 'image', 1);
SELECT balance FROM credits.credits_consume(:'u1', 'image', 1);
SELECT balance FROM credits.credits_consume(:'u1', 'image', 1);
SELECT pg_stat_force_next_flush();
SELECT pg_stat_get_tuples_updated('credits.lots'::regclass) - :updated_before AS lot_updates,
       pg_stat_get_tuples_hot_updated('credits.lots'::regclass) - :hot_before AS hot_lot_updates;
SELECT amount, balance FROM credits.credits_consume(:'u1', 'image', 1);   -- the last one

-- The CHECK constraints are compiled once per backend; one added later applies
-- at once, to the account row and to the lot the fast path spends from.
ALTER TABLE credits.accounts ADD CONSTRAINT test_balance_cap
    CHECK (user_id <> 'c7000000-0000-0000-0000-000000000001' OR balance < 5000);
SELECT state, message FROM test.error_of($$SELECT credits.grant_credits('c7000000-0000-0000-0000-000000000001', 10000, 'too much')$$);
ALTER TABLE credits.accounts DROP CONSTRAINT test_balance_cap;
SELECT amount, balance FROM credits.grant_credits(:'u1', 10000, 'fine now');
ALTER TABLE credits.lots ADD CONSTRAINT test_lot_odd
    CHECK (user_id <> 'c7000000-0000-0000-0000-000000000001' OR remaining <> 9999);
SELECT state, message FROM test.error_of($$SELECT credits.credits_consume('c7000000-0000-0000-0000-000000000001', 'image', 1)$$);
ALTER TABLE credits.lots DROP CONSTRAINT test_lot_odd;
SELECT amount, balance FROM credits.credits_consume(:'u1', 'image', 1);
SELECT count(*) AS discrepancies FROM credits.reconcile(:'u1');
RESET credits.default_plan;

-- Several calls in one transaction see each other's writes.
BEGIN;
SELECT balance FROM credits.credits_consume(:'u2', 'image', 1, 'k-1');
SELECT balance FROM credits.credits_consume(:'u2', 'image', 1, 'k-2');
SELECT balance, replayed FROM credits.credits_consume(:'u2', 'image', 1, 'k-1');
SELECT credits.balance(:'u2') AS balance, credits.daily_available(:'u2') AS daily_available;
ROLLBACK;
-- ... and a rollback leaves nothing behind.
SELECT count(*) AS accounts FROM credits.accounts WHERE user_id = :'u2';
SELECT count(*) AS entries FROM credits.ledger WHERE user_id = :'u2';
