
/* ---- Rate limiting and denial counters (src/ratelimit.c, src/stats.c) ---- */

/*
 * The general limiter's buckets: one row per (user, action), holding the
 * GCRA "theoretical arrival time", the moment the bucket is empty again.  A
 * row whose tat has passed carries no information (credits.rate_limit_prune()
 * removes such rows; nothing depends on it running).  Not dumped: losing it
 * only forgets recent requests.
 */
CREATE TABLE credits.rate_limits (
    user_id uuid NOT NULL,
    action  text NOT NULL CHECK (action <> '' AND length(action) <= 255),
    tat     timestamptz NOT NULL,           -- theoretical arrival time
    PRIMARY KEY (user_id, action)
);
ALTER TABLE credits.rate_limits ENABLE ROW LEVEL SECURITY;

/*
 * The plan's limiter keeps its state on the account row, which consume and
 * reserve lock and rewrite anyway: no statement of its own on the hot path.
 *   rate_tat           GCRA theoretical arrival time of the plan's bucket
 *   last_operation_at  (already in the table) the last billable operation,
 *                      for the plan's cooldown
 */
ALTER TABLE credits.accounts ADD COLUMN rate_tat timestamptz;

-- The plan's bucket must drain within ten years (what the limiter accepts).
ALTER TABLE credits.plans ADD CONSTRAINT plans_rate_window
    CHECK (rate_burst / rate_per_second <= 3652 * 86400);

/* What credits.rate_limit() answers, like redis-cell's CL.THROTTLE. */
CREATE TYPE credits.rate_limit_result AS (
    allowed        boolean,     -- the request passes (and was recorded)
    "limit"        integer,     -- burst: requests that may pass at once
    remaining      integer,     -- requests that would still pass right now
    retry_after_ms bigint,      -- 0 when allowed; else wait this long
    reset_after_ms bigint       -- until the bucket is empty (full burst available)
);

CREATE FUNCTION credits.rate_limit(
    user_id uuid,
    action text,
    burst integer,
    per_second double precision)
RETURNS credits.rate_limit_result
LANGUAGE c VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_rate_limit';

COMMENT ON FUNCTION credits.rate_limit(uuid, text, integer, double precision) IS
'GCRA limiter: allows burst requests at once, then per_second; records a request only when allowed.';

CREATE FUNCTION credits.rate_limit_at(
    user_id uuid,
    action text,
    burst integer,
    per_second double precision,
    at timestamptz)
RETURNS credits.rate_limit_result
LANGUAGE c VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_rate_limit_at';

COMMENT ON FUNCTION credits.rate_limit_at(uuid, text, integer, double precision, timestamptz) IS
'credits.rate_limit at a given time, for tests and simulations; never granted (it can move a bucket in time).';

CREATE FUNCTION credits.rate_limit_prune()
RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH gone AS (
        DELETE FROM credits.rate_limits
         WHERE tat OPERATOR(pg_catalog.<) pg_catalog.clock_timestamp()
        RETURNING 1
    )
    SELECT pg_catalog.count(*) FROM gone
$$;

COMMENT ON FUNCTION credits.rate_limit_prune() IS
'Deletes rate limit buckets that are empty (their tat has passed); returns how many. Optional housekeeping.';

/*
 * Denial counters: every refusal (PT402, PT403, PT409, PT429) and every
 * request credits.rate_limit() turned away, per reason and operation.  In
 * shared memory for the cluster when credits is in shared_preload_libraries
 * (scope 'cluster'), else for the calling backend only (scope 'this backend').
 */
CREATE FUNCTION credits.denial_counters(
    OUT reason text,
    OUT operation text,
    OUT denials bigint,
    OUT last_denied_at timestamptz,
    OUT scope text)
RETURNS SETOF record
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'credits_denial_counters';

CREATE VIEW credits.stats AS
    SELECT c.reason, c.operation, c.denials, c.last_denied_at, c.scope
      FROM credits.denial_counters() c
     ORDER BY c.denials DESC, c.reason, c.operation;

COMMENT ON VIEW credits.stats IS
'Refused requests per reason and operation since the last credits.stats_reset() (or server start). scope: cluster (shared memory) or this backend (credits not preloaded).';

CREATE FUNCTION credits.stats_reset()
RETURNS void
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'credits_stats_reset';

COMMENT ON FUNCTION credits.stats_reset() IS
'Forgets every denial counter (of the cluster, or of this backend when credits is not preloaded).';
