"""Pooling under load: many clients, few servers, real pgbench."""

import re
import threading
import time

import psycopg
import pytest

from conftest import IS_PGBOUNCER, pg_bindir, run, sockets_to_port


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_200_clients_on_5_servers_run_tpcb_without_a_failure(start_pgbun, pg, mode):
    pgbench = str(pg_bindir() / "pgbench")
    run([pgbench, "-i", "-q", "-s", "1", "-h", str(pg.sockdir), "-p", str(pg.port), "-U", "postgres",
         "pgbun_test"], timeout=60)
    pool = 5
    bun = start_pgbun(config={"pool_mode": mode, "default_pool_size": pool, "max_client_conn": 250,
                              "query_wait_timeout": 60})
    peak, os_peak, stop = [0], [0], threading.Event()

    def watch():
        with pg.connect() as conn:
            while not stop.is_set():
                # server connections pgbun holds, counted by PostgreSQL and by the kernel
                n = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = 'pgbun_test' "
                                 "AND backend_type = 'client backend' AND pid <> pg_backend_pid()").fetchone()[0]
                peak[0] = max(peak[0], n)
                os_peak[0] = max(os_peak[0], sockets_to_port(bun.proc.pid, pg.port))
                time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        # session mode: each of the 200 clients holds a server for its whole run, so give each
        # a few transactions and let them queue; transaction mode: they share all the time.
        args = ["-T", "5"] if mode == "transaction" else ["-t", "5"]
        res = run([pgbench, "-n", "-h", bun.host, "-p", str(bun.port), "-U", "postgres", "-c", "200", "-j", "2",
                   *args, "pgbun_test"], timeout=100, check=False)
    finally:
        stop.set()
        watcher.join(5)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "number of failed transactions: 0" in res.stdout, res.stdout
    assert 0 < peak[0] <= pool, f"PostgreSQL saw {peak[0]} connections from a pool of {pool}"
    assert 0 < os_peak[0] <= pool, f"the pooler held {os_peak[0]} sockets to PostgreSQL with a pool of {pool}"
    if not IS_PGBOUNCER:
        done = int(re.search(r"number of transactions actually processed: (\d+)", res.stdout)[1])
        assert bun.stop() == 0
        totals = re.search(r"pool pgbun_test/postgres: (\d+) transactions, \d+ queries, (\d+) server "
                           r"assignments \((\d+) reused\), (\d+) server connections opened, at most (\d+) at once",
                           bun.log_text())
        xacts, assignments, reused, opened, most = map(int, totals.groups())
        assert xacts >= done and most <= pool and opened == most
        assert reused >= assignments - opened, "only a server's first assignment may count as new"
        assert assignments >= (done if mode == "transaction" else 200)


def test_psycopg_pipeline_mode_in_transaction_pooling(start_pgbun):
    bun = start_pgbun(config={"pool_mode": "transaction", "default_pool_size": 1})
    other = bun.connect()
    with bun.connect() as conn:
        with conn.pipeline():
            curs = [conn.execute("SELECT %s::int", (i,)) for i in range(20)]
        assert [c.fetchone()[0] for c in curs] == list(range(20))
        other.execute("SELECT 1")  # the single server was released in between
        with pytest.raises(psycopg.errors.DivisionByZero):
            with conn.pipeline():
                conn.execute("SELECT 1")
                conn.execute("SELECT 1/0")
                conn.execute("SELECT 2")  # skipped by the server up to the Sync
        assert conn.execute("SELECT 3").fetchone() == (3,)  # the connection recovers
    assert other.execute("SELECT 4").fetchone() == (4,)
