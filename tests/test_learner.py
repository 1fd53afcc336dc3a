"""The continuous learner (issue 22): the prequential protocol on synthetic data with known
answers, the linear learner's determinism and serialisation, the suggested subject, and the
`learner` backend's contract."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from agents.errors import ConfigError
from agents.learning import features, learner, learner_strategy, prequential, subject
from agents.learning.data import example_from_row
from agents.learning.learner_store import LearnerStore, fit_state
from schemas import CHANGE_TYPES, ChangedFile, NormalizedChange, VersionSpec
from tests import mldata

# ---------------------------------------------------------------- protocol, pure


def test_blocks_cover_every_row_once_after_the_warmup():
    assert prequential.blocks(260, 100, 50) == [(0, 100), (100, 150), (150, 200), (200, 250),
                                                 (250, 260)]
    assert prequential.blocks(80, 100, 50) == [(0, 80)]
    assert prequential.blocks(3, 0, 2) == [(0, 2), (2, 3)]
    with pytest.raises(ValueError):
        prequential.blocks(10, 5, 0)


class Majority:
    """Base: the other repositories' majority label; own: this repository's majority so far.
    Records what each fit saw, to prove no row is predicted by a model that saw it."""

    def __init__(self, labels):
        self.labels = labels
        self.fits: list[tuple[int, ...]] = []
        self.predicted: list[tuple[int, int]] = []  # (row, rows the model had seen)

    def _major(self, rows):
        counts = Counter(self.labels[i] for i in rows)
        return max(sorted(counts), key=lambda k: counts[k])

    def fit_base(self, rows):
        return self._major(rows)

    def fit_local(self, base, rows):
        self.fits.append(tuple(rows))
        return self._major(rows), max(rows)

    def predict(self, base, local, seen, rows):
        for r in rows:
            self.predicted.append((r, -1 if local is None else local[1]))
        own = [local[0]] * len(rows) if local else [base] * len(rows)
        return {"learner": own, "global": [base] * len(rows), "local": own}


def test_prequential_known_answers():
    # repo a: 4 docs then 6 test; repo b: 10 bug_fix. Warmup 2, refit every 2.
    labels = ["docs"] * 4 + ["test"] * 6 + ["bug_fix"] * 10
    repos = {"org/a": list(range(10)), "org/b": list(range(10, 20))}
    strat = Majority(labels)
    out = prequential.prequential(strat, repos, labels, warmup=2, refit_every=2)
    a = out["per_repo"]["org/a"]
    # base for a = bug_fix (wrong on all 2 warmup rows); after 2 labels: docs (rows 2,3 right);
    # after 4: docs (4,5 wrong); after 6: test (6 of 6 seen: 4 docs 2 test -> docs; wrong);
    # after 8: docs 4 / test 4 -> "docs" (sorted first; wrong). So only rows 2 and 3 are right.
    assert a["accuracy"] == 0.2
    assert a["predictors"]["global"]["accuracy"] == 0.0
    assert [p["labels"] for p in a["curve"]] == [0, 2, 4, 6, 8]
    assert a["curve"][1]["learner"] == 1.0 and a["curve"][2]["learner"] == 0.0
    b = out["per_repo"]["org/b"]
    assert b["accuracy"] == 0.8  # warmup rows predicted by a's majority (test): wrong
    assert out["accuracy"] == 0.5 and out["refit_every"] == 2 and out["warmup"] == 2
    # no row was ever predicted by a model that had seen it (or any later row)
    assert all(seen < row - (10 if row >= 10 else 0) or seen == -1 or seen < row
               for row, seen in strat.predicted)
    assert all(max(f) < row for row, seen in strat.predicted for f in strat.fits
               if seen >= 0 and max(f) == seen)
    assert out["refit_seconds_mean"] >= 0 and a["refits"] == 4


def test_takeover_needs_a_run_of_wins():
    curve = [{"labels": 0, "repos": 4, "global": 0.5},
             {"labels": 100, "repos": 4, "global": 0.6, "local": 0.55},
             {"labels": 150, "repos": 4, "global": 0.6, "local": 0.65},
             {"labels": 200, "repos": 4, "global": 0.6, "local": 0.59},
             {"labels": 250, "repos": 4, "global": 0.6, "local": 0.7},
             {"labels": 300, "repos": 3, "global": 0.6, "local": 0.7},
             {"labels": 350, "repos": 2, "global": 0.6, "local": 0.7},
             {"labels": 400, "repos": 1, "global": 0.9, "local": 0.1}]
    assert prequential.takeover(curve) == 250
    assert prequential.takeover(curve, run=5) is None


# ---------------------------------------------------------------- the linear learner


def _examples(n_per_label=6, repos=("org/one", "org/two")):
    return [example_from_row(r) for r in mldata.rows(n_per_label, repos)]


def test_fit_is_deterministic_and_round_trips():
    examples = _examples()
    counts = features.featurize([e.change for e in examples])
    labels = [e.label for e in examples]
    params = learner.LearnerParams()
    a = learner.fit(counts, labels, params)
    b = learner.fit(counts, labels, params)
    pa, pb = a.predict_proba(counts), b.predict_proba(counts)
    assert np.array_equal(pa, pb)
    assert pa.shape == (len(examples), len(CHANGE_TYPES))
    assert np.allclose(pa.sum(axis=1), 1.0)
    assert learner.argmax_labels(pa) == labels  # the synthetic kinds are separable
    back = learner.LinearModel.from_bytes(a.to_bytes())
    assert np.allclose(back.predict_proba(counts), pa, atol=1e-5)
    assert back.classes == a.classes and back.params == a.params
    assert len(a.to_bytes()) < 200_000


def test_the_label_prefix_never_reaches_the_features():
    change = NormalizedChange(repo="o/r", sha="a" * 40, message="fix: x\n\n* feat(y): z", diff="")
    message_grams = features.field_tokens(change)[0]
    assert "fix" not in message_grams and "feat" not in message_grams


def test_params_refuse_unknown_keys():
    assert learner.LearnerParams.from_dict({"c": 2}).c == 2.0
    with pytest.raises(ValueError):
        learner.LearnerParams.from_dict({"nope": 1})


def _protocol_inputs():
    """Features, labels and row indices per repository of `_examples(12)`, oldest first."""
    examples = sorted(_examples(12), key=lambda e: e.author_date)
    counts = features.featurize([e.change for e in examples])
    labels = [e.label for e in examples]
    repos: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        repos.setdefault(e.repo, []).append(i)
    return counts, labels, repos


def test_strategy_under_the_protocol_learns_each_repository():
    counts, labels, repos = _protocol_inputs()
    strat = learner_strategy.LearnerStrategy(counts, labels, learner.LearnerParams(), half=10)
    out = prequential.prequential(strat, repos, labels, warmup=10, refit_every=10)
    assert out["accuracy"] >= 0.9 and set(out["predictors"]) == {"global", "learner", "local"}
    again = prequential.prequential(strat, repos, labels, warmup=10, refit_every=10)
    assert again["per_repo"]["org/one"]["confusion"] == out["per_repo"]["org/one"]["confusion"]
    lo = prequential.loro(strat, repos, labels)
    assert lo["protocol"] == "loro" and lo["accuracy"] >= 0.9


def test_pooled_modes_report_the_pooled_model_the_blend_and_their_mix():
    counts, labels, repos = _protocol_inputs()
    params = learner.LearnerParams()
    blended = prequential.prequential(learner_strategy.LearnerStrategy(counts, labels, params, half=10),
                                      repos, labels, warmup=10, refit_every=10)
    for mode, answer in (("pooled", "pooled"), ("pooled-mix", "mix")):
        strat = learner_strategy.LearnerStrategy(counts, labels, params, mode=mode, half=10, own_weight=2.0)
        out = prequential.prequential(strat, repos, labels, warmup=10, refit_every=10)
        assert set(out["predictors"]) == {"global", "learner", "local", "pooled", "blend", "mix"}
        assert out["predictors"]["learner"] == out["predictors"][answer]
        # `blend` is the blend mode's answer, on the commits after the warmup
        assert out["predictors"]["local"] == blended["predictors"]["local"]
        assert out["accuracy"] >= 0.9



@pytest.mark.parametrize("head", ["calibrated", "gbdt"])
def test_stacked_heads_are_deterministic_and_learn(head):
    from agents.learning import stacking

    examples = _examples(12)
    counts = features.featurize([e.change for e in examples])
    labels = [e.label for e in examples]
    train = [i for i, e in enumerate(examples) if e.repo == "org/one"]
    test = [i for i, e in enumerate(examples) if e.repo == "org/two"]
    params = learner.LearnerParams(head=head, gb_min_samples_leaf=2)
    a = stacking.fit_model(counts[train], [labels[i] for i in train], params)
    b = stacking.fit_model(counts[train], [labels[i] for i in train], params)
    assert isinstance(a, stacking.StackedModel) and a.head is not None and len(a.linear) == 5
    pa = a.predict_proba(counts[test])
    assert np.array_equal(pa, b.predict_proba(counts[test]))
    assert pa.shape == (len(test), len(CHANGE_TYPES)) and np.allclose(pa.sum(axis=1), 1.0)
    hits = sum(p == labels[i] for p, i in zip(learner.argmax_labels(pa), test))
    assert hits >= 0.75 * len(test)  # another repository's rows of the same synthetic kinds
    # the protocol runs it like the linear head, and the store's fit refuses it
    repos = {r: [i for i, e in enumerate(examples) if e.repo == r] for r in ("org/one", "org/two")}
    strat = learner_strategy.LearnerStrategy(counts, labels, params, half=10)
    assert prequential.prequential(strat, repos, labels, warmup=10, refit_every=10)["n"] == 60
    with pytest.raises(ValueError, match="stacking"):
        learner.fit(counts, labels, params)


def test_gbdt_dense_head_reads_the_embeddings_and_needs_them():
    from agents.learning import stacking

    examples = _examples(8)
    counts = features.featurize([e.change for e in examples])
    labels = [e.label for e in examples]
    kinds = sorted(set(labels))
    emb = np.zeros((len(labels), 384))  # one direction per label: separable by the booster
    for i, lbl in enumerate(labels):
        emb[i, kinds.index(lbl)] = 1.0
    params = learner.LearnerParams(head="gbdt_dense", embedding_weight=1.0, gb_min_samples_leaf=2,
                                   gb_dense_dims=8)
    model = stacking.fit_model(counts, labels, params, emb)
    assert learner.argmax_labels(model.predict_proba(counts, emb)) == labels
    # mix: the linear model (here lexical + the embedding) and the booster, averaged
    mix = stacking.fit_model(counts, labels, replace(params, head="mix"), emb)
    pm = mix.predict_proba(counts, emb)
    assert isinstance(mix, stacking.StackedModel) and len(mix.linear) == 1
    assert np.allclose(pm.sum(axis=1), 1.0) and learner.argmax_labels(pm) == labels
    assert np.array_equal(pm, stacking.fit_model(counts, labels, replace(params, head="mix"),
                                                 emb).predict_proba(counts, emb))
    with pytest.raises(ValueError, match="embeddings"):
        stacking.fit_model(counts, labels, params, None)
    with pytest.raises(ValueError, match="unknown head"):
        stacking.fit_model(counts, labels, learner.LearnerParams(head="forest"))


# ---------------------------------------------------------------- subjects


def test_scope_from_paths():
    assert subject.scope_from_paths(["samples/geo/requirements.txt", "requirements.txt"]) == "deps"
    assert subject.scope_from_paths(["commitizen/config/json_config.py",
                                     "commitizen/config/base_config.py"]) == "config"
    assert subject.scope_from_paths(["src/git.py", "tests/test_git.py"]) == "git"
    assert subject.scope_from_paths(["a/x.py", "b/y.py"]) is None
    assert subject.scope_from_paths([]) is None


def test_scope_from_history_and_subject():
    history = [(["docs/images/cli_help.svg"], "cli/screenshots"), (["src/a.py"], None)]
    assert subject.scope_from_history(["docs/images/cli_help.svg"], history) == \
        (True, "cli/screenshots")
    assert subject.scope_from_history(["other/z.py"], history) == (False, None)
    change = NormalizedChange(repo="o/r", sha="b" * 40, message="fix(x): handle it\n\nbody",
                              diff="")
    assert subject.subject("bug_fix", change, "parser") == "fix(parser): handle it"
    assert subject.subject("docs", change, None) == "docs: handle it"


# ---------------------------------------------------------------- the backend


def _state(tmp_path, takeover=10):
    # org/one files dependency-looking workflow changes as chore, org/two as build_ci
    rows = mldata.rows(12, ("org/one", "org/two"))
    for r in rows:
        if r["label"] == "build_ci" and r["repo"] == "org/one":
            r["label"] = "chore"
    examples = [example_from_row(r) for r in rows]
    manifest, base, own = fit_state(examples, takeover=takeover, half=1.0,
                                    scopes={e.id: "ci" if "workflow" in e.change.message else None
                                            for e in examples})
    LearnerStore(tmp_path).save(manifest, base, own)
    return tmp_path


def _change(repo, sha, message, path, body):
    diff = f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -1 +1,2 @@\n{body}\n"
    return NormalizedChange(repo=repo, sha=sha, message=message, diff=diff,
                            files=[ChangedFile(path=path, added=1, deleted=0)])


def test_backend_contract_and_per_repository_conventions(tmp_path):
    from agents.backends.base import build_backend

    spec = VersionSpec(id="learner-t", backend="learner", params={"state_dir": str(_state(tmp_path))})
    backend = build_backend(spec)
    batch = [_change("org/one", "1" * 40, "run kilo in the workflow", ".github/workflows/kilo.yml",
                     "+      - run: make kilo"),
             _change("org/two", "2" * 40, "run kilo in the workflow", ".github/workflows/kilo.yml",
                     "+      - run: make kilo"),
             _change("org/new", "3" * 40, "document the kilo option in the guide", "docs/kilo.md",
                     "+Use `kilo` to set it.")]
    out = asyncio.run(backend.infer(batch))
    assert len(out) == 3 and asyncio.run(backend.infer([])) == []
    labels = [p.change_type.label for p in out]
    assert labels == ["chore", "build_ci", "docs"]  # each repository's own convention
    for p in out:
        assert set(p.change_type.scores) == set(CHANGE_TYPES)
        assert 0 <= p.change_type.confidence <= 1 and 0 <= p.risk.score <= 1
    assert out[0].suggested_message == "chore(ci): run kilo in the workflow"
    assert out[2].suggested_message.startswith("docs")
    one_by_one = [asyncio.run(backend.infer([c]))[0] for c in batch]
    assert [p.change_type.scores for p in one_by_one] == [p.change_type.scores for p in out]
    fresh = build_backend(spec)
    assert [p.model_dump() for p in asyncio.run(fresh.infer(batch))] == \
        [p.model_dump() for p in out]
    asyncio.run(backend.close())
    asyncio.run(backend.close())


def test_backend_falls_back_to_the_global_model_below_the_takeover(tmp_path):
    from agents.backends.base import build_backend

    state = _state(tmp_path, takeover=10_000)  # no repository has that many labels
    spec = VersionSpec(id="learner-t", backend="learner", params={"state_dir": str(state)})
    change = _change("org/one", "1" * 40, "run kilo in the workflow",
                     ".github/workflows/kilo.yml", "+      - run: make kilo")
    label = asyncio.run(build_backend(spec).infer([change]))[0].change_type.label
    assert label in ("chore", "build_ci")  # the global base: the two conventions pooled
    spec_low = VersionSpec(id="learner-t", backend="learner",
                           params={"state_dir": str(state), "takeover": 1})
    # no own model was fitted (takeover at fit time was 10,000): still the global answer
    assert asyncio.run(build_backend(spec_low).infer([change]))[0].change_type.label == label


def test_backend_refuses_bad_params_and_a_missing_state(tmp_path):
    from agents.backends.base import build_backend

    with pytest.raises(ConfigError):
        build_backend(VersionSpec(id="l", backend="learner", params={"state_dir": str(tmp_path)}))
    with pytest.raises(ConfigError):
        build_backend(VersionSpec(id="l", backend="learner", params={"bogus": 1}))
    with pytest.raises(ConfigError):
        build_backend(VersionSpec(id="l", backend="learner", params={"takeover": 0}))


# ---------------------------------------------------------------- the CLI


def test_cli_eval_prequential(tmp_path, monkeypatch, capsys):
    import json

    from agents.learning.data import write_rows
    from streams.cli import main as cli

    from .conftest import isolate_env

    isolate_env(monkeypatch, tmp_path / "home", "learner.")
    data = tmp_path / "rows.jsonl"
    write_rows(data, mldata.rows(8, ("org/one", "org/two")))
    out, png = tmp_path / "report.json", tmp_path / "curve.png"
    assert cli(["eval", "--dataset", str(data), "--protocol", "prequential", "--warmup", "10",
                "--refit-every", "10", "--plot", str(png), "--out", str(out),
                "--format", "json"]) == 0
    report = json.loads(out.read_text())
    assert report["protocol"] == "prequential" and report["warmup"] == 10
    assert set(report) >= {"accuracy", "macro_f1", "per_repo", "curve", "loro", "takeover"}
    assert [p["labels"] for p in report["per_repo"]["org/one"]["curve"]] == [0, 10]
    assert png.stat().st_size > 1000
    assert json.loads(capsys.readouterr().out)["accuracy"] == report["accuracy"]
    assert cli(["eval", "--dataset", str(data), "--protocol", "static"]) != 0  # needs --version


def test_track_weight_follows_the_better_model():
    lbl = learner.LABELS
    good = np.zeros((60, len(lbl)))
    good[:, lbl.index("docs")] = 0.9
    good[:, lbl.index("chore")] = 0.1
    bad = good[:, ::-1].copy()
    truth = ["docs"] * 60
    assert learner_strategy.track_weight([], 100, 100.0) == 0.5  # no record: n / (n + half)
    assert learner_strategy.track_weight([(bad, good, truth)], 100, 100.0) == 1.0
    assert learner_strategy.track_weight([(good, bad, truth)], 100, 100.0) == 0.0
    assert learner_strategy.track_weight([(good[:10], bad[:10], truth[:10])], 300, 100.0) == 0.75


# ---------------------------------------------------------------- features added for issue 22


def test_char_grams_shape_and_summary_tokens():
    assert features.char_grams("bumps")[:3] == [" bu", "bum", "ump"]
    change = _change("o/r", "c" * 40, "bump version to 1.2.4\n\nbody", "pyproject.toml",
                     '-version = "1.2.3"\n+version = "1.2.4"')
    shape = features.shape_tokens(change)
    assert "version_bump" in shape and "version_bump_only" in shape
    assert "only:build_ci" in shape or "only:code" in shape
    assert "top:." in shape and "lines:1-2" in shape
    assert features.summary_tokens("bump version to 1.2.4\n\nbody")[-3:] == [
        "first:bump", "first2:bump version", "last:4"]
    # the new blocks sit after the old columns: a model fitted before them still answers
    examples = _examples()
    counts = features.featurize([e.change for e in examples])
    old = features.block_offsets()["chars"]
    labels = [e.label for e in examples]
    model = learner.fit(counts[:, :old], labels, learner.LearnerParams(
        chars_weight=0.0, shape_weight=0.0))
    assert np.array_equal(model.predict_proba(counts), model.predict_proba(counts[:, :old]))


def _history_rows(n=60):
    paths = [["docs/a.md"] if i % 3 == 0 else ["src/x.py", "tests/test_x.py"] for i in range(n)]
    labels = ["docs" if i % 3 == 0 else ("bug_fix" if i % 2 else "feature") for i in range(n)]
    return paths, labels


def test_context_reads_only_the_labels_before_a_commit():
    from agents.learning import context

    assert features.N_CONTEXT == context.N_CONTEXT
    paths, labels = _history_rows()
    stale = context.stale_bounds(len(paths), every=10)
    block = context.block_bounds(len(paths), 20, 10)
    assert stale[:12] == [0] * 10 + [10, 10] and block[:22] == [0] * 20 + [20, 20]
    for bounds in (stale, block):
        assert all(b <= j for j, b in enumerate(bounds))
        base = context.contexts_at(paths, labels, bounds)
        for j in (5, 25, 47):
            # rewriting the label of commit j and every later one changes no context up to j
            flipped = labels[:j] + ["revert"] * (len(labels) - j)
            again = context.contexts_at(paths, flipped, bounds)
            assert np.array_equal(again[:j + 1], base[:j + 1])
    with pytest.raises(ValueError, match="earlier"):
        context.contexts_at(paths, labels, [1] + [0] * (len(paths) - 1))
    # no history: the zero context; a history of docs under docs/: positive docs evidence
    assert not context.contexts([], [["docs/b.md"]]).any()
    x = context.contexts(list(zip(paths, labels)), [["docs/b.md"], ["src/x.py"]])
    docs = learner.LABELS.index("docs")
    top = context.GROUPS.index("top") * len(learner.LABELS)
    assert x[0, top + docs] > 0 > x[1, top + docs]
    assert np.array_equal(x, context.contexts(list(zip(paths, labels)),
                                              [["docs/b.md"], ["src/x.py"]]))


@pytest.mark.parametrize("extra", [{}, {"context_weight": 0.3}])
def test_the_served_state_answers_as_the_protocol_predicts(tmp_path, monkeypatch, extra):
    """The learner the eval scores is the learner the state serves: fitted on the same rows
    (the other repositories and the repository's first `seen` commits), the backend's
    probabilities for the next commits are the strategy's."""
    from agents.backends.base import build_backend
    from agents.learning import context
    from agents.learning.online_eval import context_counts, table

    monkeypatch.setattr(context, "EVERY", 10)  # training rows with a history in 30 commits
    examples = sorted(_examples(12), key=lambda e: (e.author_date, e.id))
    params = learner.LearnerParams.from_dict(extra)
    counts, labels, repos = table(examples)
    test_counts = None
    if params.context_weight > 0:
        counts, test_counts, _static = context_counts(examples, counts, labels, repos, 10, 10)
    strat = learner_strategy.LearnerStrategy(counts, labels, params, half=100.0, test_counts=test_counts)
    seen, repo = 20, "org/one"
    mine = repos[repo]
    train = sorted(repos["org/two"] + mine[:seen])
    base = strat.fit_base(train)
    local = strat.fit_local(base, mine[:seen])
    block = mine[seen:seen + 10]
    expected = strat.predict(base, local, seen, block)["learner"]
    g = strat._proba(base[0], block)
    proba = learner.blend(g, strat._proba(local["local"], block), seen, 100.0)

    manifest, gm, own = fit_state([examples[i] for i in train], params, takeover=seen,
                                  half=100.0)
    assert ("history" in manifest["repos"][repo]) == (params.context_weight > 0)
    LearnerStore(tmp_path).save(manifest, gm, own)
    backend = build_backend(VersionSpec(id="learner-t", backend="learner",
                                        params={"state_dir": str(tmp_path)}))
    served = backend.predict([examples[i].change for i in block])
    if params.context_weight > 0:  # the context counts: without it the answers differ
        none = features.with_context(strat.counts[block], np.zeros((len(block), context.N_CONTEXT)))
        assert np.abs(strat._proba(base[0], block) - base[0].predict_proba(none)).max() > 1e-3
    assert [p.change_type.label for p in served] == expected
    for p, row in zip(served, proba):
        assert np.allclose([p.change_type.scores[lbl] for lbl in learner.LABELS], row, atol=1e-5)
