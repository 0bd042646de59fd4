"""Timeouts: each one fires, is logged with its name, and tells the client in
words. Deadlines are short (1 s) and checked with generous margins."""

import socket
import threading
import time

import psycopg
import pytest

from conftest import IS_PGBOUNCER, backend_pid, error_fields, wait_until

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="pgbun's own timeout texts")



def backend_alive(pg, pid):
    with pg.connect() as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()[0] == 1


def assert_closed_by(bun, conn, sql, timeout_name):
    """Running sql on conn fails because pgbun closed it for timeout_name, and says so in its log."""
    with pytest.raises(psycopg.OperationalError) as err:
        conn.execute(sql)
    assert timeout_name in str(err.value)
    assert timeout_name in bun.log_text()


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_client_idle_timeout_closes_an_idle_client(start_pgbun, mode):
    bun = start_pgbun(config={"client_idle_timeout": 1, "pool_mode": mode})
    conn = bun.connect()
    conn.execute("SELECT 1")
    busy = bun.connect()
    for _ in range(8):  # 3.2 s: the busy client never idles for a second
        busy.execute("SELECT 1")
        time.sleep(0.4)
    assert_closed_by(bun, conn, "SELECT 1", "client_idle_timeout")
    assert busy.execute("SELECT 2").fetchone() == (2,)


def test_client_in_a_long_query_is_not_idle(start_pgbun):
    bun = start_pgbun(config={"client_idle_timeout": 1})
    with bun.connect() as conn:
        assert conn.execute("SELECT pg_sleep(2.5), 1").fetchone()[1] == 1


def test_query_wait_timeout_fails_a_client_that_waits_too_long(start_pgbun):
    bun = start_pgbun(config={"query_wait_timeout": 1, "default_pool_size": 1})
    holder = bun.connect()
    holder.execute("SELECT 1")  # session mode: holds the only server
    start = time.monotonic()
    with pytest.raises(psycopg.OperationalError) as err:
        with bun.connect() as waiter:
            waiter.execute("SELECT 1")
    elapsed = time.monotonic() - start
    sqlstate, text = error_fields(err.value)
    assert "query_wait_timeout" in text
    assert elapsed < 8, f"took {elapsed:.1f} s"
    assert holder.execute("SELECT 2").fetchone() == (2,)


def test_server_idle_timeout_closes_unused_servers(start_pgbun, pg):
    bun = start_pgbun(config={"server_idle_timeout": 1, "pool_mode": "transaction"})
    with bun.connect() as conn:
        pid = backend_pid(conn)
    assert backend_alive(pg, pid)
    wait_until(lambda: not backend_alive(pg, pid), timeout=10, interval=0.2,
               what="the idle server connection to be closed")
    assert "server_idle_timeout" in bun.log_text()
    with bun.connect() as conn:  # and a new one is opened on demand
        assert backend_pid(conn) != pid


def test_server_lifetime_replaces_old_servers_between_transactions(start_pgbun, pg):
    bun = start_pgbun(config={"server_lifetime": 1, "pool_mode": "transaction",
                              "default_pool_size": 1})
    conn = bun.connect()
    first = backend_pid(conn)
    assert backend_pid(conn) == first  # reused while young
    time.sleep(2)
    wait_until(lambda: backend_pid(conn) != first, timeout=10, interval=0.3,
               what="a fresh server after server_lifetime")
    assert "server_lifetime" in bun.log_text()


def test_server_lifetime_never_interrupts_a_session(start_pgbun):
    bun = start_pgbun(config={"server_lifetime": 1})
    conn = bun.connect()
    pid = backend_pid(conn)
    time.sleep(2)
    assert backend_pid(conn) == pid  # session mode: the client keeps its server


def test_idle_transaction_timeout_ends_the_client_and_rolls_back(start_pgbun, pg):
    pg.sql("CREATE TABLE IF NOT EXISTS idle_tx (note text)")
    pg.sql("GRANT ALL ON idle_tx TO public")
    bun = start_pgbun(config={"idle_transaction_timeout": 1})
    conn = bun.connect(autocommit=False)
    conn.execute("INSERT INTO idle_tx VALUES ('must not be committed')")
    time.sleep(2.5)
    assert_closed_by(bun, conn, "COMMIT", "idle_transaction_timeout")
    with pg.connect() as direct:
        assert direct.execute("SELECT count(*) FROM idle_tx").fetchone()[0] == 0
        assert direct.execute("SELECT count(*) FROM pg_stat_activity "
                              "WHERE state LIKE 'idle in transaction%'").fetchone()[0] == 0


def test_idle_transaction_timeout_spares_a_busy_transaction(start_pgbun):
    bun = start_pgbun(config={"idle_transaction_timeout": 1})
    conn = bun.connect(autocommit=False)
    conn.execute("SELECT pg_sleep(2)")  # running, not idle
    for _ in range(3):
        conn.execute("SELECT 1")
        time.sleep(0.4)
    conn.commit()


def test_timeouts_apply_to_live_pools_after_reload(start_pgbun, pg):
    import os
    import signal

    from conftest import _ini_lines, chown_to_run_user

    bun = start_pgbun()
    conn = bun.connect()
    conn.execute("SELECT 1")
    cfg = {"listen_addr": "127.0.0.1", "listen_port": bun.port, "unix_socket_dir": bun.unix_dir,
           "auth_type": "trust", "auth_file": str(bun.workdir / "userlist.txt"),
           "client_idle_timeout": 1}
    bun.config_path.write_text(_ini_lines("pgbun", cfg, {"pgbun_test": pg.entry()}, None))
    chown_to_run_user(bun.config_path)
    os.kill(bun.proc.pid, signal.SIGHUP)
    wait_until(lambda: "configuration reloaded" in bun.log_text(), timeout=10, what="the reload")
    time.sleep(2.5)
    assert_closed_by(bun, conn, "SELECT 1", "client_idle_timeout")


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_query_timeout_cancels_the_query_and_says_why(start_pgbun, mode):
    bun = start_pgbun(config={"query_timeout": 1, "pool_mode": mode})
    conn = bun.connect()
    start = time.monotonic()
    with pytest.raises(psycopg.errors.QueryCanceled) as err:
        conn.execute("SELECT pg_sleep(10)")
    elapsed = time.monotonic() - start
    assert "query_timeout" in str(err.value)
    assert elapsed < 6, f"the cancel took {elapsed:.1f} s"
    assert "query_timeout" in bun.log_text()
    # the connection and its server stay usable
    assert conn.execute("SELECT 1").fetchone() == (1,)


def test_query_timeout_spares_short_queries(start_pgbun):
    bun = start_pgbun(config={"query_timeout": 1})
    conn = bun.connect()
    for _ in range(8):  # 2.4 s of short queries
        assert conn.execute("SELECT pg_sleep(0.3), 1").fetchone()[1] == 1


def test_transaction_timeout_ends_a_long_transaction_and_rolls_it_back(start_pgbun, pg):
    pg.sql("CREATE TABLE IF NOT EXISTS long_tx (note text)")
    pg.sql("GRANT ALL ON long_tx TO public")
    bun = start_pgbun(config={"transaction_timeout": 1})
    conn = bun.connect(autocommit=False)
    conn.execute("INSERT INTO long_tx VALUES ('must not be committed')")
    start = time.monotonic()
    with pytest.raises(psycopg.OperationalError) as err:
        conn.execute("SELECT pg_sleep(10)")  # busy, but the transaction is too old
    assert "transaction_timeout" in str(err.value)
    assert time.monotonic() - start < 8
    with pg.connect() as direct:
        wait_until(lambda: direct.execute("SELECT count(*) FROM pg_stat_activity "
                                          "WHERE query LIKE 'SELECT pg_sleep(10)%'").fetchone()[0] == 0,
                   timeout=10, what="the backend to be closed")
        assert direct.execute("SELECT count(*) FROM long_tx").fetchone()[0] == 0


def test_transaction_timeout_spares_autocommit_queries(start_pgbun):
    bun = start_pgbun(config={"transaction_timeout": 1})
    conn = bun.connect()
    for _ in range(6):
        assert conn.execute("SELECT pg_sleep(0.4), 1").fetchone()[1] == 1


@pytest.mark.timeout(30)
def test_server_connect_timeout_fails_a_login_to_a_silent_server(start_pgbun, pg):
    """A server that accepts the TCP connection and never answers the startup packet."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    try:
        # retried like a server that is down, until query_wait_timeout gives up with the reason
        bun = start_pgbun(config={"server_connect_timeout": 1, "query_wait_timeout": 3},
                          databases={"silent": f"host=127.0.0.1 port={port} dbname=x",
                                     "pgbun_test": pg.entry()})
        start = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as err:
            bun.connect(dbname="silent")
        assert time.monotonic() - start < 8
        assert "server_connect_timeout" in str(err.value)
        assert f"127.0.0.1:{port}" in str(err.value)
        assert "server_connect_timeout" in bun.log_text()
        with bun.connect() as conn:  # other pools are unaffected
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        silent.close()
