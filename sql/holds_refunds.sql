-- Refunds of consume and capture charges.
-- Users 00000000-0000-0000-0003-0000000001NN belong to this file.
\pset null '(null)'

CREATE FUNCTION pg_temp.history(u uuid)
RETURNS TABLE (n bigint, kind text, amount bigint, balance_after bigint, operation text,
               day_ops smallint, ref_n bigint, lot_moves text, reference text, reason text)
LANGUAGE sql AS $$
    SELECT l.id - f.first, l.kind::text, l.amount, l.balance_after, l.operation,
           l.day_ops, l.ref_id - f.first,
           (SELECT string_agg(format('lot%s%s%s', m.lot_id - fl.first,
                                     CASE WHEN m.delta > 0 THEN '+' ELSE '' END, m.delta), ' '
                              ORDER BY i)
              FROM generate_subscripts(l.lot_moves, 1) i,
                   LATERAL (SELECT l.lot_moves[i][1] AS lot_id, l.lot_moves[i][2] AS delta) m),
           l.reference, l.reason
      FROM credits.ledger l,
           (SELECT min(id) AS first FROM credits.ledger WHERE user_id = u) f,
           (SELECT min(id) AS first FROM credits.lots WHERE user_id = u) fl
     WHERE l.user_id = u
     ORDER BY l.id
$$;

INSERT INTO credits.plans (name, daily_limit, signup_bonus) VALUES ('refunds_plain', 10, 10);
INSERT INTO credits.operations (name, cost, max_units) VALUES ('refunds_clip', 3, 10);
SET credits.default_plan = 'refunds_plain';

\set u1 '00000000-0000-0000-0003-000000000101'
\set u2 '00000000-0000-0000-0003-000000000102'
\set u3 '00000000-0000-0000-0003-000000000103'
\set u4 '00000000-0000-0000-0003-000000000104'
\set u5 '00000000-0000-0000-0003-000000000105'
\set u6 '00000000-0000-0000-0003-000000000106'
\set u7 '00000000-0000-0000-0003-000000000107'

-- ==== 1. a full refund of a consume: credits and today's operation come back
SELECT entry_id AS c1 FROM credits.credits_consume(:'u1', 'refunds_clip', 2, reference => 'gen-1') \gset
SELECT credits.balance(:'u1') AS balance, credits.daily_available(:'u1') AS daily_available;
SELECT kind, amount, balance, daily_remaining, replayed
  FROM credits.refund(:c1, reason => 'generation failed');
SELECT credits.balance(:'u1') AS balance, credits.daily_available(:'u1') AS daily_available;
SELECT * FROM pg_temp.history(:'u1');
-- nothing is left to refund: PT409, with or without an amount
SELECT state, message, detail, hint FROM test.err(format('SELECT credits.refund(%s, reason => ''test'')', :c1),
    jsonb_build_object('c1', :c1));
SELECT state, message, detail FROM test.err(format('SELECT credits.refund(%s, 1, ''test'')', :c1),
    jsonb_build_object('c1', :c1));

-- ==== 2. partial refunds up to the full charge; only the last gives the operation back
SELECT entry_id AS c2 FROM credits.credits_consume(:'u2', 'refunds_clip', 3) \gset
SELECT kind, amount, balance, daily_remaining FROM credits.refund(:c2, 4, 'two of three clips failed');
SELECT kind, amount, balance, daily_remaining FROM credits.refund(:c2, 2, 'one clip failed');
SELECT state, message, detail FROM test.err(format('SELECT credits.refund(%s, 4, ''test'')', :c2),
    jsonb_build_object('c2', :c2));
SELECT kind, amount, balance, daily_remaining FROM credits.refund(:c2, 3, 'the last clip failed too');
SELECT state, message, detail FROM test.err(format('SELECT credits.refund(%s, 1, ''test'')', :c2),
    jsonb_build_object('c2', :c2));
SELECT * FROM pg_temp.history(:'u2');

-- ==== 3. bad input
SELECT state, message, detail FROM test.err(format('SELECT credits.refund(%s, -1, ''test'')', :c2));
SELECT state, message, detail FROM test.err(format('SELECT credits.refund(%s, 0, ''test'')', :c2));
SELECT state, message, detail FROM test.err('SELECT credits.refund(NULL)');
SELECT state, message, detail FROM test.err(format('SELECT credits.refund(%s, 1)', :c2));
SELECT state, message, detail FROM test.err('SELECT credits.refund(-7, reason => ''test'')');
SELECT state, message, detail FROM test.err('SELECT credits.refund(9223372036854775807, 1, ''test'')');
SELECT state, message, detail FROM test.err(format('SELECT credits.refund(%s, reason => repeat(''r'', 1001))', :c2));
SELECT state, message, detail FROM test.err(format('SELECT credits.refund(%s, reason => ''test'', idempotency_key => '''')', :c2));
-- only charges are refundable: a grant, a hold, a release, a refund, an expire
SELECT state, message, detail FROM test.err(format('SELECT credits.refund(%s, reason => ''test'')',
    (SELECT min(id) FROM credits.ledger WHERE user_id = :'u2')));
SELECT entry_id AS h3 FROM credits.reserve(:'u3', 'refunds_clip', 2) \gset
SELECT state, message, detail FROM test.err(format('SELECT credits.refund(%s, reason => ''test'')', :h3));
SELECT kind FROM credits.release(:h3);
SELECT state, message, detail FROM test.err(format('SELECT credits.refund(%s, reason => ''test'')',
    (SELECT max(id) FROM credits.ledger WHERE user_id = :'u3')));
SELECT state, message, detail FROM test.err(format('SELECT credits.refund(%s, reason => ''test'')',
    (SELECT max(id) FROM credits.ledger WHERE user_id = :'u2')));
-- a consume that charged nothing (bypass plan)
SELECT credits.set_plan(:'u4', 'pro');
SELECT entry_id AS c4 FROM credits.credits_consume(:'u4', 'refunds_clip', 1) \gset
SELECT state, message, detail FROM test.err(format('SELECT credits.refund(%s, reason => ''test'')', :c4));
-- none of the refused calls wrote anything
SELECT count(*) AS u2_entries FROM credits.ledger WHERE user_id = :'u2';

-- ==== 4. idempotent by key
SELECT entry_id AS c5 FROM credits.credits_consume(:'u5', 'refunds_clip', 2) \gset
SELECT entry_id AS r5, kind, amount, balance, replayed
  FROM credits.refund(:c5, 2, 'partial', 'refund-5a') \gset r5_
SELECT :'r5_kind' AS kind, :r5_amount AS amount, :r5_balance AS balance, :'r5_replayed' AS replayed;
SELECT entry_id = :r5_r5 AS same_entry, kind, amount, balance, replayed
  FROM credits.refund(:c5, 2, 'partial', 'refund-5a');
-- the key with other parameters: PT409 naming the original refund
SELECT state, message, detail FROM test.err(
    format($$SELECT credits.refund(%s, 3, 'partial', 'refund-5a')$$, :c5),
    jsonb_build_object('r5', :r5_r5));
SELECT state, message, detail FROM test.err(
    format($$SELECT credits.refund(%s, 2, 'other reason', 'refund-5a')$$, :c5),
    jsonb_build_object('r5', :r5_r5));
SELECT state, message, detail FROM test.err(
    format($$SELECT credits.refund(%s, NULL, 'partial', 'refund-5a')$$, :c5),
    jsonb_build_object('r5', :r5_r5));
-- refund everything that is left, then replay that: still the first receipt, not PT409
SELECT kind, amount, balance, daily_remaining, replayed FROM credits.refund(:c5, NULL, 'rest', 'refund-5b');
SELECT kind, amount, balance, daily_remaining, replayed FROM credits.refund(:c5, NULL, 'rest', 'refund-5b');
-- a key of another user's request is not a replay for this user
SELECT entry_id AS c1b FROM credits.credits_consume(:'u1', 'image', 1) \gset
SELECT kind, amount, replayed FROM credits.refund(:c1b, NULL, 'rest', 'refund-5b');
SELECT count(*) AS refunds_of_c5 FROM credits.ledger WHERE ref_id = :c5 AND kind = 'refund';

-- ==== 5. a capture is refundable (the hold's day counts); the refund is of the capture only
SELECT entry_id AS h6 FROM credits.reserve(:'u6', 'refunds_clip', 3, reference => 'video-6') \gset
SELECT entry_id AS cap6, kind, amount, balance, daily_remaining FROM credits.capture(:h6, 2) \gset cap6_
SELECT :cap6_amount AS capture_amount, :cap6_balance AS balance, :cap6_daily_remaining AS daily_remaining;
SELECT state, message, detail FROM test.err(format('SELECT credits.refund(%s, 7, ''test'')', :cap6_cap6),
    jsonb_build_object('cap6', :cap6_cap6));
SELECT kind, amount, balance, daily_remaining FROM credits.refund(:cap6_cap6, reason => 'upscale failed');
SELECT * FROM pg_temp.history(:'u6');

-- ==== 6. lots: a partial refund goes back to the lot burnt last; into an expired lot it expires at once
-- u7: signup bonus 10 (no expiry) and a promo of 4 expiring in 1 s, granted and spent together
BEGIN;
SELECT kind, amount FROM credits.grant_credits(:'u7', 4, 'promo', expires_at => now() + interval '1 second');
SELECT entry_id AS c7 FROM credits.credits_consume(:'u7', 'refunds_clip', 2) \gset
COMMIT;
-- the charge of 6 burnt the promo (soonest expiry) first, then 2 of the bonus
SELECT id - (SELECT min(id) FROM credits.lots WHERE user_id = :'u7') AS lot, amount, remaining
  FROM credits.lots WHERE user_id = :'u7' ORDER BY id;
-- a refund of 1 goes to the bonus lot (burnt last)
SELECT kind, amount, balance, daily_remaining FROM credits.refund(:c7, 1, 'partial');
SELECT id - (SELECT min(id) FROM credits.lots WHERE user_id = :'u7') AS lot, amount, remaining
  FROM credits.lots WHERE user_id = :'u7' ORDER BY id;
SELECT pg_sleep(1.1);
-- the promo has expired: the rest of the refund lands in it and expires in the same call
SELECT kind, amount, balance, daily_remaining FROM credits.refund(:c7, reason => 'rest');
SELECT credits.balance(:'u7') AS balance;
SELECT * FROM pg_temp.history(:'u7');
SELECT id - (SELECT min(id) FROM credits.lots WHERE user_id = :'u7') AS lot, amount, remaining
  FROM credits.lots WHERE user_id = :'u7' ORDER BY id;

-- ==== 7. the books balance
SELECT * FROM credits.reconcile() WHERE user_id::text LIKE '00000000-0000-0000-0003-%';
SELECT count(*) FILTER (WHERE item = 'refunded') AS refunded_checks
  FROM credits.reconcile_checks() WHERE user_id::text LIKE '00000000-0000-0000-0003-0000000001%';
RESET credits.default_plan;
