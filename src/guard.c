/*
 * guard.c
 *		Defense in depth: a service function refuses a client's request.
 *
 * Only the admin role may call the service functions (grant_roles), but a
 * common tutorial line grants EXECUTE on every function of a schema to
 * `authenticated`.  So the service functions also look at the request: when
 * PostgREST's JWT claims say the caller is a client (role `authenticated`
 * or `anon`) and the request runs as that role (PostgREST's SET LOCAL ROLE;
 * an admin session that merely has claims set is not refused), a function
 * that writes refuses with 42501, and a function that
 * reads answers only about the caller's own account (the client functions
 * my_balance and my_daily_available read through those).  The client
 * functions themselves never call a guarded writer.
 *
 * The claims are parsed with the non-throwing JSON parser, as identity.c
 * does; no claims (a direct connection, a cron job) is not a client request.
 * No locks, no catalog access.
 */
#include "credits.h"

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/guc.h"

#if PG_VERSION_NUM >= 160000
typedef JsonParseErrorType json_callback_result;
#define JSON_CALLBACK_DONE return JSON_SUCCESS
#else
typedef void json_callback_result;
#define JSON_CALLBACK_DONE return
#endif

/* Parser state while looking for the root object's "role" member. */
typedef struct RoleSearch
{
	int			depth;			/* nesting of objects and arrays; the root object is 1 */
	bool		in_role;		/* inside the root's "role" member */
	char	   *role;			/* its value, when it is a string */
} RoleSearch;

static json_callback_result
role_nest(void *state)
{
	((RoleSearch *) state)->depth++;
	JSON_CALLBACK_DONE;
}

static json_callback_result
role_unnest(void *state)
{
	((RoleSearch *) state)->depth--;
	JSON_CALLBACK_DONE;
}

static json_callback_result
role_field_start(void *state, char *fname, bool isnull)
{
	RoleSearch *s = (RoleSearch *) state;

	s->in_role = (s->depth == 1 && strcmp(fname, "role") == 0);
	JSON_CALLBACK_DONE;
}

static json_callback_result
role_field_end(void *state, char *fname, bool isnull)
{
	((RoleSearch *) state)->in_role = false;
	JSON_CALLBACK_DONE;
}

static json_callback_result
role_scalar(void *state, char *token, JsonTokenType tokentype)
{
	RoleSearch *s = (RoleSearch *) state;

	if (s->in_role && s->depth == 1)
		s->role = (tokentype == JSON_TOKEN_STRING) ? token : NULL;
	JSON_CALLBACK_DONE;
}

/* The "role" claim of request.jwt.claims, or NULL.  Never raises. */
static char *
claims_role(void)
{
	const char *claims = GetConfigOption("request.jwt.claims", true, false);
	RoleSearch	state = {0};
	JsonSemAction sem = {0};
	JsonLexContext *lex;

	if (claims == NULL || claims[0] == '\0')
	{
		const char *legacy = GetConfigOption("request.jwt.claim.role", true, false);

		return (legacy != NULL && legacy[0] != '\0') ? pstrdup(legacy) : NULL;
	}
	sem.semstate = &state;
	sem.object_start = role_nest;
	sem.object_end = role_unnest;
	sem.array_start = role_nest;
	sem.array_end = role_unnest;
	sem.object_field_start = role_field_start;
	sem.object_field_end = role_field_end;
	sem.scalar = role_scalar;
#if PG_VERSION_NUM >= 170000
	lex = makeJsonLexContextCstringLen(NULL, claims, strlen(claims), GetDatabaseEncoding(), true);
#else
	lex = makeJsonLexContextCstringLen(pstrdup(claims), (int) strlen(claims),
									   GetDatabaseEncoding(), true);
#endif
	if (pg_parse_json(lex, &sem) != JSON_SUCCESS)
		return NULL;
	return state.role;
}

/*
 * The request's claims say a client (or an anonymous visitor) is calling,
 * and the request runs as that role.
 */
static bool
client_request(char **role)
{
	*role = claims_role();
	return *role != NULL &&
		(strcmp(*role, "authenticated") == 0 || strcmp(*role, "anon") == 0) &&
		strcmp(*role, current_actor()) == 0;
}

static void
refuse_client(const char *function, const char *role)
{
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("%s is a service function and this is a client request", function),
			 errdetail_internal("{\"function\": %s, \"claims_role\": %s}",
								json_quote(function), json_quote(role)),
			 errhint("Call the client functions (credits.consume, credits.my_balance, ...) with a "
					 "user's JWT; revoke EXECUTE on the service functions from the client role "
					 "(SELECT credits.grant_roles(...) does).")));
}

/* A service function that writes: 42501 in a client's request. */
void
refuse_client_request(const char *function)
{
	char	   *role;

	if (client_request(&role))
		refuse_client(function, role);
}

/*
 * A service function that reads one user's account: in a client's request
 * only the caller's own (what the client functions read anyway).
 */
void
refuse_client_read(const char *function, const pg_uuid_t *user_id)
{
	char	   *role;
	pg_uuid_t	caller;

	if (!client_request(&role))
		return;
	if (!request_user_id_or_null(&caller) || memcmp(&caller, user_id, UUID_LEN) != 0)
		refuse_client(function, role);
}
