"""The descriptor limit pgbun runs under, against what its config may need.

At start, and at every RELOAD, SIGHUP and SET that changes the numbers,
pgbun logs its RLIMIT_NOFILE and the most descriptors the config may need
(PgBouncer's "max fds possible" line: max_client_conn, every pool's servers,
a few for listeners and logs). When the soft limit is short it raises it, up
to the hard limit, as an unprivileged process may; when even the hard limit
is short it warns, naming both numbers and how to raise it.
"""
import re
import signal

from conftest import IS_PGBOUNCER, _ini_lines, chown_to_run_user, wait_until
import pytest

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="pgbun's own log lines")

FDS_LINE = re.compile(r"file descriptor limit: (\d+) \(hard (\d+)\), max_client_conn: (\d+), "
                      r"max fds possible: (\d+)")
SHORT = "is below what max_client_conn"


def fds_lines(bun):
    return [tuple(int(x) for x in m.groups()) for m in FDS_LINE.finditer(bun.log_text())]


def open_files_limit(pid):
    """(soft, hard) "Max open files" of a running process, from /proc."""
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError("no Max open files line")


def rewrite_config(bun, pg, **changes):
    cfg = {k: v for k, v in {**bun.config, **changes}.items() if v is not None}
    bun.config_path.write_text(_ini_lines("pgbun", cfg, {"pgbun_test": pg.entry()}, None))
    chown_to_run_user(bun.config_path)
    bun.config = cfg


def test_soft_limit_is_raised_to_what_max_client_conn_needs(start_pgbun):
    bun = start_pgbun(config={"max_client_conn": 1000}, nofile=(256, 8192))
    soft, hard, clients, need = wait_until(lambda: fds_lines(bun), 10, what="the fd limit line")[0]
    assert clients == 1000
    # 1,000 clients, 20 servers for each user of the auth_file, and a few for listeners and logs.
    assert 1000 + 20 < need < 8192, need
    assert (soft, hard) == (need, 8192)
    assert open_files_limit(bun.proc.pid) == (need, 8192)
    assert f"file descriptor limit raised from 256 to {need} (hard limit 8192)" in bun.log_text()
    assert SHORT not in bun.log_text()
    with bun.connect() as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_enough_descriptors_leave_the_limit_alone(start_pgbun):
    bun = start_pgbun(config={"max_client_conn": 50}, nofile=(1024, 4096))
    soft, hard, _, need = wait_until(lambda: fds_lines(bun), 10, what="the fd limit line")[0]
    assert need < 1024
    assert (soft, hard) == (1024, 4096) == open_files_limit(bun.proc.pid)
    assert "raised from" not in bun.log_text()
    assert SHORT not in bun.log_text()


def test_hard_limit_below_max_client_conn_is_warned_at_start_reload_and_set(start_pgbun, pg):
    bun = start_pgbun(config={"max_client_conn": 500, "default_pool_size": 5, "admin_users": "postgres"},
                      nofile=(128, 128))
    wait_until(lambda: SHORT in bun.log_text(), 10, what="the warning at start")
    text = bun.log_text()
    m = re.search(r"the file descriptor limit \(128\) is below what max_client_conn = 500 and up to "
                  r"(\d+) server connections may need \((\d+)\)", text)
    assert m, text
    assert int(m.group(1)) % 5 == 0 and int(m.group(2)) > 500 + int(m.group(1))
    assert "raise the hard limit" in text
    assert text.count(SHORT) == 1
    assert open_files_limit(bun.proc.pid) == (128, 128)

    # Fewer clients: RELOAD logs the new numbers, and no warning.
    rewrite_config(bun, pg, max_client_conn=50)
    with bun.connect(dbname="pgbun", user="postgres", autocommit=True) as admin:
        admin.execute("RELOAD")
    assert fds_lines(bun)[-1][2] == 50
    assert bun.log_text().count(SHORT) == 1

    # More again, by SIGHUP: warned again.
    rewrite_config(bun, pg, max_client_conn=400)
    bun.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: bun.log_text().count(SHORT) == 2, 10, what="the warning at SIGHUP")
    assert "max_client_conn = 400" in bun.log_text()

    # And by SET on the console.
    with bun.connect(dbname="pgbun", user="postgres", autocommit=True) as admin:
        admin.execute("SET max_client_conn = 300")
    wait_until(lambda: bun.log_text().count(SHORT) == 3, 10, what="the warning at SET")
    assert "max_client_conn = 300" in bun.log_text()

    # The same SET again changes nothing and says nothing.
    lines = len(fds_lines(bun))
    with bun.connect(dbname="pgbun", user="postgres", autocommit=True) as admin:
        admin.execute("SET max_client_conn = 300")
    assert len(fds_lines(bun)) == lines
    with bun.connect() as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1
