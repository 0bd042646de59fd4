"""The pgbun PostgreSQL extension (sql/): installed with PGXS into the test
PostgreSQL, its pg_regress suite run against a pgbun in front of it, and what
pg_regress cannot easily show: a PAUSE that holds a real client's query until
RESUME, a KILL that closes it, query counts that go up, a RELOAD that reads
the file, a fleet of poolers in one query, poolers that never answer, a
canceled call, and a monitoring login that reads the views and nothing else.

The extension is installed (`make install`) when the tests run as root; else
it must be installed already, or the tests are skipped. `make` runs in a copy
of sql/, as the source tree may be read-only (distcheck)."""

import os
import re
import shutil
import socket
import struct
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest

from conftest import IS_PGBOUNCER, IS_ROOT, KEEP, SRCDIR, _ini_lines, in_thread, pg_bindir, run, wait_until

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="the extension reads pgbun's own SHOW columns")

DB = "ext_sql"  # the database the extension is created in, also pooled by pgbun
REGRESS_DB = "ext_regression"  # pg_regress's database
WATCHER, WATCHER_PASSWORD = "ext_watcher", "ext_watcher_pass"


class Installed:
    def __init__(self, sqldir, pg_config):
        self.sqldir = sqldir
        self.pg_config = pg_config


def _pg_config():
    """The pg_config of the server the tests run (its extension directory), else the one on PATH."""
    own = pg_bindir() / "pg_config"
    if own.is_file():
        return own
    found = shutil.which("pg_config")
    return Path(found) if found else None


@pytest.fixture(scope="module")
def extension(pg):
    """The extension installed into the test PostgreSQL's share directory, and a
    writable copy of sql/ to run make in. Drops what the tests made at the end."""
    pg_config = _pg_config()
    if pg_config is None:
        pytest.skip("no pg_config: install postgresql-server-dev-15 (scripts/deps does)")
    pgxs = Path(run([pg_config, "--pgxs"]).stdout.strip())
    if not pgxs.is_file():
        pytest.skip(f"no PGXS at {pgxs}: install postgresql-server-dev-15 (scripts/deps does)")
    control = Path(run([pg_config, "--sharedir"]).stdout.strip()) / "extension" / "pgbun.control"
    tmp = Path(tempfile.mkdtemp(prefix="pgbun-ext-"))
    sqldir = tmp / "sql"
    shutil.copytree(SRCDIR / "sql", sqldir)
    for p in [sqldir, *sqldir.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o200)  # copied from a read-only tree: make writes results/ here
    if IS_ROOT:
        run(["make", "-C", sqldir, "install", f"PG_CONFIG={pg_config}"], timeout=120)
    elif not control.is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.skip(f"not root, and the extension is not installed in {control.parent}: "
                    f"run `make -C sql install` as root, or the tests as root")
    monitor_existed = bool(pg.sql("SELECT FROM pg_roles WHERE rolname = 'pgbun_monitor'", dbname="postgres"))
    yield Installed(sqldir, pg_config)
    for db in (DB, REGRESS_DB):
        pg.sql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)", dbname="postgres")
    pg.sql(f"DROP ROLE IF EXISTS {WATCHER}", dbname="postgres")
    if not monitor_existed:
        pg.sql("DROP ROLE IF EXISTS pgbun_monitor", dbname="postgres")
    if not KEEP:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def ext_db(extension, pg):
    """The database DB with the extension created in it."""
    pg.sql(f"CREATE DATABASE {DB}", dbname="postgres")
    pg.sql("CREATE EXTENSION pgbun CASCADE", dbname=DB)
    return DB


def local_conninfo(bun):
    """The console of bun over its unix socket: pgbun lets in the OS user it runs as, PostgreSQL's."""
    return f"host={bun.unix_dir} port={bun.port} dbname=pgbun user=pgbun"


@pytest.fixture
def ext(ext_db, start_pgbun, pg):
    """pgbun in front of DB (transaction pooling), the target 'local' pointing at
    it, and a superuser's connection to DB: (bun, conn)."""
    bun = start_pgbun(config={"pool_mode": "transaction", "admin_users": "postgres"},
                      databases={DB: pg.entry(dbname=DB)})
    conn = pg.connect(dbname=DB)
    conn.execute("DELETE FROM pgbun.targets WHERE name <> 'local'")
    conn.execute("UPDATE pgbun.targets SET conninfo = %s, timeout = DEFAULT WHERE name = 'local'",
                 (local_conninfo(bun),))
    yield bun, conn
    conn.execute("DELETE FROM pgbun.targets WHERE name <> 'local'")
    conn.close()


def view(conn, sql, params=None):
    """Rows of a query on the extension's views, as dicts."""
    cur = conn.execute(sql, params)
    cols = [d.name for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def pool_row(conn, user="postgres"):
    rows = view(conn, "SELECT * FROM pgbun.pools WHERE target = 'local' AND database = %s AND \"user\" = %s",
                (DB, user))
    assert len(rows) <= 1, rows
    return rows[0] if rows else None


class MuteServer:
    """Speaks PostgreSQL's protocol up to the login and then says nothing: a
    pooler that is hung after accepting a connection."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.open = 0  # connections the peer has not closed
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @staticmethod
    def _recv_exact(conn, n):
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise OSError("closed")
            data += chunk
        return data

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(conn)
                self.open += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        def msg(kind, body):
            return kind + struct.pack("!I", len(body) + 4) + body

        try:
            while True:
                length, code = struct.unpack("!II", self._recv_exact(conn, 8))
                self._recv_exact(conn, length - 8)
                if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest: no
                    conn.sendall(b"N")
                    continue
                break
            conn.sendall(msg(b"R", struct.pack("!I", 0))
                         + msg(b"S", b"client_encoding\0UTF8\0") + msg(b"S", b"server_encoding\0UTF8\0")
                         + msg(b"S", b"server_version\x0016.0\0") + msg(b"K", struct.pack("!II", 1, 2))
                         + msg(b"Z", b"I"))
            while conn.recv(65536):
                pass  # every query read, none answered
        except OSError:
            pass
        finally:
            with self.lock:
                self.open -= 1

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


# ---------------------------------------------------------------- pg_regress

@pytest.mark.timeout(300)
@pytest.mark.parametrize("pool_mode", ["transaction", "session"])
def test_pg_regress_suite_passes_against_a_running_pgbun(extension, start_pgbun, pg, pool_mode):
    bun = start_pgbun(config={"pool_mode": pool_mode},
                      databases={REGRESS_DB: pg.entry(dbname=REGRESS_DB)})
    env = dict(os.environ, PGHOST=str(pg.sockdir), PGPORT=str(pg.port), PGUSER="postgres",
               PGBUN_CONNINFO=local_conninfo(bun))
    res = run(["make", "-C", extension.sqldir, "installcheck", f"PG_CONFIG={extension.pg_config}",
               f"CONTRIB_TESTDB={REGRESS_DB}"], check=False, env=env, timeout=240)
    out = res.stdout + res.stderr
    diffs = extension.sqldir / "regression.diffs"
    assert res.returncode == 0, out + (diffs.read_text(errors="replace") if diffs.exists() else "")
    tests = sorted(p.stem for p in (SRCDIR / "sql" / "sql").glob("*.sql"))
    passed = re.search(r"All (\d+) tests passed", out)
    assert passed and int(passed.group(1)) == len(tests), out
    for t in tests:  # "test NAME ... ok" (PostgreSQL 15) or "ok N - NAME" (16 and later)
        assert re.search(rf"^test +{t} +\.\.\. ok|^ok +\d+ +[-+] +{t} ", out, re.M), f"{t} not run:\n{out}"


# ---------------------------------------------------------------- commands that take effect

def test_pause_holds_a_clients_query_until_resume(ext):
    bun, conn = ext
    client = bun.connect(dbname=DB, prepare_threshold=None)
    assert client.execute("SELECT 1").fetchone() == (1,)
    assert conn.execute("SELECT pgbun.pause(%s)", (DB,)).fetchone() == ("PAUSE",)
    assert view(conn, "SELECT paused FROM pgbun.databases WHERE target = 'local' AND name = %s",
                (DB,)) == [{"paused": True}]
    thread, result = in_thread(lambda: client.execute("SELECT 'after resume'").fetchone())
    wait_until(lambda: (pool_row(conn) or {}).get("cl_waiting", 0) >= 1, 15, what="the client queued by PAUSE")
    assert thread.is_alive() and not result, "the query ran while its database was paused"
    assert conn.execute("SELECT pgbun.resume(%s)", (DB,)).fetchone() == ("RESUME",)
    thread.join(15)
    assert result.get("value") == ("after resume",), result
    assert pool_row(conn)["cl_waiting"] == 0


def test_kill_closes_a_client_and_leaves_the_database_paused_until_resume(ext):
    bun, conn = ext
    client = bun.connect(dbname=DB, prepare_threshold=None)
    assert client.execute("SELECT 1").fetchone() == (1,)
    assert conn.execute("SELECT pgbun.kill(%s)", (DB,)).fetchone() == ("KILL",)
    with pytest.raises(psycopg.OperationalError):
        client.execute("SELECT 1")
    assert view(conn, "SELECT paused, current_connections FROM pgbun.databases WHERE target = 'local' AND name = %s",
                (DB,)) == [{"paused": True, "current_connections": 0}]
    assert conn.execute("SELECT pgbun.resume(%s)", (DB,)).fetchone() == ("RESUME",)
    with bun.connect(dbname=DB) as again:
        assert again.execute("SELECT 'back'").fetchone() == ("back",)


def test_query_counts_go_up_with_real_queries(ext):
    bun, conn = ext
    with bun.connect(dbname=DB, prepare_threshold=None) as client:
        client.execute("SELECT 1")
        before = pool_row(conn)
        stats_before = view(conn, "SELECT total_query_count FROM pgbun.stats WHERE target = 'local' AND database = %s",
                            (DB,))[0]["total_query_count"]
        for i in range(7):
            assert client.execute("SELECT %s::int", (i,)).fetchone() == (i,)
    after = wait_until(lambda: (r := pool_row(conn))["total_query_count"] >= before["total_query_count"] + 7 and r,
                       15, what="7 more queries in pgbun.pools")
    assert after["total_xact_count"] >= before["total_xact_count"] + 7
    stats_after = view(conn, "SELECT s.total_query_count, t.query_count FROM pgbun.stats s "
                             "JOIN pgbun.stats_totals t USING (target, database) "
                             "WHERE target = 'local' AND database = %s", (DB,))[0]
    assert stats_after["total_query_count"] >= stats_before + 7
    assert stats_after["query_count"] >= stats_before + 7
    eff = view(conn, "SELECT * FROM pgbun.pool_efficiency WHERE target = 'local' AND database = %s", (DB,))
    assert len(eff) == 1 and eff[0]["error"] is None
    assert eff[0]["max_server_connections_used"] >= 1
    assert eff[0]["pool_size"] == view(conn, "SELECT pool_size FROM pgbun.databases WHERE target = 'local' "
                                             "AND name = %s", (DB,))[0]["pool_size"]


def test_set_changes_the_running_pooler(ext):
    bun, conn = ext
    assert conn.execute("SELECT pgbun.set('default_pool_size', '3')").fetchone() == ("SET",)
    with bun.connect(dbname="pgbun") as console:  # asked directly, not through the extension
        rows = console.execute("SHOW CONFIG").fetchall()
    assert [r[1] for r in rows if r[0] == "default_pool_size"] == ["3"]
    assert view(conn, "SELECT pool_size FROM pgbun.databases WHERE target = 'local' AND name = %s",
                (DB,)) == [{"pool_size": 3}]


def test_reload_reads_a_database_added_to_the_file(ext, pg):
    bun, conn = ext
    assert not view(conn, "SELECT name FROM pgbun.databases WHERE target = 'local' AND name = 'ext_added'")
    bun.config_path.write_text(_ini_lines("pgbun", bun.config, {DB: pg.entry(dbname=DB),
                                                                "ext_added": pg.entry(dbname=DB)}, None))
    assert conn.execute("SELECT pgbun.reload()").fetchone() == ("RELOAD",)
    assert view(conn, "SELECT name, database FROM pgbun.databases WHERE target = 'local' AND name = 'ext_added'") \
        == [{"name": "ext_added", "database": DB}]


# ---------------------------------------------------------------- fleets

def test_one_query_watches_a_fleet_of_poolers(ext, start_pgbun, pg):
    bun, conn = ext
    second = start_pgbun(config={"admin_users": "postgres"}, databases={"ext_second": pg.entry(dbname=DB)})
    # the second over TCP, as a user in admin_users
    conn.execute("INSERT INTO pgbun.targets (name, conninfo) VALUES ('ext_second', %s)",
                 (f"host=127.0.0.1 port={second.port} dbname=pgbun user=postgres",))
    rows = view(conn, "SELECT target, version, error FROM pgbun.version ORDER BY target")
    assert [(r["target"], r["error"]) for r in rows] == [("ext_second", None), ("local", None)]
    assert all(r["version"].startswith("pgbun ") for r in rows)
    dbs = view(conn, "SELECT target, name FROM pgbun.databases WHERE name LIKE 'ext%' ORDER BY target")
    assert [(r["target"], r["name"]) for r in dbs] == [("ext_second", "ext_second"), ("local", DB)]
    # each command goes to the target named
    assert conn.execute("SELECT pgbun.pause('ext_second', 'ext_second')").fetchone() == ("PAUSE",)
    paused = view(conn, "SELECT target, name, paused FROM pgbun.databases WHERE name LIKE 'ext%' ORDER BY target")
    assert [(r["target"], r["paused"]) for r in paused] == [("ext_second", True), ("local", False)]
    assert conn.execute("SELECT pgbun.resume('ext_second', 'ext_second')").fetchone() == ("RESUME",)


@pytest.mark.timeout(90)
def test_poolers_that_never_answer_give_error_rows_within_their_timeout(ext):
    bun, conn = ext
    mute = MuteServer()
    silent = socket.socket()  # accepts TCP connections (the kernel does) and never speaks
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        conn.execute("INSERT INTO pgbun.targets (name, conninfo, timeout) VALUES "
                     "('ext_mute', %s, '1 second'), ('ext_silent', %s, '2 seconds')",
                     (f"host=127.0.0.1 port={mute.port} dbname=pgbun user=pgbun sslmode=disable",
                      f"host=127.0.0.1 port={silent.getsockname()[1]} dbname=pgbun user=pgbun"))
        start = time.monotonic()
        rows = {r["target"]: r for r in view(conn, "SELECT target, version, error FROM pgbun.version")}
        assert time.monotonic() - start < 30
        assert rows["local"]["error"] is None and rows["local"]["version"].startswith("pgbun ")
        assert rows["ext_mute"]["version"] is None
        assert rows["ext_mute"]["error"] == "no answer to SHOW VERSION within 1 s"
        assert "timeout expired" in rows["ext_silent"]["error"]
        with pytest.raises(psycopg.Error) as err:
            conn.execute("SELECT pgbun.reload('ext_mute')")
        assert 'pgbun target "ext_mute": no answer to RELOAD within 1 s' in str(err.value)
        assert conn.execute("SELECT dblink_get_connections()").fetchone() == (None,)
    finally:
        mute.close()
        silent.close()


def test_a_canceled_call_leaves_no_dblink_connection_open(ext):
    bun, conn = ext
    mute = MuteServer()
    try:
        conn.execute("INSERT INTO pgbun.targets (name, conninfo, timeout) VALUES ('ext_mute', %s, '1 minute')",
                     (f"host=127.0.0.1 port={mute.port} dbname=pgbun user=pgbun sslmode=disable",))
        conn.execute("SET statement_timeout = '1s'")
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT * FROM pgbun.version")
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pgbun.reload('ext_mute')")
        conn.execute("RESET statement_timeout")
        # a connection left open would let anyone in this session send the pooler commands
        assert conn.execute("SELECT dblink_get_connections()").fetchone() == (None,)
        wait_until(lambda: mute.open == 0, 15, what="the canceled calls' connections closed")
        assert view(conn, "SELECT error FROM pgbun.version WHERE target = 'local'") == [{"error": None}]
    finally:
        mute.close()


# ---------------------------------------------------------------- rights

def test_a_monitoring_login_reads_the_views_but_not_the_targets_nor_the_commands(ext, pg):
    bun, conn = ext
    with bun.connect(dbname=DB) as client:  # a pool to see
        client.execute("SELECT 1")
    conn.execute(f"DROP ROLE IF EXISTS {WATCHER}")
    conn.execute(f"CREATE ROLE {WATCHER} LOGIN PASSWORD '{WATCHER_PASSWORD}' IN ROLE pgbun_monitor")
    try:
        with psycopg.connect(host="127.0.0.1", port=pg.port, dbname=DB, user=WATCHER, password=WATCHER_PASSWORD,
                             connect_timeout=10, autocommit=True) as watcher:
            assert watcher.execute("SELECT session_user, current_setting('is_superuser')").fetchone() == \
                (WATCHER, "off")
            assert view(watcher, "SELECT target, error FROM pgbun.pools WHERE database = %s", (DB,)) \
                == [{"target": "local", "error": None}]
            rows = view(watcher, "SELECT target, version, error FROM pgbun.version")
            assert [(r["target"], r["error"]) for r in rows] == [("local", None)]
            assert watcher.execute("SELECT name FROM pgbun.targets").fetchall() == [("local",)]
            for sql in ("SELECT conninfo FROM pgbun.targets", "SELECT pgbun.reload()",
                        f"SELECT pgbun.pause('{DB}')", "SELECT pgbun.set('default_pool_size', '1')",
                        "SELECT pgbun._command('local', 'RELOAD')"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    watcher.execute(sql)
            # dblink itself does not let a non-superuser connect without a password
            with pytest.raises(psycopg.Error) as err:
                watcher.execute("SELECT dblink_exec(%s, 'RELOAD')", (local_conninfo(bun),))
            assert "password is required" in str(err.value)
        assert "RELOAD from the console" not in bun.log_text()
    finally:
        conn.execute(f"DROP ROLE IF EXISTS {WATCHER}")
