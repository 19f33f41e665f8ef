/*
 * kinds.c
 *		The ledger's entry kinds and what each means, in one table that every
 *		reader uses: the sign of its amount, the tombstone total it adds to
 *		when an account is deleted, and whether it is a charge for an
 *		operation (usage that refund() may give back).
 *
 * credits.entry_kind (the SQL enum) names the same kinds; credits.entry_kinds()
 * shows this table to SQL, and a regression test checks that the two agree,
 * so a kind added to one and not the other fails the tests instead of
 * breaking delete_account at run time.
 *
 * No locks, no catalog access.
 */
#include "credits.h"

#include "funcapi.h"
#include "utils/builtins.h"

/* The tombstone totals (credits.deleted_accounts), with their sign in its CHECK. */
static const struct
{
	const char *column;
	int			sign;			/* balance = sum of sign x total */
}			buckets[KIND_NBUCKETS] = {
	[KIND_GRANTED] = {"granted", 1},
	[KIND_SPENT] = {"spent", -1},
	[KIND_REFUNDED] = {"refunded", 1},
	[KIND_EXPIRED] = {"expired", -1},
	[KIND_ADJUSTED] = {"adjusted", 1},
};

static const EntryKind entry_kinds[] = {
	/* name         sign         bucket          billable */
	{"grant", KIND_CREDIT, KIND_GRANTED, false},
	{"purchase", KIND_CREDIT, KIND_GRANTED, false},
	{"allocation", KIND_CREDIT, KIND_GRANTED, false},
	{"consume", KIND_DEBIT, KIND_SPENT, true},
	{"hold", KIND_DEBIT, KIND_SPENT, false},
	{"capture", KIND_DEBIT, KIND_SPENT, true},
	{"release", KIND_CREDIT, KIND_SPENT, false},
	{"refund", KIND_CREDIT, KIND_REFUNDED, false},
	{"expire", KIND_DEBIT, KIND_EXPIRED, false},
	{"adjust", KIND_EITHER, KIND_ADJUSTED, false},
};

/* The kind called `name`; an internal error for a kind this build does not know. */
const EntryKind *
entry_kind(const char *name)
{
	for (size_t i = 0; i < lengthof(entry_kinds); i++)
	{
		if (strcmp(entry_kinds[i].name, name) == 0)
			return &entry_kinds[i];
	}
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("unknown ledger entry kind \"%s\"", name),
			 errdetail_internal("{\"kind\": %s}", json_quote(name)),
			 errhint("credits.entry_kind has a value that this build of credits does not know: "
					 "install the library that matches the extension version.")));
	pg_unreachable();
}

/* Does `amount` have the sign its kind allows?  (ledger_append checks every entry.) */
bool
entry_kind_allows(const EntryKind *kind, int64 amount)
{
	return kind->sign == KIND_EITHER ||
		(kind->sign == KIND_CREDIT && amount >= 0) ||
		(kind->sign == KIND_DEBIT && amount <= 0);
}

/* Adds an amount of this kind to the tombstone totals (totals[KIND_NBUCKETS]). */
void
entry_kind_add_to_totals(const EntryKind *kind, int64 amount, int64 *totals)
{
	int64		signed_amount = checked_mul(amount, buckets[kind->bucket].sign, "amount");

	totals[kind->bucket] = checked_add(totals[kind->bucket], signed_amount, "amount");
}

/*
 * credits.entry_kinds() returns table (kind text, sign integer,
 *     bucket text, billable boolean)
 * The table above: sign 1 (amount >= 0), -1 (amount <= 0) or 0 (either);
 * bucket, the credits.deleted_accounts total the kind adds to.
 */
PG_FUNCTION_INFO_V1(credits_entry_kinds);
Datum
credits_entry_kinds(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	for (size_t i = 0; i < lengthof(entry_kinds); i++)
	{
		Datum		values[4];
		bool		nulls[4] = {false};

		values[0] = CStringGetTextDatum(entry_kinds[i].name);
		values[1] = Int32GetDatum((int32) entry_kinds[i].sign);
		values[2] = CStringGetTextDatum(buckets[entry_kinds[i].bucket].column);
		values[3] = BoolGetDatum(entry_kinds[i].billable);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
