/* ---- Security: client functions, row level security, roles, account deletion ---- */

/*
 * Two kinds of callers (see README, "Security model"):
 *   - the admin role (service_role on Supabase): the service functions, which
 *     take a user_id, and nothing else;
 *   - the client role (authenticated on Supabase): the client functions below,
 *     which take NO user id at all.  The user is the verified JWT's `sub`
 *     (credits.current_user_id(), 28000 when there is none).  Besides them, a
 *     client may SELECT its own rows (row level security) and the price list.
 * Nobody but the extension owner writes a table; every write goes through a
 * SECURITY DEFINER function with search_path pinned to pg_catalog, pg_temp.
 */

/*
 * Anonymous tombstones of deleted accounts: totals only, so that the books
 * of the whole system still add up after a user is gone.  Nothing here
 * identifies the user (no id, no hash of it, no reference or metadata).
 */
CREATE TABLE credits.deleted_accounts (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    plan               text,                     -- base plan at deletion
    entries            bigint NOT NULL,          -- ledger entries removed
    granted            bigint NOT NULL,          -- grant + purchase + allocation
    spent              bigint NOT NULL,          -- consumes and captures (and credits held by open holds)
    refunded           bigint NOT NULL,
    expired            bigint NOT NULL,
    adjusted           bigint NOT NULL,          -- signed sum of adjust entries
    balance            bigint NOT NULL,          -- balance when deleted
    account_created_on date,                     -- day only (UTC)
    deleted_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (balance = granted - spent + refunded - expired + adjusted)
);
ALTER TABLE credits.deleted_accounts ENABLE ROW LEVEL SECURITY;
SELECT pg_catalog.pg_extension_config_dump('credits.deleted_accounts', '');
SELECT pg_catalog.pg_extension_config_dump('credits.deleted_accounts_id_seq', '');

-- A user's lots in one index scan (the read surface, account deletion).
CREATE INDEX lots_by_user ON credits.lots (user_id, id);

CREATE TYPE credits.account_deletion AS (
    user_id      uuid,
    deleted      boolean,        -- false: there was no account (nothing to do)
    tombstone_id bigint,         -- credits.deleted_accounts.id
    entries      bigint,
    granted      bigint,
    spent        bigint,
    refunded     bigint,
    expired      bigint,
    adjusted     bigint,
    balance      bigint,
    deleted_at   timestamptz
);

CREATE FUNCTION credits.delete_account(user_id uuid)
RETURNS credits.account_deletion
LANGUAGE c VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_delete_account';

COMMENT ON FUNCTION credits.delete_account(uuid) IS
'Deletes every row of the user (ledger included) and keeps an anonymous tombstone of the totals; deleted = false when there was no account.';

/* ---- Identity ---- */

CREATE FUNCTION credits.current_user_id_or_null()
RETURNS uuid
LANGUAGE c STABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_current_user_id_or_null';

COMMENT ON FUNCTION credits.current_user_id_or_null() IS
'The authenticated caller (sub claim of request.jwt.claims), or NULL: what the row level security policies compare with.';

/* ---- Row level security: a client sees its own rows, and the price list ---- */

/*
 * (SELECT ...) makes the planner evaluate the caller once per query (an
 * InitPlan) instead of once per row.  A request without a user sees nothing.
 * There are SELECT policies only: with row level security enabled, no
 * policy means no INSERT, UPDATE or DELETE through RLS either (on top of
 * the missing privileges).  Policies and views are stored parsed, so the
 * caller's search_path cannot change the operators or functions they use.
 */
CREATE POLICY own_rows ON credits.accounts FOR SELECT
    USING (user_id = (SELECT credits.current_user_id_or_null()));
CREATE POLICY own_rows ON credits.ledger FOR SELECT
    USING (user_id = (SELECT credits.current_user_id_or_null()));
CREATE POLICY own_rows ON credits.lots FOR SELECT
    USING (user_id = (SELECT credits.current_user_id_or_null()));
CREATE POLICY own_rows ON credits.holds FOR SELECT
    USING (user_id = (SELECT credits.current_user_id_or_null()));
-- Prices and plans are public information; only the owner edits them.
CREATE POLICY readable ON credits.plans FOR SELECT USING (true);
CREATE POLICY readable ON credits.operations FOR SELECT USING (true);
-- credits.deleted_accounts: no policy, never granted to a client.

/*
 * The caller's account in one row: effective plan, balance, daily limit and
 * what is left of it today in the account's time zone.  Read-only and
 * computed without writing anything, so it works in PostgREST's read-only
 * GET transactions: lots past their expiry already stop counting and timed-out
 * holds already give their credits back, as the next touch will record.
 * (my_balance() and my_daily_available() do that touch and are exact; the
 * view may differ from them only in the minutes after a hold timed out:
 * today's count, or credits held from a lot that has expired since.)  security_invoker: the caller's own privileges
 * and row level security apply, and the WHERE keeps the caller's row even
 * for a role that bypasses RLS.
 */
CREATE VIEW credits.my_account WITH (security_invoker = true, security_barrier = true) AS
SELECT a.user_id,
       p.name AS plan,
       a.plan AS base_plan,
       (a.balance
        - coalesce((SELECT sum(l.remaining)
                      FROM credits.lots l
                     WHERE l.user_id = a.user_id
                       AND l.spendable
                       AND l.expires_at <= now()), 0)
        + coalesce((SELECT sum(h.amount)
                      FROM credits.holds h
                     WHERE h.user_id = a.user_id
                       AND h.status = 'open'
                       AND h.expires_at <= now()), 0))::bigint AS balance,
       p.daily_limit,
       (CASE
            WHEN p.daily_limit IS NULL THEN NULL
            WHEN a.day = (now() AT TIME ZONE a.timezone)::date
            THEN greatest(p.daily_limit - a.day_count, 0)
            ELSE p.daily_limit
        END)::bigint AS daily_remaining,
       a.timezone,
       CASE WHEN p.name <> a.plan THEN a.entitlement_until END AS plan_until,
       a.created_at
  FROM credits.accounts a
  JOIN credits.plans p ON p.name = CASE
       WHEN a.entitlement_plan IS NOT NULL
        AND (a.entitlement_until IS NULL OR a.entitlement_until > now())
       THEN a.entitlement_plan ELSE a.plan END
 WHERE a.user_id = (SELECT credits.current_user_id_or_null());

COMMENT ON VIEW credits.my_account IS
'The caller''s account: effective plan, spendable balance, daily limit and today''s remaining operations.';

/* ---- Client functions: the user comes from the JWT, never from an argument ---- */

CREATE FUNCTION credits.consume(
    operation text,
    units bigint DEFAULT 1,
    idempotency_key text DEFAULT NULL,
    reference text DEFAULT NULL,
    metadata jsonb DEFAULT '{}')
RETURNS credits.receipt
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM credits.credits_consume(credits.current_user_id(), consume.operation,
                                          consume.units, consume.idempotency_key,
                                          consume.reference, consume.metadata)
$$;

COMMENT ON FUNCTION credits.consume(text, bigint, text, text, jsonb) IS
'Client: charges the caller (JWT sub) for an operation, like credits_consume.';

CREATE FUNCTION credits.my_balance()
RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT credits.balance(credits.current_user_id()) $$;

COMMENT ON FUNCTION credits.my_balance() IS
'Client: the caller''s spendable credits.';

CREATE FUNCTION credits.my_daily_available()
RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT credits.daily_available(credits.current_user_id()) $$;

COMMENT ON FUNCTION credits.my_daily_available() IS
'Client: operations the caller has left today (NULL when the plan has no daily limit).';

CREATE FUNCTION credits.set_my_timezone(tz text)
RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT credits.set_timezone(credits.current_user_id(), set_my_timezone.tz) $$;

COMMENT ON FUNCTION credits.set_my_timezone(text) IS
'Client: sets the IANA time zone whose midnight resets the caller''s daily limit.';

/*
 * The caller's ledger, newest first, by keyset pagination: pass the last id
 * of a page as before_id to get the next one.
 */
CREATE FUNCTION credits.my_history("limit" integer DEFAULT 50, before_id bigint DEFAULT NULL)
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
#variable_conflict use_column
DECLARE
    uid constant uuid := credits.current_user_id();
BEGIN
    IF my_history."limit" IS NULL OR my_history."limit" < 1 OR my_history."limit" > 1000 THEN
        RAISE EXCEPTION 'limit must be between 1 and 1000'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = '{"field": "limit", "min": 1, "max": 1000}',
                  HINT = 'Page through longer histories with before_id (the last id of the previous page).';
    END IF;
    RETURN QUERY
        SELECT e.id, e.kind::text, e.amount, e.balance_after, e.daily_remaining, e.operation,
               e.units, e.list_cost, e.ref_id, e.reference, e.idempotency_key, e.reason,
               e.metadata, e.created_at
          FROM credits.ledger e
         WHERE e.user_id = uid
           AND (my_history.before_id IS NULL OR e.id < my_history.before_id)
         ORDER BY e.id DESC
         LIMIT my_history."limit";
END
$$;

COMMENT ON FUNCTION credits.my_history(integer, bigint) IS
'Client: the caller''s ledger entries, newest first; pass the last id seen as before_id for the next page.';

/*
 * The caller's usage by operation since a point in time: billable
 * operations run (consumes and captured holds), units, credits charged net
 * of refunds, and list cost (what they would have cost without a premium
 * bypass).  Open holds are not charged yet and count nothing; a refund
 * counts for the operation of the charge it refunds.  NULL since: all time.
 */
CREATE FUNCTION credits.my_usage(since timestamptz DEFAULT now() - interval '30 days')
RETURNS TABLE (
    operation  text,
    operations bigint,
    units      bigint,
    credits    bigint,
    list_cost  bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    uid constant uuid := credits.current_user_id();
BEGIN
    RETURN QUERY
        WITH mine AS (
            SELECT e.kind, e.amount, e.units, e.list_cost,
                   coalesce(e.operation, r.operation, rr.operation) AS op
              FROM credits.ledger e
              LEFT JOIN credits.ledger r ON r.id = e.ref_id AND r.user_id = e.user_id
              LEFT JOIN credits.ledger rr ON rr.id = r.ref_id AND rr.user_id = e.user_id
             WHERE e.user_id = uid
               AND (my_usage.since IS NULL OR e.created_at >= my_usage.since)
               AND e.kind IN ('consume', 'capture', 'refund')
        )
        SELECT m.op,
               count(*) FILTER (WHERE m.kind IN ('consume', 'capture')),
               coalesce(sum(m.units) FILTER (WHERE m.kind IN ('consume', 'capture')), 0)::bigint,
               coalesce(-sum(m.amount), 0)::bigint,
               coalesce(sum(m.list_cost) FILTER (WHERE m.kind IN ('consume', 'capture')), 0)::bigint
          FROM mine m
         WHERE m.op IS NOT NULL
         GROUP BY m.op
         ORDER BY m.op;
END
$$;

COMMENT ON FUNCTION credits.my_usage(timestamptz) IS
'Client: the caller''s usage by operation since a time (default 30 days): operations, units, credits charged net of refunds, list cost.';

CREATE FUNCTION credits.delete_my_account()
RETURNS credits.account_deletion
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM credits.delete_account(credits.current_user_id()) $$;

COMMENT ON FUNCTION credits.delete_my_account() IS
'Client: deletes the caller''s account and history (an anonymous tombstone of the totals is kept).';

/* ---- Roles ---- */

/*
 * The functions a client role may call: no user id among their arguments.
 * Every other function of the schema is for the admin role, except the
 * setup functions (grant_roles, attach/detach_supabase_auth: the owner's)
 * and trigger functions (nobody calls those).
 */
CREATE FUNCTION credits.client_functions()
RETURNS SETOF regprocedure
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT unnest(ARRAY[
        'credits.consume(text, bigint, text, text, jsonb)',
        'credits.my_balance()',
        'credits.my_daily_available()',
        'credits.set_my_timezone(text)',
        'credits.my_history(integer, bigint)',
        'credits.my_usage(timestamptz)',
        'credits.delete_my_account()',
        'credits.claim_pending_purchase(text, text)',
        'credits.current_user_id()',
        'credits.current_user_id_or_null()'
    ]::regprocedure[])
$$;

COMMENT ON FUNCTION credits.client_functions() IS
'The functions grant_roles() grants to the client role.';

CREATE FUNCTION credits.grant_roles(client_role name, admin_role name)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r name;
    f record;
    t record;
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

    -- A client role that skips row level security, or that inherits the admin
    -- role, would read or do everything: refuse it.
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = client_role AND (rolsuper OR rolbypassrls)) THEN
        RAISE EXCEPTION 'the client role "%" bypasses row level security', client_role
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('{"field": "client_role", "role": %s}', to_json(client_role::text)),
                  HINT = 'Use a role without SUPERUSER and BYPASSRLS for requests made on behalf of users.';
    END IF;
    IF pg_has_role(client_role, admin_role, 'MEMBER') THEN
        RAISE EXCEPTION 'the client role "%" is a member of the admin role "%"', client_role, admin_role
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('{"field": "client_role", "role": %s, "member_of": %s}',
                                  to_json(client_role::text), to_json(admin_role::text)),
                  HINT = format('REVOKE %I FROM %I; a client must not inherit the admin functions.', admin_role, client_role);
    END IF;

    -- Start from nothing, so that a broader grant made by hand is undone.
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA credits FROM %I, %I', client_role, admin_role);
    EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA credits FROM %I, %I', client_role, admin_role);
    EXECUTE format('REVOKE ALL ON ALL ROUTINES IN SCHEMA credits FROM %I, %I', client_role, admin_role);
    EXECUTE format('GRANT USAGE ON SCHEMA credits TO %I, %I', client_role, admin_role);

    FOR f IN
        SELECT p.oid::regprocedure AS fn,
               p.oid IN (SELECT credits.client_functions()) AS for_client,
               p.prorettype = 'trigger'::regtype
               OR p.oid IN ('credits.grant_roles(name, name)'::regprocedure,
                            'credits.attach_supabase_auth()'::regprocedure,
                            'credits.detach_supabase_auth()'::regprocedure) AS owner_only
          FROM pg_proc p
         WHERE p.pronamespace = 'credits'::regnamespace
    LOOP
        IF f.for_client THEN
            EXECUTE format('GRANT EXECUTE ON ROUTINE %s TO %I', f.fn, client_role);
        ELSIF NOT f.owner_only THEN
            EXECUTE format('GRANT EXECUTE ON ROUTINE %s TO %I', f.fn, admin_role);
        END IF;
    END LOOP;

    -- The read surface: every relation with a SELECT policy, and the account view.
    FOR t IN
        SELECT c.oid::regclass AS rel
          FROM pg_class c
         WHERE c.relnamespace = 'credits'::regnamespace
           AND ((c.relkind IN ('r', 'p') AND c.relrowsecurity
                 AND EXISTS (SELECT 1 FROM pg_policy pol
                              WHERE pol.polrelid = c.oid AND pol.polcmd IN ('r', '*')))
                OR c.oid = 'credits.my_account'::regclass)
    LOOP
        EXECUTE format('GRANT SELECT ON TABLE %s TO %I', t.rel, client_role);
    END LOOP;

    -- Admins read everything and write nothing.  Row level security still
    -- applies to an admin role without BYPASSRLS (Supabase's service_role has
    -- it), whose policies call current_user_id_or_null().
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA credits TO %I', admin_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION credits.current_user_id_or_null() TO %I', admin_role);
END
$$;

COMMENT ON FUNCTION credits.grant_roles(name, name) IS
'Sets the privileges of the two roles on schema credits: the client functions and the read surface to client_role, every service function to admin_role, nothing else (no table writes).';

/* ---- Supabase Auth: accounts follow auth.users ---- */

CREATE FUNCTION credits.on_auth_user_created()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- The first touch creates the account with its plan's signup bonus.
    PERFORM credits.balance(NEW.id);
    RETURN NULL;
END
$$;

CREATE FUNCTION credits.on_auth_user_deleted()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM credits.delete_account(OLD.id);
    RETURN NULL;
END
$$;

CREATE FUNCTION credits.attach_supabase_auth()
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
END
$$;

COMMENT ON FUNCTION credits.attach_supabase_auth() IS
'Supabase: a new auth.users row gets its account and signup bonus; a deleted one loses its account (credits.delete_account).';

CREATE FUNCTION credits.detach_supabase_auth()
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF to_regclass('auth.users') IS NOT NULL THEN
        DROP TRIGGER IF EXISTS credits_account_on_signup ON auth.users;
        DROP TRIGGER IF EXISTS credits_account_on_delete ON auth.users;
    END IF;
END
$$;

COMMENT ON FUNCTION credits.detach_supabase_auth() IS
'Removes the triggers of attach_supabase_auth() (run it before DROP EXTENSION).';
