"""Plain use through pgbun: psql, psycopg, pgbench, the unix socket."""

import struct

import psycopg
import pytest

from conftest import run


def test_psycopg_query_with_parameters(bun):
    with bun.connect() as conn:
        row = conn.execute("SELECT %s::int + %s::int, %s::text || 'x', %s::int IS NULL",
                           (40, 2, "ab", None)).fetchone()
    assert row == (42, "abx", True)


def test_psycopg_multi_row_result(bun):
    with bun.connect() as conn:
        rows = conn.execute("SELECT id, name FROM users ORDER BY id").fetchall()
    assert len(rows) == 10
    assert rows[0] == (1, "alice")
    assert rows[-1] == (10, "judy")


def test_psycopg_binary_results(bun):
    with bun.connect() as conn:
        cur = conn.cursor(binary=True)
        rows = cur.execute("SELECT g, g * 1.5, 'r' || g FROM generate_series(1, 5) g").fetchall()
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[4][2] == "r5"


def test_error_then_recovery_on_the_same_connection(bun):
    with bun.connect() as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        assert conn.execute("SELECT 42").fetchone() == (42,)
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT * FROM no_such_table")
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (10,)


def test_failed_transaction_rolls_back_and_connection_recovers(bun):
    with bun.connect(autocommit=False) as conn:
        conn.execute("INSERT INTO txn_log (client_id, amount, note) VALUES (99, 1, 'rolled back')")
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM txn_log WHERE client_id = 99").fetchone() == (0,)
        conn.rollback()


def test_committed_transaction_is_visible_to_the_next_client(bun):
    with bun.connect(autocommit=False) as conn:
        conn.execute("INSERT INTO txn_log (client_id, amount, note) VALUES (4242, 1, 'committed')")
        conn.commit()
    with bun.connect() as conn:
        n = conn.execute("SELECT count(*) FROM txn_log WHERE client_id = 4242").fetchone()[0]
        conn.execute("DELETE FROM txn_log WHERE client_id = 4242")
    assert n == 1


def test_large_result_arrives_intact(bun):
    with bun.connect() as conn:
        rows = conn.execute("SELECT g, repeat('x', 100) FROM generate_series(1, 100000) g").fetchall()
    assert len(rows) == 100000
    assert sum(r[0] for r in rows) == 100000 * 100001 // 2
    assert all(len(r[1]) == 100 for r in rows[:100])


def test_large_query_text_arrives_intact(bun):
    big = "y" * (2 * 1024 * 1024)
    with bun.connect() as conn:
        assert conn.execute("SELECT length(%s)", (big,)).fetchone() == (len(big),)
        assert conn.execute(f"SELECT length('{big}')").fetchone() == (len(big),)


def test_copy_out_and_in_pass_through(bun):
    with bun.connect() as conn:
        conn.execute("CREATE TEMP TABLE copy_t (a int, b text)")
        with conn.cursor().copy("COPY copy_t FROM STDIN") as copy:
            for i in range(1000):
                copy.write_row((i, f"row {i}"))
        assert conn.execute("SELECT count(*), sum(a) FROM copy_t").fetchone() == (1000, 499500)
        out = []
        with conn.cursor().copy("COPY (SELECT a FROM copy_t ORDER BY a LIMIT 3) TO STDOUT") as copy:
            for row in copy.rows():
                out.append(row)
    assert out == [("0",), ("1",), ("2",)]


def test_pipeline_of_extended_queries(bun):
    with bun.connect() as conn:
        with conn.pipeline():
            curs = [conn.execute("SELECT %s::int * 2", (i,)) for i in range(20)]
        assert [c.fetchone()[0] for c in curs] == [i * 2 for i in range(20)]


def test_psql_runs_a_query(bun):
    res = bun.psql(["-U", "postgres", "-d", "pgbun_test", "-At", "-c",
                    "SELECT name FROM users ORDER BY id LIMIT 3"])
    assert res.stdout.split() == ["alice", "bob", "carol"]


def test_psql_error_then_recovery_in_one_session(bun):
    script = "SELECT 1/0;\nSELECT 'still here';\n"
    res = bun.psql(["-U", "postgres", "-d", "pgbun_test", "-At", "-v", "ON_ERROR_STOP=0"],
                   input=script, check=False)
    assert "division by zero" in res.stderr
    assert "still here" in res.stdout


def test_psql_over_the_unix_socket(bun):
    res = bun.psql(["-U", "postgres", "-d", "pgbun_test", "-At", "-c", "SELECT 'via unix'"],
                   host=bun.unix_dir)
    assert res.stdout.strip() == "via unix"


def test_psycopg_over_the_unix_socket(bun):
    with bun.connect(host=bun.unix_dir) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (10,)


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_runs_through_pgbun(bun, pgbun_workdir, mode):
    script = pgbun_workdir / "select.sql"
    script.write_text("\\set id random(1, 10)\nSELECT name FROM users WHERE id = :id;\n")
    res = run(["pgbench", "-n", "-h", bun.host, "-p", bun.port, "-U", "postgres",
               "-c", "4", "-j", "2", "-t", "50", "-M", mode, "-f", script, "pgbun_test"],
              timeout=45, check=False)
    assert res.returncode == 0, res.stderr
    assert "number of transactions actually processed: 200/200" in res.stdout


def test_server_parameter_status_reaches_the_client(bun):
    with bun.connect() as conn:
        info = conn.info
        assert info.parameter_status("server_version")
        assert info.parameter_status("client_encoding") == "UTF8"
        assert info.parameter_status("standard_conforming_strings") == "on"
        assert info.parameter_status("integer_datetimes") == "on"


def test_client_gets_backend_key_data_and_ready_for_query(bun):
    w = bun.wire()
    seen = w.login("postgres", "pgbun_test")
    types = [t for t, _ in seen]
    assert types[0] == b"R" and struct.unpack("!i", seen[0][1][:4])[0] == 0
    assert b"K" in types and types[-1] == b"Z"
    assert seen[-1][1] == b"I"
    assert w.scalar("SELECT 1") == "1"
    w.terminate()
