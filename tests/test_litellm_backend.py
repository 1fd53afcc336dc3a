"""The litellm backend through the real LiteLLM client: against a local OpenAI-compatible server
(tests/llmserver.py) and with LiteLLM's `mock_response` for error paths; then end to end in a
real worker, where interactions rows carry usage, cost, model and prompt hash."""

from __future__ import annotations

import asyncio
import json
import logging
import os

import pytest
import yaml

from agents.backends.base import build_backend
from agents.backends.litellm import (
    LiteLLMBackend,
    LiteLLMParams,
    build_messages,
    parse_review,
    prompt_hash,
)
from agents.breaker import CircuitBreaker
from agents.errors import ConfigError, InvalidOutput
from agents.fingerprint import fingerprint
from agents.inference import run_batch
from infra.config_file import load_config
from schemas import ChangedFile, InferenceRequest, NormalizedChange, Role, Status, VersionSpec

from .llmserver import COMPLETION_TOKENS, PROMPT_TOKENS, FakeLLMServer, user_text

KEY = "sk-test-4f9c2b7e1d8a6350aa"
MODEL = "openai/reviewbus-test"
IN_PRICE, OUT_PRICE = 2e-6, 8e-6
RUNNER = "import subprocess\n\n\ndef run(cmd):\n    return subprocess.run(cmd, shell=True)\n"
DIFF = ("diff --git a/app/runner.py b/app/runner.py\nnew file mode 100644\n--- /dev/null\n"
        "+++ b/app/runner.py\n@@ -0,0 +1,5 @@\n"
        + "".join(f"+{line}\n" for line in RUNNER.splitlines()))


@pytest.fixture(scope="module")
def server():
    s = FakeLLMServer().start()
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("REVIEWBUS_LITELLM_API_KEY", KEY)


def change(message: str = "add a command runner", sha: str = "a1", diff: str = DIFF) -> NormalizedChange:
    return NormalizedChange(
        repo="org/demo", sha=sha, message=message, diff=diff,
        files=[ChangedFile(path="app/runner.py", status="added", added=5, deleted=0,
                           content=RUNNER)])


def spec(server: FakeLLMServer | None = None, **params) -> VersionSpec:
    base = {"model": MODEL, "seed": 7, "backoff_s": 0.02, "request_timeout_s": 10,
            "input_cost_per_token": IN_PRICE, "output_cost_per_token": OUT_PRICE}
    if server is not None:
        base["api_base"] = server.url
    return VersionSpec(id="llm-v1", backend="litellm", params={**base, **params}, timeout_s=60)


def request(c: NormalizedChange) -> InferenceRequest:
    return InferenceRequest(request_id=f"req-{c.sha}", task="code-review", version_id="llm-v1",
                            role=Role.shadow, change=c)


def run(s: VersionSpec, changes: list[NormalizedChange], backend=None):
    backend = backend or build_backend(s)
    return asyncio.run(run_batch(s, backend, [request(c) for c in changes],
                                 CircuitBreaker(failure_threshold=100)))


def test_request_and_answer_through_the_real_client(server):
    s = spec(server)
    backend = build_backend(s)
    assert isinstance(backend, LiteLLMBackend)
    c = change("add a command runner [[label:feature]] marker-shape")
    [result] = run(s, [c], backend)

    assert result.status == Status.ok, result.error
    [req] = server.requests_with("marker-shape")
    assert req["path"] == "/v1/chat/completions"
    body = req["body"]
    assert body["model"] == "reviewbus-test"
    assert body["temperature"] == 0
    assert body["seed"] == 7
    assert body["response_format"] == {"type": "json_object"}
    assert req["headers"]["authorization"] == f"Bearer {KEY}"
    system, user = body["messages"][0]["content"], body["messages"][1]["content"]
    assert "ONE JSON object and nothing else" in system
    assert "add a command runner" in user and "- app/runner.py (added, +5/-0)" in user
    assert "+    return subprocess.run(cmd, shell=True)" in user

    assert result.change_type.label == "feature"
    assert result.change_type.scores == {"feature": 0.7, "chore": 0.3}
    assert (result.risk.score, result.risk.level) == (0.4, "medium")
    assert result.suggested_message == "feat(runner): add a command runner"
    [f] = result.findings
    assert (f.rule_id, f.path, f.line, f.severity.value, f.dimension.value, f.confidence) == (
        "llm:shell-injection", "app/runner.py", 1, "high", "security", 0.8)
    assert f.fingerprint == fingerprint("llm:shell-injection", "app/runner.py", "import subprocess")
    assert f.source == f"litellm:{MODEL}"
    assert f.suggestion == "use a list argv"

    u = result.usage
    assert (u.prompt_tokens, u.completion_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert u.cost_usd == pytest.approx(PROMPT_TOKENS * IN_PRICE + COMPLETION_TOKENS * OUT_PRICE)
    assert u.model == MODEL
    assert u.prompt_hash == prompt_hash(body["messages"]) == prompt_hash(
        build_messages(c, LiteLLMParams.parse("x", dict(s.params))))
    assert len(u.prompt_hash) == 16


def test_the_diff_is_cut_to_the_budget(server):
    big = DIFF + "".join(f"+line {i} {'x' * 60}\n" for i in range(2000))
    s = spec(server, max_diff_chars=1500)
    [result] = run(s, [change("marker-budget", sha="b2", diff=big)])
    assert result.status == Status.ok, result.error
    user = user_text(server.requests_with("marker-budget")[0])
    assert f"first 1500 of {len(big)} characters shown" in user
    assert "+line 10 " in user and "+line 1999 " not in user


def test_fenced_json_is_accepted_and_unknown_paths_are_dropped(server):
    [result] = run(spec(server), [change("marker-fence [[fence]] [[ghost]] [[label:fix]]", "c3")])
    assert result.status == Status.ok, result.error
    assert result.change_type.label == "bug_fix"  # "fix" names the label
    assert [f.path for f in result.findings] == ["app/runner.py"]


def test_a_finding_on_the_diff_headers_b_path_is_kept_on_the_changed_file(server):
    [result] = run(spec(server), [change("marker-bpath [[bpath]]", "c7")])
    assert result.status == Status.ok, result.error
    [finding] = result.findings
    assert finding.path == "app/runner.py" and finding.line == 1
    # the same fingerprint as the listed path's finding: the same line text
    assert finding.fingerprint == fingerprint("llm:shell-injection", "app/runner.py",
                                              "import subprocess")


def test_a_reasoning_models_think_block_is_skipped(server):
    # LiteLLM itself moves a leading think block of OpenAI-compatible and Ollama answers to
    # `reasoning_content`; this guards that path, the cases below guard parse_review's own.
    [result] = run(spec(server), [change("marker-think [[think]] [[label:docs]]", "c5")])
    assert result.status == Status.ok, result.error
    assert result.change_type.label == "docs"
    assert [f.path for f in result.findings] == ["app/runner.py"]


@pytest.mark.parametrize("content, expected", [
    ("<think>\nall I have is {thoughts}\n</think>\n", "only a reasoning block"),
    ("<think>\nstill thinking, cut by max_tokens {", "never closed"),
    ('Sure. <think>x</think> {"a": 1}', "not JSON"),  # only a leading block is skipped
])
def test_reasoning_blocks_without_an_answer_are_invalid_output(content, expected):
    with pytest.raises(InvalidOutput, match=expected):
        parse_review(content)


def test_an_answer_cut_at_max_tokens_says_so(server):
    [result] = run(spec(server, max_tokens=77), [change("marker-cut [[cut]]", "c6")])
    assert result.status == Status.invalid_output
    assert result.error.startswith("the answer was cut at max_tokens=77 (raise `max_tokens`): ")
    assert "not JSON" in result.error


@pytest.mark.parametrize("marker, expected", [
    ("[[invalid]]", "not JSON"),
    ("[[schema]]", "change_type.label"),
])
def test_invalid_output_is_a_result_not_a_crash(server, marker, expected):
    [result] = run(spec(server), [change(f"marker-invalid {marker}", sha="d4")])
    assert result.status == Status.invalid_output
    assert expected in result.error
    assert result.findings == [] and result.change_type is None


def test_one_poison_answer_fails_alone_and_the_good_answers_are_not_paid_twice(server):
    s = spec(server)
    good = [change(f"marker-poison good {i}", sha=f"e{i}") for i in range(3)]
    bad = change("marker-poison bad [[invalid]]", sha="ee")
    results = run(s, [good[0], bad, good[1], good[2]])
    assert [r.status for r in results] == [Status.ok, Status.invalid_output, Status.ok, Status.ok]
    # 4 calls for the batch, then only the bad one again alone (the others are reused once).
    assert len(server.requests_with("marker-poison")) == 5
    assert len(server.requests_with("marker-poison bad")) == 2
    assert all(r.usage.cost_usd > 0 for r in results if r.status == Status.ok)


def test_transient_errors_are_retried_with_backoff(server):
    s = spec(server, retries=2)
    [result] = run(s, [change("marker-retry [[fail:500x2]]", sha="f5")])
    assert result.status == Status.ok, result.error
    assert len(server.requests_with("marker-retry")) == 3

    [result] = run(spec(server, retries=1), [change("marker-down [[fail:503]]", sha="f6")])
    assert result.status == Status.error
    assert "after 2 attempts" in result.error
    assert len(server.requests_with("marker-down")) == 2


def test_a_slow_model_times_out_per_call(server):
    s = spec(server, request_timeout_s=0.3, retries=1)
    [result] = run(s, [change("marker-slow [[slow:1.5]]", sha="a7")])
    assert result.status == Status.timeout
    assert len(server.requests_with("marker-slow")) == 2


def test_the_key_is_sent_as_a_header_and_never_leaks(server, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    [denied] = run(spec(server, retries=0), [change("marker-auth [[auth]]", sha="a8")])
    [ok] = run(spec(server), [change("marker-keyok", sha="a9")])
    assert server.requests_with("marker-auth")[0]["headers"]["authorization"] == f"Bearer {KEY}"
    assert denied.status == Status.error and "AuthenticationError" in denied.error
    everything = (denied.model_dump_json() + ok.model_dump_json() + caplog.text
                  + "".join(capsys.readouterr()))
    for i in range(len(KEY) - 7):
        assert KEY[i:i + 8] not in everything, f"a piece of the key leaked: {KEY[i:i + 8]}"


def test_mock_response_paths_without_a_server():
    ok_answer = json.dumps({
        "change_type": {"label": "docs", "confidence": 0.9},
        "risk": {"score": 0.1, "level": "low"}, "findings": [],
        "suggested_message": "docs: describe the runner"})
    s = VersionSpec(id="llm-mock", backend="litellm",
                    params={"model": "gpt-4o-mini", "mock_response": ok_answer})
    [result] = run(s, [change()])
    assert result.status == Status.ok, result.error
    assert result.change_type.label == "docs" and result.change_type.scores == {"docs": 0.9}
    assert result.suggested_message == "docs: describe the runner"
    import litellm  # only to read LiteLLM's own price for the expected cost

    price = litellm.model_cost["gpt-4o-mini"]
    u = result.usage
    assert u.prompt_tokens > 0 and u.completion_tokens > 0
    assert u.cost_usd == pytest.approx(u.prompt_tokens * price["input_cost_per_token"]
                                       + u.completion_tokens * price["output_cost_per_token"])

    def mocked(mock: str, **params) -> tuple:
        sp = VersionSpec(id="llm-mock", backend="litellm",
                         params={"model": "gpt-4o-mini", "mock_response": mock,
                                 "backoff_s": 0.01, **params})
        backend = build_backend(sp)
        [r] = run(sp, [change()], backend)
        return r, backend.calls

    r, calls = mocked("litellm.RateLimitError", retries=2)
    assert (r.status, calls) == (Status.error, 3)
    assert "RateLimitError" in r.error and "after 3 attempts" in r.error
    r, calls = mocked("litellm.ContextWindowExceededError", retries=2)
    assert (r.status, calls) == (Status.error, 1)  # not transient: no retry
    r, calls = mocked("here is my review: looks good")
    assert (r.status, calls) == (Status.invalid_output, 1)


def test_params_are_validated_and_keys_refused(tmp_path):
    with pytest.raises(ConfigError, match="REVIEWBUS_LITELLM_API_KEY"):
        build_backend(VersionSpec(id="x", backend="litellm", params={"model": "m", "api_key": "s"}))
    with pytest.raises(ConfigError, match="version leaky: .'api_key'. must not be in the versions"):
        load_config_text(tmp_path, {"versions": [
            {"id": "base", "backend": "fake", "initial_state": "stable"},
            {"id": "leaky", "backend": "litellm", "params": {"model": "m", "api_key": "sk-1"}}]})
    # An inline consensus member is a version too: a key written there is refused as well.
    with pytest.raises(ConfigError, match="version inline: .'api_key'. must not be in the"):
        load_config_text(tmp_path, {"versions": [
            {"id": "base", "backend": "fake", "initial_state": "stable"},
            {"id": "both", "backend": "consensus", "params": {"members": [
                "base", {"id": "inline", "backend": "litellm",
                         "params": {"model": "m", "api_key": "sk-1"}}]}}]})
    with pytest.raises(ConfigError, match="temprature"):
        build_backend(VersionSpec(id="x", backend="litellm", params={"model": "m", "temprature": 0}))
    with pytest.raises(ConfigError, match="params.model"):
        build_backend(VersionSpec(id="x", backend="litellm", params={}))
    with pytest.raises(InvalidOutput, match="suggested_message"):
        parse_review(json.dumps({"change_type": {"label": "feature", "confidence": 1},
                                 "findings": [], "suggested_message": "Added things"}))
    assert os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"


def load_config_text(tmp_path, data: dict):
    path = tmp_path / "versions.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path)


# ---------------------------------------------------------------- end to end, in a real worker


@pytest.mark.integration
def test_a_litellm_version_in_shadow_records_usage_cost_model_and_prompt_hash(
        tmp_path_factory, broker, server):
    from infra.gitsource import commit_events
    from streams.services.bus import submit

    from .conftest import Stack
    from .gitrepo import make_repo

    llm = {"model": MODEL, "api_base": server.url, "seed": 7, "request_timeout_s": 20,
           "backoff_s": 0.05, "input_cost_per_token": IN_PRICE,
           "output_cost_per_token": OUT_PRICE}
    config = {
        "task": "code-review",
        "versions": [
            {"id": "base", "backend": "fake", "initial_state": "stable",
             "params": {"label": "feature", "findings": 1}},
            {"id": "llm-v1", "backend": "litellm", "initial_state": "shadow", "timeout_s": 60,
             "params": llm},
            {"id": "duo", "backend": "consensus", "initial_state": "shadow", "timeout_s": 60,
             "params": {"members": ["llm-v1", "base"]}},
        ],
        "rotation": {"interval_s": 3600},
        "inference": {"batch_size": 4, "batch_wait_s": 0.05},
    }
    stack = Stack(tmp_path_factory.mktemp("llm"), broker, config)
    stack.env["REVIEWBUS_LITELLM_API_KEY"] = KEY
    stack.start()
    try:
        repo = make_repo(tmp_path_factory.mktemp("llmrepo") / "demo")
        events = commit_events(repo, None, last=3)
        served = asyncio.run(submit(stack.settings, events, wait=True, timeout=120))
        assert [r.version_id for r in served] == ["base"] * 3
        rows = stack.wait_for(
            "SELECT version_id, status, model, prompt_hash, prompt_tokens, completion_tokens, "
            "cost_usd, predicted_label, suggested_message, error FROM interactions FINAL "
            "WHERE version_id IN ('llm-v1', 'duo') ORDER BY version_id, sha",
            lambda rows: len(rows) == 6)
        for row in rows:
            assert row["status"] == "ok", row
        llm_rows = [r for r in rows if r["version_id"] == "llm-v1"]
        for row in llm_rows:
            assert row["model"] == MODEL
            assert len(row["prompt_hash"]) == 16
            assert (row["prompt_tokens"], row["completion_tokens"]) == (PROMPT_TOKENS,
                                                                        COMPLETION_TOKENS)
            assert row["cost_usd"] == pytest.approx(PROMPT_TOKENS * IN_PRICE
                                                    + COMPLETION_TOKENS * OUT_PRICE)
        assert len({r["prompt_hash"] for r in llm_rows}) == 3  # one prompt per commit
        for row in (r for r in rows if r["version_id"] == "duo"):  # consensus: the LLM's usage
            assert row["model"] == MODEL and row["prompt_tokens"] == PROMPT_TOKENS
        # the model's subject is stored; the consensus takes it from the member whose type
        # matches the consensus label (`feat` for feature; the fake member suggests none)
        assert {r["suggested_message"] for r in rows} == {"feat(runner): add a command runner"}
        base_rows = stack.wait_for("SELECT suggested_message FROM interactions FINAL "
                                   "WHERE version_id = 'base'", lambda rows: len(rows) == 3)
        assert [r["suggested_message"] for r in base_rows] == [""] * 3
        findings = stack.wait_for(
            "SELECT version_id, rule_id, severity FROM findings FINAL "
            "WHERE version_id IN ('llm-v1', 'duo') ORDER BY version_id, rule_id",
            lambda rows: len(rows) >= 9)
        by_version = {v: sorted((f["rule_id"], f["severity"]) for f in findings
                                if f["version_id"] == v) for v in ("llm-v1", "duo")}
        assert by_version["llm-v1"] == [("llm:shell-injection", "high")] * 3
        # In consensus, the security finding of one member alone is flagged for review, and
        # the other member's low finding is reported as it is.
        assert by_version["duo"] == ([("FAKE0", "low")] * 3
                                     + [("llm:shell-injection#needs-review", "info")] * 3)
        # The consensus version's llm member and the llm version each called the server once
        # per commit, with the key as the Authorization header, and the key is nowhere else.
        shas = {e.sha for e in events}
        calls = [r for r in server.requests if f"Repository: {events[0].repo}" in user_text(r)]
        assert len(calls) == 6 and all(c["headers"]["authorization"] == f"Bearer {KEY}"
                                       for c in calls)
        assert KEY not in stack.log_tail(10_000)
        dump = json.dumps(stack.query("SELECT * FROM interactions FINAL"), default=str)
        dump += json.dumps(stack.query("SELECT spec FROM lifecycle FINAL"), default=str)
        assert KEY not in dump
        assert len(shas) == 3
    finally:
        stack.stop()
