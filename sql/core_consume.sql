-- credits_consume: the happy path, idempotency, limits and every refusal.
\set u1 'c0000000-0000-0000-0000-000000000001'
\set u2 'c0000000-0000-0000-0000-000000000002'
\set u3 'c0000000-0000-0000-0000-000000000003'

-- A new user reads as the first write will create the account: plan free, its signup
-- bonus (6) and 5 operations a day.  Reads write nothing: no account, no entry yet.
SELECT credits.balance(:'u1') AS balance, credits.daily_available(:'u1') AS daily_available;
SELECT plan, balance, day_count, timezone FROM credits.accounts WHERE user_id = :'u1';
SELECT kind, amount, balance_after, reason FROM credits.ledger WHERE user_id = :'u1';

-- One image costs 1 credit and counts one operation.
SELECT kind, amount, balance, daily_remaining, replayed
  FROM credits.credits_consume(:'u1', 'image');
-- units multiply the cost: 3 images = 3 credits, still one operation.
SELECT kind, amount, balance, daily_remaining, replayed
  FROM credits.credits_consume(:'u1', 'image', 3, reference => 'job-42', metadata => '{"model": "sdxl"}');
SELECT operation, units, list_cost, reference, metadata, day_ops, actor
  FROM credits.ledger WHERE user_id = :'u1' AND kind = 'consume' ORDER BY id;

-- Not enough credits: 2 left, 2 images of video seconds cost 10.
SELECT state, message, detail, hint
  FROM test.error_of($$SELECT credits.credits_consume('c0000000-0000-0000-0000-000000000001', 'video_second', 2)$$);

-- Idempotency: the same key and parameters return the first receipt, charging once.
SELECT entry_id AS first_id, balance AS first_balance, replayed
  FROM credits.credits_consume(:'u1', 'image', 1, 'req-1') \gset
SELECT entry_id = :first_id AS same_entry, balance = :first_balance AS same_balance, replayed
  FROM credits.credits_consume(:'u1', 'image', 1, 'req-1');
SELECT credits.balance(:'u1') AS balance_after_replay;
-- The same key with other parameters is a conflict that names the original entry.
SELECT state, detail->>'original_entry_id' = :'first_id' AS names_original, hint IS NOT NULL AS has_hint
  FROM test.error_of($$SELECT credits.credits_consume('c0000000-0000-0000-0000-000000000001', 'image', 2, 'req-1')$$);
SELECT state FROM test.error_of($$SELECT credits.credits_consume('c0000000-0000-0000-0000-000000000001', 'image', 1, 'req-1', 'other-ref')$$);
SELECT state FROM test.error_of($$SELECT credits.credits_consume('c0000000-0000-0000-0000-000000000001', 'image', 1, 'req-1', NULL, '{"x": 1}')$$);
-- Keys belong to one user: another user may use the same key.
SELECT kind, replayed FROM credits.credits_consume(:'u2', 'image', 1, 'req-1');

-- Daily limit: operations 4 and 5 pass, the 6th is refused with the limit and the reset time.
SELECT credits.grant_credits(:'u1', 100, 'top up') IS NOT NULL AS granted;
SELECT daily_remaining FROM credits.credits_consume(:'u1', 'image');
SELECT daily_remaining FROM credits.credits_consume(:'u1', 'image');
SELECT state, message, detail->'daily_limit' AS daily_limit,
       (detail->>'resets_at')::timestamptz = date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '1 day' AS resets_at_next_midnight
  FROM test.error_of($$SELECT credits.credits_consume('c0000000-0000-0000-0000-000000000001', 'image')$$);
SELECT credits.daily_available(:'u1') AS daily_available;
-- A replay is not a new operation: it still answers after the limit.
SELECT replayed FROM credits.credits_consume(:'u1', 'image', 1, 'req-1');

-- Premium plan: no daily limit, operations recorded at list cost, charged 0.
SELECT credits.set_plan(:'u1', 'pro');
SELECT kind, amount, daily_remaining FROM credits.credits_consume(:'u1', 'video_second', 10);
SELECT list_cost, amount FROM credits.ledger WHERE user_id = :'u1' ORDER BY id DESC LIMIT 1;
SELECT credits.daily_available(:'u1') AS daily_available_pro;

-- An operation that needs a plan the user lacks.
INSERT INTO credits.operations (name, cost, required_plan) VALUES ('upscale_4k', 2, 'pro');
SELECT state, detail FROM test.error_of($$SELECT credits.credits_consume('c0000000-0000-0000-0000-000000000002', 'upscale_4k')$$);
SELECT amount FROM credits.credits_consume(:'u1', 'upscale_4k');

-- Bad input: each names its field, and none leaves a trace for a new user.
SELECT s.label, e.state, e.detail->>'field' AS field
  FROM (VALUES
    ('null user',        $$SELECT credits.credits_consume(NULL, 'image')$$),
    ('null operation',   $$SELECT credits.credits_consume('c0000000-0000-0000-0000-000000000003', NULL)$$),
    ('unknown op',       $$SELECT credits.credits_consume('c0000000-0000-0000-0000-000000000003', 'teleport')$$),
    ('zero units',       $$SELECT credits.credits_consume('c0000000-0000-0000-0000-000000000003', 'image', 0)$$),
    ('negative units',   $$SELECT credits.credits_consume('c0000000-0000-0000-0000-000000000003', 'image', -1)$$),
    ('null units',       $$SELECT credits.credits_consume('c0000000-0000-0000-0000-000000000003', 'image', NULL)$$),
    ('too many units',   $$SELECT credits.credits_consume('c0000000-0000-0000-0000-000000000003', 'image', 11)$$),
    ('empty key',        $$SELECT credits.credits_consume('c0000000-0000-0000-0000-000000000003', 'image', 1, '')$$),
    ('control char key', $$SELECT credits.credits_consume('c0000000-0000-0000-0000-000000000003', 'image', 1, E'a\nb')$$),
    ('tab key',          $$SELECT credits.credits_consume('c0000000-0000-0000-0000-000000000003', 'image', 1, E'a\tb')$$),
    ('key 256 chars',    format($$SELECT credits.credits_consume('c0000000-0000-0000-0000-000000000003', 'image', 1, %L)$$, repeat('k', 256))),
    ('key 256 é',        format($$SELECT credits.credits_consume('c0000000-0000-0000-0000-000000000003', 'image', 1, %L)$$, repeat('é', 256))),
    ('key ends in ZWSP', format($$SELECT credits.credits_consume('c0000000-0000-0000-0000-000000000003', 'image', 1, %L)$$, 'request-42' || chr(8203))),
    ('key ends in DEL',  format($$SELECT credits.credits_consume('c0000000-0000-0000-0000-000000000003', 'image', 1, %L)$$, 'request-42' || chr(127))),
    ('reference 256',    format($$SELECT credits.credits_consume('c0000000-0000-0000-0000-000000000003', 'image', 1, NULL, %L)$$, repeat('r', 256))),
    ('metadata array',   $$SELECT credits.credits_consume('c0000000-0000-0000-0000-000000000003', 'image', 1, NULL, NULL, '[1]')$$),
    ('metadata scalar',  $$SELECT credits.credits_consume('c0000000-0000-0000-0000-000000000003', 'image', 1, NULL, NULL, '"x"')$$),
    ('metadata 9 KiB',   format($$SELECT credits.credits_consume('c0000000-0000-0000-0000-000000000003', 'image', 1, NULL, NULL, %L)$$, jsonb_build_object('blob', repeat('x', 9000))))
  ) AS s(label, stmt), LATERAL test.error_of(s.stmt) e;
SELECT test.rows_of(:'u3') AS rows_left_by_refusals;

-- Limits are inclusive: a 255-character key and reference are fine (multibyte counts as characters).
SELECT kind FROM credits.credits_consume(:'u3', 'image', 1, repeat('é', 255), repeat('r', 255));

-- A disabled operation.
UPDATE credits.operations SET enabled = false WHERE name = 'upscale_4k';
SELECT state, message, detail FROM test.error_of($$SELECT credits.credits_consume('c0000000-0000-0000-0000-000000000001', 'upscale_4k')$$);

-- cost x units overflow is refused, not wrapped.
INSERT INTO credits.operations (name, cost, max_units) VALUES ('priceless', 9223372036854775807, 10);
SELECT state, message FROM test.error_of($$SELECT credits.credits_consume('c0000000-0000-0000-0000-000000000001', 'priceless', 2)$$);
-- ... and one unit at the maximum price is simply more than anyone has.
SELECT state, detail FROM test.error_of($$SELECT credits.credits_consume('c0000000-0000-0000-0000-000000000002', 'priceless', 1)$$);

-- Hostile strings are stored as data.
SELECT entry_id AS hostile_id FROM credits.credits_consume(:'u2', 'image', 1, NULL, $$'); DROP TABLE credits.ledger; --$$) \gset
SELECT reference FROM credits.ledger WHERE id = :hostile_id;

-- The books balance.
SELECT * FROM credits.reconcile();
