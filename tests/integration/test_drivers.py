"""Real drivers' named prepared statements through pgbun in transaction mode.

Drivers prepare a statement once per connection under a name (Parse "S_1")
and later only Bind it. In transaction mode a client's next transaction may
run on another server, where that name was never prepared: a pass-through
pooler (PgBouncer 1.18, or pgbun with `session_state = off`) then fails
with `prepared statement "S_1" does not exist`. pgbun tracks each client's
statements and prepares them as pgbun_<id> on whichever server the client
gets, answering Close itself.

Each test runs one driver as it is used in practice (pgbench -M prepared,
asyncpg with its statement cache, psycopg with prepare_threshold=0,
node-postgres named queries, JDBC with prepareThreshold=1) with many more
concurrent clients than the pool has servers, for a few seconds, and checks
that no query failed and every result was right. Clients report the backend
pids they ran on, to show they really moved between servers. Then pgbun's
console must show fewer Parses sent to servers than clients sent (the
servers shared the statements) and no more servers than the pool size.

Drivers name their statements per connection (S_1, _pg3_0, ...), so the
same name stands for different texts on different connections; the
clients prepare their statements in different orders to make sure of it.
"""

import asyncio
import json
import os
import re
import shutil
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from conftest import HERE, IS_PGBOUNCER, TEST_WORKERS, pg_bindir, run

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="pgbun's protocol-level prepared statements")

DB = "pgbun_drivers"
USER, PASSWORD = "pgbun_user", "pgbun_pass"
CLIENTS = 20      # concurrent clients of every driver but JDBC
SECONDS = 4       # how long each driver runs
JAVA = shutil.which("java")
JAR = Path(os.environ.get("PGBUN_JDBC_JAR", "/usr/share/java/postgresql.jar"))
# A client stays in its worker, and with PGBUN_TEST_WORKERS=2 a pool of 2 is one server
# per worker: clients still share servers, but none can run on a second one.
EXPECT_MOVES = TEST_WORKERS == 1


# ---------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def drivers_db(pg):
    """A database of its own: pgbench's tables (scale 1) and drv_rows, where each
    client inserts rows under its own tag and counts them back."""
    pg.sql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", dbname="postgres")
    pg.sql(f"CREATE DATABASE {DB} OWNER {USER}", dbname="postgres")
    run([pg_bindir() / "pgbench", "-i", "-q", "-s", "1", "-h", pg.sockdir, "-p", pg.port, "-U", USER, DB],
        timeout=60)
    pg.sql("CREATE TABLE drv_rows (tag text NOT NULL, n int NOT NULL); CREATE INDEX ON drv_rows (tag)",
           dbname=DB, user=USER)
    return DB


def start_pool(start_pgbun, pg, pool_size):
    """pgbun in transaction mode, a pool of pool_size servers for DB, scram for USER
    (as test_jdbc.py), who may also read the console's SHOW."""
    return start_pgbun(config={"auth_type": "scram-sha-256", "stats_users": USER, "pool_mode": "transaction",
                               "default_pool_size": pool_size, "max_client_conn": 100,
                               "query_wait_timeout": 60},
                       databases={DB: pg.entry(dbname=DB)},
                       auth_file={USER: PASSWORD})


def tag(driver):
    """A prefix for one run's rows in drv_rows, unique even if a test is rerun."""
    return f"{driver}-{uuid.uuid4().hex[:8]}"


def log_tail(bun, n=3000):
    return f"\n--- pgbun log (tail) ---\n{bun.log_text()[-n:]}"


def console(bun, what):
    """SHOW what on pgbun's console, as a list of {column: value}."""
    with psycopg.connect(host=bun.host, port=bun.port, dbname="pgbun", user=USER, password=PASSWORD,
                         autocommit=True, connect_timeout=10, prepare_threshold=None) as adm:
        cur = adm.execute(f"SHOW {what}")
        names = [d.name for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]


def assert_statements_shared(bun, pool_size):
    """The servers prepared fewer statements than the clients did, and there were
    never more servers than the pool size."""
    stats = [r for r in console(bun, "STATS") if r["database"] == DB]
    assert len(stats) == 1, stats
    stats = stats[0]
    parsed, prepared = stats["total_client_parse_count"], stats["total_server_parse_count"]
    assert 0 < prepared < parsed, f"servers prepared {prepared} statements for {parsed} client Parses: {stats}"
    assert 0 < stats["max_server_connections_used"] <= pool_size, stats
    servers = [r for r in console(bun, "SERVERS") if r["database"] == DB]
    assert 0 < len(servers) <= pool_size, servers
    assert sum(r["prepared_statements"] for r in servers) > 0, servers
    return stats


def assert_moved(backends, moved_clients, pool_size, detail=""):
    """The clients ran on the pool's servers (more than one), and some on more than one
    each: they moved from server to server."""
    assert 1 < len(backends) <= pool_size, f"clients ran on backends {backends}, pool size {pool_size}\n{detail}"
    if EXPECT_MOVES:
        assert moved_clients > 0, f"no client ran on more than one server: nothing moved\n{detail}"


def assert_clients_moved(pids_per_client, pool_size):
    """assert_moved for a list of each client's backend pids."""
    assert_moved(set().union(*pids_per_client), sum(1 for pids in pids_per_client if len(pids) > 1), pool_size)


def rotated(items, k):
    """items starting at index k: client k prepares its statements in its own order."""
    k %= len(items)
    return items[k:] + items[:k]


# ---------------------------------------------------------------- pgbench

@pytest.mark.timeout(90)
@pytest.mark.parametrize("script", ["tpcb-like", "select-only"])
def test_pgbench_prepared_20_clients_on_2_servers(start_pgbun, pg, drivers_db, script):
    pool_size = 2
    bun = start_pool(start_pgbun, pg, pool_size)
    # -j equals -c: pgbench's PQprepare is synchronous, so one thread driving several
    # clients blocks in it while its other clients hold the pool's servers in their
    # transactions (waiting for that same thread to go on): with fewer threads than
    # clients and fewer servers than clients any transaction pooler deadlocks.
    cmd = [pg_bindir() / "pgbench", "-n", "-M", "prepared", "-c", CLIENTS, "-j", CLIENTS, "-T", 5,
           "-h", bun.host, "-p", bun.port, "-U", USER, *(["-S"] if script == "select-only" else []), DB]
    res = run(cmd, timeout=60, check=False, env=dict(os.environ, PGPASSWORD=PASSWORD))
    out = res.stdout + res.stderr
    assert res.returncode == 0, out + log_tail(bun)
    # pgbench reports a failed PQprepare on stderr and goes on. Every client prepares
    # the same texts, so with names passed through ("P_0" on whichever server) -S can
    # even run: a prepare that hit a server already holding the name is the only trace.
    assert "error" not in res.stderr.lower(), out + log_tail(bun)
    failed = re.search(r"number of failed transactions: (\d+)", res.stdout)
    assert failed and int(failed[1]) == 0, out
    done = int(re.search(r"number of transactions actually processed: (\d+)", res.stdout)[1])
    assert done > 0, out
    stats = assert_statements_shared(bun, pool_size)
    assert stats["total_server_assignment_count"] >= done, stats


# ---------------------------------------------------------------- asyncpg

async def asyncpg_client(conn, k, deadline, mytag):
    """One asyncpg connection's loop; returns the backend pids it ran on."""
    queries = rotated([("SELECT $1::int + 1", (0,)), ("SELECT $1::text || $2::text", ("", "")),
                       ("SELECT pg_backend_pid()", ())], k)
    for q, args in queries:  # the statement cache names them __asyncpg_stmt_1__, ... in this order
        await conn.fetchval(q, *args)
    pids, rows, total, i = set(), 0, 0, 0
    while time.monotonic() < deadline:
        i += 1
        got = await conn.fetchval("SELECT $1::int + 1", i)
        assert got == i + 1, f"SELECT {i} + 1 gave {got!r}"
        got = await conn.fetchval("SELECT $1::text || $2::text", mytag, str(i))
        assert got == f"{mytag}{i}", got
        pids.add(await conn.fetchval("SELECT pg_backend_pid()"))
        if i % 5 == 0:
            # A statement of its own, outside the cache: once it is garbage, asyncpg
            # sends Close for it before it prepares the next one.
            stmt = await conn.prepare("SELECT $1::int * $2::int")
            got = await stmt.fetchval(i, 7)
            assert got == 7 * i, f"SELECT {i} * 7 gave {got!r}"
            del stmt
        if i % 3 == 0:
            async with conn.transaction():
                await conn.execute("INSERT INTO drv_rows (tag, n) VALUES ($1, $2)", mytag, i)
                await conn.executemany("INSERT INTO drv_rows (tag, n) VALUES ($1, $2)", [(mytag, 1), (mytag, 2)])
                count, got_sum = await conn.fetchrow(
                    "SELECT count(*), coalesce(sum(n), 0) FROM drv_rows WHERE tag = $1", mytag)
            rows, total = rows + 3, total + i + 3
            assert (count, got_sum) == (rows, total), f"own rows {(count, got_sum)}, expected {(rows, total)}"
    return pids


async def asyncpg_run(asyncpg, bun, run_tag):
    conns = await asyncio.gather(*[
        asyncpg.connect(host=bun.host, port=bun.port, user=USER, password=PASSWORD, database=DB,
                        timeout=10, command_timeout=30)  # statement cache left on
        for _ in range(CLIENTS)])
    try:
        deadline = time.monotonic() + SECONDS
        return await asyncio.gather(*[asyncpg_client(c, k, deadline, f"{run_tag}-{k}")
                                      for k, c in enumerate(conns)], return_exceptions=True)
    finally:
        await asyncio.gather(*[c.close(timeout=10) for c in conns], return_exceptions=True)


@pytest.mark.timeout(90)
def test_asyncpg_with_its_statement_cache_20_connections_on_2_servers(start_pgbun, pg, drivers_db):
    asyncpg = pytest.importorskip("asyncpg")
    pool_size = 2
    bun = start_pool(start_pgbun, pg, pool_size)
    results = asyncio.run(asyncio.wait_for(asyncpg_run(asyncpg, bun, tag("asyncpg")), timeout=60))
    errors = [f"client {k}: {r!r}" for k, r in enumerate(results) if isinstance(r, BaseException)]
    assert not errors, "\n".join(errors) + log_tail(bun)
    assert_clients_moved(results, pool_size)
    assert_statements_shared(bun, pool_size)


# ---------------------------------------------------------------- psycopg

def psycopg_client(bun, k, mytag, start, deadline):
    """One psycopg connection (every query prepared under a name); returns the backend pids it ran on."""
    conn = bun.connect(dbname=DB, user=USER, password=PASSWORD, prepare_threshold=0)
    queries = rotated([("SELECT %s::int + 1", (0,)), ("SELECT %s::text || %s::text", ("", "")),
                       ("SELECT pg_backend_pid()", None)], k)
    for q, params in queries:  # named _pg3_0, _pg3_1, ... in this client's order
        conn.execute(q, params)
    start.wait(30)
    pids, rows, total, i = set(), 0, 0, 0
    while time.monotonic() < deadline[0]:
        i += 1
        got = conn.execute("SELECT %s::int + 1", (i,)).fetchone()[0]
        assert got == i + 1, f"SELECT {i} + 1 gave {got!r}"
        got = conn.execute("SELECT %s::text || %s::text", (mytag, str(i))).fetchone()[0]
        assert got == f"{mytag}{i}", got
        pids.add(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
        if i % 3 == 0:
            with conn.transaction():
                conn.execute("INSERT INTO drv_rows (tag, n) VALUES (%s, %s)", (mytag, i))
                with conn.cursor() as cur:
                    cur.executemany("INSERT INTO drv_rows (tag, n) VALUES (%s, %s)", [(mytag, 1), (mytag, 2)])
                count, got_sum = conn.execute("SELECT count(*), coalesce(sum(n), 0) FROM drv_rows WHERE tag = %s",
                                              (mytag,)).fetchone()
            rows, total = rows + 3, total + i + 3
            assert (count, got_sum) == (rows, total), f"own rows {(count, got_sum)}, expected {(rows, total)}"
    conn.close()
    return pids


@pytest.mark.timeout(90)
def test_psycopg_prepare_threshold_0_20_threads_on_2_servers(start_pgbun, pg, drivers_db):
    pool_size = 2
    bun = start_pool(start_pgbun, pg, pool_size)
    run_tag = tag("psycopg")
    results = [None] * CLIENTS
    # The clients run for SECONDS from when the last of them has connected and prepared.
    deadline = []
    start = threading.Barrier(CLIENTS, action=lambda: deadline.append(time.monotonic() + SECONDS))

    def client(k):
        try:
            results[k] = psycopg_client(bun, k, f"{run_tag}-{k}", start, deadline)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            results[k] = exc
            start.abort()

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    end = time.monotonic() + 60
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "psycopg clients still running after 60 s" + log_tail(bun)
    errors = [f"client {k}: {r!r}" for k, r in enumerate(results) if isinstance(r, BaseException)]
    assert not errors, "\n".join(errors) + log_tail(bun)
    assert_clients_moved(results, pool_size)
    assert_statements_shared(bun, pool_size)


# ---------------------------------------------------------------- node-postgres

@pytest.mark.timeout(90)
def test_node_postgres_named_queries_20_clients_on_2_servers(start_pgbun, pg, drivers_db, node_pg):  # noqa: F811
    pool_size = 2
    bun = start_pool(start_pgbun, pg, pool_size)
    script = HERE / "node" / "named_queries.js"
    env = dict(os.environ, NODE_PATH=str(node_pg))
    res = run(["node", script, bun.host, bun.port, USER, PASSWORD, DB, CLIENTS, SECONDS, tag("node")],
              timeout=60, check=False, env=env, cwd=str(node_pg.parent))
    detail = f"node named_queries.js exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
    assert res.returncode == 0, detail + log_tail(bun)
    out = json.loads(res.stdout)
    assert out["errors"] == [] and out["clients"] == CLIENTS, detail
    assert out["queries"] > 0 and out["transactions"] > 0, detail
    assert_moved(out["backends"], out["moved_clients"], pool_size, detail)
    assert_statements_shared(bun, pool_size)


# ---------------------------------------------------------------- JDBC

@pytest.mark.timeout(120)
@pytest.mark.skipif(not JAVA, reason="java not installed (scripts/deps installs it)")
@pytest.mark.skipif(not JAR.is_file(), reason=f"{JAR} missing: install libpostgresql-jdbc-java")
def test_jdbc_prepare_threshold_1_12_threads_on_3_servers(start_pgbun, pg, drivers_db):
    pool_size, threads = 3, 12
    bun = start_pool(start_pgbun, pg, pool_size)
    url = f"jdbc:postgresql://{bun.host}:{bun.port}/{DB}?prepareThreshold=1"
    # The single-file source launcher compiles in memory: nothing is written here.
    res = run([JAVA, "-cp", JAR, HERE / "JdbcPrepared.java", url, USER, PASSWORD, threads, SECONDS, tag("jdbc")],
              timeout=100, check=False)
    detail = f"JdbcPrepared exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
    assert res.returncode == 0, detail + log_tail(bun)
    out = dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)
    assert out["errors"] == "0" and out["threads"] == str(threads), detail
    assert int(out["executions"]) > 0 and int(out["transactions"]) > 0, detail
    assert_moved(out["backends"].split(","), int(out["moved_threads"]), pool_size, detail)
    assert_statements_shared(bun, pool_size)
