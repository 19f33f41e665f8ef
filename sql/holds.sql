-- Holds: reserve / capture / release, hold timeouts and the expire_holds sweep.
-- Users 00000000-0000-0000-0003-0000000000NN belong to this file.
\pset null '(null)'

-- The user's ledger, ids relative to the user's first entry.
CREATE FUNCTION pg_temp.history(u uuid)
RETURNS TABLE (n bigint, kind text, amount bigint, balance_after bigint, operation text,
               units bigint, list_cost bigint, day_ops smallint, ref_n bigint,
               reference text, reason text)
LANGUAGE sql AS $$
    SELECT l.id - f.first, l.kind::text, l.amount, l.balance_after, l.operation, l.units,
           l.list_cost, l.day_ops, l.ref_id - f.first, l.reference, l.reason
      FROM credits.ledger l,
           (SELECT min(id) AS first FROM credits.ledger WHERE user_id = u) f
     WHERE l.user_id = u
     ORDER BY l.id
$$;

INSERT INTO credits.plans (name, daily_limit, signup_bonus) VALUES ('holds_plain', NULL, 10);
INSERT INTO credits.operations (name, cost, max_units) VALUES ('holds_clip', 3, 10);

\set u1 '00000000-0000-0000-0003-000000000001'
\set u2 '00000000-0000-0000-0003-000000000002'
\set u3 '00000000-0000-0000-0003-000000000003'
\set u4 '00000000-0000-0000-0003-000000000004'
\set u5 '00000000-0000-0000-0003-000000000005'
\set u6 '00000000-0000-0000-0003-000000000006'
\set u7 '00000000-0000-0000-0003-000000000007'
\set u8 '00000000-0000-0000-0003-000000000008'
\set u9 '00000000-0000-0000-0003-000000000009'

-- ==== 1. reserve: the held credits leave the spendable balance, the operation counts today
SELECT kind, amount, balance, daily_remaining, replayed
  FROM credits.reserve(:'u1', 'image', 3, reference => 'job-1') \gset h1_
SELECT :'h1_kind' AS kind, :h1_amount AS amount, :h1_balance AS balance,
       :h1_daily_remaining AS daily_remaining, :'h1_replayed' AS replayed;
SELECT entry_id AS h1 FROM credits.reserve(:'u1', 'image', 3, idempotency_key => 'r-1') \gset
SELECT credits.balance(:'u1') AS balance, credits.daily_available(:'u1') AS daily_available;
-- the hold row: its id is the hold entry's id; it expires hold_timeout (900 s) after now()
SELECT h.operation, h.units, h.unit_cost, h.unit_charge, h.amount, h.status, h.settled_entry_id,
       h.expires_at = e.created_at + interval '900 seconds' AS expires_in_15_min,
       e.kind AS entry_kind, e.amount AS entry_amount
  FROM credits.holds h JOIN credits.ledger e ON e.id = h.id
 WHERE h.id = :h1;
-- next_hold_expiry: the earliest open hold
SELECT next_hold_expiry = (SELECT min(expires_at) FROM credits.holds
                            WHERE user_id = :'u1' AND status = 'open') AS next_hold_expiry_is_earliest
  FROM credits.accounts WHERE user_id = :'u1';

-- a retry with the same key returns the first receipt and reserves nothing more
SELECT entry_id = :h1 AS same_hold, kind, amount, balance, replayed
  FROM credits.reserve(:'u1', 'image', 3, idempotency_key => 'r-1');
SELECT count(*) AS holds FROM credits.holds WHERE user_id = :'u1';
-- the same key with other parameters: PT409 with the original entry id
SELECT state, message, detail FROM test.err(
    format($$SELECT credits.reserve(%L, 'image', 2, idempotency_key => 'r-1')$$, :'u1'),
    jsonb_build_object('h1', :h1));
-- held credits are not spendable: 0 left after two holds of 3
SELECT state, message, detail FROM test.err(
    format($$SELECT credits.credits_consume(%L, 'image', 1)$$, :'u1'));

-- ==== 2. capture fewer units than reserved: the rest returns, the operation counted once
SELECT kind, amount, balance, daily_remaining, replayed FROM credits.capture(:h1, 2);
SELECT * FROM pg_temp.history(:'u1');
SELECT status, settled_entry_id = (SELECT max(id) FROM credits.ledger WHERE user_id = :'u1')
         AS settled_by_capture
  FROM credits.holds WHERE id = :h1;
SELECT credits.balance(:'u1') AS balance, credits.daily_available(:'u1') AS daily_available;

-- ==== 3. a captured hold cannot be captured or released again (never charged twice)
SELECT state, message, detail, hint FROM test.err(format('SELECT credits.capture(%s)', :h1),
    jsonb_build_object('h1', :h1, 'capture', (SELECT max(id) FROM credits.ledger WHERE user_id = :'u1')));
SELECT state, message, detail FROM test.err(format('SELECT credits.release(%s)', :h1),
    jsonb_build_object('h1', :h1, 'capture', (SELECT max(id) FROM credits.ledger WHERE user_id = :'u1')));
SELECT credits.balance(:'u1') AS balance_unchanged;

-- ==== 4. capture with no units: all reserved units
SELECT entry_id AS h2 FROM credits.reserve(:'u2', 'holds_clip', 2, reference => 'clip-7') \gset
SELECT kind, amount, balance, daily_remaining FROM credits.capture(:h2);
SELECT * FROM pg_temp.history(:'u2');

-- ==== 5. release: everything comes back, and the operation no longer counts today
SELECT entry_id AS h3 FROM credits.reserve(:'u3', 'image', 4, reference => 'job-3') \gset
SELECT credits.balance(:'u3') AS balance, credits.daily_available(:'u3') AS daily_available;
SELECT kind, amount, balance, daily_remaining, replayed FROM credits.release(:h3);
SELECT credits.balance(:'u3') AS balance, credits.daily_available(:'u3') AS daily_available;
SELECT * FROM pg_temp.history(:'u3');
SELECT status, settled_entry_id = (SELECT max(id) FROM credits.ledger WHERE user_id = :'u3')
         AS settled_by_release
  FROM credits.holds WHERE id = :h3;
SELECT next_hold_expiry FROM credits.accounts WHERE user_id = :'u3';
-- released: no capture, no second release
SELECT state, message, detail FROM test.err(format('SELECT credits.capture(%s)', :h3),
    jsonb_build_object('h3', :h3, 'release', (SELECT max(id) FROM credits.ledger WHERE user_id = :'u3')));
SELECT state, message, detail FROM test.err(format('SELECT credits.release(%s)', :h3),
    jsonb_build_object('h3', :h3, 'release', (SELECT max(id) FROM credits.ledger WHERE user_id = :'u3')));

-- ==== 6. bad input
SELECT entry_id AS h4 FROM credits.reserve(:'u4', 'holds_clip', 2) \gset
SELECT state, message, detail FROM test.err(format('SELECT credits.capture(%s, 3)', :h4));
SELECT state, message, detail FROM test.err(format('SELECT credits.capture(%s, 0)', :h4));
SELECT state, message, detail FROM test.err(format('SELECT credits.capture(%s, -1)', :h4));
SELECT state, message, detail FROM test.err('SELECT credits.capture(NULL)');
SELECT state, message, detail FROM test.err('SELECT credits.release(NULL)');
SELECT state, message, detail FROM test.err('SELECT credits.capture(-5)');
SELECT state, message, detail FROM test.err('SELECT credits.release(9223372036854775807)');
-- a ledger entry id that is not a hold (u4's signup bonus)
SELECT state, message, detail FROM test.err(format('SELECT credits.capture(%s)',
    (SELECT min(id) FROM credits.ledger WHERE user_id = :'u4')));
SELECT state, message, detail FROM test.err(format($$SELECT credits.reserve(%L, 'no_such_op')$$, :'u4'));
SELECT state, message, detail FROM test.err(format($$SELECT credits.reserve(%L, 'image', 0)$$, :'u4'));
SELECT state, message, detail FROM test.err(format($$SELECT credits.reserve(%L, 'image', 11)$$, :'u4'));
SELECT state, message, detail FROM test.err(format($$SELECT credits.reserve(%L, 'image', NULL)$$, :'u4'));
SELECT state, message, detail FROM test.err('SELECT credits.reserve(NULL, ''image'')');
SELECT state, message, detail FROM test.err(format($$SELECT credits.reserve(%L, 'image', 1, reference => repeat('x', 256))$$, :'u4'));
SELECT state, message, detail FROM test.err(format($$SELECT credits.reserve(%L, 'image', 1, idempotency_key => E'a\tb')$$, :'u4'));
SELECT state, message, detail FROM test.err(format($$SELECT credits.reserve(%L, 'image', 1, metadata => '[1]')$$, :'u4'));
-- nothing of the refused calls was written, and the hold is still open and capturable
SELECT count(*) AS entries FROM credits.ledger WHERE user_id = :'u4';
SELECT kind, amount, balance FROM credits.capture(:h4, 1);

-- ==== 7. not enough credits to reserve: PT402, nothing written
SELECT state, message, detail FROM test.err(format($$SELECT credits.reserve(%L, 'holds_clip', 3)$$, :'u5'));
SELECT test.rows_of(:'u5') AS rows_written;

-- ==== 8. daily limit (free plan: 5 a day): reserves count, a release gives one back
SELECT i, (credits.reserve(:'u6', 'image', 1)).daily_remaining FROM generate_series(1, 5) i;
SELECT state, message FROM test.err(format($$SELECT credits.reserve(%L, 'image', 1)$$, :'u6'));
SELECT kind, amount, daily_remaining FROM credits.release(
    (SELECT min(id) FROM credits.holds WHERE user_id = :'u6'));
SELECT kind, amount, daily_remaining FROM credits.reserve(:'u6', 'image', 1);
-- a capture does not give the operation back
SELECT kind, amount, daily_remaining FROM credits.capture(
    (SELECT min(id) FROM credits.holds WHERE user_id = :'u6' AND status = 'open'));
SELECT credits.daily_available(:'u6') AS daily_available;

-- ==== 9. the price is fixed at reserve time
SET credits.default_plan = 'holds_plain';
SELECT entry_id AS h7 FROM credits.reserve(:'u7', 'holds_clip', 2) \gset
UPDATE credits.operations SET cost = 4 WHERE name = 'holds_clip';
SELECT kind, amount, balance FROM credits.capture(:h7, 1);
SELECT operation, units, list_cost FROM credits.ledger WHERE id = (SELECT max(id) FROM credits.ledger WHERE user_id = :'u7');
UPDATE credits.operations SET cost = 3 WHERE name = 'holds_clip';

-- ==== 10. bypass plan (pro): nothing is reserved or charged, the list cost is recorded
SELECT credits.set_plan(:'u8', 'pro');
SELECT entry_id AS h8, kind, amount, balance, daily_remaining FROM credits.reserve(:'u8', 'holds_clip', 2) \gset h8_
SELECT :'h8_kind' AS kind, :h8_amount AS amount, :h8_balance AS balance;
SELECT units, unit_cost, unit_charge, amount FROM credits.holds WHERE id = :h8_h8;
SELECT kind, amount, balance, daily_remaining FROM credits.capture(:h8_h8, 1);
SELECT entry_id AS h8b FROM credits.reserve(:'u8', 'holds_clip', 3) \gset
SELECT kind, amount, balance FROM credits.release(:h8b);
SELECT * FROM pg_temp.history(:'u8');

-- ==== 11. capture or release acts on the hold's own user only
SELECT entry_id AS h9 FROM credits.reserve(:'u9', 'image', 2) \gset
SELECT credits.balance(:'u1') AS u1_before;
SELECT user_id = :'u9' AS receipt_user_is_owner, kind, amount, balance FROM credits.capture(:h9);
SELECT credits.balance(:'u1') AS u1_after, credits.balance(:'u9') AS u9_after;

-- ==== 12. hold timeout: a capture after expires_at is refused, never charged
SET credits.hold_timeout = 1;
\set u10 '00000000-0000-0000-0003-000000000010'
SELECT entry_id AS h10 FROM credits.reserve(:'u10', 'holds_clip', 2, reference => 'late-job') \gset
SELECT h.expires_at = e.created_at + interval '1 second' AS expires_in_1s
  FROM credits.holds h JOIN credits.ledger e ON e.id = h.id WHERE h.id = :h10;
SELECT pg_sleep(1.1);
SELECT state, message, detail FROM test.err(format('SELECT credits.capture(%s)', :h10),
    jsonb_build_object('h10', :h10));
SELECT state, message, detail FROM test.err(format('SELECT credits.release(%s)', :h10),
    jsonb_build_object('h10', :h10));
-- the refused calls rolled back; a read already counts it released (and writes nothing),
-- the next write (here open_account) releases it lazily
SELECT credits.balance(:'u10') AS balance, credits.daily_available(:'u10') AS daily_available;
SELECT status FROM credits.holds WHERE id = :h10;
SELECT credits.open_account(:'u10') AS created;
SELECT * FROM pg_temp.history(:'u10');
SELECT status, settled_entry_id = (SELECT max(id) FROM credits.ledger WHERE user_id = :'u10') AS settled
  FROM credits.holds WHERE id = :h10;
SELECT next_hold_expiry FROM credits.accounts WHERE user_id = :'u10';
-- and it stays expired
SELECT state, message, detail FROM test.err(format('SELECT credits.capture(%s)', :h10),
    jsonb_build_object('h10', :h10, 'release', (SELECT max(id) FROM credits.ledger WHERE user_id = :'u10')));

-- ==== 13. credits.expire_holds(): the sweep for an admin or pg_cron
\set u11 '00000000-0000-0000-0003-000000000011'
\set u12 '00000000-0000-0000-0003-000000000012'
SELECT entry_id AS h11 FROM credits.reserve(:'u11', 'image', 1) \gset
SELECT entry_id AS h12a FROM credits.reserve(:'u12', 'image', 2) \gset
SELECT entry_id AS h12b FROM credits.reserve(:'u12', 'image', 3) \gset
RESET credits.hold_timeout;
SELECT entry_id AS h12c FROM credits.reserve(:'u12', 'image', 1) \gset
SELECT pg_sleep(1.1);
SELECT credits.expire_holds() >= 3 AS released_at_least_ours;
SELECT id - :h11 AS n, status FROM credits.holds WHERE user_id IN (:'u11', :'u12') ORDER BY id;
SELECT credits.expire_holds() AS released_again;
SELECT credits.balance(:'u11') AS u11, credits.balance(:'u12') AS u12;
SELECT user_id = :'u12' AS u12, next_hold_expiry = (SELECT expires_at FROM credits.holds WHERE id = :h12c) AS next_is_open_hold
  FROM credits.accounts WHERE user_id IN (:'u11', :'u12') ORDER BY user_id;
SELECT kind, amount, day_ops, reason FROM credits.ledger
 WHERE ref_id IN (:h11, :h12a, :h12b) ORDER BY id;

-- ==== 14. the hold's lot expired meanwhile: capture still works, the rest expires at once
\set u13 '00000000-0000-0000-0003-000000000013'
BEGIN;
SELECT kind, amount FROM credits.grant_credits(:'u13', 4, 'promo', expires_at => now() + interval '1 second');
SELECT entry_id AS h13 FROM credits.reserve(:'u13', 'image', 5) \gset
COMMIT;
-- the 4 promo credits (soonest to expire) and 1 of the signup bonus are held
SELECT l.amount, l.remaining, l.expires_at IS NOT NULL AS expires FROM credits.lots l WHERE user_id = :'u13' ORDER BY id;
SELECT pg_sleep(1.1);
SELECT kind, amount, balance FROM credits.capture(:h13, 2);
SELECT * FROM pg_temp.history(:'u13');
SELECT l.amount, l.remaining, l.expires_at IS NOT NULL AS expires FROM credits.lots l WHERE user_id = :'u13' ORDER BY id;
SELECT credits.balance(:'u13') AS balance;

-- the same for a release
\set u14 '00000000-0000-0000-0003-000000000014'
BEGIN;
SELECT kind, amount FROM credits.grant_credits(:'u14', 2, 'promo', expires_at => now() + interval '1 second');
SELECT entry_id AS h14 FROM credits.reserve(:'u14', 'image', 3) \gset
COMMIT;
SELECT pg_sleep(1.1);
SELECT kind, amount, balance FROM credits.release(:h14);
SELECT * FROM pg_temp.history(:'u14');
SELECT credits.balance(:'u14') AS balance;

-- ==== 15. the books balance
SELECT * FROM credits.reconcile() WHERE user_id::text LIKE '00000000-0000-0000-0003-%';
SELECT count(*) FILTER (WHERE item LIKE 'hold%') > 0 AS hold_checks_ran
  FROM credits.reconcile_checks() WHERE user_id::text LIKE '00000000-0000-0000-0003-%';
RESET credits.default_plan;

-- ==== 16. the hold checks can fail: tamper inside a transaction, look, roll back
\set u15 '00000000-0000-0000-0003-000000000015'
SELECT entry_id AS h15 FROM credits.reserve(:'u15', 'image', 2) \gset
SELECT entry_id AS h15b FROM credits.reserve(:'u15', 'image', 1) \gset
SELECT kind FROM credits.capture(:h15b);
BEGIN;
UPDATE credits.accounts SET next_hold_expiry = NULL WHERE user_id = :'u15';
UPDATE credits.holds SET status = 'released', settled_entry_id = 1 WHERE id = :h15;
UPDATE credits.holds SET status = 'open', settled_entry_id = NULL WHERE id = :h15b;
SELECT item, object_id - :h15 AS hold, cached IS NULL AS cached_null, derived IS NULL AS derived_null
  FROM credits.reconcile(:'u15') ORDER BY item, object_id;
ROLLBACK;
SELECT * FROM credits.reconcile(:'u15');
