-- The hot path writes credits.accounts, credits.ledger and credits.lots
-- directly (src/rows.c).  Each claim of rows.c's header, proven: what a table
-- declares is kept as an INSERT or UPDATE would keep it, and a table that is
-- no longer what the code was written for is refused, never crashed on.
-- Each case runs in a transaction that is rolled back.  Self-contained.
SET client_min_messages = warning;
SELECT pg_postmaster_start_time() AS started \gset
\set u 'dba0d1e0-0000-4000-8000-000000000001'
CREATE EXTENSION IF NOT EXISTS moddatetime SCHEMA public;
CREATE FUNCTION pg_temp.sqlstate_of(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;
CREATE TABLE public.dba_fired (tbl text, what text);
CREATE FUNCTION public.dba_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.dba_fired VALUES (TG_TABLE_NAME, TG_WHEN || ' ' || TG_OP || ' ' || TG_LEVEL);
    RETURN CASE WHEN TG_LEVEL = 'STATEMENT' THEN NULL WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;
SELECT amount FROM credits.grant_credits(:'u', 100, 'setup');

-- == Kept ==
-- CHECK constraints added by a DBA (compiled again after the change).
BEGIN;
SELECT credits.balance(:'u') + 50 AS cap \gset
ALTER TABLE credits.accounts ADD CONSTRAINT dba_cap CHECK (balance <= :cap) NOT VALID;
SELECT pg_temp.sqlstate_of(format('SELECT credits.grant_credits(%L, 100, %L)', :'u', 'over the cap')) AS over_the_cap;
SELECT amount FROM credits.grant_credits(:'u', 10, 'under the cap');
ROLLBACK;

-- A unique index added by a DBA: one consume of each operation per user.
BEGIN;
CREATE UNIQUE INDEX dba_once ON credits.ledger (user_id, operation)
    WHERE kind = 'consume' AND user_id = 'dba0d1e0-0000-4000-8000-000000000001';
SELECT amount FROM credits.credits_consume(:'u', 'image', 1);
SELECT pg_temp.sqlstate_of(format('SELECT credits.credits_consume(%L, %L, 1)', :'u', 'image')) AS second_consume;
ROLLBACK;

-- Partial index predicates are compiled once per backend, by index: an
-- index made again with another predicate gets the new one at once (the
-- first one no longer refuses, the second does), and a dropped one is gone.
BEGIN;
CREATE UNIQUE INDEX dba_ref ON credits.ledger (user_id, reference) WHERE reference = 'dba-ref-1';
SELECT amount FROM credits.credits_consume(:'u', 'image', 1, NULL, 'dba-ref-2');
SELECT amount FROM credits.credits_consume(:'u', 'image', 1, NULL, 'dba-ref-2');
DROP INDEX credits.dba_ref;
CREATE UNIQUE INDEX dba_ref ON credits.ledger (user_id, reference) WHERE reference = 'dba-ref-3';
SELECT amount FROM credits.credits_consume(:'u', 'image', 1, NULL, 'dba-ref-3');
SELECT pg_temp.sqlstate_of(format('SELECT credits.credits_consume(%L, %L, 1, NULL, %L)', :'u', 'image', 'dba-ref-3')) AS same_ref_again;
DROP INDEX credits.dba_ref;
SELECT amount FROM credits.credits_consume(:'u', 'image', 1, NULL, 'dba-ref-3');
ROLLBACK;

-- Stored generated columns: the lot's spendable, and one a DBA adds.
BEGIN;
ALTER TABLE credits.ledger ADD COLUMN dba_cost bigint GENERATED ALWAYS AS (-amount) STORED;
SELECT amount FROM credits.credits_consume(:'u', 'image', 3);
SELECT kind, amount, dba_cost FROM credits.ledger WHERE user_id = :'u' ORDER BY id DESC LIMIT 1;
SELECT count(*) FILTER (WHERE remaining < amount) AS lots_burned,
       bool_and(spendable = (remaining > 0)) AS spendable_recomputed
  FROM credits.lots WHERE user_id = :'u';
ROLLBACK;

-- DEFAULTs of columns the code does not set, volatile ones per row: the
-- column every consume failed on ("null value in column region").
BEGIN;
CREATE SEQUENCE public.dba_seq;
ALTER TABLE credits.ledger ADD COLUMN region text NOT NULL DEFAULT 'eu',
                           ADD COLUMN dba_serial bigint DEFAULT nextval('public.dba_seq');
ALTER TABLE credits.lots ADD COLUMN origin text NOT NULL DEFAULT 'app';
SELECT amount FROM credits.credits_consume(:'u', 'image', 1);
SELECT amount FROM credits.credits_consume(:'u', 'image', 1);
SELECT amount FROM credits.grant_credits(:'u', 5, 'with a default');
SELECT kind, region, dba_serial > 0 AS has_serial FROM credits.ledger WHERE user_id = :'u' ORDER BY id DESC LIMIT 3;
SELECT count(DISTINCT dba_serial) AS serials FROM (SELECT dba_serial FROM credits.ledger WHERE user_id = :'u' ORDER BY id DESC LIMIT 3) l;
SELECT amount, origin FROM credits.lots WHERE user_id = :'u' ORDER BY id DESC LIMIT 1;
ROLLBACK;

-- Row triggers: BEFORE and AFTER, and UPDATE OF a column the code sets
-- (balance) fires; UPDATE OF a column it does not set (timezone) does not.
-- A BEFORE trigger's change to the new row is kept.
BEGIN;
CREATE TRIGGER dba_before BEFORE INSERT ON credits.ledger FOR EACH ROW EXECUTE FUNCTION public.dba_log();
CREATE TRIGGER dba_after AFTER INSERT ON credits.ledger FOR EACH ROW EXECUTE FUNCTION public.dba_log();
CREATE TRIGGER dba_balance AFTER UPDATE OF balance ON credits.accounts FOR EACH ROW EXECUTE FUNCTION public.dba_log();
CREATE TRIGGER dba_timezone AFTER UPDATE OF timezone ON credits.accounts FOR EACH ROW EXECUTE FUNCTION public.dba_log();
CREATE TRIGGER dba_remaining BEFORE UPDATE OF remaining ON credits.lots FOR EACH ROW EXECUTE FUNCTION public.dba_log();
CREATE FUNCTION public.dba_tag() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.metadata := coalesce(NEW.metadata, '{}') || '{"tagged": true}';
    RETURN NEW;
END $$;
CREATE TRIGGER dba_tag BEFORE INSERT ON credits.ledger FOR EACH ROW EXECUTE FUNCTION public.dba_tag();
SELECT amount FROM credits.credits_consume(:'u', 'image', 1);
SELECT tbl, what, count(*) FROM public.dba_fired GROUP BY 1, 2 ORDER BY 1, 2;
SELECT metadata FROM credits.ledger WHERE user_id = :'u' ORDER BY id DESC LIMIT 1;
ROLLBACK;

-- Statement-level triggers do not fire for the direct writes (not kept).
BEGIN;
CREATE TRIGGER dba_statement AFTER INSERT ON credits.ledger FOR EACH STATEMENT EXECUTE FUNCTION public.dba_log();
SELECT amount FROM credits.credits_consume(:'u', 'image', 1);
SELECT count(*) AS statement_triggers_fired FROM public.dba_fired;
ROLLBACK;

-- Foreign keys a DBA adds are checked (their RI triggers fire).
BEGIN;
CREATE TABLE public.dba_users (id uuid PRIMARY KEY);
ALTER TABLE credits.ledger ADD CONSTRAINT dba_user FOREIGN KEY (user_id) REFERENCES public.dba_users NOT VALID;
SELECT pg_temp.sqlstate_of(format('SELECT credits.credits_consume(%L, %L, 1)', :'u', 'image')) AS unknown_user;
INSERT INTO public.dba_users VALUES (:'u');
SELECT amount FROM credits.credits_consume(:'u', 'image', 1);
ROLLBACK;

-- moddatetime on accounts (as Supabase projects add it): balance,
-- daily_available, my_balance and set_plan when maintenance is due (a hold
-- timed out) failed with "attempted to lock invisible tuple".
BEGIN;
CREATE TRIGGER dba_moddatetime BEFORE UPDATE ON credits.accounts
    FOR EACH ROW EXECUTE FUNCTION public.moddatetime(updated_at);
SELECT set_config('request.jwt.claims', json_build_object('sub', :'u')::text, true) IS NOT NULL AS claims;
CREATE FUNCTION pg_temp.hold_times_out(u uuid) RETURNS bigint LANGUAGE sql AS $$
    SELECT amount FROM credits.reserve(u, 'image', 1);
    UPDATE credits.holds SET expires_at = now() - interval '1 hour' WHERE user_id = u AND status = 'open';
    UPDATE credits.accounts SET next_hold_expiry = now() - interval '1 hour' WHERE user_id = u;
    SELECT count(*) FROM credits.holds WHERE user_id = u AND status = 'open';
$$;
SELECT pg_temp.hold_times_out(:'u') AS open_holds;
SELECT credits.balance(:'u') > 0 AS balance;
SELECT pg_temp.hold_times_out(:'u') AS open_holds;
SELECT credits.daily_available(:'u') IS DISTINCT FROM -1 AS daily_available;
SELECT pg_temp.hold_times_out(:'u') AS open_holds;
SELECT credits.my_balance() > 0 AS my_balance;
SELECT pg_temp.hold_times_out(:'u') AS open_holds;
SELECT credits.set_plan(:'u', 'pro');
SELECT status, count(*) FROM credits.holds WHERE user_id = :'u' GROUP BY status ORDER BY status;
ROLLBACK;

-- == Refused, at the first use after the change ==
-- A column type changed under the code (this one crashed the next grant).
BEGIN;
ALTER TABLE credits.lots ALTER COLUMN priority TYPE numeric;
\set VERBOSITY default
SELECT credits.grant_credits(:'u', 10, 'after the type change');
ROLLBACK;
-- A column the code uses dropped.
BEGIN;
ALTER TABLE credits.ledger DROP COLUMN actor;
SELECT credits.credits_consume(:'u', 'image', 1);
ROLLBACK;
-- NOT NULL dropped from a column the code reads without a NULL check.
BEGIN;
ALTER TABLE credits.accounts ALTER COLUMN balance DROP NOT NULL;
SELECT credits.balance(:'u');
ROLLBACK;
-- The ledger replaced by a partitioned table.
BEGIN;
ALTER TABLE credits.ledger RENAME TO ledger_unpartitioned;
CREATE TABLE credits.ledger (LIKE credits.ledger_unpartitioned) PARTITION BY RANGE (created_at);
SELECT credits.credits_consume(:'u', 'image', 1);
ROLLBACK;
-- The row types the functions return, changed with ALTER TYPE (before: a
-- bigint read as a text pointer crashed the server; an added attribute was
-- formed from past the end of the values).
BEGIN;
ALTER TYPE credits.receipt ALTER ATTRIBUTE amount TYPE text;
SELECT credits.grant_credits(:'u', 1, 'altered receipt');
ROLLBACK;
BEGIN;
ALTER TYPE credits.receipt ADD ATTRIBUTE note text;
SELECT credits.credits_consume(:'u', 'image', 1);
ROLLBACK;
BEGIN;
ALTER TYPE credits.receipt DROP ATTRIBUTE replayed;
SELECT credits.credits_consume(:'u', 'image', 1);
ROLLBACK;
BEGIN;
ALTER TYPE credits.rate_limit_result ALTER ATTRIBUTE retry_after_ms TYPE text;
SELECT credits.rate_limit(:'u', 'dba', 5, 1);
ROLLBACK;
BEGIN;
ALTER TYPE credits.account_deletion DROP ATTRIBUTE deleted_at;
SELECT credits.delete_account('dba0d1e0-0000-4000-8000-000000000002');
ROLLBACK;
-- Still usable after each rollback.
SELECT amount FROM credits.credits_consume(:'u', 'image', 1);

-- == Nothing is written in a read-only transaction (25006) ==
BEGIN READ ONLY;
SELECT pg_temp.sqlstate_of(format('SELECT credits.credits_consume(%L, %L, 1)', :'u', 'image')) AS consume;
SELECT pg_temp.sqlstate_of(format('SELECT credits.grant_credits(%L, 1, %L)', :'u', 'read only')) AS grant_credits;
ROLLBACK;

SELECT pg_postmaster_start_time() = :'started' AS "server did not restart";
SELECT credits.delete_account(:'u') IS NOT NULL AS cleaned_up;
DROP TABLE public.dba_fired;
DROP FUNCTION public.dba_log();
DROP EXTENSION moddatetime;
