"""Protocol-level prepared statements in transaction mode.

A client's named statements are pgbun's to keep: they follow the client to
whichever server it gets, prepared there under pgbun's own name, shared by
every client with the same text, closed by LRU eviction. These tests speak
the extended protocol byte by byte (pgwire), so that every reply, and every
reply pgbun must hide or give itself, is seen in its place. Clients are
steered onto a chosen server of a pool of two (on_server: two holders take
both servers, the one to use is let go).
"""

import struct

import pytest

from conftest import IS_PGBOUNCER, console_rows as show, on_server, server_pids, wait_until
from pgwire import SYNC, bind, close, describe, exchange, execute, message, parse, parse_fields, query_message as query

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="pgbun's prepared statement tracking")

POOL = {"pool_mode": "transaction", "default_pool_size": 2, "admin_users": "postgres"}


# ---- the extended protocol, one message at a time: pgwire's builders

def error_message(w, data):
    """The message of the first ErrorResponse to data (up to ReadyForQuery)."""
    w.send(data)
    msg = None
    while True:
        t, body = w.read_message(timeout=10)
        if t == b"E" and msg is None:
            msg = parse_fields(body)["M"]
        if t == b"Z":
            return msg


def run_bound(stmt, params=()):
    return bind(stmt, params) + execute() + SYNC


# ---- steering

def pid_of(w):
    return int(w.scalar("SELECT pg_backend_pid()"))


def stats(bun):
    return next(r for r in show(bun, "STATS") if r["database"] == "pgbun_test")


@pytest.fixture
def bun(start_pgbun):
    return start_pgbun(config=POOL)


# ---- tests

def test_a_statement_follows_its_client_to_the_other_server(bun):
    a, b = server_pids(bun)
    w = bun.login()
    assert on_server(bun, a, lambda: exchange(w, parse("s1", "SELECT $1::int * 2") + SYNC)) == "1 Z:I"
    assert on_server(bun, a, lambda: pid_of(w)) == a
    # On the other server, the Bind finds the statement prepared there first, its ParseComplete hidden.
    assert on_server(bun, b, lambda: exchange(w, run_bound("s1", ["21"]))) == "2 D=42 C Z:I"
    assert on_server(bun, b, lambda: exchange(w, describe(b"S", "s1") + SYNC)) == "t T Z:I"
    assert on_server(bun, a, lambda: exchange(w, run_bound("s1", ["5"]))) == "2 D=10 C Z:I"
    servers = [r for r in show(bun, "SERVERS") if r["database"] == "pgbun_test"]
    assert sorted(r["prepared_statements"] for r in servers) == [1, 1]
    client = [r for r in show(bun, "CLIENTS") if r["database"] == "pgbun_test" and r["prepared_statements"]]
    assert [r["prepared_statements"] for r in client] == [1]


def test_the_servers_names_are_pgbuns_and_clients_share_them(start_pgbun):
    # Clients share the statements of their worker (each worker keeps its own): one worker here.
    bun = start_pgbun(config=dict(POOL, default_pool_size=1, workers=1))
    w1, w2 = bun.login(), bun.login()
    assert exchange(w1, parse("mine", "SELECT 'shared'::text") + SYNC) == "1 Z:I"
    assert exchange(w2, parse("theirs", "SELECT 'shared'::text") + SYNC) == "1 Z:I"
    assert exchange(w1, run_bound("mine")) == "2 D=shared C Z:I"
    assert exchange(w2, run_bound("theirs")) == "2 D=shared C Z:I"
    names = w1.scalar("SELECT string_agg(name, ',') FROM pg_prepared_statements")
    assert names.startswith("pgbun_") and "," not in names, names
    st = stats(bun)
    assert (st["total_client_parse_count"], st["total_server_parse_count"]) == (2, 1)


def test_close_is_answered_for_the_client_and_the_name_is_gone(bun):
    w = bun.login()
    assert exchange(w, parse("s1", "SELECT 1") + SYNC) == "1 Z:I"
    assert exchange(w, close(b"S", "s1") + SYNC) == "3 Z:I"
    assert exchange(w, run_bound("s1")) == "E:26000 Z:I"
    assert exchange(w, close(b"S", "never") + SYNC) == "3 Z:I"  # as PostgreSQL: no error
    # The name is free again, for another text.
    assert exchange(w, parse("s1", "SELECT 2") + bind("s1") + execute() + SYNC) == "1 2 D=2 C Z:I"


def test_an_unknown_name_gets_postgresqls_error(bun):
    w = bun.login()
    assert error_message(w, run_bound("nope")) == 'prepared statement "nope" does not exist'
    assert exchange(w, describe(b"S", "nope") + SYNC) == "E:26000 Z:I"
    assert exchange(w, query("SELECT 1")) == "T D=1 C Z:I"


def test_preparing_a_name_twice_fails_as_in_postgresql(bun):
    w = bun.login()
    assert exchange(w, parse("s1", "SELECT 1") + SYNC) == "1 Z:I"
    assert error_message(w, parse("s1", "SELECT 1") + SYNC) == 'prepared statement "s1" already exists'
    assert exchange(w, parse("s1", "SELECT 2") + bind("s1") + execute() + SYNC) == "E:42P05 Z:I"
    assert exchange(w, run_bound("s1")) == "2 D=1 C Z:I"  # the first text still holds


def test_a_duplicate_fails_the_transaction_as_postgresql_would(bun):
    w = bun.login()
    assert exchange(w, query("DROP TABLE IF EXISTS dup_t; CREATE TABLE dup_t (v int)")) == "C C Z:I"
    assert exchange(w, parse("ins", "INSERT INTO dup_t VALUES ($1::int)") + SYNC) == "1 Z:I"
    # In a transaction block: the error leaves it failed ('E'), and the insert is rolled back.
    assert exchange(w, query("BEGIN")) == "C Z:T"
    assert exchange(w, run_bound("ins", ["1"]) + parse("ins", "SELECT 1") + SYNC, syncs=2) == "2 C Z:T E:42P05 Z:E"
    assert exchange(w, query("SELECT 1")) == "E:25P02 Z:E"
    assert exchange(w, query("COMMIT")) == "C Z:I"
    # In one implicit transaction (one Sync), the insert before the error is undone too.
    assert exchange(w, bind("ins", ["2"]) + execute() + parse("ins", "SELECT 1") + SYNC) == "2 C E:42P05 Z:I"
    assert w.scalar("SELECT count(*) FROM dup_t") == "0"


def test_a_failed_parse_leaves_no_name_behind(bun):
    w = bun.login()
    assert exchange(w, parse("s1", "SELEC 1") + SYNC) == "E:42601 Z:I"
    assert exchange(w, run_bound("s1")) == "E:26000 Z:I"
    assert exchange(w, parse("s1", "SELECT 1") + bind("s1") + execute() + SYNC) == "1 2 D=1 C Z:I"
    # And the server: the failed text is not believed prepared there.
    assert exchange(w, parse("s2", "SELECT no_such_column FROM pg_class") + SYNC) == "E:42703 Z:I"
    assert exchange(w, parse("s2", "SELECT no_such_column FROM pg_class") + SYNC) == "E:42703 Z:I"


def test_a_pipeline_with_a_failing_parse_in_the_middle(bun):
    w = bun.login()
    w2 = bun.login()
    assert exchange(w2, parse("warm", "SELECT 3") + SYNC) == "1 Z:I"  # the server has "SELECT 3": answered by pgbun
    pipeline = (parse("s1", "SELECT 1") + bind("s1") + execute() +
                parse("s2", "SELECT 1/") + bind("s2") + execute() +
                parse("s3", "SELECT 3") + close(b"S", "s1") + SYNC +
                parse("s4", "SELECT 4") + bind("s4") + execute() + SYNC)
    assert exchange(w, pipeline, syncs=2) == "1 2 D=1 C E:42601 Z:I 1 2 D=4 C Z:I"
    # s2 failed and s3 was skipped: neither exists.
    assert exchange(w, run_bound("s2")) == "E:26000 Z:I"
    assert exchange(w, run_bound("s3")) == "E:26000 Z:I"
    assert exchange(w, run_bound("s4")) == "2 D=4 C Z:I"
    assert exchange(w, parse("s3", "SELECT 33") + bind("s3") + execute() + SYNC) == "1 2 D=33 C Z:I"


def test_an_error_before_a_parse_pgbun_answers_undoes_it(start_pgbun):
    bun = start_pgbun(config=dict(POOL, default_pool_size=1))
    w, w2 = bun.login(), bun.login()
    assert exchange(w2, parse("x", "SELECT 7") + SYNC) == "1 Z:I"
    # The server holds "SELECT 7", so the Parse would be answered by pgbun; the error before it skips it.
    assert exchange(w, run_bound("missing")[:-5] + parse("s7", "SELECT 7") + SYNC) == "E:26000 Z:I"
    assert exchange(w, run_bound("s7")) == "E:26000 Z:I"


def test_flush_gets_the_replies_pgbun_gives(start_pgbun):
    bun = start_pgbun(config=dict(POOL, default_pool_size=1))
    w, w2 = bun.login(), bun.login()
    assert exchange(w2, parse("x", "SELECT 8") + SYNC) == "1 Z:I"
    w.send(parse("s8", "SELECT 8") + message(b"H"))
    assert w.read_message(timeout=10)[0] == b"1"
    w.send(close(b"S", "s8") + message(b"H"))
    assert w.read_message(timeout=10)[0] == b"3"
    assert exchange(w, SYNC) == "Z:I"


def test_eviction_keeps_at_most_max_prepared_statements_per_server(start_pgbun):
    bun = start_pgbun(config=dict(POOL, default_pool_size=1, max_prepared_statements=3))
    w = bun.login()
    for i in range(8):
        assert exchange(w, parse(f"s{i}", f"SELECT {i}") + SYNC) == "1 Z:I"
    [server] = [r for r in show(bun, "SERVERS") if r["database"] == "pgbun_test"]
    assert server["prepared_statements"] == 3
    with bun.connect() as conn:
        assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0] == 3
    # Every statement still works: the evicted ones are prepared again.
    for i in range(8):
        assert exchange(w, run_bound(f"s{i}")) == f"2 D={i} C Z:I"
    assert stats(bun)["total_server_parse_count"] > 8


def test_deallocate_all_drops_the_clients_statements(bun):
    w = bun.login()
    assert exchange(w, parse("s1", "SELECT 1") + SYNC) == "1 Z:I"
    assert exchange(w, query("DEALLOCATE ALL")) == "C Z:I"
    assert exchange(w, run_bound("s1")) == "E:26000 Z:I"
    # The name can be prepared again, on a server that really lost it, or not.
    assert exchange(w, parse("s1", "SELECT 1") + bind("s1") + execute() + SYNC) == "1 2 D=1 C Z:I"
    assert exchange(w, query("DISCARD ALL")) == "C Z:I"
    assert exchange(w, run_bound("s1")) == "E:26000 Z:I"
    assert exchange(w, parse("s1", "SELECT 11") + bind("s1") + execute() + SYNC) == "1 2 D=11 C Z:I"


def test_a_failed_deallocate_all_does_not_confuse_the_server(start_pgbun):
    bun = start_pgbun(config=dict(POOL, default_pool_size=1))
    w, keeper = bun.login(), bun.login()
    assert exchange(keeper, parse("k", "SELECT 1") + SYNC) == "1 Z:I"  # "SELECT 1" keeps its id: pgbun_N
    assert exchange(w, parse("s1", "SELECT 1") + SYNC) == "1 Z:I"
    assert exchange(w, query("BEGIN")) == "C Z:T"
    assert exchange(w, query("SELECT 1/0")) == "E:22012 Z:E"
    assert exchange(w, query("DEALLOCATE ALL")) == "E:25P02 Z:E"  # never ran: the server keeps pgbun_N
    assert exchange(w, query("ROLLBACK")) == "C Z:I"
    # The client keeps s1, as on PostgreSQL; pgbun no longer knows what the server holds, so it
    # closes the name before preparing it again.
    assert exchange(w, parse("s1", "SELECT 1") + SYNC) == "E:42P05 Z:I"
    assert exchange(w, bind("s1") + execute() + SYNC) == "2 D=1 C Z:I"
    assert exchange(w, parse("s2", "SELECT 1") + bind("s2") + execute() + SYNC) == "1 2 D=1 C Z:I"


def test_the_unnamed_statement_is_passed_through(bun):
    w = bun.login()
    assert exchange(w, parse("", "SELECT 5") + bind("") + execute() + SYNC) == "1 2 D=5 C Z:I"
    # Counted as PgBouncer counts: named statements only.
    st = stats(bun)
    assert (st["total_client_parse_count"], st["total_server_parse_count"], st["total_bind_count"]) == (0, 0, 0)


def test_statements_go_with_their_client(bun):
    w = bun.login()
    for i in range(5):
        assert exchange(w, parse(f"s{i}", f"SELECT {i}") + SYNC) == "1 Z:I"
    assert [r["prepared_statements"] for r in show(bun, "CLIENTS") if r["database"] == "pgbun_test"] == [5]
    w.terminate()
    wait_until(lambda: not [r for r in show(bun, "CLIENTS") if r["database"] == "pgbun_test"], 10,
               what="the client gone from SHOW CLIENTS")
    w2 = bun.login()
    assert exchange(w2, run_bound("s1")) == "E:26000 Z:I"


def test_session_state_off_passes_names_through(start_pgbun):
    bun = start_pgbun(config=dict(POOL, session_state="off"))
    a, b = server_pids(bun)
    w = bun.login()
    assert on_server(bun, a, lambda: exchange(w, parse("s1", "SELECT 1") + SYNC)) == "1 Z:I"
    # As in PgBouncer before its prepared statement support: the name is the server's, on that server only.
    assert on_server(bun, b, lambda: exchange(w, run_bound("s1"))) == "E:26000 Z:I"
    assert on_server(bun, a, lambda: exchange(w, run_bound("s1"))) == "2 D=1 C Z:I"


def test_a_malformed_parse_closes_only_its_client(bun):
    w, other = bun.login(), bun.login()
    w.send(message(b"P", b"s1\0SELECT 1\0" + struct.pack("!h", 3)) + SYNC)  # three types announced, none sent
    t, body = w.read_message(timeout=10)
    assert t == b"E" and parse_fields(body)["C"] == "08P01"
    assert w.is_closed(timeout=10)
    assert exchange(other, query("SELECT 1")) == "T D=1 C Z:I"


def test_sql_deallocate_of_a_protocol_statement(bun):
    """PHP's PDO, and psycopg past prepared_max, drop a protocol-level statement with SQL DEALLOCATE."""
    w, other = bun.login(), bun.login()
    assert exchange(other, parse("o", "SELECT 1") + SYNC) == "1 Z:I"  # the server's statement is shared
    assert exchange(w, parse("s1", "SELECT 1") + parse("S2", "SELECT 2") + SYNC) == "1 1 Z:I"
    assert exchange(w, query("DEALLOCATE s1")) == "C Z:I"
    assert exchange(w, run_bound("s1")) == "E:26000 Z:I"
    assert exchange(other, run_bound("o")) == "2 D=1 C Z:I"  # prepared again for the other client
    # The extended form, a quoted name, PREPARE and a semicolon.
    assert exchange(w, parse("", 'deallocate prepare "S2";') + bind("") + execute() + SYNC) == "1 2 C Z:I"
    assert exchange(w, run_bound("S2")) == "E:26000 Z:I"
    # A name the client never prepared is PostgreSQL's to refuse.
    assert exchange(w, query("DEALLOCATE nope")) == "E:26000 Z:I"


def test_psycopg_past_its_prepared_max(bun):
    conn = bun.connect(prepare_threshold=0)
    conn.prepared_max = 3
    for round_ in range(3):
        for i in range(6):
            assert conn.execute(f"SELECT %s::int + {i}", (round_,)).fetchone() == (round_ + i,)
    assert [r["prepared_statements"] for r in show(bun, "CLIENTS") if r["database"] == "pgbun_test"] == [3]


def test_a_large_bind_of_a_named_statement_streams(bun):
    """A Bind far bigger than one read: its head is rewritten as soon as both names are in, the rest streams."""
    conn = bun.connect(prepare_threshold=0)
    big = "x" * 3_000_000
    for i in range(3):
        assert conn.execute("SELECT length(%s::text) + %s", (big, i)).fetchone() == (3_000_000 + i,)
    w = bun.login()
    assert exchange(w, parse("s", "SELECT length($1::text)") + SYNC) == "1 Z:I"
    assert exchange(w, run_bound("s", ["y" * 500_000])) == "2 D=500000 C Z:I"


def test_deallocate_on_a_server_without_the_statement_in_a_failed_transaction(start_pgbun):
    """The server lacks the statement: pgbun prepares it behind a Sync of its own, so the Query still runs."""
    bun = start_pgbun(config=dict(POOL, default_pool_size=1))
    w, other = bun.login(), bun.login()
    assert exchange(w, parse("s1", "SELECT 1") + parse("s2", "SELECT 2") + SYNC) == "1 1 Z:I"
    assert exchange(other, query("DISCARD ALL")) == "C Z:I"  # the server loses them: pgbun knows it may have
    assert exchange(w, query("DEALLOCATE s2")) == "C Z:I"
    assert exchange(w, run_bound("s2")) == "E:26000 Z:I"
    assert exchange(w, query("BEGIN")) == "C Z:T"
    assert exchange(w, query("SELECT 1/0")) == "E:22012 Z:E"
    assert exchange(w, query("DEALLOCATE s1")) == "E:25P02 Z:E"  # as PostgreSQL answers it there, and no hang
    assert exchange(w, query("ROLLBACK")) == "C Z:I"


def test_an_eviction_skipped_after_an_error_does_not_break_the_server(start_pgbun):
    bun = start_pgbun(config=dict(POOL, default_pool_size=1, max_prepared_statements=1))
    w = bun.login()
    assert exchange(w, parse("s1", "SELECT 1") + SYNC) == "1 Z:I"
    # s2 needs room: s1's statement is closed ... in a pipeline PostgreSQL skips after the error.
    assert exchange(w, parse("", "SELECT 1/0") + bind("") + execute() + parse("s2", "SELECT 2") + SYNC) == \
        "1 E:22012 Z:I"  # 1/0 is folded when the statement is planned, at Bind
    assert exchange(w, run_bound("s1")) == "2 D=1 C Z:I"
    assert exchange(w, parse("s2", "SELECT 2") + bind("s2") + execute() + SYNC) == "1 2 D=2 C Z:I"


def test_a_parse_in_a_failed_stretch_is_not_counted_on_after_its_sync(start_pgbun):
    """Pipelined past a Sync before the error came back: the next stretch prepares again."""
    bun = start_pgbun(config=dict(POOL, default_pool_size=1))
    w, other = bun.login(), bun.login()
    assert exchange(w, parse("s1", "SELECT 1") + SYNC) == "1 Z:I"
    assert exchange(other, query("DISCARD ALL")) == "C Z:I"  # the server loses it
    failing = parse("", "SELECT 1/0") + bind("") + execute()
    assert exchange(w, failing + run_bound("s1") + run_bound("s1"), syncs=2) == "1 E:22012 Z:I 2 D=1 C Z:I"
    # The same text prepared twice in a row, failing: the second is not answered as if it had worked.
    assert exchange(w, parse("b1", "SELEC 1") + SYNC + parse("b2", "SELEC 1") + run_bound("b2"), syncs=2) == \
        "E:42601 Z:I E:42601 Z:I"


def test_a_failed_parse_undoes_only_its_own_name(bun):
    """Pipelined: the name's failed Parse, a Close and a new Parse of it; the error undoes the first only."""
    w = bun.login()
    assert exchange(w, parse("s1", "SELEC 1") + SYNC + close(b"S", "s1") + parse("s1", "SELECT 1") + SYNC, syncs=2) \
        == "E:42601 Z:I 3 1 Z:I"
    assert exchange(w, run_bound("s1")) == "2 D=1 C Z:I"


def test_a_parse_in_a_failed_transaction_is_refused_as_postgresql_does(start_pgbun):
    bun = start_pgbun(config=dict(POOL, default_pool_size=1))
    w, other = bun.login(), bun.login()
    assert exchange(other, parse("o", "SELECT 9") + SYNC) == "1 Z:I"  # the server holds "SELECT 9"
    assert exchange(w, query("BEGIN")) == "C Z:T"
    assert exchange(w, query("SELECT 1/0")) == "E:22012 Z:E"
    assert exchange(w, parse("s9", "SELECT 9") + SYNC) == "E:25P02 Z:E"
    assert exchange(w, query("ROLLBACK")) == "C Z:I"
    assert exchange(w, run_bound("s9")) == "E:26000 Z:I"
    assert exchange(w, parse("s9", "SELECT 9") + bind("s9") + execute() + SYNC) == "1 2 D=9 C Z:I"


def test_a_client_using_pgbuns_reserved_names_loses_only_its_own_connection(bun):
    w, other = bun.login(), bun.login()
    assert exchange(w, query("PREPARE pgbun_none AS SELECT 1")) == "C Z:I"  # pins w to its server
    assert exchange(w, parse("s1", "SELECT 1") + SYNC) == "1 Z:I"
    w.send(parse("s1", "SELECT 1") + SYNC)  # a duplicate: pgbun's Describe of pgbun_none finds it
    t, body = w.read_message(timeout=10)
    assert t == b"E" and parse_fields(body)["C"] == "42P05" and "reserved" in parse_fields(body)["M"]
    assert w.is_closed(timeout=10)
    assert exchange(other, query("SELECT 1")) == "T D=1 C Z:I"
