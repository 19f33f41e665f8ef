/* credits--1.0.sql: assembled by the Makefile from src/sql/NN_*.sql, one file per concern. */

\echo Use "CREATE EXTENSION credits" to load this file. \quit

/*
 * Tables.  Only the extension owner writes them, and only through the
 * functions below; every table has Row Level Security enabled, so a client
 * role sees at most its own rows (policies live in the security part).
 *
 * Invariants, checked by credits.reconcile():
 *   accounts.balance    = sum(ledger.amount)          for the user
 *                       = sum(lots.remaining)          for the user
 *   lots.remaining      = sum of the lot's moves recorded in ledger.lot_moves
 *   accounts.day_count  = operations counted today in the account's time zone
 *   holds: an open hold has no release/capture entry; a settled one exactly
 *          one release of its whole amount (and one capture when captured);
 *          accounts.next_hold_expiry <= the earliest open hold's expires_at
 */

CREATE TABLE credits.plans (
    name                text PRIMARY KEY
                        CHECK (name <> '' AND length(name) <= 64),
    daily_limit         integer CHECK (daily_limit >= 0),       -- operations per local day; NULL = none
    signup_bonus        bigint NOT NULL DEFAULT 0 CHECK (signup_bonus >= 0),
    monthly_allocation  bigint NOT NULL DEFAULT 0 CHECK (monthly_allocation >= 0),
    allocation_rollover boolean NOT NULL DEFAULT false,          -- allocations never expire when true
    bypass_credits      boolean NOT NULL DEFAULT false,          -- premium: record list cost, charge 0
    rank                integer NOT NULL DEFAULT 0,              -- higher is better (entitlements, required plans)
    rate_burst          integer CHECK (rate_burst > 0),          -- billable operations in a burst; NULL = no limiter
    rate_per_second     double precision CHECK (rate_per_second > 0),
    cooldown_ms         integer NOT NULL DEFAULT 0 CHECK (cooldown_ms >= 0),
    created_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((rate_burst IS NULL) = (rate_per_second IS NULL))
);

CREATE TABLE credits.operations (
    name          text PRIMARY KEY CHECK (name <> '' AND length(name) <= 255),
    cost          bigint NOT NULL DEFAULT 1 CHECK (cost >= 0),     -- credits per unit
    max_units     bigint NOT NULL DEFAULT 1000000 CHECK (max_units > 0),
    enabled       boolean NOT NULL DEFAULT true,
    required_plan text REFERENCES credits.plans (name) ON UPDATE CASCADE,
    description   text,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE credits.accounts (
    user_id           uuid PRIMARY KEY,
    plan              text NOT NULL REFERENCES credits.plans (name) ON UPDATE CASCADE,
    timezone          text NOT NULL DEFAULT 'UTC',
    balance           bigint NOT NULL DEFAULT 0 CHECK (balance >= 0),
    day               date NOT NULL,                         -- local day that day_count counts
    day_count         integer NOT NULL DEFAULT 0 CHECK (day_count >= 0),
    allocation_period date,                                  -- first day of the last allocated month
    next_expiry       timestamptz,                           -- no lot with credits expires before this
    next_hold_expiry  timestamptz,                           -- no open hold times out before this
    entitlement_plan  text REFERENCES credits.plans (name) ON UPDATE CASCADE,
    entitlement_until timestamptz,                           -- NULL with a plan: no end
    last_operation_at timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TYPE credits.entry_kind AS ENUM (
    'grant', 'purchase', 'allocation', 'consume', 'hold',
    'capture', 'release', 'refund', 'expire', 'adjust'
);

/*
 * The ledger: append-only.  amount is signed (+ adds spendable credits,
 * - removes them) and balance_after is the account balance right after the
 * entry.  lot_moves is a two-dimensional array {{lot_id, delta}, ...}
 * telling which lots the amount came from or went to.  No foreign keys: every
 * writer holds the account row lock, and reconcile() checks the references.
 */
CREATE TABLE credits.ledger (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         uuid NOT NULL,
    kind            credits.entry_kind NOT NULL,
    amount          bigint NOT NULL,
    balance_after   bigint NOT NULL,
    daily_remaining bigint,                 -- as returned in the receipt
    operation       text,
    units           bigint,
    list_cost       bigint,                 -- cost x units at the price of the day
    day_ops         smallint,               -- operations added to (+) or given back from (-) today's count
    ref_id          bigint,                 -- entry acted upon (capture/release: the hold; refund: the charge)
    lot_moves       bigint[],
    reference       text,
    idempotency_key text,
    request_hash    bigint,                 -- fingerprint of the keyed request's parameters
    reason          text,
    metadata        jsonb,
    actor           text NOT NULL,          -- role that made the call (outside SECURITY DEFINER)
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_user_history ON credits.ledger (user_id, id);
CREATE UNIQUE INDEX ledger_idempotency ON credits.ledger (user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX ledger_ref ON credits.ledger (ref_id) WHERE ref_id IS NOT NULL;
CREATE UNIQUE INDEX ledger_allocation_once ON credits.ledger (user_id, reference)
    WHERE kind = 'allocation';

/*
 * Lots: credits from one grant, burnt soonest-expiring first (no expiry
 * last), then by priority (higher first), then oldest first.
 */
CREATE TABLE credits.lots (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    uuid NOT NULL,
    entry_id   bigint NOT NULL,             -- the ledger entry that created the lot
    amount     bigint NOT NULL CHECK (amount > 0),
    remaining  bigint NOT NULL CHECK (remaining >= 0 AND remaining <= amount),
    expires_at timestamptz,
    priority   integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Derived, so that spending a lot (remaining changes, spendable stays
    -- true) is a HOT update: no index references remaining.
    spendable  boolean GENERATED ALWAYS AS (remaining > 0) STORED
);
CREATE INDEX lots_spend_order ON credits.lots (user_id, expires_at, priority DESC, id)
    WHERE spendable;

/*
 * Holds (src/holds.c, src/sql/20_holds.sql): reservations made by
 * credits.reserve().  A hold's id is the id of its `hold` ledger entry, whose
 * lot_moves took `amount` credits out of the lots.  An open hold is settled
 * exactly once, under the account row lock: captured (a `release` of the
 * whole amount, then a `capture` of the actual cost), released, or expired
 * (the same `release`, written lazily once expires_at has passed).
 */
CREATE TYPE credits.hold_status AS ENUM ('open', 'captured', 'released', 'expired');

CREATE TABLE credits.holds (
    id               bigint PRIMARY KEY,               -- the `hold` ledger entry
    user_id          uuid NOT NULL,
    operation        text NOT NULL,
    units            bigint NOT NULL CHECK (units > 0),
    unit_cost        bigint NOT NULL CHECK (unit_cost >= 0),    -- list price per unit at reserve time
    unit_charge      bigint NOT NULL CHECK (unit_charge >= 0),  -- charged per unit: unit_cost, 0 on a bypass plan
    amount           bigint NOT NULL CHECK (amount >= 0),       -- credits reserved = unit_charge x units
    expires_at       timestamptz NOT NULL,
    status           credits.hold_status NOT NULL DEFAULT 'open',
    settled_entry_id bigint,                           -- the capture entry, or the release entry
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'open') = (settled_entry_id IS NULL))
);
CREATE INDEX holds_open_by_user ON credits.holds (user_id, expires_at) WHERE status = 'open';
CREATE INDEX holds_open_expiry ON credits.holds (expires_at) WHERE status = 'open';

INSERT INTO credits.plans (name, daily_limit, signup_bonus, bypass_credits, rank)
VALUES ('free', 5, 6, false, 0),
       ('pro', NULL, 0, true, 10);

INSERT INTO credits.operations (name, cost, max_units, description)
VALUES ('image', 1, 10, 'one generated image'),
       ('video_second', 5, 60, 'one second of generated video'),
       ('prompt_kchar', 1, 100, '1000 characters of prompt');

-- Config tables are admin data: dump them with the database.
SELECT pg_catalog.pg_extension_config_dump('credits.plans', '');
SELECT pg_catalog.pg_extension_config_dump('credits.operations', '');
SELECT pg_catalog.pg_extension_config_dump('credits.accounts', '');
SELECT pg_catalog.pg_extension_config_dump('credits.ledger', '');
SELECT pg_catalog.pg_extension_config_dump('credits.lots', '');
SELECT pg_catalog.pg_extension_config_dump('credits.ledger_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('credits.lots_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('credits.holds', '');

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

/*
 * The price list (operations, and the plans they may require) is cached in
 * each backend; any change to either table invalidates those caches.
 */
CREATE FUNCTION credits.price_list_changed() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'credits_price_list_changed';

CREATE TRIGGER price_list_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON credits.operations
    FOR EACH STATEMENT EXECUTE FUNCTION credits.price_list_changed();
CREATE TRIGGER price_list_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON credits.plans
    FOR EACH STATEMENT EXECUTE FUNCTION credits.price_list_changed();

/* Immutability: the ledger refuses UPDATE, DELETE and TRUNCATE. */
CREATE FUNCTION credits.ledger_is_append_only() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'credits_ledger_is_append_only';

CREATE TRIGGER ledger_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON credits.ledger
    FOR EACH STATEMENT EXECUTE FUNCTION credits.ledger_is_append_only();

/*
 * Store purchases (src/purchases.c, src/revenuecat.c, src/sql/50_purchases.sql).
 *
 * products      what a store product id is worth: a plan (subscription) or a
 *               pack of credits.  Admin data, like plans and operations.
 * purchases     one row per store transaction applied, keyed by (source,
 *               transaction_id): a transaction is credited exactly once,
 *               whoever reports it first (apply_purchase or a webhook).
 * entitlements  plan access from a store, keyed by (source,
 *               original_transaction_id); provisional rows are instant-unlock
 *               claims waiting for the store's confirmation.
 * store_events  webhook events already applied, keyed by (source, event_id).
 *
 * Invariant, checked by credits.reconcile():
 *   accounts.entitlement_plan / entitlement_until = the best active
 *   entitlement (highest plans.rank, then latest expiry), unless the cached
 *   one has lapsed (the next touch recomputes it).
 */
CREATE TABLE credits.products (
    product_id         text PRIMARY KEY CHECK (product_id <> '' AND length(product_id) <= 255),
    plan               text REFERENCES credits.plans (name) ON UPDATE CASCADE,  -- subscription: the plan it unlocks
    credits            bigint CHECK (credits > 0),                              -- pack: the credits it adds
    pack_expires_after interval CHECK (pack_expires_after > interval '0'),      -- pack credits expire this long after they are credited; NULL = never
    source             text CHECK (source <> '' AND length(source) <= 64),      -- only purchases from this source; NULL = any
    description        text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    CHECK ((plan IS NULL) <> (credits IS NULL)),
    CHECK (pack_expires_after IS NULL OR credits IS NOT NULL)
);

CREATE TABLE credits.purchases (
    source           text NOT NULL,
    transaction_id   text NOT NULL,
    user_id          uuid NOT NULL,
    product_id       text NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('pack', 'subscription')),
    entry_id         bigint,                  -- pack: the `purchase` entry (its lot holds the credits)
    entitlement_id   bigint,                  -- subscription: the entitlement it started or extended
    purchased_at     timestamptz,
    balance          bigint,                  -- subscription: the first receipt's balance ...
    daily_remaining  bigint,                  -- ... and daily_remaining, returned again on a replay
    refund_state     text CHECK (refund_state IN ('refunded', 'reversed')),
    refund_entry_id  bigint,                  -- the `adjust` entry that clawed the credits back
    clawed_back      bigint NOT NULL DEFAULT 0 CHECK (clawed_back >= 0),
    regrant_entry_id bigint,                  -- the `adjust` entry that gave them back (refund reversed)
    last_event_at    timestamptz,             -- store time of the newest refund event applied
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, transaction_id)
);
CREATE INDEX purchases_transaction ON credits.purchases (transaction_id);
CREATE INDEX purchases_by_user ON credits.purchases (user_id);

/*
 * Access: active, cancelled (will not renew), billing_issue (in the store's
 * grace period) and paused (pauses at the end of the period) give the plan
 * until expires_at; expired, refunded, transferred (moved to a user we do not
 * know) and confirmed (a provisional claim the store confirmed) do not.
 */
CREATE TYPE credits.entitlement_status AS ENUM (
    'active', 'cancelled', 'billing_issue', 'paused',
    'expired', 'refunded', 'transferred', 'confirmed'
);

CREATE TABLE credits.entitlements (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id                 uuid NOT NULL,
    source                  text NOT NULL,          -- revenuecat, stripe, admin, ...; client for a provisional claim
    product_id              text NOT NULL,
    plan                    text NOT NULL REFERENCES credits.plans (name) ON UPDATE CASCADE,
    status                  credits.entitlement_status NOT NULL DEFAULT 'active',
    provisional             boolean NOT NULL DEFAULT false,
    expires_at              timestamptz,            -- NULL: no end
    original_transaction_id text NOT NULL,          -- the subscription at its store
    transaction_id          text NOT NULL,          -- the latest transaction applied
    next_product_id         text,                   -- PRODUCT_CHANGE: the product after the next renewal
    store                   text,                   -- APP_STORE, PLAY_STORE, STRIPE, ...
    environment             text,                   -- PRODUCTION or SANDBOX
    period_type             text,                   -- NORMAL, TRIAL, INTRO, ...
    purchased_at            timestamptz,
    status_reason           text,                   -- cancel_reason / expiration_reason of the store
    last_event_id           text,
    last_event_at           timestamptz NOT NULL,   -- store time of the newest event applied: older ones change nothing
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX entitlements_subscription ON credits.entitlements (source, original_transaction_id)
    WHERE NOT provisional;
CREATE UNIQUE INDEX entitlements_claim ON credits.entitlements (user_id, original_transaction_id)
    WHERE provisional;
CREATE INDEX entitlements_by_user ON credits.entitlements (user_id);
CREATE INDEX entitlements_transaction ON credits.entitlements (transaction_id);

CREATE TABLE credits.store_events (
    source     text NOT NULL,
    event_id   text NOT NULL,
    event_type text NOT NULL,
    user_id    uuid,                      -- the user it was applied to (TRANSFER: the destination)
    event_at   timestamptz NOT NULL,      -- the store's event_timestamp_ms
    result     jsonb NOT NULL,            -- what apply_revenuecat_event returned
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, event_id)
);

ALTER TABLE credits.products ENABLE ROW LEVEL SECURITY;
ALTER TABLE credits.purchases ENABLE ROW LEVEL SECURITY;
ALTER TABLE credits.entitlements ENABLE ROW LEVEL SECURITY;
ALTER TABLE credits.store_events ENABLE ROW LEVEL SECURITY;

SELECT pg_catalog.pg_extension_config_dump('credits.products', '');
SELECT pg_catalog.pg_extension_config_dump('credits.purchases', '');
SELECT pg_catalog.pg_extension_config_dump('credits.entitlements', '');
SELECT pg_catalog.pg_extension_config_dump('credits.entitlements_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('credits.store_events', '');

ALTER TABLE credits.plans ENABLE ROW LEVEL SECURITY;
ALTER TABLE credits.operations ENABLE ROW LEVEL SECURITY;
ALTER TABLE credits.accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE credits.ledger ENABLE ROW LEVEL SECURITY;
ALTER TABLE credits.lots ENABLE ROW LEVEL SECURITY;
ALTER TABLE credits.holds ENABLE ROW LEVEL SECURITY;

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

/* ---- Job lifecycle: holds and refunds (src/holds.c, src/refunds.c) ---- */

/*
 * The credits.holds table is in the schema part (00_schema.sql), so that
 * credits.reconcile_checks can check it.  Every function here takes the
 * account row lock of the hold's (or the charge's) user first.
 */

CREATE FUNCTION credits.reserve(
    user_id uuid,
    operation text,
    units bigint DEFAULT 1,
    idempotency_key text DEFAULT NULL,
    reference text DEFAULT NULL,
    metadata jsonb DEFAULT '{}')
RETURNS credits.receipt
LANGUAGE c VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_reserve';

COMMENT ON FUNCTION credits.reserve(uuid, text, bigint, text, text, jsonb) IS
'Reserves cost x units for a job (checks like a consume; the receipt''s entry_id is the hold id); the hold times out after credits.hold_timeout.';

CREATE FUNCTION credits.capture(hold_id bigint, units bigint DEFAULT NULL)
RETURNS credits.receipt
LANGUAGE c VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_capture';

COMMENT ON FUNCTION credits.capture(bigint, bigint) IS
'Charges units (default: all reserved) of an open hold at the price of reserve time; the rest returns. PT409 when the hold is not open.';

CREATE FUNCTION credits.release(hold_id bigint)
RETURNS credits.receipt
LANGUAGE c VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_release';

COMMENT ON FUNCTION credits.release(bigint) IS
'Returns all credits of an open hold; the operation no longer counts towards today''s limit. PT409 when the hold is not open.';

CREATE FUNCTION credits.expire_holds()
RETURNS bigint
LANGUAGE c VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_expire_holds';

COMMENT ON FUNCTION credits.expire_holds() IS
'Releases every timed-out hold now (for an admin or pg_cron; the next touch of an account does it anyway); returns how many.';

CREATE FUNCTION credits.refund(
    entry_id bigint,
    amount bigint DEFAULT NULL,
    reason text DEFAULT NULL,
    idempotency_key text DEFAULT NULL)
RETURNS credits.receipt
LANGUAGE c VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_refund';

COMMENT ON FUNCTION credits.refund(bigint, bigint, text, text) IS
'Gives back all (amount NULL) or part of a consume or capture charge to the lots it came from; never more than charged; idempotent by key.';
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
/* ---- Purchases: packs, entitlements, RevenueCat webhooks, instant unlock (src/purchases.c, src/revenuecat.c) ---- */

CREATE FUNCTION credits.apply_purchase(
    user_id uuid,
    product_id text,
    transaction_id text,
    source text,
    purchased_at timestamptz,
    expires_at timestamptz DEFAULT NULL)
RETURNS credits.receipt
LANGUAGE c VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_apply_purchase';

COMMENT ON FUNCTION credits.apply_purchase(uuid, text, text, text, timestamptz, timestamptz) IS
'Applies a verified store transaction once per (source, transaction_id): a pack becomes a lot (a purchase entry), a subscription an entitlement (receipt kind ''entitlement'', entry_id NULL).';

CREATE FUNCTION credits.apply_revenuecat_event(payload jsonb)
RETURNS jsonb
LANGUAGE c VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_apply_revenuecat_event';

COMMENT ON FUNCTION credits.apply_revenuecat_event(jsonb) IS
'Applies a RevenueCat webhook body exactly once, in any order; returns {"status": "applied" | "duplicate" | "ignored", "reason": ..., ...}. Malformed payloads: 22023 with the field.';

CREATE FUNCTION credits.claim_pending_purchase(product_id text, transaction_id text)
RETURNS jsonb
LANGUAGE c VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_claim_pending_purchase';

COMMENT ON FUNCTION credits.claim_pending_purchase(text, text) IS
'Client: unlocks the product''s plan for the calling user for credits.pending_purchase_grace until the store confirms the transaction (packs wait for the store).';

/*
 * A user sees their own entitlements (plan, status, expiry), never another's
 * (grant_roles grants SELECT on every table with a SELECT policy); the
 * product catalog is public, like plans and operations.  Purchases and store
 * events stay with the admin.
 */
CREATE POLICY own_rows ON credits.entitlements FOR SELECT
    USING (user_id = (SELECT credits.current_user_id_or_null()));
CREATE POLICY readable ON credits.products FOR SELECT USING (true);

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

/* ---- Privileges: nothing is callable until granted deliberately ---- */

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA credits FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA credits FROM PUBLIC;
/* ---- Roles: on Supabase (or wherever these roles exist), grant them now ---- */

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'authenticated')
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'service_role') THEN
        PERFORM credits.grant_roles('authenticated', 'service_role');
    END IF;
END
$$;
