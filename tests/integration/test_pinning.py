"""Pinning: session state pgbun cannot replay keeps its client on its server.

LISTEN, session-level advisory locks, temp tables, WITH HOLD cursors,
SQL-level PREPARE and LOAD live in one server session. In transaction mode
a client that made such state keeps its server, as in session mode, until
the state is gone (pgbun asks the server after any transaction whose text
may have made or dropped it), or until it leaves: then the server is
cleaned with DISCARD ALL, or closed after LOAD. Each test runs a pool of two
servers with more clients than that, so that an unpinned client would move.
"""

import time

import pytest

from conftest import IS_PGBOUNCER, backend_pid, console_rows as show, wait_until

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="pgbun's session-state pinning")

POOL = {"pool_mode": "transaction", "default_pool_size": 2, "admin_users": "postgres"}


def client(bun, **kw):
    kw.setdefault("prepare_threshold", None)
    return bun.connect(**kw)


def pinned(bun):
    """The pinned column of each pgbun_test client that has one."""
    return sorted(r["pinned"] for r in show(bun, "CLIENTS") if r["database"] == "pgbun_test" and r["pinned"])


def assert_pinned(bun, conn, want):
    """pgbun learns what a transaction left on the server just after conn has its reply, and holds
    conn's next request until it knows: once a SELECT 1 of conn is answered, SHOW CLIENTS is exact."""
    conn.execute("SELECT 1")
    assert pinned(bun) == want


def churn(bun, n=6):
    """Other clients run transactions meanwhile, on whatever server is free; returns the pids they got."""
    pids = set()
    for _ in range(n):
        with client(bun) as other:
            pids.add(backend_pid(other))
            other.execute("SELECT 1")
    return pids


@pytest.fixture
def bun(start_pgbun):
    return start_pgbun(config=POOL)


def test_listen_pins_and_notify_from_another_client_is_delivered(bun):
    a = client(bun)
    got = []
    a.add_notify_handler(lambda n: got.append((n.channel, n.payload)))
    a.execute("LISTEN jobs")
    mine = backend_pid(a)
    assert_pinned(bun, a, ["listen"])
    others = churn(bun)
    assert mine not in others  # the pinned server is nobody else's
    with client(bun) as b:
        b.execute("NOTIFY jobs, 'hello'")
    wait_until(lambda: a.execute("SELECT 1") and got, 10, what="the notification to reach the listener")
    assert got == [("jobs", "hello")]
    assert backend_pid(a) == mine
    a.execute("UNLISTEN *")
    assert_pinned(bun, a, [])
    # Its server went back to the pool.
    assert [r["state"] for r in show(bun, "SERVERS") if r["remote_pid"] == mine] == ["idle"]


def test_a_rolled_back_listen_does_not_pin(bun):
    a = client(bun, autocommit=False)
    a.execute("LISTEN jobs")
    a.rollback()
    assert_pinned(bun, a, [])


def test_an_advisory_lock_stays_held_while_other_clients_run(bun, pg):
    a = client(bun)
    a.execute("SELECT pg_advisory_lock(4242)")
    mine = backend_pid(a)
    assert_pinned(bun, a, ["advisory_lock"])
    churn(bun)
    with client(bun) as b:
        assert b.execute("SELECT pg_try_advisory_lock(4242)").fetchone()[0] is False
    holders = pg.sql("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND granted")
    assert holders == [(mine,)]
    a.execute("SELECT pg_advisory_unlock_all()")
    assert_pinned(bun, a, [])
    assert pg.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242")[0][0] == 0


def test_a_transaction_level_advisory_lock_does_not_pin(bun):
    a = client(bun)
    a.execute("SELECT pg_advisory_xact_lock(4343)")
    assert_pinned(bun, a, [])


def test_a_temp_table_is_still_there_after_other_clients_ran(bun):
    a = client(bun)
    a.execute("CREATE TEMP TABLE scratch (v int)")
    a.execute("INSERT INTO scratch VALUES (1), (2)")
    assert_pinned(bun, a, ["temp_table"])
    churn(bun)
    assert a.execute("SELECT sum(v) FROM scratch").fetchone()[0] == 3
    a.execute("DROP TABLE scratch")
    assert_pinned(bun, a, [])


def test_a_with_hold_cursor_survives_other_clients(bun):
    a = client(bun)
    a.execute("DECLARE c CURSOR WITH HOLD FOR SELECT generate_series(1, 10)")
    assert [r[0] for r in a.execute("FETCH 3 FROM c").fetchall()] == [1, 2, 3]
    assert_pinned(bun, a, ["cursor"])
    churn(bun)
    assert [r[0] for r in a.execute("FETCH 2 FROM c").fetchall()] == [4, 5]
    a.execute("CLOSE c")
    assert_pinned(bun, a, [])


def test_sql_prepare_pins_until_deallocate(bun):
    a = client(bun)
    a.execute("PREPARE twice (int) AS SELECT $1 * 2")
    assert_pinned(bun, a, ["prepare"])
    churn(bun)
    assert a.execute("EXECUTE twice(21)").fetchone()[0] == 42
    a.execute("DEALLOCATE twice")
    assert_pinned(bun, a, [])


def test_several_reasons_are_shown_together(bun):
    a = client(bun)
    a.execute("LISTEN x; SELECT pg_advisory_lock(7)")
    assert_pinned(bun, a, ["listen,advisory_lock"])
    rows = [r for r in show(bun, "SERVERS") if r["database"] == "pgbun_test" and r["pinned"]]
    assert [r["pinned"] for r in rows] == ["listen,advisory_lock"]
    a.execute("DISCARD ALL")
    assert_pinned(bun, a, [])


def test_a_pinned_client_that_leaves_leaves_a_clean_server(bun, pg):
    a = client(bun)
    a.execute("LISTEN gone; SELECT pg_advisory_lock(99); CREATE TEMP TABLE t (v int)")
    a.execute("DECLARE c CURSOR WITH HOLD FOR SELECT 1")
    mine = backend_pid(a)
    a.close()
    wait_until(lambda: not pg.sql("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = 99"), 10,
               what="the advisory lock to be released")
    # The same server (not a new one) serves others, clean.
    state = None
    for _ in range(10):
        with client(bun) as b:
            if backend_pid(b) == mine:
                state = b.execute("SELECT (SELECT count(*) FROM pg_listening_channels()),"
                                  " (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()),"
                                  " (SELECT count(*) FROM pg_cursors)").fetchone()
                break
    assert state == (0, 0, 0)
    assert pinned(bun) == []


def test_load_pins_and_the_server_is_closed_when_the_client_leaves(bun, pg):
    a = client(bun)
    a.execute("LOAD 'auto_explain'")
    mine = backend_pid(a)
    assert_pinned(bun, a, ["load"])
    a.close()
    wait_until(lambda: not pg.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (mine,)), 10,
               what="the server that loaded a library to be closed")


def test_other_clients_keep_working_on_the_unpinned_server(bun):
    a = client(bun)
    a.execute("LISTEN busy")
    mine = backend_pid(a)
    others = churn(bun, 10)
    assert len(others) == 1 and mine not in others


def test_session_state_pin_pins_on_set(start_pgbun):
    bun = start_pgbun(config=dict(POOL, session_state="pin"))
    a = client(bun)
    a.execute("SET myext.tenant = 'alpha'")
    mine = backend_pid(a)
    assert_pinned(bun, a, ["set"])
    churn(bun)
    assert a.execute("SELECT pg_backend_pid(), current_setting('myext.tenant')").fetchone() == (mine, "alpha")
    a.execute("RESET myext.tenant")
    assert_pinned(bun, a, [])


def test_session_state_off_pins_nothing(start_pgbun):
    bun = start_pgbun(config=dict(POOL, session_state="off"))
    a = client(bun)
    a.execute("LISTEN jobs; SELECT pg_advisory_lock(5)")
    assert_pinned(bun, a, [])
    a.execute("SELECT pg_advisory_unlock_all()")


def test_a_long_pin_is_logged(start_pgbun):
    bun = start_pgbun(config=dict(POOL, pin_notice_delay=1))
    a = client(bun)
    a.execute("LISTEN slow")
    wait_until(lambda: "pinned to its server for more than 1 s (listen)" in bun.log_text(), 15,
               what="the notice of a long pin")
    a.execute("UNLISTEN slow")
    time.sleep(0.1)
    assert_pinned(bun, a, [])


def test_a_prepared_statement_run_again_pins_again(bun):
    """psycopg with prepare_threshold=0 parses each text once; later runs are Bind and Execute only."""
    a = client(bun, prepare_threshold=0)
    lock, unlock = "SELECT pg_advisory_lock(%s)", "SELECT pg_advisory_unlock_all()"
    a.execute(lock, (11,))
    assert_pinned(bun, a, ["advisory_lock"])
    a.execute(unlock)
    assert_pinned(bun, a, [])
    a.execute(lock, (11,))  # no Parse this time
    assert_pinned(bun, a, ["advisory_lock"])
    a.execute(unlock)
    assert_pinned(bun, a, [])
