"""Startup parameters: applied per client on a shared server, unknown ones
applied with SET, options=-c, ignore_startup_parameters, PostgreSQL's errors."""

import pytest

import pgwire

BASE = {"user": "postgres", "database": "pgbun_test"}


def show(w, name):
    return w.scalar(f"SHOW {name}")


def first_error(w, params):
    return pgwire.first_error(w, BASE["user"], BASE["database"], params=params)


def test_per_client_parameters_survive_a_shared_server(start_pgbun):
    bun = start_pgbun(config={"default_pool_size": 1})
    a = bun.login(params={"application_name": "a", "TimeZone": "Europe/Paris",
                          "DateStyle": "SQL, DMY"})
    pid = a.scalar("SELECT pg_backend_pid()")
    assert show(a, "application_name") == "a"
    assert show(a, "TimeZone") == "Europe/Paris"
    assert show(a, "DateStyle") == "SQL, DMY"
    a.terminate()

    b = bun.login(params={"application_name": "b", "TimeZone": "Asia/Tokyo",
                          "DateStyle": "German, DMY"})
    assert b.scalar("SELECT pg_backend_pid()") == pid, "the server was not shared"
    assert show(b, "application_name") == "b"
    assert show(b, "TimeZone") == "Asia/Tokyo"
    assert show(b, "DateStyle") == "German, DMY"
    b.terminate()

    a2 = bun.login(params={"application_name": "a", "TimeZone": "Europe/Paris",
                           "DateStyle": "SQL, DMY"})
    assert a2.scalar("SELECT pg_backend_pid()") == pid
    assert show(a2, "application_name") == "a"
    assert show(a2, "TimeZone") == "Europe/Paris"
    a2.terminate()


def test_parameter_status_at_login_shows_the_clients_own_values(start_pgbun):
    bun = start_pgbun(config={"default_pool_size": 1})
    a = bun.login(params={"application_name": "first", "TimeZone": "Europe/Paris"})
    assert a.params.get("application_name") == "first"
    assert a.params.get("TimeZone") == "Europe/Paris"
    a.terminate()
    b = bun.login(params={"application_name": "second", "TimeZone": "America/Chicago"})
    assert b.params.get("application_name") == "second"
    assert b.params.get("TimeZone") == "America/Chicago"
    for name in ("server_version", "client_encoding", "standard_conforming_strings",
                 "integer_datetimes", "DateStyle", "IntervalStyle", "server_encoding"):
        assert name in b.params, f"ParameterStatus {name} missing at login"
    b.terminate()


def test_client_encoding_is_per_client(start_pgbun):
    bun = start_pgbun(config={"default_pool_size": 1})
    with bun.connect(client_encoding="LATIN1") as a:
        assert a.execute("SHOW client_encoding").fetchone() == ("LATIN1",)
        assert a.execute("SELECT 'caf\u00e9'").fetchone() == ("caf\u00e9",)
    with bun.connect(client_encoding="UTF8") as b:
        assert b.execute("SHOW client_encoding").fetchone() == ("UTF8",)
        assert b.execute("SELECT 'caf\u00e9 \u2603'").fetchone() == ("caf\u00e9 \u2603",)


def test_set_in_session_reports_the_new_value(bun):
    with bun.connect() as conn:
        conn.execute("SET TimeZone = 'Pacific/Auckland'")
        assert conn.info.parameter_status("TimeZone") == "Pacific/Auckland"


def test_unknown_startup_parameters_are_applied_on_the_server(bun):
    w = bun.login(params={"extra_float_digits": "2", "search_path": "startup_schema",
                          "work_mem": "3MB"})
    assert show(w, "extra_float_digits") == "2"
    assert show(w, "search_path") == "startup_schema"
    assert show(w, "work_mem") == "3MB"
    w.terminate()


def test_custom_guc_startup_parameter_is_applied(bun):
    w = bun.login(params={"myapp.tenant": "t42"})
    assert w.scalar("SELECT current_setting('myapp.tenant')") == "t42"
    w.terminate()


def test_options_dash_c_takes_effect(bun):
    with bun.connect(options="-c search_path=opt_schema -c statement_timeout=4321") as conn:
        assert conn.execute("SHOW search_path").fetchone() == ("opt_schema",)
        assert conn.execute("SHOW statement_timeout").fetchone() == ("4321ms",)


@pytest.mark.parametrize("params", [
    {"search_path": "a_schema, b_schema"},
    {"options": "-c search_path=a_schema,b_schema"},
    {"options": "-c DateStyle=SQL,\\ YMD"},
    {"search_path": "\"Quoted Schema\", public"},
], ids=["startup-list", "options-list", "options-escaped-space", "startup-quoted"])
def test_list_valued_parameters_read_back_as_postgres_would(bun, pg, params):
    sql = "SELECT current_setting('search_path'), current_setting('DateStyle')"
    direct = pgwire.Wire(pg.host, pg.port)
    direct.login("postgres", "pgbun_test", params=params)
    expected = direct.query(sql)
    direct.terminate()
    w = bun.login(params=params)
    assert w.query(sql) == expected
    w.terminate()


def test_startup_parameters_do_not_leak_to_the_next_client(start_pgbun):
    bun = start_pgbun(config={"default_pool_size": 1})
    a = bun.login(params={"search_path": "a_only", "work_mem": "11MB"})
    pid = a.scalar("SELECT pg_backend_pid()")
    a.terminate()
    b = bun.login()
    assert b.scalar("SELECT pg_backend_pid()") == pid
    assert show(b, "search_path") != "a_only"
    assert show(b, "work_mem") != "11MB"
    b.terminate()


def test_ignore_startup_parameters_drops_the_listed_parameters(start_pgbun):
    bun = start_pgbun(config={"ignore_startup_parameters": "extra_float_digits, search_path"})
    w = bun.login(params={"extra_float_digits": "-5", "search_path": "ignored_schema"})
    assert show(w, "search_path") == '"$user", public'
    assert show(w, "extra_float_digits") == "1"
    w.terminate()


def test_jdbc_style_startup_parameters_work_without_ignore_startup_parameters(bun):
    w = bun.login(params={"extra_float_digits": "3", "DateStyle": "ISO",
                          "client_encoding": "UTF8", "TimeZone": "UTC",
                          "application_name": "PostgreSQL JDBC Driver"})
    assert show(w, "extra_float_digits") == "3"
    assert w.scalar("SELECT 1.0::float8 / 3") == "0.3333333333333333"
    w.terminate()


@pytest.mark.parametrize("params", [
    {"work_mem": "bogus"},
    {"no_such_setting": "1"},
    {"options": "-c statement_timeout=lots"},
], ids=["bad-value", "unknown-guc", "bad-options"])
def test_parameter_postgres_rejects_gets_postgres_error(bun, pg, params):
    direct = pgwire.Wire(pg.host, pg.port)
    expected = first_error(direct, params)
    direct.close()
    assert expected is not None, "PostgreSQL accepted the parameter; the test is wrong"

    w = bun.wire()
    got = first_error(w, params)
    assert got is not None, "pgbun accepted a parameter PostgreSQL refuses"
    assert got.sqlstate == expected.sqlstate
    assert got.message == expected.message


def test_rejected_parameter_leaves_the_pool_usable(bun):
    w = bun.wire()
    assert first_error(w, {"work_mem": "bogus"}) is not None
    w.close()
    with bun.connect() as conn:
        assert conn.execute("SHOW work_mem").fetchone()[0] != "bogus"
        assert conn.execute("SELECT 1").fetchone() == (1,)
