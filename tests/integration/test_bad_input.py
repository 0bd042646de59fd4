"""Malformed and unusual startup traffic: a clear error, only that connection
closed, everyone else served. Also SSLRequest/GSSENCRequest and protocol
version negotiation."""

import socket
import struct
import time

import pytest

import pgwire

BASE = {"user": "postgres", "database": "pgbun_test"}


def expect_08P01_and_close(w):
    """The connection gets an ErrorResponse 08P01 and is closed."""
    msgs = w.read_until_closed(timeout=10)
    errors = [pgwire.parse_fields(body) for t, body in msgs if t == b"E"]
    assert errors, f"no ErrorResponse before the close, got {msgs!r}"
    assert errors[0].get("C") == "08P01", errors[0]
    assert errors[0].get("M"), "the error has no message"
    return errors[0]


def still_serves(bun):
    with bun.connect() as conn:
        assert conn.execute("SELECT 'alive'").fetchone() == ("alive",)


@pytest.fixture
def bystander(bun):
    """A client logged in before the bad input arrives; it must be unaffected."""
    conn = bun.connect()
    conn.execute("SELECT 1")
    yield conn
    assert conn.execute("SELECT 'bystander ok'").fetchone() == ("bystander ok",)
    conn.close()


def test_startup_packet_shorter_than_8_bytes_is_refused(bun, bystander):
    w = bun.wire()
    # a full 8-byte header whose length word says 4
    w.send(struct.pack("!ii", 4, pgwire.PROTOCOL_3_0))
    expect_08P01_and_close(w)
    still_serves(bun)


def test_startup_packet_length_7_is_refused(bun, bystander):
    w = bun.wire()
    w.send(struct.pack("!ii", 7, pgwire.PROTOCOL_3_0))
    expect_08P01_and_close(w)
    still_serves(bun)


def test_startup_packet_over_10000_bytes_is_refused(bun, bystander):
    w = bun.wire()
    w.send(struct.pack("!ii", 10001, pgwire.PROTOCOL_3_0))
    expect_08P01_and_close(w)
    still_serves(bun)


def test_huge_startup_packet_with_body_is_refused(bun, bystander):
    w = bun.wire()
    big = pgwire.startup_packet(dict(BASE, application_name="x" * 20000))
    try:
        w.send(big)
    except OSError:
        pass  # pgbun may close before reading it all
    try:
        msgs = w.read_until_closed(timeout=10)
    except OSError:
        msgs = []
    errors = [pgwire.parse_fields(b) for t, b in msgs if t == b"E"]
    assert not errors or errors[0].get("C") == "08P01"
    assert not any(t == b"Z" for t, _ in msgs), "pgbun accepted an oversized startup packet"
    still_serves(bun)


def test_garbage_bytes_are_refused(bun, bystander):
    w = bun.wire()
    w.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    expect_08P01_and_close(w)
    still_serves(bun)


def test_random_binary_garbage_is_refused(bun, bystander):
    w = bun.wire()
    w.send(struct.pack("!i", 64) + bytes(range(200, 256)) + bytes(4))
    expect_08P01_and_close(w)
    still_serves(bun)


def test_unknown_protocol_code_is_refused(bun, bystander):
    w = bun.wire()
    w.send(pgwire.startup_packet(BASE, protocol=pgwire.protocol_code(1234, 5678)))
    expect_08P01_and_close(w)
    still_serves(bun)


def test_protocol_2_is_refused(bun, bystander):
    w = bun.wire()
    w.send(pgwire.startup_packet(BASE, protocol=pgwire.protocol_code(2, 0)))
    expect_08P01_and_close(w)
    still_serves(bun)


def test_startup_packet_without_terminator_is_refused(bun, bystander):
    w = bun.wire()
    body = b"user\0postgres\0database\0pgbun_test"  # no trailing NULs
    w.send(pgwire.raw_packet(pgwire.PROTOCOL_3_0, body))
    expect_08P01_and_close(w)
    still_serves(bun)


def test_startup_packet_without_user_is_refused(bun, bystander):
    w = bun.wire()
    w.send(pgwire.startup_packet({"database": "pgbun_test"}))
    msgs = w.read_until_closed(timeout=10)
    errors = [pgwire.parse_fields(b) for t, b in msgs if t == b"E"]
    assert errors, msgs
    assert errors[0]["C"] in ("08P01", "28000"), errors[0]
    still_serves(bun)


def test_client_that_connects_and_sends_nothing_is_closed_after_client_login_timeout(start_pgbun):
    bun = start_pgbun(config={"client_login_timeout": 2})
    w = bun.wire()
    start = time.monotonic()
    assert w.is_closed(timeout=10), "silent client was never closed"
    assert time.monotonic() - start < 8
    still_serves(bun)


def test_client_that_sends_half_a_header_is_closed_after_client_login_timeout(start_pgbun):
    bun = start_pgbun(config={"client_login_timeout": 2})
    w = bun.wire()
    w.send(struct.pack("!i", 4))
    assert w.is_closed(timeout=10), "client with a partial header was never closed"
    still_serves(bun)


def test_client_that_closes_mid_startup_does_not_disturb_pgbun(bun, bystander):
    for cut in (1, 3, 6, 12):
        w = bun.wire()
        w.send(pgwire.startup_packet(BASE)[:cut])
        w.close()
    still_serves(bun)


def test_many_bad_clients_in_a_row_leave_pgbun_serving(bun, bystander):
    for i in range(30):
        w = bun.wire()
        try:
            w.send(struct.pack("!i", 3 + i % 4) + b"\xff" * 8)
            w.read_until_closed(timeout=5)
        except OSError:
            pass
        w.close()
    still_serves(bun)


def test_ssl_request_is_answered_n_and_a_normal_startup_follows(bun):
    w = bun.wire()
    w.send(pgwire.ssl_request())
    assert w.read_byte() == b"N"
    w.login("postgres", "pgbun_test")
    assert w.scalar("SELECT 'plain after N'") == "plain after N"
    w.terminate()


def test_gssenc_request_is_answered_n_and_a_normal_startup_follows(bun):
    w = bun.wire()
    w.send(pgwire.gssenc_request())
    assert w.read_byte() == b"N"
    w.login("postgres", "pgbun_test")
    assert w.scalar("SELECT 'plain after N'") == "plain after N"
    w.terminate()


def test_psql_with_sslmode_prefer_falls_back_to_plain(bun):
    res = bun.psql(["-At", "-c", "SELECT 'ok'", "dbname=pgbun_test user=postgres sslmode=prefer"])
    assert res.stdout.strip() == "ok"


def test_psql_with_sslmode_require_is_refused(bun):
    res = bun.psql(["-At", "-c", "SELECT 1", "dbname=pgbun_test user=postgres sslmode=require"],
                   check=False)
    assert res.returncode != 0
    assert "SSL" in res.stderr


def _negotiate(bun, protocol, extra):
    w = bun.wire()
    seen = w.login("postgres", "pgbun_test", params=extra, protocol=protocol)
    types = [t for t, _ in seen]
    assert b"v" in types, f"no NegotiateProtocolVersion in {types}"
    body = dict(seen)[b"v"]
    newest_minor, n = struct.unpack("!ii", body[:8])
    names = pgwire.parse_cstrings(body[8:])
    assert types.index(b"v") < types.index(b"R"), "NegotiateProtocolVersion must come first"
    assert w.auth_requests[-1] == pgwire.AUTH_OK
    assert w.scalar("SELECT 'negotiated'") == "negotiated"
    w.terminate()
    return newest_minor, n, names


def test_protocol_3_2_gets_negotiate_protocol_version_then_logs_in(bun):
    newest_minor, n, names = _negotiate(bun, pgwire.protocol_code(3, 2), {})
    assert newest_minor == 0
    assert n == 0 and names == []


def test_pq_option_gets_negotiate_protocol_version_naming_it(bun):
    newest_minor, n, names = _negotiate(bun, pgwire.PROTOCOL_3_0, {"_pq_.foo": "bar"})
    assert newest_minor == 0
    assert names == ["_pq_.foo"] and n == 1


def test_newer_minor_and_pq_options_together(bun):
    newest_minor, n, names = _negotiate(bun, pgwire.protocol_code(3, 9),
                                        {"_pq_.foo": "1", "_pq_.bar": "2"})
    assert newest_minor == 0
    assert sorted(names) == ["_pq_.bar", "_pq_.foo"] and n == 2


def test_unknown_message_type_after_login_does_not_kill_pgbun(bun, bystander):
    w = bun.login()
    w.send(pgwire.message(b"\x01", b"junk"))
    try:
        w.read_until_closed(timeout=10)
    except (socket.timeout, OSError):
        pass
    w.close()
    still_serves(bun)
