
/* ---- Analytics for admins (read-only views over the ledger) ---- */

/*
 * All of these are derived from the ledger, lots and accounts only, so they
 * agree with credits.reconcile()'s view of the books.  Days are UTC days.
 * They are for admins in psql: nothing here is granted to the client role
 * (90_privileges revokes everything from PUBLIC; grant_roles() gives the
 * admin role SELECT on every table and view and EXECUTE on the service
 * functions, account_summary included).  The views run with the extension
 * owner's rights.
 *
 * The ledger does not record the plan an entry was made under, so "plan" is
 * the account's effective plan now (active entitlement, else base plan).
 */

/*
 * Ledger entries of billable operations, each with its operation: consumes,
 * holds, and the captures, releases and refunds that act on them (these
 * inherit the operation of the entry they refer to when they carry none).
 * credits = -amount: what the entry took from the user's balance.
 */
CREATE VIEW credits.usage_entries AS
    SELECT e.id, e.user_id, e.kind, e.created_at,
           (e.created_at AT TIME ZONE 'UTC')::date AS day,
           coalesce(e.operation, r.operation) AS operation,
           -e.amount AS credits,
           e.units, e.list_cost, e.day_ops, e.balance_after
      FROM credits.ledger e
      LEFT JOIN credits.ledger r ON r.id OPERATOR(pg_catalog.=) e.ref_id
     WHERE e.kind IN ('consume', 'hold', 'capture', 'release', 'refund')
       AND coalesce(e.operation, r.operation) IS NOT NULL;

COMMENT ON VIEW credits.usage_entries IS
'Ledger entries of billable operations with their operation (captures, releases and refunds inherit it); credits = what the entry took from the balance.';

/* The account's effective plan now: an active entitlement's, else the base plan. */
CREATE VIEW credits.account_plans AS
    SELECT a.user_id,
           CASE WHEN a.entitlement_plan IS NOT NULL
                 AND (a.entitlement_until IS NULL OR a.entitlement_until > now())
                THEN a.entitlement_plan ELSE a.plan END AS plan
      FROM credits.accounts a;

/*
 * Usage per UTC day, operation and plan.
 *   operations       operations counted against daily limits (consumes and holds,
 *                    less those given back by releases and refunds)
 *   units            units of consumes and captures
 *   credits_charged  credits taken from balances, net of releases and refunds
 *                    (an open hold counts as charged until it is released)
 *   list_cost        cost x units at list price (what a bypass plan would have paid)
 */
CREATE VIEW credits.usage_daily AS
    SELECT u.day, u.operation, p.plan,
           coalesce(sum(u.day_ops), 0)::bigint AS operations,
           coalesce(sum(u.units) FILTER (WHERE u.kind IN ('consume', 'capture')), 0)::bigint AS units,
           coalesce(sum(u.credits), 0)::bigint AS credits_charged,
           coalesce(sum(u.list_cost) FILTER (WHERE u.kind IN ('consume', 'capture')), 0)::bigint AS list_cost
      FROM credits.usage_entries u
      LEFT JOIN credits.account_plans p ON p.user_id = u.user_id
     GROUP BY u.day, u.operation, p.plan
     ORDER BY u.day DESC, u.operation, p.plan;

COMMENT ON VIEW credits.usage_daily IS
'Usage per UTC day, operation and (current) plan: operations, units, credits charged net of refunds, list cost.';

/*
 * Users who ran out: a consume (or hold, or capture) that left the balance
 * at 0, one row per user and UTC day.  Refusals for lack of credits (PT402)
 * leave no ledger trace; they are counted in credits.stats
 * (reason insufficient_credits).
 */
CREATE VIEW credits.depletions AS
    WITH hits AS (
        SELECT u.day, u.user_id,
               min(u.created_at) AS first_depleted_at,
               count(*) AS depletions,
               (array_agg(u.operation ORDER BY u.created_at, u.id))[1] AS operation
          FROM credits.usage_entries u
         WHERE u.credits > 0 AND u.balance_after = 0
         GROUP BY u.day, u.user_id
    )
    SELECT h.day, h.user_id, p.plan, h.operation, h.depletions, h.first_depleted_at,
           EXISTS (SELECT 1 FROM credits.ledger b
                    WHERE b.user_id = h.user_id AND b.kind = 'purchase'
                      AND b.created_at >= h.first_depleted_at) AS purchased_after
      FROM hits h
      LEFT JOIN credits.account_plans p ON p.user_id = h.user_id
     ORDER BY h.day DESC, h.first_depleted_at, h.user_id;

COMMENT ON VIEW credits.depletions IS
'Users whose balance reached 0 by spending, per UTC day, and whether they bought credits afterwards.';

/* Users by credits spent in the last 30 days (net of releases and refunds). */
CREATE VIEW credits.top_users AS
    WITH spent AS (
        SELECT u.user_id,
               sum(u.credits)::bigint AS credits_spent,
               coalesce(sum(u.day_ops), 0)::bigint AS operations,
               coalesce(sum(u.list_cost) FILTER (WHERE u.kind IN ('consume', 'capture')), 0)::bigint AS list_cost,
               max(u.created_at) AS last_operation_at
          FROM credits.usage_entries u
         WHERE u.created_at >= now() - interval '30 days'
         GROUP BY u.user_id
    )
    SELECT rank() OVER (ORDER BY s.credits_spent DESC, s.list_cost DESC) AS rank,
           s.user_id, p.plan, s.credits_spent, s.operations, s.list_cost,
           a.balance, s.last_operation_at
      FROM spent s
      LEFT JOIN credits.accounts a ON a.user_id = s.user_id
      LEFT JOIN credits.account_plans p ON p.user_id = s.user_id
     ORDER BY rank, s.user_id;

COMMENT ON VIEW credits.top_users IS
'Users ranked by credits spent in the last 30 days (list_cost shows the value used on bypass plans).';

/*
 * Purchases (ledger kind 'purchase': one entry per pack bought) and
 * conversion, for today (UTC), the last 7 and 30 days and all time.
 *   active_users  users with a billable operation or a purchase in the period
 *   buyers        users with a purchase in the period
 *   conversion    buyers / active_users
 */
CREATE VIEW credits.purchases_summary AS
    WITH periods (period, since, ord) AS (
        VALUES ('today', (date_trunc('day', now() AT TIME ZONE 'UTC')) AT TIME ZONE 'UTC', 1),
               ('7 days', now() - interval '7 days', 2),
               ('30 days', now() - interval '30 days', 3),
               ('all time', '-infinity'::timestamptz, 4)
    ), counted AS (
        SELECT p.period, p.ord,
               count(e.id) FILTER (WHERE e.kind = 'purchase') AS purchases,
               coalesce(sum(e.amount) FILTER (WHERE e.kind = 'purchase'), 0)::bigint AS credits_purchased,
               count(DISTINCT e.user_id) FILTER (WHERE e.kind = 'purchase') AS buyers,
               count(DISTINCT e.user_id) AS active_users
          FROM periods p
          LEFT JOIN credits.ledger e
            ON e.created_at >= p.since AND e.kind IN ('purchase', 'consume', 'hold')
         GROUP BY p.period, p.ord
    )
    SELECT c.period, c.purchases, c.credits_purchased, c.buyers, c.active_users,
           round(c.buyers::numeric / nullif(c.active_users, 0), 4) AS conversion
      FROM counted c
     ORDER BY c.ord;

COMMENT ON VIEW credits.purchases_summary IS
'Purchases, credits bought, buyers, active users and conversion (buyers / active users) for today, 7 days, 30 days and all time.';

/*
 * A readable report of one account, for psql: plan, balance, today's count,
 * the plan's limits, lots in spend order with expiry, open holds and the
 * latest ledger entries.  Reads only: expired lots and timed-out holds are
 * shown as such, even before the account's next touch writes them off.
 */
CREATE FUNCTION credits.account_summary(user_id uuid, recent integer DEFAULT 10)
RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a credits.accounts;
    p credits.plans;
    eff text;
    today date;
    used integer;
    spendable bigint;
    r record;
    lines text[] := '{}';
BEGIN
    IF account_summary.user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22023',
            DETAIL = '{"field": "user_id"}', HINT = 'Pass a user id.';
    END IF;
    IF recent IS NULL OR recent < 0 OR recent > 1000 THEN
        RAISE EXCEPTION 'recent must be between 0 and 1000' USING ERRCODE = '22023',
            DETAIL = '{"field": "recent"}', HINT = 'How many recent ledger entries to show.';
    END IF;

    SELECT * INTO a FROM credits.accounts x WHERE x.user_id = account_summary.user_id;
    IF NOT FOUND THEN
        RETURN format('account %s: none yet (accounts are created on first touch)', account_summary.user_id);
    END IF;
    SELECT x.plan INTO eff FROM credits.account_plans x WHERE x.user_id = a.user_id;
    SELECT * INTO p FROM credits.plans x WHERE x.name = eff;
    today := (now() AT TIME ZONE a.timezone)::date;
    used := CASE WHEN a.day = today THEN a.day_count ELSE 0 END;
    SELECT coalesce(sum(l.remaining), 0) INTO spendable
      FROM credits.lots l
     WHERE l.user_id = a.user_id AND l.spendable
       AND (l.expires_at IS NULL OR l.expires_at > now());

    lines := lines || format('account      %s (time zone %s, since %s)',
                         a.user_id, a.timezone, to_char(a.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'));
    lines := lines || format('plan         %s%s', eff,
                         CASE WHEN eff IS DISTINCT FROM a.plan
                              THEN format(' (entitlement until %s; base plan %s)',
                                          coalesce(to_char(a.entitlement_until AT TIME ZONE 'UTC',
                                                           'YYYY-MM-DD HH24:MI "UTC"'), 'no end'),
                                          a.plan)
                              ELSE '' END);
    lines := lines || format('balance      %s credits%s', spendable,
                         CASE WHEN spendable <> a.balance
                              THEN format(' (%s expired, written off on the next touch)', a.balance - spendable)
                              ELSE '' END);
    lines := lines || format('today        %s operation(s)%s', used,
                         CASE WHEN p.daily_limit IS NULL THEN ', no daily limit'
                              ELSE format(', %s of %s left', greatest(p.daily_limit - used, 0), p.daily_limit) END);
    lines := lines || format('limits       %s; cooldown %s',
                         CASE WHEN p.rate_burst IS NULL THEN 'no rate limit'
                              ELSE format('burst %s then %s/s', p.rate_burst, p.rate_per_second) END,
                         CASE WHEN p.cooldown_ms = 0 THEN 'none' ELSE p.cooldown_ms || ' ms' END);
    lines := lines || format('last op      %s',
                         coalesce(to_char(a.last_operation_at AT TIME ZONE 'UTC',
                                          'YYYY-MM-DD HH24:MI:SS "UTC"'), 'never'));

    lines := lines || 'lots (spend order)'::text;
    FOR r IN
        SELECT l.id, l.amount, l.remaining, l.expires_at, e.kind, e.reason
          FROM credits.lots l
          LEFT JOIN credits.ledger e ON e.id = l.entry_id
         WHERE l.user_id = a.user_id AND l.spendable
         ORDER BY l.expires_at NULLS LAST, l.priority DESC, l.id
    LOOP
        lines := lines || format('  lot %s: %s of %s left, %s, %s%s', r.id, r.remaining, r.amount,
                             CASE WHEN r.expires_at IS NULL THEN 'no expiry'
                                  WHEN r.expires_at <= now() THEN 'EXPIRED '
                                       || to_char(r.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI "UTC"')
                                  ELSE 'expires '
                                       || to_char(r.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI "UTC"') END,
                             r.kind, coalesce(' (' || r.reason || ')', ''));
    END LOOP;
    IF NOT FOUND THEN
        lines := lines || '  none'::text;
    END IF;

    lines := lines || 'open holds'::text;
    FOR r IN
        SELECT h.id, h.amount, h.units, h.operation, h.expires_at
          FROM credits.holds h
         WHERE h.user_id = a.user_id AND h.status = 'open'
         ORDER BY h.id
    LOOP
        lines := lines || format('  hold %s: %s credits for %s x %s, %s', r.id, r.amount, r.units, r.operation,
                             CASE WHEN r.expires_at <= now()
                                  THEN 'TIMED OUT ' || to_char(r.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI "UTC"')
                                       || ' (released on the next touch)'
                                  ELSE 'until ' || to_char(r.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI "UTC"') END);
    END LOOP;
    IF NOT FOUND THEN
        lines := lines || '  none'::text;
    END IF;

    lines := lines || format('recent entries (latest %s)', recent);
    FOR r IN
        SELECT e.id, e.kind, e.amount, e.balance_after, e.operation, e.units,
               e.reference, e.reason, e.created_at
          FROM credits.ledger e
         WHERE e.user_id = a.user_id
         ORDER BY e.id DESC
         LIMIT recent
    LOOP
        lines := lines || format('  #%s %s %s %s -> %s%s%s%s', r.id,
                             to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
                             rpad(r.kind::text, 10),
                             lpad(CASE WHEN r.amount > 0 THEN '+' ELSE '' END || r.amount, 6),
                             r.balance_after,
                             coalesce('  ' || r.operation || coalesce(' x ' || r.units, ''), ''),
                             coalesce('  ref ' || r.reference, ''),
                             coalesce('  (' || r.reason || ')', ''));
    END LOOP;
    IF NOT FOUND THEN
        lines := lines || '  none'::text;
    END IF;

    RETURN array_to_string(lines, E'\n');
END
$$;

COMMENT ON FUNCTION credits.account_summary(uuid, integer) IS
'A readable report of one account: plan, balance, today''s count, limits, lots with expiry, open holds, recent entries.';
