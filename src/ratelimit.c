/*
 * ratelimit.c
 *		GCRA rate limiting: the general limiter credits.rate_limit() and the
 *		plan's own limit (burst, rate, cooldown) on billable operations.
 *
 * GCRA (the generic cell rate algorithm, a leaky bucket kept as one
 * timestamp) remembers a single value per bucket, the theoretical arrival
 * time `tat`: when the bucket would be empty again.  With an emission
 * interval T = 1 / rate and a tolerance of burst * T, a request at `now` is
 * allowed when max(tat, now) + T - burst * T <= now, and then moves tat to
 * max(tat, now) + T.  All arithmetic is in whole microseconds (T is rounded
 * to the microsecond once), so results are exact and reproducible.
 *
 * State and locks:
 *   - credits.rate_limit(user_id, action, ...) keeps one row per (user_id,
 *     action) in credits.rate_limits.  It reads the row FOR UPDATE, decides,
 *     and writes it only when the request is allowed; the first request of
 *     a bucket inserts the row (INSERT ... ON CONFLICT DO NOTHING, re-read
 *     under the lock when a concurrent first request won).  It touches no
 *     other table and takes no account lock.
 *   - The plan limiter runs inside check_operation(), under the account row
 *     lock already held by consume and reserve, and keeps its state in that
 *     row (accounts.rate_tat, accounts.last_operation_at), which
 *     account_save() writes anyway: no statement of its own.
 */
#include "credits.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "common/int.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/float.h"

/* Longest window burst / per_second accepted: ten years, in microseconds. */
#define RATE_MAX_WINDOW_US	(INT64CONST(3652) * USECS_PER_DAY)
/* At most one request per microsecond. */
#define RATE_MAX_PER_SECOND 1000000.0

static CachedStatement bucket_lock = {
	"SELECT tat FROM credits.rate_limits WHERE user_id = $1 AND action = $2 FOR UPDATE",
	2, {UUIDOID, TEXTOID}
};

static CachedStatement bucket_update = {
	"UPDATE credits.rate_limits SET tat = $3 WHERE user_id = $1 AND action = $2",
	3, {UUIDOID, TEXTOID, TIMESTAMPTZOID}
};

static CachedStatement bucket_insert = {
	"INSERT INTO credits.rate_limits (user_id, action, tat) VALUES ($1, $2, $3)"
	" ON CONFLICT (user_id, action) DO NOTHING RETURNING 1",
	3, {UUIDOID, TEXTOID, TIMESTAMPTZOID}
};

/* One GCRA decision. */
typedef struct GcraResult
{
	bool		allowed;
	int32		limit;			/* burst */
	int32		remaining;		/* requests that would still pass right now */
	int64		retry_after_us; /* 0 when allowed */
	int64		reset_after_us; /* until the bucket is empty */
	TimestampTz new_tat;		/* the bucket's state after the decision */
} GcraResult;

static void gcra_decide(bool has_tat, TimestampTz tat, TimestampTz now, int32 burst,
						int64 interval_us, GcraResult *result);
static int64 emission_interval_us(int32 burst, float8 per_second, bool from_plan);
static void bucket_decide(const pg_uuid_t *user_id, text *action, int32 burst,
						  int64 interval_us, TimestampTz now, GcraResult *result);
static Datum rate_limit_datum(FunctionCallInfo fcinfo, const GcraResult *result);
static Datum rate_limit_common(FunctionCallInfo fcinfo, TimestampTz now);
static int64 ceil_ms(int64 us);

/*
 * base + interval_us, the bucket's next tat: it must stay a valid timestamp
 * (it is stored), which only a time at the very end of the timestamp range
 * (credits.rate_limit_at) can break.  22008 then, naming `at`.
 */
static TimestampTz
tat_after(TimestampTz base, int64 interval_us)
{
	TimestampTz result;

	if (pg_add_s64_overflow(base, interval_us, &result) || !IS_VALID_TIMESTAMP(result))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("rate limit state out of range"),
				 errdetail_internal("{\"field\": \"at\", \"interval_us\": " INT64_FORMAT "}",
									interval_us),
				 errhint("The bucket would drain after the last timestamp PostgreSQL can store; "
						 "pass an earlier time.")));
	return result;
}

/*
 * The GCRA decision for one request at `now`, given the bucket's tat
 * (has_tat false: a new bucket, as if tat <= now).  Pure arithmetic.
 */
static void
gcra_decide(bool has_tat, TimestampTz tat, TimestampTz now, int32 burst,
			int64 interval_us, GcraResult *result)
{
	int64		tolerance = (int64) burst * interval_us;
	TimestampTz base = (has_tat && tat > now) ? tat : now;
	TimestampTz new_tat = tat_after(base, interval_us);
	TimestampTz allow_at = new_tat - tolerance;
	int64		ttl;			/* until the bucket is empty, after this request */
	int64		room;

	result->limit = burst;
	result->allowed = allow_at <= now;
	if (result->allowed)
	{
		result->retry_after_us = 0;
		ttl = new_tat - now;
		result->new_tat = new_tat;
	}
	else
	{
		result->retry_after_us = allow_at - now;
		ttl = base - now;
		result->new_tat = base;
	}
	room = tolerance - ttl;
	result->remaining = room > 0 ? (int32) (room / interval_us) : 0;
	result->reset_after_us = ttl;
}

/*
 * T = 1 / per_second in whole microseconds, after checking the arguments
 * (22023 with the field name).  A plan's values were checked by the table's
 * constraints, so only the window is checked for them.
 */
static int64
emission_interval_us(int32 burst, float8 per_second, bool from_plan)
{
	float8		interval;

	if (!from_plan)
	{
		if (burst < 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("burst must be at least 1"),
					 errdetail("{\"field\": \"burst\"}"),
					 errhint("burst is how many requests may pass at once.")));
		if (isnan(per_second) || per_second <= 0 || per_second > RATE_MAX_PER_SECOND)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("per_second must be greater than 0 and at most 1000000"),
					 errdetail("{\"field\": \"per_second\"}"),
					 errhint("per_second is the steady rate: 0.5 allows one request every 2 seconds.")));
	}
	interval = rint(1000000.0 / per_second);
	if (interval < 1)
		interval = 1;
	if (interval * (float8) burst > (float8) RATE_MAX_WINDOW_US)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("rate limit window too long"),
				 errdetail("{\"field\": \"per_second\", \"max_window_days\": 3652}"),
				 errhint("burst / per_second (the time the bucket takes to drain) must be at most ten years.")));
	return (int64) interval;
}

static int64
ceil_ms(int64 us)
{
	return us <= 0 ? 0 : (us + 999) / 1000;
}

/*
 * Reads the bucket under its row lock, decides, and records the request
 * when it is allowed.  A refused request writes nothing.
 */
static void
bucket_decide(const pg_uuid_t *user_id, text *action, int32 burst, int64 interval_us,
			  TimestampTz now, GcraResult *result)
{
	Datum		args[3] = {UUIDPGetDatum(user_id), PointerGetDatum(action), (Datum) 0};

	for (int attempt = 0; attempt < 3; attempt++)
	{
		if (spi_exec(&bucket_lock, args, NULL) > 0)
		{
			TimestampTz tat = spi_get_time(0, 1);

			gcra_decide(true, tat, now, burst, interval_us, result);
			if (result->allowed)
			{
				args[2] = TimestampTzGetDatum(result->new_tat);
				spi_exec(&bucket_update, args, NULL);
			}
			return;
		}

		/* A new bucket: the first request always passes (burst >= 1). */
		gcra_decide(false, 0, now, burst, interval_us, result);
		args[2] = TimestampTzGetDatum(result->new_tat);
		if (spi_exec(&bucket_insert, args, NULL) > 0)
			return;
		/* A concurrent first request inserted the row: decide again under its lock. */
	}
	elog(ERROR, "credits: rate limit bucket kept vanishing");
}

static const Oid rate_limit_types[] = {BOOLOID, INT4OID, INT4OID, INT8OID, INT8OID};

static Datum
rate_limit_datum(FunctionCallInfo fcinfo, const GcraResult *result)
{
	TupleDesc	tupdesc;
	Datum		values[5];
	bool		nulls[5] = {false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "credits: function must return credits.rate_limit_result");
	check_row_type(tupdesc, "credits.rate_limit_result", rate_limit_types, lengthof(rate_limit_types));
	tupdesc = BlessTupleDesc(tupdesc);
	values[0] = BoolGetDatum(result->allowed);
	values[1] = Int32GetDatum(result->limit);
	values[2] = Int32GetDatum(result->remaining);
	values[3] = Int64GetDatum(ceil_ms(result->retry_after_us));
	values[4] = Int64GetDatum(ceil_ms(result->reset_after_us));
	return HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls));
}

static Datum
rate_limit_common(FunctionCallInfo fcinfo, TimestampTz now)
{
	pg_uuid_t  *user_id;
	text	   *action;
	int32		burst;
	float8		per_second;
	int64		interval_us;
	GcraResult	result;

	refuse_client_request("credits.rate_limit");
	require_arg(fcinfo, 0, "user_id");
	user_id = PG_GETARG_UUID_P(0);
	require_arg(fcinfo, 1, "action");
	action = optional_key_arg(fcinfo, 1, "action");
	require_arg(fcinfo, 2, "burst");
	burst = PG_GETARG_INT32(2);
	require_arg(fcinfo, 3, "per_second");
	per_second = PG_GETARG_FLOAT8(3);
	interval_us = emission_interval_us(burst, per_second, false);

	SPI_connect();
	bucket_decide(user_id, action, burst, interval_us, now, &result);
	SPI_finish();

	if (!result.allowed)
		denial_record(DENIAL_THROTTLED, user_id, text_to_cstring(action),
					  psprintf("{\"retry_after_ms\": " INT64_FORMAT ", \"burst\": %d, \"per_second\": %s}",
							   ceil_ms(result.retry_after_us), burst,
							   float8out_internal(per_second)));
	PG_RETURN_DATUM(rate_limit_datum(fcinfo, &result));
}

/*
 * credits.rate_limit(user_id uuid, action text, burst integer,
 *     per_second double precision) returns credits.rate_limit_result
 * At the wall-clock time of the call (clock_timestamp()).
 */
PG_FUNCTION_INFO_V1(credits_rate_limit);
Datum
credits_rate_limit(PG_FUNCTION_ARGS)
{
	return rate_limit_common(fcinfo, GetCurrentTimestamp());
}

/*
 * credits.rate_limit_at(user_id uuid, action text, burst integer,
 *     per_second double precision, at timestamptz) returns credits.rate_limit_result
 * The same at a given time: for tests and simulations, owner only.
 */
PG_FUNCTION_INFO_V1(credits_rate_limit_at);
Datum
credits_rate_limit_at(PG_FUNCTION_ARGS)
{
	TimestampTz at;

	require_arg(fcinfo, 4, "at");
	at = PG_GETARG_TIMESTAMPTZ(4);
	if (TIMESTAMP_NOT_FINITE(at))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("at must be a finite time"),
				 errdetail("{\"field\": \"at\"}"),
				 errhint("Pass a time such as clock_timestamp().")));
	return rate_limit_common(fcinfo, at);
}

/*
 * The plan's limit on billable operations, for check_operation(): a
 * cooldown since the last operation and a GCRA bucket (plans.rate_burst,
 * plans.rate_per_second).  Refuses with PT429 and retry_after_ms when either
 * applies (the longer wait wins, since retrying sooner cannot pass); else
 * records the operation in the account, which the caller saves.
 *
 * A plan without a limit or a cooldown costs a clock read and no SQL.
 */
void
ratelimit_check_plan(Account *acct, const char *operation)
{
	TimestampTz now = GetCurrentTimestamp();
	int64		cooldown_wait_us = 0;
	GcraResult	gcra = {0};

	if (acct->cooldown_ms > 0 && acct->has_last_operation_at)
	{
		TimestampTz ready_at = acct->last_operation_at +
			(int64) acct->cooldown_ms * INT64CONST(1000);

		if (ready_at > now)
			cooldown_wait_us = ready_at - now;
	}
	if (acct->has_rate_limit)
	{
		int64		interval_us = emission_interval_us(acct->rate_burst,
													   acct->rate_per_second, true);

		gcra_decide(acct->has_rate_tat, acct->rate_tat, now, acct->rate_burst,
					interval_us, &gcra);
	}
	else
		gcra.allowed = true;

	if (!gcra.allowed && gcra.retry_after_us >= cooldown_wait_us)
		refuse_rate_limited(acct, operation, ceil_ms(gcra.retry_after_us));
	if (cooldown_wait_us > 0)
		refuse_cooldown(acct, operation, ceil_ms(cooldown_wait_us));

	if (acct->has_rate_limit)
	{
		acct->has_rate_tat = true;
		acct->rate_tat = gcra.new_tat;
	}
	acct->has_last_operation_at = true;
	acct->last_operation_at = now;
}
