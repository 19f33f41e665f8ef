/*
 * grants.c
 *		Credits coming in (grant_credits and the grant-like entries of other
 *		parts) and the account settings an admin changes: plan and time zone.
 *
 * A time zone change never gives a client more operations in a day: with
 * nothing counted in the day in progress it takes effect at once, else at
 * the next local midnight of the zone in effect (account.c switches then);
 * either way today's count is the ledger's count of the new zone's local
 * day, so every local day of the zone in effect holds at most daily_limit
 * operations.  A client changes its zone at most once per
 * credits.timezone_change_interval.
 *
 * Locks: the account row (account_lock), then the user's lots.
 */
#include "credits.h"

#include <time.h>
#include <unistd.h>

#include "catalog/pg_type.h"
#include "pgtime.h"
#include "utils/builtins.h"

/*
 * From src/timezone/pgtz.h, which is not installed with the server headers;
 * exported by the server, with this signature since PostgreSQL 8.3.  Opens
 * the zone file `name` of the time zone database, matching each path
 * component case-insensitively and never a hidden entry (so no "..");
 * canonname receives the file's own spelling.
 */
extern int	pg_open_tzfile(const char *name, char *canonname);

static CachedStatement plan_exists = {
	"SELECT 1 FROM credits.plans WHERE name = $1", 1, {TEXTOID}
};

static CachedStatement account_set_plan = {
	"UPDATE credits.accounts SET plan = $2, updated_at = now() WHERE user_id = $1",
	2, {UUIDOID, TEXTOID}
};

static CachedStatement account_set_timezone = {
	"UPDATE credits.accounts SET timezone = $2, timezone_next = NULL, timezone_from = NULL,"
	"  timezone_changed_at = now(), updated_at = now() WHERE user_id = $1",
	2, {UUIDOID, TEXTOID}
};

/* From the start of the next local day ($3 is today) of the zone in effect (the one day rule). */
static CachedStatement account_defer_timezone = {
	"UPDATE credits.accounts SET timezone_next = $2,"
	"  timezone_from = credits.local_day_start($3::date + 1, timezone),"
	"  timezone_changed_at = now(), updated_at = now() WHERE user_id = $1",
	3, {UUIDOID, TEXTOID, DATEOID}
};

static CachedStatement account_cancel_timezone = {
	"UPDATE credits.accounts SET timezone_next = NULL, timezone_from = NULL, updated_at = now()"
	" WHERE user_id = $1",
	1, {UUIDOID}
};

static void change_timezone(const pg_uuid_t *user_id, text *tz, bool client);
static void check_timezone_interval(const Account *acct);

/*
 * Is `name` an IANA time zone name, as pg_timezone_names lists them: a zone
 * file of the time zone database, spelt exactly like it, that PostgreSQL
 * loads (not a leap-second zone) and that is not zic's "Factory"
 * placeholder?  Abbreviations ("CEST") and POSIX specs ("UTC+3") are no
 * files, so they are not.  One directory lookup and a zone load that
 * PostgreSQL caches, where scanning pg_timezone_names read every zone file.
 */
static bool
timezone_is_iana(const char *name)
{
	char		canonical[TZ_STRLEN_MAX + 1];
	int			fd;
	pg_tz	   *tz;
	pg_time_t	now = (pg_time_t) time(NULL);
	struct pg_tm *tm;

	if (name[0] == '\0' || strlen(name) > TZ_STRLEN_MAX)
		return false;
	fd = pg_open_tzfile(name, canonical);
	if (fd < 0)
		return false;
	close(fd);
	if (strcmp(canonical, name) != 0)
		return false;
	tz = pg_tzset(name);
	if (tz == NULL || !pg_tz_acceptable(tz))
		return false;
	tm = pg_localtime(&now, tz);
	return tm != NULL && tm->tm_zone != NULL && strcmp(tm->tm_zone, "-00") != 0;
}

/*
 * Appends a grant-like entry (grant, purchase, allocation, positive adjust)
 * bringing `amount` new credits, and creates the lot that holds them.
 */
void
grant_lot(Account *acct, LedgerEntry *entry, int64 amount, bool has_expiry,
		  TimestampTz expires_at, int32 priority)
{
	entry->amount = amount;
	account_add_balance(acct, amount);
	ledger_append(acct, entry);
	lots_create(acct, entry, has_expiry, expires_at, priority);
}

/* A new grant's expires_at must lie ahead (checked after the replay lookup). */
static void
require_future_expiry(TimestampTz expires_at)
{
	if (expires_at <= GetCurrentTransactionStartTimestamp())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("expires_at must be in the future"),
				 errdetail("{\"field\": \"expires_at\"}"),
				 errhint("Pass NULL for credits that never expire.")));
}

/*
 * credits.grant_credits(user_id uuid, amount bigint, reason text,
 *     idempotency_key text default null, expires_at timestamptz default null,
 *     reference text default null, metadata jsonb default '{}')
 *   returns credits.receipt
 */
PG_FUNCTION_INFO_V1(credits_grant_credits);
Datum
credits_grant_credits(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *user_id;
	int64		amount;
	text	   *reason;
	text	   *key;
	bool		has_expiry = !PG_ARGISNULL(4);
	TimestampTz expires_at = has_expiry ? PG_GETARG_TIMESTAMPTZ(4) : 0;
	text	   *reference;
	Jsonb	   *metadata;
	RequestHash rh;
	Account		acct;
	Receipt		receipt;

	refuse_client_request("credits.grant_credits");

	require_arg(fcinfo, 0, "user_id");
	user_id = PG_GETARG_UUID_P(0);
	amount = positive_int64_arg(fcinfo, 1, "amount");
	require_arg(fcinfo, 2, "reason");
	reason = optional_text_arg(fcinfo, 2, "reason", CREDITS_MAX_REASON_CHARS);
	key = optional_key_arg(fcinfo, 3, "idempotency_key");
	reference = optional_text_arg(fcinfo, 5, "reference", CREDITS_MAX_KEY_CHARS);
	metadata = optional_metadata_arg(fcinfo, 6);

	request_hash_init(&rh, "grant");
	request_hash_int64(&rh, false, amount);
	request_hash_text(&rh, reason);
	request_hash_int64(&rh, !has_expiry, expires_at);
	request_hash_text(&rh, reference);
	request_hash_jsonb(&rh, metadata);

	SPI_connect();
	credits_require_writable();
	/* the key first: a retry after expires_at has passed still gets its receipt */
	if (!ledger_lock_or_replay(user_id, key, &rh, &acct, &receipt))
	{
		LedgerEntry entry = {0};

		if (has_expiry)
			require_future_expiry(expires_at);

		entry.kind = "grant";
		entry.reason = reason;
		entry.idempotency_key = key;
		entry.request_hash = (int64) rh.hash;
		entry.reference = reference;
		entry.metadata = metadata;
		grant_lot(&acct, &entry, amount, has_expiry, expires_at, 0);
		account_save(&acct);
		receipt_from_entry(&acct, &entry, &receipt);
	}
	SPI_finish();
	PG_RETURN_DATUM(receipt_datum(fcinfo, &receipt));
}

/*
 * credits.set_plan(user_id uuid, plan text) returns void
 * The base plan; an active entitlement's plan still takes precedence.
 */
PG_FUNCTION_INFO_V1(credits_set_plan);
Datum
credits_set_plan(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *user_id;
	text	   *plan;
	Datum		plan_arg[1];
	Account		acct;

	refuse_client_request("credits.set_plan");

	require_arg(fcinfo, 0, "user_id");
	user_id = PG_GETARG_UUID_P(0);
	require_arg(fcinfo, 1, "plan");
	plan = PG_GETARG_TEXT_PP(1);
	plan_arg[0] = PointerGetDatum(plan);

	SPI_connect();
	if (spi_exec(&plan_exists, plan_arg, NULL) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown plan \"%s\"", text_to_cstring(plan)),
				 errdetail("{\"field\": \"plan\"}"),
				 errhint("Pick a plan from credits.plans.")));
	account_lock(user_id, &acct);
	account_save(&acct);
	{
		Datum		args[2] = {UUIDPGetDatum(user_id), PointerGetDatum(plan)};

		spi_exec(&account_set_plan, args, NULL);
	}
	/* reload with the new plan, so that NOTIFY (account_save) announces it */
	account_lock(user_id, &acct);
	account_save(&acct);
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * credits.open_account(user_id uuid) returns boolean
 * Creates the account with its plan's signup bonus (and allocation), as the
 * first write would; true when this call created it.  For signup hooks: a
 * retried hook finds the account and grants nothing twice.
 */
PG_FUNCTION_INFO_V1(credits_open_account);
Datum
credits_open_account(PG_FUNCTION_ARGS)
{
	Account		acct;

	refuse_client_request("credits.open_account");

	require_arg(fcinfo, 0, "user_id");
	SPI_connect();
	account_lock(PG_GETARG_UUID_P(0), &acct);
	SPI_finish();
	PG_RETURN_BOOL(acct.created);
}

/*
 * A client changes its time zone at most once per
 * credits.timezone_change_interval: PT429 with retry_after_ms otherwise.
 */
static void
check_timezone_interval(const Account *acct)
{
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	TimestampTz next;

	if (!acct->has_timezone_changed_at)
		return;
	next = acct->timezone_changed_at + (TimestampTz) credits_timezone_interval_s() * USECS_PER_SEC;
	if (next > now)
		refuse_timezone_interval(&acct->user_id, (next - now) / 1000);
}

/*
 * Sets the zone of the account's day (see the header): at once when
 * nothing is counted in the day in progress, else from its end.  Asking
 * for the zone in effect cancels a pending change.
 */
static void
change_timezone(const pg_uuid_t *user_id, text *tz, bool client)
{
	Account		acct;
	char	   *zone = text_to_cstring(tz);
	Datum		args[3] = {UUIDPGetDatum(user_id), PointerGetDatum(tz), (Datum) 0};

	account_lock(user_id, &acct);
	if (strcmp(zone, acct.timezone) == 0)
	{
		if (acct.timezone_next != NULL)
			spi_exec(&account_cancel_timezone, args, NULL);
	}
	else
	{
		if (client)
			check_timezone_interval(&acct);
		if (acct.day_count == 0)
		{
			spi_exec(&account_set_timezone, args, NULL);
			account_lock(user_id, &acct);	/* reload: "today" moved */
			account_recount_day(&acct);
		}
		else
		{
			args[2] = DateADTGetDatum(acct.today);
			spi_exec(&account_defer_timezone, args, NULL);
		}
	}
	account_save(&acct);
}

/* The tz argument: an IANA time zone name (22023 otherwise). */
static text *
timezone_arg(FunctionCallInfo fcinfo, int argno)
{
	text	   *tz;

	require_arg(fcinfo, argno, "tz");
	tz = optional_text_arg(fcinfo, argno, "tz", 64);
	if (!timezone_is_iana(text_to_cstring(tz)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown time zone \"%s\"", text_to_cstring(tz)),
				 errdetail("{\"field\": \"tz\"}"),
				 errhint("Use an IANA time zone name such as 'Europe/Paris' or 'UTC'.")));
	return tz;
}

/*
 * credits.grant_withheld_bonus(user_id uuid) returns boolean
 * The signup bonus withheld from an anonymous sign-in, once the account is
 * linked (a hook on the identity provider's link event); true when this
 * call granted it.  A user without an account is given one, as by a first
 * touch (with its bonus, unless the user id was deleted before).
 */
PG_FUNCTION_INFO_V1(credits_grant_withheld_bonus);
Datum
credits_grant_withheld_bonus(PG_FUNCTION_ARGS)
{
	Account		acct;
	bool		granted;

	refuse_client_request("credits.grant_withheld_bonus");
	require_arg(fcinfo, 0, "user_id");
	SPI_connect();
	account_lock(PG_GETARG_UUID_P(0), &acct);
	granted = acct.signup_bonus_due;
	if (granted)
		account_grant_withheld_bonus(&acct);
	account_save(&acct);
	SPI_finish();
	PG_RETURN_BOOL(granted);
}

/*
 * credits.set_timezone(user_id uuid, tz text) returns void
 * Moves the day boundary of the daily limit (see change_timezone).
 */
PG_FUNCTION_INFO_V1(credits_set_timezone);
Datum
credits_set_timezone(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *user_id;

	refuse_client_request("credits.set_timezone");

	require_arg(fcinfo, 0, "user_id");
	user_id = PG_GETARG_UUID_P(0);
	SPI_connect();
	change_timezone(user_id, timezone_arg(fcinfo, 1), false);
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * credits.set_my_timezone(tz text) returns void
 * The caller's (JWT sub), at most once per credits.timezone_change_interval.
 */
PG_FUNCTION_INFO_V1(credits_set_my_timezone);
Datum
credits_set_my_timezone(PG_FUNCTION_ARGS)
{
	pg_uuid_t	user_id;

	request_user_id(&user_id);
	SPI_connect();
	change_timezone(&user_id, timezone_arg(fcinfo, 0), true);
	SPI_finish();
	PG_RETURN_VOID();
}
