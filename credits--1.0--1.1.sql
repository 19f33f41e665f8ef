/* credits--1.0--1.1.sql: from 1.0 (git tag v1.0) to 1.1.
 *
 * CREATE EXTENSION credits runs credits--1.0.sql and then this script, so a
 * fresh install and ALTER EXTENSION credits UPDATE run the same statements.
 * Sections are grouped by concern, each saying what it changes and why.
 */

\echo Use "ALTER EXTENSION credits UPDATE TO '1.1'" to load this file. \quit

-- == Reads never write ==
-- balance, daily_available, the my_* readers and my_account compute what a
-- first touch or the maintenance due would change without writing it
-- (src/account.c, account_read), so they work in READ ONLY transactions, in
-- PostgREST GET requests and on hot standbys.  Accounts are created by the
-- first write, or by open_account() (a signup hook).

ALTER FUNCTION credits.balance(uuid) STABLE;
ALTER FUNCTION credits.daily_available(uuid) STABLE;
ALTER FUNCTION credits.my_balance() STABLE;
ALTER FUNCTION credits.my_daily_available() STABLE;

CREATE FUNCTION credits.open_account(user_id uuid)
RETURNS boolean
LANGUAGE c VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_open_account';

COMMENT ON FUNCTION credits.open_account(uuid) IS
'Creates the account with its plan''s signup bonus; true when this call created it (a retried signup hook grants nothing twice).';

CREATE FUNCTION credits.account_status(
    user_id uuid,
    OUT plan text,
    OUT base_plan text,
    OUT balance bigint,
    OUT daily_limit integer,
    OUT daily_remaining bigint,
    OUT plan_until timestamptz)
RETURNS record
LANGUAGE c STABLE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_account_status';

COMMENT ON FUNCTION credits.account_status(uuid) IS
'The account as the read functions see it (an account not created yet reads as its first touch would make it); never writes.';

-- The caller's row of my_account, for users never touched too.
CREATE FUNCTION credits.my_account_status()
RETURNS TABLE (
    user_id         uuid,
    plan            text,
    base_plan       text,
    balance         bigint,
    daily_limit     integer,
    daily_remaining bigint,
    timezone        text,
    plan_until      timestamptz,
    created_at      timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT u.id, s.plan, s.base_plan, s.balance, s.daily_limit, s.daily_remaining,
           coalesce(a.timezone, 'UTC'), s.plan_until, a.created_at
      FROM (SELECT credits.current_user_id_or_null() AS id) u
     CROSS JOIN LATERAL credits.account_status(u.id) s
      LEFT JOIN credits.accounts a ON a.user_id OPERATOR(pg_catalog.=) u.id
     WHERE u.id IS NOT NULL
$$;

COMMENT ON FUNCTION credits.my_account_status() IS
'Client: the caller''s account as credits.my_account shows it.';

CREATE OR REPLACE VIEW credits.my_account WITH (security_invoker = true, security_barrier = true) AS
SELECT s.user_id, s.plan, s.base_plan, s.balance, s.daily_limit, s.daily_remaining,
       s.timezone, s.plan_until, s.created_at
  FROM credits.my_account_status() s;

-- Signup creates the account (the read functions no longer do), except for
-- an anonymous sign-in (its first request does, without the bonus; linking
-- grants it); it reads anonymous_bonus_on_link where the C code does.
CREATE OR REPLACE FUNCTION credits.on_auth_user_created()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF coalesce((pg_catalog.to_jsonb(NEW) OPERATOR(pg_catalog.->>) 'is_anonymous')::boolean, false)
       AND credits.setting('anonymous_bonus_on_link')::boolean THEN
        RETURN NULL;
    END IF;
    PERFORM credits.open_account(NEW.id);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION credits.client_functions()
RETURNS SETOF regprocedure
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT unnest(ARRAY[
        'credits.consume(text, bigint, text, text, jsonb)',
        'credits.my_balance()',
        'credits.my_daily_available()',
        'credits.my_account_status()',
        'credits.set_my_timezone(text)',
        'credits.my_history(integer, bigint)',
        'credits.my_usage(timestamptz)',
        'credits.delete_my_account()',
        'credits.claim_pending_purchase(text, text)',
        'credits.current_user_id()',
        'credits.current_user_id_or_null()'
    ]::regprocedure[])
$$;

-- == Backups and restore ==
/*
 * A restore (pg_restore, psql of a plain dump or of pg_dumpall) and a
 * logical subscriber both run CREATE EXTENSION first, which seeds
 * credits.plans and credits.operations, and then load the dumped (or
 * published) rows of those config tables, seeds included.  Without help the
 * duplicate keys fail each table's COPY whole, every table with a foreign key
 * to a plan fails with it, and a subscriber's table sync retries forever.
 *
 * untouched_seeds  the seeded rows nobody has changed since they were
 *                  inserted: an INSERT of such a key (the dumped or published
 *                  row) replaces the seed instead of failing (seed_upsert, a
 *                  BEFORE INSERT trigger enabled ALWAYS, so that it also
 *                  fires for a subscriber's table sync and apply).  UNLOGGED:
 *                  neither dumped nor published, and what it holds only
 *                  matters right after CREATE EXTENSION; after a crash it is
 *                  empty and an INSERT of a seed key fails as before.
 *                  Any other duplicate key still fails: an admin's
 *                  INSERT ... ON CONFLICT DO NOTHING never overwrites an
 *                  edited row.
 * removed_seeds    seed keys an admin deleted (or renamed), dumped and
 *                  published: inserting one (the restore's COPY, a
 *                  subscriber's apply) deletes the re-seeded row; re-creating
 *                  the key forgets it (seed_changed).
 *
 * Also dumped from 1.1 on: credits.rate_limits (the general limiter's state;
 * a restore no longer hands every user a fresh burst).  Every sequence was
 * already dumped by 1.0 (ledger, lots, entitlements, deleted_accounts: the
 * only ones there are); test/ops/backup.sh checks that every table and
 * sequence of the extension but untouched_seeds is.
 */
CREATE FUNCTION credits.seed_keys(OUT table_name text, OUT key text)
RETURNS SETOF record
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    -- The rows credits--1.0.sql seeds; a version that seeds more adds them here.
    VALUES ('plans', 'free'), ('plans', 'pro'),
           ('operations', 'image'), ('operations', 'video_second'),
           ('operations', 'prompt_kchar')
$$;

COMMENT ON FUNCTION credits.seed_keys() IS
'The config rows CREATE EXTENSION seeds (table, key): a dumped or published row with one of these keys replaces the seed.';

CREATE UNLOGGED TABLE credits.untouched_seeds (
    table_name text NOT NULL,
    key        text NOT NULL,
    PRIMARY KEY (table_name, key)
);
ALTER TABLE credits.untouched_seeds ENABLE ROW LEVEL SECURITY;

CREATE TABLE credits.removed_seeds (
    table_name text NOT NULL CHECK (table_name IN ('plans', 'operations', 'products')),
    key        text NOT NULL,
    PRIMARY KEY (table_name, key)
);
ALTER TABLE credits.removed_seeds ENABLE ROW LEVEL SECURITY;

SELECT pg_catalog.pg_extension_config_dump('credits.removed_seeds', '');
SELECT pg_catalog.pg_extension_config_dump('credits.rate_limits', '');

/*
 * Seeds as installed: in a fresh install every seed row was inserted by this
 * transaction (credits--1.0.sql ran in it); when updating an existing
 * database, a seed whose settings are still those of 1.0.
 */
INSERT INTO credits.untouched_seeds (table_name, key)
SELECT 'plans', p.name
  FROM credits.plans p JOIN credits.seed_keys() s ON s.table_name = 'plans' AND s.key = p.name
 WHERE p.xmin::text::bigint = pg_catalog.pg_current_xact_id()::text::bigint % 4294967296
    OR EXISTS (SELECT 1 FROM (VALUES ('free', 5, 6::bigint), ('pro', NULL::integer, 0::bigint)) v(name, daily_limit, signup_bonus)
                WHERE (p.name, p.daily_limit, p.signup_bonus, p.monthly_allocation, p.allocation_rollover,
                       p.bypass_credits, p.rank, p.rate_burst, p.rate_per_second, p.cooldown_ms)
                      IS NOT DISTINCT FROM
                      (v.name, v.daily_limit, v.signup_bonus, 0::bigint, false,
                       v.name = 'pro', CASE v.name WHEN 'pro' THEN 10 ELSE 0 END, NULL::integer, NULL::float8, 0))
UNION ALL
SELECT 'operations', o.name
  FROM credits.operations o JOIN credits.seed_keys() s ON s.table_name = 'operations' AND s.key = o.name
 WHERE o.xmin::text::bigint = pg_catalog.pg_current_xact_id()::text::bigint % 4294967296
    OR EXISTS (SELECT 1 FROM (VALUES ('image', 1::bigint, 10::bigint, 'one generated image'),
                                      ('video_second', 5, 60, 'one second of generated video'),
                                      ('prompt_kchar', 1, 100, '1000 characters of prompt')) v(name, cost, max_units, description)
                WHERE (o.name, o.cost, o.max_units, o.enabled, o.required_plan, o.description)
                      IS NOT DISTINCT FROM (v.name, v.cost, v.max_units, true, NULL::text, v.description));

-- Seeds already gone when updating an existing database were deleted (or renamed) by the admin.
INSERT INTO credits.removed_seeds (table_name, key)
SELECT s.table_name, s.key
  FROM credits.seed_keys() s
 WHERE NOT EXISTS (SELECT 1 FROM credits.plans p WHERE s.table_name = 'plans' AND p.name = s.key)
   AND NOT EXISTS (SELECT 1 FROM credits.operations o WHERE s.table_name = 'operations' AND o.name = s.key);

/*
 * BEFORE INSERT FOR EACH ROW on plans, operations and products, enabled
 * ALWAYS; TG_ARGV[0] names the key column.  An untouched seed with the new
 * row's key is replaced by the new row (every column, created_at included)
 * and the INSERT itself skipped.
 */
CREATE FUNCTION credits.seed_upsert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text := to_jsonb(NEW) ->> TG_ARGV[0];
    cols text;
BEGIN
    DELETE FROM credits.untouched_seeds WHERE table_name = TG_TABLE_NAME AND key = k;
    IF NOT FOUND THEN
        RETURN NEW;
    END IF;
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO cols
      FROM pg_attribute
     WHERE attrelid = TG_RELID AND attnum > 0 AND NOT attisdropped AND attgenerated = '';
    EXECUTE format('UPDATE %I.%I t SET (%s) = (SELECT %s FROM (SELECT ($1).*) n) WHERE t.%I = $2',
                   TG_TABLE_SCHEMA, TG_TABLE_NAME, cols, cols, TG_ARGV[0])
        USING NEW, k;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    RETURN NEW;                 -- the seed was gone already: a plain insert
END
$$;

/*
 * AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW on plans, operations and
 * products (TG_ARGV[0]: the key column).  A changed seed is no longer
 * untouched; a deleted (or renamed) seed is recorded in removed_seeds; a
 * re-created key is no longer removed.
 */
CREATE FUNCTION credits.seed_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    old_key text;
    new_key text;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        old_key := to_jsonb(OLD) ->> TG_ARGV[0];
        DELETE FROM credits.untouched_seeds WHERE table_name = TG_TABLE_NAME AND key = old_key;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        new_key := to_jsonb(NEW) ->> TG_ARGV[0];
        DELETE FROM credits.removed_seeds WHERE table_name = TG_TABLE_NAME AND key = new_key;
    END IF;
    IF old_key IS DISTINCT FROM new_key
       AND EXISTS (SELECT 1 FROM credits.seed_keys() s
                    WHERE s.table_name = TG_TABLE_NAME AND s.key = old_key) THEN
        INSERT INTO credits.removed_seeds (table_name, key) VALUES (TG_TABLE_NAME, old_key)
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;

/*
 * BEFORE INSERT FOR EACH ROW on removed_seeds, enabled ALWAYS: the seed the
 * row names goes (the restore's CREATE EXTENSION seeded it again).  Deleting
 * it records it through seed_changed, so the row may exist by now: then this
 * INSERT is skipped (and so is a subscriber's second copy).
 */
CREATE FUNCTION credits.seed_removed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM credits.untouched_seeds WHERE table_name = NEW.table_name AND key = NEW.key;
    EXECUTE format('DELETE FROM credits.%I WHERE %I = $1', NEW.table_name,
                   CASE NEW.table_name WHEN 'products' THEN 'product_id' ELSE 'name' END)
        USING NEW.key;
    IF EXISTS (SELECT 1 FROM credits.removed_seeds r
                WHERE r.table_name = NEW.table_name AND r.key = NEW.key) THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER seed_upsert BEFORE INSERT ON credits.plans
    FOR EACH ROW EXECUTE FUNCTION credits.seed_upsert('name');
CREATE TRIGGER seed_upsert BEFORE INSERT ON credits.operations
    FOR EACH ROW EXECUTE FUNCTION credits.seed_upsert('name');
CREATE TRIGGER seed_upsert BEFORE INSERT ON credits.products
    FOR EACH ROW EXECUTE FUNCTION credits.seed_upsert('product_id');
CREATE TRIGGER seed_changed AFTER INSERT OR UPDATE OR DELETE ON credits.plans
    FOR EACH ROW EXECUTE FUNCTION credits.seed_changed('name');
CREATE TRIGGER seed_changed AFTER INSERT OR UPDATE OR DELETE ON credits.operations
    FOR EACH ROW EXECUTE FUNCTION credits.seed_changed('name');
CREATE TRIGGER seed_changed AFTER INSERT OR UPDATE OR DELETE ON credits.products
    FOR EACH ROW EXECUTE FUNCTION credits.seed_changed('product_id');
CREATE TRIGGER seed_removed BEFORE INSERT ON credits.removed_seeds
    FOR EACH ROW EXECUTE FUNCTION credits.seed_removed();
ALTER TABLE credits.plans ENABLE ALWAYS TRIGGER seed_upsert;
ALTER TABLE credits.operations ENABLE ALWAYS TRIGGER seed_upsert;
ALTER TABLE credits.products ENABLE ALWAYS TRIGGER seed_upsert;
ALTER TABLE credits.removed_seeds ENABLE ALWAYS TRIGGER seed_removed;

REVOKE ALL ON FUNCTION credits.seed_keys(), credits.seed_upsert(), credits.seed_changed(),
    credits.seed_removed() FROM PUBLIC;
REVOKE ALL ON TABLE credits.untouched_seeds, credits.removed_seeds FROM PUBLIC;

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
/*
 * The service reads written in SQL refuse a client's request as the C
 * service functions do (guard.c): only the caller's own account, never
 * every user's.  Defense in depth when EXECUTE reached the client role.
 */
CREATE FUNCTION credits.guard_service_read(function_name text, user_id uuid)
RETURNS void
LANGUAGE c STABLE
AS 'MODULE_PATHNAME', 'credits_guard_service_read';

COMMENT ON FUNCTION credits.guard_service_read(text, uuid) IS
'42501 when a client''s request (JWT role authenticated or anon, running as that role) reads another account, or every account (user_id NULL); used by the service reads written in SQL.';

REVOKE ALL ON FUNCTION credits.guard_service_read(text, uuid) FROM PUBLIC;

CREATE OR REPLACE FUNCTION credits.day_count_from_ledger(user_id uuid)
RETURNS integer
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM credits.guard_service_read('credits.day_count_from_ledger', day_count_from_ledger.user_id);
    RETURN (SELECT coalesce(sum(l.day_ops), 0)::integer
              FROM credits.accounts a
              JOIN credits.ledger l ON l.user_id = a.user_id
             WHERE a.user_id = day_count_from_ledger.user_id
               AND l.day_ops IS NOT NULL
               AND l.created_at >= credits.local_day_start(credits.local_day(now(), a.timezone),
                                                           a.timezone));
END
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
    PERFORM credits.guard_service_read('credits.reconcile', only_user);
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

-- == ledger kinds: one table (kinds.c), shown to SQL ==
/*
 * What each ledger entry kind means (the sign of its amount, the tombstone
 * total of credits.deleted_accounts it adds to, whether it is a charge for an
 * operation) is one C table that every C reader uses, delete_account's
 * tombstone included.  This function shows it to SQL, so that a query needing
 * the list reads it from there instead of repeating it.
 */
CREATE FUNCTION credits.entry_kinds(
    OUT kind text, OUT sign integer, OUT bucket text, OUT billable boolean)
RETURNS SETOF record
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'credits_entry_kinds';
REVOKE ALL ON FUNCTION credits.entry_kinds() FROM PUBLIC;

COMMENT ON FUNCTION credits.entry_kinds() IS
'The ledger entry kinds: sign of the amount (1: >= 0, -1: <= 0, 0: either), the credits.deleted_accounts total it adds to, and whether it is a charge for an operation (usage, refundable).';
-- The admin role (the roles credits.grant_roles gave the admin functions) gets it too.
DO $$
DECLARE
    r regrole;
BEGIN
    FOR r IN
        SELECT DISTINCT a.grantee::regrole
          FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
         WHERE p.oid = 'credits.grant_credits(uuid, bigint, text, text, timestamptz, text, jsonb)'::pg_catalog.regprocedure
           AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner AND a.grantee <> 0
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION credits.entry_kinds() TO %s', r);
    END LOOP;
END
$$;

-- == expire_holds: a bounded batch ==
/*
 * expire_holds() locked every account with a timed-out hold in one
 * transaction.  It now takes at most batch_size accounts per call (default
 * 1000) and returns how many holds it released, so a caller loops while the
 * result is positive.  `SELECT credits.expire_holds()` keeps working (the
 * default); the old zero-argument function is replaced, not overloaded, so
 * that call is not ambiguous.
 */
DO $$
DECLARE
    r regrole;
    grantees regrole[];
BEGIN
    -- whoever may call it now (the admin role, a pg_cron role) keeps that right
    SELECT pg_catalog.array_agg(DISTINCT a.grantee::regrole) INTO grantees
      FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
     WHERE p.oid = 'credits.expire_holds()'::pg_catalog.regprocedure
       AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner AND a.grantee <> 0;
    DROP FUNCTION credits.expire_holds();
    CREATE FUNCTION credits.expire_holds(batch_size integer DEFAULT 1000)
    RETURNS bigint
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'credits_expire_holds';
    REVOKE ALL ON FUNCTION credits.expire_holds(integer) FROM PUBLIC;
    FOREACH r IN ARRAY coalesce(grantees, '{}') LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION credits.expire_holds(integer) TO %s', r);
    END LOOP;
END
$$;

COMMENT ON FUNCTION credits.expire_holds(integer) IS
'Releases timed-out holds now, in at most batch_size accounts (for an admin or pg_cron; the next touch of an account does it anyway); returns how many holds, call again while positive.';

-- == Abuse-proof client surface ==
-- Nothing a signed-in user can call resets, farms or floods (issue 12).
--
-- Deletion is not a reset (src/deletion.c).  delete_account() keeps, per
-- deleted user, one record keyed by sha256(salt || the 16 bytes of the user
-- id), with a random per-database salt: no user id, no personal data.  It
-- holds what a returning user id must not get back: the signup bonus (the
-- record's existence), the month already allocated, today's count (with the
-- time zone that defines "today"), the plan limiter's state, the
-- instant-unlock claims of the last 24 hours and a base plan an admin set.
-- It is kept for credits.deletion_retention after the last deletion.
-- Purchases and store events are anonymized (user_id NULL), not deleted, so
-- a transaction or event applied before stays applied.

CREATE TABLE credits.deletion_salt (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    salt bytea NOT NULL CHECK (length(salt) >= 16)
);
ALTER TABLE credits.deletion_salt ENABLE ROW LEVEL SECURITY;
-- Created by the first deletion (not by this script), so a restore of a
-- dump inserts the dumped salt into an empty table.
SELECT pg_catalog.pg_extension_config_dump('credits.deletion_salt', '');

CREATE TABLE credits.deletion_records (
    user_hash           bytea PRIMARY KEY,       -- sha256(salt || uuid_send(user_id))
    plan                text,                    -- base plan, when not the default plan
    timezone            text NOT NULL,           -- the zone of day / day_count
    timezone_next       text,                    -- a change not in effect yet ...
    timezone_from       timestamptz,             -- ... from this local midnight
    timezone_changed_at timestamptz,             -- last change asked by the user
    day                 date NOT NULL,
    day_count           integer NOT NULL CHECK (day_count >= 0),
    allocation_period   date,                    -- the month already allocated
    rate_tat            timestamptz,             -- the plan limiter's state
    last_operation_at   timestamptz,             -- (the cooldown)
    claims              timestamptz[] NOT NULL DEFAULT '{}',  -- instant-unlock claims, last 24 hours
    tombstone_id        bigint,                  -- its one row of credits.deleted_accounts
    deleted_at          timestamptz NOT NULL,    -- last deletion (credits.deletion_interval)
    keep_until          timestamptz NOT NULL     -- deleted_at + credits.deletion_retention
);
CREATE INDEX deletion_records_expiry ON credits.deletion_records (keep_until);
ALTER TABLE credits.deletion_records ENABLE ROW LEVEL SECURITY;
SELECT pg_catalog.pg_extension_config_dump('credits.deletion_records', '');

-- Anonymized rows keep no user.
ALTER TABLE credits.purchases ALTER COLUMN user_id DROP NOT NULL;

-- delete_account() finds every row of a user through an index.
CREATE INDEX holds_by_user ON credits.holds (user_id);
CREATE INDEX store_events_by_user ON credits.store_events (user_id) WHERE user_id IS NOT NULL;

-- Time zone changes (src/account.c, src/grants.c): a change takes effect at
-- the next local midnight of the zone in effect, when no operation was
-- counted in the day in progress at once.
ALTER TABLE credits.accounts
    ADD COLUMN timezone_next text,
    ADD COLUMN timezone_from timestamptz,
    ADD COLUMN timezone_changed_at timestamptz,
    ADD CONSTRAINT accounts_timezone_pending CHECK ((timezone_next IS NULL) = (timezone_from IS NULL));

CREATE OR REPLACE FUNCTION credits.set_my_timezone(tz text)
RETURNS void
LANGUAGE c VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_set_my_timezone';

COMMENT ON FUNCTION credits.set_my_timezone(text) IS
'Client: sets the caller''s IANA time zone; it takes effect at the next local midnight (at once when nothing was counted today); at most one change per credits.timezone_change_interval.';

CREATE OR REPLACE FUNCTION credits.delete_my_account()
RETURNS credits.account_deletion
LANGUAGE c VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_delete_my_account';

COMMENT ON FUNCTION credits.delete_my_account() IS
'Client: deletes the caller''s account and history (anonymous tombstone and deletion record kept); at most once per credits.deletion_interval.';


-- The client path has tighter caps than the admin path: idempotency key and
-- reference 128 characters, metadata 1 KiB (src/consume.c), and a client
-- consume no longer goes through the service function credits_consume.
CREATE OR REPLACE FUNCTION credits.consume(
    operation text,
    units bigint DEFAULT 1,
    idempotency_key text DEFAULT NULL,
    reference text DEFAULT NULL,
    metadata jsonb DEFAULT '{}')
RETURNS credits.receipt
LANGUAGE c VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_consume_client';

-- Shipped plans come with a rate limit (a plan that charges nothing would
-- otherwise let one client write the ledger as fast as it can); an admin's
-- own settings are kept.
-- This script's own change leaves a seed as installed (untouched_seeds keeps
-- its mark, so a restore still replaces it with the dumped row).
ALTER TABLE credits.plans DISABLE TRIGGER seed_changed;
UPDATE credits.plans SET rate_burst = 10, rate_per_second = 1
 WHERE name = 'free' AND rate_burst IS NULL;
UPDATE credits.plans SET rate_burst = 20, rate_per_second = 2
 WHERE name = 'pro' AND rate_burst IS NULL;
ALTER TABLE credits.plans ENABLE TRIGGER seed_changed;

-- Supabase anonymous sign-ins give every anonymous session a new user id:
-- such a user (JWT claim is_anonymous, auth.users.is_anonymous) gets the
-- signup bonus only once the account is linked to an identity
-- (credits.anonymous_bonus_on_link, on by default; src/account.c).
ALTER TABLE credits.accounts ADD COLUMN signup_bonus_due boolean NOT NULL DEFAULT false;

CREATE FUNCTION credits.grant_withheld_bonus(user_id uuid)
RETURNS boolean
LANGUAGE c VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_grant_withheld_bonus';

COMMENT ON FUNCTION credits.grant_withheld_bonus(uuid) IS
'Grants the signup bonus withheld from an anonymous sign-in, once the account is linked; true when this call granted it.';

CREATE FUNCTION credits.on_auth_user_linked()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF coalesce((pg_catalog.to_jsonb(OLD) OPERATOR(pg_catalog.->>) 'is_anonymous')::boolean, false)
       AND NOT coalesce((pg_catalog.to_jsonb(NEW) OPERATOR(pg_catalog.->>) 'is_anonymous')::boolean, false) THEN
        PERFORM credits.grant_withheld_bonus(NEW.id);
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION credits.attach_supabase_auth()
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF to_regclass('auth.users') IS NULL THEN
        RAISE EXCEPTION 'table auth.users does not exist'
            USING ERRCODE = 'undefined_table',
                  DETAIL = '{"table": "auth.users"}',
                  HINT = 'attach_supabase_auth() is for Supabase projects. Elsewhere accounts are created on first touch; call credits.delete_account(user_id) when you delete a user.';
    END IF;
    CREATE OR REPLACE TRIGGER credits_account_on_signup
        AFTER INSERT ON auth.users
        FOR EACH ROW EXECUTE FUNCTION credits.on_auth_user_created();
    CREATE OR REPLACE TRIGGER credits_account_on_delete
        AFTER DELETE ON auth.users
        FOR EACH ROW EXECUTE FUNCTION credits.on_auth_user_deleted();
    -- Anonymous sign-ins (auth.users.is_anonymous): the bonus when linked.
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                WHERE attrelid = 'auth.users'::regclass AND attname = 'is_anonymous' AND NOT attisdropped) THEN
        CREATE OR REPLACE TRIGGER credits_account_on_link
            AFTER UPDATE OF is_anonymous ON auth.users
            FOR EACH ROW EXECUTE FUNCTION credits.on_auth_user_linked();
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION credits.detach_supabase_auth()
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF to_regclass('auth.users') IS NOT NULL THEN
        DROP TRIGGER IF EXISTS credits_account_on_signup ON auth.users;
        DROP TRIGGER IF EXISTS credits_account_on_delete ON auth.users;
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                    WHERE tgrelid = 'auth.users'::regclass AND tgname = 'credits_account_on_link') THEN
            DROP TRIGGER credits_account_on_link ON auth.users;
        END IF;
    END IF;
END
$$;

-- LISTEN credits is open to every role: the payload names the account by an
-- opaque reference only (src/notify.c); an admin maps a user to it.
CREATE FUNCTION credits.user_ref(user_id uuid)
RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.encode(pg_catalog.substr(pg_catalog.sha256(
               s.salt OPERATOR(pg_catalog.||) pg_catalog.uuid_send(user_ref.user_id)
               OPERATOR(pg_catalog.||) 'notify'::bytea), 1, 16), 'hex')
      FROM credits.deletion_salt s
$$;

COMMENT ON FUNCTION credits.user_ref(uuid) IS
'The opaque reference that NOTIFY credits sends for the user''s account changes (NULL before the first one).';

-- Client text shown to an admin: control and format characters escaped.
CREATE FUNCTION credits.printable(value text)
RETURNS text
LANGUAGE c IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_printable';

COMMENT ON FUNCTION credits.printable(text) IS
'The text with every control (Cc) and format (Cf) character written as \u{XXXX}: for showing client-written text (references, reasons) to an admin.';

CREATE OR REPLACE FUNCTION credits.account_summary(user_id uuid, recent integer DEFAULT 10)
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
    PERFORM credits.guard_service_read('credits.account_summary', account_summary.user_id);
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
                             r.kind, coalesce(' (' || credits.printable(r.reason) || ')', ''));
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
                             coalesce('  ref ' || credits.printable(r.reference), ''),
                             coalesce('  (' || credits.printable(r.reason) || ')', ''));
    END LOOP;
    IF NOT FOUND THEN
        lines := lines || '  none'::text;
    END IF;

    RETURN array_to_string(lines, E'\n');
END
$$;

-- == Webhooks and external ids ==
-- user_uuid() maps the user ids of any identity system onto the uuids
-- accounts are keyed by (src/external_ids.c); client functions take a JWT
-- sub that is not a uuid through it when credits.external_user_ids is on,
-- and RevenueCat's app_user_id always does.  Stripe and Creem webhooks are
-- verified (HMAC-SHA256 with the secret set here) and applied exactly once
-- in the database (src/webhooks.c, src/webhook_stripe.c, src/webhook_creem.c).

-- Not STRICT: a call with NULL still checks EXECUTE (the planner folds a
-- strict function of a NULL constant to NULL without calling it).
CREATE FUNCTION credits.user_uuid(external_id text)
RETURNS uuid
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'credits_user_uuid';

COMMENT ON FUNCTION credits.user_uuid(text) IS
'The account id of a user id from any identity system: a uuid is itself, any other string its UUIDv5 in the namespace c4bd227c-fefc-5f48-9877-ac7685490c37 (uuid5(NAMESPACE_URL, ''credits:user_uuid'')).';

/*
 * Signing secrets.  Outside schema credits, whose every table grant_roles()
 * lets the admin role read; no grants at all, and row level security with no
 * policy: only the extension owner reads them, through the SECURITY DEFINER
 * webhook functions.  Dumped with the extension's data (pg_dump as the owner).
 */
CREATE SCHEMA credits_secrets;
REVOKE ALL ON SCHEMA credits_secrets FROM PUBLIC;

CREATE TABLE credits_secrets.webhook_secrets (
    provider   text PRIMARY KEY CHECK (provider IN ('stripe', 'creem')),
    secret     text NOT NULL CHECK (secret <> '' AND length(secret) <= 1000),
    updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE credits_secrets.webhook_secrets ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON credits_secrets.webhook_secrets FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('credits_secrets.webhook_secrets', '');

CREATE FUNCTION credits.set_webhook_secret(provider text, secret text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF provider IS NULL OR provider NOT IN ('stripe', 'creem') THEN
        RAISE EXCEPTION 'unknown webhook provider %', coalesce(quote_literal(provider), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = '{"field": "provider"}',
                  HINT = 'The providers are ''stripe'' and ''creem''.';
    END IF;
    IF secret IS NULL THEN
        DELETE FROM credits_secrets.webhook_secrets s WHERE s.provider = set_webhook_secret.provider;
        RETURN;
    END IF;
    IF secret = '' OR length(secret) > 1000 THEN
        RAISE EXCEPTION 'the webhook secret must be between 1 and 1000 characters'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = '{"field": "secret"}',
                  HINT = 'Copy the signing secret from the provider''s dashboard (Stripe: whsec_...).';
    END IF;
    INSERT INTO credits_secrets.webhook_secrets AS s (provider, secret)
    VALUES (set_webhook_secret.provider, set_webhook_secret.secret)
    ON CONFLICT ON CONSTRAINT webhook_secrets_pkey
    DO UPDATE SET secret = excluded.secret, updated_at = now();
END
$$;

COMMENT ON FUNCTION credits.set_webhook_secret(text, text) IS
'Sets the signing secret of a webhook provider (stripe, creem); NULL removes it. Nobody can read it back.';

/*
 * Webhook events set aside: ignored for a reason that a later event or a
 * product mapping can change (unknown_product, unknown_user, a refund before
 * its purchase, an event type this version does not apply).  An event that
 * applies replays the kept events of its subscription or payment;
 * replay_webhook_events() replays them all.  Applied events are in
 * credits.store_events, like RevenueCat's.
 */
CREATE TABLE credits.webhook_events (
    provider        text NOT NULL,
    event_id        text NOT NULL,
    event_type      text NOT NULL,
    event_at        timestamptz NOT NULL,   -- the provider's time of the event
    subscription_id text,
    transaction_id  text,
    reason          text NOT NULL,          -- why it is not applied (yet)
    payload         text NOT NULL,          -- the raw body, verified when it arrived
    tries           integer NOT NULL DEFAULT 1,
    received_at     timestamptz NOT NULL DEFAULT now(),
    last_tried_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, event_id)
);
CREATE INDEX webhook_events_subscription ON credits.webhook_events (provider, subscription_id);
CREATE INDEX webhook_events_transaction ON credits.webhook_events (provider, transaction_id);
ALTER TABLE credits.webhook_events ENABLE ROW LEVEL SECURITY;
SELECT pg_catalog.pg_extension_config_dump('credits.webhook_events', '');

CREATE FUNCTION credits.apply_stripe_event(payload text, signature_header text)
RETURNS jsonb
LANGUAGE c VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_apply_stripe_event';

COMMENT ON FUNCTION credits.apply_stripe_event(text, text) IS
'Verifies the Stripe-Signature header over the raw body, then applies the event exactly once, in any order; returns {"status": "applied" | "duplicate" | "ignored", ...}. Bad signature: 28000.';

CREATE FUNCTION credits.apply_creem_event(payload text, signature text)
RETURNS jsonb
LANGUAGE c VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_apply_creem_event';

COMMENT ON FUNCTION credits.apply_creem_event(text, text) IS
'Verifies the creem-signature header over the raw body, then applies the event exactly once, in any order; returns {"status": "applied" | "duplicate" | "ignored", ...}. Bad signature: 28000.';

CREATE FUNCTION credits.replay_webhook_events(provider text DEFAULT NULL)
RETURNS jsonb
LANGUAGE c VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_replay_webhook_events';

CREATE FUNCTION credits.forget_webhook_events(provider text DEFAULT NULL, older_than interval DEFAULT '30 days')
RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH gone AS (
        DELETE FROM credits.webhook_events k
         WHERE (forget_webhook_events.provider IS NULL OR k.provider OPERATOR(pg_catalog.=) forget_webhook_events.provider)
           AND k.received_at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) forget_webhook_events.older_than)
        RETURNING 1)
    SELECT pg_catalog.count(*) FROM gone
$$;

COMMENT ON FUNCTION credits.forget_webhook_events(text, interval) IS
'Deletes the kept webhook events received longer ago than older_than (event types nobody applies, say); returns how many.';

COMMENT ON FUNCTION credits.replay_webhook_events(text) IS
'Applies the kept webhook events again, oldest first (after mapping a product, say); returns {"replayed": n, "applied": n, "kept": n, "results": [...]}.';

-- == Sharding ==
/*
 * A shard of a credits database split by user behind a PL/Proxy router (the
 * credits_router extension; README, "Pooling and scale-out").  The router
 * sends a call about a user to partition
 *     hashtext(user_id::text) & (shard_count - 1)
 * and a call about a ledger entry (capture, release: the hold; refund: the
 * charge) to partition id & (shard_count - 1): on a shard, the low 10 bits of
 * every ledger id are its user's bucket hashtext(user_id::text) & 1023
 * (src/shard.c; the identity sequence steps by 1024), so an id routes like
 * its user at any shard count up to 1024, before and after the user moves to
 * another shard, and no lookup table exists.
 *
 * The shard's place is the one row of credits.shard_config (dumped with the
 * data); a database without it is a single node, shard 0 of 1.  The sequence
 * steps are not kept by a dump: after a restore, configure_shard runs again
 * (check_shards reports id_step until then).  Lots and entitlements draw ids
 * congruent to the shard number modulo 1024 too, so that a user's rows keep
 * their ids when they move to another shard (credits.move_user).
 *
 * The config tables (plans, operations, products) and the credits.* database
 * settings are copies on every shard; the router writes them on all shards
 * with put_plan, put_operation, put_product, put_setting and remove_config
 * (each shard in its own transaction), and shard_status() gives each copy's
 * digest so that the router can report a shard whose copy differs.
 */

CREATE TABLE credits.shard_config (
    one         boolean PRIMARY KEY DEFAULT true CHECK (one),
    shard_no    integer NOT NULL CHECK (shard_no >= 0 AND shard_no < shard_count),
    shard_count integer NOT NULL CHECK (shard_count BETWEEN 1 AND 1024 AND (shard_count & (shard_count - 1)) = 0),
    configured_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE credits.shard_config ENABLE ROW LEVEL SECURITY;
SELECT pg_catalog.pg_extension_config_dump('credits.shard_config', '');

-- This database's place (0 of 1 unless credits.configure_shard ran).
CREATE FUNCTION credits.shard_place(OUT shard_no integer, OUT shard_count integer)
RETURNS record
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce((SELECT c.shard_no FROM credits.shard_config c), 0),
           coalesce((SELECT c.shard_count FROM credits.shard_config c), 1)
$$;

COMMENT ON FUNCTION credits.shard_place() IS
'This database''s shard number and shard count (0 of 1 unless credits.configure_shard ran).';

-- The partition a user belongs to among shard_count shards (as the router computes it).
CREATE FUNCTION credits.user_partition(user_id uuid, shard_count integer)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pg_catalog.hashtext(user_id::text) & (shard_count - 1) $$;

COMMENT ON FUNCTION credits.user_partition(uuid, integer) IS
'The shard of a user among shard_count shards: hashtext(user_id::text) & (shard_count - 1), as the router routes.';

-- The step of the ledger id sequence: 1024 on a configured shard, 1 on a single node.
CREATE FUNCTION credits.ledger_id_step()
RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT q.seqincrement FROM pg_catalog.pg_sequence q
     WHERE q.seqrelid = pg_catalog.pg_get_serial_sequence('credits.ledger', 'id')::pg_catalog.regclass
$$;

/*
 * Moves an identity sequence of a shard past `floor`: its next value becomes
 * the first one above floor (and above the values it gave) congruent to
 * `residue` modulo 1024.  restep (configure_shard) also sets its step to 1024
 * (ALTER SEQUENCE: a lock on the sequence only); without it (an import) the
 * step is already 1024 and only setval runs.  Returns the next value.
 */
CREATE FUNCTION credits.shard_sequence(tab regclass, col text, residue integer, floor bigint, restep boolean)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    seq regclass := pg_catalog.pg_get_serial_sequence(tab::text, col)::regclass;
    last_val bigint;
    was_called boolean;
    next_id bigint;
BEGIN
    EXECUTE format('SELECT last_value, is_called FROM %s', seq) INTO last_val, was_called;
    IF was_called THEN
        floor := greatest(floor, last_val);
    END IF;
    next_id := floor - (((floor - residue) % 1024) + 1024) % 1024 + 1024;
    IF restep THEN
        EXECUTE format('ALTER SEQUENCE %s INCREMENT BY 1024 START WITH %s RESTART WITH %s', seq, next_id, next_id);
    ELSIF next_id > last_val + (was_called::integer * 1024) THEN
        PERFORM setval(seq, next_id, false);
    END IF;
    RETURN next_id;
END
$$;

/*
 * Makes this database shard shard_no of shard_count; returns the next ledger
 * id.  Refused when the database holds entries or accounts of users of
 * another shard, except for a split: a shard k of N becoming k of a multiple
 * of N keeps its users of the new shards (k + N, ...) until they are moved
 * (credits.move_user), and from then on refuses users it does not hold of
 * the shards it no longer owns (PT503).  Running it again with the same
 * numbers restarts the sequences in their classes (after a restore: a dump
 * keeps a sequence's value but not its step).  Returns the next ledger id;
 * NULL for shard 0 of 1 (a single node), whose sequences it leaves alone.
 * Locks the ledger against writers (EXCLUSIVE) while it checks and restarts
 * the identities.
 */
CREATE FUNCTION credits.configure_shard(shard_no integer, shard_count integer)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    was record;
    split boolean;
    foreign_entries bigint;
    foreign_accounts bigint;
    top_entry bigint;
    top_lot bigint;
    top_entitlement bigint;
    next_id bigint;
BEGIN
    IF shard_count IS NULL OR shard_count < 1 OR shard_count > 1024
       OR (shard_count & (shard_count - 1)) <> 0 THEN
        RAISE EXCEPTION 'shard_count must be a power of 2 from 1 to 1024'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('{"field": "shard_count", "value": %s}', coalesce(shard_count::text, 'null')),
                  HINT = 'PL/Proxy maps a hash to a partition with hash & (count - 1): use 2, 4, 8, ... shards.';
    END IF;
    IF shard_no IS NULL OR shard_no < 0 OR shard_no >= shard_count THEN
        RAISE EXCEPTION 'shard_no must be between 0 and shard_count - 1'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('{"field": "shard_no", "value": %s, "shard_count": %s}',
                                  coalesce(shard_no::text, 'null'), shard_count),
                  HINT = 'shard_no is the partition number of this database in the router''s server (p0, p1, ...).';
    END IF;

    LOCK TABLE credits.ledger IN EXCLUSIVE MODE;
    SELECT * INTO was FROM credits.shard_place();
    split := shard_count % was.shard_count = 0 AND shard_no % was.shard_count = was.shard_no
             AND EXISTS (SELECT 1 FROM credits.shard_config);
    SELECT count(*) INTO foreign_entries
      FROM credits.ledger e WHERE (e.id & (shard_count - 1)) <> shard_no;
    SELECT count(*) INTO foreign_accounts
      FROM credits.accounts a WHERE credits.user_partition(a.user_id, shard_count) <> shard_no;
    IF NOT split AND (foreign_entries > 0 OR foreign_accounts > 0) THEN
        RAISE EXCEPTION 'this database holds rows of other shards'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('{"shard_no": %s, "shard_count": %s, "foreign_entries": %s, "foreign_accounts": %s}',
                                  shard_no, shard_count, foreign_entries, foreign_accounts),
                  HINT = 'Configure a shard before its first write (an existing database becomes shard 0 of 1 only); '
                         'a configured shard k of N can become k of 2N, 4N, ... (a split).';
    END IF;

    INSERT INTO credits.shard_config AS c (shard_no, shard_count) VALUES (shard_no, shard_count)
    ON CONFLICT (one) DO UPDATE SET shard_no = excluded.shard_no, shard_count = excluded.shard_count,
                                    configured_at = now();
    IF shard_count = 1 THEN
        RETURN NULL;   -- a single node: ids need no bucket, the sequences stay as they are
    END IF;
    SELECT coalesce(max(e.id), 0) INTO top_entry FROM credits.ledger e;
    SELECT coalesce(max(l.id), 0) INTO top_lot FROM credits.lots l;
    SELECT coalesce(max(t.id), 0) INTO top_entitlement FROM credits.entitlements t;
    next_id := credits.shard_sequence('credits.ledger', 'id', 0, top_entry, true);
    PERFORM credits.shard_sequence('credits.lots', 'id', shard_no, top_lot, true);
    PERFORM credits.shard_sequence('credits.entitlements', 'id', shard_no, top_entitlement, true);
    RETURN next_id;
END
$$;

COMMENT ON FUNCTION credits.configure_shard(integer, integer) IS
'Owner: makes this database shard shard_no of shard_count (before the first write, or a split of k of N into k of 2N); returns the next ledger id (NULL for 0 of 1).';

/*
 * This shard as the router's check sees it: its place, how many accounts
 * belong to another shard (a full scan of credits.accounts), and the config
 * digests.
 */
CREATE FUNCTION credits.shard_status(
    OUT shard_no integer,
    OUT shard_count integer,
    OUT foreign_accounts bigint,
    OUT plans_digest text,
    OUT operations_digest text,
    OUT products_digest text,
    OUT settings_digest text,
    OUT id_step bigint)
RETURNS record
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    SELECT s.shard_no, s.shard_count INTO shard_status.shard_no, shard_status.shard_count
      FROM credits.shard_place() s;
    id_step := credits.ledger_id_step();
    SELECT count(*) INTO foreign_accounts
      FROM credits.accounts a
     WHERE credits.user_partition(a.user_id, shard_status.shard_count) <> shard_status.shard_no;
    SELECT max(d.digest) FILTER (WHERE d.config = 'plans'),
           max(d.digest) FILTER (WHERE d.config = 'operations'),
           max(d.digest) FILTER (WHERE d.config = 'products'),
           max(d.digest) FILTER (WHERE d.config = 'settings')
      INTO plans_digest, operations_digest, products_digest, settings_digest
      FROM credits.config_digests() d;
END
$$;

COMMENT ON FUNCTION credits.shard_status() IS
'This shard''s number and count, accounts of users routed to another shard, and config digests.';

/*
 * Config writes, one row at a time, as the router repeats them on every
 * shard: a put makes the row exactly what the arguments say (missing ones
 * take the column's default), remove_config deletes one.  SECURITY INVOKER:
 * config stays the owner's to change, as on a single node.  Each returns this
 * shard's number and the digest of the table after the change.
 */
CREATE FUNCTION credits.put_plan(
    name text,
    daily_limit integer,
    signup_bonus bigint DEFAULT 0,
    monthly_allocation bigint DEFAULT 0,
    allocation_rollover boolean DEFAULT false,
    bypass_credits boolean DEFAULT false,
    rank integer DEFAULT 0,
    rate_burst integer DEFAULT NULL,
    rate_per_second double precision DEFAULT NULL,
    cooldown_ms integer DEFAULT 0,
    OUT shard_no integer,
    OUT digest text)
RETURNS record
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO credits.plans AS p (name, daily_limit, signup_bonus, monthly_allocation, allocation_rollover,
                                    bypass_credits, rank, rate_burst, rate_per_second, cooldown_ms)
    VALUES (put_plan.name, put_plan.daily_limit, put_plan.signup_bonus, put_plan.monthly_allocation,
            put_plan.allocation_rollover, put_plan.bypass_credits, put_plan.rank, put_plan.rate_burst,
            put_plan.rate_per_second, put_plan.cooldown_ms)
    ON CONFLICT ON CONSTRAINT plans_pkey DO UPDATE
        SET daily_limit = excluded.daily_limit, signup_bonus = excluded.signup_bonus,
            monthly_allocation = excluded.monthly_allocation,
            allocation_rollover = excluded.allocation_rollover, bypass_credits = excluded.bypass_credits,
            rank = excluded.rank, rate_burst = excluded.rate_burst,
            rate_per_second = excluded.rate_per_second, cooldown_ms = excluded.cooldown_ms;
    SELECT s.shard_no INTO put_plan.shard_no FROM credits.shard_place() s;
    SELECT d.digest INTO put_plan.digest FROM credits.config_digests() d WHERE d.config = 'plans';
END
$$;

CREATE FUNCTION credits.put_operation(
    name text,
    cost bigint,
    max_units bigint DEFAULT 1000000,
    enabled boolean DEFAULT true,
    required_plan text DEFAULT NULL,
    description text DEFAULT NULL,
    OUT shard_no integer,
    OUT digest text)
RETURNS record
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO credits.operations AS o (name, cost, max_units, enabled, required_plan, description)
    VALUES (put_operation.name, put_operation.cost, put_operation.max_units, put_operation.enabled,
            put_operation.required_plan, put_operation.description)
    ON CONFLICT ON CONSTRAINT operations_pkey DO UPDATE
        SET cost = excluded.cost, max_units = excluded.max_units, enabled = excluded.enabled,
            required_plan = excluded.required_plan, description = excluded.description;
    SELECT s.shard_no INTO put_operation.shard_no FROM credits.shard_place() s;
    SELECT d.digest INTO put_operation.digest FROM credits.config_digests() d WHERE d.config = 'operations';
END
$$;

CREATE FUNCTION credits.put_product(
    product_id text,
    plan text DEFAULT NULL,
    credits bigint DEFAULT NULL,
    pack_expires_after interval DEFAULT NULL,
    source text DEFAULT NULL,
    description text DEFAULT NULL,
    OUT shard_no integer,
    OUT digest text)
RETURNS record
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO credits.products AS p (product_id, plan, credits, pack_expires_after, source, description)
    VALUES (put_product.product_id, put_product.plan, put_product.credits, put_product.pack_expires_after,
            put_product.source, put_product.description)
    ON CONFLICT ON CONSTRAINT products_pkey DO UPDATE
        SET plan = excluded.plan, credits = excluded.credits,
            pack_expires_after = excluded.pack_expires_after, source = excluded.source,
            description = excluded.description;
    SELECT s.shard_no INTO put_product.shard_no FROM credits.shard_place() s;
    SELECT d.digest INTO put_product.digest FROM credits.config_digests() d WHERE d.config = 'products';
END
$$;

CREATE FUNCTION credits.remove_config(config text, key text, OUT shard_no integer, OUT digest text)
RETURNS record
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    CASE remove_config.config
        WHEN 'plans' THEN DELETE FROM credits.plans p WHERE p.name = remove_config.key;
        WHEN 'operations' THEN DELETE FROM credits.operations o WHERE o.name = remove_config.key;
        WHEN 'products' THEN DELETE FROM credits.products p WHERE p.product_id = remove_config.key;
        ELSE
            RAISE EXCEPTION 'unknown config table "%"', remove_config.config
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = format('{"field": "config", "value": %s}', to_json(remove_config.config)),
                      HINT = 'One of plans, operations, products.';
    END CASE;
    SELECT s.shard_no INTO remove_config.shard_no FROM credits.shard_place() s;
    SELECT d.digest INTO remove_config.digest FROM credits.config_digests() d WHERE d.config = remove_config.config;
END
$$;

-- A credits.* setting of this database (ALTER DATABASE SET; NULL value: RESET), for new sessions.
CREATE FUNCTION credits.put_setting(name text, value text, OUT shard_no integer, OUT digest text)
RETURNS record
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF put_setting.name IS NULL OR put_setting.name !~ '^credits\.[a-z_]+$' THEN
        RAISE EXCEPTION 'only credits.* settings are shared by the shards'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('{"field": "name", "value": %s}', coalesce(to_json(put_setting.name)::text, 'null')),
                  HINT = 'Set other parameters on each shard''s server.';
    END IF;
    IF put_setting.value IS NULL THEN
        EXECUTE format('ALTER DATABASE %I RESET %s', current_database(), put_setting.name);
    ELSE
        EXECUTE format('ALTER DATABASE %I SET %s = %L', current_database(), put_setting.name, put_setting.value);
    END IF;
    SELECT s.shard_no INTO put_setting.shard_no FROM credits.shard_place() s;
    SELECT d.digest INTO put_setting.digest FROM credits.config_digests() d WHERE d.config = 'settings';
END
$$;

/*
 * The client readers that have no service twin, for one user: the router
 * reads the user from the JWT and calls these on the user's shard (claims do
 * not cross the hop).  Each sets request.jwt.claims to {"sub": user_id} for
 * the call only (a function with a SET clause restores every setting made
 * inside it on exit) and runs the client function.
 */
CREATE FUNCTION credits.user_history(user_id uuid, "limit" integer DEFAULT 50, before_id bigint DEFAULT NULL)
RETURNS TABLE (
    id              bigint,
    kind            text,
    amount          bigint,
    balance_after   bigint,
    daily_remaining bigint,
    operation       text,
    units           bigint,
    list_cost       bigint,
    ref_id          bigint,
    reference       text,
    idempotency_key text,
    reason          text,
    metadata        jsonb,
    created_at      timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM set_config('request.jwt.claims', json_build_object('sub', user_history.user_id)::text, true);
    RETURN QUERY SELECT * FROM credits.my_history(user_history."limit", user_history.before_id);
END
$$;

CREATE FUNCTION credits.user_usage(user_id uuid, since timestamptz DEFAULT now() - interval '30 days')
RETURNS TABLE (
    operation  text,
    operations bigint,
    units      bigint,
    credits    bigint,
    list_cost  bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM set_config('request.jwt.claims', json_build_object('sub', user_usage.user_id)::text, true);
    RETURN QUERY SELECT * FROM credits.my_usage(user_usage.since);
END
$$;

CREATE FUNCTION credits.user_account_status(user_id uuid)
RETURNS SETOF credits.my_account
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM set_config('request.jwt.claims', json_build_object('sub', user_account_status.user_id)::text, true);
    RETURN QUERY SELECT * FROM credits.my_account_status();
END
$$;

CREATE FUNCTION credits.user_claim_pending_purchase(user_id uuid, product_id text, transaction_id text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM set_config('request.jwt.claims', json_build_object('sub', user_claim_pending_purchase.user_id)::text, true);
    RETURN credits.claim_pending_purchase(user_claim_pending_purchase.product_id,
                                          user_claim_pending_purchase.transaction_id);
END
$$;

COMMENT ON FUNCTION credits.user_history(uuid, integer, bigint) IS
'my_history for a given user (what the router calls on the user''s shard).';
COMMENT ON FUNCTION credits.user_usage(uuid, timestamptz) IS
'my_usage for a given user (what the router calls on the user''s shard).';
COMMENT ON FUNCTION credits.user_account_status(uuid) IS
'my_account_status for a given user (what the router calls on the user''s shard).';
COMMENT ON FUNCTION credits.user_claim_pending_purchase(uuid, text, text) IS
'claim_pending_purchase for a given user (what the router calls on the user''s shard).';

-- == Moving users between shards ==
/*
 * Resharding (README, "Pooling and scale-out"): a user moves from the shard
 * that holds it to the shard that owns it now, under its account lock.  On
 * the source, credits.move_user(user_id, target) locks the account row
 * (FOR UPDATE: every write of the user waits), exports the user's rows of
 * every per-user table (credits.export_user), has the target import them
 * through dblink (credits.import_user: one transaction there, which returns
 * its own export of what it now holds), compares the two, and only then
 * deletes the rows here, all in the source's one transaction.  A crash or a
 * failure anywhere leaves the source as it was; a copy the target committed
 * is not routed to and the next attempt replaces it, so retrying converges.
 * A call that waited on the lock finds no account once the move commits and
 * is refused (PT503, src/shard.c) because the user belongs to another shard:
 * it never creates a second account here.
 *
 * Rows keep their ids: ledger ids carry the user's bucket, lots and
 * entitlements ids the shard number they were drawn on (configure_shard), so
 * they never collide on the target; the target's sequences are moved past
 * the source's so that its next ids stay above every id it received.
 * A new shard takes its parent's configuration and its deletion salt and
 * records (salted hashes: anonymous) once, when it is split off
 * (copy_from_parent).
 */

-- The per-user tables, in the order an import writes them.
CREATE FUNCTION credits.user_tables()
RETURNS text[]
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT ARRAY['accounts', 'ledger', 'lots', 'holds', 'purchases', 'entitlements', 'store_events', 'rate_limits',
                     'revenuecat_aliases'] $$;

-- Every row of the user in every per-user table, as jsonb arrays in a fixed order.
CREATE FUNCTION credits.export_user(user_id uuid)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t text;
    rows jsonb;
    result jsonb := '{}';
BEGIN
    FOREACH t IN ARRAY credits.user_tables() LOOP
        EXECUTE format('SELECT coalesce(jsonb_agg(to_jsonb(r) ORDER BY to_jsonb(r)::text), ''[]'')
                          FROM credits.%I r WHERE r.user_id = $1', t)
           INTO rows USING export_user.user_id;
        result := result || jsonb_build_object(t, rows);
    END LOOP;
    RETURN result;
END
$$;

-- Deletes the user's rows of every per-user table (the ledger's through shard_forget_user).
CREATE FUNCTION credits.shard_forget_user(user_id uuid)
RETURNS bigint
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'credits_shard_forget_user';

CREATE FUNCTION credits.delete_user_rows(user_id uuid)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t text;
    entries bigint := credits.shard_forget_user(delete_user_rows.user_id);
BEGIN
    FOREACH t IN ARRAY credits.user_tables() LOOP
        CONTINUE WHEN t = 'ledger';
        EXECUTE format('DELETE FROM credits.%I r WHERE r.user_id = $1', t) USING delete_user_rows.user_id;
    END LOOP;
    RETURN entries;
END
$$;

/*
 * Target side of a move: replaces whatever copy of the user this shard has
 * (an interrupted earlier attempt) with `data`, moves the id sequences past
 * the source's (`sequences`: the source's ledger, lots and entitlements
 * last values) and returns its own export.  Refused for a user this shard
 * does not own.
 */
CREATE FUNCTION credits.import_user(user_id uuid, data jsonb, sequences jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    place record;
    t text;
    cols text;
BEGIN
    SELECT * INTO place FROM credits.shard_place();
    IF credits.user_partition(import_user.user_id, place.shard_count) <> place.shard_no THEN
        RAISE EXCEPTION 'this user does not belong to this shard'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('{"user_id": "%s", "shard_no": %s, "shard_count": %s, "user_shard": %s}',
                                  import_user.user_id, place.shard_no, place.shard_count,
                                  credits.user_partition(import_user.user_id, place.shard_count)),
                  HINT = 'Move a user to the shard its hash names under this shard''s count (credits.configure_shard).';
    END IF;
    PERFORM 1 FROM credits.accounts a WHERE a.user_id = import_user.user_id FOR UPDATE;
    PERFORM credits.delete_user_rows(import_user.user_id);
    FOREACH t IN ARRAY credits.user_tables() LOOP
        SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
          FROM pg_attribute a
         WHERE a.attrelid = format('credits.%I', t)::regclass AND a.attnum > 0
           AND NOT a.attisdropped AND a.attgenerated = '';
        EXECUTE format('INSERT INTO credits.%1$I (%2$s) OVERRIDING SYSTEM VALUE
                        SELECT %2$s FROM jsonb_populate_recordset(NULL::credits.%1$I, $1) r
                         WHERE r.user_id = $2', t, cols)
          USING coalesce(data -> t, '[]'), import_user.user_id;
    END LOOP;
    -- past every id the source gave (the moved rows' ids are below its last values)
    PERFORM credits.shard_sequence('credits.ledger', 'id', 0, (sequences ->> 'ledger')::bigint, false);
    PERFORM credits.shard_sequence('credits.lots', 'id', place.shard_no, (sequences ->> 'lots')::bigint, false);
    PERFORM credits.shard_sequence('credits.entitlements', 'id', place.shard_no,
                                   (sequences ->> 'entitlements')::bigint, false);
    RETURN credits.export_user(import_user.user_id);
END
$$;

/*
 * Source side: moves the user to the shard at `target` (a libpq connection
 * string to its credits database; dblink must be installed here).  Returns
 * {"user_id", "moved", "entries"} ("moved": false when there is no account
 * here).  Refused for a user that still belongs to this shard (run
 * credits.configure_shard for the new count first).
 */
CREATE FUNCTION credits.move_user(user_id uuid, target text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    place record;
    link_schema name;
    data jsonb;
    copy jsonb;
    seqs jsonb;
BEGIN
    SELECT * INTO place FROM credits.shard_place();
    IF credits.user_partition(move_user.user_id, place.shard_count) = place.shard_no THEN
        RAISE EXCEPTION 'this user belongs to this shard'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('{"user_id": "%s", "shard_no": %s, "shard_count": %s}',
                                  move_user.user_id, place.shard_no, place.shard_count),
                  HINT = 'Run credits.configure_shard(k, new_count) on this shard first: users move to the shard that owns them under the new count.';
    END IF;
    SELECT e.extnamespace::regnamespace::name INTO link_schema FROM pg_extension e WHERE e.extname = 'dblink';
    IF link_schema IS NULL THEN
        RAISE EXCEPTION 'moving a user needs the dblink extension on the source shard'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = '{"extension": "dblink"}',
                  HINT = 'CREATE EXTENSION dblink; (contrib) on the source shard.';
    END IF;

    PERFORM 1 FROM credits.accounts a WHERE a.user_id = move_user.user_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('user_id', move_user.user_id, 'moved', false, 'reason', 'no account here');
    END IF;
    data := credits.export_user(move_user.user_id);
    seqs := jsonb_build_object(
        'ledger', (SELECT last_value FROM credits.ledger_id_seq),
        'lots', (SELECT last_value FROM credits.lots_id_seq),
        'entitlements', (SELECT last_value FROM credits.entitlements_id_seq));
    EXECUTE format('SELECT t.r FROM %I.dblink($1, $2) AS t(r jsonb)', link_schema)
       INTO copy
      USING target, format('SELECT credits.import_user(%L::uuid, %L::jsonb, %L::jsonb)', move_user.user_id, data, seqs);
    IF copy IS DISTINCT FROM data THEN
        RAISE EXCEPTION 'the target shard''s copy of the user differs from the source''s'
            USING ERRCODE = 'data_exception',
                  DETAIL = format('{"user_id": "%s", "source_rows": %s, "target_rows": %s}', move_user.user_id,
                                  (SELECT sum(jsonb_array_length(v)) FROM jsonb_each(data) d(k, v)),
                                  coalesce((SELECT sum(jsonb_array_length(v)) FROM jsonb_each(copy) d(k, v)), 0)),
                  HINT = 'Nothing was deleted here; check that both shards run the same credits version and retry.';
    END IF;
    RETURN jsonb_build_object('user_id', move_user.user_id, 'moved', true,
                              'entries', credits.delete_user_rows(move_user.user_id));
END
$$;

/*
 * On a shard split off another (shard k + N of k), before it is routed to:
 * the parent's configuration (plans, operations, products, credits.*
 * database settings, the RevenueCat entitlement map and sandbox allowlist,
 * the webhook secrets, through the put_* and store functions, as the router
 * writes them; rows the parent lacks are removed), and its deletion salt and
 * deletion records, so that a deleted user whose bucket moved here is still
 * recognized on return (the records are anonymous: they cannot be sorted by
 * shard, so all are copied; the parent's stay inert there).  Refused when
 * this shard has a deletion salt of its own already.  Returns the number of
 * rows copied per table.
 */
CREATE FUNCTION credits.copy_from_parent(parent text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    link_schema name;
    rows jsonb;
    r jsonb;
    parent_salt bytea;
    records bigint;
BEGIN
    SELECT e.extnamespace::regnamespace::name INTO link_schema FROM pg_extension e WHERE e.extname = 'dblink';
    IF link_schema IS NULL THEN
        RAISE EXCEPTION 'copying from the parent shard needs the dblink extension'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = '{"extension": "dblink"}',
                  HINT = 'CREATE EXTENSION dblink; (contrib) on this shard.';
    END IF;
    EXECUTE format($q$SELECT t.r FROM %I.dblink($1, $r$
        SELECT jsonb_build_object(
            'plans', (SELECT coalesce(jsonb_agg(to_jsonb(p) ORDER BY p.rank, p.name), '[]') FROM credits.plans p),
            'operations', (SELECT coalesce(jsonb_agg(to_jsonb(o)), '[]') FROM credits.operations o),
            'products', (SELECT coalesce(jsonb_agg(to_jsonb(p)), '[]') FROM credits.products p),
            'settings', (SELECT coalesce(jsonb_agg(s.setting), '[]')
                           FROM pg_db_role_setting d CROSS JOIN LATERAL unnest(d.setconfig) AS s(setting)
                          WHERE d.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
                            AND d.setrole = 0 AND s.setting LIKE 'credits.%%'),
            'revenuecat_entitlements', (SELECT coalesce(jsonb_agg(to_jsonb(m)), '[]') FROM credits.revenuecat_entitlements m),
            'revenuecat_sandbox_users', (SELECT coalesce(jsonb_agg(to_jsonb(u)), '[]') FROM credits.revenuecat_sandbox_users u),
            'webhook_secrets', (SELECT coalesce(jsonb_agg(jsonb_build_object('provider', w.provider, 'secret', w.secret)), '[]')
                                  FROM credits_secrets.webhook_secrets w),
            'salt', (SELECT encode(salt, 'hex') FROM credits.deletion_salt))$r$) AS t(r jsonb)$q$, link_schema)
       INTO rows USING parent;

    FOR r IN SELECT * FROM jsonb_array_elements(rows -> 'plans') LOOP
        PERFORM credits.put_plan(r ->> 'name', (r ->> 'daily_limit')::integer, (r ->> 'signup_bonus')::bigint,
                                 (r ->> 'monthly_allocation')::bigint, (r ->> 'allocation_rollover')::boolean,
                                 (r ->> 'bypass_credits')::boolean, (r ->> 'rank')::integer,
                                 (r ->> 'rate_burst')::integer, (r ->> 'rate_per_second')::double precision,
                                 (r ->> 'cooldown_ms')::integer);
    END LOOP;
    FOR r IN SELECT * FROM jsonb_array_elements(rows -> 'operations') LOOP
        PERFORM credits.put_operation(r ->> 'name', (r ->> 'cost')::bigint, (r ->> 'max_units')::bigint,
                                      (r ->> 'enabled')::boolean, r ->> 'required_plan', r ->> 'description');
    END LOOP;
    FOR r IN SELECT * FROM jsonb_array_elements(rows -> 'products') LOOP
        PERFORM credits.put_product(r ->> 'product_id', r ->> 'plan', (r ->> 'credits')::bigint,
                                    (r ->> 'pack_expires_after')::interval, r ->> 'source', r ->> 'description');
    END LOOP;
    PERFORM credits.remove_config('products', p.product_id) FROM credits.products p
      WHERE NOT (rows -> 'products') @> jsonb_build_array(jsonb_build_object('product_id', p.product_id));
    PERFORM credits.remove_config('operations', o.name) FROM credits.operations o
      WHERE NOT (rows -> 'operations') @> jsonb_build_array(jsonb_build_object('name', o.name));
    PERFORM credits.remove_config('plans', p.name) FROM credits.plans p
      WHERE NOT (rows -> 'plans') @> jsonb_build_array(jsonb_build_object('name', p.name));
    PERFORM credits.put_setting(split_part(x.setting, '=', 1), substr(x.setting, strpos(x.setting, '=') + 1))
       FROM jsonb_array_elements_text(rows -> 'settings') AS x(setting);

    -- the stores' config: the RevenueCat map and allowlist, the webhook secrets
    PERFORM credits.map_revenuecat_entitlement(m.entitlement_id, NULL) FROM credits.revenuecat_entitlements m
      WHERE NOT (rows -> 'revenuecat_entitlements') @> jsonb_build_array(jsonb_build_object('entitlement_id', m.entitlement_id));
    PERFORM credits.map_revenuecat_entitlement(x.item ->> 'entitlement_id', x.item ->> 'plan')
       FROM jsonb_array_elements(rows -> 'revenuecat_entitlements') AS x(item);
    PERFORM credits.disallow_sandbox_user(u.app_user_id) FROM credits.revenuecat_sandbox_users u
      WHERE NOT (rows -> 'revenuecat_sandbox_users') @> jsonb_build_array(jsonb_build_object('app_user_id', u.app_user_id));
    PERFORM credits.allow_sandbox_user(x.item ->> 'app_user_id', x.item ->> 'note')
       FROM jsonb_array_elements(rows -> 'revenuecat_sandbox_users') AS x(item);
    PERFORM credits.set_webhook_secret(w.provider, NULL) FROM credits_secrets.webhook_secrets w
      WHERE NOT (rows -> 'webhook_secrets') @> jsonb_build_array(jsonb_build_object('provider', w.provider));
    PERFORM credits.set_webhook_secret(x.item ->> 'provider', x.item ->> 'secret')
       FROM jsonb_array_elements(rows -> 'webhook_secrets') AS x(item);

    parent_salt := decode(rows ->> 'salt', 'hex');
    IF parent_salt IS NULL THEN
        RETURN jsonb_build_object('plans', jsonb_array_length(rows -> 'plans'),
                                  'operations', jsonb_array_length(rows -> 'operations'),
                                  'products', jsonb_array_length(rows -> 'products'), 'deletion_records', 0);
    END IF;
    IF EXISTS (SELECT 1 FROM credits.deletion_salt s WHERE s.salt <> parent_salt) THEN
        RAISE EXCEPTION 'this shard has a deletion salt of its own'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = '{"table": "credits.deletion_salt"}',
                  HINT = 'Copy from the parent into a new shard before its first write.';
    END IF;
    INSERT INTO credits.deletion_salt (salt) VALUES (parent_salt) ON CONFLICT DO NOTHING;
    EXECUTE format('INSERT INTO credits.deletion_records
                    SELECT (jsonb_populate_record(NULL::credits.deletion_records, t.r)).*
                      FROM %I.dblink($1, ''SELECT to_jsonb(d) FROM credits.deletion_records d'') AS t(r jsonb)
                    ON CONFLICT (user_hash) DO NOTHING', link_schema) USING parent;
    GET DIAGNOSTICS records = ROW_COUNT;
    RETURN jsonb_build_object('plans', jsonb_array_length(rows -> 'plans'),
                              'operations', jsonb_array_length(rows -> 'operations'),
                              'products', jsonb_array_length(rows -> 'products'), 'deletion_records', records);
END
$$;

COMMENT ON FUNCTION credits.move_user(uuid, text) IS
'Owner, on the source shard: moves a user that belongs to another shard there (export, import through dblink, verify, delete here), under the account lock.';
COMMENT ON FUNCTION credits.import_user(uuid, jsonb, jsonb) IS
'Owner, on the target shard: what credits.move_user calls there; replaces an interrupted earlier copy.';
COMMENT ON FUNCTION credits.copy_from_parent(text) IS
'Owner, on a shard split off a parent, before it is routed to: the parent''s config (price list, store config), settings, deletion salt and records.';

-- == Cross-shard RevenueCat TRANSFER ==
/*
 * The two halves of a TRANSFER whose users live on different shards, as the
 * router applies it (src/shard_transfer.c; README, "Pooling and scale-out").
 * Each is idempotent, keyed by the event id: transfer_out records
 * ('revenuecat-transfer', event id) on each source shard, transfer_in
 * ('revenuecat', event id) on the destination's, like a TRANSFER within one
 * shard.  Owner only (the router's login): they write as their caller.
 */
CREATE FUNCTION credits.transfer_out(event_id text, event_at timestamptz, from_users uuid[], to_user uuid)
RETURNS jsonb
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'credits_transfer_out';

CREATE FUNCTION credits.transfer_in(event_id text, event_at timestamptz, to_user uuid, entitlements jsonb)
RETURNS jsonb
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'credits_transfer_in';

COMMENT ON FUNCTION credits.transfer_out(text, timestamptz, uuid[], uuid) IS
'Router, first half of a TRANSFER across shards: marks the users'' RevenueCat entitlements transferred and returns them (once per event id).';
COMMENT ON FUNCTION credits.transfer_in(text, timestamptz, uuid, jsonb) IS
'Router, second half of a TRANSFER across shards: gives the entitlements transfer_out returned to the user (once per event id).';

-- == Settings an admin changes: credits.settings ==
/*
 * The credits.* GUCs are superuser-only (a client must not turn its own
 * limits off), and a managed admin role (Supabase's `postgres`) is no
 * superuser.  The settings an admin changes get a row here instead
 * (src/settings.c): a row wins over the GUC of the same name; without a row
 * the GUC (boot value, postgresql.conf, ALTER DATABASE/ROLE SET, SET) gives
 * the value.  The row trigger validates a value as its GUC would (unknown
 * setting 22023, not a number or boolean 22P02, out of range 22003, unknown
 * plan 22023); the statement trigger makes every backend read the rows
 * again (one query per backend and change, none per call).  Both fire in
 * every session_replication_role (a restore or a subscriber's apply).
 * Only the rows an admin added exist, so a dump restores them as they are.
 */
CREATE TABLE credits.settings (
    name       text PRIMARY KEY,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

COMMENT ON TABLE credits.settings IS
'Settings this database overrides (name without the credits. prefix, value as the GUC takes it: 15min, on).  A row wins over the GUC credits.<name>; DELETE the row to go back to it.  See credits.settings_in_effect.';

SELECT pg_catalog.pg_extension_config_dump('credits.settings', '');

-- Row level security as on every table: the admin role and the delegates
-- (who hold credits.setting) read the rows, the delegates write them.
ALTER TABLE credits.settings ENABLE ROW LEVEL SECURITY;

CREATE FUNCTION credits.settings_check()
RETURNS trigger
LANGUAGE c
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_settings_check';

CREATE FUNCTION credits.settings_changed()
RETURNS trigger
LANGUAGE c
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_settings_changed';

CREATE TRIGGER settings_check BEFORE INSERT OR UPDATE ON credits.settings
    FOR EACH ROW EXECUTE FUNCTION credits.settings_check();
CREATE TRIGGER settings_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON credits.settings
    FOR EACH STATEMENT EXECUTE FUNCTION credits.settings_changed();
ALTER TABLE credits.settings ENABLE ALWAYS TRIGGER settings_check;
ALTER TABLE credits.settings ENABLE ALWAYS TRIGGER settings_changed;

CREATE FUNCTION credits.setting(name text)
RETURNS text
LANGUAGE c STABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_setting';

COMMENT ON FUNCTION credits.setting(text) IS
'The value of a setting in effect for this session (its credits.settings row, else the GUC credits.<name>), durations in seconds.';

CREATE POLICY admins ON credits.settings FOR SELECT
    USING (pg_catalog.has_function_privilege('credits.setting(text)', 'EXECUTE'));

CREATE FUNCTION credits.setting_names()
RETURNS SETOF text
LANGUAGE c IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_setting_names';

CREATE VIEW credits.settings_in_effect WITH (security_invoker = true) AS
SELECT n.name,
       credits.setting(n.name) AS value,
       CASE WHEN s.name IS NULL THEN 'server' ELSE 'credits.settings' END AS source
  FROM credits.setting_names() AS n(name)
  LEFT JOIN credits.settings s ON s.name OPERATOR(pg_catalog.=) n.name;

COMMENT ON VIEW credits.settings_in_effect IS
'Every setting credits.settings takes, its value in effect for this session (durations in seconds) and where it comes from (server: the GUC).';

-- == Owner tasks for a managed admin role (Supabase's postgres) ==
/*
 * On Supabase the extension is created by the superuser supabase_admin
 * (supautils' privileged extensions, or by hand), which then owns every
 * object; the project's admin role `postgres` is no superuser.  The owner
 * delegates the owner's tasks to such a role (supabase/after-create.sql
 * does it for postgres):
 *
 *   delegate_owner(role)     SELECT on every table, INSERT/UPDATE/DELETE on
 *                            the config tables (plans, operations, products,
 *                            settings), EXECUTE on the owner's functions:
 *                            grant_roles, attach/detach_supabase_auth,
 *                            publish_accounts / unpublish_accounts
 *   grant_roles, attach/detach_supabase_auth, publish/unpublish_accounts
 *                            SECURITY DEFINER: they change grants, triggers
 *                            on auth.users and a publication, which only the
 *                            owner of the objects (a superuser) may
 *
 * A client role can never be delegated to (nor a role that a client role
 * is a member of), and grant_roles keeps the delegations it finds.  The
 * ledger, lots, holds and accounts stay unwritable for every role but the
 * owner: a delegate writes credit rows only through the admin functions.
 */
-- Adds (publish) or removes credits.accounts from a publication, for
-- Supabase Realtime's postgres_changes: ALTER PUBLICATION needs ownership of
-- the table too.  Nothing when it is already so (FOR ALL TABLES included).
CREATE FUNCTION credits.publish_accounts(publication name DEFAULT 'supabase_realtime')
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pub pg_publication;
BEGIN
    SELECT * INTO pub FROM pg_publication p WHERE p.pubname = publish_accounts.publication;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'publication "%" does not exist', publish_accounts.publication
            USING ERRCODE = 'undefined_object',
                  DETAIL = format('{"field": "publication", "value": %s}', to_json(publish_accounts.publication::text)),
                  HINT = 'On Supabase the Realtime publication is supabase_realtime.';
    END IF;
    IF pub.puballtables OR EXISTS (SELECT 1 FROM pg_publication_rel r
                                    WHERE r.prpubid = pub.oid AND r.prrelid = 'credits.accounts'::regclass) THEN
        RETURN;
    END IF;
    EXECUTE format('ALTER PUBLICATION %I ADD TABLE credits.accounts', pub.pubname);
END
$$;

CREATE FUNCTION credits.unpublish_accounts(publication name DEFAULT 'supabase_realtime')
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
                WHERE p.pubname = unpublish_accounts.publication AND r.prrelid = 'credits.accounts'::regclass) THEN
        EXECUTE format('ALTER PUBLICATION %I DROP TABLE credits.accounts', unpublish_accounts.publication);
    END IF;
END
$$;

COMMENT ON FUNCTION credits.publish_accounts(name) IS
'Owner (and delegates): adds credits.accounts to a publication (default supabase_realtime) for Realtime postgres_changes.';
COMMENT ON FUNCTION credits.unpublish_accounts(name) IS
'Owner (and delegates): removes credits.accounts from a publication.';

-- The functions only the owner and its delegates run.
CREATE FUNCTION credits.owner_functions()
RETURNS SETOF regprocedure
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT unnest(ARRAY[
        'credits.grant_roles(name, name)',
        'credits.attach_supabase_auth()',
        'credits.detach_supabase_auth()',
        'credits.publish_accounts(name)',
        'credits.unpublish_accounts(name)'
    ]::regprocedure[])
$$;

-- The config tables have row level security with a SELECT policy only: a
-- delegate without BYPASSRLS (plain Postgres) writes through these.
DO $$
DECLARE
    t regclass;
    cmd text;
    cond constant text := $c$pg_catalog.has_function_privilege('credits.attach_supabase_auth()', 'EXECUTE')$c$;
BEGIN
    FOREACH t IN ARRAY ARRAY['credits.plans', 'credits.operations', 'credits.products', 'credits.settings']::regclass[] LOOP
        FOREACH cmd IN ARRAY ARRAY['INSERT', 'UPDATE', 'DELETE'] LOOP
            EXECUTE format('CREATE POLICY %I ON %s FOR %s %s', 'owner_tasks_' || lower(cmd), t, cmd,
                           CASE cmd WHEN 'INSERT' THEN format('WITH CHECK (%s)', cond)
                                    WHEN 'UPDATE' THEN format('USING (%1$s) WITH CHECK (%1$s)', cond)
                                    ELSE format('USING (%s)', cond) END);
        END LOOP;
    END LOOP;
END
$$;

-- The owner's grants to a delegate; run by delegate_owner and grant_roles.
CREATE FUNCTION credits.owner_grants(admin_role name)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f regprocedure;
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA credits TO %I', admin_role);
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA credits TO %I', admin_role);
    EXECUTE format('GRANT INSERT, UPDATE, DELETE ON TABLE credits.plans, credits.operations, '
                   'credits.products, credits.settings TO %I', admin_role);
    FOR f IN SELECT credits.owner_functions() LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', f, admin_role);
    END LOOP;
    EXECUTE format('GRANT EXECUTE ON FUNCTION credits.setting(text), credits.setting_names() TO %I', admin_role);
END
$$;

-- The roles the owner's tasks are delegated to (a row per delegate_owner;
-- the grants themselves are in the catalogs, this says whose they are, so
-- that grant_roles keeps them and a hand-made broad grant is not one).
CREATE TABLE credits.owner_roles (
    role_name    name PRIMARY KEY,
    delegated_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
ALTER TABLE credits.owner_roles ENABLE ROW LEVEL SECURITY;
SELECT pg_catalog.pg_extension_config_dump('credits.owner_roles', '');

COMMENT ON TABLE credits.owner_roles IS
'The roles credits.delegate_owner() gave the owner''s tasks (owner only).';

CREATE FUNCTION credits.owner_delegates()
RETURNS SETOF name
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT o.role_name FROM credits.owner_roles o
     WHERE EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = o.role_name)
     ORDER BY 1
$$;

CREATE FUNCTION credits.delegate_owner(admin_role name)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    client name;
BEGIN
    IF admin_role IS NULL OR NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = admin_role) THEN
        RAISE EXCEPTION 'role "%" does not exist', coalesce(admin_role, 'null')
            USING ERRCODE = 'undefined_object',
                  DETAIL = format('{"field": "admin_role", "role": %s}', coalesce(to_json(admin_role::text)::text, 'null')),
                  HINT = 'On Supabase: SELECT credits.delegate_owner(''postgres'');';
    END IF;
    -- The client role (whoever holds EXECUTE on my_balance() itself) must
    -- not reach the owner's tasks through membership.
    FOR client IN
        SELECT a.grantee::regrole::name
          FROM pg_proc p, aclexplode(p.proacl) a
         WHERE p.oid = 'credits.my_balance()'::regprocedure
           AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner AND a.grantee <> 0
    LOOP
        IF pg_has_role(client, admin_role, 'MEMBER') THEN
            RAISE EXCEPTION 'the client role "%" is a member of "%"', client, admin_role
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = format('{"field": "admin_role", "role": %s, "client_role": %s}',
                                      to_json(admin_role::text), to_json(client::text)),
                      HINT = 'Delegate the owner''s tasks to an admin role that no client role can become.';
        END IF;
    END LOOP;
    INSERT INTO credits.owner_roles (role_name) VALUES (admin_role) ON CONFLICT DO NOTHING;
    PERFORM credits.owner_grants(admin_role);
END
$$;

COMMENT ON FUNCTION credits.delegate_owner(name) IS
'Owner: lets a role that is not a superuser do the owner''s tasks (edit plans, operations, products and settings; grant_roles; attach/detach_supabase_auth; publish_accounts).  Revoke with credits.revoke_owner(role).';

CREATE FUNCTION credits.revoke_owner(admin_role name)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f regprocedure;
BEGIN
    DELETE FROM credits.owner_roles o WHERE o.role_name = revoke_owner.admin_role;
    EXECUTE format('REVOKE INSERT, UPDATE, DELETE ON TABLE credits.plans, credits.operations, '
                   'credits.products, credits.settings FROM %I', admin_role);
    FOR f IN SELECT credits.owner_functions() LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM %I', f, admin_role);
    END LOOP;
END
$$;

COMMENT ON FUNCTION credits.revoke_owner(name) IS
'Owner: takes back what delegate_owner gave (the admin role''s grants from grant_roles stay).';

-- grant_roles: SECURITY DEFINER (a delegate repairs the grants; the owner,
-- a superuser on Supabase, holds the grant option), and it keeps the
-- owner's delegations.  A client role that can create roles, or grant
-- itself a role leading to the admin role, is refused like one that is a
-- member of it.
CREATE OR REPLACE FUNCTION credits.grant_roles(client_role name, admin_role name)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r name;
    f record;
    t record;
    delegates name[] := ARRAY(SELECT credits.owner_delegates());
BEGIN
    IF client_role IS NULL OR admin_role IS NULL THEN
        RAISE EXCEPTION 'client_role and admin_role must not be null'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('{"field": "%s"}', CASE WHEN client_role IS NULL THEN 'client_role' ELSE 'admin_role' END),
                  HINT = 'On Supabase: SELECT credits.grant_roles(''authenticated'', ''service_role'');';
    END IF;
    IF client_role = admin_role THEN
        RAISE EXCEPTION 'the client role and the admin role must differ'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('{"field": "admin_role", "role": %s}', to_json(admin_role::text)),
                  HINT = 'A client role that could call the admin functions could give itself credits.';
    END IF;
    FOREACH r IN ARRAY ARRAY[client_role, admin_role] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            RAISE EXCEPTION 'role "%" does not exist', r
                USING ERRCODE = 'undefined_object',
                      DETAIL = format('{"field": "%s", "role": %s}',
                                      CASE WHEN r = client_role THEN 'client_role' ELSE 'admin_role' END,
                                      to_json(r::text)),
                      HINT = format('Create it first, e.g. CREATE ROLE %I NOLOGIN; then GRANT %I TO the login role of your app.', r, r);
        END IF;
    END LOOP;

    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = client_role AND (rolsuper OR rolbypassrls)) THEN
        RAISE EXCEPTION 'the client role "%" bypasses row level security', client_role
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('{"field": "client_role", "role": %s}', to_json(client_role::text)),
                  HINT = 'Use a role without SUPERUSER and BYPASSRLS for requests made on behalf of users.';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles x
                WHERE pg_has_role(client_role, x.oid, 'MEMBER')
                  AND (x.rolcreaterole OR x.rolsuper OR x.rolbypassrls)) THEN
        RAISE EXCEPTION 'the client role "%" can create roles', client_role
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('{"field": "client_role", "role": %s, "attribute": "CREATEROLE"}',
                                  to_json(client_role::text)),
                  HINT = format('ALTER ROLE %I NOCREATEROLE; a client must not be able to grant itself the admin role.', client_role);
    END IF;
    IF EXISTS (SELECT 1 FROM pg_auth_members m
                WHERE m.admin_option
                  AND pg_has_role(client_role, m.member, 'MEMBER')
                  AND pg_has_role(m.roleid, admin_role, 'MEMBER')) THEN
        RAISE EXCEPTION 'the client role "%" can grant itself the admin role "%"', client_role, admin_role
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('{"field": "client_role", "role": %s, "can_grant": %s}',
                                  to_json(client_role::text), to_json(admin_role::text)),
                  HINT = 'Revoke the ADMIN OPTION the client role holds on a role that leads to the admin role.';
    END IF;
    IF pg_has_role(client_role, admin_role, 'MEMBER') THEN
        RAISE EXCEPTION 'the client role "%" is a member of the admin role "%"', client_role, admin_role
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('{"field": "client_role", "role": %s, "member_of": %s}',
                                  to_json(client_role::text), to_json(admin_role::text)),
                  HINT = format('REVOKE %I FROM %I; a client must not inherit the admin functions.', admin_role, client_role);
    END IF;
    FOREACH r IN ARRAY delegates LOOP
        IF pg_has_role(client_role, r, 'MEMBER') THEN
            RAISE EXCEPTION 'the client role "%" is a member of "%", which does the owner''s tasks', client_role, r
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = format('{"field": "client_role", "role": %s, "member_of": %s}',
                                      to_json(client_role::text), to_json(r::text)),
                      HINT = format('SELECT credits.revoke_owner(%L); or pick another client role.', r);
        END IF;
    END LOOP;

    -- Start from nothing, so that a broader grant made by hand is undone.
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA credits FROM %I, %I', client_role, admin_role);
    EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA credits FROM %I, %I', client_role, admin_role);
    EXECUTE format('REVOKE ALL ON ALL ROUTINES IN SCHEMA credits FROM %I, %I', client_role, admin_role);
    EXECUTE format('GRANT USAGE ON SCHEMA credits TO %I, %I', client_role, admin_role);

    FOR f IN
        SELECT p.oid::regprocedure AS fn,
               p.oid IN (SELECT credits.client_functions()) AS for_client,
               p.prorettype = 'trigger'::regtype
               OR p.oid IN (SELECT credits.owner_functions())
               OR p.oid IN ('credits.delegate_owner(name)'::regprocedure,
                            'credits.revoke_owner(name)'::regprocedure,
                            'credits.owner_grants(name)'::regprocedure) AS owner_only
          FROM pg_proc p
         WHERE p.pronamespace = 'credits'::regnamespace
    LOOP
        IF f.for_client THEN
            EXECUTE format('GRANT EXECUTE ON ROUTINE %s TO %I', f.fn, client_role);
        ELSIF NOT f.owner_only THEN
            EXECUTE format('GRANT EXECUTE ON ROUTINE %s TO %I', f.fn, admin_role);
        END IF;
    END LOOP;

    FOR t IN
        SELECT c.oid::regclass AS rel
          FROM pg_class c
         WHERE c.relnamespace = 'credits'::regnamespace
           AND ((c.relkind IN ('r', 'p') AND c.relrowsecurity
                 AND EXISTS (SELECT 1 FROM pg_policy pol
                              WHERE pol.polrelid = c.oid AND pol.polcmd IN ('r', '*')))
                OR c.oid = 'credits.my_account'::regclass)
           AND c.oid <> 'credits.settings'::regclass
    LOOP
        EXECUTE format('GRANT SELECT ON TABLE %s TO %I', t.rel, client_role);
    END LOOP;

    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA credits TO %I', admin_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION credits.current_user_id_or_null() TO %I', admin_role);

    -- The delegations stay (the revokes above may have reached a delegate).
    FOREACH r IN ARRAY delegates LOOP
        PERFORM credits.owner_grants(r);
    END LOOP;
END
$$;

-- == RevenueCat: anonymous buyers, kept events, entitlement ids, sandbox allowlist ==
-- apply_revenuecat_event (src/revenuecat.c) keeps every event it does not
-- apply in credits.webhook_events (provider 'revenuecat', with the reason),
-- links anonymous app user ids to the user a TRANSFER or an alias names,
-- maps RevenueCat entitlement ids to plans, and applies sandbox events of
-- the allowlisted users.  replay_webhook_events('revenuecat') applies the
-- kept events again.

-- The anonymous app user ids ($RCAnonymousID:...) a kept RevenueCat event names; a kept
-- TRANSFER also names the account uuids it transfers from (its purchase, delivered later, applies it).
ALTER TABLE credits.webhook_events ADD COLUMN app_user_ids text[];
CREATE INDEX webhook_events_app_user_ids ON credits.webhook_events USING gin (app_user_ids)
    WHERE app_user_ids IS NOT NULL;

CREATE TABLE credits.revenuecat_aliases (
    app_user_id text PRIMARY KEY CHECK (app_user_id <> '' AND length(app_user_id) <= 255),  -- anonymous
    user_id     uuid NOT NULL,             -- the account it belongs to
    event_id    text NOT NULL,             -- the event that linked them (TRANSFER, alias, purchase)
    linked_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX revenuecat_aliases_by_user ON credits.revenuecat_aliases (user_id);
ALTER TABLE credits.revenuecat_aliases ENABLE ROW LEVEL SECURITY;
SELECT pg_catalog.pg_extension_config_dump('credits.revenuecat_aliases', '');

CREATE TABLE credits.revenuecat_entitlements (
    entitlement_id text PRIMARY KEY CHECK (entitlement_id <> '' AND length(entitlement_id) <= 255),
    plan           text NOT NULL REFERENCES credits.plans (name) ON UPDATE CASCADE,
    created_at     timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE credits.revenuecat_entitlements ENABLE ROW LEVEL SECURITY;
SELECT pg_catalog.pg_extension_config_dump('credits.revenuecat_entitlements', '');

CREATE TABLE credits.revenuecat_sandbox_users (
    app_user_id text PRIMARY KEY CHECK (app_user_id <> '' AND length(app_user_id) <= 255),
    note        text CHECK (length(note) <= 1000),
    created_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE credits.revenuecat_sandbox_users ENABLE ROW LEVEL SECURITY;
SELECT pg_catalog.pg_extension_config_dump('credits.revenuecat_sandbox_users', '');

CREATE FUNCTION credits.map_revenuecat_entitlement(entitlement_id text, plan text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF entitlement_id IS NULL OR entitlement_id = '' OR length(entitlement_id) > 255 THEN
        RAISE EXCEPTION 'the entitlement id must be between 1 and 255 characters'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = '{"field": "entitlement_id"}',
                  HINT = 'Use the entitlement identifier of the RevenueCat dashboard (Product catalog, Entitlements).';
    END IF;
    IF plan IS NULL THEN
        DELETE FROM credits.revenuecat_entitlements m
         WHERE m.entitlement_id OPERATOR(pg_catalog.=) map_revenuecat_entitlement.entitlement_id;
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM credits.plans p WHERE p.name OPERATOR(pg_catalog.=) map_revenuecat_entitlement.plan) THEN
        RAISE EXCEPTION 'unknown plan %', quote_literal(plan)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = '{"field": "plan"}',
                  HINT = 'Name a row of credits.plans.';
    END IF;
    INSERT INTO credits.revenuecat_entitlements AS m (entitlement_id, plan)
    VALUES (map_revenuecat_entitlement.entitlement_id, map_revenuecat_entitlement.plan)
    ON CONFLICT ON CONSTRAINT revenuecat_entitlements_pkey DO UPDATE SET plan = excluded.plan;
END
$$;

COMMENT ON FUNCTION credits.map_revenuecat_entitlement(text, text) IS
'RevenueCat events whose product has no row in credits.products unlock the plan their entitlement id maps to (the best such plan); NULL removes the mapping. Then replay_webhook_events(''revenuecat'') applies the events kept as unknown_product.';

CREATE FUNCTION credits.allow_sandbox_user(app_user_id text, note text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF app_user_id IS NULL OR app_user_id = '' OR length(app_user_id) > 255 THEN
        RAISE EXCEPTION 'the app user id must be between 1 and 255 characters'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = '{"field": "app_user_id"}',
                  HINT = 'Use the app user id RevenueCat shows for the tester (a uuid for a signed-in user).';
    END IF;
    IF length(note) > 1000 THEN
        RAISE EXCEPTION 'the note is longer than 1000 characters'
            USING ERRCODE = 'string_data_right_truncation',
                  DETAIL = '{"field": "note"}',
                  HINT = 'Shorten the note.';
    END IF;
    INSERT INTO credits.revenuecat_sandbox_users AS s (app_user_id, note)
    VALUES (allow_sandbox_user.app_user_id, allow_sandbox_user.note)
    ON CONFLICT ON CONSTRAINT revenuecat_sandbox_users_pkey DO UPDATE SET note = excluded.note;
END
$$;

COMMENT ON FUNCTION credits.allow_sandbox_user(text, text) IS
'SANDBOX RevenueCat events that name this app user id (or account uuid) apply even with credits.accept_sandbox off: an App Review or QA account. Then replay_webhook_events(''revenuecat'') applies its kept sandbox events.';

CREATE FUNCTION credits.disallow_sandbox_user(app_user_id text)
RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH gone AS (
        DELETE FROM credits.revenuecat_sandbox_users s
         WHERE s.app_user_id OPERATOR(pg_catalog.=) disallow_sandbox_user.app_user_id
        RETURNING 1)
    SELECT pg_catalog.count(*) OPERATOR(pg_catalog.>) 0 FROM gone
$$;

COMMENT ON FUNCTION credits.disallow_sandbox_user(text) IS
'Removes an app user id from the sandbox allowlist; true when it was there.';

-- == Sharding: the config digests ==
-- md5 of each config copy, in key order, without created_at (each shard
-- stamps its own).  The router's check_shards (through shard_status and the
-- put_* functions above, which call it) compares every copy it names: the
-- price list (plans, operations, products), the credits.* settings (the
-- database's ALTER DATABASE ... SET and the credits.settings rows), the
-- RevenueCat entitlement map and sandbox allowlist, and the webhook secrets
-- (a secret that differs on one shard makes that shard refuse its users'
-- webhooks; a secret enters its digest as its md5 only).  Defined here, after
-- the last table it reads; the PL/pgSQL functions above that call it resolve
-- it when they run.
CREATE FUNCTION credits.config_digests(OUT config text, OUT rows bigint, OUT digest text)
RETURNS SETOF record
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'plans', count(*), md5(coalesce(string_agg((to_jsonb(p) - 'created_at')::text, E'\n' ORDER BY p.name), ''))
      FROM credits.plans p
    UNION ALL
    SELECT 'operations', count(*), md5(coalesce(string_agg((to_jsonb(o) - 'created_at')::text, E'\n' ORDER BY o.name), ''))
      FROM credits.operations o
    UNION ALL
    SELECT 'products', count(*), md5(coalesce(string_agg((to_jsonb(p) - 'created_at')::text, E'\n' ORDER BY p.product_id), ''))
      FROM credits.products p
    UNION ALL
    SELECT 'settings', count(*), md5(coalesce(string_agg(x.setting, E'\n' ORDER BY x.setting), ''))
      FROM (SELECT s.setting
              FROM pg_db_role_setting d
             CROSS JOIN LATERAL unnest(d.setconfig) AS s(setting)
             WHERE d.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND d.setrole = 0
               AND s.setting LIKE 'credits.%'
            UNION ALL
            SELECT 'credits.settings:' || t.name || '=' || t.value
              FROM credits.settings t) x
    UNION ALL
    SELECT 'revenuecat_entitlements', count(*),
           md5(coalesce(string_agg((to_jsonb(m) - 'created_at')::text, E'\n' ORDER BY m.entitlement_id), ''))
      FROM credits.revenuecat_entitlements m
    UNION ALL
    SELECT 'revenuecat_sandbox_users', count(*),
           md5(coalesce(string_agg((to_jsonb(u) - 'created_at')::text, E'\n' ORDER BY u.app_user_id), ''))
      FROM credits.revenuecat_sandbox_users u
    UNION ALL
    SELECT 'webhook_secrets', count(*), md5(coalesce(string_agg(w.provider || '=' || md5(w.secret), E'\n' ORDER BY w.provider), ''))
      FROM credits_secrets.webhook_secrets w
$$;

COMMENT ON FUNCTION credits.config_digests() IS
'md5 of each config copy in key order (created_at left out): plans, operations, products, the credits settings, the RevenueCat entitlement map and sandbox allowlist, the webhook secrets (as their md5); equal on every shard when the copies agree.';

-- == Sharding: kept webhook events move to the shard of their user ==
-- A router keeps a webhook event whose user nobody knows yet on the shard of
-- its subscription, payment or anonymous id; once a later event names the
-- user, the router moves the kept events to the user's shard with these two
-- (README, "Webhooks across shards").  SECURITY INVOKER: they write
-- credits.webhook_events, which only the owner (the router's login) may.

-- Adds kept events (rows of credits.webhook_events as jsonb) that another shard kept, then
-- replays the provider's kept events here; returns the replay's result with "added".
CREATE FUNCTION credits.import_webhook_events(provider text, events jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    added bigint;
BEGIN
    IF jsonb_typeof(events) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'events must be a JSON array of kept events'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = '{"field": "events"}',
                  HINT = 'Pass rows of credits.webhook_events as jsonb, as the router does.';
    END IF;
    INSERT INTO credits.webhook_events
    SELECT (jsonb_populate_record(NULL::credits.webhook_events, e.value)).*
      FROM jsonb_array_elements(events) e
     WHERE e.value ->> 'provider' OPERATOR(pg_catalog.=) import_webhook_events.provider
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS added = ROW_COUNT;
    RETURN credits.replay_webhook_events(import_webhook_events.provider) || jsonb_build_object('added', added);
END
$$;

-- Deletes kept events by id (moved to another shard); returns how many.
CREATE FUNCTION credits.drop_webhook_events(provider text, event_ids text[])
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH gone AS (
        DELETE FROM credits.webhook_events k
         WHERE k.provider OPERATOR(pg_catalog.=) drop_webhook_events.provider
           AND k.event_id OPERATOR(pg_catalog.=) ANY (drop_webhook_events.event_ids)
        RETURNING 1)
    SELECT pg_catalog.count(*) FROM gone
$$;

-- == RevenueCat: event order ==
-- When a store subscription's product, plan and end were set: the store time
-- of the purchase event that set them; -infinity while they are what a status
-- event named (the first event seen of the subscription was a CANCELLATION,
-- say), so an older purchase delivered after it still sets them; NULL (rows
-- from before, apply_purchase): the time of the last event.
ALTER TABLE credits.entitlements ADD COLUMN product_set_at timestamptz;
-- The same for its status: the store time of the event that set it
-- (SUBSCRIPTION_EXTENDED and PRODUCT_CHANGE set none); -infinity when the
-- row was made by an event that set none.  An older CANCELLATION (or
-- UNCANCELLATION, pause, billing issue) delivered after an extension still
-- sets the status, as it would have in order.
ALTER TABLE credits.entitlements ADD COLUMN status_set_at timestamptz;

-- == The client reads in C ==
-- credits.my_balance() and credits.my_daily_available() were SQL functions
-- around credits.balance(credits.current_user_id()): SECURITY DEFINER with a
-- pinned search_path, so never inlined; each call ran the SQL function
-- executor and three functions that each switch search_path (about 2.2 x
-- the instructions of credits.balance itself).  The C versions read the
-- caller from the JWT claims exactly as credits.current_user_id() does
-- (28000 without one) and then the account as credits.balance does.
-- CREATE OR REPLACE keeps their grants and comments.
CREATE OR REPLACE FUNCTION credits.my_balance()
RETURNS bigint
LANGUAGE c STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_my_balance';

CREATE OR REPLACE FUNCTION credits.my_daily_available()
RETURNS bigint
LANGUAGE c STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_my_daily_available';

-- == Pinned search_path on every function ==
-- The C functions without a SECURITY DEFINER (the day helpers, the stats,
-- entry_kinds, user_uuid) ran with the caller's search_path; none looks a
-- name up, but every function of the schema now pins it, so that no caller's
-- schema can ever shadow what one calls (Supabase's linter, lint 0011).
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure
          FROM pg_proc p
         WHERE p.pronamespace = 'credits'::regnamespace
           AND NOT EXISTS (SELECT 1 FROM unnest(coalesce(p.proconfig, '{}')) c WHERE c LIKE 'search_path=%')
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', f);
    END LOOP;
END
$$;

-- == Privileges (keep this section last) ==
-- Functions created above start with EXECUTE for PUBLIC: revoke it, then give
-- the roles that grant_roles() set up before the update what it gives now.
-- The client role is whoever may run my_balance(), the admin role whoever may
-- run balance(uuid); a fresh install without those roles has neither.

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA credits FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA credits FROM PUBLIC;

DO $$
DECLARE
    pair record;
BEGIN
    FOR pair IN
        WITH holders AS (
            SELECT p.oid, a.grantee::regrole::name AS role
              FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
             WHERE p.oid IN ('credits.my_balance()'::regprocedure, 'credits.balance(uuid)'::regprocedure)
               AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner AND a.grantee <> 0)
        SELECT c.role AS client_role, s.role AS admin_role
          FROM holders c, holders s
         WHERE c.oid = 'credits.my_balance()'::regprocedure
           AND s.oid = 'credits.balance(uuid)'::regprocedure
    LOOP
        PERFORM credits.grant_roles(pair.client_role, pair.admin_role);
    END LOOP;
END
$$;
