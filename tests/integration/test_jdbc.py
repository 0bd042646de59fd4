"""JDBC (Debian's PostgreSQL JDBC driver) through pgbun, with no
ignore_startup_parameters: the driver sends extra_float_digits and friends."""

import os
import shutil
from pathlib import Path

import pytest

from conftest import run

HERE = Path(__file__).resolve().parent
JAR = Path(os.environ.get("PGBUN_JDBC_JAR", "/usr/share/java/postgresql.jar"))
JAVA = shutil.which("java")

pytestmark = [
    pytest.mark.skipif(not JAVA, reason="java not installed (scripts/deps installs it)"),
    pytest.mark.skipif(not JAR.is_file(), reason=f"{JAR} missing: install libpostgresql-jdbc-java"),
    pytest.mark.timeout(120),
]


def jdbc(url, user="pgbun_user", password="pgbun_pass"):
    # The single-file source launcher compiles in memory: nothing is written here.
    res = run([JAVA, "-cp", JAR, HERE / "JdbcSmoke.java", url, user, password],
              timeout=90, check=False)
    assert res.returncode == 0, f"JdbcSmoke failed:\n{res.stdout}\n{res.stderr}"
    return dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)


@pytest.fixture
def jdbc_bun(start_pgbun, pg):
    # No ignore_startup_parameters on purpose.
    return start_pgbun(config={"auth_type": "scram-sha-256"},
                       databases={"pgbun_test": pg.entry()},
                       auth_file={"pgbun_user": "pgbun_pass"})


def test_jdbc_connects_and_queries_without_ignore_startup_parameters(jdbc_bun):
    out = jdbc(f"jdbc:postgresql://{jdbc_bun.host}:{jdbc_bun.port}/pgbun_test")
    assert out["sum"] == "2"
    assert out["user"] == "pgbun_user"
    assert out["extra_float_digits"] == "3"  # the driver's startup parameter took effect
    assert out["prepared_total"] == str(sum(range(1, 9)))
    assert out["transaction"] == "ok"


def test_jdbc_options_search_path_takes_effect(jdbc_bun, pg):
    query = "?options=-c%20search_path=jdbc_schema,public"
    out = jdbc(f"jdbc:postgresql://{jdbc_bun.host}:{jdbc_bun.port}/pgbun_test{query}")
    direct = jdbc(f"jdbc:postgresql://{pg.host}:{pg.port}/pgbun_test{query}")
    assert direct["search_path"] == "jdbc_schema,public"
    assert out["search_path"] == direct["search_path"]


def test_jdbc_reads_the_admin_console(start_pgbun):
    """Statement and server-prepared statement with binary transfer: the console answers both,
    for a stats user too (the driver's own SET extra_float_digits is accepted)."""
    bun = start_pgbun(config={"auth_type": "scram-sha-256", "stats_users": "pgbun_user"},
                      auth_file={"pgbun_user": "pgbun_pass"})
    res = run([JAVA, "-cp", JAR, HERE / "JdbcConsole.java", f"jdbc:postgresql://{bun.host}:{bun.port}/pgbun",
               "pgbun_user", "pgbun_pass"], timeout=90, check=False)
    assert res.returncode == 0, f"JdbcConsole failed:\n{res.stdout}\n{res.stderr}"
    lines = res.stdout.splitlines()
    out = dict(line.split("=", 1) for line in lines if "=" in line)
    pools = out["pools_columns"].split(",")
    assert pools[0] == "database:text" and pools[2] == "cl_active:int8"
    assert "reuse_efficiency_percent:numeric" in pools
    assert out["console_cl_active"] == "1"
    assert out["console_reuse"] == "0.00"
    stats = [line for line in lines if line.startswith("stats_columns=")]
    assert len(stats) == 3 and len(set(stats)) == 1, "every prepared round sees the same columns"
    assert "query_p99_us:int8" in stats[0]
    assert int(out["console_logins"]) >= 1
    assert out["error"] == "42704"
    assert out["version"].startswith("pgbun ")
