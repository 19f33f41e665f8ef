/*
 * consume.c
 *		Spending: credits_consume, and the O(1) reads balance and
 *		daily_available (and the caller's: my_balance, my_daily_available).
 *
 * Locks: credits_consume takes the account row lock (account_lock) and then
 * burns the user's lots.  The reads take no lock and never write, not even
 * when lazy maintenance is due (account_read): they work in READ ONLY
 * transactions and on hot standbys.
 */
#include "credits.h"

#include "catalog/pg_type.h"
#include "funcapi.h"
#include "utils/builtins.h"

static void parse_request(FunctionCallInfo fcinfo, int first, int max_chars, int max_metadata,
						  const char *kind, OperationRequest *req);
static Datum consume_request(FunctionCallInfo fcinfo, const OperationRequest *req);

static void
find_operation(text *name, Operation *op)
{
	char	   *cname = text_to_cstring(name);

	if (!price_list_find(cname, op))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown operation \"%s\"", cname),
				 errdetail("{\"field\": \"operation\"}"),
				 errhint("Pick an operation from credits.operations.")));
	op->name = cname;
}

/*
 * Everything that may refuse an operation, in the contract's order: the
 * operation itself, the plan it needs, the daily limit, the balance, then
 * the plan's rate limit and cooldown (last: a retry_after_ms is only worth
 * waiting for when nothing else refuses).  Returns the charge (0 on a bypass
 * plan) and sets *list_cost.  Passing records the operation in the plan's
 * limiter state on the account (saved by account_save), so call it only when
 * going ahead.
 */
int64
check_operation(Account *acct, text *operation, int64 units, int64 *list_cost)
{
	Operation	op;
	int64		remaining;
	int64		charge;

	find_operation(operation, &op);
	acct->operation = op.name;
	if (!op.enabled)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("operation \"%s\" is disabled", op.name),
				 errdetail("{\"field\": \"operation\"}"),
				 errhint("An admin can enable it in credits.operations.")));
	if (units > op.max_units)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("too many units for operation \"%s\"", op.name),
				 errdetail("{\"field\": \"units\", \"max_units\": " INT64_FORMAT "}", op.max_units),
				 errhint("Split the work into calls of at most " INT64_FORMAT " units.", op.max_units)));
	if (op.has_required_plan && acct->plan_rank < op.required_rank)
		refuse_plan_required(op.name, op.required_plan, acct->plan);
	if (account_daily_remaining(acct, &remaining) && remaining <= 0)
		refuse_daily_limit(acct);

	*list_cost = checked_mul(op.cost, units, "cost");
	charge = acct->bypass_credits ? 0 : *list_cost;
	if (charge > acct->balance)
		refuse_insufficient(acct, charge);
	ratelimit_check_plan(acct, op.name);
	return charge;
}

/*
 * Reads the arguments consume and reserve share: (user_id, operation, units,
 * idempotency_key, reference, metadata), and fingerprints them for replays.
 */
void
operation_request_from_args(FunctionCallInfo fcinfo, const char *kind, OperationRequest *req)
{
	require_arg(fcinfo, 0, "user_id");
	req->user_id = PG_GETARG_UUID_P(0);
	parse_request(fcinfo, 1, CREDITS_MAX_KEY_CHARS, CREDITS_MAX_METADATA_BYTES, kind, req);
}

/*
 * The operation, units, key, reference and metadata from argument `first`
 * on, with the caps of the path (the client's are tighter), fingerprinted.
 */
static void
parse_request(FunctionCallInfo fcinfo, int first, int max_chars, int max_metadata,
			  const char *kind, OperationRequest *req)
{
	RequestHash rh;

	require_arg(fcinfo, first, "operation");
	req->operation = optional_text_arg(fcinfo, first, "operation", CREDITS_MAX_KEY_CHARS);
	req->units = positive_int64_arg(fcinfo, first + 1, "units");
	req->key = capped_key_arg(fcinfo, first + 2, "idempotency_key", max_chars);
	req->reference = optional_text_arg(fcinfo, first + 3, "reference", max_chars);
	req->metadata = capped_metadata_arg(fcinfo, first + 4, max_metadata);

	request_hash_init(&rh, kind);
	request_hash_text(&rh, req->operation);
	request_hash_int64(&rh, false, req->units);
	request_hash_text(&rh, req->reference);
	request_hash_jsonb(&rh, req->metadata);
	req->request_hash = rh;
}

/*
 * Checks the request (check_operation), then takes the charge out of the lots
 * and counts the operation today, recorded as one ledger entry of `kind`
 * (consume, or hold for a reservation).  The caller saves the account.
 */
void
charge_operation(Account *acct, const OperationRequest *req, const char *kind, LedgerEntry *entry)
{
	int64		charge = check_operation(acct, req->operation, req->units, &entry->list_cost);

	entry->kind = kind;
	entry->amount = -charge;
	entry->operation = text_to_cstring(req->operation);
	entry->has_units = true;
	entry->units = req->units;
	entry->has_list_cost = true;
	entry->day_ops = 1;
	entry->lot_moves = charge > 0 ? lots_burn(acct, charge) : (Datum) 0;
	entry->reference = req->reference;
	entry->idempotency_key = req->key;
	entry->request_hash = (int64) req->request_hash.hash;
	entry->metadata = req->metadata;

	account_add_balance(acct, -charge);
	account_count_operation(acct, 1);
	ledger_append(acct, entry);
}

/*
 * credits.credits_consume(user_id uuid, operation text, units bigint default 1,
 *     idempotency_key text default null, reference text default null,
 *     metadata jsonb default '{}') returns credits.receipt
 */
PG_FUNCTION_INFO_V1(credits_consume);
Datum
credits_consume(PG_FUNCTION_ARGS)
{
	OperationRequest req;

	refuse_client_request("credits.credits_consume");

	operation_request_from_args(fcinfo, "consume", &req);
	return consume_request(fcinfo, &req);
}

/*
 * credits.consume(operation text, units bigint default 1, idempotency_key
 *     text default null, reference text default null, metadata jsonb
 *     default '{}') returns credits.receipt
 * The caller's (JWT sub), with the client path's caps on key, reference
 * (CREDITS_CLIENT_MAX_KEY_CHARS) and metadata (CREDITS_CLIENT_MAX_METADATA_BYTES).
 */
PG_FUNCTION_INFO_V1(credits_consume_client);
Datum
credits_consume_client(PG_FUNCTION_ARGS)
{
	OperationRequest req;
	pg_uuid_t  *user_id = palloc(sizeof(pg_uuid_t));

	request_user_id(user_id);
	req.user_id = user_id;
	parse_request(fcinfo, 0, CREDITS_CLIENT_MAX_KEY_CHARS, CREDITS_CLIENT_MAX_METADATA_BYTES,
				  "consume", &req);
	return consume_request(fcinfo, &req);
}

/* Charges one request (a replay returns the first receipt). */
static Datum
consume_request(FunctionCallInfo fcinfo, const OperationRequest *req)
{
	Account		acct;
	Receipt		receipt;

	SPI_connect();
	credits_require_writable();
	if (!ledger_lock_or_replay(req->user_id, req->key, &req->request_hash, &acct, &receipt))
	{
		LedgerEntry entry = {0};

		charge_operation(&acct, req, "consume", &entry);
		account_save(&acct);
		receipt_from_entry(&acct, &entry, &receipt);
	}
	SPI_finish();
	PG_RETURN_DATUM(receipt_datum(fcinfo, &receipt));
}

/* credits.balance(user_id uuid) returns bigint */
PG_FUNCTION_INFO_V1(credits_balance);
Datum
credits_balance(PG_FUNCTION_ARGS)
{
	Account		acct;

	require_arg(fcinfo, 0, "user_id");
	refuse_client_read("credits.balance", PG_GETARG_UUID_P(0));
	SPI_connect();
	account_read(PG_GETARG_UUID_P(0), &acct);
	SPI_finish();
	PG_RETURN_INT64(acct.balance);
}

/*
 * credits.my_balance() returns bigint
 * The caller's (JWT sub; 28000 without one) balance, as credits.balance
 * reads it.  In C rather than SQL around credits.balance: a SQL function
 * with SECURITY DEFINER and a pinned search_path is never inlined, so it
 * ran the SQL function executor and three functions, each switching
 * search_path (credits.current_user_id and credits.balance pin it too).
 */
PG_FUNCTION_INFO_V1(credits_my_balance);
Datum
credits_my_balance(PG_FUNCTION_ARGS)
{
	pg_uuid_t	user_id;
	Account		acct;

	request_user_id(&user_id);
	SPI_connect();
	account_read(&user_id, &acct);
	SPI_finish();
	PG_RETURN_INT64(acct.balance);
}

/*
 * credits.my_daily_available() returns bigint
 * The caller's operations left today (NULL without a daily limit), as
 * credits.daily_available reads them; in C for the reason above.
 */
PG_FUNCTION_INFO_V1(credits_my_daily_available);
Datum
credits_my_daily_available(PG_FUNCTION_ARGS)
{
	pg_uuid_t	user_id;
	Account		acct;
	int64		remaining;
	bool		limited;

	request_user_id(&user_id);
	SPI_connect();
	account_read(&user_id, &acct);
	limited = account_daily_remaining(&acct, &remaining);
	SPI_finish();
	if (!limited)
		PG_RETURN_NULL();
	PG_RETURN_INT64(remaining);
}

/*
 * credits.account_status(user_id uuid, OUT plan text, OUT base_plan text,
 *     OUT balance bigint, OUT daily_limit integer, OUT daily_remaining bigint,
 *     OUT plan_until timestamptz)
 * The account as the read functions see it; credits.my_account shows the
 * caller's.  plan_until: when the entitlement that lifts the plan ends.
 */
PG_FUNCTION_INFO_V1(credits_account_status);
Datum
credits_account_status(PG_FUNCTION_ARGS)
{
	MemoryContext caller = CurrentMemoryContext;
	TupleDesc	desc;
	Account		acct;
	Datum		values[6] = {0};
	bool		nulls[6] = {0};
	int64		remaining = 0;

	require_arg(fcinfo, 0, "user_id");
	refuse_client_read("credits.account_status", PG_GETARG_UUID_P(0));
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "credits: account_status must return a composite type");
	SPI_connect();
	account_read(PG_GETARG_UUID_P(0), &acct);

	/* the plan names live in SPI's memory: copy them out before SPI_finish */
	MemoryContextSwitchTo(caller);
	values[0] = CStringGetTextDatum(acct.plan);
	values[1] = CStringGetTextDatum(acct.base_plan);
	values[2] = Int64GetDatum(acct.balance);
	values[3] = Int32GetDatum(acct.daily_limit);
	nulls[3] = !acct.has_daily_limit;
	nulls[4] = !account_daily_remaining(&acct, &remaining);
	values[4] = Int64GetDatum(remaining);
	values[5] = TimestampTzGetDatum(acct.entitlement_until);
	nulls[5] = strcmp(acct.plan, acct.base_plan) == 0 || !acct.has_entitlement_until;
	SPI_finish();
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/* credits.daily_available(user_id uuid) returns bigint; NULL without a daily limit */
PG_FUNCTION_INFO_V1(credits_daily_available);
Datum
credits_daily_available(PG_FUNCTION_ARGS)
{
	Account		acct;
	int64		remaining;
	bool		limited;

	require_arg(fcinfo, 0, "user_id");
	refuse_client_read("credits.daily_available", PG_GETARG_UUID_P(0));
	SPI_connect();
	account_read(PG_GETARG_UUID_P(0), &acct);
	limited = account_daily_remaining(&acct, &remaining);
	SPI_finish();
	if (!limited)
		PG_RETURN_NULL();
	PG_RETURN_INT64(remaining);
}
