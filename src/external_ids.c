/*
 * external_ids.c
 *		credits.user_uuid(external_id text): the uuid an account is keyed by,
 *		for user ids that identity systems hand out as strings.
 *
 * A string PostgreSQL's uuid type accepts is that uuid.  Any other string
 * is a name-based UUID version 5 (RFC 9562, section 5.5: SHA-1 of the
 * namespace's 16 bytes followed by the name's UTF-8 bytes, with the version
 * and variant bits set) in the namespace
 *     c4bd227c-fefc-5f48-9877-ac7685490c37
 * which is itself uuid5(NAMESPACE_URL, 'credits:user_uuid').  The namespace
 * is part of the contract: changing it would give every such user a new
 * account.  Any language computes the same id (README, "User ids").
 *
 * The same mapping is used for a JWT `sub` that is not a uuid (identity.c,
 * when credits.external_user_ids is on), RevenueCat's app_user_id
 * (revenuecat.c) and the user ids of Stripe and Creem webhooks.
 * No locks, no catalog access.
 */
#include "credits.h"
#include "external_ids.h"

#include <ctype.h>

#include "common/cryptohash.h"
#include "common/sha1.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/guc.h"

bool		credits_external_user_ids = false;

/* uuid5(NAMESPACE_URL, 'credits:user_uuid') */
static const uint8 user_namespace[UUID_LEN] = {
	0xc4, 0xbd, 0x22, 0x7c, 0xfe, 0xfc, 0x5f, 0x48,
	0x98, 0x77, 0xac, 0x76, 0x85, 0x49, 0x0c, 0x37
};

void
external_ids_init(void)
{
	DefineCustomBoolVariable("credits.external_user_ids",
							 "Client functions accept a JWT sub that is not a uuid, "
							 "mapped through credits.user_uuid().",
							 NULL,
							 &credits_external_user_ids,
							 false,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);
}

/*
 * True when uuid_in accepts s: 32 hex digits, optionally in braces, a hyphen
 * allowed after any group of four digits but the last.
 */
static bool
is_uuid_text(const char *s)
{
	int			digits = 0;
	bool		braces = (*s == '{');

	if (braces)
		s++;
	for (; *s != '\0' && *s != '}'; s++)
	{
		if (isxdigit((unsigned char) *s))
			digits++;
		else if (*s != '-' || digits == 0 || digits % 4 != 0 || digits == 32 || s[-1] == '-')
			return false;
	}
	if (digits != 32 || s[-1] == '-')
		return false;
	if (braces)
		return s[0] == '}' && s[1] == '\0';
	return *s == '\0';
}

/* The UUIDv5 of external_id (any string, taken as UTF-8) in credits' namespace. */
void
external_id_uuid(const char *external_id, pg_uuid_t *out)
{
	const char *utf8 = pg_server_to_any(external_id, strlen(external_id), PG_UTF8);
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA1);
	uint8		digest[SHA1_DIGEST_LENGTH];

	if (ctx == NULL ||
		pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, user_namespace, UUID_LEN) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) utf8, strlen(utf8)) < 0 ||
		pg_cryptohash_final(ctx, digest, sizeof(digest)) < 0)
		elog(ERROR, "credits: could not compute SHA-1: %s", pg_cryptohash_error(ctx));
	pg_cryptohash_free(ctx);

	memcpy(out->data, digest, UUID_LEN);
	out->data[6] = (out->data[6] & 0x0f) | 0x50;	/* version 5 */
	out->data[8] = (out->data[8] & 0x3f) | 0x80;	/* variant RFC 9562 */
}

/*
 * The account's uuid for a user id from elsewhere: the uuid itself, or its
 * UUIDv5.  Empty and oversized ids are 22023 naming `field`.
 */
void
user_uuid_from_text(const char *external_id, const char *field, pg_uuid_t *out)
{
	if (external_id[0] == '\0' || pg_mbstrlen(external_id) > CREDITS_MAX_KEY_CHARS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be between 1 and %d characters", field, CREDITS_MAX_KEY_CHARS),
				 errdetail_internal("{\"field\": %s}", json_quote(field)),
				 errhint("Pass the user id your identity provider gave the user.")));
	if (is_uuid_text(external_id))
		*out = *DatumGetUUIDP(DirectFunctionCall1(uuid_in, CStringGetDatum(external_id)));
	else
		external_id_uuid(external_id, out);
}

/*
 * credits.user_uuid(external_id text) returns uuid
 * The account id of a user id from any identity system (see the file header);
 * NULL for NULL.
 */
PG_FUNCTION_INFO_V1(credits_user_uuid);
Datum
credits_user_uuid(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *out;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	out = palloc(sizeof(pg_uuid_t));
	user_uuid_from_text(text_to_cstring(PG_GETARG_TEXT_PP(0)), "external_id", out);
	PG_RETURN_UUID_P(out);
}
