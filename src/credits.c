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

/* Set only by credits.delete_account, for the one recorded deletion. */
bool		credits_ledger_delete_allowed = false;

void		_PG_init(void);

void
_PG_init(void)
{
	if (IsBinaryUpgrade)
		return;

	settings_init();
	stats_init();
	shard_init();
	notify_init();
	external_ids_init();

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
