/*
 * account.c
 *		Loading, locking, lazily creating and maintaining an account row.
 *
 * account_lock() is the one entry point for every write: it takes the
 * account row lock (SELECT ... FOR UPDATE), creating the account with its
 * plan's signup bonus on first touch, and then does the lazy maintenance
 * that replaces cron jobs: it rolls the day counter over at local midnight,
 * releases holds that timed out, writes `expire` entries for lots that
 * expired, and grants the monthly allocation on the first touch of a
 * period; when the cached entitlement has lapsed it recomputes the effective
 * plan first.  Changes are made to the in-memory Account and written back
 * once by account_save(), which also sends NOTIFY credits (delivered at
 * commit) when credits.notify is on.
 *
 * account_peek() reads the row without a lock, for the O(1) read functions;
 * they fall back to account_lock() when maintenance is due.
 */
#include "credits.h"

#include "catalog/pg_type.h"
#include "commands/async.h"
#include "common/int.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"

/*
 * The account row joined with its effective plan: an active entitlement's
 * plan, else the base plan.  "today" and "period" are local to the account's
 * time zone.
 */
/* The plan settings an Account carries, in the order read_plan() reads them. */
#define PLAN_COLUMNS \
	"p.name, p.rank, p.daily_limit, p.monthly_allocation, p.allocation_rollover," \
	" p.bypass_credits, p.rate_burst, p.rate_per_second, p.cooldown_ms"

#define ACCOUNT_SELECT \
	"SELECT a.plan, " PLAN_COLUMNS "," \
	"       a.balance, a.day, a.day_count," \
	"       (now() AT TIME ZONE a.timezone)::date," \
	"       date_trunc('month', now() AT TIME ZONE a.timezone)::date," \
	"       a.allocation_period, a.next_expiry, a.next_hold_expiry," \
	"       a.rate_tat, a.last_operation_at, a.entitlement_plan, a.entitlement_until" \
	"  FROM credits.accounts a" \
	"  JOIN credits.plans p ON p.name = CASE" \
	"       WHEN a.entitlement_plan IS NOT NULL" \
	"        AND (a.entitlement_until IS NULL OR a.entitlement_until > now())" \
	"       THEN a.entitlement_plan ELSE a.plan END" \
	" WHERE a.user_id = $1"

static CachedStatement account_select_locked = {ACCOUNT_SELECT " FOR UPDATE OF a", 1, {UUIDOID}};
static CachedStatement account_select = {ACCOUNT_SELECT, 1, {UUIDOID}};

static CachedStatement plan_signup_bonus = {
	"SELECT signup_bonus FROM credits.plans WHERE name = $1", 1, {TEXTOID}
};

static CachedStatement account_insert = {
	"INSERT INTO credits.accounts (user_id, plan, day)"
	" VALUES ($1, $2, (now() AT TIME ZONE 'UTC')::date)"
	" ON CONFLICT (user_id) DO NOTHING RETURNING user_id",
	2, {UUIDOID, TEXTOID}
};

static CachedStatement account_update = {
	"UPDATE credits.accounts"
	"   SET balance = $2, day = $3, day_count = $4, allocation_period = $5,"
	"       next_expiry = $6, next_hold_expiry = $7, rate_tat = $8,"
	"       last_operation_at = $9, updated_at = now()"
	" WHERE user_id = $1",
	9, {UUIDOID, INT8OID, DATEOID, INT4OID, DATEOID, TIMESTAMPTZOID, TIMESTAMPTZOID,
	TIMESTAMPTZOID, TIMESTAMPTZOID}
};

/* End of the current local month, for allocations that do not roll over. */
static CachedStatement period_end = {
	"SELECT (($2::date + interval '1 month')::timestamp AT TIME ZONE a.timezone)"
	"  FROM credits.accounts a WHERE a.user_id = $1",
	2, {UUIDOID, DATEOID}
};

/* The effective plan's settings, after the cached entitlement changed. */
static CachedStatement plan_settings = {
	"SELECT " PLAN_COLUMNS " FROM credits.plans p WHERE p.name = $1",
	1, {TEXTOID}
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
static void notify_change(const Account *acct);

static char *
get_text(int col, bool *isnull)
{
	Datum		value = spi_get(0, col, isnull);

	return *isnull ? NULL : TextDatumGetCString(value);
}

/* A nullable timestamptz column of the current SPI row: false when NULL. */
static bool
get_timestamptz(int col, TimestampTz *value)
{
	bool		isnull;
	Datum		datum = spi_get(0, col, &isnull);

	*value = isnull ? 0 : DatumGetTimestampTz(datum);
	return !isnull;
}

/* The effective plan's settings: PLAN_COLUMNS from column `first` on. */
static void
read_plan(Account *acct, int first)
{
	bool		isnull;
	Datum		value;

	acct->plan = get_text(first, &isnull);
	acct->plan_rank = DatumGetInt32(spi_get(0, first + 1, &isnull));
	value = spi_get(0, first + 2, &isnull);
	acct->has_daily_limit = !isnull;
	acct->daily_limit = isnull ? 0 : DatumGetInt32(value);
	acct->monthly_allocation = spi_get_int64(0, first + 3);
	acct->allocation_rollover = DatumGetBool(spi_get(0, first + 4, &isnull));
	acct->bypass_credits = DatumGetBool(spi_get(0, first + 5, &isnull));
	value = spi_get(0, first + 6, &isnull);
	acct->has_rate_limit = !isnull;
	acct->rate_burst = isnull ? 0 : DatumGetInt32(value);
	value = spi_get(0, first + 7, &isnull);
	acct->rate_per_second = isnull ? 0 : DatumGetFloat8(value);
	acct->cooldown_ms = DatumGetInt32(spi_get(0, first + 8, &isnull));
}

static bool
load_account(const pg_uuid_t *user_id, Account *acct, bool lock)
{
	Datum		args[1] = {UUIDPGetDatum(user_id)};
	bool		isnull;
	Datum		value;

	if (spi_exec(lock ? &account_select_locked : &account_select, args, NULL) == 0)
		return false;

	memset(acct, 0, sizeof(*acct));
	acct->user_id = *user_id;
	acct->locked = lock;
	acct->base_plan = get_text(1, &isnull);
	read_plan(acct, 2);
	acct->balance = spi_get_int64(0, 11);
	acct->day = DatumGetDateADT(spi_get(0, 12, &isnull));
	acct->day_count = DatumGetInt32(spi_get(0, 13, &isnull));
	acct->today = DatumGetDateADT(spi_get(0, 14, &isnull));
	acct->period = DatumGetDateADT(spi_get(0, 15, &isnull));
	value = spi_get(0, 16, &isnull);
	acct->has_allocation_period = !isnull;
	acct->allocation_period = isnull ? 0 : DatumGetDateADT(value);
	acct->has_next_expiry = get_timestamptz(17, &acct->next_expiry);
	acct->has_next_hold_expiry = get_timestamptz(18, &acct->next_hold_expiry);
	acct->has_rate_tat = get_timestamptz(19, &acct->rate_tat);
	acct->has_last_operation_at = get_timestamptz(20, &acct->last_operation_at);
	acct->entitlement_plan = get_text(21, &isnull);
	acct->has_entitlement_until = get_timestamptz(22, &acct->entitlement_until);
	return true;
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
	Datum		plan_arg[1] = {CStringGetTextDatum(credits_default_plan)};
	Datum		insert_args[2] = {UUIDPGetDatum(user_id), plan_arg[0]};
	Account		acct;

	if (spi_exec(&plan_signup_bonus, plan_arg, NULL) == 0)
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
	Datum		plan_arg[1] = {CStringGetTextDatum(acct->base_plan)};
	int64		bonus;
	LedgerEntry entry = {0};

	spi_exec(&plan_signup_bonus, plan_arg, NULL);
	bonus = spi_get_int64(0, 1);
	if (bonus <= 0)
		return;

	entry.kind = "grant";
	entry.reason = cstring_to_text("signup bonus");
	grant_lot(acct, &entry, bonus, false, 0, 0);
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
	bool		active;

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
	active = plan != NULL &&
		(!has_until || until > GetCurrentTransactionStartTimestamp());

	args[0] = CStringGetTextDatum(active ? plan : acct->base_plan);
	if (spi_exec(&plan_settings, args, NULL) == 0)
		elog(ERROR, "credits: plan \"%s\" vanished", active ? plan : acct->base_plan);
	read_plan(acct, 1);
}

void
account_save(const Account *acct)
{
	Datum		args[9];
	char		nulls[9] = "         ";

	Assert(acct->locked);
	args[0] = UUIDPGetDatum(&acct->user_id);
	args[1] = Int64GetDatum(acct->balance);
	args[2] = DateADTGetDatum(acct->day);
	args[3] = Int32GetDatum(acct->day_count);
	args[4] = DateADTGetDatum(acct->allocation_period);
	args[5] = TimestampTzGetDatum(acct->next_expiry);
	args[6] = TimestampTzGetDatum(acct->next_hold_expiry);
	if (!acct->has_allocation_period)
		nulls[4] = 'n';
	if (!acct->has_next_expiry)
		nulls[5] = 'n';
	if (!acct->has_next_hold_expiry)
		nulls[6] = 'n';
	args[7] = TimestampTzGetDatum(acct->rate_tat);
	nulls[7] = acct->has_rate_tat ? ' ' : 'n';
	args[8] = TimestampTzGetDatum(acct->last_operation_at);
	nulls[8] = acct->has_last_operation_at ? ' ' : 'n';
	spi_exec(&account_update, args, nulls);
	if (credits_notify)
		notify_change(acct);
}

/*
 * NOTIFY credits, '{"user_id": ..., "balance": ..., "daily_remaining": ...,
 * "plan": ..., "kind": ...}'.  Queued now, delivered when the transaction
 * commits, and never when it rolls back.  kind is the kind of the last
 * ledger entry this call wrote, "entitlement" for a plan change without one,
 * or null.
 */
static void
notify_change(const Account *acct)
{
	StringInfoData payload;
	int64		remaining;

	initStringInfo(&payload);
	appendStringInfo(&payload, "{\"user_id\": \"%s\", \"balance\": " INT64_FORMAT ", \"daily_remaining\": ",
					 DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&acct->user_id))),
					 acct->balance);
	if (account_daily_remaining(acct, &remaining))
		appendStringInfo(&payload, INT64_FORMAT, remaining);
	else
		appendStringInfoString(&payload, "null");
	appendStringInfo(&payload, ", \"plan\": %s, \"kind\": %s}",
					 json_quote(acct->plan),
					 acct->last_kind ? json_quote(acct->last_kind) : "null");
	Async_Notify("credits", payload.data);
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
