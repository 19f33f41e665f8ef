-- What a DBA does to the extension's tables, and what every public function
-- does afterwards.  For each table, each change below is made in a
-- subtransaction, a workload calling every public function runs, and the
-- change is rolled back.  The workload's outcome must be the one without the
-- change ("as before") or a refusal with a clear SQLSTATE; row triggers must
-- fire (their log is shown); the server must not crash.  Self-contained.
SET client_min_messages = warning;
SELECT pg_postmaster_start_time() AS started \gset
CREATE SCHEMA dba;
CREATE EXTENSION moddatetime SCHEMA dba;

-- Products and a plan the workload buys and claims.
INSERT INTO credits.products (product_id, credits) VALUES ('dba_pack', 40);
INSERT INTO credits.products (product_id, plan) VALUES ('dba_sub', 'pro');

-- Row triggers log what fired.
CREATE TABLE dba.fired (tbl text, what text);
CREATE FUNCTION dba.log_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO dba.fired VALUES (TG_TABLE_NAME, TG_WHEN || ' ' || TG_OP);
    RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
END $$;

CREATE FUNCTION dba.receipt(r credits.receipt) RETURNS text LANGUAGE sql AS $$
    SELECT format('%s %s balance=%s daily=%s replayed=%s', r.kind, r.amount, r.balance,
                  coalesce(r.daily_remaining::text, '-'), r.replayed)
$$;

CREATE FUNCTION dba.rc_event(type text, id text, u uuid, txn text, product text) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT jsonb_build_object('api_version', '1.0', 'event', jsonb_build_object(
        'id', id, 'type', type, 'app_user_id', u, 'product_id', product,
        'event_timestamp_ms', (extract(epoch FROM now()) * 1000)::bigint,
        'purchased_at_ms', (extract(epoch FROM now()) * 1000)::bigint,
        'expiration_at_ms', (extract(epoch FROM now() + interval '30 days') * 1000)::bigint,
        'transaction_id', txn, 'original_transaction_id', txn,
        'environment', 'PRODUCTION', 'store', 'APP_STORE', 'period_type', 'NORMAL'))
$$;

-- Every public function, once; one line per call: what it returned (no ids,
-- no times) or the SQLSTATE and message it raised.
CREATE FUNCTION dba.workload(u uuid) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    r credits.receipt;
    hold bigint;
    charge bigint;
    n bigint;
    t text;
BEGIN
    PERFORM set_config('request.jwt.claims', json_build_object('sub', u)::text, true);
    BEGIN r := credits.grant_credits(u, 100, 'dba grant', 'dba-g1'); RETURN NEXT 'grant: ' || dba.receipt(r);
    EXCEPTION WHEN OTHERS THEN RETURN NEXT 'grant: ' || SQLSTATE || ' ' || SQLERRM; END;
    BEGIN r := credits.credits_consume(u, 'image', 2); charge := r.entry_id; RETURN NEXT 'consume: ' || dba.receipt(r);
    EXCEPTION WHEN OTHERS THEN RETURN NEXT 'consume: ' || SQLSTATE || ' ' || SQLERRM; END;
    BEGIN r := credits.credits_consume(u, 'image', 1, 'dba-k1'); RETURN NEXT 'consume keyed: ' || dba.receipt(r);
    EXCEPTION WHEN OTHERS THEN RETURN NEXT 'consume keyed: ' || SQLSTATE || ' ' || SQLERRM; END;
    BEGIN r := credits.credits_consume(u, 'image', 1, 'dba-k1'); RETURN NEXT 'consume replay: ' || dba.receipt(r);
    EXCEPTION WHEN OTHERS THEN RETURN NEXT 'consume replay: ' || SQLSTATE || ' ' || SQLERRM; END;
    BEGIN r := credits.consume('prompt_kchar', 3); RETURN NEXT 'consume (client): ' || dba.receipt(r);
    EXCEPTION WHEN OTHERS THEN RETURN NEXT 'consume (client): ' || SQLSTATE || ' ' || SQLERRM; END;
    BEGIN r := credits.reserve(u, 'image', 3); hold := r.entry_id; RETURN NEXT 'reserve: ' || dba.receipt(r);
    EXCEPTION WHEN OTHERS THEN RETURN NEXT 'reserve: ' || SQLSTATE || ' ' || SQLERRM; END;
    BEGIN r := credits.capture(hold, 2); RETURN NEXT 'capture: ' || dba.receipt(r);
    EXCEPTION WHEN OTHERS THEN RETURN NEXT 'capture: ' || SQLSTATE || ' ' || SQLERRM; END;
    BEGIN r := credits.reserve(u, 'video_second', 2); hold := r.entry_id; r := credits.release(hold);
          RETURN NEXT 'reserve, release: ' || dba.receipt(r);
    EXCEPTION WHEN OTHERS THEN RETURN NEXT 'reserve, release: ' || SQLSTATE || ' ' || SQLERRM; END;
    BEGIN r := credits.refund(charge, 1, 'dba refund'); RETURN NEXT 'refund: ' || dba.receipt(r);
    EXCEPTION WHEN OTHERS THEN RETURN NEXT 'refund: ' || SQLSTATE || ' ' || SQLERRM; END;
    BEGIN r := credits.apply_purchase(u, 'dba_pack', 'dba-T1', 'test', now()); RETURN NEXT 'apply_purchase: ' || dba.receipt(r);
    EXCEPTION WHEN OTHERS THEN RETURN NEXT 'apply_purchase: ' || SQLSTATE || ' ' || SQLERRM; END;
    BEGIN t := credits.claim_pending_purchase('dba_sub', 'dba-S1')->>'status'; RETURN NEXT 'claim_pending_purchase: ' || t;
    EXCEPTION WHEN OTHERS THEN RETURN NEXT 'claim_pending_purchase: ' || SQLSTATE || ' ' || SQLERRM; END;
    BEGIN
        t := credits.apply_revenuecat_event(dba.rc_event('INITIAL_PURCHASE', 'dba-e1', u, 'dba-S1', 'dba_sub'))
             - '{event_id,entitlement_id,expires_at,entry_id}'::text[];
        RETURN NEXT 'apply_revenuecat_event (subscription): ' || t;
        t := credits.apply_revenuecat_event(dba.rc_event('NON_RENEWING_PURCHASE', 'dba-e2', u, 'dba-T2', 'dba_pack'))
             - '{event_id,entitlement_id,expires_at,entry_id}'::text[];
        RETURN NEXT 'apply_revenuecat_event (pack): ' || t;
    EXCEPTION WHEN OTHERS THEN RETURN NEXT 'apply_revenuecat_event: ' || SQLSTATE || ' ' || SQLERRM; END;
    BEGIN t := (SELECT allowed || ' ' || remaining FROM credits.rate_limit(u, 'dba', 5, 1.0)); RETURN NEXT 'rate_limit: ' || t;
    EXCEPTION WHEN OTHERS THEN RETURN NEXT 'rate_limit: ' || SQLSTATE || ' ' || SQLERRM; END;
    -- (every function once: the client's once-a-day zone change limit is security_abuse's)
    PERFORM set_config('credits.timezone_change_interval', '0', true);
    BEGIN PERFORM credits.set_plan(u, 'free'); PERFORM credits.set_timezone(u, 'Europe/Paris');
          PERFORM credits.set_my_timezone('Asia/Tokyo'); RETURN NEXT 'set_plan, set_timezone, set_my_timezone: ok';
    EXCEPTION WHEN OTHERS THEN RETURN NEXT 'set_plan, set_timezone, set_my_timezone: ' || SQLSTATE || ' ' || SQLERRM; END;
    -- Maintenance due: a lot expired, a hold timed out.
    BEGIN
        PERFORM credits.reserve(u, 'image', 1);
        UPDATE credits.lots SET expires_at = now() - interval '1 hour'
         WHERE user_id = u AND id = (SELECT min(id) FROM credits.lots WHERE user_id = u AND remaining > 0);
        UPDATE credits.holds SET expires_at = now() - interval '1 hour' WHERE user_id = u AND status = 'open';
        UPDATE credits.accounts SET next_expiry = now() - interval '1 hour',
                                    next_hold_expiry = now() - interval '1 hour'
         WHERE user_id = u;
        RETURN NEXT format('maintenance: balance=%s daily=%s my_balance=%s my_daily=%s',
                           credits.balance(u), coalesce(credits.daily_available(u)::text, '-'),
                           credits.my_balance(), coalesce(credits.my_daily_available()::text, '-'));
    EXCEPTION WHEN OTHERS THEN RETURN NEXT 'maintenance: ' || SQLSTATE || ' ' || SQLERRM; END;
    BEGIN n := (SELECT count(*) FROM credits.account_summary(u, 10)); RETURN NEXT 'account_summary: ' || n || ' row(s)';
    EXCEPTION WHEN OTHERS THEN RETURN NEXT 'account_summary: ' || SQLSTATE || ' ' || SQLERRM; END;
    BEGIN n := (SELECT count(*) FROM credits.my_history(100, NULL)); RETURN NEXT 'my_history: ' || n || ' row(s)';
    EXCEPTION WHEN OTHERS THEN RETURN NEXT 'my_history: ' || SQLSTATE || ' ' || SQLERRM; END;
    BEGIN n := (SELECT count(*) FROM credits.my_usage(now() - interval '1 day')); RETURN NEXT 'my_usage: ' || n || ' row(s)';
    EXCEPTION WHEN OTHERS THEN RETURN NEXT 'my_usage: ' || SQLSTATE || ' ' || SQLERRM; END;
    BEGIN RETURN NEXT 'day_count_from_ledger: ' || credits.day_count_from_ledger(u);
    EXCEPTION WHEN OTHERS THEN RETURN NEXT 'day_count_from_ledger: ' || SQLSTATE || ' ' || SQLERRM; END;
    BEGIN n := (SELECT count(*) FROM credits.reconcile(u)); RETURN NEXT 'reconcile: ' || n || ' discrepancies';
    EXCEPTION WHEN OTHERS THEN RETURN NEXT 'reconcile: ' || SQLSTATE || ' ' || SQLERRM; END;
    BEGIN RETURN NEXT 'expire_holds: ' || credits.expire_holds();
    EXCEPTION WHEN OTHERS THEN RETURN NEXT 'expire_holds: ' || SQLSTATE || ' ' || SQLERRM; END;
    BEGIN t := (SELECT deleted || ' ' || entries FROM credits.delete_account(u)); RETURN NEXT 'delete_account: ' || t;
    EXCEPTION WHEN OTHERS THEN RETURN NEXT 'delete_account: ' || SQLSTATE || ' ' || SQLERRM; END;
END $$;

-- The tables, with the columns each change uses: one to index, a CHECK that
-- holds, one an UPDATE sets, one whose type changes (and to what), one the
-- engine uses to drop, and a NOT NULL one that is made to hold NULLs.
CREATE TABLE dba.tables (tbl text PRIMARY KEY, ord int, index_col text, check_expr text,
                         update_col text, type_col text, new_type text, drop_col text,
                         null_col text);
INSERT INTO dba.tables VALUES
    ('accounts',          1, 'plan',       'day_count < 1000000',     'balance',      'rate_tat',  'timestamp', 'next_hold_expiry', 'timezone'),
    ('ledger',            2, 'created_at', 'amount > -1000000000',    'operation',    'request_hash', 'numeric', 'actor',          'kind'),
    ('lots',              3, 'created_at', 'priority > -1000',        'remaining',    'priority',  'numeric',   'priority',         'remaining'),
    ('holds',             4, 'created_at', 'units < 1000000',         'status',       'unit_cost', 'numeric',   'unit_charge',      'operation'),
    ('purchases',         5, 'product_id', 'clawed_back < 1000000000', 'refund_state', 'entry_id', 'numeric',   'kind',             'kind'),
    ('entitlements',      6, 'product_id', 'plan <> ''''',            'status',       'expires_at', 'timestamp', 'next_product_id', 'status'),
    ('store_events',      7, 'event_type', 'event_type <> ''''',      'result',       'result',    'json',      'result',           'result'),
    ('plans',             8, 'rank',       'rank > -1000',            'daily_limit',  'rank',      'numeric',   'monthly_allocation', 'rank'),
    ('operations',        9, 'enabled',    'cost > -1',               'cost',         'cost',      'numeric',   'max_units',        'cost'),
    ('products',         10, 'plan',       'product_id <> ''x''',     'credits',      'credits',   'numeric',   'pack_expires_after', 'created_at'),
    ('rate_limits',      11, 'tat',        'action <> ''x''',         'tat',          'tat',       'timestamp', 'tat',              'tat'),
    ('deleted_accounts', 12, 'deleted_at', 'entries >= 0',            'plan',         'balance',   'numeric',   'spent',            'deleted_at');

-- Writes NULL into the column named by its argument, on every insert and update.
CREATE FUNCTION dba.null_column() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW := jsonb_populate_record(NEW, jsonb_build_object(TG_ARGV[0], NULL));
    RETURN NEW;
END $$;

-- The changes, as statements over a table's row of dba.tables.
CREATE FUNCTION dba.changes(t dba.tables) RETURNS TABLE (ord int, change text, ddl text)
LANGUAGE sql AS $$
    VALUES
    (1, 'nullable column', format('ALTER TABLE credits.%I ADD COLUMN dba_note text', t.tbl)),
    (2, 'NOT NULL DEFAULT column', format('ALTER TABLE credits.%I ADD COLUMN dba_region text NOT NULL DEFAULT ''eu''', t.tbl)),
    (3, 'index', format('CREATE INDEX dba_index ON credits.%I (%I)', t.tbl, t.index_col)),
    (4, 'CHECK', format('ALTER TABLE credits.%I ADD CONSTRAINT dba_check CHECK (%s)', t.tbl, t.check_expr)),
    (5, 'BEFORE row trigger', format('CREATE TRIGGER dba_before BEFORE INSERT OR UPDATE OR DELETE ON credits.%I '
                                     'FOR EACH ROW EXECUTE FUNCTION dba.log_row()', t.tbl)),
    (6, 'AFTER row trigger', format('CREATE TRIGGER dba_after AFTER INSERT OR UPDATE OR DELETE ON credits.%I '
                                    'FOR EACH ROW EXECUTE FUNCTION dba.log_row()', t.tbl)),
    (7, 'UPDATE OF trigger', format('CREATE TRIGGER dba_update_of AFTER UPDATE OF %I ON credits.%I '
                                    'FOR EACH ROW EXECUTE FUNCTION dba.log_row()', t.update_col, t.tbl)),
    (8, 'moddatetime', CASE WHEN t.tbl IN ('accounts', 'entitlements')
                            THEN format('CREATE TRIGGER dba_moddatetime BEFORE UPDATE ON credits.%I '
                                        'FOR EACH ROW EXECUTE FUNCTION dba.moddatetime(updated_at)', t.tbl)
                            ELSE format('ALTER TABLE credits.%I ADD COLUMN dba_modified timestamptz; '
                                        'CREATE TRIGGER dba_moddatetime BEFORE UPDATE ON credits.%I '
                                        'FOR EACH ROW EXECUTE FUNCTION dba.moddatetime(dba_modified)', t.tbl, t.tbl) END),
    (9, 'publication', format('CREATE PUBLICATION dba_pub FOR TABLE credits.%I', t.tbl)),
    (10, 'FORCE ROW LEVEL SECURITY', format('ALTER TABLE credits.%I ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY', t.tbl)),
    (11, 'column type', format('ALTER TABLE credits.%I ALTER COLUMN %I TYPE %s USING %I::%s',
                               t.tbl, t.type_col, t.new_type, t.type_col, t.new_type)),
    (12, 'drop a column', format('ALTER TABLE credits.%I DROP COLUMN %I', t.tbl, t.drop_col)),
    (13, 'NOT NULL dropped, NULLs written',
         format('ALTER TABLE credits.%I ALTER COLUMN %I DROP NOT NULL; '
                'CREATE TRIGGER dba_nulls BEFORE INSERT OR UPDATE ON credits.%I '
                'FOR EACH ROW EXECUTE FUNCTION dba.null_column(%L)', t.tbl, t.null_col, t.tbl, t.null_col)
         || CASE WHEN t.tbl IN ('plans', 'operations', 'products')
                 THEN format('; UPDATE credits.%I SET %I = NULL', t.tbl, t.null_col) ELSE '' END)
$$;

-- Runs the workload after `ddl` (NULL: none) and rolls everything back.
CREATE FUNCTION dba.try(ddl text, OUT outcome text[], OUT fired text) LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        BEGIN
            SET LOCAL client_min_messages = error;   -- publications: wal_level is not logical
            EXECUTE coalesce(ddl, 'SELECT');
            RESET client_min_messages;
        EXCEPTION WHEN OTHERS THEN
            outcome := ARRAY['the change itself fails: ' || SQLSTATE || ' ' || SQLERRM];
            RETURN;
        END;
        outcome := ARRAY(SELECT dba.workload('dba00000-0000-0000-0000-000000000001'));
        fired := (SELECT string_agg(DISTINCT what, ', ' ORDER BY what) FROM dba.fired);
        RAISE EXCEPTION USING ERRCODE = 'P0007', MESSAGE = 'dba: roll back';
    EXCEPTION WHEN SQLSTATE 'P0007' THEN
        NULL;
    END;
END $$;

-- Without a change: the reference (its values depend on the plans and
-- prices of the database, so only its refusals are shown: none).
CREATE TABLE dba.baseline AS SELECT (dba.try(NULL)).outcome;
SELECT count(*) AS calls, count(*) FILTER (WHERE o ~ '^[^:]+: [0-9A-Z]{5} ') AS refused
  FROM dba.baseline, unnest(outcome) o;
SELECT o AS refused_without_a_change FROM dba.baseline, unnest(outcome) o WHERE o ~ '^[^:]+: [0-9A-Z]{5} ';

-- Each change: the calls whose outcome differs from the reference (a
-- refusal: its SQLSTATE and message, and how many calls got it; calls that
-- depend on a refused one are only counted), and the row triggers that fired.
CREATE FUNCTION dba.differences(outcome text[]) RETURNS text LANGUAGE sql AS $$
    WITH dev AS (
        SELECT o, substring(o FROM '^[^:]+: ([0-9A-Z]{5} .*)$') AS err
          FROM unnest(outcome) o
         WHERE o <> ALL ((SELECT b.outcome FROM dba.baseline b)::text[])
    )
    SELECT CASE
        WHEN NOT EXISTS (SELECT FROM dev) THEN 'as before'
        WHEN NOT EXISTS (SELECT FROM dev WHERE err IS NOT NULL) THEN (SELECT string_agg(o, E'\n') FROM dev)
        ELSE (SELECT string_agg(format('%s (%s calls)', err, n), E'\n' ORDER BY err)
                FROM (SELECT err, count(*) AS n FROM dev WHERE err IS NOT NULL GROUP BY err) e)
             || coalesce(E'\n' || (SELECT nullif(count(*), 0) || ' later calls differ' FROM dev WHERE err IS NULL), '')
    END
$$;

SELECT t.tbl AS "table", c.change, dba.differences(r.outcome) AS outcome, r.fired
  FROM dba.tables t, dba.changes(t) c, dba.try(c.ddl) r
 ORDER BY t.ord, c.ord;

SELECT pg_postmaster_start_time() = :'started' AS "server did not restart";
DELETE FROM credits.products WHERE product_id IN ('dba_pack', 'dba_sub');
DROP SCHEMA dba CASCADE;
