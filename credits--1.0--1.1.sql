/* credits--1.0--1.1.sql: from 1.0 (git tag v1.0) to 1.1.
 *
 * CREATE EXTENSION credits runs credits--1.0.sql and then this script, so a
 * fresh install and ALTER EXTENSION credits UPDATE run the same statements.
 * Sections are grouped by concern, each saying what it changes and why.
 */

\echo Use "ALTER EXTENSION credits UPDATE TO '1.1'" to load this file. \quit

-- == ledger kinds: one table (kinds.c), shown to SQL ==
/*
 * What each ledger entry kind means (the sign of its amount, the tombstone
 * total of credits.deleted_accounts it adds to, whether it is a charge for an
 * operation) is one C table that every C reader uses, delete_account's
 * tombstone included.  This function shows it to SQL, so that a query needing
 * the list reads it from there instead of repeating it.
 */
CREATE FUNCTION credits.entry_kinds(
    OUT kind text, OUT sign integer, OUT bucket text, OUT billable boolean)
RETURNS SETOF record
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'credits_entry_kinds';
REVOKE ALL ON FUNCTION credits.entry_kinds() FROM PUBLIC;

COMMENT ON FUNCTION credits.entry_kinds() IS
'The ledger entry kinds: sign of the amount (1: >= 0, -1: <= 0, 0: either), the credits.deleted_accounts total it adds to, and whether it is a charge for an operation (usage, refundable).';
-- The admin role (the roles credits.grant_roles gave the admin functions) gets it too.
DO $$
DECLARE
    r regrole;
BEGIN
    FOR r IN
        SELECT DISTINCT a.grantee::regrole
          FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
         WHERE p.oid = 'credits.grant_credits(uuid, bigint, text, text, timestamptz, text, jsonb)'::pg_catalog.regprocedure
           AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner AND a.grantee <> 0
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION credits.entry_kinds() TO %s', r);
    END LOOP;
END
$$;

-- == expire_holds: a bounded batch ==
/*
 * expire_holds() locked every account with a timed-out hold in one
 * transaction.  It now takes at most batch_size accounts per call (default
 * 1000) and returns how many holds it released, so a caller loops while the
 * result is positive.  `SELECT credits.expire_holds()` keeps working (the
 * default); the old zero-argument function is replaced, not overloaded, so
 * that call is not ambiguous.
 */
DO $$
DECLARE
    r regrole;
    grantees regrole[];
BEGIN
    -- whoever may call it now (the admin role, a pg_cron role) keeps that right
    SELECT pg_catalog.array_agg(DISTINCT a.grantee::regrole) INTO grantees
      FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
     WHERE p.oid = 'credits.expire_holds()'::pg_catalog.regprocedure
       AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner AND a.grantee <> 0;
    DROP FUNCTION credits.expire_holds();
    CREATE FUNCTION credits.expire_holds(batch_size integer DEFAULT 1000)
    RETURNS bigint
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'credits_expire_holds';
    REVOKE ALL ON FUNCTION credits.expire_holds(integer) FROM PUBLIC;
    FOREACH r IN ARRAY coalesce(grantees, '{}') LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION credits.expire_holds(integer) TO %s', r);
    END LOOP;
END
$$;

COMMENT ON FUNCTION credits.expire_holds(integer) IS
'Releases timed-out holds now, in at most batch_size accounts (for an admin or pg_cron; the next touch of an account does it anyway); returns how many holds, call again while positive.';
