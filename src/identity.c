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
 *
 * Reading the claims never raises on its own: claims nested deeper than
 * CLAIMS_MAX_DEPTH are not parsed at all (the recursive parser would hit the
 * stack depth limit), the rest is parsed with the non-throwing JSON parser
 * and the uuid with the same grammar as uuid_in, so the row-level security
 * policies can ask "who is this, if anyone?" without turning a malformed
 * token into an error (credits.current_user_id_or_null).  The client
 * functions raise 28000 instead (credits.current_user_id).  parse_uuid() is
 * also the uuid parser of the RevenueCat webhook (app user ids).
 * No locks, no catalog access.
 */
#include "credits.h"

#include <ctype.h>

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/guc.h"

/* Parser state while looking for the root object's "sub" member. */
typedef struct SubSearch
{
	int			depth;			/* nesting of objects and arrays; the root object is 1 */
	bool		in_sub;			/* inside the root's "sub" member */
	char	   *sub;			/* its value, when it is a string */
} SubSearch;

static json_callback_result
sub_nest(void *state)
{
	((SubSearch *) state)->depth++;
	JSON_CALLBACK_DONE;
}

static json_callback_result
sub_unnest(void *state)
{
	((SubSearch *) state)->depth--;
	JSON_CALLBACK_DONE;
}

static json_callback_result
sub_field_start(void *state, char *fname, bool isnull)
{
	SubSearch  *s = (SubSearch *) state;

	s->in_sub = (s->depth == 1 && strcmp(fname, "sub") == 0);
	JSON_CALLBACK_DONE;
}

static json_callback_result
sub_field_end(void *state, char *fname, bool isnull)
{
	((SubSearch *) state)->in_sub = false;
	JSON_CALLBACK_DONE;
}

static json_callback_result
sub_scalar(void *state, char *token, JsonTokenType tokentype)
{
	SubSearch  *s = (SubSearch *) state;

	/* the last "sub" wins, as in jsonb */
	if (s->in_sub && s->depth == 1)
		s->sub = (tokentype == JSON_TOKEN_STRING) ? token : NULL;
	JSON_CALLBACK_DONE;
}

/*
 * Real JWT claims nest a few levels (app_metadata, ...); anything deeper is
 * not a token PostgREST verified for a user of ours.
 */
#define CLAIMS_MAX_DEPTH 64

/* Do the claims nest objects or arrays deeper than CLAIMS_MAX_DEPTH?  Never raises. */
static bool
claims_too_deep(const char *claims)
{
	int			depth = 0;
	bool		in_string = false;

	for (const char *p = claims; *p != '\0'; p++)
	{
		if (in_string)
		{
			if (*p == '\\' && p[1] != '\0')
				p++;			/* an escaped character, perhaps a quote */
			else if (*p == '"')
				in_string = false;
		}
		else if (*p == '"')
			in_string = true;
		else if (*p == '{' || *p == '[')
		{
			if (++depth > CLAIMS_MAX_DEPTH)
				return true;
		}
		else if (*p == '}' || *p == ']')
			depth--;
	}
	return false;
}

/*
 * The "sub" member of the claims JSON object, or NULL (no such member, not a
 * string, nested too deep, or the claims are not valid JSON).  Never raises.
 */
static char *
sub_from_claims(const char *claims)
{
	SubSearch	state = {0};
	JsonSemAction sem = {0};
	JsonLexContext *lex;

	sem.semstate = &state;
	sem.object_start = sub_nest;
	sem.object_end = sub_unnest;
	sem.array_start = sub_nest;
	sem.array_end = sub_unnest;
	sem.object_field_start = sub_field_start;
	sem.object_field_end = sub_field_end;
	sem.scalar = sub_scalar;

	if (claims_too_deep(claims))
		return NULL;
	lex = compat_json_lexer(claims);
	if (pg_parse_json(lex, &sem) != JSON_SUCCESS)
		return NULL;
	return state.sub;
}

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	return tolower((unsigned char) c) - 'a' + 10;
}

/*
 * Parses a uuid with the grammar uuid_in accepts (32 hex digits, optionally
 * in braces, a hyphen allowed after any group of four), without raising.
 */
bool
parse_uuid(const char *s, pg_uuid_t *uuid)
{
	bool		braces = false;

	if (*s == '{')
	{
		braces = true;
		s++;
	}
	for (int i = 0; i < UUID_LEN; i++)
	{
		if (!isxdigit((unsigned char) s[0]) || !isxdigit((unsigned char) s[1]))
			return false;
		uuid->data[i] = (unsigned char) (hex_value(s[0]) * 16 + hex_value(s[1]));
		s += 2;
		if (s[0] == '-' && (i % 2) == 1 && i < UUID_LEN - 1)
			s++;
	}
	if (braces)
	{
		if (*s != '}')
			return false;
		s++;
	}
	return *s == '\0';
}

/*
 * The calling user's id from the request's JWT claims.  Returns NULL and sets
 * *user_id, or returns why there is no authenticated user.
 */
static const char *
claims_user_id(pg_uuid_t *user_id)
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
		return "no sub claim in request.jwt.claims";
	if (!parse_uuid(sub, user_id))
		return "the sub claim is not a uuid";
	return NULL;
}

/*
 * The calling user's id, from the request's JWT claims; 28000 when there is
 * no authenticated user (no claims, no sub, or a sub that is not a uuid).
 */
void
request_user_id(pg_uuid_t *user_id)
{
	const char *why = claims_user_id(user_id);

	if (why != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("no authenticated user"),
				 errdetail("{\"reason\": \"%s\"}", why),
				 errhint("Call this function with a user's JWT (PostgREST sets request.jwt.claims), "
						 "or use the service functions that take a user_id.")));
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

/*
 * credits.current_user_id_or_null() returns uuid: the authenticated caller,
 * or NULL when there is none.  For row-level security policies: a request
 * without a user sees no rows instead of failing.
 */
PG_FUNCTION_INFO_V1(credits_current_user_id_or_null);
Datum
credits_current_user_id_or_null(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *user_id = palloc(sizeof(pg_uuid_t));

	if (claims_user_id(user_id) != NULL)
		PG_RETURN_NULL();
	PG_RETURN_UUID_P(user_id);
}

/* The calling user's id, when the request has one (never raises). */
bool
request_user_id_or_null(pg_uuid_t *user_id)
{
	return claims_user_id(user_id) == NULL;
}
