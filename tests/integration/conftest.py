"""Fixtures for pgbun's integration tests.

`pg` starts one throwaway PostgreSQL for the whole run (initdb in a temp dir,
a free port, 127.0.0.1 plus a unix socket, the sample database from
docker-entrypoint-initdb.d/init.sql and one role per server authentication
method). `start_pgbun(...)` starts pgbun with a generated config and stops it
at the end of the test, failing the test when pgbun does not exit 0 on
SIGTERM or when a sanitizer reported anything. `make_postgres()` gives a test
its own PostgreSQL, for tests that stop and start it.

When run as root, PostgreSQL and pgbun run as the unprivileged user
`postgres` (PGBUN_TEST_USER), and their temp dirs belong to it.

Environment:
  PGBUN_BIN           the daemon (default <repo>/build/src/pgbun, <repo>/src/pgbun)
  PGBUN_SRCDIR        the source tree (default: two levels up from here)
  PGBUN_TEST_PEER     "pgbouncer" to run the suite against PgBouncer instead
                      (PGBUN_BIN=/usr/sbin/pgbouncer), to validate the tests
  PG_BINDIR           PostgreSQL server binaries (default: newest /usr/lib/postgresql/*/bin)
  PGBUN_TEST_TIMEOUT  seconds per test (default 60)
  PGBUN_TEST_KEEP     keep temp dirs (for debugging)
  PGBUN_TEST_WORKERS  N > 1 runs every pgbun the tests start with `workers = N`
                      (PGBUN_WORKERS=N in sidecar mode) unless the test sets it
"""

import glob
import json
import grp
import math
import os
import pwd
import resource
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest

import pgwire

HERE = Path(__file__).resolve().parent
SRCDIR = Path(os.environ.get("PGBUN_SRCDIR") or HERE.parents[1]).resolve()
PEER = os.environ.get("PGBUN_TEST_PEER", "pgbun")
IS_PGBOUNCER = PEER == "pgbouncer"
IS_ROOT = os.geteuid() == 0
RUN_USER = os.environ.get("PGBUN_TEST_USER", "postgres") if IS_ROOT else None
TEST_TIMEOUT = int(os.environ.get("PGBUN_TEST_TIMEOUT", "60"))
KEEP = bool(os.environ.get("PGBUN_TEST_KEEP"))
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:",
                     "UndefinedBehaviorSanitizer")


def _test_workers():
    value = os.environ.get("PGBUN_TEST_WORKERS", "").strip()
    try:
        return int(value or "1")
    except ValueError:
        raise pytest.UsageError(f"PGBUN_TEST_WORKERS={value!r} is not an integer") from None


# `workers = N` in every pgbun a test starts without setting it itself (config
# {"workers": None} keeps the key out); PgBouncer has no such key.
TEST_WORKERS = 1 if IS_PGBOUNCER else _test_workers()

# Roles created in the test PostgreSQL, one per server authentication method
# (see PG_HBA). The superuser `postgres` is trusted over TCP and the socket.
ROLES = {
    "md5user": ("md5pass", "md5"),
    "scramuser": ("scrampass", "scram-sha-256"),
    "passuser": ("passpass", "scram-sha-256"),  # asked for cleartext by pg_hba
}
PG_HBA = """\
local all all trust
host  all postgres   127.0.0.1/32 trust
host  all md5user    127.0.0.1/32 md5
host  all scramuser  127.0.0.1/32 scram-sha-256
host  all passuser   127.0.0.1/32 password
host  all all        127.0.0.1/32 scram-sha-256
host  all postgres   ::1/128      trust
host  all all        ::1/128      scram-sha-256
"""

# Keep the caller's libpq settings out of every client and server we start.
for _var in list(os.environ):
    if _var.startswith("PG") and _var not in ("PGBUN_BIN", "PGBUN_ADMIN_BIN", "PGBUN_LOADTEST_BIN", "PGBUN_SRCDIR",
                                             "PGBUN_TEST_PEER",
                                             "PGBUN_TEST_USER", "PGBUN_TEST_TIMEOUT",
                                             "PGBUN_TEST_KEEP", "PGBUN_TEST_WORKERS", "PGBUN_TEST_SAMPLE",
                                             "PGBUN_TEST_TMPDIR",
                                             "PGBUN_SKIP_INTEGRATION",
                                             "PG_BINDIR"):
        del os.environ[_var]
os.environ["PGCONNECT_TIMEOUT"] = "10"
# Variables pgbun itself reads: never leak them from the test environment.
PGBUN_ENV_VARS = ("POOL_MODE", "SERVER_HOST", "SERVER_PORT", "MAX_CLIENT_CONN",
                  "DEFAULT_POOL_SIZE", "LISTEN_ADDR", "LISTEN_PORT")


# ------------------------------------------------------------------ helpers

def free_port():
    """A TCP port nobody listens on right now (on 127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_accepts(host, port, timeout=0.2):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def processes_mentioning(text):
    """(pid, command line) of every process whose command line contains text."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append((int(pid), cmdline.strip()))
    return found


def is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def run_as_kwargs():
    """Popen arguments that run a child as the unprivileged test user."""
    if not RUN_USER:
        return {}
    pw = pwd.getpwnam(RUN_USER)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def make_tempdir(prefix):
    """A temp dir the test user owns (PostgreSQL and pgbun write into it)."""
    base = os.environ.get("PGBUN_TEST_TMPDIR") or None
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    if RUN_USER:
        pw = pwd.getpwnam(RUN_USER)
        os.chown(path, pw.pw_uid, pw.pw_gid)
    path.chmod(0o700)
    return path


def chown_to_run_user(path):
    if RUN_USER:
        pw = pwd.getpwnam(RUN_USER)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def run(cmd, timeout=60, check=True, as_run_user=False, **kw):
    """subprocess.run with a timeout, output captured as text."""
    extra = run_as_kwargs() if as_run_user else {}
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                         timeout=timeout, **extra, **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"{cmd} exited {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}")
    return res


def wait_until(predicate, timeout, interval=0.1, what="condition"):
    """Poll predicate() until it returns truthy; bounded. Returns its value."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - polling: keep the last error for the message
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last error: {last_exc!r}")


def pg_bindir():
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    candidates = []
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        try:
            candidates.append((float(Path(d).parent.name), Path(d)))
        except ValueError:
            pass
    if candidates:
        return max(candidates)[1]
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return Path(pg_ctl).parent
    pytest.fail("no PostgreSQL server binaries: install postgresql (scripts/deps)")


def _built(var, subdir, name):
    """A program of ours: $var, else in build/subdir (out of tree) or subdir (in tree)."""
    env = os.environ.get(var)
    candidates = [Path(env)] if env else [SRCDIR / "build" / subdir / name, SRCDIR / subdir / name]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    pytest.fail(f"{name} not found in {[str(c) for c in candidates]}: build it first or set {var}")


def admin_binary():
    return _built("PGBUN_ADMIN_BIN", "admin", "pgbun-admin")


def pgbun_binary():
    return _built("PGBUN_BIN", "src", "pgbun")


def loadtest_binary():
    return _built("PGBUN_LOADTEST_BIN", "loadtest", "pgbun-loadtest")


# ------------------------------------------------------------------ PostgreSQL

class Postgres:
    """A throwaway PostgreSQL cluster."""

    host = "127.0.0.1"

    def __init__(self, name="pg"):
        self.bindir = pg_bindir()
        self.base = make_tempdir(f"pgbun-{name}-")
        self.datadir = self.base / "data"
        self.sockdir = self.base / "sock"
        self.logfile = self.base / "postgres.log"
        self.port = free_port()
        self.running = False

    def _bin(self, name):
        return self.bindir / name

    def init(self):
        self.sockdir.mkdir()
        chown_to_run_user(self.sockdir)
        run([self._bin("initdb"), "-D", self.datadir, "-U", "postgres", "-A", "trust",
             "-E", "UTF8", "--locale=C", "--no-sync"],
            timeout=120, as_run_user=True, cwd=self.base)
        with open(self.datadir / "postgresql.conf", "a") as f:
            f.write(f"""
# pgbun integration tests
listen_addresses = '127.0.0.1'
port = {self.port}
unix_socket_directories = '{self.sockdir}'
max_connections = 100
shared_buffers = 32MB
fsync = off
synchronous_commit = off
full_page_writes = off
password_encryption = 'scram-sha-256'
log_connections = on
log_disconnections = on
log_line_prefix = '%m [%p] %u@%d '
""")
        (self.datadir / "pg_hba.conf").write_text(PG_HBA)
        self.start()
        run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.sockdir, "-p", self.port,
             "-U", "postgres", "-d", "postgres", "-f",
             SRCDIR / "docker-entrypoint-initdb.d" / "init.sql"], timeout=60)
        for role, (password, encryption) in ROLES.items():
            self.sql(f"SET password_encryption = '{encryption}'; "
                     f"CREATE ROLE {role} LOGIN PASSWORD '{password}'", dbname="postgres")
            self.sql(f"GRANT SELECT ON users, txn_log TO {role}")
        return self

    def init_or_clean_up(self, setup=None):
        """init(), then setup(self) if given; if either fails, print the server's log,
        destroy it and raise. Returns self, for a fixture to yield."""
        try:
            self.init()
            if setup is not None:
                setup(self)
        except BaseException:
            print(self.log_text())
            self.destroy()
            raise
        return self

    def start(self):
        run([self._bin("pg_ctl"), "-D", self.datadir, "-l", self.logfile, "-w", "-t", "30",
             "start"], timeout=60, as_run_user=True, cwd=self.base)
        self.running = True

    def stop(self, mode="fast"):
        run([self._bin("pg_ctl"), "-D", self.datadir, "-w", "-t", "30", "-m", mode, "stop"],
            timeout=60, as_run_user=True, cwd=self.base)
        self.running = False

    def destroy(self):
        if self.running:
            try:
                self.stop("immediate")
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass
        if not KEEP:
            shutil.rmtree(self.base, ignore_errors=True)

    def connect(self, dbname="pgbun_test", user="postgres", **kw):
        """A direct psycopg connection (unix socket, trust)."""
        return psycopg.connect(host=str(self.sockdir), port=self.port, dbname=dbname, user=user,
                               connect_timeout=10, autocommit=True, **kw)

    def sql(self, query, params=None, dbname="pgbun_test", user="postgres"):
        """Run one statement directly on PostgreSQL; rows of the result or None."""
        with self.connect(dbname=dbname, user=user) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else None

    def entry(self, dbname="pgbun_test", **kw):
        """A [databases] line value pointing at this server."""
        parts = [f"host={self.host}", f"port={self.port}"]
        if dbname is not None:
            parts.append(f"dbname={dbname}")
        parts += [f"{k}={v}" for k, v in kw.items()]
        return " ".join(parts)

    def log_text(self):
        try:
            return self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return ""


# ------------------------------------------------------------------ pgbun

def default_auth_file():
    """Users known to every pgbun started by the tests (PgBouncer's trust mode
    still wants the user in auth_file)."""
    users = {"postgres": "", "pgbun_user": "pgbun_pass"}
    users.update({role: password for role, (password, _) in ROLES.items()})
    return users


_LIVE_PROCS = []


def pytest_collection_modifyitems(config, items):
    """PGBUN_TEST_SAMPLE=N runs only the first N tests of each file: make distcheck's pass, which proves the
    tarball holds what every test file needs, after the full suite has run from the tree."""
    sample = int(os.environ.get("PGBUN_TEST_SAMPLE") or 0)
    if sample <= 0:
        return
    kept, dropped, seen = [], [], {}
    for item in items:
        n = seen[item.fspath] = seen.get(item.fspath, 0) + 1
        (kept if n <= sample else dropped).append(item)
    config.hook.pytest_deselected(items=dropped)
    items[:] = kept


def pytest_sessionfinish(session, exitstatus):
    """Last line of defence: kill any daemon a failed teardown left running."""
    for bun in _LIVE_PROCS:
        if bun.proc is not None and bun.proc.poll() is None:
            bun.proc.kill()
            bun.proc.wait(timeout=10)


class Pgbun:
    """One running pgbun (or PgBouncer, with PGBUN_TEST_PEER=pgbouncer)."""

    host = "127.0.0.1"

    def __init__(self, binary, workdir, port, config_path, env, args, run_user, extra_logs):
        self.binary = binary
        self.workdir = workdir
        self.unix_dir = str(workdir)
        self.port = port
        self.config_path = config_path
        self.env = env
        self.args = list(args)
        self.run_user = run_user
        self.stderr_path = workdir / "stderr.log"
        self.extra_logs = extra_logs
        self.proc = None
        self.returncode = None
        self.config = None
        self.nofile = None  # (soft, hard) RLIMIT_NOFILE at start, or None: inherited
        self.netns = None   # a network namespace to run in (by name), or None: this one
        self._conns = []
        self._wires = []

    # -------------------------------------------------------- lifecycle

    def command(self):
        cmd = [str(self.binary)] + self.args
        if self.config_path:
            cmd.append(str(self.config_path))
        if self.netns:
            # `ip netns exec` needs root: the run user is taken after it, by setpriv (both exec, keeping the pid).
            user = []
            if self.run_user:
                pw = pwd.getpwnam(self.run_user)
                user = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups"]
            cmd = ["ip", "netns", "exec", self.netns] + user + cmd
        return cmd

    def start(self):
        _LIVE_PROCS.append(self)
        extra = {}
        if self.run_user and not self.netns:
            pw = pwd.getpwnam(self.run_user)
            extra = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        if self.nofile is not None:
            soft, hard = self.nofile
            extra["preexec_fn"] = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=err,
                                         stderr=err, env=self.env, cwd=self.workdir,
                                         start_new_session=True, **extra)
        return self

    def wait_ready(self, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.expected_exit = None  # reported here; not again at teardown
                raise AssertionError(f"{self.binary.name} exited {self.proc.returncode} at start:\n"
                                     f"{self.log_text()}")
            # Accepting is not enough: another process may hold a port picked as free; pgbun says it started.
            if port_accepts(self.host, self.port) and (IS_PGBOUNCER or " started (pid " in self.log_text()):
                return self
            time.sleep(0.05)
        raise AssertionError(f"{self.binary.name} did not accept on port {self.port} within "
                             f"{timeout}s:\n{self.log_text()}")

    def close_clients(self):
        for c in self._conns:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - closing at teardown
                pass
        for w in self._wires:
            w.close()
        self._conns.clear()
        self._wires.clear()

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Stop the daemon (clients closed first); returns its exit code."""
        self.close_clients()
        if self.proc is None or self.returncode is not None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                self.returncode = self.proc.returncode
                raise AssertionError(f"{self.binary.name} did not exit within {timeout}s of "
                                     f"{sig.name}; killed.\n{self.log_text()}")
            finally:
                # Even when the per-test alarm interrupts the wait: no daemon outlives its test.
                if self.proc.poll() is None:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        self.returncode = self.proc.returncode
        return self.returncode

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self):
        text = ""
        for p in [self.stderr_path] + list(self.extra_logs):
            try:
                text += Path(p).read_text(errors="replace")
            except FileNotFoundError:
                pass
        return text

    def sanitizer_reports(self):
        text = self.log_text()
        return [m for m in SANITIZER_MARKERS if m in text]

    def non_json_log_lines(self):
        """With log_format = json (in the config it started with): the log lines that are not JSON objects.
        A daemon that never started may have said why on stderr, in plain words."""
        fmt = self.config.get("log_format") if self.config else None
        fmt = fmt or (self.env or {}).get("PGBUN_LOG_FORMAT")
        text = self.log_text()
        if IS_PGBOUNCER or str(fmt).lower() != "json" or " started (pid " not in text:
            return []
        bad = []
        for line in text.splitlines():
            try:
                if not isinstance(json.loads(line), dict):
                    bad.append(line)
            except ValueError:
                bad.append(line)
        return bad

    # -------------------------------------------------------- clients

    def connect(self, dbname="pgbun_test", user="postgres", **kw):
        """A psycopg connection through pgbun (TCP unless host= is given)."""
        kw.setdefault("host", self.host)
        kw.setdefault("port", self.port)
        kw.setdefault("connect_timeout", 10)
        kw.setdefault("autocommit", True)
        conn = psycopg.connect(dbname=dbname, user=user, **kw)
        self._conns.append(conn)
        return conn

    def wire(self, host=None, timeout=10):
        """A raw pgwire.Wire socket to pgbun."""
        w = pgwire.Wire(host or self.host, self.port, timeout=timeout)
        self._wires.append(w)
        return w

    def login(self, user="postgres", database="pgbun_test", password=None, params=None, **kw):
        """A raw wire connection, logged in (see pgwire.Wire.login)."""
        w = self.wire()
        w.login(user, database, password=password, params=params, **kw)
        return w

    def psql(self, args, host=None, input=None, timeout=30, check=True, env=None):
        """Run psql against pgbun; returns the CompletedProcess."""
        cmd = ["psql", "-X", "-h", host or self.host, "-p", str(self.port)] + [str(a) for a in args]
        penv = dict(os.environ, PGCONNECT_TIMEOUT="10", **(env or {}))
        res = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout,
                             env=penv)
        if check and res.returncode != 0:
            raise AssertionError(f"psql {args} exited {res.returncode}\n{res.stderr}")
        return res


def _ini_lines(section, config, databases, users):
    if TEST_WORKERS > 1 and "workers" not in config:
        config = {**config, "workers": TEST_WORKERS}
    lines = [f"[{section}]"]
    lines += [f"{k} = {v}" for k, v in config.items() if v is not None]
    lines += ["", "[databases]"]
    lines += [f"{k} = {v}" for k, v in databases.items()]
    if users:
        lines += ["", "[users]"]
        lines += [f"{k} = {v}" for k, v in users.items()]
    return "\n".join(lines) + "\n"


def write_auth_file(path, users):
    with open(path, "w") as f:
        for user, secret in users.items():
            u = user.replace('"', '""')
            s = secret.replace('"', '""')
            f.write(f'"{u}" "{s}"\n')
    chown_to_run_user(path)


def pgbun_env(extra=None):
    """The environment for the daemon: ours minus anything pgbun would read."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PGBUN_") and k not in PGBUN_ENV_VARS}
    env.update(extra or {})
    return env


# ------------------------------------------------------------------ fixtures

@pytest.fixture(autouse=True)
def _bounded_test(request):
    """Fail any test that runs longer than PGBUN_TEST_TIMEOUT seconds
    (or @pytest.mark.timeout(seconds)); pytest-timeout may not be installed."""
    marker = request.node.get_closest_marker("timeout")
    limit = int(marker.args[0]) if marker else TEST_TIMEOUT

    def on_alarm(signum, frame):
        pytest.fail(f"test exceeded {limit}s", pytrace=True)

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(limit)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="session")
def pg():
    server = Postgres("pg").init_or_clean_up()
    yield server
    server.destroy()


@pytest.fixture
def make_postgres():
    """A factory for a private PostgreSQL (for tests that stop/start it)."""
    servers = []

    def factory():
        server = Postgres("ownpg")
        servers.append(server)
        server.init()
        return server

    yield factory
    for server in servers:
        server.destroy()


@pytest.fixture
def pgbun_workdir():
    path = make_tempdir("pgbun-run-")
    yield path
    if not KEEP:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_pgbun(pg, pgbun_workdir, request):
    """Factory: start_pgbun(config, databases, users, auth_file, env, ...) -> Pgbun.

    config:     [pgbun] keys; listen_addr, listen_port, unix_socket_dir and
                auth_type = trust are filled in unless given (None drops a key)
    databases:  [databases] entries (default: pgbun_test on the `pg` server)
    users:      [users] entries
    auth_file:  {user: secret} written to userlist.txt (default: every test
                role with its plain password; False: no auth_file)
    env:        extra environment for the daemon (PGBUN_*, SERVER_HOST, ...)
    write_config=False runs it with no ini file (sidecar mode).
    nofile:     (soft, hard) RLIMIT_NOFILE for the daemon, set before it starts.
    netns:      (name, address): run in that network namespace (root only), listening on address.
    """
    binary = pgbun_binary()
    started = []
    counter = [0]

    def factory(config=None, databases=None, users=None, auth_file=None, env=None,
                write_config=True, args=(), wait=True, run_user=RUN_USER, section=None,
                port=None, nofile=None, netns=None, _attempt=1):
        counter[0] += 1
        workdir = pgbun_workdir / f"pgbun{counter[0]}"
        workdir.mkdir()
        chown_to_run_user(workdir)
        listen_port = port or free_port()
        cfg = {
            "listen_addr": netns[1] if netns else "127.0.0.1",
            "listen_port": listen_port,
            "unix_socket_dir": str(workdir),
            "auth_type": "trust",
        }
        if IS_PGBOUNCER:
            cfg["server_login_retry"] = 1
        if auth_file is not False:
            secrets = default_auth_file() if auth_file is None else auth_file
            write_auth_file(workdir / "userlist.txt", secrets)
            cfg["auth_file"] = str(workdir / "userlist.txt")
        cfg.update(config or {})
        if databases is None:
            databases = {"pgbun_test": pg.entry()}
        config_path = None
        if not write_config and TEST_WORKERS > 1 and "PGBUN_WORKERS" not in (env or {}):
            env = {**(env or {}), "PGBUN_WORKERS": str(TEST_WORKERS)}
        if write_config:
            config_path = workdir / "pgbun.ini"
            sect = section or ("pgbouncer" if IS_PGBOUNCER else "pgbun")
            config_path.write_text(_ini_lines(sect, cfg, databases, users))
            chown_to_run_user(config_path)
        extra_logs = [cfg["logfile"]] if cfg.get("logfile") else []
        bun = Pgbun(binary, workdir, int(cfg.get("listen_port") or listen_port), config_path,
                    pgbun_env(env), args, run_user, extra_logs)
        if not write_config:
            bun.unix_dir = (env or {}).get("PGBUN_UNIX_SOCKET_DIR", "/tmp")
        if env and env.get("PGBUN_LISTEN_PORT"):
            bun.port = int(env["PGBUN_LISTEN_PORT"])
        elif env and env.get("LISTEN_PORT"):
            bun.port = int(env["LISTEN_PORT"])
        bun.config = cfg
        bun.nofile = nofile
        if netns:
            bun.netns, bun.host = netns
        started.append(bun)
        bun.start()
        if wait:
            try:
                bun.wait_ready()
            except AssertionError:
                # A port picked as free can be taken (an outgoing connection's ephemeral port) before pgbun binds it.
                picked = port is None and "listen_port" not in (config or {}) and write_config
                if not (picked and _attempt < 3 and bun.proc.poll() is not None
                        and "Address already in use" in bun.log_text()):
                    raise
                started.remove(bun)
                return factory(config, databases, users, auth_file, env, write_config, args, wait, run_user,
                               section, port, nofile, netns, _attempt + 1)
        return bun

    yield factory

    problems = []
    for bun in started:
        try:
            rc = bun.stop()
        except AssertionError as exc:
            problems.append(str(exc))
            continue
        expected = getattr(bun, "expected_exit", 0)
        if IS_PGBOUNCER and rc in (1, -signal.SIGTERM) and "got SIGTERM, fast exit" in bun.log_text():
            rc = 0  # PgBouncer 1.18 exits 1 on SIGTERM ("fast exit")
        if rc is not None and expected is not None and rc != expected:
            problems.append(f"{bun.binary.name} exited {rc} (expected {expected}) on SIGTERM:\n"
                            f"{bun.log_text()[-4000:]}")
        reports = bun.sanitizer_reports()
        if reports:
            problems.append(f"sanitizer report ({', '.join(reports)}) in the log:\n"
                            f"{bun.log_text()[-8000:]}")
        bad = bun.non_json_log_lines()
        if bad:
            problems.append(f"log_format = json, but {len(bad)} log lines are not JSON objects, first:\n"
                            + "\n".join(bad[:5]))
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def bun(start_pgbun):
    """pgbun with the defaults: trust, session pooling, pgbun_test on `pg`."""
    return start_pgbun()


def error_fields(exc):
    """(sqlstate, message) of a psycopg error, whether or not it carries diag."""
    diag = getattr(exc, "diag", None)
    sqlstate = getattr(exc, "sqlstate", None) or (diag.sqlstate if diag else None)
    return sqlstate, str(exc)


def backend_pid(conn):
    """The PostgreSQL backend serving a connection through pgbun."""
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def _holders(bun):
    """Two clients of bun; each holds one of the pool's two servers once it runs a query."""
    return bun.connect(autocommit=False, prepare_threshold=None), bun.connect(autocommit=False,
                                                                               prepare_threshold=None)


def server_pids(bun):
    """The backend pids of the two servers of bun's pool (pool size 2; opened if need be)."""
    h1, h2 = _holders(bun)
    try:
        pids = (backend_pid(h1), backend_pid(h2))
    finally:
        h1.rollback()
        h2.rollback()
    assert pids[0] != pids[1]
    return pids


def on_server(bun, pid, run):
    """run() while the server of backend pid is the pool's only idle one: two holders take both
    servers in a transaction and the one to use is let go (transaction mode, pool size 2)."""
    h1, h2 = _holders(bun)
    try:
        p1, p2 = backend_pid(h1), backend_pid(h2)
        assert pid in (p1, p2), f"backend {pid} is not one of the pool's servers {p1}, {p2}"
        (h1 if p1 == pid else h2).rollback()
        return run()
    finally:
        h1.rollback()
        h2.rollback()
        h1.close()
        h2.close()


def in_thread(fn):
    """Runs fn in a daemon thread; returns (thread, result dict with "value" or "error")."""
    result = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, result


def console_rows(bun, what, user="postgres"):
    """SHOW <what> on pgbun's console, as dicts (the user must be in admin_users or stats_users)."""
    with bun.connect(dbname="pgbun", user=user) as admin:
        cur = admin.execute(f"SHOW {what}")
        cols = [d.name for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]


def server_backends(pg, dbname="pgbun_test"):
    """Client backends PostgreSQL has on dbname, not counting this query's own
    nor those of earlier calls: a closed connection's backend stays in
    pg_stat_activity until it has exited, which a busy machine delays."""
    with pg.connect(application_name="pgbun-test-server-backends") as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                            "AND backend_type = 'client backend' "
                            "AND application_name <> 'pgbun-test-server-backends'",
                            (dbname,)).fetchone()[0]


def local_ports_to(pid, port):
    """Local ports of the TCP connections process pid holds to remote port, as
    the kernel sees them (/proc: its socket fds matched against /proc/net/tcp
    and tcp6)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue  # closed meanwhile
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except FileNotFoundError:
        return set()
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if remote_port == port and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def sockets_to_port(pid, port):
    """How many TCP connections process pid holds to remote port."""
    return len(local_ports_to(pid, port))


def backend_ports(conn, dbname="pgbun_test", user=None):
    """The client ports of the client backends PostgreSQL lists on dbname (of
    user, if given), not counting conn's own."""
    return [r[0] for r in conn.execute(
        "SELECT client_port FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend' "
        "AND pid <> pg_backend_pid() AND (%s::text IS NULL OR usename = %s)", (dbname, user, user))]


def held_backends(ports, pid, pg):
    """How many of the backends listed by ports (backend_ports) are on a
    connection process pid still holds. A backend outlives its closed
    connection until it notices and exits: a few ms, longer on a busy
    machine. List the backends first, then call this: a connection closed in
    between is not counted, and one opened in between was not listed."""
    held = local_ports_to(pid, pg.port)
    return sum(1 for p in ports if p in held)


NODE_PG_VERSION = "8.13.1"


@pytest.fixture(scope="session")
def node_pg():
    """node-postgres installed once into a cache outside the source tree; returns
    the node_modules directory. Fails (not skips) without node or npm."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(f"node-postgres tests need node and npm on PATH (node: {node}, npm: {npm}); "
                    "install nodejs and npm", pytrace=False)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pgbun-tests"
    prefix = cache / f"node-pg-{NODE_PG_VERSION}"
    manifest = prefix / "node_modules" / "pg" / "package.json"

    def installed():
        try:
            return json.loads(manifest.read_text()).get("version") == NODE_PG_VERSION
        except (OSError, ValueError):
            return False

    if not installed():
        prefix.mkdir(parents=True, exist_ok=True)
        try:
            res = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix),
                                  f"pg@{NODE_PG_VERSION}"], capture_output=True, text=True, timeout=300,
                                 cwd=str(prefix))
        except subprocess.TimeoutExpired:
            pytest.fail(f"npm install pg@{NODE_PG_VERSION} took more than 300 s", pytrace=False)
        if res.returncode != 0 or not installed():
            pytest.fail(f"npm install pg@{NODE_PG_VERSION} into {prefix} failed ({res.returncode}):\n"
                        f"{res.stdout}\n{res.stderr}", pytrace=False)
    return prefix / "node_modules"
