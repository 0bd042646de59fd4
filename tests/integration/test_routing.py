"""Which server a database name leads to: [databases] entries and the * fallback."""

import pytest

import pgwire


def login_error(bun, database, user="postgres"):
    return pgwire.first_error(bun.wire(), user, database)


def test_unknown_database_without_fallback_gets_3D000(bun):
    err = login_error(bun, "no_such_db")
    assert err is not None
    assert err.sqlstate == "3D000", err.fields
    assert "no_such_db" in err.message


def test_unknown_database_leaves_pgbun_serving(bun):
    for _ in range(3):
        assert login_error(bun, "no_such_db") is not None
    with bun.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_star_entry_forwards_any_database_name(start_pgbun, pg):
    bun = start_pgbun(databases={"*": pg.entry(dbname=None)})
    for db in ("pgbun_test", "postgres", "template1"):
        with bun.connect(dbname=db) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (db,)


def test_star_entry_to_a_database_postgres_lacks_gets_postgres_error(start_pgbun, pg):
    bun = start_pgbun(databases={"*": pg.entry(dbname=None)})
    err = login_error(bun, "missing_on_server")
    assert err is not None
    assert err.sqlstate == "3D000"
    assert 'database "missing_on_server" does not exist' in err.message


def test_named_entry_wins_over_star(start_pgbun, pg):
    bun = start_pgbun(databases={"*": pg.entry(dbname=None),
                                 "postgres": pg.entry(dbname="pgbun_test")})
    with bun.connect(dbname="postgres") as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("pgbun_test",)


def test_alias_maps_to_the_entry_dbname(start_pgbun, pg):
    bun = start_pgbun(databases={"shop": pg.entry(dbname="pgbun_test")})
    with bun.connect(dbname="shop") as conn:
        assert conn.execute("SELECT current_database(), count(*) FROM users").fetchone() == \
            ("pgbun_test", 10)


def test_entry_user_forces_the_server_user(start_pgbun, pg):
    bun = start_pgbun(databases={"pgbun_test": pg.entry(user="postgres")})
    with bun.connect(user="md5user") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)


@pytest.mark.parametrize("dbname", ["pgbun_test", "postgres"])
def test_pools_are_per_database(start_pgbun, pg, dbname):
    bun = start_pgbun(databases={"*": pg.entry(dbname=None)}, config={"default_pool_size": 1})
    with bun.connect(dbname="pgbun_test") as a, bun.connect(dbname="postgres") as b:
        # pool_size 1 per (db, user): both hold a server at once
        assert a.execute("SELECT 1").fetchone() == (1,)
        assert b.execute("SELECT 1").fetchone() == (1,)


def test_server_host_given_by_name_is_resolved(start_pgbun, pg):
    bun = start_pgbun(databases={"pgbun_test": f"host=localhost port={pg.port} dbname=pgbun_test"})
    with bun.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_unresolvable_server_host_gives_08006_naming_it(start_pgbun, pg):
    # A name that does not resolve is retried like a server that is down: the
    # client hears of it at query_wait_timeout.
    bun = start_pgbun(config={"query_wait_timeout": 2},
                      databases={"pgbun_test": "host=no-such-host.invalid port=5432 dbname=pgbun_test"})
    err = login_error(bun, "pgbun_test")
    assert err is not None and err.sqlstate == "08006", err
    assert "no-such-host.invalid" in err.message
