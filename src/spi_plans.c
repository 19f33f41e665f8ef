/*
 * spi_plans.c
 *		Statements prepared once per backend (SPI_prepare + SPI_keepplan).
 *
 * Each part of the extension declares its statements as static
 * CachedStatement values next to the code that uses them; the plan cache
 * revalidates them after DDL, so nothing here needs invalidation.  Every
 * statement names its objects schema-qualified and runs with the pinned
 * search_path of the calling SECURITY DEFINER function.  Every column is
 * read through a getter that checks its type (the plan cache replans a
 * statement after a column's type changed, and its Datums would no longer
 * be what the caller reads) and, unless its name ends in _or_null, refuses
 * a NULL (a NOT NULL a DBA dropped).  No locks of its own.
 */
#include "credits.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"

static void
prepare_statement(CachedStatement *stmt)
{
	SPIPlanPtr	plan = SPI_prepare(stmt->sql, stmt->nargs, stmt->argtypes);

	if (plan == NULL)
		elog(ERROR, "credits: SPI_prepare failed (%s) for: %s",
			 SPI_result_code_string(SPI_result), stmt->sql);
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "credits: SPI_keepplan failed");
	stmt->plan = plan;
}

uint64
spi_exec(CachedStatement *stmt, Datum *values, const char *nulls)
{
	int			rc;

	credits_check_version();
	if (stmt->plan == NULL)
		prepare_statement(stmt);
	rc = SPI_execute_plan(stmt->plan, values, nulls, false, 0);
	if (rc < 0)
		elog(ERROR, "credits: SPI_execute_plan failed (%s) for: %s",
			 SPI_result_code_string(rc), stmt->sql);
	return SPI_processed;
}

static Datum
spi_get(int row, int col, bool *isnull)
{
	if ((uint64) row >= SPI_processed)
		ereport(ERROR,
				(errcode(ERRCODE_CREDITS_DRIFT),
				 errmsg("a credits query returned " UINT64_FORMAT " rows, row %d was read",
						SPI_processed, row + 1),
				 errdetail_internal("{\"rows\": " UINT64_FORMAT ", \"row\": %d}", SPI_processed, row + 1),
				 errhint("A row of a credits table the query relies on is missing: run credits.reconcile().")));
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull);
}

/*
 * Column `col` of row `row`, which the caller reads as type `typid`.  A
 * column of a credits table whose type a DBA changed would hand over a
 * Datum of another type (a numeric pointer read as an int64): refused.
 */
Datum
spi_get_typed(int row, int col, Oid typid, bool *isnull)
{
	Oid			actual = SPI_gettypeid(SPI_tuptable->tupdesc, col);

	if (actual != typid)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column \"%s\" of a credits query has type %s, not %s",
						SPI_fname(SPI_tuptable->tupdesc, col), format_type_be(actual),
						format_type_be(typid)),
				 errdetail_internal("{\"column\": %s, \"expected_type\": %s, \"actual_type\": %s}",
									json_quote(SPI_fname(SPI_tuptable->tupdesc, col)),
									json_quote(format_type_be(typid)),
									json_quote(format_type_be(actual))),
				 errhint("A column of a credits table changed type: change it back.")));
	return spi_get(row, col, isnull);
}

/* An integer column (bigint, integer or smallint) as int64; false when NULL. */
bool
spi_get_int64_or_null(int row, int col, int64 *out)
{
	bool		isnull;
	Oid			typid = SPI_gettypeid(SPI_tuptable->tupdesc, col);
	Datum		value;

	if (typid == INT4OID || typid == INT2OID)
	{
		value = spi_get(row, col, &isnull);
		*out = isnull ? 0 : typid == INT4OID ? DatumGetInt32(value) : DatumGetInt16(value);
		return !isnull;
	}
	value = spi_get_typed(row, col, INT8OID, &isnull);
	*out = isnull ? 0 : DatumGetInt64(value);
	return !isnull;
}

/* A NULL where the query never returns one (a dropped NOT NULL): refused. */
static void
refuse_null(int col)
{
	ereport(ERROR,
			(errcode(ERRCODE_NOT_NULL_VIOLATION),
			 errmsg("column \"%s\" of a credits query is NULL",
					SPI_fname(SPI_tuptable->tupdesc, col)),
			 errdetail_internal("{\"column\": %s}",
								json_quote(SPI_fname(SPI_tuptable->tupdesc, col))),
			 errhint("A NOT NULL constraint of a credits table was dropped: restore it and fix the rows without a value.")));
}

/* An integer column that is never NULL, as int64. */
int64
spi_get_int64(int row, int col)
{
	int64		value;

	if (!spi_get_int64_or_null(row, col, &value))
		refuse_null(col);
	return value;
}

/* A column that is never NULL, as a Datum of type `typid`. */
Datum
spi_get_notnull(int row, int col, Oid typid)
{
	bool		isnull;
	Datum		value = spi_get_typed(row, col, typid, &isnull);

	if (isnull)
		refuse_null(col);
	return value;
}

/* A uuid column that is never NULL. */
pg_uuid_t
spi_get_uuid(int row, int col)
{
	return *DatumGetUUIDP(spi_get_notnull(row, col, UUIDOID));
}

/* A text column that is never NULL, as a C string. */
char *
spi_get_cstring(int row, int col)
{
	return TextDatumGetCString(spi_get_notnull(row, col, TEXTOID));
}

Datum
spi_text_arg(const char *value, char *null)
{
	*null = value ? ' ' : 'n';
	return value ? CStringGetTextDatum(value) : (Datum) 0;
}

/* A text column as a C string; NULL when NULL. */
char *
spi_get_cstring_or_null(int row, int col)
{
	bool		isnull;
	Datum		value = spi_get_typed(row, col, TEXTOID, &isnull);

	return isnull ? NULL : TextDatumGetCString(value);
}

/* A text column as a text Datum copied into the current context; NULL when NULL. */
text *
spi_get_text_or_null(int row, int col)
{
	bool		isnull;
	Datum		value = spi_get_typed(row, col, TEXTOID, &isnull);

	return isnull ? NULL : DatumGetTextPCopy(value);
}

/* An integer column that is never NULL. */
int32
spi_get_int32(int row, int col)
{
	return DatumGetInt32(spi_get_notnull(row, col, INT4OID));
}

/* A boolean column that is never NULL. */
bool
spi_get_bool(int row, int col)
{
	return DatumGetBool(spi_get_notnull(row, col, BOOLOID));
}

/* A timestamptz column that is never NULL. */
TimestampTz
spi_get_time(int row, int col)
{
	return DatumGetTimestampTz(spi_get_notnull(row, col, TIMESTAMPTZOID));
}

/* A timestamptz column; false when NULL. */
bool
spi_get_time_or_null(int row, int col, TimestampTz *out)
{
	bool		isnull;
	Datum		value = spi_get_typed(row, col, TIMESTAMPTZOID, &isnull);

	*out = isnull ? 0 : DatumGetTimestampTz(value);
	return !isnull;
}
