-- Load test fixture: 20 users on a plan with a daily limit of 1500, a
-- wrapper that turns the expected refusals into values (pgbench 15 aborts a
-- client on any error), and the checks run after the load.
CREATE EXTENSION IF NOT EXISTS credits;
CREATE SCHEMA load;
INSERT INTO credits.plans (name, daily_limit, signup_bonus) VALUES ('load', 1500, 300);
CREATE TABLE load.users AS
    SELECT n, ('10ad0000-0000-0000-0000-' || lpad(n::text, 12, '0'))::uuid AS id
      FROM generate_series(1, 20) n;
SET credits.default_plan = 'load';
SELECT count(credits.balance(id)) FROM load.users;

-- Expected refusals are returned; anything else (a deadlock, a crash, a
-- broken invariant) is raised and aborts the pgbench client.
CREATE FUNCTION load.try(call text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE call;
    RETURN 'ok';
EXCEPTION WHEN SQLSTATE 'PT402' OR SQLSTATE 'PT409' OR SQLSTATE 'PT429' THEN
    RETURN SQLSTATE;
END
$$;
CREATE FUNCTION load.consume(n int, units int, k int) RETURNS text LANGUAGE sql AS $$
    SELECT load.try(format('SELECT credits.credits_consume(%L, %L, %s, %L)',
                           (SELECT id FROM load.users WHERE users.n = consume.n), 'image', units, 'key-' || k))
$$;
CREATE FUNCTION load.grant_some(n int, amount int) RETURNS text LANGUAGE sql AS $$
    SELECT load.try(format('SELECT credits.grant_credits(%L, %s, %L)',
                           (SELECT id FROM load.users WHERE users.n = grant_some.n), amount, 'load top-up'))
$$;
