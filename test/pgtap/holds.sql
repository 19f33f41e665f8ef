-- Holds and refunds: catalog shape, privileges and the refusal codes, as pgTAP.
BEGIN;
SELECT plan(22);

-- the table and its guard rails
SELECT has_table('credits', 'holds', 'credits.holds exists');
SELECT is((SELECT relrowsecurity FROM pg_class WHERE oid = 'credits.holds'::regclass), true,
          'credits.holds has row level security enabled');
SELECT col_is_pk('credits', 'holds', 'id', 'a hold is keyed by its hold entry id');
SELECT is((SELECT count(*)::int FROM information_schema.role_table_grants
            WHERE table_schema = 'credits' AND table_name = 'holds' AND grantee = 'PUBLIC'), 0,
          'PUBLIC has no privilege on credits.holds');

-- the functions: SECURITY DEFINER with a pinned search_path, not executable by PUBLIC
SELECT has_function('credits', 'reserve', ARRAY['uuid', 'text', 'bigint', 'text', 'text', 'jsonb']);
SELECT has_function('credits', 'capture', ARRAY['bigint', 'bigint']);
SELECT has_function('credits', 'release', ARRAY['bigint']);
SELECT has_function('credits', 'expire_holds', ARRAY['integer']);
SELECT has_function('credits', 'refund', ARRAY['bigint', 'bigint', 'text', 'text']);
SELECT is(
    (SELECT count(*)::int FROM pg_proc p
      WHERE p.pronamespace = 'credits'::regnamespace
        AND p.proname IN ('reserve', 'capture', 'release', 'expire_holds', 'refund')
        AND p.prosecdef
        AND p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp']),
    5, 'all five are SECURITY DEFINER with search_path = pg_catalog, pg_temp');
SELECT is(
    (SELECT count(*)::int FROM pg_proc p
      WHERE p.pronamespace = 'credits'::regnamespace
        AND p.proname IN ('reserve', 'capture', 'release', 'expire_holds', 'refund')
        AND has_function_privilege('public', p.oid, 'EXECUTE')),
    0, 'PUBLIC cannot execute any of them');

-- the lifecycle, and its refusals (everything rolls back at the end)
CREATE TEMP TABLE tap_hold AS
SELECT (credits.reserve('00000000-0000-0000-0003-0000000a0001', 'image', 2)).entry_id AS id;
SELECT is((SELECT status::text FROM credits.holds WHERE id = (SELECT id FROM tap_hold)), 'open',
          'reserve opens a hold');
SELECT throws_ok(format('SELECT credits.capture(%s, 3)', (SELECT id FROM tap_hold)), '22023', NULL,
                 'capturing more units than reserved is bad input');
SELECT is((credits.capture((SELECT id FROM tap_hold), 1)).amount, -1::bigint,
          'capture charges the captured units only');
SELECT throws_ok(format('SELECT credits.capture(%s)', (SELECT id FROM tap_hold)), 'PT409', NULL,
                 'a second capture is refused');
SELECT throws_ok(format('SELECT credits.release(%s)', (SELECT id FROM tap_hold)), 'PT409', NULL,
                 'releasing a captured hold is refused');
SELECT throws_ok('SELECT credits.release(-1)', '22023', 'unknown hold', 'an unknown hold is bad input');
SELECT throws_ok(format('SELECT credits.refund(%s, reason => ''test'')', (SELECT id FROM tap_hold)), '22023', NULL,
                 'a hold entry is not refundable');
SELECT is((credits.refund((SELECT max(id) FROM credits.ledger
                            WHERE user_id = '00000000-0000-0000-0003-0000000a0001' AND kind = 'capture'), reason => 'test')).amount,
          1::bigint, 'the capture is refundable');
SELECT throws_ok(format('SELECT credits.refund(%s, reason => ''test'')',
                        (SELECT max(id) FROM credits.ledger
                          WHERE user_id = '00000000-0000-0000-0003-0000000a0001' AND kind = 'capture')),
                 'PT409', NULL, 'a second full refund is refused');
SELECT throws_ok(format('UPDATE credits.ledger SET amount = 0 WHERE ref_id = %s', (SELECT id FROM tap_hold)),
                 '0A000', NULL, 'release and capture entries are append-only like every entry');
SELECT is_empty($$SELECT * FROM credits.reconcile('00000000-0000-0000-0003-0000000a0001')$$,
                'the books balance');

SELECT * FROM finish();
ROLLBACK;
