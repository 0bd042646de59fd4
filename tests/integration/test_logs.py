"""Structured logs: log_format = json, and syslog.

1. With log_format = json every line pgbun writes (stderr and logfile) is one
   JSON object with the documented fields and types: ts, level, pid, worker,
   event, the identity of a connection or pool as fields, log_stats figures
   as numbers, msg. A representative workload runs: logins that succeed and
   fail (a wrong password, an unknown user), auth_query, queries and errors,
   pool activity, RELOADs (a changed key, an ignored key, an unknown key),
   log_stats periods, a killed client, one that vanishes, shutdown.
2. No password, md5 or SCRAM secret, SCRAM proof or key, and no auth_query
   answer of the test's users appears anywhere in the log.
3. A RELOAD switches text to json; bad log_format and syslog_facility values
   are refused at start, at RELOAD and by SET.
4. syslog = 1 sends the lines to /dev/log with syslog_ident, syslog_facility
   and a priority per level; a RELOAD changes them or turns syslog off. The
   receiver is a unix datagram socket bound over /dev/log in a private mount
   namespace of pgbun's own (unshare -m), so the machine's syslog is never
   touched; without root these tests are skipped.
"""

import base64
import datetime
import hashlib
import hmac
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import pytest

import pgwire
from conftest import (IS_PGBOUNCER, IS_ROOT, RUN_USER, TEST_WORKERS, Pgbun, _ini_lines, chown_to_run_user,
                      default_auth_file, free_port, make_tempdir, pgbun_binary, pgbun_env, wait_until,
                      write_auth_file)

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="log_format and pgbun's log lines are pgbun's own")

LEVELS = {"FATAL", "ERROR", "WARNING", "LOG", "DEBUG", "NOISE"}
EVENTS = {"process", "config", "admin", "client", "server", "pool", "auth", "cancel", "stats", "metrics"}
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$")
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \d+ (FATAL|ERROR|WARNING|LOG|DEBUG|NOISE) ")
STR, INT, NUM = (str,), (int,), (int, float)
OPT_STR, OPT_INT = (str, type(None)), (int, type(None))
IDENTITY = {
    "client": {"client_id": INT, "database": OPT_STR, "user": OPT_STR, "client_addr": STR, "client_port": OPT_INT},
    "server": {"server_id": INT, "database": STR, "user": STR, "server_addr": STR, "server_port": INT},
    "pool": {"database": STR, "user": STR},
}
PERIOD_FIGURES = ("period_sec", "xacts_per_sec", "queries_per_sec", "bytes_in_per_sec", "bytes_out_per_sec",
                  "xact_avg_us", "query_avg_us", "wait_avg_us", "query_p50_us", "query_p95_us", "query_p99_us",
                  "assignments", "reused", "servers_opened")
POOL_PERIOD_FIGURES = ("period_sec", "xacts_per_sec", "queries_per_sec", "query_avg_us", "query_p95_us",
                       "reused_pct")
TOTAL_FIGURES = ("xacts", "queries", "assignments", "reused", "servers_opened", "servers_peak", "bytes_in",
                 "bytes_out", "xact_avg_us", "query_avg_us", "wait_avg_us", "query_p50_us", "query_p95_us",
                 "query_p99_us")

MD5_USER, MD5_PASS = "logs_md5", "logs md5 pass 7"
SCRAM_USER, SCRAM_PASS = "logs_scram", "logs scram pass 8"
LOOKED_USER, LOOKED_PASS = "logs_looked", "logs looked pass 9"  # in no auth_file: found by auth_query
ADMIN_USER, ADMIN_PASS = "logs_admin", "logs admin pass 6"
WRONG_PASS = "logs wrong pass 5"
SCRAM_SECRET = pgwire.scram_secret(SCRAM_PASS, salt=b"logs-test-salt-1")


# ---------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def roles(pg):
    """The test's roles in the session PostgreSQL; their stored secrets by name (auth_query's answers)."""
    pg.sql(f"CREATE ROLE {MD5_USER} LOGIN PASSWORD '{MD5_PASS}'")
    pg.sql(f"CREATE ROLE {SCRAM_USER} LOGIN PASSWORD '{SCRAM_SECRET}'")  # the same secret as in auth_file
    pg.sql(f"CREATE ROLE {LOOKED_USER} LOGIN PASSWORD '{LOOKED_PASS}'")
    try:
        yield dict(pg.sql("SELECT rolname, rolpassword FROM pg_authid WHERE rolname LIKE 'logs\\_%'"))
    finally:
        for role in (MD5_USER, SCRAM_USER, LOOKED_USER):
            pg.sql(f"DROP ROLE IF EXISTS {role}")


def scram_keys(secret, password):
    """Everything secret a SCRAM-SHA-256 secret and its password give: StoredKey, ServerKey, ClientKey."""
    m = re.match(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)$", secret)
    assert m, secret
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(m[2]), int(m[1]))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return [m[3], m[4], base64.b64encode(client_key).decode(), client_key.hex(), salted.hex(),
            base64.b64encode(salted).decode()]


class Recorded:
    """What the raw client sent that is secret: SCRAM proofs, md5 responses."""

    def __init__(self, monkeypatch):
        self.sent = []
        scram_client, md5_hash, sent = pgwire.ScramClient, pgwire.md5_password_hash, self.sent

        class RecordingScram(scram_client):
            def client_final(self, server_first):
                out = super().client_final(server_first)
                sent.append(out.decode().rsplit("p=", 1)[1])
                return out

        def recording_md5(user, password, salt):
            out = md5_hash(user, password, salt)
            sent.append(out[3:])
            return out

        monkeypatch.setattr(pgwire, "ScramClient", RecordingScram)
        monkeypatch.setattr(pgwire, "md5_password_hash", recording_md5)


def log_objects(text):
    """Every line of the log as a JSON object; fails on the first that is not one."""
    objs = []
    for n, line in enumerate(text.splitlines(), 1):
        try:
            obj = json.loads(line)
        except ValueError:
            pytest.fail(f"log line {n} is not JSON: {line!r}")
        assert isinstance(obj, dict), f"log line {n} is not an object: {line!r}"
        objs.append(obj)
    assert objs, "the log is empty"
    return objs


def check_fields(obj, pid):
    """The documented fields and their types."""
    for key, types in (("ts", STR), ("level", STR), ("pid", INT), ("event", STR), ("msg", STR)):
        assert isinstance(obj.get(key), types), (key, obj)
    assert TS.match(obj["ts"]) and datetime.datetime.fromisoformat(obj["ts"]).utcoffset() is not None, obj
    assert obj["level"] in LEVELS and obj["event"] in EVENTS, obj
    assert obj["pid"] == pid, obj
    if "worker" in obj:
        assert isinstance(obj["worker"], int) and 0 <= obj["worker"] < max(TEST_WORKERS, 1), obj
    for key, types in IDENTITY.get(obj["event"], {}).items():
        assert key in obj and isinstance(obj[key], types) and not isinstance(obj[key], bool), (key, obj)
    for key, value in obj.items():
        assert not isinstance(value, (dict, list)), (key, obj)


def lines_of(objs, event, text="", **fields):
    return [o for o in objs if o["event"] == event and text in o["msg"]
            and all(o.get(k) == v for k, v in fields.items())]


def rewrite_config(bun, pg, **changes):
    cfg = {k: v for k, v in {**bun.config, **changes}.items() if v is not None}
    bun.config_path.write_text(_ini_lines("pgbun", cfg, {"pgbun_test": pg.entry()}, None))
    chown_to_run_user(bun.config_path)


def show_config(conn, key):
    return [r for r in conn.execute("SHOW CONFIG").fetchall() if r[0] == key][0][1]


# ---------------------------------------------------------------- json: a workload, every line

def run_workload(bun, pg):
    """Logins that succeed and fail, queries and errors, pool waits, RELOADs, a kill, a vanished client."""
    md5 = bun.connect(user=MD5_USER, password=MD5_PASS)
    with pytest.raises(psycopg.errors.DivisionByZero):
        md5.execute("SELECT 1/0")
    md5.execute("SELECT 'quote \" backslash \\ newline \n tab \t é'")

    w = bun.login(SCRAM_USER, "pgbun_test", password=SCRAM_PASS)  # SCRAM, pass-through keys
    assert w.scalar("SELECT current_user") == SCRAM_USER
    w.terminate()
    w = bun.login(LOOKED_USER, "pgbun_test", password=LOOKED_PASS)  # auth_query finds the secret
    assert w.scalar("SELECT current_user") == LOOKED_USER
    w.terminate()

    with pytest.raises(pgwire.PgError) as err:
        bun.login(MD5_USER, "pgbun_test", password=WRONG_PASS)
    assert err.value.sqlstate == "28P01"
    with pytest.raises(pgwire.PgError):
        bun.login("logs_nobody", "pgbun_test", password=WRONG_PASS)

    # Pool activity: more clients than servers (transaction pooling, default_pool_size = 1).
    errors = []

    def worker():
        try:
            with psycopg.connect(host=bun.host, port=bun.port, dbname="pgbun_test", user=MD5_USER,
                                 password=MD5_PASS, autocommit=True, connect_timeout=10) as conn:
                for _ in range(5):
                    conn.execute("SELECT pg_sleep(0.01)")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and not any(t.is_alive() for t in threads), errors

    # log_stats: a period with the pool's queries in it.
    wait_until(lambda: '"database":"pgbun_test","user":"logs_md5","period_sec"' in bun.log_text(), 15,
               what="a log_stats line for the pool")

    with bun.connect(dbname="pgbun", user=ADMIN_USER, password=ADMIN_PASS) as adm:
        # RELOAD: a changed key and a PgBouncer key pgbun does not act on, then an unknown key (refused).
        # SIGHUP logs what changed; the console's RELOAD tells its client.
        rewrite_config(bun, pg, default_pool_size=2, tcp_defer_accept=1)
        bun.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "configuration reloaded" in bun.log_text(), 10, what="the SIGHUP reload")
        rewrite_config(bun, pg, logs_no_such_key=1)
        bun.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload failed" in bun.log_text(), 10, what="the refused SIGHUP reload")
        rewrite_config(bun, pg)
        adm.execute("RELOAD")

        victim = bun.connect(user=MD5_USER, password=MD5_PASS, application_name="logs_victim")
        victim.execute("SELECT 1")
        cur = adm.execute("SHOW CLIENTS")
        cols = [d.name for d in cur.description]
        vid = [dict(zip(cols, r)) for r in cur.fetchall() if "logs_victim" in r][0]["id"]
        adm.execute(f"KILL_CLIENT {vid}")
        with pytest.raises(psycopg.OperationalError):
            victim.execute("SELECT 1")

    gone = bun.login(MD5_USER, "pgbun_test", password=MD5_PASS)
    gone.query("BEGIN")
    gone.query("SELECT 1")
    gone.close()  # vanishes in a transaction
    md5.close()
    return int(vid)


def test_every_json_line_has_the_documented_fields_and_no_secret(start_pgbun, pg, roles, pgbun_workdir,
                                                                 monkeypatch):
    recorded = Recorded(monkeypatch)
    auth = {**default_auth_file(), MD5_USER: MD5_PASS, SCRAM_USER: SCRAM_SECRET, ADMIN_USER: ADMIN_PASS}
    logfile = pgbun_workdir / "logs-pgbun.log"
    metrics_port = free_port()
    bun = start_pgbun(config={"log_format": "json", "auth_type": "md5", "admin_users": ADMIN_USER,
                              "auth_user": "postgres", "pool_mode": "transaction", "default_pool_size": 1,
                              "stats_period": 1, "verbose": 1, "job_name": "logs", "logfile": logfile,
                              "metrics_listen_port": metrics_port, "metrics_auth_users": ADMIN_USER},
                      auth_file=auth)
    killed = run_workload(bun, pg)
    # A scrape with the admin's password in its Authorization header, and one with a wrong one.
    tokens = []
    for password, code in ((ADMIN_PASS, 200), (WRONG_PASS, 401)):
        token = base64.b64encode(f"{ADMIN_USER}:{password}".encode()).decode()
        tokens.append(token)
        req = urllib.request.Request(f"http://127.0.0.1:{metrics_port}/metrics",
                                     headers={"Authorization": "Basic " + token})
        try:
            got = urllib.request.urlopen(req, timeout=10).status
        except urllib.error.HTTPError as e:
            got = e.code
        assert got == code, (password, got)
    assert bun.stop() == 0
    text = bun.stderr_path.read_text(errors="replace")
    objs = log_objects(text)
    for obj in objs + log_objects(logfile.read_text(errors="replace")):  # the logfile has them too
        check_fields(obj, bun.proc.pid)

    # Connection lines carry their identity as fields, the message without the text prefix.
    logins = lines_of(objs, "client", "login succeeded", user=MD5_USER, database="pgbun_test",
                      client_addr="127.0.0.1")
    assert logins and all(isinstance(o["client_port"], int) and o["client_port"] > 0 for o in logins), logins
    assert not [o for o in objs if re.match(r"^[CS]-\d+: ", o["msg"])], "a message still starts with C-/S-"
    assert lines_of(objs, "client", "password authentication failed", user=MD5_USER), "the wrong password"
    assert lines_of(objs, "client", "logs_nobody") or lines_of(objs, "client", user="logs_nobody")
    assert lines_of(objs, "client", "closing", client_id=killed), "the killed client's line"
    assert lines_of(objs, "admin", f"KILL_CLIENT {killed}")
    assert lines_of(objs, "server", "new server connection", user=SCRAM_USER, server_addr=pg.host,
                    server_port=pg.port)
    assert lines_of(objs, "auth", LOOKED_USER), "auth_query's lines"
    assert lines_of(objs, "pool", "created", database="pgbun_test", user=LOOKED_USER)
    # RELOAD: what changed, the key not acted on, the refused reload.
    assert lines_of(objs, "config", "changed: default_pool_size")
    assert lines_of(objs, "admin", "RELOAD from the console")
    assert [o for o in lines_of(objs, "config", "tcp_defer_accept") if o["level"] == "WARNING"]
    assert [o for o in lines_of(objs, "config", "logs_no_such_key") if o["level"] == "ERROR"]
    assert [o for o in lines_of(objs, "config", "job_name") if o["level"] == "WARNING"], "held at start"
    # log_stats and the totals at exit: the figures as numbers.
    period = [o for o in lines_of(objs, "stats", "stats: ") if "database" not in o]
    pool_period = lines_of(objs, "stats", "stats: pool", database="pgbun_test", user=MD5_USER)
    totals = lines_of(objs, "stats", "transactions", database="pgbun_test", user=MD5_USER)
    assert period and pool_period and len(totals) == 1, (period[:1], pool_period[:1], totals)
    for lines, figures in ((period, PERIOD_FIGURES), (pool_period, POOL_PERIOD_FIGURES), (totals, TOTAL_FIGURES)):
        for o in lines:
            for f in figures:
                assert isinstance(o.get(f), NUM) and not isinstance(o[f], bool) and o[f] >= 0, (f, o)
    assert max(o["queries_per_sec"] for o in pool_period) > 0
    assert totals[0]["queries"] >= 15 and totals[0]["xacts"] >= 15, totals[0]
    assert [o["msg"] for o in objs if o["event"] == "process"][-2:] == ["shutting down", "stopped"]
    assert lines_of(objs, "metrics", "metrics endpoint listening on 127.0.0.1"), "the endpoint's line"
    assert lines_of(objs, "metrics", "a scrape of"), "the scrape's debug line"

    # No secret, in any form the test can know.
    secrets = [MD5_PASS, SCRAM_PASS, LOOKED_PASS, ADMIN_PASS, WRONG_PASS, SCRAM_SECRET]
    secrets += [hashlib.md5((MD5_PASS + MD5_USER).encode()).hexdigest()]
    secrets += scram_keys(SCRAM_SECRET, SCRAM_PASS)
    for role, stored in roles.items():
        secrets.append(stored)  # what auth_query answers
        secrets += scram_keys(stored, {MD5_USER: MD5_PASS, SCRAM_USER: SCRAM_PASS, LOOKED_USER: LOOKED_PASS}[role])
    secrets += recorded.sent + tokens
    assert len(recorded.sent) >= 3, recorded.sent
    raw = bun.log_text()
    leaked = [s for s in secrets if s and s in raw]
    assert not leaked, f"secrets in the log: {leaked}"


@pytest.mark.parametrize("how", ["sighup", "reload"])
def test_the_logfile_is_reopened_after_rotation(start_pgbun, pg, pgbun_workdir, how):
    """As PgBouncer: logrotate renames the file, then SIGHUP or RELOAD makes pgbun write a new one."""
    logfile = pgbun_workdir / "rotate-pgbun.log"
    bun = start_pgbun(config={"admin_users": "postgres", "logfile": logfile})
    with bun.connect() as conn:
        conn.execute("SELECT 1")
    rotated = pgbun_workdir / "rotate-pgbun.log.1"
    os.rename(logfile, rotated)
    if how == "sighup":
        os.kill(bun.proc.pid, signal.SIGHUP)
    else:
        with bun.connect(dbname="pgbun") as adm:
            adm.execute("RELOAD")
    wait_until(logfile.exists, 10, what="a new logfile after the rotation")
    with bun.connect() as conn:
        conn.execute("SELECT 1")
    wait_until(lambda: "login succeeded" in logfile.read_text(errors="replace"), 10,
               what="the next login in the new logfile")
    before = rotated.read_text(errors="replace")
    assert "login succeeded" in before
    assert logfile.read_text(errors="replace").count("login succeeded") == 1


def test_a_reload_switches_text_to_json(start_pgbun, pg):
    bun = start_pgbun(config={"admin_users": "postgres"})
    rewrite_config(bun, pg, log_format="json")
    with bun.connect(dbname="pgbun") as adm:
        adm.execute("RELOAD")
    with bun.connect() as conn:
        conn.execute("SELECT 1")
    assert bun.stop() == 0
    lines = bun.log_text().splitlines()
    first = next(i for i, ln in enumerate(lines) if ln.startswith("{"))
    assert first > 0 and all(TEXT_LINE.match(ln) for ln in lines[:first]), lines[:first]
    assert any(" LOG C-" in ln and " login succeeded" in ln for ln in lines[:first]), lines[:first]
    objs = log_objects("\n".join(lines[first:]))
    for obj in objs:
        check_fields(obj, bun.proc.pid)
    assert lines_of(objs, "admin", "RELOAD from the console")
    assert lines_of(objs, "client", "login succeeded", user="postgres", database="pgbun_test")
    assert objs[-1]["msg"] == "stopped"


@pytest.mark.parametrize("key,value", [("log_format", "xml"), ("syslog_facility", "local8"),
                                       ("syslog", "maybe")])
def test_a_bad_log_setting_stops_pgbun_at_start(start_pgbun, key, value):
    bun = start_pgbun(config={"log_format": "json", key: value}, wait=False)
    try:
        rc = bun.proc.wait(timeout=15)
    finally:
        bun.expected_exit = None  # judged here
    out = bun.log_text()
    assert rc != 0 and f"{key}: invalid" in out and value in out, (rc, out)


def test_a_bad_log_setting_is_refused_at_reload_and_by_set(start_pgbun, pg):
    bun = start_pgbun(config={"log_format": "json", "admin_users": "postgres"})
    with bun.connect(dbname="pgbun") as adm:
        for key, value in (("syslog_facility", "local8"), ("log_format", "xml")):
            rewrite_config(bun, pg, **{key: value})
            with pytest.raises(psycopg.Error) as err:
                adm.execute("RELOAD")
            assert f"{key}: invalid value '{value}'" in str(err.value), str(err.value)
            with pytest.raises(psycopg.Error) as err:
                adm.execute(f"SET {key} = '{value}'")
            assert f"{key}: invalid value '{value}'" in str(err.value), str(err.value)
        assert (show_config(adm, "syslog_facility"), show_config(adm, "log_format")) == ("daemon", "json")
        adm.execute("SET syslog_facility = 'local2'")
        assert show_config(adm, "syslog_facility") == "local2"
    assert bun.connect().execute("SELECT 1").fetchone() == (1,)


# ---------------------------------------------------------------- syslog

def namespace_problem():
    """Why a private mount namespace cannot be made here, or None."""
    if not IS_ROOT or RUN_USER is None:
        return "a private mount namespace needs root (pgbun itself then runs as the test user)"
    for tool in ("unshare", "setpriv", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    res = subprocess.run(["unshare", "-m", "--", "mount", "-t", "tmpfs", "tmpfs", "/mnt"], capture_output=True,
                         text=True, timeout=10)
    if res.returncode != 0:
        return f"unshare -m is not allowed here: {res.stderr.strip()}"
    return None


needs_namespace = pytest.mark.skipif(namespace_problem() is not None, reason=str(namespace_problem()))

# In its own mount namespace, /dev becomes a directory holding null, zero, random and urandom (the
# real ones) and `log`: the receiver's socket. Then pgbun runs as the test user.
NAMESPACE_SCRIPT = """set -e
dev=$1 sock=$2 uid=$3 gid=$4
shift 4
for n in null zero random urandom; do mount --bind /dev/$n "$dev/$n"; done
mount --bind "$sock" "$dev/log"
mount --rbind "$dev" /dev
exec setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@"
"""


class SyslogReceiver:
    """A unix datagram socket standing in for /dev/log; parses what glibc's syslog() sends."""

    LINE = re.compile(r"^<(\d+)>\w{3} [ \d]\d \d\d:\d\d:\d\d (\S+)\[(\d+)\]: (.*)$", re.S)

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="pgbun-logs-syslog-"))
        self.dir.chmod(0o755)
        self.dev = self.dir / "dev"
        self.dev.mkdir(mode=0o755)
        for name in ("null", "zero", "random", "urandom", "log"):
            (self.dev / name).touch()
        self.path = self.dir / "log.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.path.chmod(0o666)
        self.sock.settimeout(0.2)
        self.messages = []  # (facility, severity, ident, pid, text)
        self.raw = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                if self.done.is_set():
                    return
                continue
            except OSError:
                return
            text = data.decode(errors="replace")
            self.raw.append(text)
            m = self.LINE.match(text)
            if m:
                pri = int(m[1])
                self.messages.append((pri >> 3, pri & 7, m[2], int(m[3]), m[4]))

    def finish(self):
        """Reads what is queued, then stops: call once pgbun has exited."""
        self.done.set()
        self.thread.join(10)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def syslog_pgbun(pg):
    """Factory: a pgbun (config: [pgbun] keys) whose /dev/log is a SyslogReceiver's socket -> (Pgbun, receiver)."""
    started = []

    def factory(config):
        receiver = SyslogReceiver()
        workdir = make_tempdir("pgbun-logs-")
        port = free_port()
        write_auth_file(workdir / "userlist.txt", default_auth_file())
        cfg = {"listen_addr": "127.0.0.1", "listen_port": port, "unix_socket_dir": str(workdir),
               "auth_type": "trust", "auth_file": str(workdir / "userlist.txt"), "admin_users": "postgres",
               **config}
        ini = workdir / "pgbun.ini"
        ini.write_text(_ini_lines("pgbun", cfg, {"pgbun_test": pg.entry()}, None))
        chown_to_run_user(ini)
        pw = pwd.getpwnam(RUN_USER)
        args = ["-m", "--", "sh", "-c", NAMESPACE_SCRIPT, "sh", str(receiver.dev), str(receiver.path),
                str(pw.pw_uid), str(pw.pw_gid), str(pgbun_binary())]
        bun = Pgbun(Path(shutil.which("unshare")), workdir, port, ini, pgbun_env(), args, None, [])
        bun.config = cfg
        started.append((bun, receiver, workdir))
        bun.start()
        bun.wait_ready()
        return bun, receiver

    yield factory
    for bun, receiver, workdir in started:
        try:
            bun.stop()
        finally:
            receiver.finish()
            shutil.rmtree(workdir, ignore_errors=True)


def facility(name):
    return {"daemon": 3, "local3": 19, "local4": 20}[name]


@needs_namespace
def test_syslog_gets_the_lines_with_ident_facility_and_a_priority_per_level(syslog_pgbun):
    bun, receiver = syslog_pgbun({"syslog": 1, "syslog_ident": "logs-bun", "syslog_facility": "local3",
                                  "job_name": "logs"})
    with bun.connect() as conn:
        conn.execute("SELECT 1")
    assert bun.stop() == 0
    receiver.finish()
    msgs = receiver.messages
    assert msgs, f"nothing reached /dev/log: {receiver.raw[:5]}"
    assert {(m[0], m[2], m[3]) for m in msgs} == {(facility("local3"), "logs-bun", bun.proc.pid)}, msgs[:5]
    # Levels: WARNING is LOG_WARNING (4), LOG is LOG_INFO (6); text without the stamp, pid and level.
    assert [m for m in msgs if m[1] == 4 and "key 'job_name' is not supported yet" in m[4]], msgs
    assert [m for m in msgs if m[1] == 6 and m[4].startswith("pgbun ") and " started (pid " in m[4]], msgs
    login = [m for m in msgs if "login succeeded" in m[4]]
    assert login and login[0][1] == 6 and re.match(r"^C-\d+: pgbun_test/postgres@127\.0\.0\.1:\d+ login succeeded",
                                                    login[0][4]), login
    assert [m for m in msgs if m[4] == "stopped"], msgs[-3:]
    log = bun.log_text()
    assert "login succeeded" in log and TEXT_LINE.match(log), "stderr keeps the full text lines"


@needs_namespace
def test_reload_changes_syslog_ident_facility_and_format_then_turns_it_off(syslog_pgbun, pg):
    bun, receiver = syslog_pgbun({"syslog": 1, "syslog_ident": "logs-a", "syslog_facility": "local3"})
    rewrite_config(bun, pg, syslog_ident="logs-b", syslog_facility="local4", log_format="json")
    bun.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: any(m[2] == "logs-b" for m in receiver.messages), 10, what="a line under the new ident")
    with bun.connect() as conn:
        conn.execute("SELECT 1")
    wait_until(lambda: any("login succeeded" in m[4] for m in receiver.messages if m[2] == "logs-b"), 10,
               what="the login line in syslog")
    rewrite_config(bun, pg, syslog=0, log_format="json")
    bun.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: bun.log_text().count("configuration reloaded") == 2, 10, what="the second reload")
    with bun.connect(application_name="logs_after_off") as conn:
        conn.execute("SELECT 1")
    assert bun.stop() == 0
    receiver.finish()
    before = [m for m in receiver.messages if m[2] == "logs-a"]
    after = [m for m in receiver.messages if m[2] == "logs-b"]
    assert before and after and len(before) + len(after) == len(receiver.messages), receiver.raw[:5]
    assert {m[0] for m in before} == {facility("local3")} and {m[0] for m in after} == {facility("local4")}
    for m in after:
        obj = json.loads(m[4])
        check_fields(obj, bun.proc.pid)
    login = [json.loads(m[4]) for m in after if "login succeeded" in m[4]]
    assert login and login[0]["event"] == "client" and login[0]["user"] == "postgres", login
    # syslog = 0: nothing after that RELOAD, though the log has it.
    texts = [m[4] for m in receiver.messages]
    assert sum("login succeeded" in t for t in texts) == 1, texts
    assert sum("configuration reloaded" in t for t in texts) == 1, texts
    assert not [t for t in texts if "shutting down" in t or '"msg":"stopped"' in t], texts[-3:]
    log = bun.log_text()
    assert log.count("login succeeded") == 2 and log.count("configuration reloaded") == 2, log
    assert '"msg":"stopped"' in log
