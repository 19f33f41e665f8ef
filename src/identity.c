/*
 * identity.c
 *		Who is calling: the user id of a client request, taken from the
 *		verified JWT that PostgREST exposes, never from an argument.
 *
 * PostgREST (and so Supabase) runs every request as
 *     SET LOCAL ROLE authenticated;
 *     SELECT set_config('request.jwt.claims', '<claims json>', true);
 * after verifying the token's signature.  The user is the `sub` claim.
 * Older PostgREST versions set `request.jwt.claim.sub` instead; both work.
 */
#include "credits.h"

#include <ctype.h>

#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"

static void
refuse_unauthenticated(const char *why)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
			 errmsg("no authenticated user"),
			 errdetail("{\"reason\": \"%s\"}", why),
			 errhint("Call this function with a user's JWT (PostgREST sets request.jwt.claims), "
					 "or use the service functions that take a user_id.")));
}

/* The "sub" member of the claims JSON, or NULL. */
static char *
sub_from_claims(const char *claims)
{
	Jsonb	   *jb;
	JsonbValue	key;
	JsonbValue *sub;

	jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(claims)));
	if (!JB_ROOT_IS_OBJECT(jb) || JB_ROOT_IS_SCALAR(jb))
		return NULL;
	key.type = jbvString;
	key.val.string.val = "sub";
	key.val.string.len = 3;
	sub = findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &key);
	if (sub == NULL || sub->type != jbvString)
		return NULL;
	return pnstrdup(sub->val.string.val, sub->val.string.len);
}

/* 32 hex digits, optionally hyphenated: what uuid_in accepts, checked first so a bad claim is 28000. */
static bool
has_uuid_shape(const char *s)
{
	int			hex = 0;

	for (; *s; s++)
	{
		if (isxdigit((unsigned char) *s))
			hex++;
		else if (*s != '-' && *s != '{' && *s != '}')
			return false;
	}
	return hex == 32;
}

/*
 * The calling user's id, from the request's JWT claims; 28000 when there is
 * no authenticated user (no claims, no sub, or a sub that is not a uuid).
 */
void
request_user_id(pg_uuid_t *user_id)
{
	const char *claims = GetConfigOption("request.jwt.claims", true, false);
	char	   *sub = NULL;

	if (claims != NULL && claims[0] != '\0')
		sub = sub_from_claims(claims);
	if (sub == NULL)
	{
		const char *legacy = GetConfigOption("request.jwt.claim.sub", true, false);

		if (legacy != NULL && legacy[0] != '\0')
			sub = pstrdup(legacy);
	}
	if (sub == NULL)
		refuse_unauthenticated("no sub claim in request.jwt.claims");

	if (!has_uuid_shape(sub))
		refuse_unauthenticated("the sub claim is not a uuid");
	*user_id = *DatumGetUUIDP(DirectFunctionCall1(uuid_in, CStringGetDatum(sub)));
}

/* credits.current_user_id() returns uuid: the authenticated caller (28000 if none) */
PG_FUNCTION_INFO_V1(credits_current_user_id);
Datum
credits_current_user_id(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *user_id = palloc(sizeof(pg_uuid_t));

	request_user_id(user_id);
	PG_RETURN_UUID_P(user_id);
}
