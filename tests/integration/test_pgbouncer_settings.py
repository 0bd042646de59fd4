"""PgBouncer settings with an effect of their own: connect_query (per database),
server_fast_close and query_wait_notify."""

import threading
import time

import psycopg
import pytest

from conftest import IS_PGBOUNCER, _ini_lines, backend_pid, chown_to_run_user, wait_until

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="pgbun's behaviour")

ADMIN = {"admin_users": "postgres"}


def quoted(value):
    """A [databases] value in single quotes ('' for a quote)."""
    return "'" + value.replace("'", "''") + "'"


def with_connect_query(pg, query, **kw):
    return pg.entry(**kw) + " connect_query=" + quoted(query)


def setting(conn, name):
    return conn.execute("SELECT current_setting(%s, true)", (name,)).fetchone()[0]


def backend_alive(pg, pid):
    return bool(pg.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)))


def rewrite_config(bun, databases):
    bun.config_path.write_text(_ini_lines("pgbun", bun.config, databases, None))
    chown_to_run_user(bun.config_path)


# ---------------------------------------------------------------- connect_query

def test_connect_query_setting_is_seen_by_every_client_in_session_mode(start_pgbun, pg):
    bun = start_pgbun(config={"pool_mode": "session", "default_pool_size": 1},
                      databases={"pgbun_test": with_connect_query(pg, "SET pgbun.test = 'from_cq'")})
    with bun.connect() as first:
        pid = backend_pid(first)
        assert setting(first, "pgbun.test") == "from_cq"
        first.execute("SET pgbun.test = 'changed'")
    # The same server, after server_reset_query (DISCARD ALL): connect_query ran again.
    with bun.connect() as second:
        assert backend_pid(second) == pid
        assert setting(second, "pgbun.test") == "from_cq"
        assert second.execute("SHOW pgbun.test").fetchone()[0] == "from_cq"


def test_connect_query_setting_is_a_baseline_in_transaction_mode(start_pgbun, pg):
    query = "SET pgbun.test = 'from_cq'; SET search_path = cq_schema, public"
    bun = start_pgbun(config={"pool_mode": "transaction", "default_pool_size": 1},
                      databases={"pgbun_test": with_connect_query(pg, query)})
    a, b = bun.connect(), bun.connect()
    assert backend_pid(a) == backend_pid(b)  # one server for both
    for conn in (a, b):
        assert setting(conn, "pgbun.test") == "from_cq"
        assert setting(conn, "search_path") == "cq_schema, public"
    # A client's own value follows it; the other client still sees connect_query's.
    a.execute("SET search_path = a_schema")
    assert setting(b, "search_path") == "cq_schema, public"
    assert setting(a, "search_path") == "a_schema"
    assert setting(b, "search_path") == "cq_schema, public"
    assert setting(b, "pgbun.test") == "from_cq"


def test_failing_connect_query_is_logged_and_the_pool_serves_clients(start_pgbun, pg):
    query = "SELECT 'secret_marker_42' FROM no_such_table"
    bun = start_pgbun(config={"pool_mode": "session"},
                      databases={"pgbun_test": with_connect_query(pg, query)})
    with bun.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.execute("SELECT txid_current_if_assigned() IS NULL").fetchone() == (True,)
    log = bun.log_text()
    assert "connect_query failed" in log and "no_such_table" in log, log[-3000:]
    assert "secret_marker_42" not in log, "the query's text reached the log"


def test_connect_query_leaving_a_transaction_open_closes_the_server(start_pgbun, pg):
    bun = start_pgbun(config={"pool_mode": "session"},
                      databases={"pgbun_test": with_connect_query(pg, "BEGIN")})
    with pytest.raises(psycopg.Error) as err:
        with bun.connect() as conn:
            conn.execute("SELECT 1")
    assert "connect_query left a transaction open" in str(err.value)
    assert "connect_query left a transaction open" in bun.log_text()


def test_reload_with_a_new_connect_query_reaches_new_servers(start_pgbun, pg):
    bun = start_pgbun(config={**ADMIN, "pool_mode": "session"},
                      databases={"pgbun_test": with_connect_query(pg, "SET pgbun.test = 'one'")})
    with bun.connect() as conn:
        old_pid = backend_pid(conn)
        assert setting(conn, "pgbun.test") == "one"
    rewrite_config(bun, {"pgbun_test": with_connect_query(pg, "SET pgbun.test = 'two'")})
    with bun.connect(dbname="pgbun") as admin:
        admin.execute("RELOAD")
    with bun.connect() as conn:
        assert setting(conn, "pgbun.test") == "two"
        assert backend_pid(conn) != old_pid  # the server that ran the old query was retired
    wait_until(lambda: not backend_alive(pg, old_pid), timeout=10, what="the old server to close")


# ---------------------------------------------------------------- server_fast_close

def reconnect_during_transaction(bun):
    """A session-mode client inside a transaction; RECONNECT; the transaction ends. Its backend pid."""
    conn = bun.connect(autocommit=False)
    pid = backend_pid(conn)
    with bun.connect(dbname="pgbun") as admin:
        admin.execute("RECONNECT")
    assert conn.execute("SELECT 2").fetchone() == (2,)  # the running transaction is not interrupted
    conn.commit()
    return conn, pid


def test_server_fast_close_closes_a_session_server_at_the_end_of_its_transaction(start_pgbun, pg):
    bun = start_pgbun(config={**ADMIN, "pool_mode": "session", "server_fast_close": 1})
    conn, pid = reconnect_during_transaction(bun)
    wait_until(lambda: not backend_alive(pg, pid), timeout=10, what="the retired server to close")
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 3")
    assert "server_fast_close" in bun.log_text()
    with bun.connect() as fresh:  # a new session gets a new server
        assert backend_pid(fresh) != pid


def test_server_fast_close_closes_an_idle_session_at_once(start_pgbun, pg):
    bun = start_pgbun(config={**ADMIN, "pool_mode": "session", "server_fast_close": 1})
    conn = bun.connect()
    pid = backend_pid(conn)
    with bun.connect(dbname="pgbun") as admin:
        admin.execute("RECONNECT")
    wait_until(lambda: not backend_alive(pg, pid), timeout=10, what="the idle session's server to close")
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")


def test_without_server_fast_close_a_session_keeps_its_server(start_pgbun, pg):
    bun = start_pgbun(config={**ADMIN, "pool_mode": "session"})
    conn, pid = reconnect_during_transaction(bun)
    time.sleep(1)  # several janitor rounds
    assert backend_pid(conn) == pid
    conn.commit()
    conn.close()
    wait_until(lambda: not backend_alive(pg, pid), timeout=10, what="the server to close once released")


# ---------------------------------------------------------------- query_wait_notify

def queued_query_notices(bun, notify, until_notice):
    """pool_size 1: one client holds the server in a transaction while another's query waits.
    Returns the notices the waiting client got."""
    holder = bun.connect(autocommit=False)
    backend_pid(holder)
    waiter = bun.connect()
    notices = []
    waiter.add_notice_handler(lambda diag: notices.append((diag.severity, diag.sqlstate, diag.message_primary)))
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("row", waiter.execute("SELECT 7").fetchone()),
                         daemon=True)
    t.start()
    try:
        if until_notice:
            wait_until(lambda: notices, timeout=10, what="the queue notice")
        time.sleep(2 * notify if until_notice else 2.5)  # longer: no second notice for the same wait
    finally:
        holder.commit()
    t.join(10)
    assert not t.is_alive() and result.get("row") == (7,)
    return notices


def test_query_wait_notify_sends_one_notice_to_a_queued_client(start_pgbun):
    bun = start_pgbun(config={"pool_mode": "transaction", "default_pool_size": 1, "query_wait_notify": 1})
    notices = queued_query_notices(bun, 1, until_notice=True)
    assert len(notices) == 1, notices
    severity, sqlstate, message = notices[0]
    assert severity == "NOTICE" and sqlstate == "00000"
    assert "No server connection available" in message and "queued" in message


def test_query_wait_notify_zero_sends_no_notice(start_pgbun):
    bun = start_pgbun(config={"pool_mode": "transaction", "default_pool_size": 1, "query_wait_notify": 0})
    assert queued_query_notices(bun, 0, until_notice=False) == []
