/* credits_router--1.0.sql: the credits API on a router database, each call
 * run by PL/Proxy on the shard database (CREATE EXTENSION credits, then
 * credits.configure_shard) that owns its user.  README, "Pooling and scale-out".
 *
 * The shards are the partitions p0 .. pN-1 of the foreign server
 * credits_shards (FOREIGN DATA WRAPPER plproxy, N a power of 2), reached with
 * the user mapping of this extension's owner: every function here that calls
 * a shard is SECURITY DEFINER, so the shards see one role (the `actor` of the
 * entries written through the router) and this database decides who may call
 * what (credits_router.grant_roles).
 *
 * Routing, computed here only:
 *   a user          partition hashtext(user_id::text) & (N - 1)   (credits_router.user_shard)
 *   a ledger entry  partition id & (N - 1): the low 10 bits of a shard's
 *                   ledger ids are the user's bucket, hash & 1023
 *                   (credits.configure_shard, src/shard.c)         (credits_router.entry_shard)
 *   a TRANSFER      across shards: two idempotent halves keyed by the event id
 *   a webhook       the user its body names, else the shard holding its
 *                   subscription or payment, else its key's shard, which
 *                   keeps it until a later event names the user ("Webhooks")
 *   everything      RUN ON ALL, combined here (reconcile, the analytics
 *                   views, stats, the config writes)
 *   pure functions  computed here (user_uuid, local_day, ...)
 * Every function of a shard's schema credits is here with the same
 * signature, or listed by credits_router.shard_only_functions();
 * credits_router.function_parity() checks it against a shard's catalog.
 * Each shard runs its part in its own transaction (PL/Proxy calls are
 * autocommit): a call on ALL shards that fails on one has still committed on
 * the others.
 *
 * Client functions read the user from the JWT here (request.jwt.claims, with
 * the same C function as the extension) and call the shard's service
 * function, or its user_* twin of a client reader: claims do not cross the
 * hop.  Nothing is stored in this database.
 */

\echo Use "CREATE EXTENSION credits_router" to load this file. \quit

CREATE SCHEMA credits_router;

/* ---- Types, as the shards define them ---- */

CREATE TYPE credits.receipt AS (
    entry_id        bigint,
    user_id         uuid,
    kind            text,
    amount          bigint,
    balance         bigint,
    daily_remaining bigint,
    replayed        boolean,
    created_at      timestamptz
);

CREATE TYPE credits.account_deletion AS (
    user_id      uuid,
    deleted      boolean,
    tombstone_id bigint,
    entries      bigint,
    granted      bigint,
    spent        bigint,
    refunded     bigint,
    expired      bigint,
    adjusted     bigint,
    balance      bigint,
    deleted_at   timestamptz
);

CREATE TYPE credits.rate_limit_result AS (
    allowed        boolean,
    "limit"        integer,
    remaining      integer,
    retry_after_ms bigint,
    reset_after_ms bigint
);

/* ---- Routing ---- */

-- Partitions of the cluster: the p0, p1, ... options of server credits_shards.
CREATE FUNCTION credits_router.shard_count()
RETURNS integer
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT count(*)::integer
      FROM pg_foreign_server s
     CROSS JOIN LATERAL unnest(s.srvoptions) AS o(opt)
     WHERE s.srvname = 'credits_shards' AND o.opt ~ '^p[0-9]+='
$$;

-- The hash PL/Proxy masks with N - 1 to pick a user's shard: hashtext(user_id::text)
-- (NULL: shard 0, which refuses it).  In C, so that every routed call loads the
-- library whose log hook turns "shard unreachable" into PT503 (src/shard.c).
CREATE FUNCTION credits_router.user_shard(user_id uuid)
RETURNS integer
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'credits_shard_user_hash';

-- The low 10 bits of a ledger id: its user's bucket (hashtext & 1023), which PL/Proxy
-- masks with N - 1 like the user's hash; NULL or negative: shard 0.
CREATE FUNCTION credits_router.entry_shard(id bigint)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT CASE WHEN id > 0 THEN (id & 1023)::integer ELSE 0 END $$;

CREATE FUNCTION credits_router.uuid_pattern()
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT '^\{?[0-9a-fA-F]{4}(-?[0-9a-fA-F]{4}){7}\}?$'::text $$;

-- The uuid app user ids of a TRANSFER's list (transferred_to / transferred_from), in order.
CREATE FUNCTION credits_router.event_users(ev jsonb, field text)
RETURNS uuid[]
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(array_agg(t.value::uuid ORDER BY t.i), '{}')
      FROM jsonb_array_elements_text(CASE WHEN jsonb_typeof(ev -> field) = 'array' THEN ev -> field ELSE '[]' END)
           WITH ORDINALITY AS t(value, i)
     WHERE t.value ~ credits_router.uuid_pattern()
$$;

/* ---- Identity: the credits library's own readers of request.jwt.claims ---- */

CREATE FUNCTION credits.current_user_id()
RETURNS uuid
LANGUAGE c STABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_current_user_id';

CREATE FUNCTION credits.current_user_id_or_null()
RETURNS uuid
LANGUAGE c STABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_current_user_id_or_null';

/* ---- Service functions: on the user's shard ---- */

CREATE FUNCTION credits.credits_consume(
    user_id uuid, operation text, units bigint DEFAULT 1, idempotency_key text DEFAULT NULL,
    reference text DEFAULT NULL, metadata jsonb DEFAULT '{}')
RETURNS credits.receipt LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.user_shard(user_id); $$;

CREATE FUNCTION credits.grant_credits(
    user_id uuid, amount bigint, reason text, idempotency_key text DEFAULT NULL,
    expires_at timestamptz DEFAULT NULL, reference text DEFAULT NULL, metadata jsonb DEFAULT '{}')
RETURNS credits.receipt LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.user_shard(user_id); $$;

CREATE FUNCTION credits.reserve(
    user_id uuid, operation text, units bigint DEFAULT 1, idempotency_key text DEFAULT NULL,
    reference text DEFAULT NULL, metadata jsonb DEFAULT '{}')
RETURNS credits.receipt LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.user_shard(user_id); $$;

CREATE FUNCTION credits.balance(user_id uuid)
RETURNS bigint LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.user_shard(user_id); $$;

CREATE FUNCTION credits.daily_available(user_id uuid)
RETURNS bigint LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.user_shard(user_id); $$;

CREATE FUNCTION credits.set_plan(user_id uuid, plan text)
RETURNS void LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.user_shard(user_id); $$;

CREATE FUNCTION credits.set_timezone(user_id uuid, tz text)
RETURNS void LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.user_shard(user_id); $$;

CREATE FUNCTION credits.rate_limit(user_id uuid, action text, burst integer, per_second double precision)
RETURNS credits.rate_limit_result LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.user_shard(user_id); $$;

CREATE FUNCTION credits.apply_purchase(
    user_id uuid, product_id text, transaction_id text, source text,
    purchased_at timestamptz, expires_at timestamptz DEFAULT NULL)
RETURNS credits.receipt LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.user_shard(user_id); $$;

CREATE FUNCTION credits_router.apply_revenuecat_event_on(part integer, payload jsonb)
RETURNS jsonb LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON part; SELECT credits.apply_revenuecat_event($2); $$;

CREATE FUNCTION credits_router.transfer_out_on(
    part integer, event_id text, event_at timestamptz, from_users uuid[], to_user uuid)
RETURNS jsonb LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON part;
      SELECT credits.transfer_out(event_id, event_at, from_users, to_user); $$;

CREATE FUNCTION credits_router.transfer_in_on(
    to_user uuid, event_id text, event_at timestamptz, entitlements jsonb)
RETURNS jsonb LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.user_shard(to_user);
      SELECT credits.transfer_in(event_id, event_at, to_user, entitlements); $$;

CREATE FUNCTION credits.delete_account(user_id uuid)
RETURNS credits.account_deletion LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.user_shard(user_id); $$;

CREATE FUNCTION credits.open_account(user_id uuid)
RETURNS boolean LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.user_shard(user_id); $$;

CREATE FUNCTION credits.account_status(
    user_id uuid, OUT plan text, OUT base_plan text, OUT balance bigint, OUT daily_limit integer,
    OUT daily_remaining bigint, OUT plan_until timestamptz)
RETURNS record LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.user_shard(user_id); $$;

CREATE FUNCTION credits.account_summary(user_id uuid, recent integer DEFAULT 10)
RETURNS text LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.user_shard(user_id); $$;

CREATE FUNCTION credits.grant_withheld_bonus(user_id uuid)
RETURNS boolean LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.user_shard(user_id); $$;

-- Each shard has its own salt: the reference its NOTIFY payloads carry comes from the user's shard.
CREATE FUNCTION credits.user_ref(user_id uuid)
RETURNS text LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.user_shard(user_id); $$;

/* ---- Service functions on a ledger entry: on the shard that drew its id ---- */

CREATE FUNCTION credits.capture(hold_id bigint, units bigint DEFAULT NULL)
RETURNS credits.receipt LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.entry_shard(hold_id); $$;

CREATE FUNCTION credits.release(hold_id bigint)
RETURNS credits.receipt LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.entry_shard(hold_id); $$;

CREATE FUNCTION credits.refund(
    entry_id bigint, amount bigint DEFAULT NULL, reason text DEFAULT NULL, idempotency_key text DEFAULT NULL)
RETURNS credits.receipt LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.entry_shard(entry_id); $$;

/* ---- The client readers' twins, on the user's shard ---- */

CREATE FUNCTION credits.user_history(user_id uuid, "limit" integer DEFAULT 50, before_id bigint DEFAULT NULL)
RETURNS TABLE (
    id bigint, kind text, amount bigint, balance_after bigint, daily_remaining bigint,
    operation text, units bigint, list_cost bigint, ref_id bigint, reference text,
    idempotency_key text, reason text, metadata jsonb, created_at timestamptz)
LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.user_shard($1); $$;

CREATE FUNCTION credits.user_usage(user_id uuid, since timestamptz DEFAULT now() - interval '30 days')
RETURNS TABLE (operation text, operations bigint, units bigint, credits bigint, list_cost bigint)
LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.user_shard($1); $$;

-- credits.user_account_status (SETOF credits.my_account) follows the view below.
CREATE FUNCTION credits_router.user_account_status(for_user uuid)
RETURNS TABLE (
    user_id uuid, plan text, base_plan text, balance bigint, daily_limit integer,
    daily_remaining bigint, timezone text, plan_until timestamptz, created_at timestamptz)
LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.user_shard($1); TARGET credits.user_account_status; $$;

CREATE FUNCTION credits.user_claim_pending_purchase(user_id uuid, product_id text, transaction_id text)
RETURNS jsonb LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.user_shard(user_id); $$;

/* ---- Client functions: the user comes from the JWT, never from an argument ---- */

CREATE FUNCTION credits.consume(
    operation text, units bigint DEFAULT 1, idempotency_key text DEFAULT NULL,
    reference text DEFAULT NULL, metadata jsonb DEFAULT '{}')
RETURNS credits.receipt
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM credits.credits_consume(credits.current_user_id(), consume.operation, consume.units,
                                          consume.idempotency_key, consume.reference, consume.metadata)
$$;

CREATE FUNCTION credits.my_balance()
RETURNS bigint LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT credits.balance(credits.current_user_id()) $$;

CREATE FUNCTION credits.my_daily_available()
RETURNS bigint LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT credits.daily_available(credits.current_user_id()) $$;

CREATE FUNCTION credits.set_my_timezone(tz text)
RETURNS void LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT credits.set_timezone(credits.current_user_id(), set_my_timezone.tz) $$;

CREATE FUNCTION credits.delete_my_account()
RETURNS credits.account_deletion LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM credits.delete_account(credits.current_user_id()) $$;

CREATE FUNCTION credits.my_history("limit" integer DEFAULT 50, before_id bigint DEFAULT NULL)
RETURNS TABLE (
    id bigint, kind text, amount bigint, balance_after bigint, daily_remaining bigint,
    operation text, units bigint, list_cost bigint, ref_id bigint, reference text,
    idempotency_key text, reason text, metadata jsonb, created_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM credits.user_history(credits.current_user_id(), my_history."limit", my_history.before_id) $$;

CREATE FUNCTION credits.my_usage(since timestamptz DEFAULT now() - interval '30 days')
RETURNS TABLE (operation text, operations bigint, units bigint, credits bigint, list_cost bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM credits.user_usage(credits.current_user_id(), my_usage.since) $$;

CREATE FUNCTION credits.my_account_status()
RETURNS TABLE (
    user_id uuid, plan text, base_plan text, balance bigint, daily_limit integer,
    daily_remaining bigint, timezone text, plan_until timestamptz, created_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.* FROM (SELECT credits.current_user_id_or_null() AS id) u
     CROSS JOIN LATERAL credits_router.user_account_status(u.id) s
     WHERE u.id IS NOT NULL
$$;

CREATE FUNCTION credits.claim_pending_purchase(product_id text, transaction_id text)
RETURNS jsonb LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT credits.user_claim_pending_purchase(credits.current_user_id(),
                                               claim_pending_purchase.product_id,
                                               claim_pending_purchase.transaction_id)
$$;

CREATE VIEW credits.my_account WITH (security_invoker = true, security_barrier = true) AS
    SELECT s.user_id, s.plan, s.base_plan, s.balance, s.daily_limit, s.daily_remaining,
           s.timezone, s.plan_until, s.created_at
      FROM credits.my_account_status() s;

CREATE FUNCTION credits.user_account_status(user_id uuid)
RETURNS SETOF credits.my_account LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM credits_router.user_account_status(user_account_status.user_id) $$;

/* ---- Every shard, combined ---- */

CREATE FUNCTION credits_router.reconcile_all()
RETURNS TABLE (user_id uuid, item text, object_id bigint, cached bigint, derived bigint)
LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON ALL; SELECT * FROM credits.reconcile(NULL); $$;

CREATE FUNCTION credits_router.reconcile_user(for_user uuid)
RETURNS TABLE (user_id uuid, item text, object_id bigint, cached bigint, derived bigint)
LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.user_shard($1); TARGET credits.reconcile; $$;

-- Users are disjoint across shards: the union of the shards' discrepancies is the whole.
CREATE FUNCTION credits.reconcile(user_id uuid DEFAULT NULL)
RETURNS TABLE (user_id uuid, item text, object_id bigint, cached bigint, derived bigint)
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM credits_router.reconcile_all() WHERE $1 IS NULL
    UNION ALL
    SELECT * FROM credits_router.reconcile_user($1) WHERE $1 IS NOT NULL
$$;

CREATE FUNCTION credits_router.expire_holds(batch_size integer)
RETURNS SETOF bigint LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON ALL; TARGET credits.expire_holds; $$;

-- batch_size accounts per shard; holds released on all shards together.
CREATE FUNCTION credits.expire_holds(batch_size integer DEFAULT 1000)
RETURNS bigint LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT coalesce(sum(n), 0)::bigint FROM credits_router.expire_holds(expire_holds.batch_size) n $$;

CREATE FUNCTION credits_router.rate_limit_prune()
RETURNS SETOF bigint LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON ALL; TARGET credits.rate_limit_prune; $$;

CREATE FUNCTION credits.rate_limit_prune()
RETURNS bigint LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT coalesce(sum(n), 0)::bigint FROM credits_router.rate_limit_prune() n $$;

CREATE FUNCTION credits_router.stats_reset()
RETURNS SETOF integer LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON ALL; SELECT 1 FROM credits.stats_reset(); $$;

CREATE FUNCTION credits.stats_reset()
RETURNS void LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT count(*) FROM credits_router.stats_reset() $$;

/*
 * The analytics views, shard by shard (each row as the shard's view has it),
 * then combined by the views of the same names below.
 */
CREATE FUNCTION credits_router.stats_rows()
RETURNS TABLE (reason text, operation text, denials bigint, last_denied_at timestamptz, scope text)
LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON ALL;
      SELECT s.reason, s.operation, s.denials, s.last_denied_at, s.scope FROM credits.stats s; $$;

CREATE FUNCTION credits_router.usage_daily_rows()
RETURNS TABLE (day date, operation text, plan text, operations bigint, units bigint,
               credits_charged bigint, list_cost bigint)
LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON ALL;
      SELECT u.day, u.operation, u.plan, u.operations, u.units, u.credits_charged, u.list_cost
        FROM credits.usage_daily u; $$;

CREATE FUNCTION credits_router.depletions_rows()
RETURNS TABLE (day date, user_id uuid, plan text, operation text, depletions bigint,
               first_depleted_at timestamptz, purchased_after boolean)
LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON ALL;
      SELECT d.day, d.user_id, d.plan, d.operation, d.depletions, d.first_depleted_at, d.purchased_after
        FROM credits.depletions d; $$;

CREATE FUNCTION credits_router.top_users_rows()
RETURNS TABLE (user_id uuid, plan text, credits_spent bigint, operations bigint, list_cost bigint,
               balance bigint, last_operation_at timestamptz)
LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON ALL;
      SELECT t.user_id, t.plan, t.credits_spent, t.operations, t.list_cost, t.balance, t.last_operation_at
        FROM credits.top_users t; $$;

CREATE FUNCTION credits_router.purchases_summary_rows()
RETURNS TABLE (period text, purchases bigint, credits_purchased bigint, buyers bigint, active_users bigint)
LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON ALL;
      SELECT p.period, p.purchases, p.credits_purchased, p.buyers, p.active_users
        FROM credits.purchases_summary p; $$;

-- Denials add up; scope says how many shards answered and how they count.
CREATE VIEW credits.stats AS
    SELECT s.reason, s.operation, sum(s.denials)::bigint AS denials, max(s.last_denied_at) AS last_denied_at,
           string_agg(DISTINCT s.scope, ', ') AS scope
      FROM credits_router.stats_rows() s
     GROUP BY s.reason, s.operation
     ORDER BY denials DESC, s.reason, s.operation;

CREATE VIEW credits.usage_daily AS
    SELECT u.day, u.operation, u.plan,
           sum(u.operations)::bigint AS operations, sum(u.units)::bigint AS units,
           sum(u.credits_charged)::bigint AS credits_charged, sum(u.list_cost)::bigint AS list_cost
      FROM credits_router.usage_daily_rows() u
     GROUP BY u.day, u.operation, u.plan
     ORDER BY u.day DESC, u.operation, u.plan;

CREATE VIEW credits.depletions AS
    SELECT d.day, d.user_id, d.plan, d.operation, d.depletions, d.first_depleted_at, d.purchased_after
      FROM credits_router.depletions_rows() d
     ORDER BY d.day DESC, d.first_depleted_at, d.user_id;

-- Ranked again over every shard's users.
CREATE VIEW credits.top_users AS
    SELECT rank() OVER (ORDER BY t.credits_spent DESC, t.list_cost DESC) AS rank,
           t.user_id, t.plan, t.credits_spent, t.operations, t.list_cost, t.balance, t.last_operation_at
      FROM credits_router.top_users_rows() t
     ORDER BY rank, t.user_id;

-- Buyers and active users are distinct users, and no user is on two shards: the counts add up.
CREATE VIEW credits.purchases_summary AS
    SELECT p.period, sum(p.purchases)::bigint AS purchases, sum(p.credits_purchased)::bigint AS credits_purchased,
           sum(p.buyers)::bigint AS buyers, sum(p.active_users)::bigint AS active_users,
           round(sum(p.buyers)::numeric / nullif(sum(p.active_users), 0), 4) AS conversion
      FROM credits_router.purchases_summary_rows() p
     GROUP BY p.period
     ORDER BY CASE p.period WHEN 'today' THEN 1 WHEN '7 days' THEN 2 WHEN '30 days' THEN 3 ELSE 4 END;

CREATE FUNCTION credits_router.usage_entries_rows()
RETURNS TABLE (id bigint, user_id uuid, kind text, created_at timestamptz, day date, operation text,
               credits bigint, units bigint, list_cost bigint, day_ops smallint, balance_after bigint)
LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON ALL;
      SELECT u.id, u.user_id, u.kind::text, u.created_at, u.day, u.operation, u.credits, u.units,
             u.list_cost, u.day_ops, u.balance_after
        FROM credits.usage_entries u; $$;

CREATE FUNCTION credits_router.account_plans_rows()
RETURNS TABLE (user_id uuid, plan text)
LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON ALL; SELECT p.user_id, p.plan FROM credits.account_plans p; $$;

-- The building blocks of the analytics views, every shard's rows (each query reads every shard whole).
CREATE VIEW credits.usage_entries AS
    SELECT u.id, u.user_id, u.kind, u.created_at, u.day, u.operation, u.credits, u.units,
           u.list_cost, u.day_ops, u.balance_after
      FROM credits_router.usage_entries_rows() u;

CREATE VIEW credits.account_plans AS
    SELECT p.user_id, p.plan FROM credits_router.account_plans_rows() p;

/* ---- The rest of the shards' API ---- */

-- Pure functions of the credits library: computed here, as on a shard.
CREATE FUNCTION credits.user_uuid(external_id text)
RETURNS uuid LANGUAGE c IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_user_uuid';

CREATE FUNCTION credits.local_day(at timestamptz, tz text)
RETURNS date LANGUAGE c IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_local_day';

CREATE FUNCTION credits.local_day_start(day date, tz text)
RETURNS timestamptz LANGUAGE c IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_local_day_start';

CREATE FUNCTION credits.entry_kinds(OUT kind text, OUT sign integer, OUT bucket text, OUT billable boolean)
RETURNS SETOF record LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_entry_kinds';

CREATE FUNCTION credits.printable(value text)
RETURNS text LANGUAGE c IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_printable';

CREATE FUNCTION credits.setting_names()
RETURNS SETOF text LANGUAGE c IMMUTABLE SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_setting_names';

-- What credits_router.grant_roles grants the client role: the list of credits.client_functions
-- on a shard, kept equal to it (test/scale/06_webhooks.sh compares the two).
CREATE FUNCTION credits.client_functions()
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

-- Config reads: the copies are equal on every shard (check_shards), any one answers.
CREATE FUNCTION credits.setting(name text)
RETURNS text LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON ANY; $$;

CREATE FUNCTION credits.seed_keys(OUT table_name text, OUT key text)
RETURNS SETOF record LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON ANY; $$;

-- Per user, on the user's shard.
CREATE FUNCTION credits.rate_limit_at(user_id uuid, action text, burst integer, per_second double precision, at timestamptz)
RETURNS credits.rate_limit_result LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.user_shard(user_id); $$;

CREATE FUNCTION credits.day_count_from_ledger(user_id uuid)
RETURNS integer LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.user_shard(user_id); $$;

CREATE FUNCTION credits.reconcile_checks_for(only_user uuid)
RETURNS TABLE (user_id uuid, item text, object_id bigint, cached bigint, derived bigint)
LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.user_shard($1); $$;

CREATE FUNCTION credits_router.reconcile_checks_all()
RETURNS TABLE (user_id uuid, item text, object_id bigint, cached bigint, derived bigint)
LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON ALL; SELECT * FROM credits.reconcile_checks(NULL); $$;

CREATE FUNCTION credits_router.reconcile_checks_user(for_user uuid)
RETURNS TABLE (user_id uuid, item text, object_id bigint, cached bigint, derived bigint)
LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.user_shard($1); TARGET credits.reconcile_checks; $$;

CREATE FUNCTION credits.reconcile_checks(user_id uuid DEFAULT NULL)
RETURNS TABLE (user_id uuid, item text, object_id bigint, cached bigint, derived bigint)
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM credits_router.reconcile_checks_all() WHERE $1 IS NULL
    UNION ALL
    SELECT * FROM credits_router.reconcile_checks_user($1) WHERE $1 IS NOT NULL
$$;

-- Every shard: the refusal counters of each (scope says how they count).
CREATE FUNCTION credits.denial_counters(
    OUT reason text, OUT operation text, OUT denials bigint, OUT last_denied_at timestamptz, OUT scope text)
RETURNS SETOF record LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON ALL; $$;

CREATE FUNCTION credits_router.forget_webhook_events_all(provider text, older_than interval)
RETURNS SETOF bigint LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON ALL; TARGET credits.forget_webhook_events; $$;

CREATE FUNCTION credits.forget_webhook_events(provider text DEFAULT NULL, older_than interval DEFAULT '30 days')
RETURNS bigint LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT coalesce(sum(n), 0)::bigint FROM credits_router.forget_webhook_events_all($1, $2) n $$;

/*
 * Config of the stores, on every shard: the webhook secrets, the RevenueCat
 * entitlement map and sandbox allowlist.  As the put_* writes: each shard in
 * its own transaction; a shard that fails makes the call fail while the
 * others keep the change (check_shards reports the copy that differs, and
 * the same call again converges).  The admin role calls them, as on a single
 * node.
 */
CREATE FUNCTION credits_router.set_webhook_secret_all(provider text, secret text)
RETURNS SETOF integer LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON ALL; SELECT 1 FROM credits.set_webhook_secret($1, $2); $$;

CREATE FUNCTION credits.set_webhook_secret(provider text, secret text)
RETURNS void LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT count(*) FROM credits_router.set_webhook_secret_all($1, $2) $$;

CREATE FUNCTION credits_router.map_revenuecat_entitlement_all(entitlement_id text, plan text)
RETURNS SETOF integer LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON ALL; SELECT 1 FROM credits.map_revenuecat_entitlement($1, $2); $$;

CREATE FUNCTION credits.map_revenuecat_entitlement(entitlement_id text, plan text)
RETURNS void LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT count(*) FROM credits_router.map_revenuecat_entitlement_all($1, $2) $$;

CREATE FUNCTION credits_router.allow_sandbox_user_all(app_user_id text, note text)
RETURNS SETOF integer LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON ALL; SELECT 1 FROM credits.allow_sandbox_user($1, $2); $$;

CREATE FUNCTION credits.allow_sandbox_user(app_user_id text, note text DEFAULT NULL)
RETURNS void LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT count(*) FROM credits_router.allow_sandbox_user_all($1, $2) $$;

CREATE FUNCTION credits_router.disallow_sandbox_user_all(app_user_id text)
RETURNS SETOF boolean LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON ALL; TARGET credits.disallow_sandbox_user; $$;

CREATE FUNCTION credits.disallow_sandbox_user(app_user_id text)
RETURNS boolean LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT coalesce(bool_or(b), false) FROM credits_router.disallow_sandbox_user_all($1) b $$;

/* ---- The API, checked: every shard function is here or deliberately not ---- */

/*
 * The functions of schema credits on a shard that the router does not
 * offer, and why.  Every other function of a shard's schema credits (the
 * triggers apart) exists here with the same arguments, defaults and result
 * (credits_router.function_parity() checks it, and so does the scale suite).
 */
CREATE FUNCTION credits_router.shard_only_functions(OUT function_name text, OUT why text)
RETURNS SETOF record
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    VALUES
        ('grant_roles(name,name)', 'owner setup per database: credits_router.grant_roles here'),
        ('attach_supabase_auth()', 'owner setup of the database holding auth.users'),
        ('detach_supabase_auth()', 'owner setup of the database holding auth.users'),
        ('publish_accounts(name)', 'per database: Realtime reads each shard''s WAL'),
        ('unpublish_accounts(name)', 'per database: Realtime reads each shard''s WAL'),
        ('delegate_owner(name)', 'owner setup per database'),
        ('revoke_owner(name)', 'owner setup per database'),
        ('owner_grants(name)', 'owner setup per database'),
        ('owner_functions()', 'owner setup per database'),
        ('owner_delegates()', 'owner setup per database'),
        ('guard_service_read(text,uuid)', 'the shards'' own guard: claims do not cross the hop, the router grants by role'),
        ('configure_shard(integer,integer)', 'a shard''s place'),
        ('shard_place()', 'a shard''s place'),
        ('shard_status()', 'read by credits_router.check_shards'),
        ('config_digests()', 'read by credits_router.check_shards'),
        ('ledger_id_step()', 'a shard''s id step'),
        ('shard_sequence(regclass,text,integer,bigint,boolean)', 'a shard''s id step'),
        ('user_partition(uuid,integer)', 'credits_router.user_shard here'),
        ('put_plan(text,integer,bigint,bigint,boolean,boolean,integer,integer,double precision,integer)', 'credits_router.put_plan here'),
        ('put_operation(text,bigint,bigint,boolean,text,text)', 'credits_router.put_operation here'),
        ('put_product(text,text,bigint,interval,text,text)', 'credits_router.put_product here'),
        ('put_setting(text,text)', 'credits_router.put_setting here'),
        ('remove_config(text,text)', 'credits_router.remove_config here'),
        ('copy_from_parent(text)', 'resharding, on the new shard'),
        ('move_user(uuid,text)', 'resharding: credits_router.move_user here'),
        ('export_user(uuid)', 'resharding, between shards'),
        ('import_user(uuid,jsonb,jsonb)', 'resharding, between shards'),
        ('delete_user_rows(uuid)', 'resharding, between shards'),
        ('shard_forget_user(uuid)', 'resharding, between shards'),
        ('user_tables()', 'resharding, between shards'),
        ('transfer_out(text,timestamp with time zone,uuid[],uuid)', 'a TRANSFER across shards: credits.apply_revenuecat_event here'),
        ('transfer_in(text,timestamp with time zone,uuid,jsonb)', 'a TRANSFER across shards: credits.apply_revenuecat_event here'),
        ('import_webhook_events(text,jsonb)', 'kept webhook events moving to their user''s shard'),
        ('drop_webhook_events(text,text[])', 'kept webhook events moving to their user''s shard')
$$;

-- A shard's functions of schema credits, triggers apart: name(argument types), arguments with defaults, result.
CREATE FUNCTION credits_router.shard_functions_on(part integer)
RETURNS TABLE (function_name text, arguments text, result text)
LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON part;
      SELECT p.proname || '(' || coalesce((SELECT string_agg(format_type(t.oid, NULL), ',' ORDER BY a.n)
                                             FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a(oid, n)
                                             JOIN pg_type t ON t.oid = a.oid), '') || ')' AS function_name,
             pg_get_function_arguments(p.oid) AS arguments, pg_get_function_result(p.oid) AS result
        FROM pg_proc p
       WHERE p.pronamespace = 'credits'::regnamespace AND p.prorettype <> 'trigger'::regtype; $$;

/*
 * The differences between partition part's schema credits and this one:
 * `missing` (the shard has it, the router neither offers it nor lists it in
 * shard_only_functions), `differs` (offered with other arguments, defaults or
 * result) and `extra` (offered here, not on the shard).  None on a router
 * and shards of the same release; after upgrading the shards first, the
 * functions the router does not offer yet.
 */
CREATE FUNCTION credits_router.function_parity(part integer DEFAULT 0)
RETURNS TABLE (function_name text, problem text, shard text, router text)
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH shard AS (
        SELECT s.function_name, s.arguments, s.result FROM credits_router.shard_functions_on(part) s
    ), router AS (
        SELECT p.proname || '(' || coalesce((SELECT string_agg(format_type(t.oid, NULL), ',' ORDER BY a.n)
                                               FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a(oid, n)
                                               JOIN pg_type t ON t.oid = a.oid), '') || ')' AS function_name,
               pg_get_function_arguments(p.oid) AS arguments, pg_get_function_result(p.oid) AS result
          FROM pg_proc p
         WHERE p.pronamespace = 'credits'::regnamespace
    )
    SELECT coalesce(s.function_name, r.function_name),
           CASE WHEN r.function_name IS NULL THEN 'missing' WHEN s.function_name IS NULL THEN 'extra' ELSE 'differs' END,
           s.arguments || ' -> ' || s.result, r.arguments || ' -> ' || r.result
      FROM shard s
      FULL JOIN router r ON r.function_name = s.function_name
     WHERE (r.function_name IS NULL AND s.function_name NOT IN (SELECT o.function_name FROM credits_router.shard_only_functions() o))
        OR s.function_name IS NULL
        OR (s.function_name IS NOT NULL AND r.function_name IS NOT NULL
            AND (s.arguments, s.result) IS DISTINCT FROM (r.arguments, r.result))
     ORDER BY 1
$$;

/* ---- Webhooks: Stripe, Creem and RevenueCat, on the shard of their user ---- */

/*
 * The router reads a webhook body only to pick its shard; the shard checks
 * the signature (Stripe, Creem) and applies it, as on a single node.  The
 * shard of an event:
 *   1. the user the body names, where the shard's parser looks for it (Stripe
 *      client_reference_id, metadata.user_id, the invoice's subscription
 *      metadata; Creem metadata.user_id, request_id; RevenueCat the first id
 *      that is not anonymous), mapped by credits.user_uuid;
 *   2. else the user of the subscription or payment it names, asked of every
 *      shard (a renewal, a refund: the shard that holds the subscription);
 *      for RevenueCat, the user its anonymous ids are linked to;
 *   3. else nobody knows the user yet (an invoice before its checkout, events
 *      of an anonymous buyer): the shard of the event's subscription or
 *      payment key (or first anonymous id), hashtext('<provider>:<key>'),
 *      which keeps it ("ignored", as on a single node).
 * When an event with a known user is applied on its shard, the events kept
 * for its subscription, payment or anonymous ids on other shards move there
 * and are replayed (copy, replay, then delete: a failure in between leaves a
 * copy that the next move or replay_webhook_events finds again).
 */

-- A member that is an id: a string, or an expanded object's "id" (the shards' webhook_id_of).
CREATE FUNCTION credits_router.id_of(member jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE jsonb_typeof(member)
               WHEN 'string' THEN member #>> '{}'
               WHEN 'object' THEN CASE WHEN jsonb_typeof(member -> 'id') = 'string' THEN member ->> 'id' END
           END
$$;

-- The first member that is a string.
CREATE FUNCTION credits_router.first_string(VARIADIC members jsonb[])
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT m.v #>> '{}' FROM unnest(members) WITH ORDINALITY AS m(v, i)
     WHERE jsonb_typeof(m.v) = 'string' ORDER BY m.i LIMIT 1
$$;

-- An app's user id as the shards map it (credits.user_uuid); NULL when they would refuse it.
CREATE FUNCTION credits_router.account_of(external_id text)
RETURNS uuid
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN credits.user_uuid(external_id);
EXCEPTION WHEN data_exception THEN
    RETURN NULL;
END
$$;

-- The partition that keeps an event whose user nobody knows yet.
CREATE FUNCTION credits_router.key_shard(provider text, key text)
RETURNS integer
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT hashtext(provider || ':' || coalesce(key, '')) $$;

/*
 * The user, subscription and payment of a Stripe or Creem body, read as the
 * shards' parsers read them (src/webhook_stripe.c, src/webhook_creem.c).
 * A body that is not JSON, or not an event: all NULL.
 */
CREATE FUNCTION credits_router.webhook_subject(
    provider text, payload text, OUT user_id uuid, OUT subscription_id text, OUT transaction_id text)
RETURNS record
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    body jsonb;
    o jsonb;
    t text;
    d jsonb;
    who text;
BEGIN
    BEGIN
        body := payload::jsonb;
    EXCEPTION WHEN data_exception THEN
        RETURN;
    END;
    IF provider = 'stripe' THEN
        o := body #> '{data,object}';
        t := body ->> 'type';
    ELSE
        o := body -> 'object';
        t := body ->> 'eventType';
    END IF;
    IF jsonb_typeof(o) IS DISTINCT FROM 'object' OR t IS NULL THEN
        RETURN;
    END IF;
    IF provider = 'stripe' THEN
        IF t IN ('checkout.session.completed', 'checkout.session.async_payment_succeeded') THEN
            who := credits_router.first_string(o -> 'client_reference_id', o #> '{metadata,user_id}');
            transaction_id := coalesce(credits_router.id_of(o -> 'payment_intent'), credits_router.id_of(o -> 'id'));
            IF o ->> 'mode' = 'subscription' THEN
                subscription_id := credits_router.id_of(o -> 'subscription');
            END IF;
        ELSIF t = 'invoice.paid' THEN
            d := CASE WHEN jsonb_typeof(o #> '{parent,subscription_details}') = 'object'
                      THEN o #> '{parent,subscription_details}' ELSE o -> 'subscription_details' END;
            subscription_id := coalesce(credits_router.id_of(o -> 'subscription'), credits_router.id_of(d -> 'subscription'));
            who := credits_router.first_string(d #> '{metadata,user_id}');
            transaction_id := credits_router.id_of(o -> 'id');
        ELSIF t IN ('customer.subscription.updated', 'customer.subscription.deleted') THEN
            subscription_id := credits_router.id_of(o -> 'id');
            who := credits_router.first_string(o #> '{metadata,user_id}');
        ELSIF t IN ('charge.refunded', 'charge.dispute.created') THEN
            transaction_id := coalesce(credits_router.id_of(o -> 'payment_intent'),
                                       credits_router.id_of(o -> CASE WHEN t = 'charge.refunded' THEN 'id' ELSE 'charge' END));
        END IF;
    ELSE
        IF t = 'checkout.completed' THEN
            who := credits_router.first_string(o #> '{metadata,user_id}', o -> 'request_id');
            transaction_id := coalesce(credits_router.id_of(o -> 'order'), credits_router.id_of(o -> 'id'));
            subscription_id := credits_router.id_of(o -> 'subscription');
        ELSIF t LIKE 'subscription.%' THEN
            subscription_id := credits_router.id_of(o -> 'id');
            who := credits_router.first_string(o #> '{metadata,user_id}');
        ELSIF t IN ('refund.created', 'dispute.created') THEN
            transaction_id := coalesce(credits_router.id_of(o -> 'order'), credits_router.first_string(o #> '{transaction,order}'));
            subscription_id := coalesce(credits_router.id_of(o -> 'subscription'),
                                        credits_router.first_string(o #> '{transaction,subscription}'));
        END IF;
    END IF;
    user_id := credits_router.account_of(who);
END
$$;

-- The users that the shards' entitlements and purchases of a subscription or payment belong to.
CREATE FUNCTION credits_router.webhook_owners(provider text, subscription_id text, transaction_id text)
RETURNS SETOF uuid
LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON ALL;
      SELECT e.user_id FROM credits.entitlements e
       WHERE e.source = $1 AND e.original_transaction_id = $2 AND NOT e.provisional
      UNION ALL
      SELECT p.user_id FROM credits.purchases p
       WHERE p.source = $1 AND p.transaction_id IN ($2, $3) AND p.user_id IS NOT NULL; $$;

-- The users the shards linked anonymous RevenueCat ids to.
CREATE FUNCTION credits_router.revenuecat_links(app_user_ids text[])
RETURNS SETOF uuid
LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON ALL;
      SELECT a.user_id FROM credits.revenuecat_aliases a WHERE a.app_user_id = ANY ($1); $$;

-- A Stripe or Creem event's partition and what it names (the user: named, or found on a shard).
CREATE FUNCTION credits_router.webhook_route(
    provider text, payload text,
    OUT part integer, OUT user_id uuid, OUT subscription_id text, OUT transaction_id text)
RETURNS record
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    SELECT s.user_id, s.subscription_id, s.transaction_id
      INTO webhook_route.user_id, webhook_route.subscription_id, webhook_route.transaction_id
      FROM credits_router.webhook_subject(provider, payload) s;
    IF webhook_route.user_id IS NULL AND coalesce(webhook_route.subscription_id, webhook_route.transaction_id) IS NOT NULL THEN
        SELECT o INTO webhook_route.user_id
          FROM credits_router.webhook_owners(provider, webhook_route.subscription_id, webhook_route.transaction_id) o
         LIMIT 1;
    END IF;
    part := CASE WHEN webhook_route.user_id IS NOT NULL THEN credits_router.user_shard(webhook_route.user_id)
                 ELSE credits_router.key_shard(provider, coalesce(webhook_route.subscription_id, webhook_route.transaction_id))
            END & (credits_router.shard_count() - 1);
END
$$;

-- RevenueCat: the string ids of an event's members, in the order of `fields` (a member is an id or a list of them).
CREATE FUNCTION credits_router.revenuecat_ids(ev jsonb, fields text[])
RETURNS text[]
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(array_agg(v.id ORDER BY f.n, v.i), '{}')
      FROM unnest(fields) WITH ORDINALITY AS f(field, n)
     CROSS JOIN LATERAL (
           SELECT e.value #>> '{}', e.i
             FROM jsonb_array_elements(CASE jsonb_typeof(ev -> f.field) WHEN 'array' THEN ev -> f.field
                                            ELSE jsonb_build_array(ev -> f.field) END) WITH ORDINALITY AS e(value, i)
            WHERE jsonb_typeof(e.value) = 'string') AS v(id, i)
$$;

-- A RevenueCat event's partition (not a TRANSFER across shards) and the user it goes to.
CREATE FUNCTION credits_router.revenuecat_route(payload jsonb, OUT part integer, OUT user_id uuid, OUT anonymous text[])
RETURNS record
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ev jsonb := payload -> 'event';
BEGIN
    part := 0;
    IF jsonb_typeof(ev) IS DISTINCT FROM 'object' THEN
        RETURN;
    END IF;
    anonymous := ARRAY(SELECT DISTINCT i FROM unnest(credits_router.revenuecat_ids(
                           ev, '{app_user_id,original_app_user_id,aliases,transferred_to,transferred_from}')) i
                        WHERE i LIKE '$RCAnonymousID:%' ORDER BY i);
    IF ev ->> 'type' = 'TRANSFER' THEN
        -- its destination, else its first source: uuids only, as the shards read a TRANSFER
        user_id := (credits_router.event_users(ev, 'transferred_to') || credits_router.event_users(ev, 'transferred_from'))[1];
    ELSE
        -- the first id that is not anonymous, as the shards pick the account
        user_id := credits_router.account_of(
            (SELECT i FROM unnest(credits_router.revenuecat_ids(ev, '{app_user_id,original_app_user_id,aliases}'))
                           WITH ORDINALITY AS t(i, n)
              WHERE i NOT LIKE '$RCAnonymousID:%' ORDER BY n LIMIT 1));
    END IF;
    IF user_id IS NULL AND cardinality(anonymous) > 0 THEN
        SELECT l INTO user_id FROM credits_router.revenuecat_links(anonymous) l LIMIT 1;
    END IF;
    part := CASE WHEN user_id IS NOT NULL THEN credits_router.user_shard(user_id)
                 WHEN cardinality(anonymous) > 0 THEN credits_router.key_shard('revenuecat', anonymous[1])
                 ELSE 0 END & (credits_router.shard_count() - 1);
END
$$;

-- Kept events: read on one shard or all, written on one, deleted on one.
CREATE FUNCTION credits_router.kept_events_on(part integer, provider text, keys text[], app_user_ids text[])
RETURNS SETOF jsonb
LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON part;
      SELECT to_jsonb(k) FROM credits.webhook_events k
       WHERE k.provider = $2 AND (k.subscription_id = ANY ($3) OR k.transaction_id = ANY ($3) OR k.app_user_ids && $4)
       ORDER BY k.received_at, k.event_id; $$;

CREATE FUNCTION credits_router.kept_events_all(provider text, keys text[], app_user_ids text[])
RETURNS TABLE (shard_no integer, event jsonb)
LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON ALL;
      SELECT s.shard_no, to_jsonb(k) AS event FROM credits.webhook_events k, credits.shard_place() s
       WHERE ($1 IS NULL OR k.provider = $1)
         AND ($2 IS NULL OR k.subscription_id = ANY ($2) OR k.transaction_id = ANY ($2) OR k.app_user_ids && $3); $$;

CREATE FUNCTION credits_router.import_events_on(part integer, provider text, events jsonb)
RETURNS jsonb
LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON part; SELECT credits.import_webhook_events($2, $3); $$;

CREATE FUNCTION credits_router.drop_events_on(part integer, provider text, event_ids text[])
RETURNS bigint
LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON part; SELECT credits.drop_webhook_events($2, $3); $$;

/*
 * Moves kept events (rows of credits.webhook_events, from partition
 * from_part) to partition to_part and replays them there: copied and
 * replayed (one transaction there), then deleted where they were (a crash in
 * between leaves a copy on both: the next move skips the one it has).
 * Returns how many moved.
 */
CREATE FUNCTION credits_router.move_kept_events(from_part integer, to_part integer, provider text, events jsonb)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF from_part = to_part OR jsonb_array_length(events) = 0 THEN
        RETURN 0;
    END IF;
    PERFORM credits_router.import_events_on(to_part, provider, events);
    RETURN credits_router.drop_events_on(from_part, provider,
                                         ARRAY(SELECT e ->> 'event_id' FROM jsonb_array_elements(events) e));
EXCEPTION WHEN OTHERS THEN
    -- a shard down: the event that brought the user is applied; replay_webhook_events() moves them later
    RAISE WARNING 'kept % events not moved from shard % to shard %: %', provider, from_part, to_part, SQLERRM;
    RETURN 0;
END
$$;

-- After an event of a known user was applied on its partition: the events kept elsewhere for its keys.
CREATE FUNCTION credits_router.gather_kept_events(provider text, to_part integer, keys text[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    mask constant integer := credits_router.shard_count() - 1;
    p integer;
    moved bigint := 0;
BEGIN
    FOR p IN SELECT DISTINCT credits_router.key_shard(provider, k) & mask FROM unnest(keys) k WHERE k IS NOT NULL LOOP
        IF p <> to_part THEN
            moved := moved + credits_router.move_kept_events(p, to_part, provider,
                         coalesce((SELECT jsonb_agg(e) FROM credits_router.kept_events_on(p, provider, keys, NULL) e), '[]'));
        END IF;
    END LOOP;
    RETURN moved;
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'kept % events of % not gathered: %', provider, keys, SQLERRM;
    RETURN 0;
END
$$;

-- After an event linked anonymous ids to a user of partition to_part: the events kept for them on
-- every other shard (a kept event is on the shard of the first anonymous id it names).
CREATE FUNCTION credits_router.gather_anonymous_events(to_part integer, anonymous text[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k record;
    moved bigint := 0;
BEGIN
    FOR k IN
        SELECT g.shard_no, jsonb_agg(g.event ORDER BY g.event ->> 'received_at') AS events
          FROM credits_router.kept_events_all('revenuecat', '{}', anonymous) g
         WHERE g.shard_no <> to_part
         GROUP BY g.shard_no
    LOOP
        moved := moved + credits_router.move_kept_events(k.shard_no, to_part, 'revenuecat', k.events);
    END LOOP;
    RETURN moved;
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'kept revenuecat events of % not gathered: %', anonymous, SQLERRM;
    RETURN 0;
END
$$;

CREATE FUNCTION credits_router.apply_stripe_event_on(part integer, payload text, signature_header text)
RETURNS jsonb LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON part; SELECT credits.apply_stripe_event($2, $3); $$;

CREATE FUNCTION credits_router.apply_creem_event_on(part integer, payload text, signature text)
RETURNS jsonb LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON part; SELECT credits.apply_creem_event($2, $3); $$;

CREATE FUNCTION credits.apply_stripe_event(payload text, signature_header text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    result jsonb;
BEGIN
    r := credits_router.webhook_route('stripe', payload);
    result := credits_router.apply_stripe_event_on(r.part, payload, signature_header);
    IF r.user_id IS NOT NULL THEN
        PERFORM credits_router.gather_kept_events('stripe', r.part, ARRAY[r.subscription_id, r.transaction_id]);
    END IF;
    RETURN result;
END
$$;

CREATE FUNCTION credits.apply_creem_event(payload text, signature text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    result jsonb;
BEGIN
    r := credits_router.webhook_route('creem', payload);
    result := credits_router.apply_creem_event_on(r.part, payload, signature);
    IF r.user_id IS NOT NULL THEN
        PERFORM credits_router.gather_kept_events('creem', r.part, ARRAY[r.subscription_id, r.transaction_id]);
    END IF;
    RETURN result;
END
$$;

/*
 * A RevenueCat event on the shard of its user (revenuecat_route); a TRANSFER
 * from users of other shards in two idempotent halves keyed by the event id
 * (src/shard_transfer.c): first transfer_out on each shard of the users it
 * takes subscriptions from, in partition order, then transfer_in on the
 * destination's shard with what they returned.  When a shard fails between
 * the halves, the call fails (the store delivers the webhook again) and the
 * retry replays the done halves and completes the rest: it converges.  Until
 * then the subscription is on no account (access is lost for the length of
 * the outage, never given twice).  An event that links anonymous ids to a
 * user (a TRANSFER, a SUBSCRIBER_ALIAS, aliases) brings the events kept for
 * those ids on other shards to the user's shard, where they apply.
 */
CREATE FUNCTION credits.apply_revenuecat_event(payload jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ev jsonb := payload -> 'event';
    mask integer := credits_router.shard_count() - 1;
    route record;
    dest uuid;
    sources uuid[];
    event_at timestamptz;
    part integer;
    taken jsonb := '[]';
    result jsonb;
BEGIN
    route := credits_router.revenuecat_route(payload);
    IF jsonb_typeof(ev) = 'object' AND ev ->> 'type' = 'TRANSFER' AND jsonb_typeof(ev -> 'id') = 'string'
       AND coalesce(ev ->> 'event_timestamp_ms', '') ~ '^[0-9]{1,15}$' THEN
        dest := (credits_router.event_users(ev, 'transferred_to'))[1];
        sources := credits_router.event_users(ev, 'transferred_from');
    END IF;
    IF dest IS NULL OR NOT EXISTS (SELECT 1 FROM unnest(sources) f(u)
                                    WHERE credits_router.user_shard(f.u) & mask
                                          <> credits_router.user_shard(dest) & mask) THEN
        result := credits_router.apply_revenuecat_event_on(route.part, payload);
    ELSE
        event_at := timestamptz 'epoch' + (ev ->> 'event_timestamp_ms')::bigint * interval '1 millisecond';
        FOR part IN
            SELECT DISTINCT credits_router.user_shard(f.u) & mask FROM unnest(sources) f(u) ORDER BY 1
        LOOP
            taken := taken || (credits_router.transfer_out_on(
                                   part, ev ->> 'id', event_at,
                                   ARRAY(SELECT f.u FROM unnest(sources) f(u)
                                          WHERE credits_router.user_shard(f.u) & mask = part),
                                   dest) -> 'entitlements');
        END LOOP;
        result := credits_router.transfer_in_on(dest, ev ->> 'id', event_at, taken)
                  || jsonb_build_object('from_shards', (SELECT jsonb_agg(DISTINCT credits_router.user_shard(f.u) & mask)
                                                          FROM unnest(sources) f(u)));
    END IF;
    IF route.user_id IS NOT NULL AND cardinality(route.anonymous) > 0 THEN
        PERFORM credits_router.gather_anonymous_events(route.part, route.anonymous);
    END IF;
    RETURN result;
END
$$;

-- The partition and user of a kept event (a row of credits.webhook_events as jsonb).
CREATE FUNCTION credits_router.kept_event_route(event jsonb, OUT part integer, OUT user_id uuid)
RETURNS record
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF event ->> 'provider' = 'revenuecat' THEN
        SELECT r.part, r.user_id INTO part, user_id FROM credits_router.revenuecat_route((event ->> 'payload')::jsonb) r;
    ELSE
        SELECT r.part, r.user_id INTO part, user_id FROM credits_router.webhook_route(event ->> 'provider', event ->> 'payload') r;
    END IF;
END
$$;

/*
 * Every shard's kept events, each first moved to the shard of its user when
 * that is now known and another one (after a reshard, or a move that failed
 * half way), then replayed on every shard.  The shards' results added up:
 * {"replayed", "applied", "kept", "moved", "results": [...]}.
 */
CREATE FUNCTION credits_router.replay_all(provider text)
RETURNS SETOF jsonb
LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON ALL; SELECT credits.replay_webhook_events($1); $$;

CREATE FUNCTION credits.replay_webhook_events(provider text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k record;
    moved bigint := 0;
BEGIN
    FOR k IN
        SELECT g.shard_no, g.event ->> 'provider' AS prov, r.part,
               jsonb_agg(g.event ORDER BY g.event ->> 'received_at') AS events
          FROM credits_router.kept_events_all(replay_webhook_events.provider, NULL, NULL) g
         CROSS JOIN LATERAL credits_router.kept_event_route(g.event) r
         WHERE r.user_id IS NOT NULL AND r.part <> g.shard_no
         GROUP BY 1, 2, 3
    LOOP
        moved := moved + credits_router.move_kept_events(k.shard_no, k.part, k.prov, k.events);
    END LOOP;
    RETURN (WITH r AS (SELECT x FROM credits_router.replay_all(replay_webhook_events.provider) x)
            SELECT jsonb_build_object(
                       'replayed', (SELECT coalesce(sum((r.x ->> 'replayed')::bigint), 0) FROM r),
                       'applied', (SELECT coalesce(sum((r.x ->> 'applied')::bigint), 0) FROM r),
                       'kept', (SELECT coalesce(sum((r.x ->> 'kept')::bigint), 0) FROM r),
                       'moved', moved,
                       'results', (SELECT coalesce(jsonb_agg(e.value), '[]')
                                     FROM r CROSS JOIN LATERAL jsonb_array_elements(r.x -> 'results') e)));
END
$$;

/* ---- Resharding: moving users to the shard that owns them ---- */

-- The accounts on partition part's database that belong to another shard under its count.
CREATE FUNCTION credits_router.users_to_move(part integer)
RETURNS SETOF uuid
LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON part;
      SELECT a.user_id FROM credits.accounts a, credits.shard_place() p
       WHERE credits.user_partition(a.user_id, p.shard_count) <> p.shard_no; $$;

-- credits.move_user on the database the user is routed to now (one transaction there).
CREATE FUNCTION credits_router.move_user(user_id uuid, target text)
RETURNS jsonb
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.user_shard(user_id); TARGET credits.move_user; $$;

/*
 * Moves every user that partition part's database holds for another shard
 * to `target` (the new shard's conninfo), one user per transaction under
 * its account lock.  Each user's calls are refused (PT503, retry) from its
 * move until the router routes the partition to the new shard (ALTER SERVER
 * credits_shards OPTIONS (SET pJ ...)); README, "Resharding, step by step".
 * Returns the number of users moved; safe to run again.
 */
CREATE FUNCTION credits_router.move_users(part integer, target text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    u uuid;
    moved bigint := 0;
BEGIN
    FOR u IN SELECT m FROM credits_router.users_to_move(part) m
              WHERE credits_router.user_shard(m) & (credits_router.shard_count() - 1) = part LOOP
        IF (credits_router.move_user(u, target) ->> 'moved')::boolean THEN
            moved := moved + 1;
        END IF;
    END LOOP;
    RETURN moved;
END
$$;

/* ---- Config: written on every shard ---- */

/*
 * Each returns one row per shard: its number and the digest of the table
 * after the change.  The shards apply it one transaction each, in parallel:
 * until the last one has committed, users of the others already see the
 * change and the rest do not (a price change charges some users the old
 * price, some the new, never a mix within one call).  When a shard fails
 * (down, or the row breaks one of its constraints), the call raises and the
 * others keep the change: check_shards() shows the shard that differs, and
 * running the same call again (it is a full-row upsert) converges.
 */
CREATE FUNCTION credits_router.put_plan(
    name text, daily_limit integer, signup_bonus bigint DEFAULT 0, monthly_allocation bigint DEFAULT 0,
    allocation_rollover boolean DEFAULT false, bypass_credits boolean DEFAULT false, rank integer DEFAULT 0,
    rate_burst integer DEFAULT NULL, rate_per_second double precision DEFAULT NULL, cooldown_ms integer DEFAULT 0)
RETURNS TABLE (shard_no integer, digest text)
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON ALL; TARGET credits.put_plan; $$;

CREATE FUNCTION credits_router.put_operation(
    name text, cost bigint, max_units bigint DEFAULT 1000000, enabled boolean DEFAULT true,
    required_plan text DEFAULT NULL, description text DEFAULT NULL)
RETURNS TABLE (shard_no integer, digest text)
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON ALL; TARGET credits.put_operation; $$;

CREATE FUNCTION credits_router.put_product(
    product_id text, plan text DEFAULT NULL, credits bigint DEFAULT NULL,
    pack_expires_after interval DEFAULT NULL, source text DEFAULT NULL, description text DEFAULT NULL)
RETURNS TABLE (shard_no integer, digest text)
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON ALL; TARGET credits.put_product; $$;

CREATE FUNCTION credits_router.remove_config(config text, key text)
RETURNS TABLE (shard_no integer, digest text)
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON ALL; TARGET credits.remove_config; $$;

CREATE FUNCTION credits_router.put_setting_all(name text, value text)
RETURNS TABLE (shard_no integer, digest text)
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON ALL; TARGET credits.put_setting; $$;

-- On every shard (which check the name), then on this database too: the router reads the JWT
-- itself, so credits.external_user_ids (a sub that is not a uuid maps through user_uuid) counts here.
CREATE FUNCTION credits_router.put_setting(name text, value text)
RETURNS TABLE (shard_no integer, digest text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT p.shard_no, p.digest FROM credits_router.put_setting_all($1, $2) p;
    IF $2 IS NULL THEN
        EXECUTE format('ALTER DATABASE %I RESET %s', current_database(), $1);
    ELSE
        EXECUTE format('ALTER DATABASE %I SET %s = %L', current_database(), $1, $2);
    END IF;
END
$$;

/* ---- Checks ---- */

CREATE FUNCTION credits_router.shard_status_on(part_no integer)
RETURNS TABLE (shard_no integer, shard_count integer, foreign_accounts bigint, id_step bigint)
LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON part_no;
      SELECT s.shard_no, s.shard_count, s.foreign_accounts, s.id_step FROM credits.shard_status() s; $$;

-- Every config copy the shard digests (credits.config_digests: the price list, the settings, the
-- RevenueCat map and allowlist, the webhook secrets, and whatever a later release adds).
CREATE FUNCTION credits_router.config_digests_on(part_no integer)
RETURNS TABLE (config text, rows bigint, digest text)
LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON part_no; SELECT d.config, d.rows, d.digest FROM credits.config_digests() d; $$;

/*
 * Every partition, as it answers: one row per shard, with `problems` listing
 * what is wrong (empty when nothing is):
 *   shard_no              it is configured as another partition
 *   shard_count           it is configured for another number of shards (1:
 *                         never configured, or a database restored into a
 *                         fresh one; run credits.configure_shard there)
 *   id_step               its ledger ids do not carry their user's bucket
 *                         (the sequence's step is not 1024: restored from a
 *                         dump; run credits.configure_shard there again)
 *   foreign_accounts      it holds accounts of users routed elsewhere (while
 *                         a reshard moves them: credits_router.move_users)
 *   a config name         its copy differs from the copy most shards have
 *                         (ties: from the lowest-numbered partition's), or it
 *                         has no such copy: plans, operations, products,
 *                         settings, revenuecat_entitlements,
 *                         revenuecat_sandbox_users, webhook_secrets
 * `digests` has each config's digest.
 */
CREATE FUNCTION credits_router.check_shards()
RETURNS TABLE (partition integer, shard_no integer, shard_count integer,
               foreign_accounts bigint, id_step bigint, digests jsonb, problems text[])
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    n constant integer := credits_router.shard_count();
BEGIN
    IF n = 0 THEN
        RAISE EXCEPTION 'no shards: server credits_shards has no partitions'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = '{"server": "credits_shards"}',
                  HINT = 'CREATE SERVER credits_shards FOREIGN DATA WRAPPER plproxy OPTIONS (p0 ''dbname=...'', p1 ...);';
    END IF;
    RETURN QUERY
    WITH s AS (
        SELECT p.i AS part, st.*
          FROM generate_series(0, n - 1) AS p(i)
         CROSS JOIN LATERAL credits_router.shard_status_on(p.i) st
    ), d AS (
        SELECT p.i AS part, cd.config, cd.digest
          FROM generate_series(0, n - 1) AS p(i)
         CROSS JOIN LATERAL credits_router.config_digests_on(p.i) cd
    ), configs AS (
        SELECT DISTINCT d.config FROM d
    ), copies AS (
        SELECT s.part, c.config, d.digest
          FROM s CROSS JOIN configs c
          LEFT JOIN d ON d.part = s.part AND d.config = c.config
    ), usual AS (
        SELECT DISTINCT ON (x.config) x.config, x.digest
          FROM (SELECT c.config, c.digest, count(*) AS copies, min(c.part) AS first FROM copies c
                 GROUP BY c.config, c.digest) x
         ORDER BY x.config, x.copies DESC, x.first
    )
    SELECT s.part, s.shard_no, s.shard_count, s.foreign_accounts, s.id_step,
           (SELECT jsonb_object_agg(c.config, c.digest) FROM copies c WHERE c.part = s.part),
           array_remove(ARRAY[
               CASE WHEN s.shard_no <> s.part THEN 'shard_no' END,
               CASE WHEN s.shard_count <> n THEN 'shard_count' END,
               CASE WHEN n > 1 AND s.id_step <> 1024 THEN 'id_step' END,
               CASE WHEN s.foreign_accounts > 0 THEN 'foreign_accounts' END], NULL)
           || ARRAY(SELECT c.config FROM copies c JOIN usual u ON u.config = c.config
                     WHERE c.part = s.part AND c.digest IS DISTINCT FROM u.digest ORDER BY c.config)
      FROM s
     ORDER BY s.part;
END
$$;

COMMENT ON FUNCTION credits_router.check_shards() IS
'One row per shard: its place, config digests, and problems (wrong number or count, id step, accounts of other shards, config copies that differ from most shards).';

/* ---- Roles ---- */

/*
 * The router's side of credits.grant_roles: the client functions and
 * credits.my_account to client_role; every other function of schema credits,
 * the analytics views and credits_router.check_shards to admin_role.  The
 * config writes (credits_router.put_*, remove_config), the resharding tools
 * (users_to_move, move_user, move_users) and the plumbing stay
 * the owner's.
 */
CREATE FUNCTION credits_router.grant_roles(client_role name, admin_role name)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f record;
    client_fns constant regprocedure[] := ARRAY(SELECT credits.client_functions());
BEGIN
    IF client_role IS NULL OR admin_role IS NULL OR client_role = admin_role THEN
        RAISE EXCEPTION 'client_role and admin_role must be two roles'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('{"client_role": %s, "admin_role": %s}',
                                  coalesce(to_json(client_role::text)::text, 'null'),
                                  coalesce(to_json(admin_role::text)::text, 'null')),
                  HINT = 'As on the shards: SELECT credits_router.grant_roles(''authenticated'', ''service_role'');';
    END IF;
    EXECUTE format('REVOKE ALL ON ALL ROUTINES IN SCHEMA credits, credits_router FROM %I, %I', client_role, admin_role);
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA credits, credits_router FROM %I, %I', client_role, admin_role);
    EXECUTE format('GRANT USAGE ON SCHEMA credits TO %I, %I', client_role, admin_role);
    FOR f IN
        SELECT p.oid::regprocedure AS fn, p.oid = ANY (client_fns) AS for_client
          FROM pg_proc p WHERE p.pronamespace = 'credits'::regnamespace
    LOOP
        EXECUTE format('GRANT EXECUTE ON ROUTINE %s TO %I', f.fn, CASE WHEN f.for_client THEN client_role ELSE admin_role END);
    END LOOP;
    EXECUTE format('GRANT EXECUTE ON FUNCTION credits.current_user_id_or_null() TO %I', admin_role);
    EXECUTE format('GRANT SELECT ON credits.my_account TO %I', client_role);
    EXECUTE format('GRANT SELECT ON credits.stats, credits.usage_daily, credits.depletions, credits.top_users, '
                   'credits.purchases_summary, credits.usage_entries, credits.account_plans TO %I', admin_role);
    EXECUTE format('GRANT USAGE ON SCHEMA credits_router TO %I', admin_role);
    -- Function privileges in a view are the caller's: the views' row sources too.
    EXECUTE format('GRANT EXECUTE ON FUNCTION credits_router.check_shards(), credits_router.stats_rows(), '
                   'credits_router.usage_daily_rows(), credits_router.depletions_rows(), '
                   'credits_router.top_users_rows(), credits_router.purchases_summary_rows(), '
                   'credits_router.usage_entries_rows(), credits_router.account_plans_rows(), '
                   'credits_router.function_parity(integer), credits_router.shard_only_functions() TO %I', admin_role);
END
$$;

/* ---- Privileges: nothing is callable until granted deliberately ---- */

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA credits FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA credits_router FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA credits FROM PUBLIC;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'authenticated')
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'service_role') THEN
        PERFORM credits_router.grant_roles('authenticated', 'service_role');
    END IF;
END
$$;
