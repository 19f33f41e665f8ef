/*
 * refunds.c
 *		credits.refund: giving back all or part of a charge (a `consume` or a
 *		`capture` entry) to the lots it was taken from.
 *
 * What is refundable is derived from the ledger every time: the charge minus
 * the `refund` entries that point at it (ref_id).  A partial refund fills the
 * charge's lots back in reverse spend order (the lot it burnt last first).
 * Credits returned to a lot that has expired meanwhile expire at once (an
 * `expire` entry follows): a refund never extends a credit's life.  The
 * refund that completes the full charge gives the day's operation back when
 * that operation counts in the account's current local day.
 *
 * Locks: the charged entry is looked up without a lock to learn its user;
 * that account row is then locked (account_lock) and everything that can
 * change (earlier refunds, lots) is re-read under the lock, so two refunds of
 * one entry are serialized and cannot refund more than was charged.
 */
#include "credits.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"

static CachedStatement entry_owner = {
	"SELECT user_id, kind::text, amount FROM credits.ledger WHERE id = $1", 1, {INT8OID}
};

/*
 * The charge as of now, under the lock: what is left to refund, and whether
 * its operation counts today (for a capture, the hold's day counts).
 */
static CachedStatement charge_select = {
	"SELECT e.operation, e.reference,"
	"       coalesce(h.created_at, e.created_at)"
	"         >= credits.local_day_start(credits.local_day(now(), a.timezone), a.timezone),"
	"       (-e.amount - coalesce((SELECT sum(r.amount) FROM credits.ledger r"
	"                               WHERE r.ref_id = e.id AND r.kind = 'refund'"
	"                                 AND r.user_id = e.user_id), 0))::bigint"
	"  FROM credits.ledger e"
	"  JOIN credits.accounts a ON a.user_id = e.user_id"
	"  LEFT JOIN credits.ledger h ON e.kind = 'capture' AND h.id = e.ref_id"
	" WHERE e.id = $1 AND e.user_id = $2",
	2, {INT8OID, UUIDOID}
};

/* Per lot: what the charge took from it minus what refunds gave back, last burnt first. */
static CachedStatement charge_lots = {
	"WITH taken AS ("
	"  SELECT e.lot_moves[i][1] AS lot_id, -e.lot_moves[i][2] AS amount"
	"    FROM credits.ledger e, generate_subscripts(e.lot_moves, 1) AS i"
	"   WHERE e.id = $1 AND e.user_id = $2"
	"), returned AS ("
	"  SELECT r.lot_moves[i][1] AS lot_id, sum(r.lot_moves[i][2]) AS amount"
	"    FROM credits.ledger r, generate_subscripts(r.lot_moves, 1) AS i"
	"   WHERE r.ref_id = $1 AND r.kind = 'refund' AND r.user_id = $2"
	"   GROUP BY 1"
	")"
	" SELECT t.lot_id, (t.amount - coalesce(b.amount, 0))::bigint"
	"   FROM taken t"
	"   LEFT JOIN returned b ON b.lot_id = t.lot_id"
	"   JOIN credits.lots l ON l.id = t.lot_id"
	"  ORDER BY l.expires_at DESC NULLS FIRST, l.priority, l.id DESC",
	2, {INT8OID, UUIDOID}
};

static void
refuse_unknown_entry(int64 entry_id)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown ledger entry"),
			 errdetail("{\"field\": \"entry_id\"}"),
			 errhint("Pass the entry_id of the consume or capture receipt to refund.")));
}

/*
 * credits.refund(entry_id bigint, amount bigint default null,
 *     reason text default null (required: NULL is refused), idempotency_key text default null)
 *   returns credits.receipt
 * amount NULL refunds everything still refundable.
 */
PG_FUNCTION_INFO_V1(credits_refund);
Datum
credits_refund(PG_FUNCTION_ARGS)
{
	int64		entry_id;
	bool		has_amount = !PG_ARGISNULL(1);
	int64		amount = 0;
	text	   *reason;
	text	   *key;
	RequestHash rh;
	Datum		args[2];
	pg_uuid_t	user_id;
	char	   *kind;
	bool		charge_kind;
	int64		charged;
	Account		acct;
	Receipt		receipt;

	refuse_client_request("credits.refund");

	require_arg(fcinfo, 0, "entry_id");
	entry_id = PG_GETARG_INT64(0);
	if (has_amount)
	{
		amount = PG_GETARG_INT64(1);
		if (amount <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("amount must be positive"),
					 errdetail("{\"field\": \"amount\"}"),
					 errhint("Pass the credits to give back, or NULL to refund all that is left.")));
	}
	/* the SQL signature needs a default after amount's; an audit trail needs a reason */
	require_arg(fcinfo, 2, "reason");
	reason = optional_text_arg(fcinfo, 2, "reason", CREDITS_MAX_REASON_CHARS);
	key = optional_key_arg(fcinfo, 3, "idempotency_key");

	request_hash_init(&rh, "refund");
	request_hash_int64(&rh, false, entry_id);
	request_hash_int64(&rh, !has_amount, amount);
	request_hash_text(&rh, reason);

	SPI_connect();

	/* the entry never changes: who it belongs to and what it is, without a lock */
	args[0] = Int64GetDatum(entry_id);
	if (spi_exec(&entry_owner, args, NULL) == 0)
		refuse_unknown_entry(entry_id);
	user_id = spi_get_uuid(0, 1);
	kind = spi_get_cstring(0, 2);
	charged = -spi_get_int64(0, 3);
	charge_kind = entry_kind(kind)->billable;
	if (!charge_kind || charged <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 charge_kind ?
				 errmsg("the %s charged no credits, nothing to refund", kind) :
				 errmsg("a %s entry is not a refundable charge", kind),
				 errdetail("{\"field\": \"entry_id\", \"kind\": \"%s\", \"amount\": " INT64_FORMAT "}",
						   kind, -charged),
				 errhint("Only consume and capture entries that charged credits can be refunded; "
						 "release an open hold instead, or grant credits to compensate.")));

	account_lock(&user_id, &acct);
	if (key == NULL || !ledger_find_replay(&user_id, key, &rh, &receipt))
	{
		LedgerEntry entry = {0};
		char	   *operation;
		bool		counted_today;
		int64		refundable;
		uint64		nlots;
		int64	   *lot_ids;
		int64	   *deltas;
		int			nmoves = 0;
		int64		left;
		int64		in_lots = 0;

		args[1] = UUIDPGetDatum(&user_id);
		if (spi_exec(&charge_select, args, NULL) == 0)
			refuse_unknown_entry(entry_id);	/* the account was deleted meanwhile */
		operation = spi_get_cstring(0, 1);
		entry.reference = spi_get_text_or_null(0, 2);
		counted_today = spi_get_bool(0, 3);
		refundable = spi_get_int64(0, 4);

		if (!has_amount)
			amount = refundable;
		if (amount <= 0 || amount > refundable)
			refuse_over_refund(entry_id, refundable, has_amount, amount);

		/* back to the charge's lots, the one it burnt last first */
		nlots = spi_exec(&charge_lots, args, NULL);
		lot_ids = palloc(sizeof(int64) * Max(nlots, 1));
		deltas = palloc(sizeof(int64) * Max(nlots, 1));
		left = amount;
		for (uint64 i = 0; i < nlots; i++)
		{
			int64		open = spi_get_int64(i, 2);
			int64		back = Min(open, left);

			in_lots = checked_add(in_lots, open, "amount");
			if (back <= 0)
				continue;
			lot_ids[nmoves] = spi_get_int64(i, 1);
			deltas[nmoves++] = back;
			left -= back;
		}
		if (in_lots != refundable)
			ereport(ERROR,
					(errcode(ERRCODE_CREDITS_DRIFT),
					 errmsg("the lots of entry " INT64_FORMAT " do not match its refunds", entry_id),
					 errdetail("{\"entry_id\": " INT64_FORMAT ", \"refundable\": " INT64_FORMAT ", \"in_lots\": " INT64_FORMAT "}",
							   entry_id, refundable, in_lots),
					 errhint("Run credits.reconcile() for this user.")));

		entry.kind = "refund";
		entry.amount = amount;
		entry.operation = operation;
		entry.has_ref_id = true;
		entry.ref_id = entry_id;
		entry.reason = reason;
		entry.idempotency_key = key;
		entry.request_hash = (int64) rh.hash;
		/* the refund that completes the charge: the operation did not happen */
		entry.day_ops = (amount == refundable && counted_today) ? -1 : 0;
		entry.lot_moves = lots_add(&acct, nmoves, lot_ids, deltas);

		account_add_balance(&acct, amount);
		if (entry.day_ops != 0)
			account_count_operation(&acct, entry.day_ops);
		ledger_append(&acct, &entry);
		lots_expire_if_due(&acct);
		account_save(&acct);
		receipt_from_entry(&acct, &entry, &receipt);
	}
	SPI_finish();
	PG_RETURN_DATUM(receipt_datum(fcinfo, &receipt));
}
