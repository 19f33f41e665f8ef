-- grant_credits, lots and their spending order, expiry, allocations, plans and time zones.
\set u1 'c1000000-0000-0000-0000-000000000001'
\set u2 'c1000000-0000-0000-0000-000000000002'
\set u3 'c1000000-0000-0000-0000-000000000003'
\set u4 'c1000000-0000-0000-0000-000000000004'

SELECT kind, amount, balance, replayed FROM credits.grant_credits(:'u1', 10, 'welcome pack');
SELECT kind, amount, balance, replayed FROM credits.grant_credits(:'u1', 5, 'promo', 'grant-1', now() + interval '2 days', 'promo-7', '{"campaign": "bf"}');
-- Replay and conflict.
SELECT kind, amount, balance, replayed FROM credits.grant_credits(:'u1', 5, 'promo', 'grant-1', (SELECT expires_at FROM credits.lots WHERE user_id = 'c1000000-0000-0000-0000-000000000001' AND expires_at IS NOT NULL), 'promo-7', '{"campaign": "bf"}');
SELECT state, detail ? 'original_entry_id' AS names_original FROM test.error_of($$SELECT credits.grant_credits('c1000000-0000-0000-0000-000000000001', 6, 'promo', 'grant-1')$$);
SELECT credits.balance(:'u1') AS balance;

-- Spending order: soonest expiry first, no expiry last, oldest first among equals.
SELECT credits.grant_credits(:'u1', 3, 'short promo', expires_at => now() + interval '1 day') IS NOT NULL;
SELECT amount FROM credits.credits_consume(:'u1', 'image', 4);
SELECT amount, remaining, expires_at IS NULL AS never_expires, expires_at - now() > interval '36 hours' AS later
  FROM credits.lots WHERE user_id = :'u1' ORDER BY id;
SELECT l.amount AS from_lot_of, e.lot_moves[i][2] AS delta
  FROM credits.ledger e, generate_subscripts(e.lot_moves, 1) i, credits.lots l
 WHERE e.user_id = :'u1' AND e.kind = 'consume' AND l.id = e.lot_moves[i][1]
 ORDER BY i;

-- Bad input, each with its field; nothing written.
SELECT s.label, e.state, e.detail->>'field' AS field
  FROM (VALUES
    ('null user',      $$SELECT credits.grant_credits(NULL, 1, 'x')$$),
    ('zero',           $$SELECT credits.grant_credits('c1000000-0000-0000-0000-000000000004', 0, 'x')$$),
    ('negative',       $$SELECT credits.grant_credits('c1000000-0000-0000-0000-000000000004', -5, 'x')$$),
    ('min bigint',     $$SELECT credits.grant_credits('c1000000-0000-0000-0000-000000000004', -9223372036854775808, 'x')$$),
    ('null amount',    $$SELECT credits.grant_credits('c1000000-0000-0000-0000-000000000004', NULL, 'x')$$),
    ('null reason',    $$SELECT credits.grant_credits('c1000000-0000-0000-0000-000000000004', 1, NULL)$$),
    ('reason 1001',    format($$SELECT credits.grant_credits('c1000000-0000-0000-0000-000000000004', 1, %L)$$, repeat('r', 1001))),
    ('expired',        $$SELECT credits.grant_credits('c1000000-0000-0000-0000-000000000004', 1, 'x', NULL, now() - interval '1 second')$$),
    ('bad key',        $$SELECT credits.grant_credits('c1000000-0000-0000-0000-000000000004', 1, 'x', E'\x01')$$)
  ) AS s(label, stmt), LATERAL test.error_of(s.stmt) e;
SELECT test.rows_of(:'u4') AS rows_left_by_refusals;

-- Overflow: the balance may reach the maximum exactly, one more credit is refused.
SELECT balance FROM credits.grant_credits(:'u2', 9223372036854775807 - 6, 'max');
SELECT state, message, detail->>'field' AS field FROM test.error_of($$SELECT credits.grant_credits('c1000000-0000-0000-0000-000000000002', 1, 'one too many')$$);
SELECT credits.balance(:'u2') AS balance_at_max;
SELECT state FROM test.error_of($$SELECT credits.grant_credits('c1000000-0000-0000-0000-000000000002', 9223372036854775807, 'way too many')$$);

-- Expiry: credits stop counting the moment they expire; the expire entry is written by the
-- next write (reads write nothing).
SELECT credits.grant_credits(:'u3', 4, 'flash sale', expires_at => clock_timestamp() + interval '1 second') IS NOT NULL;
SELECT credits.balance(:'u3') AS before_expiry;
SELECT pg_sleep(1.2);
-- A new transaction sees them gone at once...
SELECT credits.balance(:'u3') AS after_expiry;
SELECT kind, amount, balance_after FROM credits.ledger WHERE user_id = :'u3' ORDER BY id;
SELECT amount, balance FROM credits.credits_consume(:'u3', 'image');
SELECT kind, amount, balance_after FROM credits.ledger WHERE user_id = :'u3' ORDER BY id;

-- Monthly allocation: granted lazily once per period, expiring at the end of the local month.
INSERT INTO credits.plans (name, daily_limit, monthly_allocation) VALUES ('starter', 20, 100);
SELECT credits.set_plan(:'u4', 'starter');
SELECT credits.balance(:'u4') AS balance_with_allocation;
SELECT credits.balance(:'u4') AS balance_again;
SELECT kind, amount, reference = 'allocation:' || to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM') AS keyed_by_period
  FROM credits.ledger WHERE user_id = :'u4' ORDER BY id;
SELECT expires_at = date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '1 month' AS expires_at_month_end
  FROM credits.lots WHERE user_id = :'u4' AND amount = 100;
-- Switching to another allocating plan in the same period does not allocate twice.
INSERT INTO credits.plans (name, monthly_allocation, allocation_rollover) VALUES ('studio', 500, true);
SELECT credits.set_plan(:'u4', 'studio');
SELECT credits.balance(:'u4') AS balance_after_switch;
SELECT state, detail FROM test.error_of($$SELECT credits.set_plan('c1000000-0000-0000-0000-000000000004', 'platinum')$$);
SELECT state, detail FROM test.error_of($$SELECT credits.set_plan('c1000000-0000-0000-0000-000000000004', NULL)$$);

-- Time zones: IANA names only; the day boundary moves with the zone.  An
-- account that has counted operations today keeps its day: the new zone
-- takes effect at the next local midnight.
SELECT credits.balance(:'u1') > 0 AS has_credits, credits.daily_available(:'u1') < 5 AS counted_today;
SELECT credits.set_timezone(:'u1', 'Pacific/Kiritimati');
SELECT timezone, timezone_next,
       timezone_from = ((now() AT TIME ZONE 'UTC')::date + 1)::timestamp AT TIME ZONE 'UTC' AS from_next_midnight
  FROM credits.accounts WHERE user_id = :'u1';
-- Asking for the zone in effect cancels the change.
SELECT credits.set_timezone(:'u1', 'UTC');
SELECT timezone, timezone_next, timezone_from FROM credits.accounts WHERE user_id = :'u1';
-- With nothing counted today the zone changes at once.
\set u5 'c1000000-0000-0000-0000-000000000015'
SELECT credits.grant_credits(:'u5', 10, 'pack') IS NOT NULL AS granted;
SELECT credits.set_timezone(:'u5', 'Pacific/Kiritimati');
SELECT timezone, timezone_next, day = (now() AT TIME ZONE 'Pacific/Kiritimati')::date AS local_day FROM credits.accounts WHERE user_id = :'u5';
SELECT daily_remaining FROM credits.credits_consume(:'u5', 'image');
SELECT c.daily_remaining FROM generate_series(1, 3) g, LATERAL credits.credits_consume(:'u5', 'image', 1 + 0 * g) c ORDER BY g;
SELECT credits.daily_available(:'u5') AS one_left;
SELECT credits.credits_consume(:'u5', 'image') IS NOT NULL AS fifth;
SELECT state, (detail->>'resets_at')::timestamptz = ((now() AT TIME ZONE 'Pacific/Kiritimati')::date + 1)::timestamp AT TIME ZONE 'Pacific/Kiritimati' AS resets_at_local_midnight
  FROM test.error_of(format($$SELECT credits.credits_consume(%L, 'image')$$, :'u5'));
SELECT s.tz, e.state, e.detail->>'field' AS field
  FROM (VALUES ('Mars/Olympus_Mons'), ('EST+5'), (''), ('UTC; DROP TABLE credits.ledger')) AS s(tz),
       LATERAL test.error_of(format('SELECT credits.set_timezone(%L, %L)', 'c1000000-0000-0000-0000-000000000001', s.tz)) e;

-- NULLs and oversized values in the remaining functions.
SELECT s.label, e.state, e.detail->>'field' AS field
  FROM (VALUES
    ('balance null',          $$SELECT credits.balance(NULL)$$),
    ('daily_available null',  $$SELECT credits.daily_available(NULL)$$),
    ('set_plan null user',    $$SELECT credits.set_plan(NULL, 'free')$$),
    ('set_timezone null user', $$SELECT credits.set_timezone(NULL, 'UTC')$$),
    ('set_timezone null tz',  $$SELECT credits.set_timezone('c1000000-0000-0000-0000-000000000001', NULL)$$),
    ('set_timezone 65 chars', format($$SELECT credits.set_timezone('c1000000-0000-0000-0000-000000000001', %L)$$, repeat('Z', 65)))
  ) AS s(label, stmt), LATERAL test.error_of(s.stmt) e;

-- A misconfigured default plan is reported as such when a new account is created.
SET credits.default_plan = 'no_such_plan';
SELECT state, message, detail, hint FROM test.error_of($$SELECT credits.balance('c1000000-0000-0000-0000-000000000005')$$);
RESET credits.default_plan;

-- The ledger is append-only, even for its owner.
SELECT state, message FROM test.error_of('UPDATE credits.ledger SET amount = 1000');
SELECT state FROM test.error_of('DELETE FROM credits.ledger');
SELECT state FROM test.error_of('TRUNCATE credits.ledger');

SELECT * FROM credits.reconcile();
