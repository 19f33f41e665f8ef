-- Webhook signing secrets: the admin role sets them; nobody but the extension's owner reads
-- them, not the admin role, not the client role, not through any view.
CREATE ROLE wh_client NOLOGIN;
CREATE ROLE wh_admin NOLOGIN;
SELECT credits.grant_roles('wh_client', 'wh_admin');
GRANT USAGE ON SCHEMA test TO wh_client, wh_admin;

-- The admin role sets (and removes) a secret.
SET ROLE wh_admin;
SELECT credits.set_webhook_secret('creem', 'whsec_admin_set');
-- ... and cannot read it back.
SELECT * FROM test.err('SELECT * FROM credits_secrets.webhook_secrets');
RESET ROLE;
SELECT r AS role,
       has_schema_privilege(r, 'credits_secrets', 'USAGE') AS schema_usage,
       has_table_privilege(r, 'credits_secrets.webhook_secrets', 'SELECT') AS can_select,
       has_function_privilege(r, 'credits.set_webhook_secret(text, text)', 'EXECUTE') AS can_set,
       has_function_privilege(r, 'credits.apply_stripe_event(text, text)', 'EXECUTE') AS can_apply
  FROM unnest(ARRAY['wh_client', 'wh_admin', 'public']) r;
-- No view reads the table; of the SQL functions only set_webhook_secret() (which writes it),
-- config_digests() (an md5 over each secret's md5: what a router compares across shards) and
-- copy_from_parent() (the owner's, copying a parent shard's secrets) name it.
SELECT count(*) AS views_that_read_it FROM pg_views WHERE definition LIKE '%webhook_secrets%';
SELECT p.proname FROM pg_proc p
 WHERE p.pronamespace = 'credits'::regnamespace AND p.prosrc LIKE '%credits_secrets%' ORDER BY 1;
-- Row level security is on, with no policy, and the table is dumped with the extension.
SELECT relrowsecurity, (SELECT count(*) FROM pg_policy WHERE polrelid = c.oid) AS policies,
       EXISTS (SELECT 1 FROM pg_extension e WHERE e.extname = 'credits' AND c.oid = ANY (e.extconfig)) AS dumped
  FROM pg_class c WHERE c.oid = 'credits_secrets.webhook_secrets'::regclass;
-- The client role cannot set one.
SET ROLE wh_client;
SELECT (test.error_of($$SELECT credits.set_webhook_secret('creem', 'mine')$$)).state;
RESET ROLE;
-- The owner sees the admin's secret; NULL removes it.
SELECT provider, secret FROM credits_secrets.webhook_secrets WHERE provider = 'creem';
SET ROLE wh_admin;
SELECT credits.set_webhook_secret('creem', NULL);
RESET ROLE;
SELECT count(*) AS creem_secrets FROM credits_secrets.webhook_secrets WHERE provider = 'creem';

DROP OWNED BY wh_client, wh_admin;
DROP ROLE wh_client, wh_admin;
