-- bench/seed.sql: users with realistic history, in credits' own tables and in
-- the two baselines' tables (bench/baselines.sql), with the same data.
--
-- psql variables (bench/run.sh sets them):
--   users      regular users 1..users (low-contention consume spreads over them)
--   history    ledger entries each user already has from past days
--   veteran_every, veteran_history
--              every veteran_every-th user has veteran_history past entries instead
--   hot_users  users 1..hot_users are the hot rows (all clients on them)
--   hot_today  entries the hot users already have TODAY (they are busy)
--   deep_today entries the "deep" user (users+2) has today; the "shallow"
--              user (users+1) has 10 today; both also have `history`
--   part       which part to load: credits | floor | plpgsql | accounts
--              (run.sh loads the three ledgers in parallel sessions)
--
-- Every user has two lots: a signup bonus of 6 (already spent) and a large
-- purchase; every past consume burnt 1 credit from the oldest lot with credits
-- left, exactly as credits_consume would have.  The rows satisfy every
-- invariant that credits.reconcile() checks (run.sh checks a sample).
--
-- Ids are explicit (OVERRIDING SYSTEM VALUE): user n's entries are
-- first_id .. first_id + 1 + n_hist + n_today, its lots 2n-1 (bonus) and 2n.

\set ON_ERROR_STOP 1
SET synchronous_commit = off;
SET maintenance_work_mem = '256MB';

\if :{?part}
\else
\set part setup
\endif

SELECT :'part' = 'setup' AS is_setup, :'part' = 'credits' AS is_credits,
       :'part' = 'floor' AS is_floor, :'part' = 'plpgsql' AS is_plpgsql,
       :'part' = 'finish' AS is_finish \gset

\if :is_setup
-- The users to seed, one row each, with where their entries start.
DROP TABLE IF EXISTS bench.seed_users;
CREATE TABLE bench.seed_users AS
SELECT n, bench.uid(n) AS user_id,
       CASE WHEN :veteran_every > 0 AND n % :veteran_every = 0 AND n <= :users
            THEN :veteran_history ELSE :history END::int AS n_hist,
       CASE WHEN n <= :hot_users THEN :hot_today
            WHEN n = :users + 1 THEN 10
            WHEN n = :users + 2 THEN :deep_today
            ELSE 0 END::int AS n_today
  FROM generate_series(1, :users + 2) n;
ALTER TABLE bench.seed_users ADD first_id bigint, ADD grant_amount bigint, ADD consumed bigint;
UPDATE bench.seed_users s
   SET first_id = 1 + coalesce(c.before, 0),
       grant_amount = 1000000000,
       consumed = s.n_hist + s.n_today
  FROM (SELECT n, sum(2 + n_hist + n_today) OVER (ORDER BY n ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before
          FROM bench.seed_users) c
 WHERE c.n = s.n;
ALTER TABLE bench.seed_users ADD PRIMARY KEY (n);
ANALYZE bench.seed_users;

-- The bench plan: a daily limit that is checked on every call but never
-- reached, credits charged (no bypass).
INSERT INTO credits.plans (name, daily_limit, signup_bonus)
VALUES ('bench', 1000000000, 0)
ON CONFLICT (name) DO UPDATE SET daily_limit = EXCLUDED.daily_limit, signup_bonus = 0,
    monthly_allocation = 0, bypass_credits = false;

-- The generated entries, as one view every ledger is loaded from: k = 0 the
-- bonus grant, k = 1 the purchase, k >= 2 the consumes (j = k - 1), the last
-- n_today of them today (UTC), the others spread over the 59 days before.
CREATE VIEW bench.seed_entries AS
SELECT s.n, s.user_id, s.first_id + k AS id, k, k - 1 AS j,
       CASE WHEN k = 0 THEN 6 WHEN k = 1 THEN s.grant_amount ELSE -1 END::bigint AS amount,
       CASE WHEN k = 0 THEN 6 ELSE 6 + s.grant_amount - greatest(k - 1, 0) END::bigint AS balance_after,
       CASE WHEN k - 1 <= 6 THEN 2 * s.n - 1 ELSE 2 * s.n END::bigint AS lot_id,
       CASE
         WHEN k < 2 THEN d.today - interval '60 days' + k * interval '1 second'
         WHEN k - 1 <= s.n_hist THEN d.today - (s.n_hist - (k - 1) + 1) * (interval '59 days' / greatest(s.n_hist, 1))
         ELSE greatest(d.today, d.now - (s.n_hist + s.n_today - (k - 1) + 1) * interval '1 millisecond')
       END AS created_at,
       k - 1 > s.n_hist AS is_today
  FROM bench.seed_users s
 CROSS JOIN (SELECT (date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') AS today,
                    now() AS now) d
 CROSS JOIN LATERAL generate_series(0, 1 + s.n_hist + s.n_today) k;
\endif

\if :is_credits
-- Non-constraint indexes are dropped for the bulk load and rebuilt after it
-- (whatever indexes the extension has today), in one transaction.
BEGIN;
CREATE TEMP TABLE saved_indexes AS
SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS def
  FROM pg_index i
 WHERE i.indrelid IN ('credits.ledger'::regclass, 'credits.lots'::regclass)
   AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid);
SELECT format('DROP INDEX %s', name) FROM saved_indexes \gexec

INSERT INTO credits.accounts (user_id, plan, timezone, balance, day, day_count)
SELECT s.user_id, 'bench', 'UTC', 6 + s.grant_amount - s.consumed,
       (now() AT TIME ZONE 'UTC')::date, s.n_today
  FROM bench.seed_users s ORDER BY s.n;

INSERT INTO credits.lots (id, user_id, entry_id, amount, remaining, expires_at, priority, created_at)
OVERRIDING SYSTEM VALUE
SELECT 2 * s.n - 1, s.user_id, s.first_id, 6, 0, NULL::timestamptz, 0, now() - interval '60 days'
  FROM bench.seed_users s
UNION ALL
SELECT 2 * s.n, s.user_id, s.first_id + 1, s.grant_amount, s.grant_amount - (s.consumed - 6), NULL, 0,
       now() - interval '60 days'
  FROM bench.seed_users s
 ORDER BY 1;

INSERT INTO credits.ledger (id, user_id, kind, amount, balance_after, daily_remaining,
    operation, units, list_cost, day_ops, lot_moves, idempotency_key, request_hash,
    reason, metadata, actor, created_at)
OVERRIDING SYSTEM VALUE
SELECT e.id, e.user_id,
       CASE WHEN e.k < 2 THEN 'grant' ELSE 'consume' END::credits.entry_kind,
       e.amount, e.balance_after,
       CASE WHEN e.k >= 2 THEN 999999999 END,
       CASE WHEN e.k >= 2 THEN 'image' END,
       CASE WHEN e.k >= 2 THEN 1 END,
       CASE WHEN e.k >= 2 THEN 1 END,
       CASE WHEN e.k >= 2 THEN 1 END,
       CASE WHEN e.k >= 2 THEN ARRAY[ARRAY[e.lot_id, -1::bigint]] END,
       CASE WHEN e.k >= 2 THEN 'seed-' || e.id END,
       CASE WHEN e.k >= 2 THEN e.id END,
       CASE e.k WHEN 0 THEN 'signup bonus' WHEN 1 THEN 'bench purchase' END,
       '{}'::jsonb, 'bench', e.created_at
  FROM bench.seed_entries e;

SELECT def FROM saved_indexes \gexec
SELECT setval(pg_get_serial_sequence('credits.ledger', 'id'), (SELECT max(id) FROM credits.ledger));
SELECT setval(pg_get_serial_sequence('credits.lots', 'id'), (SELECT max(id) FROM credits.lots));
COMMIT;
VACUUM ANALYZE credits.accounts;
VACUUM ANALYZE credits.lots;
VACUUM ANALYZE credits.ledger;
\endif

\if :is_floor
INSERT INTO bench.floor_accounts (user_id, balance, daily_limit, day, day_count)
SELECT s.user_id, 6 + s.grant_amount - s.consumed, 1000000000, (now() AT TIME ZONE 'UTC')::date, s.n_today
  FROM bench.seed_users s ORDER BY s.n;
INSERT INTO bench.floor_ledger (user_id, amount, balance_after, operation, units, idempotency_key,
                                reason, metadata, created_at)
SELECT e.user_id, e.amount, e.balance_after,
       CASE WHEN e.k >= 2 THEN 'image' END, CASE WHEN e.k >= 2 THEN 1 END,
       CASE WHEN e.k >= 2 THEN 'seed-' || e.id END,
       CASE e.k WHEN 0 THEN 'signup bonus' WHEN 1 THEN 'bench purchase' END,
       '{}'::jsonb, e.created_at
  FROM bench.seed_entries e;
CREATE INDEX floor_ledger_user_time ON bench.floor_ledger (user_id, created_at);
CREATE UNIQUE INDEX floor_ledger_key ON bench.floor_ledger (user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
VACUUM ANALYZE bench.floor_accounts;
VACUUM ANALYZE bench.floor_ledger;
\endif

\if :is_plpgsql
INSERT INTO bench.plpgsql_accounts (user_id, balance, daily_limit)
SELECT s.user_id, 6 + s.grant_amount - s.consumed, 1000000000
  FROM bench.seed_users s ORDER BY s.n;
INSERT INTO bench.plpgsql_ledger (user_id, amount, balance_after, operation, units, idempotency_key,
                                  reason, metadata, created_at)
SELECT e.user_id, e.amount, e.balance_after,
       CASE WHEN e.k >= 2 THEN 'image' END, CASE WHEN e.k >= 2 THEN 1 END,
       CASE WHEN e.k >= 2 THEN 'seed-' || e.id END,
       CASE e.k WHEN 0 THEN 'signup bonus' WHEN 1 THEN 'bench purchase' END,
       '{}'::jsonb, e.created_at
  FROM bench.seed_entries e;
CREATE INDEX plpgsql_ledger_user_time ON bench.plpgsql_ledger (user_id, created_at);
CREATE UNIQUE INDEX plpgsql_ledger_key ON bench.plpgsql_ledger (user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
VACUUM ANALYZE bench.plpgsql_accounts;
VACUUM ANALYZE bench.plpgsql_ledger;
\endif
