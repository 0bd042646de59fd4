-- Every view: its columns and types, and the rows of the pgbun under test.
-- Traffic of our own first: a client through pgbun to this database, which
-- leaves a pool, a server connection and counters behind.
SELECT conninfo || ' dbname=' || current_database() || ' user=' || current_user
       || ' application_name=ext_pooled' AS pooled
  FROM pgbun.targets WHERE name = 'local' \gset
SELECT dblink_connect('ext_pooled', :'pooled');
SELECT * FROM dblink('ext_pooled', 'SELECT 41 + 1') AS t(answer int);
-- Columns: target first, the SHOW's own by name and in order, error last.
SELECT c.relname AS view, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod) AS type
  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
 WHERE c.relnamespace = 'pgbun'::regnamespace AND c.relkind = 'v' AND c.relname <> 'pool_efficiency'
   AND a.attnum > 0
 ORDER BY c.relname, a.attnum;
-- pools: this database's pool, with its counters.
SELECT target, "user" = current_user AS our_user, pool_mode IS NOT NULL AS has_mode,
       total_query_count > 0 AS queried, max_server_connections_used >= 1 AS had_server,
       reuse_efficiency_percent BETWEEN 0 AND 100 AS reuse_is_percent, error
  FROM pgbun.pools WHERE database = current_database();
-- The console's own pool is listed too, as SHOW POOLS lists it.
SELECT count(*) > 0 AS console_pool FROM pgbun.pools WHERE database = 'pgbun';
-- stats and stats_totals: this database's counters agree where they are the same.
SELECT s.target, s.total_query_count > 0 AS queried, s.total_query_count <= t.query_count AS totals_not_behind,
       s.total_client_login_count >= 1 AS logged_in, s.query_p95_us >= 0 AS has_p95, s.error, t.error
  FROM pgbun.stats s JOIN pgbun.stats_totals t USING (target, database)
 WHERE database = current_database();
-- clients: our pooled client (by its application_name) and the view's own console connection.
SELECT target, type, state IN ('idle', 'active') AS logged_in, database = current_database() AS our_db, application_name,
       connect_time BETWEEN now() - interval '1 hour' AND now() + interval '1 minute' AS connect_time_is_a_time,
       close_needed, error
  FROM pgbun.clients WHERE application_name IN ('ext_pooled', 'pgbun-extension')
 ORDER BY application_name COLLATE "C";
-- servers: at least one to this database, with a PostgreSQL backend pid.
SELECT target, type, count(*) >= 1 AS servers, bool_and(remote_pid > 0) AS have_pid,
       bool_and(request_time >= connect_time) AS times_in_order, error
  FROM pgbun.servers WHERE database = current_database() GROUP BY target, type, error;
-- databases: this database's entry, not paused.
SELECT target, name, database, pool_size > 0 AS sized, paused, disabled, error
  FROM pgbun.databases WHERE name = current_database();
-- users: the user we logged in as.
SELECT target, name, pool_size > 0 AS sized, error FROM pgbun.users WHERE name = current_user;
-- config: keys with typed changeable flags.
SELECT target, key, changeable, error FROM pgbun.config
 WHERE key IN ('listen_port', 'default_pool_size', 'admin_users') ORDER BY key;
-- lists and mem: their fixed rows.
SELECT target, list, items >= 0 AS counted, error FROM pgbun.lists ORDER BY list;
SELECT target, name, size > 0 AS sized, memtotal = size * used AS total_is_size_times_used, error
  FROM pgbun.mem ORDER BY name;
-- version.
SELECT target, version ~ '^pgbun [0-9]' AS is_pgbun, error FROM pgbun.version;
-- Reading a view left no dblink connection of its own open.
SELECT dblink_get_connections();
SELECT dblink_disconnect('ext_pooled');
