/*
 * ledger.c
 *		Appending ledger entries, idempotent replays and receipts.
 *
 * Entries are appended under the account row lock taken by account_lock(),
 * which is what makes the idempotency check race-free: two calls with the
 * same key for one user are serialized on that lock, so the second sees the
 * first's entry (or the first rolled back and left none).  A replay is
 * looked for before the lock as well (ledger_lock_or_replay).  The unique
 * index on (user_id, idempotency_key) backs this up.
 */
#include "credits.h"

#include "access/table.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "common/hashfn.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/typcache.h"

/* The columns of credits.ledger the C code writes or reads back, in the order of the names below. */
enum
{
	LED_ID, LED_USER_ID, LED_KIND, LED_AMOUNT, LED_BALANCE_AFTER, LED_DAILY_REMAINING,
	LED_OPERATION, LED_UNITS, LED_LIST_COST, LED_DAY_OPS, LED_REF_ID, LED_LOT_MOVES,
	LED_REFERENCE, LED_IDEMPOTENCY_KEY, LED_REQUEST_HASH, LED_REASON, LED_METADATA,
	LED_ACTOR, LED_CREATED_AT, LED_NCOLUMNS
};

static CreditsTable ledger_table = {
	"ledger", LED_NCOLUMNS,
	{{"id", "bigint", true}, {"user_id", "pg_catalog.uuid", false},
		{"kind", "credits.entry_kind", true}, {"amount", "bigint", true},
		{"balance_after", "bigint", true}, {"daily_remaining", "bigint", false},
		{"operation", "pg_catalog.text", false}, {"units", "bigint", false},
		{"list_cost", "bigint", false}, {"day_ops", "smallint", false},
		{"ref_id", "bigint", false}, {"lot_moves", "bigint[]", false},
		{"reference", "pg_catalog.text", false}, {"idempotency_key", "pg_catalog.text", false},
		{"request_hash", "bigint", false}, {"reason", "pg_catalog.text", false},
		{"metadata", "pg_catalog.jsonb", false}, {"actor", "pg_catalog.text", false},
	{"created_at", "timestamp with time zone", true}}
};

static void
set_text(RowWriter *writer, int col, const char *value)
{
	row_writer_set(writer, col, value ? CStringGetTextDatum(value) : (Datum) 0, value == NULL);
}

static void
set_pointer(RowWriter *writer, int col, const void *value)
{
	row_writer_set(writer, col, PointerGetDatum(value), value == NULL);
}

/*
 * Writes the entry.  The caller has already applied entry->amount to
 * acct->balance (and counted the operation), so balance_after and
 * daily_remaining are read from the account.  The id comes from the
 * ledger's identity sequence (on a shard, plus the user's bucket: shard.c)
 * and created_at is now(), as the column defaults would give.
 */
void
ledger_append(Account *acct, LedgerEntry *entry)
{
	RowWriter	writer;
	Oid			kind_type;
	Oid			seq;

	if (!entry_kind_allows(entry_kind(entry->kind), entry->amount))
		elog(ERROR, "credits: a %s entry of " INT64_FORMAT " credits has the wrong sign",
			 entry->kind, entry->amount);
	entry->balance_after = acct->balance;
	entry->has_daily_remaining = account_daily_remaining(acct, &entry->daily_remaining);

	row_writer_open(&writer, &ledger_table);
	seq = credits_relid("ledger_id_seq");
	entry->id = shard_entry_id(seq, nextval_internal(seq, false), &acct->user_id);
	entry->created_at = GetCurrentTransactionStartTimestamp();
	kind_type = TupleDescAttr(RelationGetDescr(writer.rel), ledger_table.attnum[LED_KIND] - 1)->atttypid;

	row_writer_clear(&writer);
	row_writer_set(&writer, LED_ID, Int64GetDatum(entry->id), false);
	row_writer_set(&writer, LED_USER_ID, UUIDPGetDatum(&acct->user_id), false);
	row_writer_set(&writer, LED_KIND,
				   DirectFunctionCall2(enum_in, CStringGetDatum(entry->kind),
									   ObjectIdGetDatum(kind_type)), false);
	row_writer_set(&writer, LED_AMOUNT, Int64GetDatum(entry->amount), false);
	row_writer_set(&writer, LED_BALANCE_AFTER, Int64GetDatum(entry->balance_after), false);
	row_writer_set(&writer, LED_DAILY_REMAINING, Int64GetDatum(entry->daily_remaining),
				   !entry->has_daily_remaining);
	set_text(&writer, LED_OPERATION, entry->operation);
	row_writer_set(&writer, LED_UNITS, Int64GetDatum(entry->units), !entry->has_units);
	row_writer_set(&writer, LED_LIST_COST, Int64GetDatum(entry->list_cost), !entry->has_list_cost);
	row_writer_set(&writer, LED_DAY_OPS, Int16GetDatum(entry->day_ops), entry->day_ops == 0);
	row_writer_set(&writer, LED_REF_ID, Int64GetDatum(entry->ref_id), !entry->has_ref_id);
	row_writer_set(&writer, LED_LOT_MOVES, entry->lot_moves, entry->lot_moves == (Datum) 0);
	set_pointer(&writer, LED_REFERENCE, entry->reference);
	set_pointer(&writer, LED_IDEMPOTENCY_KEY, entry->idempotency_key);
	row_writer_set(&writer, LED_REQUEST_HASH, Int64GetDatum(entry->request_hash),
				   entry->idempotency_key == NULL);
	set_pointer(&writer, LED_REASON, entry->reason);
	set_pointer(&writer, LED_METADATA, entry->metadata);
	set_text(&writer, LED_ACTOR, current_actor());
	row_writer_set(&writer, LED_CREATED_AT, TimestampTzGetDatum(entry->created_at), false);
	row_writer_insert(&writer);
	row_writer_close(&writer);
	account_note_entry(acct);
}

/* The kind of a ledger row, as text. */
static char *
entry_kind_name(TupleTableSlot *row)
{
	bool		isnull;

	return DatumGetCString(DirectFunctionCall1(enum_out,
											   row_get(&ledger_table, row, LED_KIND, &isnull)));
}

/*
 * Is `stored` (ledger.request_hash) the fingerprint of this request?  Rows
 * written by 1.0 hashed the metadata's bytes, so that form is accepted too:
 * it is stricter than the canonical one (equal bytes are equal jsonb), so a
 * retry of a 1.0 request replays after the upgrade.
 */
static bool
request_hash_matches(const RequestHash *request, int64 stored)
{
	return (uint64) stored == request->hash || (uint64) stored == request->legacy;
}

/*
 * Looks up an earlier entry of this user with the same idempotency key, as
 * `snapshot` sees the ledger.  Same request: fills in its receipt (replayed)
 * and returns true.  Different parameters under the same key: PT409.  No
 * entry: returns false.
 */
static bool
find_replay_at(const pg_uuid_t *user_id, text *key, const RequestHash *request, Receipt *receipt,
			   Snapshot snapshot)
{
	Relation	rel = credits_table_open(&ledger_table, AccessShareLock);
	RowScan		scan;
	TupleTableSlot *row;
	bool		found;
	bool		isnull;
	Datum		value;
	char	   *kind;

	row_scan_begin_at(&scan, rel, "ledger_idempotency", user_id, key, snapshot);
	found = row_scan_next(&scan);
	if (found)
	{
		row = scan.slot;
		receipt->no_entry = false;
		receipt->entry_id = DatumGetInt64(row_get(&ledger_table, row, LED_ID, &isnull));
		value = row_get(&ledger_table, row, LED_REQUEST_HASH, &isnull);
		if (isnull || !request_hash_matches(request, DatumGetInt64(value)))
		{
			value = row_get(&ledger_table, row, LED_OPERATION, &isnull);
			refuse_key_conflict_on(user_id, key, receipt->entry_id,
								   isnull ? entry_kind_name(row) : TextDatumGetCString(value));
		}
		receipt->user_id = *user_id;
		/* allocated in the caller's context: the receipt is built after SPI_finish() */
		kind = entry_kind_name(row);
		receipt->kind = strcpy(SPI_palloc(strlen(kind) + 1), kind);
		receipt->amount = DatumGetInt64(row_get(&ledger_table, row, LED_AMOUNT, &isnull));
		receipt->balance = DatumGetInt64(row_get(&ledger_table, row, LED_BALANCE_AFTER, &isnull));
		value = row_get(&ledger_table, row, LED_DAILY_REMAINING, &isnull);
		receipt->has_daily_remaining = !isnull;
		receipt->daily_remaining = isnull ? 0 : DatumGetInt64(value);
		receipt->created_at = DatumGetTimestampTz(row_get(&ledger_table, row, LED_CREATED_AT, &isnull));
		receipt->replayed = true;
	}
	row_scan_end(&scan);
	table_close(rel, NoLock);
	return found;
}

/* find_replay_at, as a statement run now sees the ledger (the caller holds the account lock). */
bool
ledger_find_replay(const pg_uuid_t *user_id, text *key, const RequestHash *request, Receipt *receipt)
{
	Snapshot	snapshot = row_statement_snapshot();
	bool		found = find_replay_at(user_id, key, request, receipt, snapshot);

	UnregisterSnapshot(snapshot);
	return found;
}

/*
 * A request whose idempotency key an entry already answered is a replay:
 * returns true with that entry's receipt.  Otherwise locks the account
 * (account_lock) and returns false, for the caller to go on.
 *
 * The key is looked up first without the lock: a retried request whose
 * entry has committed is answered without locking or writing anything (a
 * row lock would write WAL and take a transaction id).  When that finds
 * nothing, a request with the same key may commit before we hold the lock,
 * so the key is looked up again under the lock, unless the account row we
 * locked is the version the first look's snapshot saw.  Then none can have:
 * a transaction that appends an entry writes its account row too (checked
 * at commit: account_note_entry), so one that committed after that snapshot
 * would have left a newer version, and one that committed before it left an
 * entry the first look saw.
 */
bool
ledger_lock_or_replay(const pg_uuid_t *user_id, text *key, const RequestHash *request,
					  Account *acct, Receipt *receipt)
{
	Snapshot	first_look;
	bool		found;

	if (key == NULL)
	{
		account_lock(user_id, acct);
		return false;
	}
	first_look = row_statement_snapshot();
	found = find_replay_at(user_id, key, request, receipt, first_look);
	if (!found && !account_lock_as_seen(user_id, acct, first_look))
		found = ledger_find_replay(user_id, key, request, receipt);
	UnregisterSnapshot(first_look);
	return found;
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

/* The attributes of credits.receipt, in order (check_row_type). */
static const Oid receipt_types[] = {INT8OID, UUIDOID, TEXTOID, INT8OID, INT8OID, INT8OID, BOOLOID,
TIMESTAMPTZOID};

/*
 * Builds the credits.receipt value.  Call after SPI_finish(): the tuple is
 * allocated in the caller's memory context.
 */
Datum
receipt_datum(FunctionCallInfo fcinfo, const Receipt *receipt)
{
	Oid			rettype = get_fn_expr_rettype(fcinfo->flinfo);
	TupleDesc	tupdesc;
	Datum		values[8];
	bool		nulls[8] = {false};
	pg_uuid_t  *user_id = palloc(sizeof(pg_uuid_t));
	Datum		result;

	/*
	 * The row type from the call expression (else the catalog) and its
	 * descriptor from the type cache, current after any ALTER TYPE; not
	 * get_call_result_type(), which looks the function up and copies the
	 * descriptor on every call.  A type that is not composite is an error
	 * of lookup_rowtype_tupdesc().
	 */
	if (!OidIsValid(rettype))
		rettype = get_func_rettype(fcinfo->flinfo->fn_oid);
	if (rettype == RECORDOID)
		elog(ERROR, "credits: function must return credits.receipt");
	tupdesc = lookup_rowtype_tupdesc(rettype, -1);
	check_row_type(tupdesc, "credits.receipt", receipt_types, lengthof(receipt_types));

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
	result = HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls));
	ReleaseTupleDesc(tupdesc);
	return result;
}

/* ---- request fingerprints ----
 *
 * Two fingerprints are kept in step: `hash`, which 1.1 stores, and `legacy`,
 * the form 1.0 stored.  They differ only in how metadata is hashed.
 */

static uint64
hash_bytes_step(uint64 seed, const void *data, size_t len)
{
	uint32		len32 = (uint32) len;

	/* the length first, so that ("ab","c") and ("a","bc") differ */
	seed = hash_bytes_extended((const unsigned char *) &len32, sizeof(len32), seed);
	return hash_bytes_extended((const unsigned char *) data, (int) len, seed);
}

static uint64
hash_null_step(uint64 seed)
{
	return hash_bytes_extended((const unsigned char *) "\xff", 1, seed ^ UINT64CONST(0x9e3779b97f4a7c15));
}

static void
hash_bytes_into(RequestHash *rh, const void *data, size_t len)
{
	rh->hash = hash_bytes_step(rh->hash, data, len);
	rh->legacy = hash_bytes_step(rh->legacy, data, len);
}

static void
hash_null_into(RequestHash *rh)
{
	rh->hash = hash_null_step(rh->hash);
	rh->legacy = hash_null_step(rh->legacy);
}

void
request_hash_init(RequestHash *rh, const char *kind)
{
	rh->hash = 0;
	rh->legacy = 0;
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
request_hash_int64(RequestHash *rh, bool isnull, int64 value)
{
	if (isnull)
		hash_null_into(rh);
	else
		hash_bytes_into(rh, &value, sizeof(value));
}

/*
 * One token of a jsonb value: its type tag, then for a scalar a canonical
 * form of its value.  Numbers are hashed as numeric_normalize() writes them
 * (no trailing zeroes, no exponent), so 1.0, 1 and 1e0 hash alike, as jsonb
 * equality has them equal; strings by their bytes, as jsonb compares them.
 */
static uint64
jsonb_token_step(uint64 seed, JsonbIteratorToken token, const JsonbValue *v)
{
	unsigned char tag[2] = {(unsigned char) token, 0};

	if (token != WJB_KEY && token != WJB_VALUE && token != WJB_ELEM)
		return hash_bytes_step(seed, tag, 1);
	tag[1] = (unsigned char) v->type;
	seed = hash_bytes_step(seed, tag, 2);
	switch (v->type)
	{
		case jbvString:
			return hash_bytes_step(seed, v->val.string.val, v->val.string.len);
		case jbvNumeric:
			{
				char	   *digits = numeric_normalize(v->val.numeric);

				return hash_bytes_step(seed, digits, strlen(digits));
			}
		case jbvBool:
			return hash_bytes_step(seed, &v->val.boolean, sizeof(bool));
		default:
			return seed;		/* jbvNull: the tag says it all */
	}
}

/*
 * Metadata: the canonical hash walks the value, so that any two jsonb values
 * that are equal (jsonb's =: keys sorted and de-duplicated by the input
 * function, whitespace gone, numbers compared by value) hash alike.  The
 * legacy hash is 1.0's: the bytes of the binary form, in which 1.0 and 1
 * differ.
 */
void
request_hash_jsonb(RequestHash *rh, const Jsonb *value)
{
	JsonbIterator *it;
	JsonbIteratorToken token;
	JsonbValue	v;

	if (value == NULL)
	{
		hash_null_into(rh);
		return;
	}
	rh->legacy = hash_bytes_step(rh->legacy, VARDATA(value), VARSIZE(value) - VARHDRSZ);
	it = JsonbIteratorInit((JsonbContainer *) &value->root);
	while ((token = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
		rh->hash = jsonb_token_step(rh->hash, token, &v);
}
