/*
 * credits.h
 *		Declarations shared by the parts of the credits extension.
 *
 * Lock order, for every function that writes: the account row first
 * (SELECT ... FOR UPDATE, account_lock()), then that user's lots, holds and
 * ledger rows.  A function touches one user only, so two calls can never wait
 * on each other in opposite orders; the one exception (moving an entitlement
 * between users) locks both accounts in user_id order.
 */
#ifndef CREDITS_H
#define CREDITS_H

#include "postgres.h"

#include "access/genam.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "nodes/execnodes.h"
#include "storage/lockdefs.h"
#include "utils/date.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "compat.h"

/* ---- SQLSTATEs of the contract (PostgREST maps PTnnn to HTTP nnn) ---- */
#define ERRCODE_CREDITS_INSUFFICIENT	MAKE_SQLSTATE('P','T','4','0','2')
#define ERRCODE_CREDITS_FORBIDDEN		MAKE_SQLSTATE('P','T','4','0','3')
#define ERRCODE_CREDITS_CONFLICT		MAKE_SQLSTATE('P','T','4','0','9')
#define ERRCODE_CREDITS_TOO_MANY		MAKE_SQLSTATE('P','T','4','2','9')
/* The user's shard cannot be reached, or the user is being moved between shards (shard.c). */
#define ERRCODE_CREDITS_UNAVAILABLE		MAKE_SQLSTATE('P','T','5','0','3')

/*
 * Drift: the cached state (balance, lots, holds, an account's plan) no longer
 * matches the ledger or the configuration, because a row was changed outside
 * the functions.  Not an internal error (XX000) nor corrupted storage
 * (XX001): the database is fine, its rows disagree.  55000
 * object_not_in_prerequisite_state (PostgREST: HTTP 500), with the rows
 * concerned in the detail and credits.reconcile() in the hint.
 */
#define ERRCODE_CREDITS_DRIFT			ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE

/*
 * A refusal of the contract (errors.c): raised with ereport_refusal(), which
 * tags the error with this message domain (never a real translation domain),
 * so that the log hook (stats.c) knows it by that mark alone, whatever file
 * or function raised it.  Every refusal is counted first (denial_record).
 */
#define CREDITS_REFUSAL_DOMAIN "credits-refusal"
#define ereport_refusal(...) ereport_domain(ERROR, CREDITS_REFUSAL_DOMAIN, __VA_ARGS__)

/* Input caps of the contract. */
#define CREDITS_MAX_KEY_CHARS		255
#define CREDITS_MAX_REASON_CHARS	1000
#define CREDITS_MAX_METADATA_BYTES	8192
/* ... tighter on the client path (client functions, the user's own request) */
#define CREDITS_CLIENT_MAX_KEY_CHARS		128
#define CREDITS_CLIENT_MAX_METADATA_BYTES	1024

extern bool credits_ledger_delete_allowed;

/* ---- settings.c: the settings an admin changes (credits.settings over the GUCs) ---- */
typedef enum SettingId
{
	SETTING_DEFAULT_PLAN,
	SETTING_HOLD_TIMEOUT,
	SETTING_TIMEZONE_CHANGE_INTERVAL,
	SETTING_ANONYMOUS_BONUS_ON_LINK,
	SETTING_DELETION_RETENTION,
	SETTING_DELETION_INTERVAL,
	SETTING_ACCEPT_SANDBOX,
	SETTING_PENDING_PURCHASE_GRACE,
	SETTING_PENDING_PURCHASE_DAILY_LIMIT,
	SETTING_STRIPE_SIGNATURE_TOLERANCE,
	SETTING_COUNT
} SettingId;

extern void settings_init(void);
extern int	setting_int(SettingId id);
extern bool setting_bool(SettingId id);
extern const char *setting_string(SettingId id);

/* One accessor per setting (seconds where the setting is a duration). */
#define credits_default_plan()			setting_string(SETTING_DEFAULT_PLAN)
#define credits_hold_timeout_s()		setting_int(SETTING_HOLD_TIMEOUT)
#define credits_timezone_interval_s()	setting_int(SETTING_TIMEZONE_CHANGE_INTERVAL)
#define credits_bonus_on_link()			setting_bool(SETTING_ANONYMOUS_BONUS_ON_LINK)
#define credits_deletion_retention_s()	setting_int(SETTING_DELETION_RETENTION)
#define credits_deletion_interval_s()	setting_int(SETTING_DELETION_INTERVAL)
#define credits_accept_sandbox()		setting_bool(SETTING_ACCEPT_SANDBOX)
#define credits_pending_grace_s()		setting_int(SETTING_PENDING_PURCHASE_GRACE)
#define credits_pending_daily_limit()	setting_int(SETTING_PENDING_PURCHASE_DAILY_LIMIT)
#define credits_stripe_tolerance_s()	setting_int(SETTING_STRIPE_SIGNATURE_TOLERANCE)

/* ---- spi_plans.c: statements prepared once per backend and kept ---- */
typedef struct CachedStatement
{
	const char *sql;
	int			nargs;
	Oid			argtypes[20];
	SPIPlanPtr	plan;			/* prepared on first use */
} CachedStatement;

/* Runs a cached statement inside the caller's SPI connection; returns SPI_processed. */
extern uint64 spi_exec(CachedStatement *stmt, Datum *values, const char *nulls);
/* A text argument of a cached statement from a C string; NULL sets its null flag. */
extern Datum spi_text_arg(const char *value, char *null);
/*
 * Column getters of the last statement's result: each checks the column's
 * type, and the ones without "_or_null" refuse a NULL (a DBA may have
 * dropped a NOT NULL or changed a type: never read a Datum on trust).
 */
extern Datum spi_get_typed(int row, int col, Oid typid, bool *isnull);
extern Datum spi_get_notnull(int row, int col, Oid typid);
extern pg_uuid_t spi_get_uuid(int row, int col);
extern char *spi_get_cstring(int row, int col);
extern char *spi_get_cstring_or_null(int row, int col);
extern text *spi_get_text_or_null(int row, int col);
extern int32 spi_get_int32(int row, int col);
extern int64 spi_get_int64(int row, int col);
extern bool spi_get_int64_or_null(int row, int col, int64 *out);
extern bool spi_get_bool(int row, int col);
extern TimestampTz spi_get_time(int row, int col);
extern bool spi_get_time_or_null(int row, int col, TimestampTz *out);

/* ---- rows.c: direct row access on the hot path (see rows.c) ---- */
#define CREDITS_TABLE_MAX_COLUMNS 20

/*
 * A column the C code reads or writes, with the type its Datums have:
 * format_type_extended(type, -1, FORMAT_TYPE_FORCE_QUALIFY), e.g. "bigint",
 * "pg_catalog.text", "credits.entry_kind" (the typmod is not checked).
 */
typedef struct CreditsColumn
{
	const char *name;
	const char *type;
	bool		not_null;		/* read without a NULL check: must stay NOT NULL */
} CreditsColumn;

/* A table of the extension and the columns the C code reads or writes. */
typedef struct CreditsTable
{
	const char *name;
	int			ncolumns;
	CreditsColumn columns[CREDITS_TABLE_MAX_COLUMNS];
	/* cached per backend (rows.c) */
	Oid			resolved_relid;	/* what follows is valid for this relation */
	AttrNumber	attnum[CREDITS_TABLE_MAX_COLUMNS];
	MemoryContext checks_cxt;	/* holds the compiled expressions */
	ExprState **checks;			/* CHECK constraints, in the relcache's order */
	int			nchecks;
	ExprState **generated;		/* per attribute: its generation expression, or NULL */
	int			ngenerated;
	ExprState **defaults;		/* DEFAULTs of the columns the code does not set ... */
	AttrNumber *default_attnums;	/* ... and their attribute numbers */
	int			ndefaults;
	Oid		   *predicate_indexes;	/* partial indexes, by OID ... */
	ExprState **predicates;		/* ... and their compiled predicates */
	int			npredicates;
	bool		registered;		/* known to the invalidation callback */
	struct CreditsTable *next_registered;
} CreditsTable;

/* An ordered index scan of one user's rows. */
typedef struct RowScan
{
	Relation	rel;
	Relation	index;
	Snapshot	snapshot;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	bool		followed_update;	/* row_lock locked a newer version than the scan found */
} RowScan;

/* Writes to one table through the executor's simple-relation routines. */
typedef struct RowWriter
{
	CreditsTable *table;
	Relation	rel;
	EState	   *estate;
	ResultRelInfo *rri;
	EPQState	epq;
	TupleTableSlot *slot;		/* the row to insert, or the new version */
	bool		updating;		/* row_writer_copy: the columns set count as updated */
	ExprState **defaults;		/* the table's defaults when the writer was opened */
	AttrNumber *default_attnums;
	int			ndefaults;
} RowWriter;

extern Oid	credits_relid(const char *name);
extern void credits_require_writable(void);
extern Relation credits_table_open(CreditsTable *table, LOCKMODE lockmode);
extern Snapshot row_statement_snapshot(void);
extern void row_scan_begin(RowScan *scan, Relation rel, const char *index,
						   const pg_uuid_t *user_id, text *key);
extern void row_scan_begin_at(RowScan *scan, Relation rel, const char *index,
							  const pg_uuid_t *user_id, text *key, Snapshot snapshot);
extern bool row_scan_next(RowScan *scan);
extern bool row_lock(RowScan *scan);
extern void row_scan_end(RowScan *scan);
extern void check_row_type(TupleDesc desc, const char *type_name, const Oid *types, int ntypes);
extern void row_writer_open(RowWriter *writer, CreditsTable *table);
extern void row_writer_scan(RowWriter *writer, RowScan *scan, const char *index,
							const pg_uuid_t *user_id);
extern void row_writer_clear(RowWriter *writer);
extern void row_writer_copy(RowWriter *writer, TupleTableSlot *old);
extern void row_writer_set(RowWriter *writer, int col, Datum value, bool isnull);
extern void row_writer_insert(RowWriter *writer);
extern void row_writer_update(RowWriter *writer, TupleTableSlot *old);
extern void row_writer_close(RowWriter *writer);

/* Column `col` (an index into table->columns) of a row read from the table. */
#define row_get(table, slot, col, isnull) \
	slot_getattr((slot), (table)->attnum[(col)], (isnull))

/* ---- account.c ---- */

/* The locked (or peeked) account row, joined with its effective plan. */
typedef struct Account
{
	pg_uuid_t	user_id;
	char	   *base_plan;
	char	   *plan;				/* effective plan (entitlement or base) */
	int			plan_rank;
	int64		balance;
	DateADT		day;				/* local day that day_count counts */
	int32		day_count;
	DateADT		today;				/* now() in the account's time zone */
	DateADT		period;				/* first day of the current local month */
	bool		has_allocation_period;
	DateADT		allocation_period;
	bool		has_next_expiry;
	TimestampTz next_expiry;
	bool		has_next_hold_expiry;
	TimestampTz next_hold_expiry;
	bool		has_daily_limit;
	int32		daily_limit;
	int64		monthly_allocation;
	bool		allocation_rollover;
	bool		bypass_credits;
	char	   *entitlement_plan;	/* cached best entitlement (purchases.c), or NULL */
	bool		has_entitlement_until;
	TimestampTz entitlement_until;
	bool		locked;				/* FOR UPDATE held: may be changed and saved */
	bool		created;			/* account_lock() created the account */
	ItemPointerData row_tid;		/* the row version locked (account_save's first guess) */
	/* the plan's limiter (ratelimit.c); rate_tat and last_operation_at are saved */
	bool		has_rate_limit;
	int32		rate_burst;
	float8		rate_per_second;
	int32		cooldown_ms;
	bool		has_rate_tat;
	TimestampTz rate_tat;			/* GCRA theoretical arrival time */
	bool		has_last_operation_at;
	TimestampTz last_operation_at;
	const char *operation;			/* operation being checked, for denial counters */
	/* the time zone of the day count (grants.c changes it) */
	char	   *timezone;			/* the zone day and today are dates of */
	char	   *timezone_next;		/* a change not in effect yet, or NULL */
	bool		has_timezone_from;
	TimestampTz timezone_from;		/* ... from this local midnight of timezone */
	bool		timezone_due;		/* timezone_from has come: today is in timezone_next */
	bool		has_timezone_changed_at;
	TimestampTz timezone_changed_at;
	bool		signup_bonus_due;	/* withheld from an anonymous sign-in until linked */
} Account;

extern void account_read(const pg_uuid_t *user_id, Account *acct);
extern void account_lock(const pg_uuid_t *user_id, Account *acct);
extern void account_save(const Account *acct);
extern bool account_lock_as_seen(const pg_uuid_t *user_id, Account *acct, Snapshot snapshot);
extern void account_note_entry(const Account *acct);
extern void account_set_entitlement(Account *acct, const char *plan, bool has_until,
									TimestampTz until);
extern bool account_daily_remaining(const Account *acct, int64 *remaining);
extern void account_count_operation(Account *acct, int delta);
extern void account_add_balance(Account *acct, int64 delta);
extern void account_recount_day(Account *acct);
extern void account_grant_withheld_bonus(Account *acct);

/* ---- ledger.c ---- */
typedef struct LedgerEntry
{
	/* what the caller fills in */
	const char *kind;
	int64		amount;
	const char *operation;
	bool		has_units;
	int64		units;
	bool		has_list_cost;
	int64		list_cost;
	bool		has_ref_id;
	int64		ref_id;
	int16		day_ops;			/* +1 counts an operation today, -1 gives one back */
	Datum		lot_moves;			/* bigint[][] or (Datum) 0 */
	text	   *reference;
	text	   *idempotency_key;
	int64		request_hash;
	text	   *reason;
	Jsonb	   *metadata;
	/* what ledger_append fills in */
	int64		id;
	int64		balance_after;
	bool		has_daily_remaining;
	int64		daily_remaining;
	TimestampTz created_at;
} LedgerEntry;

/* A receipt: the contract's credits.receipt. */
typedef struct Receipt
{
	bool		no_entry;			/* no ledger entry: entry_id is NULL */
	int64		entry_id;
	pg_uuid_t	user_id;
	const char *kind;
	int64		amount;
	int64		balance;
	bool		has_daily_remaining;
	int64		daily_remaining;
	bool		replayed;
	TimestampTz created_at;
} Receipt;

extern void ledger_append(Account *acct, LedgerEntry *entry);
/* Fingerprint of a keyed request: the kind plus every parameter. */
typedef struct RequestHash
{
	uint64		hash;			/* what 1.1 stores: metadata hashed in canonical form */
	uint64		legacy;			/* the 1.0 form (metadata's bytes), still replayed */
} RequestHash;

extern bool ledger_find_replay(const pg_uuid_t *user_id, text *key, const RequestHash *request,
							   Receipt *receipt);
extern bool ledger_lock_or_replay(const pg_uuid_t *user_id, text *key, const RequestHash *request,
								  Account *acct, Receipt *receipt);
extern void receipt_from_entry(const Account *acct, const LedgerEntry *entry, Receipt *receipt);
extern Datum receipt_datum(FunctionCallInfo fcinfo, const Receipt *receipt);

extern void request_hash_init(RequestHash *rh, const char *kind);
extern void request_hash_text(RequestHash *rh, const text *value);
extern void request_hash_int64(RequestHash *rh, bool isnull, int64 value);
extern void request_hash_jsonb(RequestHash *rh, const Jsonb *value);

/* ---- kinds.c: the ledger's entry kinds, one row each ---- */
typedef enum KindSign
{
	KIND_DEBIT = -1,			/* amount <= 0 */
	KIND_EITHER = 0,
	KIND_CREDIT = 1				/* amount >= 0 */
} KindSign;

/* The tombstone totals of credits.deleted_accounts, in the order of Deletion.totals. */
typedef enum KindBucket
{
	KIND_GRANTED,
	KIND_SPENT,
	KIND_REFUNDED,
	KIND_EXPIRED,
	KIND_ADJUSTED,
	KIND_NBUCKETS
} KindBucket;

typedef struct EntryKind
{
	const char *name;			/* a label of credits.entry_kind */
	KindSign	sign;
	KindBucket	bucket;
	bool		billable;		/* a charge for an operation: usage, refundable */
} EntryKind;

extern const EntryKind *entry_kind(const char *name);
extern bool entry_kind_allows(const EntryKind *kind, int64 amount);
extern void entry_kind_add_to_totals(const EntryKind *kind, int64 amount, int64 *totals);

/* ---- lots.c ---- */
extern Datum lots_burn(Account *acct, int64 amount);
extern void lots_create(Account *acct, const LedgerEntry *entry, bool has_expiry,
						TimestampTz expires_at, int32 priority);
extern void lots_expire_due(Account *acct);
extern Datum lot_moves_array(int nmoves, const int64 *lot_ids, const int64 *deltas);

/* ---- validate.c: input checks (22023 / 22001 / 22003 with the field name) ---- */
extern void require_arg(FunctionCallInfo fcinfo, int argno, const char *field);
extern text *optional_text_arg(FunctionCallInfo fcinfo, int argno, const char *field,
							   int max_chars);
extern text *optional_key_arg(FunctionCallInfo fcinfo, int argno, const char *field);
extern Jsonb *optional_metadata_arg(FunctionCallInfo fcinfo, int argno);
extern text *capped_key_arg(FunctionCallInfo fcinfo, int argno, const char *field, int max_chars);
extern Jsonb *capped_metadata_arg(FunctionCallInfo fcinfo, int argno, int max_bytes);
extern int64 positive_int64_arg(FunctionCallInfo fcinfo, int argno, const char *field);
extern int64 checked_mul(int64 a, int64 b, const char *what);
extern int64 checked_add(int64 a, int64 b, const char *what);
extern const char *current_actor(void);

/* ---- errors.c: the contract's refusals ---- */
extern char *json_quote(const char *s);
extern void json_member_str(StringInfo buf, const char *key, const char *value);
extern void json_member_int(StringInfo buf, const char *key, int64 value);
extern void json_member_uuid(StringInfo buf, const char *key, const pg_uuid_t *value);
/* A uuid as text (uuid_out), palloc'd. */
extern char *uuid_text(const pg_uuid_t *id);
extern void json_member_time(StringInfo buf, const char *key, bool has, TimestampTz value);
pg_noreturn extern void refuse_insufficient(const Account *acct, int64 needed);
pg_noreturn extern void refuse_daily_limit(const Account *acct);
pg_noreturn extern void refuse_key_conflict_on(const pg_uuid_t *user_id, text *key, int64 original_entry_id,
											   const char *operation);
pg_noreturn extern void refuse_plan_required(const char *operation, const char *required_plan,
											 const char *plan);
pg_noreturn extern void refuse_hold_not_open(int64 hold_id, const char *status, bool has_settled,
											 int64 settled_entry_id);
pg_noreturn extern void refuse_over_refund(int64 entry_id, int64 refundable, bool has_requested,
										   int64 requested);
pg_noreturn extern void refuse_purchase_conflict(const char *source, const char *transaction_id,
												 const char *state, bool has_entry,
												 int64 original_entry_id);
pg_noreturn extern void refuse_claim_limit(int limit, int64 retry_after_ms);
pg_noreturn extern void refuse_timezone_interval(const pg_uuid_t *user_id, int64 retry_after_ms);
pg_noreturn extern void refuse_deletion_interval(const pg_uuid_t *user_id, int64 retry_after_ms);
pg_noreturn extern void refuse_rate_limited(const Account *acct, const char *operation,
											int64 retry_after_ms);
pg_noreturn extern void refuse_cooldown(const Account *acct, const char *operation,
										int64 retry_after_ms);
extern bool is_refusal(const ErrorData *edata);

/* ---- notify.c ---- */
extern void notify_init(void);
extern void notify_account_change(const Account *acct);

/* ---- ratelimit.c ---- */
extern void ratelimit_check_plan(Account *acct, const char *operation);

/* ---- stats.c: denial counters and the throttled denial log ---- */
typedef enum DenialReason
{
	DENIAL_INSUFFICIENT,		/* PT402 */
	DENIAL_DAILY_LIMIT,			/* PT429 */
	DENIAL_KEY_CONFLICT,		/* PT409 */
	DENIAL_PLAN_REQUIRED,		/* PT403 */
	DENIAL_RATE_LIMITED,		/* PT429, the plan's rate limit */
	DENIAL_COOLDOWN,			/* PT429, the plan's cooldown */
	DENIAL_THROTTLED,			/* credits.rate_limit() said no (not an error) */
	DENIAL_HOLD_NOT_OPEN,		/* PT409, capture/release of a settled hold */
	DENIAL_OVER_REFUND,			/* PT409, refund beyond the charge */
	DENIAL_PURCHASE_CONFLICT,	/* PT409, a store transaction applied elsewhere */
	DENIAL_CLAIM_LIMIT,			/* PT429, too many pending purchase claims */
	DENIAL_BAD_SIGNATURE,		/* 28000, a webhook whose signature does not verify */
	DENIAL_TIMEZONE_INTERVAL,	/* PT429, the client's time zone changed too recently */
	DENIAL_DELETION_INTERVAL,	/* PT429, the client's account deleted too recently */
	DENIAL_NREASONS
} DenialReason;
extern void stats_init(void);

/* ---- shard.c: sharding by user ---- */
/* Ledger ids of a configured shard carry the user's bucket in their low bits (at most this many shards). */
#define SHARD_ID_BUCKETS 1024
extern int32 shard_user_hash(const pg_uuid_t *user_id);
extern int64 shard_entry_id(Oid seq_relid, int64 seqval, const pg_uuid_t *user_id);
extern void shard_require_owner(const pg_uuid_t *user_id);
extern void shard_init(void);
extern void denial_record(DenialReason reason, const pg_uuid_t *user_id,
						  const char *operation, const char *detail);

/* ---- identity.c ---- */
extern void request_user_id(pg_uuid_t *user_id);
extern bool parse_uuid(const char *s, pg_uuid_t *uuid);
extern bool request_user_id_or_null(pg_uuid_t *user_id);

/* ---- local_day.c: the one day rule (SQL: credits.local_day, credits.local_day_start) ---- */
extern DateADT local_day(text *tz, TimestampTz t);

/* ---- guard.c: service functions refuse a client's request ---- */
extern void refuse_client_request(const char *function);
extern void refuse_client_read(const char *function, const pg_uuid_t *user_id);
extern bool request_is_anonymous(const pg_uuid_t *user_id);
extern bool request_is_linked(const pg_uuid_t *user_id);

/* ---- deletion.c: what deleting an account keeps ---- */

/* The record of a deleted user id (credits.deletion_records). */
typedef struct DeletionRecord
{
	char	   *plan;				/* base plan an admin set, NULL: the default plan */
	char	   *timezone;
	char	   *timezone_next;		/* a change not in effect yet, or NULL */
	bool		has_timezone_from;
	TimestampTz timezone_from;
	bool		has_timezone_changed_at;
	TimestampTz timezone_changed_at;
	DateADT		day;
	int32		day_count;
	bool		has_allocation_period;
	DateADT		allocation_period;
	bool		has_rate_tat;
	TimestampTz rate_tat;
	bool		has_last_operation_at;
	TimestampTz last_operation_at;
	TimestampTz deleted_at;
} DeletionRecord;

extern bool deletion_record_find(const pg_uuid_t *user_id, DeletionRecord *rec);
extern bool deletion_remember(const pg_uuid_t *user_id, int64 *tombstone_id);
extern void deletion_link_tombstone(const pg_uuid_t *user_id, int64 tombstone_id);
extern void deletion_check_interval(const pg_uuid_t *user_id);
extern void account_existence_lock(const pg_uuid_t *user_id);
extern char *user_ref(const pg_uuid_t *user_id);

/* ---- price_list.c ---- */

/* plans.name is at most 64 characters, so at most 256 bytes */
#define PLAN_NAME_BYTES 260

/* A priced operation from credits.operations. */
typedef struct Operation
{
	const char *name;
	int64		cost;				/* per unit */
	int64		max_units;
	bool		enabled;
	bool		has_required_plan;
	char		required_plan[PLAN_NAME_BYTES];
	int32		required_rank;		/* that plan's rank */
} Operation;

extern bool price_list_find(const char *name, Operation *op);

/* A plan's settings from credits.plans. */
typedef struct PlanSettings
{
	char		name[PLAN_NAME_BYTES];
	int32		rank;
	bool		has_daily_limit;
	int32		daily_limit;
	int64		monthly_allocation;
	bool		allocation_rollover;
	bool		bypass_credits;
	bool		has_rate_limit;
	int32		rate_burst;
	float8		rate_per_second;
	int32		cooldown_ms;
	int64		signup_bonus;
} PlanSettings;

extern bool plan_find(const char *name, PlanSettings *plan);

/* ---- consume.c ---- */
extern int64 check_operation(Account *acct, text *operation, int64 units, int64 *list_cost);

/* The arguments of consume and reserve, fingerprinted for replays. */
typedef struct OperationRequest
{
	pg_uuid_t  *user_id;
	text	   *operation;
	int64		units;
	text	   *key;
	text	   *reference;
	Jsonb	   *metadata;
	RequestHash request_hash;
} OperationRequest;

extern void operation_request_from_args(FunctionCallInfo fcinfo, const char *kind,
										OperationRequest *req);
extern void charge_operation(Account *acct, const OperationRequest *req, const char *kind,
							 LedgerEntry *entry);

/* ---- purchases.c: store purchases and entitlements ---- */
extern void entitlements_refresh(Account *acct);
extern bool entitlements_best(const pg_uuid_t *user_id, char **plan, bool *has_until,
							  TimestampTz *until);

/* ---- grants.c ---- */
extern void grant_lot(Account *acct, LedgerEntry *entry, int64 amount, bool has_expiry,
					  TimestampTz expires_at, int32 priority);

/* ---- holds.c ---- */
extern void holds_release_due(Account *acct);
extern Datum lots_add(Account *acct, int nmoves, const int64 *lot_ids, const int64 *deltas);
extern void lots_expire_if_due(Account *acct);

/* ---- version.c: the schema versions this library runs on ---- */
extern void credits_check_version(void);

#endif							/* CREDITS_H */
