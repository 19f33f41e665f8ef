/*
 * rows.c
 *		Direct row access for the hot path: the account row, the first lot,
 *		the ledger append.
 *
 * A credit check sits in front of every AI request, so consume must cost
 * about what one small write transaction costs.  Through SPI every statement
 * pays executor start-up (plan tree, expression compilation, constraint
 * compilation) that dwarfs the work itself; here the same rows are read
 * through their indexes and written with the executor's simple-relation
 * routines (the ones logical replication applies changes with).
 *
 * What a table declares and these writes keep, as an INSERT or UPDATE
 * naming the same columns would (each is proven by sql/dba_*.sql):
 *   - CHECK and NOT NULL constraints, unique indexes and exclusion
 *     constraints, every index maintained;
 *   - stored generated columns, recomputed;
 *   - the DEFAULT of every column the code does not set, on insert
 *     (volatile defaults evaluated per row, like nextval());
 *   - row triggers, BEFORE and AFTER, including UPDATE OF column triggers
 *     (the updated columns are the ones the code sets); a BEFORE trigger's
 *     changes to the new row are kept;
 *   - foreign keys (their RI triggers), publications (the writes are
 *     WAL-logged like any other; an UPDATE needs a replica identity).
 * What they do not do: statement-level triggers do not fire, and row level
 * security policies are not applied (the functions run as the extension's
 * owner, which a policy must let through anyway).  The CHECK constraints,
 * defaults, partial index predicates and (before PostgreSQL 16, src/compat.h)
 * generated columns are compiled once per backend, not per statement: that,
 * planning and executor start-up is what is saved.
 *
 * The tables must stay what the code was written for: a plain table whose
 * columns the code uses have the type it reads and writes, and stay NOT NULL
 * where it reads them without a check.  A change to that (a column type, a
 * dropped column or NOT NULL, a partitioned table in its place) is refused
 * at the first use after it, with an error naming the table and column.
 *
 * Visibility follows what a statement run through SPI would see: the current
 * command counter is incremented first (earlier writes of this transaction
 * become visible), and reads use a fresh snapshot in READ COMMITTED, the
 * transaction snapshot in REPEATABLE READ and SERIALIZABLE.  A write uses
 * the command id that follows, as the next statement would.  Nothing is
 * written in a read-only transaction or on a hot standby (25006).
 *
 * Columns are found by name, once per backend and table: the code does not
 * depend on their order.
 *
 * Locks: the table RowExclusiveLock to write, AccessShareLock on an index to
 * scan it (both held until the transaction ends, as a statement's are), and
 * the row lock row_lock() takes (FOR UPDATE).
 */
#include "credits.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "optimizer/optimizer.h"
#include "rewrite/rewriteHandler.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

/*
 * Per-backend caches: the OIDs of the extension's relations by name, and
 * each table's resolved columns and compiled expressions (CHECK constraints,
 * stored generated columns, defaults).  A relcache invalidation of one of
 * those relations (ALTER TABLE, DROP EXTENSION, ...) or a full reset drops
 * them all.  Every table opened is on the registered list; the names cached
 * are the handful the code uses, and one more is an error.
 */
#define MAX_CACHED_RELIDS 16

typedef struct CachedRelid
{
	const char *name;
	Oid			relid;
} CachedRelid;

static CachedRelid cached_relids[MAX_CACHED_RELIDS];
static int	ncached_relids = 0;
static CreditsTable *registered_tables = NULL;
static bool callback_registered = false;

/*
 * Drops the table's compiled expressions.  A writer of this transaction may
 * still point at them (an invalidation can arrive whenever a lock is taken),
 * so they go away with the transaction, not now.
 */
static void
forget_expressions(CreditsTable *table)
{
	if (table->checks_cxt != NULL)
		MemoryContextSetParent(table->checks_cxt, CurTransactionContext);
	table->checks_cxt = NULL;
	table->checks = NULL;
	table->nchecks = 0;
	table->generated = NULL;
	table->ngenerated = 0;
	table->defaults = NULL;
	table->default_attnums = NULL;
	table->ndefaults = 0;
	table->predicate_indexes = NULL;
	table->predicates = NULL;
	table->npredicates = 0;
}

static void
relcache_changed(Datum arg, Oid relid)
{
	bool		ours = !OidIsValid(relid);

	for (int i = 0; i < ncached_relids && !ours; i++)
		ours = cached_relids[i].relid == relid;
	for (CreditsTable *t = registered_tables; t != NULL && !ours; t = t->next_registered)
		ours = t->resolved_relid == relid;
	if (!ours)
		return;
	ncached_relids = 0;
	for (CreditsTable *t = registered_tables; t != NULL; t = t->next_registered)
		t->resolved_relid = InvalidOid;	/* re-read at the next open */
}

/* The OID of credits.<name> (a table, index or sequence). */
Oid
credits_relid(const char *name)
{
	Oid			relid;

	credits_check_version();
	for (int i = 0; i < ncached_relids; i++)
		if (strcmp(cached_relids[i].name, name) == 0)
			return cached_relids[i].relid;

	relid = get_relname_relid(name, get_namespace_oid("credits", false));
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("relation credits.%s of the credits extension does not exist", name),
				 errdetail_internal("{\"relation\": \"credits.%s\"}", name),
				 errhint("Re-create it as the extension's scripts define it.")));
	if (ncached_relids == MAX_CACHED_RELIDS)
		elog(ERROR, "credits: more than %d relations to cache: raise MAX_CACHED_RELIDS",
			 MAX_CACHED_RELIDS);
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(relcache_changed, (Datum) 0);
		callback_registered = true;
	}
	cached_relids[ncached_relids].name = name;	/* a string literal */
	cached_relids[ncached_relids].relid = relid;
	ncached_relids++;
	return relid;
}

/* Refuses a table that is not the plain table the code was written for. */
static void
check_relkind(CreditsTable *table, Relation rel)
{
	if (rel->rd_rel->relkind == RELKIND_RELATION)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_WRONG_OBJECT_TYPE),
			 errmsg("credits.%s is not a plain table", table->name),
			 errdetail_internal("{\"table\": \"credits.%s\", \"relkind\": \"%c\"}",
								table->name, rel->rd_rel->relkind),
			 errhint("The credits functions write to their tables directly: keep credits.%s an "
					 "ordinary table (not partitioned, not a view).", table->name)));
}

/* Refuses a column whose type or NOT NULL constraint is not what the code uses. */
static void
check_column(CreditsTable *table, const CreditsColumn *col, Form_pg_attribute att)
{
	char	   *actual = format_type_extended(att->atttypid, -1, FORMAT_TYPE_FORCE_QUALIFY);

	if (strcmp(actual, col->type) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column credits.%s.%s has type %s, not %s", table->name, col->name,
						actual, col->type),
				 errdetail_internal("{\"table\": \"credits.%s\", \"column\": \"%s\", "
									"\"expected_type\": %s, \"actual_type\": %s}",
									table->name, col->name, json_quote(col->type),
									json_quote(actual)),
				 errhint("The credits functions read and write this column as %s: "
						 "change its type back.", col->type)));
	if (col->not_null && !att->attnotnull)
		ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg("column credits.%s.%s must be NOT NULL", table->name, col->name),
				 errdetail_internal("{\"table\": \"credits.%s\", \"column\": \"%s\"}",
									table->name, col->name),
				 errhint("The credits functions rely on the column having a value: "
						 "ALTER TABLE credits.%s ALTER COLUMN %s SET NOT NULL.",
						 table->name, col->name)));
}

/*
 * Refuses a row type the C code returns (credits.receipt,
 * credits.account_deletion, credits.rate_limit_result) when a DBA changed it
 * (ALTER TYPE ... ADD, DROP or ALTER ATTRIBUTE): the values are built for
 * the attributes below, in order, and a row formed with another descriptor
 * would read past them or take a bigint for a pointer.
 */
void
check_row_type(TupleDesc desc, const char *type_name, const Oid *types, int ntypes)
{
	for (int a = 0; a < Max(desc->natts, ntypes); a++)
	{
		Form_pg_attribute att = a < desc->natts ? TupleDescAttr(desc, a) : NULL;
		Oid			actual = att == NULL || att->attisdropped ? InvalidOid : att->atttypid;
		Oid			expected = a < ntypes ? types[a] : InvalidOid;

		if (actual == expected)
			continue;
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("row type %s was altered: attribute %d is %s where the credits functions return %s",
						type_name, a + 1,
						OidIsValid(actual) ? format_type_be(actual) : "missing",
						OidIsValid(expected) ? format_type_be(expected) : "none"),
				 errdetail_internal("{\"type\": \"%s\", \"attribute\": %d, "
									"\"expected_type\": %s, \"actual_type\": %s}",
									type_name, a + 1,
									OidIsValid(expected) ? json_quote(format_type_be(expected)) : "null",
									OidIsValid(actual) ? json_quote(format_type_be(actual)) : "null"),
				 errhint("The credits functions return %s as the extension created it: "
						 "put the type back (see credits--1.0.sql).", type_name)));
	}
}

/* Resolves the table's column names to attribute numbers, checking each. */
static void
resolve_columns(CreditsTable *table, Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);

	check_relkind(table, rel);
	for (int i = 0; i < table->ncolumns; i++)
	{
		const CreditsColumn *col = &table->columns[i];

		table->attnum[i] = InvalidAttrNumber;
		for (int a = 0; a < desc->natts; a++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, a);

			if (!att->attisdropped && strcmp(NameStr(att->attname), col->name) == 0)
			{
				check_column(table, col, att);
				table->attnum[i] = att->attnum;
			}
		}
		if (table->attnum[i] == InvalidAttrNumber)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("column credits.%s.%s does not exist", table->name, col->name),
					 errdetail_internal("{\"table\": \"credits.%s\", \"column\": \"%s\"}",
										table->name, col->name),
					 errhint("The credits functions use this column: add it back as %s.",
							 col->type)));
	}
}

/* True when the code sets attribute `attnum` itself. */
static bool
sets_column(const CreditsTable *table, AttrNumber attnum)
{
	for (int i = 0; i < table->ncolumns; i++)
		if (table->attnum[i] == attnum)
			return true;
	return false;
}

/*
 * Compiles the DEFAULT of every column the code does not set (a column a
 * DBA added, say), as the executor fills them in for an INSERT that does not
 * name them.  Call in the table's expression context.
 */
static void
compile_defaults(CreditsTable *table, Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);

	table->defaults = palloc0(sizeof(ExprState *) * desc->natts);
	table->default_attnums = palloc0(sizeof(AttrNumber) * desc->natts);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		Expr	   *expr;

		if (att->attisdropped || att->attgenerated || sets_column(table, att->attnum))
			continue;
		expr = (Expr *) build_column_default(rel, att->attnum);
		if (expr == NULL)
			continue;
		table->defaults[table->ndefaults] = ExecInitExpr(expression_planner(expr), NULL);
		table->default_attnums[table->ndefaults] = att->attnum;
		table->ndefaults++;
	}
}

/*
 * Compiles the table's CHECK constraints and (before PostgreSQL 16, see
 * COMPAT_CACHES_GENERATED) stored generated columns once, as the executor
 * would for every statement (the compilation costs more
 * than the rest of a write).  Kept like the domain constraints in the type
 * cache: ExprStates without a parent, in a context of their own.
 */
static void
compile_expressions(CreditsTable *table, Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	TupleConstr *constr = desc->constr;
	MemoryContext oldcxt;

	table->checks_cxt = AllocSetContextCreate(CacheMemoryContext, "credits table expressions",
											  ALLOCSET_SMALL_SIZES);
	oldcxt = MemoryContextSwitchTo(table->checks_cxt);
	compile_defaults(table, rel);
	if (constr == NULL)
	{
		MemoryContextSwitchTo(oldcxt);
		return;
	}
	table->checks = palloc0(sizeof(ExprState *) * Max(constr->num_check, 1));
	for (int i = 0; i < constr->num_check; i++)
	{
		Expr	   *check = compat_check_expr(rel, &constr->check[i]);

		if (check != NULL)
			table->checks[i] = ExecInitExpr(expression_planner(check), NULL);
	}
	table->nchecks = constr->num_check;
	if (constr->has_generated_stored && COMPAT_CACHES_GENERATED)
	{
		table->generated = palloc0(sizeof(ExprState *) * desc->natts);
		for (int i = 0; i < desc->natts; i++)
		{
			if (TupleDescAttr(desc, i)->attgenerated == ATTRIBUTE_GENERATED_STORED)
			{
				Expr	   *expr = (Expr *) build_column_default(rel, i + 1);

				table->generated[i] = ExecInitExpr(expression_planner(expr), NULL);
				table->ngenerated++;
			}
		}
	}
	MemoryContextSwitchTo(oldcxt);
}

/*
 * Hands the compiled expressions to a result relation, in the places the
 * executor looks for them before compiling its own.  Where those fields
 * moved (generated columns in PostgreSQL 16), the executor compiles them.
 */
static void
use_compiled_expressions(CreditsTable *table, ResultRelInfo *rri)
{
	TupleConstr *constr = RelationGetDescr(rri->ri_RelationDesc)->constr;

	if (table->checks_cxt == NULL || constr == NULL)
		return;
	compat_use_expressions(rri,
						   (constr->num_check > 0 && table->nchecks == constr->num_check)
						   ? table->checks : NULL,
						   table->generated, table->ngenerated);
}

/*
 * The compiled predicate of partial index `index` (ii_Predicate, as
 * BuildIndexInfo read it), compiled on its first use in this backend and
 * kept with the table's other expressions.  An index is found by its OID: a
 * new index (or one made again) is compiled anew; a relcache invalidation of
 * the table (CREATE or DROP INDEX) drops them all.
 */
static ExprState *
compiled_predicate(CreditsTable *table, Oid index, List *predicate)
{
	MemoryContext oldcxt;
	ExprState  *compiled;

	for (int i = 0; i < table->npredicates; i++)
		if (table->predicate_indexes[i] == index)
			return table->predicates[i];
	oldcxt = MemoryContextSwitchTo(table->checks_cxt);
	compiled = ExecInitQual((List *) expression_planner((Expr *) copyObject(predicate)), NULL);
	if (table->npredicates == 0)
	{
		table->predicate_indexes = palloc(sizeof(Oid));
		table->predicates = palloc(sizeof(ExprState *));
	}
	else
	{
		table->predicate_indexes = repalloc(table->predicate_indexes,
											sizeof(Oid) * (table->npredicates + 1));
		table->predicates = repalloc(table->predicates,
									 sizeof(ExprState *) * (table->npredicates + 1));
	}
	table->predicate_indexes[table->npredicates] = index;
	table->predicates[table->npredicates++] = compiled;
	MemoryContextSwitchTo(oldcxt);
	return compiled;
}

/*
 * Hands the partial indexes' compiled predicates to the open indexes of a
 * result relation, where ExecInsertIndexTuples() looks before compiling its
 * own (which it would do for every statement).
 */
static void
use_compiled_predicates(CreditsTable *table, ResultRelInfo *rri)
{
	if (table->checks_cxt == NULL)
		return;
	for (int i = 0; i < rri->ri_NumIndices; i++)
	{
		IndexInfo  *info = rri->ri_IndexRelationInfo[i];

		if (info->ii_Predicate != NIL && info->ii_PredicateState == NULL)
			info->ii_PredicateState =
				compiled_predicate(table, RelationGetRelid(rri->ri_IndexRelationDescs[i]),
								   info->ii_Predicate);
	}
}

Relation
credits_table_open(CreditsTable *table, LOCKMODE lockmode)
{
	Relation	rel = table_open(credits_relid(table->name), lockmode);

	if (RelationGetRelid(rel) != table->resolved_relid)
	{
		forget_expressions(table);
		resolve_columns(table, rel);
		compile_expressions(table, rel);
		table->resolved_relid = RelationGetRelid(rel);
		if (!table->registered)
		{
			table->next_registered = registered_tables;
			registered_tables = table;
			table->registered = true;
		}
	}
	return rel;
}

/* The snapshot a statement run now would read with (registered: unregister it when done). */
Snapshot
row_statement_snapshot(void)
{
	CommandCounterIncrement();
	return RegisterSnapshot(IsolationUsesXactSnapshot() ? GetTransactionSnapshot()
							: GetLatestSnapshot());
}

/*
 * Starts an ordered scan of `index` (of credits.<table>) with `snapshot`
 * (registered, the scan's to unregister), for the rows whose first index
 * column is the user and, when `key` is given, whose second one equals that
 * text.
 */
static void
scan_begin(RowScan *scan, Relation rel, const char *index, const pg_uuid_t *user_id,
		   text *key, Snapshot snapshot)
{
	ScanKeyData keys[2];
	int			nkeys = key ? 2 : 1;

	scan->rel = rel;
	scan->followed_update = false;
	scan->index = index_open(credits_relid(index), AccessShareLock);
	scan->snapshot = snapshot;
	scan->slot = table_slot_create(rel, NULL);
	scan->scan = compat_index_beginscan(rel, scan->index, scan->snapshot, nkeys);
	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_UUID_EQ, UUIDPGetDatum(user_id));
	if (key)
	{
		ScanKeyInit(&keys[1], 2, BTEqualStrategyNumber, F_TEXTEQ, PointerGetDatum(key));
		keys[1].sk_collation = scan->index->rd_indcollation[1];
	}
	index_rescan(scan->scan, keys, nkeys, NULL, 0);
}

/* Starts a scan (see scan_begin) with the snapshot a statement run now would use. */
void
row_scan_begin(RowScan *scan, Relation rel, const char *index, const pg_uuid_t *user_id,
			   text *key)
{
	scan_begin(scan, rel, index, user_id, key, row_statement_snapshot());
}

/* Starts a scan (see scan_begin) with `snapshot`, which stays the caller's to unregister. */
void
row_scan_begin_at(RowScan *scan, Relation rel, const char *index, const pg_uuid_t *user_id,
				  text *key, Snapshot snapshot)
{
	scan_begin(scan, rel, index, user_id, key, RegisterSnapshot(snapshot));
}

/* Starts a scan of the writer's table for the user, with the writer's snapshot. */
void
row_writer_scan(RowWriter *writer, RowScan *scan, const char *index, const pg_uuid_t *user_id)
{
	scan_begin(scan, writer->rel, index, user_id, NULL,
			   RegisterSnapshot(writer->estate->es_snapshot));
}

/* The next row in index order, in scan->slot; false at the end. */
bool
row_scan_next(RowScan *scan)
{
	return index_getnext_slot(scan->scan, ForwardScanDirection, scan->slot);
}

void
row_scan_end(RowScan *scan)
{
	index_endscan(scan->scan);
	/* the lock stays until the transaction ends, as a statement's would */
	index_close(scan->index, NoLock);
	ExecDropSingleTupleTableSlot(scan->slot);
	UnregisterSnapshot(scan->snapshot);
}

/*
 * A write needs a transaction that can write: refuse it here, with the
 * reason, in a READ ONLY transaction or on a hot standby, rather than fail
 * later on a row lock or a transaction id.  account_lock() calls it first,
 * so that SPI writes get the same answer.
 */
void
credits_require_writable(void)
{
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot change credits on a hot standby"),
				 errdetail_internal("{\"read_only\": \"recovery\"}"),
				 errhint("Send writes (consume, grants, holds, purchases) to the primary; "
						 "the read functions work here.")));
	if (XactReadOnly)
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot change credits in a read-only transaction"),
				 errdetail_internal("{\"read_only\": \"transaction\"}"),
				 errhint("Call it in a read-write transaction (in PostgREST, a POST request, not GET); "
						 "the read functions work in read-only transactions.")));
}

/*
 * Locks the row in scan->slot FOR UPDATE, as SELECT ... FOR UPDATE would:
 * waits for a concurrent writer, then (READ COMMITTED) locks the row's
 * newest version and reloads it into the slot; under REPEATABLE READ and
 * SERIALIZABLE a row changed since the transaction's snapshot is a
 * serialization failure (scan->followed_update tells whether the version
 * locked is newer than the one the scan found).  Returns false when the row
 * was deleted meanwhile, or (as the executor ignores it) was changed by the
 * current command; a change by a later command (a trigger of this
 * statement) is an error.
 */
bool
row_lock(RowScan *scan)
{
	TM_FailureData tmfd;
	TM_Result	result;
	int			flags = IsolationUsesXactSnapshot() ? 0 : TUPLE_LOCK_FLAG_FIND_LAST_VERSION;
	CommandId	cid = GetCurrentCommandId(false);

	credits_require_writable();
	result = table_tuple_lock(scan->rel, &scan->slot->tts_tid, scan->snapshot, scan->slot,
							  cid, LockTupleExclusive, LockWaitBlock, flags, &tmfd);
	switch (result)
	{
		case TM_Ok:
			scan->followed_update = tmfd.traversed;
			return true;
		case TM_SelfModified:
			if (tmfd.cmax != cid)
				ereport(ERROR,
						(errcode(ERRCODE_TRIGGERED_DATA_CHANGE_VIOLATION),
						 errmsg("tuple to be locked was already modified by an operation triggered by the current command"),
						 errdetail_internal("{\"table\": \"credits.%s\"}",
											RelationGetRelationName(scan->rel)),
						 errhint("Do not change the credits tables from a trigger fired by a credits function.")));
			return false;
		case TM_Updated:
		case TM_Deleted:
			if (IsolationUsesXactSnapshot())
				ereport(ERROR,
						(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
						 errmsg("could not serialize access due to concurrent update"),
						 errdetail("Another transaction changed the credit account since this transaction began."),
						 errhint("Retry the transaction.")));
			/* READ COMMITTED follows updates, so only a delete gets here */
			return false;
		default:
			elog(ERROR, "credits: unexpected table_tuple_lock result %d", (int) result);
	}
	return false;					/* keep the compiler quiet */
}

/*
 * The executor state of a writer: a range table of the one table (the
 * result relation's RTE, which holds the columns an UPDATE sets, for
 * UPDATE OF triggers, and which EvalPlanQual needs), as logical
 * replication's apply worker builds it.
 */
static void
writer_range_table(RowWriter *writer)
{
	RangeTblEntry *rte = makeNode(RangeTblEntry);

	rte->rtekind = RTE_RELATION;
	rte->relid = RelationGetRelid(writer->rel);
	rte->relkind = writer->rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	compat_init_range_table(writer->estate, rte);
}

/* The updated columns of the writer's UPDATE, kept where the executor reads them. */
static Bitmapset **
writer_updated_cols(RowWriter *writer)
{
	return compat_updated_cols(writer->estate);
}

/*
 * Opens credits.<table> for writing: an executor state with the table as
 * its result relation, its indexes open, AFTER triggers armed.  The
 * snapshot is taken first (it advances the command counter), then the
 * command id the writes are made with, as for a statement run now.
 */
void
row_writer_open(RowWriter *writer, CreditsTable *table)
{
	MemoryContext oldcxt;

	credits_require_writable();
	writer->table = table;
	writer->updating = false;
	writer->rel = credits_table_open(table, RowExclusiveLock);
	writer->estate = CreateExecutorState();
	writer->estate->es_snapshot = row_statement_snapshot();
	writer->estate->es_output_cid = GetCurrentCommandId(true);
	oldcxt = MemoryContextSwitchTo(writer->estate->es_query_cxt);
	writer_range_table(writer);
	writer->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(writer->rri, writer->rel, 1, NULL, 0);
	use_compiled_expressions(table, writer->rri);
	ExecOpenIndices(writer->rri, false);
	use_compiled_predicates(table, writer->rri);
	writer->slot = table_slot_create(writer->rel, &writer->estate->es_tupleTable);
	MemoryContextSwitchTo(oldcxt);
	/* an invalidation may drop the table's expressions: they live until the end of the transaction */
	writer->defaults = table->defaults;
	writer->default_attnums = table->default_attnums;
	writer->ndefaults = table->ndefaults;
	compat_epq_init(&writer->epq, writer->estate);
	AfterTriggerBeginQuery();
}

/*
 * Fills writer->slot with every column NULL, or its DEFAULT for the columns
 * the code does not set; set the columns, then insert.
 */
void
row_writer_clear(RowWriter *writer)
{
	TupleTableSlot *slot = writer->slot;

	ExprContext *econtext = GetPerTupleExprContext(writer->estate);

	writer->updating = false;
	ExecClearTuple(slot);
	memset(slot->tts_values, 0, sizeof(Datum) * slot->tts_tupleDescriptor->natts);
	memset(slot->tts_isnull, true, sizeof(bool) * slot->tts_tupleDescriptor->natts);
	for (int i = 0; i < writer->ndefaults; i++)
	{
		int			a = writer->default_attnums[i] - 1;

		slot->tts_values[a] = ExecEvalExprSwitchContext(writer->defaults[i], econtext,
														&slot->tts_isnull[a]);
	}
}

/*
 * Sets column `col` (an index into table->columns) of writer->slot; for an
 * update, the column counts as updated (UPDATE OF triggers).
 */
void
row_writer_set(RowWriter *writer, int col, Datum value, bool isnull)
{
	AttrNumber	attnum = writer->table->attnum[col];

	if (writer->updating)
	{
		Bitmapset **updated = writer_updated_cols(writer);
		MemoryContext oldcxt = MemoryContextSwitchTo(writer->estate->es_query_cxt);

		*updated = bms_add_member(*updated, attnum - FirstLowInvalidHeapAttributeNumber);
		MemoryContextSwitchTo(oldcxt);
	}
	writer->slot->tts_values[attnum - 1] = value;
	writer->slot->tts_isnull[attnum - 1] = isnull;
}

/* Inserts writer->slot: constraints checked, indexes and triggers maintained. */
void
row_writer_insert(RowWriter *writer)
{
	ExecStoreVirtualTuple(writer->slot);
	ExecSimpleRelationInsert(writer->rri, writer->estate, writer->slot);
}

/* Copies the row in `old` into writer->slot, to change some columns and update. */
void
row_writer_copy(RowWriter *writer, TupleTableSlot *old)
{
	TupleTableSlot *slot = writer->slot;
	int			natts = slot->tts_tupleDescriptor->natts;

	ExecClearTuple(slot);
	writer->updating = true;
	*writer_updated_cols(writer) = NULL;
	slot_getallattrs(old);
	memcpy(slot->tts_values, old->tts_values, sizeof(Datum) * natts);
	memcpy(slot->tts_isnull, old->tts_isnull, sizeof(bool) * natts);
}

/* Replaces the row in `old` (locked by this transaction) with writer->slot. */
void
row_writer_update(RowWriter *writer, TupleTableSlot *old)
{
	ExecStoreVirtualTuple(writer->slot);
	ExecSimpleRelationUpdate(writer->rri, writer->estate, &writer->epq, old, writer->slot);
}

void
row_writer_close(RowWriter *writer)
{
	Snapshot	snapshot = writer->estate->es_snapshot;

	AfterTriggerEndQuery(writer->estate);
	EvalPlanQualEnd(&writer->epq);
	ExecCloseIndices(writer->rri);
	ExecCloseResultRelations(writer->estate);	/* and relations its triggers opened */
	ExecResetTupleTable(writer->estate->es_tupleTable, false);
	FreeExecutorState(writer->estate);
	UnregisterSnapshot(snapshot);
	table_close(writer->rel, NoLock);
}
