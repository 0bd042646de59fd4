"""Session state in transaction mode: settings a client makes follow it.

Every test runs pgbun in transaction mode with a pool of two servers and
steers a client onto each of them in turn (on_server: two holders take both
servers, the one to use is let go), so that a setting is seen to follow its
client from server to server, and never to reach another client.
"""

import pytest

from conftest import IS_PGBOUNCER, on_server, server_pids

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="pgbun's session-state tracking")

POOL = {"pool_mode": "transaction", "default_pool_size": 2}
TENANT = "SELECT current_setting('myext.tenant', true)"


def client(bun, **kw):
    kw.setdefault("prepare_threshold", None)
    return bun.connect(**kw)


def on_each(bun, conn, sql):
    """sql's first value on conn, run once on each server of the pool, with the pid it ran on."""
    out = []
    for pid in server_pids(bun):
        ran, value = on_server(bun, pid, lambda: conn.execute(f"SELECT pg_backend_pid(), ({sql})").fetchone())
        assert ran == pid, f"ran on backend {ran}, not {pid}"
        out.append(value)
    return out


def tenant_unset(bun, conn):
    """myext.tenant is not set for conn on either server (never defined, or emptied by RESET)."""
    return set(on_each(bun, conn, TENANT)) <= {None, ""}


def test_a_set_follows_its_client_to_every_server_and_reaches_no_other_client(start_pgbun):
    bun = start_pgbun(config=POOL)
    a, b = client(bun), client(bun)
    a.execute("SET myext.tenant = 'alpha'")
    assert on_each(bun, a, TENANT) == ["alpha", "alpha"]
    assert tenant_unset(bun, b)
    assert on_each(bun, a, TENANT) == ["alpha", "alpha"]


def test_each_client_keeps_its_own_value(start_pgbun):
    bun = start_pgbun(config=POOL)
    a, b = client(bun), client(bun)
    a.execute("SET myext.tenant = 'alpha'")
    b.execute("SET myext.tenant = 'beta'")
    for _ in range(2):
        assert on_each(bun, a, TENANT) == ["alpha", "alpha"]
        assert on_each(bun, b, TENANT) == ["beta", "beta"]


def test_reset_and_reset_all_clear_what_the_client_set(start_pgbun):
    bun = start_pgbun(config=POOL)
    a = client(bun)
    a.execute("SET myext.tenant = 'alpha'")
    a.execute("SET search_path = pg_catalog, public")
    assert on_each(bun, a, TENANT) == ["alpha", "alpha"]
    a.execute("RESET myext.tenant")
    assert tenant_unset(bun, a)
    assert on_each(bun, a, "current_setting('search_path')") == ["pg_catalog, public"] * 2
    a.execute("RESET ALL")
    assert on_each(bun, a, "current_setting('search_path')") == ['"$user", public'] * 2


def test_a_set_in_a_rolled_back_transaction_or_set_local_does_not_stick(start_pgbun):
    bun = start_pgbun(config=POOL)
    a = client(bun, autocommit=False)
    a.execute("SET myext.tenant = 'gone'")
    a.rollback()
    a.execute("SET LOCAL myext.tenant = 'local'")
    a.commit()
    a.autocommit = True
    assert tenant_unset(bun, a)


def test_set_config_at_session_level_sticks_and_at_transaction_level_does_not(start_pgbun):
    bun = start_pgbun(config=POOL)
    a = client(bun)
    a.execute("SELECT set_config('myext.tenant', %s, false)", ["param"])  # extended protocol
    a.execute("SELECT set_config('myext.other', 'local', true)")
    assert on_each(bun, a, TENANT) == ["param", "param"]
    assert set(on_each(bun, a, "current_setting('myext.other', true)")) <= {None, ""}


def test_several_statements_in_one_simple_query_are_all_seen(start_pgbun):
    bun = start_pgbun(config=POOL)
    w = bun.wire()
    w.login("postgres", "pgbun_test")
    w.query("SELECT 1; SET myext.tenant = 'multi'; SELECT 2")
    pids = server_pids(bun)
    for pid in pids:
        assert on_server(bun, pid, lambda: w.query(f"SELECT pg_backend_pid(), ({TENANT})")[0]) == [str(pid), "multi"]


def test_a_set_of_a_startup_parameter_overrides_it(start_pgbun):
    bun = start_pgbun(config=POOL)
    a = client(bun, options="-c work_mem=8MB")
    b = client(bun)
    assert on_each(bun, a, "current_setting('work_mem')") == ["8MB", "8MB"]
    a.execute("SET work_mem = '16MB'")
    assert on_each(bun, a, "current_setting('work_mem')") == ["16MB", "16MB"]
    assert on_each(bun, b, "current_setting('work_mem')") == ["4MB", "4MB"]


def test_a_client_that_leaves_leaves_no_setting_behind(start_pgbun):
    bun = start_pgbun(config=POOL)
    a = client(bun)
    a.execute("SET myext.tenant = 'leaver'")
    a.execute("SET statement_timeout = '7s'")
    a.close()
    b = client(bun)
    assert tenant_unset(bun, b)
    assert on_each(bun, b, "current_setting('statement_timeout')") == ["0", "0"]


def test_discard_all_clears_the_clients_settings(start_pgbun):
    bun = start_pgbun(config=POOL)
    a = client(bun)
    a.execute("SET myext.tenant = 'alpha'")
    a.execute("DISCARD ALL")
    assert tenant_unset(bun, a)


@pytest.mark.parametrize("where", ["global", "database entry", "user entry"])
def test_session_state_off_leaves_a_set_on_the_server_it_ran_on(start_pgbun, pg, where):
    if where == "global":
        bun = start_pgbun(config=dict(POOL, session_state="off"))
    elif where == "database entry":
        bun = start_pgbun(config=POOL, databases={"pgbun_test": pg.entry(session_state="off")})
    else:  # a [users] entry overrides its database's (here the global track)
        bun = start_pgbun(config=POOL, users={"postgres": "session_state=off"})
    a = client(bun)
    first, other = server_pids(bun)
    on_server(bun, first, lambda: a.execute("SET myext.tenant = 'stays'"))
    assert on_server(bun, first, lambda: a.execute(TENANT).fetchone()[0]) == "stays"
    assert on_server(bun, other, lambda: a.execute(TENANT).fetchone()[0]) is None


def test_a_set_in_a_query_too_big_to_scan_still_follows_its_client(start_pgbun):
    """Past 64 KB (or streamed in pieces) the text is not scanned: the settings are read back anyway."""
    bun = start_pgbun(config=POOL)
    a = client(bun)
    a.execute("SET search_path = pg_catalog, public -- " + "x" * 200_000)
    assert on_each(bun, a, "current_setting('search_path')") == ["pg_catalog, public"] * 2


def test_the_scan_reads_quotes_as_the_server_does_with_standard_conforming_strings_off(start_pgbun):
    """With standard_conforming_strings off, \\' does not end a string: the SET behind it is seen."""
    bun = start_pgbun(config=POOL)
    w = bun.wire()
    w.login("postgres", "pgbun_test")
    w.query("SET standard_conforming_strings = off")
    w.query("SELECT 'it\\'s'; SET myext.tenant = 'seen'")
    for pid in server_pids(bun):
        assert on_server(bun, pid, lambda: w.query(f"SELECT pg_backend_pid(), ({TENANT})")[0]) == [str(pid), "seen"]


def test_a_set_config_in_a_prepared_statement_follows_its_client_each_time(start_pgbun):
    """Only the first run of a prepared statement has a Parse: the later ones are read back too."""
    bun = start_pgbun(config=POOL)
    a = client(bun, prepare_threshold=0)
    a.execute("SELECT set_config('myext.tenant', %s, false)", ("alpha",))
    a.execute("SELECT set_config('myext.tenant', %s, false)", ("beta",))  # Bind and Execute only
    assert on_each(bun, a, TENANT) == ["beta", "beta"]
