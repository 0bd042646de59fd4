"""The soak (tests/soak/run), short: two and a half minutes of the mixed workload, once per check.

The soak's own checks decide: nothing lost, no unexpected client error, every cancel landed, pgbun's RSS and
descriptors back within a small margin of where they were after the warm-up. The 30-minute run recorded in
docs/RELIABILITY.md is the same script with its defaults.
"""
import json
import os
import subprocess
import sys

import pytest

from conftest import IS_PGBOUNCER, SRCDIR, pgbun_binary

pytestmark = [
    pytest.mark.skipif(IS_PGBOUNCER, reason="pgbun's soak"),
    pytest.mark.skipif(bool(os.environ.get("ONCE_PER_CHECK_DONE")),
                       reason="ONCE_PER_CHECK_DONE is set (the soak already ran once in this check)"),
]


@pytest.mark.timeout(420)
def test_a_short_soak_loses_nothing_and_ends_where_it_started(tmp_path):
    out = tmp_path / "soak"
    res = subprocess.run([sys.executable, str(SRCDIR / "tests" / "soak" / "run"), "--duration", "150",
                          "--warmup", "40", "--restart-every", "70", "--reload-every", "15",
                          "--pgbun", str(pgbun_binary()), "--out-dir", str(out)],
                         capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] and not summary["failures"]
    # The workload really ran, and it was disturbed as promised.
    assert summary["restarts"] >= 1 and summary["reloads"] >= 5, summary
    for proto, counts in summary["pgbench"].items():
        assert counts["counted"] > 0 and counts["counted"] == counts["stored"], (proto, counts)
    assert summary["notifications"]["received"] > 0 and summary["copy_rounds"] > 0 and summary["cancels_landed"] > 0
    assert (out / "plot.svg").read_text().startswith("<svg")
