"""The admin console where PgBouncer 1.25 users and tools see a difference:
SHOW USERS lists every configured user; SHOW TOTALS, SOCKETS,
ACTIVE_SOCKETS, DNS_HOSTS and DNS_ZONES exist with PgBouncer's columns; a
client with no server is `idle` in SHOW CLIENTS; the errors of KILL,
KILL_CLIENT, RESUME and RELOAD carry PgBouncer's SQLSTATEs; and SHUTDOWN
WAIT_FOR_SERVERS ends idle and queued clients with `server shutting down`
while the console stays reachable over TCP and the unix socket."""


import psycopg
import pytest

import pgwire
from conftest import IS_PGBOUNCER, backend_pid, chown_to_run_user, in_thread, wait_until
from test_admin_cli import admin_argv, at_prompt, home, term  # noqa: F401 - fixtures

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="pgbun's console")

ADMIN = {"admin_users": "postgres"}

SOCKET_COLS = ["type", "user", "database", "replication", "state", "addr", "port", "local_addr", "local_port",
               "connect_time", "request_time", "wait", "wait_us", "close_needed", "ptr", "link", "remote_pid",
               "tls", "application_name", "prepared_statements", "id",
               "recv_pos", "pkt_pos", "pkt_remain", "send_pos", "send_remain", "pkt_avail", "send_avail"]
TOTAL_NAMES = ["server_assignment_count", "xact_count", "query_count", "client_bytes", "server_bytes",
               "xact_time", "query_time", "wait_time", "ps_client_parse_count", "ps_server_parse_count",
               "ps_bind_count", "client_connect_count"]


def console(bun, host=None):
    return bun.connect(dbname="pgbun", user="postgres", **({"host": host} if host else {}))


def show(conn, what):
    cur = conn.execute(f"SHOW {what}")
    names = [d.name for d in cur.description]
    return names, [dict(zip(names, row)) for row in cur.fetchall()]


def rows(conn, what):
    return show(conn, what)[1]


def client(bun, **kw):
    kw.setdefault("prepare_threshold", None)
    return bun.connect(**kw)


def admin_error(conn, sql):
    """The psycopg error a console statement raises (the connection stays usable)."""
    with pytest.raises(psycopg.Error) as err:
        conn.execute(sql)
    return err.value


# ---------------------------------------------------------------- 1. SHOW USERS

def test_show_users_lists_users_and_auth_file_entries_that_have_no_pool_yet(start_pgbun):
    bun = start_pgbun(config=ADMIN, users={"md5user": "pool_size=3", "cfgonly": "pool_mode=transaction"})
    with console(bun) as adm:
        names, users = show(adm, "USERS")
    assert names == ["name", "pool_size", "reserve_pool_size", "pool_mode", "max_user_connections",
                     "current_connections", "max_user_client_connections", "current_client_connections",
                     "secret_source"]
    by_name = {u["name"]: u for u in users}
    # Where each secret comes from, never the secret itself.
    assert by_name["scramuser"]["secret_source"] == "auth_file" and by_name["cfgonly"]["secret_source"] == "none"
    # Every [users] entry and every auth_file user, once each, none of them connected.
    assert {"md5user", "cfgonly", "scramuser", "passuser", "pgbun_user"} <= set(by_name), users
    assert len(users) == len(by_name), users
    assert by_name["md5user"]["pool_size"] == 3 and by_name["md5user"]["current_client_connections"] == 0
    assert by_name["cfgonly"]["pool_mode"] == "transaction"
    assert by_name["scramuser"]["pool_mode"] is None and by_name["scramuser"]["current_connections"] == 0


def test_show_users_counts_the_connections_of_a_user_in_use(start_pgbun):
    bun = start_pgbun(config=ADMIN)
    held = client(bun, user="postgres")
    backend_pid(held)
    with console(bun) as adm:
        me = [u for u in rows(adm, "USERS") if u["name"] == "postgres"]
    assert len(me) == 1, me
    # The held client and this console; the held client's server.
    assert me[0]["current_client_connections"] == 2 and me[0]["current_connections"] == 1, me


# ---------------------------------------------------------------- 2. the SHOWs PgBouncer has

def test_show_totals_adds_up_every_database_as_name_value_rows(start_pgbun, pg):
    bun = start_pgbun(config=ADMIN, databases={"pgbun_test": pg.entry(), "other": pg.entry()})
    for db, n in (("pgbun_test", 3), ("other", 2)):
        with client(bun, dbname=db) as c:
            for _ in range(n):
                c.execute("SELECT 1")
    with console(bun) as adm:
        names, totals = show(adm, "TOTALS")
        stats = rows(adm, "STATS")
        cur = adm.execute("SHOW TOTALS")
        assert [d.type_code for d in cur.description] == [25, 1700]
        binary = adm.cursor(binary=True)
        binary.execute("SHOW TOTALS", prepare=False)
        assert [r[0] for r in binary.fetchall()] == [t["name"] for t in totals]
    assert names == ["name", "value"]
    assert [t["name"] for t in totals] == ["total_" + n for n in TOTAL_NAMES] + ["avg_" + n for n in TOTAL_NAMES]
    value = {t["name"]: int(t["value"]) for t in totals}
    work = [s for s in stats if s["database"] != "pgbun"]
    assert value["total_query_count"] == sum(s["total_query_count"] for s in work) >= 5, (totals, stats)
    assert value["total_xact_count"] == sum(s["total_xact_count"] for s in work)
    assert value["total_client_connect_count"] == sum(s["total_client_login_count"] for s in stats)
    # The console's own bytes count too, and grew between the two SHOWs.
    assert value["total_client_bytes"] >= sum(s["total_received"] for s in work) > 0


def test_show_sockets_has_pgbouncers_columns_and_the_lists_connections_are_on(start_pgbun):
    bun = start_pgbun(config=ADMIN)
    held = client(bun, application_name="holder")
    pid = backend_pid(held)
    idle = client(bun, application_name="idler", dbname="pgbun_test")
    with console(bun) as adm:
        names, socks = show(adm, "SOCKETS")
        active_names, active = show(adm, "ACTIVE_SOCKETS")
    assert names == SOCKET_COLS and active_names == SOCKET_COLS
    servers = [s for s in socks if s["type"] == "S"]
    assert [(s["state"], s["remote_pid"]) for s in servers] == [("sv_active", pid)], socks
    holder = [s for s in socks if s["application_name"] == "holder" and s["type"] == "C"]
    assert len(holder) == 1 and holder[0]["state"] == "cl_active" and holder[0]["link"] == servers[0]["ptr"]
    assert holder[0]["type"] == "C" and holder[0]["user"] == "postgres" and holder[0]["database"] == "pgbun_test"
    assert holder[0]["addr"] == "127.0.0.1" and holder[0]["port"] > 0 and holder[0]["local_port"] == bun.port
    assert all(isinstance(holder[0][c], int) for c in SOCKET_COLS[21:]), holder
    # A session-mode client that sent nothing yet has no server: still on PgBouncer's active list.
    assert [s["state"] for s in socks if s["application_name"] == "idler" and s["type"] == "C"] == ["cl_active"]
    # Nothing is buffered on a quiet connection: ACTIVE_SOCKETS lists at most the console asking.
    assert all(s["database"] == "pgbun" for s in active), active
    idle.close()


def test_show_dns_hosts_and_zones_have_pgbouncers_columns_and_no_rows(start_pgbun):
    bun = start_pgbun(config=ADMIN)
    with console(bun) as adm:
        assert show(adm, "DNS_HOSTS") == (["hostname", "ttl", "addrs"], [])
        assert show(adm, "DNS_ZONES") == (["zonename", "serial", "count"], [])


def test_show_help_names_the_new_shows(start_pgbun):
    bun = start_pgbun(config=ADMIN)
    res = bun.psql(["-U", "postgres", "-d", "pgbun", "-c", "SHOW HELP"])
    for name in ("TOTALS", "SOCKETS", "ACTIVE_SOCKETS", "DNS_HOSTS", "DNS_ZONES"):
        assert name in res.stderr, res.stderr


@pytest.mark.timeout(30)
def test_pgbun_admin_tab_completes_the_new_shows(start_pgbun, term):
    bun = start_pgbun(config=ADMIN)
    t = term(admin_argv(bun))
    t.wait(lambda s: at_prompt(s, bun), what="the prompt")
    for typed, want in (("SHOW TOT", "SHOW TOTALS"), ("SHOW ACTIVE_", "SHOW ACTIVE_SOCKETS"),
                        ("show dns_z", "show dns_zones")):
        t.type(typed)
        t.wait(lambda s: at_prompt(s, bun, typed), what=f"{typed!r} echoed")
        t.keys("Tab")
        try:
            t.wait(lambda s: at_prompt(s, bun, want), timeout=5, what=f"Tab to complete {typed!r} to {want!r}")
        finally:
            t.keys("C-a", "C-k")
            t.wait(lambda s: at_prompt(s, bun), timeout=5, what="an empty line")
    t.line("\\q")
    assert t.wait_exit() == 0


# ---------------------------------------------------------------- 3. the idle state

def test_show_clients_says_idle_for_a_client_without_a_server_and_active_for_one_with(start_pgbun):
    bun = start_pgbun(config={**ADMIN, "pool_mode": "transaction"})
    idle = client(bun, application_name="idler")
    idle.execute("SELECT 1")  # done: its server went back to the pool
    busy = client(bun, application_name="busy", autocommit=False)
    backend_pid(busy)  # inside a transaction: linked
    with console(bun) as adm:
        clients = rows(adm, "CLIENTS")
        pools = [p for p in rows(adm, "POOLS") if p["database"] == "pgbun_test"]
    state = {c["application_name"]: (c["state"], c["link"]) for c in clients if c["database"] == "pgbun_test"}
    assert state["idler"] == ("idle", ""), clients
    assert state["busy"][0] == "active" and state["busy"][1] != "", clients
    # The console asking has no server either.
    assert {c["state"] for c in clients if c["database"] == "pgbun"} == {"idle"}, clients
    # SHOW POOLS still counts both in cl_active, as PgBouncer does.
    assert pools[0]["cl_active"] == 2 and pools[0]["cl_waiting"] == 0, pools
    busy.rollback()


# ---------------------------------------------------------------- 4. PgBouncer's errors

def test_kill_of_an_unknown_database_is_pgbouncers_error_and_kills_nothing(start_pgbun):
    bun = start_pgbun(config=ADMIN)
    held = client(bun)
    held.execute("SELECT 1")
    with console(bun) as adm:
        err = admin_error(adm, "KILL no_such_db")
        assert (err.sqlstate, err.diag.message_primary) == ("08P01", "no such database: no_such_db")
        assert adm.execute("SHOW VERSION").fetchone()  # still usable
    assert held.execute("SELECT 2").fetchone() == (2,)


@pytest.mark.parametrize("arg, message", [("123456789", "client not found"),
                                          ("abc", "invalid client pointer supplied"),
                                          ("-1", "invalid client pointer supplied")])
def test_kill_client_of_an_unknown_or_invalid_id_is_pgbouncers_error(start_pgbun, arg, message):
    bun = start_pgbun(config=ADMIN)
    with console(bun) as adm:
        err = admin_error(adm, f"KILL_CLIENT {arg}")
        assert (err.sqlstate, err.diag.message_primary) == ("08P01", message)


def test_resume_during_a_shutdown_is_pgbouncers_error(start_pgbun):
    bun = start_pgbun(config=ADMIN)
    held = client(bun)
    held.execute("SELECT 1")  # keeps pgbun from stopping
    with console(bun) as adm:
        adm.execute("SHUTDOWN WAIT_FOR_CLIENTS")
        err = admin_error(adm, "RESUME")
        assert (err.sqlstate, err.diag.message_primary) == ("08P01", "pooler is shutting down")
    held.close()
    wait_until(lambda: not bun.alive(), 10, what="pgbun to exit once the client left")
    bun.stop()


def test_reload_of_a_file_with_an_error_is_f0000_and_the_running_config_stays(start_pgbun):
    bun = start_pgbun(config=ADMIN)
    text = bun.config_path.read_text()
    bun.config_path.write_text(text.replace("[databases]", "default_pool_size = lots\n\n[databases]"))
    chown_to_run_user(bun.config_path)
    with console(bun) as adm:
        err = admin_error(adm, "RELOAD")
        assert err.sqlstate == "F0000" and err.diag.severity == "ERROR", err.diag.message_primary
        assert err.diag.message_primary.startswith("RELOAD failed"), err.diag.message_primary
        assert "default_pool_size" in err.diag.message_primary
        value = [r for r in rows(adm, "CONFIG") if r["key"] == "default_pool_size"][0]["value"]
        assert value == "20"


# ---------------------------------------------------------------- 5. SHUTDOWN WAIT_FOR_*

def pool_row(adm):
    return [p for p in rows(adm, "POOLS") if p["database"] == "pgbun_test"][0]


def console_answers(bun, host):
    """A new console login on host (TCP address or unix directory) and SHOW commands on it."""
    with console(bun, host=host) as adm:
        assert adm.execute("SHOW VERSION").fetchone()[0].startswith("pgbun")
        return rows(adm, "STATE"), rows(adm, "CLIENTS")


def refused_login(bun, host):
    """The ErrorResponse an ordinary login gets (raw wire, so the FATAL is seen as sent)."""
    w = pgwire.Wire(host, bun.port, timeout=10)
    return pgwire.first_error(w, "postgres", "pgbun_test")


@pytest.mark.timeout(60)
def test_shutdown_wait_for_servers_ends_idle_and_queued_clients_lets_the_transaction_finish(start_pgbun, pg):
    bun = start_pgbun(config={**ADMIN, "pool_mode": "transaction", "default_pool_size": 1,
                              "query_wait_timeout": 30})
    # Raw wire clients: the FATAL's SQLSTATE as sent (libpq drops it when the close follows).
    idle = bun.login(params={"application_name": "idle"})
    assert idle.scalar("SELECT 1") == "1"  # logged in, no server between transactions
    in_tx = client(bun, application_name="in_tx", autocommit=False)
    in_tx.execute("SELECT 1")  # holds the pool's only server
    queued = bun.login(params={"application_name": "queued"})
    t, result = in_thread(lambda: queued.query("SELECT 42"))
    with console(bun) as adm:
        wait_until(lambda: pool_row(adm)["cl_waiting"] == 1, 10, what="the third client to queue")
        adm.execute("SHUTDOWN WAIT_FOR_SERVERS")
    # The queued client is told and closed, not left waiting for the server or given a new one.
    t.join(10)
    assert not t.is_alive(), "the queued client was left waiting"
    err = result.get("error")
    assert isinstance(err, pgwire.PgError), result
    assert (err.fields["S"], err.sqlstate, err.message) == ("FATAL", "08P01", "server shutting down"), err.fields
    assert queued.is_closed(timeout=5)
    assert bun.alive(), "pgbun stopped while a transaction held a server"

    # The console stays reachable, over TCP and over the unix socket; others are turned away.
    for host in (bun.host, bun.unix_dir):
        state, clients = console_answers(bun, host)
        assert {r["key"]: r["value"] for r in state}["active"] == "no"
        assert "in_tx" in {c["application_name"] for c in clients}
        refusal = refused_login(bun, host)
        assert refusal is not None and refusal.sqlstate == "57P03", refusal and refusal.fields

    # The idle client's next transaction gets the same error and the close.
    with pytest.raises(pgwire.PgError) as idle_err:
        idle.query("SELECT 2")
    assert (idle_err.value.sqlstate, idle_err.value.message) == ("08P01", "server shutting down")
    assert idle.is_closed(timeout=5)
    assert len(pg.sql("SELECT pid FROM pg_stat_activity WHERE datname = 'pgbun_test' "
                      "AND pid <> pg_backend_pid()")) == 1, "pgbun opened another server connection"

    # The transaction in progress finishes; then pgbun exits.
    assert in_tx.execute("SELECT 3").fetchone() == (3,)
    in_tx.commit()
    bun.proc.wait(timeout=10)
    assert bun.proc.returncode == 0, bun.log_text()


@pytest.mark.timeout(60)
def test_shutdown_wait_for_clients_keeps_the_console_reachable_and_serves_the_clients_it_has(start_pgbun):
    bun = start_pgbun(config={**ADMIN, "pool_mode": "transaction"})
    staying = client(bun, application_name="staying")
    staying.execute("SELECT 1")
    with console(bun) as adm:
        adm.execute("SHUTDOWN WAIT_FOR_CLIENTS")
        for host in (bun.host, bun.unix_dir):
            _, clients = console_answers(bun, host)
            assert "staying" in {c["application_name"] for c in clients}
            refusal = refused_login(bun, host)
            assert refusal is not None and refusal.sqlstate == "57P03", refusal and refusal.fields
        assert staying.execute("SELECT 2").fetchone() == (2,)  # an existing client is still served
        assert bun.alive()
        staying.close()  # the last client leaves; consoles do not count
        bun.proc.wait(timeout=10)
    assert bun.proc.returncode == 0, bun.log_text()
