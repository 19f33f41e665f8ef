/*
 * account.c
 *		Loading, locking, lazily creating and maintaining an account row.
 *
 * account_lock() is the one entry point for every write: it takes the
 * account row lock (FOR UPDATE, through the primary key: rows.c), creating
 * the account with its plan's signup bonus on first touch (a user id that
 * was deleted starts from its deletion record instead, without a bonus:
 * deletion.c; an anonymous sign-in's bonus waits until the account is
 * linked), and then does the lazy maintenance
 * that replaces cron jobs: it switches to a time zone whose change has come
 * due (grants.c) and recounts today there, rolls the day counter over at local midnight,
 * releases holds that timed out, writes `expire` entries for lots that
 * expired, and grants the monthly allocation on the first touch of a
 * period; when the cached entitlement has lapsed it recomputes the effective
 * plan first.  Changes are made to the in-memory Account and written back
 * once by account_save(), which also sends NOTIFY credits (delivered at
 * commit; notify.c).
 *
 * account_read() never writes: it reads the row without a lock and computes
 * what a first touch or the maintenance due would change, for the read
 * functions (READ ONLY transactions, hot standbys).  The effective plan's
 * settings come from the backend's plan cache (price_list.c).
 *
 * On a shard, a user with no account here that belongs to another shard is
 * refused before anything is read or created (shard.c).
 *
 * Locks: the account row (FOR UPDATE); a first touch takes the user id's
 * existence lock (deletion.c) before it reads the deletion record and
 * inserts the row, so that it never overlaps a deletion of that user id.
 */
#include "credits.h"

#include "access/table.h"
#include "access/xact.h"
#include "access/tableam.h"
#include "catalog/pg_type.h"
#include "common/int.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"

/* The columns of credits.accounts the C code reads or writes, in the order of the names below. */
enum
{
	ACC_PLAN, ACC_TIMEZONE, ACC_BALANCE, ACC_DAY, ACC_DAY_COUNT,
	ACC_ALLOCATION_PERIOD, ACC_NEXT_EXPIRY, ACC_NEXT_HOLD_EXPIRY, ACC_ENTITLEMENT_PLAN,
	ACC_ENTITLEMENT_UNTIL, ACC_RATE_TAT, ACC_LAST_OPERATION_AT, ACC_UPDATED_AT,
	ACC_TIMEZONE_NEXT, ACC_TIMEZONE_FROM, ACC_TIMEZONE_CHANGED_AT, ACC_SIGNUP_BONUS_DUE,
	ACC_NCOLUMNS
};

static CreditsTable accounts_table = {
	"accounts", ACC_NCOLUMNS,
	{{"plan", "pg_catalog.text", true}, {"timezone", "pg_catalog.text", true},
		{"balance", "bigint", true}, {"day", "pg_catalog.date", true},
		{"day_count", "integer", true}, {"allocation_period", "pg_catalog.date", false},
		{"next_expiry", "timestamp with time zone", false},
		{"next_hold_expiry", "timestamp with time zone", false},
		{"entitlement_plan", "pg_catalog.text", false},
		{"entitlement_until", "timestamp with time zone", false},
		{"rate_tat", "timestamp with time zone", false},
		{"last_operation_at", "timestamp with time zone", false},
		{"updated_at", "timestamp with time zone", false},
		{"timezone_next", "pg_catalog.text", false},
		{"timezone_from", "timestamp with time zone", false},
		{"timezone_changed_at", "timestamp with time zone", false},
	{"signup_bonus_due", "boolean", true}}
};

/*
 * A new account; for a user id that was deleted, from its deletion record
 * (deletion.c): plan, time zone, allocated month and limiter state.
 */
static CachedStatement account_insert = {
	"INSERT INTO credits.accounts (user_id, plan, day, timezone, timezone_next, timezone_from,"
	"  timezone_changed_at, allocation_period, rate_tat, last_operation_at, signup_bonus_due)"
	" VALUES ($1, $2, coalesce($3, (now() AT TIME ZONE 'UTC')::date), coalesce($4, 'UTC'),"
	"  $5, $6, $7, $8, $9, $10, coalesce($11, false))"
	" ON CONFLICT (user_id) DO NOTHING RETURNING user_id",
	11, {UUIDOID, TEXTOID, DATEOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID, DATEOID,
	TIMESTAMPTZOID, TIMESTAMPTZOID, BOOLOID}
};

/* Operations counted in the ledger since `today` ($2) began in zone $3 (the one day rule). */
static CachedStatement day_count_in_zone = {
	"SELECT coalesce(sum(day_ops), 0)::integer FROM credits.ledger"
	" WHERE user_id = $1 AND day_ops IS NOT NULL"
	"   AND created_at >= credits.local_day_start($2, $3)",
	3, {UUIDOID, DATEOID, TEXTOID}
};

static CachedStatement account_switch_timezone = {
	"UPDATE credits.accounts SET timezone = timezone_next, timezone_next = NULL,"
	"  timezone_from = NULL, updated_at = now()"
	" WHERE user_id = $1 AND timezone_next IS NOT NULL",
	1, {UUIDOID}
};

/* End of the current local month (the start of the next one), for allocations that do not roll over. */
static CachedStatement period_end = {
	"SELECT credits.local_day_start(($2::date + interval '1 month')::date, a.timezone)"
	"  FROM credits.accounts a WHERE a.user_id = $1",
	2, {UUIDOID, DATEOID}
};

static CachedStatement account_set_entitlement_stmt = {
	"UPDATE credits.accounts SET entitlement_plan = $2, entitlement_until = $3, updated_at = now()"
	" WHERE user_id = $1",
	3, {UUIDOID, TEXTOID, TIMESTAMPTZOID}
};

/*
 * What account_lock()'s maintenance would change, read without writing:
 * the credits that timed-out holds give back, less those of expired lots
 * (with what those holds return to them), and the operations of today that
 * the holds give back.  Holds return credits to the lots they came from
 * (holds.c), and count in the day of the one day rule (local_day.c).
 */
static CachedStatement maintenance_effect = {
	"WITH due_holds AS ("
	"  SELECT h.amount, e.lot_moves,"
	"         e.created_at >= credits.local_day_start(credits.local_day(now(), a.timezone),"
	"                                                  a.timezone) AS counted_today"
	"    FROM credits.holds h"
	"    JOIN credits.ledger e ON e.id = h.id"
	"    JOIN credits.accounts a ON a.user_id = h.user_id"
	"   WHERE h.user_id = $1 AND h.status = 'open' AND h.expires_at <= now()"
	"), returned AS ("
	"  SELECT d.lot_moves[i][1] AS lot_id, sum(-d.lot_moves[i][2]) AS amount"
	"    FROM due_holds d CROSS JOIN LATERAL generate_subscripts(d.lot_moves, 1) AS i"
	"   GROUP BY 1"
	")"
	" SELECT (coalesce((SELECT sum(amount) FROM due_holds), 0)"
	"         - coalesce((SELECT sum(l.remaining + coalesce(r.amount, 0))"
	"                       FROM credits.lots l LEFT JOIN returned r ON r.lot_id = l.id"
	"                      WHERE l.user_id = $1 AND l.expires_at <= now()"
	"                        AND (l.spendable OR r.amount IS NOT NULL)), 0))::bigint,"
	"        (SELECT count(*) FROM due_holds WHERE counted_today)::integer",
	1, {UUIDOID}
};

static bool load_account(const pg_uuid_t *user_id, Account *acct, bool lock, Snapshot snapshot,
						 bool *as_seen);
static void read_new_account(const pg_uuid_t *user_id, Account *acct);
static void set_zone_dates(Account *acct);
static void switch_timezone(Account *acct);
static int32 carried_day_count(const Account *acct, const DeletionRecord *rec);
static void carry_day_count(Account *acct, int32 count);
static void read_maintained(Account *acct);
static void default_plan(PlanSettings *plan);
static bool create_account(const pg_uuid_t *user_id);
static void grant_signup_bonus(Account *acct);
static int64 signup_bonus_of(const char *plan_name);
static bool bonus_withheld(const pg_uuid_t *user_id);
static void roll_day_over(Account *acct);
static bool allocation_due(const Account *acct);
static void grant_monthly_allocation(Account *acct);
static bool maintenance_due(const Account *acct);
static bool entitlement_lapsed(const Account *acct);

/* A nullable text column of an accounts row. */
static char *
get_text(TupleTableSlot *row, int col)
{
	bool		isnull;
	Datum		value = row_get(&accounts_table, row, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(value);
}

/* A nullable timestamptz column of an accounts row: false when NULL. */
static bool
get_timestamptz(TupleTableSlot *row, int col, TimestampTz *value)
{
	bool		isnull;
	Datum		datum = row_get(&accounts_table, row, col, &isnull);

	*value = isnull ? 0 : DatumGetTimestampTz(datum);
	return !isnull;
}

/* An account names a plan that credits.plans lacks (drift, or credits.default_plan). */
pg_noreturn static void refuse_missing_plan(const char *name);
static void
refuse_missing_plan(const char *name)
{
	ereport(ERROR,
			(errcode(ERRCODE_CREDITS_DRIFT),
			 errmsg("plan \"%s\" of an account does not exist", name),
			 errdetail_internal("{\"plan\": %s}", json_quote(name)),
			 errhint("Create the plan in credits.plans, or set credits.default_plan to a plan that exists.")));
}

/* Sets the account's effective plan and that plan's settings. */
static void
use_plan(Account *acct, const char *name)
{
	PlanSettings plan;

	if (!plan_find(name, &plan))
		refuse_missing_plan(name);
	acct->plan = pstrdup(plan.name);
	acct->plan_rank = plan.rank;
	acct->has_daily_limit = plan.has_daily_limit;
	acct->daily_limit = plan.daily_limit;
	acct->monthly_allocation = plan.monthly_allocation;
	acct->allocation_rollover = plan.allocation_rollover;
	acct->bypass_credits = plan.bypass_credits;
	acct->has_rate_limit = plan.has_rate_limit;
	acct->rate_burst = plan.rate_burst;
	acct->rate_per_second = plan.rate_per_second;
	acct->cooldown_ms = plan.cooldown_ms;
}

/* An active entitlement's plan, else the base plan. */
static const char *
effective_plan(const Account *acct)
{
	if (acct->entitlement_plan != NULL &&
		(!acct->has_entitlement_until ||
		 acct->entitlement_until > GetCurrentTransactionStartTimestamp()))
		return acct->entitlement_plan;
	return acct->base_plan;
}

/* Today (the one day rule: local_day.c) and the first day of this month, in the account's time zone. */
static void
set_local_dates(Account *acct, Datum timezone)
{
	int			year,
				month,
				mday;

	acct->today = local_day(DatumGetTextPP(timezone), GetCurrentTransactionStartTimestamp());
	j2date(acct->today + POSTGRES_EPOCH_JDATE, &year, &month, &mday);
	acct->period = date2j(year, month, 1) - POSTGRES_EPOCH_JDATE;
}

static void
read_account(const pg_uuid_t *user_id, TupleTableSlot *row, Account *acct, bool lock)
{
	bool		isnull;
	Datum		value;

	memset(acct, 0, sizeof(*acct));
	acct->user_id = *user_id;
	acct->locked = lock;
	acct->base_plan = get_text(row, ACC_PLAN);
	acct->balance = DatumGetInt64(row_get(&accounts_table, row, ACC_BALANCE, &isnull));
	acct->day = DatumGetDateADT(row_get(&accounts_table, row, ACC_DAY, &isnull));
	acct->day_count = DatumGetInt32(row_get(&accounts_table, row, ACC_DAY_COUNT, &isnull));
	acct->timezone = get_text(row, ACC_TIMEZONE);
	acct->timezone_next = get_text(row, ACC_TIMEZONE_NEXT);
	acct->has_timezone_from = get_timestamptz(row, ACC_TIMEZONE_FROM, &acct->timezone_from);
	acct->has_timezone_changed_at = get_timestamptz(row, ACC_TIMEZONE_CHANGED_AT,
													&acct->timezone_changed_at);
	acct->signup_bonus_due = DatumGetBool(row_get(&accounts_table, row, ACC_SIGNUP_BONUS_DUE,
												  &isnull));
	set_zone_dates(acct);
	value = row_get(&accounts_table, row, ACC_ALLOCATION_PERIOD, &isnull);
	acct->has_allocation_period = !isnull;
	acct->allocation_period = isnull ? 0 : DatumGetDateADT(value);
	acct->has_next_expiry = get_timestamptz(row, ACC_NEXT_EXPIRY, &acct->next_expiry);
	acct->has_next_hold_expiry = get_timestamptz(row, ACC_NEXT_HOLD_EXPIRY,
												 &acct->next_hold_expiry);
	acct->has_rate_tat = get_timestamptz(row, ACC_RATE_TAT, &acct->rate_tat);
	acct->has_last_operation_at = get_timestamptz(row, ACC_LAST_OPERATION_AT,
												  &acct->last_operation_at);
	acct->entitlement_plan = get_text(row, ACC_ENTITLEMENT_PLAN);
	acct->has_entitlement_until = get_timestamptz(row, ACC_ENTITLEMENT_UNTIL,
												  &acct->entitlement_until);
	use_plan(acct, effective_plan(acct));
}

/*
 * Reads the account row through its primary key, locked FOR UPDATE when
 * `lock`, with `snapshot` (NULL: a statement's).  False when there is no such
 * account (or, locking, it was deleted meanwhile).  *as_seen (when asked
 * for): found, and the version locked is the one the snapshot saw.
 */
static bool
load_account(const pg_uuid_t *user_id, Account *acct, bool lock, Snapshot snapshot,
			 bool *as_seen)
{
	Relation	rel = credits_table_open(&accounts_table, lock ? RowShareLock : AccessShareLock);
	RowScan		scan;
	bool		found;

	if (snapshot != NULL)
		row_scan_begin_at(&scan, rel, "accounts_pkey", user_id, NULL, snapshot);
	else
		row_scan_begin(&scan, rel, "accounts_pkey", user_id, NULL);
	found = row_scan_next(&scan) && (!lock || row_lock(&scan));
	if (found)
	{
		read_account(user_id, scan.slot, acct, lock);
		acct->row_tid = scan.slot->tts_tid;
	}
	if (as_seen != NULL)
		*as_seen = found && !scan.followed_update;
	row_scan_end(&scan);
	table_close(rel, NoLock);
	return found;
}

/*
 * The account as the next write would leave it, without writing anything:
 * the read functions answer from it, in READ ONLY transactions and on hot
 * standbys alike.  An account not created yet reads as its first touch
 * would create it; one with maintenance due reads as account_lock() would
 * maintain it.  The usual case (an account up to date) costs one index probe.
 */
void
account_read(const pg_uuid_t *user_id, Account *acct)
{
	if (!load_account(user_id, acct, false, NULL, NULL))
	{
		read_new_account(user_id, acct);
		return;
	}
	if (acct->timezone_due)
		account_recount_day(acct);
	roll_day_over(acct);
	if (maintenance_due(acct))
		read_maintained(acct);
	if (acct->signup_bonus_due && request_is_linked(user_id))
		account_add_balance(acct, signup_bonus_of(acct->base_plan));
}

/*
 * An account that does not exist yet, as create_account() would make it:
 * for a user id that was deleted, from its deletion record, without a
 * signup bonus.
 */
static void
read_new_account(const pg_uuid_t *user_id, Account *acct)
{
	PlanSettings plan;
	DeletionRecord rec;
	bool		returning;

	shard_require_owner(user_id);
	returning = deletion_record_find(user_id, &rec);
	default_plan(&plan);
	memset(acct, 0, sizeof(*acct));
	acct->user_id = *user_id;
	acct->base_plan = pstrdup(returning && rec.plan ? rec.plan : plan.name);
	acct->timezone = returning ? rec.timezone : pstrdup("UTC");	/* the column's default */
	if (returning)
	{
		acct->timezone_next = rec.timezone_next;
		acct->has_timezone_from = rec.has_timezone_from;
		acct->timezone_from = rec.timezone_from;
		acct->has_allocation_period = rec.has_allocation_period;
		acct->allocation_period = rec.allocation_period;
	}
	set_zone_dates(acct);
	acct->day = acct->today;
	if (returning)
		acct->day_count = carried_day_count(acct, &rec);
	use_plan(acct, effective_plan(acct));
	if (!returning && plan.signup_bonus > 0 && !bonus_withheld(user_id))
		account_add_balance(acct, plan.signup_bonus);
	if (allocation_due(acct))
		account_add_balance(acct, acct->monthly_allocation);
}

/*
 * The dates of the account's day: in its time zone, or in the zone a
 * change switches to once that change's local midnight has come.
 */
static void
set_zone_dates(Account *acct)
{
	acct->timezone_due = acct->timezone_next != NULL && acct->has_timezone_from &&
		acct->timezone_from <= GetCurrentTransactionStartTimestamp();
	set_local_dates(acct, CStringGetTextDatum(acct->timezone_due ? acct->timezone_next
											  : acct->timezone));
}

/*
 * Today's count as the ledger has it in the zone of the account's dates:
 * what a time zone change leaves (every local day of the zone in effect
 * counts every operation made in it, also those made before the change).
 */
void
account_recount_day(Account *acct)
{
	Datum		args[3] = {UUIDPGetDatum(&acct->user_id), DateADTGetDatum(acct->today),
		CStringGetTextDatum(acct->timezone_due ? acct->timezone_next : acct->timezone)};

	spi_exec(&day_count_in_zone, args, NULL);
	acct->day = acct->today;
	acct->day_count = (int32) spi_get_int64(0, 1);
}

/* A time zone change whose local midnight has come takes effect. */
static void
switch_timezone(Account *acct)
{
	Datum		args[1] = {UUIDPGetDatum(&acct->user_id)};

	spi_exec(&account_switch_timezone, args, NULL);
	account_recount_day(acct);
	acct->timezone = acct->timezone_next;
	acct->timezone_next = NULL;
	acct->has_timezone_from = false;
	acct->timezone_due = false;
}

/*
 * The count a returning user id takes over: the record's, while its day
 * is still the day in progress.  (Once a pending time zone change has
 * switched, the record's day has ended.)
 */
static int32
carried_day_count(const Account *acct, const DeletionRecord *rec)
{
	if (acct->timezone_due || rec->day != acct->today)
		return 0;
	return rec->day_count;
}

/*
 * Records the day count a returning user id takes over as an `adjust` of
 * no credits that counts those operations today, so that the count stays
 * derivable from the ledger (credits.reconcile).
 */
static void
carry_day_count(Account *acct, int32 count)
{
	LedgerEntry entry = {0};

	if (count <= 0)
		return;
	entry.kind = "adjust";
	entry.amount = 0;
	entry.day_ops = (int16) Min(count, PG_INT16_MAX);
	entry.reason = cstring_to_text("day count carried over from a deleted account");
	account_count_operation(acct, entry.day_ops);
	ledger_append(acct, &entry);
}

/*
 * The effect of account_lock()'s maintenance, computed in memory: the best
 * entitlement replaces a lapsed one, holds that timed out give their
 * credits and the day's operation back (credits that go back to an expired
 * lot expire with it), expired lots stop counting, and this month's
 * allocation is granted.
 */
static void
read_maintained(Account *acct)
{
	Datum		args[1] = {UUIDPGetDatum(&acct->user_id)};

	if (entitlement_lapsed(acct))
	{
		if (!entitlements_best(&acct->user_id, &acct->entitlement_plan,
							   &acct->has_entitlement_until, &acct->entitlement_until))
			acct->entitlement_plan = NULL;
		use_plan(acct, effective_plan(acct));
	}
	spi_exec(&maintenance_effect, args, NULL);
	account_add_balance(acct, spi_get_int64(0, 1));
	account_count_operation(acct, -(int32) spi_get_int64(0, 2));
	if (allocation_due(acct))
		account_add_balance(acct, acct->monthly_allocation);
}

/*
 * Locks the account row (creating the account on first touch) and brings it
 * up to date.  The caller must account_save() after changing it.
 */
void
account_lock(const pg_uuid_t *user_id, Account *acct)
{
	(void) account_lock_as_seen(user_id, acct, NULL);
}

/*
 * account_lock, finding the account row with `snapshot` (the caller's,
 * registered; NULL: a statement's).  Returns true when the version locked is
 * the one that snapshot saw: nothing wrote the account in between (ledger.c
 * relies on this to look for a replay only once).
 */
bool
account_lock_as_seen(const pg_uuid_t *user_id, Account *acct, Snapshot snapshot)
{
	bool		maintained = false;
	bool		created = false;
	bool		as_seen;
	int			attempt;

	credits_require_writable();

	/*
	 * An account another transaction created (our insert did nothing) may
	 * be deleted again before we lock it (delete_account): start over, as a
	 * first touch, with a snapshot that sees it.  Each round means another
	 * transaction committed.
	 */
	for (attempt = 0;
		 !load_account(user_id, acct, true, attempt == 0 ? snapshot : NULL, &as_seen);
		 attempt++)
	{
		if (attempt == 100)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("could not lock the credit account"),
					 errdetail_internal("{\"attempts\": %d}", attempt),
					 errhint("The account was created and deleted concurrently; retry the transaction.")));
		created = create_account(user_id);
	}
	acct->created = created;

	/* the plan first: the allocation below depends on it */
	if (entitlement_lapsed(acct))
		entitlements_refresh(acct);
	if (acct->timezone_due)
		switch_timezone(acct);
	roll_day_over(acct);
	/* holds first: credits they return to an expired lot expire just below */
	if (acct->has_next_hold_expiry &&
		acct->next_hold_expiry <= GetCurrentTransactionStartTimestamp())
	{
		holds_release_due(acct);
		maintained = true;
	}
	if (acct->has_next_expiry &&
		acct->next_expiry <= GetCurrentTransactionStartTimestamp())
	{
		lots_expire_due(acct);
		maintained = true;
	}
	if (allocation_due(acct))
	{
		grant_monthly_allocation(acct);
		maintained = true;
	}
	if (acct->signup_bonus_due && request_is_linked(user_id))
	{
		account_grant_withheld_bonus(acct);
		maintained = true;
	}

	/*
	 * The maintenance wrote ledger entries: save the account now, so that a
	 * caller that writes nothing more (an idempotent replay) leaves the cached
	 * balance in step with them.  A caller that goes on saves again.
	 */
	if (maintained)
		account_save(acct);
	return as_seen && attempt == 0;
}

/* The plan of a new account (credits.default_plan). */
static void
default_plan(PlanSettings *plan)
{
	if (!plan_find(credits_default_plan(), plan))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("default plan \"%s\" does not exist", credits_default_plan()),
				 errdetail("{\"setting\": \"credits.default_plan\"}"),
				 errhint("Set default_plan in credits.settings (or the GUC credits.default_plan) to a plan in credits.plans.")));
}

/*
 * Inserts the account on its default plan; false when another transaction
 * did.  ON CONFLICT DO NOTHING makes two first touches at once safe: the
 * second waits for the first to commit and inserts nothing, so the signup
 * bonus is granted exactly once.
 */
/* The columns of account_insert that a deletion record gives ($3 ... $10). */
static void
record_insert_args(const DeletionRecord *rec, Datum *args, char *nulls)
{
	args[2] = DateADTGetDatum(rec->day);
	nulls[2] = ' ';
	args[3] = CStringGetTextDatum(rec->timezone);
	nulls[3] = ' ';
	if (rec->timezone_next && rec->has_timezone_from)
	{
		args[4] = CStringGetTextDatum(rec->timezone_next);
		args[5] = TimestampTzGetDatum(rec->timezone_from);
		nulls[4] = nulls[5] = ' ';
	}
	args[6] = TimestampTzGetDatum(rec->timezone_changed_at);
	nulls[6] = rec->has_timezone_changed_at ? ' ' : 'n';
	args[7] = DateADTGetDatum(rec->allocation_period);
	nulls[7] = rec->has_allocation_period ? ' ' : 'n';
	args[8] = TimestampTzGetDatum(rec->rate_tat);
	nulls[8] = rec->has_rate_tat ? ' ' : 'n';
	args[9] = TimestampTzGetDatum(rec->last_operation_at);
	nulls[9] = rec->has_last_operation_at ? ' ' : 'n';
}

static bool
create_account(const pg_uuid_t *user_id)
{
	Datum		args[11];
	char		nulls[11];
	Account		acct;
	PlanSettings plan;
	DeletionRecord rec;
	bool		returning;

	shard_require_owner(user_id);
	/* after a deletion in progress commits: its record, and no row of ours it could delete */
	account_existence_lock(user_id);
	returning = deletion_record_find(user_id, &rec);
	default_plan(&plan);
	memset(nulls, 'n', sizeof(nulls));
	args[0] = UUIDPGetDatum(user_id);
	nulls[0] = ' ';
	args[1] = CStringGetTextDatum(returning && rec.plan ? rec.plan : credits_default_plan());
	nulls[1] = ' ';
	if (returning)
		record_insert_args(&rec, args, nulls);
	else if (bonus_withheld(user_id))
	{
		args[10] = BoolGetDatum(true);
		nulls[10] = ' ';
	}
	if (spi_exec(&account_insert, args, nulls) == 0)
		return false;			/* created concurrently: that call granted the bonus */

	if (!load_account(user_id, &acct, true, NULL, NULL))
		elog(ERROR, "credits: account vanished right after its creation");
	if (returning)
		carry_day_count(&acct, carried_day_count(&acct, &rec));
	else if (!acct.signup_bonus_due)
		grant_signup_bonus(&acct);
	account_save(&acct);
	return true;
}

static void
grant_signup_bonus(Account *acct)
{
	LedgerEntry entry = {0};
	int64		bonus = signup_bonus_of(acct->base_plan);

	if (bonus <= 0)
		return;
	entry.kind = "grant";
	entry.reason = cstring_to_text("signup bonus");
	grant_lot(acct, &entry, bonus, false, 0, 0);
}

/* The signup bonus of a plan. */
static int64
signup_bonus_of(const char *plan_name)
{
	PlanSettings plan;

	if (!plan_find(plan_name, &plan))
		refuse_missing_plan(plan_name);
	return plan.signup_bonus;
}

/*
 * An anonymous sign-in (claim is_anonymous) gets no signup bonus until the
 * account is linked (credits.anonymous_bonus_on_link, on by default).
 */
static bool
bonus_withheld(const pg_uuid_t *user_id)
{
	return credits_bonus_on_link() && request_is_anonymous(user_id);
}

/*
 * Grants the signup bonus withheld from an anonymous sign-in, now that the
 * account is linked (the user's own request without is_anonymous, or
 * credits.grant_withheld_bonus()).  The caller holds the account lock and
 * saves the account.
 */
void
account_grant_withheld_bonus(Account *acct)
{
	Assert(acct->locked && acct->signup_bonus_due);
	grant_signup_bonus(acct);
	acct->signup_bonus_due = false;
}

static void
roll_day_over(Account *acct)
{
	if (acct->day != acct->today)
	{
		acct->day = acct->today;
		acct->day_count = 0;
	}
}

static bool
allocation_due(const Account *acct)
{
	return acct->monthly_allocation > 0 &&
		(!acct->has_allocation_period || acct->allocation_period < acct->period);
}

/*
 * Grants the plan's monthly allocation for the current local month.  The
 * ledger's unique index on (user_id, reference) for allocations makes a
 * second grant for the same period impossible, whatever happens here.
 */
static void
grant_monthly_allocation(Account *acct)
{
	LedgerEntry entry = {0};
	bool		expires = !acct->allocation_rollover;
	TimestampTz expires_at = 0;
	int			year,
				month,
				mday;

	if (expires)
	{
		Datum		args[2] = {UUIDPGetDatum(&acct->user_id), DateADTGetDatum(acct->period)};

		spi_exec(&period_end, args, NULL);
		expires_at = spi_get_time(0, 1);
	}

	entry.kind = "allocation";
	entry.reason = cstring_to_text("monthly allocation");
	j2date(acct->period + POSTGRES_EPOCH_JDATE, &year, &month, &mday);
	entry.reference = cstring_to_text(psprintf("allocation:%04d-%02d", year, month));
	grant_lot(acct, &entry, acct->monthly_allocation, expires, expires_at, 0);
	acct->has_allocation_period = true;
	acct->allocation_period = acct->period;
}

static bool
maintenance_due(const Account *acct)
{
	TimestampTz now = GetCurrentTransactionStartTimestamp();

	return (acct->has_next_expiry && acct->next_expiry <= now) ||
		(acct->has_next_hold_expiry && acct->next_hold_expiry <= now) ||
		allocation_due(acct) ||
		entitlement_lapsed(acct);
}

/* The cached entitlement has ended: another one may still be active. */
static bool
entitlement_lapsed(const Account *acct)
{
	return acct->entitlement_plan != NULL && acct->has_entitlement_until &&
		acct->entitlement_until <= GetCurrentTransactionStartTimestamp();
}

/*
 * Caches the best active entitlement on the account row (plan NULL: none)
 * and re-derives the effective plan's settings in memory.
 */
void
account_set_entitlement(Account *acct, const char *plan, bool has_until, TimestampTz until)
{
	Datum		args[3];
	char		nulls[] = "   ";

	Assert(acct->locked);
	args[0] = UUIDPGetDatum(&acct->user_id);
	args[1] = spi_text_arg(plan, &nulls[1]);
	args[2] = TimestampTzGetDatum(until);
	if (plan == NULL || !has_until)
		nulls[2] = 'n';
	spi_exec(&account_set_entitlement_stmt, args, nulls);

	acct->entitlement_plan = plan ? pstrdup(plan) : NULL;
	acct->has_entitlement_until = plan != NULL && has_until;
	acct->entitlement_until = acct->has_entitlement_until ? until : 0;
	use_plan(acct, effective_plan(acct));
}

/*
 * A transaction that appends ledger entries for a user also writes that
 * user's account row before it commits: the cached balance moves with the
 * ledger, and ledger_lock_or_replay() relies on it (a writer that committed
 * leaves a newer version of the account row).  ledger_append() notes the
 * user here, account_save() clears it, and commit refuses a user still
 * noted.  A subtransaction that rolls back takes its notes with it.
 */
typedef struct UnsavedEntries
{
	pg_uuid_t	user_id;
	SubTransactionId subxact;	/* where the first unsaved entry was appended */
} UnsavedEntries;

static List *unsaved_entries = NIL;	/* of UnsavedEntries, in TopTransactionContext */

static void
check_entries_saved(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PARALLEL_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			if (unsaved_entries != NIL)
				elog(ERROR, "credits: ledger entries of user %s were written without its account row",
					 uuid_text(&((UnsavedEntries *) linitial(unsaved_entries))->user_id));
			break;
		default:
			unsaved_entries = NIL;	/* freed with TopTransactionContext */
			break;
	}
}

static void
drop_aborted_entries(SubXactEvent event, SubTransactionId subxact, SubTransactionId parent,
					 void *arg)
{
	ListCell   *lc;

	if (event != SUBXACT_EVENT_ABORT_SUB)
		return;
	/* subtransactions begun after this one are its children, aborted with it */
	foreach(lc, unsaved_entries)
		if (((UnsavedEntries *) lfirst(lc))->subxact >= subxact)
			unsaved_entries = foreach_delete_current(unsaved_entries, lc);
}

/* The user's note (one at most), or NULL. */
static UnsavedEntries *
unsaved_note(const pg_uuid_t *user_id)
{
	ListCell   *lc;

	foreach(lc, unsaved_entries)
	{
		UnsavedEntries *note = lfirst(lc);

		if (memcmp(&note->user_id, user_id, UUID_LEN) == 0)
			return note;
	}
	return NULL;
}

/* Notes that an entry was appended for the account (ledger_append). */
void
account_note_entry(const Account *acct)
{
	static bool callbacks_registered = false;
	UnsavedEntries *note;
	MemoryContext oldcxt;

	if (unsaved_note(&acct->user_id) != NULL)
		return;
	if (!callbacks_registered)
	{
		RegisterXactCallback(check_entries_saved, NULL);
		RegisterSubXactCallback(drop_aborted_entries, NULL);
		callbacks_registered = true;
	}
	oldcxt = MemoryContextSwitchTo(TopTransactionContext);
	note = palloc(sizeof(UnsavedEntries));
	note->user_id = acct->user_id;
	note->subxact = GetCurrentSubTransactionId();
	unsaved_entries = lappend(unsaved_entries, note);
	MemoryContextSwitchTo(oldcxt);
}

static void
forget_unsaved_entries(const pg_uuid_t *user_id)
{
	UnsavedEntries *note = unsaved_note(user_id);

	if (note != NULL)
		unsaved_entries = list_delete_ptr(unsaved_entries, note);
}

/*
 * Writes the account's cached state back to its row, locked by this
 * transaction.  The version locked is fetched by its TID; when this
 * transaction has changed the row since (an earlier save, an SPI update),
 * that version is no longer visible and the newest one is found through the
 * primary key.
 */
void
account_save(const Account *acct)
{
	RowWriter	writer;
	RowScan		scan;
	TupleTableSlot *row;
	bool		scanned = false;

	Assert(acct->locked);
	row_writer_open(&writer, &accounts_table);
	row = table_slot_create(writer.rel, &writer.estate->es_tupleTable);
	if (!table_tuple_fetch_row_version(writer.rel, (ItemPointer) &acct->row_tid,
									   writer.estate->es_snapshot, row))
	{
		row_writer_scan(&writer, &scan, "accounts_pkey", &acct->user_id);
		if (!row_scan_next(&scan))
			elog(ERROR, "credits: a locked account vanished");
		row = scan.slot;
		scanned = true;
	}
	row_writer_copy(&writer, row);
	row_writer_set(&writer, ACC_BALANCE, Int64GetDatum(acct->balance), false);
	row_writer_set(&writer, ACC_DAY, DateADTGetDatum(acct->day), false);
	row_writer_set(&writer, ACC_DAY_COUNT, Int32GetDatum(acct->day_count), false);
	row_writer_set(&writer, ACC_ALLOCATION_PERIOD, DateADTGetDatum(acct->allocation_period),
				   !acct->has_allocation_period);
	row_writer_set(&writer, ACC_NEXT_EXPIRY, TimestampTzGetDatum(acct->next_expiry),
				   !acct->has_next_expiry);
	row_writer_set(&writer, ACC_NEXT_HOLD_EXPIRY, TimestampTzGetDatum(acct->next_hold_expiry),
				   !acct->has_next_hold_expiry);
	row_writer_set(&writer, ACC_RATE_TAT, TimestampTzGetDatum(acct->rate_tat), !acct->has_rate_tat);
	row_writer_set(&writer, ACC_LAST_OPERATION_AT, TimestampTzGetDatum(acct->last_operation_at),
				   !acct->has_last_operation_at);
	row_writer_set(&writer, ACC_SIGNUP_BONUS_DUE, BoolGetDatum(acct->signup_bonus_due), false);
	row_writer_set(&writer, ACC_UPDATED_AT,
				   TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()), false);
	row_writer_update(&writer, row);
	if (scanned)
		row_scan_end(&scan);
	row_writer_close(&writer);
	forget_unsaved_entries(&acct->user_id);
	notify_account_change(acct);
}

/* Operations left today; false when the plan has no daily limit. */
bool
account_daily_remaining(const Account *acct, int64 *remaining)
{
	if (!acct->has_daily_limit)
		return false;
	*remaining = Max((int64) acct->daily_limit - acct->day_count, 0);
	return true;
}

/* Adds delta (+1 or -1) to today's operation count. */
void
account_count_operation(Account *acct, int delta)
{
	roll_day_over(acct);
	acct->day_count = Max(acct->day_count + delta, 0);
}

/* Moves the cached balance; the ledger entry records the same amount. */
void
account_add_balance(Account *acct, int64 delta)
{
	int64		result;

	if (pg_add_s64_overflow(acct->balance, delta, &result))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("credit balance out of range"),
				 errdetail("{\"field\": \"amount\", \"balance\": " INT64_FORMAT ", \"amount\": " INT64_FORMAT "}",
						   acct->balance, delta),
				 errhint("A balance holds at most 9223372036854775807 credits.")));
	if (result < 0)
		ereport(ERROR,
				(errcode(ERRCODE_CREDITS_DRIFT),
				 errmsg("credit balance would become negative"),
				 errdetail_internal("{\"balance\": " INT64_FORMAT ", \"amount\": " INT64_FORMAT "}",
									acct->balance, delta),
				 errhint("The cached balance no longer matches the lots; run credits.reconcile() for this user.")));
	acct->balance = result;
}
