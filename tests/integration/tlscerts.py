"""Throwaway certificates for the TLS tests, and a PostgreSQL with ssl = on.

make_certs() builds a test CA, an unrelated CA and the server and client
certificates the TLS tests need, with the `openssl` command, in a temp dir
the test user (conftest.RUN_USER) owns: no key is checked in. Certificates
are 0644 and keys 0600, all owned by that user, so PostgreSQL and pgbun
(which run as it) can read them; root-run clients read them too (libpq only
refuses a key file owned by the user running it that others can read).

Tests use the module-scoped fixture with

    from tlscerts import tls_certs  # noqa: F401

and ssl_postgres(make_postgres, certs, ...) for a PostgreSQL with TLS on.
"""

import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import KEEP, PG_HBA, Postgres, chown_to_run_user, make_tempdir

# A minimal `openssl ca` setup: the database lives next to the CA's files;
# unique_subject = no lets several certificates share CN=localhost.
_CA_CONF = """\
[ca]
default_ca = test_ca

[test_ca]
dir = {dir}
database = $dir/index.txt
serial = $dir/serial
new_certs_dir = $dir/newcerts
certificate = {crt}
private_key = {key}
default_md = sha256
default_days = 3650
policy = policy_any
unique_subject = no
copy_extensions = none
email_in_dn = no

[policy_any]
commonName = supplied

[req]
distinguished_name = req_dn
prompt = no

[req_dn]
CN = unused

[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""

_SERVER_EXT = """\
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = {san}
"""

_CLIENT_EXT = """\
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""

LOCALHOST_SAN = "DNS:localhost, IP:127.0.0.1"

# pg_hba.conf bodies for ssl_postgres(): conftest's rules with TCP over TLS
# only, and the superuser logging in with a client certificate (CN=postgres).
HOSTSSL_ONLY_HBA = "\n".join(
    "hostssl" + line[len("host"):] if line.startswith("host ") else line
    for line in PG_HBA.splitlines()) + "\n"
CERT_HBA = """\
local   all all      trust
hostssl all postgres 127.0.0.1/32 cert
hostssl all md5user  127.0.0.1/32 cert
"""


def _openssl(*args, cwd=None):
    res = subprocess.run(["openssl"] + [str(a) for a in args], capture_output=True, text=True,
                         timeout=60, cwd=cwd)
    if res.returncode != 0:
        raise AssertionError(f"openssl {' '.join(str(a) for a in args)} exited {res.returncode}:\n"
                             f"{res.stdout}\n{res.stderr}")
    return res.stdout


def _new_keys(paths):
    """RSA 2048 keys, generated side by side (key generation is the slow part)."""
    procs = [(p, subprocess.Popen(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                                   "rsa_keygen_bits:2048", "-out", str(p)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
             for p in paths]
    problems = []
    for p, proc in procs:
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if proc.returncode != 0:
            problems.append(f"openssl genpkey {p} exited {proc.returncode}: {err}")
    if problems:
        raise AssertionError("\n".join(problems))


class _CA:
    def __init__(self, directory, name, cn):
        self.dir = directory / f"{name}.db"
        self.dir.mkdir()
        (self.dir / "newcerts").mkdir()
        (self.dir / "index.txt").write_text("")
        self.crt = directory / f"{name}.crt"
        self.key = directory / f"{name}.key"
        self.conf = self.dir / "ca.cnf"
        self.conf.write_text(_CA_CONF.format(dir=self.dir, crt=self.crt, key=self.key))
        self.cn = cn

    def create(self, serial):
        (self.dir / "serial").write_text(f"{serial:04X}\n")
        _openssl("req", "-x509", "-new", "-key", self.key, "-out", self.crt, "-days", "3650",
                 "-subj", f"/CN={self.cn}", "-config", self.conf, "-extensions", "v3_ca", "-sha256")

    def sign(self, key, crt, cn, ext, startdate=None, enddate=None):
        csr = crt.with_suffix(".csr")
        extfile = crt.with_suffix(".ext")
        extfile.write_text("[ext]\n" + ext)
        _openssl("req", "-new", "-key", key, "-out", csr, "-subj", f"/CN={cn}", "-config", self.conf)
        dates = ["-days", "3650"]
        if startdate:
            dates = ["-startdate", startdate, "-enddate", enddate]
        _openssl("ca", "-batch", "-notext", "-config", self.conf, "-in", csr, "-out", crt,
                 "-extfile", extfile, "-extensions", "ext", *dates)
        csr.unlink()
        extfile.unlink()


class Certs:
    """PEM files of one make_certs() run (pathlib.Path attributes)."""

    # attribute prefix -> (CN, issuer, extensions, (startdate, enddate) or None)
    LEAVES = {
        "server": ("localhost", "ca", _SERVER_EXT.format(san=LOCALHOST_SAN), None),
        "server2": ("localhost-2", "ca", _SERVER_EXT.format(san=LOCALHOST_SAN), None),
        "wrongname": ("wrong.example", "ca", _SERVER_EXT.format(san="DNS:wrong.example"), None),
        "expired": ("localhost", "ca", _SERVER_EXT.format(san=LOCALHOST_SAN),
                    ("20200101000000Z", "20210101000000Z")),
        "other_server": ("localhost", "other_ca", _SERVER_EXT.format(san=LOCALHOST_SAN), None),
        "client": ("postgres", "ca", _CLIENT_EXT, None),
        "client_md5": ("md5user", "ca", _CLIENT_EXT, None),
        "other_client": ("postgres", "other_ca", _CLIENT_EXT, None),
    }

    def __init__(self, directory):
        self.dir = Path(directory)
        for name in ["ca", "other_ca"] + list(self.LEAVES):
            setattr(self, f"{name}_crt", self.dir / f"{name}.crt")
            setattr(self, f"{name}_key", self.dir / f"{name}.key")

    def copy_key_for(self, key, owner):
        """A 0600 copy of key owned by user owner (for a program that wants its own key file)."""
        key = Path(key)
        copy = self.dir / f"{key.stem}.{owner}{key.suffix}"
        shutil.copyfile(key, copy)
        copy.chmod(0o600)
        if os.geteuid() == 0:
            pw = pwd.getpwnam(owner)
            os.chown(copy, pw.pw_uid, pw.pw_gid)
        return copy


def make_certs(directory=None):
    """Build every certificate of Certs with the openssl command; returns the Certs."""
    if directory is None:
        directory = make_tempdir("pgbun-tls-")
    else:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        chown_to_run_user(directory)
    certs = Certs(directory)
    _new_keys([certs.ca_key, certs.other_ca_key] + [getattr(certs, f"{n}_key") for n in Certs.LEAVES])
    cas = {"ca": _CA(directory, "ca", "pgbun test CA"),
           "other_ca": _CA(directory, "other_ca", "pgbun other test CA")}
    cas["ca"].create(0x1000)
    cas["other_ca"].create(0x2000)
    for name, (cn, issuer, ext, dates) in Certs.LEAVES.items():
        start, end = dates or (None, None)
        cas[issuer].sign(getattr(certs, f"{name}_key"), getattr(certs, f"{name}_crt"), cn, ext,
                         startdate=start, enddate=end)
    for path in [directory] + sorted(directory.rglob("*")):
        chown_to_run_user(path)
        if path.suffix == ".key":
            path.chmod(0o600)
        elif path.suffix == ".crt":
            path.chmod(0o644)
    return certs


@pytest.fixture(scope="module")
def tls_certs():
    """One set of certificates for a test module (removed afterwards unless PGBUN_TEST_KEEP)."""
    certs = make_certs()
    yield certs
    if not KEEP:
        shutil.rmtree(certs.dir, ignore_errors=True)


def ssl_postgres(postgres, certs, hba=None, extra_conf="", cert=None, key=None, ca=None):
    """Turn TLS on in a PostgreSQL and restart it; returns the Postgres.

    postgres: a conftest.Postgres already init()ed (running), or the
              make_postgres factory (called to make one)
    hba:      pg_hba.conf text replacing conftest's (e.g. HOSTSSL_ONLY_HBA,
              CERT_HBA); `local all all trust` is added when it has no local
              line, so Postgres.sql() keeps working over the unix socket
    cert/key: the server certificate and key (default certs.server_crt/_key)
    ca:       ssl_ca_file (default certs.ca_crt); PostgreSQL asks clients for
              a certificate signed by it, needed only where pg_hba says cert
    The certificate, key and CA are copied into the data directory: the key
    0600 and owned by the server's user, as PostgreSQL insists.
    """
    pg = postgres if isinstance(postgres, Postgres) else postgres()
    cert = Path(cert or certs.server_crt)
    key = Path(key or certs.server_key)
    ca = Path(ca or certs.ca_crt)
    for src, dst, mode in ((cert, "server.crt", 0o644), (key, "server.key", 0o600), (ca, "root.crt", 0o644)):
        target = pg.datadir / dst
        shutil.copyfile(src, target)
        target.chmod(mode)
        chown_to_run_user(target)
    with open(pg.datadir / "postgresql.conf", "a") as f:
        f.write(f"""
# TLS (tlscerts.ssl_postgres)
ssl = on
ssl_cert_file = '{pg.datadir / "server.crt"}'
ssl_key_file = '{pg.datadir / "server.key"}'
ssl_ca_file = '{pg.datadir / "root.crt"}'
{extra_conf}
""")
    if hba is not None:
        if not any(line.split()[:1] == ["local"] for line in hba.splitlines()):
            hba = "local all all trust\n" + hba
        (pg.datadir / "pg_hba.conf").write_text(hba)
    if pg.running:
        pg.stop()
    try:
        pg.start()
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nPostgreSQL log:\n{pg.log_text()[-4000:]}") from None
    return pg


def cert_dates(crt):
    """(notBefore, notAfter) of a certificate, as openssl prints them."""
    out = _openssl("x509", "-noout", "-dates", "-in", crt)
    fields = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return fields["notBefore"], fields["notAfter"]
