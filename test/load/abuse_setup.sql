-- Fixture of test/load/abuse.sh: four users of a client role with the
-- attributes of Supabase's `authenticated` (NOLOGIN NOINHERIT, row level
-- security applies), a claimable product whose plan keeps the daily limit,
-- a pack, and the actions of the randomized client.  Expected refusals are
-- returned as values (pgbench 15 aborts a client on any error); every
-- successful consume, claim and deletion is logged in the same transaction,
-- because a deletion removes the ledger the checker would otherwise read.
CREATE EXTENSION IF NOT EXISTS credits;
SELECT credits.grant_roles('abuse_load_client', 'abuse_load_admin');
CREATE SCHEMA abuse;
GRANT USAGE ON SCHEMA abuse TO abuse_load_client;
INSERT INTO credits.plans (name, daily_limit, signup_bonus, rank) VALUES ('plus', 5, 0, 5);
INSERT INTO credits.products (product_id, plan) VALUES ('abuse_plus', 'plus');
INSERT INTO credits.products (product_id, credits) VALUES ('abuse_pack', 50);
CREATE TABLE abuse.users AS
    SELECT n, ('ab05e000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid AS id
      FROM generate_series(1, 4) n;
SELECT count(credits.open_account(id)) AS opened FROM abuse.users;
CREATE TABLE abuse.log (user_id uuid NOT NULL, action text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
GRANT INSERT ON abuse.log TO abuse_load_client;
GRANT SELECT ON abuse.users TO abuse_load_client;
-- Zones whose local midnight has just passed (the attack) and others.
CREATE TABLE abuse.zones AS
    SELECT row_number() OVER (ORDER BY z.name) AS n, z.name
      FROM pg_timezone_names z
     WHERE z.name IN ('UTC', 'Pacific/Kiritimati', 'Pacific/Niue', 'Asia/Kolkata', 'Asia/Kathmandu',
                      'Europe/Paris', 'America/New_York', 'America/St_Johns', 'Australia/Eucla',
                      'Pacific/Chatham', 'Asia/Tokyo', 'America/Los_Angeles');
GRANT SELECT ON abuse.zones TO abuse_load_client;

-- One request of user n as the client (claims and role set by the caller).
CREATE FUNCTION abuse.act(a int, z int, t int) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    me uuid := credits.current_user_id();
    r jsonb;
BEGIN
    IF a <= 60 THEN
        PERFORM credits.consume('image');
        INSERT INTO abuse.log (user_id, action) VALUES (me, 'consume');
    ELSIF a <= 72 THEN
        PERFORM credits.set_my_timezone((SELECT name FROM abuse.zones WHERE n = 1 + z % (SELECT count(*) FROM abuse.zones)));
        INSERT INTO abuse.log (user_id, action) VALUES (me, 'timezone');
    ELSIF a <= 82 THEN
        r := credits.claim_pending_purchase('abuse_plus', 'claim-' || t);
        INSERT INTO abuse.log (user_id, action)
        VALUES (me, 'claim ' || (r ->> 'status') || coalesce(' (' || (r ->> 'reason') || ')', ''));
    ELSIF a <= 88 THEN
        IF (SELECT deleted FROM credits.delete_my_account()) THEN
            INSERT INTO abuse.log (user_id, action) VALUES (me, 'delete');
        END IF;
    ELSE
        PERFORM credits.my_balance(), credits.my_daily_available(), (SELECT count(*) FROM credits.my_account);
    END IF;
    RETURN 'ok';
EXCEPTION WHEN SQLSTATE 'PT402' OR SQLSTATE 'PT409' OR SQLSTATE 'PT429' OR SQLSTATE '40001' THEN
    RETURN SQLSTATE;
END
$$;
GRANT EXECUTE ON FUNCTION abuse.act(int, int, int) TO abuse_load_client;

-- The store: packs bought from a small pool of transaction ids (replays and
-- transactions reported for another user are frequent).
CREATE FUNCTION abuse.buy(n int, t int) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM credits.apply_purchase((SELECT id FROM abuse.users u WHERE u.n = buy.n), 'abuse_pack',
                                   'pack-' || t, 'app_store', now());
    RETURN 'ok';
EXCEPTION WHEN SQLSTATE 'PT409' OR SQLSTATE '40001' THEN
    RETURN SQLSTATE;
END
$$;
