/*
 * price_list.c
 *		The price list (credits.operations, with the rank of a required plan)
 *		and the plans' settings, cached per backend.
 *
 * Every consume and reserve looks its operation and the account's plan up;
 * both change rarely, when an admin edits credits.operations or
 * credits.plans.  Entries live in two hash tables in CacheMemoryContext and
 * are all dropped whenever either table changes: a statement trigger on both
 * tables (credits.price_list_changed, enabled ALWAYS, so it fires under
 * logical replication and pg_restore --disable-triggers too) registers a
 * relcache invalidation,
 * which PostgreSQL processes in the changing backend at its next command and
 * in every other backend after the change commits, no later than the start
 * of its next transaction.  A DROP EXTENSION invalidates the tables too.
 * Unknown operations and plans are not cached.
 *
 * A cache miss reads the row with SPI and keeps it only when no invalidation
 * can have come between the read's snapshot and the read (fill_is_current):
 * the change behind an invalidation is committed before the invalidation is
 * sent, so a snapshot taken after this backend processed it sees the change,
 * and an invalidation processed later drops the entry.  Under READ
 * COMMITTED the read takes a new snapshot, so it is enough that none came
 * during the read.  Under REPEATABLE READ and SERIALIZABLE the read sees the
 * transaction's snapshot, taken at its first statement: a row read after an
 * invalidation processed in the same transaction may be older than the
 * change, and is used for that call only (the transaction keeps seeing what
 * its snapshot says, and the next transaction reads the new row).
 * (A transaction that imports an older snapshot with SET TRANSACTION
 * SNAPSHOT is not covered: the import is the first thing it does, so an
 * invalidation it processes may belong to a change older than that snapshot.)
 * No locks of its own.
 */
#include "credits.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

/* operations.name is at most 255 characters, so at most 1020 bytes */
#define OPERATION_KEY_BYTES 1024

typedef struct PriceListEntry
{
	char		name[OPERATION_KEY_BYTES];	/* hash key */
	Operation	op;
} PriceListEntry;

/* plans.name is at most 64 characters */
typedef struct PlanEntry
{
	char		name[PLAN_NAME_BYTES];	/* hash key */
	PlanSettings plan;
} PlanEntry;

static HTAB *price_list = NULL;
static HTAB *plan_list = NULL;
static Oid	operations_relid = InvalidOid;	/* resolved before each read */
static Oid	plans_relid = InvalidOid;
static bool callback_registered = false;

/* Invalidations of the two tables processed by this backend, and the last one's transaction. */
static uint64 invalidations = 0;
static LocalTransactionId invalidated_in = InvalidLocalTransactionId;

static CachedStatement operation_by_name = {
	"SELECT o.cost, o.max_units, o.enabled, o.required_plan, p.rank"
	"  FROM credits.operations o"
	"  LEFT JOIN credits.plans p ON p.name = o.required_plan"
	" WHERE o.name = $1",
	1, {TEXTOID}
};

/*
 * Relcache invalidation callback.  relid InvalidOid: every relation (after
 * a lost invalidation queue, for instance).  The table oids are resolved
 * again before the next read (DROP EXTENSION + CREATE EXTENSION).
 */
static void
price_list_reset(Datum arg, Oid relid)
{
	if (relid != InvalidOid && relid != operations_relid && relid != plans_relid)
		return;
	invalidations++;
	invalidated_in = compat_my_lxid();
	if (price_list != NULL)
		hash_destroy(price_list);
	if (plan_list != NULL)
		hash_destroy(plan_list);
	price_list = plan_list = NULL;
	operations_relid = plans_relid = InvalidOid;
}

/*
 * Before a read that may fill a cache: makes sure the callback knows the two
 * tables, and returns the invalidation count to compare with afterwards.
 */
static uint64
fill_begin(void)
{
	Oid			schema;

	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(price_list_reset, (Datum) 0);
		callback_registered = true;
	}
	if (!OidIsValid(operations_relid) || !OidIsValid(plans_relid))
	{
		schema = get_namespace_oid("credits", false);
		operations_relid = get_relname_relid("operations", schema);
		plans_relid = get_relname_relid("plans", schema);
	}
	return invalidations;
}

/*
 * May a row read since fill_begin() returned `mark` be cached?  Not when an
 * invalidation came during the read, nor, with a transaction snapshot, when
 * one came earlier in this transaction (see the file header).
 */
static bool
fill_is_current(uint64 mark)
{
	if (invalidations != mark)
		return false;
	return !(IsolationUsesXactSnapshot() && invalidated_in == compat_my_lxid());
}

/* Creates both caches (they are dropped together). */
static void
price_list_create(void)
{
	HASHCTL		ctl;

	ctl.keysize = OPERATION_KEY_BYTES;
	ctl.entrysize = sizeof(PriceListEntry);
	ctl.hcxt = CacheMemoryContext;
	price_list = hash_create("credits price list", 64, &ctl,
							 HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	ctl.keysize = PLAN_NAME_BYTES;
	ctl.entrysize = sizeof(PlanEntry);
	plan_list = hash_create("credits plans", 16, &ctl,
							HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
}

/* Reads one operation with SPI; false when there is no such operation. */
static bool
read_operation(const char *name, Operation *op)
{
	Datum		args[1] = {CStringGetTextDatum(name)};
	bool		isnull;
	Datum		value;

	if (spi_exec(&operation_by_name, args, NULL) == 0)
		return false;
	op->name = NULL;			/* set by the caller */
	op->cost = spi_get_int64(0, 1);
	op->max_units = spi_get_int64(0, 2);
	op->enabled = spi_get_bool(0, 3);
	value = spi_get_typed(0, 4, TEXTOID, &isnull);
	op->has_required_plan = !isnull;
	op->required_plan[0] = '\0';
	if (!isnull)
		text_to_cstring_buffer(DatumGetTextPP(value), op->required_plan,
							   sizeof(op->required_plan));
	value = spi_get_typed(0, 5, INT4OID, &isnull);
	op->required_rank = isnull ? 0 : DatumGetInt32(value);
	return true;
}

/*
 * Finds an operation of the price list (name already capped by validation).
 * Returns false for an unknown operation.  Call inside an SPI connection.
 */
bool
price_list_find(const char *name, Operation *op)
{
	PriceListEntry *entry;
	bool		found;
	uint64		mark;

	if (strlen(name) >= OPERATION_KEY_BYTES)
		return false;
	if (price_list != NULL)
	{
		entry = hash_search(price_list, name, HASH_FIND, NULL);
		if (entry != NULL)
		{
			*op = entry->op;
			return true;
		}
	}

	/* the read may process invalidations (and reset the cache): create it after */
	mark = fill_begin();
	if (!read_operation(name, op))
		return false;
	if (!fill_is_current(mark))
		return true;
	if (price_list == NULL)
		price_list_create();
	entry = hash_search(price_list, name, HASH_ENTER, &found);
	entry->op = *op;
	return true;
}

static CachedStatement plan_by_name = {
	"SELECT name, rank, daily_limit, monthly_allocation, allocation_rollover, bypass_credits,"
	"       rate_burst, rate_per_second, cooldown_ms, signup_bonus"
	"  FROM credits.plans WHERE name = $1",
	1, {TEXTOID}
};

/* Reads one plan with SPI; false when there is no such plan. */
static bool
read_plan(const char *name, PlanSettings *plan)
{
	Datum		args[1] = {CStringGetTextDatum(name)};
	bool		isnull;
	Datum		value;

	if (spi_exec(&plan_by_name, args, NULL) == 0)
		return false;
	text_to_cstring_buffer(DatumGetTextPP(spi_get_notnull(0, 1, TEXTOID)), plan->name,
						   sizeof(plan->name));
	plan->rank = spi_get_int32(0, 2);
	value = spi_get_typed(0, 3, INT4OID, &isnull);
	plan->has_daily_limit = !isnull;
	plan->daily_limit = isnull ? 0 : DatumGetInt32(value);
	plan->monthly_allocation = spi_get_int64(0, 4);
	plan->allocation_rollover = spi_get_bool(0, 5);
	plan->bypass_credits = spi_get_bool(0, 6);
	value = spi_get_typed(0, 7, INT4OID, &isnull);
	plan->has_rate_limit = !isnull;
	plan->rate_burst = isnull ? 0 : DatumGetInt32(value);
	value = spi_get_typed(0, 8, FLOAT8OID, &isnull);
	plan->rate_per_second = isnull ? 0 : DatumGetFloat8(value);
	plan->cooldown_ms = spi_get_int32(0, 9);
	plan->signup_bonus = spi_get_int64(0, 10);
	return true;
}

/*
 * Finds a plan's settings.  Returns false for an unknown plan.  Call inside
 * an SPI connection.
 */
bool
plan_find(const char *name, PlanSettings *plan)
{
	PlanEntry  *entry;
	bool		found;
	uint64		mark;

	if (strlen(name) >= PLAN_NAME_BYTES)
		return false;
	if (plan_list != NULL)
	{
		entry = hash_search(plan_list, name, HASH_FIND, NULL);
		if (entry != NULL)
		{
			*plan = entry->plan;
			return true;
		}
	}

	/* as in price_list_find: create the cache after the read */
	mark = fill_begin();
	if (!read_plan(name, plan))
		return false;
	if (!fill_is_current(mark))
		return true;
	if (plan_list == NULL)
		price_list_create();
	entry = hash_search(plan_list, name, HASH_ENTER, &found);
	entry->plan = *plan;
	return true;
}

/*
 * credits.price_list_changed() trigger, AFTER INSERT OR UPDATE OR DELETE OR
 * TRUNCATE FOR EACH STATEMENT on credits.operations and credits.plans.
 */
PG_FUNCTION_INFO_V1(credits_price_list_changed);
Datum
credits_price_list_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "credits: price_list_changed must be called as a trigger");
	CacheInvalidateRelcache(trigdata->tg_relation);
	return PointerGetDatum(NULL);
}
