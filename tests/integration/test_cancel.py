"""CancelRequest through pgbun, and per-client BackendKeyData."""

import threading
import time

import psycopg
import pytest

import pgwire


def cancel_later(conn, delay):
    """conn.cancel() from another thread after delay; returns (thread, times)."""
    times = {}

    def go():
        time.sleep(delay)
        times["cancel"] = time.monotonic()
        conn.cancel()

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, times


def send_cancel(bun, pid, key):
    w = pgwire.Wire(bun.host, bun.port)
    w.send(pgwire.cancel_request(pid, key))
    closed = w.is_closed(timeout=5)
    w.close()
    return closed


@pytest.mark.parametrize("via", ["tcp", "unix"])
def test_cancel_of_pg_sleep_returns_within_a_second(bun, via):
    conn = bun.connect(host=bun.unix_dir if via == "unix" else bun.host)
    t, times = cancel_later(conn, 0.5)
    with pytest.raises(psycopg.errors.QueryCanceled) as err:
        conn.execute("SELECT pg_sleep(10)")
    done = time.monotonic()
    t.join(5)
    assert err.value.sqlstate == "57014"
    assert done - times["cancel"] < 5, f"cancel took {done - times['cancel']:.2f}s"
    assert conn.execute("SELECT 'usable after cancel'").fetchone() == ("usable after cancel",)
    conn.close()


def test_cancel_inside_a_transaction_leaves_it_failed_then_rollback_recovers(bun):
    conn = bun.connect(autocommit=False)
    conn.execute("SELECT 1")
    t, _ = cancel_later(conn, 0.3)
    with pytest.raises(psycopg.errors.QueryCanceled):
        conn.execute("SELECT pg_sleep(10)")
    t.join(5)
    with pytest.raises(psycopg.errors.InFailedSqlTransaction):
        conn.execute("SELECT 1")
    conn.rollback()
    assert conn.execute("SELECT 2").fetchone() == (2,)
    conn.close()


def test_cancel_request_connection_is_closed_without_a_reply(bun):
    with bun.connect() as conn:
        w = pgwire.Wire(bun.host, bun.port)
        w.send(pgwire.cancel_request(conn.info.backend_pid, 12345))
        msgs = w.read_until_closed(timeout=5)
        assert msgs == []


def test_each_client_gets_its_own_backend_key(start_pgbun):
    bun = start_pgbun(config={"default_pool_size": 1})
    keys, pids = [], []
    for _ in range(3):
        w = bun.login()
        keys.append(w.backend_key)
        pids.append(w.scalar("SELECT pg_backend_pid()"))
        w.terminate()
    assert len(set(pids)) == 1, "the test expects one shared server"
    assert None not in keys
    assert len(set(keys)) == 3, f"clients of one server share a cancel key: {keys}"


def test_concurrent_clients_get_different_backend_keys(bun):
    a, b = bun.login(), bun.login()
    assert a.backend_key != b.backend_key
    a.terminate()
    b.terminate()


def test_cancel_with_a_wrong_key_is_ignored(bun):
    conn = bun.connect()
    pid = conn.info.backend_pid
    result = {}

    def run():
        result["row"] = conn.execute("SELECT pg_sleep(1.5), 'finished'").fetchone()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    time.sleep(0.4)
    w = bun.login()
    real_pid, real_key = w.backend_key
    send_cancel(bun, pid, real_key ^ 0x5A5A5A5A)
    t.join(10)
    assert result.get("row") == ("", "finished")
    w.terminate()
    assert real_pid is not None
    conn.close()


def test_cancel_key_of_a_client_that_left_does_not_cancel_the_next_client(start_pgbun):
    bun = start_pgbun(config={"default_pool_size": 1})
    a = bun.login()
    old_pid, old_key = a.backend_key
    server_pid = int(a.scalar("SELECT pg_backend_pid()"))
    a.terminate()

    conn = bun.connect()
    assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] == server_pid
    result = {}

    def run():
        result["row"] = conn.execute("SELECT pg_sleep(1.5), 'finished'").fetchone()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    time.sleep(0.4)
    send_cancel(bun, old_pid, old_key)
    t.join(10)
    assert result.get("row") == ("", "finished"), "a stale cancel key cancelled another client"
    conn.close()


def test_cancel_for_an_idle_client_is_harmless(bun):
    conn = bun.connect()
    conn.cancel()
    time.sleep(0.3)
    assert conn.execute("SELECT 'fine'").fetchone() == ("fine",)
    conn.close()
