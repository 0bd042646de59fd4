"""Settings PgBouncer 1.24-1.26 users already have: client connection limits,
per-user and per-database timeouts and sizes, pool_idle_timeout,
server_round_robin; and keys pgbun cannot honour yet, warned about or
refused at start and at RELOAD."""

import threading
import time

import psycopg
import pytest

from conftest import _ini_lines, chown_to_run_user, console_rows, default_auth_file, free_port, wait_until
from test_login_security import run_until_exit

ADMIN = {"admin_users": "postgres"}


def as_user(bun, user, dbname="pgbun_test", **kw):
    return bun.connect(dbname=dbname, user=user, password=default_auth_file()[user] or None, **kw)


def refusal(fn):
    """The psycopg error fn raises, or None."""
    try:
        fn()
    except psycopg.Error as exc:
        return exc
    return None


def backends_of(pg, user):
    return pg.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND backend_type = 'client backend'",
                  (user,), dbname="postgres")[0][0]


# ------------------------------------------------------------ client connection limits

@pytest.mark.parametrize("where", ["global", "database"])
def test_max_db_client_connections_refuses_the_client_over_it(start_pgbun, pg, where):
    config = {**ADMIN, "max_db_client_connections": 2} if where == "global" else ADMIN
    entry = pg.entry() if where == "global" else pg.entry(max_db_client_connections=2)
    bun = start_pgbun(config=config, databases={"pgbun_test": entry, "other": pg.entry(dbname="postgres")})
    a, b = bun.connect(), bun.connect()
    err = refusal(bun.connect)
    assert err is not None and "client connections exceeded (max_db_client_connections = 2)" in str(err), err
    if where == "database":
        assert bun.connect(dbname="other").execute("SELECT 1").fetchone() == (1,)
    row = [r for r in console_rows(bun, "DATABASES") if r["name"] == "pgbun_test"][0]
    assert (row["max_client_connections"], row["current_client_connections"]) == (2, 2), row
    a.close()
    wait_until(lambda: refusal(lambda: bun.connect().close()) is None, timeout=10, what="a freed place")
    assert b.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("where", ["global", "user"])
def test_max_user_client_connections_counts_the_user_a_client_logs_in_as(start_pgbun, pg, where):
    config = {**ADMIN, "max_user_client_connections": 1} if where == "global" else ADMIN
    users = None if where == "global" else {"md5user": "max_user_client_connections=1"}
    # a forced user on the server does not change whom a client counts for
    bun = start_pgbun(config=config, users=users,
                      databases={"pgbun_test": pg.entry(), "forced": pg.entry(user="postgres")})
    first = as_user(bun, "md5user", dbname="forced")
    err = refusal(lambda: as_user(bun, "md5user"))
    assert err is not None and "client connections exceeded (max_user_client_connections = 1)" in str(err), err
    assert as_user(bun, "scramuser").execute("SELECT 1").fetchone() == (1,)
    row = [r for r in console_rows(bun, "USERS") if r["name"] == "md5user"][0]
    assert row["max_user_client_connections"] == 1, row
    first.close()
    wait_until(lambda: refusal(lambda: as_user(bun, "md5user").close()) is None, timeout=10, what="a freed place")


def test_max_user_client_connections_set_on_the_console_applies_to_new_clients(start_pgbun, pg):
    bun = start_pgbun(config=ADMIN)
    kept = [as_user(bun, "md5user") for _ in range(2)]
    with bun.connect(dbname="pgbun") as adm:
        adm.execute("SET max_user_client_connections = 2")
    err = refusal(lambda: as_user(bun, "md5user"))
    assert err is not None and "max_user_client_connections" in str(err), err
    assert all(c.execute("SELECT 1").fetchone() == (1,) for c in kept)  # those in stay in


# ------------------------------------------------------------ per-user and per-database timeouts

def test_per_user_query_timeout(start_pgbun, pg):
    bun = start_pgbun(users={"md5user": "query_timeout=1"})
    slow = as_user(bun, "md5user")
    with pytest.raises(psycopg.errors.QueryCanceled) as err:
        slow.execute("SELECT pg_sleep(5)")
    assert "query_timeout" in str(err.value)
    assert as_user(bun, "scramuser").execute("SELECT pg_sleep(1.5), 'ok'").fetchone()[1] == "ok"


def test_per_user_idle_transaction_timeout(start_pgbun, pg):
    bun = start_pgbun(config={"pool_mode": "transaction"}, users={"md5user": "idle_transaction_timeout=1"})
    idle, other = as_user(bun, "md5user"), as_user(bun, "scramuser")
    for conn in (idle, other):
        conn.execute("BEGIN")
        conn.execute("SELECT 1")
    time.sleep(2.5)
    with pytest.raises(psycopg.OperationalError) as err:
        idle.execute("SELECT 1")
    assert "idle_transaction_timeout" in str(err.value)
    assert other.execute("SELECT 'still in'").fetchone() == ("still in",)
    other.execute("COMMIT")


def test_per_user_transaction_timeout(start_pgbun, pg):
    bun = start_pgbun(config={"pool_mode": "transaction"}, users={"md5user": "transaction_timeout=1"})
    busy, other = as_user(bun, "md5user"), as_user(bun, "scramuser")
    for conn in (busy, other):
        conn.execute("BEGIN")
    with pytest.raises(psycopg.OperationalError) as err:
        for _ in range(10):
            busy.execute("SELECT pg_sleep(0.4)")
    assert "transaction_timeout" in str(err.value)
    for _ in range(4):
        other.execute("SELECT pg_sleep(0.4)")
    other.execute("COMMIT")


def test_per_user_client_idle_timeout(start_pgbun, pg):
    bun = start_pgbun(users={"md5user": "client_idle_timeout=1"})
    idle, other = as_user(bun, "md5user"), as_user(bun, "scramuser")
    time.sleep(2.5)
    with pytest.raises(psycopg.OperationalError) as err:
        idle.execute("SELECT 1")
    assert "client_idle_timeout" in str(err.value)
    assert other.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("where", ["user", "database"])
def test_per_user_and_per_database_query_wait_timeout(start_pgbun, pg, where):
    users = {"md5user": "query_wait_timeout=1"} if where == "user" else None
    entry = pg.entry(pool_size=1) if where == "user" else pg.entry(pool_size=1, query_wait_timeout=1)
    bun = start_pgbun(config={"pool_mode": "transaction", "query_wait_timeout": 60}, users=users,
                      databases={"pgbun_test": entry})
    holder = as_user(bun, "md5user")
    holder.execute("BEGIN")
    holder.execute("SELECT 1")
    start = time.monotonic()
    with pytest.raises(psycopg.OperationalError) as err:
        as_user(bun, "md5user").execute("SELECT 1")
    assert "query_wait_timeout" in str(err.value)
    assert time.monotonic() - start < 20
    holder.execute("COMMIT")


def test_per_database_server_lifetime(start_pgbun, pg):
    bun = start_pgbun(config={"pool_mode": "transaction"},
                      databases={"short": pg.entry(server_lifetime=1), "long": pg.entry()})
    short, long_ = bun.connect(dbname="short"), bun.connect(dbname="long")
    pids = [c.execute("SELECT pg_backend_pid()").fetchone()[0] for c in (short, long_)]
    time.sleep(2.5)
    # the short one is closed once released and found too old; the long one is reused
    short.execute("SELECT 1")
    assert short.execute("SELECT pg_backend_pid()").fetchone()[0] != pids[0]
    assert long_.execute("SELECT pg_backend_pid()").fetchone()[0] == pids[1]


def test_per_user_reserve_pool_size(start_pgbun, pg):
    """pool_size 1 for everyone; md5user has a reserve of 1 after 0.5 s of waiting."""
    bun = start_pgbun(config={**ADMIN, "pool_mode": "transaction", "default_pool_size": 1,
                              "reserve_pool_timeout": 0.5},
                      users={"md5user": "reserve_pool_size=1"})
    peak = {}

    def run(user):
        conns = [as_user(bun, user) for _ in range(2)]
        threads = [threading.Thread(target=lambda c=c: c.execute("SELECT pg_sleep(2)")) for c in conns]
        for t in threads:
            t.start()
        time.sleep(1.5)
        peak[user] = backends_of(pg, user)
        for t in threads:
            t.join(timeout=10)

    run("md5user")
    run("scramuser")
    assert peak == {"md5user": 2, "scramuser": 1}, peak
    row = [r for r in console_rows(bun, "USERS") if r["name"] == "md5user"]
    assert row and row[0]["reserve_pool_size"] == 1, row


# ------------------------------------------------------------ pool_idle_timeout, server_round_robin

def test_pool_idle_timeout_frees_an_empty_pool(start_pgbun, pg):
    bun = start_pgbun(config={**ADMIN, "pool_idle_timeout": 1, "server_idle_timeout": 0.5},
                      databases={"pgbun_test": pg.entry()})
    with as_user(bun, "md5user") as conn:
        conn.execute("SELECT 1")
    wait_until(lambda: not [r for r in console_rows(bun, "POOLS") if r["user"] == "md5user"], timeout=15,
               what="the empty pool to be freed")
    assert "freed, unused for more than 1 s (pool_idle_timeout)" in bun.log_text()
    assert as_user(bun, "md5user").execute("SELECT 'again'").fetchone() == ("again",)


def test_pool_idle_timeout_0_keeps_pools(start_pgbun, pg):
    bun = start_pgbun(config={**ADMIN, "server_idle_timeout": 0.5}, databases={"pgbun_test": pg.entry()})
    with as_user(bun, "md5user") as conn:
        conn.execute("SELECT 1")
    time.sleep(2)
    assert [r for r in console_rows(bun, "POOLS") if r["user"] == "md5user"]


@pytest.mark.parametrize("round_robin", [0, 1])
def test_server_round_robin_takes_the_longest_unused_server(start_pgbun, pg, round_robin):
    bun = start_pgbun(config={"pool_mode": "transaction", "server_round_robin": round_robin, "workers": 1})
    a, b = bun.connect(), bun.connect()
    a.execute("BEGIN")
    b.execute("BEGIN")
    pids = {a.execute("SELECT pg_backend_pid()").fetchone()[0], b.execute("SELECT pg_backend_pid()").fetchone()[0]}
    a.execute("COMMIT")
    b.execute("COMMIT")
    seen = [a.execute("SELECT pg_backend_pid()").fetchone()[0] for _ in range(4)]
    assert set(seen) <= pids
    assert len(set(seen)) == (2 if round_robin else 1), seen


# ------------------------------------------------------------ keys pgbun cannot honour yet

@pytest.mark.parametrize("line", ["client_tls_sslmode = allow", "client_tls_sslmode = require",
                                  "client_tls_sslmode = verify-full"])
def test_client_tls_without_a_key_and_certificate_is_refused_at_start(pgbun_workdir, pg, line):
    ini = pgbun_workdir / "pgbun.ini"
    ini.write_text(_ini_lines("pgbun", {"listen_addr": "127.0.0.1", "listen_port": free_port(),
                                        "unix_socket_dir": str(pgbun_workdir), "auth_type": "trust",
                                        "auth_file": "", "auth_trust_any_user": 1}, {"pgbun_test": pg.entry()},
                              None).replace("[pgbun]\n", f"[pgbun]\n{line}\n"))
    chown_to_run_user(ini)
    rc, out = run_until_exit([ini], cwd=pgbun_workdir)
    assert rc is not None and rc != 0, f"pgbun started with {line}:\n{out}"
    assert line.split(" = ")[0] in out and "client_tls_key_file" in out, out


def test_a_reload_to_client_tls_without_its_files_is_refused(start_pgbun, pg):
    bun = start_pgbun(config=ADMIN)
    cfg = dict(bun.config, client_tls_sslmode="require")
    bun.config_path.write_text(_ini_lines("pgbun", cfg, {"pgbun_test": pg.entry()}, None))
    chown_to_run_user(bun.config_path)
    with bun.connect(dbname="pgbun") as adm:
        with pytest.raises(psycopg.Error) as err:
            adm.execute("RELOAD")
        assert "client_tls_key_file" in str(err.value)
        with pytest.raises(psycopg.Error):
            adm.execute("SET client_tls_sslmode = require")
        mode = [r for r in adm.execute("SHOW CONFIG").fetchall() if r[0] == "client_tls_sslmode"][0][1]
        assert mode == "disable"
    assert bun.connect().execute("SELECT 1").fetchone() == (1,)


def test_keys_pgbun_accepts_but_does_not_act_on_are_warned_about_one_line_each(start_pgbun, pg):
    keys = {"auth_ident_file": "/nonexistent/ident", "scram_iterations": 8192, "track_extra_parameters": "IntervalStyle",
            "pkt_buf": 8192, "log_pooler_errors": 1, "tcp_defer_accept": 1}
    bun = start_pgbun(config={**ADMIN, **keys})
    assert bun.connect().execute("SELECT 1").fetchone() == (1,)
    log = bun.log_text()
    for key in keys:
        lines = [ln for ln in log.splitlines() if "WARNING" in ln and (f"{key} " in ln or f"'{key}'" in ln)]
        assert len(lines) == 1, f"{key}: {lines}\n{log}"
    with bun.connect(dbname="pgbun") as adm:  # and again at RELOAD
        adm.execute("RELOAD")
    assert len([ln for ln in bun.log_text().splitlines()
                if "WARNING" in ln and "track_extra_parameters " in ln]) == 2


def test_auth_keys_that_would_do_nothing_are_warned_about_at_start_and_reload(start_pgbun, pg):
    """auth_hba_file is read only with auth_type = hba; auth_dbname and a custom auth_query only with auth_user."""
    keys = {"auth_hba_file": "/nonexistent/hba.conf", "auth_dbname": "pgbun_test", "auth_query": "SELECT 1, 2"}
    bun = start_pgbun(config={**ADMIN, **keys})
    assert bun.connect().execute("SELECT 1").fetchone() == (1,)
    wanted = ("auth_hba_file is not used", "auth_dbname is unused", "auth_query is unused")
    for text in wanted:
        assert [ln for ln in bun.log_text().splitlines() if "WARNING" in ln and text in ln], (text, bun.log_text())
    with bun.connect(dbname="pgbun") as adm:
        adm.execute("RELOAD")
    for text in wanted:
        assert len([ln for ln in bun.log_text().splitlines() if "WARNING" in ln and text in ln]) == 2, text


def test_reload_that_changes_only_a_database_session_state_is_noticed(start_pgbun, pg):
    bun = start_pgbun(config=ADMIN, databases={"pgbun_test": pg.entry()})
    bun.config_path.write_text(_ini_lines("pgbun", bun.config, {"pgbun_test": pg.entry(session_state="off")}, None))
    chown_to_run_user(bun.config_path)
    notices = []
    with bun.connect(dbname="pgbun") as adm:
        adm.add_notice_handler(lambda d: notices.append(d.message_primary))
        adm.execute("RELOAD")
    assert notices and "no setting changed" not in notices, notices


# ------------------------------------------------------------ tcp_* socket options

def keepalive_timers(filter_):
    """The keepalive timers (seconds left) ss shows for established sockets matching filter_."""
    import re
    import subprocess
    out = subprocess.run(["ss", "-tnoH", "state", "established", filter_], capture_output=True, text=True,
                         timeout=10).stdout
    timers = []
    for m in re.finditer(r"timer:\(keepalive,(?:(\d+)min)?(?:(\d+)(?:\.\d+)?sec|(\d+)ms)?", out):
        timers.append(int(m.group(1) or 0) * 60 + int(m.group(2) or 0))
    return timers, out


@pytest.mark.parametrize("keepalive", [1, 0])
def test_tcp_keepalive_options_reach_client_and_server_sockets(start_pgbun, pg, keepalive):
    bun = start_pgbun(config={"tcp_keepalive": keepalive, "tcp_keepidle": 77, "tcp_keepintvl": 13,
                              "tcp_keepcnt": 3})
    conn = bun.connect()
    conn.execute("SELECT 1")  # a server connection is open and idle
    time.sleep(0.5)  # idle sockets: no retransmission or delayed-ack timer in the way
    client_side, out1 = keepalive_timers(f"( sport = :{bun.port} )")
    server_side, out2 = keepalive_timers(f"( dport = :{pg.port} and sport != :{pg.port} )")
    if keepalive:
        assert client_side and all(t <= 77 for t in client_side), out1
        assert server_side and all(t <= 77 for t in server_side), out2
    else:
        assert client_side == [], out1
        assert server_side == [], out2


# ------------------------------------------------------------ pool_size = 0

@pytest.mark.parametrize("where", ["default_pool_size", "database"])
def test_pool_size_0_sets_no_limit(start_pgbun, pg, where):
    """As in PgBouncer 1.24: 0 means unlimited, not no server at all."""
    config = {"pool_mode": "transaction", "default_pool_size": 0 if where == "default_pool_size" else 1}
    entry = pg.entry() if where == "default_pool_size" else pg.entry(pool_size=0)
    bun = start_pgbun(config=config, databases={"pgbun_test": entry})
    conns = [as_user(bun, "md5user") for _ in range(4)]
    threads = [threading.Thread(target=lambda c=c: c.execute("SELECT pg_sleep(1.5)")) for c in conns]
    for t in threads:
        t.start()
    wait_until(lambda: backends_of(pg, "md5user") == 4, timeout=10, what="four servers at once")
    for t in threads:
        t.join(timeout=10)


def test_server_lifetime_0_uses_each_server_once(start_pgbun, pg):
    """PgBouncer: 0 means the connection is used only once, then closed."""
    bun = start_pgbun(config={"pool_mode": "transaction", "server_lifetime": 0})
    conn = bun.connect()
    pids = [conn.execute("SELECT pg_backend_pid()").fetchone()[0] for _ in range(3)]
    assert len(set(pids)) == 3, pids
