/*
 * revenuecat.c
 *		credits.apply_revenuecat_event(payload jsonb): RevenueCat webhooks,
 *		applied exactly once, in any order, as often as they are delivered,
 *		and nothing that is not applied is lost.
 *
 * The payload is the webhook body as RevenueCat sends it:
 *     {"api_version": "1.0", "event": {"id": ..., "type": ..., ...}}
 * A body that is not that (no event object, no id or type, a field of the
 * wrong type) is 22023 naming the field and writes nothing.  Every
 * documented event type is answered 200: applied, duplicate or ignored.
 *
 * Who: the account is the first app user id RevenueCat names that is not
 * anonymous ($RCAnonymousID:...), looking in app_user_id,
 * original_app_user_id and aliases, as RevenueCat's docs advise (a uuid is
 * that account, any other id its credits.user_uuid()).  An event naming only
 * anonymous ids takes the user those ids were linked to (by a TRANSFER, a
 * SUBSCRIBER_ALIAS or the aliases of an earlier event, kept in
 * credits.revenuecat_aliases); with none it is kept ("anonymous_user") and
 * applied when a later event links one of its ids to a user.
 *
 * Nothing lost: an event that is not applied (anonymous, unknown product,
 * sandbox, stale, a type that changes nothing here) is kept in
 * credits.webhook_events with the reason; credits.replay_webhook_events()
 * applies the kept ones again after a mapping is fixed.  Applied events are
 * recorded in credits.store_events keyed by ('revenuecat', event.id): a
 * second delivery returns the first result as "duplicate".
 *
 * What: a product row (credits.products: the product id, or for a Play
 * product "<subscription>:<base plan>" the subscription id), else the best
 * plan that an entitlement id of the event maps to
 * (credits.revenuecat_entitlements).  Only INITIAL_PURCHASE, RENEWAL and
 * NON_RENEWING_PURCHASE set a subscription's product and plan; every other
 * event changes its status or end only (a PRODUCT_CHANGE records the product
 * that takes over at the next renewal).
 *
 * Any order: each subscription's entitlement remembers the store time of
 * the newest event applied to it (last_event_at); an older event is
 * "ignored" (stale; a stale purchase still records its transaction).
 * Events of one millisecond are ordered by their place in a subscription's
 * life (lifecycle_rank).  A TRANSFER that arrives before the purchase it
 * moves is kept and applied by that purchase.  An event_timestamp_ms more
 * than an hour ahead of the database clock is taken as now (RevenueCat's own
 * TRANSFER sample is dated 4466), so it cannot make every later event stale.
 *
 * Locks: a transaction-level advisory lock per app user id the event names
 * (anonymous ones as sent, the others by their account uuid; in key order),
 * first; then the account rows of the users concerned, in user_id order (an
 * event that moves a subscription locks both users; TRANSFER locks every
 * user it takes subscriptions from, and the one it gives them to).  Kept
 * events that the event unblocks (a link, a transfer) are applied after the
 * event's own account writes, each taking its own locks.
 */
#include "purchases.h"
#include "external_ids.h"
#include "webhooks.h"

#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#define RC_SOURCE "revenuecat"
#define RC_MAX_IDS 100
#define RC_IDS_CAP (2 * RC_MAX_IDS + 2)
#define RC_ANONYMOUS "$RCAnonymousID:"
/* First key of the advisory locks on app user ids ("rcid"). */
#define RC_ID_LOCK_CLASS 0x72636964
/* A store time further ahead of the database clock than this is taken as now. */
#define RC_MAX_AHEAD (INT64CONST(3600) * USECS_PER_SEC)
/* A temporary grant with no end lasts this long (RevenueCat: at most 24 hours). */
#define RC_TEMPORARY_GRANT (INT64CONST(24) * 3600 * USECS_PER_SEC)

typedef enum RcType
{
	RC_UNKNOWN,
	RC_KEPT_ONLY,				/* a documented type that changes nothing here */
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
	RC_TRANSFER,
	RC_SUBSCRIBER_ALIAS
} RcType;

/*
 * Every type RevenueCat documents.  kept_reason: why it is kept and not
 * applied.  rank: where the event comes in a subscription's life when
 * several share one event_timestamp_ms (RevenueCat sends e.g.
 * INITIAL_PURCHASE, BILLING_ISSUE and CANCELLATION of a failed first payment
 * at the same millisecond, and delivers them in any order): the start first,
 * then renewals and product changes (equal: an upgrade's RENEWAL and
 * PRODUCT_CHANGE apply in either order), then what can follow them, a
 * refund (RC_REFUND_RANK), the end last; -1 for a type that sets no status
 * (TRANSFER, an alias), which any event at its time follows.
 */
#define RC_REFUND_RANK 7
typedef struct RcTypeInfo
{
	const char *name;
	RcType		type;
	const char *kept_reason;
	int			rank;
} RcTypeInfo;

static const RcTypeInfo rc_types[] =
{
	{"TEST", RC_KEPT_ONLY, "test_event", -1},
	{"INVOICE_ISSUANCE", RC_KEPT_ONLY, "invoice_not_paid", -1},
	{"VIRTUAL_CURRENCY_TRANSACTION", RC_KEPT_ONLY, "virtual_currency_not_mirrored", -1},
	{"EXPERIMENT_ENROLLMENT", RC_KEPT_ONLY, "not_a_purchase", -1},
	{"INITIAL_PURCHASE", RC_INITIAL_PURCHASE, NULL, 0},
	{"RENEWAL", RC_RENEWAL, NULL, 1},
	{"NON_RENEWING_PURCHASE", RC_NON_RENEWING_PURCHASE, NULL, 0},
	{"PRODUCT_CHANGE", RC_PRODUCT_CHANGE, NULL, 1},
	{"CANCELLATION", RC_CANCELLATION, NULL, 5},
	{"UNCANCELLATION", RC_UNCANCELLATION, NULL, 2},
	{"EXPIRATION", RC_EXPIRATION, NULL, 6},
	{"BILLING_ISSUE", RC_BILLING_ISSUE, NULL, 3},
	{"SUBSCRIPTION_EXTENDED", RC_SUBSCRIPTION_EXTENDED, NULL, 2},
	{"SUBSCRIPTION_PAUSED", RC_SUBSCRIPTION_PAUSED, NULL, 4},
	{"TEMPORARY_ENTITLEMENT_GRANT", RC_TEMPORARY_ENTITLEMENT_GRANT, NULL, 0},
	{"REFUND_REVERSED", RC_REFUND_REVERSED, NULL, 8},
	{"TRANSFER", RC_TRANSFER, NULL, -1},
	{"SUBSCRIBER_ALIAS", RC_SUBSCRIBER_ALIAS, NULL, -1},
};

/* The documented type of this name; NULL for one RevenueCat does not document. */
static const RcTypeInfo *
rc_type_info(const char *name)
{
	for (size_t i = 0; i < lengthof(rc_types); i++)
	{
		if (strcmp(name, rc_types[i].name) == 0)
			return &rc_types[i];
	}
	return NULL;
}

/* App user ids an event names, anonymous ones apart, each once, in order. */
typedef struct RcIds
{
	int			nknown;
	const char **known;
	int			nanon;
	const char **anon;
} RcIds;

/* The fields of an event that this file decides on. */
typedef struct RcEvent
{
	const char *id;
	const char *type_name;
	RcType		type;
	const char *kept_reason;	/* a type that is kept, never applied */
	TimestampTz event_at;
	bool		clamped;		/* event_timestamp_ms was too far ahead: event_at is now */
	TimestampTz sent_at;		/* clamped: what it said */
	const char *environment;
	const char *store;
	RcIds		ids;			/* app_user_id, original_app_user_id, aliases */
	RcIds		from;			/* TRANSFER: transferred_from */
	RcIds		to;				/* TRANSFER: transferred_to */
	pg_uuid_t	user_id;		/* the account, once resolved */
	int64		linked;			/* anonymous ids this event linked to the account */
	const char *product_id;
	const char *new_product_id;
	const char *transaction_id;
	const char *original_transaction_id;
	const char *period_type;
	int			nentitlements;
	const char **entitlements;	/* entitlement_ids (and the deprecated entitlement_id) */
	bool		has_purchased_at;
	TimestampTz purchased_at;
	bool		has_expiration;
	TimestampTz expiration_at;
	bool		has_grace;
	TimestampTz grace_until;
	const char *cancel_reason;
	const char *expiration_reason;
} RcEvent;

/* What the call returns: a JSON object. */
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

/* Kept anonymous events that name one of the ids, oldest first. */
static CachedStatement kept_anonymous = {
	"SELECT payload FROM credits.webhook_events"
	" WHERE provider = 'revenuecat' AND reason = 'anonymous_user' AND app_user_ids && $1"
	"   AND event_id <> $2"
	" ORDER BY event_at, event_id",
	2, {TEXTARRAYOID, TEXTOID}
};

/*
 * Kept TRANSFERs from the user that happened after the event: delivered
 * before the purchase they move, they found nothing to transfer then.
 */
static CachedStatement kept_transfers = {
	"SELECT payload FROM credits.webhook_events"
	" WHERE provider = 'revenuecat' AND reason = 'nothing_to_transfer' AND app_user_ids && $1"
	"   AND event_at > $2 AND event_id <> $3"
	" ORDER BY event_at, event_id",
	3, {TEXTARRAYOID, TIMESTAMPTZOID, TEXTOID}
};

static CachedStatement alias_owner = {
	"SELECT user_id FROM credits.revenuecat_aliases WHERE app_user_id = ANY ($1)"
	" ORDER BY linked_at DESC, app_user_id LIMIT 1",
	1, {TEXTARRAYOID}
};

/* Links anonymous ids to a user; a TRANSFER ($4) moves an id linked to another. */
static CachedStatement alias_link = {
	"INSERT INTO credits.revenuecat_aliases AS a (app_user_id, user_id, event_id)"
	" SELECT DISTINCT unnest($1::text[]), $2::uuid, $3::text"
	" ON CONFLICT (app_user_id) DO UPDATE"
	"   SET user_id = excluded.user_id, event_id = excluded.event_id, linked_at = now()"
	"   WHERE $4 AND a.user_id <> excluded.user_id",
	4, {TEXTARRAYOID, UUIDOID, TEXTOID, BOOLOID}
};

static CachedStatement sandbox_allowed = {
	"SELECT 1 FROM credits.revenuecat_sandbox_users WHERE app_user_id = ANY ($1) LIMIT 1",
	1, {TEXTARRAYOID}
};

/* The type of the event an entitlement's state was last set by. */
static CachedStatement last_event_type = {
	"SELECT s.event_type FROM credits.entitlements e"
	"  JOIN credits.store_events s ON s.source = 'revenuecat' AND s.event_id = e.last_event_id"
	" WHERE e.id = $1",
	1, {INT8OID}
};

/*
 * When a subscription's product, plan and end were set, and when its status
 * was: the store time of the event that set them; -infinity while they are
 * what an event that sets none named (a status event seen first names the
 * product, an extension seen first names no status); NULL (rows from before
 * 1.1, or written by apply_purchase): the time of its last event.
 */
static CachedStatement entitlement_clocks = {
	"SELECT coalesce(product_set_at, last_event_at), coalesce(status_set_at, last_event_at)"
	"  FROM credits.entitlements WHERE id = $1",
	1, {INT8OID}
};

/* NULL keeps a clock. */
static CachedStatement entitlement_clocks_set = {
	"UPDATE credits.entitlements"
	"   SET product_set_at = coalesce($2, product_set_at), status_set_at = coalesce($3, status_set_at)"
	" WHERE id = $1",
	3, {INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID}
};

/*
 * A status event older than the subscription's last one, newer than what
 * set its status: the status it names (the events after it set none).
 */
static CachedStatement older_status_update = {
	"UPDATE credits.entitlements"
	"   SET status = $2::text::credits.entitlement_status, status_reason = $3, status_set_at = $4,"
	"       updated_at = now()"
	" WHERE id = $1",
	4, {INT8OID, TEXTOID, TEXTOID, TIMESTAMPTZOID}
};

/*
 * A purchase older than the subscription's last event, newer than what set
 * its product: the product, plan and transaction it names; its end when the
 * end there is another product's (after an upgrade, status events name the
 * old product and its end; else the newer event's end holds); a pending
 * change to that product has taken effect.  The status stays the newer
 * event's.
 */
static CachedStatement older_purchase_update = {
	"UPDATE credits.entitlements"
	"   SET product_id = $2, plan = $3, transaction_id = $4,"
	"       purchased_at = coalesce($5, purchased_at), period_type = coalesce($6, period_type),"
	"       expires_at = CASE WHEN $7 THEN $8 ELSE expires_at END,"
	"       next_product_id = CASE WHEN next_product_id = $2 THEN NULL ELSE next_product_id END,"
	"       product_set_at = $9, updated_at = now()"
	" WHERE id = $1",
	9, {INT8OID, TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, TEXTOID, BOOLOID, TIMESTAMPTZOID,
	TIMESTAMPTZOID}
};

static CachedStatement entitlement_plan = {
	"SELECT m.plan FROM credits.revenuecat_entitlements m JOIN credits.plans p ON p.name = m.plan"
	" WHERE m.entitlement_id = ANY ($1) ORDER BY p.rank DESC, m.plan LIMIT 1",
	1, {TEXTARRAYOID}
};

static char *rc_receive(Jsonb *payload, bool replay_kept, bool *applied, bool *kept);
static pg_uuid_t *known_uuids(const RcIds *ids, const char *field);

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

static void
ids_init(RcIds *ids)
{
	ids->nknown = 0;
	ids->known = palloc(sizeof(char *) * RC_IDS_CAP);
	ids->nanon = 0;
	ids->anon = palloc(sizeof(char *) * RC_IDS_CAP);
}

static bool
is_anonymous(const char *id)
{
	return strncmp(id, RC_ANONYMOUS, strlen(RC_ANONYMOUS)) == 0;
}

/* Adds an app user id (NULL and empty ones are not ids) unless it is there already. */
static void
ids_add(RcIds *ids, const char *id)
{
	bool		anon;
	const char **list;
	int		   *n;

	if (id == NULL || id[0] == '\0')
		return;
	anon = is_anonymous(id);
	list = anon ? ids->anon : ids->known;
	n = anon ? &ids->nanon : &ids->nknown;
	for (int i = 0; i < *n; i++)
	{
		if (strcmp(list[i], id) == 0)
			return;
	}
	Assert(*n < RC_IDS_CAP);
	list[(*n)++] = id;
}

/* A text[] of the strings. */
static Datum
strings_datum(const char **strings, int n)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		elems[i] = CStringGetTextDatum(strings[i]);
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/* Both lists of ids, anonymous ones first, as one array of strings. */
static const char **
ids_all(const RcIds *ids, int *n)
{
	const char **all = palloc(sizeof(char *) * (ids->nanon + ids->nknown + 1));

	memcpy(all, ids->anon, sizeof(char *) * ids->nanon);
	memcpy(all + ids->nanon, ids->known, sizeof(char *) * ids->nknown);
	*n = ids->nanon + ids->nknown;
	return all;
}

/*
 * An array of strings (absent or null: none, or malformed when required),
 * each at most max_chars; calls add for each.  More than RC_MAX_IDS elements
 * is malformed.
 */
static void
get_string_array(JsonbContainer *ev, const char *key, bool required, int max_chars,
				 void (*add) (void *, const char *), void *into)
{
	JsonbValue *v = member(ev, key);
	JsonbContainer *arr;
	int			n;

	if (v == NULL || v->type == jbvNull)
	{
		if (required)
			malformed(field_name(key), "is missing");
		return;
	}
	if (v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data))
		malformed(field_name(key), "must be an array of strings");
	arr = v->val.binary.data;
	n = JsonContainerSize(arr);
	if (n > RC_MAX_IDS)
		malformed(field_name(key), psprintf("has more than %d elements", RC_MAX_IDS));
	for (int i = 0; i < n; i++)
	{
		JsonbValue *e = getIthJsonbValueFromContainer(arr, i);
		char	   *s;

		if (e == NULL || e->type != jbvString)
			malformed(field_name(key), "must be an array of strings");
		s = pnstrdup(e->val.string.val, e->val.string.len);
		if (pg_mbstrlen(s) > max_chars)
			malformed(field_name(key), psprintf("has an element longer than %d characters", max_chars));
		add(into, s);
	}
}

static void
add_id(void *ids, const char *id)
{
	ids_add((RcIds *) ids, id);
}

static void
add_entitlement(void *event, const char *id)
{
	RcEvent    *ev = (RcEvent *) event;

	for (int i = 0; i < ev->nentitlements; i++)
	{
		if (strcmp(ev->entitlements[i], id) == 0)
			return;
	}
	ev->entitlements[ev->nentitlements++] = id;
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
	const RcTypeInfo *info;

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
	info = rc_type_info(ev->type_name);
	ev->type = info ? info->type : RC_UNKNOWN;
	ev->kept_reason = info ? info->kept_reason : "unknown_event_type";
	return event;
}

/*
 * event_timestamp_ms (required by the types that are applied; else now),
 * taken as now when it is more than RC_MAX_AHEAD ahead of the clock.
 */
static void
parse_time(JsonbContainer *event, RcEvent *ev)
{
	TimestampTz now = GetCurrentTransactionStartTimestamp();

	if (!get_time_ms(event, "event_timestamp_ms", ev->kept_reason == NULL, &ev->event_at))
		ev->event_at = now;
	if (ev->event_at - now > RC_MAX_AHEAD)
	{
		ev->clamped = true;
		ev->sent_at = ev->event_at;
		ev->event_at = now;
	}
}

/* Who the event names, and where (environment, store). */
static void
parse_ids(JsonbContainer *event, RcEvent *ev)
{
	ids_init(&ev->ids);
	ids_init(&ev->from);
	ids_init(&ev->to);
	ids_add(&ev->ids, get_string(event, "app_user_id", false, CREDITS_MAX_KEY_CHARS));
	ids_add(&ev->ids, get_string(event, "original_app_user_id", false, CREDITS_MAX_KEY_CHARS));
	get_string_array(event, "aliases", false, CREDITS_MAX_KEY_CHARS, add_id, &ev->ids);
	if (ev->type == RC_TRANSFER)
	{
		get_string_array(event, "transferred_from", true, CREDITS_MAX_KEY_CHARS, add_id, &ev->from);
		get_string_array(event, "transferred_to", true, CREDITS_MAX_KEY_CHARS, add_id, &ev->to);
	}
	/* an applied type names its user somewhere, anonymous or not */
	if (ev->kept_reason == NULL && ev->type != RC_TRANSFER && ev->ids.nknown + ev->ids.nanon == 0)
		malformed("event.app_user_id", "is missing");
	ev->environment = get_string(event, "environment", false, 64);
	if (ev->environment == NULL)	/* VIRTUAL_CURRENCY_TRANSACTION */
		ev->environment = get_string(event, "purchase_environment", false, 64);
	ev->store = get_string(event, "store", false, 64);
}

/*
 * The purchase fields, for the types that are applied.  A temporary grant
 * guarantees few of them: without a transaction id it is keyed by its event.
 */
static void
parse_fields(JsonbContainer *event, RcEvent *ev)
{
	bool		temporary = ev->type == RC_TEMPORARY_ENTITLEMENT_GRANT;

	ev->product_id = get_string(event, "product_id", !temporary, CREDITS_MAX_KEY_CHARS);
	ev->transaction_id = get_string(event, "transaction_id", !temporary, CREDITS_MAX_KEY_CHARS);
	if (ev->transaction_id == NULL)
		ev->transaction_id = psprintf("temporary:%s", ev->id);
	ev->original_transaction_id = get_string(event, "original_transaction_id", false,
											 CREDITS_MAX_KEY_CHARS);
	ev->new_product_id = get_string(event, "new_product_id", false, CREDITS_MAX_KEY_CHARS);
	ev->period_type = get_string(event, "period_type", false, 64);
	ev->cancel_reason = get_string(event, "cancel_reason", false, 64);
	ev->expiration_reason = get_string(event, "expiration_reason", false, 64);
	ev->has_purchased_at = get_time_ms(event, "purchased_at_ms", false, &ev->purchased_at);
	ev->has_expiration = get_time_ms(event, "expiration_at_ms", false, &ev->expiration_at);
	ev->has_grace = get_time_ms(event, "grace_period_expiration_at_ms", false, &ev->grace_until);
	ev->entitlements = palloc(sizeof(char *) * (RC_MAX_IDS + 1));
	get_string_array(event, "entitlement_ids", false, CREDITS_MAX_KEY_CHARS, add_entitlement, ev);
	{
		const char *deprecated = get_string(event, "entitlement_id", false, CREDITS_MAX_KEY_CHARS);

		if (deprecated != NULL && deprecated[0] != '\0')
			add_entitlement(ev, deprecated);
	}
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

/* ---- who ---- */

static int
cmp_int32(const void *a, const void *b)
{
	int32		x = *(const int32 *) a;
	int32		y = *(const int32 *) b;

	return (x > y) - (x < y);
}

/* Every anonymous id the event names (a TRANSFER: both sides). */
static const char **
anonymous_ids(const RcEvent *ev, int *n)
{
	const char **all = palloc(sizeof(char *) * (ev->ids.nanon + ev->from.nanon + ev->to.nanon + 1));

	*n = 0;
	for (int i = 0; i < ev->ids.nanon; i++)
		all[(*n)++] = ev->ids.anon[i];
	for (int i = 0; i < ev->from.nanon; i++)
		all[(*n)++] = ev->from.anon[i];
	for (int i = 0; i < ev->to.nanon; i++)
		all[(*n)++] = ev->to.anon[i];
	return all;
}

/* Adds the advisory lock keys of the accounts of known ids (their uuid, however spelled). */
static void
add_known_keys(const RcIds *ids, const char *field, int32 *keys, int *n)
{
	pg_uuid_t  *uuids = known_uuids(ids, field);

	for (int i = 0; i < ids->nknown; i++)
	{
		const char *text = uuid_text(&uuids[i]);

		keys[(*n)++] = (int32) hash_bytes((const unsigned char *) text, strlen(text));
	}
}

/*
 * Serializes the events that name the same app user id, anonymous or not:
 * an event kept for want of a user and the TRANSFER or alias that links the
 * id (and a retry of the kept event), or a TRANSFER that finds nothing to
 * transfer and the purchase it should have moved, run one after the other,
 * so the kept event is applied once and never missed.
 */
static void
lock_app_user_ids(const RcEvent *ev)
{
	int			nanon;
	const char **anon = anonymous_ids(ev, &nanon);
	int32	   *keys = palloc(sizeof(int32) * (nanon + ev->ids.nknown + ev->from.nknown + ev->to.nknown + 1));
	int			n = 0;

	for (int i = 0; i < nanon; i++)
		keys[n++] = (int32) hash_bytes((const unsigned char *) anon[i], strlen(anon[i]));
	add_known_keys(&ev->ids, "event.app_user_id", keys, &n);
	add_known_keys(&ev->from, "event.transferred_from", keys, &n);
	add_known_keys(&ev->to, "event.transferred_to", keys, &n);
	qsort(keys, n, sizeof(int32), cmp_int32);
	for (int i = 0; i < n; i++)
	{
		if (i > 0 && keys[i] == keys[i - 1])
			continue;
		DirectFunctionCall2(pg_advisory_xact_lock_int4, Int32GetDatum(RC_ID_LOCK_CLASS),
							Int32GetDatum(keys[i]));
	}
}

/*
 * The account: the first id that is not anonymous (app_user_id, then
 * original_app_user_id, then aliases), else the user an anonymous one was
 * linked to.  False when there is none.
 */
static bool
resolve_user(RcEvent *ev)
{
	Datum		args[1];

	if (ev->ids.nknown > 0)
	{
		user_uuid_from_text(ev->ids.known[0], "event.app_user_id", &ev->user_id);
		return true;
	}
	if (ev->ids.nanon == 0)
		return false;
	args[0] = strings_datum(ev->ids.anon, ev->ids.nanon);
	if (spi_exec(&alias_owner, args, NULL) == 0)
		return false;
	ev->user_id = spi_get_uuid(0, 1);
	return true;
}

/* Links anonymous ids to the user; returns how many links are new (or moved). */
static int64
link_anonymous(const char **anon, int n, const pg_uuid_t *user_id, const char *event_id,
			   bool transfer)
{
	Datum		args[4];

	if (n == 0)
		return 0;
	args[0] = strings_datum(anon, n);
	args[1] = UUIDPGetDatum(user_id);
	args[2] = CStringGetTextDatum(event_id);
	args[3] = BoolGetDatum(transfer);
	return (int64) spi_exec(&alias_link, args, NULL);
}

/*
 * A SANDBOX event that must not apply: credits.accept_sandbox is off and no
 * id it names (nor its account) is in credits.revenuecat_sandbox_users.
 */
static bool
sandbox_refused(const RcEvent *ev, bool has_user)
{
	const char **names;
	int			n = 0;
	int			k;
	const char **part;
	Datum		args[1];

	if (ev->environment == NULL || strcmp(ev->environment, "SANDBOX") != 0 ||
		credits_accept_sandbox())
		return false;
	names = palloc(sizeof(char *) * (3 * RC_IDS_CAP + 1));
	part = ids_all(&ev->ids, &k);
	memcpy(names + n, part, sizeof(char *) * k);
	n += k;
	part = ids_all(&ev->from, &k);
	memcpy(names + n, part, sizeof(char *) * k);
	n += k;
	part = ids_all(&ev->to, &k);
	memcpy(names + n, part, sizeof(char *) * k);
	n += k;
	if (has_user)
		names[n++] = uuid_text(&ev->user_id);
	args[0] = strings_datum(names, n);
	return spi_exec(&sandbox_allowed, args, NULL) == 0;
}

/* ---- what ---- */

/*
 * The product an event is about: its row in credits.products, the row of a
 * Play product's subscription id ("<subscription>:<base plan>"), else a
 * subscription to the best plan one of its entitlement ids maps to.  NULL
 * when found; else why not (the reason it is kept under).
 */
static const char *
product_for(RcEvent *ev, Product *product)
{
	const char *colon = ev->product_id ? strchr(ev->product_id, ':') : NULL;

	if (ev->product_id != NULL && product_find(ev->product_id, RC_SOURCE, product))
		return NULL;
	if (colon != NULL &&
		product_find(pnstrdup(ev->product_id, colon - ev->product_id), RC_SOURCE, product))
		return NULL;
	if (ev->nentitlements > 0)
	{
		Datum		args[1] = {strings_datum(ev->entitlements, ev->nentitlements)};

		if (spi_exec(&entitlement_plan, args, NULL) > 0)
		{
			memset(product, 0, sizeof(*product));
			product->plan = spi_get_cstring(0, 1);
			if (ev->product_id == NULL)
				ev->product_id = psprintf("entitlement:%s", ev->entitlements[0]);
			product->product_id = pstrdup(ev->product_id);
			return NULL;
		}
	}
	if (ev->product_id == NULL)
		return "no_product";
	return colon != NULL ? "unmapped_play_base_plan" : "unknown_product";
}

/* ---- kept events ---- */

/*
 * The ids a kept event is found again by: its anonymous ids, and for a
 * TRANSFER the accounts it transfers from (a later-delivered purchase of
 * theirs applies it).
 */
static const char **
kept_ids(const RcEvent *ev, int *n)
{
	const char **anon = anonymous_ids(ev, n);
	const char **all;
	pg_uuid_t  *from;

	if (ev->type != RC_TRANSFER || ev->from.nknown == 0)
		return anon;
	from = known_uuids(&ev->from, "event.transferred_from");
	all = palloc(sizeof(char *) * (*n + ev->from.nknown));
	memcpy(all, anon, sizeof(char *) * *n);
	for (int i = 0; i < ev->from.nknown; i++)
		all[(*n)++] = uuid_text(&from[i]);
	return all;
}

/* Keeps the body of an event that was not applied, with why. */
static void
keep_event(const RcEvent *ev, Jsonb *payload, const char *reason)
{
	int			n;
	const char **ids = kept_ids(ev, &n);
	KeptEvent	kept = {RC_SOURCE, ev->id, ev->type_name, ev->event_at,
		ev->original_transaction_id ? ev->original_transaction_id : ev->transaction_id,
		ev->transaction_id, reason, JsonbToCString(NULL, &payload->root, VARSIZE(payload)),
	n > 0 ? strings_datum(ids, n) : (Datum) 0};

	webhook_keep(&kept);
}

/* The payloads a statement found (column 1), appended to *payloads. */
static void
collect_payloads(CachedStatement *stmt, Datum *args, char ***payloads, uint64 *n)
{
	uint64		found = spi_exec(stmt, args, NULL);

	*payloads = repalloc(*payloads, sizeof(char *) * (*n + found + 1));
	for (uint64 i = 0; i < found; i++)
		(*payloads)[(*n)++] = spi_get_cstring(i, 1);
}

/*
 * After an event applied: the kept events it unblocks, applied in turn,
 * their results in "replayed".  First those that waited for a user and name
 * one of its anonymous ids, then the TRANSFERs from its user that came
 * after it and were delivered before it; each oldest first.
 */
static void
apply_kept_after(const RcEvent *ev, RcResult *r)
{
	int			n;
	const char **anon = anonymous_ids(ev, &n);
	Datum		args[3];
	uint64		nkept = 0;
	char	  **payloads = palloc(sizeof(char *));

	if (n > 0)
	{
		args[0] = strings_datum(anon, n);
		args[1] = CStringGetTextDatum(ev->id);
		collect_payloads(&kept_anonymous, args, &payloads, &nkept);
	}
	if (ev->type != RC_TRANSFER && ev->type != RC_SUBSCRIBER_ALIAS)
	{
		const char *user = uuid_text(&ev->user_id);

		args[0] = strings_datum(&user, 1);
		args[1] = TimestampTzGetDatum(ev->event_at);
		args[2] = CStringGetTextDatum(ev->id);
		collect_payloads(&kept_transfers, args, &payloads, &nkept);
	}
	if (nkept == 0)
		return;
	appendStringInfoString(&r->buf, ", \"replayed\": [");
	for (uint64 i = 0; i < nkept; i++)
	{
		bool		applied;
		bool		kept;
		Jsonb	   *body = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(payloads[i])));

		appendStringInfo(&r->buf, "%s%s", i ? ", " : "", rc_receive(body, false, &applied, &kept));
	}
	appendStringInfoChar(&r->buf, ']');
}

/* ---- applying ---- */

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

/* An event's place in a subscription's life at one millisecond (rc_types' rank). */
static int
lifecycle_rank(const char *type_name, bool refund)
{
	const RcTypeInfo *info;

	if (type_name == NULL)
		return -1;
	if (refund)
		return RC_REFUND_RANK;
	info = rc_type_info(type_name);
	return info ? info->rank : -1;
}

/*
 * Whether the subscription's state comes from an event after this one: a
 * later store time, or the same time and a later place in its life.
 */
static bool
subscription_event_is_stale(const RcEvent *ev, const EntitlementRow *existing)
{
	Datum		args[1];
	const char *last_type = NULL;

	if (existing->last_event_at != ev->event_at)
		return existing->last_event_at > ev->event_at;
	args[0] = Int64GetDatum(existing->id);
	if (spi_exec(&last_event_type, args, NULL) > 0)
		last_type = spi_get_cstring(0, 1);
	return lifecycle_rank(last_type, strcmp(existing->status, "refunded") == 0) >
		lifecycle_rank(ev->type_name, is_refund(ev));
}

/*
 * What the event does to a subscription's entitlement.  Only a purchase
 * sets the product and plan; the other events change the status, and only
 * an extension, a grace period, a refund, an expiration or a temporary
 * grant change the end (a status-only event may name the product before an
 * upgrade, with that product's end).
 */
static void
subscription_change(const RcEvent *ev, EntitlementChange *c)
{
	TimestampTz now = GetCurrentTransactionStartTimestamp();

	memset(c, 0, sizeof(*c));
	c->has_expires_at = ev->has_expiration;
	c->expires_at = ev->expiration_at;
	c->keep_product = !is_purchase(ev->type);
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
		case RC_TEMPORARY_ENTITLEMENT_GRANT:
			c->status = "active";
			if (!ev->has_expiration)
			{
				c->has_expires_at = true;
				c->expires_at = ev->event_at + RC_TEMPORARY_GRANT;
				c->keep_expiry = false;
			}
			break;
		case RC_REFUND_REVERSED:
			c->status = "active";
			break;
		case RC_UNCANCELLATION:
			c->status = "active";
			c->keep_expiry = true;
			break;
		case RC_SUBSCRIPTION_EXTENDED:
			c->status = NULL;	/* still cancelled if it was: it just lasts longer */
			break;
		case RC_PRODUCT_CHANGE:
			c->status = NULL;	/* takes effect at the next renewal */
			c->keep_expiry = true;
			c->set_next_product = true;
			c->next_product_id = ev->new_product_id;
			break;
		case RC_CANCELLATION:
			c->status_reason = ev->cancel_reason;
			c->keep_expiry = true;
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
			c->keep_expiry = true;
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
			c->keep_expiry = true;
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

/* The status that holds now: an access status whose end has passed is "expired". */
static const char *
status_now(const EntitlementRow *ent)
{
	if (entitlement_status_gives_access(ent->status) && ent->has_expires_at &&
		ent->expires_at <= GetCurrentTransactionStartTimestamp())
		return "expired";
	return ent->status;
}

static void
result_entitlement(RcResult *r, const EntitlementRow *ent, const Account *acct)
{
	json_member_int(&r->buf, "entitlement_id", ent->id);
	json_member_str(&r->buf, "entitlement_status", status_now(ent));
	json_member_str(&r->buf, "entitlement_plan", ent->plan);
	json_member_time(&r->buf, "expires_at", ent->has_expires_at, ent->expires_at);
	if (acct)
		json_member_str(&r->buf, "plan", acct->plan);
}

/* The store times that set a subscription's product and its status (see entitlement_clocks). */
static void
entitlement_clocks_get(const EntitlementRow *ent, TimestampTz *product_at, TimestampTz *status_at)
{
	Datum		args[1] = {Int64GetDatum(ent->id)};

	*product_at = *status_at = ent->last_event_at;
	if (spi_exec(&entitlement_clocks, args, NULL) > 0)
	{
		spi_get_time_or_null(0, 1, product_at);
		spi_get_time_or_null(0, 2, status_at);
	}
}

static TimestampTz
product_set_at(const EntitlementRow *ent)
{
	TimestampTz product_at;
	TimestampTz status_at;

	entitlement_clocks_get(ent, &product_at, &status_at);
	return product_at;
}

/*
 * Whether an event older than the subscription's last one still sets its
 * status: it names one and moves no end (a cancellation, uncancellation,
 * pause or billing issue without grace), it concerns the same user, and the
 * status there was set before it (the events after it set none).
 */
static bool
older_status_applies(const RcEvent *ev, const EntitlementChange *change, const EntitlementRow *existing)
{
	TimestampTz product_at;
	TimestampTz status_at;

	if (is_purchase(ev->type) || change->status == NULL || !change->keep_expiry ||
		memcmp(&existing->user_id, &ev->user_id, UUID_LEN) != 0)
		return false;
	entitlement_clocks_get(existing, &product_at, &status_at);
	return status_at < ev->event_at;
}

/* Sets the clocks an applied event moves (NULL keeps one). */
static void
set_entitlement_clocks(int64 entitlement_id, const TimestampTz *product_at, const TimestampTz *status_at)
{
	Datum		args[3] = {Int64GetDatum(entitlement_id), 0, 0};
	char		nulls[] = "   ";

	if (product_at)
		args[1] = TimestampTzGetDatum(*product_at);
	else
		nulls[1] = 'n';
	if (status_at)
		args[2] = TimestampTzGetDatum(*status_at);
	else
		nulls[2] = 'n';
	spi_exec(&entitlement_clocks_set, args, nulls);
}

/*
 * The clocks of an event applied in order: a purchase sets the product's, an
 * event with a status the status's; a new row that neither set starts them
 * at -infinity.
 */
static void
set_event_clocks(const RcEvent *ev, const EntitlementChange *change, bool found, int64 entitlement_id)
{
	TimestampTz never = DT_NOBEGIN;
	const TimestampTz *product_at = is_purchase(ev->type) ? &ev->event_at : found ? NULL : &never;
	const TimestampTz *status_at = change->status ? &ev->event_at : found ? NULL : &never;

	if (product_at || status_at)
		set_entitlement_clocks(entitlement_id, product_at, status_at);
}

/*
 * The answer's entitlement fields and the record of an applied event, after
 * the accounts are saved.
 */
static void
result_applied(const RcEvent *ev, const EntitlementRow *existing, const EntitlementRow *ent,
			   AccountSet *set, RcResult *r, const char *reason)
{
	Account    *acct = accounts_get(set, &ev->user_id);

	result_set(r, "applied", reason);
	json_member_uuid(&r->buf, "user_id", &ev->user_id);
	if (existing != NULL && memcmp(&existing->user_id, &ev->user_id, UUID_LEN) != 0)
		json_member_uuid(&r->buf, "moved_from", &existing->user_id);
	result_entitlement(r, ent, acct);
	record_event(ev, &ev->user_id, r);
}

/*
 * An event older than the subscription's last one (the accounts are
 * locked).  A purchase newer than what set the product (a status event seen
 * first, an upgrade's RENEWAL delivered after a later CANCELLATION) sets the
 * product, plan and end, as it would have in order; any purchase records its
 * transaction.  A status event newer than what set the status (an extension
 * delivered before an older cancellation) sets the status.  Else nothing
 * changes: "stale_event".
 */
static void
apply_older_subscription_event(const RcEvent *ev, const StoreTxn *txn, const char *key,
							   const Product *product, const EntitlementChange *change,
							   const EntitlementRow *existing, AccountSet *set, RcResult *r)
{
	Account    *owner = accounts_get(set, &existing->user_id);
	Datum		args[9];
	char		nulls[] = "         ";
	EntitlementRow ent;

	if (is_purchase(ev->type))
		purchase_record_subscription(&existing->user_id, txn, existing->id, owner);
	if (older_status_applies(ev, change, existing))
	{
		args[0] = Int64GetDatum(existing->id);
		args[1] = CStringGetTextDatum(change->status);
		args[2] = spi_text_arg(change->status_reason, &nulls[2]);
		args[3] = TimestampTzGetDatum(ev->event_at);
		spi_exec(&older_status_update, args, nulls);
		entitlement_find(RC_SOURCE, key, ev->transaction_id, &ent);
		accounts_save(set, true);
		result_applied(ev, NULL, &ent, set, r, "older_status");
		return;
	}
	if (!is_purchase(ev->type) || memcmp(&existing->user_id, &ev->user_id, UUID_LEN) != 0 ||
		product_set_at(existing) >= ev->event_at)
	{
		accounts_save(set, false);
		result_set(r, "ignored", "stale_event");
		json_member_int(&r->buf, "entitlement_id", existing->id);
		return;
	}
	args[0] = Int64GetDatum(existing->id);
	args[1] = CStringGetTextDatum(ev->product_id);
	args[2] = CStringGetTextDatum(product->plan);
	args[3] = CStringGetTextDatum(ev->transaction_id);
	args[4] = TimestampTzGetDatum(ev->purchased_at);
	nulls[4] = ev->has_purchased_at ? ' ' : 'n';
	args[5] = spi_text_arg(ev->period_type, &nulls[5]);
	args[6] = BoolGetDatum(entitlement_status_gives_access(existing->status) &&
						   existing->has_expires_at && ev->has_expiration &&
						   strcmp(existing->product_id, ev->product_id) != 0);
	args[7] = TimestampTzGetDatum(ev->expiration_at);
	args[8] = TimestampTzGetDatum(ev->event_at);
	spi_exec(&older_purchase_update, args, nulls);
	entitlement_find(RC_SOURCE, key, ev->transaction_id, &ent);
	json_member_int(&r->buf, "confirmed_claims", claims_confirm(&ev->user_id, txn));
	accounts_save(set, true);
	result_applied(ev, NULL, &ent, set, r, "older_purchase");
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

	txn_from_event(ev, &txn);
	if (purchase_find(RC_SOURCE, ev->transaction_id, &prior))
		purchase_check_kind(&prior, RC_SOURCE, ev->transaction_id, "subscription");
	subscription_change(ev, &change);
	/* a temporary grant is keyed by its own transaction: the purchase that follows has its own */
	key = ev->type == RC_TEMPORARY_ENTITLEMENT_GRANT || ev->original_transaction_id == NULL ?
		ev->transaction_id : ev->original_transaction_id;

	found = entitlement_find(RC_SOURCE, key, ev->transaction_id, &existing);
	/* a stale purchase still records its transaction, a stale status may still apply, under the locks */
	if (found && !is_purchase(ev->type) && subscription_event_is_stale(ev, &existing) &&
		!older_status_applies(ev, &change, &existing))
	{
		result_set(r, "ignored", "stale_event");
		json_member_int(&r->buf, "entitlement_id", existing.id);
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
	if (found && subscription_event_is_stale(ev, &existing))
	{
		apply_older_subscription_event(ev, &txn, key, product, &change, &existing, &set, r);
		return;
	}
	/* the upgrade already renewed into the new product: nothing is pending */
	if (found && ev->type == RC_PRODUCT_CHANGE && ev->new_product_id != NULL &&
		strcmp(existing.product_id, ev->new_product_id) == 0)
		change.next_product_id = NULL;
	/* no purchase seen yet: the newest status event names the product and end */
	if (found && !is_purchase(ev->type) && product_set_at(&existing) == DT_NOBEGIN)
	{
		change.keep_product = false;
		change.keep_expiry = !ev->has_expiration;
	}

	entitlement_write(&ev->user_id, found ? &existing : NULL, &txn, key, product, &change, &ent);
	set_event_clocks(ev, &change, found, ent.id);
	if (is_purchase(ev->type))
		json_member_int(&r->buf, "confirmed_claims", claims_confirm(&ev->user_id, &txn));
	accounts_save(&set, true);
	if (is_purchase(ev->type))
		purchase_record_subscription(&ev->user_id, &txn, ent.id, accounts_get(&set, &ev->user_id));
	result_applied(ev, found ? &existing : NULL, &ent, &set, r, NULL);
}

static void
result_balance(RcResult *r, const Account *acct)
{
	int64		remaining;

	json_member_uuid(&r->buf, "user_id", &acct->user_id);
	json_member_int(&r->buf, "balance", acct->balance);
	if (account_daily_remaining(acct, &remaining))
		json_member_int(&r->buf, "daily_remaining", remaining);
	else
		json_member_str(&r->buf, "daily_remaining", NULL);
}

/*
 * Whether a pack's refund state comes from a later refund event: a later
 * store time, or the same time and a reversal (which follows its refund).
 */
static bool
pack_event_is_stale(const RcEvent *ev, const PurchaseRow *prior)
{
	if (!prior->has_last_event_at || prior->last_event_at < ev->event_at)
		return false;
	if (prior->last_event_at > ev->event_at)
		return true;
	return is_refund(ev) && prior->refund_state != NULL && strcmp(prior->refund_state, "reversed") == 0;
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
				json_member_int(&r->buf, "entry_id", prior.entry_id);
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
			if (pack_event_is_stale(ev, &prior))
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
		json_member_int(&r->buf, "entry_id", entry.id);
		json_member_int(&r->buf, "credits", entry.amount);
	}
	else if (!found)
	{
		/* the refund (or its reversal) came first: the purchase will credit nothing (or credit) */
		pack_refund_tombstone(&acct->user_id, &txn, is_refund(ev) ? "refunded" : "reversed");
		result_set(r, "applied", is_refund(ev) ? "refund_before_purchase" : "reversal_before_purchase");
		json_member_int(&r->buf, "clawed_back", 0);
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
			json_member_int(&r->buf, "entry_id", entry_id);
		else
			json_member_str(&r->buf, "entry_id", NULL);
		json_member_int(&r->buf, "credits", credits);
		json_member_int(&r->buf, "clawed_back", clawed);
		json_member_int(&r->buf, "not_recovered", credits - clawed);
	}
	else if (purchase_is_refunded(&prior))
	{
		int64		entry_id;
		int64		given = pack_give_back(acct, &txn, &prior, &entry_id);

		result_set(r, "applied", NULL);
		if (entry_id)
			json_member_int(&r->buf, "entry_id", entry_id);
		else
			json_member_str(&r->buf, "entry_id", NULL);
		json_member_int(&r->buf, "given_back", given);
	}
	else
	{
		/* nothing to reverse yet: remember it, so an older refund is stale */
		purchase_note_refund_event(&txn, "reversed");
		result_set(r, "applied", "not_refunded");
		json_member_int(&r->buf, "given_back", 0);
	}
	account_save(acct);
	result_balance(r, acct);
	record_event(ev, &acct->user_id, r);
}

/* The account uuids of the ids that are not anonymous. */
static pg_uuid_t *
known_uuids(const RcIds *ids, const char *field)
{
	pg_uuid_t  *out = palloc(sizeof(pg_uuid_t) * Max(ids->nknown, 1));

	for (int i = 0; i < ids->nknown; i++)
		user_uuid_from_text(ids->known[i], field, &out[i]);
	return out;
}

/*
 * TRANSFER: the store moved the subscriptions of some app users to another.
 * Anonymous ids on either side are linked to the receiving user (the kept
 * events that waited for them are applied after); the subscriptions of the
 * users we know move.
 */
static void
apply_transfer(const RcEvent *ev, RcResult *r, StringInfo duplicate)
{
	pg_uuid_t  *from = known_uuids(&ev->from, "event.transferred_from");
	bool		has_to = ev->to.nknown > 0;
	pg_uuid_t	to;
	int			nanon;
	const char **anon = anonymous_ids(ev, &nanon);
	int64		linked = 0;
	pg_uuid_t  *owners;
	int			nowners;
	pg_uuid_t  *ids;
	AccountSet	set;
	int			moved = 0;

	if (has_to)
	{
		user_uuid_from_text(ev->to.known[0], "event.transferred_to", &to);
		linked = link_anonymous(anon, nanon, &to, ev->id, true);
	}
	if (!store_owners_of(from, ev->from.nknown, has_to ? &to : NULL, &owners, &nowners))
	{
		if (!has_to || nanon == 0)
		{
			result_set(r, "ignored", "nothing_to_transfer");
			return;
		}
		result_set(r, "applied", "anonymous_ids_linked");
		json_member_uuid(&r->buf, "user_id", &to);
		json_member_int(&r->buf, "linked", linked);
		json_member_int(&r->buf, "moved", 0);
		record_event(ev, &to, r);
		return;
	}
	ids = palloc(sizeof(pg_uuid_t) * (nowners + 1));
	memcpy(ids, owners, sizeof(pg_uuid_t) * nowners);
	if (has_to)
		ids[nowners] = to;
	accounts_lock(&set, ids, nowners + (has_to ? 1 : 0));
	if (already_applied(ev, r, duplicate))
	{
		accounts_save(&set, false);
		return;
	}
	/* the owners again, under the locks */
	store_owners_of(from, ev->from.nknown, has_to ? &to : NULL, &owners, &nowners);
	for (int i = 0; i < nowners; i++)
	{
		if (accounts_get(&set, &owners[i]) == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("a subscription moved during the transfer"),
					 errdetail("{\"event_id\": %s}", json_quote(ev->id)),
					 errhint("Deliver the event again.")));
		moved += entitlement_move_all(&owners[i], has_to ? &to : NULL, ev->event_at, ev->id);
	}
	accounts_save(&set, true);

	result_set(r, "applied", has_to ? NULL : "transferred_to_unknown_user");
	json_member_uuid(&r->buf, "user_id", has_to ? &to : NULL);
	appendStringInfoString(&r->buf, ", \"from\": [");
	for (int i = 0; i < nowners; i++)
		appendStringInfo(&r->buf, "%s%s", i ? ", " : "", json_quote(uuid_text(&owners[i])));
	appendStringInfoChar(&r->buf, ']');
	json_member_int(&r->buf, "moved", moved);
	if (linked > 0)
		json_member_int(&r->buf, "linked", linked);
	if (has_to)
		json_member_str(&r->buf, "plan", accounts_get(&set, &to)->plan);
	record_event(ev, has_to ? &to : NULL, r);
}

/* SUBSCRIBER_ALIAS: the user's anonymous ids are linked (done by the caller). */
static void
apply_alias(const RcEvent *ev, RcResult *r)
{
	result_set(r, "applied", NULL);
	json_member_uuid(&r->buf, "user_id", &ev->user_id);
	json_member_int(&r->buf, "linked", ev->linked);
	record_event(ev, &ev->user_id, r);
}

/* An event of a type that is applied: who, then what, then apply it or say why not. */
static void
apply_known_type(RcEvent *ev, RcResult *r, StringInfo duplicate)
{
	bool		has_user = ev->type != RC_TRANSFER && resolve_user(ev);
	Product		product;
	const char *missing;

	if (sandbox_refused(ev, has_user))
		result_set(r, "ignored", "sandbox");
	else if (ev->type == RC_TRANSFER)
		apply_transfer(ev, r, duplicate);
	else if (!has_user)
		result_set(r, "ignored", "anonymous_user");
	else
	{
		ev->linked = link_anonymous(ev->ids.anon, ev->ids.nanon, &ev->user_id, ev->id, false);
		if (ev->type == RC_SUBSCRIBER_ALIAS)
		{
			apply_alias(ev, r);
			return;
		}
		missing = product_for(ev, &product);
		if (missing != NULL)
		{
			result_set(r, "ignored", missing);
			json_member_str(&r->buf, "product_id", ev->product_id);
			json_member_uuid(&r->buf, "user_id", &ev->user_id);
		}
		else if (product.plan == NULL)
			apply_pack_event(ev, &product, r, duplicate);
		else
			apply_subscription_event(ev, &product, r, duplicate);
		if (ev->linked > 0)
			json_member_int(&r->buf, "linked", ev->linked);
	}
}

/* The first result of a duplicate delivery, marked as a duplicate. */
static char *
duplicate_text(const char *first)
{
	Datum		a = DirectFunctionCall1(jsonb_in, CStringGetDatum(first));
	Datum		mark = DirectFunctionCall1(jsonb_in,
										   CStringGetDatum("{\"status\": \"duplicate\", \"reason\": \"event already applied\"}"));

	return DatumGetCString(DirectFunctionCall1(jsonb_out, DirectFunctionCall2(jsonb_concat, a, mark)));
}

/*
 * Applies one body (inside the caller's SPI connection) and returns the
 * answer as JSON text.  An event not applied is kept; one applied or seen
 * before is no longer kept.  replay_kept: then applies the kept events that
 * waited for the anonymous ids it linked.
 */
static char *
rc_receive(Jsonb *payload, bool replay_kept, bool *applied, bool *kept)
{
	RcEvent		ev;
	RcResult	r;
	StringInfoData duplicate;
	JsonbContainer *event = parse_envelope(payload, &ev);

	result_init(&r, &ev);
	initStringInfo(&duplicate);
	parse_time(event, &ev);
	parse_ids(event, &ev);
	if (ev.kept_reason == NULL && ev.type != RC_TRANSFER && ev.type != RC_SUBSCRIBER_ALIAS)
		parse_fields(event, &ev);
	lock_app_user_ids(&ev);

	if (already_applied(&ev, &r, &duplicate))
		;
	else if (ev.kept_reason != NULL)
		result_set(&r, "ignored", ev.kept_reason);
	else
		apply_known_type(&ev, &r, &duplicate);
	if (ev.clamped)
	{
		json_member_time(&r.buf, "event_timestamp_sent", true, ev.sent_at);
		json_member_time(&r.buf, "event_timestamp_used", true, ev.event_at);
	}

	*applied = strcmp(r.status, "applied") == 0;
	*kept = strcmp(r.status, "ignored") == 0;
	if (*kept)
	{
		keep_event(&ev, payload, r.reason);
		appendStringInfoString(&r.buf, ", \"kept\": true");
	}
	else
		webhook_forget(RC_SOURCE, ev.id);
	if (*applied && replay_kept)
		apply_kept_after(&ev, &r);
	if (duplicate.len > 0)
		return duplicate_text(duplicate.data);
	return result_text(&r);
}

/* webhooks.c: a kept RevenueCat event, applied again by replay_webhook_events(). */
char *
revenuecat_apply_kept(const char *payload, bool *applied, bool *kept)
{
	Jsonb	   *body = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(payload)));

	return rc_receive(body, false, applied, kept);
}

/*
 * credits.apply_revenuecat_event(payload jsonb) returns jsonb
 *
 * Applies one RevenueCat webhook body and says what it did:
 *   {"status": "applied" | "duplicate" | "ignored", "reason": ..., "event_id": ...,
 *    "type": ..., "user_id": ..., "kept": true (ignored: kept to apply later), ...}
 */
PG_FUNCTION_INFO_V1(credits_apply_revenuecat_event);
Datum
credits_apply_revenuecat_event(PG_FUNCTION_ARGS)
{
	Jsonb	   *payload;
	bool		applied;
	bool		kept;
	char	   *answer;
	char	   *out;

	refuse_client_request("credits.apply_revenuecat_event");
	require_arg(fcinfo, 0, "payload");
	payload = PG_GETARG_JSONB_P(0);

	SPI_connect();
	answer = rc_receive(payload, true, &applied, &kept);
	out = SPI_palloc(strlen(answer) + 1);
	strcpy(out, answer);
	SPI_finish();
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(out)));
}
