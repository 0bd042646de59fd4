"""Failures while clients are busy: PostgreSQL restarting under load, a
backend terminated under a client, COPY (done, read back, failed, abandoned)
in transaction pooling, and clients that vanish while their server works."""

import socket
import threading
import time

import psycopg
import pytest
from psycopg import pq

from conftest import backend_pid, error_fields, wait_until
from pgwire import message, query_message


def activity(pg, where, params=()):
    """(pid, state, query) of the client backends on pgbun_test matching where
    (not counting the backend running this query)."""
    with pg.connect() as conn:
        return conn.execute("SELECT pid, state, query FROM pg_stat_activity "
                            "WHERE datname = 'pgbun_test' AND backend_type = 'client backend' "
                            f"AND pid <> pg_backend_pid() AND ({where})", params).fetchall()


def in_transaction_or_copy(pg):
    """Sessions left inside a transaction or still inside a COPY."""
    return activity(pg, "state LIKE 'idle in transaction%%' "
                        "OR (state = 'active' AND query ILIKE 'copy%%')")


def pid_exists(pg, pid):
    with pg.connect() as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                            (pid,)).fetchone()[0] == 1


# ------------------------------------------------------------ PostgreSQL restart under load

class Worker(threading.Thread):
    """Loops short transactions through pgbun; on any error it drops its
    connection and reconnects after a short sleep."""

    def __init__(self, n, bun, stop):
        super().__init__(name=f"worker-{n}", daemon=True)
        self.n, self.bun, self.stop = n, bun, stop
        self.successes = []   # monotonic time of each committed transaction
        self.errors = []      # (monotonic time, sqlstate, message)
        self.committed = []   # ids whose COMMIT succeeded
        self.unexpected = []  # anything that is not a psycopg error, or a wrong answer

    def _connect(self):
        return psycopg.connect(host=self.bun.host, port=self.bun.port, dbname="pgbun_test",
                               user="postgres", connect_timeout=5, autocommit=True)

    def run(self):
        conn = None
        try:
            while not self.stop.is_set():
                try:
                    if conn is None:
                        conn = self._connect()
                    with conn.transaction():
                        rid = conn.execute("INSERT INTO restart_load (worker) VALUES (%s) RETURNING id",
                                           (self.n,)).fetchone()[0]
                        seen = conn.execute("SELECT count(*) FROM restart_load WHERE id = %s",
                                            (rid,)).fetchone()[0]
                    if seen != 1:
                        self.unexpected.append(f"row {rid} not visible in its own transaction")
                    self.committed.append(rid)
                    self.successes.append(time.monotonic())
                    time.sleep(0.005)
                except psycopg.Error as exc:
                    self.errors.append((time.monotonic(), *error_fields(exc)))
                    if conn is not None:
                        conn.close()
                        conn = None
                    time.sleep(0.05)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.unexpected.append(repr(exc))
        finally:
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001
                    pass

    def successes_after(self, t):
        return [s for s in self.successes if s > t]


@pytest.mark.timeout(120)
def test_postgres_restart_under_load_in_transaction_mode(make_postgres, start_pgbun):
    own = make_postgres()
    own.sql("CREATE TABLE restart_load (id serial PRIMARY KEY, worker int NOT NULL)")
    bun = start_pgbun(config={"pool_mode": "transaction", "default_pool_size": 4,
                              "server_connect_timeout": 3},
                      databases={"pgbun_test": own.entry()})
    stop = threading.Event()
    workers = [Worker(n, bun, stop) for n in range(10)]
    for w in workers:
        w.start()
    holder = None
    try:
        wait_until(lambda: all(w.successes for w in workers), timeout=15,
                   what="every worker to commit before the restart")
        time.sleep(0.5)
        # A transaction certain to be open on a server when PostgreSQL stops: whether one of the workers'
        # is, at that instant, is up to the scheduler (pgbun holds the others' queries until it is back).
        holder = psycopg.connect(host=bun.host, port=bun.port, dbname="pgbun_test", user="postgres",
                                 connect_timeout=5)
        holder.execute("INSERT INTO restart_load (worker) VALUES (-1)")

        t_stop = time.monotonic()
        own.stop("fast")
        t_stopped = time.monotonic()
        time.sleep(2)
        t_start = time.monotonic()
        own.start()  # pg_ctl -w: returns once PostgreSQL accepts connections
        t_back = time.monotonic()

        wait_until(lambda: all(w.successes_after(t_back) for w in workers), timeout=20,
                   what="every worker to commit again after PostgreSQL restarted")
        time.sleep(0.3)  # a few more transactions each
        # Its next statement hears that its transaction, and its server, are gone.
        with pytest.raises(psycopg.OperationalError):
            holder.execute("SELECT 1")
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=15)
        if holder is not None:
            holder.close()
    hung = [w.name for w in workers if w.is_alive()]
    assert not hung, f"workers still blocked 15 s after being asked to stop: {hung}"

    unexpected = [(w.name, u) for w in workers for u in w.unexpected]
    assert not unexpected, unexpected

    # A worker's error, if any, came from the outage: connection-level, while PostgreSQL was away.
    outage_errors = [(w.name, e) for w in workers for e in w.errors]
    assert all(t_stop <= e[0] for _, e in outage_errors), outage_errors
    # Between the stop and the start nothing can have been committed
    # (0.5 s of slack for a COMMIT answered just before the shutdown).
    during = [(w.name, s - t_stopped) for w in workers for s in w.successes
              if t_stopped + 0.5 < s < t_start]
    assert not during, f"commits reported while PostgreSQL was down: {during}"

    first = min(w.successes_after(t_back)[0] for w in workers)
    assert first - t_back < 5, f"first commit {first - t_back:.2f} s after PostgreSQL accepted again"
    for w in workers:
        assert w.successes_after(t_back), f"{w.name} never committed after the restart"

    # Every COMMIT a client saw succeed is really there.
    committed = [rid for w in workers for rid in w.committed]
    found = own.sql("SELECT count(*) FROM restart_load WHERE id = ANY(%s)", (committed,))[0][0]
    assert found == len(committed), f"{len(committed) - found} acknowledged commits are missing"
    assert not in_transaction_or_copy(own)
    assert bun.alive()


# ------------------------------------------------------------ pg_terminate_backend

@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_backend_terminated_inside_a_transaction(start_pgbun, pg, mode):
    bun = start_pgbun(config={"pool_mode": mode, "default_pool_size": 1})
    conn = bun.connect()
    conn.execute("BEGIN")
    assert conn.execute("SELECT 1").fetchone() == (1,)
    pid = backend_pid(conn)
    assert conn.info.transaction_status == pq.TransactionStatus.INTRANS
    assert pg.sql("SELECT pg_terminate_backend(%s)", (pid,)) == [(True,)]
    wait_until(lambda: not pid_exists(pg, pid), timeout=10, what=f"backend {pid} to exit")

    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    conn.close()

    with bun.connect() as other:
        assert other.execute("SELECT 'fresh'").fetchone() == ("fresh",)
        new_pid = backend_pid(other)
        assert other.info.transaction_status == pq.TransactionStatus.IDLE
    assert new_pid != pid
    assert not pid_exists(pg, pid)
    assert bun.alive()


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_backend_terminated_during_pg_sleep_fails_the_client_promptly(start_pgbun, pg, mode):
    bun = start_pgbun(config={"pool_mode": mode, "default_pool_size": 1})
    conn = bun.connect()
    marker = f"terminate-sleep-{mode}"
    result = {}

    def sleeper():
        try:
            conn.execute(f"SELECT pg_sleep(30) /* {marker} */")
            result["ok"] = True
        except BaseException as exc:  # noqa: BLE001 - checked below
            result["error"] = exc
        result["at"] = time.monotonic()

    t = threading.Thread(target=sleeper, daemon=True)
    t.start()
    try:
        rows = wait_until(lambda: activity(pg, "state = 'active' AND query LIKE %s",
                                           (f"%{marker}%",)),
                          timeout=10, what="pg_sleep to run on the server")
        pid = rows[0][0]
        terminated_at = time.monotonic()
        assert pg.sql("SELECT pg_terminate_backend(%s)", (pid,)) == [(True,)]
    finally:
        t.join(timeout=15)
    assert not t.is_alive(), "the client still waits 15 s after its backend was terminated"
    assert "error" in result, f"pg_sleep(30) on a terminated backend did not fail: {result}"
    assert isinstance(result["error"], psycopg.OperationalError), repr(result["error"])
    elapsed = result["at"] - terminated_at
    assert elapsed < 10, f"the error came {elapsed:.1f} s after the backend was terminated"
    conn.close()

    wait_until(lambda: not pid_exists(pg, pid), timeout=10, what=f"backend {pid} to exit")
    with bun.connect() as other:
        assert other.execute("SELECT 'fresh'").fetchone() == ("fresh",)
        assert backend_pid(other) != pid
    assert bun.alive()


# ------------------------------------------------------------ COPY through psycopg

ROWS = 1000


class Boom(Exception):
    pass


def check_pool_is_clean(bun, expected_rows, expected_pid):
    """A second client on the same one-server pool: idle, working, same server."""
    with bun.connect() as other:
        assert other.execute("SELECT count(*) FROM fail_copy").fetchone() == (expected_rows,)
        assert other.info.transaction_status == pq.TransactionStatus.IDLE
        assert backend_pid(other) == expected_pid, "the server was replaced after the COPY"
        assert other.info.transaction_status == pq.TransactionStatus.IDLE


@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit", "explicit_txn"])
def test_psycopg_copy_in_out_and_fail_in_transaction_mode(start_pgbun, pg, autocommit):
    pg.sql("DROP TABLE IF EXISTS fail_copy; CREATE TABLE fail_copy (i int, t text)")
    bun = start_pgbun(config={"pool_mode": "transaction", "default_pool_size": 1})
    conn = bun.connect(autocommit=autocommit)
    pid = backend_pid(conn)
    if not autocommit:
        conn.commit()

    # COPY FROM STDIN
    with conn.cursor() as cur:
        with cur.copy("COPY fail_copy (i, t) FROM STDIN") as copy:
            for i in range(ROWS):
                copy.write_row((i, f"row {i}\ttab"))
    if not autocommit:
        conn.commit()
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    check_pool_is_clean(bun, ROWS, pid)

    # COPY TO STDOUT
    with conn.cursor() as cur:
        with cur.copy("COPY (SELECT i, t FROM fail_copy ORDER BY i) TO STDOUT") as copy:
            copy.set_types(["int4", "text"])
            rows = list(copy.rows())
    if not autocommit:
        conn.commit()
    assert rows == [(i, f"row {i}\ttab") for i in range(ROWS)]
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    check_pool_is_clean(bun, ROWS, pid)

    # CopyFail: an exception inside the block. psycopg 3.1 sends CopyFail with
    # the exception's text and raises PostgreSQL's answer (57014 naming it).
    with pytest.raises((Boom, psycopg.errors.QueryCanceled)) as err:
        with conn.cursor() as cur:
            with cur.copy("COPY fail_copy (i, t) FROM STDIN") as copy:
                for i in range(ROWS):
                    copy.write_row((ROWS + i, "never"))
                raise Boom("stop the copy")
    if isinstance(err.value, psycopg.errors.QueryCanceled):
        assert "Boom - stop the copy" in str(err.value), str(err.value)
    if not autocommit:
        assert conn.info.transaction_status == pq.TransactionStatus.INERROR
        conn.rollback()
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    assert conn.execute("SELECT count(*) FROM fail_copy").fetchone() == (ROWS,)
    if not autocommit:
        conn.commit()
    check_pool_is_clean(bun, ROWS, pid)
    assert pg.sql("SELECT count(*) FROM fail_copy WHERE t = 'never'") == [(0,)]
    assert pg.sql("SELECT count(*) FROM fail_copy") == [(ROWS,)]
    conn.close()
    assert bun.alive()


# ------------------------------------------------------------ clients that vanish

@pytest.mark.parametrize("begin,partial", [(True, False), (False, False), (True, True)],
                         ids=["in_transaction", "autocommit", "mid_copydata"])
def test_client_vanishing_in_copy_from_stdin_commits_nothing(start_pgbun, pg, begin, partial):
    tag = f"{'begin' if begin else 'auto'}-{'partial' if partial else 'whole'}"
    pg.sql("CREATE TABLE IF NOT EXISTS vanish_copy (tag text, i int)")
    pg.sql("DELETE FROM vanish_copy WHERE tag = %s", (tag,))
    bun = start_pgbun(config={"pool_mode": "transaction", "default_pool_size": 1})
    a = bun.login()
    if begin:
        a.query("BEGIN")
    a.send(query_message("COPY vanish_copy (tag, i) FROM STDIN"))
    a.read_until(b"G")
    a.send(b"".join(message(b"d", f"{tag}\t{i}\n".encode()) for i in range(100)))
    if partial:
        big = message(b"d", b"".join(f"{tag}\t{i}\n".encode() for i in range(1000)))
        a.send(big[:2000])
    # The COPY is under way on the server (so the checks below can fail).
    wait_until(lambda: activity(pg, "state = 'active' AND query ILIKE 'copy vanish_copy%%'"),
               timeout=10, what="the COPY to show in pg_stat_activity")
    a.sock.close()  # no CopyDone, no Terminate

    wait_until(lambda: not in_transaction_or_copy(pg), timeout=15,
               what="no session left in a transaction or in COPY")
    start = time.monotonic()
    b = bun.login()
    assert b.scalar(f"SELECT count(*) FROM vanish_copy WHERE tag = '{tag}'") == "0"
    assert time.monotonic() - start < 10
    b.query("BEGIN")  # the server b has is in no transaction left over from a
    assert b.scalar("SELECT 1") == "1"
    b.query("COMMIT")
    assert pg.sql("SELECT count(*) FROM vanish_copy WHERE tag = %s", (tag,)) == [(0,)]
    assert not in_transaction_or_copy(pg)
    assert bun.alive()


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_client_vanishing_during_a_long_query_frees_the_server(start_pgbun, pg, mode):
    bun = start_pgbun(config={"pool_mode": mode, "default_pool_size": 1})
    marker = f"vanish-sleep-{mode}"
    running = lambda: activity(pg, "state = 'active' AND query LIKE %s", (f"%{marker}%",))  # noqa: E731
    a = bun.login()
    a.send(query_message(f"SELECT pg_sleep(20) /* {marker} */"))
    wait_until(running, timeout=10, what="pg_sleep to run on the server")
    a.sock.shutdown(socket.SHUT_RDWR)
    a.sock.close()
    closed_at = time.monotonic()

    b = bun.login()
    assert b.scalar("SELECT 'next'") == "next"
    elapsed = time.monotonic() - closed_at
    assert elapsed < 10, f"the next client was served {elapsed:.1f} s after the first left"
    # Nobody waits for pg_sleep's answer any more: it must not keep running
    # (a CancelRequest, or the server connection closed in a way PostgreSQL sees).
    wait_until(lambda: not running(), timeout=10,
               what="the abandoned pg_sleep(20) to stop running on PostgreSQL")
    assert bun.alive()


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_a_query_sent_with_terminate_still_runs_but_a_vanished_clients_is_canceled(start_pgbun, pg, mode):
    """Query + Terminate in one write: the client's last word, run as PostgreSQL
    would run it. The same query from a client that vanishes is canceled."""
    pg.sql("CREATE TABLE IF NOT EXISTS last_word (tag text)")
    bun = start_pgbun(config={"pool_mode": mode, "default_pool_size": 2})
    quit_tag, lost_tag = f"quit-{mode}", f"lost-{mode}"
    slow_insert = "INSERT INTO last_word SELECT '{}' FROM pg_sleep(1)"

    polite = bun.login()
    polite.send(query_message(slow_insert.format(quit_tag)) + message(b"X"))
    polite.close()

    lost = bun.login()
    lost.send(query_message(slow_insert.format(lost_tag)))
    wait_until(lambda: activity(pg, "state = 'active' AND query LIKE %s", (f"%{lost_tag}%",)), timeout=10,
               what="the second INSERT to run")
    lost.sock.shutdown(socket.SHUT_RDWR)
    lost.sock.close()

    count = lambda tag: pg.sql("SELECT count(*) FROM last_word WHERE tag = %s", (tag,))[0][0]  # noqa: E731
    wait_until(lambda: count(quit_tag) == 1, timeout=10, what="the INSERT sent with Terminate to commit")
    wait_until(lambda: not activity(pg, "query LIKE %s AND state = 'active'", (f"%{lost_tag}%",)), timeout=10,
               what="the vanished client's INSERT to stop")
    assert count(lost_tag) == 0, "the vanished client's query was not canceled"
    assert "query canceled" in bun.log_text()
