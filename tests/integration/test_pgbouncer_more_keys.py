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
