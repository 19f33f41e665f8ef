/*
 * shard_transfer.c
 *		The two halves of a RevenueCat TRANSFER between users of two shards.
 *
 * No transaction spans two shards, so the router (credits_router,
 * apply_revenuecat_event) applies a TRANSFER whose users live on different
 * shards in two steps, each idempotent and keyed by the event id:
 *
 *   credits.transfer_out(event_id, event_at, from_users, to_user), on each
 *       shard of the users it takes subscriptions from: marks their
 *       RevenueCat entitlements `transferred` and returns them as they were
 *       (store_events row ('revenuecat-transfer', event_id): a second call
 *       returns the first result and changes nothing);
 *   credits.transfer_in(event_id, event_at, to_user, entitlements), on the
 *       destination's shard: gives those entitlements to the user (store
 *       event ('revenuecat', event_id), as a TRANSFER on one shard records).
 *
 * A crash between the halves leaves the subscription with nobody; the
 * store's retry of the webhook (or any retry of the router call) replays the
 * first half's recorded result and applies the second: it converges.  Stale
 * halves (an entitlement updated by a newer event) change nothing, as on one
 * shard.  Kept apart from revenuecat.c, which applies a TRANSFER within one
 * shard.
 *
 * Locks: the account rows of the users concerned, in user_id order (purchases.c).
 */
#include "purchases.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"

#define TRANSFER_OUT_SOURCE "revenuecat-transfer"

static CachedStatement half_seen = {
	"SELECT result FROM credits.store_events WHERE source = $1 AND event_id = $2",
	2, {TEXTOID, TEXTOID}
};

static CachedStatement half_record = {
	"INSERT INTO credits.store_events (source, event_id, event_type, user_id, event_at, result)"
	" VALUES ($1, $2, 'TRANSFER', $3, $4, $5)",
	5, {TEXTOID, TEXTOID, UUIDOID, TIMESTAMPTZOID, JSONBOID}
};

/* The entitlements a TRANSFER takes from these users, as they are before it. */
static CachedStatement out_rows = {
	"SELECT coalesce(jsonb_agg(to_jsonb(e) - 'id' ORDER BY e.id), '[]')"
	"  FROM credits.entitlements e"
	" WHERE e.user_id = ANY ($1) AND e.source = 'revenuecat' AND NOT e.provisional"
	"   AND e.last_event_at <= $2",
	2, {UUIDARRAYOID, TIMESTAMPTZOID}
};

/* The destination's half: each entitlement given to the user, unless a newer event changed it here. */
static CachedStatement in_rows = {
	"INSERT INTO credits.entitlements AS t (user_id, source, product_id, plan, status, provisional,"
	"   expires_at, original_transaction_id, transaction_id, next_product_id, store, environment,"
	"   period_type, purchased_at, status_reason, last_event_id, last_event_at)"
	" SELECT $1, 'revenuecat', r.product_id, r.plan, r.status, false, r.expires_at,"
	"        r.original_transaction_id, r.transaction_id, r.next_product_id, r.store, r.environment,"
	"        r.period_type, r.purchased_at, r.status_reason, $2, $3"
	"   FROM jsonb_populate_recordset(NULL::credits.entitlements, $4) r"
	" ON CONFLICT (source, original_transaction_id) WHERE NOT provisional DO UPDATE"
	"   SET user_id = excluded.user_id, product_id = excluded.product_id, plan = excluded.plan,"
	"       status = excluded.status, expires_at = excluded.expires_at,"
	"       transaction_id = excluded.transaction_id, next_product_id = excluded.next_product_id,"
	"       last_event_id = excluded.last_event_id, last_event_at = excluded.last_event_at,"
	"       updated_at = now()"
	" WHERE t.last_event_at <= excluded.last_event_at",
	4, {UUIDOID, TEXTOID, TIMESTAMPTZOID, JSONBOID}
};

/* Refuses a NULL among the first n arguments, naming it. */
static void
require_args(FunctionCallInfo fcinfo, const char *const *names, int n)
{
	for (int i = 0; i < n; i++)
	{
		if (PG_ARGISNULL(i))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s must not be null", names[i]),
					 errdetail_internal("{\"field\": \"%s\"}", names[i]),
					 errhint("The router passes the event's id, time and users (README, \"A TRANSFER across shards\").")));
	}
}

/* The recorded result of this half (in the SPI context); NULL when it has not run. */
static Jsonb *
half_result(const char *source, text *event_id)
{
	Datum		args[2] = {CStringGetTextDatum(source), PointerGetDatum(event_id)};

	if (spi_exec(&half_seen, args, NULL) == 0)
		return NULL;
	return DatumGetJsonbPCopy(spi_get_notnull(0, 1, JSONBOID));
}

static Jsonb *
record_half(const char *source, text *event_id, const pg_uuid_t *user_id, TimestampTz event_at,
			const char *result)
{
	Datum		args[5];
	char		nulls[] = "     ";
	Datum		value = DirectFunctionCall1(jsonb_in, CStringGetDatum(result));

	args[0] = CStringGetTextDatum(source);
	args[1] = PointerGetDatum(event_id);
	args[2] = user_id ? UUIDPGetDatum(user_id) : (Datum) 0;
	nulls[2] = user_id ? ' ' : 'n';
	args[3] = TimestampTzGetDatum(event_at);
	args[4] = value;
	spi_exec(&half_record, args, nulls);
	return DatumGetJsonbP(value);
}

static Jsonb *
mark_duplicate(Jsonb *first)
{
	Datum		mark = DirectFunctionCall1(jsonb_in,
										   CStringGetDatum("{\"status\": \"duplicate\", \"reason\": \"event already applied\"}"));

	return DatumGetJsonbP(DirectFunctionCall2(jsonb_concat, JsonbPGetDatum(first), mark));
}

/*
 * credits.transfer_out(event_id text, event_at timestamptz, from_users uuid[],
 * to_user uuid) returns jsonb: {"status", "event_id", "moved", "entitlements": [...]}
 */
PG_FUNCTION_INFO_V1(credits_transfer_out);
Datum
credits_transfer_out(PG_FUNCTION_ARGS)
{
	text	   *event_id;
	TimestampTz event_at;
	ArrayType  *from_array;
	Datum	   *elems;
	int			nfrom;
	pg_uuid_t  *from;
	pg_uuid_t  *owners = palloc0(sizeof(pg_uuid_t));
	int			nowners = 0;
	AccountSet	set;
	Jsonb	   *result;
	StringInfoData buf;
	char	   *rows;
	Datum		args[2];

	static const char *const names[] = {"event_id", "event_at", "from_users"};

	require_args(fcinfo, names, 3);
	event_id = PG_GETARG_TEXT_PP(0);
	event_at = PG_GETARG_TIMESTAMPTZ(1);
	from_array = PG_GETARG_ARRAYTYPE_P(2);
	deconstruct_array(from_array, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR, &elems, NULL, &nfrom);
	from = palloc(sizeof(pg_uuid_t) * Max(nfrom, 1));
	for (int i = 0; i < nfrom; i++)
		from[i] = *DatumGetUUIDP(elems[i]);

	SPI_connect();
	if ((result = half_result(TRANSFER_OUT_SOURCE, event_id)) == NULL)
	{
		if (nfrom > 0)
			store_owners_of(from, nfrom, PG_ARGISNULL(3) ? NULL : PG_GETARG_UUID_P(3), &owners, &nowners);
		accounts_lock(&set, owners, nowners);
		/* a concurrent delivery of the same event went first: its result */
		if ((result = half_result(TRANSFER_OUT_SOURCE, event_id)) != NULL)
			result = mark_duplicate(result);
		else
		{
			for (int i = 0; i < nowners; i++)
				elems[i] = UUIDPGetDatum(&owners[i]);
			args[0] = PointerGetDatum(construct_array(elems, nowners, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
			args[1] = TimestampTzGetDatum(event_at);
			spi_exec(&out_rows, args, NULL);
			rows = DatumGetCString(DirectFunctionCall1(jsonb_out, spi_get_notnull(0, 1, JSONBOID)));
			for (int i = 0; i < nowners; i++)
				entitlement_move_all(&owners[i], NULL, event_at, text_to_cstring(event_id));
			accounts_save(&set, true);
			initStringInfo(&buf);
			appendStringInfo(&buf, "{\"status\": \"applied\", \"half\": \"out\", \"event_id\": %s, \"entitlements\": %s}",
							 json_quote(text_to_cstring(event_id)), rows);
			result = record_half(TRANSFER_OUT_SOURCE, event_id, nowners > 0 ? &owners[0] : NULL,
								 event_at, buf.data);
		}
	}
	else
		result = mark_duplicate(result);
	result = DatumGetJsonbP(SPI_datumTransfer(JsonbPGetDatum(result), false, -1));
	SPI_finish();
	PG_RETURN_JSONB_P(result);
}

/*
 * credits.transfer_in(event_id text, event_at timestamptz, to_user uuid,
 * entitlements jsonb) returns jsonb: {"status", "event_id", "user_id", "moved", "plan"}
 */
PG_FUNCTION_INFO_V1(credits_transfer_in);
Datum
credits_transfer_in(PG_FUNCTION_ARGS)
{
	text	   *event_id;
	TimestampTz event_at;
	pg_uuid_t  *to;
	Jsonb	   *result;
	AccountSet	set;
	StringInfoData buf;
	uint64		moved;
	Datum		args[4];

	static const char *const names[] = {"event_id", "event_at", "to_user", "entitlements"};

	require_args(fcinfo, names, 4);
	event_id = PG_GETARG_TEXT_PP(0);
	event_at = PG_GETARG_TIMESTAMPTZ(1);
	to = PG_GETARG_UUID_P(2);

	SPI_connect();
	if ((result = half_result("revenuecat", event_id)) == NULL)
	{
		accounts_lock(&set, to, 1);
		if ((result = half_result("revenuecat", event_id)) != NULL)
			result = mark_duplicate(result);
		else
		{
			args[0] = UUIDPGetDatum(to);
			args[1] = PointerGetDatum(event_id);
			args[2] = TimestampTzGetDatum(event_at);
			args[3] = PG_GETARG_DATUM(3);
			moved = spi_exec(&in_rows, args, NULL);
			accounts_save(&set, true);
			initStringInfo(&buf);
			appendStringInfo(&buf, "{\"status\": \"applied\", \"half\": \"in\", \"event_id\": %s, "
							 "\"type\": \"TRANSFER\", \"user_id\": %s, \"moved\": " UINT64_FORMAT ", \"plan\": %s}",
							 json_quote(text_to_cstring(event_id)),
							 json_quote(uuid_text(to)),
							 moved, json_quote(set.accts[0].plan));
			result = record_half("revenuecat", event_id, to, event_at, buf.data);
		}
	}
	else
		result = mark_duplicate(result);
	result = DatumGetJsonbP(SPI_datumTransfer(JsonbPGetDatum(result), false, -1));
	SPI_finish();
	PG_RETURN_JSONB_P(result);
}
