"""Client authentication (auth_type x auth_file secret) and server login."""

import psycopg
import pytest

import pgwire
from conftest import ROLES

USER = "alice"
PASSWORD = "Wonder land 1"

# (auth_type, kind of secret in auth_file, authentication request the client sees)
CASES = [
    ("plain", "plain", pgwire.AUTH_CLEARTEXT),
    ("md5", "md5", pgwire.AUTH_MD5),
    ("md5", "plain", pgwire.AUTH_MD5),
    ("md5", "scram", pgwire.AUTH_SASL),  # an md5 pool with a SCRAM secret upgrades to SCRAM
    ("scram-sha-256", "plain", pgwire.AUTH_SASL),
    ("scram-sha-256", "scram", pgwire.AUTH_SASL),
]
IDS = [f"{a}-with-{s}-secret" for a, s, _ in CASES]


def secret_of(kind, user=USER, password=PASSWORD):
    if kind == "plain":
        return password
    if kind == "md5":
        return pgwire.md5_secret(user, password)
    return pgwire.scram_secret(password)


@pytest.fixture
def auth_bun(start_pgbun, pg):
    """pgbun with the given auth_type/secret; the server side logs in as the
    trusted superuser, so only client authentication is under test."""
    def factory(auth_type, kind):
        return start_pgbun(
            config={"auth_type": auth_type},
            databases={"pgbun_test": pg.entry(user="postgres")},
            auth_file={USER: secret_of(kind), "bob": secret_of(kind, "bob", "bobs secret")},
        )
    return factory


def test_trust_accepts_a_client_without_a_password(bun):
    with bun.connect(user="postgres") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_trust_ignores_whatever_password_the_client_has(bun):
    with bun.connect(user="postgres", password="not checked") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("auth_type,kind,request_code", CASES, ids=IDS)
def test_right_password_is_accepted(auth_bun, auth_type, kind, request_code):
    bun = auth_bun(auth_type, kind)
    with bun.connect(user=USER, password=PASSWORD) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)


@pytest.mark.parametrize("auth_type,kind,request_code", CASES, ids=IDS)
def test_client_is_asked_for_the_method_matching_auth_type_and_secret(auth_bun, auth_type, kind,
                                                                      request_code):
    bun = auth_bun(auth_type, kind)
    w = bun.login(user=USER, password=PASSWORD)  # also verifies the SCRAM server signature
    assert w.auth_requests[0] == request_code
    assert w.auth_requests[-1] == pgwire.AUTH_OK
    assert w.scalar("SELECT 'in'") == "in"
    w.terminate()


@pytest.mark.parametrize("auth_type,kind,request_code", CASES, ids=IDS)
def test_wrong_password_is_refused_with_28P01(auth_bun, auth_type, kind, request_code):
    bun = auth_bun(auth_type, kind)
    w = bun.wire()
    with pytest.raises(pgwire.PgError) as err:
        w.login(USER, "pgbun_test", password="wrong password")
    assert err.value.sqlstate == "28P01"
    assert err.value.message == f'password authentication failed for user "{USER}"'
    assert w.is_closed(timeout=5), "pgbun kept the connection open after a failed login"


@pytest.mark.parametrize("auth_type,kind,request_code", CASES, ids=IDS)
def test_wrong_password_fails_psycopg_connect_with_postgres_text(auth_bun, auth_type, kind,
                                                                 request_code):
    bun = auth_bun(auth_type, kind)
    with pytest.raises(psycopg.OperationalError) as err:
        bun.connect(user=USER, password="nope")
    assert f'password authentication failed for user "{USER}"' in str(err.value)


def test_missing_password_is_refused(auth_bun):
    bun = auth_bun("md5", "plain")
    with pytest.raises(psycopg.OperationalError):
        bun.connect(user=USER, password="")


def test_user_missing_from_auth_file_is_refused_like_a_wrong_password(auth_bun):
    bun = auth_bun("scram-sha-256", "plain")
    w = bun.wire()
    with pytest.raises(pgwire.PgError) as err:
        w.login("mallory", "pgbun_test", password="whatever")
    assert err.value.sqlstate == "28P01"
    assert err.value.message == 'password authentication failed for user "mallory"'


def test_failed_login_leaves_other_clients_working(auth_bun):
    bun = auth_bun("md5", "md5")
    with bun.connect(user=USER, password=PASSWORD) as good:
        for _ in range(3):
            with pytest.raises(psycopg.OperationalError):
                bun.connect(user=USER, password="bad")
        assert good.execute("SELECT 2").fetchone() == (2,)
    with bun.connect(user="bob", password="bobs secret") as conn:
        assert conn.execute("SELECT 3").fetchone() == (3,)


def test_password_never_appears_in_the_log(start_pgbun, pg, pgbun_workdir):
    secret = "Sekr1t-Zebra-Quartz"
    logfile = pgbun_workdir / "pgbun-logfile.log"
    bun = start_pgbun(
        config={"auth_type": "scram-sha-256", "logfile": str(logfile)},
        databases={"pgbun_test": pg.entry(user="postgres")},
        auth_file={USER: secret},
        args=["-v", "-v"],
    )
    with bun.connect(user=USER, password=secret) as conn:
        conn.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError):
        bun.connect(user=USER, password=secret + "x")
    text = bun.log_text()
    assert text, "nothing was logged"
    assert secret not in text


# ------------------------------------------------------------------ server login

SERVER_METHODS = {"md5user": "md5", "scramuser": "scram-sha-256", "passuser": "cleartext"}


@pytest.mark.parametrize("role", sorted(SERVER_METHODS), ids=lambda r: SERVER_METHODS[r])
def test_server_login_with_password_from_the_database_entry(start_pgbun, pg, role):
    password = ROLES[role][0]
    bun = start_pgbun(databases={"srvdb": pg.entry(user=role, password=password)})
    with bun.connect(dbname="srvdb", user=role) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == \
            (role, "pgbun_test")
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (10,)


@pytest.mark.parametrize("role", sorted(SERVER_METHODS), ids=lambda r: SERVER_METHODS[r])
def test_server_login_with_the_users_plain_secret_from_auth_file(start_pgbun, pg, role):
    password = ROLES[role][0]
    bun = start_pgbun(config={"auth_type": "scram-sha-256"},
                      databases={"pgbun_test": pg.entry()},
                      auth_file={role: password})
    with bun.connect(user=role, password=password) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (role,)


def test_pgbun_user_from_init_sql_logs_in_with_scram_end_to_end(start_pgbun, pg):
    bun = start_pgbun(config={"auth_type": "scram-sha-256"},
                      databases={"*": pg.entry(dbname=None)},
                      auth_file={"pgbun_user": "pgbun_pass"})
    with bun.connect(user="pgbun_user", password="pgbun_pass") as conn:
        conn.execute("INSERT INTO txn_log (client_id, amount, note) VALUES (77, 7, 'via pgbun')")
        assert conn.execute("SELECT note FROM txn_log WHERE client_id = 77").fetchone() == \
            ("via pgbun",)
        conn.execute("DELETE FROM txn_log WHERE client_id = 77")


def test_wrong_server_password_gives_the_client_an_error_not_a_hang(start_pgbun, pg):
    bun = start_pgbun(config={"server_connect_timeout": 3},
                      databases={"srvdb": pg.entry(user="md5user", password="not-the-password")})
    with pytest.raises(psycopg.OperationalError) as err:
        with bun.connect(dbname="srvdb", user="md5user") as conn:
            conn.execute("SELECT 1")
    assert "password authentication failed" in str(err.value) or "login failed" in str(err.value)
