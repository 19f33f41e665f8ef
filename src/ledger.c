/*
 * ledger.c
 *		Appending ledger entries, idempotent replays and receipts.
 *
 * Every function here runs under the account row lock taken by
 * account_lock(), which is what makes the idempotency check race-free: two
 * calls with the same key for one user are serialized on that lock, so the
 * second sees the first's entry (or the first rolled back and left none).
 * The unique index on (user_id, idempotency_key) backs this up.
 */
#include "credits.h"

#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "funcapi.h"
#include "utils/builtins.h"

static CachedStatement ledger_insert = {
	"INSERT INTO credits.ledger (user_id, kind, amount, balance_after, daily_remaining,"
	"  operation, units, list_cost, day_ops, ref_id, lot_moves, reference,"
	"  idempotency_key, request_hash, reason, metadata, actor)"
	" VALUES ($1, $2::text::credits.entry_kind, $3, $4, $5, $6, $7, $8, $9, $10, $11,"
	"  $12, $13, $14, $15, $16, $17)"
	" RETURNING id, created_at",
	17, {UUIDOID, TEXTOID, INT8OID, INT8OID, INT8OID, TEXTOID, INT8OID, INT8OID,
	INT2OID, INT8OID, INT8ARRAYOID, TEXTOID, TEXTOID, INT8OID, TEXTOID, JSONBOID, TEXTOID}
};

static CachedStatement ledger_by_key = {
	"SELECT id, kind::text, amount, balance_after, daily_remaining, created_at, request_hash,"
	"       coalesce(operation, kind::text)"
	"  FROM credits.ledger WHERE user_id = $1 AND idempotency_key = $2",
	2, {UUIDOID, TEXTOID}
};

static Datum
text_or_null(const char *value, char *null)
{
	*null = value ? ' ' : 'n';
	return value ? CStringGetTextDatum(value) : (Datum) 0;
}

static Datum
ptr_or_null(const void *value, char *null)
{
	*null = value ? ' ' : 'n';
	return PointerGetDatum(value);
}

/*
 * Writes the entry.  The caller has already applied entry->amount to
 * acct->balance (and counted the operation), so balance_after and
 * daily_remaining are read from the account.
 */
void
ledger_append(Account *acct, LedgerEntry *entry)
{
	Datum		args[17];
	char		nulls[17];
	bool		isnull;

	memset(nulls, ' ', sizeof(nulls));
	entry->balance_after = acct->balance;
	entry->has_daily_remaining = account_daily_remaining(acct, &entry->daily_remaining);

	args[0] = UUIDPGetDatum(&acct->user_id);
	args[1] = CStringGetTextDatum(entry->kind);
	args[2] = Int64GetDatum(entry->amount);
	args[3] = Int64GetDatum(entry->balance_after);
	args[4] = Int64GetDatum(entry->daily_remaining);
	nulls[4] = entry->has_daily_remaining ? ' ' : 'n';
	args[5] = text_or_null(entry->operation, &nulls[5]);
	args[6] = Int64GetDatum(entry->units);
	nulls[6] = entry->has_units ? ' ' : 'n';
	args[7] = Int64GetDatum(entry->list_cost);
	nulls[7] = entry->has_list_cost ? ' ' : 'n';
	args[8] = Int16GetDatum(entry->day_ops);
	nulls[8] = entry->day_ops != 0 ? ' ' : 'n';
	args[9] = Int64GetDatum(entry->ref_id);
	nulls[9] = entry->has_ref_id ? ' ' : 'n';
	args[10] = entry->lot_moves;
	nulls[10] = entry->lot_moves != (Datum) 0 ? ' ' : 'n';
	args[11] = ptr_or_null(entry->reference, &nulls[11]);
	args[12] = ptr_or_null(entry->idempotency_key, &nulls[12]);
	args[13] = Int64GetDatum(entry->request_hash);
	nulls[13] = entry->idempotency_key ? ' ' : 'n';
	args[14] = ptr_or_null(entry->reason, &nulls[14]);
	args[15] = ptr_or_null(entry->metadata, &nulls[15]);
	args[16] = CStringGetTextDatum(current_actor());

	spi_exec(&ledger_insert, args, nulls);
	acct->last_kind = entry->kind;
	entry->id = spi_get_int64(0, 1);
	entry->created_at = DatumGetTimestampTz(spi_get(0, 2, &isnull));
}

/*
 * Looks up an earlier entry of this user with the same idempotency key.
 * Same request: fills in its receipt (replayed) and returns true.  Different
 * parameters under the same key: PT409.  No entry: returns false.
 */
bool
ledger_find_replay(const Account *acct, text *key, int64 request_hash, Receipt *receipt)
{
	Datum		args[2] = {UUIDPGetDatum(&acct->user_id), PointerGetDatum(key)};
	bool		isnull;
	Datum		value;
	char	   *kind;

	if (spi_exec(&ledger_by_key, args, NULL) == 0)
		return false;

	receipt->no_entry = false;
	receipt->entry_id = spi_get_int64(0, 1);
	if (spi_get_int64(0, 7) != request_hash)
		refuse_key_conflict_on(acct, key, receipt->entry_id,
							   TextDatumGetCString(spi_get(0, 8, &isnull)));

	receipt->user_id = acct->user_id;
	kind = TextDatumGetCString(spi_get(0, 2, &isnull));
	/* copied out of SPI's memory: the receipt is built after SPI_finish() */
	receipt->kind = strcpy(SPI_palloc(strlen(kind) + 1), kind);
	receipt->amount = spi_get_int64(0, 3);
	receipt->balance = spi_get_int64(0, 4);
	value = spi_get(0, 5, &isnull);
	receipt->has_daily_remaining = !isnull;
	receipt->daily_remaining = isnull ? 0 : DatumGetInt64(value);
	receipt->created_at = DatumGetTimestampTz(spi_get(0, 6, &isnull));
	receipt->replayed = true;
	return true;
}

void
receipt_from_entry(const Account *acct, const LedgerEntry *entry, Receipt *receipt)
{
	receipt->no_entry = false;
	receipt->entry_id = entry->id;
	receipt->user_id = acct->user_id;
	receipt->kind = entry->kind;
	receipt->amount = entry->amount;
	receipt->balance = entry->balance_after;
	receipt->has_daily_remaining = entry->has_daily_remaining;
	receipt->daily_remaining = entry->daily_remaining;
	receipt->replayed = false;
	receipt->created_at = entry->created_at;
}

/*
 * Builds the credits.receipt value.  Call after SPI_finish(): the tuple is
 * allocated in the caller's memory context.
 */
Datum
receipt_datum(FunctionCallInfo fcinfo, const Receipt *receipt)
{
	TupleDesc	tupdesc;
	Datum		values[8];
	bool		nulls[8] = {false};
	pg_uuid_t  *user_id = palloc(sizeof(pg_uuid_t));

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "credits: function must return credits.receipt");
	tupdesc = BlessTupleDesc(tupdesc);

	*user_id = receipt->user_id;
	values[0] = Int64GetDatum(receipt->entry_id);
	nulls[0] = receipt->no_entry;
	values[1] = UUIDPGetDatum(user_id);
	values[2] = CStringGetTextDatum(receipt->kind);
	values[3] = Int64GetDatum(receipt->amount);
	values[4] = Int64GetDatum(receipt->balance);
	values[5] = Int64GetDatum(receipt->daily_remaining);
	nulls[5] = !receipt->has_daily_remaining;
	values[6] = BoolGetDatum(receipt->replayed);
	values[7] = TimestampTzGetDatum(receipt->created_at);
	return HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls));
}

/* ---- request fingerprints ---- */

static void
hash_bytes_into(RequestHash *rh, const void *data, size_t len)
{
	uint32		len32 = (uint32) len;

	/* the length first, so that ("ab","c") and ("a","bc") differ */
	rh->hash = hash_bytes_extended((const unsigned char *) &len32, sizeof(len32), rh->hash);
	rh->hash = hash_bytes_extended((const unsigned char *) data, (int) len, rh->hash);
}

static void
hash_null_into(RequestHash *rh)
{
	rh->hash = hash_bytes_extended((const unsigned char *) "\xff", 1, rh->hash ^ UINT64CONST(0x9e3779b97f4a7c15));
}

void
request_hash_init(RequestHash *rh, const char *kind)
{
	rh->hash = 0;
	hash_bytes_into(rh, kind, strlen(kind));
}

void
request_hash_text(RequestHash *rh, const text *value)
{
	if (value == NULL)
		hash_null_into(rh);
	else
		hash_bytes_into(rh, VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value));
}

void
request_hash_cstring(RequestHash *rh, const char *value)
{
	if (value == NULL)
		hash_null_into(rh);
	else
		hash_bytes_into(rh, value, strlen(value));
}

void
request_hash_int64(RequestHash *rh, bool isnull, int64 value)
{
	if (isnull)
		hash_null_into(rh);
	else
		hash_bytes_into(rh, &value, sizeof(value));
}

/* jsonb's binary form is canonical (sorted, de-duplicated keys). */
void
request_hash_jsonb(RequestHash *rh, const Jsonb *value)
{
	if (value == NULL)
		hash_null_into(rh);
	else
		hash_bytes_into(rh, VARDATA(value), VARSIZE(value) - VARHDRSZ);
}
