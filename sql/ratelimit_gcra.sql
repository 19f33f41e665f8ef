-- The GCRA limiter's maths, at explicit times (credits.rate_limit_at), and
-- its input checks.  Times are seconds after 2030-01-01 00:00 UTC.
\set u '00000000-0000-4000-8000-00000000a101'
\set v '00000000-0000-4000-8000-00000000a102'

CREATE FUNCTION pg_temp.rl(action text, burst integer, per_second float8, at_s numeric,
                           who uuid DEFAULT '00000000-0000-4000-8000-00000000a101')
RETURNS credits.rate_limit_result LANGUAGE sql AS $$
    SELECT * FROM credits.rate_limit_at(who, action, burst, per_second,
                                        '2030-01-01 00:00:00+00'::timestamptz + at_s * interval '1 second')
$$;

-- One request after another, burst 3 at 1 per second: three pass at once,
-- the 4th waits a full interval; a request that is refused does not count.
SELECT g.n, g.at_s, r.*
  FROM unnest(ARRAY[0, 0, 0, 0, 0.25, 0.999, 1, 1, 2, 3, 3.5, 4, 10, 10, 10, 10])
       WITH ORDINALITY AS g(at_s, n),
       LATERAL pg_temp.rl('steady', 3, 1, g.at_s) r
 ORDER BY g.n;

-- The state is one row per (user, action): the theoretical arrival time,
-- here 10 s + 3 intervals.
SELECT action, tat AT TIME ZONE 'UTC' AS tat FROM credits.rate_limits WHERE user_id = :'u';

-- Hammering: 50 requests at the same instant, exactly `burst` pass; one
-- interval later exactly one more passes (the 47 refusals recorded nothing).
SELECT count(*) FILTER (WHERE r.allowed) AS allowed, count(*) FILTER (WHERE NOT r.allowed) AS refused
  FROM generate_series(1, 50) g, LATERAL pg_temp.rl('hammer', 3, 1, 0 * g) r;
SELECT count(*) FILTER (WHERE r.allowed) AS allowed, count(*) FILTER (WHERE NOT r.allowed) AS refused
  FROM generate_series(1, 50) g, LATERAL pg_temp.rl('hammer', 3, 1, 1 + 0 * g) r;

-- A slow rate: one every 2 s (0.5 per second), burst 1.
SELECT g.at_s, r.*
  FROM unnest(ARRAY[0, 1, 1.5, 2, 2, 4.25]) WITH ORDINALITY AS g(at_s, n),
       LATERAL pg_temp.rl('slow', 1, 0.5, g.at_s) r
 ORDER BY g.n;

-- A fast rate: 1000 per second, burst 5: the 6th waits 1 ms.
SELECT g.n, r.*
  FROM generate_series(1, 6) AS g(n), LATERAL pg_temp.rl('fast', 5, 1000, 0 * g.n) r
 ORDER BY g.n;

-- 3 per second: the interval is 333333 us (whole microseconds), and waits
-- are rounded up to the millisecond, so waiting retry_after_ms always passes.
SELECT g.at_s, r.*
  FROM unnest(ARRAY[0, 0, 0.333, 0.333333, 0.333334]) WITH ORDINALITY AS g(at_s, n),
       LATERAL pg_temp.rl('thirds', 1, 3, g.at_s) r
 ORDER BY g.n;

-- Users and actions have separate buckets.
SELECT * FROM pg_temp.rl('steady', 3, 1, 10, :'v');
SELECT * FROM pg_temp.rl('other action', 3, 1, 10);

-- A larger burst for the same bucket lets more through at once; a smaller one fewer.
SELECT * FROM pg_temp.rl('steady', 10, 1, 10);
SELECT * FROM pg_temp.rl('steady', 1, 1, 10);

-- A clock that goes backwards (an earlier time than the last request) is
-- treated as "no time has passed" for the bucket: still refused.
SELECT * FROM pg_temp.rl('slow', 1, 0.5, 3);

-- Bad input: 22023 with the field.
SELECT * FROM credits.rate_limit_at(NULL, 'a', 1, 1, now());
SELECT * FROM credits.rate_limit_at(:'u', NULL, 1, 1, now());
SELECT * FROM credits.rate_limit_at(:'u', '', 1, 1, now());
SELECT * FROM credits.rate_limit_at(:'u', repeat('x', 256), 1, 1, now());
SELECT * FROM credits.rate_limit_at(:'u', E'a\nb', 1, 1, now());
SELECT * FROM credits.rate_limit_at(:'u', 'a', NULL, 1, now());
SELECT * FROM credits.rate_limit_at(:'u', 'a', 0, 1, now());
SELECT * FROM credits.rate_limit_at(:'u', 'a', -5, 1, now());
SELECT * FROM credits.rate_limit_at(:'u', 'a', 1, NULL, now());
SELECT * FROM credits.rate_limit_at(:'u', 'a', 1, 0, now());
SELECT * FROM credits.rate_limit_at(:'u', 'a', 1, -1, now());
SELECT * FROM credits.rate_limit_at(:'u', 'a', 1, 'NaN', now());
SELECT * FROM credits.rate_limit_at(:'u', 'a', 1, 'Infinity', now());
SELECT * FROM credits.rate_limit_at(:'u', 'a', 1, 1000001, now());
SELECT * FROM credits.rate_limit_at(:'u', 'a', 1000, 0.000001, now());
SELECT * FROM credits.rate_limit_at(:'u', 'a', 1, 1, NULL);
SELECT * FROM credits.rate_limit_at(:'u', 'a', 1, 1, 'infinity');
SELECT * FROM credits.rate_limit(:'u', 'a', 0, 1);
-- The longest accepted window is ten years; the largest rate a million per second.
SELECT allowed, "limit", remaining FROM credits.rate_limit_at(:'u', 'decade', 3652, 1.0 / 86400, now());
SELECT allowed, "limit", remaining FROM credits.rate_limit_at(:'u', 'decade', 3653, 1.0 / 86400, now());
SELECT allowed, "limit", remaining FROM credits.rate_limit_at(:'u', 'micro', 2147483647, 1000000, now());
-- Nothing was recorded for refused input.
SELECT action FROM credits.rate_limits WHERE user_id = :'u' ORDER BY action;

-- credits.rate_limit uses the wall clock: a fresh bucket passes, and with
-- one request per 1000 s the next one waits about 1000 s.
SELECT * FROM credits.rate_limit(:'v', 'clock', 1, 0.001);
SELECT allowed, "limit", remaining,
       retry_after_ms BETWEEN 990000 AND 1000000 AS waits_about_1000_s,
       reset_after_ms BETWEEN 990000 AND 1000000 AS resets_in_about_1000_s
  FROM credits.rate_limit(:'v', 'clock', 1, 0.001);

-- A plan's rate limit must drain within ten years too.
\set VERBOSITY terse
UPDATE credits.plans SET rate_burst = 1000, rate_per_second = 0.000001 WHERE name = 'free';
\set VERBOSITY default

-- Housekeeping: buckets whose tat has passed carry no information.  The
-- 2030 buckets are in the future here, the 1999 one is gone.
SELECT (credits.rate_limit_at(:'v', 'old', 1, 1, '1999-12-31 23:59:59+00')).allowed;
SELECT credits.rate_limit_prune() >= 1 AS pruned;
SELECT action FROM credits.rate_limits WHERE user_id = :'v' ORDER BY action;
