-- The hot path compiles CHECK constraints once per backend (src/rows.c) and
-- must still check exactly what the executor checks, on every PostgreSQL
-- major: generated columns (stored: all majors; virtual: 18) and NOT
-- ENFORCED constraints (18) included.  The 18-only cases are skipped on 15
-- and 17, which do not have those features.
BEGIN;
SELECT plan(11);

SELECT current_setting('server_version_num')::int >= 180000 AS pg18 \gset
CREATE TEMP TABLE u AS SELECT gen_random_uuid() AS a;

SELECT ok(credits.open_account(a), 'the first touch opens the account with its signup bonus') FROM u;

-- A stored generated column and a CHECK constraint on it.
ALTER TABLE credits.accounts
    ADD COLUMN test_spare bigint GENERATED ALWAYS AS (balance - 4) STORED,
    ADD CONSTRAINT test_keep_four CHECK (test_spare >= 0);
SELECT lives_ok($$SELECT credits.credits_consume((SELECT a FROM u), 'image', 2)$$,
                'a consume that keeps the stored generated column within its CHECK');
SELECT is(test_spare, 0::bigint, 'the consume maintained the stored generated column')
  FROM credits.accounts WHERE user_id = (SELECT a FROM u);
SELECT throws_ok($$SELECT credits.credits_consume((SELECT a FROM u), 'image', 1)$$, '23514', NULL,
                 'a consume that breaks a CHECK on a stored generated column is refused');
SELECT is(credits.balance(a), 4::bigint, 'the refused consume spent nothing') FROM u;
ALTER TABLE credits.accounts DROP CONSTRAINT test_keep_four, DROP COLUMN test_spare;

-- 18: a NOT ENFORCED constraint is not checked, by the executor nor by us.
SELECT CASE WHEN :'pg18'::bool
    THEN lives_ok($$ALTER TABLE credits.ledger ADD CONSTRAINT test_never CHECK (false) NOT ENFORCED$$,
                  'a NOT ENFORCED constraint that no row satisfies')
    ELSE skip('NOT ENFORCED constraints are new in PostgreSQL 18') END;
SELECT CASE WHEN :'pg18'::bool
    THEN lives_ok($$SELECT credits.credits_consume((SELECT a FROM u), 'image', 1)$$,
                  'a consume is not held to a NOT ENFORCED constraint')
    ELSE skip('NOT ENFORCED constraints are new in PostgreSQL 18') END;
DO $$BEGIN
    IF current_setting('server_version_num')::int >= 180000 THEN
        ALTER TABLE credits.ledger DROP CONSTRAINT test_never;
    END IF;
END$$;

-- 18: a CHECK on a virtual generated column sees the column's value.
SELECT CASE WHEN :'pg18'::bool
    THEN lives_ok($$ALTER TABLE credits.accounts
                        ADD COLUMN test_spare_v bigint GENERATED ALWAYS AS (balance - 2) VIRTUAL,
                        ADD CONSTRAINT test_keep_two CHECK (test_spare_v >= 0)$$,
                  'a CHECK constraint on a virtual generated column')
    ELSE skip('virtual generated columns are new in PostgreSQL 18') END;
SELECT CASE WHEN :'pg18'::bool
    THEN lives_ok($$SELECT credits.credits_consume((SELECT a FROM u), 'image', 1)$$,
                  'a consume that keeps the virtual generated column within its CHECK')
    ELSE skip('virtual generated columns are new in PostgreSQL 18') END;
SELECT CASE WHEN :'pg18'::bool
    THEN throws_ok($$SELECT credits.credits_consume((SELECT a FROM u), 'image', 1)$$, '23514', NULL,
                   'a consume that breaks a CHECK on a virtual generated column is refused')
    ELSE skip('virtual generated columns are new in PostgreSQL 18') END;
SELECT is(credits.balance(a), CASE WHEN :'pg18'::bool THEN 2::bigint ELSE 4::bigint END,
          'the balance counts the consumes that were allowed, and only those') FROM u;

SELECT * FROM finish();
ROLLBACK;
