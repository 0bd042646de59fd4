"""docker/k8s, the Kubernetes example (an application with pgbun as a
sidecar), checked without a cluster:

- every manifest parses and names its objects; the Deployment's selector
  matches its pod labels; every mount has a volume, and every ConfigMap and
  Secret a volume or an environment variable names is among the manifests,
  with the keys used;
- pgbun's port agrees across its container, its probes, the config's
  listen_port, the application's PGPORT and the EXPOSE of docker/Dockerfile's
  runtime stage; its uid and gid are the numeric USER of that stage, and it
  can read its config file and auth_file where they are mounted;
- termination: the grace period outlasts the preStop sleep, and the liveness
  probe cannot kill pgbun while it waits for its clients;
- the ConfigMap's pgbun.ini and the Secret's userlist.txt run the pgbun
  built here (only the paths, the PostgreSQL address and the port rewritten):
  it starts with no warning and the application's user logs in through it.
"""

import base64
import re
import shutil
from pathlib import PurePosixPath

import psycopg
import pytest
import yaml
from psycopg import sql

from conftest import (IS_PGBOUNCER, KEEP, RUN_USER, SRCDIR, TEST_WORKERS, Pgbun, chown_to_run_user, free_port,
                      make_tempdir, pgbun_binary, pgbun_env)

K8S = SRCDIR / "docker" / "k8s"
DOCKERFILE = SRCDIR / "docker" / "Dockerfile"
MAIN_SECTIONS = ("pgbun", "pgbouncer")
DEFAULT_LISTEN_PORT = 6432


# ---------------------------------------------------------------- reading

def manifest_files():
    files = sorted(K8S.glob("*.yaml")) + sorted(K8S.glob("*.yml"))
    assert files, f"no manifests in {K8S}"
    return files


def manifests():
    """[(file name, object)] of every YAML document under docker/k8s."""
    objs = []
    for path in manifest_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                objs.append((path.name, doc))
    return objs


def objects(kind):
    return {obj["metadata"]["name"]: obj for _, obj in manifests() if obj.get("kind") == kind}


def deployments():
    found = objects("Deployment")
    assert found, "no Deployment in docker/k8s"
    return found


def containers(pod_spec):
    return pod_spec.get("containers", []) + pod_spec.get("initContainers", [])


def pgbun_pod():
    """(pod spec, pgbun container, other containers) of the Deployment running pgbun."""
    for dep in deployments().values():
        spec = dep["spec"]["template"]["spec"]
        buns = [c for c in containers(spec) if "pgbun" in c.get("image", "")]
        if buns:
            assert len(buns) == 1, f"{len(buns)} pgbun containers in one pod"
            return spec, buns[0], [c for c in containers(spec) if c is not buns[0]]
    pytest.fail("no container runs a pgbun image in docker/k8s")


def mount_holding(container, path):
    """The mount of the container whose mountPath holds path (the deepest one)."""
    path = PurePosixPath(path)
    mounts = [m for m in container.get("volumeMounts", []) if path.is_relative_to(m["mountPath"])]
    assert mounts, f"{path} is on no volume of container {container['name']}"
    return max(mounts, key=lambda m: len(PurePosixPath(m["mountPath"]).parts))


def object_keys(obj):
    return set(obj.get("data") or {}) | set(obj.get("stringData") or {}) | set(obj.get("binaryData") or {})


def object_value(obj, key):
    """A ConfigMap's or Secret's value as text (stringData, or data: a Secret's is base64)."""
    if key in (obj.get("stringData") or {}):
        return obj["stringData"][key]
    value = obj["data"][key]
    if obj["kind"] == "Secret":
        return base64.b64decode(value).decode()
    return value


def volume_files(volume):
    """{file name in the volume: (kind, object name, key, mode)} of a configMap,
    secret or projected volume (None for other kinds: their content is not ours)."""
    sources = []
    if "configMap" in volume:
        sources.append(("ConfigMap", volume["configMap"]["name"], volume["configMap"]))
    elif "secret" in volume:
        sources.append(("Secret", volume["secret"]["secretName"], volume["secret"]))
    elif "projected" in volume:
        for src in volume["projected"]["sources"]:
            for field, kind in (("configMap", "ConfigMap"), ("secret", "Secret")):
                if field in src:
                    sources.append((kind, src[field]["name"], src[field]))
    else:
        return None
    default_mode = (volume.get("configMap") or volume.get("secret") or volume.get("projected") or {}).get(
        "defaultMode", 0o644)
    files = {}
    for kind, name, src in sources:
        obj = objects(kind).get(name)
        if obj is None:
            if src.get("optional"):
                continue
            pytest.fail(f"volume {volume['name']} names {kind} {name}, which is not in docker/k8s")
        items = src.get("items")
        if items is None:
            for key in object_keys(obj):
                files[key] = (kind, name, key, default_mode)
        for item in items or []:
            assert item["key"] in object_keys(obj), (f"volume {volume['name']} takes key {item['key']!r} "
                                                     f"of {kind} {name}, which has {sorted(object_keys(obj))}")
            files[item["path"]] = (kind, name, item["key"], item.get("mode", default_mode))
    return files


def mounted_file(spec, container, path):
    """(kind, object name, key, mode) of the ConfigMap or Secret key a container sees at path."""
    mount = mount_holding(container, path)
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    files = volume_files(volume)
    assert files is not None, f"{path} is on volume {volume['name']}, which is no ConfigMap or Secret"
    rel = str(PurePosixPath(path).relative_to(mount["mountPath"]))
    if mount.get("subPath"):
        rel = str(PurePosixPath(mount["subPath"]) / rel) if rel != "." else mount["subPath"]
    assert rel in files, f"{path}: volume {volume['name']} has {sorted(files)}, not {rel}"
    return files[rel]


def env_value(spec, container, name):
    """A container's environment variable, resolved from a Secret or ConfigMap if need be."""
    for var in container.get("env", []):
        if var["name"] != name:
            continue
        if "value" in var:
            return var["value"]
        for field, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
            ref = var.get("valueFrom", {}).get(field)
            if ref:
                return object_value(objects(kind)[ref["name"]], ref["key"])
    return None


def parse_ini(text):
    """{section: [(key, value)]} as pgbun reads it: whole-line ; and # comments, key = value."""
    sections, current = {}, None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        if line.startswith("["):
            current = line.strip("[]").strip().lower()
            sections.setdefault(current, [])
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"pgbun.ini: not a key = value in a section: {raw!r}"
        sections[current].append((key.strip().lower(), value.strip()))
    return sections


def pgbun_config():
    """(config file path in the container, its text, {main key: value}, [(database, entry)])."""
    spec, bun, _ = pgbun_pod()
    args = bun.get("args") or []
    configs = [a for a in args if a.endswith(".ini")]
    assert len(configs) == 1, f"pgbun's args name one config file, not {args}"
    kind, name, key, _ = mounted_file(spec, bun, configs[0])
    text = object_value(objects(kind)[name], key)
    sections = parse_ini(text)
    mains = [s for s in sections if s in MAIN_SECTIONS]
    assert len(mains) == 1, f"pgbun.ini has sections {list(sections)}; it needs one of {MAIN_SECTIONS}"
    return configs[0], text, dict(sections[mains[0]]), sections.get("databases", [])


def runtime_stage():
    """[(KEYWORD, arguments)] of docker/Dockerfile's last stage, continuations joined."""
    lines = [ln for ln in DOCKERFILE.read_text().splitlines() if not ln.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    stage = []
    for line in text.splitlines():
        keyword, _, rest = line.strip().partition(" ")
        if keyword.upper() == "FROM":
            stage = []
        if keyword:
            stage.append((keyword.upper(), " ".join(rest.split())))
    return stage


def runtime_instruction(keyword):
    values = [rest for kw, rest in runtime_stage() if kw == keyword]
    assert values, f"docker/Dockerfile's runtime stage has no {keyword}"
    return values[-1]


def probe_port(container, probe):
    """The port of a tcpSocket probe, a named port resolved."""
    port = container[probe]["tcpSocket"]["port"]
    if isinstance(port, str):
        named = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        assert port in named, f"{probe} names port {port!r}, which the container does not declare"
        port = named[port]
    return port


def prestop_sleep(container):
    """Seconds the container's preStop hook sleeps."""
    hook = container.get("lifecycle", {}).get("preStop")
    assert hook, f"container {container['name']} has no preStop hook"
    if "sleep" in hook:
        return int(hook["sleep"]["seconds"])
    command = " ".join(hook["exec"]["command"])
    m = re.search(r"\bsleep\s+(\d+)\b", command)
    assert m, f"preStop runs {command!r}, not a sleep"
    return int(m.group(1))


# ---------------------------------------------------------------- the manifests

def test_every_manifest_parses_and_names_its_objects():
    seen = set()
    for path in manifest_files():
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs, f"{path.name} holds no object"
        for doc in docs:
            assert isinstance(doc, dict), f"{path.name}: {doc!r} is not an object"
            for field in ("apiVersion", "kind"):
                assert isinstance(doc.get(field), str) and doc[field], f"{path.name}: no {field}"
            name = (doc.get("metadata") or {}).get("name")
            assert isinstance(name, str) and re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name), \
                f"{path.name}: {doc['kind']} has no valid metadata.name: {name!r}"
            assert (doc["kind"], name) not in seen, f"{doc['kind']} {name} defined twice"
            seen.add((doc["kind"], name))
    assert {"ConfigMap", "Secret", "Deployment"} <= {kind for kind, _ in seen}


def test_deployment_selector_matches_its_pod_labels():
    for name, dep in deployments().items():
        selector = dep["spec"]["selector"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert selector.get("matchLabels"), f"Deployment {name}: no matchLabels"
        assert not selector.get("matchExpressions"), f"Deployment {name}: matchExpressions are not checked here"
        missing = {k: v for k, v in selector["matchLabels"].items() if labels.get(k) != v}
        assert not missing, f"Deployment {name}: the pod labels {labels} lack {missing} of its selector"


def test_every_mount_has_its_volume_and_every_volume_its_configmap_or_secret():
    for name, dep in deployments().items():
        spec = dep["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        assert len(volumes) == len(spec.get("volumes", [])), f"Deployment {name}: a volume name is used twice"
        for c in containers(spec):
            paths = [m["mountPath"] for m in c.get("volumeMounts", [])]
            assert len(paths) == len(set(paths)), f"container {c['name']} mounts two volumes at one path"
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in volumes, f"container {c['name']} mounts {mount['name']}, which is not a volume"
                files = volume_files(volumes[mount["name"]])
                if mount.get("subPath") and files is not None:
                    assert mount["subPath"] in files, f"{c['name']}: subPath {mount['subPath']} is not in the volume"
        for volume in volumes.values():
            volume_files(volume)  # every ConfigMap and Secret it names exists, with the keys it takes


def test_every_environment_reference_names_a_key_that_exists():
    for name, dep in deployments().items():
        for c in containers(dep["spec"]["template"]["spec"]):
            for var in c.get("env", []):
                for field, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
                    ref = var.get("valueFrom", {}).get(field)
                    if ref and not ref.get("optional"):
                        obj = objects(kind).get(ref["name"])
                        assert obj is not None, f"{c['name']}: {var['name']} names {kind} {ref['name']}, not here"
                        assert ref["key"] in object_keys(obj), f"{c['name']}: {var['name']}: {kind} {ref['name']} " \
                                                               f"has no key {ref['key']}"
            for src in c.get("envFrom", []):
                for field, kind in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
                    if field in src and not src[field].get("optional"):
                        assert src[field]["name"] in objects(kind), f"{c['name']}: envFrom {kind} is not here"


def test_pgbun_port_agrees_with_the_images_expose():
    spec, bun, _ = pgbun_pod()
    exposed = {int(p.split("/")[0]) for p in runtime_instruction("EXPOSE").split()}
    assert len(exposed) == 1, f"docker/Dockerfile's runtime stage exposes {exposed}"
    port = exposed.pop()
    assert [p["containerPort"] for p in bun.get("ports", [])] == [port]
    for probe in ("readinessProbe", "livenessProbe"):
        assert probe_port(bun, probe) == port, f"pgbun's {probe} is not on port {port}"
    _, _, main, _ = pgbun_config()
    assert int(main.get("listen_port", DEFAULT_LISTEN_PORT)) == port


def test_pgbun_listens_where_the_probes_and_the_application_connect():
    """tcpSocket probes connect to the pod's IP: loopback alone would fail them."""
    spec, bun, others = pgbun_pod()
    _, _, main, _ = pgbun_config()
    addrs = {a.strip() for a in main.get("listen_addr", "127.0.0.1").split(",")}
    assert addrs & {"*", "0.0.0.0", "::"}, f"listen_addr {addrs}: tcpSocket probes connect to the pod's IP"
    port = int(main.get("listen_port", DEFAULT_LISTEN_PORT))
    apps = [c for c in others if env_value(spec, c, "PGPORT") is not None]
    assert apps, "no application container is given pgbun's address (PGHOST, PGPORT)"
    for app in apps:
        assert env_value(spec, app, "PGHOST") in ("127.0.0.1", "localhost"), f"{app['name']} does not use loopback"
        assert int(env_value(spec, app, "PGPORT")) == port


def test_pgbun_runs_as_the_dockerfiles_numeric_user():
    """runAsNonRoot needs a numeric USER in the image (a name cannot be checked);
    runAsUser and runAsGroup say the same ids, and fsGroup makes the Secret readable."""
    spec, bun, _ = pgbun_pod()
    user = runtime_instruction("USER")
    m = re.fullmatch(r"(\d+)(?::(\d+))?", user)
    assert m, f"docker/Dockerfile's runtime stage runs as USER {user}: give it as uid:gid (USER 6432:6432)"
    uid, gid = int(m.group(1)), int(m.group(2) or m.group(1))
    assert uid != 0
    ctx = bun["securityContext"]
    assert (ctx["runAsUser"], ctx["runAsGroup"]) == (uid, gid)
    assert spec["securityContext"]["fsGroup"] == gid


def test_pgbun_container_is_locked_down_and_writes_nothing():
    spec, bun, _ = pgbun_pod()
    ctx = bun["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"]["drop"] == ["ALL"] and not ctx["capabilities"].get("add")
    for kind in ("requests", "limits"):
        assert bun["resources"][kind].get("memory"), f"pgbun has no memory {kind}"
    assert bun["resources"]["requests"].get("cpu")
    # A read-only root: nothing pgbun would write may be on it (every mount here is read-only too).
    _, _, main, _ = pgbun_config()
    assert main.get("unix_socket_dir") == "", "unix_socket_dir defaults to /tmp, on the read-only root"
    for key in ("logfile", "pidfile"):
        assert not main.get(key), f"{key} = {main[key]}: the root filesystem is read-only"
    assert all(m.get("readOnly") for m in bun.get("volumeMounts", []))


def test_pgbun_reads_its_config_and_auth_file_where_they_are_mounted():
    spec, bun, _ = pgbun_pod()
    ctx = bun["securityContext"]
    _, _, main, _ = pgbun_config()  # the config file is a key of a mounted ConfigMap
    auth_file = main.get("auth_file")
    assert auth_file and auth_file.startswith("/"), f"auth_file = {auth_file!r}"
    kind, name, key, mode = mounted_file(spec, bun, auth_file)
    assert kind == "Secret", f"auth_file {auth_file} is in {kind} {name}, not a Secret"
    # The kubelet makes the files root's, of group fsGroup: pgbun (not root) reads them through the group.
    assert spec["securityContext"]["fsGroup"] == ctx["runAsGroup"]
    assert mode & 0o040, f"auth_file mode {mode:o} is not group-readable"
    assert not mode & 0o007, f"auth_file mode {mode:o}: the world can read the passwords"
    assert re.match(r'^\s*"', object_value(objects(kind)[name], key)), "userlist.txt: \"user\" \"secret\" lines"


def test_grace_period_outlasts_the_prestop_sleep_and_the_liveness_probe_the_drain():
    """Kubernetes counts the grace period from the start, preStop included; pgbun
    refuses new connections after SIGTERM, so its liveness probe fails while it drains."""
    spec, bun, _ = pgbun_pod()
    grace = spec.get("terminationGracePeriodSeconds", 30)
    sleep = prestop_sleep(bun)
    assert 0 < sleep < grace, f"preStop sleeps {sleep} s, the grace period is {grace} s"
    live = bun["livenessProbe"]
    window = live.get("periodSeconds", 10) * live.get("failureThreshold", 3)
    assert window >= grace - sleep, f"the liveness probe would kill pgbun {window} s into a {grace - sleep} s drain"


# ---------------------------------------------------------------- the config runs

def rewrite_for_test(ini, auth_file, server, listen_port):
    """The ConfigMap's pgbun.ini with only the auth_file path, the listen port and
    [databases]' host and port changed."""
    out, section = [], None
    for line in ini.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped.strip("[]").strip().lower()
        elif stripped and stripped[0] not in ";#" and "=" in stripped:
            key, _, value = stripped.partition("=")
            key = key.strip().lower()
            if section in MAIN_SECTIONS and key == "auth_file":
                line = f"auth_file = {auth_file}"
            elif section in MAIN_SECTIONS and key == "listen_port":
                line = f"listen_port = {listen_port}"
            elif section == "databases":
                value = re.sub(r"\bhost=\S+", f"host={server.host}", value)
                value = re.sub(r"\bport=\S+", f"port={server.port}", value)
                if f"host={server.host}" not in value:
                    value += f" host={server.host}"
                if f"port={server.port}" not in value:
                    value += f" port={server.port}"
                line = f"{key} = {value.strip()}"
        out.append(line)
    text = "\n".join(out) + "\n"
    if not re.search(r"(?m)^\s*listen_port\s*=", text):
        text = re.sub(r"(?m)^\s*\[(pgbun|pgbouncer)\]\s*$", lambda m: f"{m.group(0)}\nlisten_port = {listen_port}",
                      text, count=1)
    return text


@pytest.mark.skipif(IS_PGBOUNCER, reason="pgbun's own example")
def test_configmap_config_runs_pgbun_and_lets_the_application_in(make_postgres):
    spec, bun_container, others = pgbun_pod()
    config_path, ini, main, databases = pgbun_config()
    kind, name, key, _ = mounted_file(spec, bun_container, main["auth_file"])
    userlist = object_value(objects(kind)[name], key)
    app = next(c for c in others if env_value(spec, c, "PGUSER") is not None)
    user, password = env_value(spec, app, "PGUSER"), env_value(spec, app, "PGPASSWORD")
    dbname = env_value(spec, app, "PGDATABASE")
    entry = dict(databases).get(dbname)
    assert entry is not None, f"the application asks for database {dbname!r}, not in [databases] {databases}"
    assert re.search(rf'(?m)^\s*"{re.escape(user)}"\s', userlist), f"{user} is not in userlist.txt"
    m = re.search(r"\bdbname=(\S+)", entry)
    server_db = m.group(1) if m else dbname

    # A PostgreSQL of its own: the example's role and database names are not prefixed.
    server = make_postgres()
    server.sql(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(user), sql.Literal(password)),
               dbname="postgres")
    server.sql(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(server_db), sql.Identifier(user)),
               dbname="postgres")

    workdir = make_tempdir("pgbun-k8s-")
    bun = None
    try:
        auth_path = workdir / PurePosixPath(main["auth_file"]).name
        auth_path.write_text(userlist)
        chown_to_run_user(auth_path)
        env = pgbun_env({"PGBUN_WORKERS": str(TEST_WORKERS)} if TEST_WORKERS > 1 else None)
        for attempt in range(3):
            port = free_port()
            ini_path = workdir / PurePosixPath(config_path).name
            ini_path.write_text(rewrite_for_test(ini, auth_path, server, port))
            chown_to_run_user(ini_path)
            bun = Pgbun(pgbun_binary(), workdir, port, ini_path, env, [], RUN_USER, [])
            bun.config = {}
            bun.start()
            try:
                bun.wait_ready()
                break
            except AssertionError:
                # A port picked as free can be taken before pgbun binds it.
                if attempt == 2 or "Address already in use" not in bun.log_text():
                    raise
                bun.stop()
                bun.stderr_path.unlink(missing_ok=True)

        with psycopg.connect(host="127.0.0.1", port=port, dbname=dbname, user=user, password=password,
                             connect_timeout=10, autocommit=True) as conn:
            assert conn.execute("SELECT current_user, current_database()").fetchone() == (user, server_db)
        log = bun.log_text()
        assert "WARNING" not in log and "ERROR" not in log, log
        assert bun.stop() == 0, bun.log_text()
        assert not bun.sanitizer_reports(), bun.log_text()
    finally:
        if bun is not None:
            bun.stop()
        if not KEEP:
            shutil.rmtree(workdir, ignore_errors=True)
