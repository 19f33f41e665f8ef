
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
