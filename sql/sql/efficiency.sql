-- pool_efficiency: one row per pool of this database, sized from SHOW DATABASES.
SELECT conninfo || ' dbname=' || current_database() || ' user=' || current_user
       || ' application_name=ext_pooled' AS pooled
  FROM pgbun.targets WHERE name = 'local' \gset
SELECT dblink_connect('ext_pooled', :'pooled');
SELECT * FROM dblink('ext_pooled', 'SELECT 1') AS t(x int);
SELECT a.attnum, a.attname, format_type(a.atttypid, a.atttypmod) AS type
  FROM pg_attribute a WHERE a.attrelid = 'pgbun.pool_efficiency'::regclass AND a.attnum > 0 ORDER BY a.attnum;
SELECT e.target, e."user" = current_user AS our_user, e.pool_size = d.pool_size AS size_of_database,
       e.max_server_connections_used >= 1 AS used,
       e.peak_percent_of_pool_size = round(100.0 * e.max_server_connections_used / e.pool_size, 1) AS peak_percent,
       e.server_connections >= 0 AS counted, e.cl_waiting = 0 AS nobody_waits, e.maxwait_us = 0 AS no_wait,
       e.database_total_wait_us >= 0 AS wait_total, e.reuse_efficiency_percent BETWEEN 0 AND 100 AS reuse,
       e.query_p95_us >= 0 AS p95, e.verdict IN ('too small', 'at capacity', 'oversized', 'ok') AS verdict, e.error
  FROM pgbun.pool_efficiency e JOIN pgbun.databases d ON d.target = e.target AND d.name = e.database
 WHERE e.database = current_database();
-- The console's pools are not pools to size.
SELECT count(*) AS console_rows FROM pgbun.pool_efficiency WHERE database IN ('pgbun', 'pgbouncer');
SELECT dblink_disconnect('ext_pooled');
-- Close the pool's server connections, so that this database can be dropped.
SELECT pgbun.kill(current_database()), pgbun.resume(current_database());
