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
