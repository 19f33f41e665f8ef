/*
 * settings.c
 *		The settings an admin changes: one row of credits.settings per setting
 *		changed for this database, over the GUC of the same name.
 *
 * Each setting has one source of truth at a time: its row in
 * credits.settings when there is one, else the GUC credits.<name> (its boot
 * value, or what a superuser set in postgresql.conf, ALTER DATABASE/ROLE SET
 * or SET).  A row wins over the GUC; deleting the row gives the setting back
 * to the GUC.  The table exists because the GUCs are superuser-only
 * (PGC_SUSET: a client must not turn its own limits off) and a managed
 * admin role such as Supabase's `postgres` is no superuser; the admin role
 * writes the table (credits.delegate_owner), the GUCs stay for superusers,
 * the tests and postgresql.conf.
 *
 * The rows are read once per backend into a static array (setting_int,
 * setting_bool, setting_string: no query per call) and read again after
 * the table changed: the statement trigger credits.settings_changed
 * (enabled ALWAYS) registers a relcache invalidation of credits.settings,
 * which this backend processes at its next command and every other backend
 * after the change commits, no later than its next transaction; the
 * relcache callback drops the array.  A fill that an invalidation overtook
 * serves its call only (as in price_list.c).  The row trigger
 * credits.settings_check validates a value before it is stored (unknown
 * setting 22023, not a number or boolean 22P02, out of range 22003, unknown
 * plan 22023) with the same parser the read uses.
 *
 * Locks: a fill reads credits.settings with SPI (AccessShareLock).
 */
#include "credits.h"

#include <limits.h>

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "funcapi.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

typedef enum SettingKind
{
	SETTING_INT,
	SETTING_BOOL,
	SETTING_PLAN				/* a plan name */
} SettingKind;

typedef struct SettingDef
{
	const char *name;			/* without the credits. prefix */
	SettingKind kind;
	const char *short_desc;
	const char *long_desc;
	int			boot_int;		/* SETTING_INT, and SETTING_BOOL (0/1) */
	int			min;
	int			max;
	int			unit;			/* GUC_UNIT_S or 0 */
	const char *boot_string;	/* SETTING_PLAN */
} SettingDef;

/* Indexed by SettingId (credits.h). */
static const SettingDef defs[SETTING_COUNT] = {
	[SETTING_DEFAULT_PLAN] = {"default_plan", SETTING_PLAN,
		"Plan given to an account on its first touch.", NULL,
	0, 0, 0, 0, "free"},
	[SETTING_HOLD_TIMEOUT] = {"hold_timeout", SETTING_INT,
		"How long a hold reserves credits before it is released.", NULL,
	900, 1, 7 * 24 * 3600, GUC_UNIT_S, NULL},
	[SETTING_TIMEZONE_CHANGE_INTERVAL] = {"timezone_change_interval", SETTING_INT,
		"How often a client may change its time zone.",
		"set_my_timezone refuses another change within this time (PT429).",
	86400, 0, INT_MAX, GUC_UNIT_S, NULL},
	[SETTING_ANONYMOUS_BONUS_ON_LINK] = {"anonymous_bonus_on_link", SETTING_BOOL,
		"An anonymous sign-in gets its signup bonus only when the account is linked.",
		"A user signed in anonymously (JWT claim is_anonymous) is a new user id per session.",
	1, 0, 1, 0, NULL},
	[SETTING_DELETION_RETENTION] = {"deletion_retention", SETTING_INT,
		"How long the record of a deleted user id is kept.",
		"A user id that comes back within this time gets no second signup bonus "
		"and keeps its day count, claims, limiter state and admin-set plan.",
	365 * 86400, 86400, INT_MAX, GUC_UNIT_S, NULL},
	[SETTING_DELETION_INTERVAL] = {"deletion_interval", SETTING_INT,
		"How often a client may delete its own account.", NULL,
	86400, 0, INT_MAX, GUC_UNIT_S, NULL},
	[SETTING_ACCEPT_SANDBOX] = {"accept_sandbox", SETTING_BOOL,
		"Apply store webhook events from the SANDBOX environment.",
		"Off in production: sandbox purchases are acknowledged and ignored.",
	0, 0, 1, 0, NULL},
	[SETTING_PENDING_PURCHASE_GRACE] = {"pending_purchase_grace", SETTING_INT,
		"How long a claimed purchase unlocks its plan before the store confirms it.", NULL,
	600, 1, 24 * 3600, GUC_UNIT_S, NULL},
	[SETTING_PENDING_PURCHASE_DAILY_LIMIT] = {"pending_purchase_daily_limit", SETTING_INT,
		"Provisional unlocks a user may claim in 24 hours.", NULL,
	3, 0, 1000, 0, NULL},
	[SETTING_STRIPE_SIGNATURE_TOLERANCE] = {"stripe_signature_tolerance", SETTING_INT,
		"How far the t= time of a Stripe-Signature may be from now.", NULL,
	300, 1, 24 * 3600, GUC_UNIT_S, NULL},
};

/* The GUCs (the value without a row). */
static int	guc_int[SETTING_COUNT];
static bool guc_bool[SETTING_COUNT];
static char *guc_string[SETTING_COUNT];

/* The rows of credits.settings, parsed. */
typedef struct SettingValue
{
	bool		present;
	int			int_value;
	bool		bool_value;
	char		string_value[PLAN_NAME_BYTES];
} SettingValue;

static SettingValue rows[SETTING_COUNT];
static bool rows_valid = false;
static Oid	settings_relid = InvalidOid;
static bool callback_registered = false;
static uint64 invalidations = 0;
static LocalTransactionId invalidated_in = InvalidLocalTransactionId;

static CachedStatement all_settings = {
	"SELECT name, value FROM credits.settings", 0, {InvalidOid}
};

static CachedStatement plan_exists = {
	"SELECT 1 FROM credits.plans WHERE name = $1", 1, {TEXTOID}
};

static int	setting_id(const char *name);
static void parse_setting(int id, const char *value, SettingValue *out);
static void settings_load(void);

/* Defines the GUCs of the settings.  Called from _PG_init. */
void
settings_init(void)
{
	int			id;

	for (id = 0; id < SETTING_COUNT; id++)
	{
		const SettingDef *d = &defs[id];
		char	   *guc = psprintf("credits.%s", d->name);

		if (d->kind == SETTING_INT)
			DefineCustomIntVariable(guc, d->short_desc, d->long_desc, &guc_int[id],
									d->boot_int, d->min, d->max, PGC_SUSET, d->unit,
									NULL, NULL, NULL);
		else if (d->kind == SETTING_BOOL)
			DefineCustomBoolVariable(guc, d->short_desc, d->long_desc, &guc_bool[id],
									 d->boot_int != 0, PGC_SUSET, 0, NULL, NULL, NULL);
		else
			DefineCustomStringVariable(guc, d->short_desc, d->long_desc, &guc_string[id],
									   d->boot_string, PGC_SUSET, 0, NULL, NULL, NULL);
	}
}

/* Relcache callback: drops the rows when credits.settings (or everything) changed. */
static void
settings_reset(Datum arg, Oid relid)
{
	if (relid != InvalidOid && relid != settings_relid)
		return;
	invalidations++;
	invalidated_in = compat_my_lxid();
	rows_valid = false;
	settings_relid = InvalidOid;
}

int
setting_int(SettingId id)
{
	settings_load();
	return rows[id].present ? rows[id].int_value : guc_int[id];
}

bool
setting_bool(SettingId id)
{
	settings_load();
	return rows[id].present ? rows[id].bool_value : guc_bool[id];
}

const char *
setting_string(SettingId id)
{
	settings_load();
	return rows[id].present ? rows[id].string_value : guc_string[id];
}

/* Reads credits.settings into `into` (SPI, a connection of its own). */
static void
settings_read(SettingValue *into)
{
	uint64		n,
				i;

	memset(into, 0, sizeof(SettingValue) * SETTING_COUNT);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "credits: SPI_connect failed");
	n = spi_exec(&all_settings, NULL, NULL);
	for (i = 0; i < n; i++)
	{
		char	   *name = spi_get_cstring(i, 1);
		int			id = setting_id(name);

		/* a row the check trigger did not see (triggers disabled): refused on use */
		if (id < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("credits.settings has a row for an unknown setting"),
					 errdetail_internal("{\"setting\": %s}", json_quote(name)),
					 errhint("DELETE FROM credits.settings WHERE name = %s;",
							 quote_literal_cstr(name))));
		parse_setting(id, spi_get_cstring(i, 2), &into[id]);
	}
	SPI_finish();
}

/* Makes `rows` current: reads the table when an invalidation dropped it. */
static void
settings_load(void)
{
	uint64		mark;
	Oid			schema;

	if (rows_valid)
		return;
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(settings_reset, (Datum) 0);
		callback_registered = true;
	}
	schema = get_namespace_oid("credits", false);
	settings_relid = get_relname_relid("settings", schema);
	mark = invalidations;
	if (OidIsValid(settings_relid))
		settings_read(rows);
	else
		memset(rows, 0, sizeof(rows));	/* the schema before 1.1 */
	/* an invalidation during the read, or earlier under a transaction snapshot: this call only */
	rows_valid = invalidations == mark
		&& !(IsolationUsesXactSnapshot() && invalidated_in == compat_my_lxid())
		&& OidIsValid(settings_relid);
}

/* The index of a setting's name, -1 when there is none. */
static int
setting_id(const char *name)
{
	int			id;

	for (id = 0; id < SETTING_COUNT; id++)
		if (strcmp(defs[id].name, name) == 0)
			return id;
	return -1;
}

static void
refuse_value(int id, int sqlstate, const char *value, const char *hint)
{
	const SettingDef *d = &defs[id];
	const char *quoted = value ? json_quote(value) : "null";

	if (d->kind == SETTING_INT)
		ereport(ERROR,
				(errcode(sqlstate),
				 errmsg("invalid value for setting \"%s\"", d->name),
				 errdetail_internal("{\"setting\": \"%s\", \"value\": %s, \"min\": %d, \"max\": %d, \"unit\": \"%s\"}",
									d->name, quoted, d->min, d->max, d->unit == GUC_UNIT_S ? "s" : ""),
				 errhint("%s", hint)));
	ereport(ERROR,
			(errcode(sqlstate),
			 errmsg("invalid value for setting \"%s\"", d->name),
			 errdetail_internal("{\"setting\": \"%s\", \"value\": %s, \"type\": \"%s\"}",
								d->name, quoted, d->kind == SETTING_BOOL ? "boolean" : "plan"),
			 errhint("%s", hint)));
}

/* Parses a setting's value as its GUC would, within the GUC's range. */
static void
parse_setting(int id, const char *value, SettingValue *out)
{
	const SettingDef *d = &defs[id];
	const char *hintmsg = NULL;

	out->present = true;
	if (d->kind == SETTING_BOOL)
	{
		if (!parse_bool(value, &out->bool_value))
			refuse_value(id, ERRCODE_INVALID_TEXT_REPRESENTATION, value, "Use on or off.");
	}
	else if (d->kind == SETTING_INT)
	{
		if (!parse_int(value, &out->int_value, d->unit, &hintmsg))
			refuse_value(id, ERRCODE_INVALID_TEXT_REPRESENTATION, value,
						 d->unit == GUC_UNIT_S
						 ? "A number of seconds, or a number with a unit: 90s, 15min, 2h, 1d."
						 : "A whole number.");
		if (out->int_value < d->min || out->int_value > d->max)
			refuse_value(id, ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE, value,
						 psprintf("Pick a value from %d to %d%s.", d->min, d->max,
								  d->unit == GUC_UNIT_S ? " seconds" : ""));
	}
	else
	{
		if (strlen(value) == 0 || strlen(value) >= PLAN_NAME_BYTES)
			refuse_value(id, ERRCODE_INVALID_PARAMETER_VALUE, value, "Name a row of credits.plans.");
		strlcpy(out->string_value, value, sizeof(out->string_value));
	}
}

/*
 * credits.settings_check() trigger, BEFORE INSERT OR UPDATE FOR EACH ROW on
 * credits.settings: refuses an unknown setting and a value its GUC would
 * refuse; a plan must exist.
 */
PG_FUNCTION_INFO_V1(credits_settings_check);
Datum
credits_settings_check(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	HeapTuple	tuple;
	TupleDesc	desc;
	char	   *name;
	char	   *value;
	int			id;
	SettingValue parsed;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "credits: settings_check must be called as a trigger");
	tuple = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ? trigdata->tg_newtuple : trigdata->tg_trigtuple;
	desc = RelationGetDescr(trigdata->tg_relation);
	name = SPI_getvalue(tuple, desc, SPI_fnumber(desc, "name"));
	value = SPI_getvalue(tuple, desc, SPI_fnumber(desc, "value"));
	id = name == NULL ? -1 : setting_id(name);
	if (id < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown setting"),
				 errdetail_internal("{\"field\": \"name\", \"value\": %s}",
									name ? json_quote(name) : "null"),
				 errhint("The settings: default_plan, hold_timeout, timezone_change_interval, "
						 "anonymous_bonus_on_link, deletion_retention, deletion_interval, "
						 "accept_sandbox, pending_purchase_grace, pending_purchase_daily_limit, "
						 "stripe_signature_tolerance.")));
	if (value == NULL)
		refuse_value(id, ERRCODE_NOT_NULL_VIOLATION, NULL, "Delete the row to go back to the server's setting.");
	parse_setting(id, value, &parsed);
	if (defs[id].kind == SETTING_PLAN)
	{
		Datum		args[1] = {CStringGetTextDatum(value)};
		uint64		found;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "credits: SPI_connect failed");
		found = spi_exec(&plan_exists, args, NULL);
		SPI_finish();
		if (found == 0)
			refuse_value(id, ERRCODE_INVALID_PARAMETER_VALUE, value, "Name a row of credits.plans.");
	}
	return PointerGetDatum(tuple);
}

/*
 * credits.settings_changed() trigger, AFTER INSERT OR UPDATE OR DELETE OR
 * TRUNCATE FOR EACH STATEMENT on credits.settings: every backend reads the
 * rows again.
 */
PG_FUNCTION_INFO_V1(credits_settings_changed);
Datum
credits_settings_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "credits: settings_changed must be called as a trigger");
	CacheInvalidateRelcache(trigdata->tg_relation);
	return PointerGetDatum(NULL);
}

/*
 * credits.setting(name text) returns text: the value in effect for this
 * session, from its row or its GUC, in the GUC's unit (seconds).  Not
 * STRICT: the planner folds a strict call with a NULL constant away before
 * the EXECUTE privilege is checked.
 */
PG_FUNCTION_INFO_V1(credits_setting);
Datum
credits_setting(PG_FUNCTION_ARGS)
{
	char	   *name;
	int			id;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	id = setting_id(name);

	if (id < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown setting"),
				 errdetail_internal("{\"field\": \"name\", \"value\": %s}",
									json_quote(name)),
				 errhint("SELECT name FROM credits.settings_in_effect; lists them.")));
	if (defs[id].kind == SETTING_INT)
		PG_RETURN_TEXT_P(cstring_to_text(psprintf("%d", setting_int(id))));
	if (defs[id].kind == SETTING_BOOL)
		PG_RETURN_TEXT_P(cstring_to_text(setting_bool(id) ? "on" : "off"));
	PG_RETURN_TEXT_P(cstring_to_text(setting_string(id)));
}

/* credits.setting_names() returns setof text: every setting the table takes. */
PG_FUNCTION_INFO_V1(credits_setting_names);
Datum
credits_setting_names(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			id;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	for (id = 0; id < SETTING_COUNT; id++)
	{
		Datum		v[1] = {CStringGetTextDatum(defs[id].name)};
		bool		n[1] = {false};

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, n);
	}
	return (Datum) 0;
}
