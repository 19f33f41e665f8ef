/*
 * validate.c
 *		Input hygiene: every argument a caller passes is checked here before
 *		anything is locked or written.
 *
 * Errors carry the offending field in a JSON detail, so that an app can point
 * at it: 22023 (invalid_parameter_value) for bad values, 22001
 * (string_data_right_truncation) for oversized text, 22003
 * (numeric_value_out_of_range) for amounts that overflow.
 */
#include "credits.h"

#include "common/int.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "lib/stringinfo.h"
#include "utils/acl.h"
#include "utils/builtins.h"

/*
 * Unicode format characters (general category Cf, Unicode 15): invisible,
 * they make two keys look alike, or reorder what a terminal shows (U+202E).
 */
static const pg_wchar format_ranges[][2] = {
	{0x00AD, 0x00AD}, {0x0600, 0x0605}, {0x061C, 0x061C}, {0x06DD, 0x06DD},
	{0x070F, 0x070F}, {0x0890, 0x0891}, {0x08E2, 0x08E2}, {0x180E, 0x180E},
	{0x200B, 0x200F}, {0x202A, 0x202E}, {0x2060, 0x2064}, {0x2066, 0x206F},
	{0xFEFF, 0xFEFF}, {0xFFF9, 0xFFFB}, {0x110BD, 0x110BD}, {0x110CD, 0x110CD},
	{0x13430, 0x1343F}, {0x1BCA0, 0x1BCA3}, {0x1D173, 0x1D17A}, {0xE0001, 0xE0001},
	{0xE0020, 0xE007F},
};

static void
refuse_field(const char *field, const char *message, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s", message),
			 errdetail("{\"field\": \"%s\"}", field),
			 errhint("%s", hint)));
}

void
require_arg(FunctionCallInfo fcinfo, int argno, const char *field)
{
	if (PG_ARGISNULL(argno))
		refuse_field(field, psprintf("%s must not be null", field),
					 "Pass a value for this argument.");
}

/*
 * A character is at least one byte, so a value of at most max_chars bytes
 * has at most max_chars characters: only a longer one is counted (a key or
 * a reference passes without walking its bytes).
 */
static void
check_length(const text *value, const char *field, int max_chars)
{
	int			nbytes = VARSIZE_ANY_EXHDR(value);
	int			nchars;

	if (nbytes <= max_chars)
		return;
	nchars = pg_mbstrlen_with_len(VARDATA_ANY(value), nbytes);
	if (nchars > max_chars)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("%s is too long", field),
				 errdetail("{\"field\": \"%s\", \"max_chars\": %d, \"chars\": %d}",
						   field, max_chars, nchars),
				 errhint("Shorten the value to at most %d characters.", max_chars)));
}

text *
optional_text_arg(FunctionCallInfo fcinfo, int argno, const char *field, int max_chars)
{
	text	   *value;

	if (PG_ARGISNULL(argno))
		return NULL;
	value = PG_GETARG_TEXT_PP(argno);
	check_length(value, field, max_chars);
	return value;
}

/*
 * A control (Cc) or format (Cf) character.  Printable ASCII answers at once:
 * the first format character is U+00AD.
 */
static bool
is_control_or_format(pg_wchar c)
{
	if (c < 0x20 || (c >= 0x7F && c <= 0x9F))
		return true;
	if (c < format_ranges[0][0])
		return false;
	for (int i = 0; i < (int) lengthof(format_ranges); i++)
		if (c >= format_ranges[i][0] && c <= format_ranges[i][1])
			return true;
	return false;
}

/*
 * The next character of s (len bytes left) and its length in bytes.  In a
 * database that is not UTF-8 only ASCII control characters are recognized:
 * every other byte reads as a printable character.
 */
static pg_wchar
next_char(const unsigned char *s, int len, int *charlen)
{
	*charlen = 1;
	if (GetDatabaseEncoding() != PG_UTF8 || s[0] < 0x80)
		return s[0] >= 0x80 ? 0x20 : s[0];
	*charlen = Min(pg_utf_mblen(s), len);
	return utf8_to_unicode(s);
}

/*
 * An idempotency key or a store transaction id: 1..255 characters, no
 * control or format characters (they are a classic way to make two keys
 * look alike in logs and dashboards, or to garble an admin's terminal).
 */
text *
optional_key_arg(FunctionCallInfo fcinfo, int argno, const char *field)
{
	return capped_key_arg(fcinfo, argno, field, CREDITS_MAX_KEY_CHARS);
}

/* A key of at most max_chars characters (the client path's cap is tighter). */
text *
capped_key_arg(FunctionCallInfo fcinfo, int argno, const char *field, int max_chars)
{
	text	   *key = optional_text_arg(fcinfo, argno, field, max_chars);
	const unsigned char *p;
	int			len;

	if (key == NULL)
		return NULL;
	p = (const unsigned char *) VARDATA_ANY(key);
	len = VARSIZE_ANY_EXHDR(key);
	if (len == 0)
		refuse_field(field, psprintf("%s must not be empty", field),
					 "Pass NULL for no key, or a non-empty key such as a request UUID.");
	for (int i = 0, n; i < len; i += n)
	{
		/* printable ASCII, the usual key, without the decoding below */
		if (p[i] >= 0x20 && p[i] < 0x7F)
		{
			n = 1;
			continue;
		}
		if (is_control_or_format(next_char(p + i, len - i, &n)))
			refuse_field(field, psprintf("%s contains a control character", field),
						 "Use printable characters only, for example a UUID.");
	}
	return key;
}

/*
 * credits.printable(value text) returns text (NULL for NULL)
 * The text with every control or format character written as \u{XXXX},
 * for showing what a client wrote to an admin (account_summary): a
 * reference cannot move the cursor, clear the screen or fake a line.
 */
PG_FUNCTION_INFO_V1(credits_printable);
Datum
credits_printable(PG_FUNCTION_ARGS)
{
	text	   *value;
	const unsigned char *p;
	int			len;
	StringInfoData buf;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	value = PG_GETARG_TEXT_PP(0);
	p = (const unsigned char *) VARDATA_ANY(value);
	len = VARSIZE_ANY_EXHDR(value);
	initStringInfo(&buf);
	for (int i = 0, n; i < len; i += n)
	{
		pg_wchar	c = next_char(p + i, len - i, &n);

		if (is_control_or_format(c))
			appendStringInfo(&buf, "\\u{%04X}", (unsigned int) c);
		else
			appendBinaryStringInfo(&buf, (const char *) p + i, n);
	}
	PG_RETURN_TEXT_P(cstring_to_text_with_len(buf.data, buf.len));
}

/* Metadata: a JSON object of at most 8 KiB, or NULL (stored as NULL when empty). */
Jsonb *
optional_metadata_arg(FunctionCallInfo fcinfo, int argno)
{
	return capped_metadata_arg(fcinfo, argno, CREDITS_MAX_METADATA_BYTES);
}

/* Metadata of at most max_bytes (the client path's cap is tighter). */
Jsonb *
capped_metadata_arg(FunctionCallInfo fcinfo, int argno, int max_bytes)
{
	Jsonb	   *metadata;

	if (PG_ARGISNULL(argno))
		return NULL;
	metadata = PG_GETARG_JSONB_P(argno);
	if (!JB_ROOT_IS_OBJECT(metadata) || JB_ROOT_IS_SCALAR(metadata))
		refuse_field("metadata", "metadata must be a JSON object",
					 "Pass an object such as '{\"model\": \"sdxl\"}'.");
	if ((int) (VARSIZE(metadata) - VARHDRSZ) > max_bytes)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("metadata is too large"),
				 errdetail("{\"field\": \"metadata\", \"max_bytes\": %d, \"bytes\": %d}",
						   max_bytes, (int) (VARSIZE(metadata) - VARHDRSZ)),
				 errhint("Keep metadata under %d bytes; store large payloads elsewhere and reference them.",
						 max_bytes)));
	if (JB_ROOT_COUNT(metadata) == 0)
		return NULL;
	return metadata;
}

int64
positive_int64_arg(FunctionCallInfo fcinfo, int argno, const char *field)
{
	int64		value;

	require_arg(fcinfo, argno, field);
	value = PG_GETARG_INT64(argno);
	if (value <= 0)
		refuse_field(field, psprintf("%s must be positive", field),
					 "Pass a whole number of at least 1.");
	return value;
}

int64
checked_mul(int64 a, int64 b, const char *what)
{
	int64		result;

	if (pg_mul_s64_overflow(a, b, &result))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("%s is out of range", what),
				 errdetail("{\"field\": \"%s\", \"factors\": [" INT64_FORMAT ", " INT64_FORMAT "]}",
						   what, a, b),
				 errhint("Amounts are limited to 9223372036854775807 credits.")));
	return result;
}

int64
checked_add(int64 a, int64 b, const char *what)
{
	int64		result;

	if (pg_add_s64_overflow(a, b, &result))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("%s is out of range", what),
				 errdetail("{\"field\": \"%s\", \"terms\": [" INT64_FORMAT ", " INT64_FORMAT "]}",
						   what, a, b),
				 errhint("Amounts are limited to 9223372036854775807 credits.")));
	return result;
}

/*
 * The role that made the call.  Inside a SECURITY DEFINER function the
 * current user is the extension owner; the outer user is the role the
 * session (or PostgREST's SET LOCAL ROLE) runs as.
 */
const char *
current_actor(void)
{
	return GetUserNameFromId(GetOuterUserId(), false);
}
