"""Fixtures for the container tests: the compose stack, built and run for real.

tests/containers/containers.test (run by `make check`) starts a Docker engine
when none runs, makes the base and PostgreSQL images where no registry serves
them (tests/containers/images) and then runs these tests. Each stack runs from
a copy of the source tree (the tests edit files in it), under a project name
of its own, with pgbun published on a free port of 127.0.0.1; it is taken down
with `down -v` at the end, whatever happened.

Environment:
  PGBUN_BASE_IMAGE   the image the builds start from (as in docker-compose.yml)
  PGBUN_PG_IMAGE     the PostgreSQL image
  PGBUN_ADMIN_BIN    pgbun-admin on the host (default: <srcdir>/build/admin/pgbun-admin)
  PGBUN_SRCDIR       the source tree (default: two levels up from here)
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

HERE = Path(__file__).resolve().parent
SRCDIR = Path(os.environ.get("PGBUN_SRCDIR") or HERE.parents[1]).resolve()
# Debian's docker client (the engine's own version) before any other on PATH.
PATH = "/usr/sbin:/usr/bin:/sbin:/bin:" + os.environ.get("PATH", "")
USER, PASSWORD, DBNAME = "pgbun_user", "pgbun_pass", "pgbun_test"
POOL_SIZE = 20
TEST_TIMEOUT = 600

# What the copy of the tree leaves out: build output, local settings, VCS.
TOP_IGNORE = {".git", ".pgbun-dev", "metrics", ".env", "autom4te.cache"}
ANY_IGNORE = shutil.ignore_patterns("*.o", "*.a", "*.trs", "*.log", "__pycache__", ".deps")


def copy_ignore(directory, names):
    ignored = set(ANY_IGNORE(directory, names))
    if Path(directory).resolve() == SRCDIR:
        ignored |= {n for n in names if n in TOP_IGNORE or n == "build" or n.startswith("build-")
                    or n.startswith("pgbun-")}
    return ignored


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _time_limit(request):
    """Every test is bounded: SIGALRM fails it after TEST_TIMEOUT seconds."""
    def on_alarm(signum, frame):
        raise TimeoutError(f"{request.node.name} took more than {TEST_TIMEOUT}s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TEST_TIMEOUT)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def images():
    env = {}
    for name in ("PGBUN_BASE_IMAGE", "PGBUN_PG_IMAGE"):
        if not os.environ.get(name):
            pytest.fail(f"{name} is not set: run tests/containers/containers.test, or "
                        "eval \"$(tests/containers/images)\" first")
        env[name] = os.environ[name]
    return env


class Stack:
    """One compose project, run from its own copy of the tree."""

    def __init__(self, name, files, env):
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        self.tree = self.tmp / "tree"
        shutil.copytree(SRCDIR, self.tree, ignore=copy_ignore, symlinks=True)
        (self.tree / "metrics").mkdir()
        # containers.test names the run, to find what a run left behind.
        self.project = f"{name}-{os.environ.get('PGBUN_CONTAINERS_RUN') or os.getpid()}"
        self.files = files
        self.port = free_port()
        self.env = dict(os.environ, PATH=PATH, PGBUN_PORT=str(self.port), **images(), **env)
        for k in ("COMPOSE_FILE", "COMPOSE_PROJECT_NAME", "DOCKER_HOST"):
            if k in env:
                self.env[k] = env[k]
            else:
                self.env.pop(k, None)

    def compose_args(self, *args):
        out = ["docker-compose", "--ansi", "never", "-p", self.project]
        for f in self.files:
            out += ["-f", str(self.tree / f)]
        return out + list(args)

    def compose(self, *args, timeout=300, check=True):
        p = subprocess.run(self.compose_args(*args), cwd=self.tree, env=self.env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} exited {p.returncode}:\n"
                                 f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
        return p

    def docker(self, *args, timeout=120, check=True):
        p = subprocess.run(["docker", *args], env=self.env, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {p.returncode}:\n{p.stderr[-3000:]}")
        return p

    def container(self, service):
        return self.compose("ps", "-q", service).stdout.strip()

    def logs(self, service):
        return self.compose("logs", "--no-color", service, check=False).stdout

    def health(self, service):
        cid = self.container(service)
        if not cid:
            return "missing"
        return self.docker("inspect", "-f", "{{.State.Health.Status}}", cid).stdout.strip()

    def wait_healthy(self, service, timeout=180):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.health(service) == "healthy":
                return
            time.sleep(1)
        raise AssertionError(f"{service} not healthy within {timeout}s:\n{self.logs(service)[-3000:]}")

    def superuser_sql(self, *statements):
        """Runs statements in the postgres container as its superuser, on DBNAME."""
        args = ["exec", "-T", "postgres", "psql", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", DBNAME]
        for statement in statements:
            args += ["-c", statement]
        return self.compose(*args)

    def connect(self, dbname=DBNAME, user=USER, password=PASSWORD, **kw):
        return psycopg.connect(host="127.0.0.1", port=self.port, dbname=dbname, user=user,
                               password=password, connect_timeout=10, autocommit=True, **kw)

    def down(self):
        """Everything goes, volumes too; then the copy of the tree."""
        try:
            self.compose("down", "-v", "--remove-orphans", "--timeout", "20", timeout=180, check=False)
        finally:
            # The test-runner writes its metrics as root: remove as we are.
            shutil.rmtree(self.tmp, ignore_errors=True)


def start_stack(request, name, files, env, services):
    stack = Stack(name, files, env)
    request.addfinalizer(stack.down)
    stack.compose("up", "-d", "--build", timeout=900)
    for service in services:
        stack.wait_healthy(service)
    return stack


@pytest.fixture(scope="module")
def stack(request):
    """docker-compose.yml as users run it. Two variables differ from the
    defaults: MAX_CLIENT_CONN leaves room for 1,000 idle clients plus the
    console, and a short server_idle_timeout gives the idle scenario a
    timeout to cross."""
    return start_stack(request, "pgbun-stack", ["docker-compose.yml"],
                       {"MAX_CLIENT_CONN": "1100", "PGBUN_SERVER_IDLE_TIMEOUT": "2"},
                       ["postgres", "pgbun"])


@pytest.fixture(scope="module")
def dev_stack(request):
    """docker-compose.yml with docker-compose.dev.yml: pgbun rebuilt and
    restarted by docker/dev-watch when the mounted sources change."""
    return start_stack(request, "pgbun-dev", ["docker-compose.yml", "docker-compose.dev.yml"],
                       {"DEV_INTERVAL": "1"}, ["postgres", "pgbun"])


def admin_bin():
    path = os.environ.get("PGBUN_ADMIN_BIN") or str(SRCDIR / "build" / "admin" / "pgbun-admin")
    if not os.access(path, os.X_OK):
        pytest.fail(f"no pgbun-admin at {path} (build it, or set PGBUN_ADMIN_BIN)")
    return path


def show(conn, command):
    """A console SHOW as a list of {column: value}."""
    cur = conn.execute(command)
    cols = [d.name for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]
