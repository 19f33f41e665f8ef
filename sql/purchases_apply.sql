-- apply_purchase: packs become lots, subscriptions entitlements, exactly once
-- per (source, transaction_id); the effective plan follows the entitlements.
\set u1 'e1000000-0000-0000-0000-000000000001'
\set u2 'e1000000-0000-0000-0000-000000000002'
\set u3 'e1000000-0000-0000-0000-000000000003'
\set u4 'e1000000-0000-0000-0000-000000000004'
\set u5 'e1000000-0000-0000-0000-000000000005'

-- A pack: a `purchase` entry and a lot expiring pack_expires_after from now.
SELECT kind, amount, balance, daily_remaining, replayed
  FROM credits.apply_purchase(:'u1', 'credits_500', 'ap-1', 'app_store', now() - interval '1 minute');
SELECT l.amount, l.remaining, l.expires_at = e.created_at + interval '1 year' AS expires_in_a_year
  FROM credits.lots l JOIN credits.ledger e ON e.id = l.entry_id
 WHERE l.user_id = :'u1' AND e.kind = 'purchase';
SELECT kind, amount, reference, reason, metadata FROM credits.ledger WHERE user_id = :'u1' ORDER BY id;
-- The same transaction again: the first receipt, replayed; nothing credited twice.
SELECT kind, amount, balance, replayed,
       entry_id = (SELECT id FROM credits.ledger WHERE user_id = 'e1000000-0000-0000-0000-000000000001' AND kind = 'purchase') AS same_entry
  FROM credits.apply_purchase(:'u1', 'credits_500', 'ap-1', 'app_store', now() - interval '1 minute');
SELECT credits.balance(:'u1') AS balance;
-- ... also with other times (a retry that recomputed them): the transaction is the key.
SELECT kind, amount, replayed FROM credits.apply_purchase(:'u1', 'credits_500', 'ap-1', 'app_store', now());
-- The same transaction id from another source is another transaction.
SELECT kind, amount, balance, replayed FROM credits.apply_purchase(:'u1', 'credits_500', 'ap-1', 'stripe', now());
-- The same transaction for another user or another product: refused, nothing written.
SELECT state, detail - 'original_entry_id' AS detail, detail ? 'original_entry_id' AS names_entry
  FROM test.error_of(format($$SELECT credits.apply_purchase(%L, 'credits_500', 'ap-1', 'app_store', now())$$, :'u2'));
SELECT state, detail - 'original_entry_id' AS detail
  FROM test.error_of(format($$SELECT credits.apply_purchase(%L, 'credits_50', 'ap-1', 'app_store', now())$$, :'u1'));
SELECT test.rows_of(:'u2') AS rows_of_u2;
-- An explicit expires_at wins over the product's pack_expires_after; a pack without one never expires.
SELECT amount FROM credits.apply_purchase(:'u1', 'credits_50', 'ap-2', 'app_store', now(), now() + interval '2 days');
SELECT amount FROM credits.apply_purchase(:'u1', 'credits_50', 'ap-3', 'app_store', now());
SELECT l.amount, l.expires_at = e.created_at + interval '2 days' AS in_two_days, l.expires_at IS NULL AS never
  FROM credits.lots l JOIN credits.ledger e ON e.id = l.entry_id
 WHERE l.user_id = :'u1' AND e.reference IN ('ap-2', 'ap-3') ORDER BY e.id;
SELECT credits.balance(:'u1') AS balance;

-- A subscription: an entitlement; the receipt has no entry (entry_id NULL, kind 'entitlement').
SELECT entry_id, kind, amount, balance, daily_remaining, replayed
  FROM credits.apply_purchase(:'u2', 'studio_pro_monthly', 'ap-sub-1', 'stripe', now() - interval '1 minute', now() + interval '30 days');
SELECT * FROM test.entitlements_of(:'u2');
SELECT * FROM test.access_of(:'u2');
-- Premium is enforced in the database: no daily limit, operations recorded at list cost, charged 0.
SELECT c.amount, c.balance, c.daily_remaining FROM generate_series(1, 7) g, LATERAL credits.credits_consume(:'u2', 'image', 1 + 0 * g) c;
SELECT kind, amount, list_cost, day_ops FROM credits.ledger WHERE user_id = :'u2' AND kind = 'consume' LIMIT 1;
-- Replayed: the first receipt (balance and daily_remaining as they were then).
SELECT entry_id, kind, amount, balance, daily_remaining, replayed
  FROM credits.apply_purchase(:'u2', 'studio_pro_monthly', 'ap-sub-1', 'stripe', now() - interval '1 minute', now() + interval '30 days');
-- The next period (a new transaction) extends the same entitlement, never shortens it.
SELECT kind, replayed FROM credits.apply_purchase(:'u2', 'studio_pro_monthly', 'ap-sub-2', 'stripe', now(), now() + interval '60 days');
SELECT kind, replayed FROM credits.apply_purchase(:'u2', 'studio_pro_monthly', 'ap-sub-3', 'stripe', now(), now() + interval '10 days');
SELECT count(*) AS entitlements, max(expires_at) > now() + interval '59 days' AS ends_in_60_days,
       max(transaction_id) AS transaction_id
  FROM credits.entitlements WHERE user_id = :'u2';
SELECT (SELECT entitlement_until FROM credits.accounts WHERE user_id = :'u2')
     = (SELECT expires_at FROM credits.entitlements WHERE user_id = :'u2') AS cached_until_matches;
-- A lifetime purchase (no expires_at) gives the plan with no end.
SELECT kind FROM credits.apply_purchase(:'u3', 'studio_plus_monthly', 'ap-life-1', 'admin', now());
SELECT * FROM test.entitlements_of(:'u3');
SELECT * FROM test.access_of(:'u3');
SELECT entitlement_plan, entitlement_until FROM credits.accounts WHERE user_id = :'u3';

-- The best active entitlement wins: highest rank, then the latest end.  When
-- it lapses, reads fall back to the next best one at once, and the next write
-- caches it on the account (lazily, no cron).
SELECT kind FROM credits.apply_purchase(:'u4', 'studio_plus_monthly', 'ap-best-1', 'stripe', now(), now() + interval '30 days');
SELECT kind FROM credits.apply_purchase(:'u4', 'studio_pro_monthly', 'ap-best-2', 'stripe', now(), clock_timestamp() + interval '1 second');
SELECT * FROM test.access_of(:'u4');
SELECT pg_sleep(1.2);
SELECT entitlement_plan, entitlement_until < now() AS lapsed FROM credits.accounts WHERE user_id = :'u4';
SELECT * FROM test.access_of(:'u4');
SELECT credits.open_account(:'u4') AS created;
SELECT entitlement_plan, entitlement_until > now() + interval '29 days' AS until_plus_ends
  FROM credits.accounts WHERE user_id = :'u4';
SELECT * FROM credits.reconcile(:'u4');
-- ... and with none left, the base plan.
SELECT kind FROM credits.apply_purchase(:'u5', 'studio_pro_monthly', 'ap-short-1', 'stripe', now(), clock_timestamp() + interval '1 second');
SELECT * FROM test.access_of(:'u5');
SELECT pg_sleep(1.2);
SELECT * FROM test.access_of(:'u5');
SELECT credits.open_account(:'u5') AS created;
SELECT entitlement_plan, entitlement_until FROM credits.accounts WHERE user_id = :'u5';
-- The plan the account falls back to applies in full from that call on, its limits included:
-- here a cooldown of a minute between operations, which pro did not have.
\set u6 'e1000000-0000-0000-0000-000000000006'
INSERT INTO credits.plans (name, rank, cooldown_ms) VALUES ('plus_cooldown', 5, 60000);
INSERT INTO credits.products (product_id, plan) VALUES ('plus_cooldown_monthly', 'plus_cooldown');
SELECT kind FROM credits.apply_purchase(:'u6', 'plus_cooldown_monthly', 'ap-cool-1', 'stripe', now(), now() + interval '30 days');
SELECT kind FROM credits.apply_purchase(:'u6', 'studio_pro_monthly', 'ap-cool-2', 'stripe', now(), clock_timestamp() + interval '1 second');
SELECT amount FROM credits.credits_consume(:'u6', 'image');
SELECT amount FROM credits.credits_consume(:'u6', 'image');
SELECT pg_sleep(1.2);
SELECT state, detail->>'reason' AS reason, detail->>'plan' AS plan
  FROM test.error_of(format($$SELECT credits.credits_consume(%L, 'image')$$, :'u6'));

-- Bad input, each with its field; nothing written.
\set u9 'e1000000-0000-0000-0000-000000000009'
SELECT s.label, e.state, e.detail->>'field' AS field
  FROM (VALUES
    ('null user',        $$SELECT credits.apply_purchase(NULL, 'credits_50', 't', 'x', now())$$),
    ('null product',     $$SELECT credits.apply_purchase('e1000000-0000-0000-0000-000000000009', NULL, 't', 'x', now())$$),
    ('empty product',    $$SELECT credits.apply_purchase('e1000000-0000-0000-0000-000000000009', '', 't', 'x', now())$$),
    ('unknown product',  $$SELECT credits.apply_purchase('e1000000-0000-0000-0000-000000000009', 'gold_bars', 't', 'x', now())$$),
    ('null transaction', $$SELECT credits.apply_purchase('e1000000-0000-0000-0000-000000000009', 'credits_50', NULL, 'x', now())$$),
    ('empty transaction',$$SELECT credits.apply_purchase('e1000000-0000-0000-0000-000000000009', 'credits_50', '', 'x', now())$$),
    ('control char',     $$SELECT credits.apply_purchase('e1000000-0000-0000-0000-000000000009', 'credits_50', E't\n1', 'x', now())$$),
    ('long transaction', format($$SELECT credits.apply_purchase('e1000000-0000-0000-0000-000000000009', 'credits_50', %L, 'x', now())$$, repeat('t', 256))),
    ('null source',      $$SELECT credits.apply_purchase('e1000000-0000-0000-0000-000000000009', 'credits_50', 't', NULL, now())$$),
    ('long source',      format($$SELECT credits.apply_purchase('e1000000-0000-0000-0000-000000000009', 'credits_50', 't', %L, now())$$, repeat('s', 65))),
    ('null purchased_at',$$SELECT credits.apply_purchase('e1000000-0000-0000-0000-000000000009', 'credits_50', 't', 'x', NULL)$$),
    ('past expires_at',  $$SELECT credits.apply_purchase('e1000000-0000-0000-0000-000000000009', 'studio_pro_monthly', 't', 'x', now(), now() - interval '1 day')$$)
  ) AS s(label, stmt), LATERAL test.error_of(s.stmt) e;
SELECT test.rows_of(:'u9') AS rows_left_by_refusals,
       (SELECT count(*) FROM credits.purchases WHERE user_id = :'u9') AS purchases,
       (SELECT count(*) FROM credits.entitlements WHERE user_id = :'u9') AS entitlements;

-- A product restricted to one source is unknown to the others.
INSERT INTO credits.products (product_id, credits, source) VALUES ('web_only_pack', 10, 'stripe');
SELECT (test.error_of(format($$SELECT credits.apply_purchase(%L, 'web_only_pack', 'w-1', 'app_store', now())$$, :'u1'))).detail;
SELECT amount FROM credits.apply_purchase(:'u1', 'web_only_pack', 'w-1', 'stripe', now());

-- The cached entitlement is checked by reconcile(): tampering with it is reported.
SELECT * FROM credits.reconcile();
BEGIN;
UPDATE credits.accounts SET entitlement_plan = NULL, entitlement_until = NULL WHERE user_id = :'u2';
SELECT item, cached, derived IS NOT NULL AS derived FROM credits.reconcile(:'u2');
ROLLBACK;
SELECT * FROM credits.reconcile();
