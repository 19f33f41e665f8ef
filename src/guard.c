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
 * It also answers whether a request is an anonymous user's own (Supabase
 * anonymous sign-ins), whose signup bonus waits until the account is
 * linked (account.c).
 *
 * The claims are parsed with the non-throwing JSON parser, as identity.c
 * does; no claims (a direct connection, a cron job) is not a client request.
 * No locks, no catalog access.
 */
#include "credits.h"

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/guc.h"

/* Parser state while looking for a member of the root object. */
typedef struct MemberSearch
{
	const char *name;			/* the member looked for */
	int			depth;			/* nesting of objects and arrays; the root object is 1 */
	bool		in_member;		/* inside the root's member of that name */
	char	   *value;			/* its value, when it is a scalar (the last one wins) */
	JsonTokenType type;			/* and the value's type */
} MemberSearch;

static json_callback_result
member_nest(void *state)
{
	((MemberSearch *) state)->depth++;
	JSON_CALLBACK_DONE;
}

static json_callback_result
member_unnest(void *state)
{
	((MemberSearch *) state)->depth--;
	JSON_CALLBACK_DONE;
}

static json_callback_result
member_field_start(void *state, char *fname, bool isnull)
{
	MemberSearch *s = (MemberSearch *) state;

	s->in_member = (s->depth == 1 && strcmp(fname, s->name) == 0);
	JSON_CALLBACK_DONE;
}

static json_callback_result
member_field_end(void *state, char *fname, bool isnull)
{
	((MemberSearch *) state)->in_member = false;
	JSON_CALLBACK_DONE;
}

static json_callback_result
member_scalar(void *state, char *token, JsonTokenType tokentype)
{
	MemberSearch *s = (MemberSearch *) state;

	if (s->in_member && s->depth == 1)
	{
		s->value = token;
		s->type = tokentype;
	}
	JSON_CALLBACK_DONE;
}

/*
 * A scalar claim of request.jwt.claims (or of the older per-claim setting
 * request.jwt.claim.<name>, as a string), or NULL.  Never raises.
 */
static char *
claim(const char *name, JsonTokenType *type)
{
	const char *claims = GetConfigOption("request.jwt.claims", true, false);
	MemberSearch state = {0};
	JsonSemAction sem = {0};
	JsonLexContext *lex;

	if (claims == NULL || claims[0] == '\0')
	{
		const char *legacy = GetConfigOption(psprintf("request.jwt.claim.%s", name), true, false);

		*type = JSON_TOKEN_STRING;
		return (legacy != NULL && legacy[0] != '\0') ? pstrdup(legacy) : NULL;
	}
	state.name = name;
	sem.semstate = &state;
	sem.object_start = member_nest;
	sem.object_end = member_unnest;
	sem.array_start = member_nest;
	sem.array_end = member_unnest;
	sem.object_field_start = member_field_start;
	sem.object_field_end = member_field_end;
	sem.scalar = member_scalar;
	lex = compat_json_lexer(claims);
	if (pg_parse_json(lex, &sem) != JSON_SUCCESS)
		return NULL;
	*type = state.type;
	return state.value;
}

/* The "role" claim, when it is a string. */
static char *
claims_role(void)
{
	JsonTokenType type = JSON_TOKEN_INVALID;
	char	   *role = claim("role", &type);

	return type == JSON_TOKEN_STRING ? role : NULL;
}

/*
 * The request is the user's own, signed in anonymously (Supabase anonymous
 * sign-ins: claim is_anonymous true).
 */
bool
request_is_anonymous(const pg_uuid_t *user_id)
{
	pg_uuid_t	caller;
	JsonTokenType type = JSON_TOKEN_INVALID;
	char	   *value;

	if (!request_user_id_or_null(&caller) || memcmp(&caller, user_id, UUID_LEN) != 0)
		return false;
	value = claim("is_anonymous", &type);
	return value != NULL && (type == JSON_TOKEN_TRUE ||
							 (type == JSON_TOKEN_STRING && strcmp(value, "true") == 0));
}

/* The request is the user's own, not (or no longer) anonymous: linked. */
bool
request_is_linked(const pg_uuid_t *user_id)
{
	pg_uuid_t	caller;

	return request_user_id_or_null(&caller) && memcmp(&caller, user_id, UUID_LEN) == 0 &&
		!request_is_anonymous(user_id);
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

/*
 * credits.guard_service_read(function text, user_id uuid) returns void
 * The same rule for the service reads written in SQL (reconcile,
 * account_summary, day_count_from_ledger): a NULL user_id (every user) is
 * refused in any client request.
 */
PG_FUNCTION_INFO_V1(credits_guard_service_read);
Datum
credits_guard_service_read(PG_FUNCTION_ARGS)
{
	const char *function = PG_ARGISNULL(0) ? "a credits service function"
		: text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (PG_ARGISNULL(1))
		refuse_client_request(function);
	else
		refuse_client_read(function, PG_GETARG_UUID_P(1));
	PG_RETURN_VOID();
}
