/*
 * errors.c
 *		The contract's refusals, one function each, so that every caller
 *		reports the same SQLSTATE, message, JSON detail and hint.
 *
 * A refusal raises ERROR, so the transaction (including any lazy maintenance
 * done before the check) rolls back and leaves no trace in the tables.
 */
#include "credits.h"

#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/json.h"

/* Next local midnight of the account, as ISO 8601 in UTC. */
static CachedStatement next_local_midnight = {
	"SELECT to_char(((($2::date + 1)::timestamp AT TIME ZONE a.timezone) AT TIME ZONE 'UTC'),"
	"               'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
	"  FROM credits.accounts a WHERE a.user_id = $1",
	2, {UUIDOID, DATEOID}
};

/* A JSON string literal for s, for the machine-readable details. */
char *
json_quote(const char *s)
{
	StringInfoData buf;

	initStringInfo(&buf);
	escape_json(&buf, s);
	return buf.data;
}

void
refuse_insufficient(const Account *acct, int64 needed)
{
	ereport(ERROR,
			(errcode(ERRCODE_CREDITS_INSUFFICIENT),
			 errmsg("not enough credits"),
			 errdetail("{\"needed\": " INT64_FORMAT ", \"balance\": " INT64_FORMAT "}",
					   needed, acct->balance),
			 errhint("Buy a credit pack or upgrade the plan, then retry.")));
}

void
refuse_daily_limit(const Account *acct)
{
	Datum		args[2] = {UUIDPGetDatum(&acct->user_id), DateADTGetDatum(acct->today)};
	bool		isnull;
	char	   *resets_at;

	spi_exec(&next_local_midnight, args, NULL);
	resets_at = TextDatumGetCString(spi_get(0, 1, &isnull));
	ereport(ERROR,
			(errcode(ERRCODE_CREDITS_TOO_MANY),
			 errmsg("daily limit reached"),
			 errdetail("{\"daily_limit\": %d, \"resets_at\": \"%s\"}",
					   acct->daily_limit, resets_at),
			 errhint("The limit resets at local midnight; upgrade the plan for more operations per day.")));
}

void
refuse_key_conflict(text *key, int64 original_entry_id)
{
	ereport(ERROR,
			(errcode(ERRCODE_CREDITS_CONFLICT),
			 errmsg("idempotency key reused with different parameters"),
			 errdetail("{\"original_entry_id\": " INT64_FORMAT "}", original_entry_id),
			 errhint("Send the original parameters to get the first receipt again, or use a new key for a new request.")));
}

void
refuse_plan_required(const char *operation, const char *required_plan, const char *plan)
{
	ereport(ERROR,
			(errcode(ERRCODE_CREDITS_FORBIDDEN),
			 errmsg("operation \"%s\" needs plan \"%s\"", operation, required_plan),
			 errdetail("{\"required_plan\": %s, \"plan\": %s}",
					   json_quote(required_plan), json_quote(plan)),
			 errhint("Upgrade to the required plan to use this operation.")));
}

/* capture / release of a hold that is no longer open (or has timed out) */
void
refuse_hold_not_open(int64 hold_id, const char *status, bool has_settled,
					 int64 settled_entry_id)
{
	ereport(ERROR,
			(errcode(ERRCODE_CREDITS_CONFLICT),
			 errmsg("the hold is %s, not open", status),
			 has_settled ?
			 errdetail("{\"hold_id\": " INT64_FORMAT ", \"status\": \"%s\", \"settled_entry_id\": " INT64_FORMAT "}",
					   hold_id, status, settled_entry_id) :
			 errdetail("{\"hold_id\": " INT64_FORMAT ", \"status\": \"%s\"}", hold_id, status),
			 errhint("A hold is captured or released once; a timed-out hold has returned its credits. "
					 "Reserve again to start a new job.")));
}

/* a refund larger than what is left to refund of the charge */
void
refuse_over_refund(int64 entry_id, int64 refundable, bool has_requested, int64 requested)
{
	ereport(ERROR,
			(errcode(ERRCODE_CREDITS_CONFLICT),
			 errmsg("refund exceeds what is left to refund of the charge"),
			 errdetail("{\"entry_id\": " INT64_FORMAT ", \"refundable\": " INT64_FORMAT ", \"requested\": %s}",
					   entry_id, refundable,
					   has_requested ? psprintf(INT64_FORMAT, requested) : "null"),
			 errhint("Refunds of an entry never add up to more than it charged; "
					 "refund at most the refundable amount, or pass no amount to refund all of it.")));
}

/* a store transaction already applied (or refunded) for another user or product */
void
refuse_purchase_conflict(const char *source, const char *transaction_id, const char *state,
						 bool has_entry, int64 original_entry_id)
{
	ereport(ERROR,
			(errcode(ERRCODE_CREDITS_CONFLICT),
			 errmsg("store transaction \"%s\" was already %s", transaction_id, state),
			 has_entry ?
			 errdetail("{\"source\": %s, \"transaction_id\": %s, \"state\": \"%s\", \"original_entry_id\": " INT64_FORMAT "}",
					   json_quote(source), json_quote(transaction_id), state, original_entry_id) :
			 errdetail("{\"source\": %s, \"transaction_id\": %s, \"state\": \"%s\"}",
					   json_quote(source), json_quote(transaction_id), state),
			 errhint("A store transaction is applied once, to one user and one product; "
					 "send the original parameters to get the first receipt again.")));
}

/* an instant-unlock claim of a transaction that the store confirmed for another user */
void
refuse_claim_taken(const char *transaction_id)
{
	ereport(ERROR,
			(errcode(ERRCODE_CREDITS_CONFLICT),
			 errmsg("store transaction \"%s\" belongs to another account", transaction_id),
			 errdetail("{\"field\": \"transaction_id\"}"),
			 errhint("Claim the transaction the store sheet returned to this user; restore purchases to move a subscription.")));
}

/* too many instant-unlock claims in 24 hours */
void
refuse_claim_limit(int limit, int64 retry_after_ms)
{
	ereport(ERROR,
			(errcode(ERRCODE_CREDITS_TOO_MANY),
			 errmsg("too many pending purchases claimed"),
			 errdetail("{\"limit\": %d, \"retry_after_ms\": " INT64_FORMAT "}",
					   limit, Max(retry_after_ms, 0)),
			 errhint("The purchase is unlocked as soon as the store confirms it; no claim is needed for that.")));
}
