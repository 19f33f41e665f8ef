-- Test helpers shared by the regression files (they run in one database, in name order).
-- test.error_of(sql) runs a statement and returns the error it raised, so a
-- test can assert the SQLSTATE and the JSON detail without printing
-- timestamps that change from run to run.
CREATE SCHEMA test;
CREATE FUNCTION test.error_of(statement text,
                              OUT state text, OUT message text, OUT detail jsonb, OUT hint text)
LANGUAGE plpgsql AS $$
DECLARE
    d text;
BEGIN
    EXECUTE statement;
    state := 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
                            d = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    detail := CASE WHEN d LIKE '{%' THEN d::jsonb ELSE to_jsonb(nullif(d, '')) END;
END
$$;

-- test.err(sql, ids): like error_of, as text, with the ids given in `ids`
-- replaced by their names (ids vary between runs); 'no error' when it succeeds.
CREATE FUNCTION test.err(stmt text, ids jsonb DEFAULT '{}')
RETURNS TABLE (state text, message text, detail text, hint text)
LANGUAGE plpgsql AS $$
DECLARE
    k text;
    v text;
BEGIN
    BEGIN
        EXECUTE stmt;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
                                detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
        FOR k, v IN SELECT * FROM jsonb_each_text(ids) LOOP
            message := regexp_replace(message, '\m' || v || '\M', '<' || k || '>', 'g');
            detail := regexp_replace(detail, '\m' || v || '\M', '<' || k || '>', 'g');
        END LOOP;
        RETURN NEXT;
        RETURN;
    END;
    state := 'no error';
    RETURN NEXT;
END
$$;

-- Rows written for one user, across every credits table: a refused call must leave none.
CREATE FUNCTION test.rows_of(u uuid) RETURNS bigint LANGUAGE sql AS $$
    SELECT (SELECT count(*) FROM credits.accounts a WHERE a.user_id = u)
         + (SELECT count(*) FROM credits.ledger l WHERE l.user_id = u)
         + (SELECT count(*) FROM credits.lots l WHERE l.user_id = u)
         + (SELECT count(*) FROM credits.holds h WHERE h.user_id = u)
$$;
SELECT (test.error_of($$SELECT 1/0$$)).state;
