/*
 * webhooks.c
 *		credits.apply_stripe_event(payload text, signature_header text) and
 *		credits.apply_creem_event(payload text, signature text): provider
 *		webhooks, signature checked in the database, applied exactly once, in
 *		any order; credits.replay_webhook_events() applies the events set
 *		aside.
 *
 * The signature is checked first (webhook_signatures.c: 28000, counted in
 * credits.stats, nothing written), then the body is parsed by its
 * provider's file (webhook_stripe.c, webhook_creem.c; 22023 naming the
 * field when it is not the provider's).
 *
 * Applying: the provider file turns the body into a WebhookEvent (a paid
 * checkout, a subscription's new state, a refund); purchases.c does the
 * rest, as for RevenueCat.  Exactly once: an applied event is recorded in
 * credits.store_events keyed by (provider, event id), and a payment in
 * credits.purchases keyed by (provider, transaction id), so two events for
 * one payment credit once.  Any order: a subscription's entitlement keeps
 * the provider time of its newest event (last_event_at); an older event is
 * ignored as stale.  Events that cannot be applied yet (unknown type,
 * unmapped product, no user, a refund before its purchase) are answered
 * "ignored" and kept in credits.webhook_events; an event that applies
 * replays the kept events of the same subscription or payment, and
 * replay_webhook_events() replays all of them (after a product mapping).
 *
 * Locks: a transaction-level advisory lock per subscription and payment the
 * event names (lock_subjects), then the account rows of the users concerned,
 * in user_id order (a subscription that changes hands locks both), then
 * purchases.c's rows.  A kept event replayed after another event may name
 * one more subject, locked after that event's accounts: two such replays
 * crossing can deadlock (40P01), and the provider's retry applies them.
 */
#include "webhooks.h"

#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "common/jsonapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"

/* First key of the advisory locks on a subscription or payment ("cred"). */
#define SUBJECT_LOCK_CLASS 0x63726564

typedef void (*SignatureCheck) (const char *secret, const char *payload, const char *signature);
typedef void (*EventParser) (JsonbContainer *root, WebhookEvent *ev);

typedef struct Provider
{
	const char *name;
	const char *header;			/* the HTTP header that carries the signature */
	SignatureCheck check;
	EventParser parse;
} Provider;

static const Provider providers[] = {
	{"stripe", "Stripe-Signature", webhook_check_stripe, stripe_parse},
	{"creem", "creem-signature", webhook_check_creem, creem_parse},
};

/* What a call answers: built while applying, in the SPI context. */
typedef struct WhResult
{
	StringInfoData buf;			/* members after event_id and type */
	const char *status;			/* applied | duplicate | ignored */
	const char *reason;
	bool		keep;			/* ignored for now: kept in credits.webhook_events */
	StringInfoData first;		/* duplicate: the result recorded for the event */
	StringInfoData replayed;	/* results of kept events this one unblocked */
} WhResult;

/* ---- statements ---- */

static CachedStatement event_seen = {
	"SELECT result::text FROM credits.store_events WHERE source = $1 AND event_id = $2",
	2, {TEXTOID, TEXTOID}
};

static CachedStatement event_record = {
	"INSERT INTO credits.store_events (source, event_id, event_type, user_id, event_at, result)"
	" VALUES ($1, $2, $3, $4, $5, $6)",
	6, {TEXTOID, TEXTOID, TEXTOID, UUIDOID, TIMESTAMPTZOID, JSONBOID}
};

static CachedStatement entry_amount = {
	"SELECT amount FROM credits.ledger WHERE id = $1", 1, {INT8OID}
};

static CachedStatement kept_insert = {
	"INSERT INTO credits.webhook_events AS k (provider, event_id, event_type, event_at,"
	"   subscription_id, transaction_id, reason, payload, app_user_ids)"
	" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
	" ON CONFLICT (provider, event_id) DO UPDATE SET reason = excluded.reason,"
	"   app_user_ids = excluded.app_user_ids, tries = k.tries + 1, last_tried_at = now()",
	9, {TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTARRAYOID}
};

static CachedStatement kept_delete = {
	"DELETE FROM credits.webhook_events WHERE provider = $1 AND event_id = $2",
	2, {TEXTOID, TEXTOID}
};

static CachedStatement kept_related = {
	"SELECT event_id, payload FROM credits.webhook_events"
	" WHERE provider = $1 AND event_id <> $2 AND (subscription_id = $3 OR transaction_id = $4)"
	" ORDER BY event_at, event_id",
	4, {TEXTOID, TEXTOID, TEXTOID, TEXTOID}
};

void
webhook_keep(const KeptEvent *kept)
{
	Datum		args[9];
	char		nulls[] = "         ";

	args[0] = CStringGetTextDatum(kept->provider);
	args[1] = CStringGetTextDatum(kept->event_id);
	args[2] = CStringGetTextDatum(kept->event_type);
	args[3] = TimestampTzGetDatum(kept->event_at);
	args[4] = spi_text_arg(kept->subscription_id, &nulls[4]);
	args[5] = spi_text_arg(kept->transaction_id, &nulls[5]);
	args[6] = CStringGetTextDatum(kept->reason);
	args[7] = CStringGetTextDatum(kept->payload);
	args[8] = kept->app_user_ids;
	nulls[8] = kept->app_user_ids ? ' ' : 'n';
	spi_exec(&kept_insert, args, nulls);
}

void
webhook_forget(const char *provider, const char *event_id)
{
	Datum		args[2] = {CStringGetTextDatum(provider), CStringGetTextDatum(event_id)};

	spi_exec(&kept_delete, args, NULL);
}

static CachedStatement kept_all = {
	"SELECT provider, payload FROM credits.webhook_events"
	" WHERE $1::text IS NULL OR provider = $1 ORDER BY event_at, event_id",
	1, {TEXTOID}
};

/* ---- the body ---- */

/* The body as jsonb; 22023 when it is not a JSON object. */
static JsonbContainer *
payload_root(const char *payload)
{
	Jsonb	   *jb;

	if (pg_parse_json(compat_json_lexer(payload), &nullSemAction) != JSON_SUCCESS)
		webhook_malformed("payload", "is not valid JSON");
	jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(payload)));
	if (!JB_ROOT_IS_OBJECT(jb) || JB_ROOT_IS_SCALAR(jb))
		webhook_malformed("payload", "must be a JSON object");
	return &jb->root;
}

/* ---- results ---- */

static void
result_init(WhResult *r)
{
	memset(r, 0, sizeof(*r));
	initStringInfo(&r->buf);
	initStringInfo(&r->first);
	initStringInfo(&r->replayed);
}

static void
result_set(WhResult *r, const char *status, const char *reason)
{
	r->status = status;
	r->reason = reason;
}

/* Ignored; keep: for a reason a later event or a product mapping can change. */
static void
result_ignore(WhResult *r, const char *reason, bool keep)
{
	result_set(r, "ignored", reason);
	r->keep = keep;
}

static void
result_balance(WhResult *r, const Account *acct)
{
	int64		remaining;

	json_member_uuid(&r->buf, "user_id", &acct->user_id);
	json_member_int(&r->buf, "balance", acct->balance);
	if (account_daily_remaining(acct, &remaining))
		json_member_int(&r->buf, "daily_remaining", remaining);
	else
		json_member_str(&r->buf, "daily_remaining", NULL);
}

/* The JSON object the call returns (a duplicate: the first result, marked). */
static char *
result_text(const WebhookEvent *ev, WhResult *r)
{
	StringInfoData out;

	initStringInfo(&out);
	if (r->first.len > 0)
	{
		/* drop the closing brace of the recorded result */
		appendBinaryStringInfo(&out, r->first.data, r->first.len - 1);
		appendStringInfoString(&out, ", \"status\": \"duplicate\", \"reason\": \"event already applied\"}");
		return out.data;
	}
	appendStringInfo(&out, "{\"provider\": %s, \"event_id\": %s, \"type\": %s%s, \"status\": %s, \"reason\": %s",
					 json_quote(ev->provider), json_quote(ev->id), json_quote(ev->type), r->buf.data,
					 json_quote(r->status), r->reason ? json_quote(r->reason) : "null");
	if (r->replayed.len > 0)
		appendStringInfo(&out, ", \"replayed\": [%s]", r->replayed.data);
	appendStringInfoChar(&out, '}');
	return out.data;
}

/* ---- exactly once ---- */

/* The recorded result of an event already applied, into r->first; false when new. */
static bool
already_applied(const WebhookEvent *ev, WhResult *r)
{
	Datum		args[2] = {CStringGetTextDatum(ev->provider), CStringGetTextDatum(ev->id)};

	if (spi_exec(&event_seen, args, NULL) == 0)
		return false;
	resetStringInfo(&r->first);
	appendStringInfoString(&r->first, spi_get_cstring(0, 1));
	result_set(r, "duplicate", "event already applied");
	return true;
}

static void
record_event(const WebhookEvent *ev, const pg_uuid_t *user_id, WhResult *r)
{
	Datum		args[6];
	char		nulls[] = "      ";

	args[0] = CStringGetTextDatum(ev->provider);
	args[1] = CStringGetTextDatum(ev->id);
	args[2] = CStringGetTextDatum(ev->type);
	args[3] = UUIDPGetDatum(user_id);
	args[4] = TimestampTzGetDatum(ev->event_at);
	args[5] = DirectFunctionCall1(jsonb_in, CStringGetDatum(result_text(ev, r)));
	spi_exec(&event_record, args, nulls);
}

/* ---- applying ---- */

static void
event_txn(const WebhookEvent *ev, const char *product_id, StoreTxn *txn)
{
	memset(txn, 0, sizeof(*txn));
	txn->source = ev->provider;
	txn->transaction_id = ev->transaction_id ? ev->transaction_id : ev->subscription_id;
	txn->original_transaction_id = ev->subscription_id;
	txn->product_id = product_id;
	/* a payment: a checkout, or a subscription period paid */
	txn->has_purchased_at = ev->action == WH_CHECKOUT || ev->transaction_id != NULL;
	txn->purchased_at = ev->event_at;
	txn->event_at = ev->event_at;
	txn->event_id = ev->id;
	txn->store = ev->provider;
	txn->environment = ev->environment;
}

/* What the event does to the subscription's entitlement. */
static void
subscription_change(const WebhookEvent *ev, EntitlementChange *c)
{
	TimestampTz now = GetCurrentTransactionStartTimestamp();

	memset(c, 0, sizeof(*c));
	c->status = ev->status;
	c->has_expires_at = ev->has_expires_at;
	c->expires_at = ev->expires_at;
	/* no period end in the event: a known subscription keeps its own, a new one has no end yet */
	c->keep_expiry = !ev->has_expires_at;
	if (strcmp(ev->status, "expired") == 0 || strcmp(ev->status, "refunded") == 0)
	{
		/* access ends now, or when the period ended if that was earlier */
		c->has_expires_at = true;
		c->expires_at = ev->has_expires_at && ev->expires_at < now ? ev->expires_at : now;
		c->keep_expiry = false;
	}
}

static void
moved_during_call(const WebhookEvent *ev)
{
	ereport(ERROR,
			(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
			 errmsg("the subscription moved to another user during the call"),
			 errdetail_internal("{\"provider\": %s, \"event_id\": %s}",
								json_quote(ev->provider), json_quote(ev->id)),
			 errhint("Deliver the event again.")));
}

/*
 * The plan product the event puts the subscription on: the event's own, or,
 * when the event names none or an unmapped one, the entitlement's (an end,
 * a cancel or a payment problem does not depend on the price).  False when
 * there is none: an unmapped price must not start or renew access.
 */
static bool
subscription_product(const WebhookEvent *ev, const EntitlementRow *existing, Product *product)
{
	if (ev->product_id != NULL && product_find(ev->product_id, ev->provider, product) &&
		product->plan != NULL)
		return true;
	if (existing == NULL || (ev->product_id != NULL && strcmp(ev->status, "active") == 0))
		return false;
	return product_find(existing->product_id, ev->provider, product) && product->plan != NULL;
}

/* A subscription starts or changes: its entitlement takes the newest event's state. */
static void
apply_subscription(const WebhookEvent *ev, WhResult *r)
{
	EntitlementRow existing;
	EntitlementRow ent;
	bool		found = entitlement_find(ev->provider, ev->subscription_id, NULL, &existing);
	Product		product;
	pg_uuid_t	ids[2];
	AccountSet	set;
	StoreTxn	txn;
	EntitlementChange change;
	Account    *acct;

	json_member_str(&r->buf, "subscription_id", ev->subscription_id);
	if (!ev->has_user && !found)
	{
		result_ignore(r, "unknown_user", true);
		return;
	}
	if (!subscription_product(ev, found ? &existing : NULL, &product))
	{
		json_member_str(&r->buf, "product_id", ev->product_id);
		result_ignore(r, "unknown_product", true);
		return;
	}
	if (found && existing.last_event_at > ev->event_at)
	{
		result_ignore(r, "stale_event", false);
		return;
	}

	ids[0] = ev->has_user ? ev->user_id : existing.user_id;
	ids[1] = found ? existing.user_id : ids[0];
	accounts_lock(&set, ids, 2);
	if (already_applied(ev, r))
	{
		accounts_save(&set, false);
		return;
	}
	/* under the locks: a concurrent event may have moved or advanced it */
	found = entitlement_find(ev->provider, ev->subscription_id, NULL, &existing);
	if (found && accounts_get(&set, &existing.user_id) == NULL)
		moved_during_call(ev);
	if (found && existing.last_event_at > ev->event_at)
	{
		accounts_save(&set, false);
		result_ignore(r, "stale_event", false);
		return;
	}

	event_txn(ev, product.product_id, &txn);
	subscription_change(ev, &change);
	entitlement_write(&ids[0], found ? &existing : NULL, &txn, ev->subscription_id, &product,
					  &change, &ent);
	if (ev->action == WH_CHECKOUT)
		json_member_int(&r->buf, "confirmed_claims", claims_confirm(&ids[0], &txn));
	accounts_save(&set, true);
	acct = accounts_get(&set, &ids[0]);
	if (txn.has_purchased_at)
		purchase_record_subscription(&ids[0], &txn, ent.id, acct);

	result_set(r, "applied", NULL);
	json_member_uuid(&r->buf, "user_id", &ids[0]);
	if (found && memcmp(&existing.user_id, &ids[0], UUID_LEN) != 0)
		json_member_uuid(&r->buf, "moved_from", &existing.user_id);
	json_member_int(&r->buf, "entitlement_id", ent.id);
	json_member_str(&r->buf, "entitlement_status", ent.status);
	json_member_str(&r->buf, "entitlement_plan", ent.plan);
	json_member_time(&r->buf, "expires_at", ent.has_expires_at, ent.expires_at);
	json_member_str(&r->buf, "plan", acct->plan);
	record_event(ev, &ids[0], r);
}

/* A pack bought: credited once per payment, whichever event reports it. */
static void
apply_pack(const WebhookEvent *ev, const Product *product, WhResult *r)
{
	Account		acct;
	PurchaseRow prior;
	StoreTxn	txn;
	LedgerEntry entry;

	json_member_str(&r->buf, "transaction_id", ev->transaction_id);
	if (!ev->has_user)
	{
		result_ignore(r, "unknown_user", true);
		return;
	}
	account_lock(&ev->user_id, &acct);
	if (already_applied(ev, r))
	{
		account_save(&acct);
		return;
	}
	if (purchase_find(ev->provider, ev->transaction_id, &prior))
	{
		account_save(&acct);
		if (prior.has_entry)
		{
			result_set(r, "duplicate", "transaction already applied");
			json_member_int(&r->buf, "entry_id", prior.entry_id);
		}
		else
			result_ignore(r, "refunded", false);
		return;
	}

	event_txn(ev, product->product_id, &txn);
	pack_credit(&acct, &txn, product, false, &entry);
	account_save(&acct);
	result_set(r, "applied", NULL);
	json_member_int(&r->buf, "entry_id", entry.id);
	json_member_int(&r->buf, "credits", entry.amount);
	result_balance(r, &acct);
	record_event(ev, &acct.user_id, r);
}

/* A pack refunded or disputed: what is left of its credits is clawed back. */
static void
refund_pack(const WebhookEvent *ev, const PurchaseRow *found, WhResult *r)
{
	Account		acct;
	PurchaseRow prior;
	StoreTxn	txn;
	int64		entry_id;
	int64		clawed;
	int64		credits = 0;

	account_lock(&found->user_id, &acct);
	if (already_applied(ev, r))
	{
		account_save(&acct);
		return;
	}
	/* under the lock: a concurrent refund (or the account's deletion) may have come first */
	if (!purchase_find(ev->provider, ev->transaction_id, &prior))
	{
		account_save(&acct);
		result_ignore(r, "unknown_purchase", true);
		return;
	}
	if (prior.refund_state != NULL && strcmp(prior.refund_state, "refunded") == 0)
	{
		account_save(&acct);
		result_ignore(r, "already_refunded", false);
		return;
	}
	event_txn(ev, prior.product_id, &txn);
	clawed = pack_claw_back(&acct, &txn, &prior, &entry_id);
	if (prior.has_entry)
	{
		Datum		args[1] = {Int64GetDatum(prior.entry_id)};

		if (spi_exec(&entry_amount, args, NULL) > 0)
			credits = spi_get_int64(0, 1);
	}
	account_save(&acct);

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
	result_balance(r, &acct);
	record_event(ev, &acct.user_id, r);
}

static void
apply_refund(const WebhookEvent *ev, WhResult *r)
{
	PurchaseRow prior;
	EntitlementRow ent;

	json_member_str(&r->buf, "transaction_id", ev->transaction_id);
	if (ev->transaction_id != NULL && purchase_find(ev->provider, ev->transaction_id, &prior) &&
		strcmp(prior.kind, "pack") == 0)
		refund_pack(ev, &prior, r);
	else if (ev->subscription_id != NULL &&
			 entitlement_find(ev->provider, ev->subscription_id, NULL, &ent))
	{
		/* a subscription payment refunded: its access ends now */
		WebhookEvent refund = *ev;

		refund.status = "refunded";
		refund.has_expires_at = false;
		apply_subscription(&refund, r);
	}
	else
		result_ignore(r, "unknown_purchase", true);
}

static void
apply_checkout(const WebhookEvent *ev, WhResult *r)
{
	Product		product;

	if (ev->product_id == NULL || !product_find(ev->product_id, ev->provider, &product))
	{
		json_member_str(&r->buf, "product_id", ev->product_id);
		result_ignore(r, "unknown_product", true);
	}
	else if (product.plan == NULL)
		apply_pack(ev, &product, r);
	else if (!ev->has_user)
		result_ignore(r, "unknown_user", true);
	else
	{
		/* a plan bought once is an entitlement keyed by its payment */
		WebhookEvent start = *ev;

		if (start.subscription_id == NULL)
			start.subscription_id = start.transaction_id;
		apply_subscription(&start, r);
	}
}

static void apply_event(const Provider *p, const WebhookEvent *ev, const char *payload,
						WhResult *r, bool replay_kept);

/*
 * After an event applied: the kept events of the same subscription or
 * payment, oldest first (a refund that came before its purchase, a renewal
 * that came before the checkout that names the user).
 */
static void
replay_related(const Provider *p, const WebhookEvent *ev, WhResult *r)
{
	Datum		args[4];
	char		nulls[] = "    ";
	uint64		n;
	char	  **payloads;

	args[0] = CStringGetTextDatum(ev->provider);
	args[1] = CStringGetTextDatum(ev->id);
	args[2] = spi_text_arg(ev->subscription_id, &nulls[2]);
	args[3] = spi_text_arg(ev->transaction_id, &nulls[3]);
	n = spi_exec(&kept_related, args, nulls);
	payloads = palloc(sizeof(char *) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
		payloads[i] = spi_get_cstring(i, 2);
	for (uint64 i = 0; i < n; i++)
	{
		WebhookEvent kept;
		WhResult	kr;

		p->parse(payload_root(payloads[i]), &kept);
		kept.provider = p->name;
		result_init(&kr);
		apply_event(p, &kept, payloads[i], &kr, false);
		appendStringInfo(&r->replayed, "%s%s", i ? ", " : "", result_text(&kept, &kr));
	}
}

static int32
subject_key(const char *provider, const char *subject)
{
	char	   *s = psprintf("%s:%s", provider, subject);

	return (int32) hash_bytes((const unsigned char *) s, strlen(s));
}

/*
 * Serializes the events of one subscription or payment: a transaction-level
 * advisory lock per subject (in key order), taken before any account lock.
 * So an event kept because its purchase (or its subscription's checkout) was
 * not committed yet is seen by that purchase's replay, or sees the purchase.
 */
static void
lock_subjects(const WebhookEvent *ev)
{
	int32		keys[2];
	int			n = 0;

	if (ev->subscription_id != NULL)
		keys[n++] = subject_key(ev->provider, ev->subscription_id);
	if (ev->transaction_id != NULL)
		keys[n++] = subject_key(ev->provider, ev->transaction_id);
	if (n == 2 && keys[0] > keys[1])
	{
		int32		k = keys[0];

		keys[0] = keys[1];
		keys[1] = k;
	}
	for (int i = 0; i < n; i++)
		DirectFunctionCall2(pg_advisory_xact_lock_int4, Int32GetDatum(SUBJECT_LOCK_CLASS),
							Int32GetDatum(keys[i]));
}

/*
 * Applies one verified event and keeps it aside, or forgets it, by what it
 * answered; replay_kept: then replays what it unblocked.
 */
static void
apply_event(const Provider *p, const WebhookEvent *ev, const char *payload, WhResult *r,
			bool replay_kept)
{
	lock_subjects(ev);
	if (already_applied(ev, r))
		;
	else if (ev->action == WH_CHECKOUT)
		apply_checkout(ev, r);
	else if (ev->action == WH_SUBSCRIPTION)
		apply_subscription(ev, r);
	else if (ev->action == WH_REFUND)
		apply_refund(ev, r);
	else
		result_ignore(r, ev->ignore_reason, true);

	if (r->keep)
	{
		KeptEvent	kept = {ev->provider, ev->id, ev->type, ev->event_at, ev->subscription_id,
		ev->transaction_id, r->reason, payload, (Datum) 0};

		webhook_keep(&kept);
	}
	else
		webhook_forget(ev->provider, ev->id);
	if (replay_kept && strcmp(r->status, "applied") == 0)
		replay_related(p, ev, r);
}

/* ---- SQL ---- */

/* Verifies, parses and applies one delivery; returns the answer as jsonb. */
static Datum
receive(FunctionCallInfo fcinfo, const Provider *p)
{
	char	   *payload;
	char	   *signature;
	WebhookEvent ev;
	WhResult	r;
	char	   *answer;
	char	   *out;

	require_arg(fcinfo, 0, "payload");
	payload = text_to_cstring(PG_GETARG_TEXT_PP(0));
	signature = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));

	SPI_connect();
	p->check(webhook_secret(p->name), payload, signature);
	p->parse(payload_root(payload), &ev);
	ev.provider = p->name;
	result_init(&r);
	apply_event(p, &ev, payload, &r, true);
	answer = result_text(&ev, &r);
	out = SPI_palloc(strlen(answer) + 1);
	strcpy(out, answer);
	SPI_finish();
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(out)));
}

/*
 * credits.apply_stripe_event(payload text, signature_header text) returns jsonb
 * payload: the raw request body; signature_header: the Stripe-Signature header.
 */
PG_FUNCTION_INFO_V1(credits_apply_stripe_event);
Datum
credits_apply_stripe_event(PG_FUNCTION_ARGS)
{
	return receive(fcinfo, &providers[0]);
}

/*
 * credits.apply_creem_event(payload text, signature text) returns jsonb
 * payload: the raw request body; signature: the creem-signature header.
 */
PG_FUNCTION_INFO_V1(credits_apply_creem_event);
Datum
credits_apply_creem_event(PG_FUNCTION_ARGS)
{
	return receive(fcinfo, &providers[1]);
}

static const Provider *
provider_named(const char *name)
{
	for (size_t i = 0; i < lengthof(providers); i++)
	{
		if (strcmp(providers[i].name, name) == 0)
			return &providers[i];
	}
	elog(ERROR, "credits: unknown webhook provider \"%s\"", name);
	return NULL;
}

/*
 * credits.replay_webhook_events(provider text DEFAULT NULL) returns jsonb
 * Applies the kept events again, oldest first (their signatures were checked
 * when they arrived): {"replayed": n, "applied": n, "kept": n, "results": [...]}.
 */
PG_FUNCTION_INFO_V1(credits_replay_webhook_events);
Datum
credits_replay_webhook_events(PG_FUNCTION_ARGS)
{
	Datum		args[1];
	char		nulls[] = " ";
	uint64		n;
	char	  **names;
	char	  **payloads;
	int64		applied = 0;
	int64		kept = 0;
	StringInfoData results;
	char	   *out;

	args[0] = PG_ARGISNULL(0) ? (Datum) 0 : PG_GETARG_DATUM(0);
	nulls[0] = PG_ARGISNULL(0) ? 'n' : ' ';
	SPI_connect();
	n = spi_exec(&kept_all, args, nulls);
	names = palloc(sizeof(char *) * Max(n, 1));
	payloads = palloc(sizeof(char *) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
	{
		names[i] = spi_get_cstring(i, 1);
		payloads[i] = spi_get_cstring(i, 2);
	}
	initStringInfo(&results);
	for (uint64 i = 0; i < n; i++)
	{
		const Provider *p;
		WebhookEvent ev;
		WhResult	r;

		if (strcmp(names[i], "revenuecat") == 0)
		{
			bool		was_applied;
			bool		was_kept;
			char	   *answer = revenuecat_apply_kept(payloads[i], &was_applied, &was_kept);

			applied += was_applied;
			kept += was_kept;
			appendStringInfo(&results, "%s%s", i ? ", " : "", answer);
			continue;
		}
		p = provider_named(names[i]);
		p->parse(payload_root(payloads[i]), &ev);
		ev.provider = p->name;
		result_init(&r);
		apply_event(p, &ev, payloads[i], &r, false);
		applied += strcmp(r.status, "applied") == 0;
		kept += r.keep;
		appendStringInfo(&results, "%s%s", i ? ", " : "", result_text(&ev, &r));
	}
	out = SPI_palloc(results.len + 100);
	snprintf(out, results.len + 100, "{\"replayed\": " UINT64_FORMAT ", \"applied\": " INT64_FORMAT
			 ", \"kept\": " INT64_FORMAT ", \"results\": [%s]}", n, applied, kept, results.data);
	SPI_finish();
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(out)));
}
