"""More PgBouncer keys that take effect: disable_pqexec, login_notify_message,
unix_socket_group and application_name_add_host."""

import psycopg
import pytest

import pgwire
from conftest import IS_PGBOUNCER, console_rows

ADMIN = {"admin_users": "postgres"}


# ------------------------------------------------------------ disable_pqexec

def test_disable_pqexec_refuses_a_simple_query_and_lets_the_extended_protocol_through(start_pgbun):
    bun = start_pgbun(config={**ADMIN, "disable_pqexec": 1})
    conn = bun.connect()
    assert conn.execute("SELECT %s::int + 1", (41,)).fetchone() == (42,)
    assert conn.execute("SELECT %s::text", ("p",), prepare=True).fetchone() == ("p",)
    # a simple Query, before any server is linked: refused and closed
    w = bun.login()
    with pytest.raises(pgwire.PgError) as err:
        w.query("SELECT 1; SELECT 2")
    assert err.value.sqlstate == "08P01" and "PQexec disallowed" in err.value.message, err.value.fields
    assert w.is_closed(timeout=5)
    # the same on a client that holds its server (session mode, linked by an extended query)
    w = bun.login()
    assert pgwire.exchange(w, pgwire.parse("", "SELECT 5") + pgwire.bind("") + pgwire.execute()
                           + pgwire.message(b"S")) == "1 2 D=5 C Z:I"
    with pytest.raises(pgwire.PgError) as err:
        w.query("SELECT 1")
    assert err.value.sqlstate == "08P01" and "PQexec disallowed" in err.value.message, err.value.fields
    assert w.is_closed(timeout=5)
    # everyone else goes on
    assert conn.execute("SELECT %s::int", (3,)).fetchone() == (3,)
    assert "PQexec disallowed" in bun.log_text()
    # the admin console still takes its simple queries
    assert any(r["database"] == "pgbun_test" for r in console_rows(bun, "POOLS"))
    assert "pgbun_test" in bun.psql(["-d", "pgbun", "-U", "postgres", "-c", "SHOW POOLS"]).stdout


def test_simple_queries_pass_without_disable_pqexec(bun):
    w = bun.login()
    assert w.query("SELECT 1; SELECT 2") == [["2"]]


# ------------------------------------------------------------ login_notify_message

def test_login_notify_message_is_a_notice_before_the_first_ready_for_query(start_pgbun):
    text = "maintenance at 22:00 UTC: expect a short outage"
    bun = start_pgbun(config={**ADMIN, "login_notify_message": text})
    w = bun.wire()
    seen = [t for t, _ in w.login("postgres", "pgbun_test")]
    assert [n["M"] for n in w.notices] == [text] and w.notices[0]["S"] == "NOTICE", w.notices
    assert seen.index(b"N") < seen.index(b"Z") == len(seen) - 1, seen
    assert w.scalar("SELECT 1") == "1"
    assert not w.notices[1:], w.notices
    # libpq shows it as the session opens
    assert f"NOTICE:  {text}" in bun.psql(["-d", "pgbun_test", "-U", "postgres", "-c", "SELECT 1"]).stderr


def test_no_login_notice_without_login_notify_message(bun):
    w = bun.wire()
    w.login("postgres", "pgbun_test")
    assert w.notices == []
    assert bun.psql(["-d", "pgbun_test", "-U", "postgres", "-c", "SELECT 1"]).stderr == ""
