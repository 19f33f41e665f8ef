#!/usr/bin/env bash
# Supabase for real, printed as TAP.
#
# A cluster bootstrapped by supabase_admin, as Supabase's image is, set up by
# test/fixtures/supabase.sql (roles, auth schema, default privileges,
# supabase_realtime; `postgres` is no superuser there).  Then, in order:
#   install   `postgres` cannot CREATE EXTENSION credits itself (not trusted);
#             supabase_admin does, and runs supabase/after-create.sql after it
#             the way supautils runs extension-custom-scripts/<ext>/after-create.sql
#             (the file's text EXECUTEd in a DO block, as the superuser).
#             supautils itself is not packaged for Debian: this is its
#             behaviour for privileged extensions, emulated.
#   admin     as `postgres`: edit plans, operations, products, settings
#             (validated), attach/detach Auth, grant_roles without a warning,
#             Realtime publication through publish_accounts; still no write on
#             the ledger or accounts.
#   requests  client calls replayed as PostgREST issues them, logged in as
#             authenticator: one transaction each, set_config of role, claims,
#             method, path and headers, READ ONLY for GET; reads of an untouched
#             user write nothing and my_account gives one row (.single()).
#   wrapper   the trap: a SECURITY DEFINER function in public is executable by
#             anon through Supabase's default privileges; nothing of credits is.
#   linter    Supabase's splinter (test/fixtures/splinter) reports on schema
#             credits only the intended authenticated_security_definer_function_executable
#             warnings, one per documented client function; every function of
#             the schema pins search_path.
#   suites    the security and client suites (pgTAP and pg_regress) on this cluster.
#
# Needs the harness environment (see lib.bash), and ROOT and PG_CONFIG.
set -uo pipefail
# shellcheck source=test/ops/lib.bash
source "$(dirname "${BASH_SOURCE[0]}")/lib.bash"
OUT=$PGHOST/ops-supabase
rm -rf "$OUT" && mkdir -p "$OUT"
trap extra_clusters_stop EXIT

echo "1..37"
DIR=$PGHOST/supabase
rm -rf "$DIR"
as_server_user "$PGBIN/initdb" -D "$DIR" -U supabase_admin --auth=trust --no-locale \
    --encoding=UTF8 --no-sync >"$OUT/initdb.log" 2>&1 || { echo "Bail out! initdb"; exit 1; }
SPORT=$(free_port $((PGPORT + 200)))
cluster_conf "$DIR" "$SPORT"
extra_cluster_start "$DIR" || { echo "Bail out! start"; cat "$DIR.log"; exit 1; }

# sq ROLE DB [psql args...]: psql logged in as ROLE on the Supabase-shaped cluster.
sq() {
    local role=$1 db=$2
    shift 2
    "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$PGHOST" -p "$SPORT" -U "$role" -d "$db" "$@"
}
# sqn ROLE DB [psql args...]: sq without the empty lines of void results.
sqn() { sq "$@" | sed '/^$/d'; }
# state ROLE DB SQL: the SQLSTATE SQL fails with, or "ok".
state() {
    local out
    out=$(sq "$1" "$2" -v VERBOSITY=sqlstate -c "$3" 2>&1 >/dev/null) && { echo ok; return; }
    echo "$out" | sed -n 's/^.*ERROR: *\([0-9A-Z]\{5\}\).*/\1/p' | head -1
}

# The image's setup: the fixture as the superuser; postgres owns the database (migrate.sh).
setup_db() {
    sq supabase_admin postgres -c "CREATE DATABASE $1" &&
        sq supabase_admin "$1" -f "$ROOT/test/fixtures/supabase.sql" &&
        sq supabase_admin "$1" -c "ALTER DATABASE $1 OWNER TO postgres"
}
# What supautils does for a privileged extension: CREATE EXTENSION as the superuser,
# then the after-create script's text, placeholders replaced, EXECUTEd as the superuser.
install_credits() {
    sq supabase_admin "$1" -v script="$(cat "$ROOT/supabase/after-create.sql")" <<'SQL'
CREATE EXTENSION credits;
SELECT set_config('supautils_emulation.script', :'script', false) IS NOT NULL;
DO $_$
BEGIN
    EXECUTE replace(replace(replace(replace(current_setting('supautils_emulation.script'),
        '@extname@', 'credits'), '@extschema@', 'credits'), '@extversion@', '1.1'), '@extcascade@', 'false');
END
$_$;
SQL
}
setup_db app >"$OUT/setup.log" 2>&1 || { echo "Bail out! fixture"; cat "$OUT/setup.log"; exit 1; }

# ---- the fixture has Supabase's shape
is "$(sq supabase_admin app -c "SELECT rolsuper, rolcreaterole, rolbypassrls FROM pg_roles WHERE rolname = 'postgres'")" \
   "f|t|t" "postgres: no superuser, CREATEROLE, BYPASSRLS"
is "$(sq supabase_admin app -c "SELECT string_agg(rolname || '=' || rolinherit, ',' ORDER BY rolname) FROM pg_roles
                                 WHERE rolname IN ('anon', 'authenticated', 'service_role', 'authenticator')")" \
   "anon=true,authenticated=true,authenticator=false,service_role=true" "API roles INHERIT, authenticator NOINHERIT"
is "$(sq supabase_admin app -c "SELECT bool_and(pg_has_role('postgres', r, 'MEMBER') AND pg_has_role('authenticator', r, 'MEMBER'))
                                  FROM unnest(ARRAY['anon', 'authenticated', 'service_role']) r")" \
   "t" "postgres and authenticator are members of anon, authenticated, service_role"

# ---- install
is "$(state postgres app 'CREATE EXTENSION credits')" "42501" \
   "postgres cannot CREATE EXTENSION credits itself (not trusted: supautils runs it as supabase_admin)"
install_credits app >"$OUT/install.log" 2>&1
ok $? "supabase_admin creates it and runs supabase/after-create.sql as supautils would"
is "$(sq supabase_admin app -c "SELECT rolname FROM pg_extension e JOIN pg_roles r ON r.oid = e.extowner WHERE extname = 'credits'")" \
   "supabase_admin" "the extension and its objects belong to supabase_admin"

# ---- admin tasks as postgres (no superuser)
sq postgres app >"$OUT/admin.log" 2>&1 <<'SQL'
INSERT INTO credits.operations (name, cost) VALUES ('video_second', 3);
UPDATE credits.operations SET cost = 2 WHERE name = 'video_second';
UPDATE credits.plans SET daily_limit = 7 WHERE name = 'free';
INSERT INTO credits.plans (name, daily_limit, signup_bonus, monthly_allocation, bypass_credits)
VALUES ('team', NULL, 50, 500, false);
INSERT INTO credits.products (product_id, credits) VALUES ('pack_100', 100);
DELETE FROM credits.products WHERE product_id = 'pack_100';
SQL
ok $? "postgres edits plans, operations and products"
is "$(sqn postgres app -c "SELECT credits.attach_supabase_auth()" -c "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'auth.users'::regclass AND tgname LIKE 'credits_%'")" \
   "3" "postgres attaches Supabase Auth (signup, delete, link triggers)"
is "$(sqn postgres app -c "SELECT credits.detach_supabase_auth()" -c "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'auth.users'::regclass AND tgname LIKE 'credits_%'")" \
   "0" "postgres detaches it"
sq postgres app -c "SELECT credits.attach_supabase_auth()" >/dev/null 2>&1
msgs=$(sq postgres app -c "SELECT credits.grant_roles('authenticated', 'service_role')" 2>&1 >/dev/null; echo "rc=$?")
is "$msgs" "rc=0" "postgres repairs the grants: no WARNING, no error"
is "$(sq postgres app -c "SELECT has_function_privilege('postgres', 'credits.grant_credits(uuid, bigint, text, text, timestamptz, text, jsonb)', 'EXECUTE'),
                                 has_function_privilege('postgres', 'credits.attach_supabase_auth()', 'EXECUTE')")" \
   "t|t" "after grant_roles postgres still has the admin functions and the owner's tasks"
is "$(state postgres app "ALTER PUBLICATION supabase_realtime ADD TABLE credits.accounts")" "42501" \
   "ALTER PUBLICATION ... ADD TABLE credits.accounts as postgres: must be owner of the table"
is "$(sqn postgres app -c "SELECT credits.publish_accounts()" -c "SELECT credits.publish_accounts()" \
      -c "SELECT string_agg(schemaname || '.' || tablename, ',') FROM pg_publication_tables WHERE pubname = 'supabase_realtime'")" \
   "credits.accounts" "postgres publishes credits.accounts to supabase_realtime (twice is harmless)"
is "$(state postgres app "UPDATE credits.accounts SET balance = 1000000")|$(state postgres app "INSERT INTO credits.ledger (user_id, kind, amount) VALUES (gen_random_uuid(), 'grant', 5)")" \
   "42501|42501" "postgres still writes no credit row directly"
is "$(state postgres app "SELECT credits.delegate_owner('anon')")" "42501" "only the owner delegates"

# settings: validated, then in effect
is "$(state postgres app "INSERT INTO credits.settings VALUES ('hold_timeout', 'soon')")|$(state postgres app "INSERT INTO credits.settings VALUES ('hold_timeout', '0')")|$(state postgres app "INSERT INTO credits.settings VALUES ('no_such', '1')")|$(state postgres app "INSERT INTO credits.settings VALUES ('default_plan', 'gold')")|$(state postgres app "INSERT INTO credits.settings VALUES ('accept_sandbox', 'maybe')")" \
   "22P02|22003|22023|22023|22P02" "settings refuse a non-number, out of range, unknown setting, unknown plan, non-boolean"
is "$(state postgres app "SET credits.hold_timeout = '30min'")" "42501" "the GUCs stay superuser-only"
is "$(sq postgres app -c "INSERT INTO credits.settings (name, value) VALUES ('hold_timeout', '30min'), ('default_plan', 'team'), ('accept_sandbox', 'on')" \
      -c "SELECT string_agg(name || '=' || value || '/' || source, ',' ORDER BY name) FROM credits.settings_in_effect
           WHERE name IN ('hold_timeout', 'default_plan', 'accept_sandbox', 'deletion_interval')")" \
   "accept_sandbox=on/credits.settings,default_plan=team/credits.settings,deletion_interval=86400/server,hold_timeout=1800/credits.settings" \
   "postgres changes settings; a row wins, the others come from the server"
U1=5ec00000-0000-4000-8000-0000000000a1
is "$(sq postgres app -c "SELECT (credits.reserve('$U1', 'image')).entry_id IS NOT NULL" \
      -c "SELECT plan, round(extract(epoch FROM h.expires_at - h.created_at)) FROM credits.holds h JOIN credits.accounts a USING (user_id) WHERE user_id = '$U1'")" \
   "t
team|1800" "the service functions use them: a new account gets default_plan, a hold lasts hold_timeout"
sq postgres app -c "DELETE FROM credits.settings WHERE name IN ('default_plan', 'hold_timeout')" >/dev/null

# ---- client requests, as PostgREST issues them (logged in as authenticator)
# rpc METHOD ROLE CLAIMS CALL [ro]: one request in one transaction; prints the result.
# PostgREST runs GET, and a POST to a STABLE or IMMUTABLE function, READ ONLY.
rpc() {
    local method=$1 role=$2 claims=$3 call=$4 ro=""
    [[ $method == GET || ${5:-} == ro ]] && ro="SET TRANSACTION READ ONLY;"
    sq authenticator app -v VERBOSITY=sqlstate 2>&1 <<SQL | sed 's/^.*ERROR: *//'
BEGIN ISOLATION LEVEL READ COMMITTED;
$ro
SELECT set_config('search_path', 'public, extensions', true), set_config('role', '$role', true),
       set_config('request.jwt.claims', '$claims', true), set_config('request.method', '$method', true),
       set_config('request.path', '/rpc/$(sed 's/(.*//; s/.*\.//' <<<"$call")', true),
       set_config('request.headers', '{"accept": "application/json", "accept-profile": "credits"}', true),
       set_config('request.cookies', '{}', true) \\g /dev/null
$call;
COMMIT;
SQL
}
U2=5ec00000-0000-4000-8000-0000000000b2
CL=$(sq supabase_admin app -c "SELECT postgrest.user_claims('$U2')")
is "$(rpc GET authenticated "$CL" "SELECT credits.my_balance()")" "6" "GET my_balance of an untouched user: the signup bonus it will get"
is "$(rpc GET authenticated "$CL" "SELECT credits.my_daily_available()")" "7" "GET my_daily_available: the plan's daily limit"
is "$(rpc GET authenticated "$CL" "SELECT count(*) || ' ' || min(plan) || ' ' || min(balance) FROM (SELECT * FROM credits.my_account) s")" \
   "1 free 6" "GET my_account: one row with the defaults (.single() works)"
is "$(rpc GET authenticated "$CL" "SELECT count(*) FROM credits.my_history(20, NULL)")" "0" "GET my_history: empty"
is "$(rpc POST authenticated "$CL" "SELECT credits.my_balance() || ' ' || credits.my_daily_available()" ro)" "6 7" \
   "POST my_balance / my_daily_available (STABLE: PostgREST runs them READ ONLY too)"
is "$(sq supabase_admin app -c "SELECT count(*) FROM credits.accounts WHERE user_id = '$U2'")" "0" "the reads wrote nothing"
is "$(rpc POST authenticated "$CL" "SELECT (r).balance || ' ' || (r).daily_remaining FROM credits.consume('image', 1, 'job-1') r")" \
   "5 6" "POST consume: the account is created and charged"
is "$(rpc POST authenticated "$CL" "SELECT (r).balance || ' ' || (r).replayed FROM credits.consume('image', 1, 'job-1') r")" \
   "5 true" "POST consume again with the same key: the first receipt"
is "$(rpc GET authenticated "$CL" "SELECT credits.my_balance() || ' ' || credits.my_daily_available()")" "5 6" "GET after the write"
is "$(rpc GET anon '{"role": "anon"}' "SELECT credits.my_balance()")" "42501" "anon: no client function"
is "$(rpc POST authenticated "$CL" "SELECT credits.grant_credits('$U2', 1000000, 'free money')")" "42501" "authenticated: no service function"

# ---- the wrapper trap
sq postgres app >/dev/null 2>&1 <<'SQL'
CREATE FUNCTION public.give_me_credits(amount bigint) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = '' AS
$$ SELECT (credits.grant_credits('5ec00000-0000-4000-8000-0000000000c3', amount, 'wrapper')).balance $$;
SQL
is "$(sq supabase_admin app -c "SELECT has_function_privilege('anon', 'public.give_me_credits(bigint)', 'EXECUTE')")" "t" \
   "trap: a SECURITY DEFINER wrapper that postgres writes in public is executable by anon (default privileges)"
is "$(rpc POST anon '{"role": "anon"}' "SELECT public.give_me_credits(1000000)")|$(sq supabase_admin app -c "SELECT count(*) FROM credits.ledger WHERE user_id = '5ec00000-0000-4000-8000-0000000000c3'")" \
   "42501|0" "the service function inside refuses anon's request (credits' guard), nothing is written"
is "$(sq supabase_admin app -c "SELECT count(*) FROM pg_proc p WHERE p.pronamespace = 'credits'::regnamespace
                                   AND (has_function_privilege('anon', p.oid, 'EXECUTE') OR has_function_privilege('public', p.oid, 'EXECUTE'))")" \
   "0" "nothing of credits is executable by anon or PUBLIC"
sq postgres app -c "DROP FUNCTION public.give_me_credits(bigint)" >/dev/null

# ---- Supabase's linter
sq supabase_admin app >"$OUT/splinter.out" 2>&1 <<SQL
BEGIN;
SET LOCAL search_path = '';
SET LOCAL pgrst.db_schemas = 'public, graphql_public, credits';
CREATE TEMP TABLE lints ON COMMIT DROP AS
$(cat "$ROOT/test/fixtures/splinter/splinter.sql" | sed '1d');
SELECT name || ' ' || coalesce(metadata->>'name', '') FROM lints
 WHERE metadata->>'schema' = 'credits' OR detail LIKE '%credits.%' ORDER BY 1;
COMMIT;
SQL
expected=$(for f in consume my_account_status my_balance my_daily_available my_history my_usage set_my_timezone \
                    delete_my_account claim_pending_purchase; do
               echo "authenticated_security_definer_function_executable $f"; done | LC_ALL=C sort)
is "$(LC_ALL=C sort "$OUT/splinter.out")" "$expected" \
   "splinter: only authenticated_security_definer_function_executable, on the documented client functions"
is "$(sq supabase_admin app -c "SELECT string_agg(p.oid::regprocedure::text, ', ') FROM pg_proc p
                                  WHERE p.pronamespace IN ('credits'::regnamespace, 'credits_secrets'::regnamespace)
                                    AND NOT EXISTS (SELECT 1 FROM unnest(coalesce(p.proconfig, '{}')) c WHERE c LIKE 'search_path=%')")" \
   "" "every function pins search_path"

# ---- the security and client suites on this cluster
setup_db tap >>"$OUT/setup.log" 2>&1 && sq supabase_admin tap -c "CREATE EXTENSION pgtap" >/dev/null 2>&1 &&
    install_credits tap >>"$OUT/install.log" 2>&1
fails=""
for f in "$ROOT"/test/pgtap/security_*.sql "$ROOT"/test/pgtap/purchases.sql; do
    (cd "$ROOT" && pg_prove --norc --nocolor --psql-bin "$PGBIN/psql" -h "$PGHOST" -p "$SPORT" -U supabase_admin -d tap \
        "${f#"$ROOT"/}") >"$OUT/pgtap-$(basename "$f").log" 2>&1 || fails="$fails $(basename "$f")"
done
is "$fails" "" "pgTAP security and client files pass on the Supabase-shaped cluster"
setup_db regress >>"$OUT/setup.log" 2>&1 && install_credits regress >>"$OUT/install.log" 2>&1
REGRESS=$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/regress/pg_regress
(cd "$ROOT" && PGUSER=supabase_admin "$REGRESS" --use-existing --dbname=regress --host="$PGHOST" --port="$SPORT" \
    --inputdir=. --outputdir="$OUT/regress" --bindir="$PGBIN" \
    00_helpers security_abuse security_client security_delete security_delete_kinds security_hardening security_roles security_supabase \
    >"$OUT/regress.log" 2>&1)
rc=$?
is "$rc" "0" "pg_regress security and client files pass on the Supabase-shaped cluster"
if ((rc != 0)); then sed 's/^/# /' "$OUT/regress.log"; head -300 "$OUT/regress/regression.diffs" 2>/dev/null | sed 's/^/# /'; fi
if [[ -n $fails ]]; then for f in $fails; do grep -v '^ok' "$OUT/pgtap-$f.log" | head -30 | sed 's/^/# /'; done; fi
