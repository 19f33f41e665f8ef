-- credits.reconcile() starts from every user id of the accounts, the
-- ledger, the lots and the holds: a user whose account row is missing (a
-- broken restore) is reported, and so is an extra account row; the user's
-- lots, entries and holds are still checked.
BEGIN;
SELECT plan(9);

CREATE TEMP TABLE u AS SELECT gen_random_uuid() AS a, gen_random_uuid() AS b;

SELECT lives_ok($$SELECT credits.grant_credits((SELECT a FROM u), 10, 'pack')$$, 'a grant');
SELECT lives_ok($$SELECT credits.credits_consume((SELECT a FROM u), 'image', 2)$$, 'a consume');
SELECT lives_ok($$SELECT credits.reserve((SELECT a FROM u), 'image', 1)$$, 'a hold');
SELECT is_empty('SELECT * FROM credits.reconcile((SELECT a FROM u))', 'the books balance');

-- A restore that lost the account row (superuser: row level security does not apply).
DELETE FROM credits.accounts WHERE user_id = (SELECT a FROM u);
SELECT results_eq(
    $$SELECT item, object_id, cached, derived FROM credits.reconcile((SELECT a FROM u))$$,
    $$VALUES ('account'::text, NULL::bigint, 0::bigint, 1::bigint)$$,
    'a missing account row is reported (its ledger, lot and hold rows still agree)');
SELECT results_eq(
    $$SELECT user_id, item FROM credits.reconcile() WHERE item = 'account'$$,
    $$SELECT a, 'account'::text FROM u$$,
    'and by the check of every user');

-- The lots of the user without an account are still checked.
UPDATE credits.lots SET remaining = remaining + 1
 WHERE id = (SELECT min(id) FROM credits.lots WHERE user_id = (SELECT a FROM u));
SELECT results_eq(
    $$SELECT item, cached - derived FROM credits.reconcile((SELECT a FROM u)) ORDER BY item$$,
    $$VALUES ('account'::text, -1::bigint), ('lot', 1)$$,
    'a drifted lot of that user is reported too');

-- A restore without the primary key: two account rows for one user.
SELECT ok(credits.open_account(b), 'a second user, opened') FROM u;
ALTER TABLE credits.accounts DROP CONSTRAINT accounts_pkey;
INSERT INTO credits.accounts SELECT * FROM credits.accounts WHERE user_id = (SELECT b FROM u);
SELECT results_eq(
    $$SELECT item, cached, derived FROM credits.reconcile((SELECT b FROM u))$$,
    $$VALUES ('account'::text, 2::bigint, 1::bigint)$$,
    'an extra account row is reported');

SELECT * FROM finish();
ROLLBACK;
