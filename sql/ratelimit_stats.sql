-- Denial counters (credits.stats, credits.stats_reset) and the throttled
-- denial log.  The test cluster preloads credits (shared_preload_libraries),
-- so the counters are in shared memory: scope 'cluster'.
\set u1 '00000000-0000-4000-8000-00000000a301'
\set u2 '00000000-0000-4000-8000-00000000a302'
\set u3 '00000000-0000-4000-8000-00000000a303'
\set u4 '00000000-0000-4000-8000-00000000a304'

CREATE FUNCTION pg_temp.try(sql text, OUT state text, OUT message text)
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    state := 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT;
END
$$;

INSERT INTO credits.operations (name, cost, max_units, required_plan)
VALUES ('rls_image', 1, 10, NULL), ('rls_video', 100, 10, NULL), ('rls_pro_only', 1, 10, 'pro');
INSERT INTO credits.plans (name, rate_burst, rate_per_second, cooldown_ms)
VALUES ('rls_rate', 1, 0.001, 0), ('rls_cool', NULL, NULL, 60000);
SELECT credits.set_plan(:'u3', 'rls_rate'), credits.set_plan(:'u4', 'rls_cool');

SELECT credits.stats_reset();
SELECT * FROM credits.stats;

-- One refusal of each kind.
SELECT * FROM pg_temp.try(format('SELECT credits.credits_consume(%L, %L)', :'u1', 'rls_video'));
SELECT count(*) FROM generate_series(1, 5) g, LATERAL credits.credits_consume(:'u2', 'rls_image', 1, 'd' || g) r;
SELECT * FROM pg_temp.try(format('SELECT credits.credits_consume(%L, %L)', :'u2', 'rls_image'));
SELECT kind FROM credits.credits_consume(:'u1', 'rls_image', 1, 'same-key');
SELECT * FROM pg_temp.try(format('SELECT credits.credits_consume(%L, %L, 2, %L)', :'u1', 'rls_image', 'same-key'));
SELECT kind FROM credits.grant_credits(:'u1', 5, 'welcome', 'grant-key');
SELECT * FROM pg_temp.try(format('SELECT credits.grant_credits(%L, 6, %L, %L)', :'u1', 'welcome', 'grant-key'));
SELECT * FROM pg_temp.try(format('SELECT credits.credits_consume(%L, %L)', :'u1', 'rls_pro_only'));
SELECT kind FROM credits.credits_consume(:'u3', 'rls_image');
SELECT * FROM pg_temp.try(format('SELECT credits.credits_consume(%L, %L)', :'u3', 'rls_image'));
SELECT kind FROM credits.credits_consume(:'u4', 'rls_image');
SELECT * FROM pg_temp.try(format('SELECT credits.credits_consume(%L, %L)', :'u4', 'rls_image'));
-- credits.rate_limit saying no is counted too (reason throttled, operation = the action).
SELECT allowed FROM generate_series(1, 3) g, LATERAL credits.rate_limit(:'u1', 'rls_login', 1 + 0 * g, 0.001) r;
-- Holds and refunds refuse too (PT409): settling a hold twice, refunding more than was charged.
SELECT entry_id AS hold_id FROM credits.reserve(:'u1', 'rls_image') \gset
SELECT kind FROM credits.release(:hold_id);
SELECT * FROM pg_temp.try(format('SELECT credits.release(%s)', :hold_id));
SELECT entry_id AS charge_id FROM credits.credits_consume(:'u1', 'rls_image', 1, 'same-key') \gset
SELECT * FROM pg_temp.try(format('SELECT credits.refund(%s, 2, %L)', :charge_id, 'too much'));

SELECT reason, operation, denials, last_denied_at > now() - interval '1 hour' AS recent, scope
  FROM credits.stats;

-- A refusal aborts its transaction; its count stays.
BEGIN;
SELECT credits.credits_consume(:'u1', 'rls_video');
ROLLBACK;
SELECT reason, operation, denials FROM credits.stats WHERE reason = 'insufficient_credits';

-- Replays are not denials.
SELECT replayed FROM credits.credits_consume(:'u1', 'rls_image', 1, 'same-key');
SELECT sum(denials) AS denials FROM credits.stats;

-- The log: one line per denial at credits.log_denials, at most
-- credits.log_denials_per_second a second, the rest summed up in the next
-- line that gets through.  (LOG lines are shown here via client_min_messages.)
SHOW credits.log_denials;
SHOW credits.log_denials_per_second;
SET client_min_messages = log;
SET credits.log_denials_per_second = 1;
SELECT credits.stats_reset();
SELECT state FROM pg_temp.try(format('SELECT credits.credits_consume(%L, %L)', :'u1', 'rls_video'));
SELECT state FROM pg_temp.try(format('SELECT credits.credits_consume(%L, %L)', :'u1', 'rls_video'));
SELECT state FROM pg_temp.try(format('SELECT credits.credits_consume(%L, %L)', :'u1', 'rls_video'));
SELECT pg_sleep(1.2);
SELECT state FROM pg_temp.try(format('SELECT credits.credits_consume(%L, %L)', :'u1', 'rls_video'));
RESET client_min_messages;
-- All four were counted, logged or not.
SELECT reason, operation, denials FROM credits.stats;
-- Levels: warning reaches the client too; debug and off do not show here.
SET credits.log_denials = warning;
SELECT credits.stats_reset();
SELECT state FROM pg_temp.try(format('SELECT credits.credits_consume(%L, %L)', :'u1', 'rls_video'));
SET credits.log_denials = debug;
SELECT state FROM pg_temp.try(format('SELECT credits.credits_consume(%L, %L)', :'u1', 'rls_video'));
SET credits.log_denials = off;
SET client_min_messages = log;
SELECT state FROM pg_temp.try(format('SELECT credits.credits_consume(%L, %L)', :'u1', 'rls_video'));
RESET client_min_messages;
SELECT reason, operation, denials FROM credits.stats;
RESET credits.log_denials;
RESET credits.log_denials_per_second;
-- Bad settings.
SET credits.log_denials = loud;
SET credits.log_denials_per_second = 0;

-- Long operation names are cut to 63 bytes (on a character boundary).
SELECT credits.stats_reset();
SELECT count(*) FILTER (WHERE NOT allowed) AS refused
  FROM generate_series(1, 2) g, LATERAL credits.rate_limit(:'u1', repeat('x', 100), 1 + 0 * g, 0.001) r;
SELECT count(*) FILTER (WHERE NOT allowed) AS refused
  FROM generate_series(1, 2) g, LATERAL credits.rate_limit(:'u1', repeat('é', 100), 1 + 0 * g, 0.001) r;
SELECT length(operation) AS chars, octet_length(operation) AS bytes, denials FROM credits.stats ORDER BY bytes;

-- At most 256 (reason, operation) pairs are kept; the rest count under '(other)'.
SELECT credits.stats_reset();
SELECT count(*) FILTER (WHERE NOT r.allowed) AS refused
  FROM generate_series(1, 300) g, generate_series(1, 2) h,
       LATERAL credits.rate_limit_at(:'u1', 'rls_many_' || g, 1, 1, '2030-01-01'::timestamptz + 0 * h * interval '1 s') r;
SELECT operation = '(other)' AS other, count(*) AS pairs, sum(denials) AS denials
  FROM credits.stats GROUP BY 1 ORDER BY 1;

SELECT credits.stats_reset();
SELECT count(*) AS pairs FROM credits.stats;
SELECT * FROM credits.reconcile() WHERE user_id IN (:'u1', :'u2', :'u3', :'u4');
