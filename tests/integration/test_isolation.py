"""Isolation: one client's session state never reaches another client, and
what PostgreSQL would keep for a client, pgbun keeps too.

- Settings pgbun's scanner cannot name from the text (a computed name, a DO
  block, a function, a U& name, a query over 64 KB) must not reach the next
  client of the server, in transaction and statement mode; where the name
  can be known, the setting follows its client to every server.
- RESET ALL, DISCARD ALL and RESET name bring back the client's startup
  parameters (its session defaults), as PostgreSQL does, in every pool mode.
- A NOTIFY sent right after a LISTEN returned reaches the listener: pgbun's
  own queries on a server must not swallow the messages PostgreSQL sends
  its client between replies. Sent from the test once the LISTEN has
  returned, it races pgbun's own query (lost in 0-8 of 20 tries here);
  queued behind a lock the listener's transaction holds, it commits right
  after that transaction every time, which loses about half.
- A DISCARD ALL that PostgreSQL refused leaves the client's prepared
  statements as PostgreSQL leaves them: there.

Pools have two servers; a client is steered onto each in turn: in
transaction mode with conftest's on_server (two holders take both servers in
a transaction, the one to use is let go); in statement mode, where a
transaction block closes the client, each holder runs one statement that
waits for an advisory lock a direct connection holds, and the one to use is
let go by releasing its lock (Blockers below).
"""

import struct
import threading
import time

import pytest

import pgwire
from conftest import IS_PGBOUNCER, console_rows, on_server, server_pids, wait_until
from pgwire import SYNC, bind, describe, exchange, execute, parse, query_message as query
from test_prepared import run_bound
from test_session_state import client, on_each

pgbun_only = pytest.mark.skipif(IS_PGBOUNCER, reason="pgbun's own session-state tracking "
                                                     "(PgBouncer leaves settings on the server by design)")

TENANT = "current_setting('app.tenant', true)"


def pool(mode, **extra):
    """A pool of two servers; a client waiting for a server gives up after 10 s instead of hanging."""
    return dict({"pool_mode": mode, "default_pool_size": 2, "query_wait_timeout": 10,
                 "admin_users": "postgres"}, **extra)


# ---- statement mode: holding servers without a transaction block

class Blockers:
    """Two clients of bun, each running one statement that waits for an advisory lock held by a
    direct connection to PostgreSQL: together they hold both servers of the pool. free(pid) lets
    the one on backend pid finish, so that server is the pool's only idle one."""

    KEYS = (77_001, 77_002)

    def __init__(self, bun, pg):
        self.bun, self.pg = bun, pg
        self.by_pid = {}
        self.threads = {}
        self.errors = []

    def __enter__(self):
        self.locker = self.pg.connect()
        for key in self.KEYS:
            self.locker.execute("SELECT pg_advisory_lock(%s)", (key,))
        self.holders = [client(self.bun) for _ in self.KEYS]
        for key, holder in zip(self.KEYS, self.holders):
            t = threading.Thread(target=self._hold, args=(holder, key), daemon=True)
            t.start()
            self.threads[key] = t
            # One at a time: the second holder finds the first server busy and gets the other.
            wait_until(lambda: key in self._waiting().values() or self.errors, 10,
                       what=f"a client through pgbun to wait for advisory lock {key}")
            assert not self.errors, self.errors
        self.by_pid = self._waiting()
        return self

    def _hold(self, holder, key):
        try:
            holder.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            self.errors.append(exc)

    def _waiting(self):
        rows = self.locker.execute("SELECT pid, objid::text::bigint FROM pg_locks WHERE locktype = 'advisory' "
                                   "AND NOT granted AND objid::text::bigint = ANY(%s)", (list(self.KEYS),))
        return dict(rows.fetchall())

    def pids(self):
        pids = sorted(self.by_pid)
        assert len(pids) == 2, f"the two holders wait on backends {self.by_pid}"
        return pids

    def free(self, pid):
        key = self.by_pid.pop(pid)
        self.locker.execute("SELECT pg_advisory_unlock(%s)", (key,))
        self.threads[key].join(10)
        assert not self.threads[key].is_alive(), f"the holder on backend {pid} did not finish"
        assert not self.errors, self.errors

    def __exit__(self, *exc):
        try:
            self.locker.execute("SELECT pg_advisory_unlock_all()")
            for t in self.threads.values():
                t.join(10)
        finally:
            self.locker.close()
        if not any(t.is_alive() for t in self.threads.values()):
            for holder in self.holders:
                holder.close()
        assert not self.errors, self.errors


def server_pids_of(bun, pg):
    """The backend pids of the pool's two servers, in any pool mode."""
    if bun.config["pool_mode"] == "transaction":
        return list(server_pids(bun))
    with Blockers(bun, pg) as b:
        return b.pids()


def steer(bun, pg, pid, run):
    """run() while the server of backend pid is the pool's only idle one, in any pool mode."""
    if bun.config["pool_mode"] == "transaction":
        return on_server(bun, pid, run)
    with Blockers(bun, pg) as b:
        assert pid in b.pids(), f"backend {pid} is not one of the pool's servers {b.pids()}"
        b.free(pid)
        return run()


def on_every_server(bun, pg, conn, sql):
    """sql's value for conn on each server of the pool (conftest's steering in transaction mode)."""
    if bun.config["pool_mode"] == "transaction":
        return on_each(bun, conn, sql)
    out = []
    for pid in server_pids_of(bun, pg):
        ran, value = steer(bun, pg, pid, lambda: conn.execute(f"SELECT pg_backend_pid(), ({sql})").fetchone())
        assert ran == pid, f"ran on backend {ran}, not {pid}"
        out.append(value)
    return out


def pinned(bun):
    return [r["pinned"] for r in console_rows(bun, "CLIENTS") if r["database"] == "pgbun_test" and r["pinned"]]


def on_every_reachable_server(bun, pg, setter, conn, sql):
    """As on_every_server; but while setter is pinned to one of the two servers (pgbun may pin a
    client whose setting it cannot name), conn can reach the other one only: its value there."""
    setter.execute("SELECT 1")  # waits for pgbun's look at the server after the setter's transaction
    if pinned(bun):
        return [conn.execute(f"SELECT {sql}").fetchone()[0]]
    return on_every_server(bun, pg, conn, sql)


# ---- 1. settings the scanner cannot name

BIG = "k" * 70_000  # the text is over 64 KB: pgbun does not scan it
FUNCTIONS = """
CREATE OR REPLACE FUNCTION set_tenant(v text) RETURNS text LANGUAGE plpgsql AS
  $$BEGIN RETURN set_config('app.tenant', v, false); END$$;
CREATE OR REPLACE FUNCTION use_short_timeout() RETURNS text LANGUAGE plpgsql AS
  $$BEGIN RETURN set_config('statement_timeout', '4321', false); END$$;
"""

# case: (the setter's SQL, the value it sets, whether the setter keeps it on every server)
LEAKS = {
    "computed name": ("SELECT set_config('app.' || 'tenant', 'secret', false)", "secret", False),
    "do block": ("DO $$BEGIN PERFORM set_config('app.tenant', 'secret', false); END$$", "secret", True),
    "function": ("SELECT set_tenant('secret')", "secret", False),
    "unicode name": ("SET U&\"app.ten\\0061nt\" = 'secret'", "secret", True),
    "over 64 KB": (f"SET app.tenant = '{BIG}'; SELECT 1", BIG, True),
}


def shown(values):
    return [v if v is None or len(v) < 40 else f"{v[:10]}... ({len(v)} chars)" for v in values]


def unset(values):
    return all(v in (None, "") for v in values)


@pgbun_only
@pytest.mark.parametrize("case", list(LEAKS))
@pytest.mark.parametrize("mode", ["transaction", "statement"])
def test_a_setting_the_scanner_cannot_name_reaches_no_other_client(start_pgbun, pg, mode, case):
    sql, value, keeps = LEAKS[case]
    pg.sql(FUNCTIONS)
    bun = start_pgbun(config=pool(mode))  # session_state left at its default (track), in both modes
    other = client(bun)
    setter = client(bun)
    setter.execute(sql)
    seen = on_every_reachable_server(bun, pg, setter, other, TENANT)
    assert unset(seen), f"another client reads the setter's app.tenant: {shown(seen)}"
    if keeps:
        # pgbun can know the name (a literal in the DO body, a U& identifier, the start of the text):
        # the setting follows its client, which is not pinned for it.
        assert pinned(bun) == [], "the setter was pinned instead of its setting following it"
        mine = on_every_server(bun, pg, setter, TENANT)
        assert mine == [value, value], f"the setter's own app.tenant on the two servers: {shown(mine)}"
    setter.close()
    for conn in (other, client(bun)):
        seen = on_every_server(bun, pg, conn, TENANT)
        assert unset(seen), f"after the setter left, another client reads: {shown(seen)}"


@pgbun_only
@pytest.mark.parametrize("mode", ["transaction", "statement"])
def test_a_builtin_parameter_set_in_a_function_reaches_no_other_client(start_pgbun, pg, mode):
    """A set_config inside a function is not in the client's text: its server is reset before
    anyone else gets it (the setter keeps the value only while it keeps that server)."""
    pg.sql(FUNCTIONS)
    bun = start_pgbun(config=pool(mode))
    other = client(bun)
    setter = client(bun)
    setter.execute("SELECT use_short_timeout()")
    setter.execute("SELECT 1")
    assert pinned(bun) == [], "the setter was pinned"
    timeout = "current_setting('statement_timeout')"
    assert on_every_server(bun, pg, other, timeout) == ["0", "0"], "another client got the setter's statement_timeout"
    assert set(on_every_server(bun, pg, setter, timeout)) <= {"0", "4321ms"}
    setter.close()
    assert on_every_server(bun, pg, client(bun), timeout) == ["0", "0"]


STATE_FUNCTIONS = """
CREATE OR REPLACE FUNCTION make_temp() RETURNS int LANGUAGE plpgsql AS
  $$BEGIN CREATE TEMP TABLE IF NOT EXISTS fn_secret AS SELECT 'secret'::text AS v; RETURN 1; END$$;
CREATE OR REPLACE FUNCTION take_lock() RETURNS int LANGUAGE plpgsql AS
  $$BEGIN PERFORM pg_advisory_lock(424242); RETURN 1; END$$;
CREATE OR REPLACE FUNCTION start_listening() RETURNS int LANGUAGE plpgsql AS
  $$BEGIN EXECUTE 'LISTEN fn_channel'; RETURN 1; END$$;
"""
# What a backend holds, counted: temp objects, advisory locks of its own, channels it listens on.
HELD = ("(SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()) + "
        "(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) + "
        "(SELECT count(*) FROM pg_listening_channels())")


@pgbun_only
@pytest.mark.parametrize("call", ["make_temp", "take_lock", "start_listening"])
@pytest.mark.parametrize("mode", ["transaction", "statement"])
def test_state_a_function_made_reaches_no_other_client(start_pgbun, pg, mode, call):
    """A temp table, a session-level advisory lock or a LISTEN made inside a function is not in
    the client's text: its server is cleaned before another client gets it."""
    pg.sql(STATE_FUNCTIONS)
    bun = start_pgbun(config=pool(mode))
    other = client(bun)
    maker = client(bun)
    maker.execute(f"SELECT {call}()")
    assert on_every_server(bun, pg, other, HELD) == [0, 0], f"another client got what {call}() made"
    maker.close()
    assert on_every_server(bun, pg, client(bun), HELD) == [0, 0]


@pgbun_only
@pytest.mark.parametrize("mode", ["transaction", "statement"])
def test_a_literal_set_follows_its_client_only(start_pgbun, pg, mode):
    """What already works, as a reference for the cases above (and a check of the steering)."""
    bun = start_pgbun(config=pool(mode))
    other = client(bun)
    setter = client(bun)
    setter.execute("SET app.tenant = 'secret'")
    assert unset(on_every_server(bun, pg, other, TENANT))
    assert on_every_server(bun, pg, setter, TENANT) == ["secret", "secret"]


# ---- 2. RESET brings back the startup parameters

STARTUP = {"TimeZone": "Asia/Tokyo", "DateStyle": "SQL, DMY", "application_name": "isolation-test",
           "extra_float_digits": "2", "options": "-c statement_timeout=12345"}
# What SHOW gives for each (options=-c statement_timeout=12345 -> statement_timeout).
SHOWN = {"TimeZone": "Asia/Tokyo", "DateStyle": "SQL, DMY", "application_name": "isolation-test",
         "extra_float_digits": "2", "statement_timeout": "12345ms"}
OTHER_VALUES = {"TimeZone": "Europe/Paris", "DateStyle": "ISO, MDY", "application_name": "changed",
                "extra_float_digits": "0", "statement_timeout": "999"}
REPORTED = ("TimeZone", "DateStyle", "application_name")  # sent in ParameterStatus


def startup_params():
    if IS_PGBOUNCER:  # PgBouncer refuses the others (or ignores them with ignore_startup_parameters)
        return {k: STARTUP[k] for k in REPORTED}
    return STARTUP


def shown_names():
    return [n for n in SHOWN if n in REPORTED or not IS_PGBOUNCER]


CURRENT = ", ".join(f"current_setting('{n}')" for n in SHOWN)
SHOW_ALL = f"SELECT {CURRENT}"


def simple(w, sql):
    """Runs sql as one Query: (rows of its last result, SQLSTATE of its first error or None).
    ParameterStatus updates w.params, as a driver would."""
    w.send(pgwire.query_message(sql))
    rows, error = [], None
    while True:
        t, body = w.read_message(timeout=10)
        if t == b"T":
            rows = []
        elif t == b"D":
            rows.append(pgwire.data_row(body))
        elif t == b"E":
            error = error or pgwire.parse_fields(body)["C"]
        elif t == b"S":
            name, value = pgwire.parse_cstrings(body)[:2]
            w.params[name] = value
        elif t == b"Z":
            return rows, error


def settings(w):
    """The client's values of the startup parameters, in its next query."""
    rows, error = simple(w, SHOW_ALL)
    assert error is None, error
    values = dict(zip(SHOWN, rows[0]))
    return {n: values[n] for n in shown_names()}


def reported(w):
    return {n: w.params.get(n) for n in REPORTED}


def run_both(bun, pg, steps):
    """Logs in to pgbun and straight to PostgreSQL with the same startup parameters and runs each
    step (a query) on both; each must get the same SQLSTATE (or none). Returns both connections."""
    through = bun.login(params=startup_params())
    direct = pgwire.Wire("127.0.0.1", pg.port)
    try:
        direct.login("postgres", "pgbun_test", params=startup_params())
        assert settings(direct) == {n: SHOWN[n] for n in shown_names()}
        for sql in steps:
            got, want = simple(through, sql)[1], simple(direct, sql)[1]
            assert got == want, f"{sql!r}: SQLSTATE {got} through pgbun, {want} on PostgreSQL"
    except BaseException:
        direct.close()
        raise
    return through, direct


def set_others():
    return [f"SET {n} = '{v}'" for n, v in OTHER_VALUES.items() if n in shown_names()]


# PgBouncer 1.18 in session mode applies these with SET too: RESET gives the server's default (seen
# with PGBUN_TEST_PEER=pgbouncer); the comparison with PostgreSQL is the same for both poolers.
ALL_MODES = [pytest.param("session", marks=pytest.mark.xfail(IS_PGBOUNCER, reason="PgBouncer 1.18 loses them too")),
             "transaction", "statement"]


def for_mode(mode):
    if IS_PGBOUNCER and mode != "session":
        pytest.skip("PgBouncer keeps settings on the server in transaction and statement mode")
    return pool(mode)


RESETS = {
    "RESET ALL": ["RESET ALL"],
    "DISCARD ALL": ["DISCARD ALL"],
    "RESET name": [f"RESET {n}" for n in SHOWN],
}


@pytest.mark.parametrize("command", list(RESETS))
@pytest.mark.parametrize("mode", ALL_MODES)
def test_reset_brings_back_the_startup_parameters(start_pgbun, pg, mode, command):
    bun = start_pgbun(config=for_mode(mode))
    steps = set_others() + [s for s in RESETS[command] if s.split()[-1] in shown_names() + ["ALL"]]
    through, direct = run_both(bun, pg, steps)
    with direct:
        want = settings(direct)
        assert want == {n: SHOWN[n] for n in shown_names()}
        assert settings(through) == want, f"after {command}: PostgreSQL gives the startup values"
        assert reported(through) == reported(direct), "the client's ParameterStatus values"


@pytest.mark.parametrize("mode", ALL_MODES)
def test_reset_after_a_set_gives_the_startup_timezone_back(start_pgbun, pg, mode):
    bun = start_pgbun(config=for_mode(mode))
    through, direct = run_both(bun, pg, ["SET TimeZone = 'Europe/Paris'"])
    with direct:
        assert simple(through, "SHOW TimeZone")[0] == [["Europe/Paris"]]
        for w in (through, direct):
            assert simple(w, "RESET TimeZone") == ([], None)
        assert simple(direct, "SHOW TimeZone")[0] == [["Asia/Tokyo"]]
        assert simple(through, "SHOW TimeZone")[0] == [["Asia/Tokyo"]]
        assert through.params["TimeZone"] == direct.params["TimeZone"] == "Asia/Tokyo"


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_a_rolled_back_reset_all_keeps_the_clients_set(start_pgbun, pg, mode):
    bun = start_pgbun(config=for_mode(mode))
    through, direct = run_both(bun, pg, ["SET TimeZone = 'Europe/Paris'", "BEGIN", "RESET ALL", "ROLLBACK"])
    with direct:
        want = settings(direct)
        assert want["TimeZone"] == "Europe/Paris" and want["DateStyle"] == "SQL, DMY"
        assert settings(through) == want
        assert reported(through) == reported(direct)
        if mode == "transaction":
            for pid in server_pids_of(bun, pg):
                assert on_server(bun, pid, lambda: settings(through)) == want, f"on backend {pid}"


@pgbun_only
@pytest.mark.parametrize("command", ["RESET ALL", "DISCARD ALL"])
def test_after_reset_all_every_server_has_the_startup_values(start_pgbun, pg, command):
    bun = start_pgbun(config=pool("transaction"))
    w = bun.login(params=STARTUP)
    pids = server_pids_of(bun, pg)
    on_server(bun, pids[0], lambda: simple(w, "SET TimeZone = 'Europe/Paris'; SET DateStyle = 'ISO, MDY'"))
    assert on_server(bun, pids[0], lambda: simple(w, command)) == ([], None)
    for pid in pids + pids:
        got = on_server(bun, pid, lambda: simple(w, f"SELECT pg_backend_pid(), {CURRENT}")[0][0])
        assert got == [str(pid)] + list(SHOWN.values()), f"after {command}, on backend {pid}"
    # Another client, with no startup parameters, still gets the server's defaults.
    other = client(bun)
    tz = on_each(bun, other, "current_setting('TimeZone')")
    assert "Asia/Tokyo" not in tz and "Europe/Paris" not in tz, tz


# ---- 3. notifications right after LISTEN

TRIES = 20
NOTIFY_KEY = 77_100
TIMINGS = ("sent after the listener's reply", "committed as the listener's transaction commits")


def wait_for_notification(listener, got, timeout=1.0):
    """Polls with a cheap query, as an application would, for up to timeout seconds."""
    deadline = time.monotonic() + timeout
    while not got and time.monotonic() < deadline:
        listener.execute("SELECT 1")
        if not got:
            time.sleep(0.05)
    return list(got)


def notify_after(pg, listener, sender, sql, notify, timing):
    """The listener runs sql, and the sender's notify follows it: sent once the listener has its reply,
    as an application would; or, to hit the moment every time, queued behind an advisory lock the
    listener's transaction holds, so that it commits as soon as that transaction has (PostgreSQL
    then tells the listener's backend at once, while pgbun looks at that server after the
    transaction)."""
    if timing == TIMINGS[0]:
        listener.execute(sql)
        sender.execute(notify)
        return
    errors = []

    def send():
        try:
            sender.execute(f"SELECT pg_advisory_xact_lock({NOTIFY_KEY}); {notify}")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    listener.autocommit = False
    listener.execute(sql)
    listener.execute(f"SELECT pg_advisory_xact_lock({NOTIFY_KEY})")
    t = threading.Thread(target=send, daemon=True)
    t.start()
    with pg.connect() as direct:
        wait_until(lambda: errors or direct.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND objid::text::bigint = %s", (NOTIFY_KEY,)).fetchone()[0], 10, what="the NOTIFY to wait for the lock")
    listener.commit()
    listener.autocommit = True
    t.join(10)
    assert not t.is_alive() and not errors, errors


@pgbun_only
@pytest.mark.timeout(150)
def test_a_notify_right_after_listen_is_delivered(start_pgbun, pg):
    bun = start_pgbun(config=pool("transaction"))
    lost = []
    for timing in TIMINGS:
        for i in range(TRIES):
            sender = client(bun)
            listener = client(bun)
            got = []
            listener.add_notify_handler(lambda n: got.append((n.channel, n.payload)))
            notify_after(pg, listener, sender, "LISTEN isol_chan", f"NOTIFY isol_chan, 'try {i}'", timing)
            received = wait_for_notification(listener, got)
            if received != [("isol_chan", f"try {i}")]:
                lost.append(f"{timing}, try {i}: {received}")
            listener.close()
            sender.close()
    assert lost == [], f"{len(lost)} of {2 * TRIES} notifications sent right after LISTEN were lost:\n" + \
        "\n".join(lost)


@pgbun_only
@pytest.mark.timeout(150)
def test_a_notify_right_after_a_pinned_clients_transaction_is_delivered(start_pgbun, pg):
    """The listener keeps its server (LISTEN pins it); each of its SETs makes pgbun read the
    session back on that server, and a NOTIFY sent meanwhile must still reach the listener."""
    bun = start_pgbun(config=pool("transaction"))
    listener = client(bun)
    sender = client(bun)
    got = []
    listener.add_notify_handler(lambda n: got.append((n.channel, n.payload)))
    listener.execute("LISTEN isol_pinned")
    lost = []
    for timing in TIMINGS:
        for i in range(TRIES):
            got.clear()
            notify_after(pg, listener, sender, f"SET app.tenant = 'n{i}'", f"NOTIFY isol_pinned, 'try {i}'", timing)
            received = wait_for_notification(listener, got)
            if received != [("isol_pinned", f"try {i}")]:
                lost.append(f"{timing}, try {i}: {received}")
    assert lost == [], f"{len(lost)} of {2 * TRIES} notifications to a pinned listener were lost:\n" + \
        "\n".join(lost)
    assert listener.execute(f"SELECT {TENANT}").fetchone()[0] == f"n{TRIES - 1}"


# ---- 4. a refused DISCARD ALL keeps the prepared statements

REFUSED_DISCARDS = {
    # how the DISCARD ALL is refused (25001: it cannot run inside a transaction block)
    "one query": [query("BEGIN; DISCARD ALL; COMMIT"), query("ROLLBACK")],
    "separate queries": [query("BEGIN"), query("DISCARD ALL"), query("ROLLBACK")],
    "extended protocol": [query("BEGIN"), parse("", "DISCARD ALL") + bind("") + execute() + SYNC,
                          query("ROLLBACK")],
}


def prepared_sequence(w, refused):
    """The steps of the test, each as exchange() words."""
    out = [exchange(w, parse("s2", "SELECT 6") + SYNC)]
    out += [exchange(w, step) for step in refused]
    out.append(exchange(w, run_bound("s2")))
    out.append(exchange(w, parse("s2", "SELECT 6") + SYNC))
    out.append(exchange(w, query("BEGIN")))
    out.append(exchange(w, query("SELECT 1/0")))
    out.append(exchange(w, describe(b"S", "s2") + SYNC))
    out.append(exchange(w, query("ROLLBACK")))
    return out


def direct_login(pg):
    w = pgwire.Wire("127.0.0.1", pg.port)
    w.login("postgres", "pgbun_test")
    return w


@pgbun_only
@pytest.mark.parametrize("how", list(REFUSED_DISCARDS))
def test_a_refused_discard_all_keeps_the_prepared_statements(start_pgbun, pg, how):
    refused = REFUSED_DISCARDS[how]
    with direct_login(pg) as direct:
        want = prepared_sequence(direct, refused)
    assert "E:25001" in " ".join(want)
    # On PostgreSQL the statement survives: it runs, cannot be prepared again, and a Describe of it
    # in an aborted transaction is refused as such (25P02), not as unknown (26000).
    assert want[-6:] == ["2 D=6 C Z:I", "E:42P05 Z:I", "C Z:T", "E:22012 Z:E", "E:25P02 Z:E", "C Z:I"]
    bun = start_pgbun(config=pool("transaction"))
    w = bun.login()
    got = prepared_sequence(w, refused)
    assert got == want, "step by step, pgbun | PostgreSQL:\n" + "\n".join(f"{g:24} | {p}" for g, p in zip(got, want))
    # pgbun still knows s2 on either server: prepared where it is lacking.
    for pid in server_pids_of(bun, pg):
        assert on_server(bun, pid, lambda: exchange(w, run_bound("s2"))) == "2 D=6 C Z:I"


@pgbun_only
def test_a_discard_all_that_ran_drops_the_prepared_statements(start_pgbun, pg):
    steps = [parse("s2", "SELECT 6") + SYNC, query("DISCARD ALL"), run_bound("s2"),
             parse("s2", "SELECT 7") + bind("s2") + execute() + SYNC]
    with direct_login(pg) as direct:
        want = [exchange(direct, s) for s in steps]
    assert want == ["1 Z:I", "C Z:I", "E:26000 Z:I", "1 2 D=7 C Z:I"]
    bun = start_pgbun(config=pool("transaction"))
    w = bun.login()
    assert [exchange(w, s) for s in steps] == want


@pgbun_only
@pytest.mark.parametrize("command", ["DEALLOCATE ALL", "DISCARD ALL"])
def test_statements_prepared_right_behind_a_discard_all_are_kept(start_pgbun, pg, command):
    """Npgsql sends its DISCARD ALL in one batch with the next commands' Parses: what PostgreSQL
    drops is what came before it, and the statements prepared behind it stay the client's."""
    batch = query(command) + parse("s1", "SELECT 11") + bind("s1") + execute() + SYNC
    later = run_bound("s1")
    with direct_login(pg) as direct:
        direct.send(parse("s1", "SELECT 10") + SYNC)
        assert pgwire.replies(direct) == "1 Z:I"
        want = [exchange(direct, batch, syncs=2), exchange(direct, later)]
    assert want == ["C Z:I 1 2 D=11 C Z:I", "2 D=11 C Z:I"]
    bun = start_pgbun(config=pool("transaction"))
    w = bun.login()
    assert exchange(w, parse("s1", "SELECT 10") + SYNC) == "1 Z:I"
    assert [exchange(w, batch, syncs=2), exchange(w, later)] == want


# ---- 5. what pgbun does for a client never gets in its way

def copy_in(w, sql, rows):
    """Runs sql, a query ending in COPY ... FROM STDIN, and sends rows: the replies, as words."""
    w.send(query(sql))
    out = []
    while True:
        t, body = w.read_message(timeout=10)
        if t == b"E":
            out.append("E:" + pgwire.parse_fields(body)["C"])
        elif t == b"G":
            out.append("G")
            w.send(b"".join(pgwire.message(b"d", f"{r}\n".encode()) for r in rows) + pgwire.message(b"c"))
        elif t == b"Z":
            return " ".join(out + ["Z"])
        elif t not in (b"N", b"S"):
            out.append(t.decode())


@pgbun_only
@pytest.mark.parametrize("mode", ALL_MODES)
def test_a_reset_before_a_copy_from_stdin_in_one_query_copies(start_pgbun, pg, mode):
    """The startup parameters come back once the query that reset them is answered, not in the
    middle of the COPY it began."""
    pg.sql("CREATE TABLE IF NOT EXISTS isol_copy (a int)")
    pg.sql("TRUNCATE isol_copy")
    bun = start_pgbun(config=pool(mode))
    w = bun.login(params={"application_name": "copier", "TimeZone": "Asia/Tokyo"})
    assert simple(w, "SELECT 1") == ([["1"]], None)  # its parameters are on the server now
    assert copy_in(w, "RESET ALL; COPY isol_copy FROM STDIN", [1, 2, 3]) == "C G C Z"
    assert simple(w, "SELECT count(*), current_setting('application_name'), current_setting('TimeZone') "
                     "FROM isol_copy") == ([["3", "copier", "Asia/Tokyo"]], None)


@pgbun_only
def test_a_query_over_64kb_that_starts_a_copy_from_stdin_copies(start_pgbun, pg):
    pg.sql("CREATE TABLE IF NOT EXISTS isol_copy (a int)")
    pg.sql("TRUNCATE isol_copy")
    bun = start_pgbun(config=pool("transaction"))
    with client(bun, application_name="copier") as conn:
        conn.execute("SELECT 1")
        with conn.cursor() as cur:
            with cur.copy(f"/* {BIG} */ COPY isol_copy FROM STDIN") as copy:
                copy.write_row((1,))
        assert conn.execute("SELECT count(*) FROM isol_copy").fetchone() == (1,)


@pgbun_only
def test_a_restored_startup_parameter_reaches_no_other_client_with_session_state_off(start_pgbun, pg):
    """With session_state = off a reported parameter follows its client as PgBouncer does: the
    value pgbun restores after a RESET is the client's, and undone for the next one."""
    bun = start_pgbun(config=pool("transaction", default_pool_size=1, session_state="off"))
    tokyo = client(bun, options="-c TimeZone=Asia/Tokyo")
    other = client(bun)
    default = pg.sql("SHOW TimeZone")[0][0]
    assert tokyo.execute("SHOW TimeZone").fetchone() == ("Asia/Tokyo",)
    tokyo.execute("RESET TimeZone")
    assert tokyo.execute("SHOW TimeZone").fetchone() == ("Asia/Tokyo",)
    assert other.execute("SHOW TimeZone").fetchone() == (default,)
    assert tokyo.execute("SHOW TimeZone").fetchone() == ("Asia/Tokyo",)


# A FunctionCall message of set_config(text, text, bool) (OID 2078): three text arguments, a text result.
SET_CONFIG_CALL = pgwire.message(b"F", struct.pack("!ih", 2078, 0) + struct.pack("!h", 3) + b"".join(
    struct.pack("!i", len(a)) + a for a in (b"app.tenant", b"secret", b"false")) + struct.pack("!h", 0))


@pgbun_only
@pytest.mark.parametrize("mode", ["transaction", "statement"])
def test_a_setting_made_by_a_function_call_message_reaches_no_other_client(start_pgbun, pg, mode):
    bun = start_pgbun(config=pool(mode))
    other = client(bun)
    w = bun.login()
    assert exchange(w, SET_CONFIG_CALL) == "V Z:I"
    assert unset(on_every_server(bun, pg, other, TENANT)), "another client got the FunctionCall's setting"
