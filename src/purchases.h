/*
 * purchases.h
 *		Store purchases and entitlements: what purchases.c offers to the
 *		webhook handlers in revenuecat.c.
 *
 * Locks: every function here runs with the account rows it changes locked
 * (accounts_lock(), in user_id order when there are several).  A
 * subscription's entitlement belongs to one account at a time; moving it to
 * another (a store transfer) changes both, so both are locked.
 */
#ifndef CREDITS_PURCHASES_H
#define CREDITS_PURCHASES_H

#include "credits.h"

/* Statuses that give the plan until expires_at: in SQL, and in C (keep the two alike). */
#define ENTITLEMENT_ACCESS_STATUSES "('active', 'cancelled', 'billing_issue', 'paused')"
static inline bool
entitlement_status_gives_access(const char *status)
{
	return strcmp(status, "active") == 0 || strcmp(status, "cancelled") == 0 ||
		strcmp(status, "billing_issue") == 0 || strcmp(status, "paused") == 0;
}

/* A row of credits.products. */
typedef struct Product
{
	char	   *product_id;
	char	   *plan;			/* subscription: the plan it unlocks; NULL for a pack */
	int64		credits;		/* pack: the credits it adds */
	bool		has_pack_expiry;
	TimestampTz pack_expires_at;	/* now() + pack_expires_after */
	bool		admin_only;		/* source 'admin': granted by an admin, never claimed */
} Product;

/* One store transaction, from apply_purchase or from a webhook event. */
typedef struct StoreTxn
{
	const char *source;
	const char *transaction_id;
	const char *original_transaction_id;	/* the subscription; NULL: transaction_id */
	const char *product_id;
	bool		has_purchased_at;
	TimestampTz purchased_at;
	bool		has_expires_at;
	TimestampTz expires_at;
	TimestampTz event_at;		/* store time of the event (apply_purchase: purchased_at) */
	const char *event_id;		/* NULL outside webhooks */
	const char *store;
	const char *environment;
	const char *period_type;
} StoreTxn;

/* A row of credits.purchases. */
typedef struct PurchaseRow
{
	bool		has_user;		/* false: anonymized (the account was deleted) */
	pg_uuid_t	user_id;
	char	   *product_id;
	char	   *kind;			/* pack | subscription */
	bool		has_entry;
	int64		entry_id;
	bool		has_entitlement;
	int64		entitlement_id;
	int64		balance;
	bool		has_daily_remaining;
	int64		daily_remaining;
	char	   *refund_state;	/* NULL, refunded, reversed */
	int64		clawed_back;
	bool		has_regrant;
	int64		regrant_entry_id;
	bool		has_last_event_at;
	TimestampTz last_event_at;
	TimestampTz created_at;
} PurchaseRow;

/* A row of credits.entitlements (the columns the handlers decide on). */
typedef struct EntitlementRow
{
	int64		id;
	pg_uuid_t	user_id;
	char	   *status;
	char	   *plan;
	char	   *product_id;
	bool		has_expires_at;
	TimestampTz expires_at;
	TimestampTz last_event_at;
} EntitlementRow;

/* What one event does to a subscription's entitlement. */
typedef struct EntitlementChange
{
	const char *status;			/* new status; NULL keeps a status with access (active for a new row) */
	bool		has_expires_at;
	TimestampTz expires_at;		/* has_expires_at false: no end */
	bool		keep_expiry;	/* the event has no expiry: an existing row keeps its own */
	bool		keep_product;	/* a status-only event: an existing row keeps product, plan, transaction */
	bool		set_next_product;	/* PRODUCT_CHANGE sets it, a renewal clears it */
	const char *next_product_id;
	const char *status_reason;	/* the store's cancel / expiration reason */
} EntitlementChange;

/* Several accounts locked in user_id order, for calls that touch more than one. */
typedef struct AccountSet
{
	int			n;
	Account    *accts;
} AccountSet;

extern bool product_find(const char *product_id, const char *source, Product *product);

extern void accounts_lock(AccountSet *set, const pg_uuid_t *user_ids, int n);
extern Account *accounts_get(AccountSet *set, const pg_uuid_t *user_id);
extern void accounts_save(AccountSet *set, bool entitlements_changed);

extern bool purchase_find(const char *source, const char *transaction_id, PurchaseRow *row);
extern bool purchase_is_refunded(const PurchaseRow *row);
extern void purchase_check_kind(const PurchaseRow *row, const char *source,
								const char *transaction_id, const char *kind);
extern void pack_credit(Account *acct, const StoreTxn *txn, const Product *product,
						bool over_tombstone, LedgerEntry *entry);
extern void pack_refund_tombstone(const pg_uuid_t *user_id, const StoreTxn *txn,
								  const char *refund_state);
extern int64 pack_claw_back(Account *acct, const StoreTxn *txn, const PurchaseRow *row,
							int64 *entry_id);
extern int64 pack_give_back(Account *acct, const StoreTxn *txn, const PurchaseRow *row,
							int64 *entry_id);
extern void purchase_note_refund_event(const StoreTxn *txn, const char *refund_state);
extern void purchase_record_subscription(const pg_uuid_t *user_id, const StoreTxn *txn,
										 int64 entitlement_id, const Account *acct);

extern bool entitlement_find(const char *source, const char *key, const char *alt_key,
							 EntitlementRow *row);
extern void entitlement_write(const pg_uuid_t *owner, const EntitlementRow *existing,
							  const StoreTxn *txn, const char *key, const Product *product,
							  const EntitlementChange *change, EntitlementRow *out);
extern int	entitlement_move_all(const pg_uuid_t *from, const pg_uuid_t *to,
								 TimestampTz event_at, const char *event_id);
extern int	claims_confirm(const pg_uuid_t *user_id, const StoreTxn *txn);
extern bool store_owners_of(const pg_uuid_t *from, int nfrom, const pg_uuid_t *to,
							pg_uuid_t **owners, int *nowners);

#endif							/* CREDITS_PURCHASES_H */
