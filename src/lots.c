/*
 * lots.c
 *		Lots: where credits come from, in which order they are spent, and
 *		their lazy expiry.
 *
 * Lots are only read or written under their account's row lock (see
 * account.c), so they need no row locks of their own.  Every change to a
 * lot's remaining amount is recorded in the ledger entry that caused it, as
 * lot_moves {{lot_id, delta}, ...}; reconcile() re-derives each lot from them.
 */
#include "credits.h"

#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "utils/array.h"

/*
 * Burns `amount` credits from the spendable lots in the contract's order:
 * soonest expiry first (no expiry last), then priority (higher first), then
 * oldest first.  One statement: a running total picks the lots to take from;
 * the moves come back in burn order (partial refunds return credits in the
 * reverse order).
 */
static CachedStatement burn_in_order = {
	"WITH usable AS ("
	"  SELECT id, remaining,"
	"         (sum(remaining) OVER (ORDER BY expires_at, priority DESC, id))::bigint"
	"           - remaining AS before"
	"    FROM credits.lots"
	"   WHERE user_id = $1 AND spendable"
	"     AND (expires_at IS NULL OR expires_at > now())"
	"), taken AS ("
	"  SELECT id, least(remaining, $2 - before) AS take, before"
	"    FROM usable WHERE before < $2"
	"), burnt AS ("
	"  UPDATE credits.lots l SET remaining = l.remaining - t.take"
	"    FROM taken t WHERE l.id = t.id"
	"  RETURNING l.id, t.take, t.before"
	")"
	" SELECT id, take FROM burnt ORDER BY before",
	2, {UUIDOID, INT8OID}
};

/* The columns of credits.lots the C code reads and writes, in the order of the names below. */
enum
{
	LOT_ID, LOT_USER_ID, LOT_ENTRY_ID, LOT_AMOUNT, LOT_REMAINING, LOT_EXPIRES_AT,
	LOT_PRIORITY, LOT_CREATED_AT, LOT_NCOLUMNS
};

static CreditsTable lots_table = {
	"lots", LOT_NCOLUMNS,
	{{"id", "bigint", true}, {"user_id", "pg_catalog.uuid", false},
		{"entry_id", "bigint", false}, {"amount", "bigint", false},
		{"remaining", "bigint", true}, {"expires_at", "timestamp with time zone", false},
	{"priority", "integer", false}, {"created_at", "timestamp with time zone", false}}
};

/*
 * The common case of burn_in_order: the first lot in spending order covers
 * the whole amount.  Reads lots_spend_order in order up to the first
 * spendable lot and takes the amount from it; returns false (and
 * burn_in_order runs) when that lot does not cover it.  Unless the lot is
 * emptied, its generated spendable column stays true and the update is HOT
 * (no index references remaining).  The account lock keeps every other
 * writer of these lots out, so the version read is the one updated.
 */
static bool
burn_first_lot(Account *acct, int64 amount, int64 *lot_id)
{
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	RowWriter	writer;
	RowScan		scan;
	bool		covered = false;

	row_writer_open(&writer, &lots_table);
	row_writer_scan(&writer, &scan, "lots_spend_order", &acct->user_id);
	while (row_scan_next(&scan))
	{
		bool		isnull;
		Datum		expires_at = row_get(&lots_table, scan.slot, LOT_EXPIRES_AT, &isnull);
		int64		remaining;

		if (!isnull && DatumGetTimestampTz(expires_at) <= now)
			continue;			/* expired, not written off yet */
		remaining = DatumGetInt64(row_get(&lots_table, scan.slot, LOT_REMAINING, &isnull));
		if (remaining <= 0)
			continue;
		if (remaining >= amount)
		{
			*lot_id = DatumGetInt64(row_get(&lots_table, scan.slot, LOT_ID, &isnull));
			row_writer_copy(&writer, scan.slot);
			row_writer_set(&writer, LOT_REMAINING, Int64GetDatum(remaining - amount), false);
			row_writer_update(&writer, scan.slot);
			covered = true;
		}
		break;
	}
	row_scan_end(&scan);
	row_writer_close(&writer);
	return covered;
}

static CachedStatement expire_due = {
	"WITH due AS ("
	"  SELECT id, remaining FROM credits.lots"
	"   WHERE user_id = $1 AND spendable AND expires_at <= now()"
	")"
	" UPDATE credits.lots l SET remaining = 0 FROM due WHERE l.id = due.id"
	" RETURNING l.id, due.remaining",
	1, {UUIDOID}
};

static CachedStatement earliest_expiry = {
	"SELECT min(expires_at) FROM credits.lots"
	" WHERE user_id = $1 AND spendable AND expires_at IS NOT NULL",
	1, {UUIDOID}
};

/* A bigint[][] value {{lot_id, delta}, ...} for ledger.lot_moves. */
Datum
lot_moves_array(int nmoves, const int64 *lot_ids, const int64 *deltas)
{
	Datum	   *elems = palloc(sizeof(Datum) * nmoves * 2);
	int			dims[2] = {nmoves, 2};
	int			lbs[2] = {1, 1};

	for (int i = 0; i < nmoves; i++)
	{
		elems[2 * i] = Int64GetDatum(lot_ids[i]);
		elems[2 * i + 1] = Int64GetDatum(deltas[i]);
	}
	return PointerGetDatum(construct_md_array(elems, NULL, 2, dims, lbs, INT8OID,
											  sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*
 * Takes `amount` credits out of the account's lots and returns the moves
 * (negative deltas).  The caller has checked the balance; lots that cannot
 * cover it mean the cached balance drifted, which is refused loudly.
 */
Datum
lots_burn(Account *acct, int64 amount)
{
	Datum		args[2] = {UUIDPGetDatum(&acct->user_id), Int64GetDatum(amount)};
	uint64		nmoves;
	int64	   *lot_ids;
	int64	   *deltas;
	int64		burnt = 0;

	int64		first_lot;

	if (burn_first_lot(acct, amount, &first_lot))
	{
		int64		delta = -amount;

		return lot_moves_array(1, &first_lot, &delta);
	}

	nmoves = spi_exec(&burn_in_order, args, NULL);
	lot_ids = palloc(sizeof(int64) * Max(nmoves, 1));
	deltas = palloc(sizeof(int64) * Max(nmoves, 1));

	for (uint64 i = 0; i < nmoves; i++)
	{
		lot_ids[i] = spi_get_int64(i, 1);
		deltas[i] = -spi_get_int64(i, 2);
		burnt -= deltas[i];
	}
	if (burnt != amount)
		ereport(ERROR,
				(errcode(ERRCODE_CREDITS_DRIFT),
				 errmsg("credit lots do not cover the cached balance"),
				 errdetail("{\"needed\": " INT64_FORMAT ", \"in_lots\": " INT64_FORMAT "}",
						   amount, burnt),
				 errhint("Run credits.reconcile() for this user.")));
	return lot_moves_array((int) nmoves, lot_ids, deltas);
}

/*
 * Creates the lot that a grant-like entry (already appended) brought in.  The
 * id comes from the lots' identity sequence and created_at is now(), as the
 * column defaults would give.
 */
void
lots_create(Account *acct, const LedgerEntry *entry, bool has_expiry,
			TimestampTz expires_at, int32 priority)
{
	RowWriter	writer;

	row_writer_open(&writer, &lots_table);
	row_writer_clear(&writer);
	row_writer_set(&writer, LOT_ID, Int64GetDatum(nextval_internal(credits_relid("lots_id_seq"), false)),
				   false);
	row_writer_set(&writer, LOT_USER_ID, UUIDPGetDatum(&acct->user_id), false);
	row_writer_set(&writer, LOT_ENTRY_ID, Int64GetDatum(entry->id), false);
	row_writer_set(&writer, LOT_AMOUNT, Int64GetDatum(entry->amount), false);
	row_writer_set(&writer, LOT_REMAINING, Int64GetDatum(entry->amount), false);
	row_writer_set(&writer, LOT_EXPIRES_AT, TimestampTzGetDatum(expires_at), !has_expiry);
	row_writer_set(&writer, LOT_PRIORITY, Int32GetDatum(priority), false);
	row_writer_set(&writer, LOT_CREATED_AT,
				   TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()), false);
	row_writer_insert(&writer);
	row_writer_close(&writer);

	if (has_expiry && (!acct->has_next_expiry || expires_at < acct->next_expiry))
	{
		acct->has_next_expiry = true;
		acct->next_expiry = expires_at;
	}
}

/*
 * Writes an `expire` entry for every lot whose expiry has passed and still
 * has credits, then recomputes when the next lot expires.
 */
void
lots_expire_due(Account *acct)
{
	Datum		args[1] = {UUIDPGetDatum(&acct->user_id)};
	uint64		nexpired = spi_exec(&expire_due, args, NULL);
	int64	   *lot_ids = palloc(sizeof(int64) * Max(nexpired, 1));
	int64	   *deltas = palloc(sizeof(int64) * Max(nexpired, 1));

	/* read them all first: ledger_append() runs statements of its own */
	for (uint64 i = 0; i < nexpired; i++)
	{
		lot_ids[i] = spi_get_int64(i, 1);
		deltas[i] = -spi_get_int64(i, 2);
	}
	for (uint64 i = 0; i < nexpired; i++)
	{
		LedgerEntry entry = {0};

		entry.kind = "expire";
		entry.amount = deltas[i];
		entry.lot_moves = lot_moves_array(1, &lot_ids[i], &deltas[i]);
		account_add_balance(acct, deltas[i]);
		ledger_append(acct, &entry);
	}

	spi_exec(&earliest_expiry, args, NULL);
	acct->has_next_expiry = spi_get_time_or_null(0, 1, &acct->next_expiry);
}
