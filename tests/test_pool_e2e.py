"""A version registered while the worker runs is served at once, without a restart, through
the shared pool topic `inference._pool` (real broker, real chDB, one worker): its shadow
answers and shadow comparisons reach ClickHouse, `reviewbus replay --to` it works, and the
next start gives it its own inference topic."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from infra.kafka import existing_topics
from infra.procs import read_json
from schemas import ChangedFile, CommitEvent
from streams import names
from streams.cli import main as cli
from streams.services.bus import submit

from .conftest import make_stack

pytestmark = pytest.mark.integration

CONFIG = {
    "task": "code-review",
    "versions": [{"id": "base", "backend": "fake", "initial_state": "stable",
                  "params": {"label": "feature"}}],
    "quarantine": {"triggers": []},
    "inference": {"batch_size": 4, "batch_wait_s": 0.02},
}
LATE = "late"


def commits(start: int, count: int) -> list[CommitEvent]:
    return [CommitEvent(repo="org/pool", sha=hashlib.sha1(f"pool{i}".encode()).hexdigest(),
                        pull_request=20_000 + i, message=f"docs: page {i}", diff=f"+x = {i}\n",
                        files=[ChangedFile(path=f"docs/p{i}.md", added=1, deleted=0,
                                           content=f"x = {i}\n")])
            for i in range(start, start + count)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, broker):
    s = make_stack(tmp_path_factory, broker, CONFIG, "pool")
    yield s
    s.stop()


def stack_versions(stack, predicate, timeout: float = 30.0) -> dict[str, str]:
    from tests.test_lifecycle_e2e import worker_states

    return worker_states(stack, predicate, timeout)


def _use(stack, monkeypatch) -> None:
    for key, value in stack.env.items():
        monkeypatch.setenv(key, value)


def test_a_version_registered_while_the_worker_runs_answers_without_a_restart(
        stack, monkeypatch, tmp_path, capsys):
    _use(stack, monkeypatch)
    pid = stack.proc.pid
    started = read_json(stack.home / "worker.json")
    asyncio.run(submit(stack.settings, commits(0, 4), wait=True, timeout=120))
    spec = tmp_path / "late.yaml"
    spec.write_text(f"id: {LATE}\nbackend: fake\nparams: {{label: docs}}\n")
    assert cli(["versions", "register", str(spec), "--reason", "served at once"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"registered {LATE} as shadow") and "at once" in out
    # Once the worker's registry folded the event (its /health lists the version)...
    health = stack_versions(stack, lambda v: v.get(LATE) == "shadow")
    assert health.get(LATE) == "shadow", health
    # ... the worker has no topic of its own for it: only the pool's.
    topics = asyncio.run(existing_topics(stack.settings, stack.settings.kafka))
    assert names.inference_topic(stack.settings, LATE) not in topics
    assert names.pool_topic(stack.settings) in topics

    asyncio.run(submit(stack.settings, commits(4, 10), wait=True, timeout=120))
    rows = stack.wait_for(
        "SELECT count() AS n, countIf(status = 'ok') AS ok, countIf(predicted_label = 'docs') "
        f"AS docs FROM interactions FINAL WHERE version_id = '{LATE}' AND role = 'shadow'",
        lambda r: r[0]["n"] >= 10, timeout=60)
    assert rows[0] == {"n": 10, "ok": 10, "docs": 10}, stack.log_tail()
    compared = stack.wait_for(
        "SELECT count() AS n, countIf(change_type_agree) AS agree FROM shadow_comparisons FINAL "
        f"WHERE candidate_version = '{LATE}' AND stable_version = 'base'",
        lambda r: r[0]["n"] >= 10, timeout=60)
    assert compared[0] == {"n": 10, "agree": 0}  # docs against feature, every time
    # The users' findings still came from the stable version, the only one serving.
    served = stack.query("SELECT DISTINCT version_id FROM interactions FINAL "
                         "WHERE role = 'primary'")
    assert served == [{"version_id": "base"}]
    # No restart: the same process, the same start (a restart in place keeps the pid).
    assert stack.proc.poll() is None and stack.proc.pid == pid
    assert read_json(stack.home / "worker.json") == started
    assert "restarting this worker in place" not in (stack.home / "worker.log").read_text()


def test_replay_to_a_version_registered_since_the_start_runs_without_a_restart(
        stack, monkeypatch, capsys):
    _use(stack, monkeypatch)
    pid = stack.proc.pid
    capsys.readouterr()
    assert cli(["replay", "--to", LATE, "--limit", "5", "--wait", "--timeout", "60"]) == 0, \
        capsys.readouterr().err
    rows = stack.query("SELECT run_id, count() AS n, countIf(status = 'ok') AS ok "
                       f"FROM interactions FINAL WHERE version_id = '{LATE}' "
                       "AND role = 'replay' GROUP BY run_id")
    assert len(rows) == 1 and rows[0]["n"] == 5 and rows[0]["ok"] == 5, rows
    assert stack.proc.pid == pid


def test_the_next_start_gives_it_its_own_topic(stack):
    stack.stop()
    stack.start()
    topics = asyncio.run(existing_topics(stack.settings, stack.settings.kafka))
    assert names.inference_topic(stack.settings, LATE) in topics
    asyncio.run(submit(stack.settings, commits(14, 4), wait=True, timeout=120))
    stack.wait_for(f"SELECT count() AS n FROM interactions FINAL WHERE version_id = '{LATE}' "
                   "AND role = 'shadow'", lambda r: r[0]["n"] >= 14, timeout=60)
