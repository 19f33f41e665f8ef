/*
 * accounts_admin.c
 *		Deleting an account: credits.delete_account(user_id).
 *
 * The one recorded exception to the ledger's immutability.  The user's rows
 * are removed from every table of schema credits that has a user_id column
 * (accounts, ledger, lots, and whatever per-user table a later part adds:
 * holds, entitlements, ...), and an anonymous tombstone of the totals is kept
 * in credits.deleted_accounts, so that the books of the whole system still
 * add up (credits granted and spent by users who are gone) without keeping
 * anything that identifies the user.
 *
 * Locks: the account row first (SELECT ... FOR UPDATE), like every writer, so
 * a concurrent call for the same user waits for the deletion and then finds
 * no account (it starts a new one, as any first touch does).  Then the user's
 * rows, table by table, accounts last.
 */
#include "credits.h"

#include "catalog/pg_type.h"
#include "funcapi.h"
#include "utils/builtins.h"

static CachedStatement account_lock_for_delete = {
	"SELECT plan, (created_at AT TIME ZONE 'UTC')::date FROM credits.accounts WHERE user_id = $1 FOR UPDATE",
	1, {UUIDOID}
};

/*
 * The user's entries per kind.  Each kind adds to one tombstone total
 * (kinds.c), so balance = granted - spent + refunded - expired + adjusted
 * holds whatever the mix of entries, and a kind this build does not know is
 * an error that names it, never a violated CHECK.
 */
static CachedStatement ledger_by_kind = {
	"SELECT kind::text, count(*), coalesce(sum(amount), 0)::bigint,"
	"       (min(created_at) AT TIME ZONE 'UTC')::date"
	"  FROM credits.ledger WHERE user_id = $1"
	" GROUP BY kind ORDER BY min(created_at)",
	1, {UUIDOID}
};

/* Every table of the extension's schema with a per-user column, the accounts last. */
static CachedStatement per_user_tables = {
	"SELECT n.nspname::text, c.relname::text, c.relname = 'ledger'"
	"  FROM pg_class c"
	"  JOIN pg_namespace n ON n.oid = c.relnamespace"
	"  JOIN pg_attribute a ON a.attrelid = c.oid"
	" WHERE n.nspname = 'credits' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
	"   AND a.attname = 'user_id' AND a.atttypid = 'uuid'::regtype AND NOT a.attisdropped"
	" ORDER BY c.relname = 'accounts', c.relname",
	0, {0}
};

static CachedStatement tombstone_insert = {
	"INSERT INTO credits.deleted_accounts (plan, entries, granted, spent, refunded, expired,"
	"  adjusted, balance, account_created_on)"
	" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
	" RETURNING id, deleted_at",
	9, {TEXTOID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, DATEOID}
};

/* What credits.delete_account returns (type credits.account_deletion). */
typedef struct Deletion
{
	bool		deleted;
	int64		tombstone_id;
	int64		entries;
	int64		totals[KIND_NBUCKETS];	/* granted, spent, refunded, expired, adjusted */
	int64		balance;
	TimestampTz deleted_at;
} Deletion;

static bool ledger_totals(const pg_uuid_t *user_id, Deletion *d, Datum *first_day);
static int	execute_ledger_delete(const char *sql, Oid *argtypes, Datum *args);
static void delete_user_rows(const pg_uuid_t *user_id);
static Datum deletion_datum(FunctionCallInfo fcinfo, const pg_uuid_t *user_id,
							const Deletion *d);

/*
 * Sums the user's entries into the tombstone totals; returns whether there
 * are any, and the (UTC) day of the first in *first_day.
 */
static bool
ledger_totals(const pg_uuid_t *user_id, Deletion *d, Datum *first_day)
{
	Datum		args[1] = {UUIDPGetDatum(user_id)};
	uint64		nkinds = spi_exec(&ledger_by_kind, args, NULL);

	for (uint64 i = 0; i < nkinds; i++)
	{
		bool		isnull;
		const EntryKind *kind = entry_kind(TextDatumGetCString(spi_get(i, 1, &isnull)));
		int64		amount = spi_get_int64(i, 3);

		d->entries = checked_add(d->entries, spi_get_int64(i, 2), "entries");
		entry_kind_add_to_totals(kind, amount, d->totals);
		d->balance = checked_add(d->balance, amount, "balance");
	}
	if (nkinds > 0)
	{
		bool		isnull;

		*first_day = spi_get(0, 4, &isnull);
	}
	return nkinds > 0;
}

/*
 * Runs the ledger's DELETE (`sql`, one uuid argument) under
 * credits_ledger_delete_allowed, which the append-only trigger honours,
 * reset whatever happens.  Returns SPI's result code.
 */
static int
execute_ledger_delete(const char *sql, Oid *argtypes, Datum *args)
{
	/* set inside PG_TRY and read after it: volatile, so longjmp cannot undo it */
	volatile int rc = 0;

	credits_ledger_delete_allowed = true;
	PG_TRY();
	{
		rc = SPI_execute_with_args(sql, 1, argtypes, args, NULL, false, 0);
	}
	PG_FINALLY();
	{
		credits_ledger_delete_allowed = false;
	}
	PG_END_TRY();
	return rc;
}

/*
 * DELETE FROM <table> WHERE user_id = $1 for every per-user table, the
 * ledger's through execute_ledger_delete.
 */
static void
delete_user_rows(const pg_uuid_t *user_id)
{
	uint64		ntables = spi_exec(&per_user_tables, NULL, NULL);
	SPITupleTable *tables = SPI_tuptable;
	Oid			argtypes[1] = {UUIDOID};
	Datum		args[1] = {UUIDPGetDatum(user_id)};

	for (uint64 i = 0; i < ntables; i++)
	{
		bool		isnull;
		char	   *nsp = TextDatumGetCString(SPI_getbinval(tables->vals[i], tables->tupdesc, 1, &isnull));
		char	   *rel = TextDatumGetCString(SPI_getbinval(tables->vals[i], tables->tupdesc, 2, &isnull));
		bool		is_ledger = DatumGetBool(SPI_getbinval(tables->vals[i], tables->tupdesc, 3, &isnull));
		char	   *sql = psprintf("DELETE FROM %s WHERE user_id = $1",
								   quote_qualified_identifier(nsp, rel));
		int			rc;

		if (!is_ledger)
			rc = SPI_execute_with_args(sql, 1, argtypes, args, NULL, false, 0);
		else
			rc = execute_ledger_delete(sql, argtypes, args);
		if (rc != SPI_OK_DELETE)
			elog(ERROR, "credits: %s failed (%s)", sql, SPI_result_code_string(rc));
	}
}

static Datum
deletion_datum(FunctionCallInfo fcinfo, const pg_uuid_t *user_id, const Deletion *d)
{
	TupleDesc	tupdesc;
	Datum		values[11];
	bool		nulls[11] = {false};
	pg_uuid_t  *uid = palloc(sizeof(pg_uuid_t));

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "credits: function must return credits.account_deletion");
	tupdesc = BlessTupleDesc(tupdesc);

	*uid = *user_id;
	values[0] = UUIDPGetDatum(uid);
	values[1] = BoolGetDatum(d->deleted);
	values[2] = Int64GetDatum(d->tombstone_id);
	nulls[2] = !d->deleted;
	values[3] = Int64GetDatum(d->entries);
	for (int i = 0; i < KIND_NBUCKETS; i++)
		values[4 + i] = Int64GetDatum(d->totals[i]);
	values[9] = Int64GetDatum(d->balance);
	values[10] = TimestampTzGetDatum(d->deleted_at);
	nulls[10] = !d->deleted;
	return HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls));
}

/*
 * credits.delete_account(user_id uuid) returns credits.account_deletion
 * Removes every row of the user and keeps an anonymous tombstone of the
 * totals.  A user without an account is not an error: deleted = false.
 */
PG_FUNCTION_INFO_V1(credits_delete_account);
Datum
credits_delete_account(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *user_id;
	Datum		args[1];
	Deletion	d = {0};
	bool		has_account;
	bool		has_entries;
	bool		isnull;
	Datum		unused_day;
	Datum		plan = (Datum) 0;
	bool		plan_isnull = true;
	Datum		created_on = (Datum) 0;
	bool		created_isnull = true;

	require_arg(fcinfo, 0, "user_id");
	user_id = PG_GETARG_UUID_P(0);
	args[0] = UUIDPGetDatum(user_id);

	SPI_connect();
	has_account = spi_exec(&account_lock_for_delete, args, NULL) > 0;
	if (has_account)
	{
		plan = SPI_datumTransfer(spi_get(0, 1, &plan_isnull), false, -1);
		created_on = spi_get(0, 2, &created_isnull);
	}

	has_entries = ledger_totals(user_id, &d, has_account ? &unused_day : &created_on);
	if (!has_account)
		created_isnull = !has_entries;

	if (has_account || has_entries)
	{
		Datum		targs[9];
		char		tnulls[9];

		delete_user_rows(user_id);

		memset(tnulls, ' ', sizeof(tnulls));
		targs[0] = plan;
		tnulls[0] = plan_isnull ? 'n' : ' ';
		targs[1] = Int64GetDatum(d.entries);
		for (int i = 0; i < KIND_NBUCKETS; i++)
			targs[2 + i] = Int64GetDatum(d.totals[i]);
		targs[7] = Int64GetDatum(d.balance);
		targs[8] = created_on;
		tnulls[8] = created_isnull ? 'n' : ' ';
		spi_exec(&tombstone_insert, targs, tnulls);
		d.deleted = true;
		d.tombstone_id = spi_get_int64(0, 1);
		d.deleted_at = DatumGetTimestampTz(spi_get(0, 2, &isnull));
	}
	SPI_finish();
	PG_RETURN_DATUM(deletion_datum(fcinfo, user_id, &d));
}
