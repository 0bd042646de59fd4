"""pgbun's Prometheus endpoint (metrics_listen_port, metrics_listen_addr,
metrics_auth_users), read by a real Prometheus (Debian's 2.42, started here
as the unprivileged test user, scraping every second) and by promtool:

- a known workload through pgbun shows in Prometheus exactly: queries,
  transactions, server assignments, the histograms' counts, reuse;
- `promtool check metrics` accepts a scrape; every metric and label of the
  pgbouncer_exporter 0.12 contract (metrics_names.py, written from that
  exporter's source) is there, with the values the console's SHOW commands
  give at the same quiet moment;
- OpenMetrics when asked for (Prometheus asks for it first), ending "# EOF",
  and Prometheus' parser takes it (the target is up with no error);
- histograms: the spec's buckets, cumulative, +Inf equal to _count, _sum
  plausible; the client wait histogram sees a client that waited;
- HTTP basic auth against auth_file secrets (plain, md5, SCRAM), a unix
  socket endpoint, 404 and 405, RELOAD turning the endpoint on, moving it and
  turning it off;
- 1,000 pools scraped in a loop while pgbench runs through pgbun (the scrape
  times are printed, not asserted);
- hostile HTTP: a huge header, slowloris clients, garbage, many connections
  at once: the endpoint and the SQL traffic keep working.
"""

import base64
import concurrent.futures
import http.client
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

import pgwire
from conftest import (IS_PGBOUNCER, KEEP, _ini_lines, chown_to_run_user,
                      default_auth_file, free_port, in_thread, make_tempdir, port_accepts, run,
                      run_as_kwargs, server_backends, wait_until)
from metrics_names import BUCKETS, EXPORTER, PGBUN
from tlscerts import tls_certs  # noqa: F401 - a fixture

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="pgbun's own endpoint")

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
WORK_DB = "mtests_work"      # the alias every counted workload goes through
APP = "mtests_app"
TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
# What Prometheus 2.42 sends when it scrapes (scrape/scrape.go, acceptHeader).
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
                     "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


def need(path):
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: scripts/deps installs Debian's prometheus package", pytrace=False)
    return path


# ---------------------------------------------------------------- the exposition formats

NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
TEXT_TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}
OM_TYPES = {"counter", "gauge", "histogram", "gaugehistogram", "stateset", "info", "summary", "unknown"}
OM_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
               "gaugehistogram": ("_bucket", "_gsum", "_gcount"), "summary": ("_sum", "_count", "_created"),
               "info": ("_info",)}


class ParseError(AssertionError):
    pass


class Exposition:
    """A scrape, parsed strictly: Prometheus text format 0.0.4, or OpenMetrics
    1.0.0 with openmetrics=True. samples: {(name, frozenset(labels)): value};
    types and helps by family; the families in the order they came."""

    def __init__(self, text, openmetrics=False):
        self.text = text
        self.openmetrics = openmetrics
        self.samples = {}
        self.types = {}
        self.helps = {}
        self.families = []
        self._parse()

    def _fail(self, lineno, line, why):
        raise ParseError(f"line {lineno}: {why}: {line[:200]!r}")

    def _family_of(self, name):
        if name in self.types:
            if self.openmetrics and self.types[name] in OM_SUFFIXES:
                return None  # an OpenMetrics counter/histogram/info sample always has a suffix
            return name
        for suffix in ("_bucket", "_sum", "_count", "_total", "_created", "_info", "_gsum", "_gcount"):
            if name.endswith(suffix):
                base = name[:-len(suffix)]
                kind = self.types.get(base)
                if self.openmetrics and suffix in OM_SUFFIXES.get(kind, ()):
                    return base
                if not self.openmetrics and kind in ("histogram", "summary") and \
                        suffix in ("_bucket", "_sum", "_count") and not (kind == "summary" and suffix == "_bucket"):
                    return base
        return None if self.openmetrics else name  # text format: an untyped sample is its own family

    def _parse(self):
        text = self.text
        if not text.endswith("\n"):
            raise ParseError("the scrape does not end with a newline (cut short?)")
        lines = text.split("\n")[:-1]
        if self.openmetrics:
            if not lines or lines[-1] != "# EOF":
                raise ParseError(f"an OpenMetrics scrape ends with '# EOF', this one with {lines[-1:]!r}")
            lines = lines[:-1]
        current = None
        for lineno, line in enumerate(lines, 1):
            if line == "":
                if self.openmetrics:
                    self._fail(lineno, line, "an empty line in OpenMetrics")
                continue
            if line.startswith("#"):
                parts = line.split(" ", 3)
                if len(parts) >= 3 and parts[0] == "#" and parts[1] in ("HELP", "TYPE", "UNIT"):
                    kind, name = parts[1], parts[2]
                    if not NAME_RE.fullmatch(name):
                        self._fail(lineno, line, "a bad metric name")
                    if kind == "TYPE":
                        t = parts[3] if len(parts) > 3 else ""
                        if t not in (OM_TYPES if self.openmetrics else TEXT_TYPES):
                            self._fail(lineno, line, "an unknown type")
                        if name in self.types:
                            self._fail(lineno, line, "a second TYPE for a family")
                        if any(n == name or n.startswith(name + "_") for n, _ in self.samples
                               if self._family_of(n) == name):
                            self._fail(lineno, line, "TYPE after the family's samples")
                        self.types[name] = t
                    elif kind == "HELP":
                        if name in self.helps:
                            self._fail(lineno, line, "a second HELP for a family")
                        self.helps[name] = parts[3] if len(parts) > 3 else ""
                    if name != current:
                        if name in self.families:
                            self._fail(lineno, line, "a family split in two")
                        self.families.append(name)
                        current = name
                elif self.openmetrics:
                    self._fail(lineno, line, "a comment OpenMetrics does not have")
                elif line.startswith("# EOF"):
                    self._fail(lineno, line, "'# EOF' in the text format")
                continue
            name, labels, value = self._sample(lineno, line)
            family = self._family_of(name)
            if family is None:
                self._fail(lineno, line, "a sample of no declared family (or with the wrong suffix)")
            if family != current:
                if family in self.families:
                    self._fail(lineno, line, "a family split in two")
                self.families.append(family)
                current = family
            key = (name, frozenset(labels.items()))
            if key in self.samples:
                self._fail(lineno, line, "the same series twice")
            self.samples[key] = value

    def _sample(self, lineno, line):
        m = NAME_RE.match(line)
        if not m:
            self._fail(lineno, line, "no metric name")
        name, i, labels = m.group(0), m.end(), {}
        if i < len(line) and line[i] == "{":
            i += 1
            while True:
                if i < len(line) and line[i] == "}":
                    i += 1
                    break
                lm = LABEL_RE.match(line, i)
                if not lm or line[lm.end():lm.end() + 2] != '="':
                    self._fail(lineno, line, "a bad label")
                label, i = lm.group(0), lm.end() + 2
                value = []
                while True:
                    if i >= len(line):
                        self._fail(lineno, line, "an unterminated label value")
                    c = line[i]
                    if c == "\\":
                        esc = line[i + 1:i + 2]
                        if esc not in ("\\", '"', "n"):
                            self._fail(lineno, line, "a bad escape in a label value")
                        value.append("\n" if esc == "n" else esc)
                        i += 2
                    elif c == '"':
                        i += 1
                        break
                    else:
                        value.append(c)
                        i += 1
                if label in labels:
                    self._fail(lineno, line, "a label twice")
                labels[label] = "".join(value)
                if i < len(line) and line[i] == ",":
                    i += 1
                    if self.openmetrics and line[i:i + 1] == "}":
                        self._fail(lineno, line, "a trailing comma in OpenMetrics")
                elif line[i:i + 1] != "}":
                    self._fail(lineno, line, "no comma or brace after a label")
        if line[i:i + 1] != " ":
            self._fail(lineno, line, "no space before the value")
        fields = line[i + 1:].split(" ")
        if not 1 <= len(fields) <= 2 or "" in fields:
            self._fail(lineno, line, "not `value [timestamp]` after the labels")
        try:
            value = float(fields[0])
        except ValueError:
            self._fail(lineno, line, "a value that is not a number")
        return name, labels, value

    # -------------------------------------------------------- reading it

    def series(self, name):
        """[(labels dict, value)] of every sample called name."""
        return [(dict(labels), v) for (n, labels), v in self.samples.items() if n == name]

    def by(self, name, *keys):
        """{tuple of the values of keys: value} of every sample called name."""
        out = {}
        for labels, v in self.series(name):
            k = tuple(labels.get(key, "") for key in keys)
            assert k not in out, f"{name}: two series for {dict(zip(keys, k))}"
            out[k] = v
        return out

    def one(self, metric, **labels):
        """The value of the only sample called metric whose labels include labels."""
        found = [v for ls, v in self.series(metric) if all(ls.get(k) == w for k, w in labels.items())]
        assert len(found) == 1, f"{metric}{labels}: {len(found)} series in the scrape"
        return found[0]

    def has(self, metric, **labels):
        return any(all(ls.get(k) == w for k, w in labels.items()) for ls, _ in self.series(metric))


def histogram(exp, family, **labels):
    """(buckets [(le as a float, cumulative count)] in scrape order, _sum, _count) of one histogram
    series, checked: the spec's bounds in order, cumulative, +Inf equal to _count."""
    buckets = [(float(ls["le"]), v) for ls, v in exp.series(family + "_bucket")
               if all(ls.get(k) == w for k, w in labels.items())]
    assert [le for le, _ in buckets] == [float(b) for b in BUCKETS], \
        f"{family}{labels}: buckets {[le for le, _ in buckets]}, the spec says {BUCKETS}"
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), f"{family}{labels}: buckets not cumulative: {buckets}"
    count = exp.one(family + "_count", **labels)
    total = exp.one(family + "_sum", **labels)
    assert counts[-1] == count, f"{family}{labels}: le=+Inf {counts[-1]} != _count {count}"
    assert total >= 0 and (count > 0 or total == 0), (family, labels, total, count)
    return buckets, total, count


# ---------------------------------------------------------------- HTTP

class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def content_type(self):
        return self.headers.get("content-type", "")

    def text(self):
        return self.body.decode("utf-8")


def request(target, path="/metrics", method="GET", headers=None, timeout=30, body=None):
    """One HTTP/1.1 request on a new connection. target: a port on 127.0.0.1,
    (host, port), or the path of a unix socket."""
    if isinstance(target, str):
        conn = UnixHTTPConnection(target, timeout)
    else:
        host, port = target if isinstance(target, tuple) else ("127.0.0.1", target)
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        conn.close()


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def scrape(target, openmetrics=False, headers=None, timeout=30):
    """GET /metrics, checked (200, the content type the spec gives), parsed."""
    h = dict(headers or {})
    if openmetrics:
        h["Accept"] = "application/openmetrics-text; version=1.0.0"
    r = request(target, headers=h, timeout=timeout)
    assert r.status == 200, f"GET /metrics: {r.status} {r.body[:300]!r}"
    want = OPENMETRICS_TYPE if openmetrics else TEXT_TYPE
    assert r.content_type.replace(" ", "") == want.replace(" ", ""), r.content_type
    return Exposition(r.text(), openmetrics=openmetrics)


def raw_exchange(port, data, timeout=15, host="127.0.0.1"):
    """Sends data on a new TCP connection, then closes our side for writing and
    reads until the peer closes. Returns (what came back, whether the peer
    closed within timeout). A reset counts as a close; a write pgbun stops
    reading ends the sending."""
    got, closed = b"", False
    with socket.create_connection((host, port), timeout=timeout) as s:
        deadline = time.monotonic() + timeout
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except socket.timeout:
            pass  # pgbun stopped reading; it must still close the connection
        except OSError:
            pass  # pgbun closed it already (EPIPE, ECONNRESET, ENOTCONN)
        while time.monotonic() < deadline:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            got += chunk
    return got, closed


def status_of(reply):
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", reply)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------- Prometheus

class Prometheus:
    """A Prometheus server with its own storage, scraping targets every second."""

    def __init__(self):
        self.dir = make_tempdir("pgbun-prom-")
        self.port = None
        self.proc = None
        self.log = self.dir / "prometheus.log"

    def start(self, targets, basic_auth=None, timeout=60):
        job = {"job_name": "pgbun", "metrics_path": "/metrics", "scrape_interval": "1s",
               "scrape_timeout": "1s", "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in targets]}]}
        if basic_auth:
            job["basic_auth"] = {"username": basic_auth[0], "password": basic_auth[1]}
        config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                  "scrape_configs": [job]}
        path = self.dir / "prometheus.yml"
        path.write_text(json.dumps(config, indent=2))  # YAML is a superset of JSON
        chown_to_run_user(path)
        data = self.dir / "data"
        data.mkdir()
        chown_to_run_user(data)
        for attempt in range(3):
            self.port = free_port()
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [need(PROMETHEUS), f"--config.file={path}", f"--storage.tsdb.path={data}",
                     f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h",
                     "--log.level=info"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.dir, start_new_session=True,
                    **run_as_kwargs())
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                        if r.status == 200:
                            return self
                except (OSError, urllib.error.URLError):
                    pass
                time.sleep(0.1)
            self.stop()
            if "address already in use" not in self.log_text():
                break
        raise AssertionError(f"prometheus did not become ready:\n{self.log_text()[-4000:]}")

    def log_text(self):
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def api(self, path, **params):
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            reply = json.load(r)
        assert reply["status"] == "success", reply
        return reply["data"]

    def vector(self, expr):
        """{frozenset(labels but __name__, job, instance): value} of an instant query."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        out = {}
        for item in data["result"]:
            labels = {k: v for k, v in item["metric"].items() if k not in ("__name__", "job", "instance")}
            out[frozenset(labels.items())] = float(item["value"][1])
        return out

    def value(self, expr):
        """The value of an instant query that gives one series, or None when it gives none."""
        v = self.vector(expr)
        assert len(v) <= 1, f"{expr}: {len(v)} series"
        return next(iter(v.values())) if v else None

    def targets(self):
        return self.api("targets")["activeTargets"]

    def wait_healthy(self, timeout=30):
        """Every target scraped, up and without an error; returns the targets."""
        def healthy():
            ts = self.targets()
            return ts if ts and all(t["health"] == "up" and not t["lastError"] for t in ts) else None
        try:
            return wait_until(healthy, timeout=timeout, what="prometheus to scrape pgbun without error")
        except AssertionError:
            raise AssertionError(f"targets: {json.dumps(self.targets(), indent=1)}\n"
                                 f"prometheus log:\n{self.log_text()[-3000:]}") from None


@pytest.fixture
def prometheus():
    """Factory: prometheus(targets=[port, ...], basic_auth=(user, password)) -> a running Prometheus."""
    started = []

    def factory(targets, basic_auth=None):
        p = Prometheus()
        started.append(p)
        return p.start(targets, basic_auth)

    yield factory
    for p in started:
        p.stop()
        if not KEEP:
            shutil.rmtree(p.dir, ignore_errors=True)


# ---------------------------------------------------------------- pgbun with metrics

def metrics_pgbun(start_pgbun, pg, config=None, databases=None, **kw):
    """pgbun with its endpoint on a free port of 127.0.0.1, transaction pooling,
    the console open to postgres, WORK_DB and pgbun_test on `pg`. Returns (bun, port)."""
    port = free_port()
    cfg = {"pool_mode": "transaction", "admin_users": "postgres", "metrics_listen_port": port}
    cfg.update(config or {})
    dbs = {WORK_DB: pg.entry(), "pgbun_test": pg.entry()}
    dbs.update(databases or {})
    bun = start_pgbun(config=cfg, databases=dbs, **kw)
    if cfg.get("metrics_listen_port"):
        port = int(cfg["metrics_listen_port"])
        if "/" not in str(cfg.get("metrics_listen_addr", "")).split(",")[0]:
            wait_until(lambda: port_accepts("127.0.0.1", port), timeout=10, what="the metrics port")
    bun.metrics_port = port
    bun.databases = dbs
    return bun, port


def run_queries(bun, n, sql="SELECT 1", database=WORK_DB, user="postgres"):
    """n simple queries on one new connection: n requests, n transactions (transaction mode)."""
    w = bun.login(user=user, database=database)
    for _ in range(n):
        w.query(sql)
    w.terminate()


def rewrite_config(bun, **changes):
    cfg = dict(bun.config)
    cfg.update(changes)
    bun.config = cfg
    bun.config_path.write_text(_ini_lines("pgbun", cfg, bun.databases, None))
    chown_to_run_user(bun.config_path)


def reload(bun):
    with bun.connect(dbname="pgbun") as admin:
        admin.execute("RELOAD")


def endpoint_answers(target):
    try:
        return request(target, timeout=5).status == 200
    except OSError:
        return False


# ---------------------------------------------------------------- Prometheus reads a workload

@pytest.mark.timeout(180)
def test_prometheus_sees_a_known_workload_exactly(start_pgbun, pg, prometheus):
    bun, port = metrics_pgbun(start_pgbun, pg)
    prom = prometheus([port])
    prom.wait_healthy()
    n = 37
    run_queries(bun, n)

    sel = f'{{database="{WORK_DB}"}}'
    pool = f'{{database="{WORK_DB}",user="postgres"}}'
    wait_until(lambda: prom.value(f"pgbouncer_stats_totals_queries_pooled_total{sel}") == n, timeout=30,
               what=f"prometheus to see {n} queries")
    expected = {
        f"pgbouncer_stats_totals_queries_pooled_total{sel}": n,
        f"pgbouncer_stats_totals_sql_transactions_pooled_total{sel}": n,
        f"pgbouncer_stats_totals_server_assignments_total{sel}": n,
        f"pgbun_query_duration_seconds_count{sel}": n,
        f'pgbun_query_duration_seconds_bucket{{database="{WORK_DB}",le="+Inf"}}': n,
        f"pgbun_transaction_duration_seconds_count{sel}": n,
        f"pgbun_client_wait_seconds_count{sel}": n,
        f"pgbun_pool_server_assignments_total{pool}": n,
        f"pgbun_pool_server_assignments_reused_total{pool}": n - 1,
        f"pgbun_server_connects_total{pool}": 1,
        f"pgbun_pool_max_server_connections_used{pool}": 1,
        f"pgbouncer_pools_server_idle_connections{pool}": 1,
        f"pgbouncer_pools_client_active_connections{pool}": 0,
        f'pgbouncer_databases_current_connections{{name="{WORK_DB}"}}': 1,
    }
    got = {}

    def all_there():
        got.update({expr: prom.value(expr) for expr in expected})
        return got == expected

    try:
        wait_until(all_there, timeout=20, what="every expected value in prometheus")
    except AssertionError:
        assert got == expected
    assert prom.value(f"pgbun_pool_reuse_ratio{pool}") == pytest.approx((n - 1) / n)
    assert prom.value(f"pgbouncer_stats_totals_received_bytes_total{sel}") >= n * len("SELECT 1")
    assert prom.value(f"pgbouncer_stats_totals_queries_duration_seconds_total{sel}") > 0
    median = prom.value(f"histogram_quantile(0.5, pgbun_query_duration_seconds_bucket{sel})")
    assert 0 < median <= 60
    assert prom.value('up{job="pgbun"}') == 1
    assert prom.value("pgbouncer_up") == 1
    assert prom.value('scrape_samples_scraped{job="pgbun"}') == len(scrape(port, openmetrics=True).samples)


def test_prometheus_scrape_is_openmetrics_and_healthy(start_pgbun, pg, prometheus):
    """Prometheus asks for OpenMetrics first: pgbun answers with it, and
    Prometheus' own parser takes it (the target is up, no lastError)."""
    bun, port = metrics_pgbun(start_pgbun, pg)
    r = request(port, headers={"Accept": PROMETHEUS_ACCEPT})
    assert r.status == 200
    assert r.content_type.replace(" ", "") == OPENMETRICS_TYPE.replace(" ", "")
    assert r.text().endswith("# EOF\n")

    prom = prometheus([port])
    run_queries(bun, 3)
    targets = prom.wait_healthy()
    assert len(targets) == 1 and targets[0]["scrapeUrl"] == f"http://127.0.0.1:{port}/metrics"
    wait_until(lambda: prom.value(f'pgbouncer_stats_totals_queries_pooled_total{{database="{WORK_DB}"}}') == 3,
               timeout=30, what="the workload in prometheus")
    # Several scrapes later, still healthy: not a first scrape that happened to work.
    time.sleep(3)
    for t in prom.targets():
        assert t["health"] == "up" and t["lastError"] == "", t
    # Prometheus took every sample of the scrape (nothing moves between two scrapes here but
    # pgbun's scrape counters, whose number of series stays).
    om = scrape(port, openmetrics=True)
    assert prom.value('scrape_samples_scraped{job="pgbun"}') == len(om.samples)
    assert prom.value('up{job="pgbun"}') == 1


def test_prometheus_scrapes_with_basic_auth(start_pgbun, pg, prometheus):
    users = {**default_auth_file(), "mtests_mon": "mon pass"}
    bun, port = metrics_pgbun(start_pgbun, pg, config={"metrics_auth_users": "mtests_mon"}, auth_file=users)
    prom = prometheus([port], basic_auth=("mtests_mon", "mon pass"))
    prom.wait_healthy()
    assert prom.value('up{job="pgbun"}') == 1


def test_prometheus_with_a_wrong_password_sees_401(start_pgbun, pg, prometheus):
    users = {**default_auth_file(), "mtests_mon": "mon pass"}
    bun, port = metrics_pgbun(start_pgbun, pg, config={"metrics_auth_users": "mtests_mon"}, auth_file=users)
    prom = prometheus([port], basic_auth=("mtests_mon", "wrong"))
    t = wait_until(lambda: next((t for t in prom.targets() if t["lastScrape"] != "0001-01-01T00:00:00Z"
                                 and t["health"] != "unknown"), None), timeout=30, what="a first scrape")
    assert t["health"] == "down" and "401" in t["lastError"], t


# ---------------------------------------------------------------- promtool

# promtool's lint complaints that a name of the pgbouncer_exporter contract
# would force on us, as (metric, complaint): such a name stays, because
# dashboards and alerts written for the exporter query it, and only that exact
# complaint about it is let through. promtool 2.42 finds nothing to say about
# any name pgbun serves (the exporter's counters all end in _total, its times
# are in seconds), so the set is empty and any complaint fails the test.
ACCEPTED_LINT = set()


@pytest.mark.timeout(120)
def test_promtool_check_metrics_accepts_a_scrape(start_pgbun, pg):
    bun, port = metrics_pgbun(start_pgbun, pg)
    run_queries(bun, 5)
    with bun.connect(dbname=WORK_DB, application_name=APP):  # a client for SHOW CLIENTS
        r = request(port)
    assert r.status == 200
    res = subprocess.run([need(PROMTOOL), "check", "metrics"], input=r.body, capture_output=True, timeout=60)
    out = (res.stdout + res.stderr).decode(errors="replace")
    assert "error while linting" not in out, out
    problems = []
    for line in out.splitlines():
        line = line.strip()
        if not line:
            continue
        metric, _, complaint = line.partition(" ")
        if (metric, complaint) not in ACCEPTED_LINT:
            problems.append(line)
    assert not problems, "promtool check metrics:\n" + "\n".join(problems)
    assert res.returncode in ((0, 3) if ACCEPTED_LINT else (0,)), out


# ---------------------------------------------------------------- the exporter's contract

def test_every_exporter_metric_and_label_is_served(start_pgbun, pg):
    bun, port = metrics_pgbun(start_pgbun, pg)
    run_queries(bun, 2)
    with bun.connect(dbname=WORK_DB, application_name=APP):  # a client for SHOW CLIENTS
        for exp in (scrape(port), scrape(port, openmetrics=True)):
            missing, wrong = [], []
            for name, kind, labels, *_ in EXPORTER:
                family = name[:-len("_total")] if exp.openmetrics and kind == "counter" else name
                if exp.types.get(family) != kind:
                    wrong.append(f"{family}: TYPE {exp.types.get(family)!r}, the exporter's is {kind}")
                series = exp.series(name)
                if not series:
                    missing.append(name)
                for ls, _ in series:
                    if set(ls) != set(labels):
                        wrong.append(f"{name}: labels {sorted(ls)}, the exporter's are {sorted(labels)}")
                        break
                if family not in exp.helps or not exp.helps[family]:
                    wrong.append(f"{family}: no HELP")
            assert not missing, f"({'OpenMetrics' if exp.openmetrics else 'text'}) not served: {missing}"
            assert not wrong, "\n".join(wrong)
            assert exp.one("pgbouncer_up") == 1
            assert exp.has("pgbouncer_databases_pool_size", name=WORK_DB)
            assert exp.has("pgbouncer_pools_client_active_connections", database=WORK_DB, user="postgres")
            assert exp.has("pgbouncer_stats_totals_queries_pooled_total", database=WORK_DB)
            assert exp.has("pgbouncer_client_connections", database=WORK_DB, user="postgres",
                           application_name=APP)


def test_every_pgbun_metric_is_served_with_its_labels(start_pgbun, pg):
    bun, port = metrics_pgbun(start_pgbun, pg, config={"workers": 2})
    run_queries(bun, 2)
    exp = scrape(port)
    for name, (kind, labels) in PGBUN.items():
        assert exp.types.get(name) == kind, f"{name}: TYPE {exp.types.get(name)!r}, the spec says {kind}"
        sample = name + "_count" if kind == "histogram" else name
        series = exp.series(sample)
        assert series, f"{sample} is not served"
        for ls, _ in series:
            assert set(ls) == set(labels), f"{sample}: labels {sorted(ls)}, the spec says {sorted(labels)}"
    assert sorted(ls["worker"] for ls, _ in exp.series("pgbun_worker_busy_seconds_total")) == ["0", "1"]
    assert {ls["side"] for ls, _ in exp.series("pgbun_tls_handshakes_total")} == {"client", "server"}
    assert {ls["side"] for ls, _ in exp.series("pgbun_tls_handshake_failures_total")} == {"client", "server"}


def show(admin, what):
    cur = admin.execute(f"SHOW {what}")
    cols = [d.name for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def label(value):
    """A SHOW column as the exporter makes a label of it (NULL: empty)."""
    return "" if value is None else str(value)


def expected_from_show(admin):
    """{(metric, frozenset(labels)): value} the exporter would make of the console's SHOW output."""
    out = {}
    for name, kind, labels, command, column, scale in EXPORTER:
        if command in (None, "VERSION"):
            continue
        if command == "LISTS":
            items = {r["list"]: r["items"] for r in show(admin, "LISTS")}
            out[(name, frozenset())] = items[column]
        elif command == "CONFIG":
            values = {r["key"]: r["value"] for r in show(admin, "CONFIG")}
            out[(name, frozenset())] = float(values[column])
        elif command == "CLIENTS":
            for r in show(admin, "CLIENTS"):
                key = (name, frozenset({k: label(r.get(k)) for k in labels}.items()))
                out[key] = out.get(key, 0) + 1
        else:
            for r in show(admin, command):
                value = r[column]
                if column == "maxwait":
                    value = r["maxwait"] + r.get("maxwait_us", 0) / 1e6
                key = (name, frozenset({k: label(r[k]) for k in labels}.items()))
                out[key] = float(value) * scale
    return out


def scraped(exp, names):
    return {k: v for k, v in exp.samples.items() if k[0] in names}


def test_values_agree_with_show_at_a_quiet_moment(start_pgbun, pg):
    bun, port = metrics_pgbun(start_pgbun, pg, config={"max_client_conn": 321, "max_user_connections": 7},
                              databases={"mtests_forced": pg.entry(user="postgres", pool_size=3,
                                                                   pool_mode="session")})
    run_queries(bun, 11)
    run_queries(bun, 4, database="mtests_forced")
    holder = bun.login(database=WORK_DB, params={"application_name": APP})
    holder.query("SELECT 1")
    # The version has its own test below.
    names = {m[0] for m in EXPORTER if m[3] not in (None, "VERSION")}
    counters = {m[0] for m in EXPORTER if m[1] == "counter"}
    with bun.connect(dbname="pgbun") as admin:
        admin.execute("SHOW VERSION")  # the console client is logged in and has run a query
        before = scraped(scrape(port), names)
        want = expected_from_show(admin)
        after = scraped(scrape(port), names)
    holder.terminate()

    assert set(before) == set(want) == set(after), (
        f"only in the scrape: {sorted(set(before) - set(want))}\nonly in SHOW: {sorted(set(want) - set(before))}")
    differ = []
    for key, value in want.items():
        name, labels = key
        console = dict(labels).get("database") == "pgbun" or dict(labels).get("name") == "pgbun"
        if name in counters and console:
            # The console's own SHOW queries move its byte counters between the scrapes.
            ok = before[key] <= value + 1e-9 and value <= after[key] + 1e-9
        else:
            ok = before[key] == pytest.approx(value, abs=1e-6) and after[key] == pytest.approx(value, abs=1e-6)
        if not ok:
            differ.append(f"{name}{dict(labels)}: scrape {before[key]} / {after[key]}, SHOW {value}")
    assert not differ, "\n".join(differ)
    # The workload is there, not only zeros.
    assert want[("pgbouncer_config_max_client_connections", frozenset())] == 321
    assert want[("pgbouncer_config_max_user_connections", frozenset())] == 7
    assert want[("pgbouncer_stats_totals_queries_pooled_total", frozenset({"database": WORK_DB}.items()))] == 12
    assert want[("pgbouncer_stats_totals_queries_pooled_total", frozenset({"database": "mtests_forced"}.items()))] == 4
    assert [v for (name, labels), v in want.items() if name == "pgbouncer_client_connections"
            and dict(labels)["application_name"] == APP and dict(labels)["database"] == WORK_DB] == [1]


def test_version_info_carries_the_text_of_show_version(start_pgbun, pg):
    bun, port = metrics_pgbun(start_pgbun, pg)
    with bun.connect(dbname="pgbun") as admin:
        (row,) = show(admin, "VERSION")
    assert scrape(port).series("pgbouncer_version_info") == [({"version": row["version"]}, 1)]


# ---------------------------------------------------------------- OpenMetrics

def test_openmetrics_when_asked_ends_with_eof_and_carries_the_same_values(start_pgbun, pg):
    bun, port = metrics_pgbun(start_pgbun, pg)
    run_queries(bun, 6)
    text = scrape(port)
    om = scrape(port, openmetrics=True)
    assert om.text.endswith("\n# EOF\n") and om.text.count("# EOF") == 1
    assert "# EOF" not in text.text
    # Counters: TYPE names the family, the sample carries _total.
    assert om.types["pgbouncer_stats_totals_queries_pooled"] == "counter"
    assert om.one("pgbouncer_stats_totals_queries_pooled_total", database=WORK_DB) == 6
    assert om.types["pgbun_query_duration_seconds"] == "histogram"
    histogram(om, "pgbun_query_duration_seconds", database=WORK_DB)
    # The same series in both, with the same values where nothing moved in between.
    moving = ("pgbun_metrics_", "pgbun_worker_busy_seconds")
    skip = lambda name: name.startswith(moving) or name.endswith("_created")  # noqa: E731
    t = {k: v for k, v in text.samples.items() if not skip(k[0])}
    o = {k: v for k, v in om.samples.items() if not skip(k[0])}
    assert set(t) == set(o), f"text only: {sorted(set(t) - set(o))[:10]}; OpenMetrics only: {sorted(set(o) - set(t))[:10]}"
    assert {k: v for k, v in t.items() if v != o[k]} == {}


def test_text_format_without_accept_and_for_other_accepts(start_pgbun, pg):
    bun, port = metrics_pgbun(start_pgbun, pg)
    for accept in (None, "text/plain", "*/*", "application/json", "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"):
        r = request(port, headers={"Accept": accept} if accept else {})
        assert r.status == 200, accept
        assert r.content_type.replace(" ", "") == TEXT_TYPE.replace(" ", ""), (accept, r.content_type)
        Exposition(r.text())


# ---------------------------------------------------------------- histograms

def test_histograms_are_cumulative_and_their_counts_match_the_stats(start_pgbun, pg):
    bun, port = metrics_pgbun(start_pgbun, pg)
    started = time.monotonic()
    w = bun.login(database=WORK_DB)
    for _ in range(20):
        w.query("SELECT 1")
    for _ in range(5):
        w.query("SELECT pg_sleep(0.03)")
    w.query("BEGIN")
    w.query("SELECT pg_sleep(0.06)")
    w.query("COMMIT")
    w.terminate()
    elapsed = time.monotonic() - started
    exp = scrape(port)

    queries = 20 + 5 + 3
    _, qsum, qcount = histogram(exp, "pgbun_query_duration_seconds", database=WORK_DB)
    assert qcount == queries == exp.one("pgbouncer_stats_totals_queries_pooled_total", database=WORK_DB)
    le = dict(histogram(exp, "pgbun_query_duration_seconds", database=WORK_DB)[0])
    # Six queries slept at least 30 ms: none of them fits under 25 ms.
    assert le[0.025] <= queries - 6
    assert 5 * 0.03 + 0.06 <= qsum <= elapsed
    assert qsum == pytest.approx(exp.one("pgbouncer_stats_totals_queries_duration_seconds_total",
                                         database=WORK_DB), rel=0.2, abs=0.01)

    xacts = 20 + 5 + 1
    tb, tsum, tcount = histogram(exp, "pgbun_transaction_duration_seconds", database=WORK_DB)
    assert tcount == xacts == exp.one("pgbouncer_stats_totals_sql_transactions_pooled_total", database=WORK_DB)
    assert dict(tb)[0.05] <= xacts - 1, "the 60 ms transaction is above 50 ms"
    assert 5 * 0.03 + 0.06 <= tsum <= elapsed

    _, wsum, wcount = histogram(exp, "pgbun_client_wait_seconds", database=WORK_DB)
    assert wcount == exp.one("pgbouncer_stats_totals_server_assignments_total", database=WORK_DB) == xacts
    assert 0 <= wsum <= elapsed
    # Every database has its three histograms, the console's included.
    for family in ("pgbun_query_duration_seconds", "pgbun_transaction_duration_seconds", "pgbun_client_wait_seconds"):
        for ls, _ in exp.series(family + "_count"):
            histogram(exp, family, **ls)


def test_a_waiting_client_shows_in_the_pool_gauges_and_the_wait_histogram(start_pgbun, pg):
    bun, port = metrics_pgbun(start_pgbun, pg, config={"default_pool_size": 1})
    holder = bun.login(database=WORK_DB)
    holder.query("BEGIN")
    holder.query("SELECT 1")
    waiter = bun.login(database=WORK_DB)
    t, result = in_thread(lambda: waiter.query("SELECT 2"))
    pool = {"database": WORK_DB, "user": "postgres"}
    wait_until(lambda: scrape(port).one("pgbouncer_pools_client_waiting_connections", **pool) == 1,
               timeout=10, what="the waiting client in a scrape")
    time.sleep(1.2)
    exp = scrape(port)
    assert exp.one("pgbouncer_pools_client_waiting_connections", **pool) == 1
    assert exp.one("pgbouncer_pools_client_maxwait_seconds", **pool) >= 1
    assert exp.one("pgbouncer_pools_client_active_connections", **pool) == 1
    assert exp.one("pgbouncer_pools_server_active_connections", **pool) == 1
    holder.query("COMMIT")
    t.join(10)
    assert result.get("value") == [["2"]], result
    holder.terminate()
    waiter.terminate()

    exp = scrape(port)
    buckets, wsum, wcount = histogram(exp, "pgbun_client_wait_seconds", database=WORK_DB)
    # Two transactions, each one assignment: the holder's, and the waiter's that waited.
    assert wcount == 2 == exp.one("pgbouncer_stats_totals_server_assignments_total", database=WORK_DB)
    assert dict(buckets)[1.0] == wcount - 1, f"one assignment waited more than 1.2 s: {buckets}"
    assert wsum >= 1.2
    assert exp.one("pgbouncer_stats_totals_client_wait_seconds_total", database=WORK_DB) >= 1.2
    assert exp.one("pgbouncer_pools_client_waiting_connections", **pool) == 0
    assert exp.one("pgbouncer_pools_client_maxwait_seconds", **pool) == 0


# ---------------------------------------------------------------- pgbun's own counters

def test_scrape_counters_count_scrapes(start_pgbun, pg):
    bun, port = metrics_pgbun(start_pgbun, pg)
    first = scrape(port)
    second = scrape(port)
    assert second.one("pgbun_metrics_scrapes_total") == first.one("pgbun_metrics_scrapes_total") + 1
    assert 0 <= second.one("pgbun_metrics_scrape_duration_seconds") < 60
    # A scrape reads every part before it writes this gauge: its own time with the workers stopped, part
    # of the time the client waited for it.
    t0 = time.monotonic()
    third = scrape(port)
    waited = time.monotonic() - t0
    for e in (first, second, third):
        assert 0 < e.one("pgbun_metrics_scrape_stopped_seconds") < 60
    assert third.one("pgbun_metrics_scrape_stopped_seconds") <= waited


def test_worker_busy_seconds_grow_with_work_and_never_outrun_the_clock(start_pgbun, pg):
    bun, port = metrics_pgbun(start_pgbun, pg, config={"workers": 2})
    t0, a = time.monotonic(), scrape(port).by("pgbun_worker_busy_seconds_total", "worker")
    conns = [bun.login(database=WORK_DB) for _ in range(4)]
    for _ in range(200):
        for w in conns:
            w.query("SELECT 1")
    for w in conns:
        w.terminate()
    b, t1 = scrape(port).by("pgbun_worker_busy_seconds_total", "worker"), time.monotonic()
    assert set(a) == set(b) == {("0",), ("1",)}
    assert sum(b.values()) > sum(a.values())
    for k in a:
        # CPU time of one thread: at most the wall time between the two scrapes.
        assert 0 <= b[k] - a[k] <= (t1 - t0) * 1.05 + 0.02, (k, a[k], b[k], t1 - t0)


def test_reuse_and_server_connects_per_pool_in_session_mode(start_pgbun, pg):
    # One server for the pool: with several workers too, every session gets the same one.
    bun, port = metrics_pgbun(start_pgbun, pg, config={"pool_mode": "session", "default_pool_size": 1})
    for _ in range(4):
        run_queries(bun, 2)
    exp = scrape(port)
    pool = {"database": WORK_DB, "user": "postgres"}
    assert exp.one("pgbun_pool_server_assignments_total", **pool) == 4
    assert exp.one("pgbun_pool_server_assignments_reused_total", **pool) == 3
    assert exp.one("pgbun_pool_reuse_ratio", **pool) == pytest.approx(0.75)
    assert exp.one("pgbun_server_connects_total", **pool) == 1
    assert exp.one("pgbun_pool_max_server_connections_used", **pool) == 1


def test_reuse_ratio_is_a_number_in_0_1_for_every_pool(start_pgbun, pg):
    bun, port = metrics_pgbun(start_pgbun, pg)
    run_queries(bun, 3)
    idle = bun.login(database="pgbun_test")  # a pool with nothing run in it yet
    with bun.connect(dbname="pgbun"):        # the console's pool
        exp = scrape(port)
    idle.terminate()
    ratios = exp.by("pgbun_pool_reuse_ratio", "database", "user")
    assert ("pgbun_test", "postgres") in ratios and (WORK_DB, "postgres") in ratios
    for pool, ratio in ratios.items():
        assert math.isfinite(ratio) and 0 <= ratio <= 1, (pool, ratio)
        assigned = exp.one("pgbun_pool_server_assignments_total", database=pool[0], user=pool[1])
        if assigned == 0:
            assert ratio == 0, pool


def test_prepared_statement_cache_hits_and_misses(start_pgbun, pg):
    """Two clients prepare the same statement on the pool's one server: pgbun
    parses it there once (a miss); every other Parse or Bind of it finds it
    there (a hit). One worker: statements are shared by the clients of a
    worker, so with two the second client's worker parses it again."""
    bun, port = metrics_pgbun(start_pgbun, pg, config={"max_prepared_statements": 100, "default_pool_size": 1,
                                                       "workers": 1})
    with bun.connect(dbname=WORK_DB, prepare_threshold=0) as a, \
            bun.connect(dbname=WORK_DB, prepare_threshold=0) as b:
        for conn in (a, b):
            for i in range(3):
                assert conn.execute("SELECT %s::int + 1", (i,)).fetchone() == (i + 1,)
    exp = scrape(port)
    pool = {"database": WORK_DB, "user": "postgres"}
    client_parses = exp.one("pgbouncer_stats_totals_client_parses_total", database=WORK_DB)
    server_parses = exp.one("pgbouncer_stats_totals_server_parses_total", database=WORK_DB)
    binds = exp.one("pgbouncer_stats_totals_binds_total", database=WORK_DB)
    hits = exp.one("pgbun_prepared_statement_cache_hits_total", **pool)
    misses = exp.one("pgbun_prepared_statement_cache_misses_total", **pool)
    assert (client_parses, server_parses, binds) == (2, 1, 6)
    assert misses == server_parses == 1
    assert hits + misses == client_parses + binds


def test_auth_query_lookups_are_counted(start_pgbun, pg):
    pg.sql("DROP ROLE IF EXISTS mtests_aq", dbname="postgres")
    pg.sql("CREATE ROLE mtests_aq LOGIN PASSWORD 'aq pass'", dbname="postgres")
    bun = None
    try:
        bun, port = metrics_pgbun(start_pgbun, pg, config={"auth_type": "scram-sha-256", "auth_user": "postgres"})
        assert scrape(port).one("pgbun_auth_query_lookups_total") == 0
        w = bun.login(user="mtests_aq", database=WORK_DB, password="aq pass")
        assert w.scalar("SELECT current_user") == "mtests_aq"
        w.terminate()
        exp = scrape(port)
        assert exp.one("pgbun_auth_query_lookups_total") >= 1
        assert exp.one("pgbun_auth_query_lookup_failures_total") == 0
    finally:
        if bun is not None:
            bun.stop()  # its servers log in as mtests_aq
        pg.sql("DROP ROLE IF EXISTS mtests_aq", dbname="postgres")


def test_auth_query_lookup_failures_are_counted(start_pgbun, pg):
    bun, port = metrics_pgbun(start_pgbun, pg, config={
        "auth_type": "scram-sha-256", "auth_user": "postgres",
        "auth_query": "SELECT usename, passwd FROM mtests_no_such_table WHERE usename = $1"})
    with pytest.raises(pgwire.PgError):
        bun.login(user="mtests_nobody", database=WORK_DB, password="x")
    exp = scrape(port)
    assert exp.one("pgbun_auth_query_lookups_total") >= 1
    assert exp.one("pgbun_auth_query_lookup_failures_total") >= 1


def test_client_tls_handshakes_and_failures_are_counted(start_pgbun, pg, tls_certs):
    bun, port = metrics_pgbun(start_pgbun, pg, config={
        "client_tls_sslmode": "allow", "client_tls_key_file": str(tls_certs.server_key),
        "client_tls_cert_file": str(tls_certs.server_crt)})
    with bun.connect(dbname=WORK_DB, sslmode="require") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    # A client that asks for TLS and then sends no handshake at all.
    with socket.create_connection(("127.0.0.1", bun.port), timeout=10) as s:
        s.sendall(pgwire.ssl_request())
        assert s.recv(1) == b"S"
        s.sendall(b"\x16\x03\x01\x00\x05garbage that is no ClientHello" * 4)
        s.settimeout(10)
        try:
            while s.recv(4096):
                pass
        except OSError:
            pass
    exp = wait_until(lambda: (lambda e: e if e.one("pgbun_tls_handshake_failures_total", side="client") >= 1
                              else None)(scrape(port)), timeout=10, what="the failed handshake counted")
    assert exp.one("pgbun_tls_handshakes_total", side="client") == 1
    assert exp.one("pgbun_tls_handshake_failures_total", side="client") == 1
    assert exp.one("pgbun_tls_handshakes_total", side="server") == 0


# ---------------------------------------------------------------- HTTP: auth, paths, methods, sockets

AUTH_USERS = {
    "mtests_plain": "plain pass",
    "mtests_md5": "md5 pass",
    "mtests_scram": "scram pass",
}


def test_basic_auth_against_auth_file_secrets(start_pgbun, pg):
    secrets = {**default_auth_file(),
               "mtests_plain": AUTH_USERS["mtests_plain"],
               "mtests_md5": pgwire.md5_secret("mtests_md5", AUTH_USERS["mtests_md5"]),
               "mtests_scram": pgwire.scram_secret(AUTH_USERS["mtests_scram"]),
               "mtests_other": "other pass"}
    bun, port = metrics_pgbun(start_pgbun, pg, auth_file=secrets, config={
        "metrics_auth_users": "mtests_plain,mtests_md5, mtests_scram,mtests_absent"})

    for user, password in AUTH_USERS.items():
        r = request(port, headers=basic(user, password))
        assert r.status == 200, (user, r.status, r.body[:200])
        Exposition(r.text())

    def refused(headers, why):
        r = request(port, headers=headers)
        assert r.status == 401, (why, r.status)
        # RFC 7617 allows a charset parameter after the realm.
        assert re.fullmatch(r'Basic realm="pgbun"(, charset="UTF-8")?', r.headers.get("www-authenticate", "")), \
            (why, r.headers)
        assert b"pgbouncer_up" not in r.body, why

    refused({}, "no Authorization header")
    for user in AUTH_USERS:
        refused(basic(user, "wrong"), f"{user} with a wrong password")
        refused(basic(user, ""), f"{user} with an empty password")
    refused(basic("mtests_other", "other pass"), "a user of auth_file not in metrics_auth_users")
    refused(basic("mtests_absent", "anything"), "a user of metrics_auth_users not in auth_file")
    refused(basic("mtests_nobody", "x"), "a user nobody knows")
    # An md5 secret is not a password: knowing the hash gets nothing.
    refused(basic("mtests_md5", pgwire.md5_secret("mtests_md5", AUTH_USERS["mtests_md5"])), "the md5 hash")
    refused(basic("mtests_scram", secrets["mtests_scram"]), "the SCRAM secret")
    refused({"Authorization": "Bearer abc"}, "another scheme")
    refused({"Authorization": "Basic !!!not base64"}, "bad base64")
    refused({"Authorization": "Basic " + base64.b64encode(b"no colon").decode()}, "no colon")
    refused({"Authorization": "Basic"}, "no credentials")
    # The right password still works after all that.
    assert request(port, headers=basic("mtests_plain", AUTH_USERS["mtests_plain"])).status == 200


def test_a_refused_request_builds_no_scrape(start_pgbun, pg):
    """A 401 costs pgbun no scrape: with metrics_auth_users set, whoever
    lacks the password cannot make it read every pool."""
    users = {**default_auth_file(), "mtests_mon": "mon pass"}
    bun, port = metrics_pgbun(start_pgbun, pg, config={"metrics_auth_users": "mtests_mon"}, auth_file=users)
    for _ in range(5):
        assert request(port).status == 401
        assert request(port, headers=basic("mtests_mon", "wrong")).status == 401
    assert request(port, path="/nope", headers=basic("mtests_mon", "mon pass")).status == 404
    exp = scrape(port, headers=basic("mtests_mon", "mon pass"))
    assert exp.one("pgbun_metrics_scrapes_total") == 1


def test_unix_socket_endpoint(start_pgbun, pg, pgbun_workdir):
    path = str(pgbun_workdir / "metrics.sock")
    bun, port = metrics_pgbun(start_pgbun, pg, config={"metrics_listen_addr": path})
    wait_until(lambda: os.path.exists(path), timeout=10, what="the metrics socket")
    run_queries(bun, 3)
    exp = scrape(path)
    assert exp.one("pgbouncer_stats_totals_queries_pooled_total", database=WORK_DB) == 3
    assert request(path, path="/nope").status == 404
    # Only the socket: nothing on the TCP port.
    assert not port_accepts("127.0.0.1", port)


def test_tcp_and_unix_socket_together(start_pgbun, pg, pgbun_workdir):
    path = str(pgbun_workdir / "metrics2.sock")
    bun, port = metrics_pgbun(start_pgbun, pg, config={"metrics_listen_addr": f"127.0.0.1,{path}"})
    wait_until(lambda: os.path.exists(path), timeout=10, what="the metrics socket")
    assert scrape(path).one("pgbouncer_up") == 1
    assert scrape(port).one("pgbouncer_up") == 1


def test_star_listens_on_ipv4_and_ipv6(start_pgbun, pg):
    if not socket.has_ipv6 or not _ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    bun, port = metrics_pgbun(start_pgbun, pg, config={"metrics_listen_addr": "*"})
    assert scrape(("127.0.0.1", port)).one("pgbouncer_up") == 1
    assert scrape(("::1", port)).one("pgbouncer_up") == 1


def _ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_other_paths_are_404_and_other_methods_405(start_pgbun, pg):
    bun, port = metrics_pgbun(start_pgbun, pg)
    for path in ("/", "/metric", "/metrics/", "/metricsx", "/favicon.ico", "/api/v1/query"):
        assert request(port, path=path).status == 404, path
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"):
        r = request(port, method=method)
        assert r.status == 405, (method, r.status)
        assert r.headers.get("allow", "").replace(" ", "") in ("GET,HEAD", "HEAD,GET"), (method, r.headers)
    head = request(port, method="HEAD")
    assert head.status == 200 and head.body == b""
    assert head.content_type.replace(" ", "") == TEXT_TYPE.replace(" ", "")
    # A query string is not part of the path.
    assert request(port, path="/metrics?x=1").status == 200
    assert request(port).status == 200


def test_other_methods_with_a_body_are_405_too(start_pgbun, pg):
    bun, port = metrics_pgbun(start_pgbun, pg)
    for method in ("POST", "PUT", "PATCH"):
        r = request(port, method=method, body=b"x")
        assert r.status == 405, (method, r.status)


def test_metrics_off_by_default(start_pgbun, pg):
    bun = start_pgbun(config={"admin_users": "postgres"})
    with bun.connect(dbname="pgbun") as admin:
        cfg = {r["key"]: r["value"] for r in show(admin, "CONFIG")}
    assert cfg.get("metrics_listen_port") == "0", cfg.get("metrics_listen_port")
    assert cfg.get("metrics_listen_addr") == "127.0.0.1"
    assert cfg.get("metrics_auth_users") == ""


@pytest.mark.timeout(120)
def test_reload_turns_the_endpoint_on_moves_it_and_turns_it_off(start_pgbun, pg):
    first, second = free_port(), free_port()
    bun, _ = metrics_pgbun(start_pgbun, pg, config={"metrics_listen_port": 0})
    assert not endpoint_answers(first) and not endpoint_answers(second)

    rewrite_config(bun, metrics_listen_port=first)
    reload(bun)
    wait_until(lambda: endpoint_answers(first), timeout=10, what="the endpoint on after RELOAD")
    run_queries(bun, 2)
    assert scrape(first).one("pgbouncer_stats_totals_queries_pooled_total", database=WORK_DB) == 2

    rewrite_config(bun, metrics_listen_port=second)
    reload(bun)
    wait_until(lambda: endpoint_answers(second), timeout=10, what="the endpoint on its new port")
    wait_until(lambda: not port_accepts("127.0.0.1", first), timeout=10, what="the old port closed")
    # The counters went on: a RELOAD is no restart.
    assert scrape(second).one("pgbouncer_stats_totals_queries_pooled_total", database=WORK_DB) == 2

    rewrite_config(bun, metrics_listen_port=0)
    reload(bun)
    wait_until(lambda: not port_accepts("127.0.0.1", second), timeout=10, what="the endpoint off")
    # SQL goes on all along.
    run_queries(bun, 1)
    assert bun.alive()


@pytest.mark.timeout(120)
def test_reload_turns_basic_auth_on(start_pgbun, pg):
    users = {**default_auth_file(), "mtests_mon": "mon pass"}
    bun, port = metrics_pgbun(start_pgbun, pg, auth_file=users)
    assert request(port).status == 200
    rewrite_config(bun, metrics_auth_users="mtests_mon")
    reload(bun)
    wait_until(lambda: request(port).status == 401, timeout=10, what="auth required after RELOAD")
    assert request(port, headers=basic("mtests_mon", "mon pass")).status == 200


# ---------------------------------------------------------------- 1,000 pools under load

TENANTS = 1000


def make_pools(bun, pg, names, window=8):
    """One login and one query to each alias creates its pool; the alias's
    server_lifetime = 0 closes the server once it has served (and
    server_idle_timeout = 1 any left idle), and logins wait while PostgreSQL
    is busy, so that 1,000 pools never need 1,000 server connections."""
    def login(name):
        w = pgwire.Wire(bun.host, bun.port, timeout=30)
        try:
            w.login("postgres", name)
            w.query("SELECT 1")
        finally:
            w.terminate()

    with concurrent.futures.ThreadPoolExecutor(window) as pool:
        for i in range(0, len(names), 50):
            list(pool.map(login, names[i:i + 50]))
            wait_until(lambda: server_backends(pg) < 40, timeout=60, what="PostgreSQL's backends to go")


@pytest.mark.timeout(900)
def test_scrapes_with_1000_pools_while_pgbench_runs(start_pgbun, pg):
    pg.sql("DROP DATABASE IF EXISTS mtests_bench", dbname="postgres")
    pg.sql("CREATE DATABASE mtests_bench", dbname="postgres")
    try:
        run(["pgbench", "-i", "-q", "-s", "1", "-h", pg.sockdir, "-p", pg.port, "-U", "postgres", "mtests_bench"],
            timeout=120)
        tenants = [f"mtests_t{i:04d}" for i in range(TENANTS)]
        databases = {t: pg.entry(pool_size=1, server_lifetime=0) for t in tenants}
        databases["mtests_bench"] = pg.entry(dbname="mtests_bench", pool_size=8)
        bun, port = metrics_pgbun(start_pgbun, pg, databases=databases,
                                  config={"max_client_conn": 5000, "server_idle_timeout": 1,
                                          "log_connections": 0, "log_disconnections": 0})
        make_pools(bun, pg, tenants)
        exp = scrape(port, timeout=60)
        assert exp.one("pgbouncer_pools") >= TENANTS
        assert {ls["name"] for ls, _ in exp.series("pgbouncer_databases_pool_size")} >= set(tenants)
        assert {ls["database"] for ls, _ in exp.series("pgbouncer_pools_client_active_connections")} >= set(tenants)

        duration = 20
        bench = subprocess.Popen(
            ["pgbench", "-n", "-c", "8", "-j", "2", "-T", str(duration), "-M", "simple", "-h", "127.0.0.1",
             "-p", str(bun.port), "-U", "postgres", "mtests_bench"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, PGCONNECT_TIMEOUT="10"))
        times, sizes, built, errors = {"text": [], "openmetrics": []}, [], [], []
        try:
            i = 0
            while bench.poll() is None:
                fmt = "openmetrics" if i % 2 else "text"
                i += 1
                t0 = time.monotonic()
                try:
                    r = request(port, timeout=60, headers={"Accept": PROMETHEUS_ACCEPT} if fmt == "openmetrics" else {})
                    fetched = time.monotonic() - t0  # the HTTP exchange only, not our parsing
                    assert r.status == 200, r.status
                    e = Exposition(r.text(), openmetrics=fmt == "openmetrics")
                except Exception as exc:  # noqa: BLE001 - collected, reported below
                    errors.append(repr(exc)[:500])
                    continue
                times[fmt].append(fetched)
                sizes.append(len(r.body))
                built.append(e.one("pgbun_metrics_scrape_duration_seconds"))
                names = {ls["name"] for ls, _ in e.series("pgbouncer_databases_pool_size")}
                if not names >= set(tenants) or len(e.series("pgbun_pool_reuse_ratio")) < TENANTS:
                    errors.append(f"scrape {i}: {len(names)} databases, "
                                  f"{len(e.series('pgbun_pool_reuse_ratio'))} pools")
            out, err = bench.communicate(timeout=120)
        finally:
            if bench.poll() is None:
                bench.kill()
                bench.wait(timeout=10)
        assert bench.returncode == 0, f"pgbench exited {bench.returncode}:\n{out}\n{err}"
        assert "number of failed transactions: 0 " in out or "failed" not in out, out
        assert not errors, errors[:5]
        assert len(times["text"]) >= 3, times
        final = scrape(port, timeout=60)
        done = int(re.search(r"number of transactions actually processed: (\d+)", out).group(1))
        assert final.one("pgbouncer_stats_totals_sql_transactions_pooled_total", database="mtests_bench") >= done
        all_times = times["text"] + times["openmetrics"]
        print(f"\n1,000 pools, pgbench -c 8 for {duration} s: {len(all_times)} scrapes, "
              f"{statistics.median(sizes) / 1e6:.1f} MB each, {len(final.samples)} samples")
        for fmt, ts in times.items():
            if ts:
                print(f"  {fmt}: median {statistics.median(ts) * 1000:.0f} ms, max {max(ts) * 1000:.0f} ms "
                      f"(request to last byte, {len(ts)} scrapes)")
        print(f"  pgbun_metrics_scrape_duration_seconds: median {statistics.median(built) * 1000:.0f} ms, "
              f"max {max(built) * 1000:.0f} ms")
        print("  pgbench: " + " ".join(line.strip() for line in out.splitlines() if line.startswith(("tps", "latency"))))
    finally:
        # pgbun (stopped at teardown) may still hold servers: force them off.
        pg.sql("DROP DATABASE IF EXISTS mtests_bench WITH (FORCE)", dbname="postgres")


# ---------------------------------------------------------------- hostile HTTP

def still_working(bun, port):
    """The endpoint answers a whole scrape and SQL goes through pgbun."""
    scrape(port, timeout=30)
    w = bun.login(database=WORK_DB)
    assert w.scalar("SELECT 41 + 1") == "42"
    w.terminate()
    assert bun.alive()


def test_huge_header_is_refused_and_nothing_else_suffers(start_pgbun, pg):
    bun, port = metrics_pgbun(start_pgbun, pg)
    requests = {
        "a 64 kB header": b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n",
        "an 8 MB header": b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (8 << 20) + b"\r\n\r\n",
        "200,000 headers": b"GET /metrics HTTP/1.1\r\n" + b"X-A: b\r\n" * 200000 + b"\r\n",
        "a 4 MB request line": b"GET /" + b"m" * (4 << 20) + b" HTTP/1.1\r\n\r\n",
    }
    for what, data in requests.items():
        reply, closed = raw_exchange(port, data, timeout=30)
        status = status_of(reply)
        assert status is None or 400 <= status < 500, (what, reply[:300])
        assert closed, f"{what}: pgbun kept the connection open"
        still_working(bun, port)


@pytest.mark.timeout(120)
def test_slowloris_clients_do_not_hold_up_scrapes_or_queries(start_pgbun, pg):
    bun, port = metrics_pgbun(start_pgbun, pg)
    slow = []
    try:
        for _ in range(50):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            slow.append(s)
        silent = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(50)]
        slow += silent
        deadline = time.monotonic() + 8
        scrapes = 0
        while time.monotonic() < deadline:
            for s in slow[:50]:
                try:
                    s.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    pass  # pgbun gave up on it: fine
            still_working(bun, port)
            scrapes += 1
            time.sleep(0.5)
        assert scrapes >= 3
    finally:
        for s in slow:
            s.close()
    still_working(bun, port)


def closed_within(s, seconds, trickle=None):
    """Seconds until the peer closed s (None if it did not within seconds);
    every second, trickle is sent if given."""
    t0 = time.monotonic()
    s.settimeout(1)
    while time.monotonic() - t0 < seconds:
        try:
            if trickle is not None:
                s.sendall(trickle)
            if s.recv(65536) == b"":
                return time.monotonic() - t0
        except socket.timeout:
            pass
        except OSError:
            return time.monotonic() - t0
    return None


def test_a_silent_connection_is_closed_after_the_request_timeout(start_pgbun, pg):
    bun, port = metrics_pgbun(start_pgbun, pg)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        assert closed_within(s, 40) is not None, "a connection that never sends is kept for ever"
    still_working(bun, port)


@pytest.mark.timeout(120)
def test_a_request_trickled_for_ever_is_closed(start_pgbun, pg):
    bun, port = metrics_pgbun(start_pgbun, pg)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        assert closed_within(s, 40, trickle=b"X-Slow: 1\r\n") is not None, \
            "a request trickled one header a second is kept open for ever"


@pytest.mark.timeout(120)
def test_a_flood_of_unfinished_requests_holds_at_most_sixteen_connections(start_pgbun, pg):
    """Beyond 16 connections with a request not yet complete the oldest are shut down, so a client that
    opens many and never finishes a request cannot use up pgbun's descriptors; a scraper still gets through."""
    bun, port = metrics_pgbun(start_pgbun, pg)
    socks = []
    try:
        for _ in range(40):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)

        def open_ones():
            alive = 0
            for s in socks:
                s.settimeout(0)
                try:
                    alive += s.recv(1, socket.MSG_PEEK) != b""
                except BlockingIOError:
                    alive += 1
                except OSError:
                    pass
            return alive

        wait_until(lambda: open_ones() <= 16, 15, what="at most 16 unfinished requests left open")
        assert open_ones() >= 8, "the limit shut down more than the connections past it"
        still_working(bun, port)
    finally:
        for s in socks:
            s.close()


def test_garbage_bytes_get_an_error_or_a_close(start_pgbun, pg):
    bun, port = metrics_pgbun(start_pgbun, pg)
    rnd = random.Random(20240607)
    # Not a request for /metrics at all: an error status or a close, never the metrics.
    refused = [
        bytes(rnd.randrange(256) for _ in range(4096)),
        b"\x00" * 1000,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(500),  # a TLS ClientHello's start
        pgwire.startup_packet({"user": "postgres", "database": WORK_DB}),
        b"GET\r\n\r\n",
        b"GET /metrics\r\n\r\n",  # HTTP/0.9
        b"GET /metrics HTTP/9.9\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nAuthorization: Basic " + b"A" * 100000 + b"\r\n\r\n",
        b"\r\n" * 10000,
        b"GET /%00%ff/../../etc/passwd HTTP/1.1\r\n\r\n",
        b"GET /metrics" + b"\x00" * 20 + b" HTTP/1.1\r\n\r\n",
    ]
    # Broken in a way a lenient server may overlook: any HTTP answer, or a close.
    lenient = [
        b"GET /metrics HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /metrics HTTP/1.1\r\n: no name\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost x\r\n\r\n",
        b"GET /metrics HTTP/1.1\n\n",
        b"GET /metrics HTTP/1.1\r\nX: \x00\xff\r\n\r\n",
    ]
    for data in refused + lenient:
        reply, closed = raw_exchange(port, data)
        status = status_of(reply)
        assert reply == b"" or status is not None, f"not HTTP: {data[:60]!r} -> {reply[:200]!r}"
        if data in refused:
            assert status is None or status >= 400, f"{data[:60]!r} -> {reply[:200]!r}"
        assert closed, f"{data[:60]!r}: pgbun kept the connection open after our side closed"
    still_working(bun, port)


@pytest.mark.timeout(180)
def test_many_connections_at_once(start_pgbun, pg):
    bun, port = metrics_pgbun(start_pgbun, pg)
    idle = []
    try:
        for _ in range(300):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))

        def scrapes(n):
            for i in range(3):
                e = scrape(port, openmetrics=bool((n + i) % 2), timeout=60)
                assert e.one("pgbouncer_up") == 1
            return True

        sql_done = threading.Event()

        def sql():
            while not sql_done.is_set():
                w = bun.login(database=WORK_DB)
                assert w.scalar("SELECT 1") == "1"
                w.terminate()

        t, result = in_thread(sql)
        with concurrent.futures.ThreadPoolExecutor(40) as ex:
            assert all(ex.map(scrapes, range(40)))
        sql_done.set()
        t.join(30)
        assert "error" not in result, result
    finally:
        for s in idle:
            s.close()
    still_working(bun, port)
