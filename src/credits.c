/*
 * credits.c
 *		Module entry point: settings, and the ledger's append-only guard.
 *
 * Each part of the extension keeps its own code; _PG_init defines the
 * settings they share and calls each part's init (stats_init: the denial
 * settings, log hook and, when preloaded, shared memory; shard_init: the
 * router's PT503 for an unreachable shard; notify_init:
 * credits.notify and, when preloaded, the listener count).
 */
#include "credits.h"
#include "external_ids.h"
#include "webhooks.h"

#include "commands/trigger.h"
#include "miscadmin.h"
#include "utils/guc.h"

PG_MODULE_MAGIC;

char	   *credits_default_plan = NULL;
int			credits_hold_timeout_s = 900;
int			credits_timezone_interval_s = 86400;
bool		credits_bonus_on_link = true;

/* Set only by credits.delete_account, for the one recorded deletion. */
bool		credits_ledger_delete_allowed = false;

void		_PG_init(void);

void
_PG_init(void)
{
	if (IsBinaryUpgrade)
		return;

	DefineCustomStringVariable("credits.default_plan",
							   "Plan given to an account on its first touch.",
							   NULL,
							   &credits_default_plan,
							   "free",
							   PGC_SUSET,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("credits.hold_timeout",
							"How long a hold reserves credits before it is released.",
							NULL,
							&credits_hold_timeout_s,
							900,
							1,
							7 * 24 * 3600,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("credits.timezone_change_interval",
							"How often a client may change its time zone.",
							"set_my_timezone refuses another change within this time (PT429).",
							&credits_timezone_interval_s,
							86400,
							0,
							INT_MAX,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("credits.anonymous_bonus_on_link",
							 "An anonymous sign-in gets its signup bonus only when the account is linked.",
							 "A user signed in anonymously (JWT claim is_anonymous) is a new user id per session.",
							 &credits_bonus_on_link,
							 true,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	stats_init();
	shard_init();
	deletion_init();
	purchases_init();
	notify_init();
	external_ids_init();
	webhooks_init();

	MarkGUCPrefixReserved("credits");
}

/*
 * credits.ledger_is_append_only() trigger, BEFORE UPDATE OR DELETE OR
 * TRUNCATE FOR EACH STATEMENT on credits.ledger.  0A000
 * (feature_not_supported): the table does not support changing its rows,
 * whoever asks, superusers included; it is not a missing privilege (42501).
 */
PG_FUNCTION_INFO_V1(credits_ledger_is_append_only);
Datum
credits_ledger_is_append_only(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "credits: ledger_is_append_only must be called as a trigger");

	if (credits_ledger_delete_allowed && TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		return PointerGetDatum(NULL);

	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("the credits ledger is append-only"),
			 errdetail_internal("{\"table\": \"credits.ledger\"}"),
			 errhint("Correct a balance with a new entry (credits.grant_credits, credits.refund); "
					 "credits.delete_account removes a user's rows.")));
	PG_RETURN_NULL();
}
