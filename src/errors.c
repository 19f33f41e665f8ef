/*
 * errors.c
 *		The contract's refusals, one function each, so that every caller
 *		reports the same SQLSTATE, message, JSON detail and hint.
 *
 * A refusal raises ERROR, so the transaction (including any lazy maintenance
 * done before the check) rolls back and leaves no trace in the tables.  Just
 * before raising it, each one is counted and logged (stats.c:
 * denial_record), outside the transaction, and it is raised with
 * ereport_refusal() (credits.h), the mark by which the log hook knows a
 * refusal (is_refusal).  A new refusal does both, here.
 */
#include "credits.h"

#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/float.h"
#include "utils/json.h"

/* The start of the account's next local day (local_day.c), as ISO 8601 in UTC. */
static CachedStatement next_local_midnight = {
	"SELECT to_char(credits.local_day_start($2::date + 1, a.timezone) AT TIME ZONE 'UTC',"
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

/*
 * Members appended to a JSON object being built in buf (the results of the
 * webhook functions): `, "key": value`, null for a NULL string, uuid or an
 * absent time.
 */
void
json_member_str(StringInfo buf, const char *key, const char *value)
{
	appendStringInfo(buf, ", \"%s\": %s", key, value ? json_quote(value) : "null");
}

void
json_member_int(StringInfo buf, const char *key, int64 value)
{
	appendStringInfo(buf, ", \"%s\": " INT64_FORMAT, key, value);
}

char *
uuid_text(const pg_uuid_t *id)
{
	return DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(id)));
}

void
json_member_uuid(StringInfo buf, const char *key, const pg_uuid_t *value)
{
	json_member_str(buf, key, value == NULL ? NULL : uuid_text(value));
}

void
json_member_time(StringInfo buf, const char *key, bool has, TimestampTz value)
{
	char		iso[MAXDATELEN + 1];

	if (!has)
	{
		json_member_str(buf, key, NULL);
		return;
	}
	JsonEncodeDateTime(iso, TimestampTzGetDatum(value), TIMESTAMPTZOID, NULL);
	json_member_str(buf, key, iso);
}

/*
 * Is this error one of the refusals below?  They, and only they, carry the
 * CREDITS_REFUSAL_DOMAIN mark of ereport_refusal().  (For the log hook in
 * stats.c, which leaves their ERROR lines out of the server log when
 * credits.quiet_refusals is on.)
 */
bool
is_refusal(const ErrorData *edata)
{
	return edata->elevel == ERROR && edata->domain != NULL &&
		strcmp(edata->domain, CREDITS_REFUSAL_DOMAIN) == 0;
}

void
refuse_insufficient(const Account *acct, int64 needed)
{
	char	   *detail = psprintf("{\"needed\": " INT64_FORMAT ", \"balance\": " INT64_FORMAT "}",
								  needed, acct->balance);

	denial_record(DENIAL_INSUFFICIENT, &acct->user_id, acct->operation, detail);
	ereport_refusal(
			(errcode(ERRCODE_CREDITS_INSUFFICIENT),
			 errmsg("not enough credits"),
			 errdetail_internal("%s", detail),
			 errhint("Buy a credit pack or upgrade the plan, then retry.")));
}

void
refuse_daily_limit(const Account *acct)
{
	Datum		args[2] = {UUIDPGetDatum(&acct->user_id), DateADTGetDatum(acct->today)};
	char	   *resets_at;
	char	   *detail;

	spi_exec(&next_local_midnight, args, NULL);
	resets_at = spi_get_cstring(0, 1);
	detail = psprintf("{\"daily_limit\": %d, \"resets_at\": \"%s\"}",
					  acct->daily_limit, resets_at);
	denial_record(DENIAL_DAILY_LIMIT, &acct->user_id, acct->operation, detail);
	ereport_refusal(
			(errcode(ERRCODE_CREDITS_TOO_MANY),
			 errmsg("daily limit reached"),
			 errdetail_internal("%s", detail),
			 errhint("The limit resets at local midnight; upgrade the plan for more operations per day.")));
}

/*
 * An idempotency key reused with other parameters, counted under the user
 * and the original entry's operation (its kind when it has none).
 */
void
refuse_key_conflict_on(const pg_uuid_t *user_id, text *key, int64 original_entry_id,
					   const char *operation)
{
	char	   *detail = psprintf("{\"original_entry_id\": " INT64_FORMAT "}", original_entry_id);

	denial_record(DENIAL_KEY_CONFLICT, user_id, operation, detail);
	ereport_refusal(
			(errcode(ERRCODE_CREDITS_CONFLICT),
			 errmsg("idempotency key reused with different parameters"),
			 errdetail_internal("%s", detail),
			 errhint("Send the original parameters to get the first receipt again, or use a new key for a new request.")));
}

void
refuse_plan_required(const char *operation, const char *required_plan, const char *plan)
{
	char	   *detail = psprintf("{\"required_plan\": %s, \"plan\": %s}",
								  json_quote(required_plan), json_quote(plan));

	denial_record(DENIAL_PLAN_REQUIRED, NULL, operation, detail);
	ereport_refusal(
			(errcode(ERRCODE_CREDITS_FORBIDDEN),
			 errmsg("operation \"%s\" needs plan \"%s\"", operation, required_plan),
			 errdetail_internal("%s", detail),
			 errhint("Upgrade to the required plan to use this operation.")));
}

/* The plan's rate limit (plans.rate_burst, plans.rate_per_second). */
void
refuse_rate_limited(const Account *acct, const char *operation, int64 retry_after_ms)
{
	char	   *detail = psprintf("{\"retry_after_ms\": " INT64_FORMAT ", \"reason\": \"rate_limit\", "
								  "\"burst\": %d, \"per_second\": %s, \"plan\": %s}",
								  retry_after_ms, acct->rate_burst,
								  float8out_internal(acct->rate_per_second),
								  json_quote(acct->plan));

	denial_record(DENIAL_RATE_LIMITED, &acct->user_id, operation, detail);
	ereport_refusal(
			(errcode(ERRCODE_CREDITS_TOO_MANY),
			 errmsg("rate limited"),
			 errdetail_internal("%s", detail),
			 errhint("Retry after retry_after_ms milliseconds (with the same idempotency key, "
					 "so that the retry cannot charge twice).")));
}

/* The plan's cooldown between billable operations (plans.cooldown_ms). */
void
refuse_cooldown(const Account *acct, const char *operation, int64 retry_after_ms)
{
	char	   *detail = psprintf("{\"retry_after_ms\": " INT64_FORMAT ", \"reason\": \"cooldown\", "
								  "\"cooldown_ms\": %d, \"plan\": %s}",
								  retry_after_ms, acct->cooldown_ms, json_quote(acct->plan));

	denial_record(DENIAL_COOLDOWN, &acct->user_id, operation, detail);
	ereport_refusal(
			(errcode(ERRCODE_CREDITS_TOO_MANY),
			 errmsg("cooldown"),
			 errdetail_internal("%s", detail),
			 errhint("The plan allows one operation every cooldown_ms milliseconds; "
					 "retry after retry_after_ms.")));
}

/* capture / release of a hold that is no longer open (or has timed out) */
void
refuse_hold_not_open(int64 hold_id, const char *status, bool has_settled,
					 int64 settled_entry_id)
{
	char	   *detail = has_settled
		? psprintf("{\"hold_id\": " INT64_FORMAT ", \"status\": \"%s\", \"settled_entry_id\": " INT64_FORMAT "}",
				   hold_id, status, settled_entry_id)
		: psprintf("{\"hold_id\": " INT64_FORMAT ", \"status\": \"%s\"}", hold_id, status);

	denial_record(DENIAL_HOLD_NOT_OPEN, NULL, NULL, detail);
	ereport_refusal(
			(errcode(ERRCODE_CREDITS_CONFLICT),
			 errmsg("the hold is %s, not open", status),
			 errdetail_internal("%s", detail),
			 errhint("A hold is captured or released once; a timed-out hold has returned its credits. "
					 "Reserve again to start a new job.")));
}

/* a refund larger than what is left to refund of the charge */
void
refuse_over_refund(int64 entry_id, int64 refundable, bool has_requested, int64 requested)
{
	char	   *detail = psprintf("{\"entry_id\": " INT64_FORMAT ", \"refundable\": " INT64_FORMAT ", \"requested\": %s}",
								  entry_id, refundable,
								  has_requested ? psprintf(INT64_FORMAT, requested) : "null");

	denial_record(DENIAL_OVER_REFUND, NULL, NULL, detail);
	ereport_refusal(
			(errcode(ERRCODE_CREDITS_CONFLICT),
			 errmsg("refund exceeds what is left to refund of the charge"),
			 errdetail_internal("%s", detail),
			 errhint("Refunds of an entry never add up to more than it charged; "
					 "refund at most the refundable amount, or pass no amount to refund all of it.")));
}

/* a store transaction already applied (or refunded) for another user or product */
void
refuse_purchase_conflict(const char *source, const char *transaction_id, const char *state,
						 bool has_entry, int64 original_entry_id)
{
	char	   *detail = has_entry
		? psprintf("{\"source\": %s, \"transaction_id\": %s, \"state\": \"%s\", \"original_entry_id\": " INT64_FORMAT "}",
				   json_quote(source), json_quote(transaction_id), state, original_entry_id)
		: psprintf("{\"source\": %s, \"transaction_id\": %s, \"state\": \"%s\"}",
				   json_quote(source), json_quote(transaction_id), state);

	denial_record(DENIAL_PURCHASE_CONFLICT, NULL, NULL, detail);
	ereport_refusal(
			(errcode(ERRCODE_CREDITS_CONFLICT),
			 errmsg("store transaction \"%s\" was already %s", transaction_id, state),
			 errdetail_internal("%s", detail),
			 errhint("A store transaction is applied once, to one user and one product; "
					 "send the original parameters to get the first receipt again.")));
}

/* too many instant-unlock claims in 24 hours */
void
refuse_claim_limit(int limit, int64 retry_after_ms)
{
	char	   *detail = psprintf("{\"limit\": %d, \"retry_after_ms\": " INT64_FORMAT "}",
								  limit, Max(retry_after_ms, 0));

	denial_record(DENIAL_CLAIM_LIMIT, NULL, NULL, detail);
	ereport_refusal(
			(errcode(ERRCODE_CREDITS_TOO_MANY),
			 errmsg("too many pending purchases claimed"),
			 errdetail_internal("%s", detail),
			 errhint("The purchase is unlocked as soon as the store confirms it; no claim is needed for that.")));
}

/*
 * A client's second time zone change or account deletion within the
 * setting's interval (`setting`, `interval_s` seconds).
 */
pg_noreturn static void
refuse_too_soon(DenialReason reason, const pg_uuid_t *user_id, int64 retry_after_ms,
				const char *message, const char *what, const char *setting, int interval_s)
{
	char	   *detail = psprintf("{\"retry_after_ms\": " INT64_FORMAT ", \"interval_s\": %d}",
								  retry_after_ms, interval_s);

	denial_record(reason, user_id, NULL, detail);
	ereport_refusal(
			(errcode(ERRCODE_CREDITS_TOO_MANY),
			 errmsg("%s", message),
			 errdetail_internal("%s", detail),
			 errhint("One %s per %d seconds (%s in credits.settings): retry after retry_after_ms.",
					 what, interval_s, setting)));
}

void
refuse_timezone_interval(const pg_uuid_t *user_id, int64 retry_after_ms)
{
	refuse_too_soon(DENIAL_TIMEZONE_INTERVAL, user_id, retry_after_ms,
					"time zone changed too recently", "time zone change",
					"timezone_change_interval", credits_timezone_interval_s());
}

void
refuse_deletion_interval(const pg_uuid_t *user_id, int64 retry_after_ms)
{
	refuse_too_soon(DENIAL_DELETION_INTERVAL, user_id, retry_after_ms,
					"account deleted too recently", "account deletion",
					"deletion_interval", credits_deletion_interval_s());
}
