"""pgbun-admin, the readline console of pgbun's admin database: its
non-interactive modes (-c, stdin, --csv, --json, --watch, exit codes, libpq's
environment, passwords) and, in a pseudo-terminal under tmux, the interactive
console (prompt, Tab completion, \\?, \\watch, Ctrl-C, history, Ctrl-D, \\top,
reconnecting after pgbun restarts)."""

import csv
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import IS_PGBOUNCER, KEEP, admin_binary, free_port, run, wait_until

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="pgbun-admin is pgbun's console")

# postgres may run everything on the console (the tool logs in as postgres).
ADMIN = {"admin_users": "postgres", "stats_users": "md5user"}
NUMERIC_OIDS = {20, 21, 23, 700, 701, 1700}  # int8, int2, int4, float4, float8, numeric
HOST = "127.0.0.1"


# ---------------------------------------------------------------- helpers

@pytest.fixture
def home():
    """A private $HOME (the history file goes to $HOME/.pgbun_admin_history)."""
    path = Path(tempfile.mkdtemp(prefix="pgbun-admin-home-"))
    yield path
    if not KEEP:
        shutil.rmtree(path, ignore_errors=True)


def admin_env(home=None, **extra):
    env = dict(os.environ)
    env.pop("NO_COLOR", None)
    if home is not None:
        env["HOME"] = str(home)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def admin_argv(bun, *args, port=None):
    return [str(admin_binary()), "-h", HOST, "-p", str(port or bun.port), "-U", "postgres", *args]


def admin(bun, *args, input=None, env=None, timeout=20, port=None):
    """Runs pgbun-admin to completion with stdin a pipe (or /dev/null); never a terminal."""
    kw = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
    return run(admin_argv(bun, *args, port=port), timeout=timeout, check=False, env=env or admin_env(), **kw)


def console_rows(bun, sql):
    """(column names, column type OIDs, rows) of a console query through psycopg."""
    with bun.connect(dbname="pgbun", user="postgres") as conn:
        cur = conn.execute(sql)
        return [d.name for d in cur.description], [d.type_code for d in cur.description], cur.fetchall()


def make_traffic(bun, n=5):
    with bun.connect(prepare_threshold=None) as conn:
        for i in range(n):
            assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)


def parse_table(text):
    """The first aligned table in text: (header line, separator line, column widths from
    the separator, data lines, the N of the "(N rows)" footer)."""
    lines = text.split("\n")
    sep_at = next(i for i, line in enumerate(lines) if re.fullmatch(r"-+(\+-+)*", line))
    header, sep = lines[sep_at - 1], lines[sep_at]
    widths = [len(seg) for seg in sep.split("+")]
    rows = []
    i = sep_at + 1
    while not re.fullmatch(r"\(\d+ rows?\)", lines[i]):
        rows.append(lines[i])
        i += 1
    footer = int(re.match(r"\((\d+)", lines[i]).group(1))
    return header, sep, widths, rows, footer


def check_table_alignment(header, sep, widths, rows, names, oids):
    """Every `|` of the header and of every row sits where the separator has a `+`;
    numbers are right-aligned and text left-aligned in their column; the header
    names are the SHOW's columns."""
    plus_at = [i for i, ch in enumerate(sep) if ch == "+"]
    assert [i for i, ch in enumerate(header) if ch == "|"] == plus_at, f"header not aligned:\n{header}\n{sep}"
    assert [h.strip() for h in header.split("|")] == names
    for row in rows:
        assert [i for i, ch in enumerate(row) if ch == "|"] == plus_at, f"row not aligned:\n{row}\n{sep}"
        cells = row.split("|")
        assert len(cells) == len(names)
        for c, (cell, w, oid) in enumerate(zip(cells, widths, oids)):
            last = c == len(cells) - 1
            value = cell.strip()
            if oid in NUMERIC_OIDS:
                want = " " + value.rjust(w - 2) + ("" if last else " ")
            else:  # text; the last column has no trailing blanks
                want = " " + value + ("" if last else " " * (w - 2 - len(value)) + " ")
            assert cell == want, f"column {names[c]} (oid {oid}): {cell!r} is not aligned like {want!r}\n{row}"


# ---------------------------------------------------------------- -c, --csv, --json

@pytest.mark.timeout(30)
def test_show_pools_prints_an_aligned_table_with_numbers_right_aligned(start_pgbun):
    bun = start_pgbun(config=ADMIN)
    make_traffic(bun)
    names, oids, _ = console_rows(bun, "SHOW POOLS")
    res = admin(bun, "-c", "SHOW POOLS")
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    header, sep, widths, rows, footer = parse_table(res.stdout)
    assert res.stdout.startswith(header + "\n" + sep + "\n"), res.stdout
    assert footer == len(rows) and footer >= 1, res.stdout
    assert f"({footer} row{'' if footer == 1 else 's'})" in res.stdout
    check_table_alignment(header, sep, widths, rows, names, oids)
    pool = next(r for r in rows if r.split("|")[0].strip() == "pgbun_test")
    col = names.index("total_xact_count")
    cell = pool.split("|")[col]
    assert cell.strip().isdigit() and int(cell.strip()) >= 5, pool
    assert cell.startswith("  ") and cell.endswith(cell.strip() + " "), \
        f"total_xact_count is not right-aligned (leading blanks, one blank after): {cell!r}"


@pytest.mark.timeout(30)
def test_several_c_run_in_order(start_pgbun):
    bun = start_pgbun(config=ADMIN)
    res = admin(bun, "-c", "SHOW STATE", "-c", "SHOW VERSION", "-c", "SHOW LISTS")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    at = [out.find(h) for h in (" key ", " version ", " list ")]
    assert -1 not in at and at == sorted(at), out
    assert out.count("row") >= 3 and re.search(r"^ pgbun \S+", out, re.M), out


@pytest.mark.timeout(30)
def test_csv_output_parses_with_the_show_columns(start_pgbun):
    # a value with a comma: CSV must quote it
    bun = start_pgbun(config={"admin_users": "postgres", "stats_users": "md5user,scramuser"})
    names, _, want = console_rows(bun, "SHOW CONFIG")
    res = admin(bun, "--csv", "-c", "SHOW CONFIG")
    assert res.returncode == 0, res.stderr
    rows = list(csv.reader(io.StringIO(res.stdout)))
    assert rows[0] == names
    assert rows[1:] == [["" if v is None else str(v) for v in row] for row in want]
    assert ["stats_users", "md5user,scramuser"] == rows[1:][[r[0] for r in rows[1:]].index("stats_users")][:2]

    make_traffic(bun)
    names, _, _ = console_rows(bun, "SHOW POOLS")
    res = admin(bun, "--csv", "-c", "SHOW POOLS")
    assert res.returncode == 0, res.stderr
    rows = list(csv.reader(io.StringIO(res.stdout)))
    assert rows[0] == names
    assert all(len(r) == len(names) for r in rows[1:]), rows
    assert "pgbun_test" in [r[0] for r in rows[1:]]
    assert "(" not in res.stdout.splitlines()[-1], "a table footer in CSV output"


@pytest.mark.timeout(30)
def test_json_output_has_numbers_as_numbers_and_null_as_none(start_pgbun):
    bun = start_pgbun(config=ADMIN)
    make_traffic(bun)
    for show in ("POOLS", "DATABASES"):
        names, oids, want = console_rows(bun, f"SHOW {show}")
        res = admin(bun, "--json", "-c", f"SHOW {show}")
        assert res.returncode == 0, res.stderr
        got = json.loads(res.stdout)
        assert isinstance(got, list) and got and all(isinstance(o, dict) for o in got), res.stdout
        for obj in got:
            assert list(obj) == names
            for name, oid in zip(names, oids):
                v = obj[name]
                if v is None:
                    continue
                if oid in NUMERIC_OIDS:
                    assert isinstance(v, (int, float)) and not isinstance(v, bool), (show, name, v)
                    if oid in (20, 21, 23):
                        assert isinstance(v, int), (show, name, v)
                else:
                    assert isinstance(v, str), (show, name, v)
        # NULLs where PostgreSQL's driver sees NULLs (rows keyed by their first two columns)
        nulls_json = {(o[names[0]], o[names[1]], k) for o in got for k, v in o.items() if v is None}
        nulls_pg = {(r[0], r[1], n) for r in want for n, v in zip(names, r) if v is None}
        assert nulls_json == nulls_pg, (show, nulls_json, nulls_pg)
        assert nulls_json, f"SHOW {show} was expected to have a NULL to check"
    pools = json.loads(admin(bun, "--json", "-c", "SHOW POOLS").stdout)
    pool = next(p for p in pools if p["database"] == "pgbun_test")
    assert pool["total_xact_count"] >= 5 and pool["load_balance_hosts"] is None
    assert isinstance(pool["reuse_efficiency_percent"], (int, float))


@pytest.mark.timeout(30)
def test_exit_1_when_a_command_fails_and_the_good_output_is_still_printed(start_pgbun):
    bun = start_pgbun(config=ADMIN)
    res = admin(bun, "-c", "SHOW VERSION", "-c", "SHOW nope")
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert re.search(r"^ pgbun \S+", res.stdout, re.M), res.stdout
    assert "(1 row)" in res.stdout
    assert "SQLSTATE 42704" in res.stderr, res.stderr
    assert "nope" in res.stderr and "42704" not in res.stdout
    ok = admin(bun, "-c", "SHOW VERSION", "-c", "SHOW STATE")
    assert ok.returncode == 0 and ok.stderr == "", ok.stderr


@pytest.mark.timeout(30)
def test_exit_2_when_the_connection_is_refused(start_pgbun):
    port = free_port()
    res = run([admin_binary(), "-h", HOST, "-p", port, "-U", "postgres", "-c", "SHOW VERSION"], timeout=20,
              check=False, stdin=subprocess.DEVNULL)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert res.stdout == ""
    assert "Connection refused" in res.stderr, res.stderr  # libpq's reason
    hint = next((line for line in res.stderr.splitlines() if line.startswith("hint:")), "")
    assert HOST in hint and str(port) in hint, res.stderr


@pytest.mark.timeout(30)
def test_commands_piped_on_stdin_run_in_order(start_pgbun):
    bun = start_pgbun(config=ADMIN)
    res = admin(bun, input="SHOW VERSION\nSHOW STATE\n")
    assert res.returncode == 0, res.stderr
    v, s = res.stdout.find(" version "), res.stdout.find(" key ")
    assert 0 <= v < s, res.stdout
    assert res.stdout.count("(1 row)") >= 1 and re.search(r"\(\d+ rows\)", res.stdout), res.stdout
    bad = admin(bun, input="SHOW nope\nSHOW VERSION\n")
    assert bad.returncode == 1 and "SQLSTATE 42704" in bad.stderr, (bad.stdout, bad.stderr)
    assert " version " in bad.stdout


@pytest.mark.timeout(30)
def test_reload_notice_goes_to_stderr(start_pgbun):
    bun = start_pgbun(config=ADMIN)
    res = admin(bun, "-c", "RELOAD")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "RELOAD", res.stdout
    assert re.search(r"^NOTICE: \S", res.stderr, re.M), res.stderr


@pytest.mark.timeout(30)
def test_pghost_pgport_pguser_from_the_environment(start_pgbun):
    bun = start_pgbun(config=ADMIN)
    env = admin_env(PGHOST=HOST, PGPORT=bun.port, PGUSER="postgres")
    res = run([admin_binary(), "--json", "-c", "SHOW CLIENTS"], timeout=20, check=False, env=env,
              stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    me = [c for c in json.loads(res.stdout) if c["application_name"] == "pgbun-admin"]
    assert len(me) == 1, res.stdout
    assert me[0]["user"] == "postgres" and me[0]["database"] == "pgbun"
    assert me[0]["local_port"] == bun.port and me[0]["addr"] == HOST


@pytest.mark.timeout(40)
@pytest.mark.parametrize("auth_type", ["plain", "md5"])
def test_password_comes_from_pgpassword(start_pgbun, auth_type):
    bun = start_pgbun(config={"auth_type": auth_type, "admin_users": "postgres"},
                      auth_file={"postgres": "admin secret 1"})
    res = admin(bun, "-c", "SHOW VERSION", env=admin_env(PGPASSWORD="admin secret 1"))
    assert res.returncode == 0, res.stderr
    assert re.search(r"^ pgbun \S+", res.stdout, re.M), res.stdout
    wrong = admin(bun, "-c", "SHOW VERSION", env=admin_env(PGPASSWORD="not it"))
    assert wrong.returncode == 2 and "could not connect" in wrong.stderr, (wrong.stdout, wrong.stderr)
    missing = admin(bun, "-c", "SHOW VERSION")
    assert missing.returncode == 2 and "password" in missing.stderr.lower(), (missing.stdout, missing.stderr)


@pytest.mark.timeout(30)
def test_watch_repeats_until_sigint_and_exits_0(start_pgbun):
    bun = start_pgbun(config=ADMIN)
    proc = subprocess.Popen(admin_argv(bun, "--watch", "0.5", "-c", "SHOW VERSION"), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=admin_env())
    try:
        time.sleep(2)
        assert proc.poll() is None, f"--watch exited early: {proc.returncode}\n{proc.communicate()}"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, (proc.returncode, out, err)
    assert len(re.findall(r"^ pgbun \S+", out, re.M)) >= 2, out
    assert len(re.findall(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(every 0\.5s\)$", out, re.M)) >= 2, out


# ---------------------------------------------------------------- interactive, under tmux

EXIT_MARK = re.compile(r"\[pgbun-admin exited (\d+)\]")


class Term:
    """A program in a 160x48 tmux pane of a private tmux server. bash runs it and
    prints its exit status when it ends (tmux 3.3 loses the status of a pane whose
    output closed first, and shows no signal)."""

    def __init__(self, workdir, argv, env):
        self.dir = Path(workdir)
        self.sock = self.dir / "tmux.sock"
        self.env = env
        conf = self.dir / "tmux.conf"
        conf.write_text("set -g remain-on-exit on\nset -s escape-time 0\nset -g history-limit 20000\n")
        wrapped = ["bash", "-c", '"$@"; echo "[pgbun-admin exited $?]"', "bash", *[str(a) for a in argv]]
        self.tmux("-f", str(conf), "new-session", "-d", "-s", "t", "-x", "160", "-y", "48", shlex.join(wrapped))

    def tmux(self, *args, check=True):
        res = subprocess.run(["tmux", "-S", str(self.sock), *args], capture_output=True, text=True, timeout=10,
                             env=self.env)
        if check and res.returncode != 0:
            raise AssertionError(f"tmux {args}: {res.stderr}")
        return res.stdout

    def screen(self, history=True):
        """The pane's text (with its scrollback), wrapped lines joined."""
        args = ["capture-pane", "-p", "-J", "-t", "t"] + (["-S", "-"] if history else [])
        return "\n".join(line.rstrip() for line in self.tmux(*args).split("\n"))  # -J keeps trailing blanks

    def keys(self, *keys):
        self.tmux("send-keys", "-t", "t", *keys)

    def type(self, text):
        self.tmux("send-keys", "-t", "t", "-l", text)

    def line(self, text):
        if text:
            self.type(text)
        self.keys("Enter")

    def wait(self, pred, timeout=10, what="the screen"):
        """Polls the screen until pred(screen) is true (a str: is in it); returns the screen."""
        test = (lambda s: pred in s) if isinstance(pred, str) else pred
        try:
            return wait_until(lambda: (lambda s: s if test(s) else None)(self.screen()), timeout, interval=0.05,
                              what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- screen ---\n{self.screen()}") from None

    def exit_status(self):
        """None while pgbun-admin runs, else its exit status (128+N: killed by signal N)."""
        m = EXIT_MARK.search(self.screen())
        return int(m.group(1)) if m else None

    def wait_exit(self, timeout=10):
        self.wait(lambda s: EXIT_MARK.search(s), timeout, what="pgbun-admin to exit")
        return self.exit_status()

    def close(self):
        self.tmux("kill-server", check=False)


@pytest.fixture
def term(home):
    """term(argv) starts argv in tmux with HOME=home; every tmux server is killed at the end."""
    terms = []

    def factory(argv, env=None):
        workdir = tempfile.mkdtemp(prefix="pgbun-admin-tmux-")
        terms.append(workdir)
        t = Term(workdir, argv, env or admin_env(home))
        terms[-1] = (t, workdir)
        return t

    yield factory
    for entry in terms:
        if isinstance(entry, tuple):
            entry[0].close()
        if not KEEP:
            shutil.rmtree(entry[1] if isinstance(entry, tuple) else entry, ignore_errors=True)


def prompt(bun):
    return f"pgbun-admin {HOST}:{bun.port}> "


def last_line(screen):
    lines = screen.rstrip("\n").splitlines()
    return lines[-1].rstrip() if lines else ""


def at_prompt(screen, bun, typed="", after_ctrl_c=False):
    """The cursor line is the prompt followed by typed (after Ctrl-C in \\watch the
    terminal's "^C" echo may stand before the prompt)."""
    line, want = last_line(screen), (prompt(bun) + typed).rstrip()
    return line == want or (after_ctrl_c and line.endswith(want) and line[:-len(want)] in ("", "^C"))


def after(screen, bun, text):
    """What the screen shows after the last echo of the command line text."""
    echo = (prompt(bun) + text).rstrip()
    at = screen.rfind(echo + "\n")
    return screen[at + len(echo) + 1:] if at >= 0 else None


def run_line(t, bun, text, expect, timeout=10, shown=None):
    """Types a line at the prompt and waits until its output matches expect (a regex)
    and a new prompt follows; returns what the screen shows after the command line
    (shown: the command line as the screen shows it, when Tab or Up made it)."""
    t.line(text)

    def done(s):
        out = after(s, bun, text if shown is None else shown)
        return out is not None and re.search(expect, out, re.M) and at_prompt(s, bun)
    s = t.wait(done, timeout, what=f"the output of {text!r} ({expect}) and a new prompt")
    return after(s, bun, text if shown is None else shown)


ROWS = r"^\(\d+ rows?\)$"


@pytest.mark.timeout(30)
def test_interactive_prompt_help_and_output(start_pgbun, term):
    bun = start_pgbun(config=ADMIN)
    t = term(admin_argv(bun))
    s = t.wait(lambda s: at_prompt(s, bun), what="the prompt")
    assert f"connected to {HOST}:{bun.port} as postgres" in s, s
    out = run_line(t, bun, "\\?", r"^\s+\\q\s")
    assert "\\watch N" in out and "\\top" in out and "SHOW POOLS" in out, out
    out = run_line(t, bun, "SHOW VERSION", ROWS)
    lines = out.splitlines()
    # the table starts right under the command line, nothing else on its lines (no leftover prompt)
    assert lines[0] == "   version", f"the first line of SHOW VERSION's output is garbled: {lines[0]!r}\n{out}"
    assert lines[1] == "-------------" and re.fullmatch(r" pgbun \S+", lines[2]) and lines[3] == "(1 row)", out
    out = run_line(t, bun, "SHOW nope", r"SQLSTATE\s+42704")
    assert out.lstrip().startswith("ERROR: "), out
    t.line("\\q")
    assert t.wait_exit() == 0


def console_in_terminal(start_pgbun, term):
    """pgbun with an admin user, and pgbun-admin at its prompt in a real terminal."""
    bun = start_pgbun(config=ADMIN)
    t = term(admin_argv(bun))
    t.wait(lambda s: at_prompt(s, bun), what="the prompt")
    return bun, t


@pytest.mark.timeout(30)
def test_interactive_tab_completion(start_pgbun, term):
    bun, t = console_in_terminal(start_pgbun, term)
    for typed, want in (("SHOW PO", "SHOW POOLS"), ("set default_po", "set default_pool_size"),
                        ("pause pgbun_te", "pause pgbun_test")):
        t.type(typed)
        t.wait(lambda s: at_prompt(s, bun, typed), what=f"{typed!r} echoed")
        t.keys("Tab")
        try:
            t.wait(lambda s: at_prompt(s, bun, want), timeout=5, what=f"Tab to complete {typed!r} to {want!r}")
        finally:
            t.keys("C-a", "C-k")  # clear the line for the next case
            t.wait(lambda s: at_prompt(s, bun), timeout=5, what="an empty line")
    # the completed line runs as it reads: PAUSE the database, then RESUME it
    t.type("pause pgbun_te")
    t.keys("Tab")
    t.wait(lambda s: at_prompt(s, bun, "pause pgbun_test"), timeout=5, what="completion")
    out = run_line(t, bun, "", r"^PAUSE", shown="pause pgbun_test")
    assert "SQLSTATE" not in out, out
    names, _, rows = console_rows(bun, "SHOW DATABASES")
    assert rows[[r[0] for r in rows].index("pgbun_test")][names.index("paused")] == 1
    out = run_line(t, bun, "RESUME pgbun_test", r"^RESUME")
    assert "SQLSTATE" not in out, out
    t.line("\\q")
    assert t.wait_exit() == 0


STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \(every 1s\)$", re.M)


@pytest.mark.timeout(30)
def test_interactive_watch_refreshes_and_ctrl_c_returns_to_the_prompt(start_pgbun, term):
    bun, t = console_in_terminal(start_pgbun, term)
    run_line(t, bun, "SHOW VERSION", ROWS)
    t.line("\\watch 1")
    t.wait(lambda s: len(set(STAMP.findall(s))) >= 2, timeout=8,
           what="two \\watch refreshes with different timestamps")
    s = t.screen(history=False)
    assert re.search(r"^ pgbun \S+", s, re.M), s
    t.keys("C-c")
    t.wait(lambda s: at_prompt(s, bun, after_ctrl_c=True), timeout=5, what="the prompt after Ctrl-C in \\watch")
    n = len(STAMP.findall(t.screen()))
    time.sleep(1.5)
    assert len(STAMP.findall(t.screen())) == n, "\\watch kept refreshing after Ctrl-C"
    assert t.exit_status() is None
    run_line(t, bun, "SHOW STATE", ROWS)
    t.line("\\q")
    assert t.wait_exit() == 0


@pytest.mark.timeout(30)
def test_interactive_ctrl_c_drops_a_partly_typed_line(start_pgbun, term):
    bun, t = console_in_terminal(start_pgbun, term)
    t.type("SHOW VERS")
    t.wait(lambda s: at_prompt(s, bun, "SHOW VERS"), what="the typed text")
    t.keys("C-c")
    s = t.wait(lambda s: at_prompt(s, bun), timeout=5, what="a new, empty prompt after Ctrl-C")
    assert s.rstrip("\n").splitlines()[-2].rstrip() == prompt(bun) + "SHOW VERS", s
    assert t.exit_status() is None, "Ctrl-C at the prompt ended pgbun-admin"
    out = run_line(t, bun, "SHOW STATE", ROWS)
    assert "SQLSTATE" not in out, f"the dropped text was kept:\n{out}"
    t.line("\\q")
    assert t.wait_exit() == 0


@pytest.mark.timeout(30)
def test_interactive_history_is_saved_and_recalled_and_ctrl_d_exits(start_pgbun, term, home):
    bun, t = console_in_terminal(start_pgbun, term)
    run_line(t, bun, "SHOW VERSION", ROWS)
    run_line(t, bun, "SHOW LISTS", ROWS)
    t.line("\\q")
    assert t.wait_exit() == 0
    hist = home / ".pgbun_admin_history"
    assert hist.is_file(), list(home.iterdir())
    lines = hist.read_text().splitlines()
    assert "SHOW VERSION" in lines and "SHOW LISTS" in lines, lines
    assert lines.index("SHOW VERSION") < lines.index("SHOW LISTS"), lines

    t2 = term(admin_argv(bun))
    t2.wait(lambda s: at_prompt(s, bun), what="the prompt")
    # Up recalls the previous session's lines, newest first (\q, like psql, may be one of them)
    for _ in range(3):
        t2.keys("Up")
        s = t2.wait(lambda s: not at_prompt(s, bun), timeout=5, what="Up to recall a line")
        if at_prompt(s, bun, "SHOW LISTS"):
            break
        assert at_prompt(s, bun, "\\q"), f"Up recalled something else than the last lines:\n{s}"
    else:
        raise AssertionError(f"Up never recalled SHOW LISTS:\n{t2.screen()}")
    t2.keys("Up")
    t2.wait(lambda s: at_prompt(s, bun, "SHOW VERSION"), timeout=5, what="Up to recall SHOW VERSION")
    out = run_line(t2, bun, "", ROWS, shown="SHOW VERSION")
    assert " version" in out, out
    t2.keys("C-d")
    assert t2.wait_exit() == 0
    assert hist.read_text().splitlines()[-1] == "SHOW VERSION"


TOP_ROW = re.compile(r"^pgbun_test/postgres\s+\d+\s+\d+\s+\d+\s+\d+\s+(\S+)\s", re.M)


@pytest.mark.timeout(30)
def test_interactive_top_shows_a_pool_with_traffic_and_ctrl_c_leaves(start_pgbun, term):
    bun = start_pgbun(config=ADMIN)
    make_traffic(bun)
    t = term(admin_argv(bun))
    t.wait(lambda s: at_prompt(s, bun), what="the prompt")
    t.line("\\top")
    s = t.wait(lambda s: "pgbun top" in s and TOP_ROW.search(s), what="\\top with the pgbun_test pool")
    assert "POOL (database/user)" in s, s
    make_traffic(bun, 20)  # a rate on a later screen
    t.wait(lambda s: TOP_ROW.findall(s)[-1].isdigit(), timeout=6, what="an XACT/S rate for pgbun_test")
    t.keys("C-c")
    t.wait(lambda s: at_prompt(s, bun, after_ctrl_c=True), timeout=5, what="the prompt after Ctrl-C in \\top")
    run_line(t, bun, "SHOW VERSION", ROWS)
    t.line("\\q")
    assert t.wait_exit() == 0


@pytest.mark.timeout(30)
def test_top_command_and_ctrl_c_exits_0(start_pgbun, term):
    bun = start_pgbun(config=ADMIN)
    make_traffic(bun)
    t = term(admin_argv(bun, "top"))
    s = t.wait(lambda s: "pgbun top" in s and TOP_ROW.search(s), what="top with the pgbun_test pool")
    assert "POOL (database/user)" in s, s
    t.keys("C-c")
    assert t.wait_exit() == 0


@pytest.mark.timeout(40)
def test_interactive_reconnects_after_pgbun_restarts(start_pgbun, term):
    bun, t = console_in_terminal(start_pgbun, term)
    run_line(t, bun, "SHOW VERSION", ROWS)
    assert bun.stop() == 0, bun.log_text()
    bun2 = start_pgbun(config=ADMIN, port=bun.port)
    assert bun2.port == bun.port
    out = run_line(t, bun, "SHOW STATE", ROWS, timeout=15)
    assert "reconnecting" in out, out
    assert " key " in out and "lost again" not in out and "could not connect" not in out, out
    out = run_line(t, bun, "SHOW VERSION", ROWS)
    assert "reconnecting" not in out and "SQLSTATE" not in out, out
    t.line("\\q")
    assert t.wait_exit() == 0
