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
