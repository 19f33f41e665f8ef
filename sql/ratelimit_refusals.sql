-- Every refusal is counted in credits.stats, whichever part raises it: purchase
-- conflicts and claim refusals included.  (That their ERROR lines reach the server
-- log unless credits.quiet_refusals is on is checked by test/load/refusal_log.sh,
-- which reads the log.)
\set u1 '00000000-0000-4000-8000-00000000c101'
\set u2 '00000000-0000-4000-8000-00000000c102'
\set u3 '00000000-0000-4000-8000-00000000c103'

INSERT INTO credits.products (product_id, plan) VALUES ('refusal_sub', 'pro');
INSERT INTO credits.products (product_id, credits) VALUES ('refusal_pack', 10);
INSERT INTO credits.operations (name, cost, max_units) VALUES ('refusal_op', 1, 10);

-- The setting exists, is off by default and only a superuser may change it.
SHOW credits.quiet_refusals;
SELECT context, vartype FROM pg_settings WHERE name = 'credits.quiet_refusals';

-- test.refused(sql): the SQLSTATE of a refused statement, and how many denials
-- credits.stats counted meanwhile under which reason.
CREATE FUNCTION test.refused(stmt text, OUT state text, OUT counted jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    before jsonb;
BEGIN
    SELECT coalesce(jsonb_object_agg(reason, n), '{}') INTO before
      FROM (SELECT reason, sum(denials) AS n FROM credits.stats GROUP BY reason) s;
    state := (test.error_of(stmt)).state;
    SELECT coalesce(jsonb_object_agg(reason, n - coalesce((before->>reason)::bigint, 0)), '{}') INTO counted
      FROM (SELECT reason, sum(denials) AS n FROM credits.stats GROUP BY reason) s
     WHERE n <> coalesce((before->>reason)::bigint, 0);
END
$$;

SELECT credits.stats_reset();

-- A store transaction applied to one user, then to another: purchase_conflict.
SELECT kind FROM credits.apply_purchase(:'u1', 'refusal_pack', 'RF-1', 'app_store', now());
SELECT * FROM test.refused(format($$SELECT credits.apply_purchase(%L, 'refusal_pack', 'RF-1', 'app_store', now())$$, :'u2'));
-- The same transaction for another product: purchase_conflict.
SELECT * FROM test.refused(format($$SELECT credits.apply_purchase(%L, 'refusal_sub', 'RF-1', 'app_store', now())$$, :'u1'));

-- A claim of a transaction the store confirmed for another user answers like an
-- unknown one (no oracle, security_abuse): not a refusal.
SELECT kind FROM credits.apply_purchase(:'u1', 'refusal_sub', 'RF-2', 'app_store', now(), now() + interval '30 days');
SELECT set_config('request.jwt.claims', json_build_object('sub', :'u2', 'role', 'authenticated')::text, false) IS NOT NULL;
SELECT credits.claim_pending_purchase('refusal_sub', 'RF-2')->>'status' AS status;
-- Past the daily number of claims: claim_limit.
SET credits.pending_purchase_daily_limit = 0;
SELECT * FROM test.refused($$SELECT credits.claim_pending_purchase('refusal_sub', 'RF-3')$$);
RESET credits.pending_purchase_daily_limit;
-- A second time zone change within credits.timezone_change_interval: timezone_interval.
SELECT credits.set_my_timezone('Europe/Paris') IS NOT NULL AS changed;
SELECT * FROM test.refused($$SELECT credits.set_my_timezone('Asia/Tokyo')$$);
-- The account deleted again within credits.deletion_interval: deletion_interval.
SELECT deleted FROM credits.delete_my_account();
SELECT * FROM test.refused($$SELECT credits.delete_my_account()$$);
SELECT set_config('request.jwt.claims', '', false) IS NOT NULL;

-- The refusals that were counted before, once more, one denial each.
SELECT kind FROM credits.grant_credits(:'u3', 1, 'start', 'rf-key');
SELECT v.label, r.*
  FROM (VALUES
    ('insufficient', format($$SELECT credits.credits_consume(%L, 'refusal_op', 10)$$, :'u3')),
    ('key conflict', format($$SELECT credits.grant_credits(%L, 2, 'start', 'rf-key')$$, :'u3'))) v(label, stmt),
       LATERAL test.refused(v.stmt) r;

-- Bad input is not a refusal: not counted.
SELECT * FROM test.refused(format($$SELECT credits.grant_credits(%L, -1, 'x')$$, :'u3'));

SELECT reason, operation, denials FROM credits.stats ORDER BY reason, operation;
