/*
 * account.c
 *		Loading, locking, lazily creating and maintaining an account row.
 *
 * account_lock() is the one entry point for every write: it takes the
 * account row lock (FOR UPDATE, through the primary key: rows.c), creating
 * the account with its
 * plan's signup bonus on first touch, and then does the lazy maintenance
 * that replaces cron jobs: it rolls the day counter over at local midnight,
 * releases holds that timed out, writes `expire` entries for lots that
 * expired, and grants the monthly allocation on the first touch of a
 * period; when the cached entitlement has lapsed it recomputes the effective
 * plan first.  Changes are made to the in-memory Account and written back
 * once by account_save(), which also sends NOTIFY credits (delivered at
 * commit; notify.c).
 *
 * account_peek() reads the row without a lock, for the O(1) read functions;
 * they fall back to account_lock() when maintenance is due.  The effective
 * plan's settings come from the backend's plan cache (price_list.c).
 */
#include "credits.h"

#include "access/table.h"
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
	{"updated_at", "timestamp with time zone", false}}
};

static CachedStatement account_insert = {
	"INSERT INTO credits.accounts (user_id, plan, day)"
	" VALUES ($1, $2, (now() AT TIME ZONE 'UTC')::date)"
	" ON CONFLICT (user_id) DO NOTHING RETURNING user_id",
	2, {UUIDOID, TEXTOID}
};

/* End of the current local month, for allocations that do not roll over. */
static CachedStatement period_end = {
	"SELECT (($2::date + interval '1 month')::timestamp AT TIME ZONE a.timezone)"
	"  FROM credits.accounts a WHERE a.user_id = $1",
	2, {UUIDOID, DATEOID}
};

static CachedStatement account_set_entitlement_stmt = {
	"UPDATE credits.accounts SET entitlement_plan = $2, entitlement_until = $3, updated_at = now()"
	" WHERE user_id = $1",
	3, {UUIDOID, TEXTOID, TIMESTAMPTZOID}
};

static bool load_account(const pg_uuid_t *user_id, Account *acct, bool lock);
static void create_account(const pg_uuid_t *user_id);
static void grant_signup_bonus(Account *acct);
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

/* Sets the account's effective plan and that plan's settings. */
static void
use_plan(Account *acct, const char *name)
{
	PlanSettings plan;

	if (!plan_find(name, &plan))
		elog(ERROR, "credits: plan \"%s\" of an account does not exist", name);
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

/* Today and the first day of this month, in the account's time zone. */
static void
set_local_dates(Account *acct, Datum timezone)
{
	Datum		local_now = DirectFunctionCall2(timestamptz_zone, timezone,
												TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()));
	int			year,
				month,
				mday;

	acct->today = DatumGetDateADT(DirectFunctionCall1(timestamp_date, local_now));
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
	set_local_dates(acct, row_get(&accounts_table, row, ACC_TIMEZONE, &isnull));
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
 * `lock`.  False when there is no such account (or, locking, it was deleted
 * meanwhile).
 */
static bool
load_account(const pg_uuid_t *user_id, Account *acct, bool lock)
{
	Relation	rel = credits_table_open(&accounts_table, lock ? RowShareLock : AccessShareLock);
	RowScan		scan;
	bool		found;

	row_scan_begin(&scan, rel, "accounts_pkey", user_id, NULL);
	found = row_scan_next(&scan) && (!lock || row_lock(&scan));
	if (found)
	{
		read_account(user_id, scan.slot, acct, lock);
		acct->row_tid = scan.slot->tts_tid;
	}
	row_scan_end(&scan);
	table_close(rel, NoLock);
	return found;
}

/*
 * Reads the account without locking it.  Returns false when the account does
 * not exist yet or has maintenance due; the caller then takes the lock.
 */
bool
account_peek(const pg_uuid_t *user_id, Account *acct)
{
	if (!load_account(user_id, acct, false))
		return false;
	if (maintenance_due(acct))
		return false;
	roll_day_over(acct);
	return true;
}

/*
 * Locks the account row (creating the account on first touch) and brings it
 * up to date.  The caller must account_save() after changing it.
 */
void
account_lock(const pg_uuid_t *user_id, Account *acct)
{
	bool		maintained = false;

	if (!load_account(user_id, acct, true))
	{
		create_account(user_id);
		if (!load_account(user_id, acct, true))
			elog(ERROR, "credits: account vanished right after its creation");
	}

	/* the plan first: the allocation below depends on it */
	if (entitlement_lapsed(acct))
		entitlements_refresh(acct);
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

	/*
	 * The maintenance wrote ledger entries: save the account now, so that a
	 * caller that writes nothing more (an idempotent replay) leaves the cached
	 * balance in step with them.  A caller that goes on saves again.
	 */
	if (maintained)
		account_save(acct);
}

/*
 * Inserts the account on its default plan.  ON CONFLICT DO NOTHING makes two
 * first touches at once safe: the second waits for the first to commit and
 * inserts nothing, so the signup bonus is granted exactly once.
 */
static void
create_account(const pg_uuid_t *user_id)
{
	Datum		insert_args[2] = {UUIDPGetDatum(user_id),
	CStringGetTextDatum(credits_default_plan)};
	Account		acct;
	PlanSettings plan;

	if (!plan_find(credits_default_plan, &plan))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("default plan \"%s\" does not exist", credits_default_plan),
				 errdetail("{\"setting\": \"credits.default_plan\"}"),
				 errhint("Set credits.default_plan to a plan in credits.plans.")));

	if (spi_exec(&account_insert, insert_args, NULL) == 0)
		return;					/* created concurrently: that call granted the bonus */

	if (!load_account(user_id, &acct, true))
		elog(ERROR, "credits: account vanished right after its creation");
	grant_signup_bonus(&acct);
	account_save(&acct);
}

static void
grant_signup_bonus(Account *acct)
{
	PlanSettings plan;
	LedgerEntry entry = {0};

	if (!plan_find(acct->base_plan, &plan))
		elog(ERROR, "credits: plan \"%s\" of an account does not exist", acct->base_plan);
	if (plan.signup_bonus <= 0)
		return;

	entry.kind = "grant";
	entry.reason = cstring_to_text("signup bonus");
	grant_lot(acct, &entry, plan.signup_bonus, false, 0, 0);
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
		bool		isnull;

		spi_exec(&period_end, args, NULL);
		expires_at = DatumGetTimestampTz(spi_get(0, 1, &isnull));
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
	char		nulls[3] = "   ";

	Assert(acct->locked);
	args[0] = UUIDPGetDatum(&acct->user_id);
	args[1] = plan ? CStringGetTextDatum(plan) : (Datum) 0;
	args[2] = TimestampTzGetDatum(until);
	if (plan == NULL)
		nulls[1] = 'n';
	if (plan == NULL || !has_until)
		nulls[2] = 'n';
	spi_exec(&account_set_entitlement_stmt, args, nulls);

	acct->entitlement_plan = plan ? pstrdup(plan) : NULL;
	acct->has_entitlement_until = plan != NULL && has_until;
	acct->entitlement_until = acct->has_entitlement_until ? until : 0;
	use_plan(acct, effective_plan(acct));
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
	row_writer_set(&writer, ACC_UPDATED_AT,
				   TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()), false);
	row_writer_update(&writer, row);
	if (scanned)
		row_scan_end(&scan);
	row_writer_close(&writer);
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
		elog(ERROR, "credits: balance of an account would become negative");
	acct->balance = result;
}
