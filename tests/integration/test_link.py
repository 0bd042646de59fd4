"""When a server is handed out, held and given back: the queue after a server
is lost, messages that outlive ReadyForQuery, COPY as libpq sends it, bytes
that arrive while a client waits."""

import socket
import threading
import time

import pytest

import pgwire
from conftest import wait_until
from pgwire import message, query_message


def test_waiting_client_is_served_after_the_busy_server_is_closed(start_pgbun):
    bun = start_pgbun(config={"default_pool_size": 1})
    a = bun.login()
    b = bun.login()
    a.send(query_message("SELECT pg_sleep(3)"))
    time.sleep(0.3)
    b.send(query_message("SELECT 42"))
    time.sleep(0.3)
    a.close()  # the server is busy, so pgbun closes it: B must get a new one
    seen = b.read_until(b"Z", timeout=8)
    rows = [body for t, body in seen if t == b"D"]
    assert len(rows) == 1 and rows[0].endswith(b"42"), seen


def test_error_response_over_1mb_reaches_the_client(bun):
    w = bun.login()
    try:
        w.query("SELECT repeat('x', 2000000)::int")
    except pgwire.PgError as exc:
        assert exc.sqlstate == "22P02"
        assert len(exc.message) > 1_000_000
    else:
        raise AssertionError("the cast did not fail")
    assert w.scalar("SELECT 1") == "1"


class SlowProxy:
    """Forwards a TCP port to PostgreSQL, each connection 1 s late: the first
    server login of a pool takes that long."""

    def __init__(self, target_port, delay=1.0):
        self.target_port, self.delay = target_port, delay
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _handle(self, conn):
        time.sleep(self.delay)
        try:
            up = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
        except OSError:
            conn.close()
            return
        up.settimeout(None)
        threading.Thread(target=self._pump, args=(conn, up), daemon=True).start()
        threading.Thread(target=self._pump, args=(up, conn), daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def close(self):
        self.lsock.close()


def test_bytes_sent_during_the_first_server_login_are_not_lost(start_pgbun, pg):
    proxy = SlowProxy(pg.port)
    try:
        bun = start_pgbun(databases={"pgbun_test": f"host=127.0.0.1 port={proxy.port} dbname=pgbun_test"})
        w = bun.wire()
        w.startup({"user": "postgres", "database": "pgbun_test"})
        time.sleep(0.3)
        query = query_message("SELECT 7")
        w.send(query[:3])  # part of the first query, while pgbun waits for its first server
        w.read_until(b"Z")
        w.send(query[3:])
        seen = w.read_until(b"Z", timeout=10)
        rows = [body for t, body in seen if t == b"D"]
        assert len(rows) == 1 and rows[0].endswith(b"7"), seen
    finally:
        proxy.close()


def test_copy_data_that_outlives_the_error_does_not_reach_the_next_client(start_pgbun, pg):
    pg.sql("DROP TABLE IF EXISTS link_copy; CREATE TABLE link_copy(i int); "
           "GRANT ALL ON link_copy TO public")
    bun = start_pgbun(config={"default_pool_size": 1, "pool_mode": "transaction"})
    a = bun.login()
    a.send(query_message("COPY link_copy FROM STDIN"))
    a.read_until(b"G")
    a.send(message(b"d", b"notanint\n"))
    row = b"1\n" * 5000
    big = message(b"d", row)
    a.send(big[:1000])  # half a CopyData: the server must not go to anyone else
    seen = a.read_until(b"Z")
    assert any(t == b"E" for t, _ in seen)
    b = bun.login()
    b.send(query_message("SELECT 42"))
    time.sleep(0.5)
    a.send(big[1000:])  # the rest; PostgreSQL ignores it, and the server is free again
    seen = b.read_until(b"Z", timeout=10)
    rows = [body for t, body in seen if t == b"D"]
    assert len(rows) == 1 and rows[0].endswith(b"42"), seen
    assert b.scalar("SELECT count(*) FROM link_copy") == "0"


def test_extended_protocol_copy_returns_the_server_to_the_pool(start_pgbun, pg):
    pg.sql("DROP TABLE IF EXISTS link_copy2; CREATE TABLE link_copy2(i int); "
           "GRANT ALL ON link_copy2 TO public")
    bun = start_pgbun(config={"default_pool_size": 1, "pool_mode": "transaction"})
    a = bun.login()
    # What libpq's PQsendQueryParams sends, then what PQputCopyEnd sends: the
    # first Sync arrives during COPY and PostgreSQL ignores it.
    a.send(message(b"P", b"\0COPY link_copy2 FROM STDIN\0\0\0")
           + message(b"B", b"\0\0" + b"\0\0" * 3)
           + message(b"E", b"\0\0\0\0\0")
           + message(b"S"))
    a.read_until(b"G")
    a.send(message(b"d", b"1\n") + message(b"c") + message(b"S"))
    a.read_until(b"Z")
    b = bun.login()
    assert b.scalar("SELECT count(*) FROM link_copy2") == "1"
    a.close()
    time.sleep(0.3)
    # the server was clean: it is reused, not closed
    assert "replies due" not in bun.log_text()


def test_client_that_leaves_mid_message_does_not_poison_the_server(start_pgbun):
    bun = start_pgbun(config={"default_pool_size": 1})
    a = bun.login()
    assert a.scalar("SELECT 1") == "1"  # A holds the only server
    big = query_message("SELECT '" + "x" * 200_000 + "'")
    a.send(big[:50_000])
    time.sleep(0.3)
    a.close()
    b = bun.login()
    assert b.scalar("SELECT 'clean'") == "clean"
    assert "client left in the middle of a message" in bun.log_text()


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_client_vanishing_inside_a_transaction_commits_nothing(start_pgbun, pg, mode):
    pg.sql("CREATE TABLE IF NOT EXISTS vanish (mode text)")
    pg.sql("GRANT ALL ON vanish TO public")
    bun = start_pgbun(config={"pool_mode": mode, "default_pool_size": 1})
    a = bun.login()
    a.query(f"BEGIN; INSERT INTO vanish VALUES ('{mode}')")
    a.sock.close()  # no Terminate: the socket just goes away

    def clean():
        with pg.connect() as direct:
            left = direct.execute("SELECT count(*) FROM pg_stat_activity "
                                  "WHERE state LIKE 'idle in transaction%'").fetchone()[0]
            return left == 0
    wait_until(clean, timeout=10, what="the open transaction to end")
    b = bun.login()
    assert b.scalar(f"SELECT count(*) FROM vanish WHERE mode = '{mode}'") == "0"
    assert b.scalar("SELECT 1") == "1"
