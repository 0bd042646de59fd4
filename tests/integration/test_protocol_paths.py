"""Protocol paths through transaction pooling: empty queries, FunctionCall,
NOTICE, NOTIFY, multi-statement queries. After each, the single server of
the pool must be free for another client."""

import struct

from conftest import backend_pid
from pgwire import message


def tx_bun(start_pgbun):
    return start_pgbun(config={"pool_mode": "transaction", "default_pool_size": 1})


def read_until(w, mtype):
    seen = []
    while True:
        got, body = w.read_message()
        seen.append((got, body))
        if got == mtype:
            return seen


def assert_server_free(bun):
    with bun.connect() as other:
        assert other.execute("SELECT 1").fetchone() == (1,)


def test_empty_query_releases_the_server(start_pgbun):
    bun = tx_bun(start_pgbun)
    w = bun.login()
    w.send(message(b"Q", b"\0"))
    seen = read_until(w, b"Z")
    assert [t for t, _ in seen] == [b"I", b"Z"]
    assert_server_free(bun)
    assert w.scalar("SELECT 5") == "5"


def test_function_call_is_answered_and_releases_the_server(start_pgbun):
    bun = tx_bun(start_pgbun)
    w = bun.login()
    oid = int(w.scalar("SELECT 'pg_catalog.pg_backend_pid'::regproc::oid"))
    # FunctionCall: oid, no argument formats, no arguments, text result
    w.send(message(b"F", struct.pack("!IhhH", oid, 0, 0, 0)))
    seen = read_until(w, b"Z")
    types = [t for t, _ in seen]
    assert types == [b"V", b"Z"], types
    assert_server_free(bun)


def test_multi_statement_query_is_one_transaction_turn(start_pgbun):
    bun = tx_bun(start_pgbun)
    w = bun.login()
    rows = w.query("SELECT 1; SELECT 2; SELECT 3")
    assert rows == [["3"]]
    assert_server_free(bun)


def test_notice_reaches_the_client(start_pgbun):
    bun = tx_bun(start_pgbun)
    notices = []
    with bun.connect() as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary))
        conn.execute("DO $$ BEGIN RAISE NOTICE 'hello from the server'; END $$")
    assert notices == ["hello from the server"]
    assert_server_free(bun)


def test_notify_reaches_a_listener_in_session_mode(start_pgbun):
    bun = start_pgbun()
    listener = bun.login()
    listener.query("LISTEN pgbun_channel")
    with bun.connect() as sender:
        sender.execute("NOTIFY pgbun_channel, 'payload'")
    mtype, body = listener.read_message(timeout=10)
    assert mtype == b"A", (mtype, body)
    channel, payload = body[4:].split(b"\0")[:2]
    assert (channel, payload) == (b"pgbun_channel", b"payload")


def test_unnamed_prepared_statements_work_in_transaction_mode(start_pgbun):
    bun = tx_bun(start_pgbun)
    with bun.connect() as conn:
        for i in range(5):  # psycopg sends Parse/Bind/Execute/Sync with the unnamed statement
            assert conn.execute("SELECT %s::int + 1", (i,)).fetchone() == (i + 1,)
            assert_server_free(bun)
        assert backend_pid(conn)
