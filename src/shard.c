/*
 * shard.c
 *		Sharding by user (README, "Pooling and scale-out"): the routing hash
 *		and the router's error for a shard it cannot reach.
 *
 * Routing hash.  A user belongs to partition hashtext(user_id::text) &
 * (N - 1) among N shards (PL/Proxy masks the hash with N - 1);
 * credits_router.user_shard() is credits_shard_user_hash() below, so that
 * every routed call loads this library (and its error hook) in the router.
 *
 * A shard that is down.  PL/Proxy reports a partition it cannot connect to
 * (or that dropped the connection mid-call) as an internal error (XX000,
 * "PL/Proxy function ...: [db] PQconnectPoll: ...").  The log hook here
 * turns exactly those into PT503 (PostgREST: HTTP 503) with the PL/Proxy
 * message in the detail and a hint, before the client sees them; every other
 * error, remote refusals with their own SQLSTATE included, passes untouched.
 *
 * Ledger ids carry their user's bucket.  On a configured shard
 * (credits.configure_shard) the ledger's identity sequence steps by
 * SHARD_ID_BUCKETS and the low bits of every id are the user's bucket,
 * hashtext(user_id::text) & (SHARD_ID_BUCKETS - 1) (shard_entry_id): an id
 * routes like its user (id & (N - 1)) at any shard count up to
 * SHARD_ID_BUCKETS, and keeps routing right after the user moves to another
 * shard (resharding), with no lookup table.  A single node (sequence step 1)
 * keeps plain ids.
 *
 * A user of another shard.  A shard answers only for users of its partition
 * (credits.shard_config): a call for a user it has no account of, routed
 * here while the user is being moved or by a router with an old partition
 * list, is PT503 (shard_require_owner), never a fresh account on the wrong
 * shard.  Its own users' calls cost nothing more: the check runs only where
 * no account row exists.
 *
 * Locks: none of its own; shard_forget_user deletes under the caller's
 * account lock (credits.move_user).
 */
#include "credits.h"

#include "catalog/pg_sequence.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "common/int.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/syscache.h"

static emit_log_hook_type prev_emit_log_hook = NULL;

/* What libpq and PL/Proxy say when a partition cannot be reached or dropped the connection. */
static const char *const unreachable_marks[] = {
	"PQconnectPoll", "PQconnectStart", "connect timeout", "query timeout",
	"server closed the connection", "could not connect", "Connection refused",
	"terminating connection", "connection to server", "no connection to the server",
	"detected unstable connection", "lost synchronization with server",
	"Unfinished connection", "Invalid connection"
};

/* hashtext(user_id::text): the routing hash of a user, as PL/Proxy masks it. */
int32
shard_user_hash(const pg_uuid_t *user_id)
{
	char	   *text = uuid_text(user_id);

	return (int32) DatumGetUInt32(hash_any((const unsigned char *) text, (int) strlen(text)));
}

/* The ledger sequence's step: SHARD_ID_BUCKETS on a configured shard, 1 on a single node. */
static int64
ledger_step(Oid seq_relid)
{
	HeapTuple	tuple = SearchSysCache1(SEQRELID, ObjectIdGetDatum(seq_relid));
	int64		step;

	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "credits: cache lookup failed for sequence %u", seq_relid);
	step = ((Form_pg_sequence) GETSTRUCT(tuple))->seqincrement;
	ReleaseSysCache(tuple);
	return step;
}

/* The id of a new ledger entry of the user, from the sequence value drawn for it. */
int64
shard_entry_id(Oid seq_relid, int64 seqval, const pg_uuid_t *user_id)
{
	int64		id;

	if (ledger_step(seq_relid) != SHARD_ID_BUCKETS)
		return seqval;
	if (pg_add_s64_overflow(seqval, shard_user_hash(user_id) & (SHARD_ID_BUCKETS - 1), &id))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("ledger ids are exhausted"),
				 errdetail_internal("{\"sequence_value\": " INT64_FORMAT "}", seqval),
				 errhint("The ledger id sequence reached the end of bigint.")));
	return id;
}

static CachedStatement shard_config_select = {
	"SELECT shard_no, shard_count FROM credits.shard_config", 0, {0}
};

/*
 * Refuses a user that belongs to another shard (PT503): called where the
 * user has no account here, before one is created or read as new.  A
 * database that is not a shard (no credits.shard_config row) owns everyone.
 */
void
shard_require_owner(const pg_uuid_t *user_id)
{
	int32		shard_no;
	int32		shard_count;
	int32		owner;

	if (spi_exec(&shard_config_select, NULL, NULL) == 0)
		return;
	shard_no = spi_get_int32(0, 1);
	shard_count = spi_get_int32(0, 2);
	if (shard_count < 1)
		return;
	owner = shard_user_hash(user_id) & (shard_count - 1);
	if (owner != shard_no)
		ereport(ERROR,
				(errcode(ERRCODE_CREDITS_UNAVAILABLE),
				 errmsg("this user's credits are on another shard"),
				 errdetail_internal("{\"user_id\": \"%s\", \"shard_no\": %d, \"shard_count\": %d, \"user_shard\": %d}",
									uuid_text(user_id),
									shard_no, shard_count, owner),
				 errhint("The user is being moved between shards, or the router's partition list is out of date: "
						 "retry in a moment; if it persists, compare the router's server credits_shards with "
						 "credits_router.check_shards().")));
}

/*
 * credits.shard_forget_user(user_id uuid) returns bigint: deletes the user's
 * ledger entries (the append-only trigger lets this one statement through),
 * for credits.move_user once the target shard holds a verified copy.
 * Returns the number of entries deleted.
 */
PG_FUNCTION_INFO_V1(credits_shard_forget_user);
Datum
credits_shard_forget_user(PG_FUNCTION_ARGS)
{
	Oid			argtypes[1] = {UUIDOID};
	Datum		args[1];
	volatile int rc = 0;
	uint64		deleted;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("user_id must not be null"),
				 errdetail_internal("{\"field\": \"user_id\"}"),
				 errhint("Pass the user whose rows moved to another shard.")));
	args[0] = UUIDPGetDatum(PG_GETARG_UUID_P(0));
	SPI_connect();
	credits_ledger_delete_allowed = true;
	PG_TRY();
	{
		rc = SPI_execute_with_args("DELETE FROM credits.ledger WHERE user_id = $1",
								   1, argtypes, args, NULL, false, 0);
	}
	PG_FINALLY();
	{
		credits_ledger_delete_allowed = false;
	}
	PG_END_TRY();
	if (rc != SPI_OK_DELETE)
		elog(ERROR, "credits: deleting the moved user's entries failed: %s", SPI_result_code_string(rc));
	deleted = SPI_processed;
	SPI_finish();
	PG_RETURN_INT64((int64) deleted);
}

/*
 * credits_router.user_shard(user_id uuid) returns integer: the routing hash;
 * NULL (a malformed call) routes to partition 0, which refuses it.
 */
PG_FUNCTION_INFO_V1(credits_shard_user_hash);
Datum
credits_shard_user_hash(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		PG_RETURN_INT32(0);
	PG_RETURN_INT32(shard_user_hash(PG_GETARG_UUID_P(0)));
}

static bool
is_unreachable_shard(const ErrorData *edata)
{
	if (edata->elevel != ERROR || edata->sqlerrcode != ERRCODE_INTERNAL_ERROR ||
		edata->message == NULL || strncmp(edata->message, "PL/Proxy function ", 18) != 0)
		return false;
	for (size_t i = 0; i < lengthof(unreachable_marks); i++)
	{
		if (strstr(edata->message, unreachable_marks[i]) != NULL)
			return true;
	}
	return false;
}

/* The function PL/Proxy names in its message: "PL/Proxy function NAME(NARGS): ...". */
static char *
failed_function(const char *message)
{
	const char *start = message + 18;
	const char *end = strchr(start, ':');

	return end ? pnstrdup(start, end - start) : pstrdup(start);
}

static void
shard_emit_log(ErrorData *edata)
{
	if (is_unreachable_shard(edata))
	{
		MemoryContext old = MemoryContextSwitchTo(ErrorContext);
		StringInfoData detail;

		initStringInfo(&detail);
		appendStringInfoString(&detail, "{\"function\": ");
		escape_json(&detail, failed_function(edata->message));
		appendStringInfoString(&detail, ", \"cause\": ");
		escape_json(&detail, edata->message);
		appendStringInfoChar(&detail, '}');
		edata->sqlerrcode = ERRCODE_CREDITS_UNAVAILABLE;
		edata->detail = detail.data;
		edata->hint = pstrdup("The shard cannot be reached (down, restarting or unreachable): retry later "
							  "with the same idempotency key (a call that did commit before the connection "
							  "was lost is then returned, not applied twice). Calls for users of the other "
							  "shards are not affected.");
		edata->message = pstrdup("a credits shard this call needs is unavailable");
		MemoryContextSwitchTo(old);
	}
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

void
shard_init(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = shard_emit_log;
}
