"""TLS between pgbun and PostgreSQL (the server_tls_* keys).

Each test runs a real PostgreSQL with ssl = on (tlscerts.ssl_postgres) and
looks at the connection pgbun opened from PostgreSQL's side (pg_stat_ssl of
the backend serving a client) or at the error a client gets when pgbun
cannot, or must not, log in to it. server_tls_sslmode has libpq's meanings,
prefer being the default as in PgBouncer; TLS is never used over a unix
socket.

PgBouncer 1.18 (PGBUN_TEST_PEER=pgbouncer) only logs why a TLS login to
PostgreSQL failed and leaves the waiting client to query_wait_timeout; pgbun
hands the reason to the client. Where a test checks that reason, it looks
in PgBouncer's log instead (reason_in).
"""

import shutil
import socket
import struct
import threading

import psycopg
import pytest

import pgwire
from conftest import IS_PGBOUNCER, Postgres, _ini_lines, backend_pid, chown_to_run_user, sockets_to_port
from tlscerts import CERT_HBA, HOSTSSL_ONLY_HBA, cert_dates, ssl_postgres
from tlscerts import tls_certs  # noqa: F401

SECTION = "pgbouncer" if IS_PGBOUNCER else "pgbun"
CONSOLE_DB = "pgbouncer" if IS_PGBOUNCER else "pgbun"
QUERY_WAIT = 4  # PgBouncer fails a client waiting for a server that cannot log in only then
SSL_QUERY = "SELECT ssl, version, cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


@pytest.fixture(scope="module")
def ssl_pgs(tls_certs):  # noqa: F811 - the fixture imported above
    """ssl_pgs(variant): a PostgreSQL with ssl = on, made once per module for each variant
    (which certificate it serves, its pg_hba.conf, extra settings)."""
    variants = {
        "server": {},
        "hostssl_only": {"hba": HOSTSSL_ONLY_HBA},  # TCP over TLS only
        "cert_hba": {"hba": CERT_HBA},  # postgres gets in with a certificate (CN=postgres) signed by ca
        "wrongname": {"cert": tls_certs.wrongname_crt, "key": tls_certs.wrongname_key},
        "expired": {"cert": tls_certs.expired_crt, "key": tls_certs.expired_key},
        "tls12_max": {"extra_conf": "ssl_max_protocol_version = 'TLSv1.2'"},
    }
    servers = {}

    def get(variant):
        if variant not in servers:
            servers[variant] = Postgres(f"ssl-{variant}").init_or_clean_up(
                lambda s: ssl_postgres(s, tls_certs, **variants[variant]))
        return servers[variant]

    yield get
    for server in servers.values():
        server.destroy()


@pytest.fixture
def ssl_pg(ssl_pgs):
    """A PostgreSQL with ssl = on serving server_crt, conftest's pg_hba (host lines: TLS optional)."""
    return ssl_pgs("server")


def db(pg, host="127.0.0.1"):
    """A [databases] entry for pgbun_test on pg, reached at host."""
    return {"pgbun_test": f"host={host} port={pg.port} dbname=pgbun_test"}


def start(start_pgbun, pg, host="127.0.0.1", databases=None, **config):
    """pgbun in front of pg with the given [pgbun] keys; failures surface within QUERY_WAIT."""
    cfg = {"admin_users": "postgres", "query_wait_timeout": QUERY_WAIT}
    cfg.update(config)
    databases = databases or db(pg, host)
    bun = start_pgbun(config=cfg, databases=databases)
    bun.databases = databases
    return bun


def ssl_row(bun, **kw):
    """(ssl, version, cipher) of the PostgreSQL backend serving a client of bun."""
    with bun.connect(**kw) as conn:
        return conn.execute(SSL_QUERY).fetchone()


def first_error(bun, dbname="pgbun_test"):
    """The error a client gets logging in through bun and running a query (None: served)."""
    return pgwire.first_error(bun.wire(timeout=QUERY_WAIT + 10), "postgres", dbname)


def reason_in(bun, err, *needles, logged=None):
    """The client's error from pgbun, lowercased, once it is checked to give the reason a
    login to PostgreSQL failed (every needle in it). PgBouncer 1.18 gives its client
    only query_wait_timeout and logs its own wording: there the log must hold `logged`."""
    assert err is not None, "the client was served"
    if IS_PGBOUNCER:
        log = bun.log_text()
        missing = [n for n in (logged or needles) if n not in log]
        assert not missing, f"{missing} not in PgBouncer's log:\n{log[-3000:]}"
        return err.message.lower()
    text = err.message.lower()
    missing = [n for n in needles if n.lower() not in text]
    assert not missing, f"{missing} not in the client's error: {err.fields}"
    return text


def console_rows(bun, what):
    with bun.connect(dbname=CONSOLE_DB) as admin:
        cur = admin.execute(f"SHOW {what}")
        names = [d.name for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]


def rewrite_config(bun, **changes):
    """The running daemon's ini written again with some [pgbun] keys changed (None drops one)."""
    cfg = {**bun.config, **changes}
    bun.config_path.write_text(_ini_lines(SECTION, cfg, bun.databases, None))
    chown_to_run_user(bun.config_path)


# ------------------------------------------------------------------ sslmode

def test_require_runs_the_server_connection_over_tls(start_pgbun, ssl_pg):
    bun = start(start_pgbun, ssl_pg, server_tls_sslmode="require")
    with bun.connect() as conn:
        ssl, version, cipher = conn.execute(SSL_QUERY).fetchone()
        assert ssl is True, "PostgreSQL sees a plain-text connection from pgbun"
        assert version.startswith("TLSv1."), version
        assert cipher, cipher
        servers = [r for r in console_rows(bun, "SERVERS") if r["database"] == "pgbun_test"]
        assert len(servers) == 1, servers
        assert servers[0]["tls"].startswith("TLSv1."), servers


@pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer 1.18 defaults server_tls_sslmode to disable")
def test_default_sslmode_uses_tls_when_postgresql_offers_it(start_pgbun, ssl_pg):
    bun = start(start_pgbun, ssl_pg)  # no server_tls_sslmode: prefer
    ssl, version, _ = ssl_row(bun)
    assert ssl is True and version.startswith("TLSv1."), (ssl, version)


def test_default_sslmode_talks_plain_text_to_a_postgresql_without_tls(start_pgbun, pg):
    bun = start(start_pgbun, pg)
    with bun.connect() as conn:
        assert conn.execute(SSL_QUERY).fetchone() == (False, None, None)
        servers = [r for r in console_rows(bun, "SERVERS") if r["database"] == "pgbun_test"]
        assert [s["tls"] for s in servers] == [""], servers


def test_tls_is_not_used_over_a_unix_socket_even_with_require(start_pgbun, ssl_pg):
    bun = start(start_pgbun, ssl_pg, host=ssl_pg.sockdir, server_tls_sslmode="require")
    assert ssl_row(bun) == (False, None, None)


def test_require_against_a_postgresql_without_tls_fails_the_client_and_pgbun_stays_up(start_pgbun, pg):
    bun = start(start_pgbun, pg, server_tls_sslmode="require")
    text = reason_in(bun, first_error(bun), "not support", logged=["server refused SSL"])
    assert IS_PGBOUNCER or "tls" in text or "ssl" in text, text
    assert bun.alive()
    assert sockets_to_port(bun.proc.pid, pg.port) == 0, "pgbun kept a plain-text connection to PostgreSQL"


def test_disable_is_refused_by_a_hostssl_only_postgresql(start_pgbun, ssl_pgs):
    own = ssl_pgs("hostssl_only")
    bun = start(start_pgbun, own, server_tls_sslmode="disable")
    err = first_error(bun)
    assert err is not None, "pgbun logged in without TLS where pg_hba.conf allows only hostssl"
    assert err.sqlstate == ("08P01" if IS_PGBOUNCER else "28000"), err.fields  # PgBouncer: its own code
    assert "pg_hba.conf" in err.message and "no encryption" in err.message, err.fields
    assert bun.alive()


@pytest.mark.parametrize("mode", ["prefer", "allow"])
def test_prefer_and_allow_log_in_to_a_hostssl_only_postgresql(start_pgbun, ssl_pgs, mode):
    own = ssl_pgs("hostssl_only")
    bun = start(start_pgbun, own, server_tls_sslmode=mode)
    ssl, version, _ = ssl_row(bun)
    assert ssl is True and version.startswith("TLSv1."), (ssl, version)


@pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer 1.18's allow asks for TLS first, as prefer does")
def test_allow_uses_plain_text_when_postgresql_accepts_it(start_pgbun, ssl_pg):
    bun = start(start_pgbun, ssl_pg, server_tls_sslmode="allow")
    assert ssl_row(bun) == (False, None, None)


# ------------------------------------------------------------------ verification

def test_verify_ca_with_the_signing_ca_logs_in(start_pgbun, ssl_pg, tls_certs):  # noqa: F811
    bun = start(start_pgbun, ssl_pg, server_tls_sslmode="verify-ca", server_tls_ca_file=tls_certs.ca_crt)
    assert ssl_row(bun)[0] is True


def test_verify_ca_with_another_ca_fails_with_certificate_verify_failed(start_pgbun, ssl_pg, tls_certs):  # noqa: F811
    bun = start(start_pgbun, ssl_pg, server_tls_sslmode="verify-ca", server_tls_ca_file=tls_certs.other_ca_crt)
    reason_in(bun, first_error(bun), "certificate verify failed")
    assert bun.alive()


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_verify_full_accepts_a_certificate_naming_the_host(start_pgbun, ssl_pg, tls_certs, host):  # noqa: F811
    bun = start(start_pgbun, ssl_pg, host=host, server_tls_sslmode="verify-full",
                server_tls_ca_file=tls_certs.ca_crt)
    assert ssl_row(bun)[0] is True


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_verify_full_refuses_a_certificate_for_another_name_naming_the_host(start_pgbun, ssl_pgs, tls_certs,
                                                                            host):  # noqa: F811
    own = ssl_pgs("wrongname")
    bun = start(start_pgbun, own, host=host, server_tls_sslmode="verify-full", server_tls_ca_file=tls_certs.ca_crt)
    # OpenSSL's "hostname mismatch" / "IP address mismatch", or libpq's "does not match host name"
    reason_in(bun, first_error(bun), host, "match", logged=[f"name `{host}' not present in server certificate"])
    assert bun.alive()


def test_verify_ca_accepts_a_certificate_for_another_name(start_pgbun, ssl_pgs, tls_certs):  # noqa: F811
    own = ssl_pgs("wrongname")
    bun = start(start_pgbun, own, server_tls_sslmode="verify-ca", server_tls_ca_file=tls_certs.ca_crt)
    assert ssl_row(bun)[0] is True


def test_verify_ca_refuses_an_expired_certificate(start_pgbun, ssl_pgs, tls_certs):  # noqa: F811
    assert cert_dates(tls_certs.expired_crt)[1].endswith("2021 GMT")
    own = ssl_pgs("expired")
    bun = start(start_pgbun, own, server_tls_sslmode="verify-ca", server_tls_ca_file=tls_certs.ca_crt)
    reason_in(bun, first_error(bun), "certificate verify failed", "expired",
              logged=["certificate verify failed"])  # PgBouncer 1.18 logs no reason
    assert bun.alive()


# ------------------------------------------------------------------ client certificate

@pytest.fixture
def cert_pg(ssl_pgs):
    """A PostgreSQL that lets postgres in over TCP only with a certificate (CN=postgres) signed by ca."""
    return ssl_pgs("cert_hba")


def test_server_tls_cert_and_key_log_in_where_pg_hba_says_cert(start_pgbun, cert_pg, tls_certs):  # noqa: F811
    bun = start(start_pgbun, cert_pg, server_tls_sslmode="require", server_tls_cert_file=tls_certs.client_crt,
                server_tls_key_file=tls_certs.client_key)
    with bun.connect() as conn:
        row = conn.execute("SELECT ssl, client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert row == (True, "/CN=postgres"), row


def test_without_a_client_certificate_pg_hba_cert_refuses_the_login(start_pgbun, cert_pg):
    bun = start(start_pgbun, cert_pg, server_tls_sslmode="require")
    err = first_error(bun)
    assert err is not None, "PostgreSQL let pgbun in without a certificate"
    assert err.sqlstate == ("08P01" if IS_PGBOUNCER else "28000"), err.fields  # PgBouncer: its own code
    assert "certificate" in err.message, err.fields
    assert bun.alive()


def test_a_client_certificate_from_another_ca_is_refused(start_pgbun, cert_pg, tls_certs):  # noqa: F811
    bun = start(start_pgbun, cert_pg, server_tls_sslmode="require", server_tls_cert_file=tls_certs.other_client_crt,
                server_tls_key_file=tls_certs.other_client_key)
    assert first_error(bun) is not None, "PostgreSQL took a certificate signed by an unknown CA"
    assert bun.alive()


# ------------------------------------------------------------------ protocols and ciphers

def test_server_tls_protocols_tlsv1_2_gives_a_tls_1_2_connection(start_pgbun, ssl_pg):
    bun = start(start_pgbun, ssl_pg, server_tls_sslmode="require", server_tls_protocols="tlsv1.2")
    assert ssl_row(bun)[:2] == (True, "TLSv1.2")


def test_server_tls_protocols_tlsv1_3_cannot_log_in_to_a_postgresql_capped_at_tls_1_2(start_pgbun, ssl_pgs):
    # (PostgreSQL picks TLS 1.3 whenever offered: only a refusal shows 1.2 is not offered.)
    own = ssl_pgs("tls12_max")
    bun = start(start_pgbun, own, server_tls_sslmode="require", server_tls_protocols="tlsv1.3")
    assert first_error(bun) is not None, "pgbun spoke TLS 1.2 with server_tls_protocols = tlsv1.3"
    assert bun.alive()


def test_server_tls_ciphers_picks_the_tls_1_2_cipher(start_pgbun, ssl_pg):
    bun = start(start_pgbun, ssl_pg, server_tls_sslmode="require", server_tls_protocols="tlsv1.2",
                server_tls_ciphers="ECDHE-RSA-AES128-GCM-SHA256")
    assert ssl_row(bun) == (True, "TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256")


@pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer 1.18 has no server_tls13_ciphers")
def test_server_tls13_ciphers_picks_the_tls_1_3_cipher(start_pgbun, ssl_pg):
    bun = start(start_pgbun, ssl_pg, server_tls_sslmode="require", server_tls13_ciphers="TLS_CHACHA20_POLY1305_SHA256")
    assert ssl_row(bun) == (True, "TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256")


# ------------------------------------------------------------------ files: start and RELOAD

@pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer 1.18 starts with a missing server_tls_ca_file")
def test_a_missing_server_tls_ca_file_stops_pgbun_at_start(start_pgbun, ssl_pg, tls_certs):  # noqa: F811
    missing = tls_certs.dir / "no-such-ca.crt"
    bun = start_pgbun(config={"server_tls_sslmode": "verify-ca", "server_tls_ca_file": missing},
                      databases=db(ssl_pg), wait=False)
    try:
        rc = bun.proc.wait(timeout=10)
    except Exception:
        raise AssertionError(f"pgbun kept running with server_tls_ca_file = {missing}:\n{bun.log_text()}")
    bun.expected_exit = rc
    assert rc != 0, bun.log_text()
    assert str(missing) in bun.log_text(), bun.log_text()


def test_reload_with_a_wrong_ca_fails_new_server_logins_and_keeps_the_linked_session(start_pgbun, ssl_pg,
                                                                                    tls_certs):  # noqa: F811
    bun = start(start_pgbun, ssl_pg, pool_mode="session", server_tls_sslmode="verify-ca",
                server_tls_ca_file=tls_certs.ca_crt)
    session = bun.connect()
    pid = backend_pid(session)
    assert session.execute(SSL_QUERY).fetchone()[0] is True
    rewrite_config(bun, server_tls_ca_file=tls_certs.other_ca_crt)
    with bun.connect(dbname=CONSOLE_DB) as admin:
        admin.execute("RELOAD")
    reason_in(bun, first_error(bun), "certificate verify failed")  # needs a second server: verified again
    assert backend_pid(session) == pid, "the session moved to another server"
    assert session.execute("SELECT 'still served'").fetchone() == ("still served",)
    assert bun.alive()


def test_reload_rereads_a_ca_file_changed_in_place(start_pgbun, ssl_pg, tls_certs):  # noqa: F811
    ca_file = tls_certs.dir / "reloaded-ca.crt"
    shutil.copyfile(tls_certs.ca_crt, ca_file)
    chown_to_run_user(ca_file)
    bun = start(start_pgbun, ssl_pg, pool_mode="session", server_tls_sslmode="verify-ca", server_tls_ca_file=ca_file)
    session = bun.connect()
    pid = backend_pid(session)
    shutil.copyfile(tls_certs.other_ca_crt, ca_file)  # same name, another CA
    with bun.connect(dbname=CONSOLE_DB) as admin:
        admin.execute("RELOAD")
    reason_in(bun, first_error(bun), "certificate verify failed")
    assert backend_pid(session) == pid
    assert bun.alive()


@pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer 1.18's RELOAD accepts a missing server_tls_ca_file")
def test_reload_with_a_missing_ca_file_fails_naming_it_and_keeps_the_running_setup(start_pgbun, ssl_pg,
                                                                                   tls_certs):  # noqa: F811
    bun = start(start_pgbun, ssl_pg, pool_mode="session", server_tls_sslmode="verify-ca",
                server_tls_ca_file=tls_certs.ca_crt)
    session = bun.connect()
    pid = backend_pid(session)
    missing = tls_certs.dir / "no-such-ca.crt"
    rewrite_config(bun, server_tls_ca_file=missing)
    with bun.connect(dbname=CONSOLE_DB) as admin:
        with pytest.raises(psycopg.Error) as err:
            admin.execute("RELOAD")
    assert str(missing) in str(err.value), str(err.value)
    with bun.connect() as second:  # a second server, verified with the CA still in use
        assert second.execute(SSL_QUERY).fetchone()[0] is True
        assert backend_pid(second) != pid
    assert backend_pid(session) == pid


def test_reload_changing_server_tls_sslmode_replaces_the_idle_servers(start_pgbun, ssl_pg):
    bun = start(start_pgbun, ssl_pg, pool_mode="transaction", server_tls_sslmode="require")
    with bun.connect() as conn:
        assert conn.execute(SSL_QUERY).fetchone()[0] is True  # an idle TLS server stays in the pool
    rewrite_config(bun, server_tls_sslmode="disable")
    with bun.connect(dbname=CONSOLE_DB) as admin:
        admin.execute("RELOAD")
    assert ssl_row(bun) == (False, None, None), "a server made with the old setting served a new client"


# ------------------------------------------------------------------ per-database keys in [databases]

PER_DATABASE = pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer 1.18 has no TLS keys in [databases]")


def two_dbs(pg, **own):
    """[databases]: `own` with its own TLS keys (libpq names), `plain` with none; both pgbun_test on pg."""
    base = f"host=127.0.0.1 port={pg.port} dbname=pgbun_test"
    return {"own": " ".join([base] + [f"{k}={v}" for k, v in own.items()]), "plain": base}


@PER_DATABASE
def test_database_sslmode_overrides_server_tls_sslmode(start_pgbun, ssl_pg):
    bun = start(start_pgbun, ssl_pg, databases=two_dbs(ssl_pg, sslmode="require"), server_tls_sslmode="disable")
    assert ssl_row(bun, dbname="own")[0] is True
    assert ssl_row(bun, dbname="plain") == (False, None, None)


@PER_DATABASE
def test_database_sslmode_disable_overrides_server_tls_sslmode_require(start_pgbun, ssl_pg):
    bun = start(start_pgbun, ssl_pg, databases=two_dbs(ssl_pg, sslmode="disable"), server_tls_sslmode="require")
    assert ssl_row(bun, dbname="own") == (False, None, None)
    assert ssl_row(bun, dbname="plain")[0] is True


@PER_DATABASE
def test_database_sslrootcert_overrides_server_tls_ca_file(start_pgbun, ssl_pg, tls_certs):  # noqa: F811
    bun = start(start_pgbun, ssl_pg, databases=two_dbs(ssl_pg, sslrootcert=tls_certs.other_ca_crt),
                server_tls_sslmode="verify-ca", server_tls_ca_file=tls_certs.ca_crt)
    reason_in(bun, first_error(bun, "own"), "certificate verify failed")
    assert ssl_row(bun, dbname="plain")[0] is True


@PER_DATABASE
def test_database_sslmode_verify_full_checks_the_name_with_its_sslrootcert(start_pgbun, ssl_pgs,
                                                                           tls_certs):  # noqa: F811
    own = ssl_pgs("wrongname")
    bun = start(start_pgbun, own, databases=two_dbs(own, sslmode="verify-full", sslrootcert=tls_certs.ca_crt),
                server_tls_sslmode="require")
    reason_in(bun, first_error(bun, "own"), "127.0.0.1", "match")
    assert ssl_row(bun, dbname="plain")[0] is True


@PER_DATABASE
def test_database_sslcert_and_sslkey_log_in_where_pg_hba_says_cert(start_pgbun, cert_pg, tls_certs):  # noqa: F811
    bun = start(start_pgbun, cert_pg, databases=two_dbs(cert_pg, sslcert=tls_certs.client_crt,
                                                         sslkey=tls_certs.client_key),
                server_tls_sslmode="require")
    with bun.connect(dbname="own") as conn:
        row = conn.execute("SELECT ssl, client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert row == (True, "/CN=postgres"), row
    err = first_error(bun, "plain")
    assert err is not None and "certificate" in err.message, err and err.fields


# ------------------------------------------------------------------ a server that answers SSLRequest with an error

class SslRequestRefuser:
    """A TCP server that answers every SSLRequest with an ErrorResponse (as a
    server that cannot take the connection at all would) and closes."""

    MESSAGE = "sorry, too many clients already"

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.requests = []
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    self.requests.append(conn.recv(8))
                    fields = b"SFATAL\0VFATAL\0C53300\0M" + self.MESSAGE.encode() + b"\0\0"
                    conn.sendall(b"E" + struct.pack("!I", len(fields) + 4) + fields)
                except OSError:
                    pass

    def close(self):
        self.sock.close()


@pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer 1.18 does not pass on an error answering its SSLRequest")
def test_an_error_answering_the_sslrequest_reaches_the_client(start_pgbun):
    fake = SslRequestRefuser()
    try:
        bun = start_pgbun(config={"query_wait_timeout": QUERY_WAIT, "server_tls_sslmode": "prefer"},
                          databases={"pgbun_test": f"host=127.0.0.1 port={fake.port} dbname=pgbun_test"})
        err = first_error(bun)
        assert err is not None, "served by a server that never let pgbun in"
        assert SslRequestRefuser.MESSAGE in err.message, err.fields
        assert fake.requests and fake.requests[0] == struct.pack("!ii", 8, pgwire.SSL_REQUEST_CODE), fake.requests
        assert bun.alive()
    finally:
        fake.close()
