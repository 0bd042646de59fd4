"""The counters behind pool efficiency: assignments and reuse, servers opened
and held at once, transactions, queries, bytes and the latency histogram, as
the stats_period log line and the per-pool totals logged at exit show them."""

import re
import signal
import threading
import time

import pytest

from conftest import IS_PGBOUNCER, wait_until

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="pgbun's log lines")

TOTALS = re.compile(
    r"pool (?P<pool>\S+): (?P<xacts>\d+) transactions, (?P<queries>\d+) queries, "
    r"(?P<assignments>\d+) server assignments \((?P<reused>\d+) reused\), (?P<opened>\d+) server "
    r"connections opened, at most (?P<peak>\d+) at once, (?P<bytes_in>\d+) bytes in, (?P<bytes_out>\d+) "
    r"bytes out; average xact (?P<xact_us>\d+) us, query (?P<query_us>\d+) us, wait (?P<wait_us>\d+) us; "
    r"query p50 (?P<p50>\d+) us, p95 (?P<p95>\d+) us, p99 (?P<p99>\d+) us")
PERIOD = re.compile(r"stats: (?P<xacts>\d+) xacts/s, (?P<queries>\d+) queries/s, in (?P<bin>\d+) B/s, "
                    r"out (?P<bout>\d+) B/s, .*query p50 (?P<p50>\d+) us, p95 (?P<p95>\d+) us, "
                    r"p99 (?P<p99>\d+) us, (?P<reused>\d+) of (?P<assignments>\d+) server assignments reused")


def totals(bun):
    """Stops pgbun and returns {pool: counters} from the lines it logs at exit."""
    assert bun.stop(signal.SIGTERM) == 0
    found = {m["pool"]: {k: int(v) for k, v in m.groupdict().items() if k != "pool"}
             for m in TOTALS.finditer(bun.log_text())}
    assert found, "no per-pool totals logged at exit:\n" + bun.log_text()
    return found


def test_transaction_mode_counts_assignments_reuse_queries_and_transactions(start_pgbun):
    bun = start_pgbun(config={"pool_mode": "transaction", "default_pool_size": 1})
    # psycopg would PREPARE a query run 5 times, one more round trip: counted, but not wanted here
    with bun.connect(prepare_threshold=None) as conn:
        for i in range(20):
            assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)
        with conn.transaction():  # BEGIN, 3 queries, COMMIT: one assignment, one transaction
            for _ in range(3):
                conn.execute("SELECT 1")
    t = totals(bun)["pgbun_test/postgres"]
    assert t["assignments"] == 21
    assert t["reused"] == 20, "only the first assignment may need a new connection"
    assert t["opened"] == 1
    assert t["peak"] == 1
    assert t["xacts"] == 21
    assert t["queries"] == 25
    assert t["bytes_in"] > 0 and t["bytes_out"] > t["bytes_in"] // 10
    assert 0 < t["p50"] <= t["p95"] <= t["p99"]
    assert t["query_us"] > 0 and t["xact_us"] >= t["query_us"] // 2


def test_session_mode_counts_one_assignment_per_session_and_the_peak(start_pgbun):
    bun = start_pgbun(config={"pool_mode": "session", "default_pool_size": 3})
    conns = [bun.connect() for _ in range(3)]
    for c in conns:
        c.execute("SELECT 1")
    for c in conns:
        c.close()
    with bun.connect() as again:  # an idle server is reused
        again.execute("SELECT 1")
    t = totals(bun)["pgbun_test/postgres"]
    assert t["assignments"] == 4
    assert t["opened"] == 3
    assert t["reused"] == 1
    assert t["peak"] == 3


def test_latency_percentiles_see_slow_queries(start_pgbun):
    bun = start_pgbun(config={"pool_mode": "transaction"})
    with bun.connect(prepare_threshold=None) as conn:
        for _ in range(20):
            conn.execute("SELECT 1")
        for _ in range(3):
            conn.execute("SELECT pg_sleep(0.2)")
    t = totals(bun)["pgbun_test/postgres"]
    assert t["queries"] == 23
    assert t["p50"] < 150_000, "most queries are fast"
    assert 180_000 <= t["p99"] <= 400_000, "the slowest 1% slept 0.2 s"


def test_wait_time_counts_clients_queued_for_a_server(start_pgbun):
    bun = start_pgbun(config={"pool_mode": "transaction", "default_pool_size": 1})
    holder = bun.connect(autocommit=False)
    holder.execute("SELECT 1")  # holds the one server in a transaction
    waiter = bun.connect()
    t = threading.Thread(target=lambda: waiter.execute("SELECT 1"), daemon=True)
    t.start()
    time.sleep(0.5)
    holder.commit()
    t.join(10)
    assert not t.is_alive()
    stats = totals(bun)["pgbun_test/postgres"]
    assert stats["assignments"] == 2
    assert stats["wait_us"] * stats["assignments"] >= 400_000, "the waiter queued for about 0.5 s"
    assert stats["query_us"] < 400_000, "time spent queued is not query time"


def test_stats_period_logs_rates_and_log_stats_0_silences_it(start_pgbun):
    bun = start_pgbun(config={"pool_mode": "transaction", "stats_period": 1})
    with bun.connect() as conn:
        for _ in range(200):
            conn.execute("SELECT 1")

    def busy_line():
        return [m for m in PERIOD.finditer(bun.log_text()) if int(m["queries"]) > 0]

    lines = wait_until(busy_line, timeout=10, what="a stats line with queries")
    pool_line = re.search(r"stats: pool pgbun_test/postgres: (\d+) xacts/s, (\d+) queries/s, query (\d+) us "
                          r"\(p95 (\d+) us\), ([\d.]+)% reused", bun.log_text())
    assert pool_line, "no per-pool stats line"
    assert int(pool_line[2]) > 0 and 0 <= float(pool_line[5]) <= 100
    m = lines[0]
    assert int(m["bin"]) > 0 and int(m["bout"]) > 0
    assert int(m["assignments"]) > 0 and int(m["reused"]) <= int(m["assignments"])
    assert int(m["p50"]) <= int(m["p95"]) <= int(m["p99"])

    quiet = start_pgbun(config={"pool_mode": "transaction", "stats_period": 1, "log_stats": 0})
    with quiet.connect() as conn:
        conn.execute("SELECT 1")
    time.sleep(2)
    assert quiet.stop() == 0
    assert "stats:" not in quiet.log_text()
    assert "transactions," not in quiet.log_text()
