"""Hostile commits through the real worker (analyzers backend) with secrets planted in its
settings: repository config files, an init-hook, # nosec and # noqa, path traversal, a path
conflict, code that crashes the parser, a file of many megabytes. The analyser stays in its
box, the worker goes on, every request gets an answer -- and afterwards the planted secrets are
nowhere: not in the worker's log, not in any event on any topic, not in any ClickHouse row."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from infra.kafka import client_kwargs, read_to_end
from schemas import ChangedFile, CommitEvent, Role, Status
from streams.cli import main as cli
from streams.services.bus import submit

from .conftest import Stack

pytestmark = pytest.mark.integration

SECRETS = {
    "REVIEWBUS_LITELLM_API_KEY": "sk-planted-LITELLM-7c1f0e9a",
    "REVIEWBUS_CLICKHOUSE_PASSWORD": "planted-CH-pass-5b2d",
    "REVIEWBUS_KAFKA_SASL_PASSWORD": "planted-SASL-pass-a41c",
}
CONFIG = {
    "task": "code-review",
    "versions": [
        {"id": "an", "backend": "analyzers", "initial_state": "stable",
         "params": {"ruff_select": ["E9", "F", "B"], "bandit": True, "change_type": "paths",
                    "tool_timeout_s": 20}},
        {"id": "backup", "backend": "fake", "initial_state": "shadow",
         "params": {"label": "chore", "findings": 1}},
    ],
    "rotation": {"interval_s": 3600},
    "inference": {"batch_size": 1, "batch_wait_s": 0.01},
}
VULNERABLE = ("import os  # noqa: F401\nimport subprocess\n\n\ndef run(cmd):\n"
              "    subprocess.call(cmd, shell=True)  # nosec\n")
REPO_CONFIG = {
    "pyproject.toml": ('[tool.ruff]\nexclude = ["*"]\n[tool.bandit]\nskips = ["B602", "B404"]\n'
                       '[tool.pylint.MASTER]\ninit-hook = "import os; os.system(\'touch PWNED\')"\n'),
    "ruff.toml": 'exclude = ["*"]\n',
    ".bandit": "[bandit]\nskips = B602,B404\nexclude = .\n",
    "setup.cfg": "[flake8]\nexclude = *\n[bandit]\nskips = B602\n",
    ".pylintrc": "[MASTER]\ninit-hook='import os; os.system(\"touch PWNED\")'\n",
    "sitecustomize.py": "import os\nos.system('touch PWNED')\n",
    "conftest.py": "import os\nos.system('touch PWNED')\n",
}


def commit(tag: str, files: dict[str, str], message: str = "feat: hostile") -> CommitEvent:
    return CommitEvent(repo="evil/repo", sha=hashlib.sha1(tag.encode()).hexdigest()[:12],
                       message=message, event_id=f"sec-{tag}",
                       files=[ChangedFile(path=p, status="added", content=c)
                              for p, c in files.items()])


@pytest.fixture(scope="module")
def stack(tmp_path_factory, broker):
    s = Stack(tmp_path_factory.mktemp("security"), broker, CONFIG)
    s.env.update(SECRETS)
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def served(stack):
    events = [
        commit("config", {**REPO_CONFIG, "app.py": VULNERABLE,
                          "../../etc/passwd.py": "import os\n", "/etc/cron.d/evil.py": "x\n",
                          "pkg/a.py": "import sys\n", "pkg/a.py/b.py": "import json\n"}),
        commit("parser", {"chain.py": "x = " + " + ".join(["1"] * 60_000) + "\n",
                          "nested.py": "x = " + "(" * 3000 + "1" + ")" * 3000 + "\n"}),
        commit("after", {"fine.py": "import os\n"}, message="fix: later commit"),
    ]
    results = asyncio.run(submit(stack.settings, events, wait=True, timeout=180))
    return {r.request_id: r for r in results}


def test_repository_config_cannot_hide_findings_or_run_code(stack, served):
    r = served["sec-config"]
    assert r.status == Status.ok and r.version_id == "an" and r.role == Role.primary
    rules = {(f.path, f.rule_id) for f in r.findings}
    assert ("app.py", "ruff:F401") in rules  # `# noqa` and ruff.toml's exclude ignored
    assert any(path == "app.py" and rule.startswith("bandit:B60") for path, rule in rules)
    assert all(not f.path.startswith(("/", "..")) and "/../" not in f.path for f in r.findings)
    assert {f.path for f in r.findings} <= {"app.py", "pkg/a.py", "sitecustomize.py",
                                            "conftest.py"}
    assert not list(stack.home.rglob("PWNED"))


def test_code_that_crashes_the_parser_is_healed_and_the_worker_goes_on(stack, served):
    r = served["sec-parser"]
    assert r.status == Status.ok
    if r.version_id == "backup":  # the analyser died on it: the fallback answered
        assert r.role == Role.fallback and r.fallback_from == "an"
        failure = stack.wait_for("SELECT error FROM failures FINAL WHERE version_id = 'an' "
                                 "AND request_id = 'sec-parser'", lambda rows: len(rows) == 1)
        assert "ruff" in failure[0]["error"]
    after = served["sec-after"]
    assert after.status == Status.ok and after.version_id == "an"
    assert any(f.rule_id == "ruff:F401" for f in after.findings)
    assert stack.proc.poll() is None


def test_a_file_of_many_megabytes_is_refused_at_intake(stack, served):
    big = commit("big", {"huge.py": "x = 1\n" * 600_000})  # 3.6 MB
    asyncio.run(submit(stack.settings, [big], wait=False))
    rows = stack.wait_for("SELECT error, payload_size FROM dead_letters FINAL "
                          "WHERE positionCaseInsensitive(error, 'MAX_FILE_BYTES') > 0",
                          lambda rows: len(rows) == 1)
    assert "huge.py" in rows[0]["error"] and rows[0]["payload_size"] > 3_000_000


async def every_topic(settings) -> dict[str, list[bytes]]:
    admin = AIOKafkaAdminClient(**client_kwargs(settings, settings.kafka))
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics()
                if t.startswith((settings.topic_prefix, settings.resolved_app_id()))]
    finally:
        await admin.close()
    return {t: await read_to_end(settings, settings.kafka, t) for t in sorted(mine)}


def test_planted_secrets_are_nowhere(stack, served, capsys, monkeypatch):
    stack.wait_for("SELECT count() AS n FROM dead_letters FINAL", lambda r: r[0]["n"] >= 1)
    stack.wait_for("SELECT count() AS n FROM interactions FINAL", lambda r: r[0]["n"] >= 6)
    needles = [v.encode() for v in SECRETS.values()]

    topics = asyncio.run(every_topic(stack.settings))
    assert len(topics) >= 14 and sum(len(v) for v in topics.values()) > 20
    for topic, values in topics.items():
        for value in values:
            assert not any(n in value for n in needles), topic

    tables = [r["name"] for r in stack.query("SHOW TABLES")]
    assert {"interactions", "findings", "events_archive", "dead_letters", "lifecycle"} <= set(
        tables)
    for table in tables:
        dump = json.dumps(stack.query(f"SELECT * FROM {table}"), default=str).encode()
        assert not any(n in dump for n in needles), table

    log = (stack.home / "worker.log").read_bytes()
    assert len(log) > 1000 and not any(n in log for n in needles)

    for key, value in {**stack.env, **SECRETS}.items():
        monkeypatch.setenv(key, value)
    assert cli(["status", "--format", "json"]) == 0
    assert cli(["sql", "SELECT * FROM lifecycle", "--format", "json"]) == 0
    out = capsys.readouterr()
    assert not any(n.decode() in out.out + out.err for n in needles)
