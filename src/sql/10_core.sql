
/* ---- Core ledger: consume, grant, balances (src/consume.c, src/grants.c) ---- */

/*
 * Every function that touches credit rows is SECURITY DEFINER, owned by the
 * extension owner, with search_path pinned to pg_catalog (pg_temp last, so
 * temporary objects can never shadow anything).  EXECUTE is revoked from
 * PUBLIC at the end of the script and granted by credits.grant_roles().
 */

CREATE FUNCTION credits.credits_consume(
    user_id uuid,
    operation text,
    units bigint DEFAULT 1,
    idempotency_key text DEFAULT NULL,
    reference text DEFAULT NULL,
    metadata jsonb DEFAULT '{}')
RETURNS credits.receipt
LANGUAGE c VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_consume';

COMMENT ON FUNCTION credits.credits_consume(uuid, text, bigint, text, text, jsonb) IS
'Charges cost x units of an operation (PT402 not enough credits, PT429 daily limit); idempotent by key.';

CREATE FUNCTION credits.grant_credits(
    user_id uuid,
    amount bigint,
    reason text,
    idempotency_key text DEFAULT NULL,
    expires_at timestamptz DEFAULT NULL,
    reference text DEFAULT NULL,
    metadata jsonb DEFAULT '{}')
RETURNS credits.receipt
LANGUAGE c VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_grant_credits';

COMMENT ON FUNCTION credits.grant_credits(uuid, bigint, text, text, timestamptz, text, jsonb) IS
'Adds a lot of credits, optionally expiring; idempotent by key.';

CREATE FUNCTION credits.balance(user_id uuid)
RETURNS bigint
LANGUAGE c VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_balance';

COMMENT ON FUNCTION credits.balance(uuid) IS
'Spendable credits now (expired lots no longer count).';

CREATE FUNCTION credits.daily_available(user_id uuid)
RETURNS bigint
LANGUAGE c VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_daily_available';

COMMENT ON FUNCTION credits.daily_available(uuid) IS
'Operations left today in the account''s time zone; NULL when the plan has no daily limit.';

CREATE FUNCTION credits.set_plan(user_id uuid, plan text)
RETURNS void
LANGUAGE c VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_set_plan';

COMMENT ON FUNCTION credits.set_plan(uuid, text) IS
'Sets the account''s base plan (an active entitlement still takes precedence).';

CREATE FUNCTION credits.set_timezone(user_id uuid, tz text)
RETURNS void
LANGUAGE c VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_set_timezone';

COMMENT ON FUNCTION credits.set_timezone(uuid, text) IS
'Sets the IANA time zone whose midnight resets the daily limit.';

/*
 * Operations counted in the account's current local day, derived from the
 * ledger: what accounts.day_count caches.
 */
CREATE FUNCTION credits.day_count_from_ledger(user_id uuid)
RETURNS integer
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(sum(l.day_ops), 0)::integer
      FROM credits.accounts a
      JOIN credits.ledger l ON l.user_id = a.user_id
     WHERE a.user_id = day_count_from_ledger.user_id
       AND l.day_ops IS NOT NULL
       AND l.created_at >= ((now() AT TIME ZONE a.timezone)::date::timestamp AT TIME ZONE a.timezone)
$$;

/*
 * Every check behind reconcile(), agreeing or not.  Proves that every cached number agrees with the ledger.  One row per
 * discrepancy; no rows when the books balance.
 *   balance        accounts.balance vs sum(ledger.amount)
 *   lots           accounts.balance vs sum(lots.remaining)
 *   lot            one lot's remaining vs its grant plus the moves recorded in the ledger
 *   entry          one entry's amount vs the lot moves it recorded (or the lot it created)
 *   day_count      today's cached count vs the ledger's day_ops of today
 *   entitlement, entitlement_until
 *                  the cached entitlement (its plan's rank, its end in epoch
 *                  microseconds) vs the best active one; skipped while the
 *                  cached one has lapsed, as the next touch recomputes it
 * Holds and refunds (src/holds.c, src/refunds.c):
 *   hold             a hold's reserved amount vs its `hold` entry
 *   hold_settled     a hold's settled_entry_id vs the entries that settled it: none
 *                    while open; else exactly one release (of the whole amount,
 *                    see hold_released) and, when captured, exactly one capture
 *   hold_released    credits returned by the hold's releases vs its amount (0 while open)
 *   next_hold_expiry accounts.next_hold_expiry, when it is later than the earliest
 *                    open hold (it may be early, never late), vs that hold's expiry,
 *                    in microseconds since the epoch
 *   refunded         a charge vs the refunds of it, when they add up to more
 */
CREATE FUNCTION credits.reconcile_checks(user_id uuid DEFAULT NULL)
RETURNS TABLE (user_id uuid, item text, object_id bigint, cached bigint, derived bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH accts AS (
        SELECT a.*, (a.day = (now() AT TIME ZONE a.timezone)::date) AS counts_today
          FROM credits.accounts a
         WHERE reconcile_checks.user_id IS NULL OR a.user_id = reconcile_checks.user_id
    ), moves AS (
        SELECT e.id AS entry_id, e.user_id, e.lot_moves[i][1] AS lot_id, e.lot_moves[i][2] AS delta
          FROM credits.ledger e
          CROSS JOIN LATERAL generate_subscripts(e.lot_moves, 1) AS i
         WHERE e.lot_moves IS NOT NULL
           AND e.user_id IN (SELECT accts.user_id FROM accts)
    )
    SELECT a.user_id, 'balance', NULL::bigint, a.balance,
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
     WHERE l.user_id IN (SELECT accts.user_id FROM accts)
    UNION ALL
    SELECT e.user_id, 'entry', e.id, e.amount,
           coalesce(me.delta, 0) + coalesce(le.amount, 0)
      FROM credits.ledger e
      LEFT JOIN (SELECT m.entry_id, sum(m.delta)::bigint AS delta FROM moves m GROUP BY m.entry_id) me
        ON me.entry_id = e.id
      LEFT JOIN (SELECT l.entry_id, sum(l.amount)::bigint AS amount
                   FROM credits.lots l
                  WHERE l.user_id IN (SELECT accts.user_id FROM accts)
                  GROUP BY l.entry_id) le
        ON le.entry_id = e.id
     WHERE e.user_id IN (SELECT accts.user_id FROM accts)
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
     WHERE h.user_id IN (SELECT accts.user_id FROM accts)
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
     WHERE h.user_id IN (SELECT accts.user_id FROM accts)
    UNION ALL
    SELECT h.user_id, 'hold_released', h.id,
           CASE WHEN h.status = 'open' THEN 0 ELSE h.amount END,
           (SELECT coalesce(sum(e.amount), 0)::bigint FROM credits.ledger e
             WHERE e.ref_id = h.id AND e.user_id = h.user_id AND e.kind = 'release')
      FROM credits.holds h
     WHERE h.user_id IN (SELECT accts.user_id FROM accts)
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
             WHERE r.kind = 'refund' AND r.user_id IN (SELECT accts.user_id FROM accts)
             GROUP BY r.ref_id) r ON r.ref_id = c.id
$$;

CREATE FUNCTION credits.reconcile(user_id uuid DEFAULT NULL)
RETURNS TABLE (user_id uuid, item text, object_id bigint, cached bigint, derived bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.* FROM credits.reconcile_checks(reconcile.user_id) c
     WHERE c.cached IS DISTINCT FROM c.derived
$$;

COMMENT ON FUNCTION credits.reconcile(uuid) IS
'One row per disagreement between the ledger and a cached number (balance, lots, today''s count); no rows when the books balance.';

CREATE FUNCTION credits.current_user_id()
RETURNS uuid
LANGUAGE c STABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_current_user_id';

COMMENT ON FUNCTION credits.current_user_id() IS
'The authenticated caller: the sub claim of request.jwt.claims (28000 when there is none).';
