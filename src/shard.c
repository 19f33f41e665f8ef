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
 * Locks: none.
 */
#include "credits.h"

#include "common/hashfn.h"
#include "utils/builtins.h"
#include "utils/json.h"

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
	char	   *text = DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(user_id)));

	return (int32) DatumGetUInt32(hash_any((const unsigned char *) text, (int) strlen(text)));
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
		edata->hint = pstrdup("The shard that holds this user cannot be reached (down, restarting or "
							  "unreachable): retry later with the same idempotency key (a call that did "
							  "commit before the connection was lost is then returned, not applied twice). "
							  "Users of the other shards are not affected.");
		edata->message = pstrdup("the credits shard of this user is unavailable");
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
