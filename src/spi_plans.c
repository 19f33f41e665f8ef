/*
 * spi_plans.c
 *		Statements prepared once per backend (SPI_prepare + SPI_keepplan).
 *
 * Each part of the extension declares its statements as static
 * CachedStatement values next to the code that uses them; the plan cache
 * revalidates them after DDL, so nothing here needs invalidation.  Every
 * statement names its objects schema-qualified and runs with the pinned
 * search_path of the calling SECURITY DEFINER function.  The getters that
 * take a type check it: the plan cache replans a statement after a column's
 * type changed, and its Datums would no longer be what the caller reads.
 * No locks of its own.
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

Datum
spi_get(int row, int col, bool *isnull)
{
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

/* An integer column (bigint, integer or smallint) as int64; 0 when NULL. */
int64
spi_get_int64(int row, int col)
{
	bool		isnull;
	Oid			typid = SPI_gettypeid(SPI_tuptable->tupdesc, col);
	Datum		value;

	if (typid == INT4OID || typid == INT2OID)
	{
		value = spi_get(row, col, &isnull);
		return isnull ? 0 : typid == INT4OID ? DatumGetInt32(value) : DatumGetInt16(value);
	}
	value = spi_get_typed(row, col, INT8OID, &isnull);
	return isnull ? 0 : DatumGetInt64(value);
}

/* A column the query never returns NULL for (a NOT NULL column): a NULL is refused. */
static Datum
spi_get_required(int row, int col, Oid typid)
{
	bool		isnull;
	Datum		value = spi_get_typed(row, col, typid, &isnull);

	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("column \"%s\" of a credits query is NULL",
						SPI_fname(SPI_tuptable->tupdesc, col)),
				 errdetail_internal("{\"column\": %s}",
									json_quote(SPI_fname(SPI_tuptable->tupdesc, col))),
				 errhint("A NOT NULL constraint of a credits table was dropped: restore it and fix the rows without a value.")));
	return value;
}

/* A uuid column that is never NULL. */
pg_uuid_t
spi_get_uuid(int row, int col)
{
	return *DatumGetUUIDP(spi_get_required(row, col, UUIDOID));
}

/* A text column that is never NULL, as a C string. */
char *
spi_get_cstring(int row, int col)
{
	return TextDatumGetCString(spi_get_required(row, col, TEXTOID));
}
