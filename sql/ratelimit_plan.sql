-- The plan's own limit on billable operations (plans.rate_burst,
-- plans.rate_per_second, plans.cooldown_ms), applied by consume: PT429 with
-- retry_after_ms in the detail.  Waits depend on the wall clock, so they are
-- checked as ranges.
\set ub '00000000-0000-4000-8000-00000000a201'
\set uc '00000000-0000-4000-8000-00000000a202'
\set ux '00000000-0000-4000-8000-00000000a203'
\set uy '00000000-0000-4000-8000-00000000a204'
\set up '00000000-0000-4000-8000-00000000a205'
\set uf '00000000-0000-4000-8000-00000000a206'
\set un '00000000-0000-4000-8000-00000000a207'
\set ud '00000000-0000-4000-8000-00000000a208'

-- Runs a statement; returns its outcome instead of raising.
CREATE FUNCTION pg_temp.try(sql text, OUT state text, OUT message text, OUT detail jsonb,
                            OUT hint text)
LANGUAGE plpgsql AS $$
DECLARE
    d text;
BEGIN
    EXECUTE sql;
    state := 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
                            d = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    detail := d::jsonb;
END
$$;

INSERT INTO credits.operations (name, cost, max_units) VALUES ('rlp_image', 1, 10);
-- burst 2, then one per 1000 s
INSERT INTO credits.plans (name, signup_bonus, rate_burst, rate_per_second)
VALUES ('rlp_burst', 100, 2, 0.001);
-- one operation a minute
INSERT INTO credits.plans (name, signup_bonus, cooldown_ms) VALUES ('rlp_cool', 100, 60000);
-- both: the rate interval (100 s) is longer than the cooldown (30 s), and the other way round
INSERT INTO credits.plans (name, signup_bonus, rate_burst, rate_per_second, cooldown_ms)
VALUES ('rlp_rate_longer', 100, 1, 0.01, 30000),
       ('rlp_cool_longer', 100, 1, 0.01, 300000);
-- a premium plan (charges nothing) still has a rate limit
INSERT INTO credits.plans (name, bypass_credits, rate_burst, rate_per_second)
VALUES ('rlp_premium', true, 1, 0.001);
-- fast enough to wait out in a test: burst 1, one per 50 ms
INSERT INTO credits.plans (name, signup_bonus, rate_burst, rate_per_second) VALUES ('rlp_fast', 100, 1, 20);
-- a plan with a daily limit and a rate limit
INSERT INTO credits.plans (name, daily_limit, signup_bonus, rate_burst, rate_per_second)
VALUES ('rlp_daily', 1, 100, 1, 0.001);

SELECT credits.set_plan(:'ub', 'rlp_burst'), credits.set_plan(:'uc', 'rlp_cool'),
       credits.set_plan(:'ux', 'rlp_rate_longer'), credits.set_plan(:'uy', 'rlp_cool_longer'),
       credits.set_plan(:'up', 'rlp_premium'), credits.set_plan(:'uf', 'rlp_fast'),
       credits.set_plan(:'ud', 'rlp_daily');
-- set_plan touched the accounts (signup bonus of the default plan) but ran no operation.
SELECT count(*) AS limiter_state FROM credits.accounts
 WHERE user_id IN (:'ub', :'uc', :'ux', :'uy', :'up', :'uf', :'ud')
   AND (rate_tat IS NOT NULL OR last_operation_at IS NOT NULL);

-- Rate limit: a burst of 2 passes, the 3rd is refused for about 1000 s.
SELECT kind, amount, balance FROM credits.credits_consume(:'ub', 'rlp_image', idempotency_key => 'b1');
SELECT kind, amount, balance FROM credits.credits_consume(:'ub', 'rlp_image');
SELECT state, message, detail - 'retry_after_ms' AS detail,
       (detail->>'retry_after_ms')::bigint BETWEEN 990000 AND 1000000 AS waits_about_1000_s
  FROM pg_temp.try(format('SELECT credits.credits_consume(%L, %L)', :'ub', 'rlp_image'));
-- The hint tells the client what to do.
SELECT hint FROM pg_temp.try(format('SELECT credits.credits_consume(%L, %L, 1, %L)', :'ub', 'rlp_image', 'b3'));
-- The refusals wrote nothing: same balance, same ledger, same limiter state.
SELECT balance, (SELECT count(*) FROM credits.ledger l WHERE l.user_id = a.user_id) AS entries
  FROM credits.accounts a WHERE user_id = :'ub';
CREATE TEMP TABLE ub_state AS SELECT rate_tat, last_operation_at FROM credits.accounts WHERE user_id = :'ub';
SELECT state FROM pg_temp.try(format('SELECT credits.credits_consume(%L, %L)', :'ub', 'rlp_image'));
SELECT a.rate_tat = s.rate_tat AS same_tat, a.last_operation_at = s.last_operation_at AS same_last
  FROM credits.accounts a, ub_state s WHERE a.user_id = :'ub';
-- A replay of an idempotency key is never rate limited: same receipt.
SELECT kind, amount, balance, replayed FROM credits.credits_consume(:'ub', 'rlp_image', idempotency_key => 'b1');
-- ... but a reused key with other parameters is still a conflict (PT409), not PT429.
SELECT state, message FROM pg_temp.try(format('SELECT credits.credits_consume(%L, %L, 2, %L)', :'ub', 'rlp_image', 'b1'));
-- Other refusals come first: retry_after_ms is only promised when waiting helps.
SELECT state, message FROM pg_temp.try(format('SELECT credits.credits_consume(%L, %L, 10000)', :'ub', 'rlp_image'));
SELECT state, message FROM pg_temp.try(format('SELECT credits.credits_consume(%L, %L, 1)', :'ub', 'no_such_operation'));

-- Cooldown: one operation a minute.
SELECT kind, amount FROM credits.credits_consume(:'uc', 'rlp_image');
SELECT state, message, detail - 'retry_after_ms' AS detail,
       (detail->>'retry_after_ms')::bigint BETWEEN 59000 AND 60000 AS waits_about_60_s
  FROM pg_temp.try(format('SELECT credits.credits_consume(%L, %L)', :'uc', 'rlp_image'));

-- Both: the longer wait is the one reported.
SELECT kind FROM credits.credits_consume(:'ux', 'rlp_image');
SELECT state, message, detail->>'reason' AS reason,
       (detail->>'retry_after_ms')::bigint BETWEEN 99000 AND 100000 AS waits_about_100_s
  FROM pg_temp.try(format('SELECT credits.credits_consume(%L, %L)', :'ux', 'rlp_image'));
SELECT kind FROM credits.credits_consume(:'uy', 'rlp_image');
SELECT state, message, detail->>'reason' AS reason,
       (detail->>'retry_after_ms')::bigint BETWEEN 299000 AND 300000 AS waits_about_300_s
  FROM pg_temp.try(format('SELECT credits.credits_consume(%L, %L)', :'uy', 'rlp_image'));

-- A premium plan charges nothing and is still rate limited.
SELECT kind, amount, balance FROM credits.credits_consume(:'up', 'rlp_image', 5);
SELECT state, message FROM pg_temp.try(format('SELECT credits.credits_consume(%L, %L)', :'up', 'rlp_image'));

-- The daily limit refuses first when both apply (waiting retry_after_ms would not help).
SELECT kind, daily_remaining FROM credits.credits_consume(:'ud', 'rlp_image');
SELECT state, message, detail ? 'resets_at' AS has_resets_at
  FROM pg_temp.try(format('SELECT credits.credits_consume(%L, %L)', :'ud', 'rlp_image'));

-- Waiting retry_after_ms is enough: one per 50 ms.
SELECT kind FROM credits.credits_consume(:'uf', 'rlp_image');
SELECT state, message, (detail->>'retry_after_ms')::bigint BETWEEN 1 AND 50 AS waits_up_to_50_ms
  FROM pg_temp.try(format('SELECT credits.credits_consume(%L, %L)', :'uf', 'rlp_image'));
SELECT pg_sleep(0.06);
SELECT kind FROM credits.credits_consume(:'uf', 'rlp_image');

-- An admin lifting the limit takes effect at once.
UPDATE credits.plans SET rate_burst = NULL, rate_per_second = NULL WHERE name = 'rlp_burst';
SELECT kind, amount, balance FROM credits.credits_consume(:'ub', 'rlp_image');

-- A plan without limits: nothing refuses, however fast (the limiter only
-- notes the time of the last operation on the account row it saves anyway).
-- (The shipped plans have a rate limit: this one has none.)
INSERT INTO credits.plans (name, signup_bonus) VALUES ('rlp_none', 0);
SELECT credits.set_plan(:'un', 'rlp_none');
SELECT count(*) AS passed FROM generate_series(1, 5) g,
       LATERAL credits.credits_consume(:'un', 'rlp_image', 1, 'n' || g) r;
SELECT last_operation_at IS NOT NULL AS noted, rate_tat IS NULL AS no_bucket
  FROM credits.accounts WHERE user_id = :'un';

-- The books balance.
SELECT * FROM credits.reconcile() WHERE user_id IN (:'ub', :'uc', :'ux', :'uy', :'up', :'uf', :'un', :'ud');
