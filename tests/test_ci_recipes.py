"""The CI recipes of examples/ci run as written: each one's shell steps, with the variables its
CI would set for a pull request (merge request) or a push, against the embedded stack (real
broker, worker, chDB) and a fixture repository whose newest commit has a high finding.

Only what cannot run here is left out: the steps that install (`pip install`, `apt-get`) and
the actions (`uses:`, e.g. upload-sarif), whose inputs are checked instead. Every `${{ }}`
expression of the GitHub workflow is evaluated from the event the test simulates; one the test
does not know fails it, so the recipe cannot come to depend on something untested."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from .conftest import ROOT, TEST_SESSION_TIMEOUT, make_stack
from .test_ci_formats import SARIF_SCHEMA
from .test_ci_gate import HIGH, LOW, config

pytestmark = pytest.mark.integration

RECIPES = ROOT / "examples" / "ci"
ZEROS = "0" * 40
BIN = str(Path(sys.executable).parent)  # where the `reviewbus` console script is


@pytest.fixture(scope="module")
def stack(tmp_path_factory, broker):
    s = make_stack(tmp_path_factory, broker, config([HIGH, LOW]), "recipes")
    yield s
    s.stop()


@pytest.fixture
def repo(tmp_path) -> dict[str, str | Path]:
    """base (a README), then two commits: one harmless, one with the high finding."""
    path = tmp_path / "repo"
    path.mkdir()

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(path), *args], check=True, text=True,
                              capture_output=True).stdout.strip()

    git("init", "-q", "-b", "main")
    git("config", "user.email", "ci@example.com")
    git("config", "user.name", "CI")
    shas = []
    for name, text, message in (("README.md", "# app\n", "docs: readme"),
                                ("app/__init__.py", "", "feat: package"),
                                ("app/run.py", "import os\nos.system(cmd, shell=True)\n",
                                 "feat: run a command")):
        (path / name).parent.mkdir(exist_ok=True)
        (path / name).write_text(text)
        git("add", name)
        git("commit", "-q", "-m", message)
        shas.append(git("rev-parse", "HEAD"))
    return {"path": path, "base": shas[0], "head": shas[2]}


def base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REVIEWBUS_")}
    env.update(TEST_SESSION_TIMEOUT)
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    env["HOME"] = str(tmp_path)
    env["REVIEWBUS_HOME"] = str(tmp_path / "no-stack-here")  # the runner's: nothing local
    return env


def run_script(script: str, env: dict[str, str], cwd: Path, shell: str) -> subprocess.CompletedProcess:
    return subprocess.run([shell, "-e", "-c", script], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=240)


def assert_supported_python(version: str) -> None:
    """The recipe's Python is one the package installs on (pyproject's requires-python)."""
    import tomllib

    from packaging.specifiers import SpecifierSet

    spec = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert f"{version}.0" in SpecifierSet(spec), (version, spec)


# -- GitHub Actions ----------------------------------------------------------------------------

EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def evaluate(expr: str, context: dict[str, str]) -> str:
    """The `a || b || 'literal'` subset of GitHub's expressions: the first non-empty term."""
    for term in (t.strip() for t in expr.split("||")):
        if term.startswith("'") and term.endswith("'"):
            value = term[1:-1]
        else:
            assert term in context, f"the workflow reads {term!r}, which this test does not set"
            value = context[term]
        if value:
            return value
    return ""


def substitute(value: object, context: dict[str, str]) -> str:
    return EXPRESSION.sub(lambda m: evaluate(m[1], context), str(value))


def github_context(stack, event: str, repo: dict, fail_on: str | None) -> dict[str, str]:
    pull = event == "pull_request"
    context = {
        "secrets.REVIEWBUS_KAFKA": stack.settings.kafka,
        "secrets.REVIEWBUS_KAFKA_SASL_PASSWORD": "",
        "vars.REVIEWBUS_KAFKA_SECURITY_PROTOCOL": "", "vars.REVIEWBUS_KAFKA_SASL_MECHANISM": "",
        "vars.REVIEWBUS_KAFKA_SASL_USERNAME": "", "vars.REVIEWBUS_PACKAGE": "",
        "vars.REVIEWBUS_TOPIC_PREFIX": stack.settings.topic_prefix,
        "vars.REVIEWBUS_FAIL_ON": fail_on or "",
        "github.event.pull_request.base.sha": repo["base"] if pull else "",
        "github.event.pull_request.head.sha": repo["head"] if pull else "",
        "github.event.pull_request.number": "7" if pull else "",
        # a push of a new branch has no before: the head commit alone
        "github.event.before": "" if pull else ZEROS,
        "github.sha": repo["head"],
    }
    return context


def run_github(stack, repo: dict, tmp_path: Path, event: str, fail_on: str | None = None):
    workflow = yaml.safe_load((RECIPES / "github" / "reviewbus.yml").read_text())
    triggers = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1: on is True
    assert set(triggers) == {"push", "pull_request"}
    assert workflow["permissions"]["security-events"] == "write"
    job = workflow["jobs"]["review"]
    context = github_context(stack, event, repo, fail_on)
    env = base_env(tmp_path)
    env.update({k: substitute(v, context) for k, v in job["env"].items()})
    summary, output = tmp_path / "step-summary.md", tmp_path / "github-output"
    env.update({"GITHUB_STEP_SUMMARY": str(summary), "GITHUB_OUTPUT": str(output),
                "GITHUB_WORKSPACE": str(repo["path"])})
    ran, uses = [], []
    for step in job["steps"]:
        if "uses" in step:
            uses.append(step)
            continue
        if step["name"].startswith("Install"):
            assert "pip install" in step["run"]
            continue
        step_env = {**env, **{k: substitute(v, context) for k, v in step.get("env", {}).items()}}
        assert "${{" not in step["run"], "expressions belong in env:, not in a script"
        ran.append(run_script(step["run"], step_env, repo["path"], "bash"))
    assert len(ran) == 1, "one shell step: the review"
    python = next(s for s in uses if s["uses"].startswith("actions/setup-python@"))
    assert_supported_python(str(python["with"]["python-version"]))
    checkout = next(s for s in uses if s["uses"].startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0  # submit reads the commits from git
    upload = next(s for s in uses if s["uses"].startswith("github/codeql-action/upload-sarif@"))
    assert upload["if"].startswith("always()")
    return ran[0], upload, summary


def test_github_pull_request_gates_annotates_and_writes_sarif(stack, repo, tmp_path):
    done, upload, summary = run_github(stack, repo, tmp_path, "pull_request")
    assert done.returncode == 1, done.stderr  # the high finding fails the gate
    annotations = [line for line in done.stdout.splitlines() if line.startswith("::")]
    # two commits after the base, each answered with the high and the low finding
    assert len(annotations) == 4, done.stdout
    assert sum(a.startswith("::error file=app/run.py,line=2,") for a in annotations) == 2
    sarif_path = repo["path"] / upload["with"]["sarif_file"]
    sarif = json.loads(sarif_path.read_text())
    jsonschema.Draft4Validator(json.loads(SARIF_SCHEMA.read_text())).validate(sarif)
    results = [r for run in sarif["runs"] for r in run["results"]]
    assert sorted(r["ruleId"] for r in results) == ["bandit.B602"] * 2 + ["ruff.F401"] * 2
    text = summary.read_text()
    assert "2 commits reviewed, 4 findings." in text
    assert "Gate `--fail-on high`: **failed**." in text


def test_github_push_of_a_new_branch_reviews_the_head_and_passes_a_higher_gate(
        stack, repo, tmp_path):
    done, upload, summary = run_github(stack, repo, tmp_path, "push", fail_on="critical")
    assert done.returncode == 0, done.stderr
    assert "::error file=app/run.py,line=2," in done.stdout
    assert "1 commits reviewed, 2 findings." in summary.read_text()
    assert (repo["path"] / upload["with"]["sarif_file"]).exists()


def test_github_without_a_broker_is_not_reviewed_and_uploads_nothing(stack, repo, tmp_path):
    class NoBroker:
        settings = stack.settings.model_copy(update={"kafka": "127.0.0.1:1"})

    done, upload, summary = run_github(NoBroker, repo, tmp_path, "pull_request")
    assert done.returncode == 3, done.stderr
    assert not (repo["path"] / upload["with"]["sarif_file"]).exists()
    assert "Not reviewed" in summary.read_text()


# -- GitLab CI ---------------------------------------------------------------------------------

def run_gitlab(stack, repo: dict, tmp_path: Path, merge_request: bool):
    job = yaml.safe_load((RECIPES / "gitlab" / ".gitlab-ci.yml").read_text())["reviewbus"]
    assert_supported_python(re.fullmatch(r"python:([\d.]+)-slim", job["image"])[1])
    assert job["variables"]["GIT_DEPTH"] == "0"
    assert any("pip install" in line for line in job["before_script"])
    env = base_env(tmp_path)
    env.update({k: str(v) for k, v in job["variables"].items()})
    env.update({  # what GitLab sets, and the project's CI/CD variables
        "CI_COMMIT_SHA": repo["head"], "CI_PIPELINE_SOURCE":
            "merge_request_event" if merge_request else "push",
        "CI_COMMIT_BEFORE_SHA": ZEROS if merge_request else repo["base"],
        "REVIEWBUS_KAFKA": stack.settings.kafka,
        "REVIEWBUS_TOPIC_PREFIX": stack.settings.topic_prefix})
    if merge_request:
        env.update({"CI_MERGE_REQUEST_DIFF_BASE_SHA": repo["base"], "CI_MERGE_REQUEST_IID": "12"})
    # GitLab runs the script lines as one script, in sh for images without bash
    done = run_script("\n".join(job["script"]), env, repo["path"], "sh")
    return done, job


def test_gitlab_merge_request_gates_and_writes_code_quality(stack, repo, tmp_path):
    done, job = run_gitlab(stack, repo, tmp_path, merge_request=True)
    assert done.returncode == 1, done.stderr
    report_name = job["artifacts"]["reports"]["codequality"]
    assert job["artifacts"]["when"] == "always"
    issues = json.loads((repo["path"] / report_name).read_text())
    assert sorted(i["check_name"] for i in issues) == ["bandit.B602", "ruff.F401"]
    high = next(i for i in issues if i["check_name"] == "bandit.B602")
    assert high["severity"] == "critical" and high["location"] == {
        "path": "app/run.py", "lines": {"begin": 2}}
    assert len({i["fingerprint"] for i in issues}) == 2
    summary = repo["path"] / job["artifacts"]["paths"][0]
    assert "bandit.B602" in summary.read_text()


def test_gitlab_push_reviews_before_to_after(stack, repo, tmp_path):
    done, _ = run_gitlab(stack, repo, tmp_path, merge_request=False)
    assert done.returncode == 1, done.stderr
    # the text format: one block per reviewed commit, both commits after the base
    assert done.stdout.count("gate-v1 [primary]") == 2, done.stdout
