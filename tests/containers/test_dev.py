"""Development mode (docker-compose.yml + docker-compose.dev.yml) for real:
docker/dev-watch in pgbun's container rebuilds and restarts pgbun when a
mounted source file changes, keeps the running pgbun through a broken edit,
and passes SIGHUP on to pgbun, which reloads without dropping its clients."""

import re
import time

import psycopg
import pytest

from conftest import DBNAME

REBUILD_TIMEOUT = 300


def wait_for_log(stack, pattern, timeout=REBUILD_TIMEOUT, since=0):
    """Waits until pgbun's container log, past offset `since`, matches pattern."""
    deadline = time.monotonic() + timeout
    while True:
        logs = stack.logs("pgbun")
        if re.search(pattern, logs[since:]):
            return logs
        if time.monotonic() > deadline:
            raise AssertionError(f"no {pattern!r} in pgbun's log within {timeout}s:\n{logs[-4000:]}")
        time.sleep(1)


def started_pids(logs):
    return re.findall(r"dev-watch: pgbun started \(pid (\d+)\)", logs)


def test_dev_watch_runs_pgbun_from_the_mounted_tree(dev_stack):
    logs = wait_for_log(dev_stack, r"dev-watch: pgbun started \(pid \d+\)")
    assert "dev-watch: building /src in /src/build" in logs
    with dev_stack.connect() as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (DBNAME,)


def test_sighup_reaches_pgbun_and_reloads_without_dropping_clients(dev_stack):
    name, password = "pgbun_dev_hup_user", "dev-hup-pass"
    dev_stack.superuser_sql(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
    pids = started_pids(dev_stack.logs("pgbun"))
    with dev_stack.connect() as held:
        held.execute("BEGIN")
        backend = held.execute("SELECT pg_backend_pid()").fetchone()[0]
        with pytest.raises(psycopg.OperationalError):
            dev_stack.connect(user=name, password=password)
        with open(dev_stack.tree / "docker" / "userlist.txt", "a") as f:
            f.write(f'"{name}" "{password}"\n')
        since = len(dev_stack.logs("pgbun"))
        dev_stack.compose("kill", "-s", "HUP", "pgbun")
        wait_for_log(dev_stack, r"configuration reloaded", timeout=30, since=since)
        with dev_stack.connect(user=name, password=password) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (name,)
        assert held.execute("SELECT pg_backend_pid()").fetchone() == (backend,)
        held.execute("COMMIT")
    logs = dev_stack.logs("pgbun")
    assert "SIGHUP: passed on to pgbun" in logs
    assert started_pids(logs) == pids  # reloaded, not restarted
    assert password not in logs


def test_a_source_edit_is_rebuilt_and_restarted(dev_stack):
    main_c = dev_stack.tree / "src" / "main.c"
    text = main_c.read_text()
    marker = f"edited by the dev-mode test {int(time.time())}"
    assert text.count(", sidecar: no config file") == 2
    since = len(dev_stack.logs("pgbun"))
    main_c.write_text(text.replace(", sidecar: no config file", f", sidecar: no config file, {marker}"))
    logs = wait_for_log(dev_stack, re.escape(marker), since=since)
    assert "dev-watch: sources changed: rebuilding" in logs[since:]
    assert "dev-watch: stopping pgbun" in logs[since:]
    with dev_stack.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_broken_edit_keeps_the_running_pgbun(dev_stack):
    main_c = dev_stack.tree / "src" / "main.c"
    good = main_c.read_text()
    logs = dev_stack.logs("pgbun")
    pids = started_pids(logs)
    with dev_stack.connect() as held:
        held.execute("BEGIN")
        backend = held.execute("SELECT pg_backend_pid()").fetchone()[0]
        since = len(logs)
        main_c.write_text(good + "\n#error broken on purpose by the dev-mode test\n")
        logs = wait_for_log(dev_stack, r"dev-watch: the build failed", since=since)
        # The compiler's error is in the container's log.
        assert "broken on purpose by the dev-mode test" in logs[since:]
        assert "keeps running the previous build" in logs[since:]
        # The previous build still serves, its clients and new ones.
        assert held.execute("SELECT pg_backend_pid()").fetchone() == (backend,)
        with dev_stack.connect() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        held.execute("COMMIT")
    assert started_pids(dev_stack.logs("pgbun")) == pids
    main_c.write_text(good)
