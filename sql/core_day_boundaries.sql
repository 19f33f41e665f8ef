-- The one day rule (src/local_day.c): credits.local_day(t, tz) is the date
-- the wall clock shows at t, credits.local_day_start(day, tz) the first
-- instant of that day or a later one.  Checked for every IANA zone that
-- pg_timezone_names lists (without the posix/ and right/ copies of them that
-- Debian installs too), at every day boundary of 2026 and 2027: the start of
-- a day belongs to it, the microsecond before to the day before, days start
-- in order, and the C rule agrees with SQL's AT TIME ZONE.
SET timezone = 'UTC';
WITH starts AS (
    SELECT z.name AS tz, d::date AS day, credits.local_day_start(d::date, z.name) AS s
      FROM pg_timezone_names z, generate_series('2026-01-01'::date, '2028-01-01', '1 day') d
     WHERE z.name !~ '^(posix|right)/'
), checked AS (
    SELECT tz, day, s, lead(s) OVER (PARTITION BY tz ORDER BY day) AS next_s,
           credits.local_day(s, tz) AS c_day,
           credits.local_day(s - interval '1 microsecond', tz) AS c_day_before,
           ((s - interval '1 microsecond') AT TIME ZONE tz)::date AS sql_day_before
      FROM starts
)
SELECT count(DISTINCT tz) > 250 AS every_zone,   -- (Debian 13 on ships legacy names apart, in tzdata-legacy)
       count(*) FILTER (WHERE day < '2028-01-01') / count(DISTINCT tz) AS days_per_zone,
       count(*) FILTER (WHERE day < '2028-01-01' AND c_day <> day) AS start_not_in_its_day,
       count(*) FILTER (WHERE day < '2028-01-01' AND c_day_before <> day - 1) AS before_start_not_in_day_before,
       count(*) FILTER (WHERE next_s <= s) AS out_of_order,
       count(*) FILTER (WHERE c_day_before <> sql_day_before) AS c_and_sql_disagree
  FROM checked;

-- Where the clock goes back from 01:00 to 00:00, the day starts at the first
-- 00:00; `day::timestamp AT TIME ZONE tz` (the rule before 1.1) took the second.
-- The Azores do so every October (Cuba did too, but its rules for 2026 differ
-- between tzdata releases, so the result would depend on the machine's).
SELECT tz, day, credits.local_day_start(day, tz) AS starts_at,
       day::timestamp AT TIME ZONE tz AS second_midnight,
       credits.local_day(credits.local_day_start(day, tz) + interval '30 minutes', tz) AS day_half_an_hour_in
  FROM (VALUES ('Atlantic/Azores', '2026-10-25'::date), ('Atlantic/Azores', '2027-10-31')) v (tz, day)
 ORDER BY tz, day;
-- The days where the two rules differ in the Azores in 2026 and 2027: those two.
SELECT z.name, count(*) AS days
  FROM pg_timezone_names z, generate_series('2026-01-01'::date, '2027-12-31', '1 day') d
 WHERE z.name = 'Atlantic/Azores'
   AND credits.local_day_start(d::date, z.name) <> (d::date::timestamp AT TIME ZONE z.name)
 GROUP BY z.name ORDER BY z.name;

-- Other days start at midnight; a day that the clock skips (Samoa moved
-- across the date line after 2011-12-29) starts with the next one; a day of
-- a DST change is 23 or 25 hours long.
SELECT credits.local_day_start('1990-03-25', 'Asia/Kolkata') AS ordinary,
       credits.local_day('2011-12-30 09:59:59.999999+00', 'Pacific/Apia') AS last_instant_of,
       credits.local_day('2011-12-30 10:00:00+00', 'Pacific/Apia') AS next_instant_of,
       credits.local_day_start('2011-12-30', 'Pacific/Apia') AS skipped_day_starts,
       credits.local_day_start('2011-12-31', 'Pacific/Apia') AS next_day_starts,
       credits.local_day_start('2026-03-30', 'Europe/Berlin') - credits.local_day_start('2026-03-29', 'Europe/Berlin') AS spring_day,
       credits.local_day_start('2026-10-26', 'Europe/Berlin') - credits.local_day_start('2026-10-25', 'Europe/Berlin') AS autumn_day;

-- Errors: an unknown zone, a day outside the timestamp range.
SELECT credits.local_day_start('2026-01-01', 'Nowhere/Zone');
SELECT credits.local_day_start('infinity', 'UTC');
SELECT credits.local_day_start('294277-01-01', 'UTC');
SELECT credits.local_day(NULL, 'UTC') IS NULL AND credits.local_day_start('2026-01-01', NULL) IS NULL AS null_gives_null;
RESET timezone;
