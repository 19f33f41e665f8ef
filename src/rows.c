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
 * routines (the ones logical replication applies changes with).  Those still
 * check every constraint, maintain every index and fire row triggers, so
 * nothing a table declares is bypassed; what is saved is planning, executor
 * start-up, and compiling the CHECK constraints (and, before PostgreSQL 16,
 * the generated columns) for every statement: they are compiled once per
 * backend here, as the executor would (src/compat.h).
 *
 * Visibility follows what a statement run through SPI would see: the current
 * command counter is incremented first (earlier writes of this transaction
 * become visible), and reads use a fresh snapshot in READ COMMITTED, the
 * transaction snapshot in REPEATABLE READ and SERIALIZABLE.
 *
 * Columns are found by name, once per backend and table: the code does not
 * depend on their order.
 */
#include "credits.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "optimizer/optimizer.h"
#include "rewrite/rewriteHandler.h"
#include "storage/lmgr.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

/*
 * Per-backend caches: the OIDs of the extension's relations by name, and
 * each table's resolved columns and compiled expressions (CHECK constraints,
 * stored generated columns).  A relcache
 * invalidation of one of those relations (ALTER TABLE, DROP EXTENSION, ...)
 * or a full reset drops them all.
 */
#define MAX_CACHED_RELIDS 16

typedef struct CachedRelid
{
	const char *name;
	Oid			relid;
} CachedRelid;

static CachedRelid cached_relids[MAX_CACHED_RELIDS];
static int	ncached_relids = 0;
static CreditsTable *opened_tables[MAX_CACHED_RELIDS];
static int	nopened_tables = 0;
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
}

static void
relcache_changed(Datum arg, Oid relid)
{
	bool		ours = !OidIsValid(relid);

	for (int i = 0; i < ncached_relids && !ours; i++)
		ours = cached_relids[i].relid == relid;
	for (int i = 0; i < nopened_tables && !ours; i++)
		ours = opened_tables[i]->resolved_relid == relid;
	if (!ours)
		return;
	ncached_relids = 0;
	for (int i = 0; i < nopened_tables; i++)
		opened_tables[i]->resolved_relid = InvalidOid;	/* re-read at the next open */
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
		elog(ERROR, "credits: relation credits.%s does not exist", name);
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(relcache_changed, (Datum) 0);
		callback_registered = true;
	}
	if (ncached_relids < MAX_CACHED_RELIDS)
	{
		cached_relids[ncached_relids].name = name;	/* a string literal */
		cached_relids[ncached_relids].relid = relid;
		ncached_relids++;
	}
	return relid;
}

/* Resolves the table's column names to attribute numbers. */
static void
resolve_columns(CreditsTable *table, Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);

	for (int i = 0; i < table->ncolumns; i++)
	{
		table->attnum[i] = InvalidAttrNumber;
		for (int a = 0; a < desc->natts; a++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, a);

			if (!att->attisdropped && strcmp(NameStr(att->attname), table->columns[i]) == 0)
				table->attnum[i] = att->attnum;
		}
		if (table->attnum[i] == InvalidAttrNumber)
			elog(ERROR, "credits: column credits.%s.%s does not exist",
				 table->name, table->columns[i]);
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

	if (constr == NULL || (constr->num_check == 0 && !constr->has_generated_stored))
		return;
	table->checks_cxt = AllocSetContextCreate(CacheMemoryContext, "credits table expressions",
											  ALLOCSET_SMALL_SIZES);
	oldcxt = MemoryContextSwitchTo(table->checks_cxt);
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

	if (table->checks_cxt == NULL)
		return;
	compat_use_expressions(rri,
						   (constr->num_check > 0 && table->nchecks == constr->num_check)
						   ? table->checks : NULL,
						   table->generated, table->ngenerated);
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
		if (!table->registered && nopened_tables < MAX_CACHED_RELIDS)
		{
			opened_tables[nopened_tables++] = table;
			table->registered = true;
		}
	}
	return rel;
}

/* The snapshot a statement run now would read with; unregister when done. */
static Snapshot
statement_snapshot(void)
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
	scan_begin(scan, rel, index, user_id, key, statement_snapshot());
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
	index_close(scan->index, AccessShareLock);
	ExecDropSingleTupleTableSlot(scan->slot);
	UnregisterSnapshot(scan->snapshot);
}

/*
 * Locks the row in scan->slot FOR UPDATE, as SELECT ... FOR UPDATE would:
 * waits for a concurrent writer, then (READ COMMITTED) locks the row's
 * newest version and reloads it into the slot; under REPEATABLE READ and
 * SERIALIZABLE a row changed since the transaction's snapshot is a
 * serialization failure.  Returns false when the row was deleted meanwhile.
 */
bool
row_lock(RowScan *scan)
{
	TM_FailureData tmfd;
	TM_Result	result;
	int			flags = IsolationUsesXactSnapshot() ? 0 : TUPLE_LOCK_FLAG_FIND_LAST_VERSION;

	result = table_tuple_lock(scan->rel, &scan->slot->tts_tid, scan->snapshot, scan->slot,
							  GetCurrentCommandId(false), LockTupleExclusive,
							  LockWaitBlock, flags, &tmfd);
	switch (result)
	{
		case TM_Ok:
		case TM_SelfModified:
			return true;
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
 * Opens credits.<table> for writing: an executor state with the table as
 * its result relation, its indexes open, AFTER triggers armed.
 */
void
row_writer_open(RowWriter *writer, CreditsTable *table)
{
	MemoryContext oldcxt;

	writer->table = table;
	writer->rel = credits_table_open(table, RowExclusiveLock);
	writer->estate = CreateExecutorState();
	oldcxt = MemoryContextSwitchTo(writer->estate->es_query_cxt);
	writer->estate->es_output_cid = GetCurrentCommandId(true);
	writer->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(writer->rri, writer->rel, 0, NULL, 0);
	use_compiled_expressions(table, writer->rri);
	ExecOpenIndices(writer->rri, false);
	writer->slot = table_slot_create(writer->rel, &writer->estate->es_tupleTable);
	MemoryContextSwitchTo(oldcxt);
	writer->estate->es_snapshot = statement_snapshot();
	compat_epq_init(&writer->epq, writer->estate);
	AfterTriggerBeginQuery();
}

/* Fills writer->slot with every column NULL; set the columns, then insert. */
void
row_writer_clear(RowWriter *writer)
{
	TupleTableSlot *slot = writer->slot;

	ExecClearTuple(slot);
	memset(slot->tts_values, 0, sizeof(Datum) * slot->tts_tupleDescriptor->natts);
	memset(slot->tts_isnull, true, sizeof(bool) * slot->tts_tupleDescriptor->natts);
}

/* Sets column `col` (an index into table->columns) of writer->slot. */
void
row_writer_set(RowWriter *writer, int col, Datum value, bool isnull)
{
	int			i = writer->table->attnum[col] - 1;

	writer->slot->tts_values[i] = value;
	writer->slot->tts_isnull[i] = isnull;
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
