"""Per-pool settings and the pool's shape: pool_mode and pool_size by user and
database, statement mode, min_pool_size, the reserve pool."""

import threading
import time

import psycopg
import pytest

from conftest import IS_PGBOUNCER, backend_pid, server_backends, wait_until

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
