-- credits.reconcile(): the books balance after every core scenario, and a
-- tampered cached number is caught (so the check can fail).
BEGIN;
SELECT plan(17);

CREATE TEMP TABLE u AS SELECT gen_random_uuid() AS a, gen_random_uuid() AS b, gen_random_uuid() AS c;

SELECT is(credits.balance(a), 6::bigint, 'a first touch grants the signup bonus') FROM u;
SELECT is_empty('SELECT * FROM credits.reconcile((SELECT a FROM u))', 'books balance after account creation');

SELECT lives_ok($$SELECT credits.credits_consume((SELECT a FROM u), 'image', 2)$$, 'consume');
SELECT is_empty('SELECT * FROM credits.reconcile((SELECT a FROM u))', 'books balance after a consume');

SELECT lives_ok($$SELECT credits.grant_credits((SELECT a FROM u), 7, 'pack', 'g-1', now() + interval '1 hour')$$, 'expiring grant');
SELECT lives_ok($$SELECT credits.grant_credits((SELECT a FROM u), 7, 'pack', 'g-1', (SELECT max(expires_at) FROM credits.lots WHERE user_id = (SELECT a FROM u)))$$, 'grant replay');
SELECT is_empty('SELECT * FROM credits.reconcile((SELECT a FROM u))', 'books balance after a grant and its replay');

SELECT lives_ok($$SELECT credits.credits_consume((SELECT a FROM u), 'image', 9)$$, 'consume across two lots');
SELECT is_empty('SELECT * FROM credits.reconcile((SELECT a FROM u))', 'books balance after spending across lots');

SELECT throws_ok($$SELECT credits.credits_consume((SELECT a FROM u), 'video_second', 10)$$, 'PT402', 'not enough credits', 'a refused consume');
SELECT is_empty('SELECT * FROM credits.reconcile((SELECT a FROM u))', 'books balance after a refusal');

INSERT INTO credits.plans (name, monthly_allocation) VALUES ('tap_monthly', 50);
SELECT lives_ok($$SELECT credits.set_plan((SELECT b FROM u), 'tap_monthly')$$, 'plan with a monthly allocation');
SELECT is(credits.balance(b), 56::bigint, 'allocation counted from the next touch') FROM u;
SELECT lives_ok($$SELECT credits.set_timezone((SELECT b FROM u), 'America/New_York')$$, 'time zone change re-derives today''s count');
SELECT is_empty('SELECT * FROM credits.reconcile()', 'books balance for every account');

-- Tampering with a cached number is detected.
SELECT ok(credits.open_account(c), 'a third account, opened') FROM u;
UPDATE credits.accounts SET balance = balance + 1 WHERE user_id = (SELECT c FROM u);
SELECT results_eq(
    $$SELECT item, cached - derived FROM credits.reconcile((SELECT c FROM u)) ORDER BY item$$,
    $$VALUES ('balance'::text, 1::bigint), ('lots', 1)$$,
    'a drifted balance is reported against the ledger and the lots');

SELECT * FROM finish();
ROLLBACK;
