-- Ledger kinds: one table (credits.entry_kinds(), the C table every reader
-- uses) that names exactly the kinds of credits.entry_kind; and delete_account
-- after a user's ledger holds every kind: the tombstone adds up.
\set u1 '00000000-0000-4000-8000-00000000e101'

-- The C table and the enum name the same kinds, in the same order.
SELECT k.kind, k.sign, k.bucket, k.billable
  FROM credits.entry_kinds() k ORDER BY k.kind::credits.entry_kind;
SELECT (SELECT array_agg(kind ORDER BY kind) FROM credits.entry_kinds())
     = (SELECT array_agg(e::text ORDER BY e::text) FROM unnest(enum_range(NULL::credits.entry_kind)) e)
       AS same_kinds;

-- One user, every kind.
INSERT INTO credits.plans (name, monthly_allocation) VALUES ('kinds_monthly', 4);
INSERT INTO credits.products (product_id, credits) VALUES ('kinds_pack', 20);
INSERT INTO credits.operations (name, cost, max_units) VALUES ('kinds_op', 2, 10);
SELECT credits.set_plan(:'u1', 'kinds_monthly');                                   -- grant (signup), allocation
SELECT kind FROM credits.apply_purchase(:'u1', 'kinds_pack', 'KP-1', 'app_store', now());   -- purchase
-- consume, refund, hold, then release + capture
SELECT entry_id AS charge_id FROM credits.credits_consume(:'u1', 'kinds_op', 3) \gset
SELECT kind FROM credits.refund(:charge_id, 2, 'partly');
SELECT entry_id AS hold_id FROM credits.reserve(:'u1', 'kinds_op', 2) \gset
SELECT kind FROM credits.capture(:hold_id, 1);
SELECT kind FROM credits.grant_credits(:'u1', 5, 'short', expires_at => clock_timestamp() + interval '100 ms');
SELECT pg_sleep(0.2);
SELECT credits.open_account(:'u1') AS created;                                           -- expire (lazily, by a write)
-- adjust: written by store refunds of packs (purchases_revenuecat); here a zero one, directly.
INSERT INTO credits.ledger (user_id, kind, amount, balance_after, actor)
SELECT :'u1', 'adjust', 0, balance, 'test' FROM credits.accounts WHERE user_id = :'u1';

SELECT (SELECT array_agg(DISTINCT kind::text ORDER BY kind::text) FROM credits.ledger WHERE user_id = :'u1')
     = (SELECT array_agg(kind ORDER BY kind) FROM credits.entry_kinds()) AS every_kind_used;
SELECT kind, sum(amount) FROM credits.ledger WHERE user_id = :'u1' GROUP BY kind ORDER BY kind;

SELECT deleted, entries, granted, spent, refunded, expired, adjusted, balance,
       balance = granted - spent + refunded - expired + adjusted AS adds_up
  FROM credits.delete_account(:'u1');
SELECT count(*) AS rows_left FROM credits.ledger WHERE user_id = :'u1';
