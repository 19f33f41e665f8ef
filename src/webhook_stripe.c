/*
 * webhook_stripe.c
 *		Stripe webhook bodies -> WebhookEvent (applied by webhooks.c).
 *
 * A body is an Event object, {"id": "evt_...", "type": "...", "created":
 * <s>, "livemode": ..., "data": {"object": {...}}} (docs.stripe.com/api/events):
 *   checkout.session.completed / .async_payment_succeeded
 *        paid (payment_status not "unpaid"): mode payment is a pack keyed by
 *        its payment_intent, mode subscription a plan keyed by the
 *        subscription id; the user is client_reference_id, else
 *        metadata.user_id; the product is metadata.price_id (Stripe sends
 *        no line items in the event), else metadata.product_id
 *   invoice.paid                   a subscription period paid: access until
 *                                  the line's period end, product = its price
 *   customer.subscription.updated  active / trialing (cancelled when it
 *                                  cancels at the period end), past_due /
 *                                  unpaid (billing issue), paused, canceled /
 *                                  incomplete_expired (expired)
 *   customer.subscription.deleted  access ends
 *   charge.refunded (fully)        a pack's credits clawed back
 *   charge.dispute.created         likewise
 * The subscription's own events find the user in its metadata.user_id (set
 * subscription_data.metadata at checkout), else in the entitlement the
 * checkout created.  Other event types are ignored.  No locks.
 */
#include "webhooks.h"

/* Members of the event's object, by their path from the body (errors name it). */
#define OBJ "data.object."

static void
stripe_checkout(JsonbContainer *root, WebhookEvent *ev)
{
	const char *mode = webhook_string(root, OBJ "mode", true);
	const char *paid = webhook_string(root, OBJ "payment_status", false);

	if (paid != NULL && strcmp(paid, "unpaid") == 0)
	{
		/* an asynchronous payment method: async_payment_succeeded follows */
		ev->ignore_reason = "payment_pending";
		return;
	}
	webhook_object(root, OBJ "metadata", false);
	webhook_user(ev, root, OBJ "client_reference_id");
	webhook_user(ev, root, OBJ "metadata.user_id");
	ev->product_id = webhook_string(root, OBJ "metadata.price_id", false);
	if (ev->product_id == NULL)
		ev->product_id = webhook_string(root, OBJ "metadata.product_id", false);
	ev->transaction_id = webhook_id_of(root, OBJ "payment_intent");
	if (ev->transaction_id == NULL)
		ev->transaction_id = webhook_string(root, OBJ "id", true);
	if (strcmp(mode, "subscription") == 0)
	{
		ev->subscription_id = webhook_id_of(root, OBJ "subscription");
		if (ev->subscription_id == NULL)
			webhook_malformed(OBJ "subscription", "is missing");
	}
	else if (strcmp(mode, "payment") != 0)
	{
		ev->ignore_reason = "not_a_payment";
		return;
	}
	ev->action = WH_CHECKOUT;
	ev->status = "active";
}

static void
stripe_invoice_paid(JsonbContainer *root, WebhookEvent *ev)
{
	/* where the subscription is: parent.subscription_details since API 2025-03, before at the top */
	const char *details = webhook_object(root, OBJ "parent.subscription_details", false) ?
		OBJ "parent.subscription_details." : OBJ "subscription_details.";

	ev->subscription_id = webhook_id_of(root, OBJ "subscription");
	if (ev->subscription_id == NULL)
		ev->subscription_id = webhook_id_of(root, psprintf("%ssubscription", details));
	if (ev->subscription_id == NULL)
	{
		ev->ignore_reason = "not_a_subscription";
		return;
	}
	webhook_user(ev, root, psprintf("%smetadata.user_id", details));
	ev->product_id = webhook_string(root, OBJ "lines.data.0.price.id", false);
	if (ev->product_id == NULL)
		ev->product_id = webhook_string(root, OBJ "lines.data.0.pricing.price_details.price", false);
	ev->has_expires_at = webhook_unix_time(root, OBJ "lines.data.0.period.end", 1, &ev->expires_at);
	ev->transaction_id = webhook_string(root, OBJ "id", true);
	ev->action = WH_SUBSCRIPTION;
	ev->status = "active";
}

/* The entitlement status for a Stripe subscription status; NULL: no change to apply. */
static const char *
subscription_status(JsonbContainer *root)
{
	const char *status = webhook_string(root, OBJ "status", true);

	if (strcmp(status, "active") == 0 || strcmp(status, "trialing") == 0)
		return webhook_bool(root, OBJ "cancel_at_period_end") ? "cancelled" : "active";
	if (strcmp(status, "past_due") == 0 || strcmp(status, "unpaid") == 0)
		return "billing_issue";
	if (strcmp(status, "paused") == 0)
		return "paused";
	if (strcmp(status, "canceled") == 0 || strcmp(status, "incomplete_expired") == 0)
		return "expired";
	return NULL;				/* incomplete: the first payment is not made yet */
}

static void
stripe_subscription(JsonbContainer *root, WebhookEvent *ev, bool deleted)
{
	ev->status = deleted ? "expired" : subscription_status(root);
	if (ev->status == NULL)
	{
		ev->ignore_reason = "subscription_incomplete";
		return;
	}
	ev->subscription_id = webhook_string(root, OBJ "id", true);
	webhook_user(ev, root, OBJ "metadata.user_id");
	ev->product_id = webhook_string(root, OBJ "items.data.0.price.id", false);
	if (deleted)
		ev->has_expires_at = webhook_unix_time(root, OBJ "ended_at", 1, &ev->expires_at);
	else
	{
		ev->has_expires_at = webhook_unix_time(root, OBJ "current_period_end", 1, &ev->expires_at);
		if (!ev->has_expires_at)
			ev->has_expires_at = webhook_unix_time(root, OBJ "items.data.0.current_period_end", 1,
												   &ev->expires_at);
	}
	ev->action = WH_SUBSCRIPTION;
}

static void
stripe_refund(JsonbContainer *root, WebhookEvent *ev, bool dispute)
{
	if (!dispute && !webhook_bool(root, OBJ "refunded"))
	{
		/* a partial refund: the credits stay (refund the pack fully to claw them back) */
		ev->ignore_reason = "partial_refund";
		return;
	}
	ev->transaction_id = webhook_id_of(root, OBJ "payment_intent");
	if (ev->transaction_id == NULL)
		ev->transaction_id = webhook_id_of(root, dispute ? OBJ "charge" : OBJ "id");
	ev->action = WH_REFUND;
}

void
stripe_parse(JsonbContainer *root, WebhookEvent *ev)
{
	memset(ev, 0, sizeof(*ev));
	ev->provider = "stripe";
	ev->id = webhook_string(root, "id", true);
	ev->type = webhook_string(root, "type", true);
	if (!webhook_unix_time(root, "created", 1, &ev->event_at))
		webhook_malformed("created", "is missing");
	ev->environment = webhook_bool(root, "livemode") ? "live" : "test";
	webhook_object(root, "data.object", true);
	ev->action = WH_NONE;
	ev->ignore_reason = "unknown_event_type";

	if (strcmp(ev->type, "checkout.session.completed") == 0 ||
		strcmp(ev->type, "checkout.session.async_payment_succeeded") == 0)
		stripe_checkout(root, ev);
	else if (strcmp(ev->type, "invoice.paid") == 0)
		stripe_invoice_paid(root, ev);
	else if (strcmp(ev->type, "customer.subscription.updated") == 0)
		stripe_subscription(root, ev, false);
	else if (strcmp(ev->type, "customer.subscription.deleted") == 0)
		stripe_subscription(root, ev, true);
	else if (strcmp(ev->type, "charge.refunded") == 0)
		stripe_refund(root, ev, false);
	else if (strcmp(ev->type, "charge.dispute.created") == 0)
		stripe_refund(root, ev, true);
}
