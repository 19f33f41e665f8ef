/*
 * purchases.c
 *		Store purchases: credit packs, subscriptions as entitlements, the
 *		effective plan cached on the account, and instant unlock.
 *
 * A store transaction is applied exactly once, keyed by (source,
 * transaction_id) in credits.purchases, whoever reports it first: the app's
 * backend through apply_purchase() or a webhook (revenuecat.c).  A pack
 * becomes a lot through a `purchase` ledger entry; a subscription becomes an
 * entitlement (credits.entitlements), keyed by (source,
 * original_transaction_id), whose state follows the newest store event.
 *
 * The effective plan is the best active entitlement (highest plans.rank,
 * then latest expiry), cached on the account row (entitlement_plan,
 * entitlement_until) whenever entitlements change, so that every read of an
 * account stays one row.  When the cached one lapses while another is still
 * active, account_lock() calls entitlements_refresh() on the next touch.
 *
 * Instant unlock: claim_pending_purchase() gives the product's plan for a
 * short grace window as a provisional entitlement, before the store's
 * webhook arrives; the verified webhook confirms it, or it lapses.  Packs
 * are never credited provisionally.
 *
 * Locks: the account rows first (account_lock, in user_id order when an
 * entitlement moves between two users), then that user's purchases,
 * entitlements, lots and ledger rows.
 */
#include "purchases.h"

#include "catalog/pg_type.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/json.h"

/* ---- statements ---- */

static CachedStatement product_by_id = {
	"SELECT plan, credits, now() + pack_expires_after, source"
	"  FROM credits.products WHERE product_id = $1",
	1, {TEXTOID}
};

#define PURCHASE_COLUMNS \
	"user_id, product_id, kind, entry_id, entitlement_id, balance, daily_remaining," \
	" refund_state, clawed_back, regrant_entry_id, last_event_at, created_at"

static CachedStatement purchase_by_key = {
	"SELECT " PURCHASE_COLUMNS " FROM credits.purchases"
	" WHERE source = $1 AND transaction_id = $2",
	2, {TEXTOID, TEXTOID}
};

static CachedStatement purchase_insert = {
	"INSERT INTO credits.purchases (source, transaction_id, user_id, product_id, kind,"
	"  entry_id, entitlement_id, purchased_at, balance, daily_remaining)"
	" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
	" ON CONFLICT (source, transaction_id) DO NOTHING",
	10, {TEXTOID, TEXTOID, UUIDOID, TEXTOID, TEXTOID, INT8OID, INT8OID, TIMESTAMPTZOID,
	INT8OID, INT8OID}
};

/* A pack whose refund arrived before it (or a reversal before the refund). */
static CachedStatement purchase_set_entry = {
	"UPDATE credits.purchases SET entry_id = $3, user_id = $4, purchased_at = $5"
	" WHERE source = $1 AND transaction_id = $2",
	5, {TEXTOID, TEXTOID, INT8OID, UUIDOID, TIMESTAMPTZOID}
};

static CachedStatement purchase_tombstone = {
	"INSERT INTO credits.purchases (source, transaction_id, user_id, product_id, kind,"
	"  refund_state, last_event_at)"
	" VALUES ($1, $2, $3, $4, 'pack', $5, $6)",
	6, {TEXTOID, TEXTOID, UUIDOID, TEXTOID, TEXTOID, TIMESTAMPTZOID}
};

static CachedStatement purchase_refunded = {
	"UPDATE credits.purchases"
	"   SET refund_state = 'refunded', refund_entry_id = $3, clawed_back = clawed_back + $4,"
	"       last_event_at = $5"
	" WHERE source = $1 AND transaction_id = $2",
	5, {TEXTOID, TEXTOID, INT8OID, INT8OID, TIMESTAMPTZOID}
};

static CachedStatement purchase_reversed = {
	"UPDATE credits.purchases"
	"   SET refund_state = 'reversed', regrant_entry_id = coalesce($3, regrant_entry_id),"
	"       clawed_back = clawed_back - $4, last_event_at = $5"
	" WHERE source = $1 AND transaction_id = $2",
	5, {TEXTOID, TEXTOID, INT8OID, INT8OID, TIMESTAMPTZOID}
};

static CachedStatement purchase_event_time = {
	"UPDATE credits.purchases SET refund_state = $3, last_event_at = $4"
	" WHERE source = $1 AND transaction_id = $2",
	4, {TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID}
};

/* What is left of a pack: its lot, and the lot of a refund reversal. */
static CachedStatement pack_lots = {
	"SELECT id, remaining, expires_at FROM credits.lots"
	" WHERE entry_id = ANY ($1) AND remaining > 0 AND (expires_at IS NULL OR expires_at > now())"
	" ORDER BY id",
	1, {INT8ARRAYOID}
};

static CachedStatement pack_lot_expiry = {
	"SELECT expires_at FROM credits.lots WHERE entry_id = $1",
	1, {INT8OID}
};

static CachedStatement lot_take = {
	"UPDATE credits.lots SET remaining = remaining - $2 WHERE id = $1",
	2, {INT8OID, INT8OID}
};

#define ENTITLEMENT_COLUMNS \
	"id, user_id, status::text, plan, product_id, expires_at, last_event_at"

static CachedStatement entitlement_by_key = {
	"SELECT " ENTITLEMENT_COLUMNS " FROM credits.entitlements"
	" WHERE source = $1 AND original_transaction_id = $2 AND NOT provisional",
	2, {TEXTOID, TEXTOID}
};

/* apply_purchase: the same product from the same source, still giving access, is extended. */
static CachedStatement entitlement_to_extend = {
	"SELECT " ENTITLEMENT_COLUMNS " FROM credits.entitlements"
	" WHERE user_id = $1 AND source = $2 AND product_id = $3 AND NOT provisional"
	"   AND status IN " ENTITLEMENT_ACCESS_STATUSES
	"   AND (expires_at IS NULL OR expires_at > now())"
	" ORDER BY expires_at DESC NULLS FIRST, id DESC LIMIT 1",
	3, {UUIDOID, TEXTOID, TEXTOID}
};

static CachedStatement entitlement_insert = {
	"INSERT INTO credits.entitlements (user_id, source, product_id, plan, status, expires_at,"
	"  original_transaction_id, transaction_id, next_product_id, store, environment,"
	"  period_type, purchased_at, status_reason, last_event_id, last_event_at)"
	" VALUES ($1, $2, $3, $4, coalesce($5::text, 'active')::credits.entitlement_status, $6,"
	"  $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
	" RETURNING " ENTITLEMENT_COLUMNS,
	16, {UUIDOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, TEXTOID, TEXTOID,
	TEXTOID, TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, TEXTOID, TEXTOID, TIMESTAMPTZOID}
};

static CachedStatement entitlement_update = {
	"UPDATE credits.entitlements e"
	"   SET user_id = $2,"
	"       product_id = CASE WHEN $18 THEN e.product_id ELSE $3 END,"
	"       plan = CASE WHEN $18 THEN e.plan ELSE $4 END,"
	"       status = coalesce($5::text::credits.entitlement_status,"
	"                         CASE WHEN e.status IN " ENTITLEMENT_ACCESS_STATUSES
	"                              THEN e.status ELSE 'active' END),"
	"       expires_at = CASE WHEN $17 THEN e.expires_at ELSE $6 END,"
	"       transaction_id = CASE WHEN $18 THEN e.transaction_id ELSE $7 END,"
	"       next_product_id = CASE WHEN $8 THEN $9 ELSE e.next_product_id END,"
	"       store = coalesce($10, e.store), environment = coalesce($11, e.environment),"
	"       period_type = coalesce($12, e.period_type),"
	"       purchased_at = coalesce($13, e.purchased_at),"
	"       status_reason = CASE WHEN $5 IS NULL AND e.status IN " ENTITLEMENT_ACCESS_STATUSES
	"                            THEN e.status_reason ELSE $14 END,"	/* the kept status keeps its reason */
	"       last_event_id = $15, last_event_at = $16, updated_at = now()"
	" WHERE e.id = $1"
	" RETURNING " ENTITLEMENT_COLUMNS,
	18, {INT8OID, UUIDOID, TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, TEXTOID, BOOLOID,
	TEXTOID, TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, BOOLOID,
	BOOLOID}
};

/* TRANSFER: the store moved every subscription of one app user to another (NULL: to nobody we know). */
static CachedStatement entitlements_move = {
	"UPDATE credits.entitlements"
	"   SET user_id = coalesce($2, user_id),"
	"       status = CASE WHEN $2 IS NULL THEN 'transferred' ELSE status END,"
	"       last_event_id = $4, last_event_at = $3, updated_at = now()"
	" WHERE user_id = $1 AND source = 'revenuecat' AND NOT provisional AND last_event_at <= $3",
	4, {UUIDOID, UUIDOID, TIMESTAMPTZOID, TEXTOID}
};

/* The best active entitlement: what accounts.entitlement_plan / entitlement_until cache. */
static CachedStatement best_entitlement = {
	"SELECT e.plan, e.expires_at"
	"  FROM credits.entitlements e JOIN credits.plans p ON p.name = e.plan"
	" WHERE e.user_id = $1 AND e.status IN " ENTITLEMENT_ACCESS_STATUSES
	"   AND (e.expires_at IS NULL OR e.expires_at > now())"
	" ORDER BY p.rank DESC, e.expires_at DESC NULLS FIRST, e.id DESC LIMIT 1",
	1, {UUIDOID}
};

static CachedStatement claims_confirm_stmt = {
	"UPDATE credits.entitlements SET status = 'confirmed', updated_at = now()"
	" WHERE provisional AND user_id = $1 AND original_transaction_id IN ($2, $3)"
	"   AND status = 'active'",
	3, {UUIDOID, TEXTOID, TEXTOID}
};

/* ---- claim_pending_purchase ---- */

static CachedStatement claim_verified = {
	"SELECT user_id, plan, expires_at, status::text IN " ENTITLEMENT_ACCESS_STATUSES
	"       AND (expires_at IS NULL OR expires_at > now())"
	"  FROM credits.entitlements"
	" WHERE NOT provisional AND (original_transaction_id = $1 OR transaction_id = $1)"
	" ORDER BY (user_id = $2) DESC, id DESC LIMIT 1",
	2, {TEXTOID, UUIDOID}
};

static CachedStatement claim_existing = {
	"SELECT id, plan, expires_at,"
	"       CASE WHEN status = 'confirmed' THEN 'confirmed'"
	"            WHEN status = 'active' AND expires_at > now() THEN 'unlocked'"
	"            ELSE 'lapsed' END"
	"  FROM credits.entitlements"
	" WHERE provisional AND user_id = $1 AND original_transaction_id = $2",
	2, {UUIDOID, TEXTOID}
};

/* Claims of the last 24 hours, those made before a deletion of the user id too (deletion.c). */
static CachedStatement claims_today = {
	"SELECT count(*), min(t) + interval '1 day' - now() FROM ("
	"  SELECT created_at FROM credits.entitlements"
	"   WHERE provisional AND user_id = $1 AND created_at > now() - interval '1 day'"
	"  UNION ALL"
	"  SELECT c FROM credits.deletion_salt s"
	"    JOIN credits.deletion_records r ON r.user_hash = sha256(s.salt || uuid_send($1))"
	"   CROSS JOIN unnest(r.claims) c"
	"   WHERE r.keep_until > now() AND c > now() - interval '1 day') AS claims (t)",
	1, {UUIDOID}
};

static CachedStatement claim_insert = {
	"INSERT INTO credits.entitlements (user_id, source, product_id, plan, provisional,"
	"  expires_at, original_transaction_id, transaction_id, last_event_at)"
	" VALUES ($1, 'client', $2, $3, true, now() + make_interval(secs => $4), $5, $5, now())"
	" RETURNING id, expires_at",
	5, {UUIDOID, TEXTOID, TEXTOID, INT4OID, TEXTOID}
};

/* ---- small helpers ---- */

/* A text column copied into the caller's context: it outlives SPI_finish(). */
static char *
get_cstring_kept(int row, int col)
{
	char	   *value = spi_get_cstring_or_null(row, col);

	return value ? strcpy(SPI_palloc(strlen(value) + 1), value) : NULL;
}

/* ---- products ---- */

/*
 * Looks a product up; false when it is unknown, or restricted to another
 * source than `source` (NULL: any).
 */
bool
product_find(const char *product_id, const char *source, Product *product)
{
	Datum		args[1] = {CStringGetTextDatum(product_id)};
	char	   *only_source;

	if (spi_exec(&product_by_id, args, NULL) == 0)
		return false;
	memset(product, 0, sizeof(*product));
	product->product_id = pstrdup(product_id);
	product->plan = spi_get_cstring_or_null(0, 1);
	spi_get_int64_or_null(0, 2, &product->credits);
	product->has_pack_expiry = spi_get_time_or_null(0, 3, &product->pack_expires_at);
	only_source = spi_get_cstring_or_null(0, 4);
	if (only_source != NULL && source != NULL && strcmp(only_source, source) != 0)
		return false;
	product->admin_only = only_source != NULL && strcmp(only_source, "admin") == 0;
	return true;
}

/* ---- several accounts ---- */

static int
uuid_order(const void *a, const void *b)
{
	return memcmp(a, b, UUID_LEN);
}

/* Locks the accounts of user_ids (duplicates allowed) in user_id order. */
void
accounts_lock(AccountSet *set, const pg_uuid_t *user_ids, int n)
{
	pg_uuid_t  *sorted = palloc(sizeof(pg_uuid_t) * Max(n, 1));
	int			k = 0;

	memcpy(sorted, user_ids, sizeof(pg_uuid_t) * n);
	qsort(sorted, n, sizeof(pg_uuid_t), uuid_order);
	set->accts = palloc0(sizeof(Account) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		if (i > 0 && uuid_order(&sorted[i], &sorted[i - 1]) == 0)
			continue;
		account_lock(&sorted[i], &set->accts[k++]);
	}
	set->n = k;
}

Account *
accounts_get(AccountSet *set, const pg_uuid_t *user_id)
{
	for (int i = 0; i < set->n; i++)
	{
		if (uuid_order(&set->accts[i].user_id, user_id) == 0)
			return &set->accts[i];
	}
	return NULL;
}

/*
 * Saves each account (NOTIFY included); after entitlements changed, first
 * recomputes their effective plans.
 */
void
accounts_save(AccountSet *set, bool entitlements_changed)
{
	for (int i = 0; i < set->n; i++)
	{
		if (entitlements_changed)
			entitlements_refresh(&set->accts[i]);
		account_save(&set->accts[i]);
	}
}

/* ---- purchases ---- */

static void
load_purchase(PurchaseRow *row)
{
	bool		isnull;
	Datum		value;

	memset(row, 0, sizeof(*row));
	value = spi_get_typed(0, 1, UUIDOID, &isnull);
	row->has_user = !isnull;
	if (!isnull)
		row->user_id = *DatumGetUUIDP(value);
	row->product_id = spi_get_cstring(0, 2);
	row->kind = spi_get_cstring(0, 3);
	row->has_entry = spi_get_int64_or_null(0, 4, &row->entry_id);
	row->has_entitlement = spi_get_int64_or_null(0, 5, &row->entitlement_id);
	spi_get_int64_or_null(0, 6, &row->balance);
	row->has_daily_remaining = spi_get_int64_or_null(0, 7, &row->daily_remaining);
	row->refund_state = spi_get_cstring_or_null(0, 8);
	spi_get_int64_or_null(0, 9, &row->clawed_back);
	row->has_regrant = spi_get_int64_or_null(0, 10, &row->regrant_entry_id);
	row->has_last_event_at = spi_get_time_or_null(0, 11, &row->last_event_at);
	spi_get_time_or_null(0, 12, &row->created_at);
}

bool
purchase_find(const char *source, const char *transaction_id, PurchaseRow *row)
{
	Datum		args[2] = {CStringGetTextDatum(source), CStringGetTextDatum(transaction_id)};

	if (spi_exec(&purchase_by_key, args, NULL) == 0)
		return false;
	load_purchase(row);
	return true;
}

/* The pack's credits were refunded (and the refund not reversed). */
bool
purchase_is_refunded(const PurchaseRow *row)
{
	return row->refund_state != NULL && strcmp(row->refund_state, "refunded") == 0;
}

/*
 * Refuses a transaction reported as another kind (pack or subscription)
 * than its purchases row was recorded as: a pack event for a subscription's
 * transaction or the reverse (a product remapped, or a bad payload).
 */
void
purchase_check_kind(const PurchaseRow *row, const char *source, const char *transaction_id,
					const char *kind)
{
	char	   *detail;

	if (row->kind != NULL && strcmp(row->kind, kind) == 0)
		return;
	detail = psprintf("{\"source\": %s, \"transaction_id\": %s, \"recorded_kind\": %s, \"kind\": %s}",
					  json_quote(source), json_quote(transaction_id),
					  row->kind ? json_quote(row->kind) : "null", json_quote(kind));
	denial_record(DENIAL_PURCHASE_CONFLICT, NULL, NULL, detail);
	ereport_refusal(
			(errcode(ERRCODE_CREDITS_CONFLICT),
			 errmsg("store transaction \"%s\" was recorded as another kind of purchase",
					transaction_id),
			 errdetail_internal("%s", detail),
			 errhint("A store transaction keeps the kind it was first applied as (pack or subscription); "
					 "check the product mapping in credits.products.")));
}

/*
 * Inserts the purchases row; false when another call recorded the same
 * (source, transaction_id) first (it waits for that call to commit).
 */
static bool
purchase_insert_row(const pg_uuid_t *user_id, const StoreTxn *txn, const char *kind,
					bool has_entry, int64 entry_id, bool has_entitlement, int64 entitlement_id,
					bool has_receipt, int64 balance, bool has_daily_remaining, int64 daily_remaining)
{
	Datum		args[10];
	char		nulls[10];

	memset(nulls, ' ', sizeof(nulls));
	args[0] = CStringGetTextDatum(txn->source);
	args[1] = CStringGetTextDatum(txn->transaction_id);
	args[2] = UUIDPGetDatum(user_id);
	args[3] = CStringGetTextDatum(txn->product_id);
	args[4] = CStringGetTextDatum(kind);
	args[5] = Int64GetDatum(entry_id);
	nulls[5] = has_entry ? ' ' : 'n';
	args[6] = Int64GetDatum(entitlement_id);
	nulls[6] = has_entitlement ? ' ' : 'n';
	args[7] = TimestampTzGetDatum(txn->purchased_at);
	nulls[7] = txn->has_purchased_at ? ' ' : 'n';
	args[8] = Int64GetDatum(balance);
	nulls[8] = has_receipt ? ' ' : 'n';
	args[9] = Int64GetDatum(daily_remaining);
	nulls[9] = has_receipt && has_daily_remaining ? ' ' : 'n';
	return spi_exec(&purchase_insert, args, nulls) == 1;
}

/*
 * Credits a pack: a `purchase` entry and its lot, expiring at the
 * transaction's expires_at, else pack_expires_after from now, else never.
 * The caller has checked that the transaction was not applied yet;
 * over_tombstone: a refund (or its reversal) arrived first and left a row.
 */
void
pack_credit(Account *acct, const StoreTxn *txn, const Product *product, bool over_tombstone,
			LedgerEntry *entry)
{
	bool		has_expiry = txn->has_expires_at || product->has_pack_expiry;
	TimestampTz expires_at = txn->has_expires_at ? txn->expires_at : product->pack_expires_at;
	StringInfoData metadata;

	initStringInfo(&metadata);
	appendStringInfo(&metadata, "{\"source\": %s, \"product_id\": %s, \"transaction_id\": %s",
					 json_quote(txn->source), json_quote(txn->product_id),
					 json_quote(txn->transaction_id));
	if (txn->event_id)
		appendStringInfo(&metadata, ", \"event_id\": %s", json_quote(txn->event_id));
	if (txn->store)
		appendStringInfo(&metadata, ", \"store\": %s", json_quote(txn->store));
	appendStringInfoChar(&metadata, '}');

	/* The row first: a concurrent report of the same transaction for another user waits here. */
	if (!over_tombstone &&
		!purchase_insert_row(&acct->user_id, txn, "pack", false, 0, false, 0, false, 0, false, 0))
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("transaction \"%s\" was applied concurrently", txn->transaction_id),
				 errdetail("{\"field\": \"transaction_id\"}"),
				 errhint("Retry: the call will return the first result.")));

	memset(entry, 0, sizeof(*entry));
	entry->kind = "purchase";
	entry->reason = cstring_to_text(psprintf("purchase of %s", txn->product_id));
	entry->reference = cstring_to_text(txn->transaction_id);
	entry->metadata = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(metadata.data)));
	grant_lot(acct, entry, product->credits, has_expiry, expires_at, 0);

	{
		Datum		args[5] = {CStringGetTextDatum(txn->source), CStringGetTextDatum(txn->transaction_id),
		Int64GetDatum(entry->id), UUIDPGetDatum(&acct->user_id), TimestampTzGetDatum(txn->purchased_at)};
		char		nulls[] = "     ";

		nulls[4] = txn->has_purchased_at ? ' ' : 'n';
		spi_exec(&purchase_set_entry, args, nulls);
	}
}

/* A refund (or its reversal) of a pack we have not seen yet: remember it, so the purchase credits nothing. */
void
pack_refund_tombstone(const pg_uuid_t *user_id, const StoreTxn *txn, const char *refund_state)
{
	Datum		args[6] = {CStringGetTextDatum(txn->source), CStringGetTextDatum(txn->transaction_id),
		UUIDPGetDatum(user_id), CStringGetTextDatum(txn->product_id),
	CStringGetTextDatum(refund_state), TimestampTzGetDatum(txn->event_at)};

	spi_exec(&purchase_tombstone, args, NULL);
}

void
purchase_note_refund_event(const StoreTxn *txn, const char *refund_state)
{
	Datum		args[4] = {CStringGetTextDatum(txn->source), CStringGetTextDatum(txn->transaction_id),
	CStringGetTextDatum(refund_state), TimestampTzGetDatum(txn->event_at)};

	spi_exec(&purchase_event_time, args, NULL);
}

/*
 * A store refund of a pack: burns what is left of its credits with an
 * `adjust` entry (never more than is left: credits already spent stay spent,
 * and the balance never goes below zero).  Returns the credits clawed back
 * and sets *entry_id (0 when nothing was left).
 */
int64
pack_claw_back(Account *acct, const StoreTxn *txn, const PurchaseRow *row, int64 *entry_id)
{
	Datum		entries[2];
	int			nentries = 0;
	uint64		nlots;
	int64	   *lot_ids;
	int64	   *deltas;
	int64		total = 0;
	LedgerEntry entry = {0};

	*entry_id = 0;
	if (row->has_entry)
		entries[nentries++] = Int64GetDatum(row->entry_id);
	if (row->has_regrant)
		entries[nentries++] = Int64GetDatum(row->regrant_entry_id);
	if (nentries > 0)
	{
		Datum		args[1];

		args[0] = PointerGetDatum(construct_array(entries, nentries, INT8OID, sizeof(int64),
												  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		nlots = spi_exec(&pack_lots, args, NULL);
	}
	else
		nlots = 0;

	lot_ids = palloc(sizeof(int64) * Max(nlots, 1));
	deltas = palloc(sizeof(int64) * Max(nlots, 1));
	for (uint64 i = 0; i < nlots; i++)
	{
		lot_ids[i] = spi_get_int64(i, 1);
		deltas[i] = -spi_get_int64(i, 2);
		total = checked_add(total, -deltas[i], "amount");
	}
	for (uint64 i = 0; i < nlots; i++)
	{
		Datum		args[2] = {Int64GetDatum(lot_ids[i]), Int64GetDatum(-deltas[i])};

		spi_exec(&lot_take, args, NULL);
	}

	if (total > 0)
	{
		entry.kind = "adjust";
		entry.amount = -total;
		entry.lot_moves = lot_moves_array((int) nlots, lot_ids, deltas);
		entry.reason = cstring_to_text(psprintf("store refund of %s", txn->product_id));
		entry.reference = cstring_to_text(txn->transaction_id);
		if (row->has_entry)
		{
			entry.has_ref_id = true;
			entry.ref_id = row->entry_id;
		}
		account_add_balance(acct, -total);
		ledger_append(acct, &entry);
		*entry_id = entry.id;
	}

	{
		Datum		args[5] = {CStringGetTextDatum(txn->source), CStringGetTextDatum(txn->transaction_id),
			Int64GetDatum(entry.id), Int64GetDatum(total), TimestampTzGetDatum(txn->event_at)};
		char		nulls[] = "     ";

		nulls[2] = total > 0 ? ' ' : 'n';
		spi_exec(&purchase_refunded, args, nulls);
	}
	return total;
}

/*
 * A refund reversed: gives back what the refund clawed back, as an `adjust`
 * lot expiring like the pack's own lot (nothing when that expiry has passed:
 * the credits would have expired anyway).  Returns the credits given back.
 */
int64
pack_give_back(Account *acct, const StoreTxn *txn, const PurchaseRow *row, int64 *entry_id)
{
	int64		amount = row->clawed_back;
	bool		has_expiry = false;
	TimestampTz expires_at = 0;
	LedgerEntry entry = {0};

	*entry_id = 0;
	if (amount > 0 && row->has_entry)
	{
		Datum		args[1] = {Int64GetDatum(row->entry_id)};

		if (spi_exec(&pack_lot_expiry, args, NULL) > 0)
			has_expiry = spi_get_time_or_null(0, 1, &expires_at);
		if (has_expiry && expires_at <= GetCurrentTransactionStartTimestamp())
			amount = 0;
	}
	if (amount > 0)
	{
		entry.kind = "adjust";
		entry.reason = cstring_to_text(psprintf("store refund of %s reversed", txn->product_id));
		entry.reference = cstring_to_text(txn->transaction_id);
		if (row->has_entry)
		{
			entry.has_ref_id = true;
			entry.ref_id = row->entry_id;
		}
		grant_lot(acct, &entry, amount, has_expiry, expires_at, 0);
		*entry_id = entry.id;
	}

	{
		Datum		args[5] = {CStringGetTextDatum(txn->source), CStringGetTextDatum(txn->transaction_id),
			Int64GetDatum(entry.id), Int64GetDatum(row->clawed_back), TimestampTzGetDatum(txn->event_at)};
		char		nulls[] = "     ";

		nulls[2] = amount > 0 ? ' ' : 'n';
		spi_exec(&purchase_reversed, args, nulls);
	}
	return amount;
}

/* Records a subscription transaction (once; a repeat changes nothing). */
void
purchase_record_subscription(const pg_uuid_t *user_id, const StoreTxn *txn,
							 int64 entitlement_id, const Account *acct)
{
	int64		remaining = 0;
	bool		limited = acct ? account_daily_remaining(acct, &remaining) : false;

	purchase_insert_row(user_id, txn, "subscription", false, 0, true, entitlement_id,
						acct != NULL, acct ? acct->balance : 0, limited, remaining);
}

/* ---- entitlements ---- */

static void
load_entitlement(EntitlementRow *row)
{
	memset(row, 0, sizeof(*row));
	row->id = spi_get_int64(0, 1);
	row->user_id = spi_get_uuid(0, 2);
	row->status = spi_get_cstring(0, 3);
	row->plan = spi_get_cstring(0, 4);
	row->product_id = spi_get_cstring(0, 5);
	row->has_expires_at = spi_get_time_or_null(0, 6, &row->expires_at);
	spi_get_time_or_null(0, 7, &row->last_event_at);
}

/*
 * The store subscription keyed (source, key); when there is none, the one
 * keyed alt_key (a temporary grant is keyed by its own transaction id).
 */
bool
entitlement_find(const char *source, const char *key, const char *alt_key, EntitlementRow *row)
{
	Datum		args[2] = {CStringGetTextDatum(source), CStringGetTextDatum(key)};

	if (spi_exec(&entitlement_by_key, args, NULL) > 0)
	{
		load_entitlement(row);
		return true;
	}
	if (alt_key != NULL && strcmp(alt_key, key) != 0)
	{
		args[1] = CStringGetTextDatum(alt_key);
		if (spi_exec(&entitlement_by_key, args, NULL) > 0)
		{
			load_entitlement(row);
			return true;
		}
	}
	return false;
}

/*
 * entitlement_find() again, under the account locks of `set`: a concurrent
 * call or a store TRANSFER may have moved the subscription since the read
 * that chose which accounts to lock.  Its holder must be one of them, else
 * 40001 (the retry locks the new holder).
 */
static bool
entitlement_find_locked(AccountSet *set, const char *source, const char *key,
						EntitlementRow *row)
{
	if (!entitlement_find(source, key, NULL, row))
		return false;
	if (accounts_get(set, &row->user_id) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("the subscription moved to another user during the call"),
				 errdetail_internal("{\"source\": %s, \"transaction_id\": %s}",
									json_quote(source), json_quote(key)),
				 errhint("Retry the call.")));
	return true;
}

/*
 * Writes the subscription's new state: inserts it (keyed (source, key)) or
 * updates `existing`, giving it to `owner`.  The caller holds the account
 * locks of owner and of the existing row's user, and has checked that the
 * event is not older than the row's last one.
 */
void
entitlement_write(const pg_uuid_t *owner, const EntitlementRow *existing, const StoreTxn *txn,
				  const char *key, const Product *product, const EntitlementChange *change,
				  EntitlementRow *out)
{
	Datum		args[18];
	char		nulls[18];

	memset(nulls, ' ', sizeof(nulls));
	if (existing == NULL)
	{
		args[0] = UUIDPGetDatum(owner);
		args[1] = CStringGetTextDatum(txn->source);
		args[2] = CStringGetTextDatum(txn->product_id);
		args[3] = CStringGetTextDatum(product->plan);
		args[4] = spi_text_arg(change->status, &nulls[4]);
		args[5] = TimestampTzGetDatum(change->expires_at);
		nulls[5] = change->has_expires_at ? ' ' : 'n';
		args[6] = CStringGetTextDatum(key);
		args[7] = CStringGetTextDatum(txn->transaction_id);
		args[8] = spi_text_arg(change->set_next_product ? change->next_product_id : NULL, &nulls[8]);
		args[9] = spi_text_arg(txn->store, &nulls[9]);
		args[10] = spi_text_arg(txn->environment, &nulls[10]);
		args[11] = spi_text_arg(txn->period_type, &nulls[11]);
		args[12] = TimestampTzGetDatum(txn->purchased_at);
		nulls[12] = txn->has_purchased_at ? ' ' : 'n';
		args[13] = spi_text_arg(change->status_reason, &nulls[13]);
		args[14] = spi_text_arg(txn->event_id, &nulls[14]);
		args[15] = TimestampTzGetDatum(txn->event_at);
		spi_exec(&entitlement_insert, args, nulls);
	}
	else
	{
		args[0] = Int64GetDatum(existing->id);
		args[1] = UUIDPGetDatum(owner);
		args[2] = CStringGetTextDatum(txn->product_id);
		args[3] = CStringGetTextDatum(product->plan);
		args[4] = spi_text_arg(change->status, &nulls[4]);
		args[5] = TimestampTzGetDatum(change->expires_at);
		nulls[5] = change->has_expires_at ? ' ' : 'n';
		args[6] = CStringGetTextDatum(txn->transaction_id);
		args[7] = BoolGetDatum(change->set_next_product);
		args[8] = spi_text_arg(change->next_product_id, &nulls[8]);
		args[9] = spi_text_arg(txn->store, &nulls[9]);
		args[10] = spi_text_arg(txn->environment, &nulls[10]);
		args[11] = spi_text_arg(txn->period_type, &nulls[11]);
		args[12] = TimestampTzGetDatum(txn->purchased_at);
		nulls[12] = txn->has_purchased_at ? ' ' : 'n';
		args[13] = spi_text_arg(change->status_reason, &nulls[13]);
		args[14] = spi_text_arg(txn->event_id, &nulls[14]);
		args[15] = TimestampTzGetDatum(txn->event_at);
		args[16] = BoolGetDatum(change->keep_expiry);
		args[17] = BoolGetDatum(change->keep_product);
		spi_exec(&entitlement_update, args, nulls);
	}
	load_entitlement(out);
}

/* TRANSFER: moves from's store subscriptions to `to` (NULL: to nobody we know). */
int
entitlement_move_all(const pg_uuid_t *from, const pg_uuid_t *to, TimestampTz event_at,
					 const char *event_id)
{
	Datum		args[4] = {UUIDPGetDatum(from), UUIDPGetDatum(to), TimestampTzGetDatum(event_at),
	CStringGetTextDatum(event_id)};
	char		nulls[] = "    ";

	nulls[1] = to ? ' ' : 'n';
	return (int) spi_exec(&entitlements_move, args, nulls);
}

static CachedStatement store_owners = {
	"SELECT DISTINCT user_id FROM credits.entitlements"
	" WHERE source = 'revenuecat' AND NOT provisional AND user_id = ANY ($1)"
	"   AND user_id IS DISTINCT FROM $2",
	2, {UUIDARRAYOID, UUIDOID}
};

/*
 * TRANSFER: which of the `from` users hold store subscriptions (other than
 * `to`); false when none does.
 */
bool
store_owners_of(const pg_uuid_t *from, int nfrom, const pg_uuid_t *to,
				pg_uuid_t **owners, int *nowners)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(nfrom, 1));
	Datum		args[2];
	char		nulls[] = "  ";
	uint64		n;

	for (int i = 0; i < nfrom; i++)
		elems[i] = UUIDPGetDatum(&from[i]);
	args[0] = PointerGetDatum(construct_array(elems, nfrom, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
	args[1] = to ? UUIDPGetDatum(to) : (Datum) 0;
	nulls[1] = to ? ' ' : 'n';
	n = spi_exec(&store_owners, args, nulls);
	*owners = palloc(sizeof(pg_uuid_t) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
		(*owners)[i] = spi_get_uuid(i, 1);
	*nowners = (int) n;
	return n > 0;
}

/* The verified purchase confirms the user's provisional claims of it. */
int
claims_confirm(const pg_uuid_t *user_id, const StoreTxn *txn)
{
	Datum		args[3] = {UUIDPGetDatum(user_id), CStringGetTextDatum(txn->transaction_id),
		CStringGetTextDatum(txn->original_transaction_id ? txn->original_transaction_id
	: txn->transaction_id)};

	return (int) spi_exec(&claims_confirm_stmt, args, NULL);
}

/*
 * Caches the best active entitlement on the account and re-derives the
 * effective plan.  Called after entitlements change, and by account_lock()
 * when the cached one has lapsed.
 */
void
entitlements_refresh(Account *acct)
{
	char	   *plan;
	bool		has_until;
	TimestampTz until;

	if (entitlements_best(&acct->user_id, &plan, &has_until, &until))
		account_set_entitlement(acct, plan, has_until, until);
	else
		account_set_entitlement(acct, NULL, false, 0);
}

/*
 * The user's best active entitlement: its plan and end (has_until false: no
 * end).  False when the user has none.  Reads only.
 */
bool
entitlements_best(const pg_uuid_t *user_id, char **plan, bool *has_until, TimestampTz *until)
{
	Datum		args[1] = {UUIDPGetDatum(user_id)};

	if (spi_exec(&best_entitlement, args, NULL) == 0)
		return false;
	*plan = spi_get_cstring_or_null(0, 1);
	*has_until = spi_get_time_or_null(0, 2, until);
	return true;
}

/* ---- receipts without a ledger entry ---- */

/*
 * credits.receipt of a subscription: no ledger entry (entry_id NULL), kind
 * 'entitlement', amount 0; the caller has set the balance and daily_remaining
 * right after the plan changed.
 */
static void
entitlement_receipt(Receipt *receipt, const pg_uuid_t *user_id, bool replayed,
					TimestampTz created_at)
{
	receipt->no_entry = true;
	receipt->user_id = *user_id;
	receipt->kind = "entitlement";
	receipt->amount = 0;
	receipt->replayed = replayed;
	receipt->created_at = created_at;
}

/* The first result of an applied transaction, again (replayed). */
static CachedStatement entry_receipt = {
	"SELECT kind::text, amount, balance_after, daily_remaining, created_at"
	"  FROM credits.ledger WHERE id = $1",
	1, {INT8OID}
};

/* ---- credits.apply_purchase ---- */

static const char *
required_text(FunctionCallInfo fcinfo, int argno, const char *field, int max_chars)
{
	text	   *value;

	require_arg(fcinfo, argno, field);
	value = optional_text_arg(fcinfo, argno, field, max_chars);
	if (VARSIZE_ANY_EXHDR(value) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", field),
				 errdetail("{\"field\": \"%s\"}", field),
				 errhint("Pass the store's identifier.")));
	return text_to_cstring(value);
}

static void
refuse_unknown_product(const char *product_id)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown product \"%s\"", product_id),
			 errdetail("{\"field\": \"product_id\"}"),
			 errhint("Map the store product in credits.products (a plan for a subscription, credits for a pack).")));
}

/*
 * credits.apply_purchase(user_id uuid, product_id text, transaction_id text,
 *     source text, purchased_at timestamptz, expires_at timestamptz default null)
 *   returns credits.receipt
 *
 * Applies one verified store transaction, exactly once per (source,
 * transaction_id): a pack becomes a lot (a `purchase` entry), a subscription
 * starts or extends an entitlement (a receipt without entry: entry_id NULL,
 * kind 'entitlement').  A repeat returns the first result, replayed; the same
 * transaction for another user or product is refused (PT409).
 */
PG_FUNCTION_INFO_V1(credits_apply_purchase);
Datum
credits_apply_purchase(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *user_id;
	StoreTxn	txn = {0};
	Product		product;
	PurchaseRow prior;
	AccountSet	set;
	Account    *acct;
	EntitlementRow existing;
	bool		has_existing;
	EntitlementRow ent;
	Receipt		receipt = {0};
	bool		subscription_receipt = false;
	bool		replayed = false;
	bool		found;
	bool		over_tombstone = false;
	TimestampTz created_at = 0;

	refuse_client_request("credits.apply_purchase");

	require_arg(fcinfo, 0, "user_id");
	user_id = PG_GETARG_UUID_P(0);
	txn.product_id = required_text(fcinfo, 1, "product_id", CREDITS_MAX_KEY_CHARS);
	require_arg(fcinfo, 2, "transaction_id");
	txn.transaction_id = text_to_cstring(optional_key_arg(fcinfo, 2, "transaction_id"));
	txn.source = required_text(fcinfo, 3, "source", 64);
	require_arg(fcinfo, 4, "purchased_at");
	txn.has_purchased_at = true;
	txn.purchased_at = PG_GETARG_TIMESTAMPTZ(4);
	txn.event_at = txn.purchased_at;
	txn.has_expires_at = !PG_ARGISNULL(5);
	txn.expires_at = txn.has_expires_at ? PG_GETARG_TIMESTAMPTZ(5) : 0;
	if (txn.has_expires_at && txn.expires_at <= GetCurrentTransactionStartTimestamp())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("expires_at must be in the future"),
				 errdetail("{\"field\": \"expires_at\"}"),
				 errhint("Pass NULL for a purchase that does not end.")));

	SPI_connect();
	if (!product_find(txn.product_id, txn.source, &product))
		refuse_unknown_product(txn.product_id);

	/*
	 * A subscription may move an entitlement that another user holds: lock
	 * both, in order, then read it again under the locks.
	 */
	has_existing = product.plan != NULL &&
		entitlement_find(txn.source, txn.transaction_id, NULL, &existing);
	{
		pg_uuid_t	ids[2];

		ids[0] = *user_id;
		ids[1] = has_existing ? existing.user_id : *user_id;
		accounts_lock(&set, ids, 2);
	}
	acct = accounts_get(&set, user_id);
	has_existing = product.plan != NULL &&
		entitlement_find_locked(&set, txn.source, txn.transaction_id, &existing);

	found = purchase_find(txn.source, txn.transaction_id, &prior);
	if (found)
		purchase_check_kind(&prior, txn.source, txn.transaction_id,
							product.plan == NULL ? "pack" : "subscription");
	if (found && !prior.has_entry && product.plan == NULL)
	{
		/* a refund (or its reversal) arrived before the purchase itself */
		if (purchase_is_refunded(&prior))
			refuse_purchase_conflict(txn.source, txn.transaction_id, "refunded", false, 0);
		found = false;
		over_tombstone = true;
	}

	if (found)
	{
		/* applied to an account since deleted: recognized, never credited again */
		if (!prior.has_user || uuid_order(&prior.user_id, user_id) != 0 ||
			strcmp(prior.product_id, txn.product_id) != 0)
			refuse_purchase_conflict(txn.source, txn.transaction_id, "applied",
									 prior.has_entry, prior.entry_id);
		replayed = true;
		if (prior.has_entry)
		{
			Datum		args[1] = {Int64GetDatum(prior.entry_id)};

			spi_exec(&entry_receipt, args, NULL);
			receipt.entry_id = prior.entry_id;
			receipt.user_id = *user_id;
			receipt.kind = get_cstring_kept(0, 1);	/* the receipt is built after SPI_finish() */
			receipt.amount = spi_get_int64(0, 2);
			receipt.balance = spi_get_int64(0, 3);
			receipt.has_daily_remaining = spi_get_int64_or_null(0, 4, &receipt.daily_remaining);
			receipt.created_at = spi_get_time(0, 5);
			receipt.replayed = true;
		}
		else
		{
			subscription_receipt = true;
			receipt.balance = prior.balance;
			receipt.has_daily_remaining = prior.has_daily_remaining;
			receipt.daily_remaining = prior.daily_remaining;
			created_at = prior.created_at;
		}
		accounts_save(&set, false);	/* whatever account_lock maintained */
	}
	else if (product.plan == NULL)
	{
		LedgerEntry entry;

		pack_credit(acct, &txn, &product, over_tombstone, &entry);
		account_save(acct);
		receipt_from_entry(acct, &entry, &receipt);
	}
	else
	{
		EntitlementChange change = {0};
		EntitlementRow extend;
		const EntitlementRow *target = NULL;
		bool		stale = false;

		change.has_expires_at = txn.has_expires_at;
		change.expires_at = txn.expires_at;
		if (has_existing)
		{
			/* the store already reported something newer about it: keep that */
			stale = existing.last_event_at > txn.event_at;
			target = &existing;
		}
		else
		{
			Datum		args[3] = {UUIDPGetDatum(user_id), CStringGetTextDatum(txn.source),
			CStringGetTextDatum(txn.product_id)};

			if (spi_exec(&entitlement_to_extend, args, NULL) > 0)
			{
				/* a renewal of the same product: extend, never shorten */
				load_entitlement(&extend);
				target = &extend;
				if (!extend.has_expires_at)
					change.has_expires_at = false;
				else if (change.has_expires_at && extend.expires_at > change.expires_at)
					change.expires_at = extend.expires_at;
				if (extend.last_event_at > txn.event_at)
					txn.event_at = extend.last_event_at;
			}
		}
		if (stale)
			ent = existing;
		else
		{
			entitlement_write(user_id, target, &txn, txn.transaction_id, &product, &change, &ent);
			claims_confirm(user_id, &txn);
		}
		accounts_save(&set, !stale);
		purchase_record_subscription(user_id, &txn, ent.id, acct);
		subscription_receipt = true;
		receipt.balance = acct->balance;
		receipt.has_daily_remaining = account_daily_remaining(acct, &receipt.daily_remaining);
		created_at = GetCurrentTransactionStartTimestamp();
	}
	SPI_finish();

	if (subscription_receipt)
		entitlement_receipt(&receipt, user_id, replayed, created_at);
	PG_RETURN_DATUM(receipt_datum(fcinfo, &receipt));
}

/* ---- credits.claim_pending_purchase ---- */

static Datum
claim_result(const char *status, const char *reason, const char *plan, bool has_expires_at,
			 TimestampTz expires_at, bool provisional, int claims_left)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"status\": %s, \"reason\": %s, \"plan\": %s, \"provisional\": %s",
					 json_quote(status), reason ? json_quote(reason) : "null",
					 plan ? json_quote(plan) : "null", provisional ? "true" : "false");
	if (has_expires_at)
	{
		char		iso[MAXDATELEN + 1];

		JsonEncodeDateTime(iso, TimestampTzGetDatum(expires_at), TIMESTAMPTZOID, NULL);
		appendStringInfo(&buf, ", \"expires_at\": \"%s\"", iso);
	}
	else
		appendStringInfoString(&buf, ", \"expires_at\": null");
	if (claims_left >= 0)
		appendStringInfo(&buf, ", \"claims_left_today\": %d", claims_left);
	appendStringInfoChar(&buf, '}');
	/* returned after SPI_finish(): built in the caller's context */
	return SPI_datumTransfer(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)), false, -1);
}

/*
 * credits.claim_pending_purchase(product_id text, transaction_id text) returns jsonb
 *
 * Instant unlock, for the calling user (JWT sub): right after the store's
 * purchase sheet succeeds, the app claims the transaction and gets the
 * product's plan for credits.pending_purchase_grace, before the store's
 * webhook arrives.  The verified webhook (or apply_purchase) confirms the
 * claim; without one it lapses at the end of the window.  At most
 * credits.pending_purchase_daily_limit claims per user in 24 hours (PT429).
 * Packs are not credited provisionally: credits are money, they wait for the
 * store ("awaiting_store").
 */
PG_FUNCTION_INFO_V1(credits_claim_pending_purchase);
Datum
credits_claim_pending_purchase(PG_FUNCTION_ARGS)
{
	pg_uuid_t	user_id;
	const char *product_id;
	const char *transaction_id;
	Product		product;
	Account		acct;
	Datum		result;
	bool		isnull;

	request_user_id(&user_id);
	product_id = required_text(fcinfo, 0, "product_id", CREDITS_CLIENT_MAX_KEY_CHARS);
	require_arg(fcinfo, 1, "transaction_id");
	transaction_id = text_to_cstring(capped_key_arg(fcinfo, 1, "transaction_id",
													CREDITS_CLIENT_MAX_KEY_CHARS));

	SPI_connect();
	/* only products sold by a store: an admin-only one answers like an unknown one */
	if (!product_find(product_id, NULL, &product) || product.admin_only)
		refuse_unknown_product(product_id);
	if (product.plan == NULL)
	{
		result = claim_result("awaiting_store",
							  "credit packs are credited when the store confirms the purchase",
							  NULL, false, 0, false, -1);
		SPI_finish();
		PG_RETURN_DATUM(result);
	}

	account_lock(&user_id, &acct);

	/*
	 * The store was faster: the verified entitlement exists already.  One
	 * of another user is no business of the caller's: that claim goes on as
	 * one of a transaction the store has not reported (no oracle), counted
	 * against the claim limit, and the store confirms it for nobody.
	 */
	{
		Datum		args[2] = {CStringGetTextDatum(transaction_id), UUIDPGetDatum(&user_id)};

		pg_uuid_t	owner;

		if (spi_exec(&claim_verified, args, NULL) > 0 &&
			(owner = spi_get_uuid(0, 1), uuid_order(&owner, &user_id) == 0))
		{
			char	   *plan = spi_get_cstring_or_null(0, 2);
			TimestampTz until;
			bool		has_until = spi_get_time_or_null(0, 3, &until);
			bool		access = spi_get_bool(0, 4);

			result = claim_result(access ? "confirmed" : "ended", NULL, plan, has_until, until,
								  false, -1);
			account_save(&acct);
			SPI_finish();
			PG_RETURN_DATUM(result);
		}
	}

	/* The same claim again: the same unlock, not a new window. */
	{
		Datum		args[2] = {UUIDPGetDatum(&user_id), CStringGetTextDatum(transaction_id)};

		if (spi_exec(&claim_existing, args, NULL) > 0)
		{
			char	   *plan = spi_get_cstring_or_null(0, 2);
			TimestampTz until;
			bool		has_until = spi_get_time_or_null(0, 3, &until);
			char	   *status = spi_get_cstring(0, 4);

			result = claim_result(status, "already claimed", plan, has_until, until,
								  strcmp(status, "confirmed") != 0, -1);
			account_save(&acct);
			SPI_finish();
			PG_RETURN_DATUM(result);
		}
	}

	{
		Datum		args[1] = {UUIDPGetDatum(&user_id)};
		int64		used;
		Interval   *wait;

		spi_exec(&claims_today, args, NULL);
		used = spi_get_int64(0, 1);
		if (used >= credits_pending_daily_limit())
		{
			wait = DatumGetIntervalP(spi_get_typed(0, 2, INTERVALOID, &isnull));
			refuse_claim_limit(credits_pending_daily_limit(),
							   isnull ? 86400000 : (wait->time + wait->day * USECS_PER_DAY) / 1000);
		}

		{
			Datum		ins[5] = {UUIDPGetDatum(&user_id), CStringGetTextDatum(product_id),
				CStringGetTextDatum(product.plan), Int32GetDatum(credits_pending_grace_s()),
			CStringGetTextDatum(transaction_id)};
			TimestampTz until;

			spi_exec(&claim_insert, ins, NULL);
			spi_get_time_or_null(0, 2, &until);
			entitlements_refresh(&acct);
			account_save(&acct);
			result = claim_result("unlocked", NULL, product.plan, true, until, true,
								  (int) (credits_pending_daily_limit() - used - 1));
		}
	}
	SPI_finish();
	PG_RETURN_DATUM(result);
}
