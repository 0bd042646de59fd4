"""auth_user / auth_query / auth_dbname: users that are not in auth_file are
looked up in PostgreSQL, and SCRAM logins reach PostgreSQL by pass-through.

Every test runs against this module's own PostgreSQL 15 (`aqpg`), whose
pg_hba.conf asks md5 of the members of aqt_md5_users and SCRAM of every
other TCP user but postgres. Its roles:
- aqt_super: a superuser, the auth_user of the default auth_query;
- aqt_lookup: an ordinary role allowed only to run aqt_sec.get_auth(), a
  SECURITY DEFINER function as PgBouncer's documentation recommends;
- one or more roles per test, named aqt_<what>_<n>, none in any pgbun file.

Covered: logins through psql, psycopg, node-postgres, JDBC and asyncpg in
session and transaction pooling; md5; expired, NOLOGIN and password-less
roles; the cache (auth_query_cache_ttl, a failed password, RELOAD); the
search_path attack (PgBouncer's CVE-2025-12819); one lookup for many
simultaneous logins; an auth_user known only by its SCRAM secret; lookups
that cannot run; SHOW USERS' secret_source; no secret in the log at verbose
2; refusals of unknown users and wrong passwords alike; per-database
auth_user and auth_dbname, a global auth_dbname and the console; one role
name with other passwords on two servers (expected to fail for now: pgbun
keeps the pass-through keys per user name).
"""

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import os
import re
import shutil
import statistics
import threading
import time
from pathlib import Path

import psycopg
import pytest

import pgwire
from conftest import Postgres, TEST_WORKERS, free_port, in_thread, run, wait_until

HERE = Path(__file__).resolve().parent
JAR = Path(os.environ.get("PGBUN_JDBC_JAR", "/usr/share/java/postgresql.jar"))
JAVA = shutil.which("java")

SUPER, SUPER_PW = "aqt_super", "super pass 1"
LOOKUP, LOOKUP_PW = "aqt_lookup", "lookup pass 2"
ADMIN, ADMIN_PW = "aqt_admin", "admin pass 3"  # pgbun's console only; no such role in PostgreSQL
MD5_GROUP = "aqt_md5_users"
FUNC_QUERY = "SELECT username, password FROM aqt_sec.get_auth($1)"
AQ_ERROR = 'auth_query failed: the password of user "{}" could not be looked up (pgbun\'s log says why)'

AQ_HBA = f"""\
local all all trust
host  all postgres        127.0.0.1/32 trust
host  all +{MD5_GROUP}    127.0.0.1/32 md5
host  all all             127.0.0.1/32 scram-sha-256
"""

# PgBouncer's documented lookup function, reading pg_authid as its owner (a superuser).
GET_AUTH = """
CREATE SCHEMA aqt_sec;
CREATE FUNCTION aqt_sec.get_auth(p_user text) RETURNS TABLE (username text, password text)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT rolname::text, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END
    FROM pg_catalog.pg_authid WHERE rolname = p_user AND rolcanlogin
$$;
REVOKE ALL ON FUNCTION aqt_sec.get_auth(text) FROM PUBLIC;
GRANT USAGE ON SCHEMA aqt_sec TO aqt_lookup;
GRANT EXECUTE ON FUNCTION aqt_sec.get_auth(text) TO aqt_lookup;
"""


@pytest.fixture(scope="module")
def aqpg():
    """This module's PostgreSQL: the auth roles, the lookup function in pgbun_test and aqt_authdb."""
    def setup(server):
        server.sql(f"CREATE ROLE {MD5_GROUP} NOLOGIN", dbname="postgres")
        server.sql(f"CREATE ROLE {SUPER} LOGIN SUPERUSER PASSWORD '{SUPER_PW}'", dbname="postgres")
        server.sql(f"CREATE ROLE {LOOKUP} LOGIN PASSWORD '{LOOKUP_PW}'", dbname="postgres")
        server.sql("CREATE DATABASE aqt_authdb", dbname="postgres")
        for db in ("pgbun_test", "aqt_authdb"):
            server.sql(GET_AUTH, dbname=db)
        (server.datadir / "pg_hba.conf").write_text(AQ_HBA)
        run([server._bin("pg_ctl"), "-D", server.datadir, "reload"], as_run_user=True, cwd=server.base)

    server = Postgres("authq").init_or_clean_up(setup)
    yield server
    server.destroy()


_serial = itertools.count(1)


# Every pgbun start_aq() started, and every role new_role() made with its password, in the running test:
# each such pgbun logs at verbose 2, and no password or secret of the test may reach its log.
_started = []
_made = []


@pytest.fixture(autouse=True)
def _no_secret_in_any_log(aqpg):
    _started.clear()
    _made.clear()
    yield
    secrets = {SUPER_PW, LOOKUP_PW, ADMIN_PW}
    for role, password in _made:
        if password:
            secrets.add(password)
        try:
            secret = rolpassword(aqpg, role)
        except (IndexError, psycopg.Error):
            continue  # dropped by the test
        if secret:
            secrets.update({secret, secret[3:]} if secret.startswith("md5") else {secret})
            if secret.startswith("SCRAM-SHA-256$") and password:
                secrets.update(base64.b64encode(k).decode() for k in scram_keys(secret, password))
    for bun in _started:
        log = bun.log_text()
        leaked = sorted(x for x in secrets if x and x in log)
        assert not leaked, f"secrets in pgbun's log: {leaked}"


def new_role(aqpg, what, password=None, md5=False, attrs="LOGIN", grants=True):
    """A role of this test only (aqt_<what>_<n>), with a SCRAM (or md5) password, or none.
    It may read users and write txn_log in pgbun_test (what the clients below query)."""
    name = f"aqt_{what}_{next(_serial)}"
    _made.append((name, password))
    pw = "" if password is None else f" PASSWORD '{password}'"
    aqpg.sql(f"SET password_encryption = '{'md5' if md5 else 'scram-sha-256'}'; CREATE ROLE {name} {attrs}{pw}",
             dbname="postgres")
    if md5:
        aqpg.sql(f"GRANT {MD5_GROUP} TO {name}", dbname="postgres")
    if grants:
        aqpg.sql(f"GRANT SELECT ON users TO {name}; GRANT INSERT ON txn_log TO {name}; "
                 f"GRANT USAGE ON SEQUENCE txn_log_id_seq TO {name}")
    return name


def rolpassword(aqpg, role):
    return aqpg.sql("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,), dbname="postgres")[0][0]


def start_aq(start_pgbun, aqpg, config=None, databases=None, auth_file=None, auth_user=SUPER):
    """pgbun with auth_user set (SCRAM for clients unless config says otherwise), logging at verbose 2;
    auth_file holds the auth roles' and the console admin's passwords only."""
    cfg = {"auth_type": "scram-sha-256", "auth_user": auth_user, "admin_users": ADMIN,
           "max_client_conn": 500, "verbose": 2}
    cfg.update(config or {})
    if auth_file is None:
        auth_file = {SUPER: SUPER_PW, LOOKUP: LOOKUP_PW, ADMIN: ADMIN_PW}
    bun = start_pgbun(config=cfg, databases=databases or {"pgbun_test": aqpg.entry()}, auth_file=auth_file)
    _started.append(bun)
    return bun


def login(bun, user, password, database="pgbun_test", params=None):
    """A raw wire client logged in through bun (the SCRAM server signature checked)."""
    return bun.login(user=user, database=database, password=password, params=params)


def refusal(bun, user, password, database="pgbun_test", params=None):
    """The PgError of a login that must fail."""
    w = bun.wire()
    try:
        with pytest.raises(pgwire.PgError) as err:
            w.login(user, database, password=password, params=params)
    finally:
        w.close()
    return err.value


def assert_password_refused(bun, user, password, database="pgbun_test", params=None):
    err = refusal(bun, user, password, database, params)
    assert (err.sqlstate, err.message) == ("28P01", f'password authentication failed for user "{user}"'), err.fields


def whoami(w):
    """(current_user, backend pid) of a wire client."""
    who, pid = w.query("SELECT current_user, pg_backend_pid()")[0]
    return who, int(pid)


def console(bun, sql):
    """A console command as the admin (SCRAM with its password in auth_file); rows as dicts."""
    with psycopg.connect(host=bun.host, port=bun.port, dbname="pgbun", user=ADMIN, password=ADMIN_PW,
                         connect_timeout=10, autocommit=True) as conn:
        cur = conn.execute(sql)
        if cur.description is None:
            return []
        cols = [d.name for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]


def authenticated(aqpg, role, method="scram-sha-256", pid=None):
    """PostgreSQL's log lines saying role's backend (pid, if given) logged in with method."""
    who = rf"\[{pid}\] " if pid is not None else r"\[\d+\] "
    line = re.compile(who + r".*connection authenticated: identity=\"" + re.escape(role) + r"\" method=" +
                      re.escape(method) + r"\b")
    return [ln for ln in aqpg.log_text().splitlines() if line.search(ln)]


def backend_user(aqpg, pid):
    rows = aqpg.sql("SELECT usename FROM pg_stat_activity WHERE pid = %s", (pid,))
    return rows[0][0] if rows else None


def auth_query_runs(aqpg, auth_role, needle="pg_authid"):
    """How many times auth_role executed a statement mentioning needle (log_statement = 'all' for it)."""
    prefix = re.compile(r"\[\d+\] " + re.escape(auth_role) + r"@\S* LOG:  (execute \S+|statement): ")
    return sum(1 for ln in aqpg.log_text().splitlines() if prefix.search(ln) and needle in ln)


def files_under(path):
    for p in Path(path).rglob("*"):
        if p.is_file():
            yield p


def assert_not_in_files(directory, text):
    for p in files_under(directory):
        assert text not in p.read_text(errors="replace"), f"{text!r} is in {p}"


def scram_keys(secret, password):
    """(StoredKey, ServerKey, ClientKey) of a SCRAM secret and its password, as raw bytes."""
    m = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)", secret)
    iterations, salt = int(m.group(1)), base64.b64decode(m.group(2))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return base64.b64decode(m.group(3)), base64.b64decode(m.group(4)), client_key


# ---------------------------------------------------------------- 1. clients log in with SCRAM, pass-through

NODE_CLIENT = r"""
const { Client } = require('pg');
async function main() {
    const cfg = JSON.parse(process.env.AQ_NODE);
    const client = new Client({ host: cfg.host, port: cfg.port, user: cfg.user, password: cfg.password,
                                database: 'pgbun_test', connectionTimeoutMillis: 10000 });
    await client.connect();
    try {
        const r = await client.query('SELECT current_user AS who, pg_backend_pid() AS pid, ' +
                                     'count(*)::int AS n FROM users');
        process.stdout.write(JSON.stringify(r.rows[0]) + '\n');
    } finally {
        await client.end();
    }
}
main().catch((err) => { process.stderr.write(String((err && err.stack) || err) + '\n'); process.exit(1); });
"""

WHO_SQL = "SELECT current_user, pg_backend_pid()"


def via_psql(bun, role, password, request):
    res = bun.psql(["-U", role, "-d", "pgbun_test", "-tA", "-F", " ", "-c", WHO_SQL], env={"PGPASSWORD": password})
    who, pid = res.stdout.split()
    return who, int(pid)


def via_psycopg(bun, role, password, request):
    with bun.connect(user=role, password=password) as conn:
        who, pid = conn.execute(WHO_SQL).fetchone()
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] > 0
    return who, pid


def via_node(bun, role, password, request):
    node_pg = request.getfixturevalue("node_pg")
    cfg = {"host": bun.host, "port": bun.port, "user": role, "password": password}
    env = dict(os.environ, NODE_PATH=str(node_pg), AQ_NODE=json.dumps(cfg))
    res = run(["node", "-e", NODE_CLIENT], timeout=30, check=False, env=env, cwd=str(node_pg.parent))
    assert res.returncode == 0, f"node exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
    out = json.loads(res.stdout)
    assert out["n"] > 0
    return out["who"], out["pid"]


def via_jdbc(bun, role, password, request):
    if not JAVA:
        pytest.skip("java not installed (scripts/deps installs it)")
    if not JAR.is_file():
        pytest.skip(f"{JAR} missing: install libpostgresql-jdbc-java")
    res = run([JAVA, "-cp", JAR, HERE / "JdbcSmoke.java", f"jdbc:postgresql://{bun.host}:{bun.port}/pgbun_test",
               role, password], timeout=90, check=False)
    assert res.returncode == 0, f"JdbcSmoke failed:\n{res.stdout}\n{res.stderr}"
    out = dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)
    assert out["transaction"] == "ok"
    return out["user"], None  # JdbcSmoke prints no backend pid


def via_asyncpg(bun, role, password, request):
    asyncpg = pytest.importorskip("asyncpg", reason="Debian's python3-asyncpg is not installed")

    async def go():
        conn = await asyncpg.connect(host=bun.host, port=bun.port, user=role, password=password,
                                     database="pgbun_test", timeout=10, statement_cache_size=0)
        try:
            row = await conn.fetchrow(WHO_SQL)
            return row[0], row[1]
        finally:
            await conn.close()

    return asyncio.run(asyncio.wait_for(go(), timeout=30))


CLIENTS = {"psql": via_psql, "psycopg": via_psycopg, "node-postgres": via_node, "jdbc": via_jdbc,
           "asyncpg": via_asyncpg}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
@pytest.mark.parametrize("client", list(CLIENTS))
def test_a_role_only_in_postgresql_logs_in_with_scram_and_reaches_postgresql_as_itself(
        start_pgbun, aqpg, request, client, pool_mode):
    """No pgbun file holds its password or secret: pgbun logs in to PostgreSQL with the keys of its proof."""
    password = "only in pg 1"
    role = new_role(aqpg, "scram", password)
    bun = start_aq(start_pgbun, aqpg, config={"pool_mode": pool_mode})
    who, pid = CLIENTS[client](bun, role, password, request)
    assert who == role
    # pgbun logged in to PostgreSQL as the role with SCRAM, knowing no password of it.
    assert authenticated(aqpg, role), f"no SCRAM login of {role} in PostgreSQL's log"
    if pid is not None:
        assert authenticated(aqpg, role, pid=pid), f"backend {pid} did not log in as {role} with SCRAM"
        assert backend_user(aqpg, pid) == role  # pgbun keeps the server in its pool
    backends = aqpg.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND backend_type = 'client backend' "
                        "AND client_addr = '127.0.0.1'", (role,))[0][0]
    assert backends >= 1
    assert_not_in_files(bun.workdir, password)
    assert_not_in_files(bun.workdir, rolpassword(aqpg, role))


def test_the_default_auth_query_and_a_security_definer_function_both_find_the_secret(start_pgbun, aqpg):
    """aqt_lookup may not read pg_authid: it asks aqt_sec.get_auth(); aqt_super runs the default query."""
    role = new_role(aqpg, "func", "func pass")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        aqpg.sql("SELECT rolpassword FROM pg_authid", user=LOOKUP)
    for auth_user, extra in ((LOOKUP, {"auth_query": FUNC_QUERY}), (SUPER, {})):
        bun = start_aq(start_pgbun, aqpg, config=extra, auth_user=auth_user)
        w = login(bun, role, "func pass")
        assert whoami(w)[0] == role
        assert_password_refused(bun, role, "not it")
        bun.stop()


# ---------------------------------------------------------------- 2. md5

def test_an_md5_role_logs_in_with_md5_and_pgbun_answers_postgresql_s_md5_challenge(start_pgbun, aqpg):
    role = new_role(aqpg, "md5", "md5 pass 9", md5=True)
    assert rolpassword(aqpg, role).startswith("md5")
    bun = start_aq(start_pgbun, aqpg, config={"auth_type": "md5"})
    w = login(bun, role, "md5 pass 9")
    assert w.auth_requests[0] == pgwire.AUTH_MD5
    who, pid = whoami(w)
    assert who == role
    assert authenticated(aqpg, role, method="md5", pid=pid), f"backend {pid} did not log in as {role} with md5"
    res = bun.psql(["-U", role, "-d", "pgbun_test", "-tAc", "SELECT current_user"], env={"PGPASSWORD": "md5 pass 9"})
    assert res.stdout.strip() == role
    with bun.connect(user=role, password="md5 pass 9") as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == role
    assert_password_refused(bun, role, "md5 pass 8")
    assert_not_in_files(bun.workdir, rolpassword(aqpg, role))


# ---------------------------------------------------------------- 3. roles that may not log in

def test_an_expired_role_is_refused_like_a_wrong_password(start_pgbun, aqpg):
    """... and the refusal is not remembered: once valid again, it logs in."""
    role = new_role(aqpg, "expired", "exp pass", attrs="LOGIN VALID UNTIL '2001-01-01'")
    bun = start_aq(start_pgbun, aqpg)
    assert_password_refused(bun, role, "exp pass")
    aqpg.sql(f"ALTER ROLE {role} VALID UNTIL 'infinity'", dbname="postgres")
    assert whoami(login(bun, role, "exp pass"))[0] == role


def test_a_nologin_role_is_refused_like_a_wrong_password(start_pgbun, aqpg):
    role = new_role(aqpg, "nologin", "nl pass", attrs="NOLOGIN")
    bun = start_aq(start_pgbun, aqpg)
    assert_password_refused(bun, role, "nl pass")


def test_a_role_without_a_password_is_refused_whatever_it_sends(start_pgbun, aqpg):
    role = new_role(aqpg, "nopass")
    assert rolpassword(aqpg, role) is None
    bun = start_aq(start_pgbun, aqpg)
    for password in ("", "anything"):
        assert_password_refused(bun, role, password)
    bun_md5 = start_aq(start_pgbun, aqpg, config={"auth_type": "md5"})
    assert_password_refused(bun_md5, role, "anything")


def test_an_unknown_role_is_refused_like_a_wrong_password(start_pgbun, aqpg):
    bun = start_aq(start_pgbun, aqpg)
    assert_password_refused(bun, "aqt_nobody_here", "whatever")
    assert "aqt_nobody_here" not in [u["name"] for u in console(bun, "SHOW USERS")
                                     if u["secret_source"] != "none"]


# ---------------------------------------------------------------- 4. the cache

def test_after_alter_role_password_the_old_one_works_only_until_the_cache_time(start_pgbun, aqpg):
    ttl = 1.0
    role = new_role(aqpg, "alter", "old pass")
    bun = start_aq(start_pgbun, aqpg, config={"auth_query_cache_ttl": 1})
    began = time.monotonic()
    login(bun, role, "old pass").terminate()  # looked up now: cached for 1 s
    aqpg.sql(f"ALTER ROLE {role} PASSWORD 'new pass'", dbname="postgres")
    w = bun.wire()
    try:
        w.login(role, "pgbun_test", password="old pass")
        old_accepted = True
    except pgwire.PgError as exc:
        old_accepted = exc
    finally:
        w.close()
    if time.monotonic() - began < ttl * 0.8:
        assert old_accepted is True, f"the cached secret was not used within auth_query_cache_ttl: {old_accepted}"
    time.sleep(ttl + 0.3)
    assert_password_refused(bun, role, "old pass")
    assert whoami(login(bun, role, "new pass"))[0] == role


def test_a_failed_password_makes_the_next_login_look_the_role_up_again(start_pgbun, aqpg):
    role = new_role(aqpg, "refail", "first pass")
    bun = start_aq(start_pgbun, aqpg, config={"auth_query_cache_ttl": 3600})
    login(bun, role, "first pass").terminate()
    aqpg.sql(f"ALTER ROLE {role} PASSWORD 'second pass'", dbname="postgres")
    assert_password_refused(bun, role, "second pass")  # checked against the cached secret: refused, entry dropped
    assert whoami(login(bun, role, "second pass"))[0] == role
    assert_password_refused(bun, role, "first pass")


def test_reload_looks_every_role_up_again_at_once(start_pgbun, aqpg):
    role = new_role(aqpg, "reload", "before reload")
    bun = start_aq(start_pgbun, aqpg, config={"auth_query_cache_ttl": 3600})
    login(bun, role, "before reload").terminate()
    aqpg.sql(f"ALTER ROLE {role} PASSWORD 'after reload'", dbname="postgres")
    login(bun, role, "before reload").terminate()  # still the cached secret
    console(bun, "RELOAD")
    assert_password_refused(bun, role, "before reload")
    assert whoami(login(bun, role, "after reload"))[0] == role


def test_cache_ttl_0_asks_postgresql_at_every_login(start_pgbun, aqpg):
    auth = new_role(aqpg, "ttl0auth", "ttl0 auth pass", attrs="LOGIN SUPERUSER", grants=False)
    aqpg.sql(f"ALTER ROLE {auth} SET log_statement = 'all'", dbname="postgres")
    role = new_role(aqpg, "ttl0", "ttl0 pass")
    bun = start_aq(start_pgbun, aqpg, config={"auth_query_cache_ttl": 0}, auth_user=auth,
                   auth_file={auth: "ttl0 auth pass"})
    for _ in range(3):
        login(bun, role, "ttl0 pass").terminate()
    wait_until(lambda: auth_query_runs(aqpg, auth) >= 3, 10, what="3 auth_query runs in PostgreSQL's log")
    time.sleep(0.3)
    assert auth_query_runs(aqpg, auth) == 3


# ---------------------------------------------------------------- 5. search_path

EVIL_SETUP = """
CREATE SCHEMA evil;
CREATE VIEW evil.pg_authid AS
    SELECT r.rolname, true AS rolcanlogin, NULL::timestamptz AS rolvaliduntil, '{secret}'::text AS rolpassword
    FROM pg_catalog.pg_roles r
    UNION ALL SELECT '{ghost}'::name, true, NULL::timestamptz, '{secret}'::text;
CREATE VIEW evil.pg_shadow AS
    SELECT rolname AS usename, rolpassword AS passwd, rolvaliduntil AS valuntil FROM evil.pg_authid;
CREATE FUNCTION evil.always(name, name) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT true';
CREATE FUNCTION evil.always(name, text) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT true';
CREATE FUNCTION evil.never(timestamptz, timestamptz) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT false';
CREATE OPERATOR evil.= (LEFTARG = name, RIGHTARG = name, FUNCTION = evil.always);
CREATE OPERATOR evil.= (LEFTARG = name, RIGHTARG = text, FUNCTION = evil.always);
CREATE OPERATOR evil.< (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = evil.never);
CREATE FUNCTION evil.set_config(text, text, boolean) RETURNS text LANGUAGE sql AS 'SELECT $2';
CREATE FUNCTION evil.get_auth(text) RETURNS TABLE (username text, password text) LANGUAGE sql
    AS $$ SELECT $1, '{secret}' $$;
ALTER DATABASE {db} SET search_path = evil, pg_catalog, public;
ALTER ROLE {attacker} SET search_path = evil, pg_catalog, public;
"""

EVIL_PATH = "evil, pg_catalog, public"


# The default auth_query (pg_authid), and PgBouncer's default before 1.21 (pg_shadow), both unqualified.
ATTACKED_QUERIES = {"pg_authid": None, "pg_shadow": "SELECT usename, passwd FROM pg_shadow WHERE usename = $1"}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("catalog", list(ATTACKED_QUERIES))
def test_objects_on_an_attacker_s_search_path_never_answer_for_the_catalog(start_pgbun, aqpg, catalog):
    """The attacker owns the database the lookups run in, with a search_path (the database's, its role's and
    its startup packet's) putting its own pg_authid, pg_shadow, = and < before pg_catalog's: it still
    cannot log in as another role (whose server connection waits in the pool), or as a role that does not
    exist, with a password of its choosing."""
    chosen = "attacker chose this"
    attacker = new_role(aqpg, "attacker", "attacker pass")
    victim = new_role(aqpg, "victim", "victim pass")
    ghost = f"aqt_ghost_{next(_serial)}"
    evildb = f"aqt_evildb_{next(_serial)}"
    aqpg.sql(f"CREATE DATABASE {evildb} OWNER {attacker}", dbname="postgres")
    aqpg.sql(f"GRANT CONNECT ON DATABASE {evildb} TO {victim}", dbname="postgres")
    bun = start_aq(start_pgbun, aqpg, config={"auth_query": ATTACKED_QUERIES[catalog], "auth_query_cache_ttl": 1},
                   databases={"pgbun_test": aqpg.entry(), "evil": aqpg.entry(dbname=evildb)})
    # The victim has been here: its server connections wait in pgbun's pools (session mode keeps them).
    for db in ("evil", "pgbun_test"):
        login(bun, victim, "victim pass", database=db).terminate()
    with aqpg.connect(dbname=evildb, user=attacker) as conn:
        conn.execute(EVIL_SETUP.format(secret=pgwire.scram_secret(chosen), ghost=ghost, db=evildb,
                                       attacker=attacker))
    # The trap works: a new session of the auth role in that database, with the database's search_path,
    # reads the attacker's secret for the victim.
    trap = aqpg.sql(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{victim}'", dbname=evildb, user=SUPER)
    assert trap[0][0].startswith("SCRAM-SHA-256$4096:") and trap[0][0] != rolpassword(aqpg, victim)
    # pgbun's lookups in that database run on new sessions from now on, and the victim's secret is stale.
    aqpg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s AND datname = %s",
             (SUPER, evildb))
    wait_until(lambda: not aqpg.sql("SELECT 1 FROM pg_stat_activity WHERE usename = %s AND datname = %s",
                                    (SUPER, evildb)), 10, what="the auth role's sessions to end")
    time.sleep(1.5)
    hostile = {"search_path": EVIL_PATH, "options": f"-c search_path={EVIL_PATH.replace(' ', '')}"}
    for db in ("evil", "pgbun_test"):
        for params in (None, hostile):
            assert_password_refused(bun, victim, chosen, database=db, params=params)
            assert_password_refused(bun, ghost, chosen, database=db, params=params)
    # The attacker itself logs in, its search_path in the startup packet too, and gets it.
    w = login(bun, attacker, "attacker pass", database="evil", params=hostile)
    assert whoami(w)[0] == attacker
    assert w.scalar("SHOW search_path").replace(" ", "") == EVIL_PATH.replace(" ", "")
    assert_password_refused(bun, victim, chosen, database="evil", params=hostile)
    # The lookups found the real secrets all along.
    for db in ("evil", "pgbun_test"):
        assert whoami(login(bun, victim, "victim pass", database=db, params=hostile))[0] == victim
    assert authenticated(aqpg, victim)


# ---------------------------------------------------------------- 6. one lookup for many logins

@pytest.mark.timeout(180)
def test_200_simultaneous_first_logins_of_one_role_run_auth_query_at_most_once_per_worker(start_pgbun, aqpg):
    auth = new_role(aqpg, "crowdauth", "crowd auth pass", attrs="LOGIN SUPERUSER", grants=False)
    aqpg.sql(f"ALTER ROLE {auth} SET log_statement = 'all'", dbname="postgres")
    role = new_role(aqpg, "crowd", "crowd pass")
    bun = start_aq(start_pgbun, aqpg, auth_user=auth, auth_file={auth: "crowd auth pass"},
                   config={"pool_mode": "transaction", "default_pool_size": 4, "auth_query_cache_ttl": 3600})
    n = 200
    start = threading.Barrier(n, timeout=60)
    results = [None] * n

    def one(i):
        w = None
        try:
            w = pgwire.Wire(bun.host, bun.port, timeout=60)
            start.wait()
            w.login(role, "pgbun_test", password="crowd pass")
            results[i] = w.scalar("SELECT current_user")
        except Exception as exc:  # noqa: BLE001 - reported below
            results[i] = exc
        finally:
            if w is not None:
                w.close()

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    for t in threads:
        t.join(timeout=max(0.1, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "logins still running after 120 s"
    failed = [r for r in results if r != role]
    assert not failed, f"{len(failed)} of {n} logins failed, e.g. {failed[:3]}"
    runs = auth_query_runs(aqpg, auth)
    assert 1 <= runs <= max(4, TEST_WORKERS), f"{runs} auth_query executions for {n} simultaneous logins"


# ---------------------------------------------------------------- 7. auth_user known by its SCRAM secret only

@pytest.mark.timeout(90)
def test_an_auth_user_with_only_a_scram_secret_looks_up_once_it_has_logged_in_itself(start_pgbun, aqpg):
    auth = new_role(aqpg, "scramauth", "scram auth pass", attrs="LOGIN SUPERUSER")
    role = new_role(aqpg, "afterauth", "after pass")
    bun = start_aq(start_pgbun, aqpg, auth_user=auth,
                   auth_file={auth: rolpassword(aqpg, auth), ADMIN: ADMIN_PW})
    err = refusal(bun, role, "after pass")
    assert (err.sqlstate, err.message) == ("28000", AQ_ERROR.format(role)), err.fields
    warning = wait_until(lambda: [ln for ln in bun.log_text().splitlines()
                                  if f'auth_query for user "{role}" in pgbun_test/{auth} failed:' in ln], 10,
                         what="the auth_query WARNING")
    assert "WARNING" in warning[0] and "no password" in warning[0] and "SCRAM" in warning[0], warning
    # auth_user logs in through pgbun with its password: its proof gives pgbun the keys to log in with.
    w = wait_until(lambda: login(bun, auth, "scram auth pass"), 20, interval=0.5, what=f"{auth} to log in")
    assert whoami(w)[0] == auth
    w.terminate()
    assert whoami(login(bun, role, "after pass"))[0] == role


# ---------------------------------------------------------------- 8. lookups that cannot run

def assert_lookup_failed(bun, role, password, why):
    err = refusal(bun, role, password)
    assert (err.sqlstate, err.message) == ("28000", AQ_ERROR.format(role)), err.fields
    lines = wait_until(lambda: [ln for ln in bun.log_text().splitlines()
                                if f'auth_query for user "{role}" in pgbun_test/' in ln and "failed:" in ln], 10,
                       what="the auth_query WARNING")
    assert "WARNING" in lines[0] and why in lines[0], lines
    return lines[0]


def test_a_wrong_auth_user_password_refuses_with_28000_and_logs_why(start_pgbun, aqpg):
    role = new_role(aqpg, "wrongauth", "wa pass")
    bun = start_aq(start_pgbun, aqpg, auth_file={SUPER: "not the password", ADMIN: ADMIN_PW})
    line = assert_lookup_failed(bun, role, "wa pass", "password authentication failed")
    assert "not the password" not in bun.log_text()
    assert f"in pgbun_test/{SUPER} failed" in line


def test_an_auth_query_with_a_syntax_error_refuses_with_28000_and_logs_why(start_pgbun, aqpg):
    role = new_role(aqpg, "badquery", "bq pass")
    bun = start_aq(start_pgbun, aqpg, config={"auth_query": "SELEKT rolname, rolpassword FROM pg_authid"})
    assert_lookup_failed(bun, role, "bq pass", "syntax error")
    assert "42601" in bun.log_text()


def test_an_auth_query_of_the_wrong_shape_refuses_with_28000(start_pgbun, aqpg):
    role = new_role(aqpg, "badshape", "bs pass")
    bun = start_aq(start_pgbun, aqpg, config={"auth_query": "SELECT rolpassword FROM pg_authid WHERE rolname = $1"})
    assert_lookup_failed(bun, role, "bs pass", "two columns")


def test_a_lookup_whose_server_connection_ends_refuses_with_08006_and_logs_why(start_pgbun, aqpg):
    role = new_role(aqpg, "cut", "cut pass")
    slow = ("SELECT rolname, rolpassword FROM pg_catalog.pg_authid, pg_catalog.pg_sleep(30) "
            "WHERE rolname = $1 AND rolcanlogin")
    bun = start_aq(start_pgbun, aqpg, config={"auth_query": slow})
    t, result = in_thread(lambda: refusal(bun, role, "cut pass"))
    pid = wait_until(lambda: aqpg.sql("SELECT pid FROM pg_stat_activity WHERE usename = %s AND state = 'active' "
                                      "AND query LIKE %s", (SUPER, "%pg_sleep(30)%")), 15,
                     what="the lookup running in PostgreSQL")[0][0]
    aqpg.sql("SELECT pg_terminate_backend(%s)", (pid,))
    t.join(timeout=20)
    assert not t.is_alive(), "the login was not answered after its lookup's server connection ended"
    err = result.get("value") or result["error"]
    assert (err.sqlstate, err.message) == ("08006", AQ_ERROR.format(role)), err.fields
    line = [ln for ln in bun.log_text().splitlines()
            if f'auth_query for user "{role}" in pgbun_test/{SUPER} failed' in ln]
    assert line and "WARNING" in line[0] and "server connection closed" in line[0], bun.log_text()[-3000:]
    # The next login asks again, on a new server connection.
    bun2 = start_aq(start_pgbun, aqpg)
    assert whoami(login(bun2, role, "cut pass"))[0] == role


def test_a_lookup_in_a_database_that_refuses_connections_holds_the_login_until_client_login_timeout(
        start_pgbun, aqpg):
    """Waiting may cure a server that is down: the lookup waits for it as a client would, and the login
    ends at client_login_timeout with 08006, saying auth_query could not run and why."""
    role = new_role(aqpg, "down", "down pass")
    port = free_port()
    dead = f"host=127.0.0.1 port={port} dbname=pgbun_test"
    bun = start_aq(start_pgbun, aqpg, databases={"pgbun_test": aqpg.entry(), "gone": dead},
                   config={"auth_dbname": "gone", "client_login_timeout": 3})
    w = bun.wire(timeout=30)
    began = time.monotonic()
    with pytest.raises(pgwire.PgError) as err:
        w.login(role, "pgbun_test", password="down pass")
    assert time.monotonic() - began < 25
    assert err.value.sqlstate == "08006", err.value.fields
    assert "client_login_timeout" in err.value.message and "auth_query could not run" in err.value.message, \
        err.value.fields
    assert "could not connect to server" in err.value.message, err.value.fields
    assert f"gone/{SUPER}@127.0.0.1:{port} closing: could not connect to server" in bun.log_text()
    # Nobody waits any more: the queued lookup is dropped, and the pool stops trying the dead server.
    time.sleep(1)
    tries = bun.log_text().count(f"gone/{SUPER}@127.0.0.1:{port} closing: could not connect to server")
    time.sleep(6)
    assert bun.log_text().count(f"gone/{SUPER}@127.0.0.1:{port} closing: could not connect to server") == tries


@pytest.mark.parametrize("where", ["global", "database"])
def test_an_auth_dbname_missing_from_databases_stops_pgbun_at_start(start_pgbun, aqpg, where):
    if where == "global":
        config, databases = {"auth_dbname": "aqt_nowhere"}, {"pgbun_test": aqpg.entry()}
    else:
        config, databases = {}, {"pgbun_test": aqpg.entry(auth_user=SUPER, auth_dbname="aqt_nowhere")}
    cfg = {"auth_type": "scram-sha-256", "auth_user": SUPER if where == "global" else None, **config}
    bun = start_pgbun(config=cfg, databases=databases, auth_file={SUPER: SUPER_PW}, wait=False)
    try:
        rc = bun.proc.wait(timeout=15)
    finally:
        bun.expected_exit = bun.proc.poll()
    assert rc != 0
    assert re.search(r'auth_dbname "aqt_nowhere" is not a database of \[databases\]', bun.log_text()), \
        bun.log_text()


# ---------------------------------------------------------------- 9. SHOW USERS

def test_show_users_says_where_each_secret_came_from(start_pgbun, aqpg):
    role = new_role(aqpg, "shown", "shown pass")
    bun = start_aq(start_pgbun, aqpg)
    login(bun, role, "shown pass").terminate()
    login(bun, SUPER, SUPER_PW).terminate()
    rows = {u["name"]: u for u in console(bun, "SHOW USERS")}
    assert rows[role]["secret_source"] == "auth_query"
    assert rows[SUPER]["secret_source"] == "auth_file"
    assert rows[ADMIN]["secret_source"] == "auth_file"
    assert list(rows[role])[-1] == "secret_source"
    shown = repr(rows)
    assert rolpassword(aqpg, role) not in shown and "shown pass" not in shown


# ---------------------------------------------------------------- 10. nothing secret in the log

def test_no_password_or_secret_reaches_pgbun_s_log_at_verbose_2(start_pgbun, aqpg):
    scram_role = new_role(aqpg, "logscram", "log scram pass")
    md5_role = new_role(aqpg, "logmd5", "log md5 pass", md5=True)
    bun = start_aq(start_pgbun, aqpg, config={"auth_type": "md5", "verbose": 2})
    w = login(bun, scram_role, "log scram pass")  # a SCRAM secret: SCRAM, even with auth_type md5
    assert w.auth_requests[0] == pgwire.AUTH_SASL and whoami(w)[0] == scram_role
    w = login(bun, md5_role, "log md5 pass")
    assert w.auth_requests[0] == pgwire.AUTH_MD5 and whoami(w)[0] == md5_role
    assert_password_refused(bun, scram_role, "wrong scram guess")
    assert_password_refused(bun, md5_role, "wrong md5 guess")
    assert_password_refused(bun, "aqt_logunknown", "unknown guess")
    login(bun, scram_role, "log scram pass").terminate()
    login(bun, md5_role, "log md5 pass").terminate()
    log = bun.log_text()
    assert "auth_query" in log and scram_role in log, "verbose 2 logged nothing about the lookups"
    secrets = ["log scram pass", "log md5 pass", "wrong scram guess", "wrong md5 guess", "unknown guess",
               SUPER_PW, ADMIN_PW]
    md5_secret = rolpassword(aqpg, md5_role)
    secrets += [md5_secret, md5_secret[3:]]
    for role, password in ((scram_role, "log scram pass"), (SUPER, SUPER_PW)):
        secret = rolpassword(aqpg, role)
        secrets.append(secret)
        for key in scram_keys(secret, password):
            secrets += [base64.b64encode(key).decode(), key.hex()]
    for s in secrets:
        assert s not in log, f"{s!r} is in pgbun's log"


# ---------------------------------------------------------------- 11. unknown user and wrong password alike

@pytest.mark.timeout(180)
def test_an_unknown_user_and_a_wrong_password_are_refused_in_about_the_same_time(start_pgbun, aqpg):
    role = new_role(aqpg, "timing", "timing pass")
    bun = start_aq(start_pgbun, aqpg)
    login(bun, role, "timing pass").terminate()  # the pool of the auth_user is up
    times = {"unknown": [], "wrong": []}
    for i in range(30):
        for kind, user in (("unknown", f"aqt_nosuch_{i}"), ("wrong", role)):
            t0 = time.monotonic()
            err = refusal(bun, user, "a wrong guess")
            times[kind].append(time.monotonic() - t0)
            assert err.sqlstate == "28P01", err.fields
    unknown, wrong = statistics.median(times["unknown"]), statistics.median(times["wrong"])
    assert unknown < 5 * wrong + 0.05 and wrong < 5 * unknown + 0.05, (unknown, wrong)


# ---------------------------------------------------------------- 12. per database

def test_a_database_s_own_auth_user_and_auth_dbname_look_up_while_another_uses_auth_file_only(start_pgbun, aqpg):
    """looked: auth_user aqt_lookup, auth_dbname authdb (aqt_authdb), its own auth_query; plain: neither,
    and no global auth_user: only auth_file's users log in to it."""
    role = new_role(aqpg, "perdb", "perdb pass")
    filed = new_role(aqpg, "filed", "filed pass")
    auth = new_role(aqpg, "perdbauth", "perdb auth pass", grants=False)
    aqpg.sql(f"GRANT USAGE ON SCHEMA aqt_sec TO {auth}; GRANT EXECUTE ON FUNCTION aqt_sec.get_auth(text) TO {auth}",
             dbname="aqt_authdb")
    aqpg.sql(f"ALTER ROLE {auth} SET log_statement = 'all'", dbname="postgres")
    databases = {
        "looked": aqpg.entry(auth_user=auth, auth_dbname="authdb", auth_query=f"'{FUNC_QUERY}'"),
        "authdb": aqpg.entry(dbname="aqt_authdb"),
        "plain": aqpg.entry(),
    }
    bun = start_aq(start_pgbun, aqpg, databases=databases, auth_user=None,
                   auth_file={auth: "perdb auth pass", ADMIN: ADMIN_PW, filed: "filed pass"})
    w = login(bun, role, "perdb pass", database="looked")
    assert whoami(w)[0] == role
    assert w.scalar("SELECT current_database()") == "pgbun_test"
    assert_password_refused(bun, role, "perdb pass", database="plain")
    assert auth_query_runs(aqpg, auth, needle="aqt_sec.get_auth") >= 1
    ran_in = {m.group(1) for m in re.finditer(re.escape(auth) + r"@(\S+) LOG:  execute \S+: SELECT username",
                                              aqpg.log_text())}
    assert ran_in == {"aqt_authdb"}, ran_in
    # auth_file's users log in to both.
    for db in ("plain", "looked"):
        assert whoami(login(bun, filed, "filed pass", database=db))[0] == filed
        assert_password_refused(bun, filed, "not filed pass", database=db)


def test_a_global_auth_dbname_runs_every_lookup_there_and_lets_console_users_be_looked_up(start_pgbun, aqpg):
    """The console is no PostgreSQL database: its users are looked up only where auth_dbname says."""
    role = new_role(aqpg, "globaldb", "globaldb pass")
    admin = new_role(aqpg, "pgadmin", "pgadmin pass", grants=False)
    auth = new_role(aqpg, "globalauth", "global auth pass", grants=False)
    aqpg.sql(f"GRANT USAGE ON SCHEMA aqt_sec TO {auth}; GRANT EXECUTE ON FUNCTION aqt_sec.get_auth(text) TO {auth}",
             dbname="aqt_authdb")
    aqpg.sql(f"ALTER ROLE {auth} SET log_statement = 'all'", dbname="postgres")
    databases = {"pgbun_test": aqpg.entry(), "authdb": aqpg.entry(dbname="aqt_authdb")}
    files = {auth: "global auth pass", ADMIN: ADMIN_PW}
    bun = start_aq(start_pgbun, aqpg, databases=databases, auth_user=auth, auth_file=files,
                   config={"auth_query": FUNC_QUERY, "admin_users": f"{ADMIN},{admin}"})
    assert_password_refused(bun, admin, "pgadmin pass", database="pgbun")  # no auth_dbname: not asked
    bun.stop()
    bun = start_aq(start_pgbun, aqpg, databases=databases, auth_user=auth, auth_file=files,
                   config={"auth_query": FUNC_QUERY, "admin_users": f"{ADMIN},{admin}", "auth_dbname": "authdb"})
    assert whoami(login(bun, role, "globaldb pass"))[0] == role
    w = login(bun, admin, "pgadmin pass", database="pgbun")
    users = w.query("SHOW USERS")
    assert any(row[0] == admin for row in users), users
    assert_password_refused(bun, admin, "not pgadmin pass", database="pgbun")
    ran_in = {m.group(1) for m in re.finditer(re.escape(auth) + r"@(\S+) LOG:  execute \S+: SELECT username",
                                              aqpg.log_text())}
    assert ran_in == {"aqt_authdb"}, ran_in
    assert auth_query_runs(aqpg, auth, needle="aqt_sec.get_auth") == 2  # the role and the console user


# ---------------------------------------------------------------- pass-through keys of one name on two servers

@pytest.mark.timeout(90)
def test_one_role_name_with_other_passwords_on_two_servers_logs_in_to_each_with_its_own_keys(start_pgbun, aqpg):
    """Databases a and b are on two PostgreSQL servers, each with a role aqt_twin of its own password. A client
    of b logging in between must not break the next server connection pgbun opens for a's clients."""
    def setup(server):
        server.sql(f"CREATE ROLE {SUPER} LOGIN SUPERUSER PASSWORD '{SUPER_PW}'", dbname="postgres")

    other = Postgres("authq-other").init_or_clean_up(setup)
    try:
        twin = f"aqt_twin_{next(_serial)}"
        aqpg.sql(f"CREATE ROLE {twin} LOGIN PASSWORD 'twin on a'", dbname="postgres")
        other.sql(f"CREATE ROLE {twin} LOGIN PASSWORD 'twin on b'", dbname="postgres")
        bun = start_aq(start_pgbun, aqpg, databases={"a": aqpg.entry(), "b": other.entry()},
                       config={"pool_mode": "transaction"})
        first, second = login(bun, twin, "twin on a", database="a"), login(bun, twin, "twin on a", database="a")
        first.query("BEGIN")  # holds a's only server connection
        assert whoami(first)[0] == twin
        assert whoami(login(bun, twin, "twin on b", database="b"))[0] == twin
        second.query("BEGIN")  # a needs a second server connection now
        assert whoami(second)[0] == twin
    finally:
        other.destroy()
