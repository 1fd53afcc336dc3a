"""The analyzers backend against the real ruff and bandit, including hostile inputs."""

import asyncio
import difflib
import json
import os
import sys
import tempfile
import time

import pytest

from agents.backends import analyzers
from agents.backends.analyzers import AnalyzerBackend, safe_relpath, stage_files
from agents.backends.base import build_backend
from agents.errors import BackendError, ConfigError
from schemas import ChangedFile, NormalizedChange, VersionSpec

VULNERABLE = (
    "import os\n"
    "import subprocess\n"
    "\n"
    "\n"
    "def run(cmd):\n"
    "    subprocess.call(cmd, shell=True)  # nosec\n"
)


def make_diff(path, old, new):
    lines = difflib.unified_diff(
        old.splitlines(keepends=True) if old is not None else [],
        new.splitlines(keepends=True),
        fromfile=f"a/{path}" if old is not None else "/dev/null", tofile=f"b/{path}")
    return "".join(lines)


def make_change(files, extra=(), message="add runner", truncated=False):
    """files: {path: (old or None, new)}; extra: ChangedFile objects not in the diff."""
    diff = "".join(make_diff(p, old, new) for p, (old, new) in files.items())
    changed = [ChangedFile(path=p, status="added" if old is None else "modified", content=new)
               for p, (old, new) in files.items()]
    return NormalizedChange(repo="org/repo", sha="abcdef12", message=message, diff=diff,
                            diff_truncated=truncated, files=[*changed, *extra])


def backend(**params):
    filters = params.pop("filters", [])
    return AnalyzerBackend(VersionSpec(id="an-test", backend="analyzers", params=params,
                                       filters=filters))


def infer(b, *changes):
    return asyncio.run(b.infer(list(changes)))


def by_rule(prediction):
    return {f.rule_id: f for f in prediction.findings}


@pytest.fixture(autouse=True)
def private_tmp(tmp_path, monkeypatch):
    """Every sandbox goes under tmp_path/work, so tests can see exactly what was written."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work))
    return work


# ---------------------------------------------------------------- what is found


def test_unused_import_and_shell_true_are_found_and_nosec_does_not_hide_it():
    [p] = infer(backend(), make_change({"pkg/run.py": (None, VULNERABLE)}))
    found = by_rule(p)
    f401, b602 = found["ruff:F401"], found["bandit:B602"]
    assert (f401.line, f401.severity.value, f401.dimension.value, f401.source) == (
        1, "medium", "correctness", "ruff")
    assert f401.confidence == pytest.approx(0.8)
    assert f401.path == "pkg/run.py"
    assert (b602.line, b602.severity.value, b602.dimension.value, b602.source) == (
        6, "high", "security", "bandit")
    assert b602.confidence == pytest.approx(0.9)  # bandit confidence HIGH
    assert found["ruff:S602"].dimension.value == "security"
    assert found["bandit:B404"].severity.value == "low"
    assert p.change_type.label == "feature"
    assert p.suggested_message == "feat: add runner"
    assert p.risk.level in ("medium", "high")
    assert [f.line for f in p.findings] == sorted(f.line for f in p.findings)


def test_noqa_is_ignored_unless_the_version_honors_it():
    code = "import os  # noqa: F401\n"
    change = make_change({"a.py": (None, code)})
    [ignored] = infer(backend(ruff_select=["F"], bandit=False), change)
    [honored] = infer(backend(ruff_select=["F"], bandit=False, honor_noqa=True), change)
    assert "ruff:F401" in by_rule(ignored)
    assert "ruff:F401" not in by_rule(honored)


def test_fingerprint_survives_moving_the_code_ten_lines_down():
    moved = "# filler\n" * 10 + VULNERABLE
    [before, after] = infer(backend(), make_change({"pkg/run.py": (None, VULNERABLE)}),
                            make_change({"pkg/run.py": (None, moved)}))
    for rule in ("ruff:F401", "bandit:B602"):
        assert by_rule(after)[rule].line == by_rule(before)[rule].line + 10
        assert by_rule(after)[rule].fingerprint == by_rule(before)[rule].fingerprint
    assert len({f.fingerprint for f in before.findings}) == len(before.findings)


def test_syntax_error_is_a_finding_not_a_failure():
    [p] = infer(backend(), make_change({"broken.py": (None, "def (:\n    pass\n"),
                                        "ok.py": (None, VULNERABLE)}))
    rules = [(f.path, f.rule_id) for f in p.findings]
    assert rules.count(("broken.py", "ruff:invalid-syntax")) == 1
    assert by_rule(p)["ruff:invalid-syntax"].severity.value == "high"
    assert ("ok.py", "bandit:B602") in rules


def test_severity_overrides_apply():
    [p] = infer(backend(severity_overrides={"ruff:F401": "critical"}),
                make_change({"a.py": (None, VULNERABLE)}))
    assert by_rule(p)["ruff:F401"].severity.value == "critical"


# ---------------------------------------------------------------- only changed lines


def test_only_changed_lines_are_reported():
    old = "import os\n\n\ndef f():\n    return 1\n"
    new = "import os\nimport sys\n\n\ndef f():\n    return 1\n"
    change = make_change({"m.py": (old, new)})
    [only] = infer(backend(bandit=False), change)
    [every] = infer(backend(bandit=False, only_changed_lines=False), change)
    assert [(f.rule_id, f.line) for f in only.findings] == [("ruff:F401", 2)]
    assert [(f.rule_id, f.line) for f in every.findings] == [("ruff:F401", 1), ("ruff:F401", 2)]


def test_file_missing_from_diff_counts_whole_only_when_new_or_diff_truncated():
    extra_modified = ChangedFile(path="m.py", status="modified", content="import os\n")
    extra_added = ChangedFile(path="n.py", status="added", content="import os\n")
    change = make_change({}, extra=[extra_modified, extra_added])
    [p] = infer(backend(bandit=False), change)
    assert [f.path for f in p.findings] == ["n.py"]
    truncated = make_change({}, extra=[extra_modified, extra_added], truncated=True)
    [q] = infer(backend(bandit=False), truncated)
    assert [f.path for f in q.findings] == ["m.py", "n.py"]


# ---------------------------------------------------------------- filters and params


def test_filters_suppress_rules_limit_severity_and_count():
    change = make_change({"a.py": (None, VULNERABLE)})
    [base] = infer(backend(), change)
    [suppressed] = infer(backend(filters=[{"suppress_rule": "ruff:F401"}]), change)
    [severe] = infer(backend(filters=[{"min_severity": "high"}]), change)
    [top] = infer(backend(filters=[{"max_findings": 1}]), change)
    assert "ruff:F401" in by_rule(base)
    assert set(by_rule(suppressed)) == set(by_rule(base)) - {"ruff:F401"}
    assert [f.rule_id for f in severe.findings] == ["bandit:B602"]
    assert [f.rule_id for f in top.findings] == ["bandit:B602"]


def test_two_specs_with_different_params_give_different_results():
    change = make_change({"a.py": (None, VULNERABLE)}, message="Fix shell call")
    [v1] = infer(backend(change_type="paths"), change)
    [v2] = infer(backend(ruff_select=["F"], bandit=False, change_type="message"), change)
    assert {f.source for f in v1.findings} == {"ruff", "bandit"}
    assert set(by_rule(v2)) == {"ruff:F401"}
    assert v1.change_type.label == "feature"  # paths and diff: a new def
    assert v2.change_type.label == "bug_fix"  # message only
    assert v2.suggested_message == "fix: Fix shell call"


@pytest.mark.parametrize("params", [
    {"unknown_knob": 1},
    {"ruff_select": ["--config=evil.toml"]},
    {"change_type": "vibes"},
    {"severity_overrides": {"ruff:F401": "urgent"}},
    {"tool_timeout_s": 0},
    {"tool_timeout_s": "fast"},
    {"ruff_select": "F"},
    {"bandit": "no"},
    {"max_file_bytes": 1.5},
])
def test_bad_params_are_config_errors(params):
    with pytest.raises(ConfigError):
        backend(**params)


@pytest.mark.parametrize("bad", [{"suppress_rule": 3}, {"max_findings": -1}, {"nope": 1},
                                 {"min_severity": "low", "max_findings": 2}])
def test_bad_filters_are_config_errors(bad):
    with pytest.raises(ConfigError):
        backend(filters=[bad])


def test_build_backend_and_batch_order():
    b = build_backend(VersionSpec(id="an", backend="analyzers"))
    assert isinstance(b, AnalyzerBackend)
    changes = [make_change({f"m{i}.py": (None, "import os\n" * (i + 1))}) for i in range(3)]
    preds = infer(b, *changes)
    assert [len(p.findings) for p in preds] == [1, 2, 3]
    asyncio.run(b.close())


def test_change_without_python_files_spawns_nothing(monkeypatch):
    async def forbidden(*a, **k):
        raise AssertionError("no process may be started")

    monkeypatch.setattr(asyncio, "create_subprocess_exec", forbidden)
    change = make_change({"docs/guide.md": (None, "# Guide\n")}, message="Document setup")
    [p] = infer(backend(), change)
    assert p.findings == []
    assert p.change_type.label == "docs"
    assert p.risk.level == "low"
    assert p.suggested_message == "docs: Document setup"


# ---------------------------------------------------------------- untrusted configuration


HOSTILE_CONFIG = {
    "pyproject.toml": '[tool.ruff]\nselect = []\n[tool.ruff.lint]\nignore = ["F401"]\n'
                      '[tool.bandit]\nskips = ["B602"]\n',
    "ruff.toml": 'select = []\n[lint]\nignore = ["F401"]\n',
    ".ruff.toml": 'lint.ignore = ["F401", "E9", "S"]\n',
    ".bandit": "[bandit]\nskips: B602,B404\n",
    "tox.ini": "[flake8]\nignore = F401\n",
}


def test_repository_config_and_import_hooks_change_nothing(private_tmp, tmp_path):
    marker = tmp_path / "pwned"
    hook = f"import os; open({str(marker)!r}, 'w')"
    payload = f"open({str(marker)!r}, 'w').write('x')\n"
    hostile = dict(HOSTILE_CONFIG)
    hostile[".pylintrc"] = f'[MASTER]\ninit-hook="{hook}"\n'
    hostile["setup.cfg"] = f'[pylint]\ninit-hook="{hook}"\n[flake8]\nignore = F401\n'
    # Modules the tools would import if the analysed directory were on their sys.path.
    for module in ("yaml.py", "json.py", "sitecustomize.py", "usercustomize.py", "ast.py",
                   "stevedore.py", "bandit.py"):
        hostile[module] = payload
    clean = make_change({"pkg/run.py": (None, VULNERABLE)})
    attacked = make_change({"pkg/run.py": (None, VULNERABLE),
                            **{p: (None, c) for p, c in hostile.items()}})
    [p_clean, p_attacked] = infer(backend(), clean, attacked)
    run_py = [(f.rule_id, f.line, f.fingerprint) for f in p_attacked.findings
              if f.path == "pkg/run.py"]
    assert run_py == [(f.rule_id, f.line, f.fingerprint) for f in p_clean.findings]
    assert {"ruff:F401", "bandit:B602"} <= {r for r, _, _ in run_py}
    assert not marker.exists()
    assert list(private_tmp.iterdir()) == []  # sandboxes are removed afterwards


def test_only_python_files_are_staged(tmp_path):
    files = [ChangedFile(path=p, content=c) for p, c in HOSTILE_CONFIG.items()]
    files.append(ChangedFile(path="pkg/ok.py", content="x = 1\n"))
    root = tmp_path / "root"
    root.mkdir()
    staged = stage_files(root, files, 400_000)
    assert list(staged) == ["pkg/ok.py"]
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == ["pkg", "pkg/ok.py"]


# ---------------------------------------------------------------- hostile paths and contents


@pytest.mark.parametrize(("path", "expected"), [
    ("pkg/a.py", "pkg/a.py"),
    ("./pkg//a.py", "pkg/a.py"),
    ("-rf.py", "-rf.py"),
    ("../../etc/passwd", None),
    ("a/../../escape.py", None),
    ("/etc/passwd", None),
    ("/tmp/abs.py", None),
    ("C:/win.py", None),
    ("a\\..\\b.py", None),
    ("nul\0.py", None),
    ("new\nline.py", None),
    ("", None),
    ("x" * 300 + ".py", None),
])
def test_safe_relpath(path, expected):
    assert safe_relpath(path) == expected


def test_traversal_and_absolute_paths_are_skipped(private_tmp, tmp_path):
    outside = tmp_path / "abs_target.py"
    evil = [
        ChangedFile(path="../../escape.py", status="added", content="import os\n"),
        ChangedFile(path="a/../../../escape2.py", status="added", content="import os\n"),
        ChangedFile(path=str(outside), status="added", content="import os\n"),
        ChangedFile(path="../../etc/passwd", status="added", content="root:x:0:0\n"),
    ]
    change = make_change({"good.py": (None, "import os\n"), "-rf.py": (None, "import sys\n")},
                         extra=evil)
    [p] = infer(backend(bandit=False, only_changed_lines=False), change)
    assert sorted(f.path for f in p.findings) == ["-rf.py", "good.py"]
    assert not outside.exists()
    assert not list(tmp_path.rglob("escape*.py"))
    assert list(private_tmp.iterdir()) == []


def test_symlinks_are_never_followed(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "file.py").symlink_to(outside / "target.py")
    files = [ChangedFile(path="link/x.py", content="x = 1\n"),
             ChangedFile(path="file.py", content="x = 1\n"),
             ChangedFile(path="fine.py", content="x = 1\n")]
    assert list(stage_files(root, files, 400_000)) == ["fine.py"]
    assert list(outside.iterdir()) == []


def test_binary_junk_and_huge_files_do_not_crash(private_tmp):
    junk = bytes(range(256)).decode("utf-8", "replace") * 4
    change = make_change({
        "nul.py": (None, "import os\n\0\0\0binary"),
        "junk.py": (None, junk),
        "huge.py": (None, "import os\n" + "x = 1\n" * (5 * 1024 * 1024 // 6)),
        "ok.py": (None, "import os\n"),
    })
    started = time.monotonic()
    [p] = infer(backend(), change)
    assert time.monotonic() - started < 20
    paths = {f.path for f in p.findings}
    assert "ok.py" in paths
    assert "nul.py" not in paths and "huge.py" not in paths  # skipped, not analysed
    assert list(private_tmp.iterdir()) == []


def test_max_file_bytes_is_a_param():
    change = make_change({"a.py": (None, "import os\n" + "# pad\n" * 100)})
    [small] = infer(backend(bandit=False, max_file_bytes=100), change)
    [large] = infer(backend(bandit=False), change)
    assert small.findings == [] and len(large.findings) == 1


# ---------------------------------------------------------------- tool failures


def fake_ruff(monkeypatch, script):
    monkeypatch.setattr(analyzers.ruff, "ruff_argv", lambda: [sys.executable, "-c", script])


def test_tool_timeout_is_a_backend_error_and_kills_the_process_group(monkeypatch, tmp_path):
    pidfile = tmp_path / "child.pid"
    # The tool starts a grandchild in the same process group, then hangs.
    fake_ruff(monkeypatch, (
        "import subprocess, sys, time\n"
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(c.pid))\n"
        "time.sleep(60)\n"))
    started = time.monotonic()
    with pytest.raises(BackendError, match="timed out"):
        infer(backend(tool_timeout_s=1.5), make_change({"a.py": (None, "x = 1\n")}))
    assert time.monotonic() - started < 10
    child = int(pidfile.read_text())
    for _ in range(50):  # the grandchild was killed with its group (zombie until reaped by init)
        try:
            with open(f"/proc/{child}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            break
        if state in ("Z", "X"):
            break
        time.sleep(0.1)
    else:
        os.kill(child, 9)
        pytest.fail("grandchild survived the timeout")


@pytest.mark.parametrize(("script", "match"), [
    ("import sys; sys.stderr.write('boom'); sys.exit(2)", "exit status 2.*boom"),
    ("print('not json')", "not JSON"),
    ("import sys; sys.stdout.write('x' * (9 * 1024 * 1024))", "output over"),
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "exit status -9"),
])
def test_tool_crash_or_garbage_is_a_backend_error(monkeypatch, script, match):
    fake_ruff(monkeypatch, script)
    with pytest.raises(BackendError, match=match):
        infer(backend(), make_change({"a.py": (None, "x = 1\n")}))


def test_tool_runs_with_a_clean_environment_and_limits(monkeypatch, tmp_path):
    out = tmp_path / "env.txt"
    monkeypatch.setenv("PYTHONPATH", "/nowhere")
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    fake_ruff(monkeypatch, (
        "import os, resource, json\n"
        f"open({str(out)!r}, 'w').write(json.dumps([dict(os.environ), os.getcwd(),"
        " resource.getrlimit(resource.RLIMIT_AS)[0], os.getsid(0) == os.getpid()]))\n"
        "print('[]')\n"))
    infer(backend(bandit=False), make_change({"a.py": (None, "x = 1\n")}))
    env, cwd, limit_as, own_session = json.loads(out.read_text())
    assert "PYTHONPATH" not in env and "SECRET_TOKEN" not in env
    assert env["HOME"] != cwd and cwd.endswith("/src")
    assert limit_as == 2 << 30
    assert own_session


def test_at_most_two_changes_are_analysed_at_once_and_reuse_across_loops(monkeypatch):
    running = peak = 0
    real = analyzers.AnalyzerBackend._analyse

    async def counting(self, change, base):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            return await real(self, change, base)
        finally:
            running -= 1

    monkeypatch.setattr(analyzers.AnalyzerBackend, "_analyse", counting)
    b = backend(bandit=False)
    changes = [make_change({f"m{i}.py": (None, "import os\n")}) for i in range(5)]
    assert len(infer(b, *changes)) == 5
    assert peak == 2
    assert len(infer(b, *changes)) == 5  # a second event loop, same backend


def test_the_warm_bandit_process_is_our_file_under_python_isolated_in_a_clean_env(
        monkeypatch, tmp_path):
    from agents.backends.analyzers.warm_pool import SERVER, WarmBandit

    monkeypatch.setenv("PYTHONPATH", "/nowhere")
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    home = tmp_path / "home"
    home.mkdir()
    worker = WarmBandit(home, timeout_s=20)
    try:
        pid = worker.proc.pid
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        assert [sys.executable.encode(), b"-I", str(SERVER).encode()] == argv[-4:-1]
        assert SERVER.name == "bandit_server.py" and SERVER.parent.name == "analyzers"
        assert not any(e.startswith((b"PYTHONPATH=", b"SECRET_TOKEN=")) for e in env)
        assert os.getsid(pid) == pid  # its own session: the whole group is killed on failure
    finally:
        worker.kill()
    assert worker.proc.poll() is not None
