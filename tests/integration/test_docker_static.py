"""The container stack (docker-compose.yml, docker-compose.dev.yml,
docker/Dockerfile, docker/Dockerfile.test, docker/dev-watch, .dockerignore,
.env.example, docker/prometheus.yml, docker/grafana-pgbun-dashboard.json),
checked without a Docker engine, in seconds (tests/containers builds and
runs the stack on one):

- Debian's docker-compose 1.29 validates the compose files against the
  Compose Specification and resolves them; the resolved stack is checked
  (services, network, volume, health conditions, ports, profiles, mounts), and
  so are the variables against .env.example;
- the `monitoring` profile adds Prometheus and nothing else; promtool checks
  its config, which scrapes the port pgbun's metrics are on;
- the Grafana dashboard is JSON Grafana 9+ imports, its data source is the
  variable ${DS_PROMETHEUS}, its queries are PromQL (promtool parses them) and
  name only metrics pgbun serves (metrics_names.py);
- the Dockerfiles are read: their build step is scripts/build, their runtime
  stages install a package for every library the binaries load;
- .dockerignore is applied to the tree as Docker applies it.

tests/containers builds the images and runs the stack for real on a Docker
engine; these checks are the fast ones that need none.
"""

import json
import os
import re
import shlex
import shutil
import tempfile
from pathlib import Path

import pytest

from conftest import SRCDIR, run
from metrics_names import sample_names

COMPOSE = SRCDIR / "docker-compose.yml"
COMPOSE_DEV = SRCDIR / "docker-compose.dev.yml"
ENV_EXAMPLE = SRCDIR / ".env.example"
DOCKERIGNORE = SRCDIR / ".dockerignore"
DOCKERFILE = SRCDIR / "docker" / "Dockerfile"
DOCKERFILE_TEST = SRCDIR / "docker" / "Dockerfile.test"
PROMETHEUS_YML = SRCDIR / "docker" / "prometheus.yml"
DASHBOARD = SRCDIR / "docker" / "grafana-pgbun-dashboard.json"
PROMTOOL = "/usr/bin/promtool"

VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


# ---------------------------------------------------------------- compose

def compose_vars(path):
    """{name: default or None} for every ${NAME...} in a compose file."""
    found = {}
    for m in VAR_RE.finditer(Path(path).read_text()):
        name = m.group(1) or m.group(4)
        default = m.group(3) if m.group(2) in (":-", "-") else None
        found.setdefault(name, default)
    return found


def env_example():
    """{name: value} of .env.example, and the names without a comment above them."""
    values, uncommented = {}, []
    previous = ""
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if m:
            values[m.group(1)] = m.group(2)
            if not previous.startswith("#"):
                uncommented.append(m.group(1))
        previous = line.strip()
    return values, uncommented


def compose_env(extra=None):
    """The environment without any variable the compose files read."""
    names = set(compose_vars(COMPOSE)) | set(compose_vars(COMPOSE_DEV))
    env = {k: v for k, v in os.environ.items()
           if k not in names and not k.startswith(("COMPOSE_", "DOCKER_"))}
    env.update(extra or {})
    return env


def docker_compose(args, files=(COMPOSE,), env_file=None, env=None, check=True):
    """docker-compose with the given files; .env is never read (an empty
    --env-file stands in unless one is given)."""
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is not installed: scripts/deps installs it (Debian's 1.29)")
    with tempfile.NamedTemporaryFile("w", prefix="pgbun-env-", suffix=".env") as empty:
        cmd = [exe, "--env-file", str(env_file or empty.name)]
        for f in files:
            cmd += ["-f", str(f)]
        return run(cmd + list(args), timeout=60, check=check, env=compose_env(env), cwd=SRCDIR)


def resolved(files=(COMPOSE,), env_file=None, env=None):
    """The stack as docker-compose resolves it, as a dict."""
    import yaml  # python3-yaml: a dependency of docker-compose
    return yaml.safe_load(docker_compose(["config"], files, env_file, env).stdout)


def published_ports(service, with_ip=False):
    """{(published, target)} of a service's ports, or {(host ip, published, target)}."""
    ports = set()
    for p in service.get("ports", []):
        if isinstance(p, dict):
            ip, published, target = p.get("host_ip"), p["published"], p["target"]
        else:
            parts = str(p).split("/")[0].split(":")
            ip = parts[-3] if len(parts) > 2 else None
            published, target = parts[-2:]
        ports.add((ip, int(published), int(target)) if with_ip else (int(published), int(target)))
    return ports


def mounts(service):
    """{target: (source, read_only)} of a service's volumes."""
    out = {}
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            out[v["target"]] = (v.get("source"), bool(v.get("read_only")))
        else:
            parts = v.split(":")
            out[parts[1]] = (parts[0], len(parts) > 2 and "ro" in parts[2].split(","))
    return out


def test_compose_files_validate():
    docker_compose(["config", "-q"])
    docker_compose(["config", "-q"], files=(COMPOSE, COMPOSE_DEV))
    docker_compose(["config", "-q"], env_file=ENV_EXAMPLE)
    docker_compose(["config", "-q"], files=(COMPOSE, COMPOSE_DEV), env_file=ENV_EXAMPLE)
    assert not re.search(r"^version\s*:", COMPOSE.read_text(), re.M), "Compose Specification: no version key"
    assert not re.search(r"^version\s*:", COMPOSE_DEV.read_text(), re.M)


def test_compose_stack():
    stack = resolved()
    services = stack["services"]
    assert set(services) == {"postgres", "pgbun", "test-runner", "prometheus"}
    assert "pgbun_net" in stack["networks"]
    assert "pgbun_data" in stack["volumes"]
    for name, service in services.items():
        assert list(service["networks"]) == ["pgbun_net"], name

    pg = services["postgres"]
    assert pg["image"] == "postgres:16-alpine"
    assert "pg_isready" in pg["healthcheck"]["test"]
    pg_mounts = mounts(pg)
    assert pg_mounts["/var/lib/postgresql/data"][0] == "pgbun_data"
    assert Path(pg_mounts["/docker-entrypoint-initdb.d"][0]) == SRCDIR / "docker-entrypoint-initdb.d"
    assert "POSTGRES_PASSWORD" in pg["environment"]

    bun = services["pgbun"]
    assert bun["build"]["dockerfile"] == "docker/Dockerfile"
    assert Path(bun["build"]["context"]) == SRCDIR
    assert "target" not in bun["build"], "the default build is the runtime image"
    assert bun["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert bun["mem_limit"] == "256m"
    # Published on the host's loopback only, by default.
    assert published_ports(bun, with_ip=True) == {("127.0.0.1", 6432, 6432)}
    assert bun["read_only"] is True
    assert bun["build"]["args"] == {"BASE_IMAGE": "debian:12-slim"}
    assert services["test-runner"]["build"]["args"] == {"BASE_IMAGE": "debian:12-slim"}
    assert bun["ulimits"]["nofile"] >= 2 * 1000 + 100
    env = bun["environment"]
    assert env["SERVER_HOST"] == "postgres" and env["SERVER_PORT"] == "5432"
    assert env["LISTEN_ADDR"] == "*" and env["LISTEN_PORT"] == "6432"
    assert env["POOL_MODE"] == "transaction"
    assert env["DEFAULT_POOL_SIZE"] == "20"
    assert int(env["MAX_CLIENT_CONN"]) > 100
    assert env["PGBUN_AUTH_TYPE"] == "scram-sha-256"
    assert env["PGBUN_UNIX_SOCKET_DIR"] == ""
    assert "pgbun_user" in env["PGBUN_ADMIN_USERS"].split(",")
    for key in ("PGBUN_SERVER_IDLE_TIMEOUT", "PGBUN_CLIENT_IDLE_TIMEOUT", "PGBUN_QUERY_WAIT_TIMEOUT"):
        assert env[key].isdigit(), key
    # The auth file is mounted where pgbun is told to read it, and knows the
    # role init.sql creates, with its password.
    auth_source, read_only = mounts(bun)[env["PGBUN_AUTH_FILE"]]
    assert read_only
    assert '"pgbun_user" "pgbun_pass"' in Path(auth_source).read_text()
    init_sql = (SRCDIR / "docker-entrypoint-initdb.d" / "init.sql").read_text()
    assert "CREATE ROLE pgbun_user LOGIN PASSWORD ''pgbun_pass''" in init_sql
    assert "CREATE DATABASE pgbun_test" in init_sql
    assert "healthcheck" in bun
    # The metrics endpoint listens for the stack's network, and is not published on the host.
    assert env["PGBUN_METRICS_LISTEN_ADDR"] in ("0.0.0.0", "*")
    metrics_port = int(env["PGBUN_METRICS_LISTEN_PORT"])
    assert metrics_port not in {target for _, target in published_ports(bun)}

    runner = services["test-runner"]
    assert runner["profiles"] == ["test"]
    assert runner["build"]["dockerfile"] == "docker/Dockerfile.test"
    assert "pgbun" in runner["depends_on"]
    renv = runner["environment"]
    assert renv["PGHOST"] == "pgbun" and renv["PGPORT"] == env["LISTEN_PORT"]
    assert (renv["PGUSER"], renv["PGPASSWORD"], renv["PGDATABASE"]) == ("pgbun_user", "pgbun_pass", "pgbun_test")
    direct = dict(kv.split("=", 1) for kv in renv["LOADTEST_DIRECT"].split())
    assert direct == {"host": "postgres", "port": "5432", "user": "pgbun_user", "password": "pgbun_pass",
                      "dbname": "pgbun_test"}
    assert renv["METRICS_DIR"] == "/metrics"
    assert Path(mounts(runner)["/metrics"][0]) == SRCDIR / "metrics"

    # `docker compose up` leaves the test-runner and Prometheus out; `run test-runner` starts
    # the one, `--profile monitoring` the other.
    assert sorted(docker_compose(["config", "--profiles"]).stdout.split()) == ["monitoring", "test"]
    assert enabled(stack, ()) == {"postgres", "pgbun"}


def enabled(stack, profiles):
    """The services `docker compose [--profile P ...] up` starts: those with no
    profile, and those with one of the given profiles."""
    return {name for name, service in stack["services"].items()
            if not service.get("profiles") or set(service["profiles"]) & set(profiles)}


def test_monitoring_profile_adds_prometheus_and_nothing_else():
    docker_compose(["--profile", "monitoring", "config", "-q"])
    docker_compose(["--profile", "monitoring", "config", "-q"], files=(COMPOSE, COMPOSE_DEV))
    plain = resolved()
    stack = yaml_of(docker_compose(["--profile", "monitoring", "config"]).stdout)
    assert enabled(plain, ()) == {"postgres", "pgbun"}
    assert enabled(stack, ("monitoring",)) == {"postgres", "pgbun", "prometheus"}
    assert enabled(stack, ("monitoring", "test")) == set(stack["services"])
    # The profile changes no other service, no network, no volume.
    assert {k: v for k, v in stack.items() if k != "services"} == {k: v for k, v in plain.items() if k != "services"}
    for name in plain["services"]:
        assert stack["services"][name] == plain["services"][name], name

    prom = stack["services"]["prometheus"]
    assert prom["profiles"] == ["monitoring"]
    assert prom["image"].startswith("prom/prometheus:v2.")
    assert "build" not in prom
    assert list(prom["networks"]) == ["pgbun_net"]
    # Everything it depends on is up without the profile (compose refuses otherwise).
    assert set(prom["depends_on"]) <= enabled(plain, ())
    assert prom["depends_on"]["pgbun"]["condition"] == "service_healthy"
    assert (9090, 9090) in published_ports(prom)
    source, read_only = mounts(prom)["/etc/prometheus/prometheus.yml"]
    assert Path(source) == PROMETHEUS_YML and read_only
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]

    # PROMETHEUS_PORT moves it on the host.
    moved = yaml_of(docker_compose(["--profile", "monitoring", "config"], env={"PROMETHEUS_PORT": "9191"}).stdout)
    assert (9191, 9090) in published_ports(moved["services"]["prometheus"])


def yaml_of(text):
    import yaml  # python3-yaml: a dependency of docker-compose
    return yaml.safe_load(text)


def test_prometheus_config_scrapes_pgbuns_metrics_port():
    if not os.access(PROMTOOL, os.X_OK):
        pytest.fail(f"{PROMTOOL} is missing: scripts/deps installs Debian's prometheus package")
    with tempfile.TemporaryDirectory() as tmp:
        # promtool reads the file as the container will: alone, under its own name.
        shutil.copy(PROMETHEUS_YML, Path(tmp) / "prometheus.yml")
        res = run([PROMTOOL, "check", "config", Path(tmp) / "prometheus.yml"], timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    config = yaml_of(PROMETHEUS_YML.read_text())
    env = resolved()["services"]["pgbun"]["environment"]
    (job,) = config["scrape_configs"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"pgbun:{env['PGBUN_METRICS_LISTEN_PORT']}"]


def dashboard_exprs(dashboard):
    """(panel title, expr) of every query of the dashboard, rows' panels included."""
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                out.append((p.get("title"), t["expr"]))
            walk(p.get("panels", []))
    walk(dashboard["panels"])
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            out.append((f"variable {var['name']}", q))
    return out


PROMQL_FUNCTIONS_AND_WORDS = {
    "sum", "max", "min", "avg", "count", "rate", "irate", "increase", "histogram_quantile", "label_replace",
    "label_values", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "offset", "bool", "topk", "bottomk", "clamp_min", "clamp_max", "abs", "delta", "deriv", "time",
    "le", "instance", "database", "user", "side", "worker", "name", "job",
}


def test_grafana_dashboard_is_importable_and_uses_only_served_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36, "Grafana 9's schema or later"
    assert dashboard["title"] and dashboard["uid"]
    assert "id" not in dashboard or dashboard["id"] is None, "an import must not carry a database id"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ds = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}

    ids, panels = set(), []

    def walk(items):
        for p in items:
            panels.append(p)
            walk(p.get("panels", []))
    walk(dashboard["panels"])
    for p in panels:
        assert p["id"] not in ids, f"panel id {p['id']} twice"
        ids.add(p["id"])
        pos = p["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, p["title"]
        if p["type"] != "row":
            assert p["datasource"] == ds, p["title"]
            assert p["targets"], p["title"]
            for t in p["targets"]:
                assert t["datasource"] == ds, p["title"]
    for name, var in variables.items():
        if var["type"] == "query":
            assert var["datasource"] == ds, name
    # What operators look at is there.
    titles = " | ".join(p["title"].lower() for p in panels)
    for topic in ("waiting", "longest wait", "reuse", "p95", "queries/s", "transactions/s",
                  "server connections by state", "worker busy", "tls", "auth_query"):
        assert topic in titles, f"no panel about {topic}"

    served = sample_names()
    unknown = []
    exprs = dashboard_exprs(dashboard)
    for title, expr in exprs:
        code = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values and strings out
        code = re.sub(r"\[[^\]]*\]", "", code)               # ranges out
        for word in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", code):
            if word in PROMQL_FUNCTIONS_AND_WORDS or word.startswith("__"):
                continue
            if word not in served:
                unknown.append(f"{title}: {word}")
    assert not unknown, "names pgbun does not serve:\n" + "\n".join(unknown)
    used = {w for _, e in exprs for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e) if w in served}
    for needed in ("pgbun_query_duration_seconds_bucket", "pgbouncer_pools_client_waiting_connections",
                   "pgbouncer_pools_client_maxwait_seconds", "pgbun_pool_server_assignments_reused_total",
                   "pgbun_worker_busy_seconds_total", "pgbun_tls_handshakes_total",
                   "pgbun_auth_query_lookups_total", "pgbouncer_stats_totals_queries_pooled_total",
                   "pgbouncer_stats_totals_sql_transactions_pooled_total"):
        assert needed in used, f"the dashboard does not use {needed}"


def test_grafana_dashboard_queries_parse_as_promql():
    """Each query, with Grafana's variables filled in, as a recording rule:
    promtool parses every expression."""
    if not os.access(PROMTOOL, os.X_OK):
        pytest.fail(f"{PROMTOOL} is missing: scripts/deps installs Debian's prometheus package")
    dashboard = json.loads(DASHBOARD.read_text())
    rules = []
    for i, (title, expr) in enumerate(dashboard_exprs(dashboard)):
        if expr.startswith("label_values("):
            m = re.fullmatch(r"label_values\((.*), *([a-zA-Z_]+)\)", expr)
            assert m, expr
            expr = m.group(1)
        expr = expr.replace("$__rate_interval", "1m").replace("$instance", ".*").replace("$database", ".*")
        assert "$" not in expr.replace('"$1"', ""), f"{title}: a variable left: {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
        json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
        f.flush()
        res = run([PROMTOOL, "check", "rules", f.name], timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_compose_variables_reach_the_services():
    stack = resolved(env={"POOL_MODE": "session", "PGBUN_PORT": "7432", "PGBUN_MEM_LIMIT": "512m",
                          "DEFAULT_POOL_SIZE": "7", "PGBUN_QUERY_WAIT_TIMEOUT": "9",
                          "PGBUN_PUBLISH_ADDR": "0.0.0.0", "PGBUN_BASE_IMAGE": "local/debian:12",
                          "PGBUN_PG_IMAGE": "local/postgres:15"})
    bun = stack["services"]["pgbun"]
    assert ("0.0.0.0", 7432, 6432) in published_ports(bun, with_ip=True)
    assert bun["build"]["args"]["BASE_IMAGE"] == "local/debian:12"
    assert stack["services"]["test-runner"]["build"]["args"]["BASE_IMAGE"] == "local/debian:12"
    assert stack["services"]["postgres"]["image"] == "local/postgres:15"
    assert bun["environment"]["POOL_MODE"] == "session"
    assert bun["environment"]["DEFAULT_POOL_SIZE"] == "7"
    assert bun["environment"]["PGBUN_QUERY_WAIT_TIMEOUT"] == "9"
    assert (7432, 6432) in published_ports(bun)
    assert bun["mem_limit"] == "512m"


def test_env_example_lists_every_compose_variable_with_its_default():
    used = compose_vars(COMPOSE)
    for name, default in compose_vars(COMPOSE_DEV).items():
        used.setdefault(name, default)
    values, uncommented = env_example()
    assert set(used) == set(values), (f"only in the compose files: {sorted(set(used) - set(values))}; "
                                      f"only in .env.example: {sorted(set(values) - set(used))}")
    for name, default in used.items():
        assert default is not None, f"${{{name}}} has no default in the compose files"
        assert values[name] == default, f"{name}: .env.example says {values[name]!r}, the compose files {default!r}"
    assert not uncommented, f"no comment line above {uncommented} in .env.example"
    # Hence .env.example changes nothing, with or without the dev override.
    for files in ((COMPOSE,), (COMPOSE, COMPOSE_DEV)):
        assert resolved(files, env_file=ENV_EXAMPLE) == resolved(files)


def test_dev_override_builds_the_dev_stage_and_mounts_the_sources():
    stack = resolved(files=(COMPOSE, COMPOSE_DEV))
    bun = stack["services"]["pgbun"]
    assert bun["build"]["dockerfile"] == "docker/Dockerfile"
    assert bun["build"]["target"] == "dev"
    stages = dockerfile_stages(DOCKERFILE)
    dev = stages["dev"]
    env = instruction_env(dev)
    assert "docker/dev-watch" in instruction(dev, "ENTRYPOINT")
    # It builds in the container: the base file's read-only root does not apply.
    assert bun["read_only"] is False
    src_mounts = {t: s for t, s in mounts(bun).items() if t.startswith(env["DEV_SRC"] + "/")}
    assert src_mounts, "the dev override mounts no sources into the dev stage's tree"
    for target, (source, read_only) in src_mounts.items():
        assert read_only, target
        assert Path(source) == SRCDIR / Path(target).relative_to(env["DEV_SRC"]), target
    # The base file's settings stay (network, health of postgres, the port).
    assert bun["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert (6432, 6432) in published_ports(bun)
    assert stack["services"]["test-runner"]["profiles"] == ["test"]


# ---------------------------------------------------------------- Dockerfiles

def dockerfile_instructions(path):
    """[(KEYWORD, arguments)] with continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in Path(path).read_text().splitlines()
                                          if not line.lstrip().startswith("#")))
    out = []
    for line in text.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            out.append((keyword.upper(), " ".join(rest.split())))
    return out


def dockerfile_global_args(path):
    """{name: default} of the ARGs before the first FROM."""
    args = {}
    for keyword, rest in dockerfile_instructions(path):
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
    return args


def dockerfile_stages(path):
    """{stage name: [(KEYWORD, arguments)]}, in order (dicts keep it)."""
    stages = {}
    current = None
    for keyword, rest in dockerfile_instructions(path):
        if current is None and keyword == "ARG":
            continue  # an ARG before the first FROM: see dockerfile_global_args()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else f"stage{len(stages)}"
            current = stages.setdefault(name, [])
        current.append((keyword, rest))
    return stages


def instruction(stage, keyword):
    values = [rest for kw, rest in stage if kw == keyword]
    return values[-1] if values else None


def instructions(stage, keyword):
    return [rest for kw, rest in stage if kw == keyword]


def instruction_env(stage):
    env = {}
    for kw, rest in stage:
        if kw == "ENV":
            for word in shlex.split(rest):
                key, _, value = word.partition("=")
                env[key] = value
    return env


def build_step(stage):
    """(scripts/build command line, builddir it installs from) of a stage."""
    for kw, rest in stage:
        if kw == "RUN" and "scripts/build" in rest:
            m = re.search(r"((?:bash\s+)?(?:\./)?scripts/build(?:\s+[^&;|]+)?)", rest)
            inst = re.search(r"make\s+-C\s+(\S+)\s+install\b", rest)
            return m.group(1).strip(), (inst.group(1) if inst else None)
    return None, None


def apt_packages(stage):
    pkgs = set()
    for kw, rest in stage:
        if kw == "RUN":
            for m in re.finditer(r"apt-get install ([^&;|]*)", rest):
                pkgs |= {w for w in m.group(1).split() if not w.startswith("-")}
    return pkgs


@pytest.mark.parametrize("path", [DOCKERFILE, DOCKERFILE_TEST], ids=["Dockerfile", "Dockerfile.test"])
def test_dockerfile_builds_with_scripts_build(path):
    stages = dockerfile_stages(path)
    assert "build" in stages
    for name, stage in stages.items():
        for kw, rest in stage:
            if kw == "RUN":
                # configure and make are scripts/build's: no second way to build.
                assert not re.search(r"autoreconf|(^|[\s/])configure\b|make\s+(-j|all\b)", rest), (name, rest)
    command, install_dir = build_step(stages["build"])
    assert command is not None, "the build stage does not run scripts/build"
    args = shlex.split(command)
    assert args[0].endswith("scripts/build")
    assert install_dir == args[1], "make install runs in the dir scripts/build built"
    assert "--prefix=/usr/local" in args
    assert instruction(stages["build"], "WORKDIR") == "/src"
    # The layer cache: the packages are installed before the tree is copied,
    # so a source change rebuilds from the copy on.
    build = stages["build"]
    copy_at = build.index(("COPY", ". ."))
    apt_at = [i for i, (kw, rest) in enumerate(build) if kw == "RUN" and "apt-get install" in rest]
    assert apt_at and max(apt_at) < copy_at

    # Every stage starts from BASE_IMAGE (or from another stage), whose default is debian:12-slim.
    assert dockerfile_global_args(path) == {"BASE_IMAGE": "debian:12-slim"}
    for name, stage in stages.items():
        base = stage[0][1].split()[0]
        assert base == "${BASE_IMAGE}" or base in stages, (name, base)
    runtime = list(stages.values())[-1]
    assert runtime[0][1].startswith("${BASE_IMAGE} "), "the last (default) target starts from the base image"
    assert not apt_packages(runtime) & {"build-essential", "autoconf", "automake", "libtool", "gcc",
                                        "libevent-dev", "libssl-dev", "libpq-dev"}, "build tools in the runtime"
    assert {"libssl3", "libevent-core-2.1-7", "libevent-extra-2.1-7"} <= apt_packages(runtime)
    entry = instruction(runtime, "ENTRYPOINT")
    if path == DOCKERFILE:
        assert entry == '["/usr/local/bin/pgbun"]'
        assert instruction(runtime, "EXPOSE") == "6432"
        # Numeric, so that Kubernetes' runAsNonRoot can check it.
        assert instruction(runtime, "USER") == "6432:6432"
        # pgbun and the libraries it links (libpq and readline are pgbun-admin's).
        assert instruction(runtime, "COPY") == "--from=build /usr/local/bin/pgbun /usr/local/bin/"
        assert apt_packages(runtime) == {"libssl3", "libevent-core-2.1-7", "libevent-extra-2.1-7"}
        assert "127.0.0.1" in instruction(runtime, "HEALTHCHECK")
        assert "dev" in stages and instruction(stages["dev"], "USER") not in (None, "root", "0")
    else:
        assert "run-scenarios" in entry
        assert {"python3", "postgresql-client", "libpq5", "libreadline8"} <= apt_packages(runtime)
        assert "--from=build /usr/local/bin/ /usr/local/bin/" in instructions(runtime, "COPY")
        assert instruction_env(runtime).get("METRICS_DIR") == "/metrics"


def test_build_scripts_parse_and_are_executable():
    for script in ("scripts/build", "scripts/check", "scripts/quickstart", "scripts/deps", "docker/dev-watch",
                   "tests/containers/containers.test", "tests/containers/engine",
                   "tests/containers/images", "tests/containers/postgres/docker-entrypoint.sh"):
        path = SRCDIR / script
        run(["bash", "-n", path], timeout=30)
        assert os.access(path, os.X_OK), f"{script} is not executable"
    # Every local build goes through scripts/build too.
    assert "scripts/build build" in (SRCDIR / "scripts" / "quickstart").read_text()
    check = (SRCDIR / "scripts" / "check").read_text()
    assert "scripts/build" in check and "../configure" not in check


# ---------------------------------------------------------------- the build context

def dockerignore_rules():
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line[1:] if negate else line).lstrip("/")
        rules.append((negate, pattern, re.compile(glob_regex(pattern))))
    return rules


def glob_regex(pattern):
    """Docker's .dockerignore globbing: * and ? within a path element, ** across them."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 1:]:
            j = pattern.index("]", i + 1)
            cls = pattern[i + 1:j]
            out.append("[" + ("^" + cls[1:] if cls.startswith(("!", "^")) else cls) + "]")
            i = j + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out) + r"\Z"


def ignored(rel, rules):
    """Whether the build context leaves rel out: the last rule matching rel or
    one of its parent dirs decides."""
    parts = rel.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for negate, _, rx in rules:
        if any(rx.match(c) for c in candidates):
            result = not negate
    return result


def context_files():
    """The files of the build context: the tree as .dockerignore lets Docker see it."""
    rules = dockerignore_rules()
    exceptions = [pattern for negate, pattern, _ in rules if negate]
    files = []
    for dirpath, dirnames, filenames in os.walk(SRCDIR):
        reldir = os.path.relpath(dirpath, SRCDIR)
        reldir = "" if reldir == "." else reldir + "/"
        keep = []
        for d in dirnames:
            rel = reldir + d
            if ignored(rel, rules) and not any(p.startswith(rel + "/") for p in exceptions):
                continue
            keep.append(d)
        dirnames[:] = sorted(keep)
        files += [reldir + f for f in sorted(filenames) if not ignored(reldir + f, rules)]
    return files


def test_dockerignore_leaves_out_build_output_and_keeps_the_sources():
    files = set(context_files())
    for needed in ("configure.ac", "Makefile.am", "m4/.gitkeep", "scripts/build", "src/main.c",
                   "admin/pgbun-admin.c", "tests/unit/tap.h", "docker/dev-watch",
                   "docker-entrypoint-initdb.d/init.sql"):
        assert needed in files, f"{needed} is not in the build context"
    assert any(f.startswith("tests/unit/test_") and f.endswith(".c") for f in files)
    for f in files:
        first = f.split("/")[0]
        assert first not in ("build", "build-asan", "build-aux", ".git", ".pgbun-dev", "metrics",
                             "autom4te.cache"), f
        assert f not in ("configure", "Makefile.in", "Makefile", "aclocal.m4", "config.status"), f
        assert not f.endswith((".o", ".a", ".trs", ".pyc")), f
    # Every file a Dockerfile copies from the context is in it.
    for path in (DOCKERFILE, DOCKERFILE_TEST):
        for kw, rest in dockerfile_instructions(path):
            if kw == "COPY" and not rest.startswith("--from"):
                for source in shlex.split(rest)[:-1]:
                    if source.startswith("--"):
                        continue
                    assert source == "." or source.rstrip("/") in files or \
                        any(f.startswith(source.rstrip("/") + "/") for f in files), f"{path.name}: COPY {source}"
