"""Session pooling: one server per client until it leaves, reset, reuse, caps, FIFO."""

import threading
import time

import pytest

from conftest import backend_pid, wait_until



def run_threads(targets, timeout=30):
    threads = [threading.Thread(target=t, daemon=True) for t in targets]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "client threads did not finish"


def pgbun_backends(pg):
    """Server connections PostgreSQL sees for the pgbun_test database (not ours)."""
    return pg.sql("SELECT pid FROM pg_stat_activity WHERE datname = 'pgbun_test' "
                  "AND usename = 'postgres' AND pid <> pg_backend_pid() "
                  "AND client_addr IS NOT NULL")


def test_two_successive_clients_share_one_backend_in_session_mode(start_pgbun):
    bun = start_pgbun(config={"default_pool_size": 1})
    with bun.connect() as a:
        pid_a = backend_pid(a)
    with bun.connect() as b:
        pid_b = backend_pid(b)
    assert pid_a == pid_b


def test_idle_server_is_reused_even_when_the_pool_could_grow(start_pgbun):
    # One worker: with several, a worker opens its own server while the pool
    # is under pool_size rather than borrow another worker's idle one (README,
    # Workers).
    bun = start_pgbun(config={"default_pool_size": 10, "workers": 1})
    pids = []
    for _ in range(5):
        with bun.connect() as conn:
            pids.append(backend_pid(conn))
        time.sleep(0.2)  # let the reset query finish
    assert len(set(pids)) == 1, pids


def test_client_keeps_its_server_for_the_whole_session(bun):
    with bun.connect() as conn:
        pids = {backend_pid(conn) for _ in range(10)}
        conn.execute("CREATE TEMP TABLE mine (x int)")
        conn.execute("INSERT INTO mine VALUES (1)")
        assert conn.execute("SELECT x FROM mine").fetchone() == (1,)
    assert len(pids) == 1


def test_concurrent_clients_get_different_servers(bun):
    with bun.connect() as a, bun.connect() as b:
        assert backend_pid(a) != backend_pid(b)


def test_server_reset_query_clears_session_state_between_clients(start_pgbun):
    bun = start_pgbun(config={"default_pool_size": 1})
    with bun.connect() as a:
        pid = backend_pid(a)
        a.execute("SET work_mem = '7MB'")
        a.execute("CREATE TEMP TABLE leftover (x int)")
        a.execute("PREPARE leftover_stmt AS SELECT 1")
    with bun.connect() as b:
        assert backend_pid(b) == pid
        assert b.execute("SHOW work_mem").fetchone()[0] != "7MB"
        assert b.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)
        assert b.execute("SELECT to_regclass('pg_temp.leftover')").fetchone() == (None,)


def test_custom_server_reset_query_runs_when_a_client_leaves(start_pgbun):
    bun = start_pgbun(config={"default_pool_size": 1,
                              "server_reset_query": "RESET work_mem; DEALLOCATE ALL"})
    with bun.connect() as a:
        a.execute("SET work_mem = '9MB'")
        a.execute("SET maintenance_work_mem = '99MB'")
    with bun.connect() as b:
        assert b.execute("SHOW work_mem").fetchone()[0] != "9MB"
        # only what the configured query resets is reset
        assert b.execute("SHOW maintenance_work_mem").fetchone()[0] == "99MB"


def test_client_that_leaves_inside_a_transaction_does_not_leak_it(start_pgbun):
    bun = start_pgbun(config={"default_pool_size": 1})
    a = bun.connect(autocommit=False)
    a.execute("INSERT INTO txn_log (client_id, amount, note) VALUES (5150, 1, 'uncommitted')")
    a.close()  # leaves with the transaction open
    with bun.connect() as b:
        assert b.execute("SELECT count(*) FROM txn_log WHERE client_id = 5150").fetchone() == (0,)
        assert b.info.transaction_status.name == "IDLE"


def test_pool_size_2_with_5_concurrent_clients_makes_3_wait_and_all_finish(start_pgbun, pg):
    bun = start_pgbun(config={"default_pool_size": 2})
    results, errors = [], []
    peak = [0]
    lock = threading.Lock()

    def client():
        try:
            with bun.connect() as conn:
                row = conn.execute("SELECT pg_backend_pid(), pg_sleep(1)").fetchone()
                with lock:
                    results.append(row[0])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def watch():
        while len(results) + len(errors) < 5:
            peak[0] = max(peak[0], len(pgbun_backends(pg)))
            time.sleep(0.1)

    start = time.monotonic()
    run_threads([client] * 5 + [watch], timeout=30)
    elapsed = time.monotonic() - start
    assert not errors, errors
    assert len(results) == 5
    assert len(set(results)) <= 2, f"more than 2 backends used: {results}"
    # 2 run, 2 wait one round, 1 waits two rounds: about 3 s in all
    assert elapsed >= 2.5, f"clients did not wait for the 2 servers (took {elapsed:.2f}s)"
    assert elapsed < 15
    assert peak[0] <= 2, f"PostgreSQL saw {peak[0]} pgbun connections"


def test_per_database_pool_size_caps_the_pool(start_pgbun, pg):
    bun = start_pgbun(config={"default_pool_size": 20},
                      databases={"pgbun_test": pg.entry(pool_size=1)})
    pids, errors = [], []

    def client():
        try:
            with bun.connect() as conn:
                pids.append(conn.execute("SELECT pg_backend_pid(), pg_sleep(0.5)").fetchone()[0])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    start = time.monotonic()
    run_threads([client] * 3)
    assert not errors, errors
    assert len(set(pids)) == 1
    assert time.monotonic() - start >= 1.4


def test_waiting_clients_are_served_in_fifo_order(start_pgbun):
    # One worker: with several, the order holds among each worker's clients (README, Workers).
    bun = start_pgbun(config={"default_pool_size": 1, "workers": 1})
    holder = bun.connect()
    holder.execute("SELECT 1")
    served = []
    lock = threading.Lock()

    def client(i):
        def go():
            with bun.connect() as conn:
                conn.execute("SELECT pg_sleep(0.2)")
                with lock:
                    served.append(i)
        return go

    threads = []
    for i in range(4):
        t = threading.Thread(target=client(i), daemon=True)
        t.start()
        threads.append(t)
        time.sleep(0.3)  # make the arrival order unambiguous
    holder.close()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads)
    assert served == [0, 1, 2, 3]


def test_waiting_client_that_gives_up_does_not_take_a_server(start_pgbun, pg):
    bun = start_pgbun(config={"default_pool_size": 1})
    holder = bun.connect()
    pid = backend_pid(holder)
    w = bun.wire()
    w.startup({"user": "postgres", "database": "pgbun_test"})
    time.sleep(0.3)
    w.close()  # gives up while waiting
    holder.close()
    with bun.connect() as conn:
        assert backend_pid(conn) == pid


def test_server_killed_under_an_idle_pool_is_replaced(start_pgbun, pg):
    bun = start_pgbun(config={"default_pool_size": 1})
    with bun.connect() as conn:
        pid = backend_pid(conn)
    pg.sql("SELECT pg_terminate_backend(%s)", (pid,))
    wait_until(lambda: not pg.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)),
               timeout=5, what="the backend to exit")

    def fresh_pid():
        with bun.connect() as c:
            return backend_pid(c)

    new_pid = wait_until(fresh_pid, timeout=10, what="pgbun to open a new server")
    assert new_pid != pid


@pytest.mark.parametrize("n", [20])
def test_many_short_clients_in_a_row(start_pgbun, n):
    bun = start_pgbun(config={"default_pool_size": 2})
    for i in range(n):
        with bun.connect() as conn:
            assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)
