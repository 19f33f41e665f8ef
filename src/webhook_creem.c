/*
 * webhook_creem.c
 *		Creem webhook bodies -> WebhookEvent (applied by webhooks.c).
 *
 * A body is {"id": "evt_...", "eventType": "...", "created_at": <ms>,
 * "object": {...}} (docs.creem.io, "Webhooks / Event Types"):
 *   checkout.completed         a paid checkout: a pack (keyed by its order
 *                              id) or a subscription's start (keyed by the
 *                              subscription id); the user is the checkout's
 *                              metadata.user_id, else its request_id
 *   subscription.active / .paid / .trialing / .update
 *                              access until current_period_end_date
 *   subscription.canceled      no renewal: access until the period ends
 *   subscription.paused        paused: access until the period ends
 *   subscription.expired       access ends
 *   refund.created / dispute.created
 *                              a pack's credits clawed back (its order), or
 *                              a subscription payment's access ended
 * Other event types are ignored (and kept for a later version).
 * Subscription events name no user unless the checkout's metadata carried
 * one: the subscription's entitlement knows it.  No locks.
 */
#include "webhooks.h"

/* Members of the event's object, by their path from the body (errors name it). */
#define OBJ "object."

static void
creem_checkout(JsonbContainer *root, WebhookEvent *ev)
{
	ev->action = WH_CHECKOUT;
	webhook_object(root, OBJ "metadata", false);
	webhook_user(ev, root, OBJ "metadata.user_id");
	webhook_user(ev, root, OBJ "request_id");
	ev->product_id = webhook_id_of(root, OBJ "product");
	if (ev->product_id == NULL)
		ev->product_id = webhook_string(root, OBJ "order.product", false);
	ev->transaction_id = webhook_id_of(root, OBJ "order");
	if (ev->transaction_id == NULL)
		ev->transaction_id = webhook_string(root, OBJ "id", true);
	ev->subscription_id = webhook_id_of(root, OBJ "subscription");
	ev->status = "active";
}

static void
creem_subscription(JsonbContainer *root, WebhookEvent *ev, const char *status)
{
	ev->action = WH_SUBSCRIPTION;
	ev->status = status;
	ev->subscription_id = webhook_string(root, OBJ "id", true);
	ev->product_id = webhook_id_of(root, OBJ "product");
	webhook_object(root, OBJ "metadata", false);
	webhook_user(ev, root, OBJ "metadata.user_id");
	ev->has_expires_at = webhook_iso_time(root, OBJ "current_period_end_date", &ev->expires_at);
	if (strcmp(ev->type, "subscription.paid") == 0)
		ev->transaction_id = webhook_string(root, OBJ "last_transaction_id", false);
}

static void
creem_refund(JsonbContainer *root, WebhookEvent *ev)
{
	ev->action = WH_REFUND;
	ev->transaction_id = webhook_id_of(root, OBJ "order");
	if (ev->transaction_id == NULL)
		ev->transaction_id = webhook_string(root, OBJ "transaction.order", false);
	ev->subscription_id = webhook_id_of(root, OBJ "subscription");
	if (ev->subscription_id == NULL)
		ev->subscription_id = webhook_string(root, OBJ "transaction.subscription", false);
	ev->product_id = webhook_string(root, OBJ "order.product", false);
	if (ev->transaction_id == NULL && ev->subscription_id == NULL)
		webhook_malformed(OBJ "order", "is missing");
}

void
creem_parse(JsonbContainer *root, WebhookEvent *ev)
{
	memset(ev, 0, sizeof(*ev));
	ev->provider = "creem";
	ev->id = webhook_string(root, "id", true);
	ev->type = webhook_string(root, "eventType", true);
	if (!webhook_unix_time(root, "created_at", 1000, &ev->event_at))
		webhook_malformed("created_at", "is missing");
	webhook_object(root, "object", true);
	ev->environment = webhook_string(root, OBJ "mode", false);

	if (strcmp(ev->type, "checkout.completed") == 0)
		creem_checkout(root, ev);
	else if (strcmp(ev->type, "subscription.active") == 0 ||
			 strcmp(ev->type, "subscription.paid") == 0 ||
			 strcmp(ev->type, "subscription.trialing") == 0 ||
			 strcmp(ev->type, "subscription.update") == 0)
		creem_subscription(root, ev, "active");
	else if (strcmp(ev->type, "subscription.canceled") == 0)
		creem_subscription(root, ev, "cancelled");
	else if (strcmp(ev->type, "subscription.paused") == 0)
		creem_subscription(root, ev, "paused");
	else if (strcmp(ev->type, "subscription.expired") == 0)
		creem_subscription(root, ev, "expired");
	else if (strcmp(ev->type, "refund.created") == 0 || strcmp(ev->type, "dispute.created") == 0)
		creem_refund(root, ev);
	else
	{
		ev->action = WH_NONE;
		ev->ignore_reason = "unknown_event_type";
	}
}
