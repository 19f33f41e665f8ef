/*
 * notify.c
 *		NOTIFY credits on every account change: opt-in (credits.notify = on),
 *		and even then only when someone may hear it.
 *
 * PostgreSQL serializes the commits of transactions that notify (they queue
 * their notifications under one database-wide lock, held until the commit
 * is done), which costs a busy server half of its throughput and more.
 * Most deployments never LISTEN (Supabase Realtime reads the changes from
 * the WAL), and any login role may LISTEN, so notifications are off unless
 * credits.notify is on; notify_enabled() is the one place that reads it.
 * When it is on and credits is preloaded, credits counts, in shared memory,
 * the backends that have run LISTEN credits, and notifies only while that
 * count is not zero.  Without shared_preload_libraries every change
 * notifies while the setting is on.
 *
 * No notification is lost to this.  A transaction reads the count only after
 * writing its account row, so it holds RowExclusiveLock on credits.accounts
 * from before the read until it ends.  LISTEN credits raises the count and
 * then waits for every transaction holding that lock to end (WaitForLockers,
 * which does not block new ones): a transaction that read zero has committed
 * before the listener's LISTEN takes effect, and PostgreSQL delivers to a
 * listener only what commits after that.  A backend stays counted until it
 * exits, even after UNLISTEN: a spare notification is harmless.
 */
#include "credits.h"

#include "catalog/namespace.h"
#include "commands/async.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "storage/shmem.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"

#define NOTIFY_CHANNEL "credits"

typedef struct ListenerCount
{
	pg_atomic_uint32 backends;	/* backends that ran LISTEN credits and live */
} ListenerCount;

static bool credits_notify = false;	/* credits.notify */
static ListenerCount *listeners = NULL;
static bool counted = false;	/* this backend is in listeners->backends */

static ProcessUtility_hook_type prev_process_utility = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
listeners_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(ListenerCount)));
}

static void
listeners_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	listeners = ShmemInitStruct("credits listeners", sizeof(ListenerCount), &found);
	if (!found)
		pg_atomic_init_u32(&listeners->backends, 0);
	LWLockRelease(AddinShmemInitLock);
}

static void
uncount_listener(int code, Datum arg)
{
	if (counted)
		pg_atomic_fetch_sub_u32(&listeners->backends, 1);
	counted = false;
}

/*
 * Counts this backend as a listener, then waits for the transactions that
 * may have read the count before (see the header comment).
 */
static void
count_listener(void)
{
	Oid			schema;
	Oid			accounts;
	LOCKTAG		tag;

	if (!counted)
	{
		before_shmem_exit(uncount_listener, (Datum) 0);
		pg_atomic_fetch_add_u32(&listeners->backends, 1);	/* a full barrier */
		counted = true;
	}
	schema = get_namespace_oid("credits", true);
	accounts = OidIsValid(schema) ? get_relname_relid("accounts", schema) : InvalidOid;
	if (!OidIsValid(accounts))
		return;					/* no credits in this database: nothing to wait for */
	SET_LOCKTAG_RELATION(tag, MyDatabaseId, accounts);
	WaitForLockers(tag, ShareLock, false);
}

static void
credits_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
						ProcessUtilityContext context, ParamListInfo params,
						QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;

	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context, params, queryEnv,
							 dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv,
								dest, qc);

	if (IsA(stmt, ListenStmt) &&
		strcmp(((ListenStmt *) stmt)->conditionname, NOTIFY_CHANNEL) == 0)
		count_listener();
}

/* The setting, and when preloaded the listener count.  Called from _PG_init. */
void
notify_init(void)
{
	DefineCustomBoolVariable("credits.notify",
							 "Send NOTIFY credits with a JSON payload on every account change.",
							 "Off by default: notifying transactions commit one at a time, and any "
							 "login role can LISTEN.  Delivered at commit.",
							 &credits_notify,
							 false,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = listeners_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = listeners_shmem_startup;
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = credits_process_utility;
}

/*
 * Whether account changes are announced at all (credits.notify).  The one
 * reader of the setting: where it comes from may change.
 */
static bool
notify_enabled(void)
{
	return credits_notify;
}

/* False only when it is known that no backend listens on the channel. */
static bool
anyone_may_listen(void)
{
	if (listeners == NULL)
		return true;			/* not preloaded: not counted */
	pg_memory_barrier();
	return pg_atomic_read_u32(&listeners->backends) > 0;
}

/*
 * NOTIFY credits, '{"user_ref": "<32 hex digits>"}' after an account change
 * (account_save, which has written the account row).  Any role may LISTEN,
 * so the payload says only that the account behind an opaque reference
 * changed (user_ref, deletion.c): no user id, balance, plan or activity.
 * A client re-reads its own account through row level security
 * (credits.my_account); an admin maps references with credits.user_ref().
 * Queued now, delivered when the transaction commits, and never when it
 * rolls back.
 */
void
notify_account_change(const Account *acct)
{
	if (!notify_enabled() || !anyone_may_listen())
		return;
	Async_Notify(NOTIFY_CHANNEL, psprintf("{\"user_ref\": \"%s\"}", user_ref(&acct->user_id)));
}
