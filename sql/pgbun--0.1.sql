-- pgbun extension 0.1: the admin console of one or more pgbun poolers, from SQL.
--
-- Every SHOW becomes a view over the poolers named in pgbun.targets, read
-- through dblink; RELOAD, PAUSE, RESUME, KILL and SET become functions. The
-- views run with the rights of the extension's owner (a superuser, whom
-- dblink lets connect without a password), so the role pgbun_monitor can read
-- them without seeing pgbun.targets, where connection strings may hold
-- passwords. See README.md next to this file.

\echo Use "CREATE EXTENSION pgbun CASCADE" to load this file. \quit

-- The role that may read the views. Roles belong to the cluster, not to a
-- database: it is made once and stays when the extension is dropped.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pgbun_monitor') THEN
        CREATE ROLE pgbun_monitor NOLOGIN;
    END IF;
END
$$;

-- ---------------------------------------------------------------- targets

CREATE TABLE pgbun.targets (
    name     text PRIMARY KEY CHECK (name <> ''),
    conninfo text NOT NULL,
    timeout  interval NOT NULL DEFAULT '10 seconds' CHECK (timeout > interval '0')
);
COMMENT ON TABLE pgbun.targets IS
    'pgbun poolers the views read: a name, a libpq connection string to its admin console (dbname=pgbun), '
    'and how long to wait for it';
COMMENT ON COLUMN pgbun.targets.name IS 'the name the views show in their target column and the functions take';
COMMENT ON COLUMN pgbun.targets.conninfo IS
    'libpq connection string (key=value or URI) to the pooler''s admin database pgbun, as a user in admin_users '
    '(or stats_users for the views alone)';
COMMENT ON COLUMN pgbun.targets.timeout IS
    'the longest wait to connect (libpq connect_timeout, unless conninfo sets one) and again for an answer';

-- The local pgbun, with its defaults: over the unix socket in /tmp, where pgbun
-- lets in the OS user it runs as with no password (PostgreSQL's, when both
-- run as postgres).
INSERT INTO pgbun.targets (name, conninfo) VALUES ('local', 'host=/tmp port=6432 dbname=pgbun user=pgbun');

-- pg_dump keeps the targets a DBA adds; 'local' is made by CREATE EXTENSION.
SELECT pg_catalog.pg_extension_config_dump('pgbun.targets', $$WHERE name <> 'local'$$);

-- ---------------------------------------------------------------- row types
--
-- One per SHOW, its columns by name and in order as pgbun answers them,
-- typed: counts and times in microseconds are bigint, percentages numeric,
-- moments timestamptz, yes/no and 0/1 flags boolean.

CREATE TYPE pgbun.show_pools AS (
    database text,
    "user" text,
    cl_active bigint,
    cl_waiting bigint,
    cl_active_cancel_req bigint,
    cl_waiting_cancel_req bigint,
    sv_active bigint,
    sv_active_cancel bigint,
    sv_being_canceled bigint,
    sv_idle bigint,
    sv_used bigint,
    sv_tested bigint,
    sv_login bigint,
    maxwait bigint,
    maxwait_us bigint,
    pool_mode text,
    load_balance_hosts text,
    reuse_efficiency_percent numeric,
    max_server_connections_used bigint,
    total_xact_count bigint,
    total_query_count bigint,
    query_p95_us bigint
);

CREATE TYPE pgbun.show_stats AS (
    database text,
    total_server_assignment_count bigint,
    total_xact_count bigint,
    total_query_count bigint,
    total_received bigint,
    total_sent bigint,
    total_xact_time bigint,
    total_query_time bigint,
    total_wait_time bigint,
    total_client_parse_count bigint,
    total_server_parse_count bigint,
    total_bind_count bigint,
    total_client_login_count bigint,
    avg_server_assignment_count bigint,
    avg_xact_count bigint,
    avg_query_count bigint,
    avg_recv bigint,
    avg_sent bigint,
    avg_xact_time bigint,
    avg_query_time bigint,
    avg_wait_time bigint,
    avg_client_parse_count bigint,
    avg_server_parse_count bigint,
    avg_bind_count bigint,
    avg_client_login_count bigint,
    total_server_connect_count bigint,
    reuse_efficiency_percent numeric,
    max_server_connections_used bigint,
    query_p50_us bigint,
    query_p95_us bigint,
    query_p99_us bigint
);

CREATE TYPE pgbun.show_stats_totals AS (
    database text,
    server_assignment_count bigint,
    xact_count bigint,
    query_count bigint,
    bytes_received bigint,
    bytes_sent bigint,
    xact_time bigint,
    query_time bigint,
    wait_time bigint,
    client_parse_count bigint,
    server_parse_count bigint,
    bind_count bigint,
    client_login_count bigint
);

-- SHOW CLIENTS and SHOW SERVERS have the same columns; each has its type so
-- that the type names the command.
CREATE TYPE pgbun.show_clients AS (
    type text,
    "user" text,
    database text,
    replication text,
    state text,
    addr text,
    port bigint,
    local_addr text,
    local_port bigint,
    connect_time timestamptz,
    request_time timestamptz,
    wait bigint,
    wait_us bigint,
    close_needed boolean,
    ptr text,
    link text,
    remote_pid bigint,
    tls text,
    application_name text,
    prepared_statements bigint,
    id bigint,
    pgbun_state text,
    state_us bigint,
    pinned text
);

CREATE TYPE pgbun.show_servers AS (
    type text,
    "user" text,
    database text,
    replication text,
    state text,
    addr text,
    port bigint,
    local_addr text,
    local_port bigint,
    connect_time timestamptz,
    request_time timestamptz,
    wait bigint,
    wait_us bigint,
    close_needed boolean,
    ptr text,
    link text,
    remote_pid bigint,
    tls text,
    application_name text,
    prepared_statements bigint,
    id bigint,
    pgbun_state text,
    state_us bigint,
    pinned text
);

CREATE TYPE pgbun.show_databases AS (
    name text,
    host text,
    port bigint,
    database text,
    force_user text,
    pool_size bigint,
    min_pool_size bigint,
    reserve_pool_size bigint,
    server_lifetime bigint,
    pool_mode text,
    load_balance_hosts text,
    max_connections bigint,
    current_connections bigint,
    max_client_connections bigint,
    current_client_connections bigint,
    paused boolean,
    disabled boolean
);

CREATE TYPE pgbun.show_users AS (
    name text,
    pool_size bigint,
    reserve_pool_size bigint,
    pool_mode text,
    max_user_connections bigint,
    current_connections bigint,
    max_user_client_connections bigint,
    current_client_connections bigint,
    secret_source text
);

CREATE TYPE pgbun.show_config AS (
    key text,
    value text,
    "default" text,
    changeable boolean
);

CREATE TYPE pgbun.show_lists AS (
    list text,
    items bigint
);

CREATE TYPE pgbun.show_mem AS (
    name text,
    size bigint,
    used bigint,
    free bigint,
    memtotal bigint
);

CREATE TYPE pgbun.show_version AS (
    version text
);

-- ---------------------------------------------------------------- plumbing
--
-- Every call to a pooler: connect (a named dblink connection), send the
-- command, wait for the answer in short sleeps (so that a cancel or
-- statement_timeout interrupts it, and the target's timeout bounds it),
-- read it, disconnect. dblink is called by its schema, looked up each time:
-- nothing depends on the caller's search_path.

-- dblink's schema, quoted.
CREATE FUNCTION pgbun._dblink() RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT quote_ident(n.nspname)
      FROM pg_extension AS e JOIN pg_namespace AS n ON n.oid = e.extnamespace
     WHERE e.extname = 'dblink'
$$;

-- The name of the dblink connection a call uses (one at a time per session).
CREATE FUNCTION pgbun._conn() RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT 'pgbun_extension'::text $$;

-- A target's connection string with connect_timeout (from its timeout) and
-- fallback_application_name added, unless it sets them itself.
CREATE FUNCTION pgbun._conninfo(conninfo text, timeout interval) RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    secs int := greatest(1, ceil(extract(epoch FROM timeout)))::int;
BEGIN
    IF conninfo ~* '^postgres(ql)?://' THEN
        IF conninfo !~* '[?&]connect_timeout=' THEN
            conninfo := conninfo || CASE WHEN strpos(conninfo, '?') > 0 THEN '&' ELSE '?' END
                        || 'connect_timeout=' || secs;
        END IF;
        IF conninfo !~* '[?&](fallback_)?application_name=' THEN
            conninfo := conninfo || '&fallback_application_name=pgbun-extension';
        END IF;
        RETURN conninfo;
    END IF;
    -- key=value: of a keyword given twice, libpq keeps the last.
    RETURN format('connect_timeout=%s fallback_application_name=pgbun-extension %s', secs, conninfo);
END
$$;

-- Closes the connection of _conn() if it is open.
CREATE FUNCTION pgbun._close() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dblink text := pgbun._dblink();
    open boolean;
BEGIN
    EXECUTE format('SELECT $1 = ANY (%s.dblink_get_connections())', dblink) INTO open USING pgbun._conn();
    IF open THEN
        EXECUTE format('SELECT %s.dblink_disconnect($1)', dblink) USING pgbun._conn();
    END IF;
END
$$;

-- Connects, sends command and waits until its answer is in (at most timeout).
-- Errors are the connection's or the wait's; the caller closes.
CREATE FUNCTION pgbun._send(conninfo text, timeout interval, command text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dblink text := pgbun._dblink();
    deadline timestamptz;
    nap float8 := 0.0005;
    status int;
    msg text;
BEGIN
    PERFORM pgbun._close();
    EXECUTE format('SELECT %s.dblink_connect($1, $2)', dblink) USING pgbun._conn(), pgbun._conninfo(conninfo, timeout);
    EXECUTE format('SELECT %s.dblink_send_query($1, $2)', dblink) INTO status USING pgbun._conn(), command;
    IF status <> 1 THEN
        EXECUTE format('SELECT %s.dblink_error_message($1)', dblink) INTO msg USING pgbun._conn();
        RAISE EXCEPTION 'could not send %', split_part(command, ' ', 1)
            USING ERRCODE = 'connection_failure', DETAIL = coalesce(msg, '');
    END IF;
    deadline := clock_timestamp() + timeout;
    LOOP
        EXECUTE format('SELECT %s.dblink_is_busy($1)', dblink) INTO status USING pgbun._conn();
        EXIT WHEN status = 0;
        IF clock_timestamp() >= deadline THEN
            RAISE EXCEPTION 'no answer to % within % s',
                            CASE WHEN command LIKE 'SHOW %' THEN command ELSE split_part(command, ' ', 1) END,
                            trim_scale(extract(epoch FROM timeout))
                USING ERRCODE = 'connection_failure',
                      HINT = CASE WHEN command LIKE 'PAUSE %'
                                  THEN 'The database stays paused while its servers finish; pgbun.resume() ends the pause.'
                                  ELSE 'The pooler may still carry the command out.' END;
        END IF;
        PERFORM pg_sleep(nap);
        nap := least(nap * 2, 0.05);
    END LOOP;
END
$$;

-- An error's detail on one line. libpq quotes pieces of a connection string
-- it cannot parse, which may hold a password: such details are replaced.
CREATE FUNCTION pgbun._detail(detail text) RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN detail ~ '(connection info string|connection option|URI|percent-encoded)'
            THEN 'the target''s conninfo in pgbun.targets is not a valid connection string'
        ELSE regexp_replace(coalesce(detail, ''), '\s+', ' ', 'g')
    END
$$;

-- The rows of one SHOW on one target, the SHOW named by the row type
-- (NULL::pgbun.show_pools for SHOW POOLS). A target that cannot be reached or
-- answers with an error gives one row: r NULL, error saying why. The views
-- call it; it runs as the extension's owner, but can only run these SHOWs.
CREATE FUNCTION pgbun._show(target text, rowtype anyelement, OUT r anyelement, OUT error text)
RETURNS SETOF record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
ROWS 20
AS $$
DECLARE
    t pgbun.targets;
    command text;
    coldef text;
    msg text;
    detail text;
BEGIN
    command := CASE pg_typeof(rowtype)
        WHEN 'pgbun.show_pools'::regtype THEN 'SHOW POOLS'
        WHEN 'pgbun.show_stats'::regtype THEN 'SHOW STATS'
        WHEN 'pgbun.show_stats_totals'::regtype THEN 'SHOW STATS_TOTALS'
        WHEN 'pgbun.show_clients'::regtype THEN 'SHOW CLIENTS'
        WHEN 'pgbun.show_servers'::regtype THEN 'SHOW SERVERS'
        WHEN 'pgbun.show_databases'::regtype THEN 'SHOW DATABASES'
        WHEN 'pgbun.show_users'::regtype THEN 'SHOW USERS'
        WHEN 'pgbun.show_config'::regtype THEN 'SHOW CONFIG'
        WHEN 'pgbun.show_lists'::regtype THEN 'SHOW LISTS'
        WHEN 'pgbun.show_mem'::regtype THEN 'SHOW MEM'
        WHEN 'pgbun.show_version'::regtype THEN 'SHOW VERSION'
    END;
    IF command IS NULL THEN
        RAISE EXCEPTION '% is not one of pgbun''s SHOW row types', pg_typeof(rowtype)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY a.attnum)
      INTO coldef
      FROM pg_attribute AS a JOIN pg_type AS ty ON ty.typrelid = a.attrelid
     WHERE ty.oid = pg_typeof(rowtype) AND a.attnum > 0 AND NOT a.attisdropped;
    SELECT * INTO t FROM pgbun.targets AS x WHERE x.name = target;
    IF NOT FOUND THEN
        r := NULL;
        error := format('no target named %s in pgbun.targets', coalesce(quote_literal(target), 'NULL'));
        RETURN NEXT;
        RETURN;
    END IF;
    BEGIN
        PERFORM pgbun._send(t.conninfo, t.timeout, command);
        RETURN QUERY EXECUTE format('SELECT ROW(d.*)::%s, NULL::text FROM %s.dblink_get_result($1) AS d(%s)',
                                    pg_typeof(rowtype), pgbun._dblink(), coldef)
            USING pgbun._conn();
        PERFORM pgbun._close();
    EXCEPTION
        WHEN query_canceled THEN
            PERFORM pgbun._close();
            RAISE;
        WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
            PERFORM pgbun._close();
            r := NULL;
            detail := pgbun._detail(detail);
            error := msg || CASE WHEN detail <> '' THEN ': ' || detail ELSE '' END;
            RETURN NEXT;
    END;
    RETURN;
END
$$;

-- Runs one command on one target and returns its command tag; an error names
-- the target. Only the functions below call it.
CREATE FUNCTION pgbun._command(target text, command text) RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t pgbun.targets;
    tag text;
    code text;
    msg text;
    detail text;
    hint text;
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'target must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO t FROM pgbun.targets AS x WHERE x.name = target;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no target named % in pgbun.targets', quote_literal(target)
            USING ERRCODE = 'undefined_object';
    END IF;
    BEGIN
        PERFORM pgbun._send(t.conninfo, t.timeout, command);
        EXECUTE format('SELECT status FROM %s.dblink_get_result($1) AS d(status text)', pgbun._dblink())
            INTO tag USING pgbun._conn();
        PERFORM pgbun._close();
    EXCEPTION
        WHEN query_canceled THEN
            PERFORM pgbun._close();
            RAISE;
        WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                                    detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
            PERFORM pgbun._close();
            msg := format('pgbun target "%s": %s', target, msg);
            detail := pgbun._detail(detail);
            -- RAISE sends an empty DETAIL or HINT as given: only those there are.
            IF detail <> '' AND hint <> '' THEN
                RAISE EXCEPTION USING ERRCODE = code, MESSAGE = msg, DETAIL = detail, HINT = hint;
            ELSIF detail <> '' THEN
                RAISE EXCEPTION USING ERRCODE = code, MESSAGE = msg, DETAIL = detail;
            ELSIF hint <> '' THEN
                RAISE EXCEPTION USING ERRCODE = code, MESSAGE = msg, HINT = hint;
            END IF;
            RAISE EXCEPTION USING ERRCODE = code, MESSAGE = msg;
    END;
    RETURN tag;
END
$$;

-- A database name or key as the console reads a quoted identifier.
CREATE FUNCTION pgbun._ident(value text, what text) RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', what USING ERRCODE = 'null_value_not_allowed';
    END IF;
    RETURN '"' || replace(value, '"', '""') || '"';
END
$$;

-- A value as the console reads a quoted string (no backslash escapes).
CREATE FUNCTION pgbun._literal(value text, what text) RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', what USING ERRCODE = 'null_value_not_allowed';
    END IF;
    RETURN '''' || replace(value, '''', '''''') || '''';
END
$$;

-- ---------------------------------------------------------------- commands

CREATE FUNCTION pgbun.reload(target text DEFAULT 'local') RETURNS text
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgbun._command(target, 'RELOAD') $$;
COMMENT ON FUNCTION pgbun.reload(text) IS
    'RELOAD on the target: re-reads its configuration file and auth_file; returns the command tag';

CREATE FUNCTION pgbun.pause(db text, target text DEFAULT 'local') RETURNS text
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgbun._command(target, 'PAUSE ' || pgbun._ident(db, 'db')) $$;
COMMENT ON FUNCTION pgbun.pause(text, text) IS
    'PAUSE db on the target: new queries wait; returns once every server of db is released '
    '(at most the target''s timeout)';

CREATE FUNCTION pgbun.resume(db text, target text DEFAULT 'local') RETURNS text
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgbun._command(target, 'RESUME ' || pgbun._ident(db, 'db')) $$;
COMMENT ON FUNCTION pgbun.resume(text, text) IS 'RESUME db on the target: ends a PAUSE or a KILL of db';

CREATE FUNCTION pgbun.kill(db text, target text DEFAULT 'local') RETURNS text
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgbun._command(target, 'KILL ' || pgbun._ident(db, 'db')) $$;
COMMENT ON FUNCTION pgbun.kill(text, text) IS
    'KILL db on the target: closes every client and server of db and leaves it paused until pgbun.resume(db)';

CREATE FUNCTION pgbun.set(key text, value text, target text DEFAULT 'local') RETURNS text
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgbun._command(target, 'SET ' || pgbun._ident(key, 'key') || ' = ' || pgbun._literal(value, 'value')) $$;
COMMENT ON FUNCTION pgbun.set(text, text, text) IS
    'SET key = value on the target, for a key marked changeable in pgbun.config; lasts until the next RELOAD or restart';

-- ---------------------------------------------------------------- views
--
-- One per SHOW: target, the SHOW's columns, error (NULL when the target
-- answered; else the only row of that target, its other columns NULL).
-- WHERE target = '...' reads that target alone.

CREATE VIEW pgbun.pools AS
    SELECT t.name AS target, (s.r).*, s.error
      FROM pgbun.targets AS t CROSS JOIN LATERAL pgbun._show(t.name, NULL::pgbun.show_pools) AS s;
COMMENT ON VIEW pgbun.pools IS 'SHOW POOLS of every target: one row per (database, user) pool';

CREATE VIEW pgbun.stats AS
    SELECT t.name AS target, (s.r).*, s.error
      FROM pgbun.targets AS t CROSS JOIN LATERAL pgbun._show(t.name, NULL::pgbun.show_stats) AS s;
COMMENT ON VIEW pgbun.stats IS 'SHOW STATS of every target: totals and last-period averages per database';

CREATE VIEW pgbun.stats_totals AS
    SELECT t.name AS target, (s.r).*, s.error
      FROM pgbun.targets AS t CROSS JOIN LATERAL pgbun._show(t.name, NULL::pgbun.show_stats_totals) AS s;
COMMENT ON VIEW pgbun.stats_totals IS 'SHOW STATS_TOTALS of every target: running totals per database';

CREATE VIEW pgbun.clients AS
    SELECT t.name AS target, (s.r).*, s.error
      FROM pgbun.targets AS t CROSS JOIN LATERAL pgbun._show(t.name, NULL::pgbun.show_clients) AS s;
COMMENT ON VIEW pgbun.clients IS 'SHOW CLIENTS of every target: one row per client connection';

CREATE VIEW pgbun.servers AS
    SELECT t.name AS target, (s.r).*, s.error
      FROM pgbun.targets AS t CROSS JOIN LATERAL pgbun._show(t.name, NULL::pgbun.show_servers) AS s;
COMMENT ON VIEW pgbun.servers IS 'SHOW SERVERS of every target: one row per server connection';

CREATE VIEW pgbun.databases AS
    SELECT t.name AS target, (s.r).*, s.error
      FROM pgbun.targets AS t CROSS JOIN LATERAL pgbun._show(t.name, NULL::pgbun.show_databases) AS s;
COMMENT ON VIEW pgbun.databases IS 'SHOW DATABASES of every target: the [databases] entries and their counts';

CREATE VIEW pgbun.users AS
    SELECT t.name AS target, (s.r).*, s.error
      FROM pgbun.targets AS t CROSS JOIN LATERAL pgbun._show(t.name, NULL::pgbun.show_users) AS s;
COMMENT ON VIEW pgbun.users IS 'SHOW USERS of every target: every user the pooler knows';

CREATE VIEW pgbun.config AS
    SELECT t.name AS target, (s.r).*, s.error
      FROM pgbun.targets AS t CROSS JOIN LATERAL pgbun._show(t.name, NULL::pgbun.show_config) AS s;
COMMENT ON VIEW pgbun.config IS 'SHOW CONFIG of every target: each key, its value, default and whether SET may change it';

CREATE VIEW pgbun.lists AS
    SELECT t.name AS target, (s.r).*, s.error
      FROM pgbun.targets AS t CROSS JOIN LATERAL pgbun._show(t.name, NULL::pgbun.show_lists) AS s;
COMMENT ON VIEW pgbun.lists IS 'SHOW LISTS of every target: object counts';

CREATE VIEW pgbun.mem AS
    SELECT t.name AS target, (s.r).*, s.error
      FROM pgbun.targets AS t CROSS JOIN LATERAL pgbun._show(t.name, NULL::pgbun.show_mem) AS s;
COMMENT ON VIEW pgbun.mem IS 'SHOW MEM of every target: memory per object kind';

CREATE VIEW pgbun.version AS
    SELECT t.name AS target, (s.r).*, s.error
      FROM pgbun.targets AS t CROSS JOIN LATERAL pgbun._show(t.name, NULL::pgbun.show_version) AS s;
COMMENT ON VIEW pgbun.version IS 'SHOW VERSION of every target';

-- Is each pool sized right? Per (target, database, user) pool, from SHOW
-- POOLS, DATABASES, USERS, CONFIG and STATS of that target. The console's own
-- pools (pgbun, and pgbouncer while pgbouncer_alias is on) are left out.
CREATE VIEW pgbun.pool_efficiency AS
    SELECT t.name AS target, e.*
      FROM pgbun.targets AS t
     CROSS JOIN LATERAL (
        WITH p AS (SELECT (s.r).*, s.error FROM pgbun._show(t.name, NULL::pgbun.show_pools) AS s),
             d AS (SELECT (s.r).*, s.error FROM pgbun._show(t.name, NULL::pgbun.show_databases) AS s),
             u AS (SELECT (s.r).*, s.error FROM pgbun._show(t.name, NULL::pgbun.show_users) AS s),
             c AS (SELECT (s.r).*, s.error FROM pgbun._show(t.name, NULL::pgbun.show_config) AS s),
             st AS (SELECT (s.r).*, s.error FROM pgbun._show(t.name, NULL::pgbun.show_stats) AS s),
             -- An error of the other SHOWs (the target went away in between) goes on every row.
             other AS (SELECT string_agg(x.error, '; ') AS error
                         FROM (SELECT d.error FROM d UNION ALL SELECT u.error FROM u
                               UNION ALL SELECT c.error FROM c UNION ALL SELECT st.error FROM st) AS x),
             cfg AS (SELECT max(c.value) FILTER (WHERE c.key = 'default_pool_size')::bigint AS default_pool_size,
                            coalesce(bool_or(c.key = 'pgbouncer_alias' AND c.value = '1'), false) AS alias
                       FROM c),
             -- A [users] pool_size beats the database's; SHOW USERS shows default_pool_size for a user with none.
             sized AS (
                SELECT p.*,
                       CASE WHEN u.pool_size IS DISTINCT FROM cfg.default_pool_size
                            THEN u.pool_size ELSE d.pool_size END AS size,
                       p.maxwait * 1000000 + p.maxwait_us AS wait_us,
                       st.avg_wait_time AS db_avg_wait_us,
                       st.total_wait_time AS db_total_wait_us
                  FROM p
                 CROSS JOIN cfg
                  LEFT JOIN d ON d.name = p.database
                  LEFT JOIN u ON u.name = p."user"
                  LEFT JOIN st ON st.database = p.database
                 WHERE p.error IS NOT NULL
                    OR NOT (p.database = 'pgbun' OR (p.database = 'pgbouncer' AND cfg.alias))
             )
        SELECT s.database,
               s."user",
               s.pool_mode,
               s.size AS pool_size,
               s.max_server_connections_used,
               CASE WHEN s.size > 0 THEN round(100.0 * s.max_server_connections_used / s.size, 1) END
                   AS peak_percent_of_pool_size,
               s.sv_active + s.sv_idle + s.sv_used + s.sv_tested + s.sv_login AS server_connections,
               s.cl_waiting,
               s.wait_us AS maxwait_us,
               s.db_avg_wait_us AS database_avg_wait_us,
               s.db_total_wait_us AS database_total_wait_us,
               s.reuse_efficiency_percent,
               s.query_p95_us,
               CASE
                   WHEN s.error IS NOT NULL OR s.size IS NULL OR s.size <= 0 THEN NULL
                   WHEN s.max_server_connections_used >= s.size
                        AND (s.cl_waiting > 0 OR s.wait_us > 0 OR s.db_avg_wait_us > 0) THEN 'too small'
                   WHEN s.max_server_connections_used >= s.size THEN 'at capacity'
                   WHEN s.max_server_connections_used * 2 < s.size THEN 'oversized'
                   ELSE 'ok'
               END AS verdict,
               coalesce(s.error, (SELECT other.error FROM other)) AS error
          FROM sized AS s
     ) AS e;
COMMENT ON VIEW pgbun.pool_efficiency IS
    'per pool of every target: pool size, peak server connections used, waits, reuse and p95 latency, and a verdict '
    '(too small, at capacity, oversized, ok)';

-- ---------------------------------------------------------------- rights
--
-- pgbun_monitor: the views (and the one function they call, which runs only
-- SHOWs), the names of the targets, never their connection strings. The
-- commands: superusers, and whoever a superuser grants EXECUTE (with USAGE on
-- the schema).

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgbun FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA pgbun FROM PUBLIC;
GRANT USAGE ON SCHEMA pgbun TO pgbun_monitor;
GRANT EXECUTE ON FUNCTION pgbun._show(text, anyelement) TO pgbun_monitor;
GRANT SELECT (name) ON pgbun.targets TO pgbun_monitor;
GRANT SELECT ON pgbun.pools, pgbun.stats, pgbun.stats_totals, pgbun.clients, pgbun.servers, pgbun.databases,
                pgbun.users, pgbun.config, pgbun.lists, pgbun.mem, pgbun.version, pgbun.pool_efficiency
    TO pgbun_monitor;
