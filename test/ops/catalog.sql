-- The catalog of the installed credits extension, one line per fact, by
-- name only (no OIDs), sorted: two databases print the same text exactly
-- when their extension objects are the same.  test/ops/upgrade.sh diffs a
-- fresh install against ALTER EXTENSION credits UPDATE from 1.0.
\pset format unaligned
\pset tuples_only on
WITH ext AS (
    SELECT oid FROM pg_extension WHERE extname = 'credits'
), member AS (
    SELECT d.classid, d.objid FROM pg_depend d, ext
     WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
), rel AS (
    SELECT c.* FROM pg_class c JOIN member m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid
), fn AS (
    SELECT p.* FROM pg_proc p JOIN member m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
), typ AS (
    SELECT t.* FROM pg_type t JOIN member m ON m.classid = 'pg_type'::regclass AND m.objid = t.oid
), fact(line) AS (
    SELECT 'extension ' || e.extversion || ' schema ' || e.extnamespace::regnamespace
           || ' relocatable ' || e.extrelocatable
      FROM pg_extension e WHERE e.extname = 'credits'
    UNION ALL
    SELECT 'config-dump ' || c.cfg::regclass || ' where ' || quote_literal(coalesce(c.cond, ''))
      FROM pg_extension e,
           unnest(e.extconfig, e.extcondition) AS c(cfg, cond)
     WHERE e.extname = 'credits'
    UNION ALL
    SELECT 'member ' || pg_describe_object(m.classid, m.objid, 0) FROM member m
    UNION ALL
    SELECT format('relation %s kind %s persistence %s rls %s force_rls %s acl %s options %s',
                  r.oid::regclass, r.relkind, r.relpersistence, r.relrowsecurity,
                  r.relforcerowsecurity, r.relacl, r.reloptions)
      FROM rel r
    UNION ALL
    SELECT format('column %s.%s #%s %s notnull %s default %s identity %s generated %s collation %s acl %s',
                  a.attrelid::regclass, a.attname, a.attnum, format_type(a.atttypid, a.atttypmod),
                  a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid), a.attidentity, a.attgenerated,
                  a.attcollation, a.attacl)
      FROM rel r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
    UNION ALL
    SELECT format('constraint %s %s: %s deferrable %s validated %s',
                  co.conrelid::regclass, co.conname, pg_get_constraintdef(co.oid),
                  co.condeferrable, co.convalidated)
      FROM rel r JOIN pg_constraint co ON co.conrelid = r.oid
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(i.indexrelid)
      FROM rel r JOIN pg_index i ON i.indrelid = r.oid
    UNION ALL
    SELECT format('trigger %s %s enabled %s: %s', t.tgrelid::regclass, t.tgname, t.tgenabled,
                  pg_get_triggerdef(t.oid))
      FROM rel r JOIN pg_trigger t ON t.tgrelid = r.oid AND NOT t.tgisinternal
    UNION ALL
    SELECT format('policy %s %s cmd %s permissive %s roles %s using %s check %s',
                  po.polrelid::regclass, po.polname, po.polcmd, po.polpermissive,
                  po.polroles::regrole[], pg_get_expr(po.polqual, po.polrelid),
                  pg_get_expr(po.polwithcheck, po.polrelid))
      FROM rel r JOIN pg_policy po ON po.polrelid = r.oid
    UNION ALL
    SELECT format('sequence %s type %s start %s increment %s min %s max %s cache %s cycle %s',
                  s.seqrelid::regclass, s.seqtypid::regtype, s.seqstart, s.seqincrement,
                  s.seqmin, s.seqmax, s.seqcache, s.seqcycle)
      FROM rel r JOIN pg_sequence s ON s.seqrelid = r.oid
    UNION ALL
    SELECT format('view %s: %s', r.oid::regclass, pg_get_viewdef(r.oid))
      FROM rel r WHERE r.relkind IN ('v', 'm')
    UNION ALL
    SELECT format('function %s(%s) returns %s kind %s volatility %s security_definer %s strict %s '
                  'parallel %s leakproof %s cost %s rows %s config %s acl %s language %s body %s',
                  f.oid::regproc, pg_get_function_identity_arguments(f.oid),
                  pg_get_function_result(f.oid), f.prokind, f.provolatile, f.prosecdef, f.proisstrict,
                  f.proparallel, f.proleakproof, f.procost, f.prorows, f.proconfig, f.proacl,
                  (SELECT lanname FROM pg_language l WHERE l.oid = f.prolang),
                  md5(f.prosrc || coalesce(f.probin, '')))
      FROM fn f
    UNION ALL
    SELECT format('function-args %s(%s): %s', f.oid::regproc, pg_get_function_identity_arguments(f.oid),
                  pg_get_function_arguments(f.oid))
      FROM fn f
    UNION ALL
    SELECT format('type %s kind %s enum %s attributes %s acl %s', t.oid::regtype, t.typtype,
                  (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                     FROM pg_enum e WHERE e.enumtypid = t.oid),
                  (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ','
                                     ORDER BY a.attnum)
                     FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0
                      AND NOT a.attisdropped),
                  t.typacl)
      FROM typ t
    UNION ALL
    SELECT format('comment %s: %s', pg_describe_object(d.classoid, d.objoid, d.objsubid), md5(d.description))
      FROM pg_description d JOIN member m ON m.classid = d.classoid AND m.objid = d.objoid
    UNION ALL
    SELECT format('init-privs %s: %s', pg_describe_object(ip.classoid, ip.objoid, ip.objsubid), ip.initprivs)
      FROM pg_init_privs ip JOIN member m ON m.classid = ip.classoid AND m.objid = ip.objoid
    UNION ALL
    SELECT format('publication-visible %s', r.oid::regclass)
      FROM rel r WHERE r.relkind = 'r' AND r.relpersistence = 'p'
)
SELECT line FROM fact ORDER BY line COLLATE "C";
