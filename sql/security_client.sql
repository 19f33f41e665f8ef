-- Client functions: the user comes from the JWT claims PostgREST sets
-- (request.jwt.claims), never from an argument.
\set alice '5ec0a11c-0000-4000-8000-000000000001'
\set bob   '5ec0b0b0-0000-4000-8000-000000000002'

-- No claims: every client function refuses with 28000, and reads see nothing.
SELECT credits.my_balance();
SELECT credits.my_daily_available();
SELECT * FROM credits.consume('image');
SELECT credits.set_my_timezone('UTC');
SELECT * FROM credits.my_history();
SELECT * FROM credits.my_usage();
SELECT * FROM credits.delete_my_account();
SELECT credits.current_user_id();
SELECT credits.current_user_id_or_null() IS NULL AS no_user;
SELECT count(*) AS my_account_rows FROM credits.my_account;

-- Claims without a usable sub: 28000 too, and never an error from the
-- non-raising variant the row level security policies use.
SET request.jwt.claims = '{"role": "anon"}';
SELECT credits.my_balance();
SET request.jwt.claims = '{"sub": "not-a-uuid", "role": "authenticated"}';
SELECT credits.my_balance();
SET request.jwt.claims = '{"sub": 42}';
SELECT credits.my_balance();
SET request.jwt.claims = '{"app": {"sub": "5ec0a11c-0000-4000-8000-000000000001"}}';
SELECT credits.my_balance();
SET request.jwt.claims = '["5ec0a11c-0000-4000-8000-000000000001"]';
SELECT credits.my_balance();
SET request.jwt.claims = 'not json at all';
SELECT credits.my_balance();
SELECT credits.current_user_id_or_null() IS NULL AS no_user;
SET request.jwt.claims = '{"sub": "5ec0a-11c-0000-4000-8000-000000000001"}';
SELECT credits.current_user_id_or_null() IS NULL AS no_user;
SET request.jwt.claims = '{"sub": "5ec0a11c-0000-4000-8000-00000000000"}';
SELECT credits.current_user_id_or_null() IS NULL AS no_user;
-- The spellings uuid_in accepts are accepted.
SET request.jwt.claims = '{"sub": "{5ec0a11c-0000-4000-8000-000000000001}"}';
SELECT credits.current_user_id() = :'alice' AS is_alice;
SET request.jwt.claims = '{"sub": "5EC0A11C000040008000000000000001"}';
SELECT credits.current_user_id() = :'alice' AS is_alice;
-- Older PostgREST: one setting per claim.
RESET request.jwt.claims;
SET request.jwt.claim.sub = '5ec0a11c-0000-4000-8000-000000000001';
SELECT credits.current_user_id() = :'alice' AS is_alice;
-- request.jwt.claims wins over the legacy setting.
SET request.jwt.claims = '{"sub": "5ec0b0b0-0000-4000-8000-000000000002"}';
SELECT credits.current_user_id() = :'bob' AS is_bob;
RESET request.jwt.claim.sub;

-- Alice signs in: her first touch creates her account with the signup bonus.
SET request.jwt.claims = '{"sub": "5ec0a11c-0000-4000-8000-000000000001", "role": "authenticated"}';
SELECT credits.my_balance(), credits.my_daily_available();
SELECT user_id = :'alice' AS mine, kind, amount, balance, daily_remaining, replayed
  FROM credits.consume('image');
SELECT user_id = :'alice' AS mine, kind, amount, balance, daily_remaining, replayed
  FROM credits.consume('image', 3, idempotency_key => 'gen-1', reference => 'job 1',
                       metadata => '{"model": "sdxl"}');
-- The retry replays the first receipt.
SELECT kind, amount, balance, daily_remaining, replayed
  FROM credits.consume('image', 3, idempotency_key => 'gen-1', reference => 'job 1',
                       metadata => '{"model": "sdxl"}');
-- Same key, other parameters (terse: the detail carries an entry id).
\set VERBOSITY terse
SELECT * FROM credits.consume('image', 2, idempotency_key => 'gen-1');
\set VERBOSITY default
-- Bad input is refused like credits_consume refuses it.
SELECT * FROM credits.consume('no such operation');
SELECT * FROM credits.consume(NULL);
SELECT * FROM credits.consume('image', 0);
SELECT * FROM credits.consume('image', idempotency_key => repeat('k', 256));
SELECT * FROM credits.consume('image', idempotency_key => E'a\nb');
SELECT * FROM credits.consume('image', reference => repeat('r', 256));
SELECT * FROM credits.consume('image', metadata => '[1, 2]');
SELECT credits.my_balance(), credits.my_daily_available();

-- An admin tops her up (a service function, called here as the superuser).
SELECT amount, balance FROM credits.grant_credits(:'alice', 20, 'welcome pack');
SELECT kind, amount, balance, daily_remaining
  FROM credits.consume('prompt_kchar', 2, reference => 'job 2');

-- The account view: the caller's row only.
SELECT user_id = :'alice' AS mine, plan, base_plan, balance, daily_limit, daily_remaining, timezone, plan_until
  FROM credits.my_account;

-- Time zone: IANA names only; the view follows.
SELECT credits.set_my_timezone('Mars/Olympus_Mons');
SELECT credits.set_my_timezone(repeat('x', 65));
SELECT credits.set_my_timezone(NULL);
-- Alice has counted operations today: the new zone takes effect at the next
-- local midnight (her day in progress is not restarted); asking for the zone
-- in effect cancels the change.
SELECT credits.set_my_timezone('Pacific/Kiritimati');
SELECT timezone FROM credits.my_account;
SELECT timezone, timezone_next FROM credits.accounts WHERE user_id = :'alice';
SELECT credits.set_my_timezone('UTC');
SELECT timezone, timezone_next FROM credits.accounts WHERE user_id = :'alice';

-- History: newest first, keyset pagination with before_id.
SELECT kind, amount, balance_after, operation, units, reference, idempotency_key, reason, metadata
  FROM credits.my_history();
SELECT count(*) AS entries FROM credits.ledger WHERE user_id = :'alice';
SELECT min(id) AS page1_last FROM credits.my_history(2) \gset
SELECT kind, amount, reason FROM credits.my_history(2);
SELECT kind, amount, reason FROM credits.my_history(2, :page1_last);
SELECT min(id) AS page2_last FROM credits.my_history(2, :page1_last) \gset
SELECT kind, amount, reason FROM credits.my_history(2, :page2_last);
-- The pages together are the whole history, in order, without overlap.
SELECT (SELECT array_agg(id) FROM (SELECT id FROM credits.my_history(2)
                                   UNION ALL SELECT id FROM credits.my_history(2, :page1_last)
                                   UNION ALL SELECT id FROM credits.my_history(2, :page2_last)) p)
     = (SELECT array_agg(id ORDER BY id DESC) FROM credits.ledger WHERE user_id = :'alice')
       AS pages_cover_history;
SELECT count(*) AS past_the_end FROM credits.my_history(50, (SELECT min(id) FROM credits.ledger WHERE user_id = :'alice'));
SELECT count(*) AS at_most_1000 FROM credits.my_history(1000);
SELECT * FROM credits.my_history(0);
SELECT * FROM credits.my_history(1001);
SELECT * FROM credits.my_history(NULL);
SELECT * FROM credits.my_history(-5);

-- Usage by operation over the last 30 days, all time, or none in the future.
SELECT * FROM credits.my_usage();
SELECT * FROM credits.my_usage(NULL);
SELECT * FROM credits.my_usage(now() + interval '1 day');
-- A premium (bypass) plan records the list cost and charges nothing.
SELECT credits.set_plan(:'alice', 'pro');
SELECT kind, amount, daily_remaining FROM credits.consume('video_second', 4);
SELECT * FROM credits.my_usage();
SELECT plan, base_plan, daily_limit, daily_remaining FROM credits.my_account;
SELECT credits.set_plan(:'alice', 'free');

-- Holds and refunds (service functions) show in the usage: a capture is an
-- operation, a refund is taken off the credits of the operation it refunds,
-- a released or still open hold charges nothing.
SELECT id AS gen1 FROM credits.ledger WHERE user_id = :'alice' AND idempotency_key = 'gen-1' \gset
SELECT id AS job2 FROM credits.ledger WHERE user_id = :'alice' AND reference = 'job 2' \gset
SELECT kind, amount FROM credits.refund(:job2, reason => 'job 2 failed');
SELECT entry_id AS hold1 FROM credits.reserve(:'alice', 'image', 2) \gset
SELECT kind, amount FROM credits.capture(:hold1, 1);
SELECT kind, amount FROM credits.refund(:gen1, 2, 'two images were blank');
SELECT entry_id AS hold2 FROM credits.reserve(:'alice', 'prompt_kchar', 1) \gset
SELECT kind, amount FROM credits.release(:hold2);
SELECT kind, amount, balance FROM credits.reserve(:'alice', 'image', 1);
SELECT * FROM credits.my_usage();
SELECT kind, amount, operation, units, reason FROM credits.my_history(7);
SELECT credits.my_balance(), credits.my_daily_available();
SELECT balance, daily_remaining FROM credits.my_account;

-- Bob sees only his own account and history (his signup hook opened the account).
SELECT credits.open_account(:'bob') AS created;
SET request.jwt.claims = '{"sub": "5ec0b0b0-0000-4000-8000-000000000002", "role": "authenticated"}';
SELECT credits.my_balance();
SELECT kind, amount, reason FROM credits.my_history();
SELECT count(*) AS bob_rows_before_alice FROM credits.my_history(50, (SELECT max(id) + 1 FROM credits.ledger));
SELECT * FROM credits.my_usage();
SELECT user_id = :'bob' AS mine, balance FROM credits.my_account;
RESET request.jwt.claims;

-- The books balance.
SELECT * FROM credits.reconcile(:'alice');
SELECT * FROM credits.reconcile(:'bob');
