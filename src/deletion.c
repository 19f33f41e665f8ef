/*
 * deletion.c
 *		What deleting an account keeps, so that deletion is not a reset.
 *
 * credits.delete_account() removes the user's rows, but the same user id
 * may come back (delete_my_account() deletes the credits account, not the
 * Supabase user).  A returning id must not get a second signup bonus, a
 * second allocation for a month already allocated, a fresh daily count,
 * fresh claims, a fresh rate limiter or the default plan instead of a plan
 * an admin set.  So each deletion keeps one record in
 * credits.deletion_records, keyed by sha256(salt || the 16 bytes of the user
 * id), where the salt is random per database (credits.deletion_salt, made by
 * the first deletion): the record names nobody, and a user id of another
 * database or a leaked list of ids cannot be matched against it without the
 * salt.  It is kept for credits.deletion_retention after the last deletion;
 * expired records are removed by later deletions (at most 100 at a time).
 *
 * A new account whose id has a record starts from it (account.c,
 * create_account and read_new_account): no signup bonus, the record's plan,
 * time zone, day count, allocated month and limiter state.  Claims of the
 * last 24 hours count against the claim limit (purchases.c).  The record
 * also holds the id of the user's one tombstone in credits.deleted_accounts,
 * which later deletions add to instead of writing another one.
 *
 * A client deletes at most once per credits.deletion_interval
 * (delete_my_account, PT429).
 *
 * The salt also keys the opaque user reference of NOTIFY credits
 * (user_ref): sha256(salt || user id || 'notify'), so that a listener,
 * who may be any role, learns no user id.
 *
 * Creating and deleting an account serialize on a lock of the user id
 * (account_existence_lock): a deletion that finds no account row may not
 * run while a first touch is creating one, or it would delete the new
 * account's rows without its lock, keep a second tombstone and leave the
 * deletion record behind (and a first touch would read the record before
 * the deletion writing it commits).
 *
 * Locks: the existence lock of the user id (a transaction-level lock of
 * the advisory lock method, in a key space of its own: field4
 * CREDITS_EXISTENCE_LOCK); otherwise called under the account row lock of
 * delete_account (SELECT ... FOR UPDATE) or account_lock().
 */
#include "credits.h"

#include "catalog/pg_type.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/guc.h"

/* field4 of the existence lock's tag (advisory locks of SQL use 1 and 2) */
#define CREDITS_EXISTENCE_LOCK 0x4352

#define RECORD_HASH \
	"sha256(s.salt || pg_catalog.uuid_send($1))"

static CachedStatement record_find = {
	"SELECT p.name, r.timezone, r.timezone_next, r.timezone_from, r.timezone_changed_at,"
	"       r.day, r.day_count, r.allocation_period, r.rate_tat, r.last_operation_at, r.deleted_at"
	"  FROM credits.deletion_salt s"
	"  JOIN credits.deletion_records r ON r.user_hash = " RECORD_HASH
	"  LEFT JOIN credits.plans p ON p.name = r.plan"
	" WHERE r.keep_until > now()",
	1, {UUIDOID}
};

static CachedStatement salt_create = {
	"INSERT INTO credits.deletion_salt (salt)"
	" SELECT pg_catalog.uuid_send(gen_random_uuid()) || pg_catalog.uuid_send(gen_random_uuid())"
	"  WHERE NOT EXISTS (SELECT 1 FROM credits.deletion_salt)"
	" ON CONFLICT DO NOTHING",
	0, {0}
};

static CachedStatement salt_select = {
	"SELECT salt FROM credits.deletion_salt", 0, {0}
};

/* The salt, cached per backend for the table it was read from. */
static uint8 salt_cache[64];
static int	salt_len = 0;
static Oid	salt_relid = InvalidOid;

static CachedStatement records_purge = {
	"DELETE FROM credits.deletion_records WHERE ctid = ANY (ARRAY("
	"  SELECT ctid FROM credits.deletion_records WHERE keep_until <= now()"
	"   ORDER BY keep_until LIMIT 100))",
	0, {0}
};

/*
 * The record of the account being deleted: its state now, with the claims
 * of the last 24 hours (those of an earlier record still in the window
 * too).  An expired record is replaced whole.  Returns the tombstone id of
 * the record kept before, NULL when there is none.
 */
static CachedStatement record_save = {
	"INSERT INTO credits.deletion_records AS r (user_hash, plan, timezone, timezone_next,"
	"  timezone_from, timezone_changed_at, day, day_count, allocation_period, rate_tat,"
	"  last_operation_at, claims, deleted_at, keep_until)"
	" SELECT " RECORD_HASH ", nullif(a.plan, $2), a.timezone, a.timezone_next,"
	"        a.timezone_from, a.timezone_changed_at, a.day, a.day_count, a.allocation_period,"
	"        a.rate_tat, a.last_operation_at,"
	"        ARRAY(SELECT e.created_at FROM credits.entitlements e"
	"               WHERE e.user_id = a.user_id AND e.provisional"
	"                 AND e.created_at > now() - interval '1 day'),"
	"        now(), now() + make_interval(secs => $3)"
	"   FROM credits.accounts a CROSS JOIN credits.deletion_salt s"
	"  WHERE a.user_id = $1"
	" ON CONFLICT (user_hash) DO UPDATE SET"
	"   plan = EXCLUDED.plan, timezone = EXCLUDED.timezone,"
	"   timezone_next = EXCLUDED.timezone_next, timezone_from = EXCLUDED.timezone_from,"
	"   timezone_changed_at = EXCLUDED.timezone_changed_at, day = EXCLUDED.day,"
	"   day_count = EXCLUDED.day_count, allocation_period = EXCLUDED.allocation_period,"
	"   rate_tat = EXCLUDED.rate_tat, last_operation_at = EXCLUDED.last_operation_at,"
	"   claims = ARRAY(SELECT c FROM unnest(CASE WHEN r.keep_until > now() THEN r.claims END"
	"                                       || EXCLUDED.claims) c"
	"                   WHERE c > now() - interval '1 day' ORDER BY c),"
	"   tombstone_id = CASE WHEN r.keep_until > now() THEN r.tombstone_id END,"
	"   deleted_at = EXCLUDED.deleted_at, keep_until = EXCLUDED.keep_until"
	" RETURNING tombstone_id",
	3, {UUIDOID, TEXTOID, INT4OID}
};

static CachedStatement record_link_tombstone = {
	"UPDATE credits.deletion_records r SET tombstone_id = $2"
	"  FROM credits.deletion_salt s WHERE r.user_hash = " RECORD_HASH,
	2, {UUIDOID, INT8OID}
};

/*
 * The unexpired record of a deleted user id, if there is one.  Inside an
 * SPI connection; strings are allocated in the current memory context.
 */
bool
deletion_record_find(const pg_uuid_t *user_id, DeletionRecord *rec)
{
	Datum		args[1] = {UUIDPGetDatum(user_id)};
	bool		isnull;
	Datum		value;

	memset(rec, 0, sizeof(*rec));
	if (spi_exec(&record_find, args, NULL) == 0)
		return false;
	rec->plan = spi_get_cstring_or_null(0, 1);
	rec->timezone = spi_get_cstring_or_null(0, 2);
	rec->timezone_next = spi_get_cstring_or_null(0, 3);
	rec->has_timezone_from = spi_get_time_or_null(0, 4, &rec->timezone_from);
	rec->has_timezone_changed_at = spi_get_time_or_null(0, 5, &rec->timezone_changed_at);
	rec->day = DatumGetDateADT(spi_get_notnull(0, 6, DATEOID));
	rec->day_count = (int32) spi_get_int64(0, 7);
	value = spi_get_typed(0, 8, DATEOID, &isnull);
	rec->has_allocation_period = !isnull;
	rec->allocation_period = isnull ? 0 : DatumGetDateADT(value);
	rec->has_rate_tat = spi_get_time_or_null(0, 9, &rec->rate_tat);
	rec->has_last_operation_at = spi_get_time_or_null(0, 10, &rec->last_operation_at);
	spi_get_time_or_null(0, 11, &rec->deleted_at);
	return true;
}

/*
 * Keeps the record of the account being deleted (still there, locked by
 * the caller).  Returns false when there is no tombstone of an earlier
 * deletion to add to; else sets *tombstone_id.
 */
bool
deletion_remember(const pg_uuid_t *user_id, int64 *tombstone_id)
{
	Datum		args[3] = {UUIDPGetDatum(user_id), CStringGetTextDatum(credits_default_plan()),
	Int32GetDatum(credits_deletion_retention_s())};

	spi_exec(&records_purge, NULL, NULL);
	spi_exec(&salt_create, NULL, NULL);
	if (spi_exec(&record_save, args, NULL) == 0)
		return false;			/* no account row: nothing to remember */
	return spi_get_int64_or_null(0, 1, tombstone_id);
}

/* The record of a deletion points at its tombstone. */
void
deletion_link_tombstone(const pg_uuid_t *user_id, int64 tombstone_id)
{
	Datum		args[2] = {UUIDPGetDatum(user_id), Int64GetDatum(tombstone_id)};

	spi_exec(&record_link_tombstone, args, NULL);
}

/*
 * A client deletes its account at most once per credits.deletion_interval:
 * PT429 with retry_after_ms otherwise.
 */
void
deletion_check_interval(const pg_uuid_t *user_id)
{
	DeletionRecord rec;
	TimestampTz next;
	TimestampTz now = GetCurrentTransactionStartTimestamp();

	if (!deletion_record_find(user_id, &rec))
		return;
	next = rec.deleted_at + (TimestampTz) credits_deletion_interval_s() * USECS_PER_SEC;
	if (next > now)
		refuse_deletion_interval(user_id, (next - now) / 1000);
}

/*
 * Takes the lock that serializes creating and deleting the user's account,
 * held to the end of the transaction: account.c takes it before it reads
 * the deletion record and inserts the account, accounts_admin.c before it
 * looks for the account to delete.  Two user ids that share a lock key
 * only wait for each other.
 */
void
account_existence_lock(const pg_uuid_t *user_id)
{
	LOCKTAG		tag;
	uint32		key[4];

	memcpy(key, user_id->data, sizeof(key));
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, key[0] ^ key[1], key[2] ^ key[3],
						 CREDITS_EXISTENCE_LOCK);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
}

/* The database's salt in salt_cache, created on first use (in an SPI connection). */
static void
load_salt(void)
{
	Oid			relid = credits_relid("deletion_salt");
	bytea	   *salt;

	if (relid == salt_relid && salt_len > 0)
		return;
	spi_exec(&salt_create, NULL, NULL);
	if (spi_exec(&salt_select, NULL, NULL) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("the salt of credits was created concurrently"),
				 errdetail_internal("{\"table\": \"credits.deletion_salt\"}"),
				 errhint("Retry the transaction.")));
	salt = DatumGetByteaPP(spi_get_notnull(0, 1, BYTEAOID));
	salt_len = Min(VARSIZE_ANY_EXHDR(salt), (int) sizeof(salt_cache));
	memcpy(salt_cache, VARDATA_ANY(salt), salt_len);
	salt_relid = relid;
}

/*
 * The opaque reference to a user in NOTIFY credits: the hex of the first
 * 16 bytes of sha256(salt || user id || 'notify').  credits.user_ref(uuid)
 * computes the same for an admin.
 */
char *
user_ref(const pg_uuid_t *user_id)
{
	pg_cryptohash_ctx *ctx;
	uint8		digest[PG_SHA256_DIGEST_LENGTH];
	char	   *hex = palloc(33);

	load_salt();
	ctx = pg_cryptohash_create(PG_SHA256);
	if (pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, salt_cache, salt_len) < 0 ||
		pg_cryptohash_update(ctx, user_id->data, UUID_LEN) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) "notify", 6) < 0 ||
		pg_cryptohash_final(ctx, digest, sizeof(digest)) < 0)
		elog(ERROR, "credits: sha256 failed: %s", pg_cryptohash_error(ctx));
	pg_cryptohash_free(ctx);
	for (int i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", digest[i]);
	return hex;
}
