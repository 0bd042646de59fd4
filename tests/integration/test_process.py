"""Process-level behaviour: client limits, SIGHUP reload, daemon mode."""

import os
import signal
import subprocess
import time

import psycopg
import pytest

from conftest import (IS_PGBOUNCER, IS_ROOT, RUN_USER, _ini_lines, backend_pid, chown_to_run_user, error_fields, free_port, pgbun_binary,
                      pgbun_env, port_accepts, run_as_kwargs, wait_until, write_auth_file)

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="pgbun's own process behaviour")


def rewrite_config(bun, config, databases):
    bun.config_path.write_text(_ini_lines("pgbun", config, databases, None))
    chown_to_run_user(bun.config_path)


def base_config(bun, **extra):
    cfg = {"listen_addr": "127.0.0.1", "listen_port": bun.port, "unix_socket_dir": bun.unix_dir,
           "auth_file": str(bun.workdir / "userlist.txt")}
    cfg.update(extra)
    return cfg


def test_client_past_max_client_conn_gets_53300_naming_the_limit(start_pgbun):
    bun = start_pgbun(config={"max_client_conn": 2})
    a = bun.connect()
    b = bun.connect()
    with pytest.raises(psycopg.OperationalError) as err:
        bun.connect()
    sqlstate, text = error_fields(err.value)
    assert "max_client_conn" in text, text
    if sqlstate is not None:
        assert sqlstate == "53300"
    assert a.execute("SELECT 1").fetchone() == (1,)
    b.close()
    # a slot is free again
    with bun.connect() as c:
        assert c.execute("SELECT 2").fetchone() == (2,)


def test_sighup_reloads_auth_file_and_config(start_pgbun, pg):
    bun = start_pgbun(config={"auth_type": "plain"}, auth_file={"postgres": "old"})
    with pytest.raises(psycopg.OperationalError):
        bun.connect(password="new")
    write_auth_file(bun.workdir / "userlist.txt", {"postgres": "new"})
    os.kill(bun.proc.pid, signal.SIGHUP)
    wait_until(lambda: "configuration reloaded" in bun.log_text(), timeout=10,
               what="the reload to be logged")
    with bun.connect(password="new") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_invalid_config_on_reload_keeps_the_running_one(start_pgbun, pg):
    bun = start_pgbun()
    conn = bun.connect()
    bun.config_path.write_text("[pgbun]\nlisten_port = not-a-number\n")
    os.kill(bun.proc.pid, signal.SIGHUP)
    wait_until(lambda: "reload failed" in bun.log_text(), timeout=10,
               what="the failed reload to be logged")
    assert "listen_port" in bun.log_text()
    assert conn.execute("SELECT 1").fetchone() == (1,)
    with bun.connect() as other:
        assert other.execute("SELECT 2").fetchone() == (2,)


def test_reload_changes_pool_mode_for_existing_pools(start_pgbun, pg):
    bun = start_pgbun(config={"default_pool_size": 1})
    with bun.connect() as conn:
        conn.execute("SELECT 1")
    rewrite_config(bun, base_config(bun, auth_type="trust", default_pool_size=1,
                                    pool_mode="transaction"), {"pgbun_test": pg.entry()})
    os.kill(bun.proc.pid, signal.SIGHUP)
    wait_until(lambda: "configuration reloaded" in bun.log_text(), timeout=10,
               what="the reload to be logged")
    # Transaction mode with one server: two clients alternate on it, neither waits for the
    # other to disconnect.
    a, b = bun.connect(), bun.connect()
    pid_a = a.execute("SELECT pg_backend_pid()").fetchone()[0]
    pid_b = b.execute("SELECT pg_backend_pid()").fetchone()[0]
    assert pid_a == pid_b


def test_daemon_mode_detaches_writes_pidfile_and_stops_on_sigterm(pgbun_workdir, pg):
    workdir = pgbun_workdir / "daemon"
    workdir.mkdir()
    chown_to_run_user(workdir)
    port = free_port()
    pidfile, logfile = workdir / "pgbun.pid", workdir / "pgbun.log"
    ini = workdir / "pgbun.ini"
    ini.write_text(_ini_lines("pgbun", {
        "listen_addr": "127.0.0.1", "listen_port": port, "unix_socket_dir": str(workdir),
        "auth_type": "trust", "auth_trust_any_user": 1, "pidfile": str(pidfile), "logfile": str(logfile)},
        {"pgbun_test": pg.entry()}, None))
    chown_to_run_user(ini)
    res = subprocess.run([str(pgbun_binary()), "-d", str(ini)], env=pgbun_env(), cwd=workdir,
                         capture_output=True, text=True, timeout=15, **run_as_kwargs())
    assert res.returncode == 0, res.stderr
    wait_until(lambda: pidfile.exists() and port_accepts("127.0.0.1", port), timeout=10,
               what="the daemon to write its pidfile and listen")
    pid = int(pidfile.read_text())
    try:
        with psycopg.connect(host="127.0.0.1", port=port, dbname="pgbun_test", user="postgres",
                             connect_timeout=10) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        logins = [l for l in logfile.read_text().splitlines() if "login succeeded" in l]
        # lines written after the fork carry the daemon's pid, not its parent's
        assert logins and all(f" {pid} LOG " in l for l in logins), logins
    finally:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
            pytest.fail("the daemon did not stop within 15 s of SIGTERM")
    assert not pidfile.exists(), "the pidfile was left behind"
    text = logfile.read_text()
    assert "stopped" in text
    for marker in ("AddressSanitizer", "runtime error:"):
        assert marker not in text


def test_sigterm_waits_for_connected_clients_then_exits(start_pgbun):
    bun = start_pgbun()
    conn = bun.connect()
    assert conn.execute("SELECT 1").fetchone() == (1,)
    os.kill(bun.proc.pid, signal.SIGTERM)
    wait_until(lambda: not port_accepts("127.0.0.1", bun.port), timeout=10,
               what="pgbun to stop accepting")
    time.sleep(0.5)
    assert bun.alive(), "pgbun exited while a client was still connected"
    assert conn.execute("SELECT 2").fetchone() == (2,)  # the client is still served
    conn.close()
    bun.proc.wait(timeout=10)
    assert bun.proc.returncode == 0


@pytest.mark.parametrize("root_drops_to_user", [False, True] if IS_ROOT else [False])
def test_a_sigterm_sent_as_soon_as_the_port_accepts_is_a_clean_stop(start_pgbun, root_drops_to_user):
    """The port accepts before the loop handles signals; a SIGTERM in between still stops cleanly."""
    for _ in range(15):
        if root_drops_to_user:  # started as root: listen, hand the socket over, then become the run user
            bun = start_pgbun(config={"user": RUN_USER}, run_user=None, wait=False)
        else:
            bun = start_pgbun(wait=False)
        deadline = time.monotonic() + 10
        while not port_accepts("127.0.0.1", bun.port, timeout=0.2):
            assert bun.proc.poll() is None and time.monotonic() < deadline, bun.log_text()
        os.kill(bun.proc.pid, signal.SIGTERM)
        assert bun.proc.wait(timeout=15) == 0, bun.log_text()
        assert "SIGTERM" in bun.log_text(), bun.log_text()


def test_sigquit_exits_at_once_with_clients_connected(start_pgbun):
    bun = start_pgbun()
    conn = bun.connect()
    conn.execute("SELECT 1")
    os.kill(bun.proc.pid, signal.SIGQUIT)
    bun.proc.wait(timeout=10)
    assert bun.proc.returncode == 0
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")


def test_sigint_exits_once_no_server_is_in_use(start_pgbun):
    bun = start_pgbun(config={"pool_mode": "transaction"})
    idle = bun.connect()  # logged in, but holds no server between transactions
    idle.execute("SELECT 1")
    os.kill(bun.proc.pid, signal.SIGINT)
    bun.proc.wait(timeout=10)
    assert bun.proc.returncode == 0


def test_sigusr1_pauses_new_queries_and_sigusr2_resumes(start_pgbun):
    import threading

    bun = start_pgbun(config={"pool_mode": "transaction"})
    running = bun.connect(autocommit=False)
    running.execute("SELECT 1")  # a transaction in progress holds its server
    os.kill(bun.proc.pid, signal.SIGUSR1)
    wait_until(lambda: "paused" in bun.log_text(), timeout=10, what="the pause")
    running.execute("SELECT 2")  # a running transaction goes on
    running.commit()
    newcomer = bun.connect()
    done = threading.Event()

    def query():
        newcomer.execute("SELECT 3")
        done.set()

    t = threading.Thread(target=query, daemon=True)
    t.start()
    assert not done.wait(1.5), "a new query ran while pgbun was paused"
    os.kill(bun.proc.pid, signal.SIGUSR2)
    assert done.wait(10), "the query did not run after the resume"
    t.join(5)


def test_reload_resizes_live_pools_without_dropping_clients(start_pgbun, pg):
    bun = start_pgbun(config={"default_pool_size": 1, "pool_mode": "transaction"})
    idle = bun.connect()
    pid = backend_pid(idle)
    rewrite_config(bun, base_config(bun, auth_type="trust", default_pool_size=3, pool_mode="transaction"),
                   {"pgbun_test": pg.entry()})
    os.kill(bun.proc.pid, signal.SIGHUP)
    wait_until(lambda: "configuration reloaded" in bun.log_text(), timeout=10,
               what="the reload to be logged")
    holders = [bun.connect(autocommit=False) for _ in range(3)]
    pids = {backend_pid(h) for h in holders}  # each holds a transaction open: three servers
    assert len(pids) == 3, "the pool did not grow to the reloaded pool_size"
    for h in holders:
        h.rollback()
    assert backend_pid(idle) in pids | {pid}, "the client connected before the reload was dropped"


def test_every_socket_is_non_blocking_and_closed_on_exec(start_pgbun, pg):
    """Listening, client (TCP and unix) and server sockets: created so by accept4 and
    socket() flags, with no fcntl after, so each is checked here as the kernel holds it."""
    bun = start_pgbun()
    with bun.connect() as tcp, bun.connect(host=bun.unix_dir) as local:
        tcp.execute("SELECT 1")
        local.execute("SELECT 1")
        sockets = {}
        for fd in os.listdir(f"/proc/{bun.proc.pid}/fd"):
            try:
                if not os.readlink(f"/proc/{bun.proc.pid}/fd/{fd}").startswith("socket:"):
                    continue
                with open(f"/proc/{bun.proc.pid}/fdinfo/{fd}") as f:
                    flags = next(int(line.split()[1], 8) for line in f if line.startswith("flags:"))
            except OSError:
                continue  # closed meanwhile
            sockets[int(fd)] = flags
    assert len(sockets) >= 5, f"expected listeners, two clients and a server, saw fds {sorted(sockets)}"
    for fd, flags in sockets.items():
        assert flags & os.O_NONBLOCK, f"socket fd {fd} is blocking (flags {flags:o})"
        assert flags & os.O_CLOEXEC, f"socket fd {fd} is inherited by exec (flags {flags:o})"
