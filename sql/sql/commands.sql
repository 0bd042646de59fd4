-- RELOAD, SET, PAUSE, RESUME and KILL on the local target, each returning its command tag.
SELECT conninfo || ' dbname=' || current_database() || ' user=' || current_user
       || ' application_name=ext_pooled' AS pooled
  FROM pgbun.targets WHERE name = 'local' \gset
SELECT pgbun.reload();
SELECT pgbun.reload('local');
-- SET: the new value shows in pgbun.config; the old one is put back.
SELECT value AS old_notify FROM pgbun.config WHERE target = 'local' AND key = 'query_wait_notify' \gset
SELECT pgbun.set('query_wait_notify', '17');
SELECT key, value, changeable FROM pgbun.config WHERE target = 'local' AND key = 'query_wait_notify';
SELECT pgbun.set('query_wait_notify', :'old_notify', 'local') AS restored;
SELECT value = :'old_notify' AS restored FROM pgbun.config WHERE target = 'local' AND key = 'query_wait_notify';
\set VERBOSITY terse
-- pgbun's own refusals come back as errors naming the target.
SELECT pgbun.set('no_such_key', '1');
SELECT pgbun.set('listen_port', '1');
-- PAUSE and RESUME: pgbun.databases shows the pause.
SELECT pgbun.pause(current_database());
SELECT name, paused FROM pgbun.databases WHERE target = 'local' AND name = current_database();
SELECT pgbun.resume(current_database());
SELECT name, paused FROM pgbun.databases WHERE target = 'local' AND name = current_database();
SELECT pgbun.resume(current_database());
-- KILL closes the database's clients and servers and leaves it paused until RESUME.
SELECT dblink_connect('ext_pooled', :'pooled');
SELECT * FROM dblink('ext_pooled', 'SELECT 1') AS t(x int);
SELECT pgbun.kill(current_database());
SELECT name, paused, current_connections FROM pgbun.databases WHERE target = 'local' AND name = current_database();
SELECT pgbun.resume(current_database(), 'local');
SELECT name, paused FROM pgbun.databases WHERE target = 'local' AND name = current_database();
-- The pooled client was closed by the KILL.
DO $$
BEGIN
    PERFORM * FROM dblink('ext_pooled', 'SELECT 1') AS t(x int);
    RAISE NOTICE 'the pooled client still works';
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'the pooled client is gone';
END
$$;
SELECT dblink_disconnect('ext_pooled');
-- Names and values are quoted for the console: nothing after a quote or a ';' runs.
SELECT pgbun.pause('ext_nodb"; RELOAD; PAUSE "x');
SELECT pgbun.pause('ext_nodb''; RELOAD; --');
SELECT pgbun.set('query_wait_notify', '5''; PAUSE; SET query_wait_notify = ''9');
SELECT pgbun.set('query_wait_notify" = ''9''; PAUSE; SET "x', '1');
SELECT count(*) FILTER (WHERE paused) AS paused_databases FROM pgbun.databases WHERE target = 'local';
SELECT value = :'old_notify' AS unchanged FROM pgbun.config WHERE target = 'local' AND key = 'query_wait_notify';
-- NULL is refused, not sent.
SELECT pgbun.pause(NULL);
SELECT pgbun.resume(NULL);
SELECT pgbun.kill(NULL);
SELECT pgbun.set(NULL, '1');
SELECT pgbun.set('query_wait_notify', NULL);
-- A PAUSE that cannot finish within the target's timeout: a transaction holds
-- a server; the error says so and that the database stays paused.
SELECT dblink_connect('ext_hold', :'pooled');
SELECT dblink_exec('ext_hold', 'BEGIN');
SELECT * FROM dblink('ext_hold', 'SELECT 1') AS t(x int);
UPDATE pgbun.targets SET timeout = '1 second' WHERE name = 'local';
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT pgbun.pause(current_database());
\set SHOW_CONTEXT errors
UPDATE pgbun.targets SET timeout = DEFAULT WHERE name = 'local';
SELECT name, paused FROM pgbun.databases WHERE target = 'local' AND name = current_database();
SELECT dblink_exec('ext_hold', 'COMMIT');
SELECT pgbun.resume(current_database());
SELECT dblink_disconnect('ext_hold');
SELECT dblink_get_connections();
