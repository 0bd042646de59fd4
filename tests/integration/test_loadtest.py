"""pgbun-loadtest against a real pgbun: each scenario (load, boundary, idle,
long-session, reconnect) gives a clean run whose JSON figures agree with what
pgbun's console and PostgreSQL itself say; its options (--mode, --rate,
--ramp, --csv, --progress, --out, --allow-errors, --admin-db) do what they
say; errors are counted and change the exit status; tests/run-scenarios runs
every scenario and prints its table."""

import csv
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from decimal import Decimal

import pytest

from conftest import IS_PGBOUNCER, RUN_USER, SANITIZER_MARKERS, SRCDIR, loadtest_binary, run

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="pgbun's console figures (reuse, max servers)")

USER, PASSWORD, DBNAME = "pgbun_user", "pgbun_pass", "pgbun_test"
POOL_SIZE = 20
SCENARIOS = ["load", "boundary", "idle", "long-session", "reconnect"]


@pytest.fixture(autouse=True)
def _sample_tables_left_as_found(pg):
    """The load scenario adds users and the boundary scenario txn_log rows; other test files count
    the rows of the session's PostgreSQL, so each test's rows go when it ends."""
    yield
    pg.sql("DELETE FROM users WHERE name LIKE %s", ("loadtest-%",))
    pg.sql("DELETE FROM txn_log WHERE note LIKE %s", ("pgbun-loadtest %",))


def config(**extra):
    """pgbun set up for the load tester: scram logins, pgbun_user may use the console."""
    cfg = {"auth_type": "scram-sha-256", "admin_users": USER, "pool_mode": "transaction",
           "default_pool_size": POOL_SIZE, "max_client_conn": 500}
    cfg.update(extra)
    return cfg


def direct(server):
    """conninfo straight to a test PostgreSQL (trust for postgres over TCP)."""
    return f"host={server.host} port={server.port} user=postgres dbname={DBNAME}"


def loadtest(bun, server, *args, password=PASSWORD, timeout=60):
    """Runs pgbun-loadtest against bun (checks straight on server): (exit status, JSON or None, stderr)."""
    cmd = [str(loadtest_binary()), "--host", bun.host, "--port", str(bun.port), "--user", USER,
           f"--password={password}", "--dbname", DBNAME, f"--direct={direct(server)}", *args]
    res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    found = [m for m in SANITIZER_MARKERS if m in res.stderr]
    assert not found, f"sanitizer report from {cmd}:\n{res.stderr}"
    report = None
    if res.stdout.strip():
        try:
            report = json.loads(res.stdout, parse_float=Decimal)
        except ValueError as exc:
            raise AssertionError(f"{cmd} printed no JSON ({exc}):\n{res.stdout}\nstderr:\n{res.stderr}")
    return res.returncode, report, res.stderr


def clean(rc, report, err, outage=False):
    """A run that exited 0 with no errors; returns the report. Queries that
    failed in an outage (reconnect) are in total_queries, not in errors."""
    assert report is not None, f"no JSON (exit {rc}):\n{err}"
    assert rc == 0 and report["errors"] == 0, (rc, report["errors_by_sqlstate"], report["error_messages"], err)
    assert report["errors_by_sqlstate"] == {} and report["error_messages"] == [], report
    if outage:
        assert report["total_queries"] >= report["successful_queries"] > 0, report
    else:
        assert report["total_queries"] == report["successful_queries"] > 0, report
    return report


def stats_row(bun):
    """pgbun_test's row of SHOW STATS, read through pgbun's console as pgbun_user."""
    with bun.connect(dbname="pgbun", user=USER, password=PASSWORD) as adm:
        cur = adm.execute("SHOW STATS")
        names = [d.name for d in cur.description]
        rows = [dict(zip(names, r)) for r in cur.fetchall() if r[names.index("database")] == DBNAME]
    assert len(rows) == 1, rows
    return rows[0]


def idle_in_transaction(server):
    rows = server.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = %s "
                      "AND state LIKE 'idle in transaction%%'", (USER,))
    return rows[0][0]


class BackendSampler:
    """Counts, every 50 ms, PostgreSQL's backends of pgbun_user opened since it started: the peak."""

    def __init__(self, server):
        self.server = server
        self.peak = 0
        self.samples = 0
        self.error = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            with self.server.connect() as conn:
                since = conn.execute("SELECT now()").fetchone()[0]
                self._ready.set()
                while not self._stop.is_set():
                    n = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND datname = %s "
                                     "AND backend_type = 'client backend' AND backend_start >= %s",
                                     (USER, DBNAME, since)).fetchone()[0]
                    self.peak = max(self.peak, n)
                    self.samples += 1
                    self._stop.wait(0.05)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            self._ready.set()

    def __enter__(self):
        self._thread.start()
        self._ready.wait(15)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)


# ---------------------------------------------------------------- 1. load

def test_load_50_clients_on_a_pool_of_20_reuses_servers_and_matches_show_stats(start_pgbun, pg):
    bun = start_pgbun(config=config())
    with BackendSampler(pg) as sampler:
        report = clean(*loadtest(bun, pg, "--scenario=load", "--mode=transaction", "-c", "50", "-T", "5s"))
    assert report["scenario"] == "load" and report["mode"] == "transaction" and report["concurrency"] == 50
    assert report["connections"]["max_open"] == 50 and report["connections"]["failed"] == 0, report["connections"]
    assert 0 < report["max_server_connections_used"] <= POOL_SIZE, report
    assert report["reuse_efficiency_percent"] > 90, report
    assert report["pgbun"]["scope"] == "run" and report["pgbun"]["error"] is None, report["pgbun"]

    # the figures are pgbun's own: the console says the same after the run
    stats = stats_row(bun)
    assert stats["reuse_efficiency_percent"] == report["reuse_efficiency_percent"], (stats, report)
    assert stats["max_server_connections_used"] == report["max_server_connections_used"], (stats, report)
    assert stats["total_query_count"] == report["total_queries"] == report["pgbun"]["query_count"], (stats, report)
    assert stats["total_server_assignment_count"] == report["pgbun"]["server_assignment_count"], (stats, report)
    # one query per transaction, one transaction per assignment
    assert stats["total_server_assignment_count"] == report["total_queries"], (stats, report)
    assert stats["total_server_connect_count"] == report["pgbun"]["server_connect_count"], (stats, report)

    # PostgreSQL's side: never more backends of pgbun_user than the pool
    assert sampler.error is None, sampler.error
    assert sampler.samples > 0
    assert 0 < sampler.peak <= POOL_SIZE, sampler.peak


# ---------------------------------------------------------------- 2. boundary

@pytest.mark.parametrize("mode", ["transaction", "session", "statement"])
def test_boundary_commits_exactly_the_rows_counted_and_leaves_no_transaction_open(start_pgbun, pg, mode):
    bun = start_pgbun(config=config(pool_mode=mode))
    report = clean(*loadtest(bun, pg, "--scenario=boundary", f"--mode={mode}", "-c", "10", "-T", "3s"))
    b = report["boundary"]
    assert report["mode"] == mode
    assert b["rows_match"] is True and b["rows_uncertain"] == 0, b
    assert b["rows_found"] == b["rows_expected"] > 0, b
    # counted again here, straight from PostgreSQL
    assert pg.sql("SELECT count(*) FROM txn_log WHERE note = %s", (b["tag"],)) == [(b["rows_expected"],)], b
    assert b["committed_transactions"] > 0 and b["failed_transactions"] > 0, b
    if mode == "statement":
        assert b["rolled_back_transactions"] == 0, "statement mode refuses transaction blocks: no ROLLBACK variant"
    else:
        assert b["rolled_back_transactions"] > 0, b
    assert report["expected_errors"] > 0, report
    assert report["open_transactions_after_run"] == 0, report
    assert idle_in_transaction(pg) == 0


# ---------------------------------------------------------------- 3. idle

def test_idle_past_client_idle_timeout_gets_57p05_and_the_next_query_is_served(start_pgbun, pg):
    bun = start_pgbun(config=config(server_idle_timeout=1, client_idle_timeout=2))
    report = clean(*loadtest(bun, pg, "--scenario=idle", "-c", "5", "-T", "4s", "--idle=3.5s"))
    i = report["idle"]
    assert i["idle_seconds"] == Decimal("3.5"), i
    assert i["pauses"] >= 5, i
    # each connection was closed once in its pause, and its next query served on a new login
    assert i["idle_disconnects"] >= 5, i
    assert i["served_after_idle"] == 5, i
    assert i["idle_disconnects_by_sqlstate"] == {"57P05": i["idle_disconnects"]}, i
    assert report["connections"]["opened"] >= 10 and report["connections"]["failed"] == 0, report["connections"]
    log = bun.log_text()
    assert "client_idle_timeout" in log and "57P05" in log, log


def test_idle_counts_only_57p05_as_a_clear_disconnect_and_any_other_close_as_an_error(start_pgbun, pg):
    bun = start_pgbun(config=config(pool_mode="session"))
    cmd = [str(loadtest_binary()), "--host", bun.host, "--port", str(bun.port), "--user", USER,
           f"--password={PASSWORD}", "--dbname", DBNAME, f"--direct={direct(pg)}", "--scenario=idle", "-c", "3",
           "-T", "3s", "--idle=2s"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        time.sleep(1)  # every connection has run its first query and is in its pause
        pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (USER,))
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    report = json.loads(out)
    assert proc.returncode == 1, (proc.returncode, report, err)
    assert report["idle"]["idle_disconnects"] == 0, report["idle"]
    assert report["errors"] >= 3 and "57P05" not in report["errors_by_sqlstate"], report


def test_idle_past_server_idle_timeout_only_is_served_on_a_new_server_connection(start_pgbun, pg):
    bun = start_pgbun(config=config(server_idle_timeout=1, client_idle_timeout=30))
    report = clean(*loadtest(bun, pg, "--scenario=idle", "-c", "5", "-T", "4s", "--idle=3s"))
    i = report["idle"]
    assert i["idle_disconnects"] == 0, i
    assert i["served_after_idle"] == 5, i
    assert report["connections"]["opened"] == 5, report["connections"]
    assert report["pgbun"]["server_connect_count"] > 0, report["pgbun"]
    # pgbun closed idle servers during the pause and opened a new one for the queries after it
    log = bun.log_text()
    closed = log.find("server_idle_timeout")
    assert closed >= 0, log
    assert "new server connection" in log[closed:], log


# ---------------------------------------------------------------- 4. long-session

def test_long_session_holders_keep_their_backend_beside_short_transactions(start_pgbun, pg):
    bun = start_pgbun(config=config())
    report = clean(*loadtest(bun, pg, "--scenario=long-session", "--mode=transaction", "-c", "30",
                             "--holders=3", "-T", "4s"))
    ls = report["long_session"]
    assert ls["holders"] == 3, ls
    assert ls["backend_changes"] == 0, ls
    assert ls["holder_queries"] > 3, ls  # more than the first pg_backend_pid() of each holder
    assert report["open_transactions_after_run"] == 0, report
    assert 0 < report["max_server_connections_used"] <= POOL_SIZE, report


def test_long_session_refuses_statement_mode_with_exit_2(start_pgbun, pg):
    bun = start_pgbun(config=config(pool_mode="statement"))
    rc, report, err = loadtest(bun, pg, "--scenario=long-session", "-c", "5", "-T", "2s")
    assert rc == 2 and report is None, (rc, report, err)
    assert "long-session needs session or transaction mode" in err, err


# ---------------------------------------------------------------- 5. reconnect

@pytest.mark.timeout(90)
def test_reconnect_through_a_postgresql_restart_recovers_every_client(make_postgres, start_pgbun, tmp_path):
    own = make_postgres()
    bun = start_pgbun(config=config(), databases={DBNAME: own.entry()})
    restart = (f"cd {shlex.quote(str(own.base))} && "
               + (f"runuser -u {shlex.quote(RUN_USER)} -- " if RUN_USER else "")
               + shlex.join([str(own.bindir / "pg_ctl"), "-D", str(own.datadir), "-l", str(own.logfile),
                             "-w", "-t", "30", "-m", "fast", "restart"]))
    csv_path = tmp_path / "reconnect.csv"
    # the restart comes early, so the recovery fits in the run whatever pgbun's retry back-off is
    report = clean(*loadtest(bun, own, "--scenario=reconnect", "-c", "10", "-T", "8s", "--restart-at=1s",
                             f"--restart-command={restart}", f"--csv={csv_path}", timeout=80), outage=True)
    r = report["reconnect"]
    assert r["restart_exit_status"] == 0, r
    # The restart reached pgbun: PostgreSQL ended the server connections it held.
    assert "terminating connection due to administrator command" in bun.log_text() or \
        "server closed the connection" in bun.log_text(), bun.log_text()[-3000:]
    assert r["clients_not_recovered"] == 0, r
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert rows, "empty CSV"
    if r["outage_errors"] > 0:
        # Queries in flight at the shutdown failed: served again soon after PostgreSQL is back (well under a
        # second on a quiet machine; generous bound).
        assert r["recovery_seconds"] is not None and r["recovery_seconds"] < 3.5, r
        assert r["restart_at_s"] <= r["outage_start_s"] <= r["outage_end_s"] <= r["recovered_s"], r
        back = r["recovered_s"]
    else:
        # No query was in flight when PostgreSQL stopped: pgbun held the queries that came meanwhile until it
        # was back, and no client saw an error, which is what pgbun aims at. Served within a few seconds.
        back = r["restart_at_s"] + 4
    # served again after the outage: the whole seconds after it, to the end of the run
    after = [row for row in rows if int(row["second"]) - 1 >= back]
    assert after and all(int(row["successful"]) > 0 for row in after), (r, rows)
    assert int(rows[-1]["successful"]) > 0, rows


# ---------------------------------------------------------------- 6. options and errors

def test_mode_that_differs_from_the_pool_exits_2_naming_both(start_pgbun, pg):
    bun = start_pgbun(config=config())
    rc, report, err = loadtest(bun, pg, "--mode=session", "-T", "1s")
    assert rc == 2 and report is None, (rc, err)
    assert "--mode=session" in err and "transaction mode" in err, err


def test_wrong_password_exits_2(start_pgbun, pg):
    bun = start_pgbun(config=config())
    rc, report, err = loadtest(bun, pg, "-T", "1s", password="not-the-password")
    assert rc == 2 and report is None, (rc, err)
    assert "cannot connect" in err, err


def test_rate_caps_the_queries_of_the_run(start_pgbun, pg):
    bun = start_pgbun(config=config())
    report = clean(*loadtest(bun, pg, "--rate=100", "-T", "3s", "-c", "5"))
    assert report["rate_qps"] == 100
    assert 0 < report["total_queries"] <= 100 * 3 * 1.1 + 5, report


def test_ramp_opens_connections_gradually_and_csv_progress_and_out_report_the_run(start_pgbun, pg, tmp_path):
    bun = start_pgbun(config=config())
    csv_path, out_path = tmp_path / "run.csv", tmp_path / "run.json"
    rc, report, err = loadtest(bun, pg, "-c", "10", "-T", "4s", "--ramp=2s", f"--csv={csv_path}",
                               f"--out={out_path}", "--progress")
    clean(rc, report, err)
    assert report["ramp_seconds"] == 2
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 2, rows
    assert int(rows[0]["connections"]) < 10, rows
    assert any(int(row["connections"]) == 10 for row in rows[1:]), rows
    assert sum(int(row["successful"]) for row in rows) > 0, rows
    progress = re.findall(r"^pgbun-loadtest: +\d+s +\d+ connections .*errors so far$", err, re.M)
    assert len(progress) >= 2, err
    assert json.loads(out_path.read_text(), parse_float=Decimal) == report


def test_refused_connections_are_counted_and_exit_1_unless_errors_are_allowed(start_pgbun, pg):
    for allow in (False, True):
        bun = start_pgbun(config=config(max_client_conn=2))  # a new one: no client of the last run left
        args = ["-c", "3", "-T", "2s"] + (["--allow-errors"] if allow else [])
        rc, report, err = loadtest(bun, pg, *args)
        assert report is not None, (rc, err)
        assert rc == (0 if allow else 1), (rc, report, err)
        assert report["errors"] > 0, report
        assert sum(report["errors_by_sqlstate"].values()) == report["errors"], report
        # a refused login is counted under the SQLSTATE pgbun sent, with its message
        assert set(report["errors_by_sqlstate"]) == {"53300"}, report
        assert report["connections"]["failed"] > 0 and report["connections"]["max_open"] == 2, report
        assert any("no more connections allowed" in m for m in report["error_messages"]), report
        assert report["successful_queries"] > 0, report
        if not allow:
            assert "errors (--allow-errors to exit 0 anyway)" in err, err


def test_queries_still_unanswered_after_the_grace_period_are_cut_off_and_counted(start_pgbun, pg):
    bun = start_pgbun(config=config())
    cmd = [str(loadtest_binary()), "--host", bun.host, "--port", str(bun.port), "--user", USER,
           f"--password={PASSWORD}", "--dbname", DBNAME, f"--direct={direct(pg)}", "-c", "5", "-T", "3s",
           "--grace=1s"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        time.sleep(1)
        with bun.connect(dbname="pgbun", user=USER, password=PASSWORD) as adm:
            adm.execute("PAUSE pgbun_test")  # every query from now on waits in pgbun's queue
            out, err = proc.communicate(timeout=30)
            adm.execute("RESUME pgbun_test")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, (proc.returncode, out, err)
    report = json.loads(out)
    assert report["errors_by_sqlstate"] == {"unfinished": 5}, report
    assert report["total_queries"] == report["successful_queries"] + 5, report
    assert any("1 s after the run ended" in m for m in report["error_messages"]), report
    assert report["open_transactions_after_run"] == 0, report
    assert report["duration_seconds"] < 10, report


def test_without_a_console_pgbuns_figures_are_null_and_say_why(start_pgbun, pg):
    bun = start_pgbun(config=config())
    report = clean(*loadtest(bun, pg, "--admin-db=", "-c", "3", "-T", "1s"))
    assert report["reuse_efficiency_percent"] is None and report["max_server_connections_used"] is None, report
    p = report["pgbun"]
    assert p["server_assignment_count"] is None and p["query_count"] is None and p["scope"] is None, p
    assert "--admin-db" in p["error"], p
    assert report["mode"] is None, report


# ---------------------------------------------------------------- 7. tests/run-scenarios

@pytest.mark.timeout(90)
def test_run_scenarios_runs_all_five_and_prints_a_table_of_ok_runs(start_pgbun, pg, tmp_path):
    bun = start_pgbun(config=config())
    metrics = tmp_path / "metrics"
    env = dict(os.environ, METRICS_DIR=str(metrics), LOADTEST=str(loadtest_binary()), PGHOST=bun.host,
               PGPORT=str(bun.port), PGUSER=USER, PGPASSWORD=PASSWORD, PGDATABASE=DBNAME,
               LOADTEST_DIRECT=direct(pg))
    env.pop("RESTART_COMMAND", None)
    res = run([sys.executable, SRCDIR / "tests" / "run-scenarios", "-T", "2s", "-c", "10", "--idle=1s"],
              timeout=80, check=False, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not [m for m in SANITIZER_MARKERS if m in res.stderr], res.stderr
    files = sorted(p.name for p in metrics.glob("*.json"))
    assert len(files) == 5, files
    for scenario in SCENARIOS:
        mine = [f for f in files if f.startswith(f"{scenario}-transaction-")]
        assert len(mine) == 1, (scenario, files)
        report = json.loads((metrics / mine[0]).read_text())
        assert report["scenario"] == scenario and report["errors"] == 0, report
    table = {line.split()[0]: line.split() for line in res.stdout.splitlines()
             if line.split() and line.split()[0] in SCENARIOS}
    assert sorted(table) == sorted(SCENARIOS), res.stdout
    for scenario, cells in table.items():
        # scenario mode conns queries errors q/s avg p95 p99 reuse% max-servers status check...
        assert cells[1] == "transaction" and cells[4] == "0" and cells[11] == "ok", (scenario, cells, res.stdout)
