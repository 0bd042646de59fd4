"""Limits where pgbun accepts what PgBouncer 1.25 accepts.

- passwords up to 65,531 bytes: from clients (cleartext, md5, SCRAM), in
  auth_file, in [databases] password=, and for pgbun's own login to the server;
  a longer authentication message is a clean 08P01 for that client only
- pkt_buf down to 1 (PgBouncer checks no range at all)
- host= lists in [databases], with one port for all or a matching port list
- lowering max_prepared_statements evicts server statements down to the new
  limit; the prepared-statement counters of SHOW STATS follow PgBouncer's rule
"""
import struct

import psycopg
import pytest

import pgwire
from conftest import Postgres, console_rows, free_port, run

PASSWORD_MAX = 65531
LONG = 60000


def long_password(seed, n=LONG):
    """A password of n printable bytes (no quote, no backslash: it goes into SQL, ini and auth_file)."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:+"
    return "".join(alphabet[(i * 7 + seed) % len(alphabet)] for i in range(n))


PW_SCRAM = long_password(1)
PW_MD5 = long_password(2)
PW_PLAIN = long_password(3)

LIMITS_HBA = """\
local all all trust
host  all postgres    127.0.0.1/32 trust
host  all long_md5    127.0.0.1/32 md5
host  all long_plain  127.0.0.1/32 password
host  all all         127.0.0.1/32 scram-sha-256
"""


@pytest.fixture(scope="module")
def lpg():
    """A PostgreSQL of this module: roles with 60,000-byte passwords, one per server auth method."""
    def setup(server):
        (server.datadir / "pg_hba.conf").write_text(LIMITS_HBA)
        run([server._bin("pg_ctl"), "-D", server.datadir, "reload"], as_run_user=True, cwd=server.base)
        for role, pw, enc in (("long_scram", PW_SCRAM, "scram-sha-256"), ("long_md5", PW_MD5, "md5"),
                              ("long_plain", PW_PLAIN, "scram-sha-256")):
            server.sql(f"SET password_encryption = '{enc}'; CREATE ROLE {role} LOGIN PASSWORD '{pw}'",
                       dbname="postgres")

    server = Postgres("limits").init_or_clean_up(setup)
    yield server
    server.destroy()


def whoami(conn):
    return conn.execute("SELECT current_user").fetchone()[0]


# ------------------------------------------------------------------ passwords

def test_long_password_scram_from_client_and_to_server(lpg, start_pgbun):
    """auth_file holds a 60,000-byte plain password: the client logs in with SCRAM, pgbun with SCRAM too."""
    bun = start_pgbun(config={"auth_type": "scram-sha-256"}, databases={"db": lpg.entry()},
                      auth_file={"long_scram": PW_SCRAM})
    assert whoami(bun.connect(dbname="db", user="long_scram", password=PW_SCRAM)) == "long_scram"
    res = bun.psql(["-U", "long_scram", "-d", "db", "-tAc", "SELECT current_user"], env={"PGPASSWORD": PW_SCRAM})
    assert res.stdout.strip() == "long_scram"
    with pytest.raises(psycopg.OperationalError) as exc:
        bun.connect(dbname="db", user="long_scram", password=PW_SCRAM[:-1] + "!")
    assert "password authentication failed" in str(exc.value)


@pytest.mark.parametrize("auth_type,role,pw,secret", [
    # an md5 secret of a 60,000-byte password: md5 from the client, md5 to the server
    ("md5", "long_md5", PW_MD5, pgwire.md5_secret("long_md5", PW_MD5)),
    # auth_type plain: the client's PasswordMessage carries 60,000 bytes, and so does pgbun's to PostgreSQL
    ("plain", "long_plain", PW_PLAIN, PW_PLAIN),
])
def test_long_password_from_client_and_to_server(lpg, start_pgbun, auth_type, role, pw, secret):
    bun = start_pgbun(config={"auth_type": auth_type}, databases={"db": lpg.entry()}, auth_file={role: secret})
    assert whoami(bun.connect(dbname="db", user=role, password=pw)) == role
    res = bun.psql(["-U", role, "-d", "db", "-tAc", "SELECT current_user"], env={"PGPASSWORD": pw})
    assert res.stdout.strip() == role


@pytest.mark.parametrize("role,pw", [("long_plain", PW_PLAIN), ("long_scram", PW_SCRAM), ("long_md5", PW_MD5)])
def test_long_password_in_databases_entry(lpg, start_pgbun, role, pw):
    """password= in [databases] of 60,000 bytes logs in by cleartext, SCRAM and md5."""
    bun = start_pgbun(databases={"db": lpg.entry(user=role, password=pw)}, auth_file={"postgres": ""})
    assert whoami(bun.connect(dbname="db")) == role


def test_password_at_the_limit_is_read_and_one_byte_more_is_refused(lpg, start_pgbun):
    """65,531 bytes reach the password check (28P01); 65,532 get 08P01 and close that client only."""
    bun = start_pgbun(config={"auth_type": "plain"}, databases={"db": lpg.entry()},
                      auth_file={"long_plain": PW_PLAIN})
    bystander = bun.connect(dbname="db", user="long_plain", password=PW_PLAIN)

    w = bun.wire()
    with pytest.raises(pgwire.PgError) as exc:
        w.login("long_plain", "db", password="x" * PASSWORD_MAX)
    assert exc.value.sqlstate == "28P01"

    w = bun.wire()
    with pytest.raises(pgwire.PgError) as exc:
        w.login("long_plain", "db", password="x" * (PASSWORD_MAX + 1))
    assert exc.value.sqlstate == "08P01"
    assert "too long" in exc.value.message
    assert w.is_closed(timeout=10)

    # A length far past the limit is refused from the header, before the body arrives.
    w = bun.wire()
    w.startup({"user": "long_plain", "database": "db"})
    assert w.read_message()[0] == b"R"
    w.send(b"p" + struct.pack("!i", 1 << 30))
    msgs = w.read_until_closed(timeout=10)
    assert msgs and msgs[0][0] == b"E"
    assert pgwire.parse_fields(msgs[0][1]).get("C") == "08P01"

    assert whoami(bystander) == "long_plain"
    assert whoami(bun.connect(dbname="db", user="long_plain", password=PW_PLAIN)) == "long_plain"


# ------------------------------------------------------------------ pkt_buf

@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_smallest_pkt_buf_carries_queries_copy_and_large_rows(start_pgbun, pg, mode):
    """pkt_buf = 1 starts (PgBouncer takes any value) and every kind of traffic still passes."""
    bun = start_pgbun(config={"pkt_buf": 1, "pool_mode": mode, "admin_users": "postgres"})
    assert {r["key"]: r["value"] for r in console_rows(bun, "CONFIG")}["pkt_buf"] == "1"
    conn = bun.connect()
    assert conn.execute("SELECT 1 + 1").fetchone()[0] == 2
    big = conn.execute("SELECT repeat('x', 3000000) AS t, 42").fetchone()
    assert len(big[0]) == 3000000 and big[1] == 42
    assert conn.execute("SELECT %s::text", ("y" * 200000,), prepare=True).fetchone()[0] == "y" * 200000
    with conn.transaction():
        conn.execute("CREATE TEMP TABLE pkt_tx (n int, t text) ON COMMIT DROP")
        with conn.cursor().copy("COPY pkt_tx FROM STDIN") as cp:
            for i in range(2000):
                cp.write_row((i, "z" * (i % 300)))
        out = []
        with conn.cursor().copy("COPY (SELECT n, t FROM pkt_tx ORDER BY n) TO STDOUT") as cp:
            for row in cp.rows():
                out.append(row)
        assert len(out) == 2000 and out[-1] == ("1999", "z" * (1999 % 300))
    res = bun.psql(["-U", "postgres", "-d", "pgbun_test", "-tAc", "SELECT count(*) FROM generate_series(1, 50000)"])
    assert res.stdout.strip() == "50000"



# ------------------------------------------------------------------ prepared statements

PREPARED = {"pool_mode": "transaction", "default_pool_size": 1, "admin_users": "postgres", "workers": 1}


def pool_stats(bun):
    return next(r for r in console_rows(bun, "STATS") if r["database"] == "pgbun_test")


def server_statement_count(w):
    """pg_prepared_statements of the one server of the pool, asked through the client w."""
    return int(w.scalar("SELECT count(*) FROM pg_prepared_statements"))


def shown_statement_count(bun):
    return [r["prepared_statements"] for r in console_rows(bun, "SERVERS") if r["database"] == "pgbun_test"]


@pytest.mark.parametrize("how", ["set", "reload"])
def test_lowering_max_prepared_statements_evicts_down_to_it_at_the_next_prepare(start_pgbun, how):
    bun = start_pgbun(config=dict(PREPARED, max_prepared_statements=50))
    w = bun.login()
    for i in range(20):
        assert pgwire.exchange(w, pgwire.parse(f"s{i}", f"SELECT {i}::int AS n") + pgwire.SYNC) == "1 Z:I"
    assert server_statement_count(w) == 20
    assert shown_statement_count(bun) == [20]

    if how == "set":
        with bun.connect(dbname="pgbun") as admin:
            admin.execute("SET max_prepared_statements = 5")
    else:
        text = bun.config_path.read_text()
        bun.config_path.write_text(text.replace("max_prepared_statements = 50", "max_prepared_statements = 5"))
        with bun.connect(dbname="pgbun") as admin:
            admin.execute("RELOAD")
    assert {r["key"]: r["value"] for r in console_rows(bun, "CONFIG")}["max_prepared_statements"] == "5"

    # Nothing is closed until a statement is prepared on the server again ...
    assert server_statement_count(w) == 20
    assert pgwire.exchange(w, pgwire.parse("fresh", "SELECT 'fresh'::text") + pgwire.SYNC) == "1 Z:I"
    # ... and then the server keeps the new limit.
    assert server_statement_count(w) == 5
    assert shown_statement_count(bun) == [5]
    # An evicted statement still runs: prepared again, another one making room.
    assert pgwire.exchange(w, pgwire.bind("s0") + pgwire.execute() + pgwire.SYNC) == "2 D=0 C Z:I"
    assert pgwire.exchange(w, pgwire.bind("fresh") + pgwire.execute() + pgwire.SYNC) == "2 D=fresh C Z:I"
    assert server_statement_count(w) == 5
    assert shown_statement_count(bun) == [5]


def prepared_traffic(w):
    """One named statement parsed once and bound three times; the unnamed one twice; a simple query."""
    assert pgwire.exchange(w, pgwire.parse("named", "SELECT $1::int + 1") + pgwire.SYNC) == "1 Z:I"
    for i in range(3):
        assert pgwire.exchange(w, pgwire.bind("named", [str(i)]) + pgwire.execute() + pgwire.SYNC) == \
            f"2 D={i + 1} C Z:I"
    for i in range(2):
        assert pgwire.exchange(w, pgwire.parse("", "SELECT $1::int * 2") + pgwire.bind("", [str(i)]) +
                               pgwire.execute() + pgwire.SYNC) == f"1 2 D={i * 2} C Z:I"
    assert w.scalar("SELECT 7") == "7"


def counters(bun):
    st = pool_stats(bun)
    return st["total_client_parse_count"], st["total_server_parse_count"], st["total_bind_count"]


def test_prepared_counters_count_named_statements_while_tracked(start_pgbun):
    bun = start_pgbun(config=dict(PREPARED, max_prepared_statements=200))
    prepared_traffic(bun.login())
    assert counters(bun) == (1, 1, 3)
    # A second client with the same text: its Parse counts, the server has the statement already.
    w = bun.login()
    assert pgwire.exchange(w, pgwire.parse("again", "SELECT $1::int + 1") + pgwire.SYNC) == "1 Z:I"
    assert pgwire.exchange(w, pgwire.bind("again", ["1"]) + pgwire.execute() + pgwire.SYNC) == "2 D=2 C Z:I"
    assert counters(bun) == (2, 1, 4)


@pytest.mark.parametrize("config", [dict(PREPARED, max_prepared_statements=0),
                                    dict(PREPARED, pool_mode="session")],
                         ids=["max_prepared_statements=0", "session"])
def test_prepared_counters_stay_still_when_not_tracked(start_pgbun, config):
    bun = start_pgbun(config=config)
    prepared_traffic(bun.login())
    assert counters(bun) == (0, 0, 0)


# ------------------------------------------------------------------ host lists

def hold(bun, n, **kw):
    """n clients at once, each on its own server connection (session mode): their backends' client addresses."""
    conns = [bun.connect(**kw) for _ in range(n)]
    return [c.execute("SELECT coalesce(host(inet_client_addr()), 'unix')").fetchone()[0] for c in conns]


def test_host_list_goes_past_a_host_that_is_down(pg, start_pgbun):
    down = free_port()
    entry = f"host=127.0.0.1,127.0.0.1 port={down},{pg.port} dbname=pgbun_test load_balance_hosts=round-robin"
    bun = start_pgbun(config={"admin_users": "postgres"}, databases={"pgbun_test": entry})
    # load_balance_hosts is PgBouncer's and not pgbun's yet: said at start, not silently dropped.
    assert "'load_balance_hosts' is not supported yet and is ignored" in bun.log_text()
    # Every new server connection gets through, whichever entry it starts with.
    assert hold(bun, 4) == ["127.0.0.1"] * 4
    row = next(r for r in console_rows(bun, "DATABASES") if r["name"] == "pgbun_test")
    assert (row["host"], row["port"]) == ("127.0.0.1,127.0.0.1", down)
    assert f"could not connect to server 127.0.0.1:{down}" in bun.log_text()


def test_host_list_with_one_port_for_all_takes_turns(pg, start_pgbun):
    """A socket directory and an address of the same PostgreSQL: new connections alternate between them."""
    entry = f"host=/nonexistent/pgbun-dir,{pg.sockdir},127.0.0.1 port={pg.port} dbname=pgbun_test"
    bun = start_pgbun(config={"workers": 1}, databases={"pgbun_test": entry})
    seen = hold(bun, 6)
    assert sorted(set(seen)) == ["127.0.0.1", "unix"], seen
    # The missing directory is skipped, so its turns go to the socket after it.
    assert seen.count("unix") == 4 and seen.count("127.0.0.1") == 2, seen
