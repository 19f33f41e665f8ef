/*
 * webhooks.h
 *		Stripe and Creem webhooks: what the provider files (webhook_stripe.c,
 *		webhook_creem.c) hand to the shared part (webhooks.c), which checks
 *		signatures and applies events through purchases.c.
 */
#ifndef CREDITS_WEBHOOKS_H
#define CREDITS_WEBHOOKS_H

#include "purchases.h"

/* What an event asks for, once its provider's fields are read. */
typedef enum WebhookAction
{
	WH_NONE,					/* nothing we apply: ignore_reason says why */
	WH_CHECKOUT,				/* a paid checkout: a pack, or a subscription's start (the product decides) */
	WH_SUBSCRIPTION,			/* a subscription's new state */
	WH_REFUND					/* a refund or a dispute of a payment */
} WebhookAction;

/* One provider event, in the terms of credits. */
typedef struct WebhookEvent
{
	const char *provider;		/* stripe | creem: the source of its purchases and entitlements */
	const char *id;
	const char *type;
	TimestampTz event_at;		/* the provider's time of the event: orders deliveries */
	WebhookAction action;
	const char *ignore_reason;	/* WH_NONE */
	bool		has_user;
	pg_uuid_t	user_id;		/* from the checkout's metadata.user_id and the like */
	const char *product_id;		/* NULL: a subscription event keeps its entitlement's */
	const char *transaction_id; /* the payment: a pack's key, what a refund refunds */
	const char *subscription_id;	/* the entitlement's key */
	const char *status;			/* WH_SUBSCRIPTION: active, cancelled, billing_issue, expired */
	bool		has_expires_at;
	TimestampTz expires_at;		/* end of the paid period */
	const char *environment;	/* live | test (Stripe's livemode, Creem's mode) */
} WebhookEvent;


/* webhook_signatures.c: 28000 unless the header signs the raw body with the provider's secret */
extern const char *webhook_secret(const char *provider);
extern void webhook_check_stripe(const char *secret, const char *payload, const char *header);
extern void webhook_check_creem(const char *secret, const char *payload, const char *header);

/* The provider parsers (webhook_stripe.c, webhook_creem.c): a verified payload -> an event. */
extern void stripe_parse(JsonbContainer *root, WebhookEvent *ev);
extern void creem_parse(JsonbContainer *root, WebhookEvent *ev);

/* Payload reading for the parsers (22023 naming the field when a value has the wrong type). */
extern JsonbValue *webhook_get(JsonbContainer *obj, const char *path);
extern JsonbContainer *webhook_object(JsonbContainer *obj, const char *path, bool required);
extern const char *webhook_string(JsonbContainer *obj, const char *path, bool required);
extern const char *webhook_id_of(JsonbContainer *obj, const char *path);
extern bool webhook_bool(JsonbContainer *obj, const char *path);
extern bool webhook_unix_time(JsonbContainer *obj, const char *path, int64 units_per_second,
							  TimestampTz *out);
extern bool webhook_iso_time(JsonbContainer *obj, const char *path, TimestampTz *out);
extern void webhook_user(WebhookEvent *ev, JsonbContainer *obj, const char *path);
pg_noreturn extern void webhook_malformed(const char *field, const char *problem);

/* An event kept in credits.webhook_events (not applied), with why. */
typedef struct KeptEvent
{
	const char *provider;
	const char *event_id;
	const char *event_type;
	TimestampTz event_at;
	const char *subscription_id;	/* NULL: none */
	const char *transaction_id; /* NULL: none */
	const char *reason;
	const char *payload;
	Datum		app_user_ids;	/* text[] it is found again by (RevenueCat); 0: none */
} KeptEvent;

/* webhooks.c: keeps an event (again: counts the try, takes the new reason), or forgets it once applied. */
extern void webhook_keep(const KeptEvent *kept);
extern void webhook_forget(const char *provider, const char *event_id);

/* revenuecat.c: a kept RevenueCat event applied again (inside an SPI connection); returns the answer. */
extern char *revenuecat_apply_kept(const char *payload, bool *applied, bool *kept);

#endif							/* CREDITS_WEBHOOKS_H */
