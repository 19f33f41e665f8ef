-- Idempotency edges: a keyed grant retried after its expires_at passed, metadata
-- equal as jsonb, and keys stored by 1.0 (request_hash of the metadata's bytes).
\set u1 '00000000-0000-4000-8000-00000000b101'
\set u2 '00000000-0000-4000-8000-00000000b102'
\set u3 '00000000-0000-4000-8000-00000000b103'

-- ==== 1. A retry after expires_at has passed gets its receipt, not 22023.
SELECT entry_id AS first_id, clock_timestamp() + interval '200 ms' AS soon
  FROM credits.grant_credits(:'u1', 5, 'short promo', 'promo-short') \gset
SELECT kind, amount, replayed
  FROM credits.grant_credits(:'u1', 7, 'flash promo', 'flash-1', :'soon');
SELECT id AS flash_id FROM credits.ledger WHERE user_id = :'u1' AND idempotency_key = 'flash-1' \gset
SELECT pg_sleep(0.3);
SELECT :'soon'::timestamptz < now() AS expiry_passed;
SELECT entry_id = :flash_id AS same_entry, kind, amount, replayed
  FROM credits.grant_credits(:'u1', 7, 'flash promo', 'flash-1', :'soon');
-- Other parameters under that key: the conflict, not the expiry, is reported.
SELECT state, detail->>'original_entry_id' = :'flash_id' AS names_original
  FROM test.error_of(format($$SELECT credits.grant_credits(%L, 8, 'flash promo', 'flash-1', %L)$$, :'u1', :'soon'));
-- A new key with a past expires_at is still bad input.
SELECT state, detail->>'field' AS field
  FROM test.error_of(format($$SELECT credits.grant_credits(%L, 7, 'flash promo', 'flash-2', %L)$$, :'u1', :'soon'));
SELECT credits.balance(:'u1') AS balance_without_the_expired_7;

-- ==== 2. Metadata equal as jsonb is the same request.
SELECT kind, replayed FROM credits.grant_credits(:'u2', 3, 'meta', 'meta-1',
    metadata => '{"a": 1.0, "b": [1, 2.50], "c": {"x": true, "y": null}, "s": "1"}');
SELECT v.label, r.replayed
  FROM (VALUES
    ('1 for 1.0, key order, spaces', '{ "s":"1", "c": {"y": null, "x": true}, "b": [1.00, 2.5], "a": 1 }'),
    ('exponent',                     '{"a": 1e0, "b": [0.1e1, 25e-1], "c": {"x": true, "y": null}, "s": "1"}'),
    ('duplicate key, last wins',     '{"a": 7, "a": 1, "b": [1, 2.5], "c": {"x": true, "y": null}, "s": "1"}')) v(label, m),
       LATERAL credits.grant_credits(:'u2', 3, 'meta', 'meta-1', metadata => v.m::jsonb) r;
-- Different as jsonb: a conflict.
SELECT v.label, e.state
  FROM (VALUES
    ('another number',   '{"a": 1.01, "b": [1, 2.5], "c": {"x": true, "y": null}, "s": "1"}'),
    ('string for number','{"a": "1", "b": [1, 2.5], "c": {"x": true, "y": null}, "s": "1"}'),
    ('number for string','{"a": 1, "b": [1, 2.5], "c": {"x": true, "y": null}, "s": 1}'),
    ('array order',      '{"a": 1, "b": [2.5, 1], "c": {"x": true, "y": null}, "s": "1"}'),
    ('nesting',          '{"a": 1, "b": [1, [2.5]], "c": {"x": true, "y": null}, "s": "1"}'),
    ('null for false',   '{"a": 1, "b": [1, 2.5], "c": {"x": true, "y": false}, "s": "1"}'),
    ('key moved',        '{"a": 1, "b": [1, 2.5], "c": {"x": true}, "y": null, "s": "1"}'),
    ('no metadata',      NULL)) v(label, m),
       LATERAL test.error_of(format($$SELECT credits.grant_credits(%L, 3, 'meta', 'meta-1', metadata => %L::jsonb)$$, :'u2', v.m)) e;
-- consume and reserve fingerprint metadata the same way.
SELECT replayed FROM credits.credits_consume(:'u2', 'image', 1, 'meta-2', NULL, '{"n": 2.0}');
SELECT replayed FROM credits.credits_consume(:'u2', 'image', 1, 'meta-2', NULL, '{"n": 2}');
SELECT replayed FROM credits.reserve(:'u2', 'image', 1, 'meta-3', NULL, '{"n": [0.50]}');
SELECT replayed FROM credits.reserve(:'u2', 'image', 1, 'meta-3', NULL, '{"n": [0.5]}');
SELECT count(*) AS entries FROM credits.ledger WHERE user_id = :'u2';

-- ==== 3. Keys stored by 1.0 still replay after the upgrade.
-- 1.0 hashed the metadata's bytes; these are the request_hash values 1.0
-- wrote for exactly these requests (recorded from a build of tag v1.0).
-- The rows are given those values as a 1.0 install would have left them.
SELECT replayed FROM credits.grant_credits(:'u3', 5, 'legacy', 'legacy-1', NULL, NULL, '{"a": 1.0, "b": [1, 2.50]}');
SELECT replayed FROM credits.credits_consume(:'u3', 'image', 1, 'legacy-2', NULL, '{"a": 1.0, "b": [1, 2.50]}');
SET session_replication_role = replica;   -- lets the test rewrite two ledger rows
UPDATE credits.ledger SET request_hash = -1486760110134464148 WHERE user_id = :'u3' AND idempotency_key = 'legacy-1';
UPDATE credits.ledger SET request_hash = -3278359556734200521 WHERE user_id = :'u3' AND idempotency_key = 'legacy-2';
RESET session_replication_role;
SELECT replayed FROM credits.grant_credits(:'u3', 5, 'legacy', 'legacy-1', NULL, NULL, '{"a": 1.0, "b": [1, 2.50]}');
SELECT replayed FROM credits.credits_consume(:'u3', 'image', 1, 'legacy-2', NULL, '{"a": 1.0, "b": [1, 2.50]}');
-- A 1.0 row only knows the bytes it was sent: an equal but differently written
-- retry of it is a conflict, as it was in 1.0.
SELECT state FROM test.error_of(format($$SELECT credits.grant_credits(%L, 5, 'legacy', 'legacy-1', NULL, NULL, '{"a": 1, "b": [1, 2.5]}')$$, :'u3'));
SELECT state FROM test.error_of(format($$SELECT credits.grant_credits(%L, 6, 'legacy', 'legacy-1', NULL, NULL, '{"a": 1.0, "b": [1, 2.50]}')$$, :'u3'));
