"""Network faults, for real: pgbun in its own network namespace, behind a router namespace that drops packets.

    this namespace                 "wire" namespace               "bun" namespace
    PostgreSQL, the clients  <-veth->  forwards, and drops   <-veth->  pgbun
    10.231.N.1                         10.231.N.2 | 10.231.N.5         10.231.N.6

Every fault is an nftables rule in the wire namespace's forward chain: a packet dropped there vanishes as on a
real network, with no error to either end, no RST and no ICMP. Nothing outside the three ends of the two veth
pairs is touched: the rules live in the wire namespace's own ruleset, and this namespace gets one route, to
pgbun's /30, which goes with its veth. Needs root (CI runs as root), `ip` and `nft`.

What a client sees, by fault:
- PostgreSQL black-holed while a server connection idles: TCP keepalive (tcp_keepalive, tcp_keepidle,
  tcp_keepintvl, tcp_keepcnt) finds it dead and pgbun drops it; the pool serves again when the path returns.
- ... mid-transaction: the client gets an error at query_timeout, or when tcp_user_timeout ends the
  connection; PostgreSQL rolls back once the path returns.
- ... during login: the client gets an error within server_connect_timeout and query_wait_timeout.
- a client black-holed mid-result, or vanished without a FIN in a transaction: tcp_user_timeout or keepalive
  ends it, and its server is freed, with nothing left idle in transaction.
- 5% packet loss on the server path under load: slower, never wrong, no client stuck, throughput back after;
  the same with 50 ms +- 10 ms of latency each way, on a link made by tapwire.py (the kernel may lack netem).
"""
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

from pathlib import Path

import psycopg
import pytest

import pgwire
from conftest import IS_PGBOUNCER, Postgres, console_rows, wait_until

pytestmark = [
    pytest.mark.skipif(IS_PGBOUNCER, reason="pgbun's own fault handling"),
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(not (shutil.which("ip") and shutil.which("nft")), reason="needs ip (iproute2) and nft"),
]

KEEPALIVE = {"tcp_keepalive": 1, "tcp_keepidle": 1, "tcp_keepintvl": 1, "tcp_keepcnt": 2}


def sh(*cmd, input=None):
    subprocess.run([str(c) for c in cmd], input=input, text=True, check=True, timeout=30,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)


class Net:
    """The two namespaces and their links; faults as nft rules in the wire namespace."""

    def __init__(self):
        tag = os.getpid() % 100000
        octet = 16 + os.getpid() % 224
        self.wire = f"pgbun-wire-{tag}"
        self.bun = f"pgbun-bun-{tag}"
        self.host_if = f"pgbw{tag}"
        self.local_addr = f"10.231.{octet}.1"   # PostgreSQL's and the clients' end, here
        self.wire_local = f"10.231.{octet}.2"
        self.wire_bun = f"10.231.{octet}.5"
        self.bun_addr = f"10.231.{octet}.6"      # pgbun's
        self.bun_net = f"10.231.{octet}.4/30"
        self.rules = []

    def up(self):
        self.down()
        sh("ip", "netns", "add", self.wire)
        sh("ip", "netns", "add", self.bun)
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", "w0", "netns", self.wire)
        sh("ip", "-n", self.wire, "link", "add", "w1", "type", "veth", "peer", "name", "b0", "netns", self.bun)
        sh("ip", "addr", "add", f"{self.local_addr}/30", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        sh("ip", "-n", self.wire, "addr", "add", f"{self.wire_local}/30", "dev", "w0")
        sh("ip", "-n", self.wire, "addr", "add", f"{self.wire_bun}/30", "dev", "w1")
        for dev in ("lo", "w0", "w1"):
            sh("ip", "-n", self.wire, "link", "set", dev, "up")
        sh("ip", "netns", "exec", self.wire, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        sh("ip", "-n", self.bun, "addr", "add", f"{self.bun_addr}/30", "dev", "b0")
        for dev in ("lo", "b0"):
            sh("ip", "-n", self.bun, "link", "set", dev, "up")
        sh("ip", "-n", self.bun, "route", "add", "default", "via", self.wire_bun)
        sh("ip", "route", "add", self.bun_net, "via", self.wire_local, "dev", self.host_if)
        self.apply()

    def down(self):
        for ns in (self.wire, self.bun):
            subprocess.run(["ip", "netns", "del", ns], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=30)
        subprocess.run(["ip", "link", "del", self.host_if], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=30)

    def apply(self):
        """Replaces the wire's forward rules with self.rules (nft expressions, each dropping what it matches)."""
        body = "".join(f"        {r} drop\n" for r in self.rules)
        script = ("table inet faults\ndelete table inet faults\n"
                  "table inet faults {\n    chain forward {\n        type filter hook forward priority 0;\n"
                  f"{body}    }}\n}}\n")
        sh("ip", "netns", "exec", self.wire, "nft", "-f", "-", input=script)

    def drop(self, *rules):
        self.rules += rules
        self.apply()

    def heal(self):
        self.rules = []
        self.apply()

    def blackhole_server(self, port):
        """Every packet between pgbun and PostgreSQL's port, both ways."""
        self.drop(f"tcp dport {port}", f"tcp sport {port}")

    def blackhole_client(self, sock):
        """Every packet of one client connection (a socket here), both ways."""
        port = sock.getsockname()[1]
        self.drop(f"ip saddr {self.local_addr} tcp sport {port}", f"ip daddr {self.local_addr} tcp dport {port}")


@pytest.fixture(scope="module")
def net():
    n = Net()
    try:
        n.up()
    except subprocess.CalledProcessError as exc:
        n.down()
        pytest.fail(f"could not make the test network: {exc.cmd}: {exc.stderr}")
    yield n
    n.down()


@pytest.fixture(scope="module")
def netpg(net):
    """A PostgreSQL listening on this namespace's end of the link, for pgbun in its namespace."""

    def setup(server):
        server.sql(f"ALTER SYSTEM SET listen_addresses = '127.0.0.1,{net.local_addr}'", dbname="postgres")
        with open(server.datadir / "pg_hba.conf", "a") as f:
            f.write(f"host all all {net.local_addr.rsplit('.', 1)[0]}.0/24 trust\n")  # pgbun's namespaces
        server.stop()
        server.start()
        server.sql("CREATE TABLE IF NOT EXISTS netfault (id int PRIMARY KEY, note text)")

    server = Postgres("netpg")
    server.init_or_clean_up(setup)
    yield server
    server.destroy()


@pytest.fixture
def start(net, netpg, start_pgbun):
    """start(config) -> pgbun in the bun namespace, pooling netpg's pgbun_test."""

    def factory(config=None, **kw):
        cfg = {"pool_mode": "transaction", "admin_users": "postgres", "default_pool_size": 2, "server_connect_timeout": 3,
               "query_wait_timeout": 20, "server_login_retry": 1}
        cfg.update(config or {})
        entry = f"host={net.local_addr} port={netpg.port} dbname=pgbun_test"
        return start_pgbun(config=cfg, databases={"pgbun_test": entry}, netns=(net.bun, net.bun_addr), **kw)

    yield factory
    net.heal()


def servers(bun):
    """pgbun's server connections, as SHOW SERVERS rows, asked over its unix socket (outside the faults)."""
    return console_rows_unix(bun, "SERVERS")


def console_rows_unix(bun, what):
    with psycopg.connect(host=bun.unix_dir, port=bun.port, dbname="pgbun", user="postgres", autocommit=True,
                         connect_timeout=10) as admin:
        cur = admin.execute(f"SHOW {what}")
        cols = [d.name for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]


def backends(pg, net):
    """PostgreSQL's sessions from pgbun's address: (pid, state, query)."""
    return pg.sql("SELECT pid, state, query FROM pg_stat_activity WHERE client_addr = %s::inet", (net.bun_addr,),
                  dbname="postgres")


def timed_error(fn):
    """Runs fn, which must raise a psycopg error; returns (the error, seconds it took)."""
    t0 = time.monotonic()
    with pytest.raises(psycopg.Error) as info:
        fn()
    return info.value, time.monotonic() - t0


def test_the_network_works_and_pgbun_pools_through_it(start, net, netpg):
    bun = start()
    with bun.connect() as conn:
        assert conn.execute("SELECT host(inet_client_addr())").fetchone()[0] == net.bun_addr
    assert backends(netpg, net), "pgbun's server is not on the namespaced path"


def test_an_idle_server_black_holed_is_found_dead_by_keepalive_and_the_pool_recovers(start, net, netpg):
    bun = start({**KEEPALIVE, "server_idle_timeout": 0})
    with bun.connect() as conn:
        conn.execute("SELECT 1")
    assert len(servers(bun)) == 1
    net.blackhole_server(netpg.port)
    # Idle 1 s, then two probes 1 s apart, unanswered: about 3 s. No query is needed to find it.
    wait_until(lambda: not servers(bun), 20, interval=0.5, what="keepalive to end the black-holed idle server")
    net.heal()
    with bun.connect() as conn:
        assert conn.execute("SELECT 2").fetchone()[0] == 2


def test_a_server_black_holed_mid_transaction_fails_the_client_at_query_timeout(start, net, netpg):
    bun = start({"query_timeout": 3})
    netpg.sql("DELETE FROM netfault WHERE id = 1")
    conn = bun.connect(autocommit=False)
    conn.execute("INSERT INTO netfault VALUES (1, 'mid-transaction')")
    net.blackhole_server(netpg.port)
    # The cancel cannot reach PostgreSQL either: 5 s after it, the server is closed and the client told.
    err, took = timed_error(lambda: conn.execute("SELECT 1"))
    assert 7 <= took < 20, (took, err)
    assert "query_timeout: the server did not end the query within 5 s of its cancel" in str(err), err
    assert "cancel request to the server timed out" in bun.log_text()
    net.heal()
    # PostgreSQL hears the close once the path is back, and rolls back; nothing stays idle in transaction.
    wait_until(lambda: not any(b[1] and b[1].startswith("idle in transaction") for b in backends(netpg, net)),
               60, interval=0.5, what="PostgreSQL to roll the black-holed transaction back")
    assert netpg.sql("SELECT count(*) FROM netfault WHERE id = 1")[0][0] == 0
    with bun.connect() as c2:
        assert c2.execute("SELECT 3").fetchone()[0] == 3


def test_tcp_user_timeout_ends_a_server_that_stops_acknowledging(start, net, netpg):
    """No query_timeout: only the kernel's TCP_USER_TIMEOUT (2 s here) ends the wait, not 15 minutes of
    retransmissions."""
    bun = start({"pool_mode": "session", "tcp_user_timeout": 2000, "query_timeout": 0})
    conn = bun.connect()
    conn.execute("SELECT 1")
    net.blackhole_server(netpg.port)
    err, took = timed_error(lambda: conn.execute("SELECT 1"))
    assert took < 20, (took, err)
    assert "timed out" in bun.log_text().lower(), bun.log_text()[-3000:]
    net.heal()
    with bun.connect() as c2:
        assert c2.execute("SELECT 4").fetchone()[0] == 4


@pytest.mark.parametrize("stage", ["connect", "login"])
def test_a_server_black_holed_during_login_fails_the_client_within_the_timeouts(start, net, netpg, stage):
    """connect: no SYN answered. login: TCP connects, then PostgreSQL's replies vanish (packets from its port
    longer than a bare ACK or SYN-ACK are dropped)."""
    bun = start({"server_connect_timeout": 2, "query_wait_timeout": 6})
    if stage == "connect":
        net.blackhole_server(netpg.port)
    else:
        net.drop(f"tcp sport {netpg.port} ip length > 80")
    err, took = timed_error(lambda: bun.connect(connect_timeout=30).execute("SELECT 1"))
    # Each attempt ends at server_connect_timeout, and the client, at query_wait_timeout, hears why.
    assert 5 <= took < 6 + 10, (took, err)
    assert "query_wait_timeout: no server connection within" in str(err), err
    assert f"could not connect to server {net.local_addr}:{netpg.port}: server_connect_timeout (2 s) expired" \
        in str(err), err
    net.heal()
    wait_until(lambda: bun.connect().execute("SELECT 5").fetchone()[0] == 5, 30, interval=1,
               what="the pool to serve once the path is back")


def test_a_client_black_holed_mid_result_frees_its_server(start, net, netpg):
    """The client stops acknowledging in the middle of a 200 MB result: tcp_user_timeout ends it, and its
    server, which cannot be handed to another client mid-result, is closed."""
    bun = start({"default_pool_size": 1, "tcp_user_timeout": 3000})
    w = bun.login()
    w.send(pgwire.query_message("SELECT repeat('x', 1000) FROM generate_series(1, 200000)"))
    got = 0
    while got < 1_000_000:
        mtype, body = w.read_message()
        got += len(body)
    net.blackhole_client(w.sock)
    # The one server is freed: another client is served.
    t0 = time.monotonic()
    with bun.connect(connect_timeout=60) as c2:
        assert c2.execute("SELECT 6").fetchone()[0] == 6
    assert time.monotonic() - t0 < 60
    wait_until(lambda: not any("generate_series" in (b[2] or "") and b[1] == "active" for b in backends(netpg, net)),
               30, interval=0.5, what="the abandoned query to end on PostgreSQL")
    assert "timed out" in bun.log_text().lower()


def test_a_client_that_vanished_without_fin_is_found_by_keepalive_and_its_transaction_rolled_back(start, net,
                                                                                                   netpg):
    bun = start({**KEEPALIVE, "default_pool_size": 1})
    netpg.sql("DELETE FROM netfault WHERE id = 2")
    idle = bun.login()
    w = bun.login()
    w.query("BEGIN")
    w.query("INSERT INTO netfault VALUES (2, 'vanished')")
    # Keepalive probes only a connection with nothing unacknowledged: the client's (delayed) ACK of that last
    # reply goes out first. (A peer that vanishes with data in flight is tcp_user_timeout's: see mid_result.)
    time.sleep(0.5)
    # Both clients' packets vanish, then their sockets close here: no FIN or RST reaches pgbun.
    net.blackhole_client(w.sock)
    net.blackhole_client(idle.sock)
    w.sock.close()
    idle.sock.close()
    # The server held by the vanished transaction goes back to the pool, rolled back.
    with bun.connect(connect_timeout=60) as c2:
        assert c2.execute("SELECT count(*) FROM netfault WHERE id = 2").fetchone()[0] == 0
    wait_until(lambda: len(console_rows_unix(bun, "CLIENTS")) <= 1, 20, interval=0.5,
               what="keepalive to end both vanished clients")
    assert not any(b[1] and b[1].startswith("idle in transaction") for b in backends(netpg, net))


def checked_load(connect, impair, heal, seconds=10):
    """Eight clients, each checking every result, through a clean path (3 s), an impaired one (seconds), and a
    clean one again. Returns the queries done in the 3 s before and the 3 s after (2 s after the impairment
    ends), having asserted that no client erred, got a wrong result or stalled."""
    stop = threading.Event()
    counts = [0] * 8
    errors = []

    def client(i):
        try:
            with connect() as conn:
                n = 0
                while not stop.is_set():
                    n += 1
                    v = i * 1_000_000 + n
                    row = conn.execute("SELECT %s::int, md5(%s::text), repeat('y', 2000)", (v, v)).fetchone()
                    assert row[0] == v and row[2] == "y" * 2000, row
                    assert row[1] == hashlib.md5(str(v).encode()).hexdigest(), row
                    counts[i] += 1
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(counts))]
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        base0 = sum(counts)
        time.sleep(3)
        before = sum(counts) - base0
        impair()
        at_impair = list(counts)
        time.sleep(seconds)
        # No client stuck: every one made progress through the impairment.
        assert all(c > a for c, a in zip(counts, at_impair)), (at_impair, counts, errors)
        heal()
        time.sleep(2)
        base1 = sum(counts)
        time.sleep(3)
        after = sum(counts) - base1
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not any(t.is_alive() for t in threads), "a client hung"
    assert not errors, errors
    return before, after


def test_packet_loss_on_the_server_path_is_slow_never_wrong_and_throughput_recovers(start, net, netpg):
    bun = start({"default_pool_size": 4})
    lossy = [f"tcp dport {netpg.port} numgen random mod 100 < 5", f"tcp sport {netpg.port} numgen random mod 100 < 5"]
    before, after = checked_load(bun.connect, lambda: net.drop(*lossy), net.heal)
    assert after >= before / 4, (before, after)


@pytest.fixture(scope="module")
def slow(net):
    """A third namespace for pgbun, linked to the wire namespace by tapwire.py (50 ms +- 10 ms each way, 5%
    loss), since the kernel may have no `tc netem`. Its clients use pgbun's unix socket: only the server
    path is slow."""
    tag = os.getpid() % 100000
    ns, dev_ns, dev_wire = f"pgbun-slow-{tag}", f"pgst{tag}a", f"pgst{tag}b"
    prefix = net.local_addr.rsplit(".", 1)[0]
    wire_addr, addr, subnet = f"{prefix}.9", f"{prefix}.10", f"{prefix}.8/30"
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("tapwire.py")), dev_ns, dev_wire,
                             "--delay", "50", "--jitter", "10", "--loss", "5"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "set", dev_ns, "netns", ns)
        sh("ip", "link", "set", dev_wire, "netns", net.wire)
        sh("ip", "-n", net.wire, "addr", "add", f"{wire_addr}/30", "dev", dev_wire)
        sh("ip", "-n", net.wire, "link", "set", dev_wire, "up")
        sh("ip", "-n", ns, "addr", "add", f"{addr}/30", "dev", dev_ns)
        for dev in ("lo", dev_ns):
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", ns, "route", "add", "default", "via", wire_addr)
        sh("ip", "route", "add", subnet, "via", net.wire_local, "dev", net.host_if)
        proc.send_signal(signal.SIGUSR2)  # clean until a test says otherwise
        yield proc, ns, addr
    finally:
        proc.terminate()
        proc.wait(10)
        subprocess.run(["ip", "route", "del", subnet], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "del", ns], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_latency_jitter_and_loss_on_the_server_path_are_slow_never_wrong_and_throughput_recovers(
        slow, netpg, start_pgbun, net):
    wire, ns, addr = slow
    bun = start_pgbun(config={"pool_mode": "transaction", "default_pool_size": 4},
                      databases={"pgbun_test": f"host={net.local_addr} port={netpg.port} dbname=pgbun_test"},
                      netns=(ns, addr))

    def connect():
        return bun.connect(host=bun.unix_dir)

    with connect() as conn:  # the path works, through the wire, and the wire delays it: 40 ms at least each way
        assert conn.execute("SELECT host(inet_client_addr())").fetchone()[0] == addr
        wire.send_signal(signal.SIGUSR1)
        time.sleep(0.2)
        t0 = time.monotonic()
        for _ in range(5):
            conn.execute("SELECT 1")
        assert time.monotonic() - t0 >= 5 * 0.08
        wire.send_signal(signal.SIGUSR2)
    before, after = checked_load(connect, lambda: wire.send_signal(signal.SIGUSR1),
                                 lambda: wire.send_signal(signal.SIGUSR2))
    assert after >= before / 4, (before, after)
