"""Client TLS: connections from clients to pgbun (the client_tls_* keys).

pgbun serves certs.server_crt (CN=localhost, SAN localhost and 127.0.0.1,
signed by the test CA of tlscerts.py) and PostgreSQL behind it stays plain
text. The tests cover:

- libpq (psql, psycopg) with sslmode require / verify-ca / verify-full, and
  what libpq says when the certificate does not fit;
- client_tls_sslmode: require refuses plain TCP (not the unix socket),
  allow / prefer serve both, verify-ca wants a client certificate of the CA;
- the `tls` column of SHOW CLIENTS ("" for a plain client);
- raw protocol: an SSLRequest with the StartupMessage in the same packet
  (CVE-2021-23214), a ClientHello sent to a pgbun without TLS, and direct
  TLS (ALPN "postgresql", pgbun only);
- drivers over TLS: psycopg, asyncpg, node-postgres, JDBC, pgbench;
- client_tls_protocols, client_tls13_ciphers, client_tls_ecdhcurve;
- SCRAM-SHA-256-PLUS (channel binding) over TLS, and auth_type = cert;
- bad TLS settings at start (pgbun exits) and at RELOAD (it keeps serving).

The console is always reached over the unix socket, which client TLS
settings never touch.
"""

import asyncio
import json
import os
import re
import select
import shutil
import socket
import ssl
import struct
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

import pgwire
from conftest import HERE, IS_PGBOUNCER, _ini_lines, chown_to_run_user, error_fields, run, wait_until
from tlscerts import tls_certs  # noqa: F401 - the module-scoped certificate fixture

CONSOLE = "pgbouncer" if IS_PGBOUNCER else "pgbun"
SECTION = "pgbouncer" if IS_PGBOUNCER else "pgbun"
JAVA = shutil.which("java")
JAR = Path(os.environ.get("PGBUN_JDBC_JAR", "/usr/share/java/postgresql.jar"))

no_direct_tls = pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer has no direct TLS (sslnegotiation=direct)")

# The `tls` column of SHOW CLIENTS: VERSION/CIPHER/ECDH=curve as PgBouncer 1.25 prints it
# (PgBouncer 1.18 leaves the curve out under TLS 1.3).
TLS_COLUMN = re.compile(r"(TLSv1\.[23])/([A-Z0-9_-]+)" + (r"(?:/ECDH=([A-Za-z0-9_-]+))?" if IS_PGBOUNCER
                                                            else r"/ECDH=([A-Za-z0-9_-]+)"))


# ---------------------------------------------------------------- helpers

def tls_config(certs, mode="require", **extra):
    """[pgbun] keys for client TLS with certs.server_crt (postgres may use the console)."""
    cfg = {"client_tls_sslmode": mode, "client_tls_key_file": str(certs.server_key),
           "client_tls_cert_file": str(certs.server_crt), "admin_users": "postgres"}
    cfg.update({k: (str(v) if isinstance(v, Path) else v) for k, v in extra.items()})
    return cfg


def start_tls(start_pgbun, certs, mode="require", **extra):
    return start_pgbun(config=tls_config(certs, mode, **extra))


def console(bun):
    """A psycopg connection to the console over the unix socket."""
    return bun.connect(dbname=CONSOLE, host=bun.unix_dir)


def client_tls(bun):
    """{application_name: tls} of the clients SHOW CLIENTS lists."""
    with console(bun) as adm:
        cur = adm.execute("SHOW CLIENTS")
        cols = [d.name for d in cur.description]
        rows = [dict(zip(cols, r)) for r in cur.fetchall()]
    return {r["application_name"]: r["tls"] for r in rows if r["application_name"]}


def tls_parts(value):
    """(version, cipher[, curve]) of a tls column value; fails on anything else."""
    m = TLS_COLUMN.fullmatch(value or "")
    assert m, f"tls column {value!r} is not VERSION/CIPHER{'' if IS_PGBOUNCER else '/ECDH=curve'}"
    return m.groups()


def tls_connect(bun, certs, sslmode="verify-full", host="127.0.0.1", **kw):
    """A psycopg connection to pgbun_test over TLS, the server checked against the test CA."""
    return bun.connect(host=host, sslmode=sslmode, sslrootcert=str(certs.ca_crt), **kw)


def client_context(certs, cafile=None, alpn=None, minimum=None, maximum=None, curve=None):
    """A Python TLS client context that verifies pgbun against cafile (default the test CA)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(cafile or certs.ca_crt))
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    if minimum is not None:
        ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    if curve is not None:
        ctx.set_ecdh_curve(curve)
    return ctx


def tls_wire(bun, ctx, server_hostname="localhost"):
    """A pgwire.Wire that sent an SSLRequest, got 'S' and finished the TLS handshake."""
    w = bun.wire()
    w.send(pgwire.ssl_request())
    answer = w.read_byte()
    assert answer == b"S", f"SSLRequest answered {answer!r}"
    w.sock = ctx.wrap_socket(w.sock, server_hostname=server_hostname)
    return w


def peer_cn(bun, certs):
    """The CN of the certificate a new TLS connection gets (verified against the test CA)."""
    w = tls_wire(bun, client_context(certs))
    try:
        subject = dict(pair for rdn in w.sock.getpeercert()["subject"] for pair in rdn)
    finally:
        w.close()
    return subject["commonName"]


def handshake_refused(wrap):
    """Runs wrap() (a TLS handshake that must fail); the exception. A timeout is no refusal."""
    try:
        tls = wrap()
    except TimeoutError:
        pytest.fail("the TLS handshake hung instead of failing")
    except (ssl.SSLError, OSError) as exc:
        return exc
    tls.close()
    pytest.fail("the TLS handshake succeeded")


def read_to_close(sock, timeout=5):
    """Every byte the peer sends until it closes; fails if it keeps the socket open."""
    data, deadline = b"", time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"the connection stayed open (received {data!r})")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return data
        except TimeoutError:
            continue
        if not chunk:
            return data
        data += chunk


def still_serves(bun):
    """A plain client over the unix socket still gets a result."""
    with bun.connect(host=bun.unix_dir) as conn:
        assert conn.execute("SELECT 'still here'").fetchone() == ("still here",)
    assert bun.alive()


def libpq_refusal(bun, **kw):
    """The psycopg error of a login that must fail."""
    with pytest.raises(psycopg.OperationalError) as err:
        bun.connect(**kw)
    return err.value


def psql(conninfo, command, timeout=20):
    """psql -c command with a full conninfo; the CompletedProcess."""
    return subprocess.run(["psql", "-X", "-At", "-c", command, conninfo], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, PGCONNECT_TIMEOUT="10"))


class PsqlSession:
    """A psql that stays connected: commands in on stdin, each answered up to an \\echo marker."""

    MARK = "--end-of-answer--"

    def __init__(self, conninfo):
        self.proc = subprocess.Popen(["psql", "-X", "-At", conninfo], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=dict(os.environ, PGCONNECT_TIMEOUT="10"))
        self.buf = b""

    def run(self, command, timeout=10):
        """The lines psql printed for command."""
        self.proc.stdin.write(f"{command}\n\\echo {self.MARK}\n".encode())
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while (self.MARK + "\n").encode() not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"psql did not answer {command!r} within {timeout}s; so far {self.buf!r}")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    pytest.fail(f"psql exited {self.proc.wait(5)}: {self.proc.stderr.read().decode()}")
                self.buf += chunk
        answer, self.buf = self.buf.split((self.MARK + "\n").encode(), 1)
        return answer.decode().splitlines()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.communicate(input=b"\\q\n", timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate(timeout=10)


def rewrite_config(bun, pg, **changes):
    """Writes the running daemon's ini again with some keys changed."""
    cfg = dict(bun.config)
    cfg.update({k: (str(v) if isinstance(v, Path) else v) for k, v in changes.items()})
    bun.config = cfg
    bun.config_path.write_text(_ini_lines(SECTION, cfg, {"pgbun_test": pg.entry()}, None))
    chown_to_run_user(bun.config_path)


def reload(bun):
    """RELOAD on the console; the psycopg error if it failed, else None."""
    with console(bun) as adm:
        try:
            adm.execute("RELOAD")
        except psycopg.Error as exc:
            return exc
    return None


def users_count(pg):
    return pg.sql("SELECT count(*) FROM users")[0][0]


# ---------------------------------------------------------------- psql and libpq's sslmode

def test_psql_over_tls_shows_its_protocol_in_show_clients_and_a_plain_psql_shows_empty(start_pgbun, tls_certs):
    bun = start_tls(start_pgbun, tls_certs, mode="prefer")
    base = f"host=127.0.0.1 port={bun.port} dbname=pgbun_test user=postgres"
    tls = PsqlSession(f"{base} sslmode=require application_name=psql_tls")
    plain = PsqlSession(f"{base} sslmode=disable application_name=psql_plain")
    try:
        assert tls.run("SELECT 'over tls';") == ["over tls"]
        assert any(line.startswith("SSL connection (protocol: TLSv1.3") for line in tls.run("\\conninfo"))
        assert plain.run("SELECT 'in plain text';") == ["in plain text"]
        assert not any("SSL" in line for line in plain.run("\\conninfo"))
        shown = client_tls(bun)
    finally:
        tls.close()
        plain.close()
    assert tls_parts(shown["psql_tls"])[0] == "TLSv1.3", shown
    assert shown["psql_plain"] == "", shown


def test_psql_verify_ca_with_the_ca_as_root_certificate_is_served(start_pgbun, tls_certs):
    bun = start_tls(start_pgbun, tls_certs)
    res = psql(f"host=127.0.0.1 port={bun.port} dbname=pgbun_test user=postgres sslmode=verify-ca "
               f"sslrootcert={tls_certs.ca_crt}", "SELECT 'verified ca'")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "verified ca"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_psql_verify_full_accepts_the_certificate_for_the_host_name_or_ip(start_pgbun, tls_certs, host):
    bun = start_tls(start_pgbun, tls_certs)
    res = psql(f"host={host} port={bun.port} dbname=pgbun_test user=postgres sslmode=verify-full "
               f"sslrootcert={tls_certs.ca_crt}", "SELECT 'verified name'")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "verified name"


def test_psql_verify_full_refuses_a_certificate_for_another_name(start_pgbun, tls_certs):
    bun = start_tls(start_pgbun, tls_certs, client_tls_cert_file=tls_certs.wrongname_crt,
                    client_tls_key_file=tls_certs.wrongname_key)
    res = psql(f"host=127.0.0.1 port={bun.port} dbname=pgbun_test user=postgres sslmode=verify-full "
               f"sslrootcert={tls_certs.ca_crt}", "SELECT 1")
    assert res.returncode != 0, res.stdout
    # libpq 15: server certificate for "wrong.example" (and 1 other name) does not match host name "127.0.0.1"
    assert re.search(r'server certificate for "wrong\.example".* does not match host name "127\.0\.0\.1"',
                     res.stderr), res.stderr
    still_serves(bun)


def test_psql_with_another_ca_as_root_certificate_fails_verification(start_pgbun, tls_certs):
    bun = start_tls(start_pgbun, tls_certs)
    res = psql(f"host=127.0.0.1 port={bun.port} dbname=pgbun_test user=postgres sslmode=verify-ca "
               f"sslrootcert={tls_certs.other_ca_crt}", "SELECT 1")
    assert res.returncode != 0, res.stdout
    assert "certificate verify failed" in res.stderr, res.stderr
    still_serves(bun)


# ---------------------------------------------------------------- client_tls_sslmode

def test_require_refuses_a_plain_text_tcp_login_with_28000_tls_is_required(start_pgbun, tls_certs):
    bun = start_tls(start_pgbun, tls_certs, mode="require")
    message = error_fields(libpq_refusal(bun, sslmode="disable"))[1]
    # libpq hands a login's ErrorResponse over as text only: the SQLSTATE is read on the wire.
    err = pgwire.first_error(bun.wire(), "postgres", "pgbun_test")
    assert err is not None, "a plain-text TCP client was logged in"
    if IS_PGBOUNCER:  # PgBouncer 1.18: 08P01 "SSL required"
        assert "SSL required" in message and err.message == "SSL required", (message, err.fields)
    else:
        assert "TLS is required" in message, message
        assert err.sqlstate == "28000" and "TLS is required" in err.message, err.fields
    with tls_connect(bun, tls_certs) as conn:
        assert conn.execute("SELECT 'tls still served'").fetchone() == ("tls still served",)


def test_require_serves_a_unix_socket_login_in_plain_text(start_pgbun, tls_certs):
    bun = start_tls(start_pgbun, tls_certs, mode="require")
    with bun.connect(host=bun.unix_dir, application_name="unix_plain") as conn:
        assert conn.execute("SELECT 'unix'").fetchone() == ("unix",)
        assert not conn.pgconn.ssl_in_use
        assert client_tls(bun)["unix_plain"] == ""


@pytest.mark.parametrize("mode", ["allow", "prefer"])
def test_allow_and_prefer_serve_tls_and_plain_clients_side_by_side(start_pgbun, tls_certs, mode):
    bun = start_tls(start_pgbun, tls_certs, mode=mode)
    tls = tls_connect(bun, tls_certs, application_name="by_tls")
    plain = bun.connect(sslmode="disable", application_name="by_plain")
    assert tls.execute("SELECT 'tls'").fetchone() == ("tls",)
    assert plain.execute("SELECT 'plain'").fetchone() == ("plain",)
    assert tls.pgconn.ssl_in_use and not plain.pgconn.ssl_in_use
    shown = client_tls(bun)
    tls_parts(shown["by_tls"])
    assert shown["by_plain"] == "", shown


# ---------------------------------------------------------------- client certificates (verify-ca)

def verify_ca_pgbun(start_pgbun, certs):
    return start_tls(start_pgbun, certs, mode="verify-ca", client_tls_ca_file=certs.ca_crt)


def test_verify_ca_refuses_a_client_without_a_certificate(start_pgbun, tls_certs):
    bun = verify_ca_pgbun(start_pgbun, tls_certs)
    err = libpq_refusal(bun, sslmode="verify-full", sslrootcert=str(tls_certs.ca_crt))
    assert "certificate" in str(err), str(err)  # OpenSSL's alert: "tlsv13 alert certificate required"
    with tls_connect(bun, tls_certs, sslcert=str(tls_certs.client_crt), sslkey=str(tls_certs.client_key)) as conn:
        assert conn.execute("SELECT 'served after a refusal'").fetchone() == ("served after a refusal",)


def test_verify_ca_serves_a_client_with_a_certificate_of_the_ca(start_pgbun, tls_certs):
    bun = verify_ca_pgbun(start_pgbun, tls_certs)
    with tls_connect(bun, tls_certs, sslcert=str(tls_certs.client_crt), sslkey=str(tls_certs.client_key),
                     application_name="with_cert") as conn:
        assert conn.execute("SELECT 'client certificate'").fetchone() == ("client certificate",)
        tls_parts(client_tls(bun)["with_cert"])


def test_verify_ca_refuses_a_client_certificate_of_another_ca(start_pgbun, tls_certs):
    bun = verify_ca_pgbun(start_pgbun, tls_certs)
    err = libpq_refusal(bun, sslmode="verify-full", sslrootcert=str(tls_certs.ca_crt),
                        sslcert=str(tls_certs.other_client_crt), sslkey=str(tls_certs.other_client_key))
    assert re.search(r"unknown ca|certificate", str(err)), str(err)  # OpenSSL's alert: "tlsv1 alert unknown ca"
    with tls_connect(bun, tls_certs, sslcert=str(tls_certs.client_crt), sslkey=str(tls_certs.client_key)) as conn:
        assert conn.execute("SELECT 'served after a refusal'").fetchone() == ("served after a refusal",)


def test_verify_ca_refuses_a_plain_text_tcp_login(start_pgbun, tls_certs):
    bun = verify_ca_pgbun(start_pgbun, tls_certs)
    err = libpq_refusal(bun, sslmode="disable")
    assert ("SSL required" if IS_PGBOUNCER else "TLS is required") in str(err), str(err)
    still_serves(bun)


# ---------------------------------------------------------------- raw protocol

def test_an_ssl_request_with_a_startup_message_in_the_same_packet_is_refused(start_pgbun, tls_certs):
    """CVE-2021-23214: bytes behind the SSLRequest were sent before TLS and must not be read as if inside it."""
    bun = start_tls(start_pgbun, tls_certs, mode="prefer")
    w = bun.wire()
    w.send(pgwire.ssl_request() + pgwire.startup_packet({"user": "postgres", "database": "pgbun_test"}))
    data = read_to_close(w.sock)
    w.close()
    assert not data.startswith(b"S"), f"pgbun agreed to TLS with plain-text data queued: {data!r}"
    if data:
        assert data[:1] == b"E", f"expected an ErrorResponse or nothing, got {data!r}"
        w.buf = data
        mtype, body = w.read_message()
        fields = pgwire.parse_fields(body)
        assert fields.get("C") == "08P01", fields
    elif not IS_PGBOUNCER:
        pytest.fail("pgbun closed without an ErrorResponse")
    still_serves(bun)


def test_a_tls_client_hello_to_a_pgbun_without_client_tls_fails_and_is_logged(start_pgbun, tls_certs):
    bun = start_pgbun(config={"client_tls_sslmode": "disable"})
    logged_before = len(bun.log_text())
    sock = socket.create_connection((bun.host, bun.port), timeout=10)
    try:
        handshake_refused(lambda: client_context(tls_certs).wrap_socket(sock, server_hostname="localhost"))
    finally:
        sock.close()
    if not IS_PGBOUNCER:
        wait_until(lambda: any("tls" in line.lower() for line in bun.log_text()[logged_before:].splitlines()),
                   timeout=5, what=f"a log line about TLS; log:\n{bun.log_text()[logged_before:]}")
    with bun.connect() as conn:
        assert conn.execute("SELECT 'others served'").fetchone() == ("others served",)


@no_direct_tls
def test_direct_tls_with_alpn_postgresql_logs_in_and_queries(start_pgbun, tls_certs):
    bun = start_tls(start_pgbun, tls_certs, mode="require")
    w = bun.wire()
    w.sock = client_context(tls_certs, alpn=["postgresql"]).wrap_socket(w.sock, server_hostname="localhost")
    assert w.sock.selected_alpn_protocol() == "postgresql"
    seen = [t for t, _ in w.login("postgres", "pgbun_test")]
    assert seen[-1] == b"Z" and b"R" in seen, seen
    assert w.auth_requests == [pgwire.AUTH_OK], w.auth_requests
    assert w.query("SELECT 'direct', 40 + 2") == [["direct", "42"]]
    w.terminate()


@no_direct_tls
@pytest.mark.parametrize("alpn", [None, ["http/1.1"]], ids=["no-alpn", "http1.1"])
def test_direct_tls_without_alpn_postgresql_is_refused(start_pgbun, tls_certs, alpn):
    bun = start_tls(start_pgbun, tls_certs, mode="require")
    w = bun.wire()
    ctx = client_context(tls_certs, alpn=alpn)
    try:
        w.sock = ctx.wrap_socket(w.sock, server_hostname="localhost")
        w.login("postgres", "pgbun_test")
    except TimeoutError:
        pytest.fail("pgbun neither refused nor served the direct TLS connection")
    except (ssl.SSLError, OSError, pgwire.ConnectionClosed, pgwire.PgError):
        pass
    else:
        pytest.fail(f"a direct TLS client with ALPN {alpn} was logged in")
    finally:
        w.close()
    still_serves(bun)


# ---------------------------------------------------------------- drivers over TLS

def test_psycopg_verify_full_queries_over_tls(start_pgbun, pg, tls_certs):
    bun = start_tls(start_pgbun, tls_certs)
    with tls_connect(bun, tls_certs, application_name="psycopg_tls") as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (users_count(pg),)
        assert tls_parts(client_tls(bun)["psycopg_tls"])[0] == "TLSv1.3"


def test_asyncpg_with_an_ssl_context_queries_over_tls(start_pgbun, pg, tls_certs):
    asyncpg = pytest.importorskip("asyncpg")
    bun = start_tls(start_pgbun, tls_certs)

    async def session():
        conn = await asyncpg.connect(host="127.0.0.1", port=bun.port, user="postgres", database="pgbun_test",
                                     ssl=client_context(tls_certs), timeout=10,
                                     server_settings={"application_name": "asyncpg_tls"})
        try:
            count = await conn.fetchval("SELECT count(*) FROM users")
            shown = await asyncio.get_running_loop().run_in_executor(None, client_tls, bun)
        finally:
            await conn.close(timeout=10)
        return count, shown

    count, shown = asyncio.run(asyncio.wait_for(session(), timeout=30))
    assert count == users_count(pg)
    assert tls_parts(shown["asyncpg_tls"])[0] == "TLSv1.3", shown


NODE_TLS_CLIENT = r"""
'use strict';
const fs = require('fs');
const { Client } = require('pg');
async function main() {
    const cfg = JSON.parse(process.env.TLS_CLIENT_TEST);
    const client = new Client({ host: cfg.host, port: cfg.port, user: 'postgres', database: 'pgbun_test',
                                application_name: 'node_tls', connectionTimeoutMillis: 10000,
                                ssl: { ca: fs.readFileSync(cfg.ca, 'utf8') } });
    await client.connect();
    try {
        const count = (await client.query('SELECT count(*)::int AS n FROM users')).rows[0].n;
        const admin = new Client({ host: cfg.unix_dir, port: cfg.port, user: 'postgres', database: cfg.console,
                                   connectionTimeoutMillis: 10000 });
        await admin.connect();
        const clients = (await admin.query('SHOW CLIENTS')).rows
            .map((r) => ({ application_name: r.application_name, tls: r.tls }));
        await admin.end();
        process.stdout.write(JSON.stringify({ count, encrypted: client.connection.stream.encrypted === true,
                                              clients }) + '\n');
    } finally {
        await client.end();
    }
}
main().catch((err) => { process.stderr.write(String((err && err.stack) || err) + '\n'); process.exit(1); });
"""


@pytest.mark.timeout(90)
def test_node_postgres_with_the_ca_queries_over_tls(start_pgbun, pg, tls_certs, node_pg):
    bun = start_tls(start_pgbun, tls_certs)
    cfg = {"host": "127.0.0.1", "port": bun.port, "ca": str(tls_certs.ca_crt), "unix_dir": bun.unix_dir,
           "console": CONSOLE}
    env = dict(os.environ, NODE_PATH=str(node_pg), TLS_CLIENT_TEST=json.dumps(cfg))
    res = run(["node", "-e", NODE_TLS_CLIENT], timeout=30, check=False, env=env, cwd=str(node_pg.parent))
    assert res.returncode == 0, f"node exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
    out = json.loads(res.stdout)
    assert out["count"] == users_count(pg)
    assert out["encrypted"] is True
    shown = {c["application_name"]: c["tls"] for c in out["clients"]}
    assert tls_parts(shown["node_tls"])[0] == "TLSv1.3", shown


@pytest.mark.timeout(90)
@pytest.mark.skipif(not JAVA, reason="java not installed (scripts/deps installs it)")
@pytest.mark.skipif(not JAR.is_file(), reason=f"{JAR} missing: install libpostgresql-jdbc-java")
def test_jdbc_verify_full_with_the_ca_queries_over_tls(start_pgbun, tls_certs):
    # client_tls_sslmode = require: a plain-text login would be refused, so a served one went over TLS.
    # PgBouncer 1.18 refuses the driver's extra_float_digits unless told to ignore it.
    extra = {"ignore_startup_parameters": "extra_float_digits"} if IS_PGBOUNCER else {}
    bun = start_tls(start_pgbun, tls_certs, mode="require", **extra)
    url = (f"jdbc:postgresql://127.0.0.1:{bun.port}/pgbun_test"
           f"?ssl=true&sslmode=verify-full&sslrootcert={tls_certs.ca_crt}")
    res = run([JAVA, "-cp", JAR, HERE / "JdbcSmoke.java", url, "postgres", "unused"], timeout=80, check=False)
    assert res.returncode == 0, f"JdbcSmoke failed:\n{res.stdout}\n{res.stderr}"
    out = dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)
    assert out["sum"] == "2" and out["user"] == "postgres", out
    assert out["prepared_total"] == str(sum(range(1, 9))) and out["transaction"] == "ok", out


@pytest.mark.timeout(60)
def test_pgbench_over_tls_runs_every_transaction(start_pgbun, pg, tls_certs, pgbun_workdir):
    # client_tls_sslmode = require: a plain-text login would be refused, so a served one went over TLS.
    bun = start_tls(start_pgbun, tls_certs, mode="require")
    script = pgbun_workdir / "tls_count.sql"
    # A wrong count divides by zero: the transaction fails and pgbench exits non-zero.
    script.write_text(f"SELECT count(*) AS n FROM users \\gset\n\\if :n != {users_count(pg)}\nSELECT 1/0;\n\\endif\n")
    res = run(["pgbench", "-n", "-c", "4", "-t", "50", "-f", script, "-h", "127.0.0.1", "-p", bun.port,
               "-U", "postgres", "pgbun_test"], timeout=50, check=False,
              env=dict(os.environ, PGSSLMODE="require"))
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "number of transactions actually processed: 200/200" in res.stdout, out


# ---------------------------------------------------------------- protocols, ciphers, curves

def test_tlsv1_3_only_refuses_a_tls_1_2_client_and_serves_a_tls_1_3_one(start_pgbun, tls_certs):
    bun = start_tls(start_pgbun, tls_certs, client_tls_protocols="tlsv1.3")
    w = bun.wire()
    w.send(pgwire.ssl_request())
    assert w.read_byte() == b"S"
    ctx12 = client_context(tls_certs, maximum=ssl.TLSVersion.TLSv1_2)
    handshake_refused(lambda: ctx12.wrap_socket(w.sock, server_hostname="localhost"))
    w.close()
    w = tls_wire(bun, client_context(tls_certs, minimum=ssl.TLSVersion.TLSv1_3))
    assert w.sock.version() == "TLSv1.3"
    w.login("postgres", "pgbun_test")
    assert w.scalar("SELECT 'tls 1.3'") == "tls 1.3"
    w.terminate()


def test_tlsv1_2_only_is_shown_as_tlsv1_2_in_show_clients(start_pgbun, tls_certs):
    bun = start_tls(start_pgbun, tls_certs, client_tls_protocols="tlsv1.2")
    with tls_connect(bun, tls_certs, application_name="tls12") as conn:
        assert conn.execute("SELECT 'tls 1.2'").fetchone() == ("tls 1.2",)
        assert tls_parts(client_tls(bun)["tls12"])[0] == "TLSv1.2"
    w = tls_wire(bun, client_context(tls_certs))
    assert w.sock.version() == "TLSv1.2"
    w.close()


@pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer 1.18 has no client_tls13_ciphers")
def test_tls13_ciphers_chacha20_is_the_cipher_shown_in_show_clients(start_pgbun, tls_certs):
    bun = start_tls(start_pgbun, tls_certs, client_tls13_ciphers="TLS_CHACHA20_POLY1305_SHA256")
    with tls_connect(bun, tls_certs, application_name="chacha") as conn:
        assert conn.execute("SELECT 'chacha'").fetchone() == ("chacha",)
        assert tls_parts(client_tls(bun)["chacha"])[:2] == ("TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256")
    w = tls_wire(bun, client_context(tls_certs))
    assert w.sock.cipher()[0] == "TLS_CHACHA20_POLY1305_SHA256"
    w.close()


def test_ecdhcurve_prime256v1_is_the_curve_used(start_pgbun, tls_certs):
    bun = start_tls(start_pgbun, tls_certs, client_tls_ecdhcurve="prime256v1")
    with tls_connect(bun, tls_certs, application_name="p256") as conn:
        assert conn.execute("SELECT 'p-256'").fetchone() == ("p-256",)
        parts = tls_parts(client_tls(bun)["p256"])
    if not IS_PGBOUNCER:
        assert parts[2] == "prime256v1", parts
    # A client that offers only P-384 has no curve in common with pgbun.
    w = bun.wire()
    w.send(pgwire.ssl_request())
    assert w.read_byte() == b"S"
    ctx = client_context(tls_certs, curve="secp384r1")
    handshake_refused(lambda: ctx.wrap_socket(w.sock, server_hostname="localhost"))
    w.close()
    still_serves(bun)


# ---------------------------------------------------------------- bad settings at start

def bad_start(start_pgbun, config):
    """Starts the daemon with a TLS setting it must refuse; (exit code, log) once it has exited."""
    bun = start_pgbun(config=config, wait=False)
    bun.expected_exit = None  # checked here, not at teardown
    try:
        rc = bun.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{bun.binary.name} kept running with {config}:\n{bun.log_text()}")
    return rc, bun.log_text()


BAD_SETTINGS = {
    # name: (changes to tls_config, words of which the log must name one)
    "require-without-key": (lambda c: {"client_tls_key_file": None}, lambda c: ["client_tls_key_file"]),
    "key-of-another-cert": (lambda c: {"client_tls_cert_file": str(c.other_server_crt)},  # and server_key
                            lambda c: [str(c.other_server_crt), str(c.server_key),
                                       "client_tls_cert_file", "client_tls_key_file"]),
    "missing-cert-file": (lambda c: {"client_tls_cert_file": str(c.dir / "no-such.crt")},
                          lambda c: [str(c.dir / "no-such.crt")]),
    "unknown-protocol": (lambda c: {"client_tls_protocols": "tlsv9"},
                         lambda c: ["client_tls_protocols", "tlsv9"]),
    "unknown-curve": (lambda c: {"client_tls_ecdhcurve": "nosuchcurve"},
                      lambda c: ["client_tls_ecdhcurve", "nosuchcurve"]),
    # PgBouncer 1.18 accepts these two; pgbun refuses them with the reason.
    "ecdhcurve-none": (lambda c: {"client_tls_ecdhcurve": "none"}, lambda c: ["client_tls_ecdhcurve"]),
    "dheparams-legacy": (lambda c: {"client_tls_dheparams": "legacy"}, lambda c: ["client_tls_dheparams"]),
}
PGBUN_ONLY_BAD_SETTINGS = ("ecdhcurve-none", "dheparams-legacy")


@pytest.mark.parametrize("case", [
    pytest.param(case, marks=pytest.mark.skipif(IS_PGBOUNCER and case in PGBUN_ONLY_BAD_SETTINGS,
                                                reason="PgBouncer 1.18 accepts it"))
    for case in BAD_SETTINGS])
def test_a_bad_tls_setting_stops_the_start_naming_the_key_or_file(start_pgbun, tls_certs, case):
    changes, names = BAD_SETTINGS[case]
    config = {**tls_config(tls_certs, "require"), **changes(tls_certs)}
    rc, log = bad_start(start_pgbun, config)
    assert rc != 0, f"exit code {rc} with {case}:\n{log}"
    assert any(word in log for word in names(tls_certs)), f"none of {names(tls_certs)} in the log:\n{log}"
    if case == "key-of-another-cert":
        assert "match" in log.lower(), f"the log does not say the key does not match:\n{log}"


# ---------------------------------------------------------------- SCRAM channel binding

no_scram_plus = pytest.mark.skipif(IS_PGBOUNCER, reason="PgBouncer 1.18 offers no SCRAM-SHA-256-PLUS")


def sasl_mechanisms(seen):
    """The mechanisms of the AuthenticationSASL among a login's (type, body) messages."""
    for mtype, body in seen:
        if mtype == b"R" and struct.unpack("!i", body[:4])[0] == pgwire.AUTH_SASL:
            return [m for m in pgwire.parse_cstrings(body[4:]) if m]  # the list ends with an empty name
    pytest.fail(f"no AuthenticationSASL in {[t for t, _ in seen]}")


@no_scram_plus
def test_scram_over_tls_offers_plus_first_and_plain_text_offers_no_plus(start_pgbun, tls_certs):
    bun = start_tls(start_pgbun, tls_certs, mode="prefer", auth_type="scram-sha-256")
    w = tls_wire(bun, client_context(tls_certs))
    # The client takes SCRAM-SHA-256 ("n,,": it cannot bind), which is allowed over TLS too.
    assert sasl_mechanisms(w.login("scramuser", "pgbun_test", password="scrampass")) == \
        ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]
    assert w.scalar("SELECT current_user") == "scramuser"
    w.terminate()
    w = bun.wire()
    assert sasl_mechanisms(w.login("scramuser", "pgbun_test", password="scrampass")) == ["SCRAM-SHA-256"]
    w.terminate()


@no_scram_plus
def test_psql_channel_binding_require_logs_in_over_tls(start_pgbun, tls_certs):
    bun = start_tls(start_pgbun, tls_certs, auth_type="scram-sha-256")
    res = psql(f"host=127.0.0.1 port={bun.port} dbname=pgbun_test user=scramuser password=scrampass "
               f"sslmode=verify-full sslrootcert={tls_certs.ca_crt} channel_binding=require", "SELECT current_user")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "scramuser"


@no_scram_plus
def test_scram_client_saying_the_server_cannot_bind_over_tls_is_refused(start_pgbun, tls_certs, monkeypatch):
    """gs2 flag "y": the client could bind but saw no PLUS offered, a sign of a downgrade (RFC 5802)."""

    class ThinksServerCannotBind(pgwire.ScramClient):
        def client_first(self):
            return ("y,," + self.first_bare).encode()

    monkeypatch.setattr(pgwire, "ScramClient", ThinksServerCannotBind)
    bun = start_tls(start_pgbun, tls_certs, auth_type="scram-sha-256")
    w = tls_wire(bun, client_context(tls_certs))
    with pytest.raises(pgwire.PgError) as err:
        w.login("scramuser", "pgbun_test", password="scrampass")
    assert pgwire.AUTH_OK not in w.auth_requests, err.value.fields
    assert "channel binding" in err.value.message, err.value.fields
    w.close()


# ---------------------------------------------------------------- auth_type = cert

def cert_auth_pgbun(start_pgbun, certs, mode="verify-full"):
    return start_tls(start_pgbun, certs, mode=mode, client_tls_ca_file=certs.ca_crt, auth_type="cert")


@pytest.mark.parametrize("mode", ["verify-full", pytest.param("verify-ca", marks=pytest.mark.skipif(
    IS_PGBOUNCER, reason="PgBouncer 1.18 wants verify-full for auth_type = cert"))])
def test_auth_cert_logs_in_the_user_its_certificate_names(start_pgbun, tls_certs, mode):
    bun = cert_auth_pgbun(start_pgbun, tls_certs, mode)
    with tls_connect(bun, tls_certs, sslcert=str(tls_certs.client_crt), sslkey=str(tls_certs.client_key)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    with tls_connect(bun, tls_certs, user="md5user", sslcert=str(tls_certs.client_md5_crt),
                     sslkey=str(tls_certs.client_md5_key)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("md5user",)


def test_auth_cert_refuses_a_user_other_than_the_certificate_cn(start_pgbun, tls_certs):
    bun = cert_auth_pgbun(start_pgbun, tls_certs)
    ctx = client_context(tls_certs)
    ctx.load_cert_chain(str(tls_certs.client_crt), str(tls_certs.client_key))  # CN=postgres
    w = tls_wire(bun, ctx)
    err = pgwire.first_error(w, "md5user", "pgbun_test")
    assert err is not None, "md5user was logged in with the certificate of postgres"
    assert pgwire.AUTH_OK not in w.auth_requests, err.fields
    if not IS_PGBOUNCER:
        assert err.sqlstate == "28000", err.fields
        assert err.message.startswith('certificate authentication failed for user "md5user"'), err.fields
    with tls_connect(bun, tls_certs, sslcert=str(tls_certs.client_crt), sslkey=str(tls_certs.client_key)) as conn:
        assert conn.execute("SELECT 'served after a refusal'").fetchone() == ("served after a refusal",)


def test_auth_cert_without_client_certificate_verification_stops_the_start(start_pgbun, tls_certs):
    rc, log = bad_start(start_pgbun, {**tls_config(tls_certs, "require"), "auth_type": "cert"})
    assert rc != 0, log
    assert "auth_type" in log and "client_tls_sslmode" in log, log


# ---------------------------------------------------------------- RELOAD

def test_reload_serves_the_new_certificate_to_new_clients_and_keeps_old_ones(start_pgbun, pg, tls_certs):
    bun = start_tls(start_pgbun, tls_certs)
    old = tls_connect(bun, tls_certs)
    assert old.execute("SELECT 'before'").fetchone() == ("before",)
    assert peer_cn(bun, tls_certs) == "localhost"
    rewrite_config(bun, pg, client_tls_cert_file=tls_certs.server2_crt, client_tls_key_file=tls_certs.server2_key)
    assert reload(bun) is None
    assert old.execute("SELECT 'after'").fetchone() == ("after",)
    assert peer_cn(bun, tls_certs) == "localhost-2"
    with tls_connect(bun, tls_certs) as new:
        assert new.execute("SELECT 'new'").fetchone() == ("new",)


def test_reload_rereads_a_certificate_file_rewritten_under_the_same_name(start_pgbun, tls_certs, pgbun_workdir):
    crt, key = pgbun_workdir / "served.crt", pgbun_workdir / "served.key"
    for src, dst in ((tls_certs.server_crt, crt), (tls_certs.server_key, key)):
        shutil.copyfile(src, dst)
        chown_to_run_user(dst)
    key.chmod(0o600)
    bun = start_tls(start_pgbun, tls_certs, client_tls_cert_file=crt, client_tls_key_file=key)
    assert peer_cn(bun, tls_certs) == "localhost"
    shutil.copyfile(tls_certs.server2_crt, crt)
    shutil.copyfile(tls_certs.server2_key, key)
    assert reload(bun) is None
    assert peer_cn(bun, tls_certs) == "localhost-2"


def test_reload_with_a_missing_certificate_fails_naming_it_and_keeps_serving_tls(start_pgbun, pg, tls_certs):
    bun = start_tls(start_pgbun, tls_certs, client_tls_cert_file=tls_certs.server2_crt,
                    client_tls_key_file=tls_certs.server2_key)
    old = tls_connect(bun, tls_certs)
    assert old.execute("SELECT 1").fetchone() == (1,)
    missing = tls_certs.dir / "gone.crt"
    rewrite_config(bun, pg, client_tls_cert_file=missing)
    err = reload(bun)
    if IS_PGBOUNCER:  # PgBouncer 1.18 answers RELOAD and only logs the failure
        wait_until(lambda: str(missing) in bun.log_text(), timeout=5, what=f"{missing} named in the log")
    else:
        assert err is not None, "RELOAD succeeded with a missing certificate file"
        assert str(missing) in error_fields(err)[1], error_fields(err)
    assert bun.alive(), bun.log_text()
    assert old.execute("SELECT 'old client'").fetchone() == ("old client",)
    assert peer_cn(bun, tls_certs) == "localhost-2"
    with tls_connect(bun, tls_certs) as new:
        assert new.execute("SELECT 'new client'").fetchone() == ("new client",)
