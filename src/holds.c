/*
 * holds.c
 *		Two-phase spending: reserve, capture, release, and the lazy timeout of
 *		holds (holds_release_due, expire_holds).  Also the helpers that give
 *		credits back to the lots they came from, shared with refunds.c.
 *
 * A hold is a `hold` ledger entry that took the reserved credits out of the
 * lots (so they are not spendable), plus a credits.holds row with its state.
 * Settling a hold returns the whole reservation to the very lots it came
 * from (a `release` entry); a capture then charges the actual cost from the
 * same lots (a `capture` entry).  Credits that land in a lot that has expired
 * meanwhile expire at once: a release or a refund never extends a credit's
 * life.
 *
 * Locks: the hold's user is looked up without a lock, then the account row
 * is locked (account_lock, which also releases holds that timed out) and the
 * hold is re-read under it; holds, lots and ledger rows of a user are only
 * changed under that lock.  expire_holds() locks (at most batch_size of)
 * the accounts that have a timed-out hold in user_id order, skipping
 * accounts another transaction holds (the next touch of that account
 * releases them).
 */
#include "credits.h"

#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"

/* ---- statements ---- */

static CachedStatement hold_user = {
	"SELECT user_id, status = 'open' FROM credits.holds WHERE id = $1", 1, {INT8OID}
};

/*
 * A hold as of now, read under its account's lock.  counted_today: its
 * operation is counted in the account's current local day (the same rule as
 * credits.day_count_from_ledger).
 */
static CachedStatement hold_select = {
	"SELECT h.status::text, h.operation, h.units, h.unit_cost, h.unit_charge, h.amount,"
	"       h.expires_at, h.settled_entry_id, e.reference,"
	"       e.created_at >= credits.local_day_start(credits.local_day(now(), a.timezone), a.timezone)"
	"  FROM credits.holds h"
	"  JOIN credits.ledger e ON e.id = h.id"
	"  JOIN credits.accounts a ON a.user_id = h.user_id"
	" WHERE h.id = $1 AND h.user_id = $2",
	2, {INT8OID, UUIDOID}
};

/* The lots the hold took its credits from, in the order they are spent. */
static CachedStatement hold_lots = {
	"SELECT m.lot_id, -m.delta"
	"  FROM credits.ledger e"
	" CROSS JOIN LATERAL (SELECT e.lot_moves[i][1] AS lot_id, e.lot_moves[i][2] AS delta"
	"                       FROM generate_subscripts(e.lot_moves, 1) AS i) m"
	/* one lots_pkey probe per move (OFFSET 0 keeps the planner from hashing all lots) */
	" CROSS JOIN LATERAL (SELECT l.id, l.expires_at, l.priority FROM credits.lots l"
	"                      WHERE l.id = m.lot_id OFFSET 0) l"
	" WHERE e.id = $1"
	" ORDER BY l.expires_at, l.priority DESC, l.id",
	1, {INT8OID}
};

static CachedStatement hold_insert = {
	"INSERT INTO credits.holds (id, user_id, operation, units, unit_cost, unit_charge,"
	"  amount, expires_at)"
	" VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
	8, {INT8OID, UUIDOID, TEXTOID, INT8OID, INT8OID, INT8OID, INT8OID, TIMESTAMPTZOID}
};

static CachedStatement hold_settle = {
	"UPDATE credits.holds SET status = $2::text::credits.hold_status, settled_entry_id = $3"
	" WHERE id = $1 AND status = 'open'",
	3, {INT8OID, TEXTOID, INT8OID}
};

static CachedStatement earliest_open_hold = {
	"SELECT min(expires_at) FROM credits.holds WHERE user_id = $1 AND status = 'open'",
	1, {UUIDOID}
};

static CachedStatement holds_due = {
	"SELECT id FROM credits.holds"
	" WHERE user_id = $1 AND status = 'open' AND expires_at <= now()"
	" ORDER BY id",
	1, {UUIDOID}
};

/* Accounts with a timed-out hold, locked; busy ones are left to their next touch. */
/* At most $1 accounts with a timed-out hold, that no other transaction holds. */
static CachedStatement sweep_accounts = {
	"SELECT a.user_id FROM credits.accounts a"
	" WHERE a.user_id IN (SELECT h.user_id FROM credits.holds h"
	"                      WHERE h.status = 'open' AND h.expires_at <= now())"
	" ORDER BY a.user_id"
	" LIMIT $1"
	" FOR UPDATE OF a SKIP LOCKED",
	1, {INT4OID}
};

static CachedStatement lots_update = {
	"UPDATE credits.lots l SET remaining = l.remaining + m.delta"
	"  FROM unnest($2::bigint[], $3::bigint[]) AS m(lot_id, delta)"
	" WHERE l.id = m.lot_id AND l.user_id = $1"
	" RETURNING l.id, m.delta, l.expires_at",
	3, {UUIDOID, INT8ARRAYOID, INT8ARRAYOID}
};

/* A hold read under the account lock. */
typedef struct Hold
{
	int64		id;
	char	   *status;
	char	   *operation;
	int64		units;
	int64		unit_cost;
	int64		unit_charge;
	int64		amount;
	TimestampTz expires_at;
	bool		has_settled;
	int64		settled_entry_id;
	text	   *reference;
	bool		counted_today;
	/* the lots it took its credits from, in spend order */
	int			nlots;
	int64	   *lot_ids;
	int64	   *lot_amounts;
} Hold;

/* Holds released by holds_release_due since expire_holds() reset it. */
static int64 holds_expired_count = 0;

static bool load_hold(Account *acct, int64 hold_id, Hold *hold);
static void lock_hold(int64 hold_id, Account *acct, Hold *hold);
static void require_open(const Hold *hold);
static void release_hold(Account *acct, const Hold *hold, const char *reason,
						 int16 day_ops, LedgerEntry *entry);
static void settle_hold(Account *acct, const Hold *hold, const char *status, int64 entry_id);

/* ---- giving credits back to lots (also used by refunds.c) ---- */

static Datum
int8_array(int n, const int64 *values)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		elems[i] = Int64GetDatum(values[i]);
	return PointerGetDatum(construct_array(elems, n, INT8OID, sizeof(int64),
										   FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*
 * Adds deltas to the account's lots (one move per lot; positive deltas give
 * credits back, negative ones take them) and returns the moves as
 * lot_moves.  A lot that gets credits back may expire before the account's
 * cached next_expiry (or have expired already): next_expiry is moved up, so
 * lots_expire_if_due() after the entry is written expires them at once.
 */
Datum
lots_add(Account *acct, int nmoves, const int64 *lot_ids, const int64 *deltas)
{
	Datum		args[3];
	uint64		nrows;

	args[0] = UUIDPGetDatum(&acct->user_id);
	args[1] = int8_array(nmoves, lot_ids);
	args[2] = int8_array(nmoves, deltas);
	nrows = spi_exec(&lots_update, args, NULL);
	if (nrows != (uint64) nmoves)
		ereport(ERROR,
				(errcode(ERRCODE_CREDITS_DRIFT),
				 errmsg("credit lots recorded in the ledger are missing"),
				 errdetail("{\"lots\": %d, \"found\": " UINT64_FORMAT "}", nmoves, nrows),
				 errhint("Run credits.reconcile() for this user.")));

	for (uint64 i = 0; i < nrows; i++)
	{
		TimestampTz expires_at;

		if (!spi_get_time_or_null(i, 3, &expires_at) || spi_get_int64(i, 2) <= 0)
			continue;
		if (!acct->has_next_expiry || expires_at < acct->next_expiry)
		{
			acct->has_next_expiry = true;
			acct->next_expiry = expires_at;
		}
	}
	return lot_moves_array(nmoves, lot_ids, deltas);
}

/* Writes the `expire` entries that credits returned to expired lots call for. */
void
lots_expire_if_due(Account *acct)
{
	if (acct->has_next_expiry &&
		acct->next_expiry <= GetCurrentTransactionStartTimestamp())
		lots_expire_due(acct);
}

/* ---- holds ---- */

static bool
load_hold(Account *acct, int64 hold_id, Hold *hold)
{
	Datum		args[2] = {Int64GetDatum(hold_id), UUIDPGetDatum(&acct->user_id)};
	uint64		nlots;
	int64		total = 0;

	if (spi_exec(&hold_select, args, NULL) == 0)
		return false;

	memset(hold, 0, sizeof(*hold));
	hold->id = hold_id;
	hold->status = spi_get_cstring(0, 1);
	hold->operation = spi_get_cstring(0, 2);
	hold->units = spi_get_int64(0, 3);
	hold->unit_cost = spi_get_int64(0, 4);
	hold->unit_charge = spi_get_int64(0, 5);
	hold->amount = spi_get_int64(0, 6);
	hold->expires_at = spi_get_time(0, 7);
	hold->has_settled = spi_get_int64_or_null(0, 8, &hold->settled_entry_id);
	hold->reference = spi_get_text_or_null(0, 9);
	hold->counted_today = spi_get_bool(0, 10);

	nlots = spi_exec(&hold_lots, args, NULL);
	hold->nlots = (int) nlots;
	hold->lot_ids = palloc(sizeof(int64) * Max(nlots, 1));
	hold->lot_amounts = palloc(sizeof(int64) * Max(nlots, 1));
	for (uint64 i = 0; i < nlots; i++)
	{
		hold->lot_ids[i] = spi_get_int64(i, 1);
		hold->lot_amounts[i] = spi_get_int64(i, 2);
		total = checked_add(total, hold->lot_amounts[i], "amount");
	}
	if (total != hold->amount)
		ereport(ERROR,
				(errcode(ERRCODE_CREDITS_DRIFT),
				 errmsg("hold " INT64_FORMAT " does not match its ledger entry", hold_id),
				 errdetail("{\"hold_id\": " INT64_FORMAT ", \"amount\": " INT64_FORMAT ", \"in_lots\": " INT64_FORMAT "}",
						   hold_id, hold->amount, total),
				 errhint("Run credits.reconcile() for this user.")));
	return true;
}

static void
refuse_unknown_hold(int64 hold_id)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown hold"),
			 errdetail("{\"field\": \"hold_id\"}"),
			 errhint("Pass the entry_id of the receipt that credits.reserve() returned.")));
}

/*
 * Finds the hold's user, locks that account (which releases the account's
 * timed-out holds) and reads the hold under the lock.
 */
static void
lock_hold(int64 hold_id, Account *acct, Hold *hold)
{
	Datum		args[1] = {Int64GetDatum(hold_id)};
	pg_uuid_t	user_id;
	bool		was_open;

	if (spi_exec(&hold_user, args, NULL) == 0)
		refuse_unknown_hold(hold_id);
	user_id = spi_get_uuid(0, 1);
	was_open = spi_get_bool(0, 2);

	account_lock(&user_id, acct);
	if (!load_hold(acct, hold_id, hold))
		refuse_unknown_hold(hold_id);	/* the account was deleted meanwhile */

	/*
	 * Timed out just now, most likely by our own account_lock(): a refusal
	 * rolls that release back, so its entry id must not be reported.
	 */
	if (was_open && strcmp(hold->status, "expired") == 0)
		hold->has_settled = false;
}

/*
 * Only an open hold can be captured or released.  One past its expires_at
 * has been released by account_lock already; the second test only guards
 * against a next_hold_expiry that was left late.
 */
static void
require_open(const Hold *hold)
{
	if (strcmp(hold->status, "open") != 0)
		refuse_hold_not_open(hold->id, hold->status, hold->has_settled, hold->settled_entry_id);
	if (hold->expires_at <= GetCurrentTransactionStartTimestamp())
		refuse_hold_not_open(hold->id, "expired", false, 0);
}

/*
 * Appends the `release` entry that gives the whole reservation back to the
 * lots it came from.  day_ops -1 gives the day's operation back.
 */
static void
release_hold(Account *acct, const Hold *hold, const char *reason, int16 day_ops,
			 LedgerEntry *entry)
{
	memset(entry, 0, sizeof(*entry));
	entry->kind = "release";
	entry->amount = hold->amount;
	entry->operation = hold->operation;
	entry->has_units = true;
	entry->units = hold->units;
	entry->has_ref_id = true;
	entry->ref_id = hold->id;
	entry->day_ops = day_ops;
	entry->reference = hold->reference;
	entry->reason = cstring_to_text(reason);
	if (hold->nlots > 0)
		entry->lot_moves = lots_add(acct, hold->nlots, hold->lot_ids, hold->lot_amounts);

	account_add_balance(acct, hold->amount);
	if (day_ops != 0)
		account_count_operation(acct, day_ops);
	ledger_append(acct, entry);
}

/* Marks the hold settled and recomputes when the next open hold times out. */
static void
settle_hold(Account *acct, const Hold *hold, const char *status, int64 entry_id)
{
	Datum		args[3] = {Int64GetDatum(hold->id), CStringGetTextDatum(status),
	Int64GetDatum(entry_id)};
	Datum		user_arg[1] = {UUIDPGetDatum(&acct->user_id)};

	if (spi_exec(&hold_settle, args, NULL) != 1)
		elog(ERROR, "credits: hold " INT64_FORMAT " was settled concurrently", hold->id);

	spi_exec(&earliest_open_hold, user_arg, NULL);
	acct->has_next_hold_expiry = spi_get_time_or_null(0, 1, &acct->next_hold_expiry);
}

/*
 * Releases every open hold of the account whose expires_at has passed
 * (status expired), giving their credits back; called by account_lock() when
 * next_hold_expiry has passed.
 */
void
holds_release_due(Account *acct)
{
	Datum		args[1] = {UUIDPGetDatum(&acct->user_id)};
	uint64		ndue = spi_exec(&holds_due, args, NULL);
	int64	   *ids = palloc(sizeof(int64) * Max(ndue, 1));

	for (uint64 i = 0; i < ndue; i++)
		ids[i] = spi_get_int64(i, 1);

	for (uint64 i = 0; i < ndue; i++)
	{
		Hold		hold;
		LedgerEntry entry;

		if (!load_hold(acct, ids[i], &hold))
			continue;
		release_hold(acct, &hold, "hold timed out", hold.counted_today ? -1 : 0, &entry);
		settle_hold(acct, &hold, "expired", entry.id);
		holds_expired_count++;
	}

	/* nothing was due: next_hold_expiry was early, make it exact */
	spi_exec(&earliest_open_hold, args, NULL);
	acct->has_next_hold_expiry = spi_get_time_or_null(0, 1, &acct->next_hold_expiry);

	lots_expire_if_due(acct);
}

/* ---- SQL-callable functions ---- */

/*
 * credits.reserve(user_id uuid, operation text, units bigint default 1,
 *     idempotency_key text default null, reference text default null,
 *     metadata jsonb default '{}') returns credits.receipt
 * entry_id of the receipt is the hold id.
 */
PG_FUNCTION_INFO_V1(credits_reserve);
Datum
credits_reserve(PG_FUNCTION_ARGS)
{
	OperationRequest req;
	Account		acct;
	Receipt		receipt;

	refuse_client_request("credits.reserve");

	operation_request_from_args(fcinfo, "reserve", &req);

	SPI_connect();
	credits_require_writable();
	if (!ledger_lock_or_replay(req.user_id, req.key, &req.request_hash, &acct, &receipt))
	{
		LedgerEntry entry = {0};
		TimestampTz expires_at = GetCurrentTransactionStartTimestamp() +
			(int64) credits_hold_timeout_s() * USECS_PER_SEC;
		Datum		args[8];

		charge_operation(&acct, &req, "hold", &entry);

		/* charge and list cost are cost x units: the divisions are exact */
		args[0] = Int64GetDatum(entry.id);
		args[1] = UUIDPGetDatum(req.user_id);
		args[2] = PointerGetDatum(req.operation);
		args[3] = Int64GetDatum(req.units);
		args[4] = Int64GetDatum(entry.list_cost / req.units);
		args[5] = Int64GetDatum(-entry.amount / req.units);
		args[6] = Int64GetDatum(-entry.amount);
		args[7] = TimestampTzGetDatum(expires_at);
		spi_exec(&hold_insert, args, NULL);
		if (!acct.has_next_hold_expiry || expires_at < acct.next_hold_expiry)
		{
			acct.has_next_hold_expiry = true;
			acct.next_hold_expiry = expires_at;
		}

		account_save(&acct);
		receipt_from_entry(&acct, &entry, &receipt);
	}
	SPI_finish();
	PG_RETURN_DATUM(receipt_datum(fcinfo, &receipt));
}

/*
 * credits.capture(hold_id bigint, units bigint default null) returns credits.receipt
 * Charges unit price at reserve time x units (NULL: all reserved units); the
 * rest of the reservation returns.  Writes `release` (+reserved) then
 * `capture` (-charge), both from and to the hold's own lots.
 */
PG_FUNCTION_INFO_V1(credits_capture);
Datum
credits_capture(PG_FUNCTION_ARGS)
{
	int64		hold_id;
	bool		all_units = PG_ARGISNULL(1);
	int64		units = 0;
	Account		acct;
	Hold		hold;
	LedgerEntry release;
	LedgerEntry entry = {0};
	int64		charge;
	int64		left;
	int			nmoves = 0;
	int64	   *lot_ids;
	int64	   *deltas;
	Receipt		receipt;

	refuse_client_request("credits.capture");

	require_arg(fcinfo, 0, "hold_id");
	hold_id = PG_GETARG_INT64(0);
	if (!all_units)
	{
		units = PG_GETARG_INT64(1);
		if (units <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("units must be positive"),
					 errdetail("{\"field\": \"units\"}"),
					 errhint("Capture at least 1 unit, or release the hold when the job produced nothing.")));
	}

	SPI_connect();
	lock_hold(hold_id, &acct, &hold);
	require_open(&hold);
	if (all_units)
		units = hold.units;
	if (units > hold.units)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot capture more units than were reserved"),
				 errdetail("{\"field\": \"units\", \"reserved_units\": " INT64_FORMAT ", \"units\": " INT64_FORMAT "}",
						   hold.units, units),
				 errhint("Capture at most the reserved units; reserve more up front for larger jobs.")));
	charge = checked_mul(hold.unit_charge, units, "amount");
	entry.list_cost = checked_mul(hold.unit_cost, units, "list_cost");

	/* the whole reservation returns to its lots; the operation itself happened */
	release_hold(&acct, &hold, "hold captured", 0, &release);

	/* the charge comes from the same lots, in the order the hold took them */
	lot_ids = palloc(sizeof(int64) * Max(hold.nlots, 1));
	deltas = palloc(sizeof(int64) * Max(hold.nlots, 1));
	left = charge;
	for (int i = 0; i < hold.nlots && left > 0; i++)
	{
		int64		take = Min(hold.lot_amounts[i], left);

		lot_ids[nmoves] = hold.lot_ids[i];
		deltas[nmoves++] = -take;
		left -= take;
	}
	Assert(left == 0);			/* charge <= amount = sum(lot_amounts) */

	entry.kind = "capture";
	entry.amount = -charge;
	entry.operation = hold.operation;
	entry.has_units = true;
	entry.units = units;
	entry.has_list_cost = true;
	entry.has_ref_id = true;
	entry.ref_id = hold.id;
	entry.reference = hold.reference;
	if (nmoves > 0)
		entry.lot_moves = lots_add(&acct, nmoves, lot_ids, deltas);
	account_add_balance(&acct, -charge);
	ledger_append(&acct, &entry);

	settle_hold(&acct, &hold, "captured", entry.id);
	lots_expire_if_due(&acct);
	account_save(&acct);
	receipt_from_entry(&acct, &entry, &receipt);
	SPI_finish();
	PG_RETURN_DATUM(receipt_datum(fcinfo, &receipt));
}

/*
 * credits.release(hold_id bigint) returns credits.receipt
 * Gives the whole reservation back; the operation no longer counts towards
 * the day it was reserved in (when that is still today).
 */
PG_FUNCTION_INFO_V1(credits_release);
Datum
credits_release(PG_FUNCTION_ARGS)
{
	int64		hold_id;
	Account		acct;
	Hold		hold;
	LedgerEntry entry;
	Receipt		receipt;

	refuse_client_request("credits.release");

	require_arg(fcinfo, 0, "hold_id");
	hold_id = PG_GETARG_INT64(0);

	SPI_connect();
	lock_hold(hold_id, &acct, &hold);
	require_open(&hold);
	release_hold(&acct, &hold, "hold released", hold.counted_today ? -1 : 0, &entry);
	settle_hold(&acct, &hold, "released", entry.id);
	lots_expire_if_due(&acct);
	account_save(&acct);
	receipt_from_entry(&acct, &entry, &receipt);
	SPI_finish();
	PG_RETURN_DATUM(receipt_datum(fcinfo, &receipt));
}

/*
 * credits.expire_holds(batch_size integer default 1000) returns bigint
 * Releases the holds that have timed out (for an admin or a pg_cron job; the
 * next touch of an account does the same lazily), in at most batch_size
 * accounts, so that one call locks a bounded number of accounts.  Returns
 * how many holds it released: call again while that is more than 0.
 */
PG_FUNCTION_INFO_V1(credits_expire_holds);
Datum
credits_expire_holds(PG_FUNCTION_ARGS)
{
	int32		batch_size;
	uint64		naccounts;
	pg_uuid_t  *users;
	int64		released;

	refuse_client_request("credits.expire_holds");
	require_arg(fcinfo, 0, "batch_size");
	batch_size = PG_GETARG_INT32(0);
	if (batch_size < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch_size must be positive"),
				 errdetail_internal("{\"field\": \"batch_size\"}"),
				 errhint("Pass how many accounts one call may lock, e.g. 1000.")));

	SPI_connect();
	{
		Datum		args[1] = {Int32GetDatum(batch_size)};

		naccounts = spi_exec(&sweep_accounts, args, NULL);
	}
	users = palloc(sizeof(pg_uuid_t) * Max(naccounts, 1));
	for (uint64 i = 0; i < naccounts; i++)
		users[i] = spi_get_uuid(i, 1);

	holds_expired_count = 0;
	for (uint64 i = 0; i < naccounts; i++)
	{
		Account		acct;

		account_lock(&users[i], &acct);	/* releases the due holds */
		holds_release_due(&acct);	/* finds none, unless next_hold_expiry was late */
		account_save(&acct);
	}
	released = holds_expired_count;
	holds_expired_count = 0;
	SPI_finish();
	PG_RETURN_INT64(released);
}
