"""pgbun's memory stays bounded per connection, whatever clients and servers send.

pgbun stops reading a side while what it holds for the other side passes
PGBUN_OUT_LIMIT (256 KB, src/pgbun.h), and reads at most PGBUN_READ_MAX
(16 KB) per wakeup; large messages are passed on by byte count, not
gathered whole. So a client that does not read a huge result, or many
clients that each send the largest messages at once, cost pgbun a bounded
amount each: the buffers' 256 KB and some, under the 1 MB per connection
the tests allow (malloc keeps what it was given).
"""
import threading
import time

import pytest

import pgwire
from conftest import IS_PGBOUNCER, pgbun_binary, wait_until


def sanitized():
    """Whether pgbun is built with AddressSanitizer, whose quarantine keeps freed memory resident."""
    return not IS_PGBOUNCER and b"__asan_init" in pgbun_binary().read_bytes()


pytestmark = [pytest.mark.skipif(IS_PGBOUNCER, reason="pgbun's own bounds"),
              pytest.mark.skipif(sanitized(), reason="AddressSanitizer's quarantine keeps freed memory: RSS "
                                                     "tells nothing of pgbun's own")]

CLIENTS = 20
BOUND_PER_CLIENT = 1 << 20  # bytes of pgbun's RSS a stalled client may cost


def rss(pid):
    """Resident set size of a process in bytes, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def peak_rss(pid, seconds):
    peak, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        peak = max(peak, rss(pid))
        time.sleep(0.05)
    return peak


def logged_in(bun, n):
    wires = []
    for _ in range(n):
        w = pgwire.Wire(bun.host, bun.port, timeout=30)
        w.login("postgres", "pgbun_test")
        wires.append(w)
    return wires


def test_clients_that_do_not_read_huge_results_cost_a_bounded_amount_each(start_pgbun):
    bun = start_pgbun(config={"default_pool_size": CLIENTS + 5, "max_client_conn": 200})
    pid = bun.proc.pid
    wires = logged_in(bun, CLIENTS)
    try:
        # Warm up: every client has had a server once, and pgbun's buffers have been through a result.
        for w in wires:
            assert w.query("SELECT count(*) FROM generate_series(1, 1000)") == [["1000"]]
        base = rss(pid)
        # 200 MB each, 4 GB in all: pgbun must stop reading each server while its client does not read.
        for w in wires:
            w.send(pgwire.query_message("SELECT repeat('x', 1000000) FROM generate_series(1, 200)"))
        time.sleep(2)
        peak = peak_rss(pid, 3)
        assert peak - base < CLIENTS * BOUND_PER_CLIENT, (base, peak)

        # Nothing was lost while held back: one client reads its whole result.
        rows = 0
        while True:
            mtype, body = wires[0].read_message(timeout=120)
            if mtype == b"D":
                rows += 1
                assert len(body) == 2 + 4 + 1000000
            elif mtype == b"Z":
                break
        assert rows == 200
    finally:
        for w in wires:
            w.close()
    # Clients gone: pgbun is still serving.
    with bun.connect() as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_many_clients_sending_the_largest_messages_at_once_cost_a_bounded_amount_each(start_pgbun):
    """Pool of 2, held busy: every other client waits for a server with a 64 MB Query on its way."""
    bun = start_pgbun(config={"default_pool_size": 2, "max_client_conn": 200, "query_wait_timeout": 120})
    pid = bun.proc.pid
    holders = logged_in(bun, 2)
    senders = logged_in(bun, CLIENTS)
    try:
        for w in holders:
            w.send(pgwire.query_message("BEGIN; SELECT pg_sleep(600)"))
        base = rss(pid)
        big = pgwire.query_message("SELECT length('" + "y" * (64 << 20) + "')")
        errors = []

        def send(w):
            try:
                w.sock.settimeout(None)
                w.sock.setblocking(False)
                sent = 0
                deadline = time.monotonic() + 20
                while sent < len(big) and time.monotonic() < deadline:
                    try:
                        sent += w.sock.send(big[sent:sent + (1 << 20)])
                    except BlockingIOError:
                        time.sleep(0.01)
            except OSError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=send, args=(w,)) for w in senders]
        for t in threads:
            t.start()
        peak = peak_rss(pid, 5)
        for t in threads:
            t.join(30)
        peak = max(peak, peak_rss(pid, 1))
        assert not errors, errors
        assert peak - base < CLIENTS * BOUND_PER_CLIENT, (base, peak)
    finally:
        for w in holders + senders:
            w.close()
    wait_until(lambda: bun.connect().execute("SELECT 1").fetchone()[0] == 1, 30, interval=0.5,
               what="pgbun to serve again")
