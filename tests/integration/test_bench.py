"""bench/run end to end: every scenario against every target, briefly.

It checks that the benchmark runs and reports, never how fast anything is:
every scenario produces numbers with no failed transaction against every
target it runs (prepared-c50 included, on pgbun and pgbun-w2 with pgbench
-j = clients; pgbun-off, bench/run's default `--session-state track,off`,
on select-c50 and extended-c50 only), the JSON and Markdown files name
every scenario and the cost of session-state tracking, and nothing the
benchmark started is left running.

Of the TLS scenarios only tls-connect-c50 runs here (about 20 s): it makes
the certificates, starts PostgreSQL with ssl = on and TLS poolers, and runs
TLS handshakes through every target; tls-select-c50 and idle-memory-tls use
the same set-up and would add about 35 s more. It checks that TLS was
used where asked and plain text everywhere else.

authq-connect-c50 runs poolers whose auth_file names only their auth_user:
every login of pgbench's user needs auth_query, and the check is that
each of those poolers holds a server connection of the auth_user and that
no other scenario's ini has auth_user.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import KEEP, SRCDIR, is_number, make_tempdir, pgbun_binary, processes_mentioning

BENCH = SRCDIR / "bench" / "run"
TLS_SCENARIO = "tls-connect-c50"  # TLS on both sides; the only TLS scenario run here
AUTHQ_SCENARIO = "authq-connect-c50"  # the poolers look the user up with auth_query
AUTH_USER = "bench_authq"  # bench/run's auth_user, the only line of those poolers' auth_file
PGBENCH_SCENARIOS = ["select-c1", "select-c50", "select-c300", "extended-c50", "extended-c300",
                     "tpcb-c50", "connect-c50", "prepared-c50", TLS_SCENARIO, AUTHQ_SCENARIO]
ALL_SCENARIOS = PGBENCH_SCENARIOS + ["idle-memory"]
IDLE_CLIENTS = 300
PGBUN_TARGETS = ["pgbun", "pgbun-w2"]  # bench/run's default --workers 1,2
OFF_TARGET = "pgbun-off"  # bench/run's default --session-state track,off
OFF_SCENARIOS = ["select-c50", "extended-c50"]  # the ones pgbun-off runs



@pytest.mark.skipif(bool(os.environ.get("ONCE_PER_CHECK_DONE")),
                    reason="ONCE_PER_CHECK_DONE is set (bench/run already ran once in this check)")
@pytest.mark.timeout(420)
def test_bench_quick_run_reports_every_scenario():
    base = make_tempdir("pgbun-benchtest-")  # the bench's work dir goes inside
    out_dir = base / "results"
    cmd = [sys.executable, str(BENCH), "--quick", "--duration=4", "--scale=1",
           f"--idle-clients={IDLE_CLIENTS}", f"--scenarios={','.join(ALL_SCENARIOS)}",
           f"--pgbun={pgbun_binary()}", f"--out-dir={out_dir}"]
    env = dict(os.environ, TMPDIR=str(base))
    t0 = time.monotonic()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env,
                             stdin=subprocess.DEVNULL)
        elapsed = time.monotonic() - t0
        output = f"exit {res.returncode} after {elapsed:.0f}s\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"

        leftovers = processes_mentioning(str(base))
        assert not leftovers, f"still running after bench/run exited: {leftovers}\n{output}"
        assert not [p for p in base.iterdir() if p.name.startswith("pgbun-bench-")], \
            f"the work dir was not removed: {list(base.iterdir())}\n{output}"
        assert res.returncode == 0, output

        jsons = list(out_dir.glob("*.json"))
        mds = list(out_dir.glob("*.md"))
        assert len(jsons) == 1 and len(mds) == 1, f"{list(out_dir.iterdir())}\n{output}"
        assert jsons[0].stem == mds[0].stem
        doc = json.loads(jsons[0].read_text())
        md = mds[0].read_text()

        assert doc["failures"] == [], output
        assert doc["known_unsupported"] == [], output
        for name in PGBENCH_SCENARIOS:
            assert name in md, f"{name} missing from the Markdown:\n{md}"
            targets = doc["scenarios"][name]["targets"]
            expected = (["direct"] + PGBUN_TARGETS
                        + ([OFF_TARGET] if name in OFF_SCENARIOS else [])
                        + ([] if name == "prepared-c50" else ["pgbouncer"]))
            assert sorted(targets) == sorted(expected), (name, list(targets))
            for target, t in targets.items():
                assert t["status"] == "ok", (name, target, t)
                assert t["failed_transactions"] == 0, (name, target, t)
                assert is_number(t["median_tps"]) and t["median_tps"] > 0, (name, target, t)
                for run in t["runs"]:
                    assert run["exit"] == 0 and run["error"] is None, (name, target, run)
                    assert run["transactions"] > 0, (name, target, run)
                    assert run["sslmode"] == ("require" if name == TLS_SCENARIO else "disable"), \
                        (name, target, run)
                    if name == "prepared-c50":  # one pgbench thread per client
                        assert " -c 50 -j 50 " in run["command"], (name, target, run)
                if target != "direct":
                    assert is_number(t["median_cpu_ms_per_10k_tx"]), (name, target, t)

        # TLS where asked: every target negotiated it with a client, the poolers
        # hold TLS server connections, and the other scenarios' poolers say
        # plain text to PostgreSQL explicitly
        seen = doc["scenarios"][TLS_SCENARIO]["tls"]
        assert sorted(seen["clients"]) == sorted(["direct"] + PGBUN_TARGETS + ["pgbouncer"]), seen
        for target, version in seen["clients"].items():
            assert version.startswith("TLSv1."), (target, seen)
        assert seen["server_connections"], seen
        assert all(v.startswith("TLSv1.") for v in seen["server_connections"]), seen
        settings = doc["settings"]
        assert settings["postgresql"]["ssl"] == "on", settings["postgresql"]
        assert "server_tls_sslmode = disable" in settings["pooler_ini"], settings["pooler_ini"]
        for line in ("client_tls_sslmode = require", "server_tls_sslmode = require"):
            assert line in settings["pooler_ini_tls"], settings["pooler_ini_tls"]
        assert "server_tls_sslmode = disable" not in settings["pooler_ini_tls"]
        assert settings["tls"]["key"], settings["tls"]

        # auth_query: the poolers of authq-connect-c50 know only the auth_user,
        # whose server connections they hold for the lookups; no other ini has it
        authq = doc["scenarios"][AUTHQ_SCENARIO]["auth_query"]
        assert authq["auth_user"] == AUTH_USER and authq["auth_file_users"] == [AUTH_USER], authq
        held = authq["auth_user_server_connections"]
        assert sorted(held) == sorted(PGBUN_TARGETS + ["pgbouncer"]), authq
        for target, n in held.items():
            assert n >= 1, (target, authq)
        ini = settings["pooler_ini_auth_query"]
        assert f"auth_user = {AUTH_USER}\n" in ini and "userlist-authq.txt" in ini, ini
        assert "auth_query" not in ini, ini  # each pooler's default
        for key in ("pooler_ini", "pooler_ini_tls"):
            assert "auth_user" not in settings[key], settings[key]

        assert "idle-memory" in md
        idle = doc["idle_memory"]
        assert idle["clients"] == IDLE_CLIENTS
        assert sorted(idle["targets"]) == sorted(PGBUN_TARGETS + ["pgbouncer"]), idle["targets"]
        for target in PGBUN_TARGETS + ["pgbouncer"]:
            t = idle["targets"][target]
            assert t["status"] == "ok", (target, t)
            assert is_number(t["bytes_per_client"]), (target, t)
            assert is_number(t["rss_before_kb"]) and is_number(t["rss_after_kb"]), (target, t)

        header = doc["table"]["header"]
        for target in PGBUN_TARGETS:
            assert f"{target} TPS" in header and f"CPU {target}/PgBouncer" in header, header

        # pgbun (session_state = track) against pgbun-off: its own section
        assert "Cost of session-state tracking" in md, md
        assert doc["settings"]["pgbun_session_state"][OFF_TARGET] == "off"
        assert doc["settings"]["pgbun_session_state"]["pgbun"] == "track"
        cost = doc["session_state_cost"]
        assert [c["scenario"] for c in cost] == OFF_SCENARIOS, cost
        for c in cost:
            for key in ("track_median_tps", "off_median_tps", "tps_ratio_track_over_off",
                        "track_median_cpu_ms_per_10k_tx", "off_median_cpu_ms_per_10k_tx",
                        "cpu_ratio_track_over_off"):
                assert is_number(c[key]) and c[key] > 0, (key, c)
        assert doc["session_state_table"]["header"][3] == f"TPS pgbun/{OFF_TARGET}"
        for key in ("pgbun", "pgbouncer", "postgresql"):
            assert doc["versions"][key], doc["versions"]
        assert doc["machine"]["nproc"] >= 1
        assert doc["options"]["duration"] == 4 and doc["options"]["rounds"] == 1
    finally:
        for pid, _ in processes_mentioning(str(base)):
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        if not KEEP:
            shutil.rmtree(base, ignore_errors=True)
