-- CREATE EXTENSION: dblink comes along, the schema, the role, the default target.
CREATE EXTENSION pgbun CASCADE;
SELECT extname, extversion, extnamespace::regnamespace AS schema, extrelocatable
  FROM pg_extension WHERE extname IN ('dblink', 'pgbun') ORDER BY extname;
SELECT rolname, rolcanlogin, rolsuper FROM pg_roles WHERE rolname = 'pgbun_monitor';
SELECT name, conninfo, timeout FROM pgbun.targets;
\dx+ pgbun
-- Every view, with the comment a DBA sees in \dv+.
SELECT c.relname, obj_description(c.oid, 'pg_class') AS comment
  FROM pg_class c WHERE c.relnamespace = 'pgbun'::regnamespace AND c.relkind = 'v' ORDER BY c.relname;
-- Every function and whether it runs as its owner with a fixed search_path.
SELECT p.oid::regprocedure AS function, p.prosecdef AS security_definer,
       p.proconfig = '{"search_path=pg_catalog, pg_temp"}' AS fixed_search_path
  FROM pg_proc p WHERE p.pronamespace = 'pgbun'::regnamespace ORDER BY p.proname, 1::text;
-- The pgbun under test: PGBUN_CONNINFO names its admin console (else 'local' stays as installed).
\getenv pgbun_conninfo PGBUN_CONNINFO
\if :{?pgbun_conninfo}
UPDATE pgbun.targets SET conninfo = :'pgbun_conninfo' WHERE name = 'local';
\endif
SELECT target, version LIKE 'pgbun %' AS is_pgbun, error FROM pgbun.version;
