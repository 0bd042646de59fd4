"""A PostgreSQL that goes away and comes back.

Clients that need a server while PostgreSQL is down or restarting stay
queued, as in PgBouncer: pgbun retries (0.5 s, 1 s, 2 s, then every 4 s) and
serves them when it is back, or fails them at query_wait_timeout with the
reason. A login failure that waiting will not cure reaches them at once.
"""

import socket
import struct
import threading
import time

import psycopg
import pytest

import pgwire
from conftest import in_thread, wait_until

CONNECT_TIMEOUT = 3
QUERY_WAIT = 4


def first_error(bun):
    """Log in and run a query through pgbun; the first PgError, or None."""
    return pgwire.first_error(bun.wire(timeout=QUERY_WAIT + 10), "postgres", "pgbun_test")


def query_works(bun):
    with bun.connect() as conn:
        return conn.execute("SELECT 'back'").fetchone() == ("back",)


@pytest.fixture
def down_setup(make_postgres, start_pgbun):
    own = make_postgres()
    bun = start_pgbun(config={"server_connect_timeout": CONNECT_TIMEOUT, "query_wait_timeout": QUERY_WAIT},
                      databases={"pgbun_test": own.entry()})
    assert query_works(bun)  # leaves an idle server in the pool
    return own, bun


def test_server_down_fails_a_client_at_query_wait_timeout_with_08006_naming_host_and_port(down_setup):
    own, bun = down_setup
    own.stop()
    start = time.monotonic()
    err = first_error(bun)
    elapsed = time.monotonic() - start
    assert err is not None, "pgbun served a client with PostgreSQL down"
    assert err.sqlstate == "08006", err.fields
    assert "query_wait_timeout" in err.message, err.message
    assert "127.0.0.1" in err.message and str(own.port) in err.message, err.message
    assert elapsed > QUERY_WAIT - 1, f"the client was failed after {elapsed:.1f}s, not kept queued"
    assert elapsed < QUERY_WAIT + 10, f"the error took {elapsed:.1f}s"
    assert bun.alive()


@pytest.mark.timeout(30)
def test_server_down_error_reaches_psycopg(down_setup):
    own, bun = down_setup
    own.stop()
    with pytest.raises(psycopg.OperationalError) as err:
        with bun.connect() as conn:
            conn.execute("SELECT 1")
    assert str(own.port) in str(err.value)


def test_pgbun_serves_again_when_the_server_is_back(down_setup):
    own, bun = down_setup
    own.stop()
    assert first_error(bun) is not None
    assert first_error(bun) is not None  # still down: still a clear error, no hang
    own.start()
    start = time.monotonic()
    wait_until(lambda: query_works(bun), timeout=10, interval=0.2,
               what="pgbun to serve again after PostgreSQL restarted")
    assert time.monotonic() - start < 10


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_restart_under_5_s_is_invisible_to_clients_outside_a_transaction(make_postgres, start_pgbun, mode):
    own = make_postgres()
    bun = start_pgbun(config={"pool_mode": mode, "default_pool_size": 4, "query_wait_timeout": 60},
                      databases={"pgbun_test": own.entry()})
    assert query_works(bun)
    # Clients connected before the restart (transaction mode: they hold no
    # server between queries) and clients that connect during it.
    before = [bun.connect() for _ in range(3)] if mode == "transaction" else []
    for conn in before:
        conn.execute("SELECT 1")
    own.stop()
    start = time.monotonic()
    runs = [in_thread(lambda c=c: c.execute("SELECT 'same'").fetchone()) for c in before]
    runs += [in_thread(lambda: bun.connect().execute("SELECT 'new'").fetchone()) for _ in range(3)]
    time.sleep(2)
    own.start()  # waits until PostgreSQL accepts; pgbun meets 57P03 on the way
    for t, _ in runs:
        t.join(timeout=30)
    elapsed = time.monotonic() - start
    errors = [r.get("error") for _, r in runs if "value" not in r]
    assert errors == [], f"clients saw the restart: {errors}"
    assert sorted(r["value"][0] for _, r in runs) == ["new"] * 3 + ["same"] * len(before)
    assert elapsed < 20, f"clients waited {elapsed:.1f} s for a server that was back"


@pytest.mark.timeout(60)
def test_client_queued_while_the_server_is_down_is_served_within_5_s_of_its_return(down_setup, start_pgbun):
    own, _ = down_setup
    bun = start_pgbun(config={"query_wait_timeout": 40}, databases={"pgbun_test": own.entry()})
    own.stop()
    # The login itself waits for a server (the pool has none yet): libpq's own timeout must outlast the outage.
    thread, run = in_thread(lambda: bun.connect(connect_timeout=40).execute("SELECT 'waited'").fetchone())
    time.sleep(7)  # long enough for the back-off to reach its 4 s cap
    assert "error" not in run, run.get("error")
    own.start()
    back = time.monotonic()
    thread.join(timeout=30)
    assert run.get("value") == ("waited",), run.get("error")
    waited = time.monotonic() - back
    assert waited < 7, f"pgbun took {waited:.1f} s to use the returning server"


class FakeStartingServer:
    """A TCP front of PostgreSQL that answers the first `refusals` logins with
    FATAL `sqlstate` (57P03: the database system is starting up, as a
    PostgreSQL that is restarting does) and relays the later ones."""

    def __init__(self, target_port, refusals, sqlstate="57P03",
                 message="the database system is starting up"):
        self.target_port = target_port
        self.refusals = refusals
        self.sqlstate = sqlstate
        self.message = message
        self.logins = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.closing = False
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def error(self):
        fields = b"SFATAL\0VFATAL\0C" + self.sqlstate.encode() + b"\0M" + self.message.encode() + b"\0\0"
        return b"E" + struct.pack("!I", len(fields) + 4) + fields

    def accept_loop(self):
        while not self.closing:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        self.logins += 1
        if self.logins <= self.refusals:
            try:
                conn.recv(65536)  # the startup packet
                conn.sendall(self.error())
            finally:
                conn.close()
            return
        up = socket.create_connection(("127.0.0.1", self.target_port))

        def pump(src, dst):
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pump, args=(up, conn), daemon=True).start()
        pump(conn, up)

    def close(self):
        self.closing = True
        self.sock.close()


@pytest.mark.timeout(60)
def test_57P03_at_server_login_is_retried_not_handed_to_the_client(start_pgbun, pg):
    fake = FakeStartingServer(pg.port, refusals=3)
    try:
        bun = start_pgbun(config={"query_wait_timeout": 30},
                          databases={"pgbun_test": f"host=127.0.0.1 port={fake.port} dbname=pgbun_test"})
        with bun.connect() as conn:
            assert conn.execute("SELECT 'served'").fetchone() == ("served",)
        assert fake.logins > 3
        # and later clients are served too, not handed a cached error
        with bun.connect() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        fake.close()


@pytest.mark.timeout(60)
def test_a_lasting_login_failure_reaches_every_queued_client_at_once(start_pgbun, pg):
    """A wrong server password fails the clients queued behind a busy server
    with PostgreSQL's own error, instead of leaving them to query_wait_timeout."""
    fake = FakeStartingServer(pg.port, refusals=10 ** 6, sqlstate="28P01",
                              message='password authentication failed for user "postgres"')
    try:
        bun = start_pgbun(config={"query_wait_timeout": 45, "pool_mode": "transaction", "default_pool_size": 2},
                          databases={"pgbun_test": f"host=127.0.0.1 port={fake.port} dbname=pgbun_test"})
        start = time.monotonic()
        runs = [in_thread(lambda: bun.connect().execute("SELECT 1").fetchone()) for _ in range(3)]
        for t, _ in runs:
            t.join(timeout=30)
        elapsed = time.monotonic() - start
        for _, r in runs:
            assert isinstance(r.get("error"), psycopg.OperationalError), r
            assert "password authentication failed" in str(r["error"]), r["error"]
        assert elapsed < 15, f"the clients waited {elapsed:.1f} s for a failure that will not go away"
    finally:
        fake.close()


@pytest.mark.timeout(60)
def test_a_lasting_login_failure_behind_a_busy_server_reaches_the_queued_client(make_postgres, start_pgbun):
    own = make_postgres()
    bun = start_pgbun(config={"query_wait_timeout": 45, "pool_mode": "transaction", "default_pool_size": 2,
                              "workers": 1},
                      databases={"pgbun_test": own.entry()})
    busy = bun.connect(user="scramuser")
    busy.execute("BEGIN")
    busy.execute("SELECT 1")  # holds the pool's one server
    own.sql("ALTER ROLE scramuser PASSWORD 'changed elsewhere'", dbname="postgres")
    start = time.monotonic()
    thread, run = in_thread(lambda: bun.connect(user="scramuser").execute("SELECT 1").fetchone())
    thread.join(timeout=30)
    elapsed = time.monotonic() - start
    assert isinstance(run.get("error"), psycopg.OperationalError), run
    assert "password authentication failed" in str(run["error"]), run["error"]
    assert elapsed < 15, f"the client waited {elapsed:.1f} s behind a busy server"
    assert busy.execute("SELECT 'still mine'").fetchone() == ("still mine",)
    busy.execute("COMMIT")


def test_client_linked_to_a_server_that_dies_gets_an_error_and_others_recover(down_setup):
    own, bun = down_setup
    conn = bun.connect()
    conn.execute("SELECT 1")
    own.stop()
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    conn.close()
    own.start()
    wait_until(lambda: query_works(bun), timeout=10, interval=0.2,
               what="pgbun to serve again after PostgreSQL restarted")
    assert bun.alive()


def test_restart_while_pgbun_is_idle_does_not_hand_out_dead_servers(down_setup):
    own, bun = down_setup
    own.stop()
    own.start()
    # The pool's idle server died with the old PostgreSQL: the first client
    # after the restart must get a live one (retry once at most).
    wait_until(lambda: query_works(bun), timeout=10, interval=0.2, what="a working server")
    for _ in range(3):
        assert query_works(bun)
