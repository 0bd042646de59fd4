-- A fleet: a dead target gives each view one row with the error, and does not
-- keep the live target from answering.
INSERT INTO pgbun.targets (name, conninfo, timeout)
VALUES ('ext_dead', 'host=127.0.0.1 port=1 dbname=pgbun user=pgbun', '5 seconds');
SELECT target, version IS NULL AS no_version,
       error LIKE 'could not establish connection: %' AS says_why
  FROM pgbun.version ORDER BY target;
-- The dead target's row has nothing but its name and the error.
SELECT target, database IS NULL AND "user" IS NULL AND cl_active IS NULL AND query_p95_us IS NULL AS all_null,
       error IS NOT NULL AS has_error
  FROM pgbun.pools WHERE target = 'ext_dead';
-- Every view: the live target answers (rows, no error), the dead one has one error row.
CREATE TEMP VIEW ext_fleet AS
          SELECT 'pools' AS view, target, error FROM pgbun.pools
UNION ALL SELECT 'stats', target, error FROM pgbun.stats
UNION ALL SELECT 'stats_totals', target, error FROM pgbun.stats_totals
UNION ALL SELECT 'clients', target, error FROM pgbun.clients
UNION ALL SELECT 'servers', target, error FROM pgbun.servers
UNION ALL SELECT 'databases', target, error FROM pgbun.databases
UNION ALL SELECT 'users', target, error FROM pgbun.users
UNION ALL SELECT 'config', target, error FROM pgbun.config
UNION ALL SELECT 'lists', target, error FROM pgbun.lists
UNION ALL SELECT 'mem', target, error FROM pgbun.mem
UNION ALL SELECT 'version', target, error FROM pgbun.version
UNION ALL SELECT 'pool_efficiency', target, error FROM pgbun.pool_efficiency;
SELECT view, target, count(*) FILTER (WHERE error IS NULL) > 0 AS answered,
       count(*) FILTER (WHERE error IS NOT NULL) AS error_rows
  FROM ext_fleet GROUP BY view, target ORDER BY view, target;
DROP VIEW ext_fleet;
-- A WHERE on target reads that target alone: no error from the dead one.
SELECT target, error FROM pgbun.version WHERE target = 'local';
-- The functions take one target and fail with an error that names it.
\set VERBOSITY terse
SELECT pgbun.reload('ext_dead');
SELECT pgbun.pause(current_database(), 'ext_dead');
SELECT pgbun.reload('ext_nowhere');
SELECT pgbun.reload(NULL);
\set VERBOSITY default
-- Called for a target not in the table, the views' function says so in a row.
SELECT (r).version, error FROM pgbun._show('ext_nowhere', NULL::pgbun.show_version);
-- A pooler that is not pgbun (here PostgreSQL itself, through dblink's own
-- connection rules) answers SHOW POOLS with an error: a row, not a failed query.
SELECT 'host=' || coalesce(nullif(split_part(current_setting('unix_socket_directories'), ',', 1), ''), '/tmp')
       || ' port=' || current_setting('port') || ' dbname=' || current_database() AS direct \gset
INSERT INTO pgbun.targets (name, conninfo) VALUES ('ext_postgres', :'direct');
SELECT target, error FROM pgbun.pools WHERE target = 'ext_postgres';
-- A connection string libpq cannot parse: the error does not quote it (it may hold a password).
INSERT INTO pgbun.targets (name, conninfo) VALUES ('ext_garbled', 'host=127.0.0.1 port=1 password=ext se cret');
SELECT target, error, error LIKE '%cret%' AS quotes_conninfo FROM pgbun.version WHERE target = 'ext_garbled';
\set SHOW_CONTEXT never
SELECT pgbun.reload('ext_garbled');
\set SHOW_CONTEXT errors
DELETE FROM pgbun.targets WHERE name IN ('ext_dead', 'ext_postgres', 'ext_garbled');
SELECT name FROM pgbun.targets;
-- No failed call left its dblink connection open.
SELECT dblink_get_connections();
