-- Users for standby_reads.sh, each with one kind of lazy maintenance due a
-- second after this script ends ("all" with every kind), and reads(), which
-- calls every read function for a user (the client ones with its JWT claims).
INSERT INTO credits.plans (name, daily_limit, signup_bonus, rank) VALUES
    ('standby_monthly', 5, 6, 0), ('standby_plus', 50, 0, 1), ('standby_max', 500, 0, 2);
INSERT INTO credits.products (product_id, plan) VALUES
    ('standby_plus_monthly', 'standby_plus'), ('standby_max_monthly', 'standby_max');

CREATE TABLE users (name text PRIMARY KEY, id uuid NOT NULL DEFAULT gen_random_uuid());
INSERT INTO users (name) VALUES ('new'), ('lot'), ('hold'), ('month'), ('ent'), ('all');

CREATE FUNCTION reads(u uuid)
RETURNS TABLE (balance bigint, daily bigint, plan text, my_balance bigint, my_daily bigint,
               view_plan text, view_balance bigint, view_daily bigint, usage bigint)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('request.jwt.claims', json_build_object('sub', u, 'role', 'authenticated')::text, true);
    RETURN QUERY SELECT credits.balance(u), credits.daily_available(u), (credits.account_status(u)).plan,
        credits.my_balance(), credits.my_daily_available(), m.plan, m.balance, m.daily_remaining,
        (SELECT coalesce(sum(operations), 0)::bigint FROM credits.my_usage())
      FROM credits.my_account m;
    PERFORM set_config('request.jwt.claims', '', true);
END
$$;

SELECT credits.open_account(id) FROM users WHERE name IN ('lot', 'all');
SELECT r.amount FROM users, credits.credits_consume(id, 'image') r WHERE name IN ('lot', 'all');
SELECT r.amount FROM users, credits.grant_credits(id, 4, 'flash', expires_at => clock_timestamp() + interval '1 second') r
 WHERE name IN ('lot', 'all');
SET credits.hold_timeout = 1;
SELECT r.kind FROM users, credits.reserve(id, 'image', 2) r WHERE name IN ('hold', 'all');
RESET credits.hold_timeout;
SELECT credits.set_plan(id, 'standby_monthly') FROM users WHERE name IN ('month', 'all');
UPDATE credits.plans SET monthly_allocation = 100 WHERE name = 'standby_monthly';
SELECT r.kind FROM users, credits.apply_purchase(id, 'standby_plus_monthly', 'standby-plus-' || name, 'stripe', now(), now() + interval '30 days') r
 WHERE name IN ('ent', 'all');
SELECT r.kind FROM users, credits.apply_purchase(id, 'standby_max_monthly', 'standby-max-' || name, 'stripe', now(), clock_timestamp() + interval '1 second') r
 WHERE name IN ('ent', 'all');
