-- credits.settings: the settings an admin changes without being a superuser.
-- A row wins over the GUC credits.<name>; without a row the GUC gives the
-- value; every value is validated as its GUC would validate it.
SELECT name, value, source FROM credits.settings_in_effect ORDER BY name;

-- Refused values: unknown setting, not a number, out of range, not a
-- boolean, unknown plan, NULL.
CREATE FUNCTION pg_temp.err(stmt text, OUT state text, OUT message text, OUT detail text, OUT hint text)
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE stmt;
    state := 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
                            detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
END
$$;
\x on
SELECT * FROM pg_temp.err($$INSERT INTO credits.settings VALUES ('hold_timeout_s', '60')$$);
SELECT * FROM pg_temp.err($$INSERT INTO credits.settings VALUES ('hold_timeout', 'soon')$$);
SELECT * FROM pg_temp.err($$INSERT INTO credits.settings VALUES ('hold_timeout', '0')$$);
SELECT * FROM pg_temp.err($$INSERT INTO credits.settings VALUES ('hold_timeout', '8d')$$);
SELECT * FROM pg_temp.err($$INSERT INTO credits.settings VALUES ('pending_purchase_daily_limit', '1001')$$);
SELECT * FROM pg_temp.err($$INSERT INTO credits.settings VALUES ('accept_sandbox', 'maybe')$$);
SELECT * FROM pg_temp.err($$INSERT INTO credits.settings VALUES ('default_plan', 'gold')$$);
SELECT * FROM pg_temp.err($$INSERT INTO credits.settings VALUES ('default_plan', NULL)$$);
SELECT * FROM pg_temp.err($$SELECT credits.setting('no_such')$$);
\x off

-- Accepted: units as the GUC takes them; the value in effect in seconds.
BEGIN;
INSERT INTO credits.settings VALUES ('hold_timeout', '30min'), ('deletion_interval', '2h'),
                                    ('accept_sandbox', 'on'), ('default_plan', 'pro');
SELECT name, value, source FROM credits.settings_in_effect ORDER BY name;
-- A superuser's SET does not override a row (the row wins) ...
SET LOCAL credits.hold_timeout = '5min';
SELECT credits.setting('hold_timeout');
-- ... and takes effect again once the row is gone.
DELETE FROM credits.settings WHERE name = 'hold_timeout';
SELECT credits.setting('hold_timeout');
-- An UPDATE is validated too.
UPDATE credits.settings SET value = '-1' WHERE name = 'deletion_interval';
ROLLBACK;

-- The rows are the database's: they are dumped (config dump) and read by
-- every function that uses the setting.
SELECT extcondition IS NOT NULL AS dumped
  FROM pg_extension WHERE extname = 'credits'
   AND 'credits.settings'::regclass = ANY (extconfig);
BEGIN;
INSERT INTO credits.settings VALUES ('default_plan', 'pro'), ('hold_timeout', '2min');
SELECT (credits.reserve('5e770000-0000-4000-8000-000000000001', 'image')).entry_id AS hold \gset
SELECT a.plan, extract(epoch FROM h.expires_at - h.created_at) AS hold_s
  FROM credits.accounts a JOIN credits.holds h USING (user_id) WHERE h.id = :hold;
ROLLBACK;
