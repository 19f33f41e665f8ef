/* ---- Roles: on Supabase (or wherever these roles exist), grant them now ---- */

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'authenticated')
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'service_role') THEN
        PERFORM credits.grant_roles('authenticated', 'service_role');
    END IF;
END
$$;
