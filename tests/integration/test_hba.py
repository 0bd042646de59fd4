"""auth_type = hba (auth_hba_file, pg_hba.conf's format) and auth_type = peer, with real clients.

pgbun reads auth_hba_file at start and at RELOAD / SIGHUP; the first rule
that matches a connection (local: the unix socket; host, hostssl,
hostnossl: TCP, with or without TLS) gives its method. The tests cover:

- each method as a rule's method (trust, password, md5, scram-sha-256,
  cert) with the session PostgreSQL's roles and conftest's auth_file;
- reject and no matching rule: 28000 and PostgreSQL's wording;
- first match wins; databases, users, @file, IPv6 and samehost rules;
- hostssl / hostnossl against plain and TLS clients;
- a broken file: pgbun does not start, or a RELOAD / SIGHUP is refused
  naming file and line while the running rules stay;
- peer (an hba rule, and auth_type = peer): the OS user at the other end
  of the unix socket must be the database user (clients run as the user
  that runs pgbun, conftest.RUN_USER, and as root);
- the console: pgbun's own OS user on the unix socket needs no password
  and no admin_users entry; another OS user does.
"""

import json
import os
import pwd
import signal
import subprocess
import sys

import psycopg
import pytest

import pgwire
from conftest import (HERE, IS_PGBOUNCER, IS_ROOT, RUN_USER, _ini_lines, chown_to_run_user, error_fields, run,
                      wait_until)
from tlscerts import tls_certs  # noqa: F401 - the module-scoped certificate fixture

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="pgbun's auth_hba_file: its refusals and messages are its own")

# The OS user pgbun runs as: peer lets it in as the database user of the same name.
OS_USER = RUN_USER or pwd.getpwuid(os.geteuid()).pw_name
needs_another_os_user = pytest.mark.skipif(not (IS_ROOT and RUN_USER),
                                           reason="needs root (another OS user than the one running pgbun)")


# ---------------------------------------------------------------- helpers

def write_hba(folder, text, name="hba.conf"):
    """Writes an hba file (0644, owned by the run user) into folder; returns its path."""
    path = folder / name
    path.write_text(text)
    path.chmod(0o644)
    chown_to_run_user(path)
    return path


def start_hba(start_pgbun, pgbun_workdir, text, config=None, **kw):
    """pgbun with auth_type = hba and text as auth_hba_file (in pgbun_workdir)."""
    path = write_hba(pgbun_workdir, text)
    bun = start_pgbun(config={"auth_type": "hba", "auth_hba_file": str(path), **(config or {})}, **kw)
    bun.hba_path = path
    return bun


def first_query(dbname):
    return "SHOW VERSION" if dbname in ("pgbun", "pgbouncer") else "SELECT current_user"


def refusal(bun, user, dbname="pgbun_test", password=None, host=None):
    """The ErrorResponse a raw login as user gets (None: logged in and served a query)."""
    w = pgwire.Wire(host or bun.host, bun.port, timeout=10)
    try:
        w.login(user, dbname, password=password)
        w.query(first_query(dbname))
    except pgwire.PgError as exc:
        return exc
    finally:
        w.close()
    return None


def auth_requests(bun, user, password, host=None):
    """The authentication requests a raw login as user gets (it must succeed)."""
    w = pgwire.Wire(host or bun.host, bun.port, timeout=10)
    try:
        w.login(user, "pgbun_test", password=password)
        assert w.scalar("SELECT current_user") == user
        return list(w.auth_requests)
    finally:
        w.close()


def assert_refused(err, message):
    assert err is not None, f"logged in, expected: {message}"
    assert (err.sqlstate, err.message) == ("28000", message), err.fields


def current_user(bun, user, password=None, **kw):
    """psycopg logs in as user and asks who it is."""
    with bun.connect(user=user, password=password, **kw) as conn:
        return conn.execute("SELECT current_user").fetchone()[0]


def psycopg_refusal(bun, user, password=None, **kw):
    """The text of the error psycopg gets logging in as user (fails if it logs in). Only for a refusal by
    pgbun, which closes the connection: a client that gives up itself (no password to send) leaves its
    socket open until the exception is collected, and pgbun waits for it at SIGTERM."""
    with pytest.raises(psycopg.OperationalError) as exc:
        bun.connect(user=user, password=password, **kw).close()
    return error_fields(exc.value)[1]


def hba_rejects(user, host="127.0.0.1", db="pgbun_test", ssl="off"):
    return f'auth_hba_file rejects connection for host "{host}", user "{user}", database "{db}", SSL {ssl}'


def no_entry(user, host="127.0.0.1", db="pgbun_test", ssl="off"):
    return f'no auth_hba_file entry for host "{host}", user "{user}", database "{db}", SSL {ssl}'


# A pgwire login over the unix socket run as the OS user that runs pgbun, then one
# query: prints {"answer": its first value} or {"sqlstate", "message"}.
_AS_RUN_USER = """
import json, sys
sys.path.insert(0, sys.argv[1])
import pgwire
w = pgwire.Wire(sys.argv[2], int(sys.argv[3]), timeout=10)
try:
    w.login(sys.argv[4], sys.argv[5])
    print(json.dumps({"answer": w.scalar(sys.argv[6])}))
except pgwire.PgError as exc:
    print(json.dumps({"sqlstate": exc.sqlstate, "message": exc.message}))
finally:
    w.close()
"""


def run_user_login(bun, user, dbname="pgbun_test"):
    """A raw login over the unix socket by the OS user running pgbun, and a query (current_user, or SHOW
    VERSION on the console): {"answer": ...} or {"sqlstate", "message"}."""
    res = run([sys.executable, "-B", "-c", _AS_RUN_USER, HERE, bun.unix_dir, bun.port, user, dbname,
               first_query(dbname)],
              as_run_user=True, cwd="/", timeout=30)
    return json.loads(res.stdout)


def run_user_psql(bun, user, sql, dbname="pgbun_test", check=True):
    """psql over the unix socket, run as the OS user running pgbun (no password)."""
    return run(["psql", "-X", "-A", "-t", "-w", "-h", bun.unix_dir, "-p", bun.port, "-U", user, "-d", dbname,
                "-c", sql], as_run_user=True, cwd="/", timeout=30, check=check)


@pytest.fixture
def os_user_role(pg):
    """A PostgreSQL role named as the OS user that runs pgbun (created if missing, then dropped)."""
    exists = pg.sql("SELECT 1 FROM pg_roles WHERE rolname = %s", (OS_USER,), dbname="postgres")
    if not exists:
        pg.sql(f'CREATE ROLE "{OS_USER}" LOGIN', dbname="postgres")
    yield OS_USER
    if not exists:
        pg.sql(f'DROP ROLE "{OS_USER}"', dbname="postgres")


def console_reload(bun):
    """RELOAD on the console (as postgres over the unix socket); the psycopg error if it failed, else None."""
    with bun.connect(dbname="pgbun", user="postgres", host=bun.unix_dir) as adm:
        try:
            adm.execute("RELOAD")
        except psycopg.Error as exc:
            return exc
    return None


# ---------------------------------------------------------------- methods

METHODS = [
    # (method, user, password, authentication requests the client sees)
    ("trust", "postgres", None, [pgwire.AUTH_OK]),
    ("password", "passuser", "passpass", [pgwire.AUTH_CLEARTEXT, pgwire.AUTH_OK]),
    ("md5", "md5user", "md5pass", [pgwire.AUTH_MD5, pgwire.AUTH_OK]),
    ("scram-sha-256", "scramuser", "scrampass",
     [pgwire.AUTH_SASL, pgwire.AUTH_SASL_CONTINUE, pgwire.AUTH_SASL_FINAL, pgwire.AUTH_OK]),
]
METHOD_IDS = [m[0] for m in METHODS]


@pytest.mark.parametrize("method,user,password,requests", METHODS, ids=METHOD_IDS)
def test_the_client_is_asked_for_what_its_rules_method_says(start_pgbun, pgbun_workdir, method, user, password,
                                                             requests):
    # Every other user gets another method, so the request seen is the rule's.
    others = "password" if method != "password" else "md5"
    bun = start_hba(start_pgbun, pgbun_workdir, f"host all {user} 127.0.0.1/32 {method}\n"
                                                f"host all all    127.0.0.1/32 {others}\n")
    assert auth_requests(bun, user, password) == requests


@pytest.mark.parametrize("method,user,password,requests", METHODS, ids=METHOD_IDS)
def test_psycopg_logs_in_with_each_rules_method_and_not_with_a_wrong_password(start_pgbun, pgbun_workdir, method,
                                                                              user, password, requests):
    bun = start_hba(start_pgbun, pgbun_workdir, f"host all {user} 127.0.0.1/32 {method}\n")
    assert current_user(bun, user, password) == user
    if method != "trust":
        text = psycopg_refusal(bun, user, "wrong")
        assert f'password authentication failed for user "{user}"' in text, text


def test_trust_rule_refuses_a_user_missing_from_auth_file(start_pgbun, pgbun_workdir):
    bun = start_hba(start_pgbun, pgbun_workdir, "host all all 127.0.0.1/32 trust\n",
                    auth_file={"postgres": ""})
    assert current_user(bun, "postgres") == "postgres"
    assert_refused(refusal(bun, "md5user"), '"trust" authentication failed for user "md5user"')


# ---------------------------------------------------------------- reject, no match, order

def test_reject_rule_refuses_with_28000_naming_host_user_database_and_ssl(start_pgbun, pgbun_workdir):
    bun = start_hba(start_pgbun, pgbun_workdir, "host all md5user 127.0.0.1/32 reject\n"
                                                "host all all     127.0.0.1/32 trust\n")
    assert_refused(refusal(bun, "md5user", password="md5pass"), hba_rejects("md5user"))
    text = psycopg_refusal(bun, "md5user", "md5pass")
    assert hba_rejects("md5user") in text, text
    res = bun.psql(["-U", "md5user", "-d", "pgbun_test", "-c", "SELECT 1"], check=False,
                   env={"PGPASSWORD": "md5pass"})
    assert res.returncode != 0 and hba_rejects("md5user") in res.stderr, res.stderr
    assert current_user(bun, "postgres") == "postgres"


def test_no_matching_rule_refuses_with_no_auth_hba_file_entry(start_pgbun, pgbun_workdir):
    bun = start_hba(start_pgbun, pgbun_workdir, "host all postgres 127.0.0.1/32 trust\n")
    assert_refused(refusal(bun, "md5user", password="md5pass"), no_entry("md5user"))
    text = psycopg_refusal(bun, "scramuser", "scrampass")
    assert no_entry("scramuser") in text, text
    assert current_user(bun, "postgres") == "postgres"


def test_unix_socket_login_without_a_local_rule_is_refused_as_local(start_pgbun, pgbun_workdir):
    bun = start_hba(start_pgbun, pgbun_workdir, "host all all 127.0.0.1/32 trust\n")
    assert_refused(refusal(bun, "postgres", host=bun.unix_dir), no_entry("postgres", host="[local]"))
    assert current_user(bun, "postgres") == "postgres"


def test_first_matching_rule_wins(start_pgbun, pgbun_workdir):
    bun = start_hba(start_pgbun, pgbun_workdir, "host all md5user   127.0.0.1/32 trust\n"
                                                "host all md5user   127.0.0.1/32 reject\n"
                                                "host all scramuser 127.0.0.1/32 reject\n"
                                                "host all scramuser 127.0.0.1/32 trust\n")
    assert current_user(bun, "md5user") == "md5user", "a reject after a matching trust rule applied"
    assert_refused(refusal(bun, "scramuser"), hba_rejects("scramuser"))


def test_a_rule_for_one_database_leaves_the_others_to_later_rules(start_pgbun, pgbun_workdir, pg):
    bun = start_hba(start_pgbun, pgbun_workdir, "host hba_closed all 127.0.0.1/32 reject\n"
                                                "host all        all 127.0.0.1/32 trust\n",
                    databases={"pgbun_test": pg.entry(), "hba_closed": pg.entry()})
    assert current_user(bun, "postgres") == "postgres"
    assert_refused(refusal(bun, "postgres", dbname="hba_closed"), hba_rejects("postgres", db="hba_closed"))


def test_an_at_file_next_to_the_hba_file_lists_the_users(start_pgbun, pgbun_workdir):
    # Both files are in pgbun_workdir; pgbun runs in a folder of its own below it.
    write_hba(pgbun_workdir, "# users let in without a password\nmd5user, scramuser\n", "trusted.txt")
    bun = start_hba(start_pgbun, pgbun_workdir, "host all @trusted.txt 127.0.0.1/32 trust\n"
                                                "host all all          127.0.0.1/32 reject\n")
    assert current_user(bun, "md5user") == "md5user"
    assert current_user(bun, "scramuser") == "scramuser"
    assert_refused(refusal(bun, "passuser", password="passpass"), hba_rejects("passuser"))


def test_ipv6_rules_match_ipv6_clients_and_ipv4_rules_ipv4_ones(start_pgbun, pgbun_workdir):
    bun = start_hba(start_pgbun, pgbun_workdir, "host all all ::1/128      reject\n"
                                                "host all all 127.0.0.1/32 trust\n",
                    config={"listen_addr": "127.0.0.1,::1"})
    assert current_user(bun, "postgres") == "postgres"
    assert_refused(refusal(bun, "postgres", host="::1"), hba_rejects("postgres", host="::1"))


def test_samehost_matches_a_client_on_127_0_0_1(start_pgbun, pgbun_workdir):
    bun = start_hba(start_pgbun, pgbun_workdir, "host all md5user samehost reject\n"
                                                "host all all     all      trust\n")
    assert_refused(refusal(bun, "md5user"), hba_rejects("md5user"))
    assert current_user(bun, "postgres") == "postgres"


# ---------------------------------------------------------------- TLS: hostssl, hostnossl, cert

TLS_HBA = """\
hostssl   all postgres 127.0.0.1/32 reject
host      all postgres 127.0.0.1/32 trust
hostnossl all md5user  127.0.0.1/32 reject
host      all md5user  127.0.0.1/32 md5
"""


def start_tls_hba(start_pgbun, pgbun_workdir, certs, text=TLS_HBA, mode="prefer", **extra):
    config = {"client_tls_sslmode": mode, "client_tls_key_file": str(certs.server_key),
              "client_tls_cert_file": str(certs.server_crt)}
    config.update({k: str(v) for k, v in extra.items()})
    return start_hba(start_pgbun, pgbun_workdir, text, config=config)


def tls(certs, **kw):
    """psycopg keywords for a TLS connection that checks pgbun against the test CA."""
    return {"sslmode": "verify-full", "sslrootcert": str(certs.ca_crt), **kw}


def test_hostssl_rule_does_not_match_a_plain_connection(start_pgbun, pgbun_workdir, tls_certs):
    bun = start_tls_hba(start_pgbun, pgbun_workdir, tls_certs)
    assert current_user(bun, "postgres", sslmode="disable") == "postgres"


def test_hostssl_rule_matches_a_tls_connection(start_pgbun, pgbun_workdir, tls_certs):
    bun = start_tls_hba(start_pgbun, pgbun_workdir, tls_certs)
    text = psycopg_refusal(bun, "postgres", **tls(tls_certs))
    assert hba_rejects("postgres", ssl="on") in text, text


def test_hostnossl_rule_matches_a_plain_connection_and_not_a_tls_one(start_pgbun, pgbun_workdir, tls_certs):
    bun = start_tls_hba(start_pgbun, pgbun_workdir, tls_certs)
    text = psycopg_refusal(bun, "md5user", "md5pass", sslmode="disable")
    assert hba_rejects("md5user") in text, text
    assert current_user(bun, "md5user", "md5pass", **tls(tls_certs)) == "md5user"


def test_cert_rule_logs_in_the_user_its_certificate_names_and_no_other(start_pgbun, pgbun_workdir, tls_certs):
    bun = start_tls_hba(start_pgbun, pgbun_workdir, tls_certs, "hostssl all all 127.0.0.1/32 cert\n",
                        mode="verify-ca", client_tls_ca_file=tls_certs.ca_crt)
    cert = {"sslcert": str(tls_certs.client_crt), "sslkey": str(tls_certs.client_key)}  # CN=postgres
    assert current_user(bun, "postgres", **tls(tls_certs, **cert)) == "postgres"
    text = psycopg_refusal(bun, "md5user", "md5pass", **tls(tls_certs, **cert))
    assert 'certificate authentication failed for user "md5user"' in text, text


def test_cert_rule_without_client_certificate_verification_stops_the_start(start_pgbun, pgbun_workdir, tls_certs):
    path = write_hba(pgbun_workdir, "hostssl all all all cert\n")
    bun = start_pgbun(config={"auth_type": "hba", "auth_hba_file": str(path), "client_tls_sslmode": "require",
                              "client_tls_key_file": str(tls_certs.server_key),
                              "client_tls_cert_file": str(tls_certs.server_crt)}, wait=False)
    rc, log = exit_of(bun)
    assert rc != 0, log
    assert "auth_hba_file has cert rules, which need client_tls_sslmode = verify-ca or verify-full" in log, log


# ---------------------------------------------------------------- a broken file: start, RELOAD, SIGHUP

def exit_of(bun):
    """(exit code, log) of a pgbun that must stop by itself at start."""
    bun.expected_exit = None  # checked here, not at teardown
    try:
        rc = bun.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"pgbun kept running:\n{bun.log_text()}")
    return rc, bun.log_text()


BROKEN = {
    # name: (file, line and words its refusal must hold)
    "ident": ("host all all 127.0.0.1/32 trust\n\nlocal all all ident\n", 3, 'authentication method "ident"'),
    "host-name": ("host all all db.example.com md5\n", 1, 'address "db.example.com": host names'),
    "group": ("# groups\nlocal all +admins trust\n", 2, '"+admins": +group (role membership) is not supported'),
    "map-option": ("local all all peer map=omicron\n", 1, 'authentication option "map=omicron"'),
    "include": ("local all all trust\ninclude other.conf\n", 2, '"include" directives are not supported'),
    "peer-on-host": ("host all all all peer\n", 1, 'peer authentication is only for "local"'),
    "missing-at-file": ("local @absent.txt all trust\n", 1, "could not open @absent.txt"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_hba_file_stops_the_start_naming_file_and_line(start_pgbun, pgbun_workdir, case):
    text, line, words = BROKEN[case]
    path = write_hba(pgbun_workdir, text)
    bun = start_pgbun(config={"auth_type": "hba", "auth_hba_file": str(path)}, wait=False)
    rc, log = exit_of(bun)
    assert rc != 0, log
    assert f"{path}:{line}: " in log and words in log, log


def test_a_missing_hba_file_stops_the_start(start_pgbun, pgbun_workdir):
    path = pgbun_workdir / "absent-hba.conf"
    bun = start_pgbun(config={"auth_type": "hba", "auth_hba_file": str(path)}, wait=False)
    rc, log = exit_of(bun)
    assert rc != 0, log
    assert f"could not open auth_hba_file {path}" in log, log


def test_auth_type_hba_without_auth_hba_file_stops_the_start(start_pgbun):
    bun = start_pgbun(config={"auth_type": "hba"}, wait=False)
    rc, log = exit_of(bun)
    assert rc != 0, log
    assert "auth_type = hba needs auth_hba_file" in log, log


# Console access stays with postgres over the unix socket; md5user and scramuser are the users the rules change.
RELOAD_OLD = """\
local all postgres trust
host  all postgres 127.0.0.1/32 trust
host  all md5user  127.0.0.1/32 trust
host  all all      127.0.0.1/32 reject
"""
RELOAD_BROKEN = RELOAD_OLD.replace("host  all all      127.0.0.1/32 reject", "host  all scramuser example.com trust")
RELOAD_NEW = """\
local all postgres trust
host  all postgres 127.0.0.1/32 trust
host  all md5user  127.0.0.1/32 reject
host  all all      127.0.0.1/32 trust
"""


def assert_old_rules(bun):
    assert current_user(bun, "md5user") == "md5user"
    assert_refused(refusal(bun, "scramuser", password="scrampass"), hba_rejects("scramuser"))


def assert_new_rules(bun):
    assert_refused(refusal(bun, "md5user", password="md5pass"), hba_rejects("md5user"))
    assert current_user(bun, "scramuser") == "scramuser"


def test_reload_of_a_broken_hba_file_is_refused_naming_file_and_line_and_the_old_rules_stay(start_pgbun,
                                                                                            pgbun_workdir):
    bun = start_hba(start_pgbun, pgbun_workdir, RELOAD_OLD, config={"admin_users": "postgres"})
    assert_old_rules(bun)
    write_hba(pgbun_workdir, RELOAD_BROKEN)
    err = console_reload(bun)
    assert err is not None, "RELOAD accepted a broken auth_hba_file"
    text = error_fields(err)[1]
    assert f'{bun.hba_path}:4: address "example.com": host names' in text, text
    assert bun.alive(), bun.log_text()
    assert_old_rules(bun)


def test_reload_of_a_fixed_hba_file_applies_its_rules(start_pgbun, pgbun_workdir):
    bun = start_hba(start_pgbun, pgbun_workdir, RELOAD_OLD, config={"admin_users": "postgres"})
    write_hba(pgbun_workdir, RELOAD_BROKEN)
    assert console_reload(bun) is not None
    write_hba(pgbun_workdir, RELOAD_NEW)
    err = console_reload(bun)
    assert err is None, error_fields(err)
    assert_new_rules(bun)


def test_sighup_with_a_broken_hba_file_is_refused_and_a_fixed_one_applies(start_pgbun, pgbun_workdir):
    bun = start_hba(start_pgbun, pgbun_workdir, RELOAD_OLD)
    write_hba(pgbun_workdir, RELOAD_BROKEN)
    before = len(bun.log_text())
    os.kill(bun.proc.pid, signal.SIGHUP)
    wait_until(lambda: "reload failed" in bun.log_text()[before:], timeout=10, what="the refused reload in the log")
    tail = bun.log_text()[before:]
    assert f'{bun.hba_path}:4: address "example.com": host names' in tail, tail
    assert bun.alive(), bun.log_text()
    assert_old_rules(bun)
    write_hba(pgbun_workdir, RELOAD_NEW)
    before = len(bun.log_text())
    os.kill(bun.proc.pid, signal.SIGHUP)
    wait_until(lambda: "configuration reloaded" in bun.log_text()[before:], timeout=10, what="the reload in the log")
    assert_new_rules(bun)


def test_reload_switches_auth_type_to_hba_and_back(start_pgbun, pgbun_workdir, pg):
    bun = start_pgbun(config={"admin_users": "postgres"})  # auth_type = trust
    assert current_user(bun, "md5user") == "md5user"
    path = write_hba(pgbun_workdir, "local all postgres trust\nhost all all 127.0.0.1/32 md5\n")
    cfg = {**bun.config, "auth_type": "hba", "auth_hba_file": str(path)}
    bun.config_path.write_text(_ini_lines("pgbun", cfg, {"pgbun_test": pg.entry()}, None))
    assert console_reload(bun) is None
    assert auth_requests(bun, "md5user", "md5pass") == [pgwire.AUTH_MD5, pgwire.AUTH_OK]
    assert current_user(bun, "md5user", "md5pass") == "md5user"
    bun.config_path.write_text(_ini_lines("pgbun", bun.config, {"pgbun_test": pg.entry()}, None))
    assert console_reload(bun) is None
    assert current_user(bun, "md5user") == "md5user"


# ---------------------------------------------------------------- peer

PEER_HBA = "local all all peer\nhost all all 127.0.0.1/32 md5\n"


def over_pg_socket(pg):
    """[databases] with pgbun_test reached over PostgreSQL's unix socket, which trusts every role
    (the role named as the OS user has no password)."""
    return {"pgbun_test": f"host={pg.sockdir} port={pg.port} dbname=pgbun_test"}


def test_peer_rule_lets_the_os_user_in_as_the_database_user_of_its_name(start_pgbun, pgbun_workdir, pg,
                                                                        os_user_role):
    bun = start_hba(start_pgbun, pgbun_workdir, PEER_HBA, auth_file={os_user_role: ""}, databases=over_pg_socket(pg))
    assert run_user_login(bun, os_user_role) == {"answer": os_user_role}
    res = run_user_psql(bun, os_user_role, "SELECT current_user")
    assert res.stdout.strip() == os_user_role, res.stdout + res.stderr


def test_peer_rule_refuses_the_os_user_as_another_database_user(start_pgbun, pgbun_workdir):
    bun = start_hba(start_pgbun, pgbun_workdir, PEER_HBA)
    assert run_user_login(bun, "md5user") == {"sqlstate": "28000",
                                              "message": 'Peer authentication failed for user "md5user"'}
    res = run_user_psql(bun, "md5user", "SELECT 1", check=False)
    assert res.returncode != 0 and 'Peer authentication failed for user "md5user"' in res.stderr, res.stderr


def test_peer_rule_refuses_the_os_user_missing_from_auth_file(start_pgbun, pgbun_workdir, os_user_role):
    bun = start_hba(start_pgbun, pgbun_workdir, PEER_HBA, auth_file={"md5user": "md5pass"})
    assert run_user_login(bun, os_user_role) == {
        "sqlstate": "28000", "message": f'Peer authentication failed for user "{os_user_role}": not in auth_file'}


@needs_another_os_user
def test_peer_rule_refuses_another_os_user_as_the_run_users_database_user(start_pgbun, pgbun_workdir, os_user_role):
    bun = start_hba(start_pgbun, pgbun_workdir, PEER_HBA)
    assert_refused(refusal(bun, os_user_role, host=bun.unix_dir),
                   f'Peer authentication failed for user "{os_user_role}"')


def test_peer_rule_does_not_apply_over_tcp(start_pgbun, pgbun_workdir):
    bun = start_hba(start_pgbun, pgbun_workdir, PEER_HBA)
    assert auth_requests(bun, "md5user", "md5pass") == [pgwire.AUTH_MD5, pgwire.AUTH_OK]


def test_auth_type_peer_lets_the_os_user_in_on_the_unix_socket(start_pgbun, pg, os_user_role):
    bun = start_pgbun(config={"auth_type": "peer"}, auth_file={os_user_role: "", "md5user": "md5pass"},
                      databases=over_pg_socket(pg))
    assert run_user_login(bun, os_user_role) == {"answer": os_user_role}
    res = run_user_psql(bun, os_user_role, "SELECT current_user")
    assert res.stdout.strip() == os_user_role, res.stdout + res.stderr


def test_auth_type_peer_refuses_the_os_user_as_another_database_user(start_pgbun):
    bun = start_pgbun(config={"auth_type": "peer"})
    assert run_user_login(bun, "md5user") == {"sqlstate": "28000",
                                              "message": 'Peer authentication failed for user "md5user"'}


def test_auth_type_peer_refuses_tcp_logins_with_28000(start_pgbun):
    bun = start_pgbun(config={"auth_type": "peer"})
    assert_refused(refusal(bun, "postgres"),
                   'Peer authentication failed for user "postgres": not a unix-socket connection')
    text = psycopg_refusal(bun, "md5user", "md5pass")
    assert 'Peer authentication failed for user "md5user"' in text, text


@needs_another_os_user
def test_auth_type_peer_refuses_another_os_user_on_the_unix_socket(start_pgbun, os_user_role):
    bun = start_pgbun(config={"auth_type": "peer"})
    assert_refused(refusal(bun, os_user_role, host=bun.unix_dir),
                   f'Peer authentication failed for user "{os_user_role}"')


# ---------------------------------------------------------------- the console and pgbun's own OS user

CONSOLE_SETUPS = {
    # name: config; none lists an admin user, none lets anyone in without a password or a peer check
    "hba-local-reject": lambda wd: {"auth_type": "hba",
                                    "auth_hba_file": str(write_hba(wd, "local all all reject\n"
                                                                       "host all all all md5\n"))},
    "hba-local-md5": lambda wd: {"auth_type": "hba",
                                 "auth_hba_file": str(write_hba(wd, "local all all md5\nhost all all all md5\n"))},
    "auth_type-md5": lambda wd: {"auth_type": "md5"},
    "auth_type-peer": lambda wd: {"auth_type": "peer"},
}


@pytest.mark.parametrize("console_db", ["pgbun", "pgbouncer"])
@pytest.mark.parametrize("setup", sorted(CONSOLE_SETUPS))
def test_the_os_user_running_pgbun_reaches_the_console_without_password_or_admin_users(start_pgbun, pgbun_workdir,
                                                                                       setup, console_db):
    bun = start_pgbun(config=CONSOLE_SETUPS[setup](pgbun_workdir))
    res = run_user_psql(bun, "pgbouncer", "SHOW VERSION", dbname=console_db)
    assert res.stdout.strip().startswith("pgbun"), res.stdout + res.stderr
    assert run_user_login(bun, "pgbouncer", dbname=console_db)["answer"].startswith("pgbun")


@needs_another_os_user
@pytest.mark.parametrize("console_db", ["pgbun", "pgbouncer"])
@pytest.mark.parametrize("setup", sorted(CONSOLE_SETUPS))
def test_another_os_user_does_not_reach_the_console_without_a_password(start_pgbun, pgbun_workdir, setup,
                                                                       console_db):
    bun = start_pgbun(config={**CONSOLE_SETUPS[setup](pgbun_workdir), "admin_users": "md5user"})
    # psql as root, no password: refused
    res = bun.psql(["-w", "-U", "md5user", "-d", console_db, "-c", "SHOW VERSION"], host=bun.unix_dir, check=False)
    assert res.returncode != 0, res.stdout
    # a raw login with a wrong password: 28000 (reject, peer) or 28P01 (md5)
    err = refusal(bun, "md5user", dbname=console_db, password="wrong", host=bun.unix_dir)
    assert err is not None and err.sqlstate in ("28000", "28P01"), err and err.fields
    # the password of an admin user: in (not with peer or reject, which ask for none)
    if setup in ("hba-local-md5", "auth_type-md5"):
        assert refusal(bun, "md5user", dbname=console_db, password="md5pass", host=bun.unix_dir) is None


def test_a_rule_closing_the_console_database_pgbouncer_also_closes_it_as_pgbun(start_pgbun, pgbun_workdir):
    # A PgBouncer hba file that keeps TCP clients off the console.
    bun = start_hba(start_pgbun, pgbun_workdir, "host pgbouncer all 127.0.0.1/32 reject\n"
                                                "host all       all 127.0.0.1/32 md5\n",
                    config={"admin_users": "md5user"})
    assert_refused(refusal(bun, "md5user", dbname="pgbouncer", password="md5pass"),
                   hba_rejects("md5user", db="pgbouncer"))
    err = refusal(bun, "md5user", dbname="pgbun", password="md5pass")
    assert err is not None and err.sqlstate == "28000", "the console let md5user in as database pgbun"


# ---------------------------------------------------------------- hba with auth_query

def test_hba_rules_choose_the_method_for_users_that_auth_query_finds(start_pgbun, pgbun_workdir, pg):
    """A user not in auth_file, found in PostgreSQL by auth_query, gets its hba rule's method: scram-sha-256
    from one network, reject for another database; the lookup runs only for a connection a rule lets in."""
    role, auth = "hbaq_user", "hbaq_auth"
    for r in (role, auth):
        pg.sql(f"DROP ROLE IF EXISTS {r}", dbname="postgres")
    pg.sql(f"CREATE ROLE {auth} LOGIN SUPERUSER PASSWORD 'hbaq auth pass'", dbname="postgres")
    pg.sql(f"CREATE ROLE {role} LOGIN PASSWORD 'hbaq user pass'", dbname="postgres")
    pg.sql(f"ALTER ROLE {auth} SET log_statement = 'all'", dbname="postgres")
    try:
        bun = start_hba(start_pgbun, pgbun_workdir,
                        "host other all 127.0.0.1/32 reject\n"
                        "host all all 127.0.0.1/32 scram-sha-256\n",
                        config={"auth_user": auth, "verbose": 2},
                        databases={"pgbun_test": pg.entry(), "other": pg.entry()},
                        auth_file={auth: "hbaq auth pass"})
        assert auth_requests(bun, role, "hbaq user pass")[0] == pgwire.AUTH_SASL
        with bun.connect(user=role, password="hbaq user pass") as conn:
            assert conn.execute("SELECT current_user").fetchone() == (role,)
        err = refusal(bun, role, password="not it")
        assert (err.sqlstate, err.message) == ("28P01", f'password authentication failed for user "{role}"')
        before = pg.log_text().count("execute")
        err = refusal(bun, role, dbname="other", password="hbaq user pass")
        assert err.sqlstate == "28000" and "rejects connection" in err.message, err.fields
        assert pg.log_text().count("execute") == before, "a rejected connection ran auth_query"
        log = bun.log_text()
        assert "hbaq user pass" not in log and "hbaq auth pass" not in log
    finally:
        pg.sql(f"ALTER ROLE {auth} RESET log_statement", dbname="postgres")
