-- DROP EXTENSION takes its objects; the schema it was created in and the role stay.
DROP EXTENSION pgbun;
SELECT count(*) AS objects_left FROM pg_class WHERE relnamespace = 'pgbun'::regnamespace;
DROP SCHEMA pgbun;
SELECT rolname FROM pg_roles WHERE rolname = 'pgbun_monitor';
DROP EXTENSION dblink;
-- It installs again over a role that exists.
CREATE EXTENSION pgbun CASCADE;
SELECT name FROM pgbun.targets;
DROP EXTENSION pgbun;
DROP SCHEMA pgbun;
DROP EXTENSION dblink;
