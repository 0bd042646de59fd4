"""More PgBouncer keys that take effect: disable_pqexec, login_notify_message,
unix_socket_group and application_name_add_host."""

import grp
import os
import pwd
import socket

import psycopg
import pytest

import pgwire
from conftest import IS_ROOT, RUN_USER, _ini_lines, chown_to_run_user, console_rows, free_port, wait_until
from test_login_security import run_until_exit

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


# ------------------------------------------------------------ unix_socket_group

def socket_path(bun):
    return os.path.join(bun.unix_dir, f".s.PGSQL.{bun.port}")


def run_identity():
    """(uid, primary gid, every gid) of the user pgbun runs as."""
    if RUN_USER:
        pw = pwd.getpwnam(RUN_USER)
        return pw.pw_uid, pw.pw_gid, {pw.pw_gid}  # started with no supplementary groups
    return os.getuid(), os.getgid(), {os.getgid(), *os.getgroups()}


def test_unix_socket_group_owns_the_socket_file(start_pgbun):
    uid, primary, mine = run_identity()
    if IS_ROOT:
        # root hands the socket to the user it becomes, and to any group
        other = next(g for g in grp.getgrall() if g.gr_gid not in (primary, 0))
        bun = start_pgbun(config={"user": RUN_USER, "unix_socket_group": other.gr_name}, run_user=None)
    else:
        # unprivileged, only a group of its own will do
        other = grp.getgrgid(next((g for g in mine if g != primary), primary))
        bun = start_pgbun(config={"unix_socket_group": other.gr_name})
    # started as root, pgbun listens before it hands the file over and becomes the run user
    wait_until(lambda: os.stat(socket_path(bun)).st_uid == uid, timeout=10, what="the socket handed over")
    st = os.stat(socket_path(bun))
    assert (st.st_uid, st.st_gid) == (uid, other.gr_gid), (st, other)
    assert bun.psql(["-h", bun.unix_dir, "-d", "pgbun_test", "-U", "postgres", "-tAc", "SELECT 1"]).stdout == "1\n"


def test_without_unix_socket_group_the_socket_keeps_the_run_users_group(start_pgbun):
    uid, primary, _ = run_identity()
    bun = start_pgbun(config={"user": RUN_USER} if IS_ROOT else {}, run_user=None if IS_ROOT else RUN_USER)
    wait_until(lambda: os.stat(socket_path(bun)).st_uid == uid, timeout=10, what="the socket handed over")
    st = os.stat(socket_path(bun))
    assert (st.st_uid, st.st_gid) == (uid, primary), st


def start_refused(workdir, pg, extra):
    ini = workdir / "pgbun.ini"
    cfg = {"listen_addr": "127.0.0.1", "listen_port": free_port(), "unix_socket_dir": str(workdir),
           "auth_type": "trust", "auth_file": "", "auth_trust_any_user": 1, **extra}
    ini.write_text(_ini_lines("pgbun", cfg, {"pgbun_test": pg.entry()}, None))
    chown_to_run_user(ini)
    rc, out = run_until_exit([ini], cwd=workdir)
    assert rc is not None and rc != 0, f"pgbun started with {extra}:\n{out}"
    assert not any(n.startswith(".s.PGSQL") for n in os.listdir(workdir)), os.listdir(workdir)
    return out


def test_an_unknown_unix_socket_group_refuses_the_start(pgbun_workdir, pg):
    out = start_refused(pgbun_workdir, pg, {"unix_socket_group": "no_such_group_pgbun"})
    assert 'unix_socket_group "no_such_group_pgbun": no such group' in out, out


def test_a_unix_socket_group_pgbun_is_not_in_refuses_the_start(pgbun_workdir, pg):
    _, _, mine = run_identity()
    if IS_ROOT or RUN_USER:
        foreign = grp.getgrgid(0)
    else:
        foreign = next((g for g in grp.getgrall() if g.gr_gid not in mine), None)
        if foreign is None:
            pytest.skip("the test user is in every group")
    out = start_refused(pgbun_workdir, pg, {"unix_socket_group": foreign.gr_name})
    assert f'to unix_socket_group "{foreign.gr_name}"' in out, out


# ------------------------------------------------------------ application_name_add_host

def tagged(conn, app):
    """What application_name_add_host makes of app for this client: "app - 127.0.0.1:<its port>"."""
    with socket.fromfd(conn.pgconn.socket, socket.AF_INET, socket.SOCK_STREAM) as sock:
        addr, port = sock.getsockname()
    return f"{app} - {addr}:{port}"


def seen_by_server(conn):
    """(application_name, backend pid) as PostgreSQL has them for this client's server."""
    return conn.execute("SELECT application_name, pid FROM pg_stat_activity WHERE pid = pg_backend_pid()"
                        " AND %s::int = 1", (1,)).fetchone()


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_application_name_add_host_tells_the_server_where_each_client_is(start_pgbun, mode):
    bun = start_pgbun(config={"application_name_add_host": 1, "pool_mode": mode, "default_pool_size": 1})
    a = bun.connect(application_name="billing")
    want_a = tagged(a, "billing")
    assert a.info.parameter_status("application_name") == want_a
    name, pid = seen_by_server(a)
    assert name == want_a
    assert a.execute("SHOW application_name").fetchone() == (want_a,)
    if mode == "session":
        a.close()  # its server goes to the next client
    b = bun.connect()  # no application_name: "app"
    want_b = tagged(b, "app")
    assert seen_by_server(b) == (want_b, pid)  # the same server, b's name
    if mode == "transaction":
        assert seen_by_server(a) == (want_a, pid)  # and back
        assert seen_by_server(b) == (want_b, pid)
    # a name set later is the client's own, as it wrote it
    b.execute("SET application_name = 'later'")
    assert b.execute("SHOW application_name").fetchone() == ("later",)


def test_application_name_is_passed_as_is_without_application_name_add_host(bun):
    conn = bun.connect(application_name="billing")
    assert seen_by_server(conn)[0] == "billing"
