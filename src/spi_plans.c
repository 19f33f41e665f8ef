/*
 * spi_plans.c
 *		Statements prepared once per backend (SPI_prepare + SPI_keepplan).
 *
 * Each part of the extension declares its statements as static
 * CachedStatement values next to the code that uses them; the plan cache
 * revalidates them after DDL, so nothing here needs invalidation.  Every
 * statement names its objects schema-qualified and runs with the pinned
 * search_path of the calling SECURITY DEFINER function.
 */
#include "credits.h"

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

int64
spi_get_int64(int row, int col)
{
	bool		isnull;
	Datum		value = spi_get(row, col, &isnull);

	return isnull ? 0 : DatumGetInt64(value);
}
