"""Where pgbun must behave as PgBouncer does: RELOAD of a database's server
settings, databases with a forced user, and max_db_connections shared by
several pools."""

import re
import threading
import time

import psycopg
import pytest

from conftest import _ini_lines, chown_to_run_user, console_rows, default_auth_file, in_thread, wait_until

ADMIN = {"admin_users": "postgres"}


def rewrite(bun, databases, users=None):
    bun.config_path.write_text(_ini_lines("pgbun", bun.config, databases, users))
    chown_to_run_user(bun.config_path)


def reload(bun):
    with bun.connect(dbname="pgbun") as adm:
        adm.execute("RELOAD")


def backend_alive(pg, pid):
    return pg.sql("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,), dbname="postgres")[0][0] == 1


# ------------------------------------------------------------ RELOAD

@pytest.mark.parametrize("change", ["dbname", "host", "user", "password"])
def test_reload_that_changes_a_database_retires_its_servers(start_pgbun, pg, change):
    """Idle servers close at once, busy ones when released: nobody lands on
    the old database, host or role after the RELOAD."""
    before = {"dbname": pg.entry(), "host": pg.entry(), "user": pg.entry(user="md5user"),
              "password": pg.entry(user="md5user", password="md5pass")}[change]
    after = {"dbname": pg.entry(dbname="postgres"), "host": pg.entry().replace("127.0.0.1", "localhost"),
             "user": pg.entry(user="scramuser"), "password": pg.entry(user="md5user", password="md5pass2")}[change]
    try:
        bun = start_pgbun(config={**ADMIN, "pool_mode": "transaction", "default_pool_size": 4},
                          databases={"app": before})
        busy = bun.connect(dbname="app")
        busy.execute("BEGIN")
        busy_pid = busy.execute("SELECT pg_backend_pid()").fetchone()[0]
        idle = bun.connect(dbname="app")
        idle_pid = idle.execute("SELECT pg_backend_pid()").fetchone()[0]  # its server goes back idle
        assert busy_pid != idle_pid
        if change == "password":
            pg.sql("ALTER ROLE md5user PASSWORD 'md5pass2'", dbname="postgres")
        rewrite(bun, {"app": after})
        reload(bun)
        wait_until(lambda: not backend_alive(pg, idle_pid), timeout=10, what="the idle old server to close")
        row = idle.execute("SELECT pg_backend_pid(), current_database(), current_user").fetchone()
        assert row[0] not in (idle_pid, busy_pid)
        want = {"dbname": ("postgres", "postgres"), "host": ("pgbun_test", "postgres"),
                "user": ("pgbun_test", "scramuser"), "password": ("pgbun_test", "md5user")}[change]
        assert row[1:] == want, row
        # the busy server finishes its transaction, then goes
        assert busy.execute("SELECT pg_backend_pid()").fetchone()[0] == busy_pid
        busy.execute("COMMIT")
        wait_until(lambda: not backend_alive(pg, busy_pid), timeout=10, what="the busy old server to close")
        assert busy.execute("SELECT current_database()").fetchone()[0] == want[0]
    finally:
        if change == "password":
            pg.sql("ALTER ROLE md5user PASSWORD 'md5pass'", dbname="postgres")


def test_reload_that_changes_nothing_of_a_database_keeps_its_servers(start_pgbun, pg):
    bun = start_pgbun(config={**ADMIN, "pool_mode": "transaction"}, databases={"app": pg.entry()})
    conn = bun.connect(dbname="app")
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    rewrite(bun, {"app": pg.entry(), "other": pg.entry(dbname="postgres")})
    reload(bun)
    assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] == pid


# ------------------------------------------------------------ forced user

def test_a_database_with_a_forced_user_has_one_pool_sized_by_the_database(start_pgbun, pg):
    users = ["postgres", "md5user", "scramuser", "passuser"]
    bun = start_pgbun(config={**ADMIN, "pool_mode": "transaction", "default_pool_size": 10},
                      databases={"app": pg.entry(user="pgbun_user", password="pgbun_pass", pool_size=2)},
                      users={u: "pool_size=8" for u in users})
    conns = [bun.connect(dbname="app", user=u) for u in users for _ in range(2)]
    peak = []
    barrier = threading.Barrier(len(conns))

    def work(conn):
        barrier.wait(timeout=20)
        for _ in range(3):
            conn.execute("SELECT pg_sleep(0.2)")
            peak.append(pg.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'pgbun_user'",
                               dbname="postgres")[0][0])

    threads = [threading.Thread(target=work, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert max(peak) <= 2, f"{max(peak)} servers for a database with a forced user and pool_size=2"
    pools = [r for r in console_rows(bun, "POOLS") if r["database"] == "app"]
    assert [r["user"] for r in pools] == ["pgbun_user"], pools
    assert all(c.execute("SELECT current_user").fetchone() == ("pgbun_user",) for c in conns)


# ------------------------------------------------------------ max_db_connections

# One worker: which pool gives way to which is decided within a worker; across
# workers a blocked pool is served by the other workers' idle servers, one per
# blocked pool at a time (README, Workers).
LIMITED = {**ADMIN, "pool_mode": "transaction", "default_pool_size": 2, "max_db_connections": 4,
           "log_connections": 1, "log_disconnections": 1, "workers": 1}
USERS = ["postgres", "pgbun_user", "md5user", "scramuser", "passuser"]


def as_user(bun, user, **kw):
    return bun.connect(user=user, password=default_auth_file()[user] or None, **kw)


def closed_for_room(bun):
    return re.findall(r"closing: max_db_connections: closed while idle to make room", bun.log_text())


def closed_by(bun, user):
    """Why pgbun closed servers of user's pool."""
    return re.findall(rf"S-\d+: pgbun_test/{user}@\S+ closing: (.*)", bun.log_text())


def parallel(fns, timeout=60):
    """Runs every fn at once: their values, or the exception each raised."""
    runs = [in_thread(fn) for fn in fns]
    for t, _ in runs:
        t.join(timeout=timeout)
    return [r.get("value", r.get("error")) for _, r in runs]


def test_max_db_connections_takes_one_idle_server_for_a_pool_with_none_not_one_per_client(start_pgbun, pg):
    """Two clients of a new pool arrive at a full max_db_connections with four
    idle servers of other, connected pools: one idle server makes room, and
    the two clients take turns on it, instead of two closed for two."""
    bun = start_pgbun(config=LIMITED, databases={"pgbun_test": pg.entry()})
    others = [as_user(bun, u) for u in USERS[:4]]
    for conn in others:
        conn.execute("SELECT 1")  # each pool keeps one idle server: 4 of 4
    newcomers = [as_user(bun, "passuser") for _ in range(2)]
    results = parallel([lambda c=c: c.execute("SELECT pg_sleep(0.3), 'ok'").fetchone()[1] for c in newcomers])
    assert results == ["ok", "ok"], results
    assert len(closed_for_room(bun)) == 1, bun.log_text()[-4000:]
    for conn in others:  # and those pools still work
        assert conn.execute("SELECT 2").fetchone() == (2,)


def test_max_db_connections_makes_room_with_a_used_server_before_a_fresh_one(start_pgbun, pg):
    """A server a pool opened for its clients' first login, not used yet,
    goes last: its clients are about to use it."""
    bun = start_pgbun(config=LIMITED, databases={"pgbun_test": pg.entry()})
    fresh = [as_user(bun, u) for u in ("md5user", "scramuser")]  # first logins open a server each, unused
    used = [as_user(bun, u) for u in ("postgres", "pgbun_user")]
    for conn in used:
        conn.execute("SELECT 1")  # used, and idle for less time than the fresh ones
    assert as_user(bun, "passuser").execute("SELECT 'room'").fetchone() == ("room",)
    assert closed_by(bun, "md5user") == [] and closed_by(bun, "scramuser") == [], bun.log_text()[-4000:]
    assert len(closed_for_room(bun)) == 1
    for conn in fresh:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_max_db_connections_takes_a_deserted_pools_server_first(start_pgbun, pg):
    bun = start_pgbun(config=LIMITED, databases={"pgbun_test": pg.entry()})
    with as_user(bun, "md5user") as gone:
        gone.execute("SELECT 1")  # its pool keeps the idle server, with nobody connected
    time.sleep(0.2)
    stay = [as_user(bun, u) for u in ("postgres", "pgbun_user", "scramuser")]
    for conn in stay:
        conn.execute("SELECT 1")
    assert as_user(bun, "passuser").execute("SELECT 'room'").fetchone() == ("room",)
    assert [w for w in closed_by(bun, "md5user") if "make room" in w], bun.log_text()[-4000:]
    assert len(closed_for_room(bun)) == 1


def test_a_released_server_is_not_swapped_to_a_pool_that_has_as_many(start_pgbun, pg):
    """Pool A holds two servers, pool B one, the limit is three; B's second
    client queues, then A's third. A's released server serves A's queue:
    handing it to B would only swap their shares at the cost of a server."""
    bun = start_pgbun(config={**LIMITED, "max_db_connections": 3}, databases={"pgbun_test": pg.entry()})
    a1, a2, a3 = (as_user(bun, "md5user") for _ in range(3))
    b1, b2 = (as_user(bun, "scramuser") for _ in range(2))
    pids = {}
    for name, conn in (("a1", a1), ("a2", a2), ("b1", b1)):
        conn.execute("BEGIN")
        pids[name] = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    waits = {name: threading.Thread(target=lambda n=name, c=conn: pids.__setitem__(
        n, c.execute("SELECT pg_backend_pid()").fetchone()[0])) for name, conn in (("b2", b2), ("a3", a3))}
    waits["b2"].start()
    time.sleep(0.3)
    waits["a3"].start()
    time.sleep(0.3)
    a1.execute("COMMIT")
    waits["a3"].join(timeout=10)
    assert pids.get("a3") == pids["a1"], f"A's released server did not serve A's queued client: {pids}"
    b1.execute("COMMIT")
    waits["b2"].join(timeout=10)
    assert "b2" in pids
    a2.execute("COMMIT")


def test_max_db_connections_under_contention_serves_everyone_within_the_limit(start_pgbun, pg):
    """5 users, 2 queries each at once, max_db_connections = 4."""
    bun = start_pgbun(config=LIMITED, databases={"pgbun_test": pg.entry()})
    conns = [as_user(bun, u) for u in USERS for _ in range(2)]
    peak = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak.append(pg.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'pgbun_test' "
                               "AND backend_type = 'client backend' AND pid <> pg_backend_pid()")[0][0])
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        results = parallel([lambda c=c: c.execute("SELECT pg_sleep(0.3), 'ok'").fetchone()[1] for c in conns])
    finally:
        stop.set()
        sampler.join(timeout=10)
    assert results == ["ok"] * len(conns), results
    assert max(peak) <= 4, f"{max(peak)} servers under max_db_connections = 4"


def test_a_pool_with_a_busy_server_gets_an_idle_one_of_a_connected_pool_after_reserve_pool_timeout(start_pgbun, pg):
    """Idle servers of clients that stay connected and send nothing do not
    hold a waiting pool off for good: after reserve_pool_timeout one of them
    makes room."""
    bun = start_pgbun(config={**LIMITED, "max_db_connections": 2, "reserve_pool_timeout": 1},
                      databases={"pgbun_test": pg.entry()})
    quiet = as_user(bun, "md5user")
    quiet.execute("SELECT 1")  # its server stays idle, its client connected
    b1, b2 = as_user(bun, "scramuser"), as_user(bun, "scramuser")
    b1.execute("BEGIN")
    b1.execute("SELECT 1")  # holds the other slot
    start = time.monotonic()
    assert b2.execute("SELECT 'served'").fetchone() == ("served",)
    waited = time.monotonic() - start
    assert waited >= 0.5, f"served after {waited:.1f} s: the quiet pool's server went at once"
    assert [w for w in closed_by(bun, "md5user") if "make room" in w], bun.log_text()[-3000:]
    b1.execute("COMMIT")
    assert quiet.execute("SELECT 2").fetchone() == (2,)


def test_a_console_gets_client_idle_timeout_set_after_it_logged_in(start_pgbun, pg):
    bun = start_pgbun(config=ADMIN)
    idle = bun.connect(dbname="pgbun")
    with bun.connect(dbname="pgbun") as adm:
        adm.execute("SET client_idle_timeout = 1")
    time.sleep(2.5)
    with pytest.raises(psycopg.OperationalError):
        idle.execute("SHOW VERSION")
