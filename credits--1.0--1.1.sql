/* credits--1.0--1.1.sql: from 1.0 (git tag v1.0) to 1.1.
 *
 * CREATE EXTENSION credits runs credits--1.0.sql and then this script, so a
 * fresh install and ALTER EXTENSION credits UPDATE run the same statements.
 * Sections are grouped by concern, each saying what it changes and why.
 */

\echo Use "ALTER EXTENSION credits UPDATE TO '1.1'" to load this file. \quit

-- == Price list invalidation ==

/*
 * The statement triggers that invalidate every backend's price and plan
 * caches (src/price_list.c) fire in every session_replication_role: a
 * change applied by logical replication or loaded with triggers disabled
 * for replication left the old prices cached.  (The trigger only registers
 * a cache invalidation.)
 */
ALTER TABLE credits.operations ENABLE ALWAYS TRIGGER price_list_changed;
ALTER TABLE credits.plans ENABLE ALWAYS TRIGGER price_list_changed;

-- == Day boundaries, reconcile ==

/*
 * One day rule (src/local_day.c).  The local day of an instant is the date
 * its wall clock shows; a local day starts at the first instant of that day
 * or a later one.  `day::timestamp AT TIME ZONE tz` is not that instant
 * where the clock goes back from 01:00 to 00:00 (America/Havana,
 * Atlantic/Azores) or jumps over midnight, so the C code (which counted
 * those first minutes as today) and the SQL checks (which did not)
 * disagreed.  Every rule about "today" now uses these two functions.
 */
CREATE FUNCTION credits.local_day(at timestamptz, tz text)
RETURNS date
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'credits_local_day';

COMMENT ON FUNCTION credits.local_day(timestamptz, text) IS
'The local day of an instant in a time zone: the date its wall clock shows, (at AT TIME ZONE tz)::date.';

CREATE FUNCTION credits.local_day_start(day date, tz text)
RETURNS timestamptz
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'credits_local_day_start';

COMMENT ON FUNCTION credits.local_day_start(date, text) IS
'The instant a local day starts in a time zone: the first instant whose local day is that day or later.';

REVOKE ALL ON FUNCTION credits.local_day(timestamptz, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION credits.local_day_start(date, text) FROM PUBLIC;

/* Operations counted in the account's current local day (what accounts.day_count caches). */
CREATE OR REPLACE FUNCTION credits.day_count_from_ledger(user_id uuid)
RETURNS integer
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(sum(l.day_ops), 0)::integer
      FROM credits.accounts a
      JOIN credits.ledger l ON l.user_id = a.user_id
     WHERE a.user_id = day_count_from_ledger.user_id
       AND l.day_ops IS NOT NULL
       AND l.created_at >= credits.local_day_start(credits.local_day(now(), a.timezone), a.timezone)
$$;

/*
 * reconcile_checks (behind credits.reconcile; its checks are now in
 * reconcile_checks_for) starts from every user id of
 * the accounts, the ledger, the lots and the holds, not from the accounts
 * alone: the rows of a user whose account row is missing (a broken restore)
 * were never checked.  New item:
 *   account   the number of account rows of the user (cached) vs 1 (derived):
 *             0 is a missing account, 2 or more an extra one (a table
 *             restored without its primary key).  The checks of the user's
 *             lots, entries and holds run either way; those of the account
 *             row's cached numbers need the row.
 * Today's count uses the one day rule (credits.local_day).
 */
CREATE FUNCTION credits.reconcile_checks_for(only_user uuid)
RETURNS TABLE (user_id uuid, item text, object_id bigint, cached bigint, derived bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
SET jit = off
AS $$
#variable_conflict use_column
BEGIN
    -- PL/pgSQL with custom plans: each call is planned for its argument (one
    -- user: index scans; everyone: hash joins).  A SQL function's plan is
    -- made for any argument, and it scanned the whole ledger for one user.
    -- No JIT: compiling this query's expressions took longer (1.3 s) than
    -- checking 20,000 users (1 s).
    RETURN QUERY
    WITH users (user_id) AS (
        -- one user: only when some table has a row of theirs (each probe is an index scan)
        SELECT only_user
         WHERE only_user IS NOT NULL
           AND (EXISTS (SELECT 1 FROM credits.accounts a WHERE a.user_id = only_user)
                OR EXISTS (SELECT 1 FROM credits.ledger e WHERE e.user_id = only_user)
                OR EXISTS (SELECT 1 FROM credits.lots l WHERE l.user_id = only_user)
                OR EXISTS (SELECT 1 FROM credits.holds h WHERE h.user_id = only_user))
        UNION ALL
        SELECT u.user_id
          FROM (SELECT a.user_id FROM credits.accounts a
                UNION SELECT e.user_id FROM credits.ledger e
                UNION SELECT l.user_id FROM credits.lots l
                UNION SELECT h.user_id FROM credits.holds h) u
         WHERE only_user IS NULL
    ), accts AS (
        SELECT a.*, (a.day = credits.local_day(now(), a.timezone)) AS counts_today
          FROM credits.accounts a
         WHERE a.user_id IN (SELECT users.user_id FROM users)
    ), moves AS (
        SELECT e.id AS entry_id, e.user_id, e.lot_moves[i][1] AS lot_id, e.lot_moves[i][2] AS delta
          FROM credits.ledger e
          CROSS JOIN LATERAL generate_subscripts(e.lot_moves, 1) AS i
         WHERE e.lot_moves IS NOT NULL
           AND e.user_id IN (SELECT users.user_id FROM users)
    )
    SELECT u.user_id, 'account', NULL::bigint, coalesce(n.rows, 0), 1::bigint
      FROM users u
      LEFT JOIN (SELECT a.user_id, count(*) AS rows FROM accts a GROUP BY a.user_id) n
        ON n.user_id = u.user_id
    UNION ALL
    SELECT a.user_id, 'balance', NULL, a.balance,
           (SELECT coalesce(sum(e.amount), 0)::bigint FROM credits.ledger e WHERE e.user_id = a.user_id)
      FROM accts a
    UNION ALL
    SELECT a.user_id, 'lots', NULL, a.balance,
           (SELECT coalesce(sum(l.remaining), 0)::bigint FROM credits.lots l WHERE l.user_id = a.user_id)
      FROM accts a
    UNION ALL
    SELECT a.user_id, x.item, NULL, x.cached, x.derived
      FROM accts a
      LEFT JOIN credits.plans cp ON cp.name = a.entitlement_plan
      LEFT JOIN LATERAL (
          SELECT p.rank, e.expires_at
            FROM credits.entitlements e JOIN credits.plans p ON p.name = e.plan
           WHERE e.user_id = a.user_id
             AND e.status IN ('active', 'cancelled', 'billing_issue', 'paused')
             AND (e.expires_at IS NULL OR e.expires_at > now())
           ORDER BY p.rank DESC, e.expires_at DESC NULLS FIRST, e.id DESC
           LIMIT 1) b ON true
      CROSS JOIN LATERAL (VALUES
          ('entitlement', cp.rank::bigint, b.rank::bigint),
          ('entitlement_until', (extract(epoch FROM a.entitlement_until) * 1000000)::bigint,
                                (extract(epoch FROM b.expires_at) * 1000000)::bigint)) AS x (item, cached, derived)
     WHERE a.entitlement_plan IS NULL OR a.entitlement_until IS NULL OR a.entitlement_until > now()
    UNION ALL
    -- lot and entry: the moves summed once per lot and per entry and joined
    -- (a correlated sum over `moves` per row was quadratic in the entries)
    SELECT l.user_id, 'lot', l.id, l.remaining,
           l.amount + coalesce(ml.delta, 0)
      FROM credits.lots l
      LEFT JOIN (SELECT m.lot_id, sum(m.delta)::bigint AS delta FROM moves m GROUP BY m.lot_id) ml
        ON ml.lot_id = l.id
     WHERE l.user_id IN (SELECT users.user_id FROM users)
    UNION ALL
    SELECT e.user_id, 'entry', e.id, e.amount,
           coalesce(me.delta, 0) + coalesce(le.amount, 0)
      FROM credits.ledger e
      LEFT JOIN (SELECT m.entry_id, sum(m.delta)::bigint AS delta FROM moves m GROUP BY m.entry_id) me
        ON me.entry_id = e.id
      LEFT JOIN (SELECT l.entry_id, sum(l.amount)::bigint AS amount
                   FROM credits.lots l
                  WHERE l.user_id IN (SELECT users.user_id FROM users)
                  GROUP BY l.entry_id) le
        ON le.entry_id = e.id
     WHERE e.user_id IN (SELECT users.user_id FROM users)
    UNION ALL
    SELECT a.user_id, 'day_count', NULL,
           CASE WHEN a.counts_today THEN a.day_count ELSE 0 END,
           credits.day_count_from_ledger(a.user_id)
      FROM accts a
    -- holds and refunds (src/holds.c, src/refunds.c)
    UNION ALL
    SELECT h.user_id, 'hold', h.id, h.amount,
           (SELECT -e.amount FROM credits.ledger e
             WHERE e.id = h.id AND e.user_id = h.user_id AND e.kind = 'hold')
      FROM credits.holds h
     WHERE h.user_id IN (SELECT users.user_id FROM users)
    UNION ALL
    SELECT h.user_id, 'hold_settled', h.id, h.settled_entry_id,
           (SELECT CASE
                   WHEN h.status = 'open' THEN max(e.id)
                   WHEN count(*) FILTER (WHERE e.kind = 'release') <> 1 THEN NULL
                   WHEN h.status = 'captured' THEN
                        CASE WHEN count(*) FILTER (WHERE e.kind = 'capture') = 1
                             THEN max(e.id) FILTER (WHERE e.kind = 'capture') END
                   WHEN count(*) FILTER (WHERE e.kind = 'capture') = 0
                        THEN max(e.id) FILTER (WHERE e.kind = 'release')
                   END
              FROM credits.ledger e
             WHERE e.ref_id = h.id AND e.user_id = h.user_id
               AND e.kind IN ('release', 'capture'))
      FROM credits.holds h
     WHERE h.user_id IN (SELECT users.user_id FROM users)
    UNION ALL
    SELECT h.user_id, 'hold_released', h.id,
           CASE WHEN h.status = 'open' THEN 0 ELSE h.amount END,
           (SELECT coalesce(sum(e.amount), 0)::bigint FROM credits.ledger e
             WHERE e.ref_id = h.id AND e.user_id = h.user_id AND e.kind = 'release')
      FROM credits.holds h
     WHERE h.user_id IN (SELECT users.user_id FROM users)
    UNION ALL
    SELECT n.user_id, 'next_hold_expiry', NULL,
           CASE WHEN n.earliest IS NOT NULL
                 AND (n.next_hold_expiry IS NULL OR n.next_hold_expiry > n.earliest)
                THEN (extract(epoch FROM n.next_hold_expiry) * 1000000)::bigint
                ELSE (extract(epoch FROM n.earliest) * 1000000)::bigint END,
           (extract(epoch FROM n.earliest) * 1000000)::bigint
      FROM (SELECT a.user_id, a.next_hold_expiry,
                   (SELECT min(h.expires_at) FROM credits.holds h
                     WHERE h.user_id = a.user_id AND h.status = 'open') AS earliest
              FROM accts a) n
    UNION ALL
    SELECT c.user_id, 'refunded', c.id, -c.amount, greatest(-c.amount, r.total)
      FROM credits.ledger c
      JOIN (SELECT r.ref_id, sum(r.amount)::bigint AS total
              FROM credits.ledger r
             WHERE r.kind = 'refund' AND r.user_id IN (SELECT users.user_id FROM users)
             GROUP BY r.ref_id) r ON r.ref_id = c.id;
END
$$;

COMMENT ON FUNCTION credits.reconcile_checks_for(uuid) IS
'The rows of credits.reconcile_checks(): every check of one user (NULL: of every user), agreeing or not.';

REVOKE ALL ON FUNCTION credits.reconcile_checks_for(uuid) FROM PUBLIC;

CREATE OR REPLACE FUNCTION credits.reconcile_checks(user_id uuid DEFAULT NULL)
RETURNS TABLE (user_id uuid, item text, object_id bigint, cached bigint, derived bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.user_id, c.item, c.object_id, c.cached, c.derived
      FROM credits.reconcile_checks_for(reconcile_checks.user_id) c
$$;

COMMENT ON FUNCTION credits.reconcile(uuid) IS
'One row per disagreement between the ledger and a cached number (balance, lots, today''s count, ...) or a missing or extra account row of a user with ledger, lot or hold rows; no rows when the books balance.';
