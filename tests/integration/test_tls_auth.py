"""Authentication over TLS, per-database TLS keys and cancels over TLS servers.

- SCRAM channel binding: over client TLS, pgbun offers SCRAM-SHA-256-PLUS
  bound with tls-server-end-point, so libpq's channel_binding=require logs
  in; over plain text it offers SCRAM-SHA-256 only. Raw exchanges check the
  mechanism list, a proof bound to another certificate, and the downgrade
  refusal (gs2 header "y" over TLS).
- auth_type = cert: a verified client certificate whose CN is the user name
  logs in without a password; another name is refused with 28000.
- [databases] sslmode / sslrootcert override server_tls_* for one entry, at
  start and at RELOAD.
- A CancelRequest reaches PostgreSQL when pgbun's server connections are TLS.

pgbun serves certs.server_crt (CN=localhost, SAN localhost and 127.0.0.1) to
its clients; certificates come from tlscerts.make_certs. PgBouncer 1.18
(PGBUN_TEST_PEER=pgbouncer) offers no SCRAM-SHA-256-PLUS and has no TLS keys
in [databases]: those tests are skipped there.
"""

import base64
import hashlib
import hmac
import os
import ssl
import struct
import subprocess

import psycopg
import pytest

import pgwire
from conftest import IS_PGBOUNCER, Postgres, _ini_lines, chown_to_run_user, in_thread, wait_until
from tlscerts import HOSTSSL_ONLY_HBA, ssl_postgres
from tlscerts import tls_certs  # noqa: F401 - the module-scoped certificate fixture

SECTION = "pgbouncer" if IS_PGBOUNCER else "pgbun"
CONSOLE = "pgbouncer" if IS_PGBOUNCER else "pgbun"
SSL_QUERY = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
# A client waits for a server pgbun cannot log in to (it keeps trying) this long, then gets the
# last login error.
QUERY_WAIT = 3

no_plus = pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer 1.18 offers no SCRAM-SHA-256-PLUS (channel binding)")
pgbun_only_db_tls = pytest.mark.skipif(IS_PGBOUNCER,
                                       reason="PgBouncer 1.18 has no sslmode/sslrootcert in [databases]")


# ---------------------------------------------------------------- helpers

def client_tls(certs, mode, **extra):
    """[pgbun] keys for client TLS with certs.server_crt."""
    cfg = {"client_tls_sslmode": mode, "client_tls_key_file": str(certs.server_key),
           "client_tls_cert_file": str(certs.server_crt), "admin_users": "postgres"}
    cfg.update({k: str(v) for k, v in extra.items()})
    return cfg


def start_scram(start_pgbun, certs, mode="require", **kw):
    """pgbun with auth_type = scram-sha-256 and client TLS in mode."""
    return start_pgbun(config={"auth_type": "scram-sha-256", **client_tls(certs, mode)}, **kw)


# PgBouncer 1.18 takes auth_type = cert with client_tls_sslmode = verify-full only; pgbun with verify-ca too.
CERT_MODE = "verify-full" if IS_PGBOUNCER else "verify-ca"


def start_cert(start_pgbun, certs, mode=CERT_MODE):
    """pgbun with auth_type = cert, client certificates checked against the test CA."""
    return start_pgbun(config={"auth_type": "cert", **client_tls(certs, mode, client_tls_ca_file=certs.ca_crt)})


def conninfo(bun, user, dbname="pgbun_test", **kw):
    parts = [f"host=127.0.0.1 port={bun.port} dbname={dbname} user={user}"]
    parts += [f"{k}={v}" for k, v in kw.items()]
    return " ".join(parts)


def psql(info, command, password=None, timeout=20):
    """psql -w -At -c command with a full conninfo (never prompts); the CompletedProcess."""
    env = dict(os.environ, PGCONNECT_TIMEOUT="10")
    if password is not None:
        env["PGPASSWORD"] = password
    return subprocess.run(["psql", "-X", "-w", "-At", "-c", command, info], capture_output=True, text=True,
                          timeout=timeout, env=env)


def tls_wire(bun, certs, cert=None, key=None):
    """A pgwire.Wire that sent an SSLRequest, got 'S' and finished a TLS handshake
    checking pgbun against the test CA (with a client certificate if given)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(certs.ca_crt))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    w = bun.wire()
    w.send(pgwire.ssl_request())
    answer = w.read_byte()
    assert answer == b"S", f"SSLRequest answered {answer!r}"
    w.sock = ctx.wrap_socket(w.sock, server_hostname="localhost")
    return w


def sasl_offer(w, user):
    """Sends the StartupMessage; the raw mechanism list of the AuthenticationSASL that follows."""
    w.startup({"user": user, "database": "pgbun_test"})
    mtype, body = w.read_message()
    if mtype == b"E":
        raise pgwire.PgError(pgwire.parse_fields(body))
    assert mtype == b"R", (mtype, body)
    (code,) = struct.unpack("!i", body[:4])
    assert code == pgwire.AUTH_SASL, f"authentication request {code}, not SASL"
    return body[4:]


def end_point(certificate_der):
    """tls-server-end-point binding data (RFC 5929) of a SHA-256-signed certificate."""
    return hashlib.sha256(certificate_der).digest()


def der_of(pem_path):
    return ssl.PEM_cert_to_DER_cert(pem_path.read_text())


def read_auth(w):
    """(code, data) of the next Authentication message; PgError for an ErrorResponse."""
    mtype, body = w.read_message()
    if mtype == b"E":
        raise pgwire.PgError(pgwire.parse_fields(body))
    assert mtype == b"R", (mtype, body)
    return struct.unpack("!i", body[:4])[0], body[4:]


class RawScram:
    """SCRAM-SHA-256 by hand, with any mechanism name, gs2 header and binding data."""

    def __init__(self, w, password, mechanism="SCRAM-SHA-256", gs2="n,,", binding=b""):
        self.w, self.password = w, password.encode()
        self.mechanism, self.gs2, self.binding = mechanism, gs2, binding
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n=,r={self.nonce}"

    def client_first(self):
        """Sends the SASLInitialResponse; returns the server-first-message (PgError if refused)."""
        data = (self.gs2 + self.first_bare).encode()
        self.w.send(pgwire.message(b"p", self.mechanism.encode() + b"\0" + struct.pack("!i", len(data)) + data))
        code, server_first = read_auth(self.w)
        assert code == pgwire.AUTH_SASL_CONTINUE, f"authentication request {code} after the client-first"
        return server_first.decode()

    def client_final(self, server_first):
        """Sends the proof with c = base64(gs2 header + binding data); checks the server's
        signature and reads up to ReadyForQuery (PgError if refused)."""
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        assert attrs["r"].startswith(self.nonce)
        salted = hashlib.pbkdf2_hmac("sha256", self.password, base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        stored_key = hashlib.sha256(client_key).digest()
        cbind = base64.b64encode(self.gs2.encode() + self.binding).decode()
        without_proof = f"c={cbind},r={attrs['r']}"
        auth_message = f"{self.first_bare},{server_first},{without_proof}".encode()
        proof = bytes(a ^ b for a, b in zip(client_key, hmac.new(stored_key, auth_message, "sha256").digest()))
        self.w.send(pgwire.message(b"p", f"{without_proof},p={base64.b64encode(proof).decode()}".encode()))
        code, final = read_auth(self.w)
        assert code == pgwire.AUTH_SASL_FINAL, f"authentication request {code} after the proof"
        server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        expected = hmac.new(server_key, auth_message, "sha256").digest()
        assert base64.b64decode(final.decode().split("=", 1)[1]) == expected, "bad server signature"
        self.w.login(None, None, send_startup=False)  # AuthenticationOk ... ReadyForQuery

    def run(self):
        self.client_final(self.client_first())


def refused_start(start_pgbun, **kw):
    """Starts the daemon expecting it to refuse: (exit code, log). Fails if it keeps running."""
    bun = start_pgbun(wait=False, **kw)
    try:
        rc = bun.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{bun.binary.name} started:\n{bun.log_text()}")
    bun.expected_exit = rc
    return rc, bun.log_text()


def rewrite_databases(bun, databases):
    """The running daemon's ini written again with other [databases] entries."""
    bun.config_path.write_text(_ini_lines(SECTION, bun.config, databases, None))
    chown_to_run_user(bun.config_path)


def reload(bun):
    with bun.connect(dbname=CONSOLE, user="postgres", host=bun.unix_dir) as admin:
        admin.execute("RELOAD")


def ssl_through(bun, dbname, **kw):
    """pg_stat_ssl.ssl of the backend serving a new client of dbname."""
    with bun.connect(dbname=dbname, **kw) as conn:
        return conn.execute(SSL_QUERY).fetchone()[0]


def login_error(bun, dbname):
    """The error a client of dbname gets at login or at its first query (None: served)."""
    return pgwire.first_error(bun.wire(timeout=QUERY_WAIT + 10), "postgres", dbname)


@pytest.fixture(scope="module")
def hostssl_pg(tls_certs):  # noqa: F811 - the fixture imported above
    """A PostgreSQL with ssl = on serving server_crt that takes TCP logins over TLS only."""
    server = Postgres("hostssl").init_or_clean_up(lambda s: ssl_postgres(s, tls_certs, hba=HOSTSSL_ONLY_HBA))
    yield server
    server.destroy()


# ---------------------------------------------------------------- SCRAM channel binding

@no_plus
def test_psql_with_channel_binding_require_logs_in_over_tls(start_pgbun, tls_certs):  # noqa: F811
    bun = start_scram(start_pgbun, tls_certs)
    res = psql(conninfo(bun, "scramuser", sslmode="require", channel_binding="require"),
               "SELECT current_user || ' ' || 6 * 7", password="scrampass")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "scramuser 42"


@no_plus
@pytest.mark.parametrize("user,secret", [
    ("scramuser", "plain"),  # conftest.default_auth_file: every user's secret is its plain password
    ("md5user", "plain"),    # md5 towards PostgreSQL, SCRAM towards the client
    ("scramuser", "scram"),  # a SCRAM secret: pgbun logs in to PostgreSQL with the entry's password
])
def test_psycopg_with_channel_binding_require_logs_in_whatever_the_auth_file_secret(
        start_pgbun, pg, tls_certs, user, secret):  # noqa: F811
    password = {"scramuser": "scrampass", "md5user": "md5pass"}[user]
    kw = {}
    if secret == "scram":
        kw = {"auth_file": {user: pgwire.scram_secret(password)},
              "databases": {"pgbun_test": pg.entry(user=user, password=password)}}
    bun = start_scram(start_pgbun, tls_certs, **kw)
    with bun.connect(user=user, password=password, sslmode="require", channel_binding="require") as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT current_user").fetchone() == (user,)


def test_channel_binding_require_over_plain_text_is_refused_by_libpq(start_pgbun, tls_certs):  # noqa: F811
    bun = start_scram(start_pgbun, tls_certs, mode="allow")
    refused = psql(conninfo(bun, "scramuser", sslmode="disable", channel_binding="require"), "SELECT current_user",
                   password="scrampass")
    assert refused.returncode != 0, refused.stdout
    assert "channel binding" in refused.stderr, refused.stderr
    # The same login without the demand goes through: binding alone was missing.
    served = psql(conninfo(bun, "scramuser", sslmode="disable"), "SELECT current_user", password="scrampass")
    assert served.returncode == 0, served.stderr
    assert served.stdout.strip() == "scramuser"


@no_plus
def test_a_wrong_password_with_channel_binding_is_refused_with_28P01(start_pgbun, tls_certs):  # noqa: F811
    bun = start_scram(start_pgbun, tls_certs)
    with pytest.raises(psycopg.OperationalError) as err:
        bun.connect(user="scramuser", password="wrong", sslmode="require", channel_binding="require")
    assert 'password authentication failed for user "scramuser"' in str(err.value), str(err.value)
    # The SQLSTATE, which libpq does not pass on for a failed connection: a bound exchange by hand.
    w = tls_wire(bun, tls_certs)
    assert sasl_offer(w, "scramuser").startswith(b"SCRAM-SHA-256-PLUS\0")
    scram = RawScram(w, "wrong", "SCRAM-SHA-256-PLUS", "p=tls-server-end-point,,",
                     end_point(w.sock.getpeercert(binary_form=True)))
    with pytest.raises(pgwire.PgError) as refused:
        scram.run()
    assert refused.value.sqlstate == "28P01", refused.value.fields
    assert refused.value.message == 'password authentication failed for user "scramuser"'
    assert w.is_closed(timeout=5)


@no_plus
def test_sasl_over_tls_offers_scram_sha_256_plus_first_then_scram_sha_256(start_pgbun, tls_certs):  # noqa: F811
    bun = start_scram(start_pgbun, tls_certs, mode="allow")
    w = tls_wire(bun, tls_certs)
    assert sasl_offer(w, "scramuser") == b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"


def test_sasl_over_plain_text_offers_scram_sha_256_only(start_pgbun, tls_certs):  # noqa: F811
    bun = start_scram(start_pgbun, tls_certs, mode="allow")
    w = bun.wire()
    assert sasl_offer(w, "scramuser") == b"SCRAM-SHA-256\0\0"


@no_plus
def test_a_raw_scram_sha_256_plus_exchange_bound_to_the_served_certificate_logs_in(
        start_pgbun, tls_certs):  # noqa: F811
    bun = start_scram(start_pgbun, tls_certs)
    w = tls_wire(bun, tls_certs)
    sasl_offer(w, "scramuser")
    served = w.sock.getpeercert(binary_form=True)
    assert served == der_of(tls_certs.server_crt)
    RawScram(w, "scrampass", "SCRAM-SHA-256-PLUS", "p=tls-server-end-point,,", end_point(served)).run()
    assert w.scalar("SELECT current_user") == "scramuser"


@no_plus
def test_a_proof_bound_to_another_certificate_is_refused(start_pgbun, tls_certs):  # noqa: F811
    """What a man in the middle holding its own certificate would pass on."""
    bun = start_scram(start_pgbun, tls_certs)
    w = tls_wire(bun, tls_certs)
    sasl_offer(w, "scramuser")
    scram = RawScram(w, "scrampass", "SCRAM-SHA-256-PLUS", "p=tls-server-end-point,,",
                     end_point(der_of(tls_certs.other_server_crt)))
    with pytest.raises(pgwire.PgError) as refused:
        scram.run()
    assert "channel binding" in refused.value.message, refused.value.fields
    assert refused.value.sqlstate == "08P01", refused.value.fields  # as PostgreSQL's "channel binding check failed"
    assert w.is_closed(timeout=5)


@no_plus
def test_gs2_y_over_tls_is_refused_at_the_server_first_step_as_a_downgrade(start_pgbun, tls_certs):  # noqa: F811
    bun = start_scram(start_pgbun, tls_certs)
    w = tls_wire(bun, tls_certs)
    sasl_offer(w, "scramuser")
    with pytest.raises(pgwire.PgError) as refused:
        RawScram(w, "scrampass", "SCRAM-SHA-256", "y,,").client_first()
    assert "channel binding negotiation" in refused.value.message.lower(), refused.value.fields
    assert refused.value.sqlstate == "08P01", refused.value.fields
    assert w.is_closed(timeout=5)


def test_gs2_y_over_plain_text_logs_in(start_pgbun, tls_certs):  # noqa: F811
    """Without TLS nothing was offered to bind to: "y" is the truth there, not a downgrade."""
    bun = start_scram(start_pgbun, tls_certs, mode="allow")
    w = bun.wire()
    assert sasl_offer(w, "scramuser") == b"SCRAM-SHA-256\0\0"
    RawScram(w, "scrampass", "SCRAM-SHA-256", "y,,").run()
    assert w.scalar("SELECT current_user") == "scramuser"


# ---------------------------------------------------------------- auth_type = cert

@pytest.mark.parametrize("mode", [
    pytest.param("verify-ca", marks=pytest.mark.skipif(
        IS_PGBOUNCER, reason="PgBouncer 1.18 refuses auth_type = cert unless client_tls_sslmode = verify-full")),
    "verify-full"])
def test_cert_auth_logs_in_the_user_named_by_the_certificate_without_a_password(
        start_pgbun, tls_certs, mode):  # noqa: F811
    bun = start_cert(start_pgbun, tls_certs, mode)
    res = psql(conninfo(bun, "postgres", sslmode="verify-full", sslrootcert=tls_certs.ca_crt,
                        sslcert=tls_certs.client_crt, sslkey=tls_certs.client_key), "SELECT current_user")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "postgres"


def test_cert_auth_refuses_a_user_the_certificate_does_not_name_with_28000(start_pgbun, tls_certs):  # noqa: F811
    bun = start_cert(start_pgbun, tls_certs)
    res = psql(conninfo(bun, "md5user", sslmode="require", sslcert=tls_certs.client_crt,
                        sslkey=tls_certs.client_key), "SELECT current_user", password="md5pass")
    assert res.returncode != 0, res.stdout
    if not IS_PGBOUNCER:
        assert 'certificate authentication failed for user "md5user"' in res.stderr, res.stderr
    # The SQLSTATE, which psql does not print for a failed connection: the same login by hand.
    w = tls_wire(bun, tls_certs, cert=tls_certs.client_crt, key=tls_certs.client_key)
    with pytest.raises(pgwire.PgError) as refused:
        w.login("md5user", "pgbun_test", password="md5pass")
    if not IS_PGBOUNCER:  # PgBouncer 1.18: 08P01 "TLS certificate name mismatch"
        assert refused.value.sqlstate == "28000", refused.value.fields
        assert refused.value.message == 'certificate authentication failed for user "md5user"'
    assert w.is_closed(timeout=5)


def test_cert_auth_logs_in_md5user_with_its_own_certificate(start_pgbun, tls_certs):  # noqa: F811
    bun = start_cert(start_pgbun, tls_certs)
    res = psql(conninfo(bun, "md5user", sslmode="require", sslcert=tls_certs.client_md5_crt,
                        sslkey=tls_certs.client_md5_key), "SELECT current_user")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "md5user"


def test_cert_auth_without_a_client_certificate_fails_the_handshake_and_pgbun_stays_up(start_pgbun,
                                                                                       tls_certs):  # noqa: F811
    bun = start_cert(start_pgbun, tls_certs)
    no_cert = tls_certs.dir / "no-such-client.crt"
    res = psql(conninfo(bun, "postgres", sslmode="require", sslcert=no_cert, sslkey=tls_certs.dir / "no-such.key"),
               "SELECT current_user")
    assert res.returncode != 0, res.stdout
    assert "certificate required" in res.stderr, res.stderr  # the TLS alert: refused in the handshake
    assert bun.alive()
    res = psql(conninfo(bun, "postgres", sslmode="require", sslcert=tls_certs.client_crt,
                        sslkey=tls_certs.client_key), "SELECT 'still here'")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "still here"


def test_cert_auth_without_verified_client_certificates_is_refused_at_start(start_pgbun, tls_certs):  # noqa: F811
    rc, log = refused_start(start_pgbun, config={"auth_type": "cert", **client_tls(tls_certs, "require")})
    assert rc != 0, log
    assert "client_tls_sslmode" in log, log


# ---------------------------------------------------------------- TLS keys in [databases]

@pgbun_only_db_tls
def test_a_database_sslmode_require_overrides_a_global_disable(start_pgbun, pg, hostssl_pg):
    bun = start_pgbun(config={"server_tls_sslmode": "disable", "query_wait_timeout": QUERY_WAIT},
                      databases={"secure": hostssl_pg.entry(sslmode="require"),
                                 "insecure": hostssl_pg.entry(),
                                 "pgbun_test": pg.entry()})
    assert ssl_through(bun, "secure") is True
    assert ssl_through(bun, "pgbun_test") is False
    # The global disable still holds for the entry that does not override it: a hostssl-only
    # PostgreSQL turns it away.
    err = login_error(bun, "insecure")
    assert err is not None, "a plain-text login to a hostssl-only PostgreSQL was served"
    assert "no encryption" in err.message or "pg_hba.conf" in err.message, err.fields
    assert ssl_through(bun, "secure") is True


@pgbun_only_db_tls
def test_a_database_sslrootcert_overrides_a_wrong_server_tls_ca_file(start_pgbun, hostssl_pg, tls_certs):  # noqa: F811
    bun = start_pgbun(config={"server_tls_sslmode": "verify-full", "server_tls_ca_file": tls_certs.other_ca_crt,
                              "query_wait_timeout": QUERY_WAIT},
                      databases={"secure": hostssl_pg.entry(sslrootcert=tls_certs.ca_crt),
                                 "global_ca": hostssl_pg.entry()})
    assert ssl_through(bun, "secure") is True
    err = login_error(bun, "global_ca")
    assert err is not None, "a server certificate of another CA was accepted"
    assert "certificate verify failed" in err.message, err.fields


@pgbun_only_db_tls
def test_a_database_sslmode_verify_full_refuses_a_certificate_for_another_host(start_pgbun, make_postgres,
                                                                              tls_certs):  # noqa: F811
    wrong = ssl_postgres(make_postgres, tls_certs, cert=tls_certs.wrongname_crt, key=tls_certs.wrongname_key)
    bun = start_pgbun(config={"server_tls_sslmode": "disable", "query_wait_timeout": QUERY_WAIT},
                      databases={"by_name": wrong.entry(sslmode="verify-full", sslrootcert=tls_certs.ca_crt),
                                 "by_ca": wrong.entry(sslmode="verify-ca", sslrootcert=tls_certs.ca_crt)})
    err = login_error(bun, "by_name")
    assert err is not None, "a certificate for wrong.example was accepted for 127.0.0.1"
    assert "mismatch" in err.message.lower() and "127.0.0.1" in err.message, err.fields
    assert ssl_through(bun, "by_ca") is True  # the same certificate, its name unchecked


@pgbun_only_db_tls
def test_a_missing_database_sslrootcert_stops_pgbun_at_start(start_pgbun, hostssl_pg, tls_certs):  # noqa: F811
    missing = tls_certs.dir / "no-such-root.crt"
    rc, log = refused_start(start_pgbun, databases={
        "pinned": hostssl_pg.entry(sslmode="verify-full", sslrootcert=missing)})
    assert rc != 0, log
    assert "[databases] pinned" in log and "sslrootcert" in log and str(missing) in log, log


@pgbun_only_db_tls
def test_a_reload_to_a_missing_database_sslrootcert_fails_and_keeps_the_running_setup(start_pgbun, hostssl_pg,
                                                                                      tls_certs):  # noqa: F811
    # The global CA is the wrong one: a login succeeds only with the entry's own sslrootcert.
    bun = start_pgbun(config={"server_tls_sslmode": "verify-full", "server_tls_ca_file": tls_certs.other_ca_crt,
                              "admin_users": "postgres"},
                      databases={"pinned": hostssl_pg.entry(sslrootcert=tls_certs.ca_crt)})
    missing = tls_certs.dir / "no-such-root.crt"
    rewrite_databases(bun, {"pinned": hostssl_pg.entry(sslrootcert=missing)})
    with pytest.raises(psycopg.Error) as err:
        reload(bun)
    assert "[databases] pinned" in str(err.value) and "sslrootcert" in str(err.value), str(err.value)
    assert ssl_through(bun, "pinned") is True  # the first server login since: with the CA still in use
    assert bun.alive()


@pgbun_only_db_tls
def test_a_reload_changing_a_database_sslmode_replaces_its_server_connections(start_pgbun, make_postgres,
                                                                             tls_certs):  # noqa: F811
    both = ssl_postgres(make_postgres, tls_certs)  # conftest's pg_hba: TCP logins with or without TLS
    bun = start_pgbun(config={"pool_mode": "transaction", "admin_users": "postgres"},
                      databases={"flip": both.entry(sslmode="require")})
    conn = bun.connect(dbname="flip")
    assert conn.execute(SSL_QUERY).fetchone() == (True,)
    rewrite_databases(bun, {"flip": both.entry(sslmode="disable")})
    reload(bun)
    # The same client, its next transaction: on a server connection made the new way.
    assert conn.execute(SSL_QUERY).fetchone() == (False,)
    assert ssl_through(bun, "flip") is False


# ---------------------------------------------------------------- cancel

def test_a_cancel_request_stops_a_query_on_a_tls_server_connection(start_pgbun, hostssl_pg):
    bun = start_pgbun(config={"server_tls_sslmode": "require"}, databases={"pgbun_test": hostssl_pg.entry()})
    conn = bun.connect()
    assert conn.execute(SSL_QUERY).fetchone() == (True,)
    thread, result = in_thread(lambda: conn.execute("SELECT pg_sleep(30)"))
    wait_until(lambda: hostssl_pg.sql("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                                      "AND query = 'SELECT pg_sleep(30)'")[0][0] == 1,
               10, what="pg_sleep(30) running on PostgreSQL")
    conn.cancel()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the query was not cancelled within 10 s"
    err = result.get("error")
    assert isinstance(err, psycopg.errors.QueryCanceled), result
    assert err.sqlstate == "57014"
    assert conn.execute("SELECT 'after'").fetchone() == ("after",)
