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
 *   everything      RUN ON ALL, combined here (reconcile, the analytics
 *                   views, stats, the config writes)
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

/*
 * A RevenueCat event goes to the shard of its app user; a TRANSFER to the
 * shard of its destination (or of its first source when it names no
 * destination).  A malformed payload goes to shard 0, which refuses it with
 * the field.  A TRANSFER whose users are on several shards is applied in two
 * halves by credits.apply_revenuecat_event below.
 */
CREATE FUNCTION credits_router.event_shard(payload jsonb)
RETURNS integer
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ev jsonb := payload -> 'event';
    users uuid[];
BEGIN
    IF jsonb_typeof(ev) IS DISTINCT FROM 'object' THEN
        RETURN 0;
    END IF;
    IF ev ->> 'type' IS DISTINCT FROM 'TRANSFER' THEN
        RETURN CASE WHEN ev ->> 'app_user_id' ~ credits_router.uuid_pattern()
                    THEN credits_router.user_shard((ev ->> 'app_user_id')::uuid) ELSE 0 END;
    END IF;
    users := credits_router.event_users(ev, 'transferred_to') || credits_router.event_users(ev, 'transferred_from');
    RETURN coalesce(credits_router.user_shard(users[1]), 0);
END
$$;

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

CREATE FUNCTION credits_router.apply_revenuecat_event_on(payload jsonb)
RETURNS jsonb LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.event_shard(payload); TARGET credits.apply_revenuecat_event; $$;

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

/*
 * A TRANSFER whose users are all on one shard, and every other event: on
 * that shard, in one transaction.  A TRANSFER from users of other shards:
 * two idempotent halves keyed by the event id (src/shard_transfer.c): first
 * transfer_out on each shard of the users it takes subscriptions from, in
 * partition order, then transfer_in on the destination's shard with what
 * they returned.  When a shard fails between the halves, the call fails
 * (the store delivers the webhook again) and the retry replays the done
 * halves and completes the rest: it converges.  Until then the subscription
 * is on no account (access is lost for the length of the outage, never
 * given twice).
 */
CREATE FUNCTION credits.apply_revenuecat_event(payload jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ev jsonb := payload -> 'event';
    mask integer := credits_router.shard_count() - 1;
    dest uuid;
    sources uuid[];
    event_at timestamptz;
    part integer;
    taken jsonb := '[]';
BEGIN
    IF jsonb_typeof(ev) IS DISTINCT FROM 'object' OR ev ->> 'type' IS DISTINCT FROM 'TRANSFER'
       OR jsonb_typeof(ev -> 'id') IS DISTINCT FROM 'string'
       OR coalesce(ev ->> 'event_timestamp_ms', '') !~ '^[0-9]{1,15}$' THEN
        RETURN credits_router.apply_revenuecat_event_on(payload);
    END IF;
    dest := (credits_router.event_users(ev, 'transferred_to'))[1];
    sources := credits_router.event_users(ev, 'transferred_from');
    IF dest IS NULL OR NOT EXISTS (SELECT 1 FROM unnest(sources) f(u)
                                    WHERE credits_router.user_shard(f.u) & mask
                                          <> credits_router.user_shard(dest) & mask) THEN
        RETURN credits_router.apply_revenuecat_event_on(payload);
    END IF;
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
    RETURN credits_router.transfer_in_on(dest, ev ->> 'id', event_at, taken)
           || jsonb_build_object('from_shards', (SELECT jsonb_agg(DISTINCT credits_router.user_shard(f.u) & mask)
                                                   FROM unnest(sources) f(u)));
END
$$;

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

CREATE FUNCTION credits_router.user_history(user_id uuid, "limit" integer, before_id bigint)
RETURNS TABLE (
    id bigint, kind text, amount bigint, balance_after bigint, daily_remaining bigint,
    operation text, units bigint, list_cost bigint, ref_id bigint, reference text,
    idempotency_key text, reason text, metadata jsonb, created_at timestamptz)
LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.user_shard(user_id); TARGET credits.user_history; $$;

CREATE FUNCTION credits_router.user_usage(user_id uuid, since timestamptz)
RETURNS TABLE (operation text, operations bigint, units bigint, credits bigint, list_cost bigint)
LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.user_shard(user_id); TARGET credits.user_usage; $$;

CREATE FUNCTION credits_router.user_account_status(for_user uuid)
RETURNS TABLE (
    user_id uuid, plan text, base_plan text, balance bigint, daily_limit integer,
    daily_remaining bigint, timezone text, plan_until timestamptz, created_at timestamptz)
LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.user_shard($1); TARGET credits.user_account_status; $$;

CREATE FUNCTION credits_router.user_claim_pending_purchase(user_id uuid, product_id text, transaction_id text)
RETURNS jsonb LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON credits_router.user_shard(user_id); TARGET credits.user_claim_pending_purchase; $$;

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
AS $$ SELECT * FROM credits_router.user_history(credits.current_user_id(), my_history."limit", my_history.before_id) $$;

CREATE FUNCTION credits.my_usage(since timestamptz DEFAULT now() - interval '30 days')
RETURNS TABLE (operation text, operations bigint, units bigint, credits bigint, list_cost bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM credits_router.user_usage(credits.current_user_id(), my_usage.since) $$;

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
    SELECT credits_router.user_claim_pending_purchase(credits.current_user_id(),
                                                      claim_pending_purchase.product_id,
                                                      claim_pending_purchase.transaction_id)
$$;

CREATE VIEW credits.my_account WITH (security_invoker = true, security_barrier = true) AS
    SELECT s.user_id, s.plan, s.base_plan, s.balance, s.daily_limit, s.daily_remaining,
           s.timezone, s.plan_until, s.created_at
      FROM credits.my_account_status() s;

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

CREATE FUNCTION credits_router.put_setting(name text, value text)
RETURNS TABLE (shard_no integer, digest text)
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON ALL; TARGET credits.put_setting; $$;

/* ---- Checks ---- */

CREATE FUNCTION credits_router.shard_status_on(part_no integer)
RETURNS TABLE (shard_no integer, shard_count integer, foreign_accounts bigint,
               plans_digest text, operations_digest text, products_digest text, settings_digest text,
               id_step bigint)
LANGUAGE plproxy SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ CLUSTER 'credits_shards'; RUN ON part_no;
      SELECT s.shard_no, s.shard_count, s.foreign_accounts, s.plans_digest,
             s.operations_digest, s.products_digest, s.settings_digest, s.id_step
        FROM credits.shard_status() s; $$;

/*
 * Every partition, as it answers: one row per shard, with `problems` listing
 * what is wrong (empty when nothing is):
 *   shard_no              it is configured as another partition
 *   shard_count           it is configured for another number of shards (1:
 *                         never configured, or restored from a dump; run
 *                         credits.configure_shard there)
 *   id_step               its ledger ids do not carry their user's bucket
 *                         (the sequence's step is not 1024: restored from a
 *                         dump; run credits.configure_shard there again)
 *   foreign_accounts      it holds accounts of users routed elsewhere (while
 *                         a reshard moves them: credits_router.move_users)
 *   plans, operations, products, settings
 *                         its copy differs from the copy most shards have
 *                         (ties: from the lowest-numbered partition's)
 */
CREATE FUNCTION credits_router.check_shards()
RETURNS TABLE (partition integer, shard_no integer, shard_count integer,
               foreign_accounts bigint, plans_digest text, operations_digest text,
               products_digest text, settings_digest text, id_step bigint, problems text[])
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
    ), usual AS (
        SELECT c.config,
               (SELECT d.digest FROM s
                 CROSS JOIN LATERAL (VALUES ('plans', s.plans_digest), ('operations', s.operations_digest),
                                            ('products', s.products_digest), ('settings', s.settings_digest))
                                    AS d(config, digest)
                 WHERE d.config = c.config
                 GROUP BY d.digest ORDER BY count(*) DESC, min(s.part) LIMIT 1) AS digest
          FROM unnest(ARRAY['plans', 'operations', 'products', 'settings']) AS c(config)
    )
    SELECT s.part, s.shard_no, s.shard_count, s.foreign_accounts,
           s.plans_digest, s.operations_digest, s.products_digest, s.settings_digest, s.id_step,
           array_remove(ARRAY[
               CASE WHEN s.shard_no <> s.part THEN 'shard_no' END,
               CASE WHEN s.shard_count <> n THEN 'shard_count' END,
               CASE WHEN n > 1 AND s.id_step <> 1024 THEN 'id_step' END,
               CASE WHEN s.foreign_accounts > 0 THEN 'foreign_accounts' END,
               CASE WHEN s.plans_digest IS DISTINCT FROM (SELECT u.digest FROM usual u WHERE u.config = 'plans') THEN 'plans' END,
               CASE WHEN s.operations_digest IS DISTINCT FROM (SELECT u.digest FROM usual u WHERE u.config = 'operations') THEN 'operations' END,
               CASE WHEN s.products_digest IS DISTINCT FROM (SELECT u.digest FROM usual u WHERE u.config = 'products') THEN 'products' END,
               CASE WHEN s.settings_digest IS DISTINCT FROM (SELECT u.digest FROM usual u WHERE u.config = 'settings') THEN 'settings' END
           ], NULL)
      FROM s
     ORDER BY s.part;
END
$$;

COMMENT ON FUNCTION credits_router.check_shards() IS
'One row per shard: its place and config digests, and problems (wrong number or count, accounts of other shards, config copies that differ from most shards).';

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
    client_fns constant regprocedure[] := ARRAY[
        'credits.consume(text, bigint, text, text, jsonb)', 'credits.my_balance()',
        'credits.my_daily_available()', 'credits.my_account_status()', 'credits.set_my_timezone(text)',
        'credits.my_history(integer, bigint)', 'credits.my_usage(timestamptz)',
        'credits.delete_my_account()', 'credits.claim_pending_purchase(text, text)',
        'credits.current_user_id()', 'credits.current_user_id_or_null()']::regprocedure[];
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
                   'credits_router.usage_entries_rows(), credits_router.account_plans_rows() TO %I', admin_role);
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
