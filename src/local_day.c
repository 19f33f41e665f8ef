/*
 * local_day.c
 *		The one day rule: the local day of an instant, and the instant a
 *		local day starts, in a time zone.
 *
 * The local day of an instant t is the date the wall clock shows at t:
 * (t AT TIME ZONE tz)::date.  Local day D starts at the first instant whose
 * local day is D or later.  That is D 00:00 on the wall clock, except where a
 * change of UTC offset puts that time on the clock twice or never:
 *   - America/Havana and Atlantic/Azores set the clock back from 01:00 to
 *     00:00 at the end of DST: the day starts at the first 00:00, an hour
 *     before the second one;
 *   - a clock that jumps over midnight (from 23:30 to 00:30, say) starts the
 *     day at the jump.
 * `D::timestamp AT TIME ZONE tz` resolves both cases differently (the second
 * 00:00, a time after the jump), so it is not used for day boundaries.
 *
 * Every rule about "today" goes through these two: account.c (today and
 * the month), errors.c (resets_at of PT429), holds.c and refunds.c (does a
 * charge count today), the end of a monthly allocation, and in SQL
 * credits.day_count_from_ledger and credits.reconcile_checks, through
 * credits.local_day(timestamptz, text) and credits.local_day_start(date,
 * text).  Time zone names are resolved as AT TIME ZONE resolves them.
 * No locks.
 */
#include "credits.h"

#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"

/*
 * How far from a local midnight the instant that starts its day can be:
 * more than any UTC offset (at most 16 hours, local mean times included)
 * plus the change of offset around it.
 */
#define DAY_START_WINDOW	(INT64CONST(36) * USECS_PER_HOUR)

/* The wall clock at t in the zone, as AT TIME ZONE gives it. */
static Timestamp
wall_clock(text *tz, TimestampTz t)
{
	return DatumGetTimestamp(DirectFunctionCall2(timestamptz_zone, PointerGetDatum(tz),
												 TimestampTzGetDatum(t)));
}

/* UTC offset at t (wall clock minus t), in microseconds. */
static int64
utc_offset(text *tz, TimestampTz t)
{
	return wall_clock(tz, t) - t;
}

DateADT
local_day(text *tz, TimestampTz t)
{
	return DatumGetDateADT(DirectFunctionCall1(timestamp_date,
											   TimestampGetDatum(wall_clock(tz, t))));
}

/*
 * The first instant after `from` (whose offset is `offset`) with another
 * offset, given that `to` has another one: bisection to the microsecond.
 */
static TimestampTz
next_offset_change(text *tz, TimestampTz from, int64 offset, TimestampTz to)
{
	while (to - from > 1)
	{
		TimestampTz mid = from + (to - from) / 2;

		if (utc_offset(tz, mid) == offset)
			from = mid;
		else
			to = mid;
	}
	return to;
}

/*
 * The first instant whose local day is `day` or later.  Within the window
 * around the day's midnight the offset is constant between changes, so the
 * wall clock runs at the rate of time there: the first instant of a stretch
 * whose wall clock reaches midnight is midnight minus the stretch's offset,
 * or the stretch's start when the clock is past midnight already.  (A change
 * is found where the offsets at the two ends of what is left of the window
 * differ: an offset that changes and changes back within the 72 hours would
 * go unseen; no zone does that, sql/core_day_boundaries.sql checks 2026-2027.)
 */
static TimestampTz
local_day_start(text *tz, DateADT day)
{
	Timestamp	midnight;
	TimestampTz from;
	TimestampTz to;

	/* the window, and the wall clocks in it, stay within the timestamp range */
	if (DATE_NOT_FINITE(day) ||
		day < DATETIME_MIN_JULIAN - POSTGRES_EPOCH_JDATE + 2 ||
		day > TIMESTAMP_END_JULIAN - POSTGRES_EPOCH_JDATE - 3)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("date out of range for a local day"),
				 errdetail_internal("{\"field\": \"day\"}"),
				 errhint("Pass a finite date within the timestamp range.")));
	midnight = (Timestamp) day * USECS_PER_DAY;
	from = midnight - DAY_START_WINDOW;
	to = midnight + DAY_START_WINDOW;
	for (;;)
	{
		int64		offset = utc_offset(tz, from);
		TimestampTz end = to;
		TimestampTz first;

		if (utc_offset(tz, to) != offset)
			end = next_offset_change(tz, from, offset, to);
		first = Max(from, midnight - offset);
		if (first < end || end == to)
			return first;
		from = end;
	}
}

/*
 * credits.local_day(at timestamptz, tz text) returns date
 * The local day of `at` in the time zone; NULL when an argument is NULL.
 * (Not declared STRICT: the planner would fold a call with a NULL argument
 * before checking the caller's EXECUTE privilege.)
 */
PG_FUNCTION_INFO_V1(credits_local_day);
Datum
credits_local_day(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	PG_RETURN_DATEADT(local_day(PG_GETARG_TEXT_PP(1), PG_GETARG_TIMESTAMPTZ(0)));
}

/*
 * credits.local_day_start(day date, tz text) returns timestamptz
 * The instant local day `day` starts in the time zone; NULL when an argument
 * is NULL (not STRICT, as above).
 */
PG_FUNCTION_INFO_V1(credits_local_day_start);
Datum
credits_local_day_start(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	PG_RETURN_TIMESTAMPTZ(local_day_start(PG_GETARG_TEXT_PP(1), PG_GETARG_DATEADT(0)));
}
