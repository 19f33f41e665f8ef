-- bench/pgledger/seed.sql: the bench users in pgledger's tables (see README.md here).
-- psql variables: users, history (past transfers per user; the veterans and
-- today's entries of credits' seed are not copied: pgledger keeps no day).
\set ON_ERROR_STOP 1
SET synchronous_commit = off;
SET maintenance_work_mem = '256MB';

INSERT INTO pgledger_accounts (id, name, currency, balance, allow_negative_balance,
                               allow_positive_balance, created_at, updated_at)
SELECT 'u' || n, 'credits', 'CRD', 1000000000 - :history, false, true, now(), now()
  FROM generate_series(1, :users) n
UNION ALL
SELECT 's' || n, 'spent', 'CRD', :history, true, true, now(), now()
  FROM generate_series(1, :users) n;

INSERT INTO pgledger_transfers (id, from_account_id, to_account_id, amount, created_at, event_at)
SELECT 'pglt_' || n || '_' || k, 'u' || n, 's' || n, 1, now() - interval '1 day', now() - interval '1 day'
  FROM generate_series(1, :users) n, generate_series(1, :history) k;

INSERT INTO pgledger_entries (id, account_id, transfer_id, amount, account_previous_balance,
                              account_current_balance, account_version, created_at)
SELECT 'pgle_' || n || '_' || k || side, CASE side WHEN 'a' THEN 'u' ELSE 's' END || n,
       'pglt_' || n || '_' || k, CASE side WHEN 'a' THEN -1 ELSE 1 END,
       CASE side WHEN 'a' THEN 1000000000 - k + 1 ELSE k - 1 END,
       CASE side WHEN 'a' THEN 1000000000 - k ELSE k END, k, now() - interval '1 day'
  FROM generate_series(1, :users) n, generate_series(1, :history) k, (VALUES ('a'), ('b')) s(side);
UPDATE pgledger_accounts SET version = :history;
VACUUM ANALYZE pgledger_accounts, pgledger_transfers, pgledger_entries;
