"""The docs: `mkdocs build --strict` passes, and the shell examples marked runnable do run.

A runnable example is a fenced ```sh block right after an HTML comment `<!-- runnable -->`, in
README.md or any page under docs/. They run in page order (README first), with
`bash -euo pipefail`, in a fixture git repository, against one embedded stack started here
(its own REVIEWBUS_HOME; two analyzer versions, no model, so it starts in seconds).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TEST_SESSION_TIMEOUT
from tests.gitrepo import make_repo

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RUNNABLE = re.compile(r"^<!--\s*runnable\s*-->[ \t]*\n```(?:sh|bash)[ \t]*\n(.*?)^```", re.M | re.S)
VERSIONS = """\
task: code-review
versions:
  - id: analyzers-v1
    backend: analyzers
    initial_state: stable
    timeout_s: 60
    params: {ruff_select: [E9, F, B], bandit: true, change_type: paths, only_changed_lines: true}
  - id: analyzers-v2
    backend: analyzers
    initial_state: shadow
    timeout_s: 60
    params: {ruff_select: [E9, F, B, S], bandit: false, change_type: message}
"""


def doc_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def runnable_blocks() -> list[tuple[str, str]]:
    """(page:line, script) of every block marked runnable, in page order."""
    out = []
    for page in doc_pages():
        text = page.read_text(encoding="utf-8")
        for m in RUNNABLE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            out.append((f"{page.relative_to(ROOT)}:{line}", m.group(1)))
    return out


BLOCKS = runnable_blocks()


def test_mkdocs_build_strict(tmp_path):
    """The site builds with every warning an error: broken links and anchors, a page missing
    from the nav, the generated reference pages."""
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    env = (site / "reference" / "environment" / "index.html").read_text(encoding="utf-8")
    for command in ("reviewbus up", "reviewbus submit", "reviewbus versions", "reviewbus sql"):
        assert command in cli
    for variable in ("REVIEWBUS_HOME", "REVIEWBUS_KAFKA", "REVIEWBUS_LIMIT_MAX_FILES"):
        assert variable in env


def test_reference_covers_every_command_and_setting():
    sys.path.insert(0, str(ROOT / "docs" / "hooks"))
    try:
        import reference
    finally:
        sys.path.pop(0)
    from agents.settings import Limits, Settings
    from streams.cli import build_parser

    cli = reference.cli_markdown()
    parser = build_parser()
    for name, _, _ in reference._subcommands(parser):
        assert f"`reviewbus {name}`" in cli, name
    env = reference.environment_markdown()
    for cls in (Settings, Limits):
        prefix = cls.model_config["env_prefix"]
        for field in cls.model_fields:
            assert f"`{prefix}{field}`".upper() in env.upper(), field


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 220
    first_screen = "\n".join(text.splitlines()[:20])
    assert "make demo" in first_screen and "make test" in first_screen
    for page in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / page).exists(), page
    assert "../shared" not in text and "/work/" not in text


def test_examples_are_marked():
    pages = {where.split(":")[0] for where, _ in BLOCKS}
    assert "README.md" in pages
    assert len(BLOCKS) >= 10, BLOCKS


def _env(home: Path, config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REVIEWBUS_")}
    env.update(TEST_SESSION_TIMEOUT)
    env.update(REVIEWBUS_HOME=str(home), REVIEWBUS_CONFIG=str(config), HF_HUB_OFFLINE="1",
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", COLUMNS="120")
    return env


def _run(script: str, cwd: Path, env: dict[str, str], timeout: float = 180.0):
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    base = tmp_path_factory.mktemp("docs-examples")
    repo = make_repo(base / "repo")
    config = base / "versions.yaml"
    config.write_text(VERSIONS)
    env = _env(base / "home", config)
    up = _run("reviewbus up --detach && reviewbus submit --last 3 --wait", repo, env)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield repo, env
    finally:
        _run("reviewbus down", repo, env, timeout=120)


@pytest.mark.integration
@pytest.mark.parametrize("where,script", BLOCKS, ids=[where for where, _ in BLOCKS])
def test_runnable_example(stack, where, script):
    repo, env = stack
    started = time.monotonic()
    proc = _run(script, repo, env)
    if re.search(r"^\s*reviewbus down\b", script, re.M):  # leave a stack for the next block
        again = _run("reviewbus up --detach", repo, env)
        assert again.returncode == 0, again.stdout + again.stderr
    assert proc.returncode == 0, (
        f"{where} failed (exit {proc.returncode}, {time.monotonic() - started:.1f} s)\n"
        f"--- script\n{script}--- stdout\n{proc.stdout[-4000:]}--- stderr\n{proc.stderr[-4000:]}")
