-- Abuse of the client surface (issue 12), tried as a Supabase client would:
-- the role `authenticated` with Supabase's attributes, the JWT claims set per
-- request and transaction-local (postgrest.as_user, test/fixtures/supabase.sql),
-- only the documented client functions.  Every attack must fail and leave the
-- books right.  The whole file runs in one transaction that rolls back, so
-- now() is one instant: "later the same day" is the same day.
\set mallory '5ec0ab05-0000-4000-8000-000000000001'
\set victim  '5ec0ab05-0000-4000-8000-000000000002'
\set anna    '5ec0ab05-0000-4000-8000-000000000003'

BEGIN;
\set ECHO none
\i test/fixtures/supabase.sql
\set ECHO all
SELECT credits.grant_roles('authenticated', 'service_role');
-- Other files of the suite may have deleted accounts before: count from here.
SELECT count(*) AS records_before FROM credits.deletion_records \gset
SELECT count(*) AS tombstones_before, coalesce(sum(entries), 0) AS entries_before,
       coalesce(sum(granted), 0) AS granted_before, coalesce(sum(spent), 0) AS spent_before
  FROM credits.deleted_accounts \gset
-- The error of a statement, as a client sees it (its own savepoint).
CREATE FUNCTION pg_temp.err(statement text, OUT state text, OUT message text, OUT detail text)
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    state := 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
END
$$;
-- The books: no discrepancy anywhere, and the tombstones add up.
CREATE FUNCTION pg_temp.books() RETURNS TABLE (discrepancies bigint, tombstones_balance boolean)
LANGUAGE sql AS $$
    SELECT (SELECT count(*) FROM credits.reconcile()),
           (SELECT bool_and(balance = granted - spent + refunded - expired + adjusted)
              FROM credits.deleted_accounts)
$$;
INSERT INTO credits.plans (name, daily_limit, signup_bonus, monthly_allocation)
VALUES ('suspended', 0, 0, 0), ('monthly', 5, 0, 100);
INSERT INTO credits.products (product_id, plan, source) VALUES ('abuse_staff', 'pro', 'admin');
INSERT INTO credits.products (product_id, plan) VALUES ('abuse_pro', 'pro');
INSERT INTO credits.products (product_id, credits) VALUES ('abuse_pack', 50);

-- == Deletion is not a reset ==
-- Mallory signs up (signup bonus 6), uses 3 of her 5 operations, claims a
-- purchase she never made, and deletes her account to start over.
SELECT postgrest.as_user(:'mallory');
SELECT kind, amount, balance, daily_remaining FROM credits.consume('image', idempotency_key => 'm-1');
SELECT kind, amount, balance, daily_remaining FROM credits.consume('image');
SELECT kind, amount, balance, daily_remaining FROM credits.consume('image');
SELECT credits.claim_pending_purchase('abuse_pro', 'fake-1') ->> 'claims_left_today' AS claims_left;
SELECT deleted, entries, granted, spent, balance FROM credits.delete_my_account();
-- She comes back at once: no second signup bonus, the same 2 operations left,
-- the claim still counted, and her idempotency key is simply new.
SELECT credits.my_balance() AS balance, credits.my_daily_available() AS daily_left;
SELECT plan, balance, daily_remaining FROM credits.my_account;
SELECT state, message FROM pg_temp.err($$SELECT credits.consume('image')$$);
SELECT credits.claim_pending_purchase('abuse_pro', 'fake-2') ->> 'claims_left_today' AS claims_left;
-- Deleting again at once is refused (once per credits.deletion_interval).
SELECT state, message FROM pg_temp.err($$SELECT credits.delete_my_account()$$);
SELECT postgrest.end_request();

-- The record of the deletion names nobody: a hash, no user id anywhere.
SELECT count(*) - :records_before AS new_records, bool_and(length(user_hash) = 32) AS sha256,
       bool_and(user_hash <> uuid_send(:'mallory')) AS not_the_id
  FROM credits.deletion_records;
SELECT column_name FROM information_schema.columns
 WHERE table_schema = 'credits' AND table_name = 'deletion_records' AND data_type = 'uuid';

-- An admin suspends Mallory; a deletion does not lift it.  She may delete
-- again after the interval (here: the interval is lifted for the test).
SELECT credits.set_plan(:'mallory', 'suspended');
SET LOCAL credits.deletion_interval = 0;
SELECT postgrest.as_user(:'mallory');
SELECT deleted, granted, balance FROM credits.delete_my_account();
SELECT plan, balance, daily_remaining FROM credits.my_account;
SELECT state, message FROM pg_temp.err($$SELECT credits.consume('image')$$);
SELECT postgrest.end_request();
RESET credits.deletion_interval;
-- One tombstone per user id: the second deletion added to the first.
SELECT count(*) - :tombstones_before AS new_tombstones, sum(entries) - :entries_before AS entries,
       sum(granted) - :granted_before AS granted, sum(spent) - :spent_before AS spent
  FROM credits.deleted_accounts;
SELECT * FROM pg_temp.books();

-- A monthly allocation is given once per month, deletion or not.
SELECT credits.set_plan(:'victim', 'monthly');
SELECT credits.balance(:'victim') AS allocated;
SELECT deleted, granted FROM credits.delete_account(:'victim');
SELECT credits.balance(:'victim') AS after_return, credits.account_status(:'victim') AS status;

-- == Exactly once survives deletion ==
-- A pack bought and a webhook applied before the deletion are not applied
-- again after it: the purchase and the event are kept, anonymized.
SELECT postgrest.as_service();
SELECT kind, amount FROM credits.apply_purchase(:'anna', 'abuse_pack', 'tx-anna-1', 'revenuecat', now());
SELECT credits.apply_revenuecat_event(jsonb_build_object('api_version', '1.0', 'event', jsonb_build_object(
    'id', 'evt-anna-1', 'type', 'INITIAL_PURCHASE', 'app_user_id', :'anna', 'product_id', 'abuse_pro',
    'transaction_id', 'tx-anna-2', 'original_transaction_id', 'tx-anna-2', 'store', 'PLAY_STORE',
    'environment', 'PRODUCTION', 'event_timestamp_ms', (extract(epoch FROM now()) * 1000)::bigint,
    'expiration_at_ms', (extract(epoch FROM now() + interval '30 days') * 1000)::bigint))) ->> 'status' AS webhook;
SELECT postgrest.end_request();
SELECT deleted, granted, balance FROM credits.delete_account(:'anna');
SELECT user_id IS NULL AS anonymized, product_id FROM credits.purchases WHERE transaction_id LIKE 'tx-anna-%' ORDER BY 2;
SELECT user_id IS NULL AS anonymized, event_type FROM credits.store_events WHERE event_id = 'evt-anna-1';
SELECT postgrest.as_service();
SELECT state, message FROM pg_temp.err(format(
    $$SELECT credits.apply_purchase(%L, 'abuse_pack', 'tx-anna-1', 'revenuecat', now())$$, :'anna'));
SELECT credits.apply_revenuecat_event(jsonb_build_object('api_version', '1.0', 'event', jsonb_build_object(
    'id', 'evt-anna-1', 'type', 'INITIAL_PURCHASE', 'app_user_id', :'anna', 'product_id', 'abuse_pro',
    'transaction_id', 'tx-anna-2', 'original_transaction_id', 'tx-anna-2', 'store', 'PLAY_STORE',
    'environment', 'PRODUCTION', 'event_timestamp_ms', (extract(epoch FROM now()) * 1000)::bigint,
    'expiration_at_ms', (extract(epoch FROM now() + interval '30 days') * 1000)::bigint))) ->> 'status' AS webhook_again;
-- A refund of the pack of a deleted account: nothing left to claw back.
SELECT credits.apply_revenuecat_event(jsonb_build_object('api_version', '1.0', 'event', jsonb_build_object(
    'id', 'evt-anna-2', 'type', 'CANCELLATION', 'cancel_reason', 'CUSTOMER_SUPPORT', 'app_user_id', :'anna',
    'product_id', 'abuse_pack', 'transaction_id', 'tx-anna-1', 'original_transaction_id', 'tx-anna-1',
    'store', 'APP_STORE', 'environment', 'PRODUCTION',
    'event_timestamp_ms', (extract(epoch FROM now()) * 1000)::bigint))) - 'event_id' AS refund;
SELECT postgrest.end_request();
SELECT credits.balance(:'anna') AS anna_balance;
SELECT * FROM pg_temp.books();

-- delete_account finds every row of a user through an index on user_id.
SELECT c.relname AS without_user_index
  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'user_id' AND NOT a.attisdropped
 WHERE c.relnamespace = 'credits'::regnamespace AND c.relkind = 'r'
   AND NOT EXISTS (SELECT 1 FROM pg_index i
                    WHERE i.indrelid = c.oid AND i.indkey[0] = a.attnum
                      AND coalesce(pg_get_expr(i.indpred, i.indrelid), '(user_id IS NOT NULL)')
                          = '(user_id IS NOT NULL)');

-- == Claims ==
-- A product only an admin grants cannot be claimed: the answer of an unknown product.
SELECT postgrest.as_user(:'victim');
SELECT state, message FROM pg_temp.err($$SELECT credits.claim_pending_purchase('abuse_staff', 'tx-x')$$);
SELECT state, message FROM pg_temp.err($$SELECT credits.claim_pending_purchase('abuse_nothing', 'tx-x')$$);
SELECT postgrest.end_request();

-- == Time zones ==
-- The victim (a fresh day, 5 operations) uses 4, then moves to a zone whose
-- midnight has just passed: the count is kept, the zone waits for midnight.
SELECT credits.set_plan(:'victim', 'free');
SELECT credits.grant_credits(:'victim', 10, 'pack') IS NOT NULL AS topped_up;
SELECT postgrest.as_user(:'victim');
SELECT count(*) AS consumed FROM generate_series(1, 4) g, LATERAL credits.consume('image', 1 + 0 * g);
SELECT credits.my_daily_available() AS before_change;
SELECT credits.set_my_timezone(z.name)
  FROM pg_timezone_names z WHERE z.name IN ('Pacific/Kiritimati', 'Pacific/Niue', 'Asia/Tokyo',
                                          'Europe/Paris', 'America/New_York', 'America/Los_Angeles')
 ORDER BY (now() AT TIME ZONE z.name)::time LIMIT 1;
SELECT credits.my_daily_available() AS after_change, timezone = 'UTC' AS zone_in_effect_unchanged FROM credits.my_account;
-- A second change the same day is refused.
SELECT state, message FROM pg_temp.err($$SELECT credits.set_my_timezone('Asia/Tokyo')$$);
SELECT state, message FROM pg_temp.err($$SELECT credits.consume('image')$$);
SELECT state, message FROM pg_temp.err($$SELECT credits.consume('image')$$);
SELECT postgrest.end_request();
-- When the next local midnight comes (simulated: the change's time moved
-- into the past), the new zone's day counts what the ledger has in it.
UPDATE credits.accounts SET timezone_from = now() - interval '1 minute' WHERE user_id = :'victim';
SELECT credits.daily_available(:'victim') = 5 - credits.day_count_from_ledger(:'victim')
       - (SELECT count(*) FROM credits.ledger WHERE user_id = :'victim' AND day_ops IS NOT NULL
             AND created_at >= ((now() AT TIME ZONE a.timezone_next)::date::timestamp AT TIME ZONE a.timezone_next)
             AND created_at < ((now() AT TIME ZONE a.timezone)::date::timestamp AT TIME ZONE a.timezone))
         AS read_counts_the_new_day
  FROM credits.accounts a WHERE a.user_id = :'victim';
SELECT credits.grant_credits(:'victim', 1, 'touch') IS NOT NULL AS touched;
SELECT timezone <> 'UTC' AS switched, timezone_next FROM credits.accounts WHERE user_id = :'victim';
SELECT * FROM pg_temp.books();

-- == Floods ==
-- A plan that charges nothing (pro) comes with a rate limit: the 21st
-- request at once is refused, so a client cannot fill the ledger for free.
\set flood '5ec0ab05-0000-4000-8000-000000000004'
SELECT credits.set_plan(:'flood', 'pro');
SELECT postgrest.as_user(:'flood');
SELECT r.state, count(*) FROM generate_series(1, 25) g,
       LATERAL pg_temp.err(format($$SELECT credits.consume('image', reference => 'r%s')$$, g)) r
 GROUP BY 1 ORDER BY 1;
-- The client path caps key, reference and metadata tighter than the admin path.
SELECT s.label, e.state, e.detail
  FROM (VALUES ('key 200', format($$SELECT credits.consume('image', idempotency_key => %L)$$, repeat('k', 200))),
               ('reference 200', format($$SELECT credits.consume('image', reference => %L)$$, repeat('r', 200))),
               ('metadata 2 KiB', format($$SELECT credits.consume('image', metadata => %L)$$,
                                         jsonb_build_object('x', repeat('m', 2000)))),
               ('transaction_id 200', format($$SELECT credits.claim_pending_purchase('abuse_pro', %L)$$, repeat('t', 200)))
       ) AS s(label, stmt), LATERAL pg_temp.err(s.stmt) e;
SELECT postgrest.end_request();
SELECT postgrest.as_service();
-- (the same sizes pass on the admin path)
SELECT e.state FROM pg_temp.err(format($$SELECT credits.grant_credits(%L, 1, 'support', %L, NULL, %L, %L)$$,
       :'mallory', repeat('k', 200), repeat('r', 200), jsonb_build_object('x', repeat('m', 2000)))) e;
SELECT postgrest.end_request();

-- == Anonymous sign-ins ==
-- Every anonymous session is a new user id: no signup bonus until the
-- account is linked to an identity.
\set anon1 '5ec0ab05-0000-4000-8000-000000000005'
SELECT postgrest.as_role('authenticated', jsonb_build_object('sub', :'anon1', 'role', 'authenticated',
                                                             'is_anonymous', true));
SELECT credits.my_balance() AS balance_read;
-- (a first write creates the account; a consume would need credits)
SELECT credits.set_my_timezone('Europe/Paris');
SELECT state, message FROM pg_temp.err($$SELECT credits.consume('image')$$);
SELECT credits.my_balance() AS balance, credits.my_daily_available() AS daily_left;
SELECT postgrest.end_request();
SELECT signup_bonus_due FROM credits.accounts WHERE user_id = :'anon1';
-- The user links an email: the next request of theirs (is_anonymous false) gets the bonus once.
SELECT postgrest.as_user(:'anon1');
SELECT credits.my_balance() AS balance_read;
SELECT kind, amount, balance FROM credits.consume('image');
SELECT kind, amount, reason FROM credits.my_history() ORDER BY id;
SELECT postgrest.end_request();
-- On Supabase, linking flips auth.users.is_anonymous (a column of the fixture, as on Supabase); the trigger grants it.
SELECT credits.attach_supabase_auth();
\set anon2 '5ec0ab05-0000-4000-8000-000000000006'
SET LOCAL ROLE supabase_auth_admin;
INSERT INTO auth.users (id, is_anonymous) VALUES (:'anon2', true);
RESET ROLE;
SELECT count(*) AS accounts_at_anonymous_signup FROM credits.accounts WHERE user_id = :'anon2';
SELECT postgrest.as_role('authenticated', jsonb_build_object('sub', :'anon2', 'role', 'authenticated',
                                                             'is_anonymous', true));
SELECT credits.set_my_timezone('Europe/Paris');
SELECT credits.my_balance() AS balance;
SELECT postgrest.end_request();
SET LOCAL ROLE supabase_auth_admin;
UPDATE auth.users SET is_anonymous = false, email = 'anon2@example.com' WHERE id = :'anon2';
UPDATE auth.users SET email = 'anon2+again@example.com' WHERE id = :'anon2';
RESET ROLE;
SELECT kind, amount, reason FROM credits.ledger WHERE user_id = :'anon2' ORDER BY id;
SELECT credits.grant_withheld_bonus(:'anon2') AS granted_again;
SELECT credits.detach_supabase_auth();
SELECT * FROM pg_temp.books();

-- == Leaks and hostile text ==
SELECT credits.grant_credits(:'anna', 10, 'pack') IS NOT NULL AS topped_up;
SELECT postgrest.as_user(:'anna');
SELECT s.label, e.state, e.message
  FROM (VALUES ('NEL U+0085', 'k' || chr(133)), ('RLO U+202E', 'k' || chr(8238) || 'gpj.exe'),
               ('ZWSP U+200B', 'k' || chr(8203)), ('tag U+E0041', 'k' || chr(917569)),
               ('ESC', 'k' || chr(27)), ('plain', 'k-plain é')) AS s(label, key),
       LATERAL pg_temp.err(format($$SELECT credits.consume('image', idempotency_key => %L)$$, s.key)) e;
SELECT state, message FROM pg_temp.err(format($$SELECT credits.claim_pending_purchase('abuse_pro', %L)$$, 'tx' || chr(8238)));
-- A reference with escape sequences is stored as data; the admin's report escapes it.
SELECT kind FROM credits.consume('image', reference => E'job\n#1 2026 grant +1000000 ' || chr(27) || '[2J' || chr(8238));
SELECT postgrest.end_request();
SELECT position(chr(27) IN s) = 0 AS no_escape, position(chr(8238) IN s) = 0 AS no_override,
       strpos(s, 'ref job\u{000A}#1 2026 grant +1000000 \u{001B}[2J\u{202E}') > 0 AS escaped
  FROM credits.account_summary(:'anna') s;
SELECT credits.printable(E'a\tb' || chr(133) || chr(173) || 'é') AS printable;

-- Defense in depth: EXECUTE on every function granted to the client role by
-- mistake (a common tutorial line).  The service functions still refuse a
-- client's request (claims role authenticated, running as that role); the
-- readers answer about the caller's own account only.
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA credits TO authenticated;
SELECT postgrest.as_user(:'anna');
SELECT s.label, e.state, e.message
  FROM (VALUES ('grant_credits', format($$SELECT credits.grant_credits(%L, 1000000, 'free money')$$, :'anna')),
               ('credits_consume of another', format($$SELECT credits.credits_consume(%L, 'image')$$, :'victim')),
               ('set_plan', format($$SELECT credits.set_plan(%L, 'pro')$$, :'anna')),
               ('delete_account of another', format($$SELECT credits.delete_account(%L)$$, :'victim')),
               ('apply_purchase', format($$SELECT credits.apply_purchase(%L, 'abuse_pack', 'free-1', 'app_store', now())$$, :'anna')),
               ('balance of another', format($$SELECT credits.balance(%L)$$, :'victim')),
               ('balance of her own', format($$SELECT credits.balance(%L)$$, :'anna')),
               ('reconcile of everyone', $$SELECT count(*) FROM credits.reconcile()$$),
               ('reconcile_checks of everyone', $$SELECT count(*) FROM credits.reconcile_checks()$$),
               ('reconcile of another', format($$SELECT count(*) FROM credits.reconcile(%L)$$, :'victim')),
               ('account_summary of another', format($$SELECT credits.account_summary(%L)$$, :'victim')),
               ('day_count_from_ledger of another', format($$SELECT credits.day_count_from_ledger(%L)$$, :'victim')),
               ('reconcile of her own', format($$SELECT count(*) FROM credits.reconcile(%L)$$, :'anna')),
               ('account_summary of her own', format($$SELECT length(credits.account_summary(%L)) > 0$$, :'anna'))
       ) AS s(label, stmt), LATERAL pg_temp.err(s.stmt) e;
SELECT postgrest.end_request();
SELECT credits.grant_roles('authenticated', 'service_role');
SELECT * FROM pg_temp.books();

-- grant_roles refuses a client role that can make itself admin: CREATEROLE
-- of its own, or of a role it can become.
CREATE ROLE regress_abuse_client NOLOGIN CREATEROLE;
SELECT state, message FROM pg_temp.err($$SELECT credits.grant_roles('regress_abuse_client', 'service_role')$$);
ALTER ROLE regress_abuse_client NOCREATEROLE;
CREATE ROLE regress_abuse_helper NOLOGIN CREATEROLE;
GRANT regress_abuse_helper TO regress_abuse_client;
SELECT state, message FROM pg_temp.err($$SELECT credits.grant_roles('regress_abuse_client', 'service_role')$$);
REVOKE regress_abuse_helper FROM regress_abuse_client;
SELECT state, message FROM pg_temp.err($$SELECT credits.grant_roles('regress_abuse_client', 'service_role')$$);
ROLLBACK;
