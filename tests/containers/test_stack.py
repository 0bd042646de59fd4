"""The compose stack (docker-compose.yml) built, started, loaded and reloaded
for real: PostgreSQL, pgbun and the test-runner, each in its container, and
this test on the host talking to pgbun through its published port."""

import json
from decimal import Decimal
import subprocess
import threading
import time

import psycopg
import pytest

from conftest import DBNAME, PASSWORD, POOL_SIZE, USER, admin_bin, show

# What every run of pgbun-loadtest reports (pgbun-loadtest(1), loadtest/README.md).
FIELDS = ("scenario", "mode", "concurrency", "duration_seconds", "total_queries",
          "successful_queries", "errors", "error_rate", "avg_latency_ms", "p95_latency_ms",
          "reuse_efficiency_percent", "max_server_connections_used", "throughput_qps",
          "connections", "pgbun", "open_transactions_after_run")


def test_login_through_the_published_port(stack):
    with stack.connect() as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == (USER, DBNAME)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        stack.connect(password="not-the-password")


def test_published_on_loopback_only_and_postgres_not_at_all(stack):
    ports = stack.docker("inspect", "-f", "{{json .NetworkSettings.Ports}}",
                         stack.container("pgbun")).stdout
    assert json.loads(ports)["6432/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(stack.port)}]
    ports = stack.docker("inspect", "-f", "{{json .NetworkSettings.Ports}}",
                         stack.container("postgres")).stdout
    assert json.loads(ports)["5432/tcp"] is None


def test_init_sql_tables_and_rows(stack):
    with stack.connect() as conn:
        assert conn.execute("SELECT name FROM users WHERE id = 1").fetchone() == ("alice",)
        assert conn.execute("SELECT count(*), sum(amount) FROM txn_log").fetchone() == (10, Decimal("1567.10"))
        names = [r[0] for r in conn.execute("SELECT name FROM users ORDER BY id LIMIT 3")]
        assert names == ["alice", "bob", "carol"]


def test_console_show_pools_and_stats(stack):
    with stack.connect() as conn:
        conn.execute("SELECT 1")
    with stack.connect(dbname="pgbun") as admin:
        pools = {(p["database"], p["user"]): p for p in show(admin, "SHOW POOLS")}
        pool = pools[(DBNAME, USER)]
        assert pool["pool_mode"] == "transaction"
        assert pool["sv_idle"] + pool["sv_used"] + pool["sv_active"] >= 1
        stats = {r["database"]: r for r in show(admin, "SHOW STATS")}
        assert stats[DBNAME]["total_query_count"] >= 1


def test_pgbun_admin_on_the_host(stack):
    def admin(command):
        out = subprocess.run(
            [admin_bin(), "-h", "127.0.0.1", "-p", str(stack.port), "-U", USER, "--json",
             "-c", command],
            env=dict(stack.env, PGPASSWORD=PASSWORD), capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    pools = admin("SHOW POOLS")
    assert any(p["database"] == DBNAME and p["pool_mode"] == "transaction" for p in pools)
    settings = {c["key"]: c["value"] for c in admin("SHOW CONFIG")}
    assert settings["max_client_conn"] == "1100"
    assert settings["default_pool_size"] == str(POOL_SIZE)


def test_pgbun_admin_in_the_test_runner(stack):
    """docker/README.md's way to the console from inside the stack."""
    p = stack.compose("run", "--rm", "--entrypoint", "pgbun-admin", "test-runner",
                      "-h", "pgbun", "--csv", "-c", "SHOW LISTS", timeout=120)
    assert "used_clients" in p.stdout


def test_runtime_image_is_small_unprivileged_and_read_only(stack):
    cid = stack.container("pgbun")
    inspect = json.loads(stack.docker("inspect", cid).stdout)[0]
    assert inspect["Config"]["User"] == "6432:6432"
    assert inspect["HostConfig"]["ReadonlyRootfs"] is True
    assert inspect["State"]["Health"]["Status"] == "healthy"
    assert stack.docker("exec", cid, "id", "-u").stdout.strip() == "6432"
    touch = stack.docker("exec", cid, "touch", "/usr/local/bin/x", check=False)
    assert touch.returncode != 0 and "Read-only file system" in touch.stderr
    # pgbun and its libraries, no build tools and no other programs of ours.
    assert stack.docker("exec", cid, "sh", "-c", "command -v cc gcc make pgbun-admin",
                        check=False).stdout == ""
    libs = stack.docker("exec", cid, "sh", "-c",
                        "ldd /usr/local/bin/pgbun | awk '{print $1}'").stdout.split()
    assert not [lib for lib in libs if "not" in lib]
    size = int(stack.docker("image", "inspect", "-f", "{{.Size}}", inspect["Image"]).stdout)
    base = int(stack.docker("image", "inspect", "-f", "{{.Size}}",
                            stack.env["PGBUN_BASE_IMAGE"]).stdout)
    print(f"runtime image: {size / 1e6:.1f} MB, {(size - base) / 1e6:.1f} MB over its base")
    assert size - base < 30e6


def test_a_rebuild_with_no_change_comes_from_the_layer_cache(stack):
    p = stack.compose("build", "pgbun", timeout=300)
    out = p.stdout + p.stderr
    assert "Using cache" in out
    assert "Running in" not in out, out[-3000:]


def loadtest(stack, scenario, *args, timeout=180):
    """Runs one scenario in the test-runner and returns its JSON."""
    before = set((stack.tree / "metrics").glob("*.json"))
    p = stack.compose("run", "--rm", "test-runner", f"--scenario={scenario}", *args,
                      timeout=timeout, check=False)
    new = set((stack.tree / "metrics").glob("*.json")) - before
    assert len(new) == 1, f"no metrics file from {scenario}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    result = json.loads(new.pop().read_text())
    return p, result


def check_run(result, scenario, concurrency):
    missing = [f for f in FIELDS if f not in result]
    assert not missing, missing
    assert result["scenario"] == scenario
    assert result["mode"] == "transaction"
    assert result["concurrency"] == concurrency
    assert result["errors"] == 0, result["error_messages"]
    assert result["successful_queries"] > 0
    assert result["successful_queries"] == result["total_queries"]
    assert 0 < result["max_server_connections_used"] <= POOL_SIZE
    assert result["open_transactions_after_run"] == 0
    assert result["connections"]["failed"] == 0
    assert result["pgbun"]["error"] is None


@pytest.mark.parametrize("scenario,args", [
    ("load", ()),
    ("boundary", ()),
    # The default pause is 1.5 s past server_idle_timeout (2 s in this stack).
    ("idle", ("--duration=8s",)),
    ("long-session", ()),
    ("reconnect", ()),
])
def test_every_scenario_in_the_test_runner(stack, scenario, args):
    p, result = loadtest(stack, scenario, "--concurrency=30", "--duration=5s", *args)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    check_run(result, scenario, 30)
    if scenario == "boundary":
        assert result["boundary"]["rows_match"] is True
    if scenario == "idle":
        assert result["idle"]["pauses"] >= 30
        assert result["idle"]["served_after_idle"] >= 30
        assert result["idle"]["idle_disconnects"] == 0
    if scenario == "long-session":
        assert result["long_session"]["backend_changes"] == 0


def test_reconnect_through_a_postgres_restart(stack):
    """The load tester sees the outage of `docker-compose restart postgres` and
    every client recovers once PostgreSQL is back."""
    out = {}

    def run():
        out["p"], out["result"] = loadtest(stack, "reconnect", "--concurrency=20",
                                           "--duration=25s", "--allow-errors")
    t = threading.Thread(target=run)
    t.start()
    # Restart once the load runs: all 20 clients connected (starting the
    # container can take a while on a busy machine), then two seconds more.
    deadline = time.monotonic() + 120
    with stack.connect(dbname="pgbun") as admin:
        while True:
            clients = sum(p["cl_active"] + p["cl_waiting"]
                          for p in show(admin, "SHOW POOLS") if p["database"] == DBNAME)
            if clients >= 20:
                break
            assert t.is_alive() and time.monotonic() < deadline, f"the load never started: {out}"
            time.sleep(0.2)
    time.sleep(2)
    started = time.monotonic()
    stack.compose("restart", "postgres", timeout=120)
    restart_took = time.monotonic() - started
    t.join(timeout=180)
    assert not t.is_alive()
    assert out["p"].returncode == 0, out["p"].stdout[-3000:] + out["p"].stderr[-3000:]
    r = out["result"]
    rec = r["reconnect"]
    print(f"restart took {restart_took:.1f}s; outage {rec['outage_seconds']}s, "
          f"{rec['outage_errors']} outage errors {rec['outage_by_sqlstate']}, "
          f"recovered after {rec['recovery_seconds']}s")
    assert rec["outage_errors"] > 0, rec
    assert rec["clients_not_recovered"] == 0, rec
    assert rec["recovered_s"] is not None and rec["recovered_s"] > rec["outage_start_s"]
    # Outage errors are counted apart: nothing else went wrong.
    assert r["errors"] == 0, r["error_messages"]
    assert r["open_transactions_after_run"] == 0
    assert r["max_server_connections_used"] <= POOL_SIZE
    with stack.connect() as conn:
        assert conn.execute("SELECT name FROM users WHERE id = 1").fetchone() == ("alice",)


def test_sighup_reloads_the_mounted_auth_file_without_dropping_clients(stack):
    name, password = "pgbun_hup_user", "hup-pass-1"
    stack.superuser_sql(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'",
                        f"GRANT SELECT ON users TO {name}")
    with stack.connect() as held:
        held.execute("BEGIN")
        held.execute("SELECT name FROM users WHERE id = 3")
        with pytest.raises(psycopg.OperationalError):
            stack.connect(user=name, password=password)
        # Edited in place: the bind mount follows the file's inode.
        userlist = stack.tree / "docker" / "userlist.txt"
        with open(userlist, "a") as f:
            f.write(f'"{name}" "{password}"\n')
        stack.compose("kill", "-s", "HUP", "pgbun")
        deadline = time.monotonic() + 30
        while True:
            try:
                with stack.connect(user=name, password=password) as conn:
                    assert conn.execute("SELECT name FROM users WHERE id = 2").fetchone() == ("bob",)
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        # The client in its transaction never noticed.
        assert held.execute("SELECT name FROM users WHERE id = 4").fetchone() == ("dave",)
        held.execute("COMMIT")
    logs = stack.logs("pgbun")
    assert "SIGHUP: reloading the configuration" in logs
    assert "configuration reloaded" in logs
    assert password not in logs


def cgroup_memory(stack, cid):
    """(usage, limit) in bytes of the container's memory cgroup, v1 or v2."""
    out = stack.docker("exec", cid, "sh", "-c",
                       "cat /sys/fs/cgroup/memory.current /sys/fs/cgroup/memory.max 2>/dev/null || "
                       "cat /sys/fs/cgroup/memory/memory.usage_in_bytes "
                       "/sys/fs/cgroup/memory/memory.limit_in_bytes").stdout.split()
    return int(out[0]), int(out[1])


def test_memory_limit_holds_with_1000_idle_clients(stack):
    cid = stack.container("pgbun")
    inspect = json.loads(stack.docker("inspect", cid).stdout)[0]
    limit = inspect["HostConfig"]["Memory"]
    assert limit == 256 * 1024 * 1024
    def pgbun_rss():
        return int(stack.docker("exec", cid, "sh", "-c",
                                "awk '/VmRSS/ {print $2}' /proc/1/status").stdout) * 1024

    rss_before = pgbun_rss()
    clients = []
    try:
        for _ in range(1000):
            clients.append(stack.connect())
        usage, cg_limit = cgroup_memory(stack, cid)
        rss = pgbun_rss()
        print(f"1,000 idle clients: pgbun RSS {rss_before / 1e6:.1f} -> {rss / 1e6:.1f} MB "
              f"({(rss - rss_before) / 1000 / 1024:.1f} KiB per client), cgroup usage "
              f"{usage / 1e6:.1f} MB of {cg_limit / 1e6:.0f} MB")
        assert cg_limit == limit
        assert usage < limit
        with stack.connect(dbname="pgbun") as admin:
            cur = admin.execute("SHOW LISTS")
            lists = {r[0]: r[1] for r in cur.fetchall()}
        assert lists["used_clients"] >= 1000
        # Every client is still served.
        for conn in clients[::50] + clients[-1:]:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        for conn in clients:
            conn.close()
    inspect = json.loads(stack.docker("inspect", cid).stdout)[0]
    assert inspect["State"]["OOMKilled"] is False
    assert inspect["State"]["Running"] is True
    assert inspect["RestartCount"] == 0
