"""workers = N: N event loops in N threads behind one set of limits.

Every test sets `workers` itself (2, and 3 where the number matters) and
checks what clients and PostgreSQL see: pool_size, reserve_pool_size,
min_pool_size, max_client_conn, max_db_connections and max_user_connections
count the connections of all workers together (sampled on PostgreSQL's
pg_stat_activity while the clients run); a server moves to the worker whose
client waits; the console shows one row per pool with every worker's
connections and counters; its control commands, cancel requests and signals
reach every worker. Which worker serves a connection is not visible from SQL:
the tests open enough connections (TCP, spread by SO_REUSEPORT, and the unix
socket, handed round robin by worker 0) that every worker gets some."""

import re
import signal
import threading
import time

import psycopg
import pytest

from conftest import (IS_PGBOUNCER, _ini_lines, backend_pid, backend_ports, chown_to_run_user, error_fields,
                      free_port, held_backends, pg_bindir, port_accepts, run, server_backends, sockets_to_port,
                      wait_until, write_auth_file)
from test_admin import row_for, show  # the console's helpers
from test_config import run_pgbun

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="pgbun's workers")

# Who runs the console in these tests.
ADMIN = {"admin_users": "postgres"}
SERVER_COUNTS = ("sv_active", "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used", "sv_tested",
                 "sv_login")


def config(workers=2, **keys):
    """[pgbun] keys with `workers` set explicitly and postgres as console admin."""
    return {"workers": workers, **ADMIN, **keys}


# ---------------------------------------------------------------- helpers

def client(bun, **kw):
    """A client through pgbun that never prepares statements (transaction mode moves it
    between servers) and whose connection the fixture closes at teardown."""
    kw.setdefault("prepare_threshold", None)
    return bun.connect(**kw)


def console(bun):
    return bun.connect(dbname="pgbun", user="postgres")


def admin(conn, sql):
    """One console statement in the simple protocol; the cursor."""
    cur = conn.cursor()
    cur.execute(sql, prepare=False)
    return cur


def pool_row(adm, database="pgbun_test", user="postgres"):
    """The one SHOW POOLS row of (database, user): a pool is one row, not one per worker."""
    return row_for(show(adm, "POOLS"), database=database, user=user)


def servers_in(row):
    return sum(row[c] for c in SERVER_COUNTS)


def rows_of(adm, what, database="pgbun_test"):
    return [r for r in show(adm, what) if r["database"] == database]


class Sampler:
    """Samples, in a thread every 10 ms, the client backends PostgreSQL has on dbname (of
    user, if given), asked directly over its unix socket, not counting its own (peak;
    held_peak: only those whose connection bun still holds), and the TCP connections bun's
    process holds to PostgreSQL's port, as the kernel lists them (os_peak)."""

    def __init__(self, pg, bun, dbname="pgbun_test", user=None):
        self.pg, self.dbname, self.user, self.bun = pg, dbname, user, bun
        self.samples, self.peak, self.held_peak, self.os_peak, self.error = 0, 0, 0, 0, None
        self._stop = threading.Event()

    def _run(self):
        try:
            while not self._stop.is_set():
                ports = backend_ports(self.conn, self.dbname, self.user)
                self.peak = max(self.peak, len(ports))
                self.held_peak = max(self.held_peak, held_backends(ports, self.bun.proc.pid, self.pg))
                self.os_peak = max(self.os_peak, sockets_to_port(self.bun.proc.pid, self.pg.port))
                self.samples += 1
                self._stop.wait(0.01)
        except Exception as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc

    def __enter__(self):
        self.conn = self.pg.connect(dbname="postgres")
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self._stop.set()
        self.thread.join(5)
        self.conn.close()
        assert self.error is None, f"the sampler failed: {self.error!r}"
        assert self.samples > 0, "the sampler took no sample"

    def assert_at_most(self, limit, what, closes=False):
        """PostgreSQL and the kernel saw at most limit connections (and PostgreSQL some).
        closes: pgbun closes servers to open others (a shared limit hands its slot
        over), and a backend outlives its closed connection until it notices, so
        PostgreSQL may list the old and the new one together: then only backends on a
        connection pgbun still holds count there; pgbun's own sockets are exact either way."""
        assert self.os_peak <= limit, f"pgbun held {self.os_peak} connections to PostgreSQL {what}"
        peak = self.held_peak if closes else self.peak
        assert 1 <= peak <= limit, (f"PostgreSQL saw {peak} backends {what} "
                                    f"(peak {self.peak}, on connections pgbun held {self.held_peak})")

    def __exit__(self, *exc):
        if not self._stop.is_set():
            self.stop()


def in_threads(n, fn):
    """Runs fn(0) ... fn(n-1), each in a daemon thread; returns (threads, errors)."""
    errors = []

    def wrap(i):
        try:
            fn(i)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(f"client {i}: {exc!r}")

    threads = [threading.Thread(target=wrap, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    return threads, errors


def join_all(threads, timeout, what="clients"):
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = sum(t.is_alive() for t in threads)
    assert alive == 0, f"{alive} of {len(threads)} {what} did not finish within {timeout} s"


def hammer(bun, n, transactions, sql="SELECT pg_sleep(0.005)", **kw):
    """n clients at once, each running `transactions` autocommit statements, then
    SELECT pg_backend_pid(); returns (threads, errors, pids): the backends those ran on."""
    pids = set()

    def one(i):
        with client(bun, **kw) as conn:
            for _ in range(transactions):
                conn.execute(sql)
            pids.add(backend_pid(conn))

    threads, errors = in_threads(n, one)
    return threads, errors, pids


def workers_logged(bun, n):
    """The log mentions the workers: one line naming the number, or one line per worker."""
    lines = [line for line in bun.log_text().splitlines() if re.search(r"worker", line, re.I)]
    return any(re.search(rf"\b{n}\b", line) for line in lines) or len(lines) >= n


# ---------------------------------------------------------------- the key

@pytest.mark.parametrize("workers", [2, 3])
def test_show_config_lists_workers_as_not_changeable_and_the_log_names_them(start_pgbun, workers):
    bun = start_pgbun(config=config(workers))
    adm = console(bun)
    assert row_for(show(adm, "CONFIG"), key="workers") == {"key": "workers", "value": str(workers),
                                                          "default": "1", "changeable": "no"}
    with pytest.raises(psycopg.Error) as err:
        admin(adm, "SET workers = 1")
    assert "workers" in str(err.value) and "restart" in str(err.value), str(err.value)
    assert row_for(show(adm, "CONFIG"), key="workers")["value"] == str(workers)
    wait_until(lambda: workers_logged(bun, workers), timeout=5, what=f"the log to mention {workers} workers")
    with client(bun) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_workers_defaults_to_one(start_pgbun):
    bun = start_pgbun(config={**ADMIN, "workers": None})
    row = row_for(show(console(bun), "CONFIG"), key="workers")
    assert (row["value"], row["default"], row["changeable"]) == ("1", "1", "no"), row


@pytest.mark.parametrize("value", ["0", "65", "-1", "two"])
def test_workers_outside_1_to_64_stops_pgbun_naming_the_key(pgbun_workdir, pg, value):
    ini = pgbun_workdir / "workers.ini"
    ini.write_text(_ini_lines("pgbun", {"listen_addr": "127.0.0.1", "listen_port": free_port(),
                                        "unix_socket_dir": str(pgbun_workdir), "auth_type": "trust",
                                        "workers": value},
                              {"pgbun_test": pg.entry()}, None))
    chown_to_run_user(ini)
    rc, out = run_pgbun([ini], pgbun_workdir)
    assert rc != 0, out
    assert "workers" in out, out


def test_sidecar_mode_reads_pgbun_workers_from_the_environment(start_pgbun, pg, pgbun_workdir):
    port = free_port()
    userlist = pgbun_workdir / "sidecar-userlist.txt"
    write_auth_file(userlist, {"postgres": ""})  # the console wants its admin in auth_file
    bun = start_pgbun(write_config=False, auth_file=False, env={
        "SERVER_HOST": "127.0.0.1", "SERVER_PORT": str(pg.port), "LISTEN_ADDR": "127.0.0.1",
        "LISTEN_PORT": str(port), "PGBUN_AUTH_TYPE": "trust", "PGBUN_AUTH_FILE": str(userlist),
        "PGBUN_ADMIN_USERS": "postgres", "PGBUN_UNIX_SOCKET_DIR": str(pgbun_workdir), "PGBUN_WORKERS": "2"})
    assert row_for(show(console(bun), "CONFIG"), key="workers")["value"] == "2"
    conns = [client(bun) for _ in range(10)]
    for i, conn in enumerate(conns):
        assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)


# ---------------------------------------------------------------- clients on every worker

def test_twenty_tcp_clients_at_once_are_all_served(start_pgbun, pg):
    bun = start_pgbun(config=config())  # session mode, default_pool_size 20: a server each
    conns = [client(bun, application_name=f"c{i}") for i in range(20)]
    pids = []
    for i, conn in enumerate(conns):
        assert conn.execute("SELECT %s::int, current_setting('application_name')", (i,)).fetchone() == (i, f"c{i}")
        pids.append(backend_pid(conn))
    assert len(set(pids)) == 20, f"session clients share servers: {pids}"
    on_pg = {r[0] for r in pg.sql("SELECT pid FROM pg_stat_activity WHERE datname = 'pgbun_test' "
                                  "AND backend_type = 'client backend'")}
    assert set(pids) <= on_pg
    # and all at once, from threads
    threads, errors = in_threads(20, lambda i: [conns[i].execute("SELECT pg_sleep(0.01)") for _ in range(5)])
    join_all(threads, 20)
    assert errors == []
    assert [backend_pid(c) for c in conns] == pids, "a session client changed servers"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("workers", [2, 3])
def test_pool_size_counts_the_servers_of_every_worker(start_pgbun, pg, workers):
    bun = start_pgbun(config=config(workers, pool_mode="transaction", default_pool_size=3,
                                    query_wait_timeout=30))
    clients, transactions = 24, 30
    with Sampler(pg, bun, user="postgres") as sampler:
        threads, errors, _ = hammer(bun, clients, transactions)
        join_all(threads, 60)
        sampler.stop()
    assert errors == []
    sampler.assert_at_most(3, f"from a pool of 3 with workers = {workers}")
    adm = console(bun)
    pool = pool_row(adm)
    assert pool["max_server_connections_used"] == 3, pool
    assert pool["cl_waiting"] == 0 and servers_in(pool) <= 3, pool
    # counters of every worker added up: each statement is one transaction (+ one backend_pid() each)
    want = clients * (transactions + 1)
    wait_until(lambda: row_for(show(adm, "STATS"), database="pgbun_test")["total_xact_count"] == want,
               timeout=5, what=f"SHOW STATS to count {want} transactions")
    stats = row_for(show(adm, "STATS"), database="pgbun_test")
    assert stats["max_server_connections_used"] == 3, stats
    assert stats["total_query_count"] == want and stats["total_client_login_count"] == clients, stats
    # a server goes to the worker whose client waits: it is moved, not closed and opened again
    assert stats["total_server_connect_count"] == 3, stats
    assert pool_row(adm)["total_xact_count"] == want


@pytest.mark.timeout(90)
def test_pool_size_counts_the_servers_of_every_worker_under_pgbench(start_pgbun, pg, pgbun_workdir):
    bun = start_pgbun(config=config(pool_mode="transaction", default_pool_size=3, query_wait_timeout=30))
    script = pgbun_workdir / "sleep.sql"
    script.write_text("SELECT pg_sleep(0.005);\n")
    with Sampler(pg, bun, user="postgres") as sampler:
        res = run([pg_bindir() / "pgbench", "-n", "-h", bun.host, "-p", bun.port, "-U", "postgres",
                   "-c", "24", "-j", "4", "-T", "3", "-f", script, "pgbun_test"], timeout=60, check=False)
        sampler.stop()
    assert res.returncode == 0, res.stdout + res.stderr
    done = re.search(r"number of transactions actually processed: (\d+)", res.stdout)
    assert done and int(done.group(1)) > 0, res.stdout
    failed = re.search(r"number of failed transactions: (\d+)", res.stdout)
    assert failed is None or failed.group(1) == "0", res.stdout
    sampler.assert_at_most(3, "from a pool of 3 under pgbench -c 24")
    adm = console(bun)
    pool = pool_row(adm)
    assert 1 <= pool["max_server_connections_used"] <= 3, pool
    assert row_for(show(adm, "STATS"), database="pgbun_test")["max_server_connections_used"] <= 3


@pytest.mark.timeout(90)
def test_one_server_moves_between_workers_to_serve_ten_clients(start_pgbun, pg):
    bun = start_pgbun(config=config(pool_mode="transaction", default_pool_size=1, query_wait_timeout=30))
    with Sampler(pg, bun, user="postgres") as sampler:
        threads, errors, pids = hammer(bun, 10, 20, sql="SELECT pg_sleep(0.002)")
        join_all(threads, 60)
        sampler.stop()
    assert errors == [], "with pool_size = 1 every client must get the one server in turn"
    sampler.assert_at_most(1, "from a pool of 1")
    assert len(pids) == 1, f"the one server was not handed between workers but replaced: pids {pids}"
    adm = console(bun)
    assert pool_row(adm)["max_server_connections_used"] == 1
    stats = row_for(show(adm, "STATS"), database="pgbun_test")
    assert (stats["max_server_connections_used"], stats["total_server_connect_count"]) == (1, 1), stats


def test_session_pool_of_two_serves_the_waiting_two_when_the_first_two_leave(start_pgbun, pg):
    bun = start_pgbun(config=config(default_pool_size=2, query_wait_timeout=30))
    adm = console(bun)
    got = {}
    release = [threading.Event() for _ in range(4)]

    def one(i):
        with client(bun) as conn:
            pid = backend_pid(conn)
            got[i] = pid
            assert release[i].wait(30), "never released"
            assert backend_pid(conn) == pid, "a session client changed servers"

    with Sampler(pg, bun, user="postgres") as sampler:
        threads, errors = in_threads(4, one)
        try:
            wait_until(lambda: len(got) >= 2, timeout=10, what="two clients to get a server")
            wait_until(lambda: pool_row(adm)["cl_waiting"] == 2, timeout=10,
                       what="SHOW POOLS to show the other two waiting")
            time.sleep(0.5)  # the two waiting clients get nothing while the two servers are held
            assert len(got) == 2, f"a third client got a server from a pool of 2: {got}"
            pool = pool_row(adm)
            assert (pool["cl_active"], pool["cl_waiting"], pool["sv_active"]) == (2, 2, 2), pool
            first = dict(got)
            for i in first:
                release[i].set()
            wait_until(lambda: len(got) == 4, timeout=10, what="the waiting two to get the freed servers")
            later = {i: pid for i, pid in got.items() if i not in first}
            assert set(later.values()) <= set(first.values()), (first, later)
        finally:
            for r in release:
                r.set()
            join_all(threads, 15)
        sampler.stop()
    assert errors == []
    assert len(set(got.values())) <= 2, got
    sampler.assert_at_most(2, "from a session pool of 2")


def test_clients_log_in_while_the_only_server_is_held_whichever_worker_they_land_on(start_pgbun):
    bun = start_pgbun(config=config(pool_mode="transaction", default_pool_size=1, query_wait_timeout=30))
    holder = client(bun, autocommit=False)
    holder.execute("SELECT 1")  # the pool's one server, held in a transaction
    # A login needs no free server once the pool knows its server's parameters, on any worker.
    newcomers = [client(bun, host=bun.unix_dir if i % 2 else bun.host, connect_timeout=5) for i in range(8)]
    done = {}

    def query(i):
        done[i] = newcomers[i].execute("SELECT %s::int", (i,)).fetchone()

    threads, errors = in_threads(8, query)
    try:
        adm = console(bun)
        wait_until(lambda: pool_row(adm)["cl_waiting"] == 8, timeout=10, what="8 queries to queue for the server")
        assert done == {}, f"queries ran while the only server was held: {done}"
    finally:
        holder.commit()
    join_all(threads, 20)
    assert errors == []
    assert done == {i: (i,) for i in range(8)}


@pytest.mark.parametrize("workers", [2, 3])
def test_max_client_conn_counts_the_clients_of_every_worker(start_pgbun, workers):
    bun = start_pgbun(config=config(workers, max_client_conn=6))
    hosts = [bun.host, bun.unix_dir]  # TCP (spread by the kernel) and the unix socket (round robin)
    conns = [client(bun, host=hosts[i % 2]) for i in range(6)]
    for i, conn in enumerate(conns):
        assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)
    for attempt in range(6):  # over both ways in, so that every worker turns one away
        with pytest.raises(psycopg.OperationalError) as err:
            client(bun, host=hosts[attempt % 2])
        sqlstate, text = error_fields(err.value)
        assert "max_client_conn" in text, text
        if sqlstate is not None:
            assert sqlstate == "53300", (sqlstate, text)
    conns.pop(0).close()

    def newcomer():
        with psycopg.connect(host=bun.host, port=bun.port, dbname="pgbun_test", user="postgres",
                             connect_timeout=10, autocommit=True) as c:
            return c.execute("SELECT 7").fetchone()

    assert wait_until(newcomer, timeout=10, what="a slot to free up after a client left") == (7,)
    for conn in conns:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_show_clients_servers_and_pools_count_the_connections_of_every_worker(start_pgbun, pg):
    bun = start_pgbun(config=config())  # session mode: each client holds a server
    n = 10
    conns = [client(bun, application_name=f"w{i}", host=bun.unix_dir if i % 3 == 0 else bun.host)
             for i in range(n)]
    pids = {backend_pid(c) for c in conns}
    assert len(pids) == n
    adm = console(bun)
    clients, servers = rows_of(adm, "CLIENTS"), rows_of(adm, "SERVERS")
    assert sorted(r["application_name"] for r in clients) == sorted(f"w{i}" for i in range(n)), clients
    assert len({r["id"] for r in clients}) == n, "client ids repeat across workers"
    assert all(r["state"] == "active" for r in clients), clients
    assert {r["remote_pid"] for r in servers} == pids, servers
    assert len(servers) == n
    assert {r["link"] for r in clients} == {r["ptr"] for r in servers}, (clients, servers)
    pool = pool_row(adm)
    assert (pool["cl_active"], pool["cl_waiting"], pool["sv_active"], servers_in(pool)) == (n, 0, n, n), pool
    for c in conns[:4]:
        c.close()

    def settled():
        p = pool_row(adm)
        return len(rows_of(adm, "CLIENTS")) == n - 4 and p["cl_active"] == n - 4 and p["sv_active"] == n - 4

    wait_until(settled, timeout=10, what="four closed clients to leave SHOW CLIENTS and SHOW POOLS")
    pool = pool_row(adm)
    assert servers_in(pool) == n and len(rows_of(adm, "SERVERS")) == n, pool  # released, still open
    assert server_backends(pg) == n


# ---------------------------------------------------------------- cancel

@pytest.mark.timeout(90)
@pytest.mark.parametrize("via", ["tcp", "unix"])
@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_cancel_reaches_the_query_whichever_worker_takes_the_cancel_request(start_pgbun, pg, mode, via):
    bun = start_pgbun(config=config(pool_mode=mode))
    n = 6
    host = bun.unix_dir if via == "unix" else bun.host
    conns = [client(bun, host=host, application_name=f"sleeper{i}") for i in range(n)]
    ended = {}

    def sleeper(i):
        try:
            conns[i].execute("SELECT pg_sleep(30)")
            ended[i] = "finished"
        except psycopg.errors.QueryCanceled:
            ended[i] = "canceled"

    threads, errors = in_threads(n, sleeper)
    try:
        wait_until(lambda: pg.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'pgbun_test' "
                                  "AND query = 'SELECT pg_sleep(30)' AND state = 'active'")[0][0] == n,
                   timeout=10, what=f"{n} queries to be running")
        for i, conn in enumerate(conns):
            conn.cancel()  # a new connection to pgbun: it lands on any worker
            wait_until(lambda: i in ended, timeout=10, what=f"client {i}'s query to end after its cancel")
            assert ended[i] == "canceled", f"client {i}: {ended[i]}"
    finally:
        for i, conn in enumerate(conns):  # a failed test leaves no query sleeping on
            if i not in ended:
                pg.sql("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                       (f"sleeper{i}",))
        join_all(threads, 15)
    assert errors == []
    for i, conn in enumerate(conns):  # each connection goes on after its cancel
        assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)


# ---------------------------------------------------------------- control commands

@pytest.mark.timeout(90)
@pytest.mark.parametrize("how", ["SET", "RELOAD"])
def test_a_smaller_default_pool_size_holds_on_every_worker(start_pgbun, pg, how):
    bun = start_pgbun(config=config(pool_mode="transaction", default_pool_size=6, query_wait_timeout=30,
                                    server_idle_timeout=1))
    adm = console(bun)
    threads, errors, _ = hammer(bun, 10, 20, sql="SELECT pg_sleep(0.01)")
    join_all(threads, 30)
    assert errors == []
    assert pool_row(adm)["max_server_connections_used"] > 2, "the warm-up did not open more than 2 servers"
    if how == "SET":
        admin(adm, "SET default_pool_size = 2")
    else:
        bun.config_path.write_text(_ini_lines("pgbun", dict(bun.config, default_pool_size=2),
                                              {"pgbun_test": pg.entry()}, None))
        chown_to_run_user(bun.config_path)
        assert admin(adm, "RELOAD").statusmessage == "RELOAD"
    assert row_for(show(adm, "CONFIG"), key="default_pool_size")["value"] == "2"
    assert row_for(show(adm, "DATABASES"), name="pgbun_test")["pool_size"] == 2
    # the servers past the new size close as they idle (server_idle_timeout = 1) ...
    wait_until(lambda: server_backends(pg) <= 2, timeout=10, what="the servers past pool_size 2 to close")
    # ... and no worker opens more again
    with Sampler(pg, bun, user="postgres") as sampler:
        threads, errors, _ = hammer(bun, 10, 20, sql="SELECT pg_sleep(0.01)")
        join_all(threads, 60)
        sampler.stop()
    assert errors == []
    sampler.assert_at_most(2, f"after {how} default_pool_size = 2")


def test_pause_holds_the_queries_of_every_worker_until_resume(start_pgbun):
    bun = start_pgbun(config=config(pool_mode="transaction"))
    n = 8
    conns = [client(bun, host=bun.unix_dir if i % 2 else bun.host) for i in range(n)]
    for conn in conns:
        conn.execute("SELECT 1")
    adm = console(bun)
    assert admin(adm, "PAUSE").statusmessage == "PAUSE"
    done = {}

    def query(i):
        done[i] = conns[i].execute("SELECT %s::int", (i,)).fetchone()

    threads, errors = in_threads(n, query)
    try:
        assert row_for(show(adm, "STATE"), key="paused")["value"] == "yes"
        wait_until(lambda: pool_row(adm)["cl_waiting"] == n, timeout=10,
                   what=f"SHOW POOLS to show {n} clients waiting")
        time.sleep(0.5)
        assert done == {}, f"queries ran while pgbun was paused: {done}"
    finally:
        admin(adm, "RESUME")
    join_all(threads, 10, what="queries after RESUME")
    assert errors == []
    assert done == {i: (i,) for i in range(n)}
    assert row_for(show(adm, "STATE"), key="paused")["value"] == "no"


def test_pause_answers_only_when_the_transactions_of_every_worker_have_ended(start_pgbun):
    bun = start_pgbun(config=config(pool_mode="transaction"))
    holders = [client(bun, autocommit=False, host=bun.unix_dir if i % 2 else bun.host) for i in range(6)]
    for h in holders:
        h.execute("SELECT 1")  # each inside a transaction, holding a server
    adm = console(bun)
    result = {}

    def pause():
        result["status"] = admin(adm, "PAUSE").statusmessage
        result["at"] = time.monotonic()

    t = threading.Thread(target=pause, daemon=True)
    t.start()
    try:
        for h in holders[:-1]:
            h.commit()
        t.join(0.8)
        assert t.is_alive() and not result, f"PAUSE answered while a transaction was open: {result}"
        last = time.monotonic()
        holders[-1].commit()
        t.join(10)
        assert result.get("status") == "PAUSE", result
        assert result["at"] >= last
    finally:
        t.join(10)
        with console(bun) as other:
            admin(other, "RESUME")
    for h in holders:
        assert h.execute("SELECT 2").fetchone() == (2,)
        h.commit()


def test_reconnect_replaces_the_servers_of_every_worker(start_pgbun, pg):
    bun = start_pgbun(config=config(pool_mode="transaction", default_pool_size=4, query_wait_timeout=30))
    threads, errors, _ = hammer(bun, 8, 10, sql="SELECT pg_sleep(0.01)")
    join_all(threads, 30)
    assert errors == []
    old = {r[0] for r in pg.sql("SELECT pid FROM pg_stat_activity WHERE datname = 'pgbun_test' "
                                "AND usename = 'postgres' AND backend_type = 'client backend' "
                                "AND pid <> pg_backend_pid()")}
    assert old, "no servers were left open to reconnect"
    adm = console(bun)
    assert admin(adm, "RECONNECT").statusmessage == "RECONNECT"
    threads, errors, pids = hammer(bun, 8, 10, sql="SELECT pg_sleep(0.01)")
    join_all(threads, 30)
    assert errors == []
    assert pids and not pids & old, f"servers opened before RECONNECT were used after it: {pids & old}"
    wait_until(lambda: not pg.sql("SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)", (list(old),)),
               timeout=10, what="the servers from before RECONNECT to close")


def test_kill_client_reaches_the_clients_of_every_worker(start_pgbun):
    bun = start_pgbun(config=config(pool_mode="transaction"))
    n = 8
    victims = [client(bun, application_name=f"victim{i}", host=bun.unix_dir if i % 2 else bun.host)
               for i in range(n)]
    bystander = client(bun, application_name="bystander")
    for c in victims + [bystander]:
        c.execute("SELECT 1")
    adm = console(bun)
    ids = {r["application_name"]: r["id"] for r in rows_of(adm, "CLIENTS")}
    for i in range(n):
        admin(adm, f"KILL_CLIENT {ids[f'victim{i}']}")
    for i, v in enumerate(victims):
        with pytest.raises(psycopg.OperationalError):
            v.execute("SELECT 1")
    assert bystander.execute("SELECT 2").fetchone() == (2,)
    wait_until(lambda: [r["application_name"] for r in rows_of(adm, "CLIENTS")] == ["bystander"], timeout=10,
               what="only the bystander to be left in SHOW CLIENTS")


def test_kill_drops_the_database_on_every_worker_until_resume(start_pgbun, pg):
    bun = start_pgbun(config=config(pool_mode="session"))
    victims = [client(bun, host=bun.unix_dir if i % 2 else bun.host) for i in range(8)]
    for v in victims:
        backend_pid(v)
    adm = console(bun)
    admin(adm, "KILL pgbun_test")
    try:
        for v in victims:
            with pytest.raises(psycopg.OperationalError):
                v.execute("SELECT 1")
        wait_until(lambda: server_backends(pg) == 0, timeout=10, what="every worker's servers to close")
        assert row_for(show(adm, "DATABASES"), name="pgbun_test")["paused"] == 1
    finally:
        admin(adm, "RESUME pgbun_test")
    with client(bun) as after:
        assert after.execute("SELECT 3").fetchone() == (3,)


def test_reset_stats_zeroes_the_counters_of_every_worker(start_pgbun):
    bun = start_pgbun(config=config(pool_mode="transaction"))
    threads, errors, _ = hammer(bun, 8, 5, sql="SELECT 1")
    join_all(threads, 30)
    assert errors == []
    adm = console(bun)
    wait_until(lambda: row_for(show(adm, "STATS_TOTALS"), database="pgbun_test")["xact_count"] == 8 * 6,
               timeout=5, what="SHOW STATS_TOTALS to count every worker's transactions")
    assert admin(adm, "RESET STATS").statusmessage == "RESET"
    totals = row_for(show(adm, "STATS_TOTALS"), database="pgbun_test")
    assert {k: v for k, v in totals.items() if k != "database" and v != 0} == {}, totals
    with client(bun) as conn:
        conn.execute("SELECT 1")
    wait_until(lambda: row_for(show(adm, "STATS_TOTALS"), database="pgbun_test")["xact_count"] == 1,
               timeout=5, what="the counters to start again from 0")


# ---------------------------------------------------------------- shared limits and pool shapes

@pytest.mark.timeout(90)
@pytest.mark.parametrize("limit", ["max_db_connections", "max_user_connections"])
def test_a_shared_limit_counts_the_servers_of_every_worker(start_pgbun, pg, limit):
    cfg = config(pool_mode="transaction", default_pool_size=4, query_wait_timeout=30, **{limit: 2})
    if limit == "max_db_connections":  # two users, one database
        bun = start_pgbun(config=cfg)
        plan = [("pgbun_test", "postgres"), ("pgbun_test", "md5user")] * 4
        sampler = Sampler(pg, bun)
    else:  # one user, two databases
        bun = start_pgbun(config=cfg, databases={"db_a": pg.entry(), "db_b": pg.entry()})
        plan = [("db_a", "postgres"), ("db_b", "postgres")] * 4
        sampler = Sampler(pg, bun, user="postgres")
    results = {}

    def one(i):
        dbname, user = plan[i]
        with client(bun, dbname=dbname, user=user) as conn:
            for _ in range(8):
                conn.execute("SELECT pg_sleep(0.02)")
            results[i] = conn.execute("SELECT current_user").fetchone()[0]

    with sampler:
        threads, errors = in_threads(len(plan), one)
        join_all(threads, 60)
        sampler.stop()
    assert errors == []
    assert results == {i: plan[i][1] for i in range(len(plan))}
    sampler.assert_at_most(2, f"with {limit} = 2", closes=True)


def test_min_pool_size_is_kept_once_not_per_worker(start_pgbun, pg):
    bun = start_pgbun(config=config(pool_mode="transaction", min_pool_size=3, server_idle_timeout=1))
    for host in (bun.host, bun.unix_dir, bun.host, bun.unix_dir):
        with client(bun, host=host) as conn:
            conn.execute("SELECT 1")  # the pool exists from the first login on
    wait_until(lambda: server_backends(pg) == 3, timeout=10, what="min_pool_size = 3 servers to be open")
    with Sampler(pg, bun) as sampler:
        time.sleep(2)  # past server_idle_timeout: min_pool_size keeps 3, and only 3
        sampler.stop()
    sampler.assert_at_most(3, "with min_pool_size = 3")
    assert sampler.peak == 3
    assert server_backends(pg) == 3


def test_the_reserve_pool_is_shared_by_every_worker(start_pgbun, pg):
    bun = start_pgbun(config=config(default_pool_size=1, reserve_pool_size=1, reserve_pool_timeout=1,
                                    query_wait_timeout=30))
    holder = client(bun)
    holder_pid = backend_pid(holder)  # session mode: holds the one regular server
    got = {}
    release = threading.Event()

    def waiter(i):
        with client(bun, host=bun.unix_dir if i % 2 else bun.host) as conn:
            got[i] = backend_pid(conn)
            assert release.wait(30), "never released"

    with Sampler(pg, bun, user="postgres") as sampler:
        threads, errors = in_threads(4, waiter)
        try:
            wait_until(lambda: got, timeout=10, what="one waiting client to be served by the reserve")
            time.sleep(1.5)  # every waiter has now waited past reserve_pool_timeout
            assert len(got) == 1, f"reserve_pool_size = 1 served {len(got)} clients: {got}"
            assert holder_pid not in got.values()
            holder.close()
            wait_until(lambda: len(got) == 2, timeout=10, what="the next waiter to get the holder's server")
        finally:
            release.set()
            join_all(threads, 20)
        sampler.stop()
    assert errors == []
    sampler.assert_at_most(2, "from pool_size 1 + reserve 1")


# ---------------------------------------------------------------- the unix socket

def test_unix_socket_clients_are_handed_to_the_workers_and_all_served(start_pgbun):
    bun = start_pgbun(config=config(pool_mode="transaction", default_pool_size=2, query_wait_timeout=30))
    conns = [client(bun, host=bun.unix_dir) for _ in range(8)]

    def one(i):
        for j in range(20):
            assert conns[i].execute("SELECT %s::int * 100 + %s::int", (i, j)).fetchone() == (i * 100 + j,)

    threads, errors = in_threads(8, one)
    join_all(threads, 30)
    assert errors == []
    res = bun.psql(["-U", "postgres", "-d", "pgbun_test", "-At", "-c", "SELECT 'via unix'"], host=bun.unix_dir)
    assert res.stdout.strip() == "via unix"
    adm = console(bun)
    unix = [r for r in rows_of(adm, "CLIENTS") if r["addr"] == "unix"]
    assert len(unix) == 8, rows_of(adm, "CLIENTS")


# ---------------------------------------------------------------- stopping

def _serve_some(bun):
    for host in (bun.host, bun.unix_dir) * 4:
        with client(bun, host=host) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_sigterm_stops_every_worker_and_exits_zero(start_pgbun):
    bun = start_pgbun(config=config(pool_mode="transaction"))
    _serve_some(bun)
    rc = bun.stop(signal.SIGTERM)
    assert rc == 0, bun.log_text()
    assert bun.sanitizer_reports() == [], bun.log_text()[-8000:]


def test_sigterm_waits_for_the_clients_of_every_worker(start_pgbun):
    bun = start_pgbun(config=config(pool_mode="session"))
    conns = [client(bun, host=bun.unix_dir if i % 2 else bun.host) for i in range(8)]
    for c in conns:
        c.execute("SELECT 1")
    bun.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: not port_accepts("127.0.0.1", bun.port), timeout=10,
               what="every worker to stop accepting on the port")
    for c in conns:  # each client is still served
        assert c.execute("SELECT 2").fetchone() == (2,)
    assert bun.alive(), "pgbun exited while clients were connected"
    for c in conns[:-1]:
        c.close()
    time.sleep(0.5)
    assert bun.alive(), "pgbun exited while a client was still connected"
    conns[-1].close()
    bun.proc.wait(timeout=10)
    assert bun.proc.returncode == 0, bun.log_text()
    assert bun.sanitizer_reports() == [], bun.log_text()[-8000:]


def test_shutdown_from_the_console_stops_every_worker(start_pgbun):
    bun = start_pgbun(config=config(pool_mode="transaction"))
    _serve_some(bun)
    bystanders = [client(bun, host=bun.unix_dir if i % 2 else bun.host) for i in range(4)]
    for b in bystanders:
        b.execute("SELECT 1")
    res = bun.psql(["-U", "postgres", "-d", "pgbun", "-c", "SHUTDOWN"], check=False)
    assert "SHUTDOWN" in res.stdout or res.returncode != 0, res.stdout + res.stderr
    bun.proc.wait(timeout=10)
    assert bun.proc.returncode == 0, bun.log_text()
    assert bun.sanitizer_reports() == [], bun.log_text()[-8000:]
