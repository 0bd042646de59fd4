"""The manual pages: each documents every long option its program's --help
lists, and groff formats each without a warning. docs/RELIABILITY.md: every
test it names as the proof of a promise exists."""

import re
import shutil
import subprocess

import pytest

from conftest import IS_PGBOUNCER, SRCDIR, admin_binary, loadtest_binary, pgbun_binary

pytestmark = pytest.mark.skipif(IS_PGBOUNCER, reason="pgbun's own programs")

PROGRAMS = {"pgbun": pgbun_binary, "pgbun-admin": admin_binary, "pgbun-loadtest": loadtest_binary}


def man_text(name):
    """The page's source with roff's escaped hyphens made plain."""
    return (SRCDIR / "docs" / f"{name}.1").read_text().replace("\\-", "-")


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_man_page_documents_every_long_option_of_help(name):
    out = subprocess.run([str(PROGRAMS[name]()), "--help"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    options = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", out.stdout))
    assert len(options) >= 5, out.stdout
    page = man_text(name)
    missing = sorted(o for o in options if not re.search(re.escape(o) + r"(?![a-z-])", page))
    assert not missing, f"docs/{name}.1 lacks {missing}"
    assert f".TH {name.upper()} 1" in page


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_man_page_formats_without_warnings(name):
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed")
    res = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(SRCDIR / "docs" / f"{name}.1")],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and res.stderr == "", res.stderr


def test_every_test_reliability_md_names_as_a_proof_exists():
    text = (SRCDIR / "docs" / "RELIABILITY.md").read_text()
    named = set(re.findall(r"tests/integration/(\w+\.py)::(\w+)", text))
    named_c = set(re.findall(r"tests/unit/(\w+\.c)` \(`(\w+)`\)", text))
    assert len(named) > 50 and named_c, "the promises name their tests"
    missing = [f"{f}::{name}" for f, name in sorted(named)
               if not re.search(rf"^def {name}\(", (SRCDIR / "tests" / "integration" / f).read_text(), re.M)]
    missing += [f"{f}: {name}" for f, name in sorted(named_c)
                if not re.search(rf"^static void {name}\(", (SRCDIR / "tests" / "unit" / f).read_text(), re.M)]
    assert not missing, f"docs/RELIABILITY.md names tests that do not exist: {missing}"
