"""Configuration: file, environment, sidecar mode, errors, root, pidfile, flags."""

import os
import pwd
import re
import signal
import subprocess
import threading
import time

import pytest

from conftest import (IS_PGBOUNCER, backend_pid, IS_ROOT, RUN_USER, chown_to_run_user, free_port,
                      pgbun_binary, pgbun_env, port_accepts, run_as_kwargs, wait_until)

SECTION = "pgbouncer" if IS_PGBOUNCER else "pgbun"


def run_pgbun(args, cwd, env=None, as_root=False, timeout=15):
    """Run the daemon expecting it to exit by itself; killed if it does not."""
    extra = {} if as_root else run_as_kwargs()
    proc = subprocess.Popen([str(pgbun_binary())] + [str(a) for a in args], cwd=cwd,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=pgbun_env(env),
                            start_new_session=True, **extra)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=10)
        raise AssertionError(f"pgbun {args} kept running for {timeout}s; output:\n{out}")
    return proc.returncode, out



def waits_for_a_second_server(bun):
    """True when a second concurrent client has to wait (pool of one)."""
    a = bun.connect()
    backend_pid(a)
    result = {}

    def second():
        with bun.connect() as b:
            result["pid"] = backend_pid(b)

    t = threading.Thread(target=second, daemon=True)
    t.start()
    t.join(1.0)
    waited = t.is_alive()
    a.close()
    t.join(10)
    return waited and "pid" in result


def test_env_var_beats_the_config_file(start_pgbun):
    file_port, env_port = free_port(), free_port()
    bun = start_pgbun(config={"listen_port": file_port},
                      env={"PGBUN_LISTEN_PORT": str(env_port)})
    assert bun.port == env_port
    with bun.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert not port_accepts("127.0.0.1", file_port)


def test_pgbun_env_pool_size_beats_the_file(start_pgbun):
    bun = start_pgbun(config={"default_pool_size": 20}, env={"PGBUN_DEFAULT_POOL_SIZE": "1"})
    assert waits_for_a_second_server(bun)


def test_container_env_default_pool_size_is_read(start_pgbun):
    bun = start_pgbun(config={"default_pool_size": None}, env={"DEFAULT_POOL_SIZE": "1"})
    assert waits_for_a_second_server(bun)


def test_file_pool_size_applies_without_env(start_pgbun):
    bun = start_pgbun(config={"default_pool_size": 1})
    assert waits_for_a_second_server(bun)


def test_sidecar_mode_without_a_file_forwards_every_database(start_pgbun, pg, pgbun_workdir):
    port = free_port()
    bun = start_pgbun(write_config=False, auth_file=False, env={
        "SERVER_HOST": "127.0.0.1",
        "SERVER_PORT": str(pg.port),
        "LISTEN_ADDR": "127.0.0.1",
        "LISTEN_PORT": str(port),
        "PGBUN_AUTH_TYPE": "trust", "PGBUN_AUTH_TRUST_ANY_USER": "1",
        "PGBUN_UNIX_SOCKET_DIR": str(pgbun_workdir),
    })
    assert bun.port == port
    for db in ("pgbun_test", "postgres"):
        with bun.connect(dbname=db) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (db,)


def test_sidecar_pool_mode_env_is_accepted(start_pgbun, pg, pgbun_workdir):
    port = free_port()
    bun = start_pgbun(write_config=False, auth_file=False, env={
        "SERVER_HOST": "127.0.0.1", "SERVER_PORT": str(pg.port), "LISTEN_PORT": str(port),
        "POOL_MODE": "session", "MAX_CLIENT_CONN": "50", "DEFAULT_POOL_SIZE": "1",
        "PGBUN_AUTH_TYPE": "trust", "PGBUN_AUTH_TRUST_ANY_USER": "1", "PGBUN_UNIX_SOCKET_DIR": str(pgbun_workdir),
    })
    assert waits_for_a_second_server(bun)


@pytest.mark.parametrize("section", ["pgbun", "pgbouncer"])
def test_pgbun_and_pgbouncer_section_names_are_both_accepted(start_pgbun, section):
    if IS_PGBOUNCER and section == "pgbun":
        pytest.skip("PgBouncer knows only [pgbouncer]")
    bun = start_pgbun(section=section)
    with bun.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


BAD_LINES = [
    ("listen_port", "listen_port = not_a_number"),
    ("pool_mode", "pool_mode = sometimes"),
    ("auth_type", "auth_type = telepathy"),
    ("default_pool_size", "default_pool_size = -x"),
]


@pytest.mark.parametrize("key,line", BAD_LINES, ids=[k for k, _ in BAD_LINES])
def test_config_error_exits_non_zero_naming_file_line_and_key(pgbun_workdir, key, line):
    ini = pgbun_workdir / "broken.ini"
    ini.write_text(f"[{SECTION}]\n"
                   "listen_addr = 127.0.0.1\n"
                   f"listen_port = {free_port()}\n"
                   f"unix_socket_dir = {pgbun_workdir}\n"
                   f"{line}\n"
                   "\n[databases]\n* = host=127.0.0.1 port=5432\n")
    chown_to_run_user(ini)
    rc, out = run_pgbun([ini], cwd=pgbun_workdir)
    assert rc != 0, out
    assert str(ini) in out or ini.name in out, f"file not named:\n{out}"
    assert re.search(r"\b5\b", out), f"line 5 not named:\n{out}"
    assert key in out, f"key not named:\n{out}"


def test_config_syntax_error_names_the_line(pgbun_workdir):
    ini = pgbun_workdir / "syntax.ini"
    ini.write_text(f"[{SECTION}]\nlisten_addr = 127.0.0.1\nthis line has no equals sign\n")
    chown_to_run_user(ini)
    rc, out = run_pgbun([ini], cwd=pgbun_workdir)
    assert rc != 0, out
    assert ini.name in out and re.search(r"\b3\b", out), out


def test_missing_config_file_is_an_error(pgbun_workdir):
    missing = pgbun_workdir / "does-not-exist.ini"
    rc, out = run_pgbun([missing], cwd=pgbun_workdir)
    assert rc != 0
    assert "does-not-exist.ini" in out


@pytest.mark.skipif(not IS_ROOT, reason="only meaningful when the tests run as root")
def test_refuses_to_run_as_root_without_user_setting(pgbun_workdir, pg):
    ini = pgbun_workdir / "root.ini"
    ini.write_text(f"[{SECTION}]\nlisten_addr = 127.0.0.1\nlisten_port = {free_port()}\n"
                   f"unix_socket_dir = {pgbun_workdir}\nauth_type = trust\nauth_trust_any_user = 1\n"
                   f"\n[databases]\n* = host=127.0.0.1 port={pg.port}\n")
    rc, out = run_pgbun([ini], cwd=pgbun_workdir, as_root=True)
    assert rc != 0, out
    assert "root" in out.lower(), out


@pytest.mark.skipif(not IS_ROOT, reason="only meaningful when the tests run as root")
def test_root_with_user_setting_drops_to_that_user(start_pgbun):
    # LeakSanitizer cannot inspect a process that changed its uid: leaks are
    # checked by every other test.
    bun = start_pgbun(config={"user": RUN_USER}, run_user=None,
                      env={"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0"})
    uid = pwd.getpwnam(RUN_USER).pw_uid

    def uids():
        with open(f"/proc/{bun.proc.pid}/status") as f:
            return [int(u) for u in next(line for line in f if line.startswith("Uid:")).split()[1:]]

    # The port accepts as soon as it is bound, which is just before the switch.
    wait_until(lambda: all(u == uid for u in uids()), timeout=10,
               what=f"pgbun to run as uid {uid} (uids now {uids()})")
    with bun.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_pidfile_is_written(start_pgbun, pgbun_workdir):
    pidfile = pgbun_workdir / "pgbun.pid"
    bun = start_pgbun(config={"pidfile": str(pidfile)})
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=5,
               what="the pidfile")
    assert int(pidfile.read_text().strip()) == bun.proc.pid


def test_logfile_receives_connection_events(start_pgbun, pgbun_workdir):
    logfile = pgbun_workdir / "pgbun.log"
    bun = start_pgbun(config={"logfile": str(logfile)})
    with bun.connect(application_name="log-test") as conn:
        conn.execute("SELECT 1")
    wait_until(lambda: logfile.exists() and "pgbun_test" in logfile.read_text(), timeout=5,
               what="a connection event in the logfile")


def test_empty_unix_socket_dir_disables_the_unix_socket(start_pgbun):
    bun = start_pgbun(config={"unix_socket_dir": '""' if IS_PGBOUNCER else ""})
    with bun.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert not (bun.workdir / f".s.PGSQL.{bun.port}").exists()


def test_unix_socket_is_created_in_unix_socket_dir(bun):
    assert (bun.workdir / f".s.PGSQL.{bun.port}").exists()


def test_version_flag_prints_a_version_and_exits_zero(pgbun_workdir):
    rc, out = run_pgbun(["-V"], cwd=pgbun_workdir)
    assert rc == 0, out
    assert re.search(r"\d+\.\d+", out), out


def test_help_flag_prints_usage_and_exits_zero(pgbun_workdir):
    rc, out = run_pgbun(["-h"], cwd=pgbun_workdir)
    assert rc == 0, out
    assert "usage" in out.lower(), out


def test_sigterm_with_no_clients_exits_zero_promptly(start_pgbun):
    bun = start_pgbun()
    with bun.connect() as conn:
        conn.execute("SELECT 1")
    start = time.monotonic()
    rc = bun.stop(signal.SIGTERM)
    if IS_PGBOUNCER:
        rc = 0 if rc == 1 else rc
    assert rc == 0, bun.log_text()
    assert time.monotonic() - start < 5
