/*
 * revenuecat.c
 *		credits.apply_revenuecat_event(payload jsonb): RevenueCat webhooks,
 *		applied exactly once, in any order, as often as they are delivered.
 *
 * The payload is the webhook body as RevenueCat sends it:
 *     {"api_version": "1.0", "event": {"id": ..., "type": ..., ...}}
 * Parsing is done here, before anything is locked or written: a malformed
 * payload is 22023 with the offending field (e.g. "event.app_user_id") and
 * writes nothing.  The money and plan changes go through purchases.c.
 *
 * Exactly once: an applied event is recorded in credits.store_events keyed
 * by ('revenuecat', event.id); a second delivery returns the first result as
 * "duplicate" and changes nothing.  Two deliveries at once queue on the
 * account lock, and the second finds the first's record.
 *
 * Any order: each subscription's entitlement remembers the store time of
 * the newest event applied to it (last_event_at); an older event is
 * "ignored" (stale) and changes nothing.  Pack refunds and their reversals
 * are ordered the same way on the purchases row, and a refund that arrives
 * before its purchase leaves a row so that the purchase credits nothing.
 *
 * Ignored events (TEST, unknown types, SANDBOX unless credits.accept_sandbox,
 * unmapped products, stale events) write nothing and are not recorded, so a
 * replay after a configuration change applies them.  Unknown types are never
 * an error: the store would retry them forever.
 *
 * Locks: the account rows of the users concerned, in user_id order (an event
 * that moves a subscription to another app user locks both; TRANSFER locks
 * every user it takes subscriptions from, and the one it gives them to).
 */
#include "purchases.h"
#include "external_ids.h"

#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#define RC_SOURCE "revenuecat"
#define RC_MAX_IDS 100

typedef enum RcType
{
	RC_UNKNOWN,
	RC_TEST,
	RC_INITIAL_PURCHASE,
	RC_RENEWAL,
	RC_NON_RENEWING_PURCHASE,
	RC_PRODUCT_CHANGE,
	RC_CANCELLATION,
	RC_UNCANCELLATION,
	RC_EXPIRATION,
	RC_BILLING_ISSUE,
	RC_SUBSCRIPTION_EXTENDED,
	RC_SUBSCRIPTION_PAUSED,
	RC_TEMPORARY_ENTITLEMENT_GRANT,
	RC_REFUND_REVERSED,
	RC_TRANSFER
} RcType;

static const struct
{
	const char *name;
	RcType		type;
}			rc_types[] =
{
	{"TEST", RC_TEST},
	{"INITIAL_PURCHASE", RC_INITIAL_PURCHASE},
	{"RENEWAL", RC_RENEWAL},
	{"NON_RENEWING_PURCHASE", RC_NON_RENEWING_PURCHASE},
	{"PRODUCT_CHANGE", RC_PRODUCT_CHANGE},
	{"CANCELLATION", RC_CANCELLATION},
	{"UNCANCELLATION", RC_UNCANCELLATION},
	{"EXPIRATION", RC_EXPIRATION},
	{"BILLING_ISSUE", RC_BILLING_ISSUE},
	{"SUBSCRIPTION_EXTENDED", RC_SUBSCRIPTION_EXTENDED},
	{"SUBSCRIPTION_PAUSED", RC_SUBSCRIPTION_PAUSED},
	{"TEMPORARY_ENTITLEMENT_GRANT", RC_TEMPORARY_ENTITLEMENT_GRANT},
	{"REFUND_REVERSED", RC_REFUND_REVERSED},
	{"TRANSFER", RC_TRANSFER},
};

/* The fields of an event that this file decides on. */
typedef struct RcEvent
{
	const char *id;
	const char *type_name;
	RcType		type;
	TimestampTz event_at;
	const char *environment;
	const char *store;
	pg_uuid_t	user_id;
	const char *product_id;
	const char *new_product_id;
	const char *transaction_id;
	const char *original_transaction_id;
	const char *period_type;
	bool		has_purchased_at;
	TimestampTz purchased_at;
	bool		has_expiration;
	TimestampTz expiration_at;
	bool		has_grace;
	TimestampTz grace_until;
	const char *cancel_reason;
	const char *expiration_reason;
	int			nfrom;
	pg_uuid_t  *from;			/* TRANSFER: the uuid app user ids of transferred_from */
	bool		has_to;
	pg_uuid_t	to;				/* TRANSFER: the first uuid of transferred_to */
} RcEvent;

/* What the call returns: a JSON object, built in the caller's memory context. */
typedef struct RcResult
{
	StringInfoData buf;
	const char *status;
	const char *reason;
} RcResult;

static CachedStatement event_seen = {
	"SELECT result::text FROM credits.store_events WHERE source = $1 AND event_id = $2",
	2, {TEXTOID, TEXTOID}
};

static CachedStatement event_record = {
	"INSERT INTO credits.store_events (source, event_id, event_type, user_id, event_at, result)"
	" VALUES ($1, $2, $3, $4, $5, $6)",
	6, {TEXTOID, TEXTOID, TEXTOID, UUIDOID, TIMESTAMPTZOID, JSONBOID}
};

/* ---- parsing ---- */

pg_noreturn static void malformed(const char *field, const char *problem);

static void
malformed(const char *field, const char *problem)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("malformed RevenueCat webhook: %s %s", field, problem),
			 errdetail("{\"field\": \"%s\"}", field),
			 errhint("Pass the webhook body exactly as RevenueCat sent it: {\"api_version\": \"1.0\", \"event\": {...}}.")));
}

static JsonbValue *
member(JsonbContainer *obj, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = unconstify(char *, key);
	k.val.string.len = strlen(key);
	return findJsonbValueFromContainer(obj, JB_FOBJECT, &k);
}

static const char *
field_name(const char *key)
{
	return psprintf("event.%s", key);
}

/* A string member (NULL when absent or null); required ones must be non-empty. */
static const char *
get_string(JsonbContainer *ev, const char *key, bool required, int max_chars)
{
	JsonbValue *v = member(ev, key);
	char	   *s;

	if (v == NULL || v->type == jbvNull)
	{
		if (required)
			malformed(field_name(key), "is missing");
		return NULL;
	}
	if (v->type != jbvString)
		malformed(field_name(key), "must be a string");
	if (v->val.string.len == 0 && required)
		malformed(field_name(key), "must not be empty");
	s = pnstrdup(v->val.string.val, v->val.string.len);
	if (pg_mbstrlen(s) > max_chars)
		malformed(field_name(key), psprintf("is longer than %d characters", max_chars));
	return s;
}

/* A time in milliseconds since the Unix epoch; false when absent or null. */
static bool
get_time_ms(JsonbContainer *ev, const char *key, bool required, TimestampTz *out)
{
	JsonbValue *v = member(ev, key);
	char	   *digits;
	int64		ms = 0;

	if (v == NULL || v->type == jbvNull)
	{
		if (required)
			malformed(field_name(key), "is missing");
		return false;
	}
	if (v->type != jbvNumeric)
		malformed(field_name(key), "must be a number of milliseconds");
	if (numeric_is_nan(v->val.numeric) || numeric_is_inf(v->val.numeric))
		malformed(field_name(key), "must be a number of milliseconds");
	digits = numeric_normalize(v->val.numeric);
	/* whole, non-negative, before the year 5000 */
	if (strspn(digits, "0123456789") != strlen(digits))
		malformed(field_name(key), "must be a whole, non-negative number of milliseconds");
	if (strlen(digits) > 14 || (ms = strtoll(digits, NULL, 10)) > INT64CONST(95617584000000))
		malformed(field_name(key), "is out of range (after the year 5000)");
	*out = (ms - (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000) * 1000;
	return true;
}

/* A list of app user ids; the ones that are uuids (our users) are returned. */
static int
get_user_ids(JsonbContainer *ev, const char *key, pg_uuid_t **out)
{
	JsonbValue *v = member(ev, key);
	JsonbContainer *arr;
	int			n;
	int			k = 0;

	if (v == NULL || v->type == jbvNull)
		malformed(field_name(key), "is missing");
	if (v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data))
		malformed(field_name(key), "must be an array of app user ids");
	arr = v->val.binary.data;
	n = JsonContainerSize(arr);
	if (n > RC_MAX_IDS)
		malformed(field_name(key), psprintf("has more than %d app user ids", RC_MAX_IDS));
	*out = palloc(sizeof(pg_uuid_t) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		JsonbValue *id = getIthJsonbValueFromContainer(arr, i);
		char	   *s;

		if (id == NULL || id->type != jbvString)
			malformed(field_name(key), "must be an array of app user ids");
		s = pnstrdup(id->val.string.val, id->val.string.len);
		if (parse_uuid(s, &(*out)[k]))
			k++;
	}
	return k;
}

/*
 * The envelope, id and type: enough to decide whether the event concerns
 * us.  Returns the event object.
 */
static JsonbContainer *
parse_envelope(Jsonb *payload, RcEvent *ev)
{
	JsonbValue *v;
	JsonbContainer *event;

	if (!JB_ROOT_IS_OBJECT(payload) || JB_ROOT_IS_SCALAR(payload))
		malformed("payload", "must be a JSON object");
	v = member(&payload->root, "api_version");
	if (v != NULL && v->type != jbvNull)
	{
		if (v->type != jbvString)
			malformed("api_version", "must be a string");
		if (v->val.string.len < 2 || strncmp(v->val.string.val, "1.", 2) != 0)
			malformed("api_version", "is not a 1.x version");
	}
	v = member(&payload->root, "event");
	if (v == NULL || v->type == jbvNull)
		malformed("event", "is missing");
	if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		malformed("event", "must be a JSON object");
	event = v->val.binary.data;

	memset(ev, 0, sizeof(*ev));
	ev->id = get_string(event, "id", true, CREDITS_MAX_KEY_CHARS);
	ev->type_name = get_string(event, "type", true, 64);
	ev->type = RC_UNKNOWN;
	for (size_t i = 0; i < lengthof(rc_types); i++)
	{
		if (strcmp(ev->type_name, rc_types[i].name) == 0)
			ev->type = rc_types[i].type;
	}
	return event;
}

/* Everything else, for a known type. */
static void
parse_fields(JsonbContainer *event, RcEvent *ev)
{
	get_time_ms(event, "event_timestamp_ms", true, &ev->event_at);
	ev->store = get_string(event, "store", false, 64);

	if (ev->type == RC_TRANSFER)
	{
		pg_uuid_t  *to;

		ev->nfrom = get_user_ids(event, "transferred_from", &ev->from);
		ev->has_to = get_user_ids(event, "transferred_to", &to) > 0;
		if (ev->has_to)
			ev->to = to[0];
		return;
	}

	{
		const char *user = get_string(event, "app_user_id", true, CREDITS_MAX_KEY_CHARS);

		if (strncmp(user, "$RCAnonymousID:", 15) == 0)
			malformed("event.app_user_id", "is anonymous (set the app's user id with Purchases.logIn)");
		user_uuid_from_text(user, "event.app_user_id", &ev->user_id);
	}
	ev->product_id = get_string(event, "product_id", true, CREDITS_MAX_KEY_CHARS);
	ev->transaction_id = get_string(event, "transaction_id", true, CREDITS_MAX_KEY_CHARS);
	ev->original_transaction_id = get_string(event, "original_transaction_id", false,
											 CREDITS_MAX_KEY_CHARS);
	ev->new_product_id = get_string(event, "new_product_id", false, CREDITS_MAX_KEY_CHARS);
	ev->period_type = get_string(event, "period_type", false, 64);
	ev->cancel_reason = get_string(event, "cancel_reason", false, 64);
	ev->expiration_reason = get_string(event, "expiration_reason", false, 64);
	ev->has_purchased_at = get_time_ms(event, "purchased_at_ms", false, &ev->purchased_at);
	ev->has_expiration = get_time_ms(event, "expiration_at_ms", false, &ev->expiration_at);
	ev->has_grace = get_time_ms(event, "grace_period_expiration_at_ms", false, &ev->grace_until);
}

/* ---- results ---- */

static void
result_init(RcResult *r, const RcEvent *ev)
{
	initStringInfo(&r->buf);
	appendStringInfo(&r->buf, "{\"event_id\": %s, \"type\": %s",
					 json_quote(ev->id), json_quote(ev->type_name));
	r->status = NULL;
	r->reason = NULL;
}

static void
result_str(RcResult *r, const char *key, const char *value)
{
	appendStringInfo(&r->buf, ", \"%s\": %s", key, value ? json_quote(value) : "null");
}

static void
result_int(RcResult *r, const char *key, int64 value)
{
	appendStringInfo(&r->buf, ", \"%s\": " INT64_FORMAT, key, value);
}

static void
result_uuid(RcResult *r, const char *key, const pg_uuid_t *value)
{
	if (value == NULL)
		result_str(r, key, NULL);
	else
		result_str(r, key, DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(value))));
}

static void
result_time(RcResult *r, const char *key, bool has, TimestampTz value)
{
	char		iso[MAXDATELEN + 1];

	if (!has)
	{
		result_str(r, key, NULL);
		return;
	}
	JsonEncodeDateTime(iso, TimestampTzGetDatum(value), TIMESTAMPTZOID, NULL);
	result_str(r, key, iso);
}

static char *
result_text(RcResult *r)
{
	StringInfoData out;

	initStringInfo(&out);
	appendStringInfo(&out, "%s, \"status\": %s, \"reason\": %s}", r->buf.data,
					 json_quote(r->status), r->reason ? json_quote(r->reason) : "null");
	return out.data;
}

static void
result_set(RcResult *r, const char *status, const char *reason)
{
	r->status = status;
	r->reason = reason;
}

/* Records the applied event; its result is what a later delivery gets back. */
static void
record_event(const RcEvent *ev, const pg_uuid_t *user_id, RcResult *r)
{
	Datum		args[6];
	char		nulls[] = "      ";

	args[0] = CStringGetTextDatum(RC_SOURCE);
	args[1] = CStringGetTextDatum(ev->id);
	args[2] = CStringGetTextDatum(ev->type_name);
	args[3] = user_id ? UUIDPGetDatum(user_id) : (Datum) 0;
	nulls[3] = user_id ? ' ' : 'n';
	args[4] = TimestampTzGetDatum(ev->event_at);
	args[5] = DirectFunctionCall1(jsonb_in, CStringGetDatum(result_text(r)));
	spi_exec(&event_record, args, nulls);
}

/*
 * The first result of an event already applied, as a duplicate; false when
 * the event is new.  Copied into the result buffer (the caller's context).
 */
static bool
already_applied(const RcEvent *ev, RcResult *r, StringInfo duplicate)
{
	Datum		args[2] = {CStringGetTextDatum(RC_SOURCE), CStringGetTextDatum(ev->id)};

	if (spi_exec(&event_seen, args, NULL) == 0)
		return false;
	appendStringInfoString(duplicate, spi_get_cstring(0, 1));
	result_set(r, "duplicate", "event already applied");
	return true;
}

/* ---- applying ---- */

static void
txn_from_event(const RcEvent *ev, StoreTxn *txn)
{
	memset(txn, 0, sizeof(*txn));
	txn->source = RC_SOURCE;
	txn->transaction_id = ev->transaction_id;
	txn->original_transaction_id = ev->original_transaction_id;
	txn->product_id = ev->product_id;
	txn->has_purchased_at = ev->has_purchased_at;
	txn->purchased_at = ev->purchased_at;
	txn->has_expires_at = ev->has_expiration;
	txn->expires_at = ev->expiration_at;
	txn->event_at = ev->event_at;
	txn->event_id = ev->id;
	txn->store = ev->store;
	txn->environment = ev->environment;
	txn->period_type = ev->period_type;
}

static bool
is_purchase(RcType type)
{
	return type == RC_INITIAL_PURCHASE || type == RC_RENEWAL || type == RC_NON_RENEWING_PURCHASE;
}

static bool
is_refund(const RcEvent *ev)
{
	return ev->type == RC_CANCELLATION && ev->cancel_reason != NULL &&
		strcmp(ev->cancel_reason, "CUSTOMER_SUPPORT") == 0;
}

/* What the event does to a subscription's entitlement. */
static void
subscription_change(const RcEvent *ev, EntitlementChange *c)
{
	TimestampTz now = GetCurrentTransactionStartTimestamp();

	memset(c, 0, sizeof(*c));
	c->has_expires_at = ev->has_expiration;
	c->expires_at = ev->expiration_at;
	/* no expiry in the event: a known subscription keeps its own, a new one has no end */
	c->keep_expiry = !ev->has_expiration;
	switch (ev->type)
	{
		case RC_INITIAL_PURCHASE:
		case RC_RENEWAL:
		case RC_NON_RENEWING_PURCHASE:
			c->status = "active";
			c->set_next_product = true; /* a renewal is the product change taking effect */
			break;
		case RC_UNCANCELLATION:
		case RC_REFUND_REVERSED:
		case RC_TEMPORARY_ENTITLEMENT_GRANT:
			c->status = "active";
			break;
		case RC_SUBSCRIPTION_EXTENDED:
			c->status = NULL;	/* still cancelled if it was: it just lasts longer */
			break;
		case RC_PRODUCT_CHANGE:
			c->status = NULL;	/* takes effect at the next renewal */
			c->set_next_product = true;
			c->next_product_id = ev->new_product_id;
			break;
		case RC_CANCELLATION:
			c->status_reason = ev->cancel_reason;
			if (is_refund(ev))
			{
				/* a store refund ends the access now */
				c->status = "refunded";
				c->has_expires_at = true;
				c->expires_at = now;
				c->keep_expiry = false;
			}
			else if (ev->cancel_reason && strcmp(ev->cancel_reason, "BILLING_ERROR") == 0)
				c->status = "billing_issue";
			else
				c->status = "cancelled";	/* access lasts until the end of the period */
			break;
		case RC_BILLING_ISSUE:
			c->status = "billing_issue";
			/* the store's grace period keeps access */
			if (ev->has_grace && (!ev->has_expiration || ev->grace_until > ev->expiration_at))
			{
				c->has_expires_at = true;
				c->expires_at = ev->grace_until;
				c->keep_expiry = false;
			}
			break;
		case RC_SUBSCRIPTION_PAUSED:
			c->status = "paused";	/* pauses at the end of the period */
			break;
		case RC_EXPIRATION:
			c->status = "expired";
			c->status_reason = ev->expiration_reason;
			c->has_expires_at = true;
			c->expires_at = ev->has_expiration && ev->expiration_at < now ? ev->expiration_at : now;
			c->keep_expiry = false;
			break;
		default:
			elog(ERROR, "credits: %s is not a subscription event", ev->type_name);
	}
}

static void
result_entitlement(RcResult *r, const EntitlementRow *ent, const Account *acct)
{
	result_int(r, "entitlement_id", ent->id);
	result_str(r, "entitlement_status", ent->status);
	result_str(r, "entitlement_plan", ent->plan);
	result_time(r, "expires_at", ent->has_expires_at, ent->expires_at);
	if (acct)
		result_str(r, "plan", acct->plan);
}

/* A subscription event: the entitlement takes the state the newest event says. */
static void
apply_subscription_event(const RcEvent *ev, const Product *product, RcResult *r,
						 StringInfo duplicate)
{
	StoreTxn	txn;
	PurchaseRow prior;
	EntitlementChange change;
	const char *key;
	EntitlementRow existing;
	bool		found;
	EntitlementRow ent;
	AccountSet	set;
	pg_uuid_t	ids[2];
	Account    *acct;

	txn_from_event(ev, &txn);
	if (purchase_find(RC_SOURCE, ev->transaction_id, &prior))
		purchase_check_kind(&prior, RC_SOURCE, ev->transaction_id, "subscription");
	subscription_change(ev, &change);
	/* a temporary grant is keyed by its own transaction: the purchase that follows has its own */
	key = ev->type == RC_TEMPORARY_ENTITLEMENT_GRANT || ev->original_transaction_id == NULL ?
		ev->transaction_id : ev->original_transaction_id;

	found = entitlement_find(RC_SOURCE, key, ev->transaction_id, &existing);
	if (found && existing.last_event_at > ev->event_at)
	{
		result_set(r, "ignored", "stale_event");
		result_int(r, "entitlement_id", existing.id);
		return;
	}

	ids[0] = ev->user_id;
	ids[1] = found ? existing.user_id : ev->user_id;
	accounts_lock(&set, ids, 2);
	if (already_applied(ev, r, duplicate))
	{
		accounts_save(&set, false);
		return;
	}
	/* under the locks: a concurrent event may have moved or advanced it */
	found = entitlement_find(RC_SOURCE, key, ev->transaction_id, &existing);
	if (found && accounts_get(&set, &existing.user_id) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("the subscription moved to another user during the call"),
				 errdetail("{\"event_id\": %s}", json_quote(ev->id)),
				 errhint("Deliver the event again.")));
	if (found && existing.last_event_at > ev->event_at)
	{
		accounts_save(&set, false);
		result_set(r, "ignored", "stale_event");
		result_int(r, "entitlement_id", existing.id);
		return;
	}

	entitlement_write(&ev->user_id, found ? &existing : NULL, &txn, key, product, &change, &ent);
	if (is_purchase(ev->type))
		result_int(r, "confirmed_claims", claims_confirm(&ev->user_id, &txn));
	accounts_save(&set, true);
	acct = accounts_get(&set, &ev->user_id);
	if (is_purchase(ev->type))
		purchase_record_subscription(&ev->user_id, &txn, ent.id, acct);

	result_set(r, "applied", NULL);
	result_uuid(r, "user_id", &ev->user_id);
	if (found && memcmp(&existing.user_id, &ev->user_id, UUID_LEN) != 0)
		result_uuid(r, "moved_from", &existing.user_id);
	result_entitlement(r, &ent, acct);
	record_event(ev, &ev->user_id, r);
}

static void
result_balance(RcResult *r, const Account *acct)
{
	int64		remaining;

	result_uuid(r, "user_id", &acct->user_id);
	result_int(r, "balance", acct->balance);
	if (account_daily_remaining(acct, &remaining))
		result_int(r, "daily_remaining", remaining);
	else
		result_str(r, "daily_remaining", NULL);
}

/* A pack: purchases credit it once, a refund claws back what is left, a reversal gives it back. */
static void
apply_pack_event(const RcEvent *ev, const Product *product, RcResult *r, StringInfo duplicate)
{
	StoreTxn	txn;
	PurchaseRow prior;
	bool		found;
	AccountSet	set = {0};
	Account    *acct;
	pg_uuid_t	owner;

	txn_from_event(ev, &txn);
	if (ev->type == RC_TEMPORARY_ENTITLEMENT_GRANT)
	{
		/* credits are money: a pack waits for the validated purchase */
		result_set(r, "ignored", "pack_not_validated");
		return;
	}
	if (!is_purchase(ev->type) && !is_refund(ev) && ev->type != RC_REFUND_REVERSED)
	{
		result_set(r, "ignored", "not_a_subscription");
		return;
	}

	/*
	 * Decide without locks when nothing will change; then lock the account
	 * holding the pack and decide again.
	 */
	for (int pass = 0; pass < 2; pass++)
	{
		found = purchase_find(RC_SOURCE, ev->transaction_id, &prior);
		if (found)
			purchase_check_kind(&prior, RC_SOURCE, ev->transaction_id, "pack");
		if (is_purchase(ev->type) && found)
		{
			if (prior.has_entry)
			{
				result_set(r, "duplicate", "transaction already applied");
				result_int(r, "entry_id", prior.entry_id);
				break;
			}
			if (purchase_is_refunded(&prior))
			{
				result_set(r, "ignored", "refunded");
				break;
			}
		}
		if (!is_purchase(ev->type) && found)
		{
			if (!prior.has_user)
			{
				/* the account was deleted: its credits are gone already */
				result_set(r, "ignored", "account_deleted");
				break;
			}
			if (prior.has_last_event_at && prior.last_event_at > ev->event_at)
			{
				result_set(r, "ignored", "stale_event");
				break;
			}
			if (is_refund(ev) && purchase_is_refunded(&prior))
			{
				result_set(r, "ignored", "already_refunded");
				break;
			}
		}
		if (pass == 1)
		{
			if (found && accounts_get(&set, &prior.user_id) == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
						 errmsg("the purchase was applied to another user during the call"),
						 errdetail("{\"event_id\": %s}", json_quote(ev->id)),
						 errhint("Deliver the event again.")));
			break;
		}
		owner = found ? prior.user_id : ev->user_id;
		accounts_lock(&set, &owner, 1);
		if (already_applied(ev, r, duplicate))
			break;
	}
	if (r->status != NULL)
	{
		if (set.n > 0)
			accounts_save(&set, false);
		return;
	}
	acct = &set.accts[0];

	if (is_purchase(ev->type))
	{
		LedgerEntry entry;

		pack_credit(acct, &txn, product, found, &entry);
		result_set(r, "applied", NULL);
		result_int(r, "entry_id", entry.id);
		result_int(r, "credits", entry.amount);
	}
	else if (!found)
	{
		/* the refund (or its reversal) came first: the purchase will credit nothing (or credit) */
		pack_refund_tombstone(&acct->user_id, &txn, is_refund(ev) ? "refunded" : "reversed");
		result_set(r, "applied", is_refund(ev) ? "refund_before_purchase" : "reversal_before_purchase");
		result_int(r, "clawed_back", 0);
	}
	else if (is_refund(ev))
	{
		int64		entry_id;
		int64		credits = 0;
		int64		clawed = pack_claw_back(acct, &txn, &prior, &entry_id);

		if (prior.has_entry)
		{
			Datum		args[1] = {Int64GetDatum(prior.entry_id)};
			static CachedStatement entry_amount = {
				"SELECT amount FROM credits.ledger WHERE id = $1", 1, {INT8OID}
			};

			if (spi_exec(&entry_amount, args, NULL) > 0)
				credits = spi_get_int64(0, 1);
		}
		/* what is not recovered was spent, has expired or is reserved by a hold */
		result_set(r, "applied", clawed == 0 ? "nothing_to_recover" :
				   clawed < credits ? "partly_recovered" : NULL);
		if (entry_id)
			result_int(r, "entry_id", entry_id);
		else
			result_str(r, "entry_id", NULL);
		result_int(r, "credits", credits);
		result_int(r, "clawed_back", clawed);
		result_int(r, "not_recovered", credits - clawed);
	}
	else if (purchase_is_refunded(&prior))
	{
		int64		entry_id;
		int64		given = pack_give_back(acct, &txn, &prior, &entry_id);

		result_set(r, "applied", NULL);
		if (entry_id)
			result_int(r, "entry_id", entry_id);
		else
			result_str(r, "entry_id", NULL);
		result_int(r, "given_back", given);
	}
	else
	{
		/* nothing to reverse yet: remember it, so an older refund is stale */
		purchase_note_refund_event(&txn, "reversed");
		result_set(r, "applied", "not_refunded");
		result_int(r, "given_back", 0);
	}
	account_save(acct);
	result_balance(r, acct);
	record_event(ev, &acct->user_id, r);
}

/* TRANSFER: the store moved the subscriptions of some app users to another. */
static void
apply_transfer(const RcEvent *ev, RcResult *r, StringInfo duplicate)
{
	pg_uuid_t  *owners;
	int			nowners;
	pg_uuid_t  *ids;
	AccountSet	set;
	int			moved = 0;

	if (!store_owners_of(ev->from, ev->nfrom, ev->has_to ? &ev->to : NULL, &owners, &nowners))
	{
		result_set(r, "ignored", "nothing_to_transfer");
		return;
	}
	ids = palloc(sizeof(pg_uuid_t) * (nowners + 1));
	memcpy(ids, owners, sizeof(pg_uuid_t) * nowners);
	if (ev->has_to)
		ids[nowners] = ev->to;
	accounts_lock(&set, ids, nowners + (ev->has_to ? 1 : 0));
	if (already_applied(ev, r, duplicate))
	{
		accounts_save(&set, false);
		return;
	}
	/* the owners again, under the locks */
	store_owners_of(ev->from, ev->nfrom, ev->has_to ? &ev->to : NULL, &owners, &nowners);
	for (int i = 0; i < nowners; i++)
	{
		if (accounts_get(&set, &owners[i]) == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("a subscription moved during the transfer"),
					 errdetail("{\"event_id\": %s}", json_quote(ev->id)),
					 errhint("Deliver the event again.")));
		moved += entitlement_move_all(&owners[i], ev->has_to ? &ev->to : NULL,
									  ev->event_at, ev->id);
	}
	accounts_save(&set, true);

	result_set(r, "applied", ev->has_to ? NULL : "transferred_to_unknown_user");
	result_uuid(r, "user_id", ev->has_to ? &ev->to : NULL);
	appendStringInfoString(&r->buf, ", \"from\": [");
	for (int i = 0; i < nowners; i++)
		appendStringInfo(&r->buf, "%s%s", i ? ", " : "",
						 json_quote(DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&owners[i])))));
	appendStringInfoChar(&r->buf, ']');
	result_int(r, "moved", moved);
	if (ev->has_to)
		result_str(r, "plan", accounts_get(&set, &ev->to)->plan);
	record_event(ev, ev->has_to ? &ev->to : NULL, r);
}

/*
 * credits.apply_revenuecat_event(payload jsonb) returns jsonb
 *
 * Applies one RevenueCat webhook body and says what it did:
 *   {"status": "applied" | "duplicate" | "ignored", "reason": ..., "event_id": ...,
 *    "type": ..., "user_id": ..., ...}
 */
PG_FUNCTION_INFO_V1(credits_apply_revenuecat_event);
Datum
credits_apply_revenuecat_event(PG_FUNCTION_ARGS)
{
	Jsonb	   *payload;
	JsonbContainer *event;
	RcEvent		ev;
	RcResult	r;
	StringInfoData duplicate;
	Product		product;

	refuse_client_request("credits.apply_revenuecat_event");

	require_arg(fcinfo, 0, "payload");
	payload = PG_GETARG_JSONB_P(0);
	event = parse_envelope(payload, &ev);
	result_init(&r, &ev);
	initStringInfo(&duplicate);

	if (ev.type == RC_UNKNOWN)
		result_set(&r, "ignored", "unknown_event_type");
	else if (ev.type == RC_TEST)
		result_set(&r, "ignored", "test_event");
	else
	{
		ev.environment = get_string(event, "environment", false, 64);
		if (ev.environment && strcmp(ev.environment, "SANDBOX") == 0 && !credits_accept_sandbox())
			result_set(&r, "ignored", "sandbox");
	}
	if (r.status != NULL)
		PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(result_text(&r))));

	parse_fields(event, &ev);

	SPI_connect();
	if (already_applied(&ev, &r, &duplicate))
		;
	else if (ev.type == RC_TRANSFER)
		apply_transfer(&ev, &r, &duplicate);
	else if (!product_find(ev.product_id, RC_SOURCE, &product))
	{
		result_set(&r, "ignored", "unknown_product");
		result_str(&r, "product_id", ev.product_id);
	}
	else if (product.plan == NULL)
		apply_pack_event(&ev, &product, &r, &duplicate);
	else
		apply_subscription_event(&ev, &product, &r, &duplicate);
	SPI_finish();

	if (duplicate.len > 0)
	{
		/* the first result, marked as a duplicate */
		Datum		first = DirectFunctionCall1(jsonb_in, CStringGetDatum(duplicate.data));
		Datum		mark = DirectFunctionCall1(jsonb_in,
											   CStringGetDatum("{\"status\": \"duplicate\", \"reason\": \"event already applied\"}"));

		PG_RETURN_DATUM(DirectFunctionCall2(jsonb_concat, first, mark));
	}
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(result_text(&r))));
}
