/*
 * webhook_payload.c
 *		Reading Stripe and Creem webhook bodies: members by dotted path
 *		("data.object.metadata.user_id", "lines.data.0.price.id"), with the
 *		type checks every parser needs.
 *
 * A value of the wrong type is 22023 naming its path; a missing member is
 * NULL (false), and the parser decides whether it may be missing.  Runs
 * after the signature is verified, so a malformed body is the provider's
 * (or a test's) mistake, never an attack on what follows.
 * No locks, no catalog access.
 */
#include "webhooks.h"
#include "external_ids.h"

#include <ctype.h>

#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/numeric.h"

/* Seconds from the Unix epoch to the year 5000: later times are refused. */
#define MAX_UNIX_SECONDS INT64CONST(95617584000)

void
webhook_malformed(const char *field, const char *problem)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("malformed webhook payload: %s %s", field, problem),
			 errdetail_internal("{\"field\": %s}", json_quote(field)),
			 errhint("Pass the webhook body exactly as the provider sent it (the raw request body).")));
}

/* The member at `path` (dots between keys, digits index arrays), or NULL. */
JsonbValue *
webhook_get(JsonbContainer *obj, const char *path)
{
	char	   *copy = pstrdup(path);
	char	   *save = NULL;
	JsonbContainer *c = obj;
	JsonbValue *v = NULL;

	for (char *key = strtok_r(copy, ".", &save); key != NULL; key = strtok_r(NULL, ".", &save))
	{
		if (c == NULL)
			return NULL;
		if (JsonContainerIsArray(c))
		{
			if (key[0] == '\0' || strspn(key, "0123456789") != strlen(key) || strlen(key) > 4)
				return NULL;
			v = getIthJsonbValueFromContainer(c, (uint32) atoi(key));
		}
		else
		{
			JsonbValue	k;

			k.type = jbvString;
			k.val.string.val = key;
			k.val.string.len = strlen(key);
			v = findJsonbValueFromContainer(c, JB_FOBJECT, &k);
		}
		if (v == NULL)
			return NULL;
		c = (v->type == jbvBinary) ? v->val.binary.data : NULL;
	}
	return v;
}

/* An object member; NULL when absent or null (22023 when required). */
JsonbContainer *
webhook_object(JsonbContainer *obj, const char *path, bool required)
{
	JsonbValue *v = webhook_get(obj, path);

	if (v == NULL || v->type == jbvNull)
	{
		if (required)
			webhook_malformed(path, "is missing");
		return NULL;
	}
	if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		webhook_malformed(path, "must be a JSON object");
	return v->val.binary.data;
}

/* A string member of at most 255 characters; NULL when absent, null or empty. */
const char *
webhook_string(JsonbContainer *obj, const char *path, bool required)
{
	JsonbValue *v = webhook_get(obj, path);
	char	   *s;

	if (v != NULL && v->type != jbvNull && v->type != jbvString)
		webhook_malformed(path, "must be a string");
	if (v == NULL || v->type == jbvNull || v->val.string.len == 0)
	{
		if (required)
			webhook_malformed(path, "is missing");
		return NULL;
	}
	s = pnstrdup(v->val.string.val, v->val.string.len);
	if (pg_mbstrlen(s) > CREDITS_MAX_KEY_CHARS)
		webhook_malformed(path, psprintf("is longer than %d characters", CREDITS_MAX_KEY_CHARS));
	return s;
}

/*
 * An object's id where the provider sends either the id or the object:
 * "product": "prod_1" and "product": {"id": "prod_1", ...} both give prod_1.
 */
const char *
webhook_id_of(JsonbContainer *obj, const char *path)
{
	JsonbValue *v = webhook_get(obj, path);

	if (v != NULL && v->type == jbvBinary && JsonContainerIsObject(v->val.binary.data))
		return webhook_string(v->val.binary.data, "id", false);
	return webhook_string(obj, path, false);
}

/* A boolean member; false when absent or null. */
bool
webhook_bool(JsonbContainer *obj, const char *path)
{
	JsonbValue *v = webhook_get(obj, path);

	if (v == NULL || v->type == jbvNull)
		return false;
	if (v->type != jbvBool)
		webhook_malformed(path, "must be true or false");
	return v->val.boolean;
}

/*
 * A time as a whole number of units since the Unix epoch (Stripe: seconds,
 * Creem: milliseconds); false when absent or null.
 */
bool
webhook_unix_time(JsonbContainer *obj, const char *path, int64 units_per_second,
				  TimestampTz *out)
{
	JsonbValue *v = webhook_get(obj, path);
	char	   *digits;
	int64		n;

	if (v == NULL || v->type == jbvNull)
		return false;
	if (v->type != jbvNumeric || numeric_is_nan(v->val.numeric) || numeric_is_inf(v->val.numeric))
		webhook_malformed(path, "must be a number");
	digits = numeric_normalize(v->val.numeric);
	if (digits[0] == '\0' || strspn(digits, "0123456789") != strlen(digits) || strlen(digits) > 15)
		webhook_malformed(path, "must be a whole, non-negative number");
	n = strtoll(digits, NULL, 10);
	if (n / units_per_second > MAX_UNIX_SECONDS)
		webhook_malformed(path, "is out of range (after the year 5000)");
	*out = (n / units_per_second - (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY)
		* USECS_PER_SEC + (n % units_per_second) * (USECS_PER_SEC / units_per_second);
	return true;
}

/* An ISO 8601 time ("2024-11-12T11:58:38.000Z"); false when absent or null. */
bool
webhook_iso_time(JsonbContainer *obj, const char *path, TimestampTz *out)
{
	const char *s = webhook_string(obj, path, false);

	if (s == NULL)
		return false;
	if (strlen(s) < 10 || !isdigit((unsigned char) s[0]) || s[4] != '-' || s[7] != '-')
		webhook_malformed(path, "must be an ISO 8601 time");
	*out = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in, CStringGetDatum(s),
												   ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)));
	return true;
}

/*
 * The user, when the member is there and no earlier one named it: a uuid, or
 * any other id through user_uuid().
 */
void
webhook_user(WebhookEvent *ev, JsonbContainer *obj, const char *path)
{
	const char *id;

	if (ev->has_user)
		return;
	id = webhook_string(obj, path, false);
	if (id == NULL)
		return;
	user_uuid_from_text(id, path, &ev->user_id);
	ev->has_user = true;
}
