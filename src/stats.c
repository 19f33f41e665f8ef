/*
 * stats.c
 *		Denial counters (the credits.stats view) and the throttled denial log.
 *
 * Every refusal of the contract (errors.c: PT402, PT403, PT409, PT429) and
 * every request that credits.rate_limit() turns away is counted per
 * (reason, operation) and logged at the level of credits.log_denials, at
 * most credits.log_denials_per_second lines a second; the lines held back
 * are summed up in the next line that gets through.  PostgreSQL's own ERROR
 * line for a refusal (one raised with ereport_refusal(), credits.h) is
 * written to the server log as well, unless credits.quiet_refusals is on:
 * then the emit_log_hook leaves it out, so that a client hammering the API
 * cannot flood the log through it; the client still receives the error.
 *
 * Where the counters live:
 *   - With shared_preload_libraries = 'credits': in shared memory, one
 *     fixed-size hash table for the whole cluster, as pg_stat_statements
 *     does, its entries keyed by database: credits.stats and stats_reset()
 *     see and reset the current database's only.
 *     Counting takes the credits_stats LWLock shared and bumps the
 *     entry under its spinlock; only a new entry takes the LWLock exclusive.
 *     The log throttle is shared too (a spinlock), so the log rate is
 *     bounded for the cluster, not per connection.
 *   - Otherwise: a hash table in this backend's memory; credits.stats then
 *     shows what this backend saw (scope 'this backend'), and the log
 *     throttle is per backend.
 * Either way the counters are not transactional: a refusal is an ERROR that
 * rolls the transaction back, and its count stays.
 *
 * At most STATS_MAX_ENTRIES (reason, operation) pairs are kept; further
 * operations are counted under operation '(other)'.  Operation names are
 * cut to STATS_OPERATION_LEN - 1 bytes.
 */
#include "credits.h"

#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"

#define STATS_OPERATION_LEN 64
#define STATS_MAX_ENTRIES	256
/* room for the '(other)' and no-operation entries of every reason */
#define STATS_HASH_SIZE		(STATS_MAX_ENTRIES + 2 * DENIAL_NREASONS)

/* How the operation part of a key is to be read. */
#define OPERATION_NAMED		0
#define OPERATION_NONE		1	/* the refusal had no operation */
#define OPERATION_OTHER		2	/* the table was full */

typedef struct DenialKey
{
	Oid			dbid;			/* counters are per database: another one's admin sees none */
	int16		reason;			/* DenialReason */
	int16		operation_kind; /* OPERATION_* */
	char		operation[STATS_OPERATION_LEN];
} DenialKey;

typedef struct DenialEntry
{
	DenialKey	key;			/* hash key: must be first */
	slock_t		mutex;			/* protects the counters (shared table) */
	int64		denials;
	TimestampTz last_denied_at;
} DenialEntry;

/* Token bucket for the log: `rate` lines a second, bursts of up to `rate`. */
typedef struct LogThrottle
{
	double		tokens;
	TimestampTz refilled_at;	/* 0: never used, full */
	int64		suppressed;		/* lines held back since the last one logged */
} LogThrottle;

typedef struct StatsShared
{
	LWLock	   *lock;			/* the hash table */
	slock_t		throttle_mutex;
	LogThrottle throttle;
} StatsShared;

static const char *const reason_names[DENIAL_NREASONS] = {
	[DENIAL_INSUFFICIENT] = "insufficient_credits",
	[DENIAL_DAILY_LIMIT] = "daily_limit",
	[DENIAL_KEY_CONFLICT] = "idempotency_conflict",
	[DENIAL_PLAN_REQUIRED] = "plan_required",
	[DENIAL_RATE_LIMITED] = "rate_limited",
	[DENIAL_COOLDOWN] = "cooldown",
	[DENIAL_THROTTLED] = "throttled",
	[DENIAL_HOLD_NOT_OPEN] = "hold_not_open",
	[DENIAL_OVER_REFUND] = "over_refund",
	[DENIAL_PURCHASE_CONFLICT] = "purchase_conflict",
	[DENIAL_CLAIM_LIMIT] = "claim_limit",
	[DENIAL_BAD_SIGNATURE] = "bad_signature",
	[DENIAL_TIMEZONE_INTERVAL] = "timezone_interval",
	[DENIAL_DELETION_INTERVAL] = "deletion_interval",
};

/* credits.log_denials */
static const struct config_enum_entry log_denials_options[] = {
	{"off", 0, false},
	{"debug", DEBUG1, false},
	{"log", LOG, false},
	{"warning", WARNING, false},
	{NULL, 0, false}
};

static int	log_denials_level = LOG;
static int	log_denials_per_second = 10;
static bool quiet_refusals = false;

static StatsShared *stats_shared = NULL;
static HTAB *shared_hash = NULL;
static HTAB *local_hash = NULL;
static LogThrottle local_throttle;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static emit_log_hook_type prev_emit_log_hook = NULL;

static Size stats_memsize(void);
static void stats_shmem_request(void);
static void stats_shmem_startup(void);
static void stats_emit_log(ErrorData *edata);
static void make_key(DenialKey *key, DenialReason reason, int16 kind, const char *operation);
static DenialEntry *shared_entry(DenialKey *key);
static void count_denial(DenialReason reason, const char *operation, TimestampTz now);
static bool throttle_take(TimestampTz now, int64 *suppressed);
static void log_denial(DenialReason reason, const pg_uuid_t *user_id,
					   const char *operation, const char *detail, TimestampTz now);

/*
 * Settings, the log hook and, when preloaded, the shared memory requests.
 * Called from _PG_init.
 */
void
stats_init(void)
{
	DefineCustomEnumVariable("credits.log_denials",
							 "Level at which refused requests are logged (off, debug, log, warning).",
							 "Each refusal (not enough credits, daily limit, rate limit, cooldown, "
							 "idempotency conflict, plan required) writes one line, throttled by "
							 "credits.log_denials_per_second.",
							 &log_denials_level,
							 LOG,
							 log_denials_options,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("credits.log_denials_per_second",
							"Most denial lines logged per second; the rest are counted in a summary line.",
							"Shared by the cluster when credits is in shared_preload_libraries, "
							"else per backend.",
							&log_denials_per_second,
							10,
							1,
							1000000,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("credits.quiet_refusals",
							 "Leaves PostgreSQL's own ERROR line of each refusal out of the server log.",
							 "Refusals are still counted (credits.stats) and logged by "
							 "credits.log_denials, throttled; the client still receives the error.",
							 &quiet_refusals,
							 false,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = stats_emit_log;

	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = stats_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = stats_shmem_startup;
}

static Size
stats_memsize(void)
{
	return add_size(MAXALIGN(sizeof(StatsShared)),
					hash_estimate_size(STATS_HASH_SIZE, sizeof(DenialEntry)));
}

static void
stats_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(stats_memsize());
	RequestNamedLWLockTranche("credits_stats", 1);
}

static void
stats_shmem_startup(void)
{
	HASHCTL		info;
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	stats_shared = ShmemInitStruct("credits stats", sizeof(StatsShared), &found);
	if (!found)
	{
		stats_shared->lock = &(GetNamedLWLockTranche("credits_stats"))->lock;
		SpinLockInit(&stats_shared->throttle_mutex);
		memset(&stats_shared->throttle, 0, sizeof(LogThrottle));
	}
	info.keysize = sizeof(DenialKey);
	info.entrysize = sizeof(DenialEntry);
	shared_hash = ShmemInitHash("credits denials", STATS_HASH_SIZE, STATS_HASH_SIZE,
								&info, HASH_ELEM | HASH_BLOBS);
	LWLockRelease(AddinShmemInitLock);
}

/*
 * With credits.quiet_refusals on, keeps PostgreSQL's own ERROR line of a
 * contract refusal out of the server log: log_denial() has written a
 * throttled line for it already.  Other errors are never touched.
 */
static void
stats_emit_log(ErrorData *edata)
{
	if (quiet_refusals && edata->output_to_server && is_refusal(edata))
		edata->output_to_server = false;
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

static void
make_key(DenialKey *key, DenialReason reason, int16 kind, const char *operation)
{
	memset(key, 0, sizeof(*key));
	key->dbid = MyDatabaseId;
	key->reason = (int16) reason;
	key->operation_kind = kind;
	if (kind == OPERATION_NAMED)
	{
		int			len = pg_mbcliplen(operation, strlen(operation), STATS_OPERATION_LEN - 1);

		memcpy(key->operation, operation, len);
	}
}

/* The shared entry for key, created if needed; NULL if shared memory is exhausted. */
static DenialEntry *
shared_entry(DenialKey *key)
{
	DenialEntry *entry;
	bool		found;

	entry = hash_search(shared_hash, key, HASH_FIND, NULL);
	if (entry != NULL)
		return entry;

	LWLockRelease(stats_shared->lock);
	LWLockAcquire(stats_shared->lock, LW_EXCLUSIVE);
	if (key->operation_kind == OPERATION_NAMED &&
		hash_get_num_entries(shared_hash) >= STATS_MAX_ENTRIES &&
		hash_search(shared_hash, key, HASH_FIND, NULL) == NULL)
		make_key(key, (DenialReason) key->reason, OPERATION_OTHER, NULL);
	entry = hash_search(shared_hash, key, HASH_ENTER_NULL, &found);
	if (entry != NULL && !found)
	{
		SpinLockInit(&entry->mutex);
		entry->denials = 0;
		entry->last_denied_at = 0;
	}
	return entry;
}

static void
count_denial(DenialReason reason, const char *operation, TimestampTz now)
{
	DenialKey	key;
	DenialEntry *entry;
	bool		found;

	make_key(&key, reason, operation ? OPERATION_NAMED : OPERATION_NONE, operation);
	if (stats_shared != NULL)
	{
		LWLockAcquire(stats_shared->lock, LW_SHARED);
		entry = shared_entry(&key);
		if (entry != NULL)
		{
			SpinLockAcquire(&entry->mutex);
			entry->denials++;
			entry->last_denied_at = now;
			SpinLockRelease(&entry->mutex);
		}
		LWLockRelease(stats_shared->lock);
		return;
	}

	if (local_hash == NULL)
	{
		HASHCTL		info;

		info.keysize = sizeof(DenialKey);
		info.entrysize = sizeof(DenialEntry);
		local_hash = hash_create("credits denials (this backend)", 32, &info,
								 HASH_ELEM | HASH_BLOBS);
	}
	if (key.operation_kind == OPERATION_NAMED &&
		hash_get_num_entries(local_hash) >= STATS_MAX_ENTRIES &&
		hash_search(local_hash, &key, HASH_FIND, NULL) == NULL)
		make_key(&key, reason, OPERATION_OTHER, NULL);
	entry = hash_search(local_hash, &key, HASH_ENTER, &found);
	if (!found)
		entry->denials = 0;
	entry->denials++;
	entry->last_denied_at = now;
}

/*
 * Takes a token from the log bucket.  Returns false when the line is to be
 * held back; else true, with the number of lines held back before it.
 */
static bool
throttle_take(TimestampTz now, int64 *suppressed)
{
	LogThrottle *t = stats_shared ? &stats_shared->throttle : &local_throttle;
	double		rate = log_denials_per_second;
	bool		take;

	if (stats_shared)
		SpinLockAcquire(&stats_shared->throttle_mutex);
	if (t->refilled_at == 0)
		t->tokens = rate;
	else if (now > t->refilled_at)
		t->tokens = Min(rate, t->tokens + (double) (now - t->refilled_at) * rate / USECS_PER_SEC);
	else
		t->tokens = Min(rate, t->tokens);	/* the rate may have been lowered */
	t->refilled_at = Max(now, t->refilled_at);

	take = t->tokens >= 1.0;
	if (take)
	{
		t->tokens -= 1.0;
		*suppressed = t->suppressed;
		t->suppressed = 0;
	}
	else
		t->suppressed++;
	if (stats_shared)
		SpinLockRelease(&stats_shared->throttle_mutex);
	return take;
}

static void
log_denial(DenialReason reason, const pg_uuid_t *user_id, const char *operation,
		   const char *detail, TimestampTz now)
{
	int64		suppressed = 0;
	char	   *user;

	if (!message_level_is_interesting(log_denials_level))
		return;
	if (!throttle_take(now, &suppressed))
		return;

	if (suppressed > 0)
		ereport(log_denials_level,
				(errmsg("credits: " INT64_FORMAT " denials not logged since the previous line "
						"(credits.log_denials_per_second = %d)",
						suppressed, log_denials_per_second),
				 errhidestmt(true), errhidecontext(true)));

	user = user_id ? uuid_text(user_id) : "-";
	ereport(log_denials_level,
			(errmsg("credits: denied %s, operation %s, user %s, detail %s",
					reason_names[reason], operation ? json_quote(operation) : "-",
					user, detail),
			 errhidestmt(true), errhidecontext(true)));
}

/*
 * Counts one denial and logs it (throttled).  Called before the refusal is
 * raised, so it must not fail: it only touches memory.
 */
void
denial_record(DenialReason reason, const pg_uuid_t *user_id, const char *operation,
			  const char *detail)
{
	TimestampTz now = GetCurrentTimestamp();

	count_denial(reason, operation, now);
	if (log_denials_level != 0)
		log_denial(reason, user_id, operation, detail, now);
}

/*
 * credits.denial_counters() returns setof (reason text, operation text,
 *     denials bigint, last_denied_at timestamptz, scope text)
 * Behind the credits.stats view.
 */
PG_FUNCTION_INFO_V1(credits_denial_counters);
Datum
credits_denial_counters(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HTAB	   *hash = stats_shared ? shared_hash : local_hash;
	text	   *scope = cstring_to_text(stats_shared ? "cluster" : "this backend");
	HASH_SEQ_STATUS status;
	DenialEntry *entry;

	InitMaterializedSRF(fcinfo, 0);
	if (hash == NULL)
		return (Datum) 0;

	if (stats_shared)
		LWLockAcquire(stats_shared->lock, LW_SHARED);
	hash_seq_init(&status, hash);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		Datum		values[5];
		bool		nulls[5] = {false};
		int64		denials;
		TimestampTz last;

		if (entry->key.dbid != MyDatabaseId)
			continue;
		if (stats_shared)
			SpinLockAcquire(&entry->mutex);
		denials = entry->denials;
		last = entry->last_denied_at;
		if (stats_shared)
			SpinLockRelease(&entry->mutex);

		values[0] = CStringGetTextDatum(reason_names[entry->key.reason]);
		if (entry->key.operation_kind == OPERATION_NAMED)
			values[1] = CStringGetTextDatum(entry->key.operation);
		else if (entry->key.operation_kind == OPERATION_OTHER)
			values[1] = CStringGetTextDatum("(other)");
		else
			nulls[1] = true;
		values[2] = Int64GetDatum(denials);
		values[3] = TimestampTzGetDatum(last);
		values[4] = PointerGetDatum(scope);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	if (stats_shared)
		LWLockRelease(stats_shared->lock);
	return (Datum) 0;
}

/*
 * credits.stats_reset() returns void
 * Forgets every denial counter, and the log throttle's state (a full bucket,
 * no lines held back).
 */
PG_FUNCTION_INFO_V1(credits_stats_reset);
Datum
credits_stats_reset(PG_FUNCTION_ARGS)
{
	if (stats_shared)
	{
		HASH_SEQ_STATUS status;
		DenialEntry *entry;

		LWLockAcquire(stats_shared->lock, LW_EXCLUSIVE);
		hash_seq_init(&status, shared_hash);
		while ((entry = hash_seq_search(&status)) != NULL)
			if (entry->key.dbid == MyDatabaseId)
				hash_search(shared_hash, &entry->key, HASH_REMOVE, NULL);
		LWLockRelease(stats_shared->lock);

		SpinLockAcquire(&stats_shared->throttle_mutex);
		memset(&stats_shared->throttle, 0, sizeof(LogThrottle));
		SpinLockRelease(&stats_shared->throttle_mutex);
	}
	else
	{
		if (local_hash != NULL)
			hash_destroy(local_hash);
		local_hash = NULL;
		memset(&local_throttle, 0, sizeof(LogThrottle));
	}
	PG_RETURN_VOID();
}
