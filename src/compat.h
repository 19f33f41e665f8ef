/*
 * compat.h
 *		The differences between the PostgreSQL majors credits supports
 *		(15, 17 and 18, each tested in CI), in one place.
 *
 * Every other file is written against one API; each branch below is compiled
 * by at least one of the tested majors.  No locks are taken here.
 */
#ifndef CREDITS_COMPAT_H
#define CREDITS_COMPAT_H

#include "access/genam.h"
#include "common/jsonapi.h"
#include "executor/executor.h"
#include "mb/pg_wchar.h"
#include "nodes/execnodes.h"
#if PG_VERSION_NUM >= 160000
#include "parser/parse_relation.h"
#endif
#include "rewrite/rewriteHandler.h"
#include "utils/rel.h"

/*
 * A function that does not return: 18 replaced the trailing
 * pg_attribute_noreturn() with a leading pg_noreturn (which GCC and Clang
 * also accept in front of a declaration).
 */
#if PG_VERSION_NUM < 180000
#define pg_noreturn pg_attribute_noreturn()
#endif

/* This backend's local transaction id (17 moved it into PGPROC.vxid). */
#if PG_VERSION_NUM >= 170000
#define compat_my_lxid() (MyProc->vxid.lxid)
#else
#define compat_my_lxid() (MyProc->lxid)
#endif

/* JSON parser callbacks return an error code from 16 on. */
#if PG_VERSION_NUM >= 160000
typedef JsonParseErrorType json_callback_result;
#define JSON_CALLBACK_DONE return JSON_SUCCESS
#else
typedef void json_callback_result;
#define JSON_CALLBACK_DONE return
#endif

/* A JSON lexer over a NUL-terminated string (17 allocates the context itself). */
static inline JsonLexContext *
compat_json_lexer(const char *json)
{
#if PG_VERSION_NUM >= 170000
	return makeJsonLexContextCstringLen(NULL, json, strlen(json), GetDatabaseEncoding(), true);
#else
	return makeJsonLexContextCstringLen(pstrdup(json), (int) strlen(json),
										GetDatabaseEncoding(), true);
#endif
}

/* An index scan without ordering operators (18 added scan instrumentation). */
static inline IndexScanDesc
compat_index_beginscan(Relation heap, Relation index, Snapshot snapshot, int nkeys)
{
#if PG_VERSION_NUM >= 180000
	return index_beginscan(heap, index, snapshot, NULL, nkeys, 0);
#else
	return index_beginscan(heap, index, snapshot, nkeys, 0);
#endif
}

/*
 * An executor range table of the one relation `rte` (16 moved permissions
 * into RTEPermissionInfo, 18 added the unpruned relations).
 */
static inline void
compat_init_range_table(EState *estate, RangeTblEntry *rte)
{
#if PG_VERSION_NUM >= 160000
	List	   *perminfos = NIL;

	addRTEPermissionInfo(&perminfos, rte);
#if PG_VERSION_NUM >= 180000
	ExecInitRangeTable(estate, list_make1(rte), perminfos, bms_make_singleton(1));
#else
	ExecInitRangeTable(estate, list_make1(rte), perminfos);
#endif
#else
	ExecInitRangeTable(estate, list_make1(rte));
#endif
}

/* The updated columns of that relation, where the executor reads them. */
static inline Bitmapset **
compat_updated_cols(EState *estate)
{
#if PG_VERSION_NUM >= 160000
	RTEPermissionInfo *perminfo = linitial(estate->es_rteperminfos);

	return &perminfo->updatedCols;
#else
	RangeTblEntry *rte = exec_rt_fetch(1, estate);

	return &rte->updatedCols;
#endif
}

/* EvalPlanQual state without a plan (16 added the result relations list). */
static inline void
compat_epq_init(EPQState *epq, EState *estate)
{
#if PG_VERSION_NUM >= 160000
	EvalPlanQualInit(epq, estate, NULL, NIL, -1, NIL);
#else
	EvalPlanQualInit(epq, estate, NULL, NIL, -1);
#endif
}

/*
 * The expression the executor checks for CHECK constraint `check` of `rel`,
 * as ExecRelCheck builds it, or NULL when it checks nothing: from 18 on a
 * NOT ENFORCED constraint is skipped and virtual generated columns are
 * replaced by their expressions.
 */
static inline Expr *
compat_check_expr(Relation rel, const ConstrCheck *check)
{
	Expr	   *expr;

#if PG_VERSION_NUM >= 180000
	if (!check->ccenforced)
		return NULL;
	expr = stringToNode(check->ccbin);
	return (Expr *) expand_generated_columns_in_expr((Node *) expr, rel, 1);
#else
	expr = stringToNode(check->ccbin);
	return expr;
#endif
}

/*
 * Whether a result relation takes stored generated columns compiled in
 * advance: before 16 (ri_GeneratedExprs); from 16 on the executor compiles
 * them itself, for the columns an UPDATE depends on.
 */
#define COMPAT_CACHES_GENERATED (PG_VERSION_NUM < 160000)

/*
 * Hands compiled CHECK constraints (one per constraint, NULL for one not
 * checked) and, where COMPAT_CACHES_GENERATED, stored generated columns to a
 * result relation, in the fields ExecRelCheck and ExecComputeStoredGenerated
 * look at before compiling their own.
 */
static inline void
compat_use_expressions(ResultRelInfo *rri, ExprState **checks, ExprState **generated,
					   int ngenerated)
{
#if PG_VERSION_NUM >= 180000
	rri->ri_CheckConstraintExprs = checks;
#else
	rri->ri_ConstraintExprs = checks;
#endif
#if PG_VERSION_NUM < 160000
	if (generated != NULL)
	{
		rri->ri_GeneratedExprs = generated;
		rri->ri_NumGeneratedNeeded = ngenerated;
	}
#endif
}

#endif							/* CREDITS_COMPAT_H */
