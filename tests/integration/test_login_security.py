"""Login security: who may log in under trust, the auth_trust_any_user switch,
and authentication before any word about the database.

1. auth_type = trust still wants the user in auth_file (as PgBouncer
   documents), also on a [databases] entry that forces a user.
2. trust with no auth_file is a deliberate choice (auth_trust_any_user), at
   start, at RELOAD / SIGHUP and in sidecar mode; pgbun's own key, so those
   tests are skipped against PgBouncer.
3. md5 and scram-sha-256 ask for the password before they say that a
   database does not exist or is disabled, and run a whole SCRAM exchange
   for a user missing from auth_file.
"""

import signal
import subprocess
import time

import psycopg
import pytest

import pgwire
from conftest import (IS_PGBOUNCER, _ini_lines, chown_to_run_user, free_port, pgbun_binary, pgbun_env,
                      run_as_kwargs)

USER = "alice"
PASSWORD = "Wonder land 1"
STRANGER = "mallory"  # in no auth_file, and no role in the test PostgreSQL
NO_DB = "no_such_db_here"
CONSOLE = "pgbouncer" if IS_PGBOUNCER else "pgbun"
SECTION = "pgbouncer" if IS_PGBOUNCER else "pgbun"
ADMIN_PASSWORD = "admin secret"

pgbun_only = pytest.mark.skipif(IS_PGBOUNCER, reason="auth_trust_any_user is pgbun's own key")

# auth_type -> the first authentication request the client must see
METHODS = {"md5": pgwire.AUTH_MD5, "scram-sha-256": pgwire.AUTH_SASL}


# ---------------------------------------------------------------- helpers

def refused_login(bun, user, database, password=None):
    """A raw login that must fail: (PgError, the Wire, still open for is_closed)."""
    w = bun.wire()
    try:
        w.login(user, database, password=password)
    except pgwire.PgError as exc:
        return exc, w
    pytest.fail(f"user {user!r} logged in to {database!r} (authentication requests {w.auth_requests})")


def assert_trust_refusal(err, w, user):
    """FATAL 28000 '"trust" authentication failed for user "NAME"', never an AuthenticationOk, then closed."""
    assert pgwire.AUTH_OK not in w.auth_requests, f"AuthenticationOk was sent before {err}"
    if IS_PGBOUNCER:
        # PgBouncer 1.18: 08P01 '"trust" authentication failed' (no user name).
        assert err.message.startswith('"trust" authentication failed'), err.fields
    else:
        assert err.sqlstate == "28000", err.fields
        assert err.fields.get("S") == "FATAL", err.fields
        assert err.message == f'"trust" authentication failed for user "{user}"', err.fields
    assert w.is_closed(timeout=5), "the connection stayed open after the refusal"


def assert_password_failure(err, w, user, database):
    """28P01 'password authentication failed for user "NAME"' and not a word about the database."""
    if IS_PGBOUNCER:
        # PgBouncer 1.18: 08P01 "password authentication failed" / "SASL authentication failed".
        assert err.message in ("password authentication failed", "SASL authentication failed"), err.fields
    else:
        assert err.sqlstate == "28P01", err.fields
        assert err.message == f'password authentication failed for user "{user}"', err.fields
    said = " ".join(err.fields.values()) + " " + " ".join(" ".join(n.values()) for n in w.notices)
    assert database not in said and "database" not in said.lower(), err.fields
    assert w.is_closed(timeout=5), "the connection stayed open after a failed login"


def first_requests_match(w, auth_type):
    """The client was asked for its password first, and (SCRAM) got a SASLContinue."""
    expected = [METHODS[auth_type]] + ([pgwire.AUTH_SASL_CONTINUE] if auth_type == "scram-sha-256" else [])
    assert w.auth_requests[:len(expected)] == expected, \
        f"authentication requests {w.auth_requests}, expected to start with {expected}"


def console(bun, user="postgres", password=None):
    return bun.connect(dbname=CONSOLE, user=user, password=password)


def config_value(bun, key, password=None):
    with console(bun, password=password) as adm:
        rows = adm.execute("SHOW CONFIG").fetchall()
    values = {r[0]: r[1] for r in rows}
    return values.get(key)


def rewrite_config(bun, databases, **changes):
    """Writes the running pgbun's ini again with some keys changed (None drops a key)."""
    cfg = dict(bun.config)
    cfg.update(changes)
    bun.config_path.write_text(_ini_lines(SECTION, cfg, databases, None))
    chown_to_run_user(bun.config_path)


def run_until_exit(args, cwd, env=None, timeout=5):
    """Runs the daemon expecting it to refuse to start: (exit code, output).
    An exit code of None means it was still running after timeout seconds (then killed)."""
    proc = subprocess.Popen([str(pgbun_binary())] + [str(a) for a in args], cwd=cwd,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=pgbun_env(env), start_new_session=True, **run_as_kwargs())
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate(timeout=10)
        return None, out


def trust_ini_without_auth_file(path, pg, workdir, extra=""):
    path.write_text(f"[{SECTION}]\n"
                    "listen_addr = 127.0.0.1\n"
                    f"listen_port = {free_port()}\n"
                    f"unix_socket_dir = {workdir}\n"
                    "auth_type = trust\n"
                    f"{extra}"
                    f"\n[databases]\npgbun_test = {pg.entry()}\n")
    chown_to_run_user(path)
    return path


def sidecar_env(pg, workdir, **extra):
    env = {
        "SERVER_HOST": "127.0.0.1",
        "SERVER_PORT": str(pg.port),
        "LISTEN_ADDR": "127.0.0.1",
        "LISTEN_PORT": str(free_port()),
        "PGBUN_AUTH_TYPE": "trust",
        "PGBUN_UNIX_SOCKET_DIR": str(workdir),
    }
    env.update(extra)
    return env


def assert_refused_to_start(rc, out):
    assert rc is not None, f"pgbun started (and kept running) with trust, no auth_file and no " \
                           f"auth_trust_any_user; output:\n{out}"
    assert rc != 0, out
    assert "auth_trust_any_user" in out.lower(), f"auth_trust_any_user not named:\n{out}"
    assert "auth_file" in out.lower(), f"auth_file not named:\n{out}"


# ---------------------------------------------------------------- 1. trust wants the user in auth_file

def test_trust_refuses_a_user_missing_from_auth_file(start_pgbun, pg):
    bun = start_pgbun(databases={"pgbun_test": pg.entry()})
    err, w = refused_login(bun, STRANGER, "pgbun_test")
    assert_trust_refusal(err, w, STRANGER)


def test_trust_refuses_a_user_missing_from_auth_file_on_a_forced_user_entry(start_pgbun, pg):
    bun = start_pgbun(databases={"pgbun_test": pg.entry(user="postgres")})
    err, w = refused_login(bun, STRANGER, "pgbun_test")
    assert_trust_refusal(err, w, STRANGER)


def test_trust_refuses_a_user_missing_from_auth_file_that_postgresql_would_trust(start_pgbun, pg):
    """postgres is trusted by the test PostgreSQL: only pgbun's own check can refuse it."""
    bun = start_pgbun(databases={"pgbun_test": pg.entry()}, auth_file={"md5user": "md5pass"})
    err, w = refused_login(bun, "postgres", "pgbun_test")
    assert_trust_refusal(err, w, "postgres")


def test_trust_refusal_reaches_psycopg_as_an_error(start_pgbun, pg):
    bun = start_pgbun(databases={"pgbun_test": pg.entry(user="postgres")})
    with pytest.raises(psycopg.OperationalError) as err:
        bun.connect(user=STRANGER)
    assert '"trust" authentication failed' in str(err.value)


def test_trust_lets_a_user_in_auth_file_in_without_a_password(start_pgbun, pg):
    bun = start_pgbun(databases={"pgbun_test": pg.entry()}, auth_file={"postgres": ""})
    w = bun.login(user="postgres")
    assert w.auth_requests == [pgwire.AUTH_OK]
    assert w.scalar("SELECT current_user") == "postgres"
    w.terminate()


def test_trust_lets_a_user_in_auth_file_in_as_the_forced_user(start_pgbun, pg):
    bun = start_pgbun(databases={"pgbun_test": pg.entry(user="postgres")}, auth_file={"md5user": "md5pass"})
    w = bun.login(user="md5user")
    assert w.auth_requests == [pgwire.AUTH_OK]
    assert w.scalar("SELECT current_user") == "postgres"
    w.terminate()


# ---------------------------------------------------------------- 2. auth_trust_any_user

@pgbun_only
def test_trust_without_auth_file_refuses_to_start_without_auth_trust_any_user(pgbun_workdir, pg):
    ini = trust_ini_without_auth_file(pgbun_workdir / "pgbun.ini", pg, pgbun_workdir)
    rc, out = run_until_exit([ini], cwd=pgbun_workdir)
    assert_refused_to_start(rc, out)


@pgbun_only
def test_trust_without_auth_file_and_auth_trust_any_user_0_refuses_to_start(pgbun_workdir, pg):
    ini = trust_ini_without_auth_file(pgbun_workdir / "pgbun.ini", pg, pgbun_workdir,
                                      extra="auth_trust_any_user = 0\n")
    rc, out = run_until_exit([ini], cwd=pgbun_workdir)
    assert_refused_to_start(rc, out)
    assert "unknown key" not in out, f"auth_trust_any_user is not a known key:\n{out}"


@pgbun_only
def test_sidecar_trust_without_auth_trust_any_user_refuses_to_start(pgbun_workdir, pg):
    rc, out = run_until_exit([], cwd=pgbun_workdir, env=sidecar_env(pg, pgbun_workdir))
    assert_refused_to_start(rc, out)


@pgbun_only
def test_auth_trust_any_user_without_auth_file_passes_any_user_to_postgresql(start_pgbun, pg):
    bun = start_pgbun(config={"auth_trust_any_user": 1}, databases={"pgbun_test": pg.entry()}, auth_file=False)
    w = bun.login(user="postgres")
    assert w.auth_requests == [pgwire.AUTH_OK]
    assert w.scalar("SELECT current_user") == "postgres"
    w.terminate()


@pgbun_only
def test_auth_trust_any_user_leaves_the_check_to_postgresql(start_pgbun, pg):
    """The made-up name reaches PostgreSQL, which refuses it (no such role, no password): not pgbun's 28000."""
    bun = start_pgbun(config={"auth_trust_any_user": 1}, databases={"pgbun_test": pg.entry()}, auth_file=False)
    err = pgwire.first_error(bun.wire(), STRANGER, "pgbun_test")
    assert err is not None, f"{STRANGER} logged in and ran a query"
    assert '"trust" authentication failed' not in err.message, err.fields


@pgbun_only
@pytest.mark.parametrize("with_auth_file", [False, True], ids=["no-auth_file", "auth_file"])
def test_auth_trust_any_user_still_refuses_an_unknown_user_on_a_forced_user_entry(start_pgbun, pg,
                                                                                   with_auth_file):
    bun = start_pgbun(config={"auth_trust_any_user": 1},
                      databases={"pgbun_test": pg.entry(user="postgres")},
                      auth_file={"md5user": "md5pass"} if with_auth_file else False)
    err, w = refused_login(bun, STRANGER, "pgbun_test")
    assert_trust_refusal(err, w, STRANGER)


@pgbun_only
def test_auth_trust_any_user_does_not_open_the_console_to_a_user_missing_from_auth_file(start_pgbun, pg):
    """No PostgreSQL judges a console login: a name in admin_users that is not in auth_file is refused."""
    bun = start_pgbun(config={"auth_trust_any_user": 1, "admin_users": STRANGER},
                      databases={"pgbun_test": pg.entry()}, auth_file={"md5user": "md5pass"})
    err, w = refused_login(bun, STRANGER, CONSOLE)
    assert_trust_refusal(err, w, STRANGER)


@pgbun_only
def test_auth_trust_any_user_with_auth_file_lets_a_user_in_auth_file_in_on_a_forced_user_entry(start_pgbun, pg):
    bun = start_pgbun(config={"auth_trust_any_user": 1},
                      databases={"pgbun_test": pg.entry(user="postgres")},
                      auth_file={"md5user": "md5pass"})
    w = bun.login(user="md5user")
    assert w.scalar("SELECT current_user") == "postgres"
    w.terminate()


@pgbun_only
def test_auth_trust_any_user_with_auth_file_lets_an_unknown_user_through_under_its_own_name(start_pgbun, pg):
    bun = start_pgbun(config={"auth_trust_any_user": 1}, databases={"pgbun_test": pg.entry()},
                      auth_file={"md5user": "md5pass"})  # postgres is not in it
    w = bun.login(user="postgres")
    assert w.scalar("SELECT current_user") == "postgres"
    w.terminate()


@pgbun_only
def test_sidecar_trust_with_auth_trust_any_user_forwards_every_database(start_pgbun, pg, pgbun_workdir):
    env = sidecar_env(pg, pgbun_workdir, PGBUN_AUTH_TRUST_ANY_USER="1")
    bun = start_pgbun(write_config=False, auth_file=False, env=env)
    for db in ("pgbun_test", "postgres"):
        with bun.connect(dbname=db, user="postgres") as conn:
            assert conn.execute("SELECT current_database(), current_user").fetchone() == (db, "postgres")


def _reloadable(start_pgbun, pg):
    databases = {"pgbun_test": pg.entry()}
    bun = start_pgbun(config={"admin_users": "postgres", "pool_mode": "session"}, databases=databases)
    with bun.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    return bun, databases


def _assert_running_config_kept(bun):
    assert bun.alive(), bun.log_text()
    assert config_value(bun, "pool_mode") == "session", "the refused config was applied"
    assert config_value(bun, "auth_file") == bun.config["auth_file"], "the refused config was applied"
    with bun.connect(user="postgres") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)


@pgbun_only
def test_reload_to_trust_without_auth_file_is_refused_and_the_running_config_stays(start_pgbun, pg):
    bun, databases = _reloadable(start_pgbun, pg)
    rewrite_config(bun, databases, auth_file=None, pool_mode="transaction")
    with console(bun) as adm:
        try:
            adm.execute("RELOAD")
        except psycopg.Error as exc:
            refusal = str(exc)
        else:
            refusal = None
    assert refusal is not None, "RELOAD to trust with no auth_file and no auth_trust_any_user was accepted"
    _assert_running_config_kept(bun)


@pgbun_only
def test_sighup_to_trust_without_auth_file_is_refused_and_the_running_config_stays(start_pgbun, pg):
    bun, databases = _reloadable(start_pgbun, pg)
    rewrite_config(bun, databases, auth_file=None, pool_mode="transaction")
    log_before = len(bun.log_text())
    bun.proc.send_signal(signal.SIGHUP)
    # Give the reload time to happen (or not): until the log reports an outcome, at most 3 s;
    # a config applied meanwhile shows up at once in SHOW CONFIG.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert config_value(bun, "pool_mode") == "session", "SIGHUP applied trust with no auth_file"
        tail = bun.log_text()[log_before:]
        if "reload failed" in tail or "configuration reloaded" in tail:
            break
        time.sleep(0.1)
    _assert_running_config_kept(bun)


@pgbun_only
def test_reload_to_trust_without_auth_file_with_auth_trust_any_user_is_accepted(start_pgbun, pg):
    bun, databases = _reloadable(start_pgbun, pg)
    rewrite_config(bun, databases, auth_file=None, auth_trust_any_user=1, pool_mode="transaction")
    with console(bun) as adm:
        adm.execute("RELOAD")
    assert "configuration reloaded" in bun.log_text()
    with bun.connect(user="postgres") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    # The console is not a database PostgreSQL judges: with no auth_file nobody reaches it by name.
    with pytest.raises(psycopg.OperationalError, match='"trust" authentication failed'):
        console(bun)


# ---------------------------------------------------------------- 3. authenticate first

def auth_bun(start_pgbun, pg, auth_type, **config):
    """auth_type with alice (plain secret) and postgres (admin) in auth_file; the server side logs in as
    the trusted superuser, so only client authentication is under test."""
    return start_pgbun(config={"auth_type": auth_type, **config},
                       databases={"pgbun_test": pg.entry(user="postgres")},
                       auth_file={USER: PASSWORD, "postgres": ADMIN_PASSWORD})


def disable_pgbun_test(bun):
    with console(bun, password=ADMIN_PASSWORD) as adm:
        adm.execute("DISABLE pgbun_test")


@pytest.mark.parametrize("auth_type", sorted(METHODS))
def test_unknown_database_asks_for_the_password_first(start_pgbun, pg, auth_type):
    bun = auth_bun(start_pgbun, pg, auth_type)
    w = bun.wire()
    w.startup({"user": USER, "database": NO_DB})
    mtype, body = w.read_message()
    fields = pgwire.parse_fields(body) if mtype == b"E" else None
    assert mtype == b"R", f"first answer {mtype!r} {fields or body!r}, expected an authentication request"
    assert int.from_bytes(body[:4], "big") == METHODS[auth_type]


@pytest.mark.parametrize("auth_type", sorted(METHODS))
def test_unknown_database_with_a_wrong_password_is_a_password_failure(start_pgbun, pg, auth_type):
    bun = auth_bun(start_pgbun, pg, auth_type)
    err, w = refused_login(bun, USER, NO_DB, password="wrong password")
    first_requests_match(w, auth_type)
    assert_password_failure(err, w, USER, NO_DB)


@pytest.mark.parametrize("auth_type", sorted(METHODS))
def test_unknown_database_with_the_right_password_is_3D000(start_pgbun, pg, auth_type):
    bun = auth_bun(start_pgbun, pg, auth_type)
    err, w = refused_login(bun, USER, NO_DB, password=PASSWORD)
    first_requests_match(w, auth_type)
    assert err.fields.get("S") == "FATAL", err.fields
    if IS_PGBOUNCER:
        assert err.message.startswith("no such database") and NO_DB in err.message, err.fields
    else:
        assert err.sqlstate == "3D000", err.fields
        assert err.message.startswith(f'no such database: "{NO_DB}"'), err.fields
    assert w.is_closed(timeout=5)


@pytest.mark.parametrize("auth_type", sorted(METHODS))
def test_disabled_database_with_a_wrong_password_is_a_password_failure(start_pgbun, pg, auth_type):
    bun = auth_bun(start_pgbun, pg, auth_type, admin_users="postgres")
    disable_pgbun_test(bun)
    err, w = refused_login(bun, USER, "pgbun_test", password="wrong password")
    first_requests_match(w, auth_type)
    assert_password_failure(err, w, USER, "pgbun_test")


@pytest.mark.parametrize("auth_type", sorted(METHODS))
def test_disabled_database_with_the_right_password_is_57P03(start_pgbun, pg, auth_type):
    bun = auth_bun(start_pgbun, pg, auth_type, admin_users="postgres")
    disable_pgbun_test(bun)
    err, w = refused_login(bun, USER, "pgbun_test", password=PASSWORD)
    first_requests_match(w, auth_type)
    if not IS_PGBOUNCER:
        assert err.sqlstate == "57P03", err.fields
    assert "pgbun_test" in err.message, err.fields
    assert w.is_closed(timeout=5)


def test_scram_user_missing_from_auth_file_gets_a_whole_exchange_then_28P01(start_pgbun, pg):
    bun = auth_bun(start_pgbun, pg, "scram-sha-256")
    err, w = refused_login(bun, STRANGER, "pgbun_test", password="any password")
    # AuthenticationSASL, then AuthenticationSASLContinue (with a salt and our nonce extended,
    # checked by ScramClient) after the first message, as for a real user; the refusal after the proof.
    assert w.auth_requests == [pgwire.AUTH_SASL, pgwire.AUTH_SASL_CONTINUE], w.auth_requests
    assert_password_failure(err, w, STRANGER, "pgbun_test")


def test_scram_user_with_an_empty_password_in_auth_file_gets_a_whole_exchange_then_28P01(start_pgbun, pg):
    """An empty password matches nothing: the exchange goes on as for anyone, and fails at the proof."""
    bun = start_pgbun(config={"auth_type": "scram-sha-256"}, databases={"pgbun_test": pg.entry(user="postgres")},
                      auth_file={USER: ""})
    err, w = refused_login(bun, USER, "pgbun_test", password="")
    assert w.auth_requests == [pgwire.AUTH_SASL, pgwire.AUTH_SASL_CONTINUE], w.auth_requests
    assert_password_failure(err, w, USER, "pgbun_test")


def test_scram_user_missing_from_auth_file_gets_a_server_first_message(start_pgbun, pg):
    """The SASLContinue a stranger gets looks like a real user's: r= extends the nonce, s= and i= are there."""
    bun = auth_bun(start_pgbun, pg, "scram-sha-256")
    w = bun.wire()
    w.startup({"user": STRANGER, "database": "pgbun_test"})
    mtype, body = w.read_message()
    assert mtype == b"R" and int.from_bytes(body[:4], "big") == pgwire.AUTH_SASL, (mtype, body)
    scram = pgwire.ScramClient("any password")
    first = scram.client_first()
    w.send(pgwire.message(b"p", b"SCRAM-SHA-256\0" + len(first).to_bytes(4, "big") + first))
    mtype, body = w.read_message()
    if mtype == b"E":
        pytest.fail(f"refused at once after the client's first message: {pgwire.parse_fields(body)}")
    assert mtype == b"R" and int.from_bytes(body[:4], "big") == pgwire.AUTH_SASL_CONTINUE, (mtype, body)
    attrs = dict(kv.split("=", 1) for kv in body[4:].decode().split(","))
    assert attrs["r"].startswith(scram.nonce) and len(attrs["r"]) > len(scram.nonce), attrs
    assert attrs.get("s") and int(attrs.get("i", "0")) > 0, attrs
    w.send(pgwire.message(b"p", scram.client_final(body[4:])))
    mtype, body = w.read_message()
    assert mtype == b"E", (mtype, body)
    fields = pgwire.parse_fields(body)
    assert fields.get("C") == ("08P01" if IS_PGBOUNCER else "28P01"), fields
    w.close()


def test_md5_user_missing_from_auth_file_is_asked_for_md5_then_28P01(start_pgbun, pg):
    bun = auth_bun(start_pgbun, pg, "md5")
    err, w = refused_login(bun, STRANGER, "pgbun_test", password="any password")
    assert w.auth_requests == [pgwire.AUTH_MD5], w.auth_requests
    assert_password_failure(err, w, STRANGER, "pgbun_test")


@pytest.mark.parametrize("auth_type", sorted(METHODS))
def test_user_missing_from_auth_file_and_unknown_database_is_a_password_failure(start_pgbun, pg, auth_type):
    bun = auth_bun(start_pgbun, pg, auth_type)
    err, w = refused_login(bun, STRANGER, NO_DB, password="any password")
    first_requests_match(w, auth_type)
    assert_password_failure(err, w, STRANGER, NO_DB)


@pytest.mark.parametrize("auth_type", sorted(METHODS))
def test_known_database_still_logs_in_with_the_right_password(start_pgbun, pg, auth_type):
    bun = auth_bun(start_pgbun, pg, auth_type)
    w = bun.login(user=USER, password=PASSWORD)
    assert w.auth_requests[0] == METHODS[auth_type]
    assert w.scalar("SELECT current_user") == "postgres"
    w.terminate()
