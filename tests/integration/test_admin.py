"""The admin console (database `pgbun`, alias `pgbouncer`): every SHOW with
PgBouncer's columns in PgBouncer's order and then pgbun's own, through psql,
psycopg 3 (simple, extended, binary) and node-postgres; values that match
what really happened; the simple and extended protocols; the control commands
while clients are connected; and who may do what."""

import csv
import io
import json
import os
import signal
import subprocess
import threading
import time
from decimal import Decimal

import psycopg
import pytest
from psycopg import pq

import pgwire
from conftest import (HERE, IS_PGBOUNCER, IS_ROOT, RUN_USER, _ini_lines, backend_pid, chown_to_run_user,
                      pg_bindir, run, server_backends, wait_until)

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="pgbun's console: its extra columns and messages")

# Who may use the console in most tests: postgres runs everything, md5user only SHOWs.
ADMIN = {"admin_users": "postgres", "stats_users": "md5user"}

# ---------------------------------------------------------------- the expected columns
# PgBouncer 1.25's names and order (docs/REFERENCE.md), then pgbun's additions.

_COUNTERS = ["server_assignment_count", "xact_count", "query_count", "{received}", "{sent}", "xact_time",
             "query_time", "wait_time", "client_parse_count", "server_parse_count", "bind_count",
             "client_login_count"]


def _counters(prefix, received, sent):
    return [received if c == "{received}" else sent if c == "{sent}" else prefix + c for c in _COUNTERS]


CONN_COLS = ["type", "user", "database", "replication", "state", "addr", "port", "local_addr", "local_port",
             "connect_time", "request_time", "wait", "wait_us", "close_needed", "ptr", "link", "remote_pid", "tls",
             "application_name", "prepared_statements", "id",
             "pgbun_state", "state_us", "pinned"]
COLUMNS = {
    "POOLS": ["database", "user", "cl_active", "cl_waiting", "cl_active_cancel_req", "cl_waiting_cancel_req",
              "sv_active", "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used", "sv_tested", "sv_login",
              "maxwait", "maxwait_us", "pool_mode", "load_balance_hosts",
              "reuse_efficiency_percent", "max_server_connections_used",
              "total_xact_count", "total_query_count", "query_p95_us"],
    "STATS": ["database", "total_server_assignment_count", "total_xact_count", "total_query_count",
              "total_received", "total_sent", "total_xact_time", "total_query_time", "total_wait_time",
              "total_client_parse_count", "total_server_parse_count", "total_bind_count",
              "total_client_login_count", "avg_server_assignment_count", "avg_xact_count", "avg_query_count",
              "avg_recv", "avg_sent", "avg_xact_time", "avg_query_time", "avg_wait_time",
              "avg_client_parse_count", "avg_server_parse_count", "avg_bind_count", "avg_client_login_count",
              "total_server_connect_count", "reuse_efficiency_percent", "max_server_connections_used",
              "query_p50_us", "query_p95_us", "query_p99_us"],
    "STATS_TOTALS": ["database"] + _counters("", "bytes_received", "bytes_sent"),
    "STATS_AVERAGES": ["database"] + _counters("", "bytes_received", "bytes_sent"),
    "SERVERS": CONN_COLS,
    "CLIENTS": CONN_COLS,
    "DATABASES": ["name", "host", "port", "database", "force_user", "pool_size", "min_pool_size",
                  "reserve_pool_size", "server_lifetime", "pool_mode", "load_balance_hosts", "max_connections",
                  "current_connections", "max_client_connections", "current_client_connections", "paused",
                  "disabled"],
    "USERS": ["name", "pool_size", "reserve_pool_size", "pool_mode", "max_user_connections", "current_connections",
              "max_user_client_connections", "current_client_connections", "secret_source"],
    "CONFIG": ["key", "value", "default", "changeable"],
    "LISTS": ["list", "items"],
    "STATE": ["key", "value"],
    "MEM": ["name", "size", "used", "free", "memtotal"],
    "VERSION": ["version"],
}
SHOWS = list(COLUMNS)

# Columns that hold text; reuse_efficiency_percent is numeric; every other column is an integer.
TEXT_COLS = {
    "POOLS": {"database", "user", "pool_mode", "load_balance_hosts"},
    "STATS": {"database"}, "STATS_TOTALS": {"database"}, "STATS_AVERAGES": {"database"},
    "SERVERS": {"type", "user", "database", "replication", "state", "addr", "local_addr", "connect_time",
                "request_time", "ptr", "link", "tls", "application_name", "pgbun_state", "pinned"},
    "DATABASES": {"name", "host", "database", "force_user", "pool_mode", "load_balance_hosts"},
    "USERS": {"name", "pool_mode", "secret_source"},
    "CONFIG": {"key", "value", "default", "changeable"},
    "LISTS": {"list"}, "STATE": {"key", "value"}, "MEM": {"name"}, "VERSION": {"version"},
}
TEXT_COLS["CLIENTS"] = TEXT_COLS["SERVERS"]
NUMERIC_COLS = {"reuse_efficiency_percent"}
INT_OIDS, TEXT_OIDS, NUMERIC_OID = {20, 23, 21}, {25, 1043, 19}, 1700


def column_kind(show, col):
    if col in NUMERIC_COLS:
        return "numeric"
    return "text" if col in TEXT_COLS[show] else "int"


# ---------------------------------------------------------------- helpers

def console(bun, user="postgres", dbname="pgbun", **kw):
    """A psycopg connection to the console. prepare_threshold stays at psycopg's
    default: prepare=True (our extended protocol switch) is ignored when it is None."""
    return bun.connect(dbname=dbname, user=user, **kw)


def client(bun, dbname="pgbun_test", **kw):
    """An ordinary client through pgbun, never auto-preparing (counts stay exact)."""
    kw.setdefault("prepare_threshold", None)
    return bun.connect(dbname=dbname, **kw)


def admin_cur(conn, sql, mode="simple"):
    """Runs one console statement: "simple" (Query), "extended" (Parse/Bind/Describe/
    Execute/Sync, text results) or "binary" (extended, binary results)."""
    if mode == "binary":
        cur = conn.cursor(binary=True)
        cur.execute(sql, prepare=False)
    else:
        cur = conn.cursor()
        cur.execute(sql, prepare=(mode == "extended"))
    return cur


def show(conn, what, mode="simple"):
    """SHOW what as a list of {column: value}."""
    cur = admin_cur(conn, f"SHOW {what}", mode)
    names = [d.name for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def row_for(rows, **match):
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, f"expected one row with {match}, got {found} in {rows}"
    return found[0]


def config_value(conn, key):
    return row_for(show(conn, "CONFIG"), key=key)["value"]


def psql_admin(bun, sql, user="postgres", dbname="pgbun", check=True, args=()):
    return bun.psql(["-U", user, "-d", dbname, *args, "-c", sql], check=check)


def psql_csv(bun, sql, user="postgres"):
    """(header, rows) of one console statement run by psql --csv."""
    res = psql_admin(bun, sql, user=user, args=["--csv"])
    table = list(csv.reader(io.StringIO(res.stdout)))
    assert table, f"psql printed nothing for {sql!r}: {res.stderr}"
    return table[0], table[1:]


def login_error(bun, user, dbname, host=None):
    """The ErrorResponse a raw login (and a first query) gets, or None."""
    w = pgwire.Wire(host or bun.host, bun.port, timeout=10)
    return pgwire.first_error(w, user, dbname, sql="SHOW VERSION")


def in_thread(fn, *args):
    """Runs fn in a daemon thread; returns (thread, result dict with "value" or "error")."""
    result = {}

    def target():
        try:
            result["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result["error"] = exc
        finally:
            result["done"] = time.monotonic()

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, result


def joined(t, result, timeout=10, what="the thread"):
    t.join(timeout)
    assert not t.is_alive(), f"{what} did not finish within {timeout}s"
    if "error" in result:
        raise result["error"]
    return result.get("value")


def rewrite_config(bun, databases, **changes):
    """Writes the running pgbun's ini again with some keys changed."""
    cfg = dict(bun.config)
    cfg.update(changes)
    bun.config_path.write_text(_ini_lines("pgbun", cfg, databases, None))
    chown_to_run_user(bun.config_path)


def check_typed(show_name, names, oids, rows, where):
    """Problems with the column list, the declared types and the Python values (psycopg)."""
    problems = []
    if names != COLUMNS[show_name]:
        problems.append(f"{where} SHOW {show_name}: columns {names}\n   expected {COLUMNS[show_name]}")
        return problems
    for name, oid in zip(names, oids):
        kind = column_kind(show_name, name)
        ok = (oid in INT_OIDS if kind == "int" else oid in TEXT_OIDS if kind == "text" else oid == NUMERIC_OID)
        if not ok:
            problems.append(f"{where} SHOW {show_name}: column {name} has type oid {oid}, expected {kind}")
    py = {"int": int, "text": str, "numeric": Decimal}
    for row in rows:
        for name, value in zip(names, row):
            want = py[column_kind(show_name, name)]
            if value is not None and (type(value) is not want):
                problems.append(f"{where} SHOW {show_name}: {name} = {value!r} is {type(value).__name__}, "
                                f"expected {want.__name__}")
    return problems


def busy_pgbun(start_pgbun, **config):
    """pgbun with a client holding a server (session mode), so that every SHOW has rows."""
    bun = start_pgbun(config={**ADMIN, **config})
    held = client(bun, application_name="holder")
    backend_pid(held)
    return bun, held


# ---------------------------------------------------------------- 1. columns, through every client

def test_every_show_has_pgbouncer_columns_then_pgbuns_through_psql(start_pgbun):
    bun, _held = busy_pgbun(start_pgbun)
    problems = []
    for what in SHOWS:
        header, rows = psql_csv(bun, f"SHOW {what}")
        if header != COLUMNS[what]:
            problems.append(f"psql -c 'SHOW {what}': header {header}\n   expected {COLUMNS[what]}")
        if not rows:
            problems.append(f"psql -c 'SHOW {what}': no rows")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("mode", ["simple", "extended", "binary"])
def test_every_show_has_the_right_columns_and_typed_values_through_psycopg(start_pgbun, mode):
    bun, _held = busy_pgbun(start_pgbun)
    conn = console(bun)
    problems = []
    for what in SHOWS:
        cur = admin_cur(conn, f"SHOW {what}", mode)
        assert cur.description is not None, f"SHOW {what} ({mode}) returned no RowDescription"
        names = [d.name for d in cur.description]
        oids = [d.type_code for d in cur.description]
        rows = cur.fetchall()
        if not rows:
            problems.append(f"{mode} SHOW {what}: no rows")
        problems += check_typed(what, names, oids, rows, mode)
    assert not problems, "\n".join(problems)
    # the values are sane, not only typed
    pools = show(conn, "POOLS", mode)
    mine = row_for(pools, database="pgbun_test", user="postgres")
    assert mine["cl_active"] == 1 and mine["sv_active"] == 1, mine
    assert mine["pool_mode"] == "session"
    assert row_for(show(conn, "VERSION", mode), )["version"].startswith("pgbun")


def node_admin(node_pg, bun, commands, user="postgres", dbname="pgbun"):
    script = HERE / "node" / "admin_client.js"
    env = dict(os.environ, NODE_PATH=str(node_pg))
    res = subprocess.run(["node", str(script), bun.host, str(bun.port), user, dbname, *commands],
                         capture_output=True, text=True, timeout=30, env=env, cwd=str(node_pg.parent))
    assert res.returncode == 0, f"node admin_client.js exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
    return json.loads(res.stdout)


def test_every_show_has_the_right_columns_and_typed_values_through_node_postgres(start_pgbun, node_pg):
    bun, _held = busy_pgbun(start_pgbun)
    commands = [f"SHOW {what}" for what in SHOWS] + ["NO SUCH COMMAND"]
    out = node_admin(node_pg, bun, commands)
    problems = []
    for mode in ("extended", "simple"):
        for what in SHOWS:
            res = out[mode][f"SHOW {what}"]
            if "error" in res:
                problems.append(f"node {mode} SHOW {what}: error {res['error']}")
                continue
            names = [f["name"] for f in res["fields"]]
            if names != COLUMNS[what]:
                problems.append(f"node {mode} SHOW {what}: columns {names}\n   expected {COLUMNS[what]}")
                continue
            if not res["rows"]:
                problems.append(f"node {mode} SHOW {what}: no rows")
            for f in res["fields"]:
                kind = column_kind(what, f["name"])
                ok = (f["type"] in INT_OIDS if kind == "int" else f["type"] in TEXT_OIDS if kind == "text"
                      else f["type"] == NUMERIC_OID)
                if not ok:
                    problems.append(f"node {mode} SHOW {what}: {f['name']} has type oid {f['type']}, expected {kind}")
            for row in res["rows"]:
                for name, value in zip(names, row):
                    kind = column_kind(what, name)
                    want = str if kind == "text" else (int, float)
                    if value is not None and (not isinstance(value, want) or isinstance(value, bool)):
                        problems.append(f"node {mode} SHOW {what}: {name} = {value!r}, expected {kind}")
        err = out[mode]["NO SUCH COMMAND"]
        if err.get("error", {}).get("code") != "42601":
            problems.append(f"node {mode}: an unknown command gave {err}, expected error 42601")
    assert not problems, "\n".join(problems)


def test_reuse_efficiency_is_the_same_numeric_in_text_and_binary(start_pgbun):
    bun = start_pgbun(config={**ADMIN, "pool_mode": "transaction", "default_pool_size": 1})
    with client(bun) as conn:
        for _ in range(3):  # 3 assignments, the last 2 reuse the one server
            conn.execute("SELECT 1")
    adm = console(bun)
    for mode in ("simple", "extended", "binary"):
        pool = row_for(show(adm, "POOLS", mode), database="pgbun_test")
        assert pool["reuse_efficiency_percent"] == Decimal("66.67"), (mode, pool)
        stats = row_for(show(adm, "STATS", mode), database="pgbun_test")
        assert stats["reuse_efficiency_percent"] == Decimal("66.67"), (mode, stats)


# ---------------------------------------------------------------- 2. values match reality

def test_stats_count_exactly_the_transactions_queries_and_assignments_run(start_pgbun):
    bun = start_pgbun(config={**ADMIN, "pool_mode": "transaction", "default_pool_size": 2})
    n = 7
    conn = client(bun)
    for i in range(n):
        assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)
    adm = console(bun)
    for mode in ("simple", "extended"):
        totals = row_for(show(adm, "STATS_TOTALS", mode), database="pgbun_test")
        assert (totals["xact_count"], totals["query_count"], totals["server_assignment_count"]) == (n, n, n), totals
        assert totals["client_login_count"] == 1, totals
        assert totals["bytes_received"] > 0 and totals["bytes_sent"] > 0, totals
        stats = row_for(show(adm, "STATS", mode), database="pgbun_test")
        assert (stats["total_xact_count"], stats["total_query_count"],
                stats["total_server_assignment_count"]) == (n, n, n), stats
        assert stats["total_server_connect_count"] == 1, stats
        assert stats["total_received"] == totals["bytes_received"] and stats["total_sent"] == totals["bytes_sent"]
    # one transaction block: BEGIN, 3 queries, COMMIT is one assignment, one transaction, 5 queries
    with conn.transaction():
        for _ in range(3):
            conn.execute("SELECT 1")
    totals = row_for(show(adm, "STATS_TOTALS"), database="pgbun_test")
    assert (totals["xact_count"], totals["query_count"], totals["server_assignment_count"]) == (n + 1, n + 5, n + 1)


@pytest.mark.timeout(40)
def test_max_server_connections_used_is_the_pool_size_under_contention(start_pgbun, pg):
    bun = start_pgbun(config={**ADMIN, "pool_mode": "transaction", "default_pool_size": 3})
    errors = []

    def worker():
        try:
            with client(bun) as conn:
                for _ in range(4):
                    conn.execute("SELECT pg_sleep(0.05)")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads), "clients did not finish"
    assert errors == []
    adm = console(bun)
    pool = row_for(show(adm, "POOLS"), database="pgbun_test")
    assert pool["max_server_connections_used"] == 3, pool
    stats = row_for(show(adm, "STATS"), database="pgbun_test")
    assert stats["max_server_connections_used"] == 3, stats
    assert stats["total_xact_count"] == 40 and stats["total_server_connect_count"] == 3, stats


@pytest.mark.timeout(60)
def test_reuse_efficiency_after_pgbench_in_transaction_mode_is_above_90(start_pgbun, pg):
    pgbench = str(pg_bindir() / "pgbench")
    run([pgbench, "-i", "-q", "-s", "1", "-h", str(pg.sockdir), "-p", str(pg.port), "-U", "postgres",
         "pgbun_test"], timeout=60)
    bun = start_pgbun(config={**ADMIN, "pool_mode": "transaction"})
    res = run([pgbench, "-n", "-h", bun.host, "-p", str(bun.port), "-U", "postgres", "-c", "10", "-j", "2",
               "-T", "3", "pgbun_test"], timeout=40, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    adm = console(bun)
    pool = row_for(show(adm, "POOLS"), database="pgbun_test")
    stats = row_for(show(adm, "STATS"), database="pgbun_test")
    assert pool["reuse_efficiency_percent"] > 90, pool
    assert stats["reuse_efficiency_percent"] > 90, stats
    assert 1 <= pool["max_server_connections_used"] <= 10, pool
    # the percentage is the share of assignments that did not need a new connection
    assignments, opened = stats["total_server_assignment_count"], stats["total_server_connect_count"]
    assert assignments > 100, stats
    expected = Decimal(100 * (assignments - opened) / assignments)
    assert abs(stats["reuse_efficiency_percent"] - expected) < Decimal("0.01") + Decimal(100) / assignments, \
        (stats, expected)


def test_show_clients_shows_a_queued_client_waiting_longer_and_longer(start_pgbun):
    bun = start_pgbun(config={**ADMIN, "pool_mode": "transaction", "default_pool_size": 1})
    holder = client(bun, autocommit=False, application_name="holder")
    holder.execute("SELECT 1")  # the one server, held in a transaction
    waiter = client(bun, application_name="waiter")
    t, result = in_thread(lambda: waiter.execute("SELECT 2").fetchone())
    adm = console(bun)
    try:
        def waiting_row():
            rows = [r for r in show(adm, "CLIENTS") if r["application_name"] == "waiter"]
            return rows[0] if rows and rows[0]["state"] == "waiting" else None

        first = wait_until(waiting_row, timeout=5, what="the waiter to show as waiting")
        assert first["pgbun_state"] == "waiting"
        assert first["link"] in ("", None), first
        time.sleep(0.5)
        second = waiting_row()
        assert second is not None, "the client stopped waiting while the server was held"
        waited1 = first["wait"] * 1_000_000 + first["wait_us"]
        waited2 = second["wait"] * 1_000_000 + second["wait_us"]
        assert waited2 - waited1 >= 400_000, (first, second)
        pool = row_for(show(adm, "POOLS"), database="pgbun_test")
        assert pool["cl_waiting"] == 1 and pool["sv_active"] == 1, pool
        assert pool["maxwait"] * 1_000_000 + pool["maxwait_us"] >= 400_000, pool
        holder_row = row_for(show(adm, "CLIENTS"), application_name="holder")
        assert holder_row["state"] == "active" and holder_row["wait"] == 0 and holder_row["wait_us"] == 0
    finally:
        holder.commit()
    assert joined(t, result, what="the waiting query") == (2,)
    assert [r for r in show(adm, "CLIENTS") if r["state"] == "waiting"] == []


def test_show_servers_remote_pid_is_the_backend_pid_and_links_the_client(start_pgbun, pg):
    bun = start_pgbun(config=ADMIN)
    conn = client(bun, application_name="pidcheck")
    pid = backend_pid(conn)
    adm = console(bun)
    server = row_for(show(adm, "SERVERS", "extended"), database="pgbun_test")
    assert server["remote_pid"] == pid, server
    assert server["type"] == "S" and server["state"] == "active", server
    assert server["port"] == pg.port, server
    cl = row_for(show(adm, "CLIENTS", "extended"), application_name="pidcheck")
    assert cl["type"] == "C" and cl["link"] == server["ptr"] and server["link"] == cl["ptr"], (cl, server)


def test_show_config_value_reflects_the_file(start_pgbun):
    bun = start_pgbun(config={**ADMIN, "default_pool_size": 7, "max_client_conn": 55})
    adm = console(bun)
    rows = show(adm, "CONFIG")
    assert row_for(rows, key="default_pool_size") == {"key": "default_pool_size", "value": "7", "default": "20",
                                                       "changeable": "yes"}
    assert row_for(rows, key="max_client_conn")["value"] == "55"
    port = row_for(rows, key="listen_port")
    assert port["value"] == str(bun.port) and port["changeable"] == "no", port
    assert row_for(rows, key="admin_users")["value"] == "postgres"
    assert row_for(show(adm, "DATABASES"), name="pgbun_test")["pool_size"] == 7


# ---------------------------------------------------------------- 3. protocol

@pytest.mark.parametrize("mode", ["simple", "extended"])
def test_case_spaces_semicolons_and_select_mean_show(start_pgbun, mode):
    bun, _held = busy_pgbun(start_pgbun)
    adm = console(bun)
    want = {(r["database"], r["user"]) for r in show(adm, "POOLS", mode)}
    assert ("pgbun_test", "postgres") in want
    for sql in ["SHOW POOLS;", "show pools", "  ShOw \t  PoOlS   ", "show pools ;", "SELECT POOLS", "select pools;"]:
        cur = admin_cur(adm, sql, mode)
        assert [d.name for d in cur.description] == COLUMNS["POOLS"], sql
        assert {(r[0], r[1]) for r in cur.fetchall()} == want, sql


def test_two_statements_in_one_query_are_both_answered(start_pgbun):
    bun = start_pgbun(config=ADMIN)
    res = psql_admin(bun, "SHOW VERSION; SHOW STATE", args=["-A", "-F", "|"])
    lines = res.stdout.splitlines()
    assert "version" in lines and any(line.startswith("pgbun") for line in lines), res.stdout
    assert "key|value" in lines and "paused|no" in lines, res.stdout
    cur = console(bun).cursor()
    cur.execute("SHOW VERSION; SHOW STATE", prepare=False)
    assert [d.name for d in cur.description] == ["version"]
    assert cur.nextset()
    assert [d.name for d in cur.description] == ["key", "value"]
    assert ("active", "yes") in cur.fetchall()


BAD_STATEMENTS = [
    ("FROBNICATE", "42601"),           # unknown command
    ("SHOW NOSUCHTHING", "42704"),     # unknown SHOW
    ("SHOW", "42601"),                 # missing argument
    ("SHOW POOLS EXTRA", "42601"),     # text after the command
    ("SHOW 'unterminated", "42601"),   # a bad quote
    ("SET default_pool_size", "42601"),  # SET without = value
]


@pytest.mark.parametrize("mode", ["simple", "extended", "unnamed"])
def test_errors_are_error_responses_and_the_connection_stays_usable(start_pgbun, mode):
    bun = start_pgbun(config=ADMIN)
    adm = console(bun)
    for sql, sqlstate in BAD_STATEMENTS:
        if mode == "unnamed":  # PQexecParams: unnamed statement and portal
            res = adm.pgconn.exec_params(sql.encode(), [])
            assert res.status == pq.ExecStatus.FATAL_ERROR, (sql, res.status)
            assert res.error_field(pq.DiagnosticField.SQLSTATE) == sqlstate.encode(), sql
            ok = adm.pgconn.exec_params(b"SHOW VERSION", [])
            assert ok.status == pq.ExecStatus.TUPLES_OK and ok.get_value(0, 0).startswith(b"pgbun"), sql
            continue
        with pytest.raises(psycopg.Error) as err:
            admin_cur(adm, sql, mode)
        assert err.value.sqlstate == sqlstate, (sql, str(err.value))
        assert admin_cur(adm, "SHOW VERSION", mode).fetchone()[0].startswith("pgbun"), sql
    assert adm.pgconn.transaction_status == pq.TransactionStatus.IDLE


def test_describe_gives_the_row_description_without_running(start_pgbun):
    bun = start_pgbun(config=ADMIN)
    adm = console(bun)
    pgc = adm.pgconn
    assert pgc.prepare(b"pools", b"SHOW POOLS").status == pq.ExecStatus.COMMAND_OK
    desc = pgc.describe_prepared(b"pools")
    assert desc.status == pq.ExecStatus.COMMAND_OK
    assert [desc.fname(i).decode() for i in range(desc.nfields)] == COLUMNS["POOLS"]
    assert desc.ftype(COLUMNS["POOLS"].index("reuse_efficiency_percent")) == NUMERIC_OID
    assert desc.nparams == 0
    # a control command has no rows: NoData, and describing it pauses nothing
    assert pgc.prepare(b"pause", b"PAUSE").status == pq.ExecStatus.COMMAND_OK
    assert pgc.describe_prepared(b"pause").nfields == 0
    assert row_for(show(adm, "STATE"), key="paused")["value"] == "no"
    # a SHOW with no rows still describes its columns (psycopg: Describe portal)
    cur = adm.cursor()
    cur.execute("SHOW SERVERS", prepare=True)
    assert [d.name for d in cur.description] == COLUMNS["SERVERS"]
    assert cur.fetchall() == []


# ---------------------------------------------------------------- 4. control commands

@pytest.mark.timeout(60)
def test_set_default_pool_size_shrinks_the_pool_under_load(start_pgbun, pg):
    bun = start_pgbun(config={**ADMIN, "pool_mode": "transaction", "default_pool_size": 5,
                              "server_idle_timeout": 1})
    stop, errors, done = threading.Event(), [], [0]

    def worker():
        try:
            with client(bun) as conn:
                while not stop.is_set():
                    conn.execute("SELECT pg_sleep(0.05)")
                    done[0] += 1
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(6)]
    for t in threads:
        t.start()
    adm = console(bun)
    try:
        wait_until(lambda: server_backends(pg) == 5, timeout=10, what="5 busy servers")
        admin_cur(adm, "SET default_pool_size = 2")
        assert config_value(adm, "default_pool_size") == "2"
        samples, deadline = [], time.monotonic() + 10
        while time.monotonic() < deadline:
            samples.append(server_backends(pg))
            if samples[-1] <= 2:
                break
            time.sleep(0.2)
        assert samples[-1] <= 2, (
            f"10 s after SET default_pool_size = 2 under load PostgreSQL still had {samples[-1]} connections "
            f"from pgbun (sampled every 0.2 s: {samples}); SHOW POOLS: "
            f"{row_for(show(adm, 'POOLS'), database='pgbun_test')}")
        before, peak, deadline = done[0], 0, time.monotonic() + 1.5
        while time.monotonic() < deadline:
            peak = max(peak, server_backends(pg))
            time.sleep(0.05)
        assert peak <= 2, f"{peak} servers after SET default_pool_size = 2"
        assert done[0] > before, "the clients stopped making progress"
        assert row_for(show(adm, "DATABASES"), name="pgbun_test")["pool_size"] == 2
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert errors == []


def test_set_with_a_bad_value_names_the_key_and_keeps_the_old_value(start_pgbun):
    bun = start_pgbun(config={**ADMIN, "default_pool_size": 4})
    adm = console(bun)
    for sql, key in [("SET default_pool_size = banana", "default_pool_size"),
                     ("SET default_pool_size = -3", "default_pool_size"),
                     ("SET pool_mode = sometimes", "pool_mode"),
                     ("SET no_such_key = 1", "no_such_key")]:
        with pytest.raises(psycopg.Error) as err:
            admin_cur(adm, sql)
        assert key in str(err.value), (sql, str(err.value))
    assert config_value(adm, "default_pool_size") == "4"
    assert config_value(adm, "pool_mode") == "session"
    # a key read only at start is refused, saying so
    with pytest.raises(psycopg.Error) as err:
        admin_cur(adm, "SET listen_port = 1")
    assert "listen_port" in str(err.value) and "restart" in str(err.value), str(err.value)
    assert config_value(adm, "listen_port") == str(bun.port)
    # and a good SET works, both spellings
    admin_cur(adm, "SET default_pool_size = 6")
    assert config_value(adm, "default_pool_size") == "6"
    admin_cur(adm, "SET default_pool_size TO '8'", "extended")
    assert config_value(adm, "default_pool_size") == "8"


def test_pause_holds_new_queries_until_resume(start_pgbun):
    bun = start_pgbun(config={**ADMIN, "pool_mode": "transaction"})
    conn = client(bun)
    conn.execute("SELECT 1")
    adm = console(bun)
    admin_cur(adm, "PAUSE")
    try:
        assert row_for(show(adm, "STATE"), key="paused")["value"] == "yes"
        t, result = in_thread(lambda: conn.execute("SELECT 42").fetchone())
        t.join(1.0)
        assert t.is_alive() and not result, f"a query completed while paused: {result}"
        assert row_for(show(adm, "POOLS"), database="pgbun_test")["cl_waiting"] == 1
    finally:
        admin_cur(adm, "RESUME")
    assert joined(t, result, timeout=5, what="the query after RESUME") == (42,)
    assert row_for(show(adm, "STATE"), key="paused")["value"] == "no"


def test_pause_answers_only_after_the_running_transaction_ends(start_pgbun):
    bun = start_pgbun(config={**ADMIN, "pool_mode": "transaction"})
    holder = client(bun, autocommit=False)
    holder.execute("SELECT 1")  # a transaction in progress on a server
    adm = console(bun)
    t, result = in_thread(lambda: admin_cur(adm, "PAUSE").statusmessage)
    try:
        t.join(0.8)
        assert t.is_alive() and not result, f"PAUSE answered while a transaction ran: {result}"
        committed = time.monotonic()
        holder.commit()
        assert joined(t, result, timeout=5, what="PAUSE") == "PAUSE"
        assert result["done"] >= committed
    finally:
        t.join(5)
        with console(bun) as other:
            admin_cur(other, "RESUME")
    assert holder.execute("SELECT 2").fetchone() == (2,)
    holder.commit()


def two_databases(pg):
    return {"pgbun_test": pg.entry(), "postgres": pg.entry(dbname="postgres")}


def test_pause_and_resume_of_one_database_leave_the_other_running(start_pgbun, pg):
    bun = start_pgbun(config={**ADMIN, "pool_mode": "transaction"}, databases=two_databases(pg))
    paused, other = client(bun), client(bun, dbname="postgres")
    paused.execute("SELECT 1")
    adm = console(bun)
    admin_cur(adm, "PAUSE pgbun_test")
    try:
        dbs = show(adm, "DATABASES")
        assert row_for(dbs, name="pgbun_test")["paused"] == 1 and row_for(dbs, name="postgres")["paused"] == 0
        t, result = in_thread(lambda: paused.execute("SELECT 1").fetchone())
        assert other.execute("SELECT 2").fetchone() == (2,)
        t.join(1.0)
        assert t.is_alive() and not result, "a query on the paused database completed"
        with pytest.raises(psycopg.Error) as err:
            admin_cur(adm, "RESUME postgres")  # it is not paused
        assert err.value.sqlstate == "55000", str(err.value)
    finally:
        admin_cur(adm, "RESUME pgbun_test")
    assert joined(t, result, timeout=5, what="the query after RESUME pgbun_test") == (1,)
    assert row_for(show(adm, "DATABASES"), name="pgbun_test")["paused"] == 0


def test_kill_drops_the_clients_of_one_database_until_resume(start_pgbun, pg):
    bun = start_pgbun(config={**ADMIN, "pool_mode": "transaction"}, databases=two_databases(pg))
    victims = [client(bun) for _ in range(2)]
    for v in victims:
        v.execute("SELECT 1")
    other = client(bun, dbname="postgres")
    other.execute("SELECT 1")
    adm = console(bun)
    admin_cur(adm, "KILL pgbun_test")
    try:
        for v in victims:
            with pytest.raises(psycopg.OperationalError):
                v.execute("SELECT 1")
        assert other.execute("SELECT 2").fetchone() == (2,)
        wait_until(lambda: server_backends(pg) == 0, timeout=5, what="the killed pool's servers to close")
        assert row_for(show(adm, "DATABASES"), name="pgbun_test")["paused"] == 1

        def newcomer():
            with psycopg.connect(host=bun.host, port=bun.port, dbname="pgbun_test", user="postgres",
                                 connect_timeout=10, autocommit=True) as c:
                return c.execute("SELECT 3").fetchone()

        t, result = in_thread(newcomer)
        t.join(1.0)
        assert t.is_alive() and not result, f"a new client ran a query on a killed database: {result}"
    finally:
        admin_cur(adm, "RESUME pgbun_test")
    assert joined(t, result, timeout=5, what="the new client after RESUME") == (3,)


def test_kill_client_drops_only_that_client(start_pgbun):
    bun = start_pgbun(config={**ADMIN, "pool_mode": "transaction"})
    victim, bystander = client(bun, application_name="victim"), client(bun, application_name="bystander")
    victim.execute("SELECT 1")
    bystander.execute("SELECT 1")
    adm = console(bun)
    vid = row_for(show(adm, "CLIENTS"), application_name="victim")["id"]
    admin_cur(adm, f"KILL_CLIENT {vid}")
    with pytest.raises(psycopg.OperationalError):
        victim.execute("SELECT 1")
    assert bystander.execute("SELECT 2").fetchone() == (2,)
    apps = {r["application_name"] for r in show(adm, "CLIENTS")}
    assert "victim" not in apps and "bystander" in apps, apps
    with pytest.raises(psycopg.Error) as err:
        admin_cur(adm, f"KILL_CLIENT {vid}")  # gone now
    assert err.value.sqlstate == "08P01" and "client not found" in str(err.value), str(err.value)


def test_disable_refuses_new_logins_and_enable_lets_them_in(start_pgbun):
    bun = start_pgbun(config={**ADMIN, "pool_mode": "transaction"})
    before = client(bun)
    before.execute("SELECT 1")
    adm = console(bun)
    admin_cur(adm, "DISABLE pgbun_test")
    try:
        assert row_for(show(adm, "DATABASES"), name="pgbun_test")["disabled"] == 1
        err = login_error(bun, "postgres", "pgbun_test")
        assert err is not None, "a new login to a disabled database was let in"
        assert err.sqlstate == "57P03" and "disabled" in err.message, err.fields
        assert before.execute("SELECT 2").fetchone() == (2,), "a connected client is not dropped by DISABLE"
    finally:
        admin_cur(adm, "ENABLE pgbun_test")
    assert row_for(show(adm, "DATABASES"), name="pgbun_test")["disabled"] == 0
    with client(bun) as after:
        assert after.execute("SELECT 3").fetchone() == (3,)


def test_reconnect_replaces_servers_once_released_and_wait_close_returns(start_pgbun, pg):
    bun = start_pgbun(config={**ADMIN, "pool_mode": "transaction"})
    holder = client(bun, autocommit=False)
    old_pid = backend_pid(holder)  # inside a transaction: the server stays linked
    adm = console(bun)
    admin_cur(adm, "RECONNECT")
    assert row_for(show(adm, "SERVERS"), remote_pid=old_pid)["state"] == "active"
    t, result = in_thread(lambda: admin_cur(console(bun), "WAIT_CLOSE").statusmessage)
    try:
        t.join(0.8)
        assert t.is_alive() and not result, f"WAIT_CLOSE returned while a marked server was in use: {result}"
    finally:
        holder.commit()
    assert joined(t, result, timeout=5, what="WAIT_CLOSE") == "WAIT_CLOSE"
    new_pid = backend_pid(holder)
    holder.commit()
    assert new_pid != old_pid
    wait_until(lambda: not pg.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (old_pid,)), timeout=5,
               what="the replaced backend to exit")
    assert admin_cur(adm, "WAIT_CLOSE").statusmessage == "WAIT_CLOSE"  # nothing pending: at once


def test_reload_picks_up_pool_mode_keeps_sessions_and_notices_the_change(start_pgbun, pg):
    databases = {"pgbun_test": pg.entry()}
    # One server: with several workers too, the two clients below must share it.
    bun = start_pgbun(config={**ADMIN, "pool_mode": "session", "default_pool_size": 1}, databases=databases)
    session = client(bun)
    backend_pid(session)
    adm = console(bun)
    notices = []
    adm.add_notice_handler(lambda diag: notices.append(diag.message_primary))
    rewrite_config(bun, databases, pool_mode="transaction")
    assert admin_cur(adm, "RELOAD").statusmessage == "RELOAD"
    assert any("pool_mode" in n and "transaction" in n for n in notices), notices
    assert config_value(adm, "pool_mode") == "transaction"
    assert row_for(show(adm, "POOLS"), database="pgbun_test")["pool_mode"] == "transaction"
    assert session.execute("SELECT 1").fetchone() == (1,), "the connected session broke at RELOAD"
    session.close()
    # transaction pooling now: two open clients take turns on one server
    a, b = client(bun), client(bun)
    assert backend_pid(a) == backend_pid(b), "new clients are not pooled per transaction after RELOAD"
    notices.clear()
    admin_cur(adm, "RELOAD")
    assert notices == ["no setting changed"], notices


def test_reload_of_a_broken_file_fails_and_keeps_the_running_config(start_pgbun, pg):
    databases = {"pgbun_test": pg.entry()}
    bun = start_pgbun(config={**ADMIN, "default_pool_size": 4}, databases=databases)
    conn = client(bun)
    conn.execute("SELECT 1")
    adm = console(bun)
    rewrite_config(bun, databases, pool_mode="transaction", default_pool_size="banana")
    with pytest.raises(psycopg.Error) as err:
        admin_cur(adm, "RELOAD")
    assert "RELOAD failed" in str(err.value) and "default_pool_size" in str(err.value), str(err.value)
    assert config_value(adm, "pool_mode") == "session"
    assert config_value(adm, "default_pool_size") == "4"
    assert conn.execute("SELECT 2").fetchone() == (2,)
    assert bun.alive()


def test_reset_stats_zeroes_the_counters(start_pgbun):
    bun = start_pgbun(config={**ADMIN, "pool_mode": "transaction"})
    conn = client(bun)
    for _ in range(5):
        conn.execute("SELECT 1")
    adm = console(bun)
    assert row_for(show(adm, "STATS_TOTALS"), database="pgbun_test")["xact_count"] == 5
    assert admin_cur(adm, "RESET STATS").statusmessage == "RESET"
    totals = row_for(show(adm, "STATS_TOTALS"), database="pgbun_test")
    assert {k: v for k, v in totals.items() if k != "database" and v != 0} == {}, totals
    stats = row_for(show(adm, "STATS"), database="pgbun_test")
    assert stats["total_xact_count"] == 0 and stats["total_server_connect_count"] == 0, stats
    assert stats["reuse_efficiency_percent"] == 0, stats
    # The peaks restart from the servers open now (one, idle), not from 0.
    assert stats["max_server_connections_used"] == 1, stats
    assert row_for(show(adm, "POOLS"), database="pgbun_test")["max_server_connections_used"] == 1
    conn.execute("SELECT 1")
    assert row_for(show(adm, "STATS_TOTALS"), database="pgbun_test")["xact_count"] == 1


# ---------------------------------------------------------------- 5. rights

CONTROL = ["RELOAD", "SET default_pool_size = 3", "PAUSE", "RESUME", "KILL pgbun_test", "DISABLE pgbun_test",
           "RECONNECT", "RESET STATS", "SHUTDOWN"]


@pytest.mark.parametrize("mode", ["simple", "extended"])
def test_stats_users_may_show_but_not_control(start_pgbun, mode):
    bun = start_pgbun(config=ADMIN)
    conn = client(bun)
    conn.execute("SELECT 1")
    viewer = console(bun, user="md5user")
    assert row_for(show(viewer, "POOLS", mode), database="pgbun_test")["cl_active"] == 1
    for sql in CONTROL:
        with pytest.raises(psycopg.Error) as err:
            admin_cur(viewer, sql, mode)
        assert err.value.sqlstate == "42501", (sql, str(err.value))
        assert "admin rights are needed" in str(err.value), str(err.value)
        assert admin_cur(viewer, "SHOW VERSION", mode).fetchone()[0].startswith("pgbun"), sql
    adm = console(bun)
    assert row_for(show(adm, "STATE"), key="paused")["value"] == "no"
    assert row_for(show(adm, "DATABASES"), name="pgbun_test")["disabled"] == 0
    assert conn.execute("SELECT 2").fetchone() == (2,)
    assert bun.alive()


def test_a_user_in_neither_list_cannot_log_in_to_the_console(start_pgbun):
    bun = start_pgbun(config=ADMIN)
    err = login_error(bun, "scramuser", "pgbun")
    assert err is not None and err.sqlstate == "28000", err and err.fields
    with pytest.raises(psycopg.OperationalError):
        console(bun, user="scramuser")
    # the same user reaches ordinary databases
    with client(bun, user="scramuser") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_pgbouncer_is_an_alias_unless_pgbouncer_alias_is_0(start_pgbun):
    bun = start_pgbun(config=ADMIN)
    with console(bun, dbname="pgbouncer") as adm:
        assert admin_cur(adm, "SHOW VERSION").fetchone()[0].startswith("pgbun")
        assert [d.name for d in admin_cur(adm, "SHOW POOLS").description] == COLUMNS["POOLS"]
    header, _ = psql_csv(bun, "SHOW STATE")
    assert header == ["key", "value"]
    strict = start_pgbun(config={**ADMIN, "pgbouncer_alias": 0})
    err = login_error(strict, "postgres", "pgbouncer")
    assert err is not None and err.sqlstate == "3D000", err and err.fields
    with console(strict) as adm:  # `pgbun` itself still works
        assert admin_cur(adm, "SHOW VERSION").fetchone()[0].startswith("pgbun")


def test_pgbuns_own_os_user_on_the_unix_socket_is_admin_but_not_over_tcp(start_pgbun):
    bun = start_pgbun()  # no admin_users, no stats_users
    psql = ["psql", "-X", "-h", bun.unix_dir, "-p", str(bun.port), "-U", "postgres", "-d", "pgbun", "-A", "-t"]
    res = run(psql + ["-c", "SET default_pool_size = 9"], as_run_user=True, timeout=30, cwd="/", check=False)
    assert res.returncode == 0, f"the peer admin could not SET: {res.stdout}{res.stderr}"
    res = run(psql + ["-c", "SHOW CONFIG"], as_run_user=True, timeout=30, cwd="/")
    assert "default_pool_size|9|20|yes" in res.stdout.splitlines(), res.stdout
    # the same database user over TCP is neither admin nor stats user
    err = login_error(bun, "postgres", "pgbun")
    assert err is not None and err.sqlstate == "28000", err and err.fields
    if IS_ROOT and RUN_USER:
        # another OS user (root) on the same socket is not pgbun's own user either
        err = login_error(bun, "postgres", "pgbun", host=bun.unix_dir)
        assert err is not None and err.sqlstate == "28000", err and err.fields


# ---------------------------------------------------------------- a console that misbehaves

def _count(w, mtype, n, timeout=20):
    """Reads messages until n of type mtype have arrived; returns every type seen."""
    seen = []
    while seen.count(mtype) < n:
        t, _ = w.read_message(timeout=timeout)
        seen.append(t)
    return seen


def test_a_console_that_does_not_read_holds_only_itself(start_pgbun):
    """300 Queries and 200 statements in one Query, sent without reading: pgbun
    stops answering that client until it reads (bounded memory), serves others
    meanwhile, and then answers every one of them."""
    bun = start_pgbun(config={"stats_users": "md5user", "admin_users": "postgres"})
    greedy = bun.wire()
    greedy.login("md5user", "pgbun")
    greedy.send(b"".join(pgwire.query_message("SHOW CONFIG") for _ in range(300)) +
                pgwire.query_message("; ".join(["SHOW CONFIG"] * 200)))
    time.sleep(0.5)
    with console(bun) as other:
        start = time.monotonic()
        assert show(other, "VERSION")[0]["version"].startswith("pgbun ")
        assert time.monotonic() - start < 5
    seen = _count(greedy, b"Z", 301, timeout=30)
    assert seen.count(b"C") == 500, "every SHOW CONFIG was answered once the client read"
    assert b"E" not in seen


def test_many_pipelined_syncs_all_get_their_ready_for_query(start_pgbun):
    bun = start_pgbun(config={"admin_users": "postgres"})
    w = bun.wire()
    w.login("postgres", "pgbun")
    w.send(pgwire.message(b"S") * 700)
    seen = _count(w, b"Z", 700)
    assert len(seen) == 700


def test_console_protocol_oddities_get_postgresql_answers(start_pgbun):
    bun = start_pgbun(config={"admin_users": "postgres"})
    w = bun.wire()
    w.login("postgres", "pgbun")
    # CopyData outside COPY is ignored; a FunctionCall gets an error and ReadyForQuery
    w.send(pgwire.message(b"d", b"junk") + pgwire.message(b"F", b"\0\0\0\1\0\0\0\0\0\0"))
    assert [t for t in _count(w, b"Z", 1)] == [b"E", b"Z"]
    assert w.scalar("SHOW VERSION").startswith("pgbun ")
    # two commands in one prepared statement are refused at Parse
    w.send(pgwire.message(b"P", b"\0SHOW VERSION; RESUME\0\0\0") + pgwire.message(b"S"))
    t, body = w.read_message()
    assert t == b"E" and pgwire.parse_fields(body)["C"] == "42601"
    assert w.read_message()[0] == b"Z"
    # a named portal ends at Sync: binding the same name again works
    for _ in range(2):
        w.send(pgwire.message(b"P", b"\0SHOW VERSION\0\0\0") + pgwire.message(b"B", b"p1\0\0\0\0\0\0\0\0") +
               pgwire.message(b"E", b"p1\0\0\0\0\0") + pgwire.message(b"S"))
        seen = _count(w, b"Z", 1)
        assert b"E" not in seen and seen.count(b"D") == 1
    # an unknown message type closes only this connection
    w.send(pgwire.message(b"y"))
    t, body = w.read_message()
    assert t == b"E" and pgwire.parse_fields(body)["C"] == "08P01"
    assert w.is_closed(timeout=5)
    with console(bun) as other:
        assert show(other, "STATE")


def test_a_set_value_too_long_is_refused_not_cut(start_pgbun):
    bun = start_pgbun(config={"admin_users": "postgres"})
    with console(bun) as conn:
        with pytest.raises(psycopg.errors.SyntaxError):
            conn.execute("SET stats_users = '" + "x" * 5000 + "'")
        assert row_for(show(conn, "CONFIG"), key="stats_users")["value"] == ""


def test_rights_follow_a_reload(start_pgbun):
    bun = start_pgbun(config={"admin_users": "postgres, md5user"})
    with console(bun, user="md5user") as conn:
        conn.execute("SET stats_users = 'md5user'")
        with console(bun) as root:
            root.execute("SET admin_users = 'postgres'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("RESUME")
        assert show(conn, "VERSION")  # still a stats user


def test_pause_of_a_mistyped_database_is_an_error_even_with_a_star_entry(start_pgbun, pg):
    bun = start_pgbun(config={"admin_users": "postgres"}, databases={"*": pg.entry(dbname=None)})
    with console(bun) as conn:
        with pytest.raises(psycopg.errors.ProtocolViolation, match="no such database: no_such_db"):
            conn.execute("PAUSE no_such_db")
        assert all(r["paused"] == 0 for r in show(conn, "DATABASES"))


def test_shutdown_stops_pgbun_at_once(start_pgbun):
    bun = start_pgbun(config={"admin_users": "postgres"})
    bystander = client(bun)
    bystander.execute("SELECT 1")
    res = bun.psql(["-U", "postgres", "-d", "pgbun", "-c", "SHUTDOWN"], check=False)
    assert "SHUTDOWN" in res.stdout or res.returncode != 0
    bun.proc.wait(timeout=10)
    assert bun.proc.returncode == 0
    assert "SHUTDOWN from the admin console" in bun.log_text()


def test_shutdown_wait_for_clients_waits_for_clients_but_not_for_consoles(start_pgbun):
    bun = start_pgbun(config={"admin_users": "postgres"})
    conn = client(bun)
    conn.execute("SELECT 1")
    with console(bun) as admin:
        admin.execute("SHUTDOWN WAIT_FOR_CLIENTS")
        time.sleep(0.5)
        assert bun.alive(), "pgbun stopped while a client was connected"
        assert conn.execute("SELECT 2").fetchone() == (2,)
        conn.close()  # the last client leaves; the console still connected does not count
        bun.proc.wait(timeout=10)
    assert bun.proc.returncode == 0


def test_shutdown_wait_for_servers_waits_for_the_open_transaction(start_pgbun):
    bun = start_pgbun(config={"admin_users": "postgres", "pool_mode": "transaction"})
    conn = client(bun, autocommit=False)
    conn.execute("SELECT 1")  # a transaction holds a server
    with console(bun) as admin:
        admin.execute("SHUTDOWN WAIT_FOR_SERVERS")
    time.sleep(0.5)
    assert bun.alive(), "pgbun stopped while a transaction held a server"
    conn.commit()
    bun.proc.wait(timeout=10)
    assert bun.proc.returncode == 0


def test_the_console_welcome_names_pgbun_and_a_version_psql_understands(start_pgbun, pg):
    bun = start_pgbun(config={"admin_users": "postgres"})
    with client(bun) as c:  # a server pool exists: the console borrows PostgreSQL's version from it
        c.execute("SELECT 1")
        real = c.info.parameter_status("server_version")
    with console(bun) as conn:
        version = conn.info.parameter_status("server_version")
        assert version.startswith(real.split()[0] + " (pgbun ")
        assert conn.info.server_version // 10000 == int(real.split(".")[0])
        assert conn.info.parameter_status("client_encoding") == "UTF8"
        assert conn.info.parameter_status("standard_conforming_strings") == "on"
    # psql connects without a version warning and prints a result
    res = bun.psql(["-U", "postgres", "-d", "pgbun", "-c", "SHOW VERSION"])
    assert "WARNING" not in res.stderr and "pgbun" in res.stdout


@pytest.mark.parametrize("section", ["databases", "users"])
def test_reload_of_session_state_alone_is_a_change_and_sighup_logs_it(start_pgbun, pg, section):
    def write(state):
        users = {"md5user": f"session_state={state}"} if section == "users" else None
        dbs = {"pgbun_test": pg.entry(session_state=state) if section == "databases" else pg.entry()}
        bun.config_path.write_text(_ini_lines("pgbun", bun.config, dbs, users))
        chown_to_run_user(bun.config_path)

    bun = start_pgbun(config={"admin_users": "postgres", "pool_mode": "transaction"})
    name = "md5user" if section == "users" else "pgbun_test"
    write("track")
    os.kill(bun.proc.pid, signal.SIGHUP)  # SIGHUP logs each change, as RELOAD sends it
    want = f"changed: [{section}] {name}: " + ("added" if section == "users" else "changed")
    wait_until(lambda: want in bun.log_text(), timeout=10, what="the SIGHUP's change in the log")
    write("off")
    notices = []
    with console(bun) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute("RELOAD")
    assert notices == [f"[{section}] {name}: changed"], notices


def test_reload_notices_name_changed_database_and_user_entries(start_pgbun, pg):
    bun = start_pgbun(config={"admin_users": "postgres"}, databases={"pgbun_test": pg.entry(), "gone": pg.entry()},
                      users={"md5user": "pool_size=3"})
    bun.config_path.write_text(_ini_lines("pgbun", bun.config, {"pgbun_test": pg.entry(pool_size=4),
                                                                "new_db": pg.entry()}, None))
    chown_to_run_user(bun.config_path)
    notices = []
    with console(bun) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute("RELOAD")
    assert "[databases] pgbun_test: changed" in notices
    assert "[databases] new_db: added" in notices
    assert "[databases] gone: removed" in notices
    assert "[users] md5user: removed" in notices
