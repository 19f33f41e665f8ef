/*
 * version.c
 *		Refuses to run against a schema version other than this library's.
 *
 * The C code finds tables and columns by name at run time, so a library
 * over a schema of another version would not fail loudly: it would read the
 * wrong columns or miss new ones.  A library runs on exactly one schema
 * version, CREDITS_VERSION (the control file's default_version, set by the
 * Makefile): between installing a new library and ALTER EXTENSION credits
 * UPDATE, calls are refused with the ALTER EXTENSION to run.
 *
 * Every path that reads or writes a table of the extension (spi_exec,
 * credits_relid) first calls credits_check_version().  It reads
 * pg_extension.extversion once per backend and raises 0A000 unless it is
 * CREDITS_VERSION.  The answer is kept until a relcache invalidation of one
 * of the extension's relations (every upgrade that changes a table sends
 * one) or a cache reset; the check after it costs one index scan of
 * pg_extension and one of pg_depend.  While the extension's own script runs
 * (CREATE EXTENSION, ALTER EXTENSION UPDATE) its function calls are not
 * checked: the script knows which version it is building.
 *
 * Locks: AccessShareLock on pg_extension and pg_depend while checking.
 */
#include "credits.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/dependency.h"
#include "catalog/indexing.h"
#include "catalog/pg_class.h"
#include "catalog/pg_depend.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#ifndef CREDITS_VERSION
#error "CREDITS_VERSION (the control file's default_version) is set by the Makefile"
#endif

static bool version_checked = false;
static bool callback_registered = false;
static Oid *extension_relids = NULL;	/* in TopMemoryContext */
static int	nextension_relids = 0;

static void
relcache_changed(Datum arg, Oid relid)
{
	if (!OidIsValid(relid))
	{
		version_checked = false;
		return;
	}
	for (int i = 0; i < nextension_relids; i++)
		if (extension_relids[i] == relid)
		{
			version_checked = false;
			return;
		}
}

/* Remembers the relations that belong to the extension (for relcache_changed). */
static void
remember_relations(Oid extension_oid)
{
	Relation	depend = table_open(DependRelationId, AccessShareLock);
	ScanKeyData key[2];
	SysScanDesc scan;
	HeapTuple	tuple;
	int			allocated = 32;
	Oid		   *relids = MemoryContextAlloc(TopMemoryContext, allocated * sizeof(Oid));
	int			n = 0;

	ScanKeyInit(&key[0], Anum_pg_depend_refclassid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(ExtensionRelationId));
	ScanKeyInit(&key[1], Anum_pg_depend_refobjid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(extension_oid));
	scan = systable_beginscan(depend, DependReferenceIndexId, true, NULL, 2, key);
	while (HeapTupleIsValid(tuple = systable_getnext(scan)))
	{
		Form_pg_depend dep = (Form_pg_depend) GETSTRUCT(tuple);

		if (dep->classid != RelationRelationId || dep->deptype != DEPENDENCY_EXTENSION)
			continue;
		if (n == allocated)
		{
			allocated *= 2;
			relids = repalloc(relids, allocated * sizeof(Oid));
		}
		relids[n++] = dep->objid;
	}
	systable_endscan(scan);
	table_close(depend, AccessShareLock);

	if (extension_relids != NULL)
		pfree(extension_relids);
	extension_relids = relids;
	nextension_relids = n;
}

/*
 * The installed version of the extension (palloc'd) and its OID, or NULL
 * when it is not installed in this database.
 */
static char *
installed_version(Oid *extension_oid)
{
	Relation	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	char	   *version = NULL;

	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("credits"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
	{
		bool		isnull;
		Datum		value = heap_getattr(tuple, Anum_pg_extension_extversion,
										 RelationGetDescr(rel), &isnull);

		*extension_oid = ((Form_pg_extension) GETSTRUCT(tuple))->oid;
		if (!isnull)
			version = text_to_cstring(DatumGetTextPP(value));
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return version;
}

static void
refuse_version(const char *version)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("the credits library %s does not run on version %s of the extension",
					CREDITS_VERSION, version),
			 errdetail_internal("{\"installed_version\": \"%s\", \"library_version\": \"%s\"}",
								version, CREDITS_VERSION),
			 errhint("ALTER EXTENSION credits UPDATE TO '%s' (or, to stay on %s, install the "
					 "credits library of that version).", CREDITS_VERSION, version)));
}

/*
 * Raises 0A000 unless the installed schema is this library's version.
 * Cheap when already checked: one test of a static flag.
 */
void
credits_check_version(void)
{
	Oid			extension_oid = InvalidOid;
	char	   *version;

	if (likely(version_checked))
		return;
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(relcache_changed, (Datum) 0);
		callback_registered = true;
	}
	/* An invalidation that arrives while checking clears this again. */
	version_checked = true;

	version = installed_version(&extension_oid);
	if (version == NULL ||		/* not installed here (DROP EXTENSION under way) */
		(creating_extension && CurrentExtensionObject == extension_oid))	/* our own script */
	{
		version_checked = false;
		return;
	}
	if (strcmp(version, CREDITS_VERSION) != 0)
	{
		version_checked = false;
		refuse_version(version);
	}
	remember_relations(extension_oid);
}
