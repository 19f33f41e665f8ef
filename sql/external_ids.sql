-- credits.user_uuid(): user ids of any identity system as account uuids, the same in
-- every version and every language (README "User ids" computes them in JS and Python).

-- Pinned values: a change here gives existing users new accounts.
SELECT id, credits.user_uuid(id) AS account
  FROM (VALUES ('abc'), ('user_2NNEqL2nrIRdJ194ndJqAHwEfxC'), ('auth0|507f1f77bcf86cd799439011'),
               ('Zr3kQ9xWb1mN4pL7vT2yC8dF'), ('é'), ('$RCAnonymousID:0f9e8d7c6b5a49382716a5b4c3d2e1f0')) AS s(id);
-- Version 5, RFC 9562 variant, in the namespace uuid5(NAMESPACE_URL, 'credits:user_uuid').
SELECT bool_and(substr(credits.user_uuid('u' || g)::text, 15, 1) = '5') AS version_5,
       bool_and(substr(credits.user_uuid('u' || g)::text, 20, 1) IN ('8', '9', 'a', 'b')) AS variant_rfc
  FROM generate_series(1, 200) g;
-- A uuid in any form uuid_in accepts is itself; anything else is hashed.
SELECT id, credits.user_uuid(id) AS account, credits.user_uuid(id) = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11' AS itself
  FROM (VALUES ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'), ('A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'),
               ('{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}'), ('a0eebc999c0b4ef8bb6d6bb9bd380a11'),
               ('a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11'),
               ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1'), ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-'),
               ('{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'), ('a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11'),
               (' a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')) AS s(id);
SELECT credits.user_uuid(NULL) IS NULL AS null_is_null;
SELECT * FROM test.err($$SELECT credits.user_uuid('')$$);
SELECT (test.error_of(format('SELECT credits.user_uuid(%L)', repeat('x', 256)))).state AS too_long,
       credits.user_uuid(repeat('x', 255)) IS NOT NULL AS longest;

-- ==== A JWT whose sub is not a uuid (Better Auth, Clerk, Firebase) ====
CREATE ROLE ext_client NOLOGIN;
CREATE ROLE ext_admin NOLOGIN;
SELECT credits.grant_roles('ext_client', 'ext_admin');
GRANT USAGE ON SCHEMA test TO ext_client;
BEGIN;
SET LOCAL ROLE ext_client;
SELECT set_config('request.jwt.claims', '{"sub": "user_2NNEqL2nrIRdJ194ndJqAHwEfxC", "role": "authenticated"}', true);
-- By default only uuids are users, as before.
SELECT * FROM test.err('SELECT credits.current_user_id()');
SELECT credits.current_user_id_or_null() IS NULL AS nobody;
-- With credits.external_user_ids on, the sub maps as user_uuid() maps it.
SET LOCAL credits.external_user_ids = on;
SELECT credits.current_user_id() = '9c4fb8e5-7685-5cc6-9817-aa6a4b43f10f' AS mapped;  -- user_uuid() of the sub, above
SELECT kind, amount, balance FROM credits.consume('image');
SELECT balance FROM credits.my_account;
-- A uuid sub is still itself.
SELECT set_config('request.jwt.claims', '{"sub": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}', true);
SELECT credits.current_user_id();
ROLLBACK;

-- ==== RevenueCat: an app_user_id that is not a uuid maps the same way ====
INSERT INTO credits.products (product_id, credits) VALUES ('ext_rc_pack', 10);
SELECT r ->> 'status' AS status, r ->> 'user_id' = credits.user_uuid('rc-alias-42')::text AS mapped, r ->> 'credits' AS credits
  FROM credits.apply_revenuecat_event(jsonb_build_object('api_version', '1.0', 'event', jsonb_build_object(
           'id', 'ext-rc-1', 'type', 'NON_RENEWING_PURCHASE', 'app_user_id', 'rc-alias-42',
           'product_id', 'ext_rc_pack', 'transaction_id', 'ext-rc-t1',
           'event_timestamp_ms', (extract(epoch FROM now()) * 1000)::bigint))) r;
SELECT balance FROM credits.account_status(credits.user_uuid('rc-alias-42'));
-- Anonymous RevenueCat ids are not the app's users: the event is kept until one is linked to a user.
SELECT r ->> 'status' AS status, r ->> 'reason' AS reason, r ->> 'kept' AS kept
  FROM credits.apply_revenuecat_event('{"api_version": "1.0", "event": {"id": "ext-rc-2", "type": "NON_RENEWING_PURCHASE", "app_user_id": "$RCAnonymousID:0f9e", "product_id": "ext_rc_pack", "transaction_id": "t2", "event_timestamp_ms": 1}}') r;
DELETE FROM credits.webhook_events WHERE event_id = 'ext-rc-2';

SELECT * FROM credits.reconcile();
DELETE FROM credits.products WHERE product_id = 'ext_rc_pack';
DROP OWNED BY ext_client, ext_admin;
DROP ROLE ext_client, ext_admin;
