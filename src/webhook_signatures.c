/*
 * webhook_signatures.c
 *		The signing secrets of the webhook providers and the checks of their
 *		signatures, before anything of a webhook body is read.
 *
 *   Stripe  Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]: the
 *           HMAC-SHA256 of "<t>.<raw body>"; any v1 may match (a secret being
 *           rolled); t within credits.stripe_signature_tolerance of now.
 *   Creem   creem-signature: <hex>, the HMAC-SHA256 of the raw body.
 * The key is the secret as the provider shows it ("whsec_..." included),
 * the body and key are taken as UTF-8, and digests are compared in constant
 * time.  A missing or wrong signature, or a stale t, is 28000 with the reason
 * in the detail, counted in credits.stats (bad_signature, operation = the
 * provider) and logged like the other denials.
 *
 * The secrets live in credits_secrets.webhook_secrets, outside schema
 * credits (whose every table grant_roles() lets the admin role read): no
 * grants, row level security without a policy.  Only the extension owner
 * reads it, here, from SECURITY DEFINER functions.  No locks.
 */
#include "webhooks.h"

#include <ctype.h>

#include "catalog/pg_type.h"
#include "common/hmac.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#define HMAC_SHA256_LEN 32
#define MAX_SIGNATURES 8		/* v1 entries looked at in a Stripe-Signature header */

static CachedStatement secret_of = {
	"SELECT secret FROM credits_secrets.webhook_secrets WHERE provider = $1",
	1, {TEXTOID}
};


pg_noreturn static void refuse_signature(const char *provider, const char *header,
										 const char *reason);

static void
refuse_signature(const char *provider, const char *header, const char *reason)
{
	char	   *detail = psprintf("{\"provider\": %s, \"reason\": %s}",
								  json_quote(provider), json_quote(reason));

	denial_record(DENIAL_BAD_SIGNATURE, NULL, provider, detail);
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
			 errmsg("the %s webhook signature does not verify", provider),
			 errdetail_internal("%s", detail),
			 errhint("Pass the raw request body as text and the %s header unchanged, "
					 "and check the secret given to credits.set_webhook_secret().", header)));
}

/* The secret set for the provider (55000 when there is none). */
const char *
webhook_secret(const char *provider)
{
	Datum		args[1] = {CStringGetTextDatum(provider)};

	if (spi_exec(&secret_of, args, NULL) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no webhook secret is set for %s", provider),
				 errdetail_internal("{\"provider\": %s}", json_quote(provider)),
				 errhint("As the admin role: SELECT credits.set_webhook_secret('%s', '<signing secret>');",
						 provider)));
	return spi_get_cstring(0, 1);
}

/* HMAC-SHA256 of the concatenated parts, each taken as UTF-8. */
static void
hmac_sha256(const char *key, const char **parts, int nparts, uint8 *mac)
{
	pg_hmac_ctx *ctx = pg_hmac_create(PG_SHA256);
	const char *k = pg_server_to_any(key, strlen(key), PG_UTF8);
	bool		ok = ctx != NULL && pg_hmac_init(ctx, (const uint8 *) k, strlen(k)) == 0;

	for (int i = 0; ok && i < nparts; i++)
	{
		const char *p = pg_server_to_any(parts[i], strlen(parts[i]), PG_UTF8);

		ok = pg_hmac_update(ctx, (const uint8 *) p, strlen(p)) == 0;
	}
	if (!ok || pg_hmac_final(ctx, mac, HMAC_SHA256_LEN) < 0)
		elog(ERROR, "credits: could not compute HMAC-SHA256: %s",
			 ctx ? pg_hmac_error(ctx) : "out of memory");
	pg_hmac_free(ctx);
}

/* hex (64 digits, any case) -> 32 bytes; false when it is not that. */
static bool
hex_digest(const char *hex, size_t len, uint8 *out)
{
	if (len != 2 * HMAC_SHA256_LEN)
		return false;
	for (size_t i = 0; i < len; i++)
	{
		if (!isxdigit((unsigned char) hex[i]))
			return false;
	}
	hex_decode(hex, len, (char *) out);
	return true;
}

/* Compares two digests in time independent of where they differ. */
static bool
digests_equal(const uint8 *a, const uint8 *b)
{
	uint8		diff = 0;

	for (int i = 0; i < HMAC_SHA256_LEN; i++)
		diff |= a[i] ^ b[i];
	return diff == 0;
}

void
webhook_check_creem(const char *secret, const char *payload, const char *header)
{
	uint8		mac[HMAC_SHA256_LEN];
	uint8		given[HMAC_SHA256_LEN];
	const char *parts[1] = {payload};
	size_t		len;

	if (header == NULL)
		refuse_signature("creem", "creem-signature", "missing_signature");
	while (*header == ' ')
		header++;
	len = strcspn(header, " ");
	hmac_sha256(secret, parts, 1, mac);
	if (!hex_digest(header, len, given) || header[len + strspn(header + len, " ")] != '\0' ||
		!digests_equal(mac, given))
		refuse_signature("creem", "creem-signature", "bad_signature");
}

/* Seconds since the Unix epoch, now. */
static int64
unix_now(void)
{
	return GetCurrentTimestamp() / USECS_PER_SEC +
		(int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY;
}

void
webhook_check_stripe(const char *secret, const char *payload, const char *header)
{
	char	   *copy;
	char	   *save = NULL;
	const char *t = NULL;
	const char *v1[MAX_SIGNATURES];
	int			nv1 = 0;
	uint8		mac[HMAC_SHA256_LEN];
	bool		match = false;
	int64		age;

	if (header == NULL)
		refuse_signature("stripe", "Stripe-Signature", "missing_signature");
	copy = pstrdup(header);
	for (char *item = strtok_r(copy, ",", &save); item != NULL; item = strtok_r(NULL, ",", &save))
	{
		while (*item == ' ')
			item++;
		if (strncmp(item, "t=", 2) == 0 && t == NULL)
			t = item + 2;
		else if (strncmp(item, "v1=", 3) == 0 && nv1 < MAX_SIGNATURES)
			v1[nv1++] = item + 3;
	}
	if (t == NULL || t[0] == '\0' || strlen(t) > 12 || strspn(t, "0123456789") != strlen(t))
		refuse_signature("stripe", "Stripe-Signature", "no_timestamp");
	if (nv1 == 0)
		refuse_signature("stripe", "Stripe-Signature", "missing_signature");

	{
		const char *parts[3] = {t, ".", payload};

		hmac_sha256(secret, parts, 3, mac);
	}
	for (int i = 0; i < nv1; i++)
	{
		uint8		given[HMAC_SHA256_LEN];

		if (hex_digest(v1[i], strlen(v1[i]), given) && digests_equal(mac, given))
			match = true;
	}
	if (!match)
		refuse_signature("stripe", "Stripe-Signature", "bad_signature");
	age = unix_now() - strtoll(t, NULL, 10);
	if (age > credits_stripe_tolerance_s() || age < -credits_stripe_tolerance_s())
		refuse_signature("stripe", "Stripe-Signature", "timestamp_outside_tolerance");
}
