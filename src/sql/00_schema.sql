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
