
/* ---- Privileges: nothing is callable until granted deliberately ---- */

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA credits FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA credits FROM PUBLIC;
