-- bench/baselines.sql: the two baselines credits is measured against.
--
-- Both implement the same contract as credits.credits_consume for the bench:
-- an operation has a price (bench.operations), a call charges cost x units,
-- refuses when the balance is too low or today's operations reached the
-- daily limit, writes one ledger row, and an idempotency key makes a retried
-- call return the first result instead of charging twice.
--
--  (a) floor    the cheapest thing Postgres can do: ONE plain SQL statement
--               per call (sent by the client, prepared), a CTE that updates
--               the balance row under its condition (balance and today's
--               counter kept in the row) and inserts the ledger row.  The
--               statements are in bench/floor_*.pgbench.
--  (b) plpgsql  what a Supabase user writes instead: a SECURITY DEFINER
--               PL/pgSQL function with a pinned search_path (as Supabase's
--               linter asks) that checks the idempotency key, locks the
--               balance row, counts today's debits with COUNT(*), and inserts
--               the ledger row.
--
-- Each baseline has its own tables, seeded by bench/seed.sql with the same
-- users and the same history as credits' own tables.  Nothing here is tuned
-- down: both ledgers carry the indexes such an app needs (history by user and
-- time, unique idempotency key per user).
--
-- Run as a superuser in the bench database: psql -v ON_ERROR_STOP=1 -f baselines.sql

DROP SCHEMA IF EXISTS bench CASCADE;
CREATE SCHEMA bench;

-- Bench user n (1..) as a uuid: 00000000-0000-0000-0000-0000000000nn.
CREATE FUNCTION bench.uid(n bigint) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT ('00000000-0000-0000-0000-' || lpad(n::text, 12, '0'))::uuid $$;

-- The price list (the same rows as credits.operations for the bench).
CREATE TABLE bench.operations (
    name    text PRIMARY KEY,
    cost    bigint NOT NULL CHECK (cost >= 0),
    enabled boolean NOT NULL DEFAULT true
);
INSERT INTO bench.operations (name, cost) VALUES ('image', 1);

---------------------------------------------------------------------------
-- (a) floor
---------------------------------------------------------------------------
CREATE TABLE bench.floor_accounts (
    user_id     uuid PRIMARY KEY,
    balance     bigint NOT NULL CHECK (balance >= 0),
    daily_limit integer,                    -- NULL: no limit
    day         date NOT NULL,              -- the day that day_count counts (UTC)
    day_count   integer NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE bench.floor_ledger (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         uuid NOT NULL,
    amount          bigint NOT NULL,
    balance_after   bigint NOT NULL,
    operation       text,
    units           bigint,
    idempotency_key text,
    reason          text,
    metadata        jsonb,
    created_at      timestamptz NOT NULL DEFAULT now()
);
-- (indexes are created by bench/seed.sql after the bulk load)

---------------------------------------------------------------------------
-- (b) plpgsql
---------------------------------------------------------------------------
CREATE TABLE bench.plpgsql_accounts (
    user_id     uuid PRIMARY KEY,
    balance     bigint NOT NULL CHECK (balance >= 0),
    daily_limit integer,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE bench.plpgsql_ledger (LIKE bench.floor_ledger INCLUDING ALL);

CREATE FUNCTION bench.plpgsql_consume(p_user uuid, p_operation text, p_units bigint DEFAULT 1,
                                      p_key text DEFAULT NULL,
                                      OUT entry_id bigint, OUT balance bigint,
                                      OUT daily_remaining bigint, OUT replayed boolean)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    v_cost    bigint;
    v_balance bigint;
    v_limit   integer;
    v_used    bigint;
    v_id      bigint;
BEGIN
    -- 1. idempotency: a retried request returns its first result
    IF p_key IS NOT NULL THEN
        SELECT l.id, l.balance_after INTO v_id, v_balance
          FROM bench.plpgsql_ledger l
         WHERE l.user_id = p_user AND l.idempotency_key = p_key;
        IF FOUND THEN
            entry_id := v_id;
            balance := v_balance;
            replayed := true;
            RETURN;
        END IF;
    END IF;

    SELECT o.cost * p_units INTO v_cost
      FROM bench.operations o WHERE o.name = p_operation AND o.enabled;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown operation %', p_operation USING ERRCODE = '22023';
    END IF;

    -- 2. lock the balance row
    SELECT a.balance, a.daily_limit INTO v_balance, v_limit
      FROM bench.plpgsql_accounts a WHERE a.user_id = p_user FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown user %', p_user USING ERRCODE = '22023';
    END IF;

    -- 3. today's operations, counted from the ledger
    SELECT count(*) INTO v_used
      FROM bench.plpgsql_ledger l
     WHERE l.user_id = p_user AND l.amount < 0
       AND l.created_at >= date_trunc('day', now());
    IF v_limit IS NOT NULL AND v_used >= v_limit THEN
        RAISE EXCEPTION 'daily limit reached' USING ERRCODE = 'PT429';
    END IF;
    IF v_balance < v_cost THEN
        RAISE EXCEPTION 'not enough credits' USING ERRCODE = 'PT402';
    END IF;

    -- 4. charge and record
    UPDATE bench.plpgsql_accounts a
       SET balance = a.balance - v_cost, updated_at = now()
     WHERE a.user_id = p_user
    RETURNING a.balance INTO v_balance;
    INSERT INTO bench.plpgsql_ledger (user_id, amount, balance_after, operation, units,
                                      idempotency_key, metadata)
    VALUES (p_user, -v_cost, v_balance, p_operation, p_units, p_key, '{}')
    RETURNING id INTO v_id;

    entry_id := v_id;
    balance := v_balance;
    daily_remaining := v_limit - v_used - 1;
    replayed := false;
END
$$;

CREATE FUNCTION bench.plpgsql_grant(p_user uuid, p_amount bigint, p_reason text,
                                    OUT entry_id bigint, OUT balance bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    v_balance bigint;
BEGIN
    IF p_amount IS NULL OR p_amount <= 0 THEN
        RAISE EXCEPTION 'amount must be positive' USING ERRCODE = '22023';
    END IF;
    UPDATE bench.plpgsql_accounts a
       SET balance = a.balance + p_amount, updated_at = now()
     WHERE a.user_id = p_user
    RETURNING a.balance INTO v_balance;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown user %', p_user USING ERRCODE = '22023';
    END IF;
    INSERT INTO bench.plpgsql_ledger (user_id, amount, balance_after, reason, metadata)
    VALUES (p_user, p_amount, v_balance, p_reason, '{}')
    RETURNING id INTO entry_id;
    balance := v_balance;
END
$$;

CREATE FUNCTION bench.plpgsql_daily_available(p_user uuid)
RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    v_limit integer;
    v_used  bigint;
BEGIN
    SELECT a.daily_limit INTO v_limit FROM bench.plpgsql_accounts a WHERE a.user_id = p_user;
    IF v_limit IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT count(*) INTO v_used
      FROM bench.plpgsql_ledger l
     WHERE l.user_id = p_user AND l.amount < 0
       AND l.created_at >= date_trunc('day', now());
    RETURN greatest(v_limit - v_used, 0);
END
$$;

CREATE FUNCTION bench.plpgsql_balance(p_user uuid)
RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = ''
AS $$
BEGIN
    RETURN (SELECT a.balance FROM bench.plpgsql_accounts a WHERE a.user_id = p_user);
END
$$;
