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

-- Signup creates the account (the read functions no longer do).
CREATE OR REPLACE FUNCTION credits.on_auth_user_created()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
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
