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
 * Deletion is not a reset (deletion.c): a record of the deleted user id,
 * with no personal data, keeps what a returning id must not get again, and
 * the user's tombstone stays one row (later deletions add to it).
 * Purchases and store events are anonymized (user_id NULL), not deleted,
 * so that a store transaction or event applied once stays applied; limiter
 * buckets (credits.rate_limits) stay until they have drained.
 *
 * Locks: the user id's existence lock first (deletion.c), which a first
 * touch takes before it creates the account: a deletion that finds no
 * account knows none is being created, and a first touch waiting for a
 * deletion reads the record that deletion wrote.  Then the account row
 * (SELECT ... FOR UPDATE), like every writer, so a concurrent call for the
 * same user waits for the deletion and then finds no account (it starts a
 * new one, as any first touch does).  Then the user's rows, table by table,
 * accounts last.
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

/*
 * Every table of the extension's schema with a per-user column, the
 * accounts last, with what deletion does to its rows (UserRowsRule).
 */
static CachedStatement per_user_tables = {
	"SELECT n.nspname::text, c.relname::text,"
	"       CASE c.relname WHEN 'ledger' THEN 1"
	"                      WHEN 'purchases' THEN 2 WHEN 'store_events' THEN 2"
	"                      WHEN 'rate_limits' THEN 3 ELSE 0 END"
	"  FROM pg_class c"
	"  JOIN pg_namespace n ON n.oid = c.relnamespace"
	"  JOIN pg_attribute a ON a.attrelid = c.oid"
	" WHERE n.nspname = 'credits' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
	"   AND a.attname = 'user_id' AND a.atttypid = 'uuid'::regtype AND NOT a.attisdropped"
	" ORDER BY c.relname = 'accounts', c.relname",
	0, {0}
};

/* A later deletion of the same user id adds to its tombstone. */
static CachedStatement tombstone_add = {
	"UPDATE credits.deleted_accounts SET plan = $1, entries = entries + $2,"
	"  granted = granted + $3, spent = spent + $4, refunded = refunded + $5,"
	"  expired = expired + $6, adjusted = adjusted + $7, balance = balance + $8,"
	"  deleted_at = now()"
	" WHERE id = $10 RETURNING id, deleted_at",
	10, {TEXTOID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, DATEOID, INT8OID}
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

/* What deletion does to a per-user table's rows (per_user_tables). */
typedef enum UserRowsRule
{
	ROWS_DELETE,				/* deleted */
	ROWS_LEDGER,				/* deleted, past the append-only guard */
	ROWS_ANONYMIZE,				/* kept with user_id NULL: exactly-once records */
	ROWS_DRAINED				/* deleted once they carry nothing (limiter buckets) */
} UserRowsRule;

static const char *const user_rows_sql[] = {
	[ROWS_DELETE] = "DELETE FROM %s WHERE user_id = $1",
	[ROWS_LEDGER] = "DELETE FROM %s WHERE user_id = $1",
	[ROWS_ANONYMIZE] = "UPDATE %s SET user_id = NULL WHERE user_id = $1",
	[ROWS_DRAINED] = "DELETE FROM %s WHERE user_id = $1 AND tat <= now()",
};

static bool ledger_totals(const pg_uuid_t *user_id, Deletion *d, Datum *first_day);
static int	execute_ledger_delete(const char *sql, Oid *argtypes, Datum *args);
static void delete_user_rows(const pg_uuid_t *user_id);
static void write_tombstone(const pg_uuid_t *user_id, bool has_account, Datum plan,
							bool plan_isnull, Datum created_on, bool created_isnull, Deletion *d);
static void delete_account(const pg_uuid_t *user_id, Deletion *d);
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
		const EntryKind *kind = entry_kind(spi_get_cstring(i, 1));
		int64		amount = spi_get_int64(i, 3);

		d->entries = checked_add(d->entries, spi_get_int64(i, 2), "entries");
		entry_kind_add_to_totals(kind, amount, d->totals);
		d->balance = checked_add(d->balance, amount, "balance");
	}
	if (nkinds > 0)
	{
		bool		isnull;

		*first_day = spi_get_typed(0, 4, DATEOID, &isnull);
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
 * Removes (or anonymizes) the user's rows of every per-user table, the
 * ledger's through execute_ledger_delete.  Every statement goes through an
 * index on user_id.
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
		UserRowsRule rule = DatumGetInt32(SPI_getbinval(tables->vals[i], tables->tupdesc, 3, &isnull));
		bool		is_ledger = rule == ROWS_LEDGER;
		char	   *sql = psprintf(user_rows_sql[rule], quote_qualified_identifier(nsp, rel));
		int			rc;

		if (!is_ledger)
			rc = SPI_execute_with_args(sql, 1, argtypes, args, NULL, false, 0);
		else
			rc = execute_ledger_delete(sql, argtypes, args);
		if (rc != (rule == ROWS_ANONYMIZE ? SPI_OK_UPDATE : SPI_OK_DELETE))
			elog(ERROR, "credits: %s failed (%s)", sql, SPI_result_code_string(rc));
	}
}

static const Oid deletion_types[] = {UUIDOID, BOOLOID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID,
INT8OID, INT8OID, INT8OID, TIMESTAMPTZOID};

static Datum
deletion_datum(FunctionCallInfo fcinfo, const pg_uuid_t *user_id, const Deletion *d)
{
	TupleDesc	tupdesc;
	Datum		values[11];
	bool		nulls[11] = {false};
	pg_uuid_t  *uid = palloc(sizeof(pg_uuid_t));

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "credits: function must return credits.account_deletion");
	check_row_type(tupdesc, "credits.account_deletion", deletion_types, lengthof(deletion_types));
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
 * The tombstone of the deletion: a new one, or the one of the user id's
 * earlier deletion (deletion record) with these totals added.
 */
static void
write_tombstone(const pg_uuid_t *user_id, bool has_account, Datum plan, bool plan_isnull,
				Datum created_on, bool created_isnull, Deletion *d)
{
	Datum		targs[10];
	char		tnulls[10];
	int64		earlier = 0;
	bool		add = has_account && deletion_remember(user_id, &earlier);

	memset(tnulls, ' ', sizeof(tnulls));
	targs[0] = plan;
	tnulls[0] = plan_isnull ? 'n' : ' ';
	targs[1] = Int64GetDatum(d->entries);
	for (int i = 0; i < KIND_NBUCKETS; i++)
		targs[2 + i] = Int64GetDatum(d->totals[i]);
	targs[7] = Int64GetDatum(d->balance);
	targs[8] = created_on;
	tnulls[8] = created_isnull ? 'n' : ' ';
	targs[9] = Int64GetDatum(earlier);

	delete_user_rows(user_id);
	if (!add || spi_exec(&tombstone_add, targs, tnulls) == 0)
		spi_exec(&tombstone_insert, targs, tnulls);
	d->deleted = true;
	d->tombstone_id = spi_get_int64(0, 1);
	d->deleted_at = spi_get_time(0, 2);
	if (has_account)
		deletion_link_tombstone(user_id, d->tombstone_id);
}

/*
 * Removes every row of the user and keeps an anonymous tombstone of the
 * totals and the deletion record.  A user without an account is not an
 * error: deleted = false.
 */
static void
delete_account(const pg_uuid_t *user_id, Deletion *d)
{
	Datum		args[1] = {UUIDPGetDatum(user_id)};
	bool		has_account;
	bool		has_entries;
	Datum		unused_day;
	Datum		plan = (Datum) 0;
	bool		plan_isnull = true;
	Datum		created_on = (Datum) 0;
	bool		created_isnull = true;

	account_existence_lock(user_id);
	has_account = spi_exec(&account_lock_for_delete, args, NULL) > 0;
	if (has_account)
	{
		plan = SPI_datumTransfer(spi_get_typed(0, 1, TEXTOID, &plan_isnull), false, -1);
		created_on = spi_get_typed(0, 2, DATEOID, &created_isnull);
	}

	has_entries = ledger_totals(user_id, d, has_account ? &unused_day : &created_on);
	if (!has_account)
		created_isnull = !has_entries;

	if (has_account || has_entries)
		write_tombstone(user_id, has_account, plan, plan_isnull, created_on, created_isnull, d);
}

/*
 * credits.delete_account(user_id uuid) returns credits.account_deletion
 */
PG_FUNCTION_INFO_V1(credits_delete_account);
Datum
credits_delete_account(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *user_id;
	Deletion	d = {0};

	refuse_client_request("credits.delete_account");

	require_arg(fcinfo, 0, "user_id");
	user_id = PG_GETARG_UUID_P(0);
	SPI_connect();
	delete_account(user_id, &d);
	SPI_finish();
	PG_RETURN_DATUM(deletion_datum(fcinfo, user_id, &d));
}

/*
 * credits.delete_my_account() returns credits.account_deletion
 * The caller's account (JWT sub), at most once per credits.deletion_interval.
 */
PG_FUNCTION_INFO_V1(credits_delete_my_account);
Datum
credits_delete_my_account(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *user_id = palloc(sizeof(pg_uuid_t));
	Deletion	d = {0};

	request_user_id(user_id);
	SPI_connect();
	account_existence_lock(user_id);	/* a deletion in progress counts */
	deletion_check_interval(user_id);
	delete_account(user_id, &d);
	SPI_finish();
	PG_RETURN_DATUM(deletion_datum(fcinfo, user_id, &d));
}
