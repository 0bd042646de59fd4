"""A PostgreSQL that goes away and comes back."""

import time

import psycopg
import pytest

import pgwire
from conftest import wait_until

CONNECT_TIMEOUT = 3


def first_error(bun):
    """Log in and run a query through pgbun; the first PgError, or None."""
    return pgwire.first_error(bun.wire(timeout=CONNECT_TIMEOUT + 10), "postgres", "pgbun_test")


def query_works(bun):
    with bun.connect() as conn:
        return conn.execute("SELECT 'back'").fetchone() == ("back",)


@pytest.fixture
def down_setup(make_postgres, start_pgbun):
    own = make_postgres()
    bun = start_pgbun(config={"server_connect_timeout": CONNECT_TIMEOUT},
                      databases={"pgbun_test": own.entry()})
    assert query_works(bun)  # leaves an idle server in the pool
    return own, bun


def test_server_down_gives_08006_naming_host_and_port(down_setup):
    own, bun = down_setup
    own.stop()
    start = time.monotonic()
    err = first_error(bun)
    elapsed = time.monotonic() - start
    assert err is not None, "pgbun served a client with PostgreSQL down"
    assert err.sqlstate == "08006", err.fields
    assert "127.0.0.1" in err.message and str(own.port) in err.message, err.message
    assert elapsed < CONNECT_TIMEOUT + 5, f"the error took {elapsed:.1f}s"
    assert bun.alive()


@pytest.mark.timeout(30)
def test_server_down_error_reaches_psycopg(down_setup):
    own, bun = down_setup
    own.stop()
    with pytest.raises(psycopg.OperationalError) as err:
        with bun.connect() as conn:
            conn.execute("SELECT 1")
    assert str(own.port) in str(err.value)


def test_pgbun_serves_again_when_the_server_is_back(down_setup):
    own, bun = down_setup
    own.stop()
    assert first_error(bun) is not None
    assert first_error(bun) is not None  # still down: still a clear error, no hang
    own.start()
    start = time.monotonic()
    wait_until(lambda: query_works(bun), timeout=10, interval=0.2,
               what="pgbun to serve again after PostgreSQL restarted")
    assert time.monotonic() - start < 10


def test_client_linked_to_a_server_that_dies_gets_an_error_and_others_recover(down_setup):
    own, bun = down_setup
    conn = bun.connect()
    conn.execute("SELECT 1")
    own.stop()
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    conn.close()
    own.start()
    wait_until(lambda: query_works(bun), timeout=10, interval=0.2,
               what="pgbun to serve again after PostgreSQL restarted")
    assert bun.alive()


def test_restart_while_pgbun_is_idle_does_not_hand_out_dead_servers(down_setup):
    own, bun = down_setup
    own.stop()
    own.start()
    # The pool's idle server died with the old PostgreSQL: the first client
    # after the restart must get a live one (retry once at most).
    wait_until(lambda: query_works(bun), timeout=10, interval=0.2, what="a working server")
    for _ in range(3):
        assert query_works(bun)


def test_returning_server_is_used_within_5_s_after_many_failures(down_setup):
    own, bun = down_setup
    own.stop()
    deadline = time.monotonic() + 6
    failures = 0
    while time.monotonic() < deadline:  # keep failing long enough for the back-off to grow
        if first_error(bun) is not None:
            failures += 1
        time.sleep(0.2)
    assert failures >= 3
    own.start()
    start = time.monotonic()
    wait_until(lambda: query_works(bun), timeout=15, interval=0.1,
               what="pgbun to serve again after PostgreSQL restarted")
    elapsed = time.monotonic() - start
    assert elapsed < 7, f"pgbun took {elapsed:.1f} s to use the returning server"
