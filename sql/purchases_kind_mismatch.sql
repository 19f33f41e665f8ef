-- A store transaction keeps the kind (pack or subscription) it was first
-- applied as.  A pack event whose transaction_id belongs to a subscription
-- (a product remapped, a bad payload) crashed the backend (strcmp on the
-- subscription's NULL refund_state); the reverse credited nothing silently.
-- Both, through the webhook and through apply_purchase, are PT409 now and
-- write nothing.  Everything runs in a transaction that is rolled back.
SET client_min_messages = warning;
SELECT pg_postmaster_start_time() AS started \gset
\set u 'dba0c0de-0000-4000-8000-000000000001'
BEGIN;
INSERT INTO credits.products (product_id, plan) VALUES ('km_sub', 'pro');
INSERT INTO credits.products (product_id, credits) VALUES ('km_pack', 40);
CREATE FUNCTION pg_temp.rc_event(type text, id text, u uuid, txn text, product text) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT jsonb_build_object('api_version', '1.0', 'event', jsonb_build_object(
        'id', id, 'type', type, 'app_user_id', u, 'product_id', product,
        'event_timestamp_ms', (extract(epoch FROM now()) * 1000)::bigint,
        'purchased_at_ms', (extract(epoch FROM now()) * 1000)::bigint,
        'expiration_at_ms', (extract(epoch FROM now() + interval '30 days') * 1000)::bigint,
        'transaction_id', txn, 'original_transaction_id', txn, 'environment', 'PRODUCTION'))
$$;
CREATE FUNCTION pg_temp.refusal(statement text, OUT state text, OUT message text, OUT detail text, OUT hint text)
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    state := 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
                            detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
END $$;

-- A subscription's transaction, then a pack event with the same transaction_id.
SELECT credits.apply_revenuecat_event(pg_temp.rc_event('INITIAL_PURCHASE', 'km-1', :'u', 'KM-S1', 'km_sub'))->>'status' AS subscription;
SELECT * FROM pg_temp.refusal(format('SELECT credits.apply_revenuecat_event(%L)',
    pg_temp.rc_event('NON_RENEWING_PURCHASE', 'km-2', :'u', 'KM-S1', 'km_pack')));
-- A store refund of it as a pack: the same.
SELECT (pg_temp.refusal(format('SELECT credits.apply_revenuecat_event(%L)',
    jsonb_set(pg_temp.rc_event('CANCELLATION', 'km-4', :'u', 'KM-S1', 'km_pack'),
              '{event,cancel_reason}', '"CUSTOMER_SUPPORT"')))).state AS refund;
-- apply_purchase of it as a pack.
SELECT (pg_temp.refusal(format('SELECT credits.apply_purchase(%L, %L, %L, %L, now())',
    :'u', 'km_pack', 'KM-S1', 'revenuecat'))).state AS apply_purchase_pack;

-- A pack's transaction, then a subscription event and apply_purchase with it.
SELECT credits.apply_revenuecat_event(pg_temp.rc_event('NON_RENEWING_PURCHASE', 'km-5', :'u', 'KM-P1', 'km_pack'))->>'status' AS pack;
SELECT (pg_temp.refusal(format('SELECT credits.apply_revenuecat_event(%L)',
    pg_temp.rc_event('INITIAL_PURCHASE', 'km-6', :'u', 'KM-P1', 'km_sub')))).*;
SELECT (pg_temp.refusal(format('SELECT credits.apply_purchase(%L, %L, %L, %L, now())',
    :'u', 'km_sub', 'KM-P1', 'revenuecat'))).state AS apply_purchase_subscription;

-- Nothing was written by the refused calls.
SELECT kind, product_id FROM credits.purchases WHERE user_id = :'u' ORDER BY transaction_id;
SELECT count(*) AS entitlements FROM credits.entitlements WHERE user_id = :'u';
SELECT kind, amount FROM credits.ledger WHERE user_id = :'u' AND kind <> 'grant' ORDER BY id;
SELECT event_id FROM credits.store_events WHERE user_id = :'u' ORDER BY event_id;
ROLLBACK;

SELECT pg_postmaster_start_time() = :'started' AS "server did not restart";
