-- Admin analytics on a seeded data set: usage_daily, depletions, top_users,
-- purchases_summary, account_summary.
--
-- History (days ago) is written straight into the ledger, lots and
-- accounts by pg_temp.seed(), self-consistent (credits.reconcile() agrees,
-- checked below); today's activity goes through the real functions.  Other
-- test files share this database, so the views are filtered to this file's
-- users and operations (rla_*), and purchases_summary, which aggregates
-- everyone, is checked as the difference this data set makes.
\set u1 '00000000-0000-4000-8000-00000000a401'
\set u2 '00000000-0000-4000-8000-00000000a402'
\set u3 '00000000-0000-4000-8000-00000000a403'
\set u4 '00000000-0000-4000-8000-00000000a404'
\set u5 '00000000-0000-4000-8000-00000000a405'
\set u6 '00000000-0000-4000-8000-00000000a406'
\set u7 '00000000-0000-4000-8000-00000000a407'

INSERT INTO credits.operations (name, cost, max_units) VALUES ('rla_image', 1, 10), ('rla_video', 5, 60);

-- Appends one entry `days` days ago for account u (created if needed, on
-- `plan`): a positive amount creates a lot (optionally expiring), a negative
-- one burns lots soonest-expiring first.  Returns the entry id.
CREATE FUNCTION pg_temp.seed(u uuid, kind credits.entry_kind, amount bigint, days numeric,
                             operation text DEFAULT NULL, units bigint DEFAULT NULL,
                             ref_id bigint DEFAULT NULL, plan text DEFAULT 'free',
                             expires_at timestamptz DEFAULT NULL, reason text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    at timestamptz := now() - days * interval '24 hours';
    bal bigint;
    eid bigint;
    need bigint := -amount;
    take bigint;
    moves bigint[] := '{}';
    lot record;
    list bigint;
BEGIN
    INSERT INTO credits.accounts (user_id, plan, day, created_at)
    VALUES (u, plan, (at AT TIME ZONE 'UTC')::date, at) ON CONFLICT (user_id) DO NOTHING;
    SELECT a.balance + amount INTO bal FROM credits.accounts a WHERE a.user_id = u FOR UPDATE;
    IF amount < 0 THEN
        FOR lot IN SELECT l.id, l.remaining FROM credits.lots l
                    WHERE l.user_id = u AND l.remaining > 0
                    ORDER BY l.expires_at NULLS LAST, l.id LOOP
            take := least(need, lot.remaining);
            UPDATE credits.lots SET remaining = remaining - take WHERE id = lot.id;
            moves := moves || ARRAY[[lot.id, -take]];
            need := need - take;
            EXIT WHEN need = 0;
        END LOOP;
    END IF;
    SELECT o.cost * seed.units INTO list FROM credits.operations o WHERE o.name = seed.operation;
    INSERT INTO credits.ledger (user_id, kind, amount, balance_after, operation, units, list_cost,
                                day_ops, ref_id, lot_moves, reason, actor, created_at)
    VALUES (u, kind, amount, bal, operation, units,
            CASE WHEN kind IN ('consume', 'capture') THEN list END,
            CASE WHEN kind IN ('consume', 'hold') THEN 1 END, ref_id,
            CASE WHEN amount < 0 THEN moves END, reason, 'seed', at)
    RETURNING id INTO eid;
    IF amount > 0 THEN
        INSERT INTO credits.lots (user_id, entry_id, amount, remaining, expires_at, created_at)
        VALUES (u, eid, amount, amount, expires_at, at);
    END IF;
    UPDATE credits.accounts a
       SET balance = bal,
           next_expiry = (SELECT min(l.expires_at) FROM credits.lots l
                           WHERE l.user_id = u AND l.remaining > 0)
     WHERE a.user_id = u;
    RETURN eid;
END
$$;

-- purchases_summary before this data set.
CREATE TEMP TABLE purchases_before AS SELECT * FROM credits.purchases_summary;

-- u1 (free): used credits over 40 days, ran out 2 days ago, then bought a pack.
SELECT pg_temp.seed(:'u1', 'grant', 20, 40, reason => 'seed grant') IS NOT NULL AS seeded;
SELECT pg_temp.seed(:'u1', 'consume', -5, 40, 'rla_image', 5) IS NOT NULL AS seeded;
SELECT pg_temp.seed(:'u1', 'consume', -3, 10, 'rla_image', 3) IS NOT NULL AS seeded;
SELECT pg_temp.seed(:'u1', 'consume', -10, 10, 'rla_video', 2) AS video_id \gset
-- half of that video refunded (the refund carries no operation: it inherits the video's)
SELECT pg_temp.seed(:'u1', 'refund', 5, 10, ref_id => :video_id, reason => 'failed render') IS NOT NULL AS seeded;
SELECT pg_temp.seed(:'u1', 'consume', -7, 2, 'rla_image', 7) IS NOT NULL AS seeded;
SELECT pg_temp.seed(:'u1', 'purchase', 50, 2, reason => 'pack 50') IS NOT NULL AS seeded;
-- u2 (free): ran out 10 days ago and never bought.
SELECT pg_temp.seed(:'u2', 'grant', 6, 10, reason => 'signup bonus') IS NOT NULL AS seeded;
SELECT pg_temp.seed(:'u2', 'consume', -6, 10, 'rla_image', 6) IS NOT NULL AS seeded;
-- u3 (pro, bypass): operations recorded at list cost, charged 0.
SELECT pg_temp.seed(:'u3', 'consume', 0, 3, 'rla_video', 10, plan => 'pro') IS NOT NULL AS seeded;
-- u4 (free): a bonus and a pack; reserves a job today (below).
SELECT pg_temp.seed(:'u4', 'grant', 8, 5, reason => 'promo') IS NOT NULL AS seeded;
SELECT pg_temp.seed(:'u4', 'purchase', 100, 5, reason => 'pack 100') IS NOT NULL AS seeded;
-- u6 (free): grants only, the latest expired an hour ago: in none of the views below.
SELECT pg_temp.seed(:'u6', 'grant', 3, 100, reason => 'old promo') IS NOT NULL AS seeded;
SELECT pg_temp.seed(:'u6', 'grant', 4, 5, reason => 'promo', expires_at => now() - interval '1 hour') IS NOT NULL AS seeded;

-- Today, through the functions:
-- u1 consumes, gets part of it refunded, and runs a job (reserve 2 units, capture 1);
SELECT entry_id AS c1 FROM credits.credits_consume(:'u1', 'rla_image', 4) \gset
SELECT kind, amount, balance FROM credits.refund(:c1, 2, 'bad output');
SELECT entry_id AS h1 FROM credits.reserve(:'u1', 'rla_video', 2) \gset
SELECT kind, amount, balance FROM credits.capture(:h1, 1);
-- u3 (bypass) consumes at list cost 0; u2 is refused (PT402: no ledger trace);
SELECT kind, amount, balance FROM credits.credits_consume(:'u3', 'rla_video', 4);
SELECT credits.credits_consume(:'u2', 'rla_image');
-- u4 reserves a job that is still running;
SELECT kind, amount, balance FROM credits.reserve(:'u4', 'rla_video', 1);
-- u5 signs up (bonus 6), runs out, buys a pack, and runs a job that fails (released).
SELECT kind, amount, balance FROM credits.credits_consume(:'u5', 'rla_image', 3);
SELECT kind, amount, balance FROM credits.credits_consume(:'u5', 'rla_image', 3);
SELECT pg_temp.seed(:'u5', 'purchase', 10, 0, reason => 'pack 10') IS NOT NULL AS seeded;
SELECT entry_id AS h5 FROM credits.reserve(:'u5', 'rla_image', 2) \gset
SELECT kind, amount, balance FROM credits.release(:h5);

-- The seeded books balance.
SELECT * FROM credits.reconcile() WHERE user_id IN (:'u1', :'u2', :'u3', :'u4', :'u5', :'u6');

-- Usage per day, operation and plan (days ago instead of dates).
SELECT (now() AT TIME ZONE 'UTC')::date - day AS days_ago, operation, plan,
       operations, units, credits_charged, list_cost
  FROM credits.usage_daily WHERE operation LIKE 'rla\_%'
 ORDER BY days_ago DESC, operation, plan;

-- Who ran out, when, and whether they bought afterwards.
SELECT (now() AT TIME ZONE 'UTC')::date - day AS days_ago, user_id, plan, operation, depletions, purchased_after
  FROM credits.depletions WHERE user_id IN (:'u1', :'u2', :'u3', :'u4', :'u5', :'u6')
 ORDER BY days_ago DESC, user_id;

-- Top users by credits spent in the last 30 days (u1's 40-day-old use is out
-- of the window; rank is among everyone in the database, so shown relative).
SELECT rank() OVER (ORDER BY rank) AS rank_here, user_id, plan, credits_spent, operations, list_cost, balance
  FROM credits.top_users WHERE user_id IN (:'u1', :'u2', :'u3', :'u4', :'u5', :'u6')
 ORDER BY rank, user_id;

-- Purchases and conversion: what this data set added to each period.
SELECT a.period,
       a.purchases - b.purchases AS purchases,
       a.credits_purchased - b.credits_purchased AS credits_purchased,
       a.buyers - b.buyers AS buyers,
       a.active_users - b.active_users AS active_users,
       a.conversion = round(a.buyers::numeric / nullif(a.active_users, 0), 4) AS conversion_is_buyers_over_active
  FROM credits.purchases_summary a JOIN purchases_before b USING (period);

-- The account report, with times and ids masked.
CREATE FUNCTION pg_temp.masked(report text) RETURNS SETOF text LANGUAGE sql AS $$
    SELECT regexp_replace(regexp_replace(line,
               '\d{4}-\d\d-\d\d( \d\d:\d\d(:\d\d)?)?', '<time>', 'g'),
               '(lot |hold |#)\d+', '\1<id>', 'g')
      FROM regexp_split_to_table(report, E'\n') AS line
$$;
SELECT * FROM pg_temp.masked(credits.account_summary(:'u1'));
SELECT * FROM pg_temp.masked(credits.account_summary(:'u4', 3));
SELECT * FROM pg_temp.masked(credits.account_summary(:'u6'));
SELECT * FROM pg_temp.masked(credits.account_summary(:'u3', 0));
SELECT credits.account_summary('00000000-0000-4000-8000-00000000a4ff');
SELECT credits.account_summary(NULL);
SELECT credits.account_summary(:'u1', -1);
-- The report only reads: u6's expired promo is still in the lots until the
-- account's next touch writes the expire entry.
SELECT count(*) AS expire_entries FROM credits.ledger WHERE user_id = :'u6' AND kind = 'expire';
-- A hold that timed out is shown as such until the account's next touch releases it.
SET credits.hold_timeout = 1;
SELECT kind, amount, balance FROM credits.reserve(:'u7', 'rla_image', 2);
RESET credits.hold_timeout;
SELECT pg_sleep(1.1);
SELECT * FROM pg_temp.masked(credits.account_summary(:'u7', 0)) AS line WHERE line LIKE '%hold%';
