"""Per-pool settings and the pool's shape: pool_mode and pool_size by user and
database, statement mode, min_pool_size, the reserve pool, max_db_connections,
max_user_connections and server_check_query."""

import os
import signal
import threading
import time

import psycopg
import pytest

from conftest import (IS_PGBOUNCER, TEST_WORKERS, _ini_lines, backend_pid, backend_ports, chown_to_run_user,
                      held_backends, server_backends, wait_until)

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="pgbun's behaviour")


def test_user_entry_pool_mode_wins_over_database_and_global(start_pgbun, pg):
    bun = start_pgbun(config={"pool_mode": "session", "default_pool_size": 1},
                      databases={"pgbun_test": pg.entry(pool_mode="session")},
                      users={"postgres": "pool_mode=transaction"})
    a, b = bun.connect(), bun.connect()
    # transaction pooling with one server: both clients are served by it in turn
    assert backend_pid(a) == backend_pid(b)


def test_database_entry_pool_mode_wins_over_global(start_pgbun, pg):
    bun = start_pgbun(config={"pool_mode": "session", "default_pool_size": 1},
                      databases={"pgbun_test": pg.entry(pool_mode="transaction")})
    a, b = bun.connect(), bun.connect()
    assert backend_pid(a) == backend_pid(b)


def test_statement_mode_refuses_transaction_blocks(start_pgbun):
    bun = start_pgbun(config={"pool_mode": "statement"})
    conn = bun.connect()
    assert conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.Error) as err:
        conn.execute("BEGIN")
        conn.execute("SELECT 2")
    assert "transaction blocks not allowed in statement pooling mode" in str(err.value)
    with bun.connect() as other:  # the pool is fine
        assert other.execute("SELECT 3").fetchone() == (3,)


def test_min_pool_size_keeps_servers_open(start_pgbun, pg):
    bun = start_pgbun(config={"min_pool_size": 3, "pool_mode": "transaction", "server_idle_timeout": 1})
    with bun.connect() as conn:
        conn.execute("SELECT 1")  # the pool exists from the first login on
    wait_until(lambda: server_backends(pg) == 3, timeout=10, what="3 servers to be open")
    time.sleep(2)  # server_idle_timeout does not go below min_pool_size
    assert server_backends(pg) == 3


def test_reserve_pool_serves_clients_that_waited_reserve_pool_timeout(start_pgbun, pg):
    bun = start_pgbun(config={"default_pool_size": 1, "reserve_pool_size": 1, "reserve_pool_timeout": 1})
    holder = bun.connect()
    backend_pid(holder)  # session mode: holds the one regular server
    result = {}

    def waiter():
        with bun.connect() as conn:
            start = time.monotonic()
            result["pid"] = backend_pid(conn)
            result["waited"] = time.monotonic() - start

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    t.join(10)
    assert "pid" in result, "the waiting client was not served by the reserve"
    assert result["pid"] != backend_pid(holder)
    assert result["waited"] >= 0.5, "the reserve opened before reserve_pool_timeout"
    assert server_backends(pg) <= 2


def _hammer(bun, plan, seconds=0.3, rounds=3):
    """Runs each (dbname, user) of plan in its own thread, `rounds` queries of
    pg_sleep(seconds) in transaction mode; returns the errors seen."""
    errors = []

    def worker(dbname, user):
        try:
            with bun.connect(dbname=dbname, user=user) as conn:
                for _ in range(rounds):
                    conn.execute("SELECT pg_sleep(%s)", (seconds,))
        except Exception as e:  # noqa: BLE001 - reported by the test
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=args, daemon=True) for args in plan]
    for t in threads:
        t.start()
    return threads, errors


def _peak_backends(pg, bun, threads, dbname="pgbun_test"):
    """The most backends seen on dbname while the threads run, counting only
    those on a connection bun still holds: a backend pgbun has just closed to
    hand its slot on may still be listed next to the new one until it has
    noticed and exited."""
    peak = 0
    deadline = time.monotonic() + 30
    with pg.connect() as conn:
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
            peak = max(peak, held_backends(backend_ports(conn, dbname), bun.proc.pid, pg))
            time.sleep(0.05)
    for t in threads:
        t.join(5)
    assert not any(t.is_alive() for t in threads), "clients did not finish"
    return peak


@pytest.mark.parametrize("where", ["global", "database entry"])
def test_max_db_connections_caps_the_servers_of_all_users_of_a_database(start_pgbun, pg, where):
    config = {"pool_mode": "transaction", "default_pool_size": 4}
    entry = pg.entry()
    if where == "global":
        config["max_db_connections"] = 2
    else:
        entry = pg.entry(max_db_connections=2)
    bun = start_pgbun(config=config, databases={"pgbun_test": entry})
    plan = [("pgbun_test", "postgres")] * 3 + [("pgbun_test", "md5user")] * 3
    threads, errors = _hammer(bun, plan)
    peak = _peak_backends(pg, bun, threads)
    assert errors == []
    assert 1 <= peak <= 2, f"{peak} server connections with max_db_connections = 2"


@pytest.mark.parametrize("where", ["global", "user entry"])
def test_max_user_connections_caps_a_user_across_databases(start_pgbun, pg, where):
    config = {"pool_mode": "transaction", "default_pool_size": 4}
    users = None
    if where == "global":
        config["max_user_connections"] = 2
    else:
        users = {"postgres": "max_user_connections=2"}
    bun = start_pgbun(config=config, databases={"db_a": pg.entry(), "db_b": pg.entry()}, users=users)
    plan = [("db_a", "postgres")] * 3 + [("db_b", "postgres")] * 3
    threads, errors = _hammer(bun, plan)
    peak = _peak_backends(pg, bun, threads)
    assert errors == []
    assert 1 <= peak <= 2, f"{peak} server connections with max_user_connections = 2"


def test_max_db_connections_closes_another_pools_idle_server_to_make_room(start_pgbun, pg):
    bun = start_pgbun(config={"pool_mode": "transaction", "max_db_connections": 1,
                              "server_idle_timeout": 600})
    with bun.connect(user="postgres") as a:
        first = backend_pid(a)  # postgres's pool now holds the database's one server, idle
    with bun.connect(user="md5user") as b:
        start = time.monotonic()
        second = backend_pid(b)
        waited = time.monotonic() - start
    assert second != first
    assert waited < 10, "md5user waited for the idle server to time out instead of taking its slot"
    assert "max_db_connections: closed while idle" in bun.log_text()
    assert server_backends(pg) <= 1


def _held_back(start_pgbun, wait):
    """max_db_connections = 1 and postgres holds the one server in a transaction; md5user
    waits for it in a thread. Returns (bun, holder, thread, result) once `wait` s passed
    with md5user unserved."""
    bun = start_pgbun(config={"pool_mode": "transaction", "max_db_connections": 1})
    holder = bun.connect(user="postgres", autocommit=False)
    holder.execute("SELECT 1")  # in a transaction: holds the only server
    result = {}

    def waiter():
        with bun.connect(user="md5user") as conn:
            result["pid"] = backend_pid(conn)

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    time.sleep(wait)
    assert "pid" not in result, "the second user got a server past max_db_connections"
    return bun, holder, t, result


def test_a_limited_pool_is_served_when_another_pool_releases_its_server(start_pgbun, pg):
    """The other pool's server is busy, not idle: the waiting client gets the slot once it frees."""
    bun, holder, t, result = _held_back(start_pgbun, 1)
    holder.commit()  # released: idle in postgres's pool, then handed over
    t.join(10)
    assert "pid" in result, "the waiting user was not served after the slot freed"
    assert server_backends(pg) <= 1


def _check_seq(pg, name):
    pg.sql(f"DROP SEQUENCE IF EXISTS {name}; CREATE SEQUENCE {name}")
    return lambda: pg.sql(f"SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {name}")[0][0]


@pytest.mark.parametrize("delay, checks", [(0, 4), (30, 0)])
def test_server_check_query_runs_on_servers_unused_for_server_check_delay(start_pgbun, pg, delay, checks):
    calls = _check_seq(pg, f"pgbun_check_{delay}")
    bun = start_pgbun(config={"pool_mode": "transaction", "default_pool_size": 1,
                              "server_check_delay": delay,
                              "server_check_query": f"select nextval('pgbun_check_{delay}')"})
    with bun.connect() as conn:
        pids = {backend_pid(conn) for _ in range(5)}
    assert len(pids) == 1, "a passing check must keep the server"
    # The first assignment follows the login, which proved the server alive.
    assert calls() == checks


def test_server_check_query_runs_after_server_check_delay_of_idleness(start_pgbun, pg):
    calls = _check_seq(pg, "pgbun_check_delay")
    bun = start_pgbun(config={"pool_mode": "transaction", "default_pool_size": 1, "min_pool_size": 1,
                              "server_check_delay": 1,
                              "server_check_query": "select nextval('pgbun_check_delay')"})
    with bun.connect() as conn:
        first = backend_pid(conn)
        backend_pid(conn)
        assert calls() == 0, "a server used 1 s ago or less is not checked"
        time.sleep(1.5)
        assert backend_pid(conn) == first
        assert calls() == 1


def test_failing_server_check_replaces_the_server_and_the_client_never_sees_it(start_pgbun, pg):
    bun = start_pgbun(config={"pool_mode": "transaction", "default_pool_size": 1,
                              "server_check_delay": 0, "server_check_query": "select 1/0"})
    with bun.connect() as conn:
        first = backend_pid(conn)
        second = backend_pid(conn)  # the check fails: a new server serves it
        assert conn.execute("SELECT 42").fetchone() == (42,)
    assert first != second
    assert "server_check_query failed: division by zero" in bun.log_text()
    wait_until(lambda: server_backends(pg) <= 1, timeout=10, what="failed servers to be closed")


@pytest.mark.parametrize("query, checked", [("", False), ("select 1", True), ("<empty>", True)])
def test_empty_server_check_query_disables_the_check(start_pgbun, pg, query, checked):
    bun = start_pgbun(config={"pool_mode": "transaction", "default_pool_size": 1,
                              "server_check_delay": 0, "server_check_query": query}, args=["-v"])
    with bun.connect() as conn:
        assert len({backend_pid(conn) for _ in range(3)}) == 1
    assert ("running server_check_query" in bun.log_text()) == checked


def test_a_busy_pool_does_not_keep_a_shared_limit_to_itself(start_pgbun, pg):
    """max_db_connections = 1: three postgres clients loop without pause, so that
    pool always has a queue; md5user's one query must still get the slot."""
    bun = start_pgbun(config={"pool_mode": "transaction", "max_db_connections": 1, "query_wait_timeout": 30})
    stop = threading.Event()
    errors = []

    def loop():
        try:
            with bun.connect(prepare_threshold=None) as conn:  # no named statements in transaction mode
                while not stop.is_set():
                    conn.execute("SELECT pg_sleep(0.02)")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    busy = [threading.Thread(target=loop, daemon=True) for _ in range(3)]
    for t in busy:
        t.start()
    try:
        time.sleep(0.5)
        with bun.connect(user="md5user") as other:
            start = time.monotonic()
            assert other.execute("SELECT 7").fetchone() == (7,)
            waited = time.monotonic() - start
    finally:
        stop.set()
        for t in busy:
            t.join(10)
    assert errors == []
    assert waited < 10, f"md5user waited {waited:.1f} s behind a pool that always had a queue"
    log = bun.log_text()
    # With several workers the slot may go to md5user's pool on another worker, which is not named.
    assert "handing the connection's slot to pool pgbun_test/md5user" in log or (
        TEST_WORKERS > 1 and "handing the connection's slot to a pool of another worker" in log), log


def test_reload_raising_a_limit_serves_the_clients_it_held_back(start_pgbun, pg):
    bun, holder, t, result = _held_back(start_pgbun, 0.5)
    cfg = dict(bun.config, max_db_connections=2)
    bun.config_path.write_text(_ini_lines("pgbun", cfg, {"pgbun_test": pg.entry()}, None))
    chown_to_run_user(bun.config_path)
    os.kill(bun.proc.pid, signal.SIGHUP)
    t.join(10)
    assert "pid" in result, "the client held back by the old limit was not served after the reload"
    holder.rollback()
