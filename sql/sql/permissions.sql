-- Who may do what: a plain role nothing, pgbun_monitor the views, only a superuser the commands.
CREATE ROLE ext_plain;
CREATE ROLE ext_watcher IN ROLE pgbun_monitor;
SELECT has_schema_privilege('pgbun_monitor', 'pgbun', 'USAGE') AS monitor_schema,
       has_table_privilege('pgbun_monitor', 'pgbun.pools', 'SELECT') AS monitor_pools,
       has_table_privilege('pgbun_monitor', 'pgbun.targets', 'SELECT') AS monitor_targets,
       has_column_privilege('pgbun_monitor', 'pgbun.targets', 'name', 'SELECT') AS monitor_target_names,
       has_column_privilege('pgbun_monitor', 'pgbun.targets', 'conninfo', 'SELECT') AS monitor_conninfo,
       has_function_privilege('pgbun_monitor', 'pgbun.reload(text)', 'EXECUTE') AS monitor_reload,
       has_function_privilege('public', 'pgbun.reload(text)', 'EXECUTE') AS public_reload,
       has_function_privilege('public', 'pgbun._show(text, anyelement)', 'EXECUTE') AS public_show;
\set VERBOSITY terse
SET ROLE ext_plain;
SELECT pgbun.reload();
SELECT pgbun.pause(current_database());
SELECT pgbun.set('query_wait_notify', '5');
SELECT count(*) FROM pgbun.pools;
SELECT conninfo FROM pgbun.targets;
RESET ROLE;
-- Even with the schema and EXECUTE on the commands' plumbing out of reach.
GRANT USAGE ON SCHEMA pgbun TO ext_plain;
SET ROLE ext_plain;
SELECT pgbun.reload();
SELECT pgbun.resume(current_database());
SELECT pgbun.kill(current_database());
SELECT pgbun._command('local', 'RELOAD');
SELECT count(*) FROM pgbun.version;
RESET ROLE;
REVOKE USAGE ON SCHEMA pgbun FROM ext_plain;
-- pgbun_monitor reads every view, and not the connection strings.
SET ROLE ext_watcher;
SELECT target, version ~ '^pgbun ' AS is_pgbun, error FROM pgbun.version;
SELECT count(*) > 0 AS pools FROM pgbun.pools WHERE error IS NULL;
SELECT count(*) > 0 AS stats FROM pgbun.stats WHERE error IS NULL;
SELECT count(*) > 0 AS stats_totals FROM pgbun.stats_totals WHERE error IS NULL;
SELECT count(*) > 0 AS clients FROM pgbun.clients WHERE error IS NULL;
SELECT count(*) FILTER (WHERE error IS NOT NULL) = 0 AS servers FROM pgbun.servers;
SELECT count(*) > 0 AS databases FROM pgbun.databases WHERE error IS NULL;
SELECT count(*) > 0 AS users FROM pgbun.users WHERE error IS NULL;
SELECT count(*) > 0 AS config FROM pgbun.config WHERE error IS NULL;
SELECT count(*) > 0 AS lists FROM pgbun.lists WHERE error IS NULL;
SELECT count(*) > 0 AS mem FROM pgbun.mem WHERE error IS NULL;
SELECT count(*) > 0 AS pool_efficiency FROM pgbun.pool_efficiency WHERE error IS NULL;
SELECT name FROM pgbun.targets;
SELECT conninfo FROM pgbun.targets;
SELECT * FROM pgbun.targets;
UPDATE pgbun.targets SET conninfo = 'host=elsewhere';
INSERT INTO pgbun.targets (name, conninfo) VALUES ('ext_mine', 'host=elsewhere');
-- ... and none of the commands.
SELECT pgbun.reload();
SELECT pgbun.pause(current_database());
SELECT pgbun.resume(current_database());
SELECT pgbun.kill(current_database());
SELECT pgbun.set('query_wait_notify', '5');
-- The views' function runs as the owner, but only the SHOWs of its row types.
SELECT pgbun._show('local', NULL::text);
SELECT pgbun._show('local', NULL::pg_class);
SELECT pgbun._command('local', 'RELOAD');
SELECT pgbun._send('host=/tmp', '1 second', 'RELOAD');
-- Nor may it use the dblink connection the views open: none is left open.
SELECT dblink_get_connections();
RESET ROLE;
\set VERBOSITY default
-- What a superuser may grant: EXECUTE on one command, to an operator role.
GRANT USAGE ON SCHEMA pgbun TO ext_plain;
GRANT EXECUTE ON FUNCTION pgbun.reload(text) TO ext_plain;
SET ROLE ext_plain;
SELECT pgbun.reload();
RESET ROLE;
REVOKE EXECUTE ON FUNCTION pgbun.reload(text) FROM ext_plain;
REVOKE USAGE ON SCHEMA pgbun FROM ext_plain;
DROP ROLE ext_plain;
DROP ROLE ext_watcher;
