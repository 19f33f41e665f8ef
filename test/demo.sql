-- credits: a short walk-through of the SQL contract (see README / DESIGN).
-- `make demo` runs it in a throwaway cluster with
--     psql -X -e -v ON_ERROR_STOP=0 -f demo.sql
-- so every statement is echoed before its result, and the one expected error
-- (the daily limit) is shown without stopping the walk-through.

\set QUIET 1
\pset null '(null)'
\set QUIET 0
\set u '9f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f'

\echo
\echo '==== 1. Install the extension: schema credits, default plans free and pro'
CREATE EXTENSION credits;
SELECT name, daily_limit, signup_bonus, bypass_credits FROM credits.plans ORDER BY name;

\echo
\echo '==== 2. A new user. No signup call: the first write creates the account, on plan'
\echo '====    free, with its signup bonus of 6 credits and 5 operations a day. Reads never'
\echo '====    write: they already answer what that first write will create.'
SELECT * FROM credits.balance(:'u');
SELECT * FROM credits.daily_available(:'u');

\echo
\echo '==== 3. Spend. An image costs 1 credit and one of today''s operations;'
\echo '====    every call returns a receipt with the balance after it.'
SELECT * FROM credits.credits_consume(:'u', 'image', 1);
SELECT * FROM credits.credits_consume(:'u', 'image', 1);

\echo
\echo '==== 4. A request with an idempotency key (the app''s generation id).'
\echo '====    Keep its entry id: this generation will fail and be refunded below.'
SELECT * FROM credits.credits_consume(:'u', 'image', 1,
                                      idempotency_key => 'gen-42', reference => 'generation 42') \gset gen42_
\echo '    entry_id =' :gen42_entry_id '   balance =' :gen42_balance '   daily_remaining =' :gen42_daily_remaining
\echo
\echo '==== The client retries the same request (a double tap, a network retry):'
\echo '====    same receipt, replayed = t, nothing charged twice.'
SELECT * FROM credits.credits_consume(:'u', 'image', 1,
                                      idempotency_key => 'gen-42', reference => 'generation 42');

\echo
\echo '==== 5. An admin grants a welcome pack of 10 credits.'
SELECT * FROM credits.grant_credits(:'u', 10, 'welcome pack');

\echo
\echo '==== 6. Two more images: that is the free plan''s 5 operations for today.'
SELECT * FROM credits.credits_consume(:'u', 'image', 1);
SELECT * FROM credits.credits_consume(:'u', 'image', 1);

\echo
\echo '==== 7. The 6th operation is refused inside the database, credits or not:'
\echo '====    SQLSTATE PT429 (PostgREST answers HTTP 429), with a detail and a hint.'
\set VERBOSITY verbose
SELECT * FROM credits.credits_consume(:'u', 'image', 1);
\set VERBOSITY default

\echo
\echo '==== 8. Generation 42 failed: refund it. The credit and the day''s operation come back.'
SELECT * FROM credits.refund(entry_id => :gen42_entry_id, reason => 'generation failed');
SELECT * FROM credits.daily_available(:'u');
SELECT * FROM credits.balance(:'u');

\echo
\echo '==== 9. The history: an append-only ledger. Every number above is derived from it.'
SELECT id, kind, amount, balance_after, operation, created_at
  FROM credits.ledger WHERE user_id = :'u' ORDER BY id;

\echo
\echo '==== 10. The books balance: reconcile() lists discrepancies, so no rows is good news.'
SELECT * FROM credits.reconcile();
