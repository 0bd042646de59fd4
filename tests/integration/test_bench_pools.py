"""bench/pools end to end, briefly: it runs and reports, and stops what it starts.

Never a speed or a ratio: only that every (target, N) produced numbers, the
JSON and Markdown name them, SHOW POOLS had the pools asked for, and nothing
the benchmark started outlives it, after a normal end or a Ctrl-C.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import IS_PGBOUNCER, KEEP, SRCDIR, is_number, make_tempdir, pgbun_binary, processes_mentioning

pytestmark = [
    pytest.mark.skipif(IS_PGBOUNCER, reason="runs pgbun's own benchmark script"),
    # A script, not the daemon: once per check, as bench/run (scripts/check sets this after the first build).
    pytest.mark.skipif(bool(os.environ.get("ONCE_PER_CHECK_DONE")),
                       reason="ONCE_PER_CHECK_DONE is set (bench/pools already ran once in this check)"),
]

BENCH = SRCDIR / "bench" / "pools"
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
HAVE_PGBOUNCER = os.access(PGBOUNCER, os.X_OK)



def kill_leftovers(base):
    for pid, _ in processes_mentioning(str(base)):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


@pytest.mark.timeout(300)
@pytest.mark.parametrize("layout", ["entries", "wildcard"])
def test_bench_pools_small_run_reports(layout):
    base = make_tempdir("pgbun-benchpools-")
    out_dir = base / "results"
    targets = ["pgbun"] + (["pgbouncer"] if HAVE_PGBOUNCER else [])
    cmd = [sys.executable, str(BENCH), "--pools=3,40", "--logins=20", "--reps=2",
           "--show-reps=2", "--idle-seconds=0.2", f"--layout={layout}",
           f"--targets={','.join(targets)}", f"--pgbun={pgbun_binary()}",
           f"--out-dir={out_dir}", "--time-limit=240"]
    if HAVE_PGBOUNCER:
        cmd.append(f"--pgbouncer={PGBOUNCER}")
    env = dict(os.environ, TMPDIR=str(base))
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=280, env=env,
                             stdin=subprocess.DEVNULL)
        output = f"exit {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
        leftovers = processes_mentioning(str(base))
        assert not leftovers, f"still running after bench/pools exited: {leftovers}\n{output}"
        assert not [p for p in base.iterdir() if p.name.startswith("pgbun-bench-pools-")], \
            f"the work dir was not removed: {list(base.iterdir())}\n{output}"
        assert res.returncode == 0, output

        jsons = list(out_dir.glob("pools-*.json"))
        mds = list(out_dir.glob("pools-*.md"))
        assert len(jsons) == 1 and len(mds) == 1, f"{list(out_dir.iterdir())}\n{output}"
        doc = json.loads(jsons[0].read_text())
        md = mds[0].read_text()
        assert doc["failures"] == [], output
        assert doc["options"]["layout"] == layout
        got = sorted((r["target"], r["pools_wanted"]) for r in doc["results"])
        assert got == sorted((t, n) for t in targets for n in (3, 40)), got
        for r in doc["results"]:
            assert r["status"] == "ok", r
            assert r["pools"] >= r["pools_wanted"], r
            assert r["pg_backends_after_create"] == 0, r
            assert len(r["login_rounds"]) == 2, r
            assert is_number(r["login_us"]) and r["login_us"] > 0, r
            assert is_number(r["login_cpu_us"]), r
            for sql in ("SHOW POOLS", "SHOW DATABASES", "SHOW USERS"):
                assert is_number(r["show"][sql]["median_ms"]), (sql, r)
            assert r["show"]["SHOW POOLS"]["rows"] >= r["pools_wanted"], r
            assert is_number(r["exporter_scrape_ms"]) and r["exporter_scrape_ms"] > 0, r
            for key in ("quiet_p99", "quiet_max", "scraping_p99", "scraping_max"):
                assert is_number(r["ping_us"][key]) and r["ping_us"][key] > 0, (key, r)
            assert r["ping_us"]["scrapes_during"] >= 1, r
            if r["target"] == "pgbun":
                assert is_number(r["metrics_ms"]) and r["metrics_bytes"] > 1000, r
        for t in targets:
            assert "ratio 40/3" in md and t in md, md
            assert doc["versions"][t], doc["versions"]
    finally:
        kill_leftovers(base)
        if not KEEP:
            shutil.rmtree(base, ignore_errors=True)


@pytest.mark.timeout(120)
def test_bench_pools_ctrl_c_stops_everything():
    base = make_tempdir("pgbun-benchpools-int-")
    cmd = [sys.executable, str(BENCH), "--pools=20000", f"--pgbun={pgbun_binary()}",
           f"--out-dir={base / 'results'}", "--time-limit=100"]
    env = dict(os.environ, TMPDIR=str(base))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, stdin=subprocess.DEVNULL)
    try:
        seen = []
        deadline = time.monotonic() + 60
        for line in proc.stdout:  # wait until pgbun runs and pools are being made
            seen.append(line)
            if "pgbun, 20000 pools" in line or time.monotonic() > deadline:
                break
        assert any("pgbun, 20000 pools" in l for l in seen), "".join(seen)
        assert processes_mentioning(str(base)), "nothing of the benchmark is running"
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        output = "".join(seen) + rest
        assert proc.returncode == 130, output
        assert "interrupted" in output, output
        assert not processes_mentioning(str(base)), output
        assert not [p for p in base.iterdir() if p.name.startswith("pgbun-bench-pools-")], output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_leftovers(base)
        if not KEEP:
            shutil.rmtree(base, ignore_errors=True)
