"""Clients that are hostile, or only unlucky: a Parse that is not all there
when the client is given a server (far bigger than one read, or written in
pieces), type bytes PostgreSQL does not accept after login, and a message
PostgreSQL never answers sent while another client waits for the server.
pgbun must answer as PostgreSQL would, closing at most that one client, and
keep serving everyone else. The tests write the protocol's bytes (pgwire);
every read is bounded, so a pgbun that crashed or stopped answering fails
the test instead of stalling it."""

import re
import socket
import time

import pytest

from conftest import IS_PGBOUNCER
from pgwire import (SYNC, ConnectionClosed, bind, close, describe, execute, message, parse, parse_fields,
                    query_message as query, replies)

MODES = ("transaction", "statement", "session")
WORKERS = (1, 2)

# The message types PostgreSQL accepts once a client is logged in.
ACCEPTED_TYPES = b"QPBDECSHFdcfX"


# ---- the extended protocol: pgwire's builders, and a Parse/Bind/Execute/Sync of one text

def run_text(name, sql):
    """Parse, Bind, Execute and Sync of one text without parameters."""
    return parse(name, sql) + bind(name) + execute() + SYNC


def send(w, data, timeout=30):
    """sendall, bounded: a pgbun that stops reading fails the test."""
    w.sock.settimeout(timeout)
    w.send(data)


def nodelay(w):
    w.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return w


def length_query(size):
    """A text of `size` bytes asking PostgreSQL for the length of its literal, and that length."""
    head, tail = "SELECT length('", "')"
    n = size - len(head) - len(tail)
    return head + "x" * n + tail, n


def still_serves(bun):
    assert bun.alive(), f"pgbun is gone:\n{bun.log_text()[-4000:]}"
    with bun.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert bun.alive()


def workers_key(n):
    return None if IS_PGBOUNCER else n


@pytest.fixture(params=[(m, n) for m in MODES for n in WORKERS], ids=lambda p: f"{p[0]}-workers{p[1]}")
def pooled(request, start_pgbun):
    """pgbun in each pool mode, with one and two workers, and one server that the clients share (in
    session mode, one for the test's client and one for the client that checks pgbun still serves)."""
    mode, workers = request.param
    return start_pgbun(config={"pool_mode": mode, "default_pool_size": 2 if mode == "session" else 1,
                               "workers": workers_key(workers)})


# ---- 1. a Parse that is not all there when the client is given a server

@pytest.mark.parametrize("size", [32 << 10, 64 << 10, 1 << 20, 16 << 20], ids=["32KB", "64KB", "1MB", "16MB"])
@pytest.mark.parametrize("name", ["", "big"], ids=["unnamed", "named"])
def test_a_parse_far_bigger_than_one_read_is_executed(pooled, size, name):
    w = pooled.login()
    sql, n = length_query(size)
    send(w, run_text(name, sql))
    assert replies(w) == f"1 2 D={n} C Z:I"
    send(w, query("SELECT 'after'"))
    assert replies(w) == "T D=after C Z:I"
    still_serves(pooled)


@pytest.mark.parametrize("name", ["", "big"], ids=["unnamed", "named"])
def test_a_big_parse_that_waits_for_the_server_is_executed(pooled, name):
    holder, w = pooled.login(), pooled.login()
    send(holder, query("SELECT pg_sleep(0.3)"))  # the pool's one server is busy (in session mode, one of two)
    time.sleep(0.1)
    sql, n = length_query(1 << 20)
    send(w, run_text(name, sql))
    assert replies(holder) == "T D= C Z:I"
    assert replies(w) == f"1 2 D={n} C Z:I"
    holder.close()
    still_serves(pooled)


def test_a_named_parse_written_in_two_pieces_is_executed(pooled):
    w = nodelay(pooled.login())
    first = parse("s1", "SELECT 'two pieces'")
    send(w, first[:8])  # the header and a few bytes of the body
    time.sleep(0.3)
    send(w, first[8:] + bind("s1") + execute() + SYNC)
    assert replies(w) == "1 2 D=two pieces C Z:I"
    still_serves(pooled)


def test_an_unnamed_parse_written_in_two_pieces_is_executed(pooled):
    w = nodelay(pooled.login())
    first = parse("", "SELECT 'two pieces'")
    send(w, first[:8])
    time.sleep(0.3)
    send(w, first[8:] + bind("") + execute() + SYNC)
    assert replies(w) == "1 2 D=two pieces C Z:I"
    still_serves(pooled)


def test_two_hundred_statements_of_10kb_in_one_pipeline_are_all_executed(pooled):
    w = pooled.login()
    pad = "x" * 10_000
    pipeline, expected = b"", []
    for i in range(200):
        name = f"p{i}" if i % 2 else ""  # named and unnamed, in turn
        pipeline += parse(name, f"SELECT {i}, length('{pad}')") + bind(name) + execute()
        expected.append(f"1 2 D={i}|10000 C")
    send(w, pipeline + SYNC)
    assert replies(w) == " ".join(expected) + " Z:I"
    still_serves(pooled)


def test_psycopg_preparing_a_40kb_text_gets_its_row(pooled):
    conn = pooled.connect()
    for _ in range(2):
        cur = conn.execute("select 1 as x" + " " * 40000 + " where 1 = %s", (1,), prepare=True)
        assert cur.fetchall() == [(1,)]
    still_serves(pooled)


def test_an_extended_sequence_and_a_query_sent_one_byte_at_a_time_get_their_results(pooled):
    w = nodelay(pooled.login())
    sequence = (parse("s1", "SELECT $1::int + 1") + bind("s1", ["41"]) + describe(b"P", "") + execute() + SYNC +
                query("SELECT 'simple'") + close(b"S", "s1") + SYNC)
    for _ in range(2):  # the second time, the statement may be known to pgbun and the server
        for i in range(len(sequence)):
            send(w, sequence[i:i + 1])
            time.sleep(0.002)
        assert replies(w, syncs=3) == "1 2 T D=42 C Z:I T D=simple C Z:I 3 Z:I"
    still_serves(pooled)


# ---- 2. every type byte after login

def answer(w, data, timeout=5):
    """What a logged-in client gets for data: (messages, how it ended: 'ready' at the first
    ReadyForQuery, 'closed', or 'no answer' within the timeout)."""
    try:
        send(w, data, timeout=timeout)
    except OSError:
        pass  # closed already: read what came before the close
    seen = []
    try:
        while True:
            t, body = w.read_message(timeout=timeout)
            seen.append((t, body))
            if t == b"Z":
                return seen, "ready"
    except ConnectionClosed:
        return seen, "closed"
    except socket.timeout:
        return seen, "no answer"


def refusal_text(b, text):
    """PostgreSQL's words for an invalid type byte b (PgBouncer has its own: "unknown pkt")."""
    return IS_PGBOUNCER or re.search(rf"invalid frontend message type {b}(?!\d)", text)


def described(t, body):
    """A message in a few words: its type, and for an error its severity, SQLSTATE and message."""
    if t == b"E":
        f = parse_fields(body)
        return f"E({f.get('S')} {f.get('C')} {f.get('M')!r})"
    return t.decode("latin-1")


def refusal_problem(b, seen, end):
    """Why the answer to a message of invalid type byte b is not PostgreSQL's (one ErrorResponse,
    FATAL 08P01 "invalid frontend message type <b>", then the close), or None."""
    got = "got " + " ".join(described(t, body) for t, body in seen) + f" <{end}>"
    if end != "closed" or [t for t, _ in seen] != [b"E"]:
        return f"{b}: wanted one FATAL 08P01 and the close, {got}"
    e = parse_fields(seen[0][1])
    if e.get("S") != "FATAL" or e.get("C") != "08P01" or not refusal_text(b, e.get("M", "")):
        return f"{b}: wanted FATAL 08P01 'invalid frontend message type {b}', {got}"
    return None


def summary(problems, shown=12):
    more = f"\n... and {len(problems) - shown} more" if len(problems) > shown else ""
    return f"{len(problems)} wrong answers:\n" + "\n".join(problems[:shown]) + more


@pytest.mark.parametrize("workers", WORKERS)
def test_every_type_byte_after_login_is_answered_and_the_invalid_ones_refused(start_pgbun, workers):
    bun = start_pgbun(config={"pool_mode": "transaction", "default_pool_size": 2, "workers": workers_key(workers)})
    bystander = bun.connect()
    assert bystander.execute("SELECT 1").fetchone() == (1,)
    problems = []
    for b in range(256):
        try:
            w = bun.login()
        except (OSError, ConnectionClosed) as exc:
            problems.append(f"{b}: no login ({exc!r}); pgbun alive: {bun.alive()}")
            break
        with w:
            seen, end = answer(w, message(bytes([b]), b"\0\0\0\0") + SYNC)
        if end == "no answer":
            problems.append(f"{b}: no answer and no close within 5 s, got {[t for t, _ in seen]}; stopped there")
            break
        if b not in ACCEPTED_TYPES:
            problem = refusal_problem(b, seen, end)
            if problem:
                problems.append(problem)
    if problems:
        pytest.fail(summary(problems))
    assert bystander.execute("SELECT 'bystander ok'").fetchone() == ("bystander ok",)
    still_serves(bun)


@pytest.mark.parametrize("mode", ["transaction", "statement"])
def test_a_message_of_type_byte_0_alone_is_refused_and_pgbun_stays_up(start_pgbun, mode):
    """Type 0 is no request to forward and wait on, even with nothing behind it: it is refused as any other."""
    bun = start_pgbun(config={"pool_mode": mode, "default_pool_size": 1})
    bystander = bun.connect()
    assert bystander.execute("SELECT 1").fetchone() == (1,)
    for body in (b"\0\0\0\0", b"\xbe%h\xa9"):
        with bun.login() as w:
            seen, end = answer(w, message(b"\0", body))
        problem = refusal_problem(0, seen, end)
        assert problem is None, problem
        assert bun.alive(), f"pgbun is gone:\n{bun.log_text()[-4000:]}"
    assert bystander.execute("SELECT 'bystander ok'").fetchone() == ("bystander ok",)
    still_serves(bun)


# ---- 3. a message PostgreSQL never answers, while another client waits for the server

def one_server_pool(start_pgbun, workers):
    bun = start_pgbun(config={"pool_mode": "transaction", "default_pool_size": 1, "workers": workers_key(workers)})
    still_serves(bun)  # the server is open and idle
    return bun


def assert_refused_and_closed(w):
    """The client that sent the 'z' gets PostgreSQL's refusal, nothing worse, and is closed."""
    seen = w.read_until_closed(timeout=10)
    errors = [parse_fields(body) for t, body in seen if t == b"E"]
    assert errors, f"no ErrorResponse before the close: {[t for t, _ in seen]}"
    assert [e.get("C") for e in errors] == ["08P01"], errors
    assert errors[0].get("S") == "FATAL" and refusal_text(ord("z"), errors[0].get("M", "")), errors[0]


def assert_served(w, expected):
    """The waiting client's query gets its row and no error, and its next one too."""
    assert replies(w, timeout=10) == f"T D={expected} C Z:I"
    send(w, query("SELECT 'and again'"))
    assert replies(w, timeout=10) == "T D=and again C Z:I"


@pytest.mark.parametrize("workers", WORKERS)
def test_an_unanswered_message_behind_a_query_does_not_reach_the_next_client(start_pgbun, workers):
    bun = one_server_pool(start_pgbun, workers)
    for round_ in range(3):
        a, b = bun.login(), bun.login()
        send(a, query("SELECT pg_sleep(0.5)") + message(b"z"))  # in one write: A holds the server
        time.sleep(0.1)
        send(b, query(f"SELECT 'B{round_} is fine'"))  # B waits for it
        assert_served(b, f"B{round_} is fine")
        assert_refused_and_closed(a)
        b.close()
    still_serves(bun)


@pytest.mark.parametrize("workers", WORKERS)
def test_an_unanswered_message_alone_does_not_reach_the_client_waiting_behind_it(start_pgbun, workers):
    bun = one_server_pool(start_pgbun, workers)
    for round_ in range(3):
        holder, a, b = bun.login(), bun.login(), bun.login()
        send(holder, query("SELECT pg_sleep(0.5)"))
        time.sleep(0.1)
        send(a, message(b"z"))  # A waits for the server, if pgbun takes one for it
        time.sleep(0.1)
        send(b, query(f"SELECT 'B{round_} is fine'"))  # B waits behind A
        assert replies(holder, timeout=10) == "T D= C Z:I"
        assert_served(b, f"B{round_} is fine")
        assert_refused_and_closed(a)
        holder.close()
        b.close()
    still_serves(bun)

