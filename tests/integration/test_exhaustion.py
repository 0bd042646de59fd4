"""Running out: file descriptors, and PostgreSQL's connection slots.

When accept() fails for want of a descriptor, pgbun gives up the one it
keeps in reserve, tells each waiting client why it is refused (FATAL 53300,
before the client has said anything, as PostgreSQL does when it cannot
start a backend), and pauses accepting for a second at a time rather than
spinning. It logs the first failure, then once a minute while failures go
on; it serves again as soon as descriptors free up.

When PostgreSQL is at max_connections, a client waits for a server or gets
PostgreSQL's own 53300; none hangs.
"""
import os
import socket
import struct
import threading
import time

import psycopg
import pytest

from conftest import IS_PGBOUNCER, TEST_WORKERS, wait_until

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="pgbun's own handling")

LIMIT = 64


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid):
    """User + system CPU time of a process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_now(sock):
    """What the peer has sent so far, without waiting: bytes, and whether it closed."""
    sock.setblocking(False)
    data = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return data, True
            data += chunk
    except BlockingIOError:
        return data, False
    except ConnectionResetError:
        return data, True


def error_fields(data):
    """The fields of the ErrorResponse data starts with."""
    assert data[:1] == b"E", data
    length = struct.unpack("!I", data[1:5])[0]
    fields = {}
    for part in data[5:1 + length].split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode()
    return fields


def test_a_flood_past_the_descriptor_limit_is_refused_with_53300_and_served_again(start_pgbun):
    bun = start_pgbun(config={"max_client_conn": 1000, "client_login_timeout": 120}, nofile=(LIMIT, LIMIT))
    pid = bun.proc.pid
    room = LIMIT - open_fds(pid)
    assert 4 < room < LIMIT, room

    # Silent clients: pgbun takes them into login and waits for their startup packets.
    flood = []
    try:
        for _ in range(room + 30):
            flood.append(socket.create_connection((bun.host, bun.port), timeout=10))
        wait_until(lambda: "accept failed" in bun.log_text(), 10, what="the descriptors to run out")

        got = [[b"", False] for _ in flood]

        def refused_now():
            for i, sock in enumerate(flood):
                if not got[i][1]:
                    data, closed = read_now(sock)
                    got[i][0] += data
                    got[i][1] = closed
            return [(data, closed) for data, closed in got if data]

        # Every client past the limit hears why, then the connection closes; the others wait for their login.
        wait_until(lambda: len(refused_now()) >= 20, 10, what="the clients past the limit to be refused")
        time.sleep(0.2)
        refused = refused_now()
        for data, closed in refused:
            fields = error_fields(data)
            assert fields["S"] == "FATAL" and fields["C"] == "53300", fields
            assert fields["M"] == "too many connections: pgbun is out of file descriptors", fields
            assert closed

        # Full to the last descriptor: one freed meanwhile (pgbun's own, at start) is taken by one more
        # silent client, which is not refused.
        for _ in range(5):
            extra = socket.create_connection((bun.host, bun.port), timeout=10)
            flood.append(extra)
            got.append([b"", False])
            time.sleep(1.5)
            if refused_now() and got[-1][0]:
                break

        # A real client now gets the same clear error. (One that asks for TLS first, libpq's default over
        # TCP, gets an error at once too; libpq then words it as a broken TLS exchange.) A descriptor that
        # frees up meanwhile lets one client in, to wait for a server it cannot have yet: then try again.
        def refused_client(sslmode):
            for _ in range(5):
                try:
                    psycopg.connect(host=bun.host, port=bun.port, user="postgres", dbname="pgbun_test",
                                    sslmode=sslmode, connect_timeout=3).close()
                except psycopg.errors.ConnectionTimeout:
                    continue
                except psycopg.OperationalError as exc:
                    return str(exc)
            raise AssertionError("no client was refused")

        assert "too many connections: pgbun is out of file descriptors" in refused_client("disable")
        assert "error response during SSL exchange" in refused_client("prefer")

        # Paused, not spinning: over 3 s of clients knocking, pgbun uses little CPU, and logs once.
        before = cpu_seconds(pid)
        end = time.monotonic() + 3
        while time.monotonic() < end:
            try:
                socket.create_connection((bun.host, bun.port), timeout=2).close()
            except OSError:
                pass
            time.sleep(0.05)
        assert cpu_seconds(pid) - before < 1.5
        # (One line per worker: each has its own listen sockets.)
        assert 1 <= bun.log_text().count("accept failed") <= TEST_WORKERS
        assert "waiting clients refused with 53300" in bun.log_text()
    finally:
        for s in flood:
            s.close()

    # Descriptors free up: pgbun serves again, and says so.
    def served():
        try:
            with psycopg.connect(host=bun.host, port=bun.port, user="postgres", dbname="pgbun_test",
                                 connect_timeout=10) as conn:
                return conn.execute("SELECT 1").fetchone()[0] == 1
        except psycopg.OperationalError:
            return False

    wait_until(served, 20, interval=0.5, what="pgbun to serve again")
    assert open_fds(pid) < LIMIT


def test_postgres_at_max_connections_gives_clients_a_server_or_its_53300_never_a_hang(make_postgres, start_pgbun):
    """PostgreSQL with three connection slots for ordinary users (md5user is one), pgbun allowed ten: the
    clients past the third either wait for a server or get PostgreSQL's own 53300, and every one of them
    is answered."""
    pg2 = make_postgres()
    pg2.sql("ALTER SYSTEM SET max_connections = 6", dbname="postgres")  # 3 reserved for superusers
    pg2.stop()
    pg2.start()
    bun = start_pgbun(config={"pool_mode": "session", "default_pool_size": 10, "query_wait_timeout": 30},
                      databases={"pgbun_test": pg2.entry()})
    results = [None] * 8

    def client(i):
        try:
            with bun.connect(user="md5user", password="md5pass", connect_timeout=30) as conn:
                conn.execute("SELECT pg_sleep(1)")
                results[i] = "served"
        except psycopg.Error as exc:
            results[i] = exc

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a client hung"
    served = [r for r in results if r == "served"]
    refused = [r for r in results if r != "served"]
    assert len(served) >= 3, results
    for exc in refused:
        assert exc.sqlstate == "53300" or "too many clients" in str(exc), repr(exc)
    # And afterwards every client is served again.
    with bun.connect(user="md5user", password="md5pass") as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1
